#!/usr/bin/env bash
# The main job, end to end on a fresh Debian 12 machine: install what is needed, build
# Berth, make a signing key, complete a small test root filesystem with its kernel set
# (kernel, initramfs with berth-init and modules), commit it, build a bootable disk image
# for a UEFI PC with berth-image disk (an ESP with systemd-boot, and the sysroot), print
# its bmap and how to flash it, and boot it under QEMU (TCG) through the OVMF firmware and
# systemd-boot, showing the serial console. BERTH_BOARD=qemu-x86_64 or qemu-aarch64 boot
# the QEMU-direct boards instead.
set -euo pipefail
cd "$(dirname "$0")/.."
board=${BERTH_BOARD:-uefi-x86_64}
case $board in uefi-x86_64 | qemu-x86_64) arch=amd64 ;; qemu-aarch64) arch=arm64 ;; *) echo "demo: unknown board $board" >&2; exit 1 ;; esac

bash ci/setup.sh
bash ci/fetch-kernels.sh
bash ci/fetch-loaders.sh
bash ci/check-init.sh >/dev/null
cargo build --locked -p image

work=${BERTH_WORK:-/var/tmp/berth-demo}
bi=$PWD/target/debug/berth-image
rm -rf "$work"
mkdir -p "$work"

bash qemu/rootfs/make-rootfs.sh "$arch" "$work/rootfs" demo-1
# The test rootfs has no kernel: its kernel set comes from Debian's kernel package.
$bi initramfs --board "$board" --root "$work/rootfs" --kernel-dir "${BERTH_CACHE:-/var/cache/berth}/debian/$arch/kernel"
$bi keygen --out "$work/keys"
commit=$($bi commit --repo "$work/repo" --tree "$work/rootfs" --version demo-1 --key "$work/keys/berth.key")
$bi disk --board "$board" --repo "$work/repo" --commit "$commit" -o "$work/$board.img" --json >"$work/disk.json"
python3 - "$work/disk.json" <<'PY'
import json, shlex, sys
d = json.load(open(sys.argv[1]))
for k in ("disk", "bmap", "kernel_set"):
    print(f"{k + ':':12}{d[k]}")
print(f"{'sysroot:':12}PARTUUID={d['partuuid']}")
print("flash it onto a USB stick or SD card (the device must not be mounted):")
print(f"  berth-image flash {shlex.quote(d['disk'])} /dev/sdX      # or: bmaptool copy {shlex.quote(d['disk'])} /dev/sdX")
print("boot it with:\n  " + shlex.join(d["qemu"]))
PY
echo
echo "== booting $work/$board.img under QEMU (serial console below; it powers off by itself)"
qemu=$(python3 -c 'import json,sys,shlex; print(shlex.join(json.load(open(sys.argv[1]))["qemu"]))' "$work/disk.json")
eval "timeout -k 5 180 $qemu" </dev/null | tee "$work/serial.log" | grep -aE 'Linux version|Kernel command line|Run /init|berth-init|BERTH-TEST' || true
echo
if grep -q 'BERTH-TEST: done' "$work/serial.log"; then
    echo "Berth booted $board from $work/$board.img (full console log: $work/serial.log)"
else
    echo "demo: the boot did not finish; see $work/serial.log" >&2
    exit 1
fi
