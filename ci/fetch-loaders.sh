#!/usr/bin/env bash
# Downloads and unpacks the firmware and boot loaders the QEMU boards boot through,
# outside git, nothing installed on the system (apt-get download + dpkg -x). Idempotent.
#   $BERTH_CACHE/debian/amd64/loaders/   (default /var/cache/berth) for the UEFI board:
#       usr/share/OVMF/OVMF_CODE_4M.fd, OVMF_VARS_4M.fd      Debian's ovmf
#       usr/lib/systemd/boot/efi/systemd-bootx64.efi         Debian's systemd-boot-efi
#   $BERTH_CACHE/loaders/u-boot-qemu/    Debian's u-boot-qemu (usr/lib/u-boot/qemu_arm64/
#       u-boot.bin is what the aarch64 U-Boot test passes to QEMU's -bios)
# All three packages are built for amd64 or Architecture: all, so the system's own apt
# lists serve them.
set -euo pipefail
cache=${BERTH_CACHE:-/var/cache/berth}

out=$cache/debian/amd64/loaders
if [[ ! -e $out/.complete ]]; then
    echo "fetch-loaders: ovmf, systemd-boot-efi"
    rm -rf "$out" && mkdir -p "$out/dl"
    # -o APT::Sandbox::User=root: downloading into a root-owned cache directory.
    (cd "$out/dl" && apt-get -o APT::Sandbox::User=root download -qq ovmf systemd-boot-efi)
    for deb in "$out"/dl/*.deb; do
        dpkg -x "$deb" "$out"
    done
    rm -rf "$out/dl"
    for f in usr/share/OVMF/OVMF_CODE_4M.fd usr/share/OVMF/OVMF_VARS_4M.fd \
        usr/lib/systemd/boot/efi/systemd-bootx64.efi; do
        [[ -f $out/$f ]] || { echo "fetch-loaders: $f is not in the packages" >&2; exit 1; }
    done
    touch "$out/.complete"
fi

mkdir -p "$cache/loaders"
for pkg in u-boot-qemu; do
    out=$cache/loaders/$pkg
    if [[ -e $out/.complete ]]; then
        continue
    fi
    echo "fetch-loaders: $pkg"
    rm -rf "$out" && mkdir -p "$out/dl"
    (cd "$out/dl" && apt-get -o APT::Sandbox::User=root download -qq "$pkg")
    dpkg -x "$out"/dl/"$pkg"_*.deb "$out"
    version=$(dpkg-deb -f "$out"/dl/"$pkg"_*.deb Version)
    rm -rf "$out/dl"
    echo "$version" >"$out/.complete"
done

# Raspberry Pi: Debian's u-boot-rpi (built for arm64 only) and raspi-firmware (the Pi's
# start4.elf and fixup4.dat, in the non-free-firmware component the system's sources do
# not list), through a private apt configuration of their own; nothing is installed.
out=$cache/loaders/rpi
if [[ ! -e $out/.complete ]]; then
    echo "fetch-loaders: u-boot-rpi, raspi-firmware"
    dir=$cache/apt-rpi
    rm -rf "$dir" "$out" && mkdir -p "$dir/state/lists/partial" "$dir/cache/archives/partial" "$out/dl"
    touch "$dir/state/status"
    uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${uri:-http://deb.debian.org/debian} bookworm main non-free-firmware" >"$dir/sources.list"
    cat >"$dir/apt.conf" <<CONF
APT::Architecture "arm64"; APT::Architectures { "arm64"; };
Dir::State "$dir/state"; Dir::State::status "$dir/state/status";
Dir::Cache "$dir/cache"; Dir::Etc::SourceList "$dir/sources.list";
Dir::Etc::SourceParts "/nonexistent"; APT::Sandbox::User "root"; Acquire::Languages "none";
CONF
    APT_CONFIG=$dir/apt.conf apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null
    (cd "$out/dl" && APT_CONFIG=$dir/apt.conf apt-get download -qq u-boot-rpi raspi-firmware)
    for deb in "$out"/dl/*.deb; do
        dpkg -x "$deb" "$out"
    done
    rm -rf "$out/dl"
    for f in usr/lib/u-boot/rpi_arm64/u-boot.bin usr/lib/u-boot/rpi_3/u-boot.bin \
        usr/lib/raspi-firmware/start4.elf usr/lib/raspi-firmware/fixup4.dat; do
        [[ -f $out/$f ]] || { echo "fetch-loaders: $f is not in the packages" >&2; exit 1; }
    done
    touch "$out/.complete"
fi
