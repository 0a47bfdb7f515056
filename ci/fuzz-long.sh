#!/usr/bin/env bash
# Long fuzzing runs, outside CI: each fuzz target of fuzz/ for SECONDS, as many at once
# as there are cores, each from its corpus kept outside git
# ($BERTH_CACHE/fuzz-corpus/TARGET, seeded from fuzz/seeds/TARGET), and writes the runs,
# their coverage and any crash to the "Fuzzing" section of BENCHMARKS.md.
# Usage: ci/fuzz-long.sh SECONDS [TARGET...]   (default: every target)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:?usage: ci/fuzz-long.sh SECONDS [TARGET...]}
shift
cache=${BERTH_CACHE:-/var/cache/berth}
(cd fuzz && cargo +nightly fuzz build >/dev/null)
if (($#)); then targets=("$@"); else mapfile -t targets < <(cd fuzz && cargo +nightly fuzz list); fi
logs=$(mktemp -d)
run() {
    local t=$1 corpus=$cache/fuzz-corpus/$1
    mkdir -p "$corpus"
    local dirs=("$corpus")
    [[ -d fuzz/seeds/$t ]] && dirs+=("fuzz/seeds/$t")
    # The first directory takes what the run finds; fuzz/seeds/ is only read.
    if (cd fuzz && cargo +nightly fuzz run "$t" "${dirs[@]/#fuzz\//../fuzz/}" -- \
        -max_total_time="$secs" -print_final_stats=1) >"$logs/$t" 2>&1; then
        echo ok >"$logs/$t.rc"
    else
        echo crash >"$logs/$t.rc"
    fi
}
export -f run
export secs cache logs
printf '%s\n' "${targets[@]}" | xargs -P "$(nproc)" -I{} bash -c 'run {}'

rows=""
for t in "${targets[@]}"; do
    log=$logs/$t
    runs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
    took=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\2/p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    corp=$(find "$cache/fuzz-corpus/$t" -type f | wc -l)
    result=$(cat "$logs/$t.rc")
    if [[ $result == crash ]]; then
        result="crash: $(grep -o 'artifacts/[^ ]*' "$log" | head -1)"
    fi
    echo "$t: ${runs:-?} runs in ${took:-?} s, cov ${cov:-?}, features ${ft:-?}, corpus $corp, $result"
    rows+="| \`$t\` | ${took:-?} | ${runs:-?} | ${cov:-?} | ${ft:-?} | $corp | $result |"$'\n'
done

section=$(cat <<MD
<!-- fuzz-long:start -->
## Fuzzing: long runs

Measured by \`ci/fuzz-long.sh $secs ${targets[*]}\` on $(date -u +%Y-%m-%d), $(nproc) cores
(targets run side by side), libFuzzer through cargo-fuzz on nightly, each from its corpus
kept outside git (\`\$BERTH_CACHE/fuzz-corpus/\`) and the committed seeds. Coverage is
libFuzzer's count of covered edges (cov) and features (ft) at the end of the run.

| target | seconds | runs | cov | ft | corpus files | result |
|---|---|---|---|---|---|---|
${rows}
<!-- fuzz-long:end -->
MD
)
python3 ci/report-section.py BENCHMARKS.md fuzz-long "$section"
rm -rf "$logs"
