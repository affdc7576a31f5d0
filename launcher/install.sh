#!/bin/sh
# Installs `20i`, the 20i stack's launcher, from a GitHub release (or a mirror of one), without root:
#
#   curl -fsSL https://github.com/20i-stack/20i-stack/releases/latest/download/install.sh | sh
#   curl -fsSL …/install.sh | sh -s -- --version v2.1.0 --prefix "$HOME/bin"
#   sh install.sh --help
#
# It picks the archive for this machine (Linux x86_64/aarch64, WSL2 included; macOS x86_64/arm64), downloads it
# and SHA256SUMS with curl or wget (timeouts, retries), checks the archive's sha256, verifies its cosign signature
# when cosign is installed (always with --verify), and installs `20i` into ~/.local/bin (or --prefix) by writing
# `20i.tmp.PID` there and renaming it over the old one. A refusal leaves nothing behind.
#
# The release's files (the contract with `cargo xtask dist`): `20i-vX.Y.Z-TARGET.tar.gz` (a folder
# `20i-vX.Y.Z-TARGET/` with `20i`, LICENSE, README.md), `SHA256SUMS` (`<hex>  <file>` lines), per archive
# `<archive>.sig` (signed with a key) or `<archive>.sigstore.json` (keyless, by the release workflow).
#
# Everything is in functions and runs from the last line: a download cut short runs nothing.

set -eu
# `cd` prints the folder it found through CDPATH, which would end up in a captured path.
unset CDPATH

REPOSITORY="20i-stack/20i-stack"
# The release this script belongs to: `cargo xtask dist seal` replaces the placeholder with its version (vX.Y.Z).
# Left as the placeholder (this file in the source tree), the latest release is installed.
BAKED_VERSION="@VERSION@"
KEYLESS_ISSUER="https://token.actions.githubusercontent.com"
KEYLESS_WORKFLOW=".github/workflows/release.yml"

say() {
    printf '20i-install: %s\n' "$*" >&2
}

# Stops with a message (what happened, what to do); the EXIT trap removes what was made.
refuse() {
    printf '20i-install: error: %s\n' "$*" >&2
    exit 1
}

usage() {
    cat <<EOF
Install 20i, the 20i stack's launcher, into ~/.local/bin (no root needed).

Usage: install.sh [OPTIONS]
       curl -fsSL https://github.com/$REPOSITORY/releases/latest/download/install.sh | sh -s -- [OPTIONS]

Options:
  --version vX.Y.Z    the release to install (default: the latest stable release)
  --prefix DIR        where to put 20i (default: ~/.local/bin)
  --base-url URL      the folder holding the release's files, for a mirror (default: the GitHub release;
                      also TWENTYI_INSTALL_BASE_URL)
  --verify            require a verified cosign signature (fails when cosign is not installed)
  --cosign-key PATH   verify with this cosign public key (a release signed with a key); by default the
                      keyless signature of the release workflow at the release's tag is verified
  -h, --help          show this help

Without --verify, the signature is verified when cosign is installed; the sha256 from SHA256SUMS is
always checked.
EOF
}

# The value after an option, refused when missing or when it looks like another option.
value_of() {
    if [ "$#" -lt 2 ] || [ -z "$2" ]; then
        refuse "$1 needs a value (see --help)"
    fi
    case $2 in
        -*) refuse "$1 needs a value, not \`$2\` (see --help)" ;;
    esac
}

# vX.Y.Z or X.Y.Z (a prerelease suffix allowed), printed as vX.Y.Z.
parse_version() {
    v=${1#v}
    case $v in
        '' | *[!0-9A-Za-z.-]* | .* | *..*)
            refuse "\`$1\` is not a release version: use vX.Y.Z, for example v2.0.0" ;;
    esac
    case $v in
        [0-9]*.[0-9]*.[0-9]*) ;;
        *) refuse "\`$1\` is not a release version: use vX.Y.Z, for example v2.0.0" ;;
    esac
    printf 'v%s\n' "$v"
}

