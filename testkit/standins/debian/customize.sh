#!/bin/sh
# mmdebstrap customize hook shared by every Debian stand-in (testkit/src/real.rs): $1 is the root file system.
# It runs on the host, after the packages are installed, with plain file operations only, so the same hook
# serves a foreign architecture without emulation. What it does is what Debian's own docker images
# (debuerreotype) do to make a root file system a container image.
set -eu
root=$1

# No package's maintainer script may start a service inside a container build or a running container.
printf '#!/bin/sh\n# added by the 20i stand-in: containers start their services themselves\nexit 101\n' \
  >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"

# apt in a container: no recommends (the Dockerfiles say --no-install-recommends too) and no package cache.
cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'CONF'
APT::Install-Recommends "false";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CONF

# mmdebstrap cleans the package lists itself; logs of the installation are not part of an image.
rm -rf "$root"/var/log/apt/* "$root"/var/log/dpkg.log "$root"/var/log/alternatives.log
# The host's name and resolver are docker's business at run time.
: >"$root/etc/hostname"
rm -f "$root/etc/resolv.conf"
