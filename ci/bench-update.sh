#!/usr/bin/env bash
# Benchmark: Berth's updates beside the common delta tools, on three pairs of trees that
# the script builds itself (cached outside git in $BERTH_CACHE, default /var/cache/berth):
#   minbase    Debian bookworm `debootstrap --variant=minbase`, before and after a real
#              security upgrade (ci/fetch-upgraded-rootfs.sh minbase);
#   device     the same with python3, openssh-server and systemd (… device);
#   synthetic  minbase plus a 64 MiB file; after: many files renamed and moved, and
#              1 MiB inserted in the middle of the large file.
# For each, in the same run: Berth's update (size, make time and peak RSS, apply time and
# peak RSS), bsdiff over the whole tar, xdelta3 -9 -S djw, zstd --patch-from --long=31
# -19, rdiff, casync, and ostree static-delta, with the full image (`zstd -19 --long`) as
# the baseline. Writes the "Updates" section of BENCHMARKS.md, and the "Updates by kind
# of file" section: Berth's update by kind (gzip, ELF, other, trees; `delta --by-kind`)
# with plain patches only (`--no-deflate --no-elf`, as before issue 18) and as sent.
#
# Regression guard: fails (and leaves BENCHMARKS.md alone) if Berth's update for a corpus
# is more than 5% larger than the number recorded there; BERTH_BENCH_ACCEPT=1 records the
# new numbers anyway. Usage: ci/bench-update.sh [CORPUS…]  (default: all three). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
repo_root=$PWD
bash ci/setup.sh --bench-tools
# The peers: Debian's packages (bench only; the test suite does not need them).
need=()
for p in bsdiff:bsdiff xdelta3:xdelta3 rdiff:rdiff casync:casync ostree:ostree; do
    command -v "${p%%:*}" >/dev/null || need+=("${p##*:}")
