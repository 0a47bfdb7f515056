# Berth's U-Boot boot script: boots one entry of the FAT boot partition it was found on,
# counting a trial's boots itself. Compile with
#   mkimage -A arm64 -T script -C none -d boot.cmd boot.scr
# and put boot.scr at the root of the partition (U-Boot's distro boot sources it, with
# devtype, devnum and distro_bootpart set). docs/FORMAT.md, "Loader state", is the
# contract; format::loader reads and writes the same state on Linux.
#
# The partition holds:
#   /berth/a/state, /berth/b/state  two 4096-byte U-Boot binary environments (CRC-32),
#                                   pre-allocated: this script only overwrites them whole;
#                                   one directory each, so that the directory sector
#                                   rewritten with one copy never holds the other's entry
#   /<entry>/vmlinuz                an arm64 Image
#   /<entry>/initramfs.img
#   /<entry>/cmdline                optional: the entry's kernel arguments, one line
#   /<entry>/dtb                    optional: else the firmware's device tree is passed
#
# 1. Import both copies with `env import -c` (a copy that fails its CRC, is not 4096
#    bytes or is not version 1 is ignored); the newer generation wins, A on a tie.
# 2. A trial with tries left: take one try and write the whole state, generation + 1, to
#    the OTHER copy, before booting it. If that copy is not a 4096-byte file already, or
#    the write fails, the trial is not booted.
# 3. Boot the first entry that loads and starts: the trial (if counted), the default,
#    the previous. booti returns only if it refused the kernel (bad magic), so a
#    missing or corrupt file falls through to the next entry in the same boot.
# The kernel gets the entry's arguments and berth.entry=<entry>.
#
# Buffers: four 4 KiB pages at pxefile_addr_r (free during a disk boot; below
# kernel_addr_r on the distro-boot boards). The ramdisk and a dtb go after the kernel,
# at addresses computed from the loaded sizes: the kernel's image_size (which counts its
# BSS) or its file size, whichever is larger, rounded up to 2 MiB.

setenv berth_part "${devtype} ${devnum}:${distro_bootpart}"
setenv berth_vars "berth_default berth_gen berth_previous berth_trial berth_tries berth_version"
setexpr berth_buf_a ${pxefile_addr_r} + 0x0
setexpr berth_buf_b ${pxefile_addr_r} + 0x1000
setexpr berth_buf_out ${pxefile_addr_r} + 0x2000
setexpr berth_buf_cmd ${pxefile_addr_r} + 0x3000

# 1. Read both copies.
for berth_c in a b; do
    setenv berth_ok 0
    if test ${berth_c} = a; then setenv berth_buf ${berth_buf_a}; else setenv berth_buf ${berth_buf_b}; fi
    mw.b ${berth_buf} 0 0x1000
    setenv filesize 0
    setenv berth_default; setenv berth_gen; setenv berth_previous
    setenv berth_trial; setenv berth_tries; setenv berth_version
    if load ${berth_part} ${berth_buf} /berth/${berth_c}/state && itest ${filesize} -eq 0x1000; then
        if env import -c ${berth_buf} 0x1000 ${berth_vars}; then
            if test "${berth_version}" = 1 && test -n "${berth_gen}" && test -n "${berth_default}"; then
                setenv berth_ok 1
            fi
        fi
    fi
    setenv berth_ok_${berth_c} ${berth_ok}
    setenv berth_gen_${berth_c} ${berth_gen}
    if itest ${berth_ok} -eq 1; then
        echo "berth: state ${berth_c} generation ${berth_gen}"
    else
        echo "berth: state ${berth_c} ignored (missing, not 4096 bytes, bad CRC or version)"
    fi
done

# The winner: the valid copy with the higher generation, A on a tie.
setenv berth_won
if itest ${berth_ok_a} -eq 1 && itest ${berth_ok_b} -eq 1; then
    if itest ${berth_gen_b} -gt ${berth_gen_a}; then setenv berth_won b; else setenv berth_won a; fi
elif itest ${berth_ok_a} -eq 1; then
    setenv berth_won a
elif itest ${berth_ok_b} -eq 1; then
    setenv berth_won b
fi

setenv berth_try
setenv berth_default; setenv berth_gen; setenv berth_previous
setenv berth_trial; setenv berth_tries; setenv berth_version
if test -z "${berth_won}"; then
    echo "berth: no valid state copy; nothing to boot"
