#!/usr/bin/env bash
# Bytes a device downloads per update path from a static repository, on the minbase
# security update (ci/fetch-upgraded-rootfs.sh minbase): `berth-image publish` of the
# upgraded commit, once with a delta from the old one and once without, served on
# 127.0.0.1 by python3's http.server; a device running the old commit takes the delta
# from the first and pulls the objects it lacks from the second; one running an
# unrelated commit takes the full update (pulling would cost more). Writes the
# "Downloads" section of BENCHMARKS.md. Needs root (the commits keep their owners).
set -euo pipefail
cd "$(dirname "$0")/.."
repo_root=$PWD
bash ci/setup.sh --bench-tools >/dev/null
bash ci/fetch-upgraded-rootfs.sh minbase >/dev/null
cargo build --release --locked -p image -p updater >/dev/null
cache=${BERTH_CACHE:-/var/cache/berth}
work=$(mktemp -d /var/tmp/berth-bench-remote.XXXXXX)
server=
trap '[[ -n $server ]] && kill $server; rm -rf "$work"' EXIT
bi=$repo_root/target/release/berth-image
b=$repo_root/target/release/berth

"$bi" keygen --out "$work/keys" >/dev/null
commit() { # commit TREE VERSION: a copy of TREE that trusts the key, committed
    rm -rf "$work/tree" && cp -a "$1" "$work/tree"
    mkdir -p "$work/tree/usr/lib/berth/keys"
    cp "$work/keys/berth.pub" "$work/tree/usr/lib/berth/keys/"
    "$bi" commit --repo "$work/repo" --tree "$work/tree" --version "$2" 2>/dev/null
}
old=$(commit "$cache/update-before" 1.0)
new=$(commit "$cache/update-after" 1.1)
mkdir -p "$work/other/sbin" "$work/other/etc"
printf '#!/bin/sh\n' >"$work/other/sbin/init" && chmod 755 "$work/other/sbin/init"
other=$(commit "$work/other" 0.1)
start=$(date +%s.%N)
"$bi" publish --repo "$work/repo" --to "$work/www/delta" --channel stable --commit "$new" \
    --from "$old" --key "$work/keys/berth.key" --json >"$work/publish.json"
publish_s=$(echo "$(date +%s.%N) - $start" | bc -l)
"$bi" publish --repo "$work/repo" --to "$work/www/nodelta" --channel stable --commit "$new" \
    --key "$work/keys/berth.key" --json >/dev/null
objects=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["objects"], d["objects_bytes"])' "$work/publish.json")
full_update=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["full_bytes"])' "$work/publish.json")
port=$((20000 + RANDOM % 20000))
python3 -m http.server --bind 127.0.0.1 --directory "$work/www" "$port" >/dev/null 2>&1 &
server=$!
sleep 1
pointer=$(stat -c %s "$work/www/delta/channels/stable")
fetch() { # fetch COMMIT REPO: install COMMIT, update from REPO's channel; prints the bytes downloaded and the path
    rm -rf "$work/sysroot"
    "$bi" install --repo "$work/repo" --commit "$1" --sysroot "$work/sysroot" >/dev/null
    "$b" --sysroot "$work/sysroot" --boot-json "$work/none.json" update \
        "http://127.0.0.1:$port/$2" --channel stable |
        sed -n 's/.*; \([0-9]*\) bytes downloaded for the \([a-z]*\) update.*/\1 \2/p'
}
read -r delta kind_d < <(fetch "$old" delta)
read -r pulled kind_o < <(fetch "$old" nodelta)
read -r full kind_f < <(fetch "$other" nodelta)
[[ $kind_d == delta && $kind_o == objects && $kind_f == full ]] ||
    { echo "unexpected update paths: $kind_d $kind_o $kind_f" >&2; exit 1; }
image=$(tar -C "$cache/update-after" -cf - . | zstd -19 -T0 -q | wc -c)
r() { echo "scale=1; $1 / $2" | bc -l | sed "s/^\./0./"; }

section=$(cat <<MD
<!-- remote-bench:start -->
## Downloads: bytes per update path from a static repository

Measured by \`ci/bench-remote.sh\` on $(date -u +%Y-%m-%d): the minbase security update
(\`ci/fetch-upgraded-rootfs.sh minbase\`) published with \`berth-image publish\` and fetched
over HTTP from 127.0.0.1 by \`berth update http://… --channel stable\`. Each device also
fetched the signed channel pointer ($pointer bytes). The new commit has ${objects% *} objects,
${objects#* } bytes as published one zstd frame each (with the index); publishing it with one
delta took $(printf %.1f "$publish_s") s. The full update ($full_update bytes) is $(( (full_update - image) * 100 / image ))% larger than the whole tar
under zstd -19 (per-object headers, parts compressed one by one with windows of at most 8 MiB); one
zstd frame per object is $(( (${objects#* } - image) * 100 / image ))% larger.

| path | device runs | channel offers | bytes downloaded | the whole image (tar, zstd -19, $image bytes) ÷ downloaded |
|---|---|---|---|---|
| delta | the old commit | a delta from it | $delta | $(r "$image" "$delta") |
| object pull | the old commit | no delta from it | $pulled | $(r "$image" "$pulled") |
| full | an unrelated commit | no delta from it | $full | $(r "$image" "$full") |

The object pull fetches the index and the trees and files the device lacks; the
unrelated device fetched the index and the trees too, found that the missing files cost
more than the full update, and took that (its row counts both).
<!-- remote-bench:end -->
MD
)
python3 ci/report-section.py BENCHMARKS.md remote-bench "$section"
echo "$section"