done
if ((${#need[@]})); then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
corpora=("$@")
((${#corpora[@]})) || corpora=(minbase device synthetic)
cargo build --release --locked -p image -p updater >/dev/null

cache=${BERTH_CACHE:-/var/cache/berth}
work=$(mktemp -d /var/tmp/berth-bench-update.XXXXXX)
mounted=()
cleanup() {
    for m in "${mounted[@]}"; do umount "$m" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
# Each corpus is worked on in a filesystem of its own, made as a device's is: ext4 with
# mkfs.ext4's defaults (a journal), loop-mounted, so every tool writes to the same kind of
# disk a device has. The host's own may differ: the CI machines' ext4 has no journal, and
# there each new inode is found by scanning past recently freed ones, a cost that fell on
# Berth's about 1,600 new inodes (objects, deployment directories) and on none of the
# one-file tools.
fresh_fs() { # dir
    truncate -s 16G "$1.img"
    mkfs.ext4 -q -F "$1.img"
    mkdir -p "$1"
    mount -o loop "$1.img" "$1"
    mounted+=("$1")
}
bi=$repo_root/target/release/berth-image
b=$repo_root/target/release/berth
# time_rss CMD...: runs CMD, prints "seconds maxrss_MiB"
time_rss() {
    /usr/bin/time -f "%e %M" -o "$work/time" "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
    read -r s k <"$work/time"
    echo "$s $((k / 1024))"
}
r() { echo "scale=1; $1 / $2" | bc -l | sed "s/^\./0./"; }
# median3 FN ARGS...: runs FN (which prints "seconds rss") three times; prints the run with
# the median time. Applies are timed so, for Berth and for zstd --patch-from, whose ratio
# the issue sets a bound on: on these shared machines one run can be off by half.
median3() {
    for _ in 1 2 3; do "$@"; done | sort -n | sed -n 2p
}

# The synthetic pair, from the minbase "before" tree.
make_synthetic() {
    local before=$cache/update-synthetic-before after=$cache/update-synthetic-after
    [[ -e $after/etc/os-release ]] && return
    bash ci/fetch-upgraded-rootfs.sh minbase
    rm -rf "$before.tmp" "$after.tmp"
    cp -a "$cache/update-before" "$before.tmp"
    # 64 MiB that look like a system image: the rootfs's own binaries, over and over.
    find "$before.tmp/usr/lib" "$before.tmp/usr/bin" -type f -size +100k -print0 | sort -z |
        xargs -0 cat | head -c $((64 << 20)) >"$before.tmp/var/lib/large.img"
    while (($(stat -c %s "$before.tmp/var/lib/large.img") < 64 << 20)); do
        head -c $((64 << 20)) "$before.tmp/var/lib/large.img" >>"$before.tmp/var/lib/large.img"
    done
    truncate -s $((64 << 20)) "$before.tmp/var/lib/large.img"
    cp -a "$before.tmp" "$after.tmp"
    # Renames and moves: every zoneinfo file renamed, perl's modules moved to another
    # directory, the man pages' directory renamed, sonames bumped.
    (cd "$after.tmp/usr/share/zoneinfo" && find . -type f | while read -r f; do mv "$f" "$f.tz"; done)
    mv "$after.tmp/usr/lib/x86_64-linux-gnu/perl-base" "$after.tmp/usr/lib/perl5-base"
    mv "$after.tmp/usr/share/man" "$after.tmp/usr/share/manual"
    for f in "$after.tmp"/usr/lib/x86_64-linux-gnu/lib*.so.*.*; do
        [[ -f $f && ! -L $f ]] && mv "$f" "$f.1"
    done
    # 1 MiB inserted in the middle of the large file.
    {
        head -c $((32 << 20)) "$before.tmp/var/lib/large.img"
        head -c $((1 << 20)) /dev/urandom
        tail -c +$(((32 << 20) + 1)) "$before.tmp/var/lib/large.img"
    } >"$after.tmp/var/lib/large.img"
    mv "$before.tmp" "$before"
    mv "$after.tmp" "$after"
}

rows=""
kinds=""
ratios=""
guard=""
failed=""
old_report=$(cat BENCHMARKS.md 2>/dev/null || true)
for corpus in "${corpora[@]}"; do
    case $corpus in
    minbase | device)
        bash ci/fetch-upgraded-rootfs.sh "$corpus"
        pre=$cache/update; [[ $corpus == device ]] && pre=$cache/update-device
        before=$pre-before after=$pre-after
        ;;
    synthetic)
        make_synthetic
        before=$cache/update-synthetic-before after=$cache/update-synthetic-after
        ;;
    *) echo "unknown corpus $corpus" >&2; exit 2 ;;
    esac
    echo "== $corpus: $(du -sm "$after" | cut -f1) MiB" >&2
    w=$work/$corpus
    fresh_fs "$w"

    # Berth.
    $bi keygen --out "$w/keys" >/dev/null
    vb=$($bi commit --repo "$w/repo" --tree "$before" --version 12.0 --timestamp 0 2>/dev/null)
    va=$($bi commit --repo "$w/repo" --tree "$after" --version 12.1 --timestamp 0 2>/dev/null)
    read -r gen_s gen_rss < <(time_rss "$bi" delta --repo "$w/repo" --from "$vb" --to "$va" --key "$w/keys/berth.key" -o "$w/delta.berth")
    berth_bytes=$(stat -c %s "$w/delta.berth")
    # By kind of file, with plain patches only and as sent (untimed: each compresses
    # twice).
    $bi delta --repo "$w/repo" --from "$vb" --to "$va" --key "$w/keys/berth.key" -o "$w/plain.berth" --no-deflate --no-elf --by-kind --json >"$w/plain.json"
    $bi delta --repo "$w/repo" --from "$vb" --to "$va" --key "$w/keys/berth.key" -o "$w/kinds.berth" --by-kind --json >"$w/kinds.json"
    kinds+=$(python3 - "$corpus" "$w/plain.json" "$w/kinds.json" <<'PY'
import json, sys
corpus, plain, sent = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
for k in ("gzip", "elf", "other", "tree"):
    a, b = plain["by_kind"][k], sent["by_kind"][k]
    print(f"| {corpus} | {k} | {a['objects']} | {a['compressed']} | {b['compressed']} | {b['compressed'] / max(a['compressed'], 1):.2f} |")
print(f"| {corpus} | **the update** (deflate patches: {sent['deflated']}, zip patches: {sent['zip_patched']}, ELF patches: {sent['elf_patched']}) | {sent['objects']} | {plain['bytes']} | {sent['bytes']} | {sent['bytes'] / plain['bytes']:.2f} |")
PY
)$'\n'
    rm -f "$w/plain.berth" "$w/kinds.berth"
    berth_apply() { # a device at the old commit, updated: "seconds rss"
        rm -rf "$w/sysroot"
        $bi install --repo "$w/repo" --commit "$vb" --sysroot "$w/sysroot" >/dev/null
        local name=${vb:0:16}
        mkdir -p "$w/sysroot/berth/state/etc/$name/upper/berth/keys"
        cp "$w/keys/berth.pub" "$w/sysroot/berth/state/etc/$name/upper/berth/keys/"
        printf '{"choice":{"deployment":"%s"},"reason":"default"}' "$name" >"$w/boot.json"
        # Berth's apply ends with syncfs: write back the commits above first, so it does
        # not pay for them.
        sync
        time_rss "$b" --sysroot "$w/sysroot" --boot-json "$w/boot.json" update "$w/delta.berth" --progress none
    }
    read -r apply_s apply_rss < <(median3 berth_apply)
    rm -rf "$w/sysroot"

    # The tars every whole-image tool works on.
    tar --sort=name --numeric-owner -C "$before" -cf "$w/before.tar" .
    tar --sort=name --numeric-owner -C "$after" -cf "$w/after.tar" .
    tar_bytes=$(stat -c %s "$w/after.tar")
    read -r full_s _ < <(time_rss zstd -q -19 --long=27 -T2 "$w/after.tar" -o "$w/after.tar.zst")
    full=$(stat -c %s "$w/after.tar.zst")
    rm -f "$w/after.tar.zst"

    row() { # name bytes make_s make_rss apply_s apply_rss (Berth's row in bold)
        local bytes=$2 ratio
        ratio=$(r "$full" "$2")
        [[ $1 == \*\** ]] && bytes="**$2**" ratio="**$ratio**"
        rows+="| $corpus | $1 | $bytes | $ratio | $3 | $4 | $5 | $6 |"$'\n'
    }
    rows+="| $corpus | full image: the tar ($((tar_bytes >> 20)) MiB), \`zstd -19 --long\` | $full | 1.0 | $full_s | | | |"$'\n'
    row "**Berth** (\`berth-image delta\`, \`berth update\`)" "$berth_bytes" "$gen_s" "$gen_rss" "$apply_s" "$apply_rss"

    read -r s m < <(time_rss bsdiff "$w/before.tar" "$w/after.tar" "$w/bsdiff.patch")
    read -r as am < <(time_rss bspatch "$w/before.tar" "$w/bs.out" "$w/bsdiff.patch")
    cmp -s "$w/bs.out" "$w/after.tar" || { echo "bspatch did not reproduce the tar" >&2; exit 1; }
    row "bsdiff over the tar" "$(stat -c %s "$w/bsdiff.patch")" "$s" "$m" "$as" "$am"
    ratios+="$corpus $(echo "scale=2; $berth_bytes / $(stat -c %s "$w/bsdiff.patch")" | bc -l | sed 's/^\./0./')× bsdiff's, "
    rm -f "$w/bs.out" "$w/bsdiff.patch"

    win=$(((tar_bytes > (1 << 30) ? (1 << 30) : tar_bytes)))
    read -r s m < <(time_rss xdelta3 -e -9 -S djw -B "$win" -f -s "$w/before.tar" "$w/after.tar" "$w/x.vcdiff")
    read -r as am < <(time_rss xdelta3 -d -B "$win" -f -s "$w/before.tar" "$w/x.vcdiff" "$w/x.out")
    cmp -s "$w/x.out" "$w/after.tar" || { echo "xdelta3 did not reproduce the tar" >&2; exit 1; }
    row "xdelta3 -9 -S djw (source window = the tar)" "$(stat -c %s "$w/x.vcdiff")" "$s" "$m" "$as" "$am"
    rm -f "$w/x.out" "$w/x.vcdiff"

    read -r s m < <(time_rss zstd -q -19 --long=31 -T1 --patch-from="$w/before.tar" "$w/after.tar" -o "$w/pf.zst")
    zstd_apply() { # "seconds rss"; with an argument, the output synced to disk too
        rm -f "$w/pf.out"
        sync
        time_rss sh -c 'zstd -q -d --long=31 --patch-from="$1" "$2" -o "$3" && { [ -z "$4" ] || sync "$3"; }' \
            sh "$w/before.tar" "$w/pf.zst" "$w/pf.out" "${1:-}"
    }
    read -r as am < <(median3 zstd_apply)
    row "\`zstd -19 --long=31 --patch-from\`" "$(stat -c %s "$w/pf.zst")" "$s" "$m" "$as" "$am"
    # Berth's apply is on disk when it ends (syncfs); the same for zstd's output, timed too.
    read -r as_sync _ < <(median3 zstd_apply sync)
    ratios+="applied in $(echo "scale=2; $apply_s / $as" | bc -l | sed 's/^\./0./')× the time of zstd --patch-from ($(echo "scale=2; $apply_s / $as_sync" | bc -l | sed 's/^\./0./')× with its output synced to disk, $as_sync s); "
    rm -f "$w/pf.out" "$w/pf.zst"

    read -r s1 m1 < <(time_rss rdiff signature "$w/before.tar" "$w/sig")
    read -r s2 m2 < <(time_rss rdiff delta "$w/sig" "$w/after.tar" "$w/rdiff.delta")
    read -r as am < <(time_rss rdiff patch "$w/before.tar" "$w/rdiff.delta" "$w/rd.out")
    row "rdiff (signature + delta, uncompressed)" "$(stat -c %s "$w/rdiff.delta")" "$(echo "$s1 + $s2" | bc | sed 's/^\./0./')" "$((m1 > m2 ? m1 : m2))" "$as" "$am"
    rm -f "$w/rd.out" "$w/rdiff.delta" "$w/sig"

    # casync: the chunks of the new tar that the old tar's store lacks, plus its index.
    casync make --store="$w/b.castr" "$w/b.caibx" "$w/before.tar" >/dev/null 2>&1
    read -r s m < <(time_rss casync make --store="$w/a.castr" "$w/a.caibx" "$w/after.tar")
    comm -13 <(cd "$w/b.castr" && find . -type f | sort) <(cd "$w/a.castr" && find . -type f | sort) >"$w/new-chunks"
    cas_bytes=$(( $(stat -c %s "$w/a.caibx") + $( (cd "$w/a.castr" && xargs -r stat -c %s <"$w/new-chunks") | awk '{s+=$1} END {print s+0}') ))
    read -r as am < <(time_rss casync extract --store="$w/a.castr" --seed="$w/before.tar" "$w/a.caibx" "$w/ca.out")
    row "casync (new chunks + index; extract seeded with the old tar)" "$cas_bytes" "$s" "$m" "$as" "$am"
    rm -rf "$w/ca.out" "$w"/*.castr "$w"/*.caibx "$w/new-chunks"

    # OSTree: a static delta between the two commits, applied offline to a repo with the old one.
    # (It cannot store device nodes: /dev is left out.)
    echo /dev >"$work/ostree-skip"
    ostree --repo="$w/ostree" init --mode=bare >/dev/null
    ob=$(ostree --repo="$w/ostree" commit --branch=b --tree=dir="$before" --skip-list="$work/ostree-skip" --timestamp=0)
    oa=$(ostree --repo="$w/ostree" commit --branch=a --tree=dir="$after" --skip-list="$work/ostree-skip" --timestamp=0)
    read -r s m < <(time_rss ostree --repo="$w/ostree" static-delta generate --from="$ob" --to="$oa" --inline --min-fallback-size=0 --filename="$w/ostree.delta")
    ostree --repo="$w/ostree2" init --mode=bare >/dev/null
    ostree --repo="$w/ostree2" commit --branch=b --tree=dir="$before" --skip-list="$work/ostree-skip" --timestamp=0 >/dev/null
    read -r as am < <(time_rss ostree --repo="$w/ostree2" static-delta apply-offline "$w/ostree.delta")
    row "\`ostree static-delta generate\` (2022.7)" "$(stat -c %s "$w/ostree.delta")" "$s" "$m" "$as" "$am"
    umount "$w"
    rm -rf "$w" "$w.img"

    recorded=$(printf '%s\n' "$old_report" | sed -n "s/.*<!-- guard $corpus \([0-9]*\) -->.*/\1/p" | head -1)
    guard+="<!-- guard $corpus $berth_bytes -->"$'\n'
    if [[ -n $recorded ]] && ((berth_bytes * 100 > recorded * 105)); then
        failed+="$corpus: Berth's update is $berth_bytes bytes, more than 5% over the $recorded recorded in BENCHMARKS.md"$'\n'
    fi
done

section=$(cat <<MD
<!-- update-bench:start -->
## Updates: Berth beside the delta tools

Measured by \`ci/bench-update.sh\` on $(date -u +%Y-%m-%d), $(nproc) cores, all in one run. Corpora, built by the
script: **minbase**, Debian bookworm \`debootstrap --variant=minbase\` before and after \`apt-get upgrade\` with
bookworm-updates and bookworm-security (apt lists and caches removed from both); **device**, the same with
python3, openssh-server and systemd; **synthetic**, minbase plus a 64 MiB file, then every zoneinfo file renamed,
perl's modules and the man pages moved to other directories, every versioned shared library renamed, and 1 MiB
inserted in the middle of the large file. *× smaller* is the full image's size over the update's. Times in
seconds, peak RSS in MiB (GNU time); Berth's apply and zstd's, whose ratio issue 18 bounds, are the median
of three runs each. Berth's apply verifies the signature and every part, hashes every object,
checks out the deployment with \`syncfs\` and writes the boot record; the others rebuild a tar (OSTree: its
repository; its commits leave out \`/dev\`, whose device nodes it cannot store). rdiff's delta is not
compressed (that is how the tool ships it). Each corpus is worked on in a fresh ext4 filesystem (mkfs.ext4's
defaults, with a journal) loop-mounted, as a device's disk; the page cache is written back (\`sync\`) before each
apply that is compared with Berth's.

| corpus | update | bytes | × smaller | make (s) | make RSS | apply (s) | apply RSS |
|---|---|---|---|---|---|---|---|
${rows%$'\n'}

Berth's update, per corpus: ${ratios%; }.

${guard%$'\n'}
<!-- update-bench:end -->
MD
)
if [[ -n $failed && ${BERTH_BENCH_ACCEPT:-0} != 1 ]]; then
    echo "$section"
    printf 'REGRESSION: %s' "$failed" >&2
    echo "BENCHMARKS.md left unchanged; BERTH_BENCH_ACCEPT=1 records these numbers." >&2
    exit 1
fi
python3 ci/report-section.py BENCHMARKS.md update-bench "$section"
echo "$section"
kinds_section=$(cat <<MD
<!-- update-kinds:start -->
## Updates by kind of file

Measured by \`ci/bench-update.sh\` in the same run, on the same commits: Berth's update counted by
\`berth-image delta --by-kind\` (each kind's operations compressed on their own, zstd -19, 8 MiB window,
so the kinds add up to a little more than the update, which compresses them together), *plain* with
\`--no-deflate --no-elf\` (every changed file a bidiff patch, as before issue 18), *sent* as
\`delta\` makes it by default (gzip files as deflate patches, ELF files as ELF patches, each when smaller).

| corpus | kind | objects | plain: bytes | sent: bytes | sent / plain |
|---|---|---|---|---|---|
${kinds%$'\n'}
<!-- update-kinds:end -->
MD
)
python3 ci/report-section.py BENCHMARKS.md update-kinds "$kinds_section"
echo "$kinds_section"
