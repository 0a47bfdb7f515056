#!/usr/bin/env bash
# Benchmark: does `berth update` stay flat in memory and linear in time as files grow?
# In one run, two root filesystems that differ only in the size of one file
# (var/lib/large.img: 200 MiB, then 2 GiB of random bytes); the update changes the same
# eight 4 KiB regions, spread over the file, in both. For each: the delta's make time
# and peak RSS (berth-image delta, host build), and the apply time and peak RSS of the
# host build of `berth update` (GNU time's %e and %M: the child's ru_maxrss), then the
# 2 GiB / 200 MiB ratios. Writes the "Memory" section of BENCHMARKS.md.
# Needs root and about 11 GiB free in /var/tmp (checked first). Usage: ci/bench-memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh --bench-tools >/dev/null
cargo build --release --locked -p image -p updater >/dev/null
need_kib=$((11 << 20))
free_kib=$(df -k --output=avail /var/tmp | tail -1)
((free_kib > need_kib)) || { echo "bench-memory: /var/tmp has $((free_kib >> 20)) GiB free, needs 11" >&2; exit 1; }
work=$(mktemp -d /var/tmp/berth-bench-memory.XXXXXX)
trap 'rm -rf "$work"' EXIT
bi=$PWD/target/release/berth-image b=$PWD/target/release/berth
time_rss() { # CMD...: prints "seconds peak_RSS_MiB"
    /usr/bin/time -f "%e %M" -o "$work/time" "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
    read -r s k <"$work/time"
    echo "$s $(echo "scale=1; $k / 1024" | bc)"
}
ratio() { echo "scale=2; $1 / $2" | bc -l | sed 's/^\./0./'; }
$bi keygen --out "$work/keys" >/dev/null
declare -A res
for mib in 200 2048; do
    w=$work/$mib t=$work/$mib/tree
    mkdir -p "$t"/{etc,var/lib,run,dev,proc,sys,sysroot,sbin,usr/lib/berth/keys}
    printf '#!/bin/sh\n' >"$t/sbin/init" && chmod 755 "$t/sbin/init"
    cp "$work/keys/berth.pub" "$t/usr/lib/berth/keys/"
    head -c $((mib << 20)) /dev/urandom >"$t/var/lib/large.img"
    echo 1.0 >"$t/etc/release"
    v1=$($bi commit --repo "$w/repo" --tree "$t" --version 1.0 --timestamp 0)
    for i in 0 1 2 3 4 5 6 7; do # eight 4 KiB regions, spread evenly
        head -c 4096 /dev/urandom | dd of="$t/var/lib/large.img" bs=4096 seek=$((((mib << 8) * (2 * i + 1)) / 16)) conv=notrunc status=none
    done
    echo 2.0 >"$t/etc/release"
    v2=$($bi commit --repo "$w/repo" --tree "$t" --version 2.0 --timestamp 0)
    rm -rf "$t"
    read -r ms mr < <(time_rss "$bi" delta --repo "$w/repo" --from "$v1" --to "$v2" --key "$work/keys/berth.key" -o "$w/u.berth")
    $bi install --repo "$w/repo" --commit "$v1" --sysroot "$w/sysroot" >/dev/null
    rm -rf "$w/repo"
    printf '{"choice":{"kind":"deployment","deployment":"%s"},"reason":"default"}' "${v1:0:16}" >"$w/boot.json"
    sync # berth's apply ends with syncfs: it should not pay for the writes above
    read -r as ar < <(time_rss "$b" --sysroot "$w/sysroot" --boot-json "$w/boot.json" update "$w/u.berth" --progress none)
    $b --sysroot "$w/sysroot" --boot-json "$w/boot.json" fsck >/dev/null
    res[$mib]="$(stat -c %s "$w/u.berth") $ms $mr $as $ar"
    rm -rf "$w"
done
read -r b1 ms1 mr1 as1 ar1 <<<"${res[200]}"
read -r b2 ms2 mr2 as2 ar2 <<<"${res[2048]}"
section=$(cat <<MD
<!-- memory-bench:start -->
## Memory: updates of a 200 MiB and a 2 GiB file

Measured by \`ci/bench-memory.sh\` on $(date -u +%Y-%m-%d), $(nproc) cores, both sizes in one run. A root
filesystem whose one large file (random bytes) gets eight 4 KiB regions rewritten, spread over it; host
release builds; peak RSS is the child's \`ru_maxrss\` (GNU time), times in seconds. Apply is \`berth update\`
(verify, patch against the installed file, hash, check out, \`syncfs\`, record). The goal: apply memory
flat (ratio about 1), time linear (ratio about 10.2, the size ratio). Until format's \`PART_MAX\` went from 1 GiB
to 1 TiB the 2 GiB row could not be measured: a part holds a whole file's operation, and every device refused it.

| large file | update (bytes) | make (s) | make RSS (MiB) | apply (s) | apply RSS (MiB) |
|---|---|---|---|---|---|
| 200 MiB | $b1 | $ms1 | $mr1 | $as1 | $ar1 |
| 2 GiB | $b2 | $ms2 | $mr2 | $as2 | $ar2 |
| ratio | $(ratio "$b2" "$b1") | $(ratio "$ms2" "$ms1") | $(ratio "$mr2" "$mr1") | $(ratio "$as2" "$as1") | $(ratio "$ar2" "$ar1") |
<!-- memory-bench:end -->
MD
)
python3 ci/report-section.py BENCHMARKS.md memory-bench "$section"
echo "$section"
