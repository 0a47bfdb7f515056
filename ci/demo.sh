#!/usr/bin/env bash
# The main job, end to end on a fresh Debian 12 machine: install what is needed, build,
# make a signing key, commit a real Debian rootfs into a repository, and check it out.
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/setup.sh
bash ci/fetch-rootfs.sh
cargo build --release --locked -p image

work=${BERTH_WORK:-/var/tmp/berth-demo}
rootfs=${BERTH_CACHE:-/var/cache/berth}/rootfs-bookworm-minbase
bi=target/release/berth-image
rm -rf "$work"
mkdir -p "$work"

$bi keygen --out "$work/keys"
commit=$($bi commit --repo "$work/repo" --tree "$rootfs" --version 12.0 --key "$work/keys/berth.key" \
    --meta source=debootstrap-minbase-bookworm)
$bi show --repo "$work/repo" "$commit"
$bi checkout --repo "$work/repo" "$commit" "$work/checkout" --verify "$work/keys/berth.pub"
$bi fsck --repo "$work/repo"
cat <<DONE

repository:  $work/repo  ($(du -sh "$work/repo" | cut -f1))
commit:      $commit
checkout:    $work/checkout
keys:        $work/keys/berth.key (secret), $work/keys/berth.pub (public)
DONE
