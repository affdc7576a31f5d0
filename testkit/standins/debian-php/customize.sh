#!/bin/sh
# mmdebstrap customize hook of the PHP base stand-in (testkit/src/real.rs): $1 is the root file system, $2 the PHP
# line Debian installed (8.2 on bookworm, 8.4 on trixie).
#
# It lays Debian's PHP out where images/php-fpm/Dockerfile and the stack expect the official php image's layout:
# - `php` and `php-fpm` in /usr/local/bin and /usr/local/sbin (Debian: /usr/bin/php8.2, /usr/sbin/php-fpm8.2);
#   php-fpm-healthcheck's `#!/usr/local/bin/php -n` needs the first;
# - /usr/local/etc/php/conf.d scanned after Debian's own conf.d by the CLI and FPM alike: the image sets
#   PHP_INI_SCAN_DIR=:/usr/local/etc/php/conf.d (the leading ':' keeps each SAPI's built-in directory first);
# - /usr/local/etc/php-fpm.d/*.conf included by FPM after Debian's pool.d, so a later file's [www] values win, as
#   in the official image; docker.conf and zz-docker.conf there say what the official ones say: logs to stderr,
#   workers keep the environment, FPM in the foreground, the pool on port 9000;
# - the master's pid file in /run itself (Debian's /run/php is made by its init scripts, which never run here).
set -eu
root=$1
line=$2
[ -x "$root/usr/sbin/php-fpm$line" ] || {
  echo >&2 "customize: no /usr/sbin/php-fpm$line in the root file system: is PHP $line the suite's PHP?"
  exit 1
}

mkdir -p "$root/usr/local/bin" "$root/usr/local/sbin" "$root/usr/local/etc/php/conf.d" \
  "$root/usr/local/etc/php-fpm.d" "$root/var/www/html"
ln -sfn "/usr/bin/php$line" "$root/usr/local/bin/php"
ln -sfn "/usr/sbin/php-fpm$line" "$root/usr/local/sbin/php-fpm"

cat >>"$root/etc/php/$line/fpm/php-fpm.conf" <<'CONF'

; Added by the 20i stand-in: the official php image's pool directory, read after Debian's pool.d.
include=/usr/local/etc/php-fpm.d/*.conf
CONF

cat >"$root/usr/local/etc/php-fpm.d/docker.conf" <<'CONF'
; As in the official php image: logs go to the container's stderr, workers keep the environment.
; (The pid file is Debian's setting, moved out of /run/php, which no init script creates in a container.)
[global]
pid = /run/php-fpm.pid
error_log = /proc/self/fd/2
log_limit = 8192

[www]
access.log = /proc/self/fd/2
clear_env = no
catch_workers_output = yes
decorate_workers_output = no
CONF

cat >"$root/usr/local/etc/php-fpm.d/zz-docker.conf" <<'CONF'
; As in the official php image: FPM stays in the foreground (PID 1) and the pool listens on port 9000.
[global]
daemonize = no

[www]
listen = 9000
CONF
