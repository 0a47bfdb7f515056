//! Initramfs mode: pseudo filesystems, kernel modules, finding and mounting the sysroot.

use alloc::vec::Vec;

use format::cmdline::RootSpec;
use format::probe;
use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::MountFlags;

use crate::InitError;
use crate::log::{Log, boottime_ns};

/// The list of modules to load, one absolute `.ko` path per line, in load order
/// (dependencies first), written into the initramfs by `berth-image`.
pub const MODULES_LIST: &str = "/etc/berth/modules";

/// Kernel command-line parameters baked into the initramfs (for example
/// `berth.root=LABEL=berth-root`), read before `/proc/cmdline`, which overrides them.
pub const BAKED_CMDLINE: &str = "/etc/berth/cmdline";

/// Where the sysroot is mounted.
pub const SYSROOT: &[u8] = b"/sysroot";

/// Mounts devtmpfs on /dev, proc on /proc and sysfs on /sys (creating the directories),
/// leaving any that are already mounted.
pub fn mount_pseudo(log: &Log) {
    for (src, dir, fstype) in [
        ("devtmpfs", "/dev", "devtmpfs"),
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
    ] {
        let _exists = rustix::fs::mkdir(dir, Mode::from_raw_mode(0o755));
        match rustix::mount::mount(
            src,
            dir,
            fstype,
            MountFlags::NOSUID | MountFlags::NOEXEC,
            None,
        ) {
            Ok(()) | Err(Errno::BUSY) => {}
            Err(e) => log.error(b"mount", dir.as_bytes(), e),
        }
    }
}

/// Makes sure fds 0, 1 and 2 are open, on `/dev/console`: a kernel that starts init
/// from a root whose `/dev` was empty leaves them closed, and the real init inherits them.
/// `open` returns the lowest free fd, so each open fills one closed slot; the first fd
/// of 3 or above means all three are open, and is closed again.
pub fn ensure_console() {
    use rustix::fd::{AsRawFd, IntoRawFd};
    for _ in 0..3 {
        match rustix::fs::open("/dev/console", OFlags::RDWR | OFlags::NOCTTY, Mode::empty()) {
            // Kept open on purpose (not CLOEXEC): it is now stdin, stdout or stderr.
            Ok(fd) if fd.as_raw_fd() < 3 => {
                let _stdio = fd.into_raw_fd();
            }
            Ok(_) | Err(_) => break,
        }
    }
}

/// Reads a small file whole (at most `max` bytes).
pub fn read_small(path: &[u8], max: usize) -> Result<Vec<u8>, Errno> {
    let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    read_fd(&fd, max)
}

fn read_fd(fd: &OwnedFd, max: usize) -> Result<Vec<u8>, Errno> {
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    while out.len() < max {
        match rustix::io::read(fd, &mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n.min(max - out.len())]),
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Loads the modules in [`MODULES_LIST`] in order with `finit_module`. A module that is
/// already loaded (`EEXIST`) is fine; other errors are logged and the rest still load.
/// Returns how many loaded and the time it took.
pub fn load_modules(log: &Log) -> (u32, u64) {
    let start = boottime_ns();
    let Ok(list) = read_small(MODULES_LIST.as_bytes(), 64 * 1024) else {
        return (0, 0);
    };
    let mut loaded = 0;
    for path in list
        .split(|&c| c == b'\n')
        .map(<[u8]>::trim_ascii)
        .filter(|l| !l.is_empty() && !l.starts_with(b"#"))
    {
        let fd = match rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) => {
                log.error(b"module", path, e);
                continue;
            }
        };
        match rustix::system::finit_module(&fd, c"", 0) {
            Ok(()) => loaded += 1,
            Err(Errno::EXIST) => {}
            Err(e) => log.error(b"module", path, e),
        }
    }
    (loaded, boottime_ns().saturating_sub(start))
}

/// Finds the device named by `spec` now, if present.
fn find(spec: &RootSpec<'_>) -> Option<Vec<u8>> {
    match spec {
        RootSpec::Path(p) => rustix::fs::stat(*p).is_ok().then(|| p.to_vec()),
        RootSpec::Label(label) => scan_block(|dev, _| {
            let mut sb = [0u8; probe::EXT4_SUPERBLOCK_NEEDED];
            pread_exact(dev, probe::EXT4_SUPERBLOCK_OFFSET, &mut sb).ok()?;
            (probe::ext4_label(&sb)? == *label).then_some(())
        }),
        RootSpec::PartUuid(uuid) => scan_block(|_, sys| {
            partuuid_of(sys)
                .filter(|u| u.eq_ignore_ascii_case(uuid))
                .map(drop)
        }),
    }
}

