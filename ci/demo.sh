#!/usr/bin/env bash
# The main job, end to end on a fresh Debian 12 machine: install what is needed, build
# Berth, make a signing key, complete a small test root filesystem with its kernel set
# (kernel, initramfs with berth-init and modules), commit it, build a bootable disk image
# for a UEFI PC with berth-image disk (an ESP with systemd-boot, and the sysroot), print
# its bmap and how to flash it, and boot it under QEMU (TCG) with berth-image qemu,
# through the OVMF firmware and systemd-boot. Then the whole product in one run: a second
# release with a new kernel set (its kernel arguments differ) is published to a static
# repository served on 127.0.0.1; the booted device updates itself over HTTP (QEMU's
# restrict=on user network reaches only that server), reboots into the trial through
# the loader's counted entry, commits it, and boots it as the default; `berth status`
# is printed at each boot.
# BERTH_BOARD=qemu-x86_64, qemu-aarch64 or qemu-aarch64-uboot boot the other boards.
set -euo pipefail
cd "$(dirname "$0")/.."
board=${BERTH_BOARD:-uefi-x86_64}
case $board in uefi-x86_64 | qemu-x86_64) arch=amd64 triple=x86_64 ;; qemu-aarch64 | qemu-aarch64-uboot) arch=arm64 triple=aarch64 ;; *) echo "demo: unknown board $board" >&2; exit 1 ;; esac

bash ci/setup.sh
bash ci/fetch-kernels.sh
bash ci/fetch-loaders.sh
bash ci/check-init.sh >/dev/null
cargo build --locked -p image

work=${BERTH_WORK:-/var/tmp/berth-demo}
bi=$PWD/target/debug/berth-image
rm -rf "$work"
mkdir -p "$work"

cache=${BERTH_CACHE:-/var/cache/berth}
# berth-image has no defaults into this tree or the cache: the kernel package, berth-init
# and the firmware and loaders ci/fetch-loaders.sh unpacked are passed explicitly.
kdir=$cache/debian/$arch/kernel
init=$PWD/target/$triple-unknown-linux-musl/device/berth-init
case $board in qemu-aarch64-uboot) loaders=$cache/loaders/u-boot-qemu ;; *) loaders=$cache/debian/amd64/loaders ;; esac
$bi keygen --out "$work/keys"
# A release: the test rootfs (busybox, the test init, the static berth), completed with
# Debian's kernel and an initramfs made for the board, and `kargs` as its own kernel
# arguments (they pick the init's scenario; a change makes a new kernel set).
release() {
    local name=$1 kargs=$2 tree=$work/$1
    bash qemu/rootfs/make-rootfs.sh "$arch" "$tree" "$name" >/dev/null
    $bi initramfs --board "$board" --root "$tree" --kernel-dir "$kdir" --init "$init" >/dev/null
    # The device trusts the demo's key: updates signed with it verify.
    mkdir -p "$tree/usr/lib/berth/keys"
    cp "$work/keys/berth.pub" "$tree/usr/lib/berth/keys/"
    echo "$kargs" >"$tree/usr/lib/berth/kargs"
    $bi commit --repo "$work/repo" --tree "$tree" --version "$name" --key "$work/keys/berth.key"
}
commit=$(release demo-1 "berthtest=demo")
$bi disk --board "$board" --repo "$work/repo" --commit "$commit" --kernel-dir "$kdir" --loader-dir "$loaders" \
    -o "$work/$board.img" --json >"$work/disk.json"
python3 - "$work/disk.json" "$loaders" <<'PY'
import json, shlex, sys
d = json.load(open(sys.argv[1]))
for k in ("disk", "bmap", "kernel_set"):
    print(f"{k + ':':12}{d[k]}")
print(f"{'sysroot:':12}PARTUUID={d['partuuid']}")
print("flash it onto a USB stick or SD card (the device must not be mounted):")
print(f"  berth-image flash {shlex.quote(d['disk'])} /dev/sdX      # or: bmaptool copy {shlex.quote(d['disk'])} /dev/sdX")
print(f"boot it with:\n  berth-image qemu {shlex.quote(d['disk'])} --loader-dir {shlex.quote(sys.argv[2])}\nwhich runs:\n  " + shlex.join(d["qemu"]))
PY

echo
echo "== publishing demo-2 (a new kernel set: its kernel arguments differ) to a static repository on 127.0.0.1"
commit2=$(release demo-2 "berthtest=demo berth_demo_release=2")
$bi show --repo "$work/repo" "$commit2" | sed -n '1p;/kernel/p'
$bi publish --repo "$work/repo" --to "$work/www" --channel stable --commit "$commit2" --from "$commit" --key "$work/keys/berth.key"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m http.server --bind 127.0.0.1 "$port" --directory "$work/www" >"$work/http.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
# The guest's only way out: 10.0.2.100:8080, forwarded to the server by busybox nc.
nc="$cache/debian/amd64/busybox/bin/busybox nc 127.0.0.1 $port"
net=(-netdev "user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:8080-cmd:$nc" -device virtio-net-pci,netdev=n0)

n=0
boot() {
    n=$((n + 1))
    echo
    echo "== boot $n: $1 (serial console, filtered; it powers off by itself)"
    # The firmware's variables (DISK.vars) stay from boot to boot, as a machine's do.
    $bi qemu "$work/$board.img" --loader-dir "$loaders" --timeout 180 -- "${net[@]}" </dev/null >"$work/serial-$n.log" 2>&1 || true
    grep -aE 'Linux version|Kernel command line|berth-init: (boot|plan|choose|exec)|BERTH-TEST' "$work/serial-$n.log" |
        grep -avE 'BERTH-TEST: (kmsg|bootjson|rootmount|etcmount|etc |var )' || true
    if ! grep -aq 'BERTH-TEST: done' "$work/serial-$n.log"; then
        echo "demo: boot $n did not finish; see $work/serial-$n.log" >&2
        exit 1
    fi
}
boot "demo-1 from the image; it finds demo-2 in the repository and installs it as a trial"
grep -aq 'BERTH-TEST: update installed' "$work/serial-1.log" || { echo "demo: the update did not install; see $work/serial-1.log" >&2; exit 1; }
boot "the loader starts demo-2's entry (a trial); the device commits it"
grep -aq 'is now the default' "$work/serial-2.log" || { echo "demo: demo-2 was not committed; see $work/serial-2.log" >&2; exit 1; }
boot "demo-2, the default"
grep -aq 'BERTH-TEST: init pid 1 release demo-2' "$work/serial-3.log" || { echo "demo: demo-2 did not boot as the default; see $work/serial-3.log" >&2; exit 1; }
echo
echo "Berth booted $board from $work/$board.img, updated it over HTTP to demo-2 with a new kernel set, and committed it (console logs: $work/serial-*.log)"
