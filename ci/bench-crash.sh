#!/usr/bin/env bash
# Crash-safety report: runs the two crash tests and writes their counts to the
# "Crash safety" section of BENCHMARKS.md.
#  - updater/tests/crash.rs: the crash-test build of berth (fsop feature crash-points)
#    killed before every filesystem mutation of update, mark-good, rollback and gc,
#    with and without dropping unsynced file data;
#  - qemu/tests/powercut.rs: every block write of update, berth-init's boot count,
#    mark-good, gc, rollback and an object pull over HTTP recorded with dm-log-writes in a QEMU guest (Debian
#    kernel, ext4 noauto_da_alloc) and replayed on the host: each prefix checked, and
#    sampled reorderings of the writes between two flushes (root; x86_64); and the
#    same for update, mark-good, gc and rollback on a systemd-boot board's ESP (FAT32)
#    and on a U-Boot board's boot partition (FAT16, its state copies also torn).
# Both run in ci/test.sh as well; this script only records their numbers.
set -euo pipefail
cd "$(dirname "$0")/.."

out=$(cargo test -q -p updater --features crash-points --locked --test crash -- --nocapture --test-threads=1 2>&1)
# -o: a test's first line follows cargo's "test NAME ... " on the same line.
crash=$(echo "$out" | grep -o 'crash-test .*')
fault=$(echo "$out" | grep -o 'fault-test .*')
power=$(cargo test -q -p qemu-tests --locked --test powercut -- --nocapture 2>&1 | grep '^powercut')
echo "$crash"
echo "$fault"
echo "$power"

table=$(echo "$crash" | sed -n 's/^crash-test \([^:]*\): \([0-9]*\) crash points, \([0-9]*\) states checked, \([0-9]*\) violations$/| `\1` | \2 | \4 |/p')
total=$(echo "$crash" | sed -n 's/^crash-test total: \([0-9]*\) crash points, \([0-9]*\) violations$/\1 crash points, \2 violations/p')
boot_total=$(echo "$crash" | sed -n 's/^crash-test boot partition total: \([0-9]*\) crash points, \([0-9]*\) violations$/\1 crash points, \2 violations/p')
boot_ftotal=$(echo "$fault" | sed -n 's/^fault-test boot partition total: \([0-9]*\) faults injected, \([0-9]*\) violations$/\1 faults injected, \2 violations/p')
ftable=$(echo "$fault" | sed -n 's/^fault-test \([^:]*\): \([0-9]*\) faults injected (ENOSPC, EIO, EROFS), \([0-9]*\) states checked, \([0-9]*\) violations$/| `\1` | \2 | \4 |/p')
ftotal=$(echo "$fault" | sed -n 's/^fault-test total: \([0-9]*\) faults injected, \([0-9]*\) violations$/\1 faults injected, \2 violations/p')
ptable=$(echo "$power" | sed -n 's/^powercut \([a-z-]*\): \([0-9]*\) states checked (\([0-9]*\) prefixes, \([0-9]*\) at flush\/FUA points; \([0-9]*\) reordered; \([0-9]*\) torn inside a sector), \([0-9]*\) violations$/| `\1` | \2 | \3 | \4 | \5 | \6 | \7 |/p')
pinfo=$(echo "$power" | sed -n 's/^powercut: //p')
pesp=$(echo "$power" | sed -n 's/^powercut esp: //p')
puboot=$(echo "$power" | sed -n 's/^powercut uboot: //p')
pnotes=$(echo "$power" | sed -n 's/^powercut \(esp-[a-z-]*\) notes: \(.*\)$/`\1`: \2;/p' | tr '\n' ' ' | sed 's/; $/./')
unotes=$(echo "$power" | sed -n 's/^powercut \(uboot-[a-z-]*\) notes: \(.*\)$/`\1`: \2;/p' | tr '\n' ' ' | sed 's/; $/./')