fn pread_exact(path: &[u8], offset: u64, buf: &mut [u8]) -> Result<(), Errno> {
    let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    let mut done = 0;
    while done < buf.len() {
        match rustix::io::pread(&fd, &mut buf[done..], offset + done as u64) {
            Ok(0) => return Err(Errno::IO),
            Ok(n) => done += n,
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Calls `matches(dev_path, sys_dir)` for every block device in /sys/class/block; returns
/// the first `/dev/<name>` it accepts.
fn scan_block(mut matches: impl FnMut(&[u8], &[u8]) -> Option<()>) -> Option<Vec<u8>> {
    let dir = rustix::fs::open(
        "/sys/class/block",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let mut entries = rustix::fs::Dir::read_from(&dir).ok()?;
    while let Some(Ok(e)) = entries.read() {
        let name = e.file_name().to_bytes();
        if name.starts_with(b".") {
            continue;
        }
        let dev = crate::steps::join(&[b"/dev", name]);
        let sys = crate::steps::join(&[b"/sys/class/block", name]);
        if matches(&dev, &sys).is_some() {
            return Some(dev);
        }
    }
    None
}

/// The PARTUUID of the partition whose sysfs directory is `sys`: reads the GPT of its
/// parent disk (the sysfs directory's parent, e.g. `.../block/vda/vda2`).
fn partuuid_of(sys: &[u8]) -> Option<[u8; 36]> {
    let partn = read_small(&crate::steps::join(&[sys, b"partition"]), 16).ok()?;
    let index = format::cmdline::parse_u32(partn.trim_ascii())?.checked_sub(1)?;
    // /sys/class/block/vda2 is a symlink into .../block/vda/vda2: the disk is the parent.
    let disk_sys = crate::steps::join(&[sys, b".."]);
    let uevent = read_small(&crate::steps::join(&[&disk_sys, b"uevent"]), 4096).ok()?;
    let devname = uevent
        .split(|&c| c == b'\n')
        .find_map(|l| l.strip_prefix(b"DEVNAME="))?;
    let disk = crate::steps::join(&[b"/dev", devname]);
    let lbs = read_small(
        &crate::steps::join(&[&disk_sys, b"queue/logical_block_size"]),
        16,
    )
    .ok()
    .and_then(|b| format::cmdline::parse_u32(b.trim_ascii()))
    .unwrap_or(512);
    let mut h = [0u8; 92];
    pread_exact(&disk, u64::from(lbs), &mut h).ok()?;
    let header = probe::gpt_header(&h)?;
    if index >= header.count {
        return None;
    }
    let mut entry = [0u8; 128];
    let off = header
        .entries_lba
        .checked_mul(u64::from(lbs))?
        .checked_add(u64::from(index) * u64::from(header.entry_size))?;
    pread_exact(&disk, off, &mut entry).ok()?;
    probe::gpt_entry_partuuid(&entry)
}

/// Waits up to `secs` seconds for the device named by `spec`, polling every 20 ms.
pub fn wait_for_root(spec: &RootSpec<'_>, secs: u32) -> Result<Vec<u8>, InitError> {
    let deadline = boottime_ns().saturating_add(u64::from(secs) * 1_000_000_000);
    loop {
        if let Some(dev) = find(spec) {
            return Ok(dev);
        }
        if boottime_ns() >= deadline {
            return Err(InitError::new("wait for sysroot device", Errno::NODEV));
        }
        let _ = rustix::thread::nanosleep(&rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 20_000_000,
        });
    }
}

/// Mounts the sysroot device read-write at [`SYSROOT`].
pub fn mount_sysroot(dev: &[u8], fstype: &[u8]) -> Result<(), InitError> {
    let _exists = rustix::fs::mkdir(SYSROOT, Mode::from_raw_mode(0o755));
    rustix::mount::mount(dev, SYSROOT, fstype, MountFlags::empty(), None)
        .map_err(|e| InitError::new("mount sysroot", e))
}
