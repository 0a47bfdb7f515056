//! Real power cuts at the block layer: a QEMU guest running Debian's kernel applies an
//! update and marks it good with the device build of `berth`, on ext4 (mounted
//! `noauto_da_alloc`, so ext4 does not hide a missing fsync) over dm-log-writes, which
//! records every block write in the order it reached the disk. On the host the log is
//! replayed onto a copy of the starting image. Every prefix that ends at a flush or FUA
//! write is a state the disk could hold after a power cut; the `mark-good` step (a few
//! dozen writes) is also checked after every single log entry.
//!
//! Each state is mounted (which replays the ext4 journal, as the next boot would) and
//! must pass: berth-init's dry run boots an allowed deployment; `berth fsck` (every
//! object's sha256, both record copies, the named deployments); every deployment the
//! record names is byte-identical to an uninterrupted run's; the interrupted command,
//! run again, ends where an uninterrupted run ends. Unmounted, `e2fsck -fn` finds no
//! error. Replaying the whole log must give the guest's final image byte for byte.
//!
//! `x86_64` only: the guest runs the host's `dmsetup` (with its shared libraries). Root
//! only (loop mounts). About 1–2 minutes; ci/test.sh runs it.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use qemu_tests::logwrites::{self, Log};
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
    for d in ["etc", "var", "run", "dev", "proc", "sys", "sysroot", "sbin"] {
        fs::create_dir_all(t.join(d)).unwrap();
    }
    fs::create_dir_all(t.join("usr/lib/berth/keys")).unwrap();
    fs::create_dir_all(t.join("usr/share/doc")).unwrap();
    fs::write(t.join("etc/release"), version).unwrap();
    fs::write(t.join("sbin/init"), "#!/bin/sh\n").unwrap();
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

/// The device's state as booting sees it: the record's roles and what berth-init
/// boots next.
#[derive(Debug, PartialEq, Eq, Clone)]
struct Outcome {
    default: Option<String>,
    trial: Option<String>,
    previous: Option<String>,
    next_boot: String,
}

