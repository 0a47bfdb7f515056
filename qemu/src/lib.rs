//! The root and VM tiers of the Berth test suite, and the harness the VM tier uses.
//!
//! Everything here runs the built binaries (`cargo build --workspace` and
//! `ci/check-init.sh` first, as `ci/test.sh` does) against real inputs that `ci/`
//! scripts prepare outside git:
//!
//! - `tests/rootfs.rs`: a Debian bookworm `debootstrap --variant=minbase` tree
//!   (`ci/fetch-rootfs.sh`) committed and checked out. Needs root.
//! - `tests/namespace_boot.rs`: berth-init as PID 1 of a PID+mount namespace, in both
//!   boot modes. Needs root.
//! - `tests/boot.rs`: disk images from `berth-image disk` booted under QEMU (TCG) on
//!   `x86_64` and `aarch64` with Debian's kernels (`ci/fetch-kernels.sh`). Needs root.
//!   Also the loader boards: `uefi-x86_64` (OVMF, systemd-boot) and `qemu-aarch64-uboot`
//!   (U-Boot's distro boot, `boot.scr` and the loader state on the disk's FAT partition).
//! - `tests/qemu_command.rs`: `berth-image qemu`, run from outside the repository as
//!   `berth-image disk` suggests, boots an image to its serial console. Needs root.
//! - `tests/uboot.rs`: Debian's U-Boot (`ci/fetch-loaders.sh`) as QEMU's `-bios` on
//!   `aarch64`, booting entries of a FAT boot partition with `image/uboot/boot.cmd` and
//!   counting a trial's tries in the loader state. Needs root.
//!
//! A test that cannot run here (not root, a cache missing) says so and passes, unless
//! `BERTH_STRICT=1` (set by `ci/test.sh`) makes a missing prerequisite a failure.
#![forbid(unsafe_code)]
#![allow(clippy::missing_panics_doc, clippy::missing_errors_doc)] // test harness: panics are failures

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod guest;
pub mod logwrites;

/// One QEMU board under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The board name (`boards/<board>/`).
    pub board: &'static str,
    /// Debian's architecture name.
    pub debian_arch: &'static str,
}

/// Both boards.
pub const TARGETS: [Target; 2] = [
    Target {
        board: "qemu-x86_64",
        debian_arch: "amd64",
    },
    Target {
        board: "qemu-aarch64",
        debian_arch: "arm64",
    },
];

/// The workspace's root directory.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Where `ci/` scripts cache kernels, busybox and root filesystems (`BERTH_CACHE`, else
/// `/var/cache/berth`).
pub fn cache() -> PathBuf {
    std::env::var_os("BERTH_CACHE").map_or_else(|| PathBuf::from("/var/cache/berth"), PathBuf::from)
}

/// Why the VM tier cannot run here, if it cannot: not root, or a prerequisite missing.
pub fn missing_prerequisite(t: Target) -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("needs root".into());
    }
    let triple = if t.debian_arch == "amd64" {
        "x86_64"
    } else {
        "aarch64"
    };
    let checks = [
        (
            cache().join("debian").join(t.debian_arch).join(".complete"),
            "run ci/fetch-kernels.sh",
        ),
        (
            workspace().join(format!(
                "target/{triple}-unknown-linux-musl/device/berth-init"
            )),
            "run ci/check-init.sh",
        ),
        // The agent, which the test root filesystems carry as /usr/bin/berth
        // (qemu/rootfs/make-rootfs.sh leaves it out when it is not built, and the
        // update scenarios would then fail deep inside the guest).
        (
            workspace().join(format!("target/{triple}-unknown-linux-musl/device/berth")),
            "run ci/check-init.sh",
        ),
        (
            workspace().join("target/debug/berth-image"),
            "run cargo build --workspace",
        ),
    ];
    for (path, fix) in checks {
        if !path.exists() {
            return Some(format!("{} is missing ({fix})", path.display()));
        }
    }
    let loaders = cache()
        .join("debian")
        .join(t.debian_arch)
        .join("loaders/.complete");
    if t.board.starts_with("uefi-") && !loaders.exists() {
        return Some(format!(
            "{} is missing (run ci/fetch-loaders.sh)",
            loaders.display()
        ));
    }
    if t.board.ends_with("-uboot") {
        return missing_for_uboot();
    }
    None
}