# The Rust target of this machine, from uname; an unknown one is refused with what exists.
detect_target() {
    os=$(uname -s 2>/dev/null || true)
    machine=$(uname -m 2>/dev/null || true)
    case $machine in
        x86_64 | amd64) arch=x86_64 ;;
        aarch64 | arm64) arch=aarch64 ;;
        *) arch= ;;
    esac
    case $os in
        Linux) suffix=unknown-linux-musl ;;
        Darwin)
            suffix=apple-darwin
            # A shell under Rosetta says x86_64 on Apple Silicon: install the native build there.
            if [ "$arch" = x86_64 ] && [ "$(sysctl -n sysctl.proc_translated 2>/dev/null || true)" = 1 ]; then
                arch=aarch64
            fi
            ;;
        *) suffix= ;;
    esac
    if [ -z "$arch" ] || [ -z "$suffix" ]; then
        refuse "there is no 20i build for this platform (uname -s: ${os:-unknown}, uname -m: ${machine:-unknown}): \
builds exist for Linux x86_64 and aarch64 (WSL2 too) and macOS x86_64 and arm64. Build it from source \
instead: cargo install --locked --git https://github.com/$REPOSITORY launcher"
    fi
    printf '%s-%s\n' "$arch" "$suffix"
}

# Downloads URL to FILE with curl or wget: bounded connection (and with curl total) time, three attempts.
# With PROGRESS `progress` and a terminal on stderr, curl draws a progress bar (and shows its own error there).
download() {
    url=$1
    file=$2
    : >"$WORK/download.err"
    case $DOWNLOADER in
        curl)
            if [ "${3:-}" = progress ] && [ -t 2 ]; then
                curl --fail --progress-bar --show-error --location --connect-timeout 10 --max-time 300 \
                    --retry 2 --retry-delay 1 --retry-connrefused --output "$file" -- "$url"
            else
                curl --fail --silent --show-error --location --connect-timeout 10 --max-time 300 \
                    --retry 2 --retry-delay 1 --retry-connrefused --output "$file" -- "$url" 2>"$WORK/download.err"
            fi
            ;;
        wget)
            # Short options only, which GNU wget and BusyBox's (Alpine) share; the attempts are counted here.
            attempt=1
            until wget -q -T 10 -O "$file" -- "$url" 2>"$WORK/download.err"; do
                [ "$attempt" -lt 3 ] || return 1
                attempt=$((attempt + 1))
                sleep 1
            done
            ;;
    esac
}

# Downloads URL to FILE [progress], refusing with what to do when it fails.
fetch() {
    if ! download "$@"; then
        reason=$(tr '\n' ' ' <"$WORK/download.err" | sed 's/ *$//')
        refuse "could not download $1 (${reason:-$DOWNLOADER failed}): check the network (and HTTPS_PROXY), \
that the release and version exist, or give a mirror with --base-url; nothing was installed"
    fi
}

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum -- "$1" | cut -d ' ' -f 1
    else
        shasum -a 256 -- "$1" | cut -d ' ' -f 1
    fi
}

# Verifies the archive's cosign signature; refuses a signature that does not verify. Without --verify, a
# release that has no signature of the kind asked for is installed on its checksum alone, with a warning.
verify_signature() {
    archive_path=$1
    if [ -n "$COSIGN_KEY" ]; then
        signature_name="$ARCHIVE.sig"
    else
        signature_name="$ARCHIVE.sigstore.json"
    fi
    if ! download "$BASE_URL/$signature_name" "$WORK/$signature_name"; then
        if [ "$VERIFY" = 1 ]; then
            refuse "could not download the signature $BASE_URL/$signature_name, and --verify requires it: \
with a release signed with a key give its public key with --cosign-key; nothing was installed"
        fi
        say "warning: no signature $signature_name at $BASE_URL: installing on the checksum alone"
        return 0
    fi
    if [ -n "$COSIGN_KEY" ]; then
        # A key's signature has no transparency log entry to check: the key is what is trusted.
        set -- --key "$COSIGN_KEY" --signature "$WORK/$signature_name" --insecure-ignore-tlog=true
        trusted="the key $COSIGN_KEY"
    else
        identity="https://github.com/$REPOSITORY/$KEYLESS_WORKFLOW@refs/tags/$VERSION"
        set -- --bundle "$WORK/$signature_name" --certificate-identity "$identity" \
            --certificate-oidc-issuer "$KEYLESS_ISSUER"
        trusted="the release workflow ($identity)"
    fi
    if ! cosign verify-blob "$@" -- "$archive_path" >"$WORK/cosign.out" 2>&1; then
        reason=$(grep -i 'error' "$WORK/cosign.out" | head -n 1)
        refuse "the signature of $ARCHIVE does not verify against $trusted (${reason:-cosign verify-blob failed}): \
the archive is not the one the release signed; nothing was installed. Do not use it: report it at \
https://github.com/$REPOSITORY/issues"
    fi
    say "verified the signature of $ARCHIVE against $trusted"
}

