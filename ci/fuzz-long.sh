#!/usr/bin/env bash
# Long fuzzing runs, outside CI: each fuzz target of fuzz/ for SECONDS, JOBS at once
# (default: as many as there are cores), each from its working corpus kept outside git
# ($BERTH_CACHE/fuzz-corpus/TARGET), the committed corpus (fuzz/corpora/TARGET.tar.zst)
# and the seeds (fuzz/seeds/TARGET). Afterwards the working corpus is minimized
# (libFuzzer's -set_cover_merge: the fewest inputs that reach the same coverage) into
# fuzz/corpora/TARGET.tar.zst, which CI's smoke run starts from; commit it. The runs, their coverage and any crash
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
# The committed corpora, unpacked.
for t in "${targets[@]}"; do
    mkdir -p "$logs/committed-$t"
    if [[ -f fuzz/corpora/$t.tar.zst ]]; then tar --zstd -xf "fuzz/corpora/$t.tar.zst" -C "$logs/committed-$t"; fi
done
run() {
    local t=$1 corpus=$cache/fuzz-corpus/$1
    mkdir -p "$corpus"
    local dirs=("$corpus" "$logs/committed-$t")
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
        (cd fuzz && cargo +nightly fuzz run "$t" "$merged" "$cache/fuzz-corpus/$t" \
            "$logs/committed-$t" -- -set_cover_merge=1 >/dev/null 2>&1)
        mkdir -p fuzz/corpora
        tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$merged" -cf - . |
            zstd -19 -q -f -o "fuzz/corpora/$t.tar.zst"
        kept=$(find "$merged" -type f | wc -l)
        rm -rf "$merged"
    fi
    size=$(( ($(stat -c %s "fuzz/corpora/$t.tar.zst" 2>/dev/null || echo 0) + 1023) / 1024 ))
    echo "$t: ${runs:-?} runs in ${took:-?} s, cov ${cov:-?}, features ${ft:-?}, corpus kept ${kept:-0} files (${size} KiB compressed), $result"
    rows+="| \`$t\` | $(date -u +%Y-%m-%d) | ${took:-?} | ${runs:-?} | ${cov:-?} | ${ft:-?} | ${kept:-0} (${size} KiB) | $result |"$'\n'
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
run; "kept" is the corpus minimized into \`fuzz/corpora/TARGET.tar.zst\` (size compressed), which CI's smoke run
(\`ci/fuzz-smoke.sh\`) starts from.

| target | date | seconds | runs | cov | ft | corpus kept | result |
|---|---|---|---|---|---|---|---|
${table}

<!-- fuzz-long:end -->
MD
)
python3 ci/report-section.py BENCHMARKS.md fuzz-long "$section"
rm -rf "$logs"
