# One backup of the managed MySQL, run by the CronJob `<stack>-backup` (see backup.rs), written as
#   $BACKUP_DIR/<UTC time, e.g. 20261206T053000Z>/<database>.sql.gz  (mysqldump --databases, gzipped)
#   $BACKUP_DIR/<name>/manifest.json  (format 1: each file's bytes, sha256 and migration versions)
# into `<name>.partial/` first, renamed into place only once every dump and the manifest are written:
# a directory without `.partial` and with a manifest is a complete backup, nothing else is. Then prunes.
#
# Environment (all from the operator's builder, none hard-coded here):
#   BACKUP_DATABASES         databases to dump, separated by spaces (required)
#   BACKUP_HOST, BACKUP_PORT the server (required; port default 3306)
#   BACKUP_USER              default root
#   BACKUP_PASSWORD          may be empty
#   BACKUP_DIR               default /backups
#   BACKUP_RETENTION_COUNT   complete backups kept, newest first (default 7, at least 1)
#   BACKUP_MAX_AGE_DAYS      also drop backups older than this (optional)
#   BACKUP_IMAGE_TAG         the Mall version whose schema this is, recorded in the manifest
#   BACKUP_MYSQLDUMP, BACKUP_MYSQL  the client programs (default mysqldump, else mariadb-dump; mysql, else
#                            mariadb)
# Prints one JSON line last: {"backup":"<name>","bytes":N,"databases":M}.
set -euo pipefail
umask 077

die() {
  echo "backup: $*" >&2
  exit 1
}

: "${BACKUP_DATABASES:?BACKUP_DATABASES lists the databases to dump}"
: "${BACKUP_HOST:?BACKUP_HOST names the MySQL server}"
root="${BACKUP_DIR:-/backups}"
count="${BACKUP_RETENTION_COUNT:-7}"
max_age="${BACKUP_MAX_AGE_DAYS:-}"
image_tag="${BACKUP_IMAGE_TAG:-}"
mysql="$(mysql_program mysql mariadb)"
mysqldump="$(mysql_program mysqldump mariadb-dump)"
case "$count" in '' | *[!0-9]*) die "BACKUP_RETENTION_COUNT must be a number, not '$count'" ;; esac
[ "$count" -ge 1 ] || die "BACKUP_RETENTION_COUNT must be at least 1"
case "$max_age" in *[!0-9]*) die "BACKUP_MAX_AGE_DAYS must be a number of days, not '$max_age'" ;; esac
command -v "$mysqldump" >/dev/null 2>&1 || die "no $mysqldump in PATH"
command -v "$mysql" >/dev/null 2>&1 || die "no $mysql in PATH"
[ -d "$root" ] && [ -w "$root" ] || die "$root is not a writable directory"

