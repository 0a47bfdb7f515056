#!/usr/bin/env bash
# Builds berth-init for both device targets and checks the budget: fully static (no
# PT_INTERP, no dynamic section), at most 128 KiB stripped. Runs the x86_64 build's
# test mode on a scratch sysroot, since it runs on this host too. With --report,
# writes the sizes into BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
budget=$((128 * 1024))
report=${1:-}

declare -A size
for arch in x86_64 aarch64; do
    cargo build --locked --profile device -p init --target "$arch-unknown-linux-musl" 2>&1 | grep -v '^\s*\(Compiling\|Finished\)' || true
    bin=target/$arch-unknown-linux-musl/device/berth-init
    if readelf -lW "$bin" | grep -qE 'INTERP|DYNAMIC'; then
        echo "check-init: $bin is not fully static:" >&2
        readelf -lW "$bin" | grep -E 'INTERP|DYNAMIC' >&2
        exit 1
    fi
    if readelf -SW "$bin" | grep -q '\.symtab'; then
        echo "check-init: $bin is not stripped" >&2
        exit 1
    fi
    size[$arch]=$(stat -c %s "$bin")
    echo "berth-init $arch: ${size[$arch]} bytes, static, stripped (budget $budget)"
    if ((size[$arch] > budget)); then
        echo "check-init: $bin is ${size[$arch]} bytes, over the $budget-byte budget" >&2
        exit 1
    fi
done

# berth (the agent, a placeholder for now) goes into the QEMU tests' root filesystems.
for arch in x86_64 aarch64; do
    cargo build --locked --profile device -p updater --target "$arch-unknown-linux-musl" 2>&1 | grep -v '^\s*\(Compiling\|Finished\)' || true
done

# The static x86_64 build's test mode must behave like the host build's.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/berth/boot" "$scratch/berth/deploy/v1/sbin"
printf '#!/bin/true\n' >"$scratch/berth/deploy/v1/sbin/init"
chmod 755 "$scratch/berth/deploy/v1/sbin/init"
out=$(target/x86_64-unknown-linux-musl/device/berth-init --dry-run --sysroot "$scratch")
grep -q '"deployment":"v1"' <<<"$out" || { echo "check-init: static dry run chose wrongly: $out" >&2; exit 1; }
echo "berth-init x86_64 static dry run: ok"

if [[ $report == --report ]]; then
    section=$(cat <<MD
<!-- init-size:start -->
## berth-init binary size

Measured by \`ci/check-init.sh --report\` on $(date -u +%Y-%m-%d) with rustc $(rustc --version | cut -d' ' -f2), profile \`device\`
(opt-level z, LTO, one codegen unit, panic abort, stripped), \`no_std\` on musl, static, non-PIE.
Budget 131072 bytes (128 KiB); aim 65536 (64 KiB).

| target | bytes | of budget |
|---|---|---|
| x86_64-unknown-linux-musl | ${size[x86_64]} | $((size[x86_64] * 100 / budget)) % |
| aarch64-unknown-linux-musl | ${size[aarch64]} | $((size[aarch64] * 100 / budget)) % |

The agent \`berth\` (std, clap, serde_json, the store, ureq with rustls and ring; same profile, static) for comparison:
$(stat -c %s target/x86_64-unknown-linux-musl/device/berth) bytes on x86_64, $(stat -c %s target/aarch64-unknown-linux-musl/device/berth) on aarch64.
<!-- init-size:end -->
MD
)
    python3 ci/report-section.py BENCHMARKS.md init-size "$section"
fi
