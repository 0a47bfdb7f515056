#!/usr/bin/env bash
# Builds every fuzz target of fuzz/ (nightly cargo-fuzz) and runs each briefly.
# Usage: ci/fuzz-smoke.sh [SECONDS per target, default 15]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-15}
cargo +nightly fuzz build
for target in $(cargo +nightly fuzz list); do
    echo "== fuzz $target for ${secs}s"
    log=$(mktemp)
    # The committed corpus (corpora/<target>.tar.zst, minimized from the long runs of
    # ci/fuzz-long.sh) and seeds (seeds/<target>/) start the fuzzer where the long runs
    # got to; what the smoke run finds goes to corpus/<target> (not committed).
    dirs=()
    if [[ -f corpora/$target.tar.zst ]]; then
        rm -rf "corpus/$target.committed"
        mkdir -p "corpus/$target.committed"
        tar --zstd -xf "corpora/$target.tar.zst" -C "corpus/$target.committed"
        dirs+=("corpus/$target.committed")
    fi
    if [[ -d seeds/$target ]]; then dirs+=("seeds/$target"); fi
    if ((${#dirs[@]})); then
        mkdir -p "corpus/$target"
        dirs=("corpus/$target" "${dirs[@]}")
    fi
    if ! cargo +nightly fuzz run "$target" "${dirs[@]}" -- -max_total_time="$secs" >"$log" 2>&1; then
        tail -40 "$log" >&2
        echo "fuzz-smoke: $target failed; the crashing input is under fuzz/artifacts/$target/" >&2
        exit 1
    fi
    grep -E '^Done' "$log" || true
    rm -f "$log"
done