# The password goes in an option file only this user reads: never on a command line.
work="$(mktemp -d "${TMPDIR:-/tmp}/backup.XXXXXX")"
partial=""
cleanup() {
  status=$?
  rm -rf "$work"
  if [ "$status" -ne 0 ] && [ -n "$partial" ]; then
    rm -rf "$partial"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 143' TERM INT
options="$work/client.cnf"
write_client_options "$options"

# A JSON string of $1 (names and tags here: backslashes and quotes are all that need escaping).
json_string() {
  local s="${1//\\/\\\\}"
  s="${s//\"/\\\"}"
  printf '"%s"' "$s"
}

now() { date -u +%Y-%m-%dT%H:%M:%SZ; }

# Flags both MySQL 8's mysqldump and MariaDB's take; --set-gtid-purged only where it exists (MySQL).
dump_flags=(--single-transaction --routines --triggers --events --hex-blob --default-character-set=utf8mb4)
if "$mysqldump" --help 2>/dev/null | grep -q -- '--set-gtid-purged'; then
  dump_flags+=(--set-gtid-purged=OFF)
fi

started="$(now)"
# A name not taken yet (two runs within one second wait for the next).
for _ in 1 2 3 4 5; do
  name="$(date -u +%Y%m%dT%H%M%SZ)"
  [ -e "$root/$name" ] || [ -e "$root/$name.partial" ] || break
  sleep 1
done
[ -e "$root/$name" ] && die "$root/$name exists already"
partial="$root/$name.partial"
mkdir "$partial"

entries=""
total=0
n=0
for db in $BACKUP_DATABASES; do
  file="$db.sql.gz"
  "$mysqldump" --defaults-extra-file="$options" "${dump_flags[@]}" --databases "$db" | gzip -6 >"$partial/$file"
  bytes="$(wc -c <"$partial/$file" | tr -d ' ')"
  sha="$(sha256sum "$partial/$file" | cut -d' ' -f1)"
  # sqlx's table of applied migrations (absent before the service's first migration).
  has_table="$("$mysql" --defaults-extra-file="$options" --batch --skip-column-names -e \
    "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '$db' AND table_name = '_sqlx_migrations'")"
  versions=""
  if [ "$has_table" != "0" ]; then
    while read -r version; do
      case "$version" in '' | *[!0-9]*) die "unexpected migration version '$version' in $db" ;; esac
      versions="${versions:+$versions,}$version"
    done < <("$mysql" --defaults-extra-file="$options" --batch --skip-column-names -e \
      "SELECT version FROM \`$db\`._sqlx_migrations WHERE success = TRUE ORDER BY version")
    # The process substitution's status is not seen by `set -e`: ask again, checked.
    "$mysql" --defaults-extra-file="$options" --batch --skip-column-names -e \
      "SELECT COUNT(*) FROM \`$db\`._sqlx_migrations" >/dev/null
  fi
  entry="{\"name\":$(json_string "$db"),\"file\":$(json_string "$file"),\"bytes\":$bytes,\"sha256\":\"$sha\",\"migrations\":[$versions]}"
  entries="${entries:+$entries,}$entry"
  total=$((total + bytes))
  n=$((n + 1))
done
[ "$n" -ge 1 ] || die "BACKUP_DATABASES names no database"

finished="$(now)"
printf '{"formatVersion":1,"name":%s,"imageTag":%s,"started":"%s","finished":"%s","databases":[%s]}\n' \
  "$(json_string "$name")" "$(json_string "$image_tag")" "$started" "$finished" "$entries" \
  >"$partial/manifest.json.tmp"
mv "$partial/manifest.json.tmp" "$partial/manifest.json"
sync
mv "$partial" "$root/$name"
partial=""

# Prune: complete backups only (a name of the pattern, without `.partial`, with a manifest), newest
# first; keep `count`, none older than BACKUP_MAX_AGE_DAYS, and always the one just written.
cutoff=""
if [ -n "$max_age" ]; then
  cutoff="$(date -u -d "@$(($(date -u +%s) - max_age * 86400))" +%Y%m%dT%H%M%SZ)"
fi
# The directories named like a backup, newest first (a glob, not GNU find: images differ in their tools).
list_backups() {
  for d in "$root"/[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z; do
    if [ -d "$d" ]; then printf '%s\n' "${d##*/}"; fi
  done | sort -r
}
kept=0
while read -r old; do
  [ -n "$old" ] || continue
  [ -f "$root/$old/manifest.json" ] || continue
  if [ "$old" = "$name" ]; then
    kept=$((kept + 1))
  elif [ "$kept" -ge "$count" ] || { [ -n "$cutoff" ] && [[ "$old" < "$cutoff" ]]; }; then
    rm -rf "${root:?}/$old"
    echo "backup: pruned $old" >&2
  else
    kept=$((kept + 1))
  fi
done < <(list_backups)
# A `.partial` of a run that died (never this one's, nor a running one's: runs do not overlap). Without
# a `find` in the image, they stay.
find "$root" -mindepth 1 -maxdepth 1 -type d -name '*.partial' -mmin +1440 -exec rm -rf {} \; || true

line="{\"backup\":$(json_string "$name"),\"bytes\":$total,\"databases\":$n}"
# Kubernetes keeps the termination message in the pod's status (where the operator reads the name).
if [ -w /dev/termination-log ]; then
  echo "$line" >/dev/termination-log || true
fi
echo "$line"