/// What a U-Boot board needs besides the rest: Debian's u-boot-qemu and the tools that
/// make its boot partition.
fn missing_for_uboot() -> Option<String> {
    let u_boot = cache().join("loaders/u-boot-qemu/.complete");
    if !u_boot.exists() {
        return Some(format!(
            "{} is missing (run ci/fetch-loaders.sh)",
            u_boot.display()
        ));
    }
    ["mkimage", "mkfs.vfat", "mcopy"]
        .into_iter()
        .find(|tool| Command::new(tool).arg("-V").output().is_err())
        .map(|tool| format!("{tool} is missing (run ci/setup.sh)"))
}

impl Target {
    /// The Rust target triple of its device binaries.
    pub fn triple(self) -> &'static str {
        if self.debian_arch == "amd64" {
            "x86_64-unknown-linux-musl"
        } else {
            "aarch64-unknown-linux-musl"
        }
    }

    /// Its kernel package, unpacked by `ci/fetch-kernels.sh` (`--kernel-dir`).
    pub fn kernel_dir(self) -> PathBuf {
        cache().join("debian").join(self.debian_arch).join("kernel")
    }

    /// berth-init for it, as `ci/check-init.sh` builds it (`--init`).
    pub fn init(self) -> PathBuf {
        workspace()
            .join("target")
            .join(self.triple())
            .join("device/berth-init")
    }

    /// Where `ci/fetch-loaders.sh` unpacked its firmware and loader (`--loader-dir`):
    /// the board files name them relative to it.
    pub fn loader_dir(self) -> PathBuf {
        if self.board.ends_with("-uboot") {
            cache().join("loaders/u-boot-qemu")
        } else {
            cache()
                .join("debian")
                .join(self.debian_arch)
                .join("loaders")
        }
    }

    /// `berth-image disk`'s arguments for the inputs above.
    pub fn disk_inputs(self) -> Vec<std::ffi::OsString> {
        vec![
            "--kernel-dir".into(),
            self.kernel_dir().into(),
            "--init".into(),
            self.init().into(),
            "--loader-dir".into(),
            self.loader_dir().into(),
        ]
    }
}

/// Debian's U-Boot for QEMU's arm64 `virt` machine (`ci/fetch-loaders.sh`).
pub fn u_boot() -> PathBuf {
    cache().join("loaders/u-boot-qemu/usr/lib/u-boot/qemu_arm64/u-boot.bin")
}

/// The UEFI PC board: OVMF and systemd-boot (`boards/uefi-x86_64`).
pub const UEFI_X86_64: Target = Target {
    board: "uefi-x86_64",
    debian_arch: "amd64",
};

/// The arm64 board that boots through U-Boot and `boot.scr` (`boards/qemu-aarch64-uboot`).
pub const UBOOT_AARCH64: Target = Target {
    board: "qemu-aarch64-uboot",
    debian_arch: "arm64",
};

/// Returns true (after saying why) if the VM tier must be skipped for `t`; panics
/// instead under `BERTH_STRICT=1`.
pub fn skip(t: Target, test: &str) -> bool {
    let Some(why) = missing_prerequisite(t) else {
        return false;
    };
    testkit::missing(&format!("{test} on {}", t.board), &why);
    true
}

/// Runs a command that must succeed; returns its stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A repository with the test commits for one architecture.
#[derive(Debug)]
pub struct Images {
    /// The target.
    pub target: Target,
    /// Scratch directory (removed on drop).
    pub dir: tempfile::TempDir,
    /// The repository.
    pub repo: PathBuf,
    /// Commit of a working root filesystem (release `good-1`).
    pub good: String,
    /// Another working one (release `good-2`).
    pub good2: String,
    /// Commit whose init exits at once (kernel panic, reboot); release `good-3`, so
    /// it is newer than the others and an update to it is accepted.
    pub crash: String,
    /// The signing key pair's directory (`berth.key`, `berth.pub`); every test rootfs
    /// trusts `berth.pub`.
    pub keys: PathBuf,
    /// Commit without `/sbin/init`.
    pub noinit: String,
}

