#!/usr/bin/env bash
# Benchmark: zip patches on real archives. Python wheels (zip archives) of three packages,
# each release and the next one, fetched from PyPI with `pip download` (cached outside git
# in $BERTH_CACHE/wheels, default /var/cache/berth). For each pair, in the same run:
# Berth's whole update from a tree holding the old wheel to one holding the new (as sent,
# and with --no-deflate: plain patches only), bsdiff and zstd --patch-from on the wheel
# alone; Berth's update is applied by `berth update` and the wheel compared. Writes the
# "Zip patches" section of BENCHMARKS.md. Usage: ci/bench-zip.sh
set -euo pipefail
cd "$(dirname "$0")/.."
repo_root=$PWD
need=()
for p in bsdiff:bsdiff pip3:python3-pip zstd:zstd bc:bc; do
    command -v "${p%%:*}" >/dev/null || need+=("${p##*:}")
done
if ((${#need[@]})); then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
cargo build --release --locked -p image -p updater >/dev/null
bi=$repo_root/target/release/berth-image
b=$repo_root/target/release/berth
cache=${BERTH_CACHE:-/var/cache/berth}/wheels
mkdir -p "$cache"
pairs=("setuptools 68.0.0 68.1.0" "pip 23.2 23.2.1" "requests 2.31.0 2.32.3")
for p in "${pairs[@]}"; do
    read -r name old new <<<"$p"
    for v in "$old" "$new"; do
        [[ -f $cache/$name-$v-py3-none-any.whl ]] ||
            pip3 download --no-deps --only-binary=:all: -q -d "$cache" "$name==$v"
    done
done
work=$(mktemp -d /var/tmp/berth-bench-zip.XXXXXX)
trap 'rm -rf "$work"' EXIT
rows=""
for p in "${pairs[@]}"; do
    read -r name old new <<<"$p"
    a=$cache/$name-$old-py3-none-any.whl
    z=$cache/$name-$new-py3-none-any.whl
    w=$work/$name
    mkdir -p "$w/a" "$w/b"
    cp "$a" "$w/a/pkg.whl"
    cp "$z" "$w/b/pkg.whl"
    $bi keygen --out "$w/keys" >/dev/null
    va=$($bi commit --repo "$w/repo" --tree "$w/a" --version 1 --timestamp 0 2>/dev/null)
    vb=$($bi commit --repo "$w/repo" --tree "$w/b" --version 2 --timestamp 0 2>/dev/null)
    read -r sent zips < <($bi delta --repo "$w/repo" --from "$va" --to "$vb" --key "$w/keys/berth.key" -o "$w/z.berth" --json |
        python3 -c 'import json, sys; d = json.load(sys.stdin); print(d["bytes"], d["zip_patched"])')
    plain=$($bi delta --repo "$w/repo" --from "$va" --to "$vb" --key "$w/keys/berth.key" -o "$w/p.berth" --json --no-deflate |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["bytes"])')
    # Applied as a device would: the wheel must come back byte for byte.
    $bi install --repo "$w/repo" --commit "$va" --sysroot "$w/sysroot" >/dev/null
    dep=${va:0:16}
    mkdir -p "$w/sysroot/berth/state/etc/$dep/upper/berth/keys"
    cp "$w/keys/berth.pub" "$w/sysroot/berth/state/etc/$dep/upper/berth/keys/"
    printf '{"choice":{"deployment":"%s"},"reason":"default"}' "$dep" >"$w/boot.json"
    /usr/bin/time -f "%e %M" -o "$w/time" "$b" --sysroot "$w/sysroot" --boot-json "$w/boot.json" update "$w/z.berth" --progress none >/dev/null
    cmp -s "$w/sysroot/berth/deploy/${vb:0:16}/pkg.whl" "$z" || { echo "$name: the applied wheel differs" >&2; exit 1; }
    read -r apply_s apply_kib <"$w/time"
    bsdiff "$a" "$z" "$w/bs"
    bs=$(stat -c %s "$w/bs")
    zstd -q -19 --long=27 --patch-from="$a" "$z" -o "$w/pf.zst" 2>/dev/null
    pf=$(stat -c %s "$w/pf.zst")
    ratio() { echo "scale=2; $1 / $2" | bc -l | sed 's/^\./0./'; }
    rows+="| $name $old → $new | $(stat -c %s "$z") | **$sent** ($zips zip patch) | $plain | $bs | $pf | $(ratio "$sent" "$bs") | $apply_s s, $((apply_kib / 1024)) MiB |"$'\n'
    rm -rf "$w"
done
section=$(cat <<MD
<!-- zip-bench:start -->
## Zip patches: Python wheels

Measured by \`ci/bench-zip.sh\` on $(date -u +%Y-%m-%d), $(nproc) cores, all in one run. Each wheel (a zip archive)
and its next release, from PyPI. *Berth* is the whole update (signed superblock, commit, trees and the wheel's
operation) from a tree holding the old wheel to one holding the new, as sent (a zip patch: the members'
uncompressed data patched, the changed members deflated again on the device, the unchanged ones copied) and
with \`--no-deflate\` (a plain patch of the compressed bytes); bsdiff and \`zstd -19 --long=27 --patch-from\` are
on the wheel alone. Berth's update was applied by \`berth update\` and the wheel compared byte for byte;
apply time and peak RSS (GNU time) for that.

| wheel | bytes | Berth | Berth, plain patches | bsdiff | zstd --patch-from | Berth / bsdiff | apply |
|---|---|---|---|---|---|---|---|
${rows%$'\n'}
<!-- zip-bench:end -->
MD
)
python3 ci/report-section.py BENCHMARKS.md zip-bench "$section"
echo "$section"