fn berth(sysroot: &Path, boot_json: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin("berth"))
        .arg("--sysroot")
        .arg(sysroot)
        .arg("--boot-json")
        .arg(boot_json)
        .args(args)
        .output()
        .unwrap()
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
    let role = |r: &str| {
        s["deployments"].as_array().and_then(|ds| {
            ds.iter()
                .find(|d| d[r] == true)
                .and_then(|d| d["name"].as_str().map(str::to_owned))
        })
    };
    let plan = Command::new(bin("berth-init"))
        .arg("--dry-run")
        .arg("--sysroot")
        .arg(sysroot)
        .output()
        .unwrap();
    let plan: Value =
        serde_json::from_slice(&plan.stdout).map_err(|e| format!("berth-init --dry-run: {e}"))?;
    Ok(Outcome {
        default: role("default"),
        trial: role("trial"),
        previous: role("previous"),
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

/// One step the guest ran, and what may be on disk while it runs.
struct Step {
    mark: &'static str,
    args: Vec<String>,
    booted: PathBuf,
    may_boot: Vec<String>,
    want: Outcome,
    every_entry: bool,
}

#[derive(Default)]
struct Tally {
    barriers: u64,
    entries: u64,
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
    match outcome(mnt, &step.booted) {
        Ok(now) => {
            if !step.may_boot.contains(&now.next_boot) {
                bad.push(format!("berth-init would boot {}", now.next_boot));
            }
            for name in [&now.default, &now.trial, &now.previous]
                .into_iter()
                .flatten()
            {
                if files
                    .get(name)
                    .is_some_and(|f| *f != scan(&mnt.join("berth/deploy").join(name)))
                {
                    bad.push(format!("deployment {name} is not complete"));
                }
            }
        }
        Err(e) => bad.push(e),
    }
    let args: Vec<&str> = step.args.iter().map(String::as_str).collect();
    let retry = berth(mnt, &step.booted, &args);
    if retry.status.success() {
        match outcome(mnt, &step.booted) {
            Ok(end) if end == step.want => {}
            other => bad.push(format!("the retry ended at {other:?}, not {:?}", step.want)),
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

/// The initramfs: busybox, the kernel modules, the host's dmsetup and its libraries,
/// the device build of berth, the update and the guest script.
fn initramfs(dir: &Path, update: &Path, boots: [&Path; 2]) -> PathBuf {
    let root = dir.join("initramfs");
    let kernel = cache().join("debian/amd64/kernel");
    for d in [
        "bin",
        "sbin",
        "proc",
        "sys",
        "dev",
        "mnt",
        "run",
        "lib/modules",
        "tmp",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::copy(
        cache().join("debian/amd64/busybox/bin/busybox"),
        root.join("bin/busybox"),
    )
    .unwrap();
    let ver = fs::read_dir(kernel.join("lib/modules"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    let deps = run(Command::new("modprobe")
        .arg("-d")
        .arg(&kernel)
        .arg("-S")
        .arg(&ver)
        .args(["--show-depends", "-a"])
        .args([
            "crc32c_generic",
            "virtio_pci",
            "virtio_blk",
            "ext4",
            "dm-log-writes",
        ]));
    let mut order = String::new();
    for line in deps.lines() {
        let Some(path) = line.strip_prefix("insmod ") else {
            continue;
        };
        let path = Path::new(path.split_whitespace().next().unwrap());
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if !order.lines().any(|l| l == name) {
            fs::copy(path, root.join("lib/modules").join(&name)).unwrap();
            order.push_str(&name);
            order.push('\n');
        }
    }
    fs::write(root.join("modules.order"), order).unwrap();
    let libs = run(Command::new("ldd").arg("/usr/sbin/dmsetup"));
    for lib in libs
        .split_whitespace()
        .filter(|w| w.starts_with('/') && Path::new(w).exists())
    {
        let to = root.join(lib.trim_start_matches('/'));
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(lib, &to).unwrap();
    }
    fs::copy("/usr/sbin/dmsetup", root.join("sbin/dmsetup")).unwrap();
    fs::copy(
        workspace().join("target/x86_64-unknown-linux-musl/device/berth"),
        root.join("bin/berth"),
    )
    .unwrap();
    fs::copy(update, root.join("update.berth")).unwrap();
    fs::copy(boots[0], root.join("boot-old.json")).unwrap();
    fs::copy(boots[1], root.join("boot-new.json")).unwrap();
    let script = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod /lib/modules/$m 2>/dev/null; done
sectors=$(cat /sys/block/vda/size)
dmsetup create --noudevsync lw --table "0 $sectors log-writes /dev/vda /dev/vdb" || echo "POWERCUT dmsetup failed"
dmsetup message lw 0 mark start
mount -t ext4 -o noauto_da_alloc /dev/dm-0 /mnt || echo "POWERCUT mount failed"
dmsetup message lw 0 mark update
berth --sysroot /mnt --boot-json /boot-old.json update /update.berth
echo "POWERCUT update $?"
dmsetup message lw 0 mark mark-good
berth --sysroot /mnt --boot-json /boot-new.json mark-good
echo "POWERCUT mark-good $?"
dmsetup message lw 0 mark done
umount /mnt
dmsetup remove lw
echo "POWERCUT finished"
poweroff -f
"#;
    fs::write(root.join("init"), script).unwrap();
    run(Command::new("chmod").args(["755"]).arg(root.join("init")));
    let cpio = dir.join("initramfs.cpio");
    run(Command::new("sh").arg("-c").arg(format!(
        "cd {} && find . | cpio -o -H newc --quiet > {}",
        root.display(),
        cpio.display()
    )));
    cpio
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
    let (v1, v2) = (commit("1.0"), commit("2.0"));
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
    let (boot1, boot2) = (boot_json(dir, &n1), boot_json(dir, &n2));
    let mut lab = Lab {
        dir: dir.to_path_buf(),
        update,
        sysroot,
        boots: [boot1, boot2],
        names: [n1, n2],
        files: BTreeMap::new(),
        want: Vec::new(),
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
    /// berth-init's report naming v1, then v2, as booted.
    boots: [PathBuf; 2],
    names: [String; 2],
    /// Each deployment's files after an uninterrupted run.
    files: BTreeMap<String, Scan>,
    /// Where an uninterrupted update, then mark-good, ends.
    want: Vec<Outcome>,
}

impl Lab {
    /// The uninterrupted run, on the host: what each step must end at.
    fn reference(&mut self) {
        let [n1, n2] = &self.names;
        let [boot1, boot2] = &self.boots;
        let reference = self.dir.join("reference");
        run(Command::new("cp")
            .arg("-a")
            .arg(&self.sysroot)
            .arg(&reference));
        self.files
            .insert(n1.clone(), scan(&reference.join("berth/deploy").join(n1)));
        let update = self.update.to_str().unwrap();
        assert!(
            berth(&reference, boot1, &["update", update])
                .status
                .success()
        );
        self.want.push(outcome(&reference, boot1).unwrap());
        self.files
            .insert(n2.clone(), scan(&reference.join("berth/deploy").join(n2)));
        assert!(berth(&reference, boot2, &["mark-good"]).status.success());
        let after_mark = outcome(&reference, boot2).unwrap();
        assert_eq!(after_mark.default.as_deref(), Some(n2.as_str()));
        self.want.push(after_mark);
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
        let cpio = initramfs(dir, &self.update, [&self.boots[0], &self.boots[1]]);
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
            .args(["-append", "console=ttyS0 panic=-1 quiet"])
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
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let serial = String::from_utf8_lossy(&out.stdout).into_owned();
        let guest_time = start.elapsed();
        for line in [
            "POWERCUT update 0",
            "POWERCUT mark-good 0",
            "POWERCUT finished",
        ] {
            assert!(
                serial.contains(line),
                "no {line:?} on the console:\n{serial}"
            );
        }
        (work, log_img, guest_time)
    }

    /// Replays the log and checks every state.
    fn replay(&self, work: &Path, log_img: &Path, guest_time: std::time::Duration) {
        let dir = self.dir.as_path();
        let [n1, n2] = &self.names;
        let [boot1, boot2] = &self.boots;
        let log = Log::open(log_img).unwrap();
        let (at_update, at_mark, at_done) = (
            log.mark("update").expect("mark update"),
            log.mark("mark-good").expect("mark mark-good"),
            log.mark("done").expect("mark done"),
        );
        let steps = [
            Step {
                mark: "update",
                args: vec!["update".into(), self.update.to_str().unwrap().into()],
                booted: boot1.clone(),
                may_boot: vec![n1.clone(), n2.clone()],
                want: self.want[0].clone(),
                every_entry: true,
            },
            Step {
                mark: "mark-good",
                args: vec!["mark-good".into()],
                booted: boot2.clone(),
                may_boot: vec![n2.clone()],
                want: self.want[1].clone(),
                every_entry: true,
            },
        ];
        let cur_path = dir.join("replay.img");
        fs::copy(dir.join("base.img"), &cur_path).unwrap();
        let cur = fs::OpenOptions::new().write(true).open(&cur_path).unwrap();
        let state = dir.join("state.img");
        let mnt = dir.join("mnt");
        fs::create_dir(&mnt).unwrap();
        let mut tallies = [Tally::default(), Tally::default()];
        let check_start = std::time::Instant::now();
        for (i, e) in log.entries.iter().enumerate() {
            log.apply(e, &cur).unwrap();
            let k = if i < at_update || i > at_done {
                continue;
            } else {
                usize::from(i >= at_mark)
            };
            let barrier = logwrites::is_barrier(e);
            if !barrier && !steps[k].every_entry {
                continue;
            }
            run(Command::new("cp")
                .arg("--sparse=always")
                .arg(&cur_path)
                .arg(&state));
            let bad = check_state(&state, &mnt, &steps[k], &self.files);
            let tally = &mut tallies[k];
            if barrier {
                tally.barriers += 1;
            }
            tally.entries += 1;
            tally.violations.extend(
                bad.into_iter()
                    .map(|b| format!("{} entry {i}: {b}", steps[k].mark)),
            );
        }
        drop(cur);
        assert!(
            fs::read(&cur_path).unwrap() == fs::read(work).unwrap(),
            "replaying the whole log does not give the guest's final image"
        );
        let mut all = Vec::new();
        for (s, t) in steps.iter().zip(&tallies) {
            println!(
                "powercut {}: {} states checked ({} at flush/FUA points{}), {} violations",
                s.mark,
                t.entries,
                t.barriers,
                if s.every_entry {
                    ", the rest after every other log entry"
                } else {
                    ""
                },
                t.violations.len()
            );
            all.extend(t.violations.iter().cloned());
        }
        println!(
            "powercut: {} log entries, guest run {:.1} s, replay and checks {:.1} s",
            log.entries.len(),
            guest_time.as_secs_f64(),
            check_start.elapsed().as_secs_f64()
        );
        assert!(
            all.is_empty(),
            "{} violations:\n{}",
            all.len(),
            all.join("\n")
        );
    }
}
