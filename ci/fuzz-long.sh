#!/usr/bin/env bash
# Long fuzzing runs, outside CI: each fuzz target of fuzz/ for SECONDS, JOBS at once
# (default: as many as there are cores), each from its working corpus kept outside git
# ($BERTH_CACHE/fuzz-corpus/TARGET), the committed corpus (fuzz/corpora/TARGET) and the
# seeds (fuzz/seeds/TARGET). Afterwards the working corpus is minimized
# (`cargo fuzz cmin`: the inputs that reach distinct coverage) into fuzz/corpora/TARGET,
# which CI's smoke run starts from; commit it. The runs, their coverage and any crash
# go into the "Fuzzing: long runs" table of BENCHMARKS.md, one row per target (a target
# run again replaces its row).
# Usage: ci/fuzz-long.sh SECONDS [TARGET...]   (default: every target); env JOBS=N
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:?usage: ci/fuzz-long.sh SECONDS [TARGET...]}
shift
cache=${BERTH_CACHE:-/var/cache/berth}
jobs=${JOBS:-$(nproc)}
(cd fuzz && cargo +nightly fuzz build >/dev/null)
if (($#)); then targets=("$@"); else mapfile -t targets < <(cd fuzz && cargo +nightly fuzz list); fi
logs=$(mktemp -d)
run() {
    local t=$1 corpus=$cache/fuzz-corpus/$1
    mkdir -p "$corpus"
    local dirs=("$corpus")
    [[ -d fuzz/corpora/$t ]] && dirs+=("fuzz/corpora/$t")
    [[ -d fuzz/seeds/$t ]] && dirs+=("fuzz/seeds/$t")
    # The first directory takes what the run finds; the committed ones are only read.
    if (cd fuzz && cargo +nightly fuzz run "$t" "${dirs[@]/#fuzz\//../fuzz/}" -- \
        -max_total_time="$secs" -print_final_stats=1) >"$logs/$t" 2>&1; then
        echo ok >"$logs/$t.rc"
    else
        echo crash >"$logs/$t.rc"
    fi
}
export -f run
export secs cache logs
printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c 'run {}'

rows=""
for t in "${targets[@]}"; do
    log=$logs/$t
    runs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
    took=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\2/p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    result=$(cat "$logs/$t.rc")
    if [[ $result == crash ]]; then
        result="crash: $(grep -o 'artifacts/[^ ]*' "$log" | head -1)"
    else
        # Minimize into the committed corpus: what the working corpus, the committed one
        # and the seeds reach, in the fewest inputs.
        merged=$(mktemp -d)
        dirs=("$cache/fuzz-corpus/$t")
        [[ -d fuzz/corpora/$t ]] && dirs+=("$PWD/fuzz/corpora/$t")
        (cd fuzz && cargo +nightly fuzz run "$t" "$merged" "${dirs[@]}" -- -merge=1 >/dev/null 2>&1)
        rm -rf "fuzz/corpora/$t"
        mkdir -p "fuzz/corpora/$t"
        cp "$merged"/* "fuzz/corpora/$t/" 2>/dev/null || true
        rm -rf "$merged"
    fi
    kept=$(find "fuzz/corpora/$t" -type f 2>/dev/null | wc -l)
    size=$(du -sk "fuzz/corpora/$t" 2>/dev/null | cut -f1)
    echo "$t: ${runs:-?} runs in ${took:-?} s, cov ${cov:-?}, features ${ft:-?}, corpus kept $kept files (${size:-0} KiB), $result"
    rows+="| \`$t\` | $(date -u +%Y-%m-%d) | ${took:-?} | ${runs:-?} | ${cov:-?} | ${ft:-?} | $kept (${size:-0} KiB) | $result |"$'\n'
done

# Rows of targets not run this time stay as they were.
old=$(sed -n '/<!-- fuzz-long:start -->/,/<!-- fuzz-long:end -->/p' BENCHMARKS.md | grep '^| `' || true)
for t in "${targets[@]}"; do old=$(grep -v "^| \`$t\` |" <<<"$old" || true); done
table=$(printf '%s\n%s' "$old" "$rows" | grep '^| `' | sort)
section=$(cat <<MD
<!-- fuzz-long:start -->
## Fuzzing: long runs

Measured by \`ci/fuzz-long.sh SECONDS TARGET…\` (outside CI), $(nproc) cores, libFuzzer
through cargo-fuzz on nightly; each row is a target's latest run, from its working corpus
(\`\$BERTH_CACHE/fuzz-corpus/\`), the committed corpus (\`fuzz/corpora/\`) and the seeds.
Coverage is libFuzzer's count of covered edges (cov) and features (ft) at the end of the
run; "kept" is the corpus minimized into \`fuzz/corpora/TARGET\`, which CI's smoke run
(\`ci/fuzz-smoke.sh\`) starts from.

| target | date | seconds | runs | cov | ft | corpus kept | result |
|---|---|---|---|---|---|---|---|
${table}

<!-- fuzz-long:end -->
MD
)
python3 ci/report-section.py BENCHMARKS.md fuzz-long "$section"
rm -rf "$logs"
