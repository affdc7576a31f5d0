# The short commands. Each is one line of real work; read the target to see what it runs.
.PHONY: setup demo test lint fmt snapshots

# Make this machine ready: Docker Engine (containerd image store), buildx, compose v2, arm64 emulation,
# the distribution registry, skopeo, hadolint. Idempotent: a second run takes seconds.
setup:
	bash scripts/setup.sh

# The main job on an embedded default: plan a sample release (v2.0.0, after v1.0.0) of the whole matrix.
demo:
	cargo xtask plan v2.0.0 --published v1.0.0

# Every test, including the ones that build and push images to registries on 127.0.0.1.
test: setup
	cargo test --workspace --all-targets

# The gates CI applies before the tests.
lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets --workspace -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
	hadolint images/php-fpm/Dockerfile

fmt:
	cargo fmt --all

# Review changed snapshots (plans, notes) after an intended change.
snapshots:
	cargo insta review || INSTA_UPDATE=always cargo test --workspace
