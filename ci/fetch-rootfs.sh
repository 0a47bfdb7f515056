#!/usr/bin/env bash
# Builds the Debian bookworm minbase rootfs that the real-rootfs test, the benchmark and
# the demo commit. Cached outside git in $BERTH_CACHE (default /var/cache/berth);
# rebuilt only when missing. Needs root (debootstrap).
set -euo pipefail

cache=${BERTH_CACHE:-/var/cache/berth}
mirror=${BERTH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
dest=$cache/rootfs-bookworm-minbase

if [[ -e $dest/etc/os-release ]]; then
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "ci/fetch-rootfs.sh: $dest is missing and debootstrap needs root" >&2
    exit 1
fi
mkdir -p "$cache"
rm -rf "$dest.tmp"
echo "ci/fetch-rootfs.sh: debootstrap --variant=minbase bookworm into $dest (about a minute)"
if ! debootstrap --variant=minbase bookworm "$dest.tmp" "$mirror" >"$cache/debootstrap.log" 2>&1; then
    tail -20 "$cache/debootstrap.log" >&2
    echo "ci/fetch-rootfs.sh: debootstrap failed; full log in $cache/debootstrap.log" >&2
    exit 1
fi
mv "$dest.tmp" "$dest"
