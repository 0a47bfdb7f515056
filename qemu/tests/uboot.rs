//! Loader-level trials on aarch64: Debian's U-Boot (`u-boot-qemu`, `qemu_arm64`, passed
//! to QEMU as `-bios`) sources `image/uboot/boot.cmd` from a FAT boot partition and
//! boots one of its entries, counting a trial's tries in the two loader-state copies
//! (`format::loader`, docs/FORMAT.md "Loader state").
//!
//! The machine has two disks: the boot disk (an MBR with one FAT partition: `boot.scr`,
//! `berth/a/state`, `berth/b/state` and one directory per entry) and the sysroot disk
//! that `berth-image disk --board qemu-aarch64` made, whose initramfs (with berth-init)
//! and kernel are what the entries hold. The test builds the boot disk itself with
//! `mkfs.vfat` and mtools, because it needs entries and states that `berth-image disk`
//! never writes (a corrupt kernel, a missing one, trials, damaged copies); the image
//! that `berth-image disk --board qemu-aarch64-uboot` builds is booted in `boot.rs`.
//!
//! Needs root (as the other VM tests), `ci/fetch-kernels.sh`, `ci/fetch-loaders.sh`,
//! `ci/check-init.sh`, `cargo build -p image`, and mkimage, mkfs.vfat and mcopy
//! (`ci/setup.sh`). Run: `cargo test -p qemu-tests --test uboot -- --nocapture`.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use format::loader::{LoaderState, STATE_LEN, StateCopy, Trial, winner};
use format::record::DeploymentName;
use qemu_tests::{UBOOT_AARCH64, bin, run, skip, u_boot, workspace};

/// Where the FAT partition starts on the boot disk: 1 MiB, as `sfdisk` aligns it.
const PART_OFFSET: u64 = 1 << 20;
/// The FAT partition: two kernels of about 32 MiB, initramfs images and the state.
const PART_MIB: u64 = 96;
/// Each boot's hard limit: a boot takes 2 to 6 s here.
const BOOT_TIMEOUT: &str = "60";
/// The entries' kernel arguments: the board's, plus the test init's scenario.
const ARGS: &str = "console=ttyAMA0 panic=-1 berthtest=report";

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Returns true (after saying why) if this test cannot run here; panics instead under
/// `BERTH_STRICT=1`. The machine is the U-Boot board's, though the sysroot disk is
/// made for `qemu-aarch64`.
fn skip_uboot(test: &str) -> bool {
    skip(UBOOT_AARCH64, test)
}

fn name(s: &str) -> DeploymentName {
    DeploymentName::new(s.as_bytes()).unwrap()
}

/// What an entry's `vmlinuz` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// Debian's arm64 kernel.
    Good,
    /// Debian's kernel with its Image magic (offset 0x38) zeroed: U-Boot loads it and
    /// `booti` refuses it.
    BadMagic,
    /// No file at all.
    Missing,
}

/// One entry directory on the FAT partition.
#[derive(Debug)]
struct Entry {
    name: &'static str,
    kernel: Kernel,
    cmdline: &'static str,
}

/// A boot disk plus the sysroot disk, and the U-Boot environment flash.
#[derive(Debug)]
struct Rig {
    dir: tempfile::TempDir,
    sysroot: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
    boot: PathBuf,
    flash: PathBuf,
    /// QEMU wall time of all boots so far.
    spent: std::cell::Cell<Duration>,
}

/// One boot's console.
#[derive(Debug)]
struct Boot {
    serial: String,
}

impl Boot {
    /// The `berth.entry=` the kernel got, if a kernel started.
    fn entry(&self) -> Option<&str> {
        let line = self
            .serial
            .lines()
            .find(|l| l.contains("Kernel command line:"))?;
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("berth.entry="))
    }

    fn shows(&self, needle: &str) -> bool {
        self.serial.contains(needle)
    }

    /// The deployment's init ran (so berth-init found and booted the sysroot).
    fn reached_init(&self) -> bool {
        self.shows("berth-init: booting ") && self.shows("BERTH-TEST: init pid 1 release good-1")
    }
}

