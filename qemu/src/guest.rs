//! A bare `x86_64` guest for tests that run the device build of `berth` against virtual
//! disks: an initramfs of busybox, Debian's kernel modules, chosen host programs (with
//! their shared libraries) and a shell script as `/init`, booted with the PVH `vmlinux`
//! under TCG. The script reports with `KEY value` lines on the serial console.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{cache, run, workspace};

/// An initramfs tree being put together.
#[derive(Debug)]
pub struct Initramfs {
    root: PathBuf,
}

impl Initramfs {
    /// busybox, and the modules `modules` need (dependencies first, in
    /// `/modules.order`), in `dir/initramfs`.
    pub fn new(dir: &Path, modules: &[&str]) -> Self {
        let root = dir.join("initramfs");
        for d in [
            "bin",
            "sbin",
            "proc",
            "sys",
            "dev",
            "mnt",
            "usb",
            "run",
            "tmp",
            "lib/modules",
        ] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::copy(
            cache().join("debian/amd64/busybox/bin/busybox"),
            root.join("bin/busybox"),
        )
        .unwrap();
        let kernel = cache().join("debian/amd64/kernel");
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
            .args(modules));
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
        Self { root }
    }

    /// The host's program at `path`, at the same path, with the shared libraries `ldd`
    /// names.
    pub fn host_program(&self, path: &str) -> &Self {
        let libs = run(Command::new("ldd").arg(path));
        for lib in libs
            .split_whitespace()
            .filter(|w| w.starts_with('/') && Path::new(w).exists())
            .chain([path])
        {
            let to = self.root.join(lib.trim_start_matches('/'));
            fs::create_dir_all(to.parent().unwrap()).unwrap();
            fs::copy(lib, &to).unwrap();
        }
        self
    }

    /// The device builds of `berth` and `berth-init` (`ci/check-init.sh`), as
    /// `/bin/berth` and `/bin/berth-init`.
    pub fn berth(&self) -> &Self {
        for name in ["berth", "berth-init"] {
            fs::copy(
                workspace()
                    .join("target/x86_64-unknown-linux-musl/device")
                    .join(name),
                self.root.join("bin").join(name),
            )
            .unwrap();
        }
        self
    }

    /// A file at `rel` holding `bytes`.
    pub fn file(&self, rel: &str, bytes: &[u8]) -> &Self {
        let to = self.root.join(rel);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::write(to, bytes).unwrap();
        self
    }

    /// Packs the tree with `script` as `/init` (run by busybox `sh`, after the applets
    /// are linked, proc, sys and devtmpfs mounted and the modules loaded); returns the
    /// cpio archive's path.
    pub fn pack(&self, script: &str) -> PathBuf {
        let init = format!(
            "#!/bin/busybox sh\n/bin/busybox --install -s /bin\n\
             mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev\n\
             for m in $(cat /modules.order); do insmod /lib/modules/$m 2>/dev/null; done\n\
             {script}\npoweroff -f\n"
        );
        fs::write(self.root.join("init"), init).unwrap();
        run(Command::new("chmod").arg("755").arg(self.root.join("init")));
        let cpio = self.root.with_extension("cpio");
        run(Command::new("sh").arg("-c").arg(format!(
            "cd {} && find . | cpio -o -H newc --quiet > {}",
            self.root.display(),
            cpio.display()
        )));
        cpio
    }
}

/// A virtual disk: its image and whether the guest may write to it.
#[derive(Debug, Clone, Copy)]
pub struct Drive<'a> {
    /// The raw image.
    pub image: &'a Path,
    /// Attached read-only.
    pub readonly: bool,
}

/// What one guest run printed, and its wall time.
#[derive(Debug)]
pub struct Run {
    /// The serial console.
    pub serial: String,
    /// QEMU's start to exit.
    pub wall: Duration,
}

impl Run {
    /// The value of the first console line `KEY value` (which may follow the firmware's
    /// text on its line), or a panic showing the console.
    pub fn value(&self, key: &str) -> &str {
        let prefix = format!("{key} ");
        self.serial
            .lines()
            .find_map(|l| Some(l.trim_end_matches('\r').split_once(prefix.as_str())?.1))
            .unwrap_or_else(|| panic!("no {key:?} line on the console:\n{}", self.serial))
    }
}

/// Boots `cpio` on Debian's amd64 kernel with `mem_mib` of memory and `drives` as
/// `/dev/vda`, `/dev/vdb`, …; a hard limit of `limit`.
pub fn boot_x86_64(cpio: &Path, mem_mib: u32, drives: &[Drive<'_>], limit: Duration) -> Run {
    let kernel = cache().join("debian/amd64/kernel/boot/vmlinux");
    let mut c = Command::new("timeout");
    c.args([
        "-k",
        "5",
        &limit.as_secs().to_string(),
        "qemu-system-x86_64",
    ])
    .args(["-M", "q35", "-accel", "tcg", "-cpu", "max", "-smp", "1"])
    .args([
        "-m",
        &mem_mib.to_string(),
        "-nographic",
        "-no-reboot",
        "-kernel",
    ])
    .arg(&kernel)
    .arg("-initrd")
    .arg(cpio)
    .args(["-append", "console=ttyS0 panic=-1 quiet"]);
    for (i, d) in drives.iter().enumerate() {
        c.arg("-drive").arg(format!(
            "file={},if=none,format=raw,id=d{i},cache=unsafe{}",
            d.image.display(),
            if d.readonly { ",readonly=on" } else { "" }
        ));
        c.args(["-device", &format!("virtio-blk-pci,drive=d{i}")]);
    }
    // One guest at a time, as Disk::boot: parallel TCG guests slow each other down.
    let _turn = crate::ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let start = Instant::now();
    let out = c.stdin(Stdio::null()).output().unwrap();
    let wall = start.elapsed();
    let mut serial = String::from_utf8_lossy(&out.stdout).into_owned();
    serial.push_str(&String::from_utf8_lossy(&out.stderr));
    assert_ne!(
        out.status.code(),
        Some(124),
        "QEMU timed out after {limit:?}:\n{serial}"
    );
    Run { serial, wall }
}
