#!/usr/bin/env bash
# Builds Berth's Debian packages with dpkg-deb and checks each with lintian (an error
# fails the build):
#   berth_<version>_amd64.deb, berth_<version>_arm64.deb   the device: the static agent
#       (/usr/bin/berth), its systemd units (berth-health.service enabled on install,
#       berth-agent.service once /etc/berth/agent.toml exists), the key directory
#       /usr/lib/berth/keys, man pages, completions, docs/FLEET.md and an example
#       agent.toml
#   berth-image_<version>_amd64.deb   the build host: berth-image (release build), with
#       berth-init for both device architectures under /usr/lib/berth/init/<target>/,
#       which berth-image puts into the initramfs it builds
# Usage: packaging/build-debs.sh [OUT]   (default target/debian; prints the packages' paths)
# The version is the workspace's (Cargo.toml); the changelog's date is the last commit's,
# so two builds of one commit make the same packages.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-target/debian}")
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
maintainer="Berth developers <berth@lists.berth.dev>"

for tool in dpkg-deb lintian dpkg-shlibdeps; do
    command -v "$tool" >/dev/null || { echo "build-debs: $tool is missing (apt-get install dpkg-dev lintian)" >&2; exit 1; }
done

# The binaries: the device builds for both targets (init and updater apart: built
# together, features unify and berth-init would get std), berth-image for this host.
for target in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
    cargo build -q --locked --profile device -p init --target "$target"
    cargo build -q --locked --profile device -p updater --target "$target"
done
cargo build -q --locked --release -p image

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

# Files common to both packages' docs: copyright (the workspace's licence), changelog.
docs() { # docs PKG ROOT
    local pkg=$1 root=$2 d=$2/usr/share/doc/$1
    install -d "$d"
    cat >"$d/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: berth
Source: https://github.com/berth-dev/berth

Files: *
Copyright: 2026 Berth developers
License: MIT or Apache-2.0

License: MIT
 Permission is hereby granted, free of charge, to any person obtaining a copy of
 this software and associated documentation files (the "Software"), to deal in
 the Software without restriction, including without limitation the rights to
 use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies of
 the Software, and to permit persons to whom the Software is furnished to do so,
 subject to the following conditions:
 .
 The above copyright notice and this permission notice shall be included in all
 copies or substantial portions of the Software.
 .
 THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
 IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS
 FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR
 COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER
 IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN
 CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.

License: Apache-2.0
 On Debian systems, the full text of the Apache License, Version 2.0 can be found
 in /usr/share/common-licenses/Apache-2.0.
EOF
    {
        echo "$pkg ($version) unstable; urgency=medium"
        echo
        echo "  * Built from the Berth repository at $(git rev-parse --short HEAD 2>/dev/null || echo unknown)."
        echo
        echo " -- $maintainer  $(date -R -u -d "@$SOURCE_DATE_EPOCH")"
    } | gzip -9n >"$d/changelog.gz"
}

# man pages (gzipped) and completions of one program from packaging/.
manuals() { # manuals PROGRAM SECTION ROOT
    local prog=$1 sect=$2 root=$3 f
    install -d "$root/usr/share/man/man$sect"
    for f in packaging/man/"$prog".$sect packaging/man/"$prog"-*.$sect; do
        gzip -9n <"$f" >"$root/usr/share/man/man$sect/$(basename "$f").gz"
    done
    install -D -m 644 "packaging/completions/$prog.bash" "$root/usr/share/bash-completion/completions/$prog"
    install -D -m 644 "packaging/completions/_$prog" "$root/usr/share/zsh/vendor-completions/_$prog"
    install -D -m 644 "packaging/completions/$prog.fish" "$root/usr/share/fish/vendor_completions.d/$prog.fish"
}

