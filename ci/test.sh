#!/usr/bin/env bash
# The whole test suite: setup, lints, the static boot shim's budget, fuzz smoke runs,
# then every test tier. `.ci/run` calls this. Run as root (CI does) so the root-only
# tests run; BERTH_STRICT=1 turns their "missing prerequisite" skips into failures.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each phase's wall time, printed at the end (also on failure), so the log shows where
# the suite's minutes go.
phases=() started=$SECONDS last=$SECONDS current=setup
phase() {
    phases+=("$((SECONDS - last)) s  $current")
    last=$SECONDS current=$1
    echo "== $1"
}
summary() {
    phases+=("$((SECONDS - last)) s  $current")
    echo "== time per phase (total $((SECONDS - started)) s)"
    printf '  %s\n' "${phases[@]}"
}
trap summary EXIT

bash ci/setup.sh --test-tools
bash ci/fetch-rootfs.sh
# systemd as init: qemu/tests/systemd.rs boots it to show the health unit at work.
bash ci/fetch-rootfs.sh systemd
# The update benchmark's device corpus, which qemu/tests/small_device.rs applies in a
# 128 MiB guest (built once, about 3 minutes; cached after).
bash ci/fetch-upgraded-rootfs.sh device
bash ci/fetch-kernels.sh
bash ci/fetch-loaders.sh

phase "cargo fmt --check"
cargo fmt --all --check
phase "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
phase "cargo deny check bans licenses sources"
# advisories needs the RustSec database from GitHub, which this network does not reach.
cargo deny check bans licenses sources
phase "device binaries: berth-init static and within budget, berth (both targets)"
bash ci/check-init.sh
phase "fuzz smoke"
bash ci/fuzz-smoke.sh 15
phase "feature combinations: store without its write side (read and verify only)"
cargo clippy -p store --no-default-features --locked -- -D warnings
phase "build"
cargo build --workspace --locked
phase "tests"
BERTH_STRICT=1 cargo test --workspace --locked
phase "crash injection at every mutation (the crash-test build of berth)"
cargo clippy -p updater --features crash-points --all-targets --locked -- -D warnings
cargo test -p updater --features crash-points --locked --test crash -- --nocapture
