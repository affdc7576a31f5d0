# The short commands. Each is one line of real work; read the target to see what it runs.
.PHONY: setup demo demo-down test bench lint fmt snapshots

# Make this machine ready: Docker Engine (containerd image store), buildx, compose v2, arm64 emulation,
# the distribution registry, skopeo, hadolint. Idempotent: a second run takes seconds.
setup:
	bash scripts/setup.sh

# The main job on an embedded default: a complete release of the workspace's version (Cargo.toml, v0.1.0 today;
# 5 PHP lines x 2 platforms) to two registries on 127.0.0.1 standing in for GHCR and Docker Hub (TLS, token auth,
# their quirks; testkit's hosted-standins), built from stand-in bases (Docker Hub's php images cannot be pulled
# here). Prints the digest table and where the notes are; leaves the registries up.
demo: setup
	cargo xtask-dev demo

# Stop the demo's registries and take their CAs out of /etc/docker/certs.d.
demo-down:
	bash scripts/registry.sh hosted-down demo
	bash scripts/registry.sh files-down 5102
	bash scripts/registry.sh down demo-ghcr
	bash scripts/registry.sh down demo-hub

# Every test, including the ones that build and push images to registries on 127.0.0.1.
test: setup
	cargo test --workspace --all-targets
	cargo test --package xtask --features dev --lib dev::

# Measured side by side, repeated, printed with their targets and never asserted (docs/performance.md): the release
# against the naive buildx loop, warm against cold builds, time outside the build, a cached `20i start` against
# `docker compose up`, the first start pulled against built. It empties this machine's build cache (buildx prune).
# It builds real PHP 8.2 and 8.4 when the stand-ins are saved: arm64 under QEMU makes a round most of an hour on a
# 2-core machine (`cargo xtask bench --platforms linux/amd64` for minutes; `--context busybox` for seconds).
bench: setup
	cargo xtask-dev bench --rounds 3 --json target/bench.json

# The gates CI applies before the tests (the last three: the GitHub workflows are current, safe and valid).
lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets --workspace -- -D warnings
	cargo clippy --all-targets --workspace --features xtask/dev -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
	hadolint images/php-fpm/Dockerfile testkit/standins/php-fpm/Dockerfile testkit/standins/php-fpm-real/Dockerfile testkit/standins/sbom-scanner/Dockerfile
	shellcheck launcher/install.sh
	cargo xtask workflows --check
	zizmor .github/workflows/
	check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml

fmt:
	cargo fmt --all

# Review changed snapshots (plans, notes) after an intended change.
snapshots:
	cargo insta review || INSTA_UPDATE=always cargo test --workspace
