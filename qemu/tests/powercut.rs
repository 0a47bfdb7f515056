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
//! `x86_64` only: the guest runs the host's `dmsetup` (with its shared libraries). Root
//! only (loop mounts). The states are written in /dev/shm when it exists. 3 to 4
//! minutes on 2 cores; ci/test.sh runs it.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use qemu_tests::guest::Initramfs;
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
    run(Command::new("umount").arg(mnt));
    let e2 = Command::new("e2fsck").arg("-fn").arg(img).output().unwrap();
    if !e2.status.success() {
        bad.push(format!(
            "e2fsck -fn: {}",
            String::from_utf8_lossy(&e2.stdout)
                .lines()
                .filter(|l| !l.starts_with("Pass") && !l.is_empty())
                .take(4)
                .collect::<Vec<_>>()
                .join(" / ")
        ));
    }
    bad
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
fn subsets(k: usize, rng: &mut Rng) -> Vec<(Vec<bool>, Kind)> {
    let mut out: Vec<(Vec<bool>, Kind)> = (1..=k)
        .map(|j| ((0..k).map(|w| w < j).collect(), Kind::Prefix))
        .collect();
    if k < 2 {
        return out;
    }
    if k <= EXHAUSTIVE_MAX {
        for bits in 0u32..1 << k {
            out.push((
                (0..k).map(|w| bits >> w & 1 == 1).collect(),
                Kind::Reordered,
            ));
        }
        return out;
    }
    for n in 0..SAMPLES_PER_EPOCH {
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
        let dir = self.dir.as_path();
        let log = Log::open(log_img).unwrap();
        let steps = self.steps();
        let step_of = step_of(&log, &steps);
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
        let mnt = dir.join("mnt");
        fs::create_dir(&mnt).unwrap();
        let mut tallies: Vec<Tally> = steps.iter().map(|_| Tally::default()).collect();
        let mut seen = HashSet::new();
        let mut rng = Rng::new(SEED);
        let mut check = |k: usize, key, kind, barrier: bool, at: &str, landed: &dyn Fn(&File)| {
            if !seen.insert(key) {
                return;
            }
            fs::copy(&base_path, &state).unwrap();
            landed(&fs::OpenOptions::new().write(true).open(&state).unwrap());
            let bad = check_state(&state, &mnt, &steps[k], &self.files);
            let tally = &mut tallies[k];
            match kind {
                Kind::Prefix => tally.prefix += 1,
                Kind::Reordered => tally.reordered += 1,
            }
            tally.barriers += u64::from(barrier);
            tally.violations.extend(
                bad.into_iter()
                    .map(|b| format!("{} {at}: {b}", steps[k].mark)),
            );
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
            for (landed, kind) in subsets(k, &mut rng) {
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
        let all = report(
            &steps,
            &tallies,
            log.entries.len(),
            guest_time,
            check_start.elapsed(),
        );
        assert!(
            all.is_empty(),
            "{} violations:\n{}",
            all.len(),
            all.join("\n")
        );
    }
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
fn step_of(log: &Log, steps: &[Step]) -> impl Fn(usize) -> Option<usize> + use<> {
    let marks: Vec<usize> = steps
        .iter()
        .map(|s| {
            log.mark(s.mark)
                .unwrap_or_else(|| panic!("mark {}", s.mark))
        })
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

/// Prints the tally per step and in total; returns every violation.
fn report(
    steps: &[Step],
    tallies: &[Tally],
    entries: usize,
    guest_time: std::time::Duration,
    check_time: std::time::Duration,
) -> Vec<String> {
    let mut all = Vec::new();
    for (s, t) in steps.iter().zip(tallies) {
        println!(
            "powercut {}: {} states checked ({} prefixes, {} at flush/FUA points; {} reordered), {} violations",
            s.mark,
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
        "powercut: {} states checked ({} prefixes, {} reordered), {} violations; {} log entries, guest run {:.1} s, replay and checks {:.1} s",
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
