#!/usr/bin/env bash
# Boot benchmark on both QEMU boards and per loader (the UEFI board through OVMF and
# systemd-boot); writes the "QEMU boots" section of BENCHMARKS.md.
# Usage: ci/bench-boot.sh [RUNS per board, default 5]
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
bash ci/fetch-kernels.sh
bash ci/fetch-loaders.sh
bash ci/check-init.sh >/dev/null
cargo build --locked --workspace
cargo run --locked -q -p qemu-tests --bin bench-boot -- "${1:-5}"
