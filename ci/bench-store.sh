#!/usr/bin/env bash
# Benchmark: commit and checkout of a real Debian rootfs, Berth beside OSTree (bare mode),
# measured in the same run on the same filesystem. Writes the "Object store" section of
# BENCHMARKS.md. Needs root (both tools preserve ownership). Usage: ci/bench-store.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}

bash ci/setup.sh --bench-tools
bash ci/fetch-rootfs.sh
cargo build --release --locked -p image >/dev/null

cache=${BERTH_CACHE:-/var/cache/berth}
# OSTree cannot store device nodes, so both tools commit the rootfs with /dev emptied.
input=$cache/bench-rootfs
if [[ ! -e $input/etc/os-release ]]; then
    rm -rf "$input.tmp"
    cp -a "$cache/rootfs-bookworm-minbase" "$input.tmp"
    find "$input.tmp/dev" -mindepth 1 -delete
    mv "$input.tmp" "$input"
fi
work=$(mktemp -d /var/tmp/berth-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
bi=$PWD/target/release/berth-image

now() { date +%s.%N; }
# time_of CMD...: runs CMD with output discarded, prints the seconds it took.
time_of() {
    local t0 t1
    t0=$(now)
    "$@" >/dev/null 2>&1
    t1=$(now)
    echo "$t1 - $t0" | bc -l
}
median() { sort -n | awk '{a[NR]=$1} END {m=(NR+1)/2; printf "%.3f", (a[int(m)]+a[int(m+0.5)])/2}'; }

declare -a bc bk oc ok br orr
for i in $(seq 1 "$runs"); do
    rm -rf "$work"/*
    bc+=("$(time_of "$bi" commit --repo "$work/brepo" --tree "$input" --version 1 --timestamp 0)")
    id=$("$bi" commit --repo "$work/brepo" --tree "$input" --version 1 --timestamp 0 2>/dev/null)
    br+=("$(time_of "$bi" commit --repo "$work/brepo" --tree "$input" --version 2 --timestamp 0)")
    bk+=("$(time_of "$bi" checkout --repo "$work/brepo" "$id" "$work/bout")")

    ostree --repo="$work/orepo" init --mode=bare
    oc+=("$(time_of ostree --repo="$work/orepo" commit --branch=bench --tree=dir="$input")")
    orr+=("$(time_of ostree --repo="$work/orepo" commit --branch=bench2 --tree=dir="$input")")
    ok+=("$(time_of ostree --repo="$work/orepo" checkout bench "$work/oout")")
done
bsize=$(du -sk "$work/brepo" | cut -f1)
osize=$(du -sk "$work/orepo" | cut -f1)
files=$(find "$input" -xdev | wc -l)
insize=$(du -sk "$input" | cut -f1)

m() { printf '%s\n' "$@" | median; }
BC=$(m "${bc[@]}"); BK=$(m "${bk[@]}"); BR=$(m "${br[@]}")
OC=$(m "${oc[@]}"); OK=$(m "${ok[@]}"); OR=$(m "${orr[@]}")
ratio() { echo "scale=2; $1 / $2" | bc -l | sed 's/^\./0./'; }

section=$(cat <<MD
<!-- store-bench:start -->
## Object store: commit and checkout of a Debian rootfs, Berth vs OSTree

Measured by \`ci/bench-store.sh $runs\` on $(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r), $(df -T "$work" | awk 'NR==2{print $2}').
Input: Debian bookworm \`debootstrap --variant=minbase\` with /dev emptied (OSTree cannot
store device nodes): $files entries, $((insize / 1024)) MiB. Median of $runs runs, warm page
cache, each tool in a fresh repository (\`ostree init --mode=bare\`, the mode that
preserves ownership as Berth does). Ratio = Berth / OSTree; below 1 means Berth is faster
or smaller. $(ostree --version | sed -n 's/^ *Version: *//p' | tr -d "'" | sed 's/^/OSTree /').

| | Berth | OSTree | ratio |
|---|---|---|---|
| commit, new repository (s) | $BC | $OC | $(ratio "$BC" "$OC") |
| commit again, every object present (s) | $BR | $OR | $(ratio "$BR" "$OR") |
| checkout, hard links (s) | $BK | $OK | $(ratio "$BK" "$OK") |
| repository size after the commits (KiB) | $bsize | $osize | $(ratio "$bsize" "$osize") |
<!-- store-bench:end -->
MD
)

report=BENCHMARKS.md
if [[ ! -e $report ]]; then
    printf '# Berth benchmarks\n\nEach section is written by the script it names; rerun it to refresh the numbers.\nThese machines are shared and noisy: compare the ratios, measured in the same run.\n\n' >"$report"
fi
python3 ci/report-section.py "$report" store-bench "$section"
echo "$section"
