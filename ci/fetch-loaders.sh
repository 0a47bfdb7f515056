#!/usr/bin/env bash
# Downloads and unpacks the firmware and boot loaders the UEFI board boots through, into
# $BERTH_CACHE/debian/amd64/loaders/ (default /var/cache/berth), outside git:
#   usr/share/OVMF/OVMF_CODE_4M.fd, OVMF_VARS_4M.fd      (Debian's ovmf: UEFI for QEMU)
#   usr/lib/systemd/boot/efi/systemd-bootx64.efi         (Debian's systemd-boot-efi)
# Nothing is installed on the system (apt-get download + dpkg -x). Idempotent.
set -euo pipefail
out=${BERTH_CACHE:-/var/cache/berth}/debian/amd64/loaders
[[ -e $out/.complete ]] && exit 0
echo "fetch-loaders: ovmf, systemd-boot-efi"
rm -rf "$out" && mkdir -p "$out/dl"
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