# control (Installed-Size from the tree), md5sums, the .deb, lintian.
finish() { # finish PKG ARCH ROOT CONTROL-FIELDS...
    local pkg=$1 arch=$2 root=$3
    shift 3
    install -d "$root/DEBIAN"
    {
        echo "Package: $pkg"
        echo "Version: $version"
        echo "Architecture: $arch"
        echo "Maintainer: $maintainer"
        echo "Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)"
        printf '%s\n' "$@"
    } >"$root/DEBIAN/control"
    (cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
    find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    local deb=$out/${pkg}_${version}_$arch.deb
    dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
    # Errors fail; warnings are printed for whoever reads the log.
    lintian --fail-on error --suppress-tags-from-file /dev/null "$deb" >&2
    echo "$deb"
}

# berth, for each device architecture.
for pair in amd64:x86_64-unknown-linux-musl arm64:aarch64-unknown-linux-musl; do
    arch=${pair%%:*} target=${pair#*:}
    root=$work/berth-$arch
    install -D -m 755 "target/$target/device/berth" "$root/usr/bin/berth"
    install -D -m 644 systemd/berth-health.service "$root/lib/systemd/system/berth-health.service"
    install -D -m 644 systemd/berth-agent.service "$root/lib/systemd/system/berth-agent.service"
    install -d "$root/usr/lib/berth/keys"
    docs berth "$root"
    # Uncompressed: the units' Documentation= names it so.
    install -m 644 docs/FLEET.md "$root/usr/share/doc/berth/FLEET.md"
    install -D -m 644 packaging/agent.toml "$root/usr/share/doc/berth/examples/agent.toml"
    manuals berth 8 "$root"
    gzip -9n <packaging/man/berth-init.8 >"$root/usr/share/man/man8/berth-init.8.gz"
    install -D -m 644 packaging/lintian/berth "$root/usr/share/lintian/overrides/berth"
    install -d "$root/DEBIAN"
    install -m 755 packaging/berth.postinst "$root/DEBIAN/postinst"
    install -m 755 packaging/berth.postrm "$root/DEBIAN/postrm"
    finish berth "$arch" "$root" \
        "Section: admin" \
        "Priority: optional" \
        "Homepage: https://github.com/berth-dev/berth" \
        "Description: device agent of Berth: signed, atomic OTA updates with rollback" \
        " berth applies signed updates (files, HTTP(S) repositories, OCI registries)" \
        " into the device's content-addressed store, checks out the new deployment" \
        " and makes it a trial that berth-init boots a counted number of times;" \
        " berth health commits or rolls back the trial, and berth agent makes the" \
        " device a member of an Eclipse hawkBit fleet." \
        " ." \
        " The binary is static: it runs in any root filesystem of the architecture."
done

# berth-image, for this host.
arch=$(dpkg --print-architecture)
root=$work/berth-image
install -D -m 755 target/release/berth-image "$root/usr/bin/berth-image"
for target in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
    install -D -m 755 "target/$target/device/berth-init" "$root/usr/lib/berth/init/$target/berth-init"
done
docs berth-image "$root"
manuals berth-image 1 "$root"
install -D -m 644 packaging/lintian/berth-image "$root/usr/share/lintian/overrides/berth-image"
# Its shared-library dependencies, as dpkg-shlibdeps finds them.
mkdir -p "$work/shlibs/debian"
printf 'Source: berth\n\nPackage: berth-image\nArchitecture: any\n' >"$work/shlibs/debian/control"
shlibs=$(cd "$work/shlibs" && dpkg-shlibdeps -O "$root/usr/bin/berth-image" | sed -n 's/^shlibs:Depends=//p')
finish berth-image "$arch" "$root" \
    "Depends: $shlibs, e2fsprogs, fdisk, mtools, dosfstools, kmod" \
    "Recommends: u-boot-tools" \
    "Suggests: qemu-system-x86, qemu-system-arm, ovmf, bmap-tools" \
    "Section: admin" \
    "Priority: optional" \
    "Homepage: https://github.com/berth-dev/berth" \
    "Description: build-host tool of Berth: signed commits, deltas, disk images" \
    " berth-image commits a root filesystem (a directory or a tarball) into a" \
    " content-addressed repository as a signed commit, completes its kernel set" \
    " with an initramfs holding berth-init, makes signed binary deltas between" \
    " commits, publishes them to static repositories and OCI registries, and" \
    " builds bootable disk images (with bmaps) for the boards it knows."
