#!/bin/sh
# mmdebstrap customize hook of the MariaDB stand-in (testkit/src/real.rs): $1 is the root file system.
# Debian's mariadb-server, made to start like the official mariadb image: an empty /var/lib/mysql (the package's
# installation initialised one, which would hide the first start), the server on every interface with no name
# lookups, and the official entrypoint's and health check's names on PATH.
set -eu
root=$1
here=$(dirname "$0")

rm -rf "$root/var/lib/mysql"
mkdir -p "$root/var/lib/mysql" "$root/run/mysqld"
cat >"$root/etc/mysql/mariadb.conf.d/99-standin.cnf" <<'CONF'
# Added by the 20i stand-in: clients reach the server over the container network (Debian binds 127.0.0.1).
[mariadbd]
bind-address = 0.0.0.0
skip-name-resolve
CONF
install -m 0755 "$here/docker-entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"
install -m 0755 "$here/healthcheck.sh" "$root/usr/local/bin/healthcheck.sh"
