#!/usr/bin/env bash
# The whole test suite: setup, lints, then every test tier. `.ci/run` calls this.
# Run as root (CI does) so the root-only tests run instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/setup.sh
bash ci/fetch-rootfs.sh

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
if command -v cargo-deny >/dev/null; then
    # advisories needs the advisory database from the network, which CI does not have.
    echo "== cargo deny check bans licenses sources"
    cargo deny --offline check bans licenses sources
fi
echo "== build"
cargo build --workspace --locked
echo "== tests"
BERTH_REQUIRE_ROOTFS=1 cargo test --workspace --locked