impl Images {
    /// Builds the test root filesystems with `qemu/rootfs/make-rootfs.sh` and commits them.
    pub fn build(target: Target) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-qemu-")
            .tempdir_in(workspace().join("target"))
            .unwrap();
        let repo = dir.path().join("repo");
        let keys = dir.path().join("keys");
        run(Command::new(bin("berth-image"))
            .args(["keygen", "--out"])
            .arg(&keys));
        let commit = |release: &str, variant: &str| {
            let tree = dir.path().join(release);
            run(Command::new("bash")
                .arg(workspace().join("qemu/rootfs/make-rootfs.sh"))
                .args([target.debian_arch])
                .arg(&tree)
                .args([release, variant]));
            let trusted = tree.join("usr/lib/berth/keys");
            std::fs::create_dir_all(&trusted).unwrap();
            std::fs::copy(keys.join("berth.pub"), trusted.join("berth.pub")).unwrap();
            run(Command::new(bin("berth-image"))
                .args(["commit", "--repo"])
                .arg(&repo)
                .arg("--tree")
                .arg(&tree)
                .args(["--version", release]))
            .trim()
            .to_owned()
        };
        let good = commit("good-1", "");
        let good2 = commit("good-2", "");
        let crash = commit("good-3", "crash");
        let noinit = commit("noinit-1", "noinit");
        Self {
            target,
            dir,
            repo,
            good,
            good2,
            crash,
            keys,
            noinit,
        }
    }

    /// Builds a disk image for `layout` (`berth-image disk` arguments after `--commit`),
    /// in its own directory named `name`.
    pub fn disk(&self, name: &str, layout: &[&str]) -> Disk {
        let d = self.dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        let out = run(Command::new(bin("berth-image"))
            .args(["disk", "--json", "--board", self.target.board, "--repo"])
            .arg(&self.repo)
            .args(self.target.disk_inputs())
            .args(layout)
            .arg("-o")
            .arg(d.join("disk.img")));
        let info: Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("berth-image disk --json ({e}): {out}"));
        Disk { info, dir: d }
    }
}

impl Images {
    /// Commits the test rootfs (release `release`) completed by `berth-image initramfs`
    /// with the kernel package's kernel and `berthtest=write` as its kernel arguments.
    /// Returns the commit, `show --json`'s kernel set, and the tree.
    pub fn kernel_set_commit(&self, release: &str) -> (String, Value, PathBuf) {
        self.kernel_set_commit_with(release, "berthtest=write")
    }

    /// As [`Images::kernel_set_commit`], with `kargs` as the kernel arguments.
    pub fn kernel_set_commit_with(&self, release: &str, kargs: &str) -> (String, Value, PathBuf) {
        let (im, t) = (self, self.target);
        let tree = im.dir.path().join(release);
        run(Command::new("bash")
            .arg(workspace().join("qemu/rootfs/make-rootfs.sh"))
            .arg(t.debian_arch)
            .arg(&tree)
            .args([release, ""]));
        let trusted = tree.join("usr/lib/berth/keys");
        std::fs::create_dir_all(&trusted).unwrap();
        std::fs::copy(im.keys.join("berth.pub"), trusted.join("berth.pub")).unwrap();
        // The test rootfs has no kernel of its own: take the package's.
        let out = run(Command::new(bin("berth-image"))
            .args(["initramfs", "--json", "--board", t.board, "--root"])
            .arg(&tree)
            .arg("--kernel-dir")
            .arg(t.kernel_dir())
            .arg("--init")
            .arg(t.init()));
        let made: Value = serde_json::from_str(&out).unwrap();
        assert!(made["modules"].as_u64().unwrap() >= 5, "{made}");
        // The scenario comes from the deployment's own kernel arguments.
        std::fs::write(tree.join("usr/lib/berth/kargs"), format!("{kargs}\n")).unwrap();
        let commit = run(Command::new(bin("berth-image"))
            .args(["commit", "--repo"])
            .arg(&im.repo)
            .arg("--tree")
            .arg(&tree)
            .args(["--version", release]))
        .trim()
        .to_owned();
        let show: Value = serde_json::from_str(&run(Command::new(bin("berth-image"))
            .args(["show", "--json", "--repo"])
            .arg(&im.repo)
            .arg(&commit)))
        .unwrap();
        let kset = show["kernel_set"].clone();
        assert_eq!(kset["version"], made["version"], "{show}");
        assert_eq!(kset["kargs"], kargs, "{show}");
        (commit, kset, tree)
    }

    /// A "USB stick": an ext4 image holding `update.berth`, made by `berth-image delta`
    /// from `from` (or a full update) to `to`.
    pub fn usb_stick(&self, name: &str, from: Option<&str>, to: &str) -> PathBuf {
        let d = self.dir.path().join(name);
        std::fs::create_dir_all(d.join("files")).unwrap();
        let mut cmd = Command::new(bin("berth-image"));
        cmd.args(["delta", "--repo"]).arg(&self.repo);
        match from {
            Some(f) => cmd.args(["--from", f]),
            None => cmd.arg("--empty"),
        };
        cmd.args(["--to", to, "--key"])
            .arg(self.keys.join("berth.key"))
            .arg("-o")
            .arg(d.join("files/update.berth"));
        run(&mut cmd);
        let img = d.join("usb.img");
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-d"])
            .arg(d.join("files"))
            .arg(&img)
            .arg("32M"));
        img
    }
}

