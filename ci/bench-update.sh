#!/usr/bin/env bash
# Benchmark: a real Debian security update (ci/fetch-upgraded-rootfs.sh) as a Berth update
# file, beside the full compressed image and `zstd --patch-from` over the tar, measured in
# the same run. Writes the "Updates" section of BENCHMARKS.md. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
bash ci/fetch-upgraded-rootfs.sh
cargo build --release --locked -p image -p updater -p init >/dev/null

cache=${BERTH_CACHE:-/var/cache/berth}
before=$cache/update-before
after=$cache/update-after
work=$(mktemp -d /var/tmp/berth-bench-update.XXXXXX)
trap 'rm -rf "$work"' EXIT
bi=$PWD/target/release/berth-image
b=$PWD/target/release/berth
# time_rss CMD...: runs CMD, prints "seconds maxrss_kib"
time_rss() { /usr/bin/time -f "%e %M" -o "$work/time" "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }; cat "$work/time"; }

$bi keygen --out "$work/keys" >/dev/null
vb=$($bi commit --repo "$work/repo" --tree "$before" --version 12.0 --timestamp 0 2>/dev/null)
va=$($bi commit --repo "$work/repo" --tree "$after" --version 12.1 --timestamp 0 2>/dev/null)
read -r gen_s gen_rss < <(time_rss $bi delta --repo "$work/repo" --from "$vb" --to "$va" --key "$work/keys/berth.key" -o "$work/delta.berth")
read -r full_gen_s _ < <(time_rss $bi delta --repo "$work/repo" --empty --to "$va" --key "$work/keys/berth.key" -o "$work/full.berth")
delta_bytes=$(stat -c %s "$work/delta.berth")
full_berth_bytes=$(stat -c %s "$work/full.berth")

# The device: the "before" deployment installed, trusting the key through its /etc layer.
$bi install --repo "$work/repo" --commit "$vb" --sysroot "$work/sysroot" >/dev/null
name=${vb:0:16}
mkdir -p "$work/sysroot/berth/state/etc/$name/upper/berth/keys"
cp "$work/keys/berth.pub" "$work/sysroot/berth/state/etc/$name/upper/berth/keys/"
printf '{"choice":{"deployment":"%s"},"reason":"default"}' "$name" >"$work/boot.json"
read -r apply_s apply_rss < <(time_rss $b --sysroot "$work/sysroot" --boot-json "$work/boot.json" update "$work/delta.berth" --progress none)

# Peers, same run: the full image and zstd --patch-from over tars of the same trees.
tar --sort=name --numeric-owner -C "$before" -cf "$work/before.tar" .
tar --sort=name --numeric-owner -C "$after" -cf "$work/after.tar" .
read -r full_s _ < <(time_rss zstd -q -19 --long=27 -T1 "$work/after.tar" -o "$work/after.tar.zst")
full_bytes=$(stat -c %s "$work/after.tar.zst")
read -r pf_s pf_rss < <(time_rss zstd -q -19 --long=31 -T1 --patch-from="$work/before.tar" "$work/after.tar" -o "$work/pf.zst")
pf_bytes=$(stat -c %s "$work/pf.zst")
read -r pfa_s pfa_rss < <(time_rss zstd -q -d --long=31 --patch-from="$work/before.tar" "$work/pf.zst" -o "$work/pf.out")

changed=$( (diff -rq --no-dereference "$before" "$after" 2>/dev/null || true) | wc -l)
r() { echo "scale=1; $1 / $2" | bc -l | sed "s/^\./0./"; }
section=$(cat <<MD
<!-- update-bench:start -->
## Updates: a Debian security update

Measured by \`ci/bench-update.sh\` on $(date -u +%Y-%m-%d), $(nproc) cores. Trees: Debian bookworm
\`debootstrap --variant=minbase\` before and after \`apt-get upgrade\` with bookworm-updates and
bookworm-security ($changed paths differ; apt lists and caches removed from both), $(du -sm "$after" | cut -f1) MiB.
Berth sends every object the device lacks, zstd-compressed (level 15, the default) in parts; a file changed at the
same path travels as a bidiff patch against the device's version when that compresses smaller.

| | bytes | full image / this | make (s) | make peak RSS (MiB) | apply (s) | apply peak RSS (MiB) |
|---|---|---|---|---|---|---|
| full image, \`tar \| zstd -19 --long\` | $full_bytes | 1.0 | $full_s | | | |
| Berth full update (\`delta --empty\`) | $full_berth_bytes | $(r "$full_bytes" "$full_berth_bytes") | $full_gen_s | | | |
| **Berth update (\`delta --from\`)** | **$delta_bytes** | **$(r "$full_bytes" "$delta_bytes")** | $gen_s | $((gen_rss / 1024)) | $apply_s | $((apply_rss / 1024)) |
| \`zstd -19 --long=31 --patch-from\` over the tar | $pf_bytes | $(r "$full_bytes" "$pf_bytes") | $pf_s | $((pf_rss / 1024)) | $pfa_s | $((pfa_rss / 1024)) |

Berth's apply includes verifying the signature and every part, re-hashing every object, checking out
the new deployment with \`syncfs\`, and writing the boot record; \`zstd\`'s apply only rebuilds a tar.
<!-- update-bench:end -->
MD
)
python3 - BENCHMARKS.md "$section" <<'PY'
import sys, re
path, section = sys.argv[1], sys.argv[2]
text = open(path).read()
pat = re.compile(r"<!-- update-bench:start -->.*?<!-- update-bench:end -->", re.S)
text = pat.sub(lambda _: section, text) if pat.search(text) else text.rstrip("\n") + "\n\n" + section + "\n"
open(path, "w").write(text)
PY
echo "$section"
