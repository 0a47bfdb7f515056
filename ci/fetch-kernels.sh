#!/usr/bin/env bash
# Downloads and unpacks what the QEMU boots need, for amd64 and arm64, into
# $BERTH_CACHE/debian/<arch>/ (default /var/cache/berth), outside git:
#   kernel/   the Debian kernel package unpacked (boot/, lib/modules/<ver>/ with modules.dep)
#   kernel/boot/vmlinux  (amd64) the ELF kernel pulled out of the XZ bzImage, for QEMU's
#             PVH entry: it skips about 3 s of decompression under TCG
#   busybox/  busybox-static unpacked, for the test root filesystems
# The system's dpkg architectures are never changed: arm64 packages are downloaded through
# a private apt configuration. Idempotent: an arch already unpacked is skipped.
set -euo pipefail
cache=${BERTH_CACHE:-/var/cache/berth}/debian
mkdir -p "$cache"

apt_for() { # apt_for ARCH -> prints an APT_CONFIG path for that architecture
    local arch=$1 dir=$cache/apt-$1
    if [[ $arch == "$(dpkg --print-architecture)" ]]; then
        echo ""
        return
    fi
    mkdir -p "$dir/state/lists/partial" "$dir/cache/archives/partial"
    touch "$dir/state/status"
    cat >"$dir/apt.conf" <<CONF
APT::Architecture "$arch"; APT::Architectures { "$arch"; };
Dir::State "$dir/state"; Dir::State::status "$dir/state/status";
Dir::Cache "$dir/cache"; Dir::Etc::SourceList "/etc/apt/sources.list.d/debian.sources";
Dir::Etc::SourceParts "/nonexistent"; APT::Sandbox::User "root";
CONF
    APT_CONFIG=$dir/apt.conf apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null
    echo "$dir/apt.conf"
}

for arch in amd64 arm64; do
    out=$cache/$arch
    if [[ -e $out/.complete ]]; then
        continue
    fi
    echo "fetch-kernels: $arch"
    rm -rf "$out" && mkdir -p "$out/dl"
    conf=$(apt_for "$arch")
    export APT_CONFIG=${conf:-/etc/apt/apt.conf}
    [[ -n $conf ]] || unset APT_CONFIG
    # The metapackage names the current ABI's image package (6.1.0-NN-<flavour>).
    image=$(apt-cache depends "linux-image-$arch" | awk '/Depends: linux-image-/{print $2; exit}')
    # -o APT::Sandbox::User=root: downloading into a root-owned cache directory.
    (cd "$out/dl" && apt-get -o APT::Sandbox::User=root download -qq "$image" busybox-static)
    dpkg -x "$out"/dl/linux-image-*.deb "$out/kernel"
    dpkg -x "$out"/dl/busybox-static_*.deb "$out/busybox"
    ver=$(ls "$out/kernel/lib/modules")
    depmod -b "$out/kernel" "$ver"   # the .deb ships no modules.dep
    if [[ $arch == amd64 ]]; then
        python3 - "$out/kernel/boot/vmlinuz-$ver" "$out/kernel/boot/vmlinux" <<'PY'
import lzma, sys
data = open(sys.argv[1], "rb").read()
start = data.find(b"\xfd7zXZ\x00")
if start < 0:
    sys.exit("no XZ stream in " + sys.argv[1])
d = lzma.LZMADecompressor()
open(sys.argv[2], "wb").write(d.decompress(data[start:]))
PY
    fi
    rm -rf "$out/dl"
    unset APT_CONFIG
    echo "$ver" >"$out/.complete"
done
