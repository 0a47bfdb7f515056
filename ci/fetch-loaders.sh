#!/usr/bin/env bash
# Downloads and unpacks the boot loaders the QEMU tests run, into $BERTH_CACHE/loaders/
# (default /var/cache/berth), outside git; nothing is installed system-wide:
#   u-boot-qemu/   Debian's u-boot-qemu unpacked (usr/lib/u-boot/qemu_arm64/u-boot.bin is
#                  what the aarch64 U-Boot test passes to QEMU's -bios)
# The package is Architecture: all, so the system's own apt lists serve it.
# Idempotent: a loader already unpacked is skipped.
set -euo pipefail
cache=${BERTH_CACHE:-/var/cache/berth}/loaders
mkdir -p "$cache"

for pkg in u-boot-qemu; do
    out=$cache/$pkg
    if [[ -e $out/.complete ]]; then
        continue
    fi
    echo "fetch-loaders: $pkg"
    rm -rf "$out" && mkdir -p "$out/dl"
    # -o APT::Sandbox::User=root: downloading into a root-owned cache directory.
    (cd "$out/dl" && apt-get -o APT::Sandbox::User=root download -qq "$pkg")
    dpkg -x "$out"/dl/"$pkg"_*.deb "$out"
    version=$(dpkg-deb -f "$out"/dl/"$pkg"_*.deb Version)
    rm -rf "$out/dl"
    echo "$version" >"$out/.complete"
done