/// The path of a workspace binary built by `cargo build --workspace`.
pub fn bin(name: &str) -> PathBuf {
    workspace().join("target/debug").join(name)
}

/// A built disk image and what `berth-image disk --json` said about it.
#[derive(Debug)]
pub struct Disk {
    /// The JSON output.
    pub info: Value,
    /// Its directory.
    pub dir: PathBuf,
}

/// One boot's result.
#[derive(Debug)]
pub struct Boot {
    /// Everything on the serial console.
    pub serial: String,
    /// Wall time from QEMU start to exit.
    pub wall: Duration,
}

/// QEMU boots one at a time: the machine has two cores, and parallel TCG guests slow
/// each other down and blur the timings.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

impl Disk {
    /// The image file.
    pub fn image(&self) -> PathBuf {
        PathBuf::from(self.info["disk"].as_str().unwrap_or_default())
    }

    /// The deployment name of commit `c`.
    pub fn name_of(&self, c: &str) -> String {
        c[..16].to_owned()
    }

    /// Boots the image once (changes persist in the image), with `extra` added to the
    /// kernel command line; a hard timeout of 180 s.
    pub fn boot(&self, extra: &str) -> Boot {
        self.boot_with(extra, None)
    }

    /// Like [`Disk::boot`], with a network card on QEMU's user network, `restrict=on` (no
    /// route anywhere), whose only way out is 10.0.2.100:8080, forwarded to
    /// 127.0.0.1:`port` on the host (one `busybox nc` per connection).
    pub fn boot_net(&self, extra: &str, port: u16) -> Boot {
        let nc = cache().join("debian/amd64/busybox/bin/busybox");
        self.run_qemu(
            extra,
            &[
                "-netdev".into(),
                format!(
                    "user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:8080-cmd:{} nc 127.0.0.1 {port}",
                    nc.display()
                ),
                "-device".into(),
                "virtio-net-pci,netdev=n0".into(),
            ],
        )
    }

    /// Like [`Disk::boot`], with `usb` attached as a second, read-only disk (`/dev/vdb`).
    pub fn boot_with(&self, extra: &str, usb: Option<&Path>) -> Boot {
        let mut more = Vec::new();
        if let Some(u) = usb {
            let device = self.info["qemu"]
                .as_array()
                .and_then(|a| a.last())
                .and_then(|d| d.as_str())
                .and_then(|d| d.split(',').next())
                .unwrap_or("virtio-blk-pci")
                .to_owned();
            more.extend([
                "-drive".into(),
                format!("file={},if=none,format=raw,id=d1,readonly=on", u.display()),
            ]);
            more.extend(["-device".into(), format!("{device},drive=d1")]);
        }
        self.run_qemu(extra, &more)
    }

    fn run_qemu(&self, extra: &str, more: &[String]) -> Boot {
        let mut argv: Vec<String> = self.info["qemu"]
            .as_array()
            .expect("a QEMU board")
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .collect();
        if let Some(i) = argv.iter().position(|a| a == "-append") {
            argv[i + 1] = format!("{} {extra}", argv[i + 1]);
        }
        argv.extend(more.iter().cloned());
        let _turn = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let start = Instant::now();
        let out = Command::new("timeout")
            .args(["-k", "5", "180"])
            .args(&argv)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", argv[0]));
        let wall = start.elapsed();
        let mut serial = String::from_utf8_lossy(&out.stdout).into_owned();
        serial.push_str(&String::from_utf8_lossy(&out.stderr));
        assert_ne!(
            out.status.code(),
            Some(124),
            "QEMU timed out after 180 s:\n{serial}"
        );
        Boot { serial, wall }
    }

