#!/usr/bin/env bash
# The whole test suite: setup, lints, the static boot shim's budget, fuzz smoke runs,
# then every test tier. `.ci/run` calls this. Run as root (CI does) so the root-only
# tests run; BERTH_STRICT=1 turns their "missing prerequisite" skips into failures.
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/setup.sh
bash ci/fetch-rootfs.sh
bash ci/fetch-kernels.sh

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo deny check bans licenses sources"
# advisories needs the RustSec database from GitHub, which this network does not reach.
cargo deny check bans licenses sources
echo "== device binaries: berth-init static and within budget, berth (both targets)"
bash ci/check-init.sh
echo "== fuzz smoke"
bash ci/fuzz-smoke.sh 15
echo "== feature combinations: store without its write side (as berth-init would use it)"
cargo clippy -p store --no-default-features --locked -- -D warnings
echo "== build"
cargo build --workspace --locked
echo "== tests"
BERTH_STRICT=1 cargo test --workspace --locked
echo "== crash injection at every mutation (the crash-test build of berth)"
cargo clippy -p updater --features crash-points --all-targets --locked -- -D warnings
cargo test -p updater --features crash-points --locked --test crash -- --nocapture
