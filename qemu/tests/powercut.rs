//! Real power cuts at the block layer: a QEMU guest running Debian's kernel runs the
//! device builds of `berth` and `berth-init` on ext4 (mounted `noauto_da_alloc`, so ext4
//! does not hide a missing fsync) over dm-log-writes, which records every block write
//! in the order it reached the disk. The device starts with 1.0 as its default and 0.9
//! as the previous deployment; the guest runs six steps, each between two log marks:
//! - `update`: `berth update` to 2.0, which becomes the trial;
//! - `boot`: berth-init boots, as PID 1 of new PID and mount namespaces (the kernel
//!   command line names the logged device as `berth.root=`): it mounts the device (a
//!   second time), counts the trial's try in the record, assembles the trial (state
//!   directories, the /etc overlay) and execs its init, which says so and exits;
//! - `mark-good`: 2.0 the default, 1.0 the previous, 0.9 named no more;
//! - `gc`: `berth gc` removes 0.9 and the objects only it used;
//! - `rollback`: `berth rollback --from` 2.0, the committed default back to 1.0;
//! - `pull`: `berth update URL --channel stable` to 3.0, an object pull over HTTP from a
//!   static repository that has no delta from 1.0. The server listens on the host's
//!   127.0.0.1; QEMU's user network (`restrict=on`) forwards the guest's 10.0.2.100:8080
//!   to it, and is the guest's only way out. The host's retries use the same server.
//!
//! On the host the log is replayed onto a copy of the starting image. The states a power
//! cut can leave: every prefix of the log (those that end at a flush or FUA write are
//! the durable points), and, as `CrashMonkey` does, reorderings inside each epoch: the
//! writes between two barriers may reach the disk in any order, so any subset of them
//! may have landed on top of everything before the epoch. An epoch of up to
//! [`EXHAUSTIVE_MAX`] writes has every subset checked, a larger one
//! [`SAMPLES_PER_EPOCH`] sampled ones (seeded: the same on every run). A state whose
//! bytes equal one already checked is not checked again (`logwrites::ImageKey`).
//!
//! Each state is mounted (which replays the ext4 journal, as the next boot would) and
//! must pass: berth-init's dry run boots an allowed deployment; `berth fsck` (every
//! object's sha256, both record copies, the named deployments); every deployment the
//! record names is byte-identical to an uninterrupted run's; the interrupted command,
//! run again, ends where an uninterrupted run ends (for `boot`, the record is before or
//! after the count, and a boot from there, berth-init's `--dry-run --write-record` on the
//! host, counts one more try). Unmounted, `e2fsck -fn`
//! finds no error. Replaying the whole log must give the guest's final image byte for
//! byte. The test prints per step the states checked (prefixes, reordered) and the
//! violations; any violation fails it.
//!
//! The second test does the same on a systemd-boot board: one disk, the sysroot's ext4
//! then a FAT32 ESP laid out as `berth-image disk` lays it out, under one dm-log-writes
//! and split by two linear devices (so the log holds both in the order they reached the
//! disk, and a flush covers both, as on one real disk). The device starts with 1.0 as
//! its default and 0.9 as the previous deployment, each with a kernel set and an entry
//! on the ESP; `berth --boot-dir` on the ESP mounted with Linux's vfat runs
//! `esp-update` (1.0 to 2.0, a new kernel set: the set, the counted entry written
//! inert, the record, the activation), `esp-mark-good` of that trial (0.9's entry
//! removed), `esp-gc` (0.9's deployment and its kernel set removed) and `esp-rollback
//! --from` 2.0. Each state's ESP is read on the host with mtools (the host's kernel may
//! have no vfat; mtools reads the FAT as another program than Linux, like the
//! firmware) and must pass: systemd-boot's choice by its rules boots an entry whose
//! kernel and initramfs are a kernel set's byte for byte; berth-init's dry run under
//! that entry's `options` boots an allowed deployment, under its own set; `fsck.vfat
//! -n` finds nothing but what FAT leaves after any cut and `fsck.vfat -a` repairs
//! (counted, printed as notes); `berth fsck`, the deployments, a retry that ends with
//! the uninterrupted run's record and ESP files, `e2fsck -fn`. Fewer reorderings are
//! sampled per epoch ([`LOADER_SAMPLING`]): its checks cost more.
//!
//! The third test runs the same steps (`uboot-…`) on a U-Boot board: the FAT16
//! partition `berth-image disk` makes for `qemu-aarch64-uboot` (`boot.scr`, the two
//! loader-state copies, one entry directory per deployment with its kernel, initramfs,
//! `cmdline`, `set`, and a `dtb`, as a board whose `loader.conf` names a device tree).
//! The guest stays `x86_64`: berth's U-Boot code does not depend on the architecture,
//! and what U-Boot would boot is modelled on the host ([`uboot_choice`]: `boot.scr`'s
//! rules, reading the copies as the script does and checking berth reads them alike)
//! and must be an entry whose kernel, initramfs and device tree are a kernel set's, byte
//! for byte, under which berth-init boots an allowed deployment under its own set. The
//! state copies are the partition's only files overwritten in place, so the replay also
//! tears the writes that reach them: each request one sector at a time
//! ([`split_writes`]), and a sector cut inside ([`TORN_AT`]), after which `boot.scr`
//! must ignore the torn copy and boot by the other. A retry must end in the same state
//! as the uninterrupted run, generations aside ([`without_generation`]).
//!
//! `x86_64` only: the guest runs the host's `dmsetup` (with its shared libraries). Root
//! only (loop mounts). The states are written in /dev/shm when it exists. The three run
//! two at a time, the third once the second ends: 5.3 minutes for all on 2 cores that
//! other builds shared (the first 4.8, the second 3, the third 2.2; 4.6 for the first
//! two before the third and gc were added); ci/test.sh runs them.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::ops::Range;
use std::os::unix::fs::{FileExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use format::bls;
use format::bootconf::{BootConfig, Loader as BootLoader};
use format::loader::{LoaderState, StateCopy};
use format::record::DeploymentName;
use qemu_tests::guest::{self, Drive, Initramfs};
use qemu_tests::logwrites::{self, Epoch, ImageKey, Log, Rng};
use qemu_tests::{TARGETS, bin, cache, run, skip, workspace};
use serde_json::Value;

fn berth_image(args: &[&str], paths: &[&Path]) -> String {
    let mut c = Command::new(bin("berth-image"));
    c.args(args).args(paths);
    run(&mut c).trim().to_owned()
}

/// A tiny root filesystem: enough files for an update of a few dozen objects.
fn tree(dir: &Path, version: &str, keys: &Path) -> PathBuf {
    let t = dir.join(format!("tree-{version}"));
    for d in [
        "etc", "var", "run", "dev", "proc", "sys", "sysroot", "sbin", "bin",
    ] {
        fs::create_dir_all(t.join(d)).unwrap();
    }
    fs::create_dir_all(t.join("usr/lib/berth/keys")).unwrap();
    fs::create_dir_all(t.join("usr/share/doc")).unwrap();
    fs::write(t.join("etc/release"), version).unwrap();
    // berth-init boots the trial in the guest: its init says so and exits, which ends
    // the PID namespace berth-init ran in as PID 1.
    fs::copy(
        cache().join("debian/amd64/busybox/bin/busybox"),
        t.join("bin/busybox"),
    )
    .unwrap();
    fs::write(
        t.join("sbin/init"),
        "#!/bin/busybox sh\necho \"POWERCUT booted $(/bin/busybox cat /etc/release)\"\n",
    )
    .unwrap();
    fs::set_permissions(t.join("sbin/init"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::copy(
        keys.join("berth.pub"),
        t.join("usr/lib/berth/keys/berth.pub"),
    )
    .unwrap();
    let mut big: Vec<u8> = (0..150_000u32).flat_map(u32::to_le_bytes).collect();
    if version != "1.0" {
        big[200_000..200_400].fill(3);
    }
    if version == "0.9" {
        // Objects of its own, which gc removes once nothing names 0.9.
        big[100_000..100_400].fill(5);
    }
    fs::write(t.join("usr/lib/big.bin"), &big).unwrap();
    for i in 0..24 {
        let changed = version != "1.0" && i % 3 == 0;
        fs::write(
            t.join(format!("usr/share/doc/file{i}")),
            format!("document {i} {}\n", if changed { version } else { "" }).repeat(40),
        )
        .unwrap();
    }
    t
}

/// The device's state as booting sees it: the record's roles, the trial's tries, the
/// last rollback, the deployments on disk, and what berth-init boots next.
#[derive(Debug, PartialEq, Eq, Clone)]
struct Outcome {
    default: Option<String>,
    trial: Option<String>,
    previous: Option<String>,
    tries_left: Option<u64>,
    last_rollback: Option<String>,
    deployments: Vec<String>,
    next_boot: String,
}

/// The device build of `name` (static, optimized): the guest's own binaries, which
/// also run on the host and check the thousand states faster than debug builds.
fn device(name: &str) -> PathBuf {
    workspace()
        .join("target/x86_64-unknown-linux-musl/device")
        .join(name)
}

fn berth(sysroot: &Path, boot_json: &Path, args: &[&str]) -> std::process::Output {
    Command::new(device("berth"))
        .arg("--sysroot")
        .arg(sysroot)
        .arg("--boot-json")
        .arg(boot_json)
        .args(args)
        .output()
        .unwrap()
}

/// berth-init's test mode on `sysroot`: the boot decision, and with `write` the record
/// write a real boot makes (the trial's try counted), by the same code.
fn berth_init(sysroot: &Path, write: bool) -> std::process::Output {
    let mut c = Command::new(device("berth-init"));
    c.arg("--dry-run").arg("--sysroot").arg(sysroot);
    if write {
        c.arg("--write-record");
    }
    c.output().unwrap()
}

fn outcome(sysroot: &Path, boot_json: &Path) -> Result<Outcome, String> {
    let out = berth(sysroot, boot_json, &["status", "--json"]);
    if !out.status.success() {
        return Err(format!(
            "status: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let s: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let ds = s["deployments"].as_array().cloned().unwrap_or_default();
    let role = |r: &str| {
        ds.iter()
            .find(|d| d[r] == true)
            .and_then(|d| d["name"].as_str().map(str::to_owned))
    };
    let plan = berth_init(sysroot, false);
    let plan: Value =
        serde_json::from_slice(&plan.stdout).map_err(|e| format!("berth-init --dry-run: {e}"))?;
    Ok(Outcome {
        default: role("default"),
        trial: role("trial"),
        previous: role("previous"),
        tries_left: ds.iter().find_map(|d| d["tries_left"].as_u64()),
        last_rollback: s["last_rollback"]["from"].as_str().map(str::to_owned),
        deployments: ds
            .iter()
            .filter_map(|d| d["name"].as_str().map(str::to_owned))
            .collect(),
        next_boot: plan["choice"]["deployment"]
            .as_str()
            .unwrap_or("none")
            .to_owned(),
    })
}

type Scan = BTreeMap<Vec<u8>, (u32, u32, u32, Vec<u8>)>;

fn scan(dir: &Path) -> Scan {
    testkit::scan(dir)
        .into_iter()
        .map(|(p, e)| (p, (e.mode, e.uid, e.gid, e.content)))
        .collect()
}

fn boot_json(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(format!("boot-{name}.json"));
    fs::write(
        &p,
        format!(r#"{{"choice":{{"kind":"deployment","deployment":"{name}"}},"reason":"test"}}"#),
    )
    .unwrap();
    p
}

/// What the guest ran in one step.
#[derive(Clone)]
enum Run {
    /// A `berth` command; run again, it must end where an uninterrupted run ends.
    Berth(Vec<String>),
    /// berth-init's boot decision with its record write (a trial's try counted). A cut
    /// leaves the count before or after (`[before, after]`); a boot after the cut
    /// (run again) counts one more try from there.
    Boot(Box<[Outcome; 3]>),
}

/// One step the guest ran, and what may be on disk while it runs.
struct Step {
    mark: &'static str,
    run: Run,
    booted: PathBuf,
    may_boot: Vec<String>,
    want: Outcome,
}

#[derive(Default)]
struct Tally {
    prefix: u64,
    barriers: u64,
    reordered: u64,
    torn: u64,
    violations: Vec<String>,
}

/// Checks one crash state (`img`, a copy the check may change).
fn check_state(img: &Path, mnt: &Path, step: &Step, files: &BTreeMap<String, Scan>) -> Vec<String> {
    let mut bad = Vec::new();
    run(Command::new("mount")
        .args(["-t", "ext4", "-o", "loop,noauto_da_alloc"])
        .arg(img)
        .arg(mnt));
    let fsck = berth(mnt, &step.booted, &["fsck"]);
    if !fsck.status.success() {
        bad.push(format!(
            "berth fsck: {}",
            String::from_utf8_lossy(&fsck.stderr).trim()
        ));
    }
    let now = outcome(mnt, &step.booted);
    match &now {
        Ok(now) => {
            if !step.may_boot.contains(&now.next_boot) {
                bad.push(format!("berth-init would boot {}", now.next_boot));
            }
            for name in [&now.default, &now.trial, &now.previous]
                .into_iter()
                .flatten()
            {
                let dir = mnt.join("berth/deploy").join(name);
                if !dir.is_dir() {
                    bad.push(format!("deployment {name} is missing"));
                } else if files.get(name).is_some_and(|f| *f != scan(&dir)) {
                    bad.push(format!("deployment {name} is not complete"));
                }
            }
        }
        Err(e) => bad.push(e.clone()),
    }
    let (retry, want) = match &step.run {
        Run::Berth(args) => {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            (berth(mnt, &step.booted, &args), Some(step.want.clone()))
        }
        Run::Boot(counts) => {
            // The count is either before or after; the next boot counts from there.
            let at = now
                .as_ref()
                .ok()
                .and_then(|n| counts.iter().position(|c| c == n));
            if at.is_none_or(|k| k > 1) {
                bad.push(format!(
                    "the record is neither before nor after the count: {now:?}"
                ));
            }
            (
                berth_init(mnt, true),
                at.and_then(|k| counts.get(k + 1).cloned()),
            )
        }
    };
    if retry.status.success() {
        match (outcome(mnt, &step.booted), want) {
            (Ok(end), Some(want)) if end == want => {}
            (_, None) => {}
            (other, Some(want)) => {
                bad.push(format!("the retry ended at {other:?}, not {want:?}"));
            }
        }
    } else {
        bad.push(format!(
            "the retry failed: {}",
            String::from_utf8_lossy(&retry.stderr).trim()
        ));
    }
    umount(mnt);
    bad.extend(e2fsck_problems(img));
    bad
}

/// What `e2fsck -fn` finds wrong with the ext4 image `img` (its first four lines past
/// the pass headers), if anything.
fn e2fsck_problems(img: &Path) -> Option<String> {
    let e2 = Command::new("e2fsck").arg("-fn").arg(img).output().unwrap();
    (!e2.status.success()).then(|| {
        format!(
            "e2fsck -fn: {}",
            String::from_utf8_lossy(&e2.stdout)
                .lines()
                .filter(|l| !l.starts_with("Pass") && !l.is_empty())
                .take(4)
                .collect::<Vec<_>>()
                .join(" / ")
        )
    })
}

/// Unmounts `mnt`, again while it is busy: the two tests run side by side, and a child
/// the other one forks holds this one's open files until it execs.
fn umount(mnt: &Path) {
    for _ in 0..100 {
        let out = Command::new("umount").arg(mnt).output().unwrap();
        if out.status.success() {
            return;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("busy"), "umount {}: {err}", mnt.display());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("umount {}: still busy after 2 s", mnt.display());
}

/// The guest's script (after `guest::Initramfs`'s own start: applets, proc, sys, dev,
/// modules): dm-log-writes over the disk, then each step between two marks; `new` is
/// the update's deployment.
fn guest_script(new: &str) -> String {
    // berth-init boots for real, as PID 1 of new PID and mount namespaces: it mounts
    // berth.root= (the logged device, a second time), counts the trial's try, assembles
    // and execs the trial's init, whose exit ends the namespaces.
    format!(
        r#"sectors=$(cat /sys/block/vda/size)
dmsetup create --noudevsync lw --table "0 $sectors log-writes /dev/vda /dev/vdb" || echo "POWERCUT dmsetup failed"
dmsetup message lw 0 mark start
mount -t ext4 -o noauto_da_alloc /dev/dm-0 /mnt || echo "POWERCUT mount failed"
b="berth --sysroot /mnt"
dmsetup message lw 0 mark update
$b --boot-json /boot-old.json update /update.berth
echo "POWERCUT update $?"
dmsetup message lw 0 mark boot
unshare -m -p -f berth-init
echo "POWERCUT boot $?"
dmsetup message lw 0 mark mark-good
$b --boot-json /boot-new.json mark-good
echo "POWERCUT mark-good $?"
dmsetup message lw 0 mark gc
$b --boot-json /boot-new.json gc
echo "POWERCUT gc $?"
dmsetup message lw 0 mark rollback
$b --boot-json /boot-new.json rollback --from {new}
echo "POWERCUT rollback $?"
ip link set lo up; ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0
dmsetup message lw 0 mark pull
$b --boot-json /boot-old.json update http://10.0.2.100:8080 --channel stable --progress none
echo "POWERCUT pull $?"
dmsetup message lw 0 mark done
umount /mnt
dmsetup remove lw
echo "POWERCUT finished"
"#
    )
}

/// The initramfs: busybox, the kernel modules, the host's dmsetup and its libraries,
/// the device build of berth, the update and the guest script.
fn initramfs(dir: &Path, update: &Path, boots: [&Path; 2], new: &str) -> PathBuf {
    let read = |p: &Path| fs::read(p).unwrap();
    let i = Initramfs::new(
        dir,
        &[
            "crc32c_generic",
            "virtio_pci",
            "virtio_blk",
            "ext4",
            "dm-log-writes",
            "virtio_net",
            "overlay",
        ],
    );
    i.host_program("/usr/sbin/dmsetup")
        .berth()
        .file("update.berth", &read(update))
        .file("boot-old.json", &read(boots[0]))
        .file("boot-new.json", &read(boots[1]));
    i.pack(&guest_script(new))
}

#[test]
fn power_cuts_at_every_flush_leave_a_bootable_device() {
    let t = TARGETS[0];
    if skip(t, "power_cuts_at_every_flush_leave_a_bootable_device") {
        return;
    }
    assert!(
        Path::new("/usr/sbin/dmsetup").exists(),
        "dmsetup is missing (ci/setup.sh installs it)"
    );
    let scratch = tempfile::Builder::new()
        .prefix("berth-powercut-")
        .tempdir_in(workspace().join("target"))
        .unwrap();
    let dir = scratch.path();
    let keys = dir.join("keys");
    let repo = dir.join("repo");
    berth_image(&["keygen", "--out"], &[&keys]);
    let commit = |v: &str| {
        let t = tree(dir, v, &keys);
        let mut c = Command::new(bin("berth-image"));
        c.args(["commit", "--repo"])
            .arg(&repo)
            .arg("--tree")
            .arg(&t)
            .args(["--version", v]);
        run(&mut c).trim().to_owned()
    };
    let (v0, v1, v2, v3) = (commit("0.9"), commit("1.0"), commit("2.0"), commit("3.0"));
    let (n0, n1, n2, n3) = (
        v0[..16].to_owned(),
        v1[..16].to_owned(),
        v2[..16].to_owned(),
        v3[..16].to_owned(),
    );
    let delta = |from: &str, to: &str, out: &Path| {
        let mut c = Command::new(bin("berth-image"));
        c.args(["delta", "--repo"])
            .arg(&repo)
            .args(["--from", from, "--to", to, "--part-size", "60000", "--key"])
            .arg(keys.join("berth.key"))
            .arg("-o")
            .arg(out);
        run(&mut c);
    };
    let update = dir.join("update.berth");
    delta(&v1, &v2, &update);
    // 3.0 in a static repository without a delta from 1.0: the device pulls the objects
    // it lacks. Served on the host's 127.0.0.1; the guest reaches it through QEMU.
    let www = dir.join("www");
    let mut c = Command::new(bin("berth-image"));
    c.args(["publish", "--repo"])
        .arg(&repo)
        .args(["--commit", &v3, "--channel", "stable", "--key"])
        .arg(keys.join("berth.key"))
        .arg("--to")
        .arg(&www);
    run(&mut c);
    let server = testkit::http::Server::start(&www);
    // The device before the guest runs: 1.0 committed over 0.9, which stays as the
    // previous deployment (until mark-good of 2.0 leaves it to gc).
    let sysroot = dir.join("sysroot");
    let mut c = Command::new(bin("berth-image"));
    c.args(["install", "--repo"])
        .arg(&repo)
        .args(["--commit", &v0, "--sysroot"])
        .arg(&sysroot);
    run(&mut c);
    let first = dir.join("update-0.berth");
    delta(&v0, &v1, &first);
    let (boot0, boot1, boot2) = (
        boot_json(dir, &n0),
        boot_json(dir, &n1),
        boot_json(dir, &n2),
    );
    let ok = |o: std::process::Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    ok(berth(
        &sysroot,
        &boot0,
        &["update", first.to_str().unwrap()],
    ));
    ok(berth(&sysroot, &boot1, &["mark-good"]));
    let mut lab = Lab {
        dir: dir.to_path_buf(),
        update,
        sysroot,
        boots: [boot1, boot2],
        names: [n0, n1, n2, n3],
        port: server.addr.port(),
        files: BTreeMap::new(),
        want: BTreeMap::new(),
    };
    lab.reference();
    let (work, log_img, guest_time) = lab.guest();
    lab.replay(&work, &log_img, guest_time);
}

/// What the test built on the host.
struct Lab {
    dir: PathBuf,
    update: PathBuf,
    sysroot: PathBuf,
    /// berth-init's report naming 1.0, then 2.0, as booted.
    boots: [PathBuf; 2],
    /// The deployments of 0.9, 1.0, 2.0 and 3.0.
    names: [String; 4],
    /// The port of the repository's server on 127.0.0.1.
    port: u16,
    /// Each deployment's files after an uninterrupted run.
    files: BTreeMap<String, Scan>,
    /// Where each step of an uninterrupted run ends (and, under "boot-twice", where a
    /// second count ends).
    want: BTreeMap<&'static str, Outcome>,
}

/// Reordered states sampled per epoch at most (besides the prefixes): an epoch of up
/// to [`EXHAUSTIVE_MAX`] writes gets all its subsets instead. Chosen so the whole test
/// checks about 1,500 distinct states in 3 to 4 minutes on 2 cores.
const SAMPLES_PER_EPOCH: usize = 24;
/// Epochs this small have every subset of their writes checked (2^6 = 64 at most).
const EXHAUSTIVE_MAX: usize = 6;
/// The same two for the loader boards' runs, whose checks cost four times as much (the
/// FAT copied out, `fsck.vfat`, mtools): about 700 states in two and a half minutes for
/// each board.
const LOADER_SAMPLING: Sampling = Sampling {
    per_epoch: 8,
    exhaustive_max: 4,
};

/// How many reorderings an epoch gets: all subsets up to `exhaustive_max` writes, else
/// `per_epoch` sampled ones.
#[derive(Clone, Copy)]
struct Sampling {
    per_epoch: usize,
    exhaustive_max: usize,
}
/// The sampler's seed: the same states on every run.
const SEED: u64 = 0x6265_7274_6870_6375;

/// Whether a state is a prefix of the log, one of an epoch's reorderings, or a prefix
/// whose last sector is torn inside ([`TORN_AT`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Prefix,
    Reordered,
    Torn,
}

/// Where a sector the replay tears (`tear` in [`replay`]) is cut: its first bytes new,
/// the rest as before, as a flash device cut while programming a page, or a disk
/// without atomic sectors, may leave it. After the CRC of a U-Boot state copy alone, and
/// after its first variables: a copy that is neither the old nor the new state. (A cut
/// between whole sectors leaves the old or the new copy: all its variables are in its
/// first sector, and the rest is zeros in both.)
const TORN_AT: [usize; 2] = [4, 64];

/// The subsets of an epoch of `k` writes to check: every prefix (in log order), then
/// every other subset if there are few, else [`SAMPLES_PER_EPOCH`] sampled ones: a
/// third with one write missing, a third with two missing (the cheap, likely cases), a
/// third with each write landed or not at random.
fn subsets(k: usize, rng: &mut Rng, sampling: Sampling) -> Vec<(Vec<bool>, Kind)> {
    let mut out: Vec<(Vec<bool>, Kind)> = (1..=k)
        .map(|j| ((0..k).map(|w| w < j).collect(), Kind::Prefix))
        .collect();
    if k < 2 {
        return out;
    }
    if k <= sampling.exhaustive_max {
        for bits in 0u32..1 << k {
            out.push((
                (0..k).map(|w| bits >> w & 1 == 1).collect(),
                Kind::Reordered,
            ));
        }
        return out;
    }
    for n in 0..sampling.per_epoch {
        let landed = match n % 3 {
            // Not the last write: without it, the state is a prefix.
            0 => {
                let missing = rng.below(k - 1);
                (0..k).map(|w| w != missing).collect()
            }
            1 => {
                let (a, b) = (rng.below(k), rng.below(k));
                (0..k).map(|w| w != a && w != b).collect()
            }
            _ => (0..k).map(|_| rng.next_u64() & 1 == 1).collect(),
        };
        out.push((landed, Kind::Reordered));
    }
    out
}

impl Lab {
    /// The uninterrupted run, on the host: what each step must end at.
    fn reference(&mut self) {
        let [n0, n1, n2, n3] = &self.names;
        let [boot1, boot2] = &self.boots;
        let reference = self.dir.join("reference");
        run(Command::new("cp")
            .arg("-a")
            .arg(&self.sysroot)
            .arg(&reference));
        for n in [n0, n1] {
            self.files
                .insert(n.clone(), scan(&reference.join("berth/deploy").join(n)));
        }
        let ok = |o: std::process::Output| {
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        };
        let update = self.update.to_str().unwrap();
        ok(berth(&reference, boot1, &["update", update]));
        self.want
            .insert("update", outcome(&reference, boot1).unwrap());
        self.files
            .insert(n2.clone(), scan(&reference.join("berth/deploy").join(n2)));
        ok(berth_init(&reference, true));
        self.want
            .insert("boot", outcome(&reference, boot2).unwrap());
        let twice = self.dir.join("reference-twice");
        run(Command::new("cp").arg("-a").arg(&reference).arg(&twice));
        ok(berth_init(&twice, true));
        self.want
            .insert("boot-twice", outcome(&twice, boot2).unwrap());
        ok(berth(&reference, boot2, &["mark-good"]));
        self.want
            .insert("mark-good", outcome(&reference, boot2).unwrap());
        ok(berth(&reference, boot2, &["gc"]));
        let after_gc = outcome(&reference, boot2).unwrap();
        assert!(!after_gc.deployments.contains(n0), "{after_gc:?}");
        self.want.insert("gc", after_gc);
        ok(berth(&reference, boot2, &["rollback", "--from", n2]));
        let after = outcome(&reference, boot2).unwrap();
        assert_eq!(after.default.as_deref(), Some(n1.as_str()));
        assert_eq!(after.previous.as_deref(), Some(n2.as_str()));
        self.want.insert("rollback", after);
        // Booted into 1.0 again, the device pulls 3.0.
        let pull = Self::pull_args(&format!("http://127.0.0.1:{}", self.port));
        let pull: Vec<&str> = pull.iter().map(String::as_str).collect();
        ok(berth(&reference, boot1, &pull));
        let after = outcome(&reference, boot1).unwrap();
        assert_eq!(after.trial.as_deref(), Some(n3.as_str()));
        self.files
            .insert(n3.clone(), scan(&reference.join("berth/deploy").join(n3)));
        self.want.insert("pull", after);
    }

    /// `berth update` from the repository at `url`.
    fn pull_args(url: &str) -> Vec<String> {
        ["update", url, "--channel", "stable", "--progress", "none"]
            .map(str::to_owned)
            .to_vec()
    }

    /// Runs the guest; returns its final disk image, the log and the guest's wall time.
    fn guest(&self) -> (PathBuf, PathBuf, std::time::Duration) {
        let dir = self.dir.as_path();
        let base = dir.join("base.img");
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-b", "4096", "-d"])
            .arg(&self.sysroot)
            .arg(&base)
            .arg("48M"));
        let work = dir.join("work.img");
        fs::copy(&base, &work).unwrap();
        let log_img = dir.join("log.img");
        File::create(&log_img).unwrap().set_len(256 << 20).unwrap();
        let cpio = initramfs(
            dir,
            &self.update,
            [&self.boots[0], &self.boots[1]],
            &self.names[2],
        );
        let kernel = cache().join("debian/amd64/kernel/boot/vmlinux");
        let start = std::time::Instant::now();
        let out = Command::new("timeout")
            .args([
                "-k",
                "5",
                "300",
                "qemu-system-x86_64",
                "-M",
                "q35",
                "-cpu",
                "max",
            ])
            .args(["-m", "512", "-nographic", "-no-reboot", "-kernel"])
            .arg(&kernel)
            .arg("-initrd")
            .arg(&cpio)
            .args([
                "-append",
                // No rescue shell: a failed boot ends the namespace (after berth-init waits
                // 10 s) instead of waiting for a shell that never gets input.
                "console=ttyS0 panic=-1 quiet berth.root=/dev/dm-0 berth.rescue_shell=/none",
            ])
            .arg("-drive")
            .arg(format!(
                "file={},if=none,format=raw,id=d0,cache=unsafe",
                work.display()
            ))
            .args(["-device", "virtio-blk-pci,drive=d0", "-drive"])
            .arg(format!(
                "file={},if=none,format=raw,id=d1,cache=unsafe",
                log_img.display()
            ))
            .args(["-device", "virtio-blk-pci,drive=d1"])
            // No route anywhere but 10.0.2.100:8080, the repository's server.
            .arg("-netdev")
            .arg(format!(
                "user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:8080-cmd:{} nc 127.0.0.1 {}",
                cache().join("debian/amd64/busybox/bin/busybox").display(),
                self.port
            ))
            .args(["-device", "virtio-net-pci,netdev=n0"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let serial = String::from_utf8_lossy(&out.stdout).into_owned();
        let guest_time = start.elapsed();
        for line in [
            "POWERCUT update 0",
            "POWERCUT booted 2.0",
            "POWERCUT boot 0",
            "POWERCUT mark-good 0",
            "POWERCUT gc 0",
            "POWERCUT rollback 0",
            "POWERCUT pull 0",
            "POWERCUT finished",
        ] {
            assert!(
                serial.contains(line),
                "no {line:?} on the console:\n{serial}"
            );
        }
        (work, log_img, guest_time)
    }

    fn steps(&self) -> Vec<Step> {
        let [_, n1, n2, n3] = &self.names;
        let [boot1, boot2] = &self.boots;
        let want = |k: &str| self.want[k].clone();
        let step = |mark, run, booted: &PathBuf, may_boot: &[&String]| Step {
            mark,
            run,
            booted: booted.clone(),
            may_boot: may_boot.iter().map(|n| (*n).clone()).collect(),
            want: want(mark),
        };
        let berth = |args: &[&str]| Run::Berth(args.iter().map(|a| (*a).to_owned()).collect());
        vec![
            step(
                "update",
                berth(&["update", self.update.to_str().unwrap()]),
                boot1,
                &[n1, n2],
            ),
            step(
                "boot",
                Run::Boot(Box::new([want("update"), want("boot"), want("boot-twice")])),
                boot2,
                &[n2],
            ),
            step("mark-good", berth(&["mark-good"]), boot2, &[n2]),
            step("gc", berth(&["gc"]), boot2, &[n2]),
            step(
                "rollback",
                berth(&["rollback", "--from", n2]),
                boot2,
                &[n1, n2],
            ),
            step(
                "pull",
                Run::Berth(Self::pull_args(&format!("http://127.0.0.1:{}", self.port))),
                boot1,
                &[n1, n3],
            ),
        ]
    }

    /// Replays the log and checks every state: each prefix, and reorderings of the
    /// writes inside each epoch.
    fn replay(&self, work: &Path, log_img: &Path, guest_time: std::time::Duration) {
        let steps = self.steps();
        let marks: Vec<&str> = steps.iter().map(|s| s.mark).collect();
        let mnt = self.dir.join("mnt");
        fs::create_dir(&mnt).unwrap();
        let sampling = Sampling {
            per_epoch: SAMPLES_PER_EPOCH,
            exhaustive_max: EXHAUSTIVE_MAX,
        };
        let (tallies, entries, check_time) = replay(
            &self.dir,
            work,
            log_img,
            &marks,
            sampling,
            &[],
            &mut |k, state| check_state(state, &mnt, &steps[k], &self.files),
        );
        let all = report(
            "powercut", &marks, &tallies, entries, guest_time, check_time,
        );
        assert!(
            all.is_empty(),
            "{} violations:\n{}",
            all.len(),
            all.join("\n")
        );
    }
}

/// What a check of one state gets: the step it counts for (an index into the marks)
/// and the state's disk image (a copy the check may change); it returns violations.
type Check<'a> = dyn FnMut(usize, &Path) -> Vec<String> + 'a;

/// Replays the log `log_img` onto a copy of `dir/base.img` and calls `check` on every
/// distinct state a power cut can leave while a step runs (between its mark of `marks`
/// and the next, or `done`): each prefix, and reorderings of the writes inside each
/// epoch. A write that touches the sectors `tear` is taken one sector at a time
/// ([`split_writes`]), and a prefix ending in one of those sectors is also checked with
/// that sector torn inside ([`TORN_AT`]). Returns the tally per step, the log's entries
/// and the time it took; panics unless replaying the whole log gives `work`, the
/// guest's final image.
fn replay(
    dir: &Path,
    work: &Path,
    log_img: &Path,
    marks: &[&str],
    sampling: Sampling,
    tear: &[Range<u64>],
    check_state: &mut Check<'_>,
) -> (Vec<Tally>, usize, std::time::Duration) {
    let mut log = Log::open(log_img).unwrap();
    split_writes(&mut log, tear);
    let step_of = step_of(&log, marks);
    let states = in_memory(dir);
    // The prefix up to the last barrier, and its key.
    let base_path = states.path().join("replay.img");
    fs::copy(dir.join("base.img"), &base_path).unwrap();
    let base = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&base_path)
        .unwrap();
    let mut base_key = ImageKey::default();
    let state = states.path().join("state.img");
    let mut tallies: Vec<Tally> = marks.iter().map(|_| Tally::default()).collect();
    let mut seen = HashSet::new();
    let mut rng = Rng::new(SEED);
    let mut check = |k: usize, key, kind, barrier: bool, at: &str, landed: &dyn Fn(&File)| {
        if !seen.insert(key) {
            return;
        }
        fs::copy(&base_path, &state).unwrap();
        landed(&fs::OpenOptions::new().write(true).open(&state).unwrap());
        let bad = check_state(k, &state);
        let tally = &mut tallies[k];
        match kind {
            Kind::Prefix => tally.prefix += 1,
            Kind::Reordered => tally.reordered += 1,
            Kind::Torn => tally.torn += 1,
        }
        tally.barriers += u64::from(barrier);
        tally
            .violations
            .extend(bad.into_iter().map(|b| format!("{} {at}: {b}", marks[k])));
    };
    let check_start = std::time::Instant::now();
    let mut epoch: Vec<usize> = Vec::new();
    for (i, e) in log.entries.iter().enumerate() {
        let last = i + 1 == log.entries.len();
        if logwrites::writes(e) && !logwrites::is_barrier(e) {
            epoch.push(i);
        }
        if !logwrites::is_barrier(e) && !last {
            continue;
        }
        // The epoch closes: check its states on top of the base.
        let ep = Epoch::new(&log, std::mem::take(&mut epoch), &base).unwrap();
        let k = ep.writes.len();
        for (landed, kind) in subsets(k, &mut rng, sampling) {
            let Some((at, name)) = locate(&ep, &landed, kind, i) else {
                continue;
            };
            let Some(step) = step_of(at) else { continue };
            let key = ep.key(&log, base_key, &landed);
            check(step, key, kind, false, &name, &|dev| {
                ep.apply(&log, &landed, dev).unwrap();
            });
            // The prefix's last write torn inside its sector, if it is one to tear (a
            // one-sector piece, [`split_writes`]).
            let e = &log.entries[at];
            if kind != Kind::Prefix || !tear.iter().any(|r| r.contains(&e.sector)) {
                continue;
            }
            for t in torn(&log, &ep, &base, base_key, &landed, e) {
                let at = format!("{name} torn after its sector's byte {}", t.cut);
                check(step, t.key, Kind::Torn, false, &at, &|dev| {
                    ep.apply(&log, &t.landed, dev).unwrap();
                    dev.write_all_at(&t.sector, e.sector * log.sectorsize)
                        .unwrap();
                });
            }
        }
        // Then the base moves past the barrier.
        let mut all = ep.writes.clone();
        if logwrites::writes(e) && logwrites::is_barrier(e) {
            all.push(i);
        }
        let through = Epoch::new(&log, all, &base).unwrap();
        let every = vec![true; through.writes.len()];
        base_key = through.key(&log, base_key, &every);
        through.apply(&log, &every, &base).unwrap();
        if logwrites::is_barrier(e)
            && let Some(step) = step_of(i)
        {
            check(
                step,
                base_key,
                Kind::Prefix,
                true,
                &format!("entry {i}"),
                &|_| {},
            );
        }
    }
    drop(base);
    assert!(
        fs::read(&base_path).unwrap() == fs::read(work).unwrap(),
        "replaying the whole log does not give the guest's final image"
    );
    (tallies, log.entries.len(), check_start.elapsed())
}

/// A prefix state whose last write is torn inside its one sector: the writes `landed`
/// of the epoch, then `sector` (the new bytes up to `cut`, the rest as before).
struct Torn {
    landed: Vec<bool>,
    sector: Vec<u8>,
    cut: usize,
    key: ImageKey,
}

/// The prefix `landed` of the epoch `ep` (on top of `base`, whose key is `base_key`)
/// with its last write `last` (one sector) torn at each of [`TORN_AT`].
fn torn(
    log: &Log,
    ep: &Epoch,
    base: &File,
    base_key: ImageKey,
    landed: &[bool],
    last: &logwrites::Entry,
) -> Vec<Torn> {
    if last.nr_sectors != 1 {
        return Vec::new();
    }
    let mut before = landed.to_vec();
    if let Some(k) = before.iter().rposition(|&l| l) {
        before[k] = false;
    }
    // The sector as the epoch's earlier writes left it.
    let s = log.sectorsize;
    let mut old = vec![0u8; usize::try_from(s).unwrap()];
    base.read_exact_at(&mut old, last.sector * s).unwrap();
    for (&w, _) in ep.writes.iter().zip(&before).filter(|(_, l)| **l) {
        let e = &log.entries[w];
        if (e.sector..e.sector + e.nr_sectors).contains(&last.sector) {
            let (at, len) = (
                usize::try_from((last.sector - e.sector) * s).unwrap(),
                old.len(),
            );
            old.copy_from_slice(&log.data(e).unwrap()[at..at + len]);
        }
    }
    let new = log.data(last).unwrap();
    let key = ep.key(log, base_key, &before);
    TORN_AT
        .into_iter()
        .map(|cut| {
            let mut sector = old.clone();
            sector[..cut].copy_from_slice(&new[..cut]);
            Torn {
                key: key.change(last.sector, &old, &sector),
                landed: before.clone(),
                sector,
                cut,
            }
        })
        .collect()
}

/// Splits each write of `log` that touches a sector of `tear` into one write per sector,
/// in place and in order: a disk writes a sector whole or not at all, but a request of
/// several sectors may be cut between them, and the pieces of one request may reach
/// the disk in any order before the next barrier, as separate writes may. So the states
/// include the request torn: its first sectors landed (a prefix), or any others (a
/// reordering). Only the last piece keeps a flush or FUA flag (the barrier comes after
/// the whole request).
fn split_writes(log: &mut Log, tear: &[Range<u64>]) {
    let s = log.sectorsize;
    let mut out = Vec::with_capacity(log.entries.len());
    for e in log.entries.drain(..) {
        let torn = logwrites::writes(&e)
            && e.nr_sectors > 1
            && tear
                .iter()
                .any(|r| e.sector < r.end && r.start < e.sector + e.nr_sectors);
        if !torn {
            out.push(e);
            continue;
        }
        for n in 0..e.nr_sectors {
            let last = n + 1 == e.nr_sectors;
            out.push(logwrites::Entry {
                sector: e.sector + n,
                nr_sectors: 1,
                flags: if last {
                    e.flags
                } else {
                    e.flags & !(logwrites::FLUSH | logwrites::FUA)
                },
                data_at: e.data_at + n * s,
                mark: None,
            });
        }
    }
    log.entries = out;
}

/// A scratch directory for the states, in memory when it can be: the checks' fsyncs
/// then cost nothing, where on the host's disk they would reach it through the loop
/// device.
fn in_memory(otherwise: &Path) -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    tempfile::Builder::new()
        .prefix("berth-powercut-")
        .tempdir_in(if shm.is_dir() { shm } else { otherwise })
        .unwrap()
}

/// Which step's command was running when entry `i` reached the disk (none before the
/// first step's mark or after the guest's last).
fn step_of(log: &Log, marks: &[&str]) -> impl Fn(usize) -> Option<usize> + use<> {
    let marks: Vec<usize> = marks
        .iter()
        .map(|m| log.mark(m).unwrap_or_else(|| panic!("mark {m}")))
        .collect();
    let done = log.mark("done").expect("mark done");
    move |i: usize| {
        (marks[0] <= i && i < done).then(|| marks.iter().rposition(|&m| m <= i).unwrap())
    }
}

/// The log entry a state of the epoch `ep` (closed by entry `end`) counts at (a
/// prefix's last write; a reordering's epoch's last write), and its name in a
/// violation.
fn locate(ep: &Epoch, landed: &[bool], kind: Kind, end: usize) -> Option<(usize, String)> {
    match kind {
        Kind::Prefix | Kind::Torn => {
            let at = *ep
                .writes
                .get(landed.iter().filter(|&&l| l).count().checked_sub(1)?)?;
            Some((at, format!("entry {at}")))
        }
        Kind::Reordered => {
            let landed: Vec<usize> = ep
                .writes
                .iter()
                .zip(landed)
                .filter_map(|(w, &l)| l.then_some(*w))
                .collect();
            Some((
                *ep.writes.last()?,
                format!("epoch ending at entry {end}, writes {landed:?} landed"),
            ))
        }
    }
}

/// Prints the tally per step and in total (`title: …`); returns every violation.
fn report(
    title: &str,
    marks: &[&str],
    tallies: &[Tally],
    entries: usize,
    guest_time: std::time::Duration,
    check_time: std::time::Duration,
) -> Vec<String> {
    let mut all = Vec::new();
    for (mark, t) in marks.iter().zip(tallies) {
        println!(
            "powercut {mark}: {} states checked ({} prefixes, {} at flush/FUA points; {} reordered; {} torn inside a sector), {} violations",
            t.prefix + t.reordered + t.torn,
            t.prefix,
            t.barriers,
            t.reordered,
            t.torn,
            t.violations.len()
        );
        all.extend(t.violations.iter().cloned());
    }
    let total = |f: fn(&Tally) -> u64| tallies.iter().map(f).sum::<u64>();
    println!(
        "{title}: {} states checked ({} prefixes, {} reordered, {} torn inside a sector), {} violations; {} log entries, guest run {:.1} s, replay and checks {:.1} s",
        total(|t| t.prefix + t.reordered + t.torn),
        total(|t| t.prefix),
        total(|t| t.reordered),
        total(|t| t.torn),
        all.len(),
        entries,
        guest_time.as_secs_f64(),
        check_time.as_secs_f64()
    );
    all
}

/// Where the boot partition starts on a loader board's disk (after the sysroot's ext4).
const PART_AT: u64 = 48 << 20;
/// The kernel version of the test kernel sets (`usr/lib/modules/<version>/`).
const KVER: &str = "6.1.0-test";
/// The U-Boot board's device tree, relative to a kernel set's `dtb/` (`loader.conf`'s
/// `devicetree`, as the Raspberry Pi's board names one): its entries hold a `dtb`.
const DEVICE_TREE: &str = "broadcom/test.dtb";

/// A loader board's run: the loader that reads the boot partition, and what differs
/// with it.
#[derive(Clone, Copy)]
struct Board {
    loader: BootLoader,
    /// The report's title (`powercut <tag>`).
    tag: &'static str,
    /// The steps' marks: update, mark-good, gc, rollback.
    marks: [&'static str; 4],
    /// The boot partition's size.
    part_len: u64,
}

/// systemd-boot: a FAT32 ESP, as `image/src/esp.rs` makes it.
const SYSTEMD_BOOT: Board = Board {
    loader: BootLoader::SystemdBoot,
    tag: "esp",
    marks: ["esp-update", "esp-mark-good", "esp-gc", "esp-rollback"],
    part_len: 40 << 20,
};

/// U-Boot: a FAT partition as `image/src/uboot.rs` makes it for `qemu-aarch64-uboot`
/// (the FAT size `mkfs.vfat` picks: FAT16 with 2 KiB clusters, as for the board's
/// 128 MiB partition).
const U_BOOT: Board = Board {
    loader: BootLoader::UBoot,
    tag: "uboot",
    marks: [
        "uboot-update",
        "uboot-mark-good",
        "uboot-gc",
        "uboot-rollback",
    ],
    part_len: 16 << 20,
};

/// A kernel set's files: a kernel both loaders' checks take (an EFI executable's `MZ`,
/// and `PE\0\0` where offset 0x3c points; an arm64 Image's magic at 56), 64 KiB, a
/// 32 KiB initramfs and, on the U-Boot board, an 8 KiB device tree; seeded
/// pseudo-random bytes, so no two sets share a cluster's content.
#[derive(Clone, PartialEq, Eq)]
struct SetFiles {
    kernel: Vec<u8>,
    initramfs: Vec<u8>,
    dtb: Option<Vec<u8>>,
}

fn set_files(tag: &str, dtb: bool) -> SetFiles {
    let mut rng = Rng::new(
        tag.bytes()
            .fold(SEED, |h, b| h.rotate_left(8) ^ u64::from(b)),
    );
    let mut bytes = |n: usize| -> Vec<u8> {
        (0..n / 8)
            .flat_map(|_| rng.next_u64().to_le_bytes())
            .collect()
    };
    let mut kernel = bytes(64 << 10);
    kernel[..2].copy_from_slice(b"MZ");
    kernel[0x3c..0x40].copy_from_slice(&64u32.to_le_bytes());
    kernel[56..60].copy_from_slice(b"ARM\x64");
    kernel[64..68].copy_from_slice(b"PE\0\0");
    let initramfs = bytes(32 << 10);
    let dtb = dtb.then(|| {
        let mut d = bytes(8 << 10);
        d[..4].copy_from_slice(&0xd00d_feed_u32.to_be_bytes());
        d
    });
    SetFiles {
        kernel,
        initramfs,
        dtb,
    }
}

/// The loader board's root filesystem: small (the sysroot's own writes are the other
/// test's), with its kernel set `set` in `usr/lib/modules/<KVER>/`.
fn loader_tree(dir: &Path, version: &str, keys: &Path, set: &SetFiles) -> PathBuf {
    let t = dir.join(format!("tree-{version}"));
    for d in ["etc", "var", "run", "dev", "proc", "sys", "sysroot", "sbin"] {
        fs::create_dir_all(t.join(d)).unwrap();
    }
    fs::create_dir_all(t.join("usr/lib/berth/keys")).unwrap();
    fs::write(t.join("etc/release"), version).unwrap();
    fs::write(t.join("sbin/init"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(t.join("sbin/init"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::copy(
        keys.join("berth.pub"),
        t.join("usr/lib/berth/keys/berth.pub"),
    )
    .unwrap();
    let modules = t.join("usr/lib/modules").join(KVER);
    fs::create_dir_all(&modules).unwrap();
    fs::write(modules.join("vmlinuz"), &set.kernel).unwrap();
    fs::write(modules.join("initramfs.img"), &set.initramfs).unwrap();
    if let Some(dtb) = &set.dtb {
        let at = modules.join("dtb").join(DEVICE_TREE);
        fs::create_dir_all(at.parent().unwrap()).unwrap();
        fs::write(at, dtb).unwrap();
    }
    t
}

/// berth-init's boot report: `name` booted for `reason`.
fn boot_report(dir: &Path, file: &str, name: &str, reason: &str) -> PathBuf {
    let p = dir.join(file);
    fs::write(
        &p,
        format!(
            r#"{{"choice":{{"kind":"deployment","deployment":"{name}"}},"reason":"{reason}"}}"#
        ),
    )
    .unwrap();
    p
}

/// What the loader board's device looks like on its boot partition: every file under
/// it, with its content.
type PartState = BTreeMap<Vec<u8>, Vec<u8>>;

fn part_state(dir: &Path) -> PartState {
    testkit::scan(dir)
        .into_iter()
        .map(|(p, e)| (p, e.content))
        .collect()
}

/// `files` with U-Boot's two state copies replaced by what the winner says, without its
/// generation (`berth/state`): a retry may take two more generations to end in the same
/// state (it ends the trial it finds, then starts it again), as `updater/tests/crash.rs`
/// allows too. Unchanged on systemd-boot's ESP.
fn without_generation(mut files: PartState) -> PartState {
    let copies = [StateCopy::A, StateCopy::B].map(|c| {
        files
            .remove(c.path().as_bytes())
            .and_then(|b| LoaderState::decode(&b).ok())
    });
    if let Some((_, s)) = format::loader::winner(copies[0].as_ref(), copies[1].as_ref()) {
        files.insert(
            b"berth/state".to_vec(),
            format!("{:?} {:?} {:?}", s.default, s.previous, s.trial).into_bytes(),
        );
    }
    files
}

/// Copies the boot partition's files out of the FAT image `part` into `to` (created),
/// with mtools: the host's kernel may have no vfat, and mtools reads the FAT as another
/// program than Linux, as the firmware and U-Boot do. systemd-boot's ESP: what berth
/// writes (`loader/entries/*`, `berth/*/*`); U-Boot's: everything, two directory levels
/// down (`boot.scr`, `berth/{a,b}/state`, `<entry>/*`). One level at a time (a directory
/// entry whose start cluster is 0 reads as the root directory, in mtools as in U-Boot).
/// Not the names `fsck.vfat -a` gives the entries it renames (`FSCK0000.REC`), when the
/// check ran it ([`LoaderLab::read_part`]): they are its own, not berth's, and no loader
/// reads them. Returns the files it could not read.
fn part_files(board: Board, part: &Path, to: &Path) -> Vec<String> {
    let mtools = |tool: &str, args: &[&str]| {
        Command::new(tool)
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(part)
            .args(args)
            .output()
            .unwrap()
    };
    let (mut dirs, depth) = match board.loader {
        BootLoader::SystemdBoot => (
            vec![(bls::ENTRIES_DIR.to_owned(), 1), ("berth".to_owned(), 0)],
            1,
        ),
        BootLoader::UBoot => (vec![(String::new(), 0)], 2),
    };
    let mut unreadable = Vec::new();
    while let Some((d, level)) = dirs.pop() {
        fs::create_dir_all(to.join(&d)).unwrap();
        let at = if d.is_empty() {
            "::/".to_owned()
        } else {
            format!("::/{d}/")
        };
        let list = mtools("mdir", &["-b", &at]);
        if !list.status.success() {
            unreadable.push(format!("{d}/"));
            continue;
        }
        for p in String::from_utf8_lossy(&list.stdout).lines() {
            let Some(p) = p.strip_prefix("::/") else {
                continue;
            };
            if let Some(sub) = p.strip_suffix('/') {
                if level < depth {
                    dirs.push((sub.to_owned(), level + 1));
                }
                continue;
            }
            let name = p.rsplit('/').next().unwrap_or(p);
            if name.len() == 12
                && name.starts_with("FSCK")
                && &name[8..] == ".REC"
                && name[4..8].bytes().all(|b| b.is_ascii_digit())
            {
                continue;
            }
            let dest = to.join(p);
            if !mtools("mcopy", &["-n", &format!("::/{p}"), dest.to_str().unwrap()])
                .status
                .success()
            {
                let _ = fs::remove_file(&dest);
                unreadable.push(p.to_owned());
            }
        }
    }
    unreadable
}

/// One step of the loader board's run.
struct LoaderStep {
    mark: &'static str,
    args: Vec<String>,
    booted: PathBuf,
    may_boot: Vec<String>,
    want: (Outcome, PartState),
}

/// A loader board's device, built on the host: a sysroot with `berth/boot/loader.conf`
/// naming the board's loader, and its boot partition, laid out as `berth-image disk`
/// lays it out (`image/src/esp.rs`, `image/src/uboot.rs`).
struct LoaderLab {
    board: Board,
    dir: PathBuf,
    sysroot: PathBuf,
    /// The boot partition's FAT image.
    part: PathBuf,
    update: PathBuf,
    /// The deployments of 0.9, 1.0 and 2.0.
    names: [String; 3],
    /// berth-init's reports: 1.0 booted as the default, 2.0 as the loader's trial, 2.0
    /// as the default.
    boots: [PathBuf; 3],
    /// Each deployment's kernel set (`<id16>`), and each set's files.
    sets: BTreeMap<String, String>,
    set_files: BTreeMap<String, SetFiles>,
    files: BTreeMap<String, Scan>,
    want: BTreeMap<&'static str, (Outcome, PartState)>,
    /// U-Boot: every state copy the uninterrupted run had on the partition.
    written: HashSet<Vec<u8>>,
    /// Per step, what the checks met that is not a violation, and how often.
    notes: std::cell::RefCell<BTreeMap<&'static str, BTreeMap<&'static str, u64>>>,
}

/// `berth --boot-dir part …` on `sysroot`.
fn berth_part(
    sysroot: &Path,
    part: &Path,
    boot_json: &Path,
    args: &[&str],
) -> std::process::Output {
    let mut all = vec!["--boot-dir", part.to_str().unwrap()];
    all.extend_from_slice(args);
    berth(sysroot, boot_json, &all)
}

/// What a loader starts: the kernel's command line, the kernel set (`<id16>`) whose
/// files it loaded, and what the model met on the way that is not a violation.
struct Choice {
    cmdline: String,
    set: String,
    notes: Vec<&'static str>,
}

/// The set among `sets` whose files are `kernel`, `initramfs` and `dtb`, byte for byte.
fn set_of(
    sets: &BTreeMap<String, SetFiles>,
    kernel: &[u8],
    initramfs: &[u8],
    dtb: Option<&[u8]>,
) -> Option<String> {
    sets.iter()
        .find(|(_, f)| f.kernel == kernel && f.initramfs == initramfs && f.dtb.as_deref() == dtb)
        .map(|(s, _)| s.clone())
}

/// What systemd-boot starts from the ESP's files at `esp`, by its rules for these
/// entries (`format::bls`, systemd-boot 252 and later: entries with a sort key, newest
/// version first, those with no tries left moved to the end; `loader/loader.conf` names
/// no default and nothing sets a one-shot entry; an entry with no `linux` line is
/// dropped): the first entry, whose `linux` and `initrd` files must be a kernel set's,
/// byte for byte. Returns the entry's `options` and the set, or why it boots nothing.
fn systemd_boot_choice(esp: &Path, sets: &BTreeMap<String, SetFiles>) -> Result<Choice, String> {
    let dir = esp.join(bls::ENTRIES_DIR);
    let names: Vec<String> = fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", bls::ENTRIES_DIR))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", bls::ENTRIES_DIR))?;
    let order = bls::parse_dir(names.iter().map(String::as_str));
    // systemd-boot drops an entry with no `linux` line (an empty file: a rename cut
    // short) and boots the first of the others with tries left.
    let mut first = None;
    for e in order.iter().filter(|e| e.tries_left() != Some(0)) {
        let file = e.file_name();
        let text = fs::read(dir.join(&file)).map_err(|e| format!("{file}: {e}"))?;
        let text = String::from_utf8_lossy(&text).into_owned();
        if text.lines().any(|l| l.starts_with("linux ")) {
            first = Some((file, text));
            break;
        }
    }
    let (file, text) = first.ok_or_else(|| format!("no entry to boot among {names:?}"))?;
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key).map(str::trim))
            .ok_or_else(|| format!("{file} has no {key}line: {text:?}"))
    };
    let (linux, initrd, options) = (field("linux ")?, field("initrd ")?, field("options ")?);
    let set = bls::set_dir_of(&text)
        .and_then(|d| d.strip_prefix("berth/"))
        .ok_or_else(|| format!("{file} names no kernel set: {text:?}"))?;
    let want = sets
        .get(set)
        .ok_or_else(|| format!("{file} boots kernel set {set}, which no deployment carries"))?;
    for (path, want) in [(linux, &want.kernel), (initrd, &want.initramfs)] {
        let on_esp = fs::read(esp.join(path.trim_start_matches('/')));
        if on_esp.as_ref().ok() != Some(want) {
            return Err(format!(
                "{file}: {path} is not kernel set {set}'s ({})",
                on_esp.map_or_else(|e| e.to_string(), |b| format!("{} bytes differ", b.len()))
            ));
        }
    }
    Ok(Choice {
        cmdline: options.to_owned(),
        set: set.to_owned(),
        notes: Vec::new(),
    })
}

/// The variables `boot.scr` imports from a state copy (`env import -c … ${berth_vars}`).
#[derive(Debug, Default, PartialEq, Eq)]
struct ScriptVars {
    default: String,
    generation: String,
    previous: String,
    trial: String,
    tries: String,
}

/// A state copy as `boot.scr` step 1 reads it (`image/uboot/boot.cmd`): `load` then
/// `itest ${filesize} -eq 0x1000`, `env import -c` (the CRC-32 of bytes 4..4096 in the
/// first four, little-endian; then `key=value` strings up to an empty one, of which it
/// takes only its six keys), then `berth_version` 1, `berth_gen` and `berth_default`
/// not empty. `None`: the script ignores the copy.
fn script_import(bytes: &[u8]) -> Option<ScriptVars> {
    if bytes.len() != format::loader::STATE_LEN {
        return None;
    }
    let (crc, body) = bytes.split_at(4);
    if format::uboot_env::crc32(body).to_le_bytes() != crc {
        return None;
    }
    let mut v = ScriptVars::default();
    let mut version = "";
    let text = std::str::from_utf8(body).ok()?;
    for var in text.split('\0').take_while(|s| !s.is_empty()) {
        let (key, value) = var.split_once('=')?;
        let slot = match key {
            "berth_default" => &mut v.default,
            "berth_gen" => &mut v.generation,
            "berth_previous" => &mut v.previous,
            "berth_trial" => &mut v.trial,
            "berth_tries" => &mut v.tries,
            "berth_version" => {
                version = value;
                continue;
            }
            _ => continue,
        };
        value.clone_into(slot);
    }
    (version == "1" && !v.generation.is_empty() && !v.default.is_empty()).then_some(v)
}

/// A number as U-Boot's `itest` reads it: hexadecimal (`simple_strtoul` base 16: the
/// leading hex digits, 0 without any).
fn itest_number(s: &str) -> u64 {
    let digits = s.trim_start_matches("0x");
    let end = digits
        .find(|c: char| !c.is_ascii_hexdigit())
        .unwrap_or(digits.len());
    u64::from_str_radix(&digits[..end], 16).unwrap_or(0)
}

/// What `boot.scr` (`image/uboot/boot.cmd`) starts from the boot partition's files at
/// `part`, by its rules: each state copy read as [`script_import`] does; the newer valid
/// one wins (A on a tie); a trial with tries left is booted first only if the other copy
/// is a 4096-byte file (so its try can be written there); then, for the trial, the
/// default and the previous entry in turn, the first whose `vmlinuz` and
/// `initramfs.img` load (and `cmdline` and `dtb`, if there), and whose kernel `booti`
/// takes (`ARM\x64` at offset 56; it refuses another and the script goes on). That
/// entry's kernel, initramfs and device tree must be a kernel set's, byte for byte; its
/// command line is `cmdline` (at most 0xfff bytes, up to a NUL) and `berth.entry=`.
///
/// A copy the script takes must also be one the uninterrupted run wrote (`written`), and
/// read by berth (`format::loader`) as the script reads it: a copy torn by a power cut
/// must fail its CRC, so that the loader falls back to the other copy.
fn uboot_choice(
    part: &Path,
    sets: &BTreeMap<String, SetFiles>,
    written: &HashSet<Vec<u8>>,
) -> Result<Choice, String> {
    let mut notes = Vec::new();
    let mut copies = Vec::new();
    for copy in [StateCopy::A, StateCopy::B] {
        let bytes = fs::read(part.join(copy.path())).ok();
        let vars = bytes.as_deref().and_then(script_import);
        if let (Some(v), Some(bytes)) = (&vars, &bytes) {
            if !written.contains(bytes) {
                return Err(format!(
                    "boot.scr takes {}, which holds a state no uninterrupted run wrote: {v:?}",
                    copy.path()
                ));
            }
            let berth_reads = LoaderState::decode(bytes).ok().map(|s| ScriptVars {
                default: s.default.as_str().to_owned(),
                generation: format!("{:x}", s.generation),
                previous: s
                    .previous
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default(),
                trial: s
                    .trial
                    .map(|t| t.entry.as_str().to_owned())
                    .unwrap_or_default(),
                tries: s
                    .trial
                    .map(|t| format!("{:x}", t.tries_left))
                    .unwrap_or_default(),
            });
            if berth_reads.as_ref() != Some(v) {
                return Err(format!(
                    "{}: boot.scr reads {v:?}, berth {berth_reads:?}",
                    copy.path()
                ));
            }
        } else if bytes
            .as_ref()
            .is_some_and(|b| b.len() == format::loader::STATE_LEN)
        {
            notes.push("states with a torn state copy, which boot.scr ignores");
        } else {
            notes.push("states with a state copy boot.scr cannot load");
        }
        copies.push((copy, vars, bytes.map(|b| b.len())));
    }
    let generation = |c: usize| copies[c].1.as_ref().map(|v| itest_number(&v.generation));
    let won = match (generation(0), generation(1)) {
        (Some(a), Some(b)) if b > a => 1,
        (Some(_), _) => 0,
        (None, Some(_)) => 1,
        (None, None) => return Err("no valid state copy; boot.scr boots nothing".into()),
    };
    let state = copies[won].1.as_ref().unwrap(); // the winner is a valid copy
    // The try is written to the other copy first, only over a 4096-byte file.
    let other_whole = copies[1 - won].2 == Some(format::loader::STATE_LEN);
    let trial = (!state.trial.is_empty() && itest_number(&state.tries) > 0 && other_whole)
        .then_some(state.trial.as_str());
    for entry in [trial, Some(&state.default), Some(&state.previous)]
        .into_iter()
        .flatten()
        .filter(|e| !e.is_empty())
    {
        let dir = part.join(entry);
        let (Ok(kernel), Ok(initramfs)) = (
            fs::read(dir.join("vmlinuz")),
            fs::read(dir.join("initramfs.img")),
        ) else {
            notes.push("states where boot.scr cannot load an entry it tries");
            continue;
        };
        let cmdline = fs::read(dir.join("cmdline")).ok();
        let dtb = fs::read(dir.join("dtb")).ok();
        if kernel.len() < 64 {
            // booti's magic would come from whatever an earlier load left in memory.
            return Err(format!(
                "{entry}/vmlinuz is {} bytes: booti reads its header from memory",
                kernel.len()
            ));
        }
        if kernel.get(56..60) != Some(b"ARM\x64") {
            notes.push("states where booti refuses an entry's kernel");
            continue;
        }
        let set = set_of(sets, &kernel, &initramfs, dtb.as_deref()).ok_or_else(|| {
            format!("boot.scr starts entry {entry}, whose files are no kernel set's")
        })?;
        // Optional to the script, but every entry berth or the image builder writes has
        // one: without it the kernel would start with no `berth.root=`.
        let args = cmdline
            .ok_or_else(|| format!("boot.scr starts entry {entry}, which has no cmdline"))?;
        let args = &args[..args.len().min(0xfff)];
        let args = args.split(|&b| b == 0).next().unwrap_or_default();
        return Ok(Choice {
            cmdline: format!("{} berth.entry={entry}", String::from_utf8_lossy(args)),
            set,
            notes,
        });
    }
    Err(format!("no entry of {state:?} can be booted"))
}

/// What `fsck.vfat -n` finds on the FAT image `part`: (the kinds of findings that do not
/// keep the loader from booting and that `fsck.vfat -a` repairs, the other findings).
/// FAT has no journal: a cut between the writes of one change leaves the two FAT copies
/// different, clusters allocated that no file holds yet, a long name's fragments, a
/// file whose clusters are not linked yet, or an entry with no clusters yet; the loader
/// and berth only meet those in files the checks below read. Two names for one cluster
/// chain, or anything unknown, are findings of the second kind.
///
/// Linux marks a FAT volume dirty while it is mounted (bit 0 of byte 65 of a FAT32 boot
/// sector, not of its backup; of byte 37 on FAT16), so every state has that mark: it is
/// cleared in `part` first. The free-cluster count in FSINFO, a hint that Linux updates
/// lazily, is not a finding.
fn fsck_vfat(part: &Path) -> (Vec<&'static str>, Vec<String>) {
    const REPAIRED: [(&str, &str); 6] = [
        ("FATs differ", "FAT copies differ"),
        ("Reclaimed ", "lost clusters"),
        ("Long filename fragment", "orphaned long-name fragments"),
        (
            "Contains a free cluster",
            "a file or directory whose last clusters are not linked yet",
        ),
        (
            "Start does point to root directory",
            "a directory with no cluster yet",
        ),
        (
            "Orphaned long file name part",
            "orphaned long-name fragments",
        ),
    ];
    const CONTEXT: [&str; 11] = [
        "Auto-deleting",
        "Using first FAT",
        "(Maybe the start bit",
        "Not auto-correcting",
        "File size is",
        "Truncating file",
        "Deleting dir",
        "Free cluster summary wrong",
        "Auto-correcting",
        "Leaving filesystem unchanged",
        "Dirty bit",
    ];
    {
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(part)
            .unwrap();
        let mut boot = [0u8; 512];
        f.read_exact_at(&mut boot, 0).unwrap();
        // FAT32 has no 16-bit FAT size (bytes 22..24), and a backup boot sector.
        if boot[22..24] == [0, 0] {
            let backup = u64::from(u16::from_le_bytes([boot[50], boot[51]])) * 512;
            let mut flag = [0u8; 1];
            f.read_exact_at(&mut flag, backup + 65).unwrap();
            f.write_all_at(&flag, 65).unwrap();
        } else {
            f.write_all_at(&[boot[37] & !1], 37).unwrap();
        }
    }
    let out = Command::new("fsck.vfat")
        .arg("-n")
        .arg(part)
        .output()
        .unwrap();
    let (mut repaired, mut other) = (Vec::new(), Vec::new());
    let text = String::from_utf8_lossy(&out.stdout);
    let mut before = "";
    for l in text.lines().skip(1).map(str::trim) {
        if let Some((_, kind)) = REPAIRED.iter().find(|(p, _)| l.starts_with(p)) {
            if !repaired.contains(kind) {
                repaired.push(*kind);
            }
        } else if !(l.is_empty()
            || l.starts_with('/')
            || l.contains(" files, ")
            || CONTEXT.iter().any(|c| l.starts_with(c)))
        {
            other.push(format!("{before} {l}"));
        }
        if !l.is_empty() {
            before = l;
        }
    }
    if out.status.success() {
        assert!(other.is_empty(), "fsck.vfat passed, saying {other:?}");
    }
    (repaired, other)
}

impl LoaderLab {
    /// Counts `n` more of `what` in `step`'s notes.
    fn note(&self, step: &LoaderStep, what: &'static str, n: u64) {
        if n == 0 {
            return;
        }
        *self
            .notes
            .borrow_mut()
            .entry(step.mark)
            .or_default()
            .entry(what)
            .or_default() += n;
    }

    /// The uninterrupted run on the host, on a copy of the boot partition's files.
    fn reference(&mut self) {
        let [n0, n1, n2] = &self.names;
        let [boot1, trial2, boot2] = &self.boots;
        let [update, mark_good, gc, rollback] = self.board.marks;
        let reference = self.dir.join("reference");
        run(Command::new("cp")
            .arg("-a")
            .arg(&self.sysroot)
            .arg(&reference));
        let part = self.dir.join("reference-part");
        assert_eq!(
            part_files(self.board, &self.part, &part),
            Vec::<String>::new()
        );
        for n in [n0, n1] {
            self.files
                .insert(n.clone(), scan(&reference.join("berth/deploy").join(n)));
        }
        let copies = |written: &mut HashSet<Vec<u8>>| {
            for copy in [StateCopy::A, StateCopy::B] {
                written.extend(fs::read(part.join(copy.path())));
            }
        };
        copies(&mut self.written);
        let mut step = |mark, booted: &Path, args: &[&str]| {
            let o = berth_part(&reference, &part, booted, args);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let end = (outcome(&reference, booted).unwrap(), part_state(&part));
            self.want.insert(mark, end.clone());
            copies(&mut self.written);
            end
        };
        let (after, _) = step(update, boot1, &["update", self.update.to_str().unwrap()]);
        assert_eq!(after.trial.as_ref(), Some(n2));
        self.files
            .insert(n2.clone(), scan(&reference.join("berth/deploy").join(n2)));
        let (after, before_gc) = step(mark_good, trial2, &["mark-good"]);
        assert_eq!(after.default.as_ref(), Some(n2));
        let (after, after_gc) = step(gc, boot2, &["gc"]);
        assert!(!after.deployments.contains(n0), "{after:?}");
        // gc removes something real from the boot partition: 0.9's kernel set on the
        // ESP (U-Boot's entry directory holds the set, and goes with 0.9's name from
        // the record, at mark-good).
        let set0 = format!("berth/{}/", self.sets[n0]);
        let of_0_9 = |s: &PartState| {
            s.keys()
                .filter(|p| p.starts_with(set0.as_bytes()) || p.starts_with(n0.as_bytes()))
                .count()
        };
        match self.board.loader {
            BootLoader::SystemdBoot => assert!(of_0_9(&before_gc) > 0 && of_0_9(&after_gc) == 0),
            BootLoader::UBoot => assert_eq!(of_0_9(&before_gc), 0),
        }
        let (after, _) = step(rollback, boot2, &["rollback", "--from", n2]);
        assert_eq!(after.default.as_ref(), Some(n1));
    }

    fn steps(&self) -> Vec<LoaderStep> {
        let [_, n1, n2] = &self.names;
        let [boot1, trial2, boot2] = &self.boots;
        let [update, mark_good, gc, rollback] = self.board.marks;
        let step = |mark, args: &[&str], booted: &PathBuf, may_boot: &[&String]| LoaderStep {
            mark,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            booted: booted.clone(),
            may_boot: may_boot.iter().map(|n| (*n).clone()).collect(),
            want: self.want[mark].clone(),
        };
        vec![
            step(
                update,
                &["update", self.update.to_str().unwrap()],
                boot1,
                &[n1, n2],
            ),
            step(mark_good, &["mark-good"], trial2, &[n2]),
            step(gc, &["gc"], boot2, &[n2]),
            step(rollback, &["rollback", "--from", n2], boot2, &[n1, n2]),
        ]
    }

    /// The guest's script: dm-log-writes over the whole disk, the sysroot and the boot
    /// partition as linear devices over it (so the log has both in the order they
    /// reached the disk, and a flush covers both, as on one real disk), then each step
    /// between two marks.
    fn guest_script(&self) -> String {
        let (at, len) = (PART_AT / 512, self.board.part_len / 512);
        let [update, mark_good, gc, rollback] = self.board.marks;
        format!(
            r#"sectors=$(cat /sys/block/vda/size)
dmsetup create --noudevsync lw --table "0 $sectors log-writes /dev/vda /dev/vdb" || echo "POWERCUT dmsetup failed"
dmsetup create --noudevsync root --table "0 {at} linear /dev/dm-0 0"
dmsetup create --noudevsync part --table "0 {len} linear /dev/dm-0 {at}"
dmsetup message lw 0 mark start
mount -t ext4 -o noauto_da_alloc /dev/dm-1 /mnt || echo "POWERCUT mount failed"
mkdir -p /part
mount -t vfat /dev/dm-2 /part || echo "POWERCUT mount failed"
b="berth --sysroot /mnt --boot-dir /part"
dmsetup message lw 0 mark {update}
$b --boot-json /boot-1.json update /update.berth
echo "POWERCUT update $?"
dmsetup message lw 0 mark {mark_good}
$b --boot-json /trial-2.json mark-good
echo "POWERCUT mark-good $?"
dmsetup message lw 0 mark {gc}
$b --boot-json /boot-2.json gc
echo "POWERCUT gc $?"
dmsetup message lw 0 mark {rollback}
$b --boot-json /boot-2.json rollback --from {}
echo "POWERCUT rollback $?"
dmsetup message lw 0 mark done
umount /part
umount /mnt
dmsetup remove part
dmsetup remove root
dmsetup remove lw
echo "POWERCUT finished"
"#,
            self.names[2]
        )
    }

    /// Runs the guest on the disk (the sysroot's ext4, then the boot partition); returns
    /// its final image, the log and the guest's wall time.
    fn guest(&self) -> (PathBuf, PathBuf, std::time::Duration) {
        let dir = self.dir.as_path();
        let base = dir.join("base.img");
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-b", "4096", "-d"])
            .arg(&self.sysroot)
            .arg(&base)
            .arg(format!("{}M", PART_AT >> 20)));
        {
            let f = fs::OpenOptions::new().write(true).open(&base).unwrap();
            f.set_len(PART_AT + self.board.part_len).unwrap();
            f.write_all_at(&fs::read(&self.part).unwrap(), PART_AT)
                .unwrap();
        }
        let work = dir.join("work.img");
        fs::copy(&base, &work).unwrap();
        let log_img = dir.join("log.img");
        File::create(&log_img).unwrap().set_len(256 << 20).unwrap();
        let read = |p: &Path| fs::read(p).unwrap();
        let i = Initramfs::new(
            dir,
            &[
                "crc32c_generic",
                "virtio_pci",
                "virtio_blk",
                "ext4",
                "dm-log-writes",
                "vfat",
                "nls_cp437",
                "nls_ascii",
            ],
        );
        i.host_program("/usr/sbin/dmsetup")
            .berth()
            .file("update.berth", &read(&self.update))
            .file("boot-1.json", &read(&self.boots[0]))
            .file("trial-2.json", &read(&self.boots[1]))
            .file("boot-2.json", &read(&self.boots[2]));
        let cpio = i.pack(&self.guest_script());
        let g = guest::boot_x86_64(
            &cpio,
            512,
            &[
                Drive {
                    image: &work,
                    readonly: false,
                },
                Drive {
                    image: &log_img,
                    readonly: false,
                },
            ],
            std::time::Duration::from_mins(5),
        );
        for line in [
            "POWERCUT update 0",
            "POWERCUT mark-good 0",
            "POWERCUT gc 0",
            "POWERCUT rollback 0",
            "POWERCUT finished",
        ] {
            assert!(
                g.serial.contains(line),
                "no {line:?} on the console:\n{}",
                g.serial
            );
        }
        (work, log_img, g.wall)
    }

    /// What the loader starts from the boot partition's files at `part` and what
    /// berth-init boots under it on the sysroot at `mnt`: violations.
    fn check_boot(&self, part: &Path, mnt: &Path, step: &LoaderStep) -> Vec<String> {
        let mut bad = Vec::new();
        let (loader, choice) = match self.board.loader {
            BootLoader::SystemdBoot => ("systemd-boot", systemd_boot_choice(part, &self.set_files)),
            BootLoader::UBoot => (
                "boot.scr",
                uboot_choice(part, &self.set_files, &self.written),
            ),
        };
        match choice {
            Err(e) => bad.push(format!("{loader}: {e}")),
            Ok(Choice {
                cmdline,
                set,
                notes,
            }) => {
                let mut seen = Vec::new();
                for n in notes {
                    if !seen.contains(&n) {
                        seen.push(n);
                        self.note(step, n, 1);
                    }
                }
                let out = Command::new(device("berth-init"))
                    .args(["--dry-run", "--sysroot"])
                    .arg(mnt)
                    .args(["--cmdline", &cmdline])
                    .output()
                    .unwrap();
                let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
                match v["choice"]["deployment"].as_str() {
                    None => bad.push(format!(
                        "berth-init boots no deployment under {cmdline:?}: {v} {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    )),
                    Some(booted) => {
                        if !step.may_boot.iter().any(|m| m == booted) {
                            bad.push(format!(
                                "{loader} starts set {set} and berth-init boots {booted}"
                            ));
                        }
                        if self.sets.get(booted) != Some(&set) {
                            bad.push(format!(
                                "{booted} would run under kernel set {set}, not its own"
                            ));
                        }
                    }
                }
            }
        }
        bad
    }

    /// The boot partition of the state `img`: `fsck.vfat -n` on its FAT as the cut left
    /// it (its harmless findings counted in the notes), then its files copied out with
    /// mtools. Returns where, and the violations.
    fn read_part(&self, img: &Path, step: &LoaderStep) -> (PathBuf, Vec<String>) {
        let mut bad = Vec::new();
        let files = &img.with_file_name("part");
        // The FAT as the cut left it, before anything mounts it.
        let part = img.with_file_name("part.img");
        {
            let mut buf = vec![0u8; usize::try_from(self.board.part_len).unwrap()];
            File::open(img)
                .unwrap()
                .read_exact_at(&mut buf, PART_AT)
                .unwrap();
            fs::write(&part, buf).unwrap();
        }
        let (repaired, other) = fsck_vfat(&part);
        if !other.is_empty() {
            bad.push(format!("fsck.vfat -n: {}", other.join(" / ")));
        }
        self.note(
            step,
            "states fsck.vfat -a would repair",
            u64::from(!repaired.is_empty()),
        );
        for kind in repaired {
            self.note(step, kind, 1);
        }
        if files.exists() {
            fs::remove_dir_all(files).unwrap();
        }
        let mut unreadable = part_files(self.board, &part, files);
        if unreadable.iter().any(|u| u.ends_with('/')) {
            // A directory mtools cannot list: a cluster the directory grew by, linked
            // before Linux's zeroes reached it. The firmware reads the entries before
            // it; mtools gives up on the whole directory. Read it as `fsck.vfat -a`
            // leaves it (the loader's files are still checked byte for byte).
            // Exit 1: it repaired something.
            let _ = Command::new("fsck.vfat")
                .arg("-a")
                .arg(&part)
                .output()
                .unwrap();
            fs::remove_dir_all(files).unwrap();
            unreadable = part_files(self.board, &part, files);
            self.note(step, "states read after fsck.vfat -a", 1);
        }
        if !unreadable.is_empty() {
            self.note(step, "states with a file mtools cannot read", 1);
        }
        (files.clone(), bad)
    }

    /// Checks one state (`img`, a copy the check may change): the boot partition's FAT,
    /// what the loader starts and what berth-init boots under it, the sysroot, and a
    /// retry.
    fn check_state(&self, img: &Path, mnt: &Path, step: &LoaderStep) -> Vec<String> {
        let mut bad = Vec::new();
        let (part, violations) = self.read_part(img, step);
        bad.extend(violations);
        let part = &part;
        run(Command::new("mount")
            .args(["-t", "ext4", "-o", "loop,noauto_da_alloc"])
            .arg(img)
            .arg(mnt));
        bad.extend(self.check_boot(part, mnt, step));
        let fsck = berth(mnt, &step.booted, &["fsck"]);
        if !fsck.status.success() {
            bad.push(format!(
                "berth fsck: {}",
                String::from_utf8_lossy(&fsck.stderr).trim()
            ));
        }
        match outcome(mnt, &step.booted) {
            Ok(now) => {
                for name in [&now.default, &now.trial, &now.previous]
                    .into_iter()
                    .flatten()
                {
                    let dir = mnt.join("berth/deploy").join(name);
                    if !dir.is_dir() {
                        bad.push(format!("deployment {name} is missing"));
                    } else if self.files.get(name).is_some_and(|f| *f != scan(&dir)) {
                        bad.push(format!("deployment {name} is not complete"));
                    }
                }
            }
            Err(e) => bad.push(e),
        }
        let args: Vec<&str> = step.args.iter().map(String::as_str).collect();
        let retry = berth_part(mnt, part, &step.booted, &args);
        if retry.status.success() {
            let end = (outcome(mnt, &step.booted), part_state(part));
            let (got, want) = (
                without_generation(end.1),
                without_generation(step.want.1.clone()),
            );
            if end.0.as_ref().ok() != Some(&step.want.0) || got != want {
                let (got, want) = (&got, &want);
                let differ: Vec<String> = got
                    .keys()
                    .chain(want.keys())
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .filter(|k| got.get(*k) != want.get(*k))
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .collect();
                bad.push(format!(
                    "the retry ended at {:?}, not {:?}; the files that differ: {differ:?}",
                    end.0, step.want.0,
                ));
            }
        } else {
            bad.push(format!(
                "the retry failed: {}",
                String::from_utf8_lossy(&retry.stderr).trim()
            ));
        }
        umount(mnt);
        bad.extend(e2fsck_problems(img));
        bad
    }

    /// U-Boot: the sectors of the two state copies on the disk (`base.img`), which berth
    /// overwrites in place; found by their content, as the partition was built (each
    /// copy contiguous: `mcopy` on a fresh FAT). Nothing on systemd-boot's ESP, where
    /// every write is a new file.
    fn copy_sectors(&self) -> Vec<std::ops::Range<u64>> {
        if self.board.loader != BootLoader::UBoot {
            return Vec::new();
        }
        let disk = fs::read(self.dir.join("base.img")).unwrap();
        let staged = self.dir.join("reference-start");
        assert_eq!(
            part_files(self.board, &self.part, &staged),
            Vec::<String>::new()
        );
        [StateCopy::A, StateCopy::B]
            .iter()
            .map(|c| {
                let bytes = fs::read(staged.join(c.path())).unwrap();
                let at = disk
                    .windows(bytes.len())
                    .position(|w| w == bytes.as_slice())
                    .unwrap_or_else(|| panic!("{} is not contiguous on the disk", c.path()));
                let at = u64::try_from(at).unwrap();
                assert_eq!(at % 512, 0, "{} is not sector-aligned", c.path());
                at / 512..(at + bytes.len() as u64) / 512
            })
            .collect()
    }

    /// Replays the log and checks every state, as [`Lab::replay`].
    fn replay(&self, work: &Path, log_img: &Path, guest_time: std::time::Duration) {
        let steps = self.steps();
        let marks: Vec<&str> = steps.iter().map(|s| s.mark).collect();
        let mnt = self.dir.join("mnt");
        fs::create_dir(&mnt).unwrap();
        let (tallies, entries, check_time) = replay(
            &self.dir,
            work,
            log_img,
            &marks,
            LOADER_SAMPLING,
            &self.copy_sectors(),
            &mut |k, state| self.check_state(state, &mnt, &steps[k]),
        );
        let all = report(
            &format!("powercut {}", self.board.tag),
            &marks,
            &tallies,
            entries,
            guest_time,
            check_time,
        );
        for (mark, notes) in self.notes.borrow().iter() {
            let notes: Vec<String> = notes.iter().map(|(k, n)| format!("{k} {n}")).collect();
            println!("powercut {mark} notes: {}", notes.join(", "));
        }
        assert!(
            all.is_empty(),
            "{} violations:\n{}",
            all.len(),
            all.join("\n")
        );
    }
}

/// One deployment a loader board starts with: its name, release and kernel set.
struct Installed<'a> {
    name: &'a str,
    release: &'a str,
    set: &'a str,
    files: &'a SetFiles,
}

/// The boot partition as `berth-image disk` lays it out for the default deployment
/// `ds[0]` and the previous one `ds[1]`: systemd-boot's FAT32 ESP (`image/src/esp.rs`:
/// `loader/loader.conf`, each kernel set once, an entry each, generations 2 and 1), or
/// U-Boot's (`image/src/uboot.rs`: `boot.scr`, both state copies naming the two, with
/// generations 1 and 2, an entry directory each).
fn make_part(dir: &Path, board: Board, conf: &BootConfig, ds: &[Installed<'_>; 2]) -> PathBuf {
    let mut dirs: Vec<String> = Vec::new();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let options = conf.kernel_cmdline("");
    let name = |n: &str| DeploymentName::new(n.as_bytes()).unwrap();
    match board.loader {
        BootLoader::SystemdBoot => {
            dirs.extend(["loader", bls::ENTRIES_DIR, "berth"].map(str::to_owned));
            files.push(("loader/loader.conf".to_owned(), b"timeout 0\n".to_vec()));
            for (d, generation) in ds.iter().zip([2, 1]) {
                let set_dir = format!("berth/{}", d.set);
                let entry = bls::EntryName {
                    generation,
                    deployment: name(d.name),
                    counter: None,
                };
                let text = bls::EntryText {
                    release: d.release,
                    deployment: d.name,
                    generation,
                    set_dir: &set_dir,
                    devicetree: None,
                    options: &options,
                }
                .render();
                files.push((
                    format!("{}/{}", bls::ENTRIES_DIR, entry.file_name()),
                    text.into_bytes(),
                ));
                files.push((format!("{set_dir}/vmlinuz"), d.files.kernel.clone()));
                files.push((
                    format!("{set_dir}/initramfs.img"),
                    d.files.initramfs.clone(),
                ));
                dirs.push(set_dir);
            }
        }
        BootLoader::UBoot => {
            let scr = dir.join("boot.scr");
            run(Command::new("mkimage")
                .args(["-A", "arm64", "-O", "linux", "-T", "script", "-C", "none"])
                .args(["-n", "berth boot script", "-d"])
                .arg(workspace().join("image/uboot/boot.cmd"))
                .arg(&scr));
            dirs.extend(["berth", "berth/a", "berth/b"].map(str::to_owned));
            dirs.extend(ds.iter().map(|d| d.name.to_owned()));
            files.push(("boot.scr".to_owned(), fs::read(&scr).unwrap()));
            for (copy, generation) in [(StateCopy::A, 1), (StateCopy::B, 2)] {
                let st = LoaderState {
                    generation,
                    default: name(ds[0].name),
                    previous: Some(name(ds[1].name)),
                    trial: None,
                };
                files.push((copy.path().to_owned(), st.encode().unwrap()));
            }
            for d in ds {
                let e = d.name;
                files.push((format!("{e}/vmlinuz"), d.files.kernel.clone()));
                files.push((format!("{e}/initramfs.img"), d.files.initramfs.clone()));
                files.push((format!("{e}/cmdline"), options.clone().into_bytes()));
                files.extend(d.files.dtb.clone().map(|b| (format!("{e}/dtb"), b)));
                files.push((format!("{e}/set"), d.set.as_bytes().to_vec()));
            }
        }
    }
    let part = dir.join("part.img");
    let mut mkfs = Command::new("mkfs.vfat");
    mkfs.arg("-C");
    if board.loader == BootLoader::SystemdBoot {
        mkfs.args(["-F", "32", "-n", "BERTH-ESP"]);
    } else {
        mkfs.args(["-n", "BERTH-BOOT"]);
    }
    run(mkfs.arg(&part).arg((board.part_len >> 10).to_string()));
    let img = part.to_str().unwrap();
    run(Command::new("mmd")
        .args(["-i", img])
        .args(dirs.iter().map(|d| format!("::/{d}"))));
    let staged = dir.join("part-files");
    fs::create_dir(&staged).unwrap();
    for (dest, bytes) in files {
        let f = staged.join(dest.replace('/', "_"));
        fs::write(&f, bytes).unwrap();
        run(Command::new("mcopy")
            .args(["-i", img, "-o"])
            .arg(&f)
            .arg(format!("::/{dest}")));
    }
    part
}

/// Which of the loader boards' tools is missing (ci/setup.sh installs dmsetup,
/// dosfstools, mtools and u-boot-tools), if any.
fn loader_tools_missing(board: Board) -> Option<String> {
    let mut tools = vec!["dmsetup", "fsck.vfat", "mkfs.vfat", "mmd", "mcopy", "mdir"];
    if board.loader == BootLoader::UBoot {
        tools.push("mkimage");
    }
    tools
        .into_iter()
        .find(|tool| Command::new(tool).arg("--version").output().is_err())
        .map(|tool| format!("{tool} is missing (ci/setup.sh installs it)"))
}

#[test]
fn power_cuts_on_the_esp_leave_a_device_systemd_boot_and_berth_init_boot() {
    loader_board(
        SYSTEMD_BOOT,
        "power_cuts_on_the_esp_leave_a_device_systemd_boot_and_berth_init_boot",
    );
}

#[test]
fn power_cuts_on_the_u_boot_partition_leave_a_device_boot_scr_and_berth_init_boot() {
    loader_board(
        U_BOOT,
        "power_cuts_on_the_u_boot_partition_leave_a_device_boot_scr_and_berth_init_boot",
    );
}

impl Board {
    /// The board's `berth/boot/loader.conf`.
    fn conf(self) -> BootConfig {
        let uboot = self.loader == BootLoader::UBoot;
        BootConfig {
            loader: self.loader,
            partuuid: "0123abcd-0000-4000-8000-00000000000a".into(),
            cmdline: if uboot {
                "console=ttyAMA0 panic=-1"
            } else {
                "console=ttyS0 panic=-1"
            }
            .into(),
            root: "PARTUUID=fedcba98-7654-3210-fedc-ba9876543210".into(),
            devicetree: uboot.then(|| DEVICE_TREE.to_owned()),
        }
    }
}

/// Commits version `v` of the loader board's root filesystem (trusting `keys`' public
/// key) to `repo`: its commit id, its kernel set's `<id16>` and the set's files.
fn loader_commit(
    board: Board,
    dir: &Path,
    repo: &Path,
    keys: &Path,
    v: &str,
) -> (String, String, SetFiles) {
    let files = set_files(v, board.loader == BootLoader::UBoot);
    let t = loader_tree(dir, v, keys, &files);
    let mut c = Command::new(bin("berth-image"));
    c.args(["commit", "--repo"])
        .arg(repo)
        .arg("--tree")
        .arg(&t)
        .args(["--version", v]);
    let id = run(&mut c).trim().to_owned();
    let show: Value = serde_json::from_str(&berth_image(
        &["show", "--repo", repo.to_str().unwrap(), &id, "--json"],
        &[],
    ))
    .unwrap();
    let set = show["kernel_set"]["id"].as_str().unwrap()[..16].to_owned();
    (id, set, files)
}

/// The loader board's run (`test`): 1.0 the default and 0.9 the previous deployment,
/// each with a kernel set of its own on the boot partition; update to 2.0 (another
/// set), mark-good, gc, rollback --from 2.0.
fn loader_board(board: Board, test: &str) {
    let t = TARGETS[0];
    if skip(t, test) {
        return;
    }
    if let Some(why) = loader_tools_missing(board) {
        testkit::missing(test, &why);
        return;
    }
    let scratch = tempfile::Builder::new()
        .prefix(&format!("berth-powercut-{}-", board.tag))
        .tempdir_in(workspace().join("target"))
        .unwrap();
    let dir = scratch.path();
    let keys = dir.join("keys");
    let repo = dir.join("repo");
    berth_image(&["keygen", "--out"], &[&keys]);
    let commit = |v: &str| loader_commit(board, dir, &repo, &keys, v);
    let (v0, set0, files0) = commit("0.9");
    let (v1, set1, files1) = commit("1.0");
    let (v2, set2, files2) = commit("2.0");
    let (n0, n1, n2) = (
        v0[..16].to_owned(),
        v1[..16].to_owned(),
        v2[..16].to_owned(),
    );
    let update = dir.join("update.berth");
    let mut c = Command::new(bin("berth-image"));
    c.args(["delta", "--repo"])
        .arg(&repo)
        .args(["--from", &v1, "--to", &v2, "--part-size", "60000", "--key"])
        .arg(keys.join("berth.key"))
        .arg("-o")
        .arg(&update);
    run(&mut c);
    let sysroot = dir.join("sysroot");
    let mut c = Command::new(bin("berth-image"));
    c.args(["install", "--repo"])
        .arg(&repo)
        .args(["--commit", &v1, "--previous", &v0, "--sysroot"])
        .arg(&sysroot);
    run(&mut c);
    let conf = board.conf();
    fs::write(sysroot.join("berth/boot/loader.conf"), conf.encode()).unwrap();
    let part = make_part(
        dir,
        board,
        &conf,
        &[
            Installed {
                name: &n1,
                release: "1.0",
                set: &set1,
                files: &files1,
            },
            Installed {
                name: &n0,
                release: "0.9",
                set: &set0,
                files: &files0,
            },
        ],
    );
    let boots = [
        boot_report(dir, "boot-1.json", &n1, "default"),
        boot_report(dir, "trial-2.json", &n2, "loader-trial"),
        boot_report(dir, "boot-2.json", &n2, "default"),
    ];
    let mut lab = LoaderLab {
        board,
        dir: dir.to_path_buf(),
        sysroot,
        part,
        update,
        names: [n0.clone(), n1.clone(), n2.clone()],
        boots,
        sets: BTreeMap::from([(n0, set0.clone()), (n1, set1.clone()), (n2, set2.clone())]),
        set_files: BTreeMap::from([(set0, files0), (set1, files1), (set2, files2)]),
        files: BTreeMap::new(),
        want: BTreeMap::new(),
        written: HashSet::new(),
        notes: std::cell::RefCell::default(),
    };
    lab.reference();
    let (work, log_img, guest_time) = lab.guest();
    lab.replay(&work, &log_img, guest_time);
}
