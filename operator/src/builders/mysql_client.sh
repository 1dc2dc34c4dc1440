#!/usr/bin/env bash
# What the backup and restore scripts share (backup.rs and restore.rs put it before each script).
#
# mysql_program NAME...: the first of NAME... found in PATH (the last one if none is, to be named in
# the error), unless $BACKUP_MYSQL (for `mysql`) or $BACKUP_MYSQLDUMP (for `mysqldump`) names one.
mysql_program() {
  local chosen=""
  case "$1" in
    mysql) chosen="${BACKUP_MYSQL:-}" ;;
    mysqldump) chosen="${BACKUP_MYSQLDUMP:-}" ;;
  esac
  if [ -z "$chosen" ]; then
    for chosen in "$@"; do
      if command -v "$chosen" >/dev/null 2>&1; then break; fi
    done
  fi
  printf '%s\n' "$chosen"
}

# write_client_options FILE: the [client] option file for BACKUP_HOST, BACKUP_PORT (3306), BACKUP_USER
# (root) and BACKUP_PASSWORD (may be empty), so that the password is never on a command line.
write_client_options() {
  {
    echo "[client]"
    echo "host=$BACKUP_HOST"
    echo "port=${BACKUP_PORT:-3306}"
    echo "user=${BACKUP_USER:-root}"
    if [ -n "${BACKUP_PASSWORD:-}" ]; then
      local escaped="${BACKUP_PASSWORD//\\/\\\\}"
      escaped="${escaped//\"/\\\"}"
      echo "password=\"$escaped\""
    fi
  } >"$1"
}