else
    if test ${berth_won} = a; then
        setenv berth_other b
        env import -c ${berth_buf_a} 0x1000 ${berth_vars}
    else
        setenv berth_other a
        env import -c ${berth_buf_b} 0x1000 ${berth_vars}
    fi
    echo "berth: using state ${berth_won}: default ${berth_default}"
    if test -n "${berth_previous}"; then echo "berth: previous ${berth_previous}"; fi
    if test -n "${berth_trial}"; then echo "berth: trial ${berth_trial}, ${berth_tries} tries left"; fi

    # 2. Take one try of the trial, and make it durable before booting it.
    # Only over a file that is already there at full size: fatwrite then neither
    # creates a file nor allocates a cluster (balena-raspberrypi#380).
    if test -n "${berth_trial}" && itest ${berth_tries} -gt 0; then
        setenv filesize 0
        if size ${berth_part} /berth/${berth_other}/state && itest ${filesize} -eq 0x1000; then
            setexpr berth_tries ${berth_tries} - 1
            setexpr berth_gen ${berth_gen} + 1
            mw.b ${berth_buf_out} 0 0x1000
            if env export -c -s 0x1000 ${berth_buf_out} ${berth_vars} && fatwrite ${berth_part} ${berth_buf_out} /berth/${berth_other}/state 0x1000; then
                echo "berth: trial ${berth_trial}: ${berth_tries} tries left after this boot (state ${berth_other} generation ${berth_gen})"
                setenv berth_try ${berth_trial}
            else
                echo "berth: cannot write state ${berth_other}; not booting the trial ${berth_trial}"
            fi
        else
            echo "berth: state ${berth_other} is not a 4096-byte file; not booting the trial ${berth_trial}"
        fi
    fi

    # 3. Boot the first candidate that loads and starts.
    for berth_e in ${berth_try} ${berth_default} ${berth_previous}; do
        echo "berth: trying entry ${berth_e}"
        setenv berth_ready 0
        if load ${berth_part} ${kernel_addr_r} /${berth_e}/vmlinuz; then
            # The arm64 Image header's image_size (offset 16, u64; its low half is
            # enough below 4 GiB) covers the kernel's BSS, which the file does not.
            setenv berth_end ${filesize}
            setexpr berth_hdr ${kernel_addr_r} + 0x10
            setexpr.l berth_isize *${berth_hdr}
            if itest ${berth_isize} -gt ${berth_end}; then setenv berth_end ${berth_isize}; fi
            setexpr berth_rd ${kernel_addr_r} + ${berth_end}
            setexpr berth_rd ${berth_rd} + 0x1fffff
            setexpr berth_rd ${berth_rd} / 0x200000
            setexpr berth_rd ${berth_rd} * 0x200000
            if load ${berth_part} ${berth_rd} /${berth_e}/initramfs.img; then
                setenv berth_rdsize ${filesize}
                setenv berth_ready 1
            fi
        fi
        setenv berth_args
        if itest ${berth_ready} -eq 1 && test -e ${berth_part} /${berth_e}/cmdline; then
            mw.b ${berth_buf_cmd} 0 0x1000
            # At most 4095 bytes, so the buffer stays NUL-terminated.
            if load ${berth_part} ${berth_buf_cmd} /${berth_e}/cmdline 0xfff; then
                setexpr.s berth_args *${berth_buf_cmd}
            else
                setenv berth_ready 0
            fi
        fi
        setenv berth_fdt ${fdtcontroladdr}
        if itest ${berth_ready} -eq 1 && test -e ${berth_part} /${berth_e}/dtb; then
            setexpr berth_dtb ${berth_rd} + ${berth_rdsize}
            setexpr berth_dtb ${berth_dtb} + 0x1fffff
            setexpr berth_dtb ${berth_dtb} / 0x200000
            setexpr berth_dtb ${berth_dtb} * 0x200000
            if load ${berth_part} ${berth_dtb} /${berth_e}/dtb; then
                setenv berth_fdt ${berth_dtb}
            else
                setenv berth_ready 0
            fi
        fi
        if itest ${berth_ready} -eq 1; then
            setenv bootargs "${berth_args} berth.entry=${berth_e}"
            echo "berth: booting entry ${berth_e}: kernel at ${kernel_addr_r}, initramfs at ${berth_rd} (${berth_rdsize} bytes), device tree at ${berth_fdt}"
            booti ${kernel_addr_r} ${berth_rd}:${berth_rdsize} ${berth_fdt}
            echo "berth: entry ${berth_e} did not start"
        else
            echo "berth: entry ${berth_e} could not be loaded"
        fi
    done
    echo "berth: no entry could be booted"
fi
