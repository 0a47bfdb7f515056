#!/bin/sh
# The test root filesystem's init: reports what the booted system sees on the serial
# console as "BERTH-TEST: ..." lines, runs the scenario named by berthtest= on the kernel
# command line, and powers off. The QEMU tests read these lines.
export PATH=/bin:/sbin
say() { echo "BERTH-TEST: $*"; }
scenario=$(sed -n 's/.*berthtest=\([a-z-]*\).*/\1/p' /proc/cmdline)
say "init pid $$ release $(cat /etc/berth-release) scenario ${scenario:-none}"
if [ "$scenario" = crash ] || [ -e /etc/crash-on-boot ]; then
    say "crashing on purpose"
    exit 1 # PID 1 exits: the kernel panics, panic= reboots
fi
say "bootjson $(cat /run/berth/boot.json 2>/dev/null || echo missing)"
say "rootmount $(awk '$5 == "/" {print $4, $6}' /proc/self/mountinfo | tail -1)"
say "etcmount $(awk '$5 == "/etc" {print $9}' /proc/self/mountinfo | tail -1)"
if [ "$scenario" = write ]; then
    echo "$(cat /etc/berth-release)" >/etc/berth-test-etc
    echo "$(cat /etc/berth-release)" >/var/berth-test-var
fi
say "etc $(cat /etc/berth-test-etc 2>/dev/null || echo none)"
say "var $(cat /var/berth-test-var 2>/dev/null || echo none)"
if touch /berth-test-root 2>/dev/null; then say "root writable"; else say "root read-only"; fi
if [ "$scenario" = update ]; then
    # A second disk stands in for a USB stick holding update.berth.
    mount -t ext4 -o ro /dev/vdb /tmp && say "usb mounted"
    /usr/bin/berth update /tmp/update.berth --progress none 2>&1 | sed "s/^/BERTH-TEST: update /"
    umount /tmp
fi
if [ "$scenario" = httpupdate ]; then
    # QEMU's user network (restrict=on) forwards 10.0.2.100:8080 to the host's 127.0.0.1.
    for ko in $(cat /lib/berth-test-modules/order); do
        insmod "/lib/berth-test-modules/$ko" 2>/dev/null
    done
    ip link set lo up
    ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && say "network up"
    /usr/bin/berth update http://10.0.2.100:8080 --channel stable --progress none 2>&1 |
        sed "s/^/BERTH-TEST: update /"
fi
if [ "$scenario" = ota ]; then
    # The over-the-air cycle, as a device's own health check and updater would run it at
    # every boot: bless a booted trial, collect, then take the update on a USB stick if
    # one is attached.
    say "markgood $(/usr/bin/berth mark-good 2>&1 | tr '\n' ' ')"
    say "gc $(/usr/bin/berth gc 2>&1 | tr '\n' ' ')"
    tries=$(sed -n 's/.*berth_test_tries=\([0-9]*\).*/\1/p' /proc/cmdline)
    if [ -b /dev/vdb ] && mount -t ext4 -o ro /dev/vdb /tmp 2>/dev/null; then
        /usr/bin/berth update /tmp/update.berth --progress none ${tries:+--tries $tries} 2>&1 |
            sed "s/^/BERTH-TEST: update /"
        umount /tmp
    fi
fi
if [ "$scenario" = demo ]; then
    # ci/demo.sh's device: a trial that booted is committed (a health check would decide
    # that on a real device); otherwise it asks the repository on the network (QEMU's
    # restrict=on user network forwards 10.0.2.100:8080 to the host's 127.0.0.1).
    if grep -q '"reason":"\(loader-\)\{0,1\}trial"' /run/berth/boot.json 2>/dev/null; then
        say "markgood $(/usr/bin/berth mark-good 2>&1)"
    else
        for ko in $(cat /lib/berth-test-modules/order); do
            insmod "/lib/berth-test-modules/$ko" 2>/dev/null
        done
        ip link set lo up
        ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && say "network up"
        /usr/bin/berth update http://10.0.2.100:8080 --channel stable --progress none 2>&1 |
            sed "s/^/BERTH-TEST: update /"
    fi
fi
if [ "$scenario" = repair ]; then
    say "repair $(/usr/bin/berth fsck --repair 2>&1 | tr '\n' ' ')"
fi
if [ "$scenario" = markgood ]; then
    say "markgood $(/usr/bin/berth mark-good 2>&1)"
fi
/usr/bin/berth status 2>&1 | sed "s/^/BERTH-TEST: status /"
dmesg | grep "berth-init" | sed "s/^/BERTH-TEST: kmsg /"
sync
say "done"
poweroff -f
