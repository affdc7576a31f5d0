#!/bin/sh
# The 20i SBOM scanner stand-in: speaks BuildKit's SBOM scanner protocol (moby/buildkit
# docs/attestations/sbom-protocol.md) where docker/buildkit-syft-scanner cannot be pulled (these machines).
# It lists, honestly, only what it can read: the packages dpkg (/var/lib/dpkg/status) and apk (/lib/apk/db/installed)
# record as installed in each root filesystem. Files no package manager owns are not listed: this is a stand-in,
# not a scanner, and its document says so (creators, comment).
set -eu

: "${BUILDKIT_SCAN_SOURCE:?is not set: BuildKit sets it when it runs a scanner (attest type=sbom,generator=...)}"
: "${BUILDKIT_SCAN_DESTINATION:?is not set: BuildKit sets it when it runs a scanner}"

# One package per line, tab-separated: type, name, version, architecture.
packages() {
    root=$1
    if [ -f "$root/var/lib/dpkg/status" ]; then
        awk 'BEGIN { FS = ": " }
             /^Package: / { name = $2 } /^Version: / { version = $2 } /^Architecture: / { arch = $2 }
             /^Status: / { installed = ($2 ~ / installed$/) }
             /^$/ { if (name != "" && installed) print "deb\t" name "\t" version "\t" arch; name = ""; installed = 0 }
             END { if (name != "" && installed) print "deb\t" name "\t" version "\t" arch }' \
            "$root/var/lib/dpkg/status"
    fi
    if [ -f "$root/lib/apk/db/installed" ]; then
        awk '/^P:/ { name = substr($0, 3) } /^V:/ { version = substr($0, 3) } /^A:/ { arch = substr($0, 3) }
             /^$/ { if (name != "") print "apk\t" name "\t" version "\t" arch; name = "" }
             END { if (name != "") print "apk\t" name "\t" version "\t" arch }' \
            "$root/lib/apk/db/installed"
    fi
}

# An in-toto statement whose predicate is an SPDX 2.3 document of the packages read from stdin.
statement() {
    name=$1 created=$2 namespace=$3
    awk -v name="$name" -v created="$created" -v namespace="$namespace" '
        function esc(s) { gsub(/\\/, "\\\\", s); gsub(/"/, "\\\"", s); gsub(/\t/, " ", s); return s }
        function id(s) { gsub(/[^A-Za-z0-9.-]/, "-", s); return s }
        BEGIN {
            FS = "\t"
            printf "{\"_type\":\"https://in-toto.io/Statement/v0.1\",\"predicateType\":\"https://spdx.dev/Document\","
            printf "\"subject\":[],\"predicate\":{\"spdxVersion\":\"SPDX-2.3\",\"dataLicense\":\"CC0-1.0\","
            printf "\"SPDXID\":\"SPDXRef-DOCUMENT\",\"name\":\"%s\",\"documentNamespace\":\"%s\",", esc(name), esc(namespace)
            printf "\"comment\":\"20i SBOM scanner stand-in: lists the packages dpkg and apk record as installed, nothing else\","
            printf "\"creationInfo\":{\"created\":\"%s\",\"creators\":[\"Tool: 20i-sbom-scanner-standin\"]},", created
            printf "\"packages\":["
        }
        {
            type = $1; pkg = $2; version = $3; arch = $4
            distro = (type == "deb") ? "debian" : "alpine"
            if (NR > 1) printf ","
            printf "{\"name\":\"%s\",\"SPDXID\":\"SPDXRef-Package-%s-%s-%d\",\"versionInfo\":\"%s\",", esc(pkg), type, id(pkg), NR, esc(version)
            printf "\"downloadLocation\":\"NOASSERTION\",\"filesAnalyzed\":false,"
            printf "\"externalRefs\":[{\"referenceCategory\":\"PACKAGE-MANAGER\",\"referenceType\":\"purl\","
            printf "\"referenceLocator\":\"pkg:%s/%s/%s@%s?arch=%s\"}]}", type, distro, esc(pkg), esc(version), esc(arch)
        }
        END { printf "]}}\n" }'
}

scan() {
    root=$1 out=$2
    list=$(packages "$root" | sort -u)
    sum=$(printf '%s\n' "$list" | sha256sum | cut -d' ' -f1)
    created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    # An empty list still gets a document: no packages is what was seen, and the attestation says so.
    printf '%s' "$list" | statement "$(basename "$root")" "$created" "https://20i-stack.invalid/sbom-scanner-standin/$sum" >"$out"
    echo "20i sbom-scanner stand-in: $(printf '%s' "$list" | grep -c . || true) packages in $root -> $out"
}

scan "$BUILDKIT_SCAN_SOURCE" "$BUILDKIT_SCAN_DESTINATION/$(basename "$BUILDKIT_SCAN_SOURCE").spdx.json"
if [ -n "${BUILDKIT_SCAN_SOURCE_EXTRAS:-}" ] && [ -d "$BUILDKIT_SCAN_SOURCE_EXTRAS" ]; then
    for extra in "$BUILDKIT_SCAN_SOURCE_EXTRAS"/*; do
        [ -d "$extra" ] || continue
        scan "$extra" "$BUILDKIT_SCAN_DESTINATION/$(basename "$extra").spdx.json"
    done
fi
