#!/bin/bash
# Health check of the MariaDB stand-in, named and called like the official image's
# (`healthcheck.sh --connect --innodb_initialized`); it implements those two tests, in the order given:
#   --connect             the server accepts TCP connections on localhost (the final state of the entrypoint: its
#                         first-start server has networking off); a refused login still counts as connected
#   --innodb_initialized  InnoDB is available (crash recovery done), asked over SQL
# Both read the client settings the entrypoint wrote for the `healthcheck` account (USAGE only) when present.
# Exit 0: healthy; exit 1 with the failed test named on stderr.
set -eo pipefail

datadir=/var/lib/mysql
defaults=()
if [ -f "$datadir/.my-healthcheck.cnf" ]; then
  defaults=(--defaults-extra-file="$datadir/.my-healthcheck.cnf")
fi

connect() {
  local out
  # The server's answer decides: "Can't connect" is the only failure that means it is not listening.
  out=$(mariadb "${defaults[@]}" -h localhost --protocol tcp -e 'select 1' 2>&1) && return 0
  ! grep -qF "Can't connect" <<<"$out"
}

innodb_initialized() {
  local s
  s=$(mariadb "${defaults[@]}" -B --skip-column-names \
    -e "select 1 from information_schema.ENGINES where engine='innodb' and support in ('YES', 'DEFAULT', 'ENABLED')")
  [ "$s" = 1 ]
}

if [ $# -eq 0 ]; then
  echo >&2 "healthcheck.sh: name the tests to run: --connect, --innodb_initialized"
  exit 1
fi
for arg in "$@"; do
  case "$arg" in
    --connect) test=connect ;;
    --innodb_initialized) test=innodb_initialized ;;
    *)
      echo >&2 "healthcheck.sh: the stand-in implements --connect and --innodb_initialized, not '$arg'"
      exit 1
      ;;
  esac
  if ! "$test"; then
    echo >&2 "healthcheck $test failed"
    exit 1
  fi
done
