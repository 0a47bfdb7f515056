#!/usr/bin/env bash
# Installs what the main job needs on a Debian 12 machine, idempotently:
# Debian packages and the pinned Rust toolchain with both musl targets; with
# --test-tools (ci/test.sh) also the tests' Debian packages, cargo-deny, cargo-fuzz, the nightly toolchain and goosebit;
# with --bench-tools (the ci/bench-*.sh scripts) the tests' Debian packages only.
set -euo pipefail

# What the main job (ci/demo.sh) needs: the build, the device binaries, berth-image disk's
# tools, the kernel sets and the QEMU boot.
packages=(
    build-essential    # cc for zstd-sys
    tar gzip zstd      # tarball inputs
    e2fsprogs          # mkfs.ext4 -d: berth-image disk's sysroot partition
    gcc libc6-dev      # the static test init that qemu/rootfs/make-rootfs.sh builds
    musl-tools         # x86_64-linux-musl-gcc: ring's C for the x86_64 device build of berth
    gcc-aarch64-linux-gnu libc6-dev-arm64-cross   # ring's C for the aarch64 one (.cargo/config.toml)
    ca-certificates    # the system roots berth verifies https:// repositories with (tests too)
    binutils           # readelf, for the static-binary check
    qemu-system-x86 qemu-system-arm   # the QEMU boots (TCG)
    kmod               # depmod/modprobe: module closures for the initramfs
    cpio               # berth-image's initramfs writer checks its archives with it
    fdisk              # sfdisk: the GPT of berth-image disk
    mtools dosfstools  # FAT boot partitions without mounts: the UEFI board's ESP, U-Boot's
    python3            # pulls the ELF vmlinux out of the bzImage (ci/fetch-kernels.sh), the demo's JSON
    u-boot-tools       # mkimage: boot.scr for the U-Boot board
)
# What only the tests and benchmarks need (ci/test.sh passes --test-tools, the benchmarks
# --bench-tools).
test_packages=(
    debootstrap        # the real-rootfs tests (ci/fetch-rootfs.sh)
    ostree             # the benchmark's peer
    diffutils          # diff -r in the rootfs test
    bc                 # arithmetic in the benchmark scripts
    util-linux         # setpriv, for the unreadable-tree test as root
    attr               # getfattr/setfattr, for looking at stores by hand
    dmsetup            # dm-log-writes and dm-flakey in the power-cut and failing-disk guests (binary and libraries copied in)
    docker-registry    # the OCI registry tests (distribution 2.8, started on 127.0.0.1 by the tests)
    umoci              # image/tests/oci_umoci.rs: builds container images with real whiteouts
    skopeo             # image/tests/oci_umoci.rs: moves them to OCI and docker archives and the registry
    bmap-tools         # bmaptool: checks that `bmaptool copy` accepts the bmaps berth-image writes
    systemd            # systemd-analyze verify: the units in systemd/
    lintian            # packaging/build-debs.sh checks the packages it builds (image/tests/packages.rs)
    mmdebstrap         # examples/debian-bookworm/build.sh, the rootfs recipe the tests run
    groff-base         # groff -ww: berth-init's hand-written man page renders without warnings
    pigz               # redeflate/tests/roundtrip.rs: deflate patches of pigz's streams (and its zopfli mode)
    zopfli             # redeflate/tests/roundtrip.rs: deflate patches of zopfli's streams
    p7zip-full         # redeflate/tests/roundtrip.rs: deflate patches of 7-Zip's streams
)
[[ ${1:-} == --test-tools || ${1:-} == --bench-tools ]] && packages+=("${test_packages[@]}")

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