impl Rig {
    /// Commits the test rootfs and makes its disk with `berth-image disk`.
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-uboot-")
            .tempdir_in(workspace().join("target"))
            .unwrap();
        let tree = dir.path().join("rootfs");
        run(Command::new("bash")
            .arg(workspace().join("qemu/rootfs/make-rootfs.sh"))
            .arg("arm64")
            .arg(&tree)
            .arg("good-1"));
        let repo = dir.path().join("repo");
        let commit = run(Command::new(bin("berth-image"))
            .args(["commit", "--repo"])
            .arg(&repo)
            .arg("--tree")
            .arg(&tree)
            .args(["--version", "good-1"]))
        .trim()
        .to_owned();
        run(Command::new(bin("berth-image"))
            .args(["disk", "--board", "qemu-aarch64", "--repo"])
            .arg(&repo)
            .args(qemu_tests::TARGETS[1].disk_inputs())
            .args(["--commit", &commit, "-o"])
            .arg(dir.path().join("sysroot.img")));
        let flash = dir.path().join("env-flash.img");
        write_env_flash(&flash);
        Self {
            sysroot: dir.path().join("sysroot.img"),
            kernel: dir.path().join("sysroot.kernel"),
            initrd: dir.path().join("sysroot.initrd"),
            boot: dir.path().join("boot.img"),
            flash,
            dir,
            spent: std::cell::Cell::default(),
        }
    }

    /// Builds the boot disk: an MBR with one FAT partition holding `boot.scr` (compiled
    /// from `image/uboot/boot.cmd`), the two state copies (pre-allocated, 4096 bytes
    /// each) and the entries.
    fn boot_disk(&self, entries: &[Entry], copy_a: &[u8], copy_b: &[u8]) {
        let dir = self.dir.path();
        let scr = dir.join("boot.scr");
        run(Command::new("mkimage")
            .args(["-A", "arm64", "-T", "script", "-C", "none", "-d"])
            .arg(workspace().join("image/uboot/boot.cmd"))
            .arg(&scr));
        let part = dir.join("boot.fat");
        let _ = std::fs::remove_file(&part); // a leftover from an earlier call, if any
        run(Command::new("mkfs.vfat")
            .args(["-C", "-n", "BERTHBOOT"])
            .arg(&part)
            .arg((PART_MIB * 1024).to_string()));
        let mtools = |args: &[&str], files: &[&Path]| {
            run(Command::new(args[0])
                .arg("-i")
                .arg(&part)
                .args(&args[1..])
                .args(files));
        };
        mtools(&["mmd", "::berth", "::berth/a", "::berth/b"], &[]);
        mtools(&["mcopy"], &[&scr, Path::new("::boot.scr")]);
        for (copy, bytes) in [(StateCopy::A, copy_a), (StateCopy::B, copy_b)] {
            let f = dir.join(format!("state.{copy:?}"));
            std::fs::write(&f, bytes).unwrap();
            let to = format!("::{}", copy.path());
            mtools(&["mcopy"], &[&f, Path::new(&to)]);
        }
        for e in entries {
            mtools(&["mmd", &format!("::{}", e.name)], &[]);
            let copy = |from: &Path, to: &str| {
                let to = format!("::{}/{to}", e.name);
                mtools(&["mcopy"], &[from, Path::new(&to)]);
            };
            match e.kernel {
                Kernel::Good => copy(&self.kernel, "vmlinuz"),
                Kernel::BadMagic => {
                    let mut image = std::fs::read(&self.kernel).unwrap();
                    assert_eq!(&image[0x38..0x3c], b"ARM\x64", "an arm64 Image");
                    image[0x38..0x3c].fill(0);
                    let f = dir.join(format!("{}.vmlinuz", e.name));
                    std::fs::write(&f, image).unwrap();
                    copy(&f, "vmlinuz");
                }
                Kernel::Missing => {}
            }
            copy(&self.initrd, "initramfs.img");
            let f = dir.join(format!("{}.cmdline", e.name));
            std::fs::write(&f, e.cmdline).unwrap();
            copy(&f, "cmdline");
        }
        // The disk: the partition at 1 MiB, type 0x0c (FAT32 LBA), marked bootable.
        let _ = std::fs::remove_file(&self.boot);
        let disk = std::fs::File::create(&self.boot).unwrap();
        disk.set_len(PART_OFFSET + (PART_MIB << 20)).unwrap();
        drop(disk);
        let mut sfdisk = Command::new("sfdisk")
            .args(["-q"])
            .arg(&self.boot)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(
            sfdisk.stdin.as_mut().unwrap(),
            b"label: dos\nstart=2048, type=c, bootable\n",
        )
        .unwrap();
        assert!(sfdisk.wait().unwrap().success(), "sfdisk");
        let mut disk = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.boot)
            .unwrap();
        std::io::Seek::seek(&mut disk, std::io::SeekFrom::Start(PART_OFFSET)).unwrap();
        std::io::copy(&mut std::fs::File::open(&part).unwrap(), &mut disk).unwrap();
        std::fs::remove_file(&part).unwrap();
    }

    /// Says how much QEMU time the test's boots took.
    fn report(&self, test: &str) {
        eprintln!(
            "{test}: {:.1} s of QEMU in all",
            self.spent.get().as_secs_f64()
        );
    }

    fn on_partition(&self) -> String {
        format!("{}@@{PART_OFFSET}", self.boot.display())
    }

    /// A state copy as it is now on the boot disk (read with mtools).
    fn read_copy(&self, copy: StateCopy) -> Vec<u8> {
        let out = self.dir.path().join(format!("read.{copy:?}"));
        run(Command::new("mcopy")
            .args(["-n", "-o", "-i", &self.on_partition()])
            .arg(format!("::{}", copy.path()))
            .arg(&out));
        std::fs::read(out).unwrap()
    }

    /// Both copies decoded (`None` for an invalid one) and the winner.
    fn state(
        &self,
    ) -> (
        Option<LoaderState>,
        Option<LoaderState>,
        (StateCopy, LoaderState),
    ) {
        let a = LoaderState::decode(&self.read_copy(StateCopy::A)).ok();
        let b = LoaderState::decode(&self.read_copy(StateCopy::B)).ok();
        let won = winner(a.as_ref(), b.as_ref()).expect("a valid copy");
        (a, b, won)
    }

    /// Overwrites one copy as Berth on Linux would (here with mtools).
    fn write_copy(&self, copy: StateCopy, bytes: &[u8]) {
        let f = self.dir.path().join(format!("write.{copy:?}"));
        std::fs::write(&f, bytes).unwrap();
        run(Command::new("mcopy")
            .args(["-o", "-i", &self.on_partition()])
            .arg(&f)
            .arg(format!("::{}", copy.path())));
    }

    /// Boots once: U-Boot from `-bios`, with the environment flash (bootdelay 0) or
    /// without it (U-Boot's built-in environment, bootdelay 2).
    fn boot(&self, with_flash: bool) -> Boot {
        let mut argv: Vec<String> = [
            "qemu-system-aarch64",
            "-M",
            "virt",
            "-accel",
            "tcg",
            "-cpu",
            "cortex-a57",
            "-smp",
            "1",
            "-m",
            "256",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
            "-bios",
        ]
        .map(String::from)
        .into();
        argv.push(u_boot().display().to_string());
        if with_flash {
            argv.push("-drive".into());
            argv.push(format!(
                "if=pflash,format=raw,unit=1,readonly=on,file={}",
                self.flash.display()
            ));
        }
        for (id, disk) in [("d0", &self.boot), ("d1", &self.sysroot)] {
            argv.push("-drive".into());
            argv.push(format!(
                "file={},if=none,format=raw,id={id}",
                disk.display()
            ));
            argv.push("-device".into());
            argv.push(format!("virtio-blk-pci,drive={id}"));
        }
        let _turn = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let start = Instant::now();
        let out = Command::new("timeout")
            .args(["-k", "5", BOOT_TIMEOUT])
            .args(&argv)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let wall = start.elapsed();
        let mut serial = String::from_utf8_lossy(&out.stdout).into_owned();
        serial.push_str(&String::from_utf8_lossy(&out.stderr));
        assert_ne!(
            out.status.code(),
            Some(124),
            "QEMU timed out after {BOOT_TIMEOUT} s:\n{serial}"
        );
        self.spent.set(self.spent.get() + wall);
        let boot = Boot { serial };
        eprintln!(
            "boot: {:.2} s wall, entry {:?}{}",
            wall.as_secs_f64(),
            boot.entry(),
            if with_flash {
                ""
            } else {
                " (built-in environment, bootdelay 2)"
            }
        );
        boot
    }
}

