#!/usr/bin/env bash
# Builds the "before" and "after" trees of a real Debian security update, for the update
# benchmark. Usage: ci/fetch-upgraded-rootfs.sh [minbase|device]
#   minbase  the debootstrap --variant=minbase rootfs of ci/fetch-rootfs.sh (bookworm)
#   device   minbase plus a typical device stack: python3, openssh-server, systemd
# "before" is the bookworm suite as debootstrap installs it; "after" is a copy after
# `apt-get upgrade` with bookworm-updates and bookworm-security enabled. apt's package
# lists and caches are removed from both, as they would not ship in an image.
# Cached in $BERTH_CACHE (default /var/cache/berth) as update-before/-after (minbase) or
# update-device-before/-after. Needs root.
set -euo pipefail
cache=${BERTH_CACHE:-/var/cache/berth}
mirror=${BERTH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${BERTH_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
corpus=${1:-minbase}
case $corpus in
minbase)
    bash "$(dirname "$0")/fetch-rootfs.sh"
    src=$cache/rootfs-bookworm-minbase
    before=$cache/update-before
    after=$cache/update-after
    ;;
device)
    src=$cache/rootfs-bookworm-device
    before=$cache/update-device-before
    after=$cache/update-device-after
    if [[ ! -e $src/etc/os-release ]]; then
        rm -rf "$src.tmp"
        echo "ci/fetch-upgraded-rootfs.sh: debootstrap minbase + python3, openssh-server, systemd (a few minutes)"
        debootstrap --variant=minbase --include=python3,openssh-server,systemd,systemd-sysv \
            bookworm "$src.tmp" "$mirror" >"$cache/debootstrap-device.log" 2>&1 ||
            { tail -20 "$cache/debootstrap-device.log" >&2; exit 1; }
        mv "$src.tmp" "$src"
    fi
    ;;
*)
    echo "usage: $0 [minbase|device]" >&2
    exit 2
    ;;
esac

clean() { rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/cache/apt/archives/*.deb; }

if [[ ! -e $before/etc/os-release ]]; then
    rm -rf "$before.tmp"
    cp -a "$src" "$before.tmp"
    clean "$before.tmp"
    mv "$before.tmp" "$before"
fi
if [[ ! -e $after/etc/os-release ]]; then
    rm -rf "$after.tmp"
    cp -a "$src" "$after.tmp"
    cat >"$after.tmp/etc/apt/sources.list" <<SRC
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
SRC
    # A private mount namespace, so /proc for the chroot disappears with it.
    unshare --mount sh -c "mount -t proc proc '$after.tmp/proc' &&
        chroot '$after.tmp' sh -c 'DEBIAN_FRONTEND=noninteractive apt-get -qq update &&
            DEBIAN_FRONTEND=noninteractive apt-get -qq -y upgrade'" >"$cache/upgrade-$corpus.log" 2>&1 ||
        { tail -20 "$cache/upgrade-$corpus.log" >&2; exit 1; }
    clean "$after.tmp"
    mv "$after.tmp" "$after"
fi
