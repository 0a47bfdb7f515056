#!/usr/bin/env bash
# Bytes a device downloads per update path from a static repository, on the minbase
# security update (ci/fetch-upgraded-rootfs.sh minbase): `berth-image publish` of the
# upgraded commit with a delta from the old one, served on 127.0.0.1 by python3's
# http.server; one device running the old commit (it takes the delta), one running an
# unrelated commit (no delta from it: the full update). Writes the "Downloads" section of
# BENCHMARKS.md. Needs root (the commits keep their owners).
set -euo pipefail
cd "$(dirname "$0")/.."
repo_root=$PWD
bash ci/setup.sh >/dev/null
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
"$bi" publish --repo "$work/repo" --to "$work/www" --channel stable --commit "$new" \
    --from "$old" --key "$work/keys/berth.key" --json >"$work/publish.json"
port=$((20000 + RANDOM % 20000))
python3 -m http.server --bind 127.0.0.1 --directory "$work/www" "$port" >/dev/null 2>&1 &
server=$!
sleep 1
pointer=$(stat -c %s "$work/www/channels/stable")
fetch() { # fetch COMMIT: install COMMIT, update from the channel; prints the bytes downloaded
    rm -rf "$work/sysroot"
    "$bi" install --repo "$work/repo" --commit "$1" --sysroot "$work/sysroot" >/dev/null
    "$b" --sysroot "$work/sysroot" --boot-json "$work/none.json" update \
        "http://127.0.0.1:$port" --channel stable |
        sed -n 's/.*; \([0-9]*\) bytes downloaded.*/\1/p'
}
delta=$(fetch "$old")
full=$(fetch "$other")
image=$(tar -C "$cache/update-after" -cf - . | zstd -19 -T0 -q | wc -c)
r() { echo "scale=1; $1 / $2" | bc -l | sed "s/^\./0./"; }

section=$(cat <<MD
<!-- remote-bench:start -->
## Downloads: bytes per update path from a static repository

Measured by \`ci/bench-remote.sh\` on $(date -u +%Y-%m-%d): the minbase security update
(\`ci/fetch-upgraded-rootfs.sh minbase\`) published with \`berth-image publish\` and fetched
over HTTP from 127.0.0.1 by \`berth update http://… --channel stable\`. Each device also
fetched the signed channel pointer ($pointer bytes). The object pull (fetching only the
missing objects when no delta exists) is not built yet. The full update is
$(( (full - image) * 100 / image ))% larger than the whole tar under zstd -19 (per-object headers, parts
compressed one by one with windows of at most 8 MiB).

| path | device runs | bytes downloaded | the whole image (tar, zstd -19, $image bytes) ÷ downloaded |
|---|---|---|---|
| delta | the old commit | $delta | $(r "$image" "$delta") |
| full | an unrelated commit | $full | $(r "$image" "$full") |
<!-- remote-bench:end -->
MD
)
python3 ci/report-section.py BENCHMARKS.md remote-bench "$section"
echo "$section"
