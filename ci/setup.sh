#!/usr/bin/env bash
# Installs everything the build and the tests need on a Debian 12 machine, idempotently:
# Debian packages and the pinned Rust toolchain with both musl targets; with
# --test-tools (ci/test.sh) also cargo-deny, cargo-fuzz, the nightly toolchain and goosebit.
set -euo pipefail

packages=(
    build-essential    # cc for zstd-sys
    debootstrap        # the real-rootfs test and the demo
    ostree             # the benchmark's peer
    tar gzip zstd      # tarball inputs
    diffutils          # diff -r in the rootfs test
    bc                 # arithmetic in the benchmark scripts
    util-linux         # setpriv, for the unreadable-tree test as root
    attr               # getfattr/setfattr, for looking at stores by hand
    e2fsprogs          # mkfs.ext4 -d, debugfs: sysroot images for the initramfs-mode test
    gcc libc6-dev      # the static probe init of the direct-boot test
    musl-tools         # x86_64-linux-musl-gcc: ring's C for the x86_64 device build of berth
    gcc-aarch64-linux-gnu libc6-dev-arm64-cross   # ring's C for the aarch64 one (.cargo/config.toml)
    ca-certificates    # the system roots berth verifies https:// repositories with (tests too)
    binutils           # readelf, for the static-binary check
    qemu-system-x86 qemu-system-arm   # the QEMU boot tests (TCG)
    kmod               # depmod/modprobe: module closures for the initramfs
    dmsetup            # dm-log-writes and dm-flakey in the power-cut and failing-disk guests (binary and libraries copied in)
    cpio               # checks berth-image's initramfs writer
    fdisk              # sfdisk: the GPT of berth-image disk
    mtools dosfstools  # FAT boot partitions without mounts: the UEFI board's ESP, the U-Boot test
    python3            # pulls the ELF vmlinux out of the bzImage (ci/fetch-kernels.sh)
    docker-registry    # the OCI registry tests (distribution 2.8, started on 127.0.0.1 by the tests)
    bmap-tools         # bmaptool: checks that `bmaptool copy` accepts the bmaps berth-image writes
    u-boot-tools       # mkimage (boot.scr) and mkenvimage (checks the loader state encoder)
    systemd            # systemd-analyze verify: the units in systemd/
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "ci/setup.sh: missing Debian packages: ${missing[*]}; run as root (sudo) to install them" >&2
        exit 1
    fi
    echo "ci/setup.sh: installing ${missing[*]}"
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    # One transaction first; if the resolver refuses the whole set (seen here once, with
    # qemu-utils from backports on the image), install them one at a time.
    if ! DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
        --no-install-recommends "${missing[@]}" >/tmp/berth-apt.log 2>&1; then
        for p in "${missing[@]}"; do
            DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
                --no-install-recommends "$p" >>/tmp/berth-apt.log 2>&1 ||
                { tail -20 /tmp/berth-apt.log >&2; echo "ci/setup.sh: cannot install $p" >&2; exit 1; }
        done
    fi
fi

if ! command -v rustup >/dev/null; then
    echo "ci/setup.sh: rustup is not installed; install it from your distribution or rustup.rs" >&2
    exit 1
fi
# rust-toolchain.toml pins the version; make sure it and its targets are present.
toolchain=$(sed -n 's/^channel = "\(.*\)"/\1/p' "$(dirname "$0")/../rust-toolchain.toml")
rustup toolchain install "$toolchain" --profile minimal -c rustfmt -c clippy \
    -t x86_64-unknown-linux-musl -t aarch64-unknown-linux-musl >/dev/null 2>&1 ||
    rustup toolchain install "$toolchain" --profile minimal -c rustfmt -c clippy \
        -t x86_64-unknown-linux-musl -t aarch64-unknown-linux-musl

# The test-only tools (cargo-deny, cargo-fuzz, nightly, goosebit in a Python virtual
# environment) are ci/test.sh's: the main job (ci/demo.sh) needs none of them.
if [[ ${1:-} == --test-tools ]]; then
    command -v cargo-deny >/dev/null || cargo +"$toolchain" install --locked cargo-deny
    command -v cargo-fuzz >/dev/null || cargo +"$toolchain" install --locked cargo-fuzz
    if ! rustup run nightly rustc --version >/dev/null 2>&1; then
        rustup toolchain install nightly --profile minimal
    fi
    bash "$(dirname "$0")/setup-goosebit.sh"
fi
