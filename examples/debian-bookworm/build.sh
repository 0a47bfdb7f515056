#!/usr/bin/env bash
# A release of a Debian bookworm device, the way a CI job makes one: mmdebstrap builds
# the root filesystem (systemd, Debian's kernel, the berth package), berth-image
# completes its kernel set (an initramfs with berth-init and the board's modules),
# commits and signs it, and publishes it to a static repository that devices follow
# (`berth update https://…/site --channel stable`, or the fleet agent).
#
# Copy it into your pipeline and change the package list, the board and the hooks.
# Run as root (mmdebstrap's root mode keeps owners and device nodes).
#
#   build.sh --berth-deb berth_0.1.0_amd64.deb --key release.key --out build/ \
#            [--board uefi-x86_64] [--arch amd64] [--version 2026.12.1] [--previous COMMIT]
#            [--mirror URL] [--cache DIR] [--level N]
#
# --key        the release's secret key (berth-image keygen --out DIR writes DIR/berth.key);
#              its public half beside it (DIR/berth.pub) is what the devices trust
#              (usr/lib/berth/keys/, docs/KEYS.md)
# --out        build/rootfs (the tree), build/repo (the commits), build/site (the
#              static repository to upload); the repo and site are kept between runs,
#              so --previous (a commit in build/repo) gets a delta
# --cache      keep downloaded .debs here between runs (mmdebstrap's sync hooks)
# --level      zstd level of the published updates (default 19: smallest, slowest)
# Prints the commit id last, on its own line.
set -euo pipefail

board=uefi-x86_64 arch=amd64 version=$(date -u +%Y.%m.%d.%H%M) previous= level=19
mirror=http://deb.debian.org/debian cache= berth_deb= key= out=
while (($#)); do
    case $1 in
    --berth-deb) berth_deb=$2 ;;
    --key) key=$2 ;;
    --out) out=$2 ;;
    --board) board=$2 ;;
    --arch) arch=$2 ;;
    --version) version=$2 ;;
    --previous) previous=$2 ;;
    --mirror) mirror=$2 ;;
    --cache) cache=$2 ;;
    --level) level=$2 ;;
    *) echo "build.sh: unknown option $1 (see the comment at the top of $0)" >&2; exit 2 ;;
    esac
    shift 2
done
for need in berth_deb key out; do
    [[ -n ${!need} ]] || { echo "build.sh: --${need//_/-} is required" >&2; exit 2; }
done
[[ -f $berth_deb ]] || { echo "build.sh: $berth_deb: no such package" >&2; exit 1; }
pub=${key%.key}.pub
[[ -f $pub ]] || { echo "build.sh: $pub: the key's public half is missing" >&2; exit 1; }
berth_deb=$(realpath "$berth_deb")
rootfs=$out/rootfs

# 1. The root filesystem. Debian's kernel comes with it (its modules feed the initramfs);
#    Debian's own initramfs is not built: berth-init's replaces it.
hooks=(
    # Keep the file below over the package's own (it is a conffile).
    --dpkgopt=force-confold
    --essential-hook='mkdir -p "$1/etc/initramfs-tools" && echo update_initramfs=no >"$1/etc/initramfs-tools/update-initramfs.conf"'
    # berth-init mounts the sysroot here; the other mount points come with base-files.
    --customize-hook='mkdir -p "$1/sysroot"'
    --customize-hook='rm -f "$1"/boot/initrd.img* "$1"/initrd.img* "$1/etc/dpkg/dpkg.cfg.d/99mmdebstrap"'
)
if [[ -n $cache ]]; then
    mkdir -p "$cache"
    hooks+=(
        --skip=essential/unlink
        --setup-hook='mkdir -p "$1/var/cache/apt/archives"'
        --setup-hook="sync-in $cache /var/cache/apt/archives/"
        --customize-hook="sync-out /var/cache/apt/archives $cache"
    )
fi
rm -rf "$rootfs"
mkdir -p "$out"
mmdebstrap --variant=minbase --architectures="$arch" \
    --include="systemd-sysv,linux-image-$arch,ca-certificates" \
    --include="$berth_deb" --hook-dir=/usr/share/mmdebstrap/hooks/file-mirror-automount \
    "${hooks[@]}" bookworm "$rootfs" "$mirror"

# 2. What the device trusts: the release key (a later release may add the next key
#    here first, then drop this one: docs/KEYS.md).
install -D -m 644 "$pub" "$rootfs/usr/lib/berth/keys/release.pub"

# 3. The kernel set: kernel, modules and an initramfs with berth-init for the board.
berth-image initramfs --board "$board" --root "$rootfs"

# 4. The signed commit, and the release on the channel (with a delta from --previous).
commit=$(berth-image commit --repo "$out/repo" --tree "$rootfs" --version "$version" --key "$key")
from=()
[[ -n $previous ]] && from=(--from "$previous")
berth-image publish --repo "$out/repo" --commit "$commit" --key "$key" "${from[@]}" \
    --level "$level" --to "$out/site" --channel stable >&2
echo "$commit"