    /// Boots the image until `needle` shows on the console, then cuts the power (kills
    /// QEMU), as a watchdog or a person would for a machine stuck in its firmware; a
    /// hard limit of 180 s. Panics if the needle never shows.
    pub fn boot_until(&self, needle: &str) -> Boot {
        let argv: Vec<String> = self.info["qemu"]
            .as_array()
            .expect("a QEMU board")
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .collect();
        let _turn = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let log = self.dir.join("console-until.log");
        let out = std::fs::File::create(&log).unwrap();
        let start = Instant::now();
        let mut child = Command::new("timeout")
            .args(["-k", "5", "180"])
            .args(&argv)
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("run {}: {e}", argv[0]));
        let serial = loop {
            let text =
                String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).into_owned();
            if text.contains(needle) {
                // SIGTERM to `timeout`, which passes it on to QEMU and exits with it.
                if let Some(pid) = rustix::process::Pid::from_raw(child.id().cast_signed()) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                }
                let _ = child.wait();
                break text;
            }
            if let Ok(Some(_)) = child.try_wait() {
                let text =
                    String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).into_owned();
                assert!(
                    text.contains(needle),
                    "QEMU ended before {needle:?}:\n{text}"
                );
                break text;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        Boot {
            serial,
            wall: start.elapsed(),
        }
    }

    /// The names in directory `dir` of the disk's first partition (the ESP or U-Boot's
    /// boot partition, at 1 MiB), read with mtools, sorted.
    pub fn boot_partition_names(&self, dir: &str) -> Vec<String> {
        let out = run(Command::new("mdir")
            .args(["-b", "-i"])
            .arg(format!("{}@@1M", self.image().display()))
            .arg(format!("::/{dir}")));
        let mut names: Vec<String> = out
            .lines()
            .filter_map(|l| l.trim().trim_end_matches('/').rsplit('/').next())
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect();
        names.sort();
        names
    }

    /// Overwrites `path` on the disk's first partition (at 1 MiB) with zeros of the
    /// same length, with mtools: a file the loader finds but cannot use.
    pub fn overwrite_boot_file(&self, path: &str) {
        let part = format!("{}@@1M", self.image().display());
        let tmp = self.dir.join("overwrite.bin");
        run(Command::new("mcopy")
            .args(["-n", "-o", "-i", &part])
            .arg(format!("::/{path}"))
            .arg(&tmp));
        let len = std::fs::metadata(&tmp).unwrap().len();
        std::fs::write(&tmp, vec![0u8; usize::try_from(len).unwrap()]).unwrap();
        run(Command::new("mcopy")
            .args(["-n", "-o", "-i", &part])
            .arg(&tmp)
            .arg(format!("::/{path}")));
    }

    /// Flips one byte of a file on the sysroot filesystem, in the disk image, without
    /// mounting it: the file's first block is found with debugfs.
    pub fn corrupt(&self, path: &str) {
        let part = self.dir.join("sysroot.ext4");
        run(Command::new("dd")
            .arg(format!("if={}", self.image().display()))
            .arg(format!("of={}", part.display()))
            .args(["bs=1M", "skip=1", "status=none"]));
        let block: u64 = run(Command::new("debugfs")
            .arg("-R")
            .arg(format!("bmap {path} 0"))
            .arg(&part))
        .trim()
        .parse()
        .expect("a block number");
        let stats = run(Command::new("debugfs").args(["-R", "stats"]).arg(&part));
        let bs: u64 = stats
            .lines()
            .find_map(|l| l.strip_prefix("Block size:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("block size");
        std::fs::remove_file(&part).unwrap();
        let offset = (1 << 20) + block * bs + 100;
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.image())
            .unwrap();
        let mut b = [0u8; 1];
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(offset)).unwrap();
        std::io::Read::read_exact(&mut f, &mut b).unwrap();
        b[0] ^= 0xff;
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(offset)).unwrap();
        std::io::Write::write_all(&mut f, &b).unwrap();
    }
}

impl Boot {
    /// The values of `BERTH-TEST: <key> <value>` lines.
    pub fn test_values(&self, key: &str) -> Vec<&str> {
        let prefix = format!("BERTH-TEST: {key} ");
        self.serial
            .lines()
            .filter_map(|l| l.trim_end_matches('\r').strip_prefix(prefix.as_str()))
            .collect()
    }

    /// The first value of `key`, or a panic that shows the serial log.
    pub fn value(&self, key: &str) -> &str {
        self.test_values(key)
            .first()
            .copied()
            .unwrap_or_else(|| panic!("no \"{key}\" line on the console:\n{}", self.serial))
    }

    /// `/run/berth/boot.json` as the booted system printed it.
    pub fn boot_json(&self) -> Value {
        let text = self.value("bootjson");
        serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("boot.json ({e}): {text}\n{}", self.serial))
    }

    /// berth-init's own time (ms) from its console line, if it booted a deployment.
    pub fn shim_ms(&self) -> Option<f64> {
        let line = self
            .serial
            .lines()
            .find(|l| l.contains("berth-init: booting "))?;
        let rest = line.split("shim's own time ").nth(1)?;
        rest.split(' ').next()?.parse().ok()
    }

    /// Whether the console shows `needle`.
    pub fn shows(&self, needle: &str) -> bool {
        self.serial.contains(needle)
    }
}
