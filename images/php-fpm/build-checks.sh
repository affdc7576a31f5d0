#!/bin/sh
# The build-time checks of the stack's PHP-FPM image, run by images/php-fpm/Dockerfile and by the Debian stand-in
# of it (testkit/standins/php-fpm-real/Dockerfile), from this one file, after the stack's own files are in place.
# Fails the build, naming what is wrong, unless both the CLI and the FPM SAPI load every module the stack ships,
# gd reads the image formats the stack promises, OPcache is on, PHP starts without a word, and the final FPM
# configuration is valid. POSIX sh: Alpine's busybox ash and Debian's dash both run it.
set -eux

chmod 0755 /usr/local/bin/php-fpm-healthcheck
php -l /usr/local/bin/php-fpm-healthcheck

missing=''
modules="$(mktemp)"
for sapi in php php-fpm; do
    "$sapi" -m > "$modules"
    for module in bcmath curl exif gd mbstring mysqli pdo_mysql zip 'Zend OPcache'; do
        grep -qxF -- "$module" "$modules" || missing="$missing $sapi:'$module'"
    done
done
rm -f "$modules"
[ -z "$missing" ] || { echo >&2 "required PHP modules are missing:$missing"; exit 1; }

# The single-quoted $gd and $feature are PHP variables, not shell ones.
# shellcheck disable=SC2016
php -r '$gd = gd_info(); foreach (["FreeType Support", "JPEG Support", "PNG Support", "WebP Support"] as $feature) { if (empty($gd[$feature])) { fwrite(STDERR, "gd has no $feature\n"); exit(1); } }'
php -r 'exit(ini_get("opcache.enable") ? 0 : 1);' || { echo >&2 "OPcache is not enabled"; exit 1; }

# A module whose library is missing makes PHP print at startup ("Unable to load dynamic library").
out="$(php -r 'exit(0);')"
[ -z "$out" ] || { echo >&2 "php printed at startup: $out"; exit 1; }
err="$(php -r 'exit(0);' 3>&1 1>&2 2>&3)"
[ -z "$err" ] || { echo >&2 "php warned at startup: $err"; exit 1; }

php-fpm -t