/// The environment flash (bootdelay 0), as `berth-image disk` makes it for the U-Boot
/// board (`image::envflash`). Read-only to QEMU: `saveenv` to the `virt` flash fails
/// under QEMU 7.2 anyway.
fn write_env_flash(path: &Path) {
    let flash = image::envflash::env_flash(&std::fs::read(u_boot()).unwrap()).unwrap();
    std::fs::write(path, flash).unwrap();
}

fn state(
    generation: u64,
    default: &str,
    previous: Option<&str>,
    trial: Option<(&str, u8)>,
) -> LoaderState {
    LoaderState {
        generation,
        default: name(default),
        previous: previous.map(name),
        trial: trial.map(|(t, n)| Trial {
            entry: name(t),
            tries_left: n,
        }),
    }
}

/// (a) and (b): the default boots through U-Boot to the deployment's init with
/// `berth.entry=`; then a trial whose kernel panics (its `cmdline` has
/// `rdinit=/nonexistent`) is booted exactly as many times as its tries, each try
/// written to the other copy before the boot, and then the default boots again.
#[test]
fn uboot_boots_the_default_then_a_panicking_trial_exactly_its_tries() {
    if skip_uboot("uboot_boots_the_default_then_a_panicking_trial_exactly_its_tries") {
        return;
    }
    let rig = Rig::new();
    let entries = [
        Entry {
            name: "a",
            kernel: Kernel::Good,
            cmdline: ARGS,
        },
        Entry {
            name: "b",
            kernel: Kernel::Good,
            cmdline: "console=ttyAMA0 panic=-1 rdinit=/nonexistent",
        },
    ];
    // As an install writes them: the same state in both copies, B one generation newer.
    let (a, b) = (state(1, "a", None, None), state(2, "a", None, None));
    rig.boot_disk(&entries, &a.encode().unwrap(), &b.encode().unwrap());

    // (a) The default, with U-Boot's own environment (bootdelay 2).
    let boot = rig.boot(false);
    assert_eq!(boot.entry(), Some("a"), "{}", boot.serial);
    assert!(boot.reached_init(), "{}", boot.serial);
    assert!(boot.shows("berth: using state b"), "{}", boot.serial);
    assert_eq!(
        (rig.read_copy(StateCopy::A), rig.read_copy(StateCopy::B)),
        (a.encode().unwrap(), b.encode().unwrap()),
        "no trial: the loader writes nothing"
    );

    // Berth on Linux starts a trial of b with 2 tries: the winner's successor, written
    // to the other copy.
    let (_, _, (won, current)) = rig.state();
    let mut next = current.successor();
    next.trial = Some(Trial {
        entry: name("b"),
        tries_left: 2,
    });
    rig.write_copy(won.other(), &next.encode().unwrap());

    // (b) Two boots of the trial, each counted before it starts; the kernel panics.
    for (n, (written, generation, tries)) in [(StateCopy::B, 4, 1), (StateCopy::A, 5, 0)]
        .into_iter()
        .enumerate()
    {
        let boot = rig.boot(true);
        assert_eq!(boot.entry(), Some("b"), "try {n}:\n{}", boot.serial);
        assert!(
            boot.shows("Kernel panic") && !boot.shows("BERTH-TEST: init"),
            "try {n}: the trial's kernel panics:\n{}",
            boot.serial
        );
        let (_, _, (won, s)) = rig.state();
        assert_eq!(
            (won, s.generation, s.trial.map(|t| t.tries_left)),
            (written, generation, Some(tries)),
            "try {n}: the try was written to the other copy:\n{}",
            boot.serial
        );
    }
    // No tries left: the default, and nothing written.
    let before = (rig.read_copy(StateCopy::A), rig.read_copy(StateCopy::B));
    let boot = rig.boot(true);
    assert_eq!(boot.entry(), Some("a"), "{}", boot.serial);
    assert!(boot.reached_init(), "{}", boot.serial);
    assert!(
        boot.shows("berth: trial b, 0 tries left"),
        "the loader saw the spent trial:\n{}",
        boot.serial
    );
    assert_eq!(
        (rig.read_copy(StateCopy::A), rig.read_copy(StateCopy::B)),
        before
    );
    rig.report("uboot_boots_the_default_then_a_panicking_trial_exactly_its_tries");
}

