#!/usr/bin/env bash
# Builds the Debian bookworm root filesystems the tests, the benchmark and the demo
# commit. Cached outside git in $BERTH_CACHE (default /var/cache/berth); each is rebuilt
# only when missing. Needs root (debootstrap).
# Usage: ci/fetch-rootfs.sh [minbase|systemd]
#   minbase  debootstrap --variant=minbase: the real-rootfs test, the benchmark, the demo
#   systemd  minbase with systemd as init (systemd-sysv): the QEMU test of the health unit
set -euo pipefail

cache=${BERTH_CACHE:-/var/cache/berth}
mirror=${BERTH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
variant=${1:-minbase}
case $variant in
minbase) include=() ;;
systemd) include=(--include=systemd-sysv) ;;
*)
    echo "usage: $0 [minbase|systemd]" >&2
    exit 2
    ;;
esac
dest=$cache/rootfs-bookworm-$variant

if [[ -e $dest/etc/os-release ]]; then
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "ci/fetch-rootfs.sh: $dest is missing and debootstrap needs root" >&2
    exit 1
fi
mkdir -p "$cache"
rm -rf "$dest.tmp"
echo "ci/fetch-rootfs.sh: debootstrap --variant=minbase ${include[*]} bookworm into $dest (about a minute)"
if ! debootstrap --variant=minbase "${include[@]}" bookworm "$dest.tmp" "$mirror" >"$cache/debootstrap-$variant.log" 2>&1; then
    tail -20 "$cache/debootstrap-$variant.log" >&2
    echo "ci/fetch-rootfs.sh: debootstrap failed; full log in $cache/debootstrap-$variant.log" >&2
    exit 1
fi
# apt's lists and caches would not ship in an image (minbase keeps them: it is the
# benchmark's corpus as measured).
[[ $variant == minbase ]] || rm -rf "$dest.tmp"/var/lib/apt/lists/* "$dest.tmp"/var/cache/apt/*.bin "$dest.tmp"/var/cache/apt/archives/*.deb
mv "$dest.tmp" "$dest"
