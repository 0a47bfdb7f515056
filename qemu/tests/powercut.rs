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
//! disk, and a flush covers both, as on one real disk); `berth --boot-dir` on the ESP
//! mounted with Linux's vfat runs `esp-update` (1.0 to 2.0, a new kernel set: the set,
//! the counted entry written inert, the record, the activation), `esp-mark-good` of that
//! trial and `esp-rollback --from` it. Each state's ESP is read on the host with mtools
//! (the host's kernel may have no vfat; mtools reads the FAT as another program than
//! Linux, like the firmware) and must pass: systemd-boot's choice by its rules boots an
//! entry whose kernel and initramfs are a kernel set's byte for byte; berth-init's dry
//! run under that entry's `options` boots an allowed deployment, under its own set;
//! `fsck.vfat -n` finds nothing but what FAT leaves after any cut and `fsck.vfat -a`
//! repairs (counted, printed as notes); `berth fsck`, the deployments, a retry that ends
//! with the uninterrupted run's record and ESP files, `e2fsck -fn`. Fewer reorderings
//! are sampled per epoch ([`ESP_SAMPLING`]): its checks cost more.
//!
//! `x86_64` only: the guest runs the host's `dmsetup` (with its shared libraries). Root
//! only (loop mounts). The states are written in /dev/shm when it exists. The two run
//! side by side: 2.5 minutes for the second alone, 5.7 for both, on 2 cores that other
//! builds shared; ci/test.sh runs them.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::os::unix::fs::{FileExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use format::bls;
use format::bootconf::{BootConfig, Loader as BootLoader};
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
/// The same two for the loader board's run, whose checks cost four times as much (the
/// FAT copied out, `fsck.vfat`, mtools): about 600 states in two minutes.
const ESP_SAMPLING: Sampling = Sampling {
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

/// Whether a state is a prefix of the log or one of an epoch's reorderings.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Prefix,
    Reordered,
}

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
/// epoch. Returns the tally per step, the log's entries and the time it took; panics
/// unless replaying the whole log gives `work`, the guest's final image.
fn replay(
    dir: &Path,
    work: &Path,
    log_img: &Path,
    marks: &[&str],
    sampling: Sampling,
    check_state: &mut Check<'_>,
) -> (Vec<Tally>, usize, std::time::Duration) {
    let log = Log::open(log_img).unwrap();
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
        Kind::Prefix => {
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
            "powercut {mark}: {} states checked ({} prefixes, {} at flush/FUA points; {} reordered), {} violations",
            t.prefix + t.reordered,
            t.prefix,
            t.barriers,
            t.reordered,
            t.violations.len()
        );
        all.extend(t.violations.iter().cloned());
    }
    let total = |f: fn(&Tally) -> u64| tallies.iter().map(f).sum::<u64>();
    println!(
        "{title}: {} states checked ({} prefixes, {} reordered), {} violations; {} log entries, guest run {:.1} s, replay and checks {:.1} s",
        total(|t| t.prefix + t.reordered),
        total(|t| t.prefix),
        total(|t| t.reordered),
        all.len(),
        entries,
        guest_time.as_secs_f64(),
        check_time.as_secs_f64()
    );
    all
}

/// Where the ESP starts on the loader board's disk (after the sysroot's ext4), and its
/// size.
const ESP_AT: u64 = 48 << 20;
const ESP_LEN: u64 = 40 << 20;
/// The kernel version of the test kernel sets (`usr/lib/modules/<version>/`).
const KVER: &str = "6.1.0-test";

/// A kernel set's files for `tag`: a kernel both loaders' checks take (an EFI
/// executable's `MZ`, and `PE\0\0` where offset 0x3c points; an arm64 Image's magic at
/// 56), 64 KiB, and a 32 KiB initramfs; seeded pseudo-random bytes, so no two sets
/// share a cluster's content.
fn set_files(tag: &str) -> [Vec<u8>; 2] {
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
    [kernel, bytes(32 << 10)]
}

