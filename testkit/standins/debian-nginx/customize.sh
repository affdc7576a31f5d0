#!/bin/sh
# mmdebstrap customize hook of the nginx stand-in (testkit/src/real.rs): $1 is the root file system.
# Debian's nginx, made to behave like the official nginx image where the stack relies on it: the site comes only
# from /etc/nginx/conf.d (rendered from /etc/nginx/templates by docker-entrypoint.sh), and the logs go to the
# container's stdout and stderr.
set -eu
root=$1
here=$(dirname "$0")

# Debian's own default site also claims `listen 80 default_server`, which the stack's template does.
rm -f "$root/etc/nginx/sites-enabled/default"
ln -sfn /dev/stdout "$root/var/log/nginx/access.log"
ln -sfn /dev/stderr "$root/var/log/nginx/error.log"
mkdir -p "$root/etc/nginx/templates" "$root/etc/nginx/conf.d"
install -m 0755 "$here/docker-entrypoint.sh" "$root/docker-entrypoint.sh"