/// (c): the trial's kernel is refused by `booti` (bad Image magic) and the default's
/// `vmlinuz` is missing: the same boot falls through to the previous entry. The try
/// was still counted.
#[test]
fn uboot_falls_through_unbootable_entries_in_the_same_boot() {
    if skip_uboot("uboot_falls_through_unbootable_entries_in_the_same_boot") {
        return;
    }
    let rig = Rig::new();
    let entries = [
        Entry {
            name: "good",
            kernel: Kernel::Good,
            cmdline: ARGS,
        },
        Entry {
            name: "corrupt",
            kernel: Kernel::BadMagic,
            cmdline: ARGS,
        },
        Entry {
            name: "nokernel",
            kernel: Kernel::Missing,
            cmdline: ARGS,
        },
    ];
    let s = state(2, "nokernel", Some("good"), Some(("corrupt", 3)));
    rig.boot_disk(
        &entries,
        &state(1, "good", None, None).encode().unwrap(),
        &s.encode().unwrap(),
    );
    let boot = rig.boot(true);
    let order = [
        "berth: trying entry corrupt",
        "berth: entry corrupt did not start",
        "berth: trying entry nokernel",
        "berth: entry nokernel could not be loaded",
        "berth: booting entry good",
    ];
    let mut at = 0;
    for line in order {
        let found = boot.serial[at..]
            .find(line)
            .unwrap_or_else(|| panic!("no \"{line}\" after byte {at}:\n{}", boot.serial));
        at += found + line.len();
    }
    assert_eq!(boot.entry(), Some("good"), "{}", boot.serial);
    assert!(boot.reached_init(), "one boot, no reset:\n{}", boot.serial);
    let (_, _, (won, after)) = rig.state();
    assert_eq!(
        (won, after.generation, after.trial.map(|t| t.tries_left)),
        (StateCopy::A, 3, Some(2)),
        "the try was taken before the kernel was tried"
    );
    rig.report("uboot_falls_through_unbootable_entries_in_the_same_boot");
}