/// The loader board's root filesystem: small (the sysroot's own writes are the other
/// test's), its kernel set added by the caller.
fn esp_tree(dir: &Path, version: &str, keys: &Path) -> PathBuf {
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

/// What the loader board's device looks like on its ESP: every file under it, with
/// its content.
type EspState = BTreeMap<Vec<u8>, Vec<u8>>;

fn esp_state(dir: &Path) -> EspState {
    testkit::scan(dir)
        .into_iter()
        .map(|(p, e)| (p, e.content))
        .collect()
}

/// Copies the ESP's files that berth writes (`loader/entries/*`, `berth/*/*`) out of
/// the FAT image `part` into `to` (created), with mtools: the host's kernel may have no
/// vfat, and mtools reads the FAT as another program than Linux, as the firmware does.
/// One level at a time (a directory entry whose start cluster is 0 reads as the root
/// directory). Returns the files it could not read.
fn esp_files(part: &Path, to: &Path) -> Vec<String> {
    let mtools = |tool: &str, args: &[&str]| {
        Command::new(tool)
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(part)
            .args(args)
            .output()
            .unwrap()
    };
    let mut unreadable = Vec::new();
    let mut dirs = vec!["loader/entries".to_owned(), "berth".to_owned()];
    while let Some(d) = dirs.pop() {
        fs::create_dir_all(to.join(&d)).unwrap();
        let list = mtools("mdir", &["-b", &format!("::/{d}/")]);
        if !list.status.success() {
            unreadable.push(format!("{d}/"));
            continue;
        }
        for p in String::from_utf8_lossy(&list.stdout).lines() {
            let Some(p) = p.strip_prefix("::/") else {
                continue;
            };
            if let Some(sub) = p.strip_suffix('/') {
                if d == "berth" {
                    dirs.push(sub.to_owned());
                }
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
struct EspStep {
    mark: &'static str,
    args: Vec<String>,
    booted: PathBuf,
    may_boot: Vec<String>,
    want: (Outcome, EspState),
}

/// The loader board's device, built on the host: a sysroot with
/// `berth/boot/loader.conf` naming systemd-boot, and its ESP, laid out as
/// `berth-image disk` lays it out (`image/src/esp.rs`).
struct EspLab {
    dir: PathBuf,
    sysroot: PathBuf,
    /// The ESP's FAT image (FAT32, as `berth-image disk` makes it).
    esp: PathBuf,
    update: PathBuf,
    /// The deployments of 1.0 and 2.0.
    names: [String; 2],
    /// berth-init's reports: 1.0 booted as the default, 2.0 as the loader's trial, 2.0
    /// as the default.
    boots: [PathBuf; 3],
    /// Each deployment's kernel set (`<id16>`), and each set's files.
    sets: BTreeMap<String, String>,
    set_files: BTreeMap<String, [Vec<u8>; 2]>,
    files: BTreeMap<String, Scan>,
    want: BTreeMap<&'static str, (Outcome, EspState)>,
    /// Per step, what the checks met that is not a violation, and how often.
    notes: std::cell::RefCell<BTreeMap<&'static str, BTreeMap<&'static str, u64>>>,
}

/// `berth --boot-dir esp …` on `sysroot`.
fn berth_esp(sysroot: &Path, esp: &Path, boot_json: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--boot-dir", esp.to_str().unwrap()];
    all.extend_from_slice(args);
    berth(sysroot, boot_json, &all)
}

/// What systemd-boot starts from the ESP mounted at `esp`, by its rules for these
/// entries (`format::bls`, systemd-boot 252 and later: entries with a sort key, newest
/// version first, those with no tries left moved to the end; `loader/loader.conf` names
/// no default and nothing sets a one-shot entry; an entry with no `linux` line is
/// dropped): the first entry, whose `linux` and `initrd` files must be a kernel set's,
/// byte for byte. Returns the entry's `options`
/// (the kernel's command line) and the set's `<id16>`, or why it boots nothing.
fn systemd_boot_choice(
    esp: &Path,
    set_files: &BTreeMap<String, [Vec<u8>; 2]>,
) -> Result<(String, String), String> {
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
    let want = set_files
        .get(set)
        .ok_or_else(|| format!("{file} boots kernel set {set}, which no deployment carries"))?;
    for (path, want) in [(linux, &want[0]), (initrd, &want[1])] {
        let on_esp = fs::read(esp.join(path.trim_start_matches('/')));
        if on_esp.as_ref().ok() != Some(want) {
            return Err(format!(
                "{file}: {path} is not kernel set {set}'s ({})",
                on_esp.map_or_else(|e| e.to_string(), |b| format!("{} bytes differ", b.len()))
            ));
        }
    }
    Ok((options.to_owned(), set.to_owned()))
}

/// What `fsck.vfat -n` finds on the FAT image `part`: (the kinds of findings that do not
/// keep the loader from booting and that `fsck.vfat -a` repairs, the other findings).
/// FAT has no journal: a cut between the writes of one change leaves the two FAT copies
/// different, clusters allocated that no file holds yet, a long name's fragments, a
/// file whose clusters are not linked yet, or an entry with no clusters yet; the loader
/// and berth only meet those in files the checks below read. Two names for one cluster
/// chain, or anything unknown, are findings of the second kind.
///
/// Linux marks a FAT32 volume dirty while it is mounted (bit 0 of byte 65 of the boot
/// sector, not of its backup), so every state has that mark: it is cleared in `part`
/// first. The free-cluster count in FSINFO, a hint that Linux updates lazily, is not a
/// finding.
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
        let backup = u64::from(u16::from_le_bytes([boot[50], boot[51]])) * 512;
        let mut flag = [0u8; 1];
        f.read_exact_at(&mut flag, backup + 65).unwrap();
        f.write_all_at(&flag, 65).unwrap();
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

impl EspLab {
    /// The uninterrupted run on the host, on a loop mount of a copy of the ESP.
    fn reference(&mut self) {
        let [n1, n2] = &self.names;
        let [boot1, trial2, boot2] = &self.boots;
        let reference = self.dir.join("reference");
        run(Command::new("cp")
            .arg("-a")
            .arg(&self.sysroot)
            .arg(&reference));
        let esp = self.dir.join("reference-esp");
        assert_eq!(esp_files(&self.esp, &esp), Vec::<String>::new());
        self.files
            .insert(n1.clone(), scan(&reference.join("berth/deploy").join(n1)));
        let mut step = |mark, booted: &Path, args: &[&str]| {
            let o = berth_esp(&reference, &esp, booted, args);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let end = (outcome(&reference, booted).unwrap(), esp_state(&esp));
            self.want.insert(mark, end.clone());
            end
        };
        let (after, _) = step(
            "esp-update",
            boot1,
            &["update", self.update.to_str().unwrap()],
        );
        assert_eq!(after.trial.as_ref(), Some(n2));
        self.files
            .insert(n2.clone(), scan(&reference.join("berth/deploy").join(n2)));
        let (after, _) = step("esp-mark-good", trial2, &["mark-good"]);
        assert_eq!(after.default.as_ref(), Some(n2));
        let (after, _) = step("esp-rollback", boot2, &["rollback", "--from", n2]);
        assert_eq!(after.default.as_ref(), Some(n1));
    }

    fn steps(&self) -> Vec<EspStep> {
        let [n1, n2] = &self.names;
        let [boot1, trial2, boot2] = &self.boots;
        let step = |mark, args: &[&str], booted: &PathBuf, may_boot: &[&String]| EspStep {
            mark,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            booted: booted.clone(),
            may_boot: may_boot.iter().map(|n| (*n).clone()).collect(),
            want: self.want[mark].clone(),
        };
        vec![
            step(
                "esp-update",
                &["update", self.update.to_str().unwrap()],
                boot1,
                &[n1, n2],
            ),
            step("esp-mark-good", &["mark-good"], trial2, &[n2]),
            step(
                "esp-rollback",
                &["rollback", "--from", n2],
                boot2,
                &[n1, n2],
            ),
        ]
    }

    /// The guest's script: dm-log-writes over the whole disk, the sysroot and the ESP as
    /// linear devices over it (so the log has both in the order they reached the disk,
    /// and a flush covers both, as on one real disk), then each step between two marks.
    fn guest_script(&self) -> String {
        let (at, len) = (ESP_AT / 512, ESP_LEN / 512);
        format!(
            r#"sectors=$(cat /sys/block/vda/size)
dmsetup create --noudevsync lw --table "0 $sectors log-writes /dev/vda /dev/vdb" || echo "POWERCUT dmsetup failed"
dmsetup create --noudevsync root --table "0 {at} linear /dev/dm-0 0"
dmsetup create --noudevsync esp --table "0 {len} linear /dev/dm-0 {at}"
dmsetup message lw 0 mark start
mount -t ext4 -o noauto_da_alloc /dev/dm-1 /mnt || echo "POWERCUT mount failed"
mkdir -p /esp
mount -t vfat /dev/dm-2 /esp || echo "POWERCUT mount failed"
b="berth --sysroot /mnt --boot-dir /esp"
dmsetup message lw 0 mark esp-update
$b --boot-json /boot-1.json update /update.berth
echo "POWERCUT update $?"
dmsetup message lw 0 mark esp-mark-good
$b --boot-json /trial-2.json mark-good
echo "POWERCUT mark-good $?"
dmsetup message lw 0 mark esp-rollback
$b --boot-json /boot-2.json rollback --from {}
echo "POWERCUT rollback $?"
dmsetup message lw 0 mark done
umount /esp
umount /mnt
dmsetup remove esp
dmsetup remove root
dmsetup remove lw
echo "POWERCUT finished"
"#,
            self.names[1]
        )
    }

    /// Runs the guest on the disk (the sysroot's ext4, then the ESP); returns its final
    /// image, the log and the guest's wall time.
    fn guest(&self) -> (PathBuf, PathBuf, std::time::Duration) {
        let dir = self.dir.as_path();
        let base = dir.join("base.img");
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-b", "4096", "-d"])
            .arg(&self.sysroot)
            .arg(&base)
            .arg(format!("{}M", ESP_AT >> 20)));
        {
            let f = fs::OpenOptions::new().write(true).open(&base).unwrap();
            f.set_len(ESP_AT + ESP_LEN).unwrap();
            f.write_all_at(&fs::read(&self.esp).unwrap(), ESP_AT)
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

    /// What systemd-boot starts from the ESP's files at `esp` and what berth-init boots
    /// under it on the sysroot at `mnt`: violations.
    fn check_boot(&self, esp: &Path, mnt: &Path, step: &EspStep) -> Vec<String> {
        let mut bad = Vec::new();
        match systemd_boot_choice(esp, &self.set_files) {
            Err(e) => bad.push(format!("systemd-boot: {e}")),
            Ok((options, set)) => {
                let out = Command::new(device("berth-init"))
                    .args(["--dry-run", "--sysroot"])
                    .arg(mnt)
                    .args(["--cmdline", &options])
                    .output()
                    .unwrap();
                let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
                match v["choice"]["deployment"].as_str() {
                    None => bad.push(format!(
                        "berth-init boots no deployment under {options:?}: {v} {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    )),
                    Some(booted) => {
                        if !step.may_boot.iter().any(|m| m == booted) {
                            bad.push(format!(
                                "systemd-boot starts set {set} and berth-init boots {booted}"
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

    /// The ESP of the state `img`: `fsck.vfat -n` on its FAT as the cut left it (its
    /// harmless findings counted in the notes), then its files copied out with mtools.
    /// Returns where, and the violations.
    fn read_esp(&self, img: &Path, step: &EspStep) -> (PathBuf, Vec<String>) {
        let mut bad = Vec::new();
        let esp = &img.with_file_name("esp");
        // The FAT as the cut left it, before anything mounts it.
        let part = img.with_file_name("esp-part.img");
        {
            let mut buf = vec![0u8; usize::try_from(ESP_LEN).unwrap()];
            File::open(img)
                .unwrap()
                .read_exact_at(&mut buf, ESP_AT)
                .unwrap();
            fs::write(&part, buf).unwrap();
        }
        let (repaired, other) = fsck_vfat(&part);
        if !other.is_empty() {
            bad.push(format!("fsck.vfat -n: {}", other.join(" / ")));
        }
        {
            let mut notes = self.notes.borrow_mut();
            let notes = notes.entry(step.mark).or_default();
            *notes.entry("states fsck.vfat -a would repair").or_default() +=
                u64::from(!repaired.is_empty());
            for kind in repaired {
                *notes.entry(kind).or_default() += 1;
            }
        }
        if esp.exists() {
            fs::remove_dir_all(esp).unwrap();
        }
        let mut unreadable = esp_files(&part, esp);
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
            fs::remove_dir_all(esp).unwrap();
            unreadable = esp_files(&part, esp);
            *self
                .notes
                .borrow_mut()
                .entry(step.mark)
                .or_default()
                .entry("states read after fsck.vfat -a")
                .or_default() += 1;
        }
        if !unreadable.is_empty() {
            let mut notes = self.notes.borrow_mut();
            *notes
                .entry(step.mark)
                .or_default()
                .entry("states with a file mtools cannot read")
                .or_default() += 1;
        }
        (esp.clone(), bad)
    }

    /// Checks one state (`img`, a copy the check may change): the ESP's FAT, what
    /// systemd-boot starts and what berth-init boots under it, the sysroot, and a retry.
    fn check_state(&self, img: &Path, mnt: &Path, step: &EspStep) -> Vec<String> {
        let mut bad = Vec::new();
        let (esp, violations) = self.read_esp(img, step);
        bad.extend(violations);
        let esp = &esp;
        run(Command::new("mount")
            .args(["-t", "ext4", "-o", "loop,noauto_da_alloc"])
            .arg(img)
            .arg(mnt));
        bad.extend(self.check_boot(esp, mnt, step));
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
        let retry = berth_esp(mnt, esp, &step.booted, &args);
        if retry.status.success() {
            let end = (outcome(mnt, &step.booted), esp_state(esp));
            if end.0.as_ref().ok() != Some(&step.want.0) || end.1 != step.want.1 {
                let names = |s: &EspState| {
                    s.keys()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .collect::<Vec<_>>()
                };
                bad.push(format!(
                    "the retry ended at {:?} {:?}, not {:?} {:?}",
                    end.0,
                    names(&end.1),
                    step.want.0,
                    names(&step.want.1)
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
}

/// The ESP as `berth-image disk` makes it (`image/src/esp.rs`): FAT32, `loader.conf`,
/// the default deployment `n1`'s kernel set `set1` (`files1`) and its entry, generation 2.
fn make_esp(dir: &Path, conf: &BootConfig, n1: &str, set1: &str, files1: &[Vec<u8>; 2]) -> PathBuf {
    let esp = dir.join("esp.img");
    run(Command::new("mkfs.vfat")
        .args(["-C", "-F", "32", "-n", "BERTH-ESP"])
        .arg(&esp)
        .arg((ESP_LEN >> 10).to_string()));
    let img = esp.to_str().unwrap();
    let set_dir = format!("berth/{set1}");
    run(Command::new("mmd").args(["-i", img]).args([
        "::/loader".to_owned(),
        format!("::/{}", bls::ENTRIES_DIR),
        "::/berth".to_owned(),
        format!("::/{set_dir}"),
    ]));
    let entry = bls::EntryName {
        generation: 2,
        deployment: DeploymentName::new(n1.as_bytes()).unwrap(),
        counter: None,
    };
    let text = bls::EntryText {
        release: "1.0",
        deployment: n1,
        generation: 2,
        set_dir: &set_dir,
        devicetree: None,
        options: &conf.kernel_cmdline(""),
    }
    .render();
    let staged = dir.join("esp-files");
    fs::create_dir(&staged).unwrap();
    for (dest, bytes) in [
        ("loader/loader.conf".to_owned(), b"timeout 0\n".to_vec()),
        (
            format!("{}/{}", bls::ENTRIES_DIR, entry.file_name()),
            text.into_bytes(),
        ),
        (format!("{set_dir}/vmlinuz"), files1[0].clone()),
        (format!("{set_dir}/initramfs.img"), files1[1].clone()),
    ] {
        let f = staged.join(dest.replace('/', "_"));
        fs::write(&f, bytes).unwrap();
        run(Command::new("mcopy")
            .args(["-i", img, "-o"])
            .arg(&f)
            .arg(format!("::/{dest}")));
    }
    esp
}

/// Which of the loader board's tools is missing (ci/setup.sh installs dmsetup, dosfstools
/// and mtools), if any.
fn esp_tools_missing() -> Option<String> {
    ["dmsetup", "fsck.vfat", "mkfs.vfat", "mmd", "mcopy", "mdir"]
        .into_iter()
        .find(|tool| Command::new(tool).arg("--version").output().is_err())
        .map(|tool| format!("{tool} is missing (ci/setup.sh installs it)"))
}

#[test]
fn power_cuts_on_the_esp_leave_a_device_systemd_boot_and_berth_init_boot() {
    let t = TARGETS[0];
    if skip(
        t,
        "power_cuts_on_the_esp_leave_a_device_systemd_boot_and_berth_init_boot",
    ) {
        return;
    }
    if let Some(why) = esp_tools_missing() {
        testkit::missing(
            "power_cuts_on_the_esp_leave_a_device_systemd_boot_and_berth_init_boot",
            &why,
        );
        return;
    }
    let scratch = tempfile::Builder::new()
        .prefix("berth-powercut-esp-")
        .tempdir_in(workspace().join("target"))
        .unwrap();
    let dir = scratch.path();
    let keys = dir.join("keys");
    let repo = dir.join("repo");
    berth_image(&["keygen", "--out"], &[&keys]);
    let commit = |v: &str| {
        let t = esp_tree(dir, v, &keys);
        let files = set_files(v);
        let modules = t.join("usr/lib/modules").join(KVER);
        fs::create_dir_all(&modules).unwrap();
        fs::write(modules.join("vmlinuz"), &files[0]).unwrap();
        fs::write(modules.join("initramfs.img"), &files[1]).unwrap();
        let mut c = Command::new(bin("berth-image"));
        c.args(["commit", "--repo"])
            .arg(&repo)
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
    };
    let (v1, set1, files1) = commit("1.0");
    let (v2, set2, files2) = commit("2.0");
    let (n1, n2) = (v1[..16].to_owned(), v2[..16].to_owned());
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
        .args(["--commit", &v1, "--sysroot"])
        .arg(&sysroot);
    run(&mut c);
    let conf = BootConfig {
        loader: BootLoader::SystemdBoot,
        partuuid: "0123abcd-0000-4000-8000-00000000000a".into(),
        cmdline: "console=ttyS0 panic=-1".into(),
        root: "PARTUUID=fedcba98-7654-3210-fedc-ba9876543210".into(),
        devicetree: None,
    };
    fs::write(sysroot.join("berth/boot/loader.conf"), conf.encode()).unwrap();
    let esp = make_esp(dir, &conf, &n1, &set1, &files1);
    let boots = [
        boot_report(dir, "boot-1.json", &n1, "default"),
        boot_report(dir, "trial-2.json", &n2, "loader-trial"),
        boot_report(dir, "boot-2.json", &n2, "default"),
    ];
    let mut lab = EspLab {
        dir: dir.to_path_buf(),
        sysroot,
        esp,
        update,
        names: [n1.clone(), n2.clone()],
        boots,
        sets: BTreeMap::from([(n1, set1.clone()), (n2, set2.clone())]),
        set_files: BTreeMap::from([(set1, files1), (set2, files2)]),
        files: BTreeMap::new(),
        want: BTreeMap::new(),
        notes: std::cell::RefCell::default(),
    };
    lab.reference();
    let (work, log_img, guest_time) = lab.guest();
    lab.replay(&work, &log_img, guest_time);
}

impl EspLab {
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
            ESP_SAMPLING,
            &mut |k, state| self.check_state(state, &mnt, &steps[k]),
        );
        let all = report(
            "powercut esp",
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
