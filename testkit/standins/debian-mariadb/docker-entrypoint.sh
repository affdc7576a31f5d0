#!/bin/bash
# Entrypoint of the MariaDB stand-in: on the first start (no system tables in /var/lib/mysql, the volume) it
# initialises the data directory and applies the official image's variables, then runs the server in the
# foreground as the mysql user. A later start with the same volume keeps what is there and ignores the variables.
#
#   MYSQL_ROOT_PASSWORD (or MARIADB_ROOT_PASSWORD)   root's password, for 'root'@'localhost' and 'root'@'%';
#   MYSQL_ALLOW_EMPTY_PASSWORD (or MARIADB_ALLOW_EMPTY_ROOT_PASSWORD)  set to allow no root password instead
#   MYSQL_DATABASE (or MARIADB_DATABASE)             a database to create
#   MYSQL_USER and MYSQL_PASSWORD (or MARIADB_*)     an account with every privilege on that database
#
# Passwords reach the server only through the client's standard input, never a command line, and are never
# printed; the health check gets its own random account (USAGE only) written to /var/lib/mysql/.my-healthcheck.cnf.
set -eo pipefail

datadir=/var/lib/mysql
socket=/run/mysqld/mysqld.sock

log() { printf '%s [Entrypoint]: %s\n' "$(date -u '+%F %T')" "$*"; }
die() {
  printf '%s [ERROR] [Entrypoint]: %s\n' "$(date -u '+%F %T')" "$*" >&2
  exit 1
}

# MARIADB_X wins over MYSQL_X, as in the official image.
setting() {
  local mariadb=MARIADB_$1 mysql=MYSQL_$2
  printf '%s' "${!mariadb:-${!mysql:-}}"
}

# A value inside '…' of an SQL string literal, and inside `…` of an identifier.
sql_string() { sed -e "s/\\\\/\\\\\\\\/g" -e "s/'/\\\\'/g" <<<"$1"; }
sql_identifier() { sed -e 's/`/``/g' <<<"$1"; }

check_settings() {
  root_password=$(setting ROOT_PASSWORD ROOT_PASSWORD)
  allow_empty=$(setting ALLOW_EMPTY_ROOT_PASSWORD ALLOW_EMPTY_PASSWORD)
  database=$(setting DATABASE DATABASE)
  user=$(setting USER USER)
  password=$(setting PASSWORD PASSWORD)
  if [ -z "$root_password" ] && [ -z "$allow_empty" ]; then
    die "the database is uninitialised and root has no password: set MYSQL_ROOT_PASSWORD (or MARIADB_ROOT_PASSWORD), or MYSQL_ALLOW_EMPTY_PASSWORD=1"
  fi
  if [ -n "$user" ] && [ -z "$password" ]; then
    die "MYSQL_USER is set but MYSQL_PASSWORD is empty: set both (or neither)"
  fi
  if [ -z "$user" ] && [ -n "$password" ]; then
    die "MYSQL_PASSWORD is set but MYSQL_USER is empty: set both (or neither)"
  fi
  if [ "$user" = root ]; then
    die "MYSQL_USER=root: root is created by MYSQL_ROOT_PASSWORD; choose another user name"
  fi
}

# The SQL of the first start, on standard output (it holds the passwords: it goes straight into the client).
first_start_sql() {
  local healthcheck_password=$1
  echo "SET @@SESSION.SQL_LOG_BIN=0;"
  echo "DROP USER IF EXISTS 'root'@'127.0.0.1', 'root'@'::1';"
  if [ -n "$root_password" ]; then
    echo "SET PASSWORD FOR 'root'@'localhost' = PASSWORD('$(sql_string "$root_password")');"
    echo "CREATE USER 'root'@'%' IDENTIFIED BY '$(sql_string "$root_password")';"
  else
    echo "CREATE USER 'root'@'%';"
  fi
  echo "GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
  echo "GRANT PROXY ON ''@'%' TO 'root'@'%' WITH GRANT OPTION;"
  for host in localhost 127.0.0.1 ::1; do
    echo "CREATE USER 'healthcheck'@'$host' IDENTIFIED BY '$healthcheck_password';"
  done
  if [ -n "$database" ]; then
    echo "CREATE DATABASE IF NOT EXISTS \`$(sql_identifier "$database")\`;"
  fi
  if [ -n "$user" ]; then
    echo "CREATE USER '$(sql_string "$user")'@'%' IDENTIFIED BY '$(sql_string "$password")';"
    if [ -n "$database" ]; then
      echo "GRANT ALL ON \`$(sql_identifier "$database")\`.* TO '$(sql_string "$user")'@'%';"
    fi
  fi
  echo "FLUSH PRIVILEGES;"
}

# A first start that fails part way must not leave a data directory that the next start (restart: unless-stopped)
# would take for an initialised one: what it made goes again, so the next start fails the same visible way.
undo_first_start() {
  if [ -n "${first_start_running:-}" ]; then
    find "$datadir" -mindepth 1 -delete
  fi
}

first_start() {
  check_settings
  if [ -n "$(find "$datadir" -mindepth 1 -print -quit)" ]; then
    die "$datadir has files but no system tables (no $datadir/mysql): empty it (docker volume rm) or mount the right volume"
  fi
  first_start_running=1
  trap undo_first_start EXIT
  log "initialising $datadir"
  mariadb-install-db --user=mysql --datadir="$datadir" --skip-test-db \
    --auth-root-authentication-method=socket --skip-log-bin >/dev/null ||
    die "mariadb-install-db failed"

  log "starting a temporary server without networking"
  mariadbd --user=mysql --datadir="$datadir" --skip-networking --socket="$socket" --skip-log-bin &
  local pid=$! i
  for i in $(seq 60); do
    if mariadb --protocol=socket --socket="$socket" -uroot -e 'SELECT 1' >/dev/null 2>&1; then
      break
    fi
    kill -0 "$pid" 2>/dev/null || die "the temporary server exited; its messages are above"
    sleep 1
  done
  [ "$i" -lt 60 ] || die "the temporary server did not answer within 60 s"

  # No `tr </dev/urandom | head`: under pipefail tr's SIGPIPE would end the script with the server half set up.
  local healthcheck_password
  healthcheck_password=$(head -c 512 /dev/urandom | tr -dc 'A-Za-z0-9')
  healthcheck_password=${healthcheck_password:0:32}
  first_start_sql "$healthcheck_password" |
    mariadb --protocol=socket --socket="$socket" -uroot --binary-mode ||
    die "setting up root, the database and the user failed"
  (
    umask 077
    printf '[mariadb-client]\nport=3306\nsocket=%s\nuser=healthcheck\npassword=%s\n' \
      "$socket" "$healthcheck_password" >"$datadir/.my-healthcheck.cnf"
  )
  chown mysql:mysql "$datadir/.my-healthcheck.cnf"
  [ -z "$database" ] || log "created database $database"
  [ -z "$user" ] || log "created user $user"

  log "stopping the temporary server"
  kill -TERM "$pid"
  wait "$pid" || die "the temporary server did not stop cleanly"
  first_start_running=
  log "first start done: the data directory is ready"
}

if [ "${1:0:1}" = - ]; then
  set -- mariadbd "$@"
fi
if [ "$1" = mariadbd ] || [ "$1" = mysqld ]; then
  mkdir -p "$datadir" /run/mysqld
  find "$datadir" /run/mysqld \! -user mysql -exec chown mysql:mysql '{}' +
  if [ ! -d "$datadir/mysql" ]; then
    first_start
  fi
  log "starting $1"
  exec "$@" --user=mysql
fi
exec "$@"