section=$(cat <<MD
<!-- crash-bench:start -->
## Crash safety: a cut at every mutation, and at every block write

Measured by \`ci/bench-crash.sh\` on $(date -u +%Y-%m-%d), $(nproc) cores. Goal: 0 violations.

**Process crashes at every filesystem mutation** (\`updater/tests/crash.rs\`). The
crash-test build of \`berth\` is killed before its Nth create, write, fsync, syncfs,
rename, link, unlink, mkdir, symlink or mknod, for every N, once keeping the page cache
and once truncating every file written since its last sync. After each crash: berth-init's
dry run boots an allowed deployment, the record's deployments are byte-identical to an
uninterrupted run's, \`berth fsck\` passes, and the command run again ends where an
uninterrupted run ends. Total: $total.

The same on a device whose loader boots the deployments' kernel sets, once with a
systemd-boot ESP and once with U-Boot's boot partition (\`--boot-dir\`; the rows named
after the loader): after each crash, the loader's first choice (systemd-boot's entry
order, or boot.scr's reading of the two state copies) and berth-init's decision under
its \`berth.entry=\` agree on an allowed deployment, that deployment runs under its own
kernel set, whose files on the partition are complete, and a retry ends with the same
record, entries, sets and state as an uninterrupted run. Total: $boot_total.
Activating the trial's entry before the record is written fails 57 of them.

| command | crash points (both modes) | violations |
|---|---|---|
$table

**A full or failing disk at every mutation** (the same test file). The crash-test build
fails the Nth mutation and every later one with \`ENOSPC\`, \`EIO\` or \`EROFS\`
(\`BERTH_FAULT_AT\`, \`BERTH_FAULT\`), for every N and each of the three: the command
exits 1 with one line naming the cause, then the invariants above hold and the command
run again without the fault ends where an uninterrupted run ends. Total: $ftotal;
and on the boot partitions' scenarios above (rows named after the loader), with their
invariants: $boot_ftotal.

| command | faults injected (3 kinds) | violations |
|---|---|---|
$ftable

**Power cuts at the block layer** (\`qemu/tests/powercut.rs\`). A QEMU guest (Debian's
6.1 kernel, TCG) runs, with the device builds, \`berth update\`, a boot of the trial by
berth-init (\`boot\`: PID 1 of new PID and mount namespaces, it mounts the logged device,
counts the try in the record, assembles the trial and execs its init), \`berth
mark-good\`, \`berth gc\` (removing the deployment mark-good left unnamed), \`berth
rollback --from\` (the new default back to the previous) and \`berth update URL\`
(\`pull\`: an object pull over HTTP from a server on the host's 127.0.0.1, the guest's
only way out of QEMU's restricted user network) on ext4 (\`noauto_da_alloc\`) over
dm-log-writes. The host replays the log onto a copy of the starting image and checks
the states a power cut can leave: every prefix of the log (those that end at a flush or
FUA write are the durable points) and, as CrashMonkey does, reorderings inside each
epoch (the writes between two barriers may land in any order: every subset of an epoch
of up to 6 writes, else 24 sampled with a fixed seed), each distinct disk image once.
Each state: mounted (the journal replays), the same invariants as above plus \`e2fsck
-fn\`; for the boot, the count is before or after and the next boot counts one more.
The log's order varies a little from run to run, and the counts with it. $pinfo.

| command | states checked | prefixes | of them at flush/FUA | reordered | torn inside a sector | violations |
|---|---|---|---|---|---|---|
$ptable

Both tests fail when a durability step is removed: without the \`syncfs\` before the
renames in \`Txn::commit\` and the \`fsync\` of \`record.tmp\`, the power-cut test found 54
violations (objects whose content does not match their name, an invalid record copy,
berth-init booting nothing); the process-crash test found 32 for the \`syncfs\` alone.
Without only the \`fsync\` of \`record.tmp\` in \`Sysroot::write_record\` (berth-init's
count and every record flip of \`berth\`), the power-cut test found 1040 violations in
465 of 1,644 states (180 prefixes, 285 reorderings; one in the update, the rest from
the boot on): record copies that do not decode, both copies damaged (no valid record
for the retry), berth-init booting the old default after the trial's try was counted,
a record fallen back to a copy that names the deployment gc had removed.

The same on a systemd-boot board (the rows \`esp-…\`): one disk with the sysroot's ext4
and a FAT32 ESP under one dm-log-writes (a flush covers both), 1.0 the default and 0.9
the previous deployment, each with its kernel set and entry, and \`berth --boot-dir\` on
the ESP mounted with Linux's vfat, for an update to a new kernel set, the mark-good of
that trial (0.9's entry goes), gc (0.9's deployment and kernel set go) and a rollback;
reorderings: every subset of an epoch of up to 4 writes,
else 8 sampled. Each state's ESP is read with mtools: systemd-boot's choice by its rules
must be an entry whose kernel and initramfs are a kernel set's byte for byte,
berth-init under that entry's command line must boot an allowed deployment under its
own set, \`fsck.vfat -n\` may find only what any cut on FAT leaves and \`fsck.vfat -a\`
repairs, and the retry must end with the uninterrupted run's record and ESP files.
$pesp. What \`fsck.vfat -n\` found, in states (not violations): $pnotes
It fails when a durability step of the boot partition's code is removed: without the
fsync of the renamed entry or set directory in \`rename_durably\` (only the directory
fsynced, as before the fix: Linux's vfat leaves a renamed name empty until writeback),
293 violations in 641 states (162 in mark-good, 131 in rollback): systemd-boot falling
back from an empty blessed or new entry, berth-init booting a deployment under another's
kernel set, retries that keep the empty entry; without the fsync of an entry's
temporary file before its rename, 2 (retries that keep an entry whose text never
landed). The first version of the test, before the fix, found 2460 in 1305 states.
With gc and 0.9's entry added, it found that a rename cut short can leave the new
name's short entry without its long name (\`BERTH-~3.CON\`, 0 bytes), which no retry
removed (2 violations in 3 runs, before berth removed such leftovers).

The same on a U-Boot board (the rows \`uboot-…\`): the FAT16 boot partition
\`berth-image disk\` makes for \`qemu-aarch64-uboot\` (\`boot.scr\`, both state copies, an
entry directory per deployment, here with a device tree), the same steps and sampling.
What \`boot.scr\` boots is modelled on the host by its rules (each copy read as the
script reads it, and as berth reads it; the newer valid one; the trial while it has
tries and the other copy is whole, then the default, then the previous; the first entry
whose files load and whose kernel \`booti\` takes): its kernel, initramfs and device tree
must be a kernel set's byte for byte, and a copy it takes one the uninterrupted run
wrote. The state copies, overwritten in place, are replayed torn: each request one
sector at a time, and a sector cut after its 4th and 64th byte (a cut between whole
sectors leaves the old or the new copy: the variables fit in the first sector). gc
removes nothing from this partition (0.9's entry went with mark-good's record). A retry
must end in the same state as the uninterrupted run, generations aside.
$puboot. What \`fsck.vfat -n\` found and the model met, in states (not violations):
$unotes
Without the fsync of a state copy in \`ub_write_state\`: 204 violations in 682 states
(148 in mark-good, 24 in gc, 32 in rollback): \`boot.scr\` starting the old default's
set while berth-init boots the new one, retries ending in another state. Writing the
new state over the winning copy instead of the other: 2 violations, both in mark-good's
states with the new copy torn inside its sector (\`boot.scr\` falls back to a copy two
generations old, whose default berth-init no longer boots).

<!-- crash-bench:end -->
MD
)
python3 ci/report-section.py BENCHMARKS.md crash-bench "$section"
echo "$section"
