# Loads one backup into the managed MySQL: the second step of the restore Job `<stack>-restore-<hash>`
# (see restore.rs). The first, `mall restore-check` in the Mall image, has checked the backup (manifest,
# sizes, sha256, a schema this image knows) and that every database it holds is empty or absent, and
# written the plan: one line `<database> <file>` per dump. Nothing runs without that plan.
#
# Each dump (`mysqldump --databases`) creates its database and fills it. If one fails, every database of
# the plan is dropped again (they were empty before), so a failed restore leaves nothing half-written
# and can be run again.
#
# Environment (from the operator's builder):
#   RESTORE_DIR              the backup's directory (required)
#   RESTORE_PLAN             the plan file (required)
#   BACKUP_HOST, BACKUP_PORT the server (required; port default 3306)
#   BACKUP_USER              default root
#   BACKUP_PASSWORD          may be empty
#   BACKUP_MYSQL             the client program (default mysql, else mariadb)
# Prints one JSON line last: {"restored":"<name>","databases":N,"bytes":M}.
set -euo pipefail
umask 077

die() {
  echo "restore: $*" >&2
  if [ -w /dev/termination-log ]; then echo "restore: $*" >/dev/termination-log || true; fi
  exit 1
}

: "${RESTORE_DIR:?RESTORE_DIR names the backup directory}"
: "${RESTORE_PLAN:?RESTORE_PLAN names the plan mall restore-check wrote}"
: "${BACKUP_HOST:?BACKUP_HOST names the MySQL server}"
mysql="$(mysql_program mysql mariadb)"
command -v "$mysql" >/dev/null 2>&1 || die "no $mysql in PATH"
command -v gzip >/dev/null 2>&1 || die "no gzip in PATH"
[ -s "$RESTORE_PLAN" ] || die "no plan at $RESTORE_PLAN: mall restore-check must run first"

work="$(mktemp -d "${TMPDIR:-/tmp}/restore.XXXXXX")"
trap 'rm -rf "$work"' EXIT
trap 'exit 143' TERM INT
options="$work/client.cnf"
write_client_options "$options"

databases=()
files=()
while read -r db file rest; do
  [ -n "$db" ] || continue
  [ -z "$rest" ] || die "a plan line has more than a database and a file: $db $file $rest"
  case "$db" in *[!A-Za-z0-9_]*) die "unexpected database name '$db' in the plan" ;; esac
  case "$file" in */* | ..*) die "unexpected file name '$file' in the plan" ;; esac
  databases+=("$db")
  files+=("$file")
done <"$RESTORE_PLAN"
[ "${#databases[@]}" -ge 1 ] || die "the plan names no database"

# Undo: drop what this run created. Only databases of the plan, which the check found empty or absent.
undo() {
  for db in "${databases[@]}"; do
    "$mysql" --defaults-extra-file="$options" -e "DROP DATABASE IF EXISTS \`$db\`" || true
  done
}

total=0
for i in "${!databases[@]}"; do
  db="${databases[$i]}"
  file="$RESTORE_DIR/${files[$i]}"
  started="$(date +%s)"
  if ! gzip -dc "$file" | "$mysql" --defaults-extra-file="$options" --default-character-set=utf8mb4 --binary-mode; then
    undo
    die "loading $db from ${files[$i]} failed: every database of the backup was dropped again; delete the restore Job to try once more"
  fi
  bytes="$(wc -c <"$file" | tr -d ' ')"
  total=$((total + bytes))
  echo "restore: loaded $db ($bytes bytes compressed) in $(($(date +%s) - started)) s" >&2
done

name="${RESTORE_DIR%/}"
name="${name##*/}"
line="{\"restored\":\"$name\",\"databases\":${#databases[@]},\"bytes\":$total}"
if [ -w /dev/termination-log ]; then
  echo "$line" >/dev/termination-log || true
fi
echo "$line"