cleanup() {
    if [ -n "${WORK:-}" ]; then
        rm -rf -- "$WORK"
    fi
    if [ -n "${STAGED:-}" ]; then
        rm -f -- "$STAGED"
    fi
}

main() {
    VERSION=
    PREFIX=
    BASE_URL=${TWENTYI_INSTALL_BASE_URL:-}
    VERIFY=0
    COSIGN_KEY=
    while [ "$#" -gt 0 ]; do
        case $1 in
            --version) value_of "$@"; VERSION=$(parse_version "$2"); shift 2 ;;
            --version=*) VERSION=$(parse_version "${1#*=}"); shift ;;
            --prefix) value_of "$@"; PREFIX=$2; shift 2 ;;
            --prefix=*) PREFIX=${1#*=}; shift ;;
            --base-url) value_of "$@"; BASE_URL=$2; shift 2 ;;
            --base-url=*) BASE_URL=${1#*=}; shift ;;
            --verify) VERIFY=1; shift ;;
            --cosign-key) value_of "$@"; COSIGN_KEY=$2; shift 2 ;;
            --cosign-key=*) COSIGN_KEY=${1#*=}; shift ;;
            -h | --help) usage; exit 0 ;;
            *) printf "20i-install: error: unknown option \`%s\`\n\n" "$1" >&2; usage >&2; exit 2 ;;
        esac
    done
    if [ -z "$VERSION" ]; then
        case $BAKED_VERSION in
            @*) ;;
            *) VERSION=$BAKED_VERSION ;;
        esac
    fi
    case $BASE_URL in
        '')
            if [ -n "$VERSION" ]; then
                BASE_URL="https://github.com/$REPOSITORY/releases/download/$VERSION"
            else
                BASE_URL="https://github.com/$REPOSITORY/releases/latest/download"
            fi
            ;;
        https://* | http://*) BASE_URL=${BASE_URL%/} ;;
        *) refuse "the base URL \`$BASE_URL\` is not an http(s) URL: give the folder that holds the release's files" ;;
    esac
    if [ -n "$COSIGN_KEY" ] && [ ! -r "$COSIGN_KEY" ]; then
        refuse "cannot read the cosign public key $COSIGN_KEY: give the path of the release's cosign.pub"
    fi

    TARGET=$(detect_target)

    if command -v curl >/dev/null 2>&1; then
        DOWNLOADER=curl
    elif command -v wget >/dev/null 2>&1; then
        DOWNLOADER=wget
    else
        refuse "neither curl nor wget is installed: install one of them and run this again"
    fi
    if ! command -v sha256sum >/dev/null 2>&1 && ! command -v shasum >/dev/null 2>&1; then
        refuse "neither sha256sum nor shasum is installed, so the download cannot be checked: install coreutils"
    fi
    for tool in tar gzip mktemp; do
        command -v "$tool" >/dev/null 2>&1 || refuse "$tool is not installed: install it and run this again"
    done
    HAVE_COSIGN=0
    if command -v cosign >/dev/null 2>&1; then
        HAVE_COSIGN=1
    elif [ "$VERIFY" = 1 ]; then
        refuse "--verify needs cosign, which is not installed: install it (https://docs.sigstore.dev/cosign/system_config/installation/) or leave out --verify"
    fi

    case ${PREFIX:=${HOME:?HOME is not set: give --prefix DIR}/.local/bin} in
        -*) PREFIX=./$PREFIX ;;
    esac
    # Created only once the archive is checked, so a refusal leaves no new folder either.
    if [ -e "$PREFIX" ] && [ ! -d "$PREFIX" ]; then
        refuse "$PREFIX is not a folder: give a --prefix that is one, or a path that does not exist yet"
    fi
    if [ -d "$PREFIX" ] && [ ! -w "$PREFIX" ]; then
        refuse "cannot write to $PREFIX: give a --prefix you can write to (no root needed)"
    fi

    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/20i-install.XXXXXX") || refuse "cannot create a temporary directory: set TMPDIR to one you can write to"

    fetch "$BASE_URL/SHA256SUMS" "$WORK/SHA256SUMS"
    if [ -n "$VERSION" ]; then
        ARCHIVE="20i-$VERSION-$TARGET.tar.gz"
        line=$(awk -v name="$ARCHIVE" '$2 == name || $2 == "*" name { print; exit }' "$WORK/SHA256SUMS")
    else
        line=$(awk -v suffix="-$TARGET.tar.gz" '
            index($2, "20i-v") == 1 && substr($2, length($2) - length(suffix) + 1) == suffix { print; exit }
        ' "$WORK/SHA256SUMS")
    fi
    if [ -z "$line" ]; then
        refuse "$BASE_URL/SHA256SUMS lists no archive for $TARGET${VERSION:+ of $VERSION}: this release has no \
build for this machine, or the base URL is not the release's folder. Pick another --version, or build from \
source: cargo install --locked --git https://github.com/$REPOSITORY launcher"
    fi
    if [ -z "$VERSION" ]; then
        ARCHIVE=$(printf '%s\n' "$line" | awk '{ print $2 }')
        VERSION=${ARCHIVE#20i-}
        VERSION=${VERSION%-"$TARGET".tar.gz}
        # Read from the file: a version, so no `/` or `..` reaches a path.
        VERSION=$(parse_version "$VERSION")
        ARCHIVE="20i-$VERSION-$TARGET.tar.gz"
    fi
    expected=$(printf '%s\n' "$line" | awk '{ print $1 }')
    case $expected in
        *[!0-9a-f]* | '') refuse "$BASE_URL/SHA256SUMS holds \`$expected\` for $ARCHIVE, not a sha256: the file is damaged; try again later" ;;
    esac
    [ "${#expected}" -eq 64 ] || refuse "$BASE_URL/SHA256SUMS holds \`$expected\` for $ARCHIVE, not a sha256: the file is damaged; try again later"

    say "downloading $ARCHIVE from $BASE_URL"
    fetch "$BASE_URL/$ARCHIVE" "$WORK/$ARCHIVE" progress
    actual=$(sha256_of "$WORK/$ARCHIVE")
    if [ "$actual" != "$expected" ]; then
        refuse "checksum mismatch: $ARCHIVE has sha256 $actual, SHA256SUMS says $expected: the download is \
damaged or was tampered with; nothing was installed. Run this again; if it persists, report it at \
https://github.com/$REPOSITORY/issues"
    fi
    say "checked the sha256 of $ARCHIVE"
    if [ "$HAVE_COSIGN" = 1 ]; then
        verify_signature "$WORK/$ARCHIVE"
    else
        say "cosign is not installed: the signature is not verified (install cosign, or use --verify to require it)"
    fi

    mkdir "$WORK/extract"
    tar -xzf "$WORK/$ARCHIVE" -C "$WORK/extract" || refuse "$ARCHIVE cannot be unpacked: try again; nothing was installed"
    binary="$WORK/extract/20i-$VERSION-$TARGET/20i"
    [ -f "$binary" ] || refuse "$ARCHIVE holds no 20i-$VERSION-$TARGET/20i: the release is broken; report it at https://github.com/$REPOSITORY/issues"

    mkdir -p -- "$PREFIX" || refuse "cannot create $PREFIX: give a --prefix you can write to (no root needed)"
    # Logical, not resolved: PATH names ~/.local/bin as such even where HOME is behind a symlink.
    PREFIX=$(cd -- "$PREFIX" && pwd)
    # Written beside its destination and renamed over it: the old 20i works until the rename, and a failure
    # before leaves it as it was.
    STAGED="$PREFIX/20i.tmp.$$"
    cp -- "$binary" "$STAGED" || refuse "cannot write $STAGED: give a --prefix you can write to"
    chmod 755 "$STAGED"
    mv -f -- "$STAGED" "$PREFIX/20i" || refuse "cannot replace $PREFIX/20i: is it in use or read-only? Nothing was changed"
    STAGED=

    say "installed $PREFIX/20i ($VERSION, $TARGET)"
    case ":${PATH:-}:" in
        *":$PREFIX:"*) ;;
        *)
            case ${SHELL:-} in
                */zsh) rc="$HOME/.zshrc" ;;
                */bash) rc="$HOME/.bashrc" ;;
                *) rc="$HOME/.profile" ;;
            esac
            say "$PREFIX is not on your PATH: add it with"
            say "  echo 'export PATH=\"$PREFIX:\$PATH\"' >> $rc"
            say "and open a new shell (or run: export PATH=\"$PREFIX:\$PATH\")"
            ;;
    esac
    "$PREFIX/20i" --version
}

main "$@"