/// (d): the newer copy B is damaged and copy A holds a trial with one try left.
/// Zeroed (4096 bytes, bad CRC): B is ignored, A's trial gets its try, written over B.
/// Torn (cut to 2048 bytes): B is ignored, and since the script overwrites only a
/// 4096-byte file, the try cannot be recorded: the trial is not booted, the default is,
/// and nothing is written.
#[test]
fn uboot_ignores_a_zeroed_or_torn_state_copy() {
    if skip_uboot("uboot_ignores_a_zeroed_or_torn_state_copy") {
        return;
    }
    let rig = Rig::new();
    let entries = [
        Entry {
            name: "a",
            kernel: Kernel::Good,
            cmdline: ARGS,
        },
        Entry {
            name: "b",
            kernel: Kernel::Good,
            cmdline: "console=ttyAMA0 panic=-1 rdinit=/nonexistent",
        },
    ];
    let a = state(1, "a", None, Some(("b", 1)));
    // What B would say if it could be read: boot b, three tries.
    let b = state(2, "b", None, Some(("b", 3))).encode().unwrap();

    rig.boot_disk(&entries, &a.encode().unwrap(), &vec![0; STATE_LEN]);
    let boot = rig.boot(true);
    assert!(
        boot.shows("berth: state b ignored") && boot.shows("berth: using state a"),
        "zeroed:\n{}",
        boot.serial
    );
    assert_eq!(boot.entry(), Some("b"), "zeroed:\n{}", boot.serial);
    let (copy_a, copy_b, _) = rig.state();
    let mut taken = a.successor();
    taken.trial = Some(Trial {
        entry: name("b"),
        tries_left: 0,
    });
    assert_eq!(
        (copy_a, copy_b),
        (Some(a), Some(taken)),
        "zeroed: the try was written over B"
    );

    let torn = b[..STATE_LEN / 2].to_vec();
    rig.boot_disk(&entries, &a.encode().unwrap(), &torn);
    let boot = rig.boot(true);
    assert!(
        boot.shows("berth: state b ignored")
            && boot.shows("berth: using state a")
            && boot.shows("berth: state b is not a 4096-byte file; not booting the trial b"),
        "torn:\n{}",
        boot.serial
    );
    assert_eq!(boot.entry(), Some("a"), "torn:\n{}", boot.serial);
    assert!(boot.reached_init(), "torn:\n{}", boot.serial);
    assert_eq!(
        (rig.read_copy(StateCopy::A), rig.read_copy(StateCopy::B)),
        (a.encode().unwrap(), torn),
        "torn: nothing written"
    );
    rig.report("uboot_ignores_a_zeroed_or_torn_state_copy");
}
