#!/usr/bin/env bash
# Builds a small test root filesystem for ARCH (amd64 | arm64) at DEST from Debian's
# busybox-static (unpacked by ci/fetch-kernels.sh), with the test init and the static
# berth binary for that architecture. RELEASE is written to /etc/berth-release.
# Usage: make-rootfs.sh ARCH DEST RELEASE [crash|noinit]
set -euo pipefail
arch=$1 dest=$2 release=$3 variant=${4:-}
here=$(cd "$(dirname "$0")" && pwd)
cache=${BERTH_CACHE:-/var/cache/berth}/debian/$arch
busybox=$cache/busybox/bin/busybox
[[ -x $busybox ]] || { echo "make-rootfs: $busybox missing (run ci/fetch-kernels.sh)" >&2; exit 1; }
case $arch in amd64) triple=x86_64-unknown-linux-musl ;; arm64) triple=aarch64-unknown-linux-musl ;; *) echo "make-rootfs: unknown arch $arch" >&2; exit 1 ;; esac

rm -rf "$dest"
mkdir -p "$dest"/{bin,sbin,etc,var,run,dev,proc,sys,sysroot,tmp,usr/bin}
chmod 1777 "$dest/tmp"
cp "$busybox" "$dest/bin/busybox"
for applet in sh cat echo sed awk grep head tail touch ls mount umount sync poweroff reboot sleep mkdir rm dmesg ip insmod; do
    ln -s busybox "$dest/bin/$applet"
done
ln -s ../bin/busybox "$dest/sbin/poweroff"
install -m 0755 "$here/init.sh" "$dest/sbin/init"
echo "$release" >"$dest/etc/berth-release"
echo "berth-test" >"$dest/etc/hostname"
# The network driver and its dependencies, for the HTTP update scenario only (init.sh
# loads them; other boots never do).
kernel=$cache/kernel
ver=$(ls "$kernel/lib/modules")
mkdir -p "$dest/lib/berth-test-modules"
modprobe -d "$kernel" -S "$ver" --show-depends virtio_net | awk '/^insmod/{print $2}' |
    while read -r ko; do
        cp "$ko" "$dest/lib/berth-test-modules/"
        basename "$ko" >>"$dest/lib/berth-test-modules/order"
    done
berth=$here/../../target/$triple/device/berth
if [[ -x $berth ]]; then install -m 0755 "$berth" "$dest/usr/bin/berth"; fi
case $variant in
    crash) touch "$dest/etc/crash-on-boot" ;;
    noinit) rm "$dest/sbin/init" ;;
    "") ;;
    *) echo "make-rootfs: unknown variant $variant" >&2; exit 1 ;;
esac
