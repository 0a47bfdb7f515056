//! The device sysroot on disk: reading and durably writing the boot record's two
//! copies, and probing deployments. Shared by berth-init (which decrements trials and
//! rolls back) and berth (which starts trials, marks them good and rolls back by hand),
//! so both follow one durability discipline. Everything is relative to the sysroot's
//! directory fd. `no_std` with `alloc`, for berth-init.
//!
//! See `docs/FORMAT.md`, "Sysroot layout" and "Boot record".
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

use alloc::vec::Vec;

use format::record::{self, DeploymentName, RECORD_LEN, Record, RecordCopy};
use rustix::fd::AsFd as _;
use rustix::fd::OwnedFd;
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// A failed step: what was being done, and the errno. `Copy`, no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SysrootError {
    /// The step (`"create record.tmp"`, `"fsync berth/boot"`, …).
    pub step: &'static str,
    /// The error.
    pub errno: Errno,
}

impl SysrootError {
    /// An error of `step`.
    pub const fn new(step: &'static str, errno: Errno) -> Self {
        Self { step, errno }
    }
}

/// Whether a deployment can be booted, as probed on disk. Its tokens are part of
/// berth-init's boot report, whose schema owns it.
pub use format::bootreport::Bootable;

/// Joins relative path pieces with single slashes.
fn join(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        let p = p.strip_prefix(b"/").unwrap_or(p);
        if !out.is_empty() && out.last() != Some(&b'/') {
            out.push(b'/');
        }
        out.extend_from_slice(p);
    }
    out
}

/// Where the record copies live, relative to the sysroot.
pub const BOOT_DIR: &str = "berth/boot";
/// Where deployments live, relative to the sysroot.
pub const DEPLOY_DIR: &str = "berth/deploy";
/// The marker of a trial whose tries the boot loader counts, relative to the sysroot:
/// the trial's deployment name (`docs/FORMAT.md`, "Loader-counted trials").
pub const LOADER_TRIAL: &str = "berth/boot/loader-trial";
/// The last deployment made the default by a person or a health check, relative to the
/// sysroot: what boots when neither copy of the record is valid (`docs/FORMAT.md`,
/// "Last good deployment").
pub const LAST_GOOD: &str = "berth/boot/last-good";

/// What was found in one copy of the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyState {
    /// The file does not exist.
    Missing,
    /// It exists but does not decode (torn write, bit rot, wrong version).
    Invalid,
    /// It decodes; its generation.
    Valid(u64),
}

/// An open sysroot.
#[derive(Debug)]
pub struct Sysroot {
    fd: OwnedFd,
}

impl Sysroot {
    /// Opens the sysroot directory at `path`.
    pub fn open(path: &[u8]) -> Result<Self, SysrootError> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| SysrootError::new("open sysroot", e))?;
        Ok(Self { fd })
    }

    /// Reads one copy. Anything but a regular file of exactly [`RECORD_LEN`] bytes is
    /// an invalid copy, and nothing here can block: `O_NONBLOCK` so a FIFO (or a
    /// device) in its place opens at once, `O_NOFOLLOW` so a symlink is refused, and the
    /// file type is checked before any read. berth-init runs this as PID 1 and must
    /// never hang.
    /// Reads the small regular file `rel` into `buf`, returning its length. It is opened
    /// `O_NONBLOCK | O_NOFOLLOW | O_NOCTTY` and its type and size checked before any
    /// read, so nothing in its place (a FIFO, a device, a symlink) can block berth-init
    /// or be mistaken for the file; a file that does not fit in `buf` less one byte is
    /// `Invalid`.
    fn read_small(&self, rel: &[u8], buf: &mut [u8]) -> Result<usize, CopyState> {
        let fd = match rustix::fs::openat(
            &self.fd,
            rel,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Err(CopyState::Missing),
            // ELOOP: a symlink; anything else (EACCES, ENXIO, EIO): not readable, which
            // is what invalid means.
            Err(_) => return Err(CopyState::Invalid),
        };
        match rustix::fs::fstat(&fd) {
            Ok(st)
                if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
                    && u64::try_from(st.st_size).is_ok_and(|n| n < buf.len() as u64) => {}
            _ => return Err(CopyState::Invalid),
        }
        // Up to the whole buffer: a file that grew since the fstat shows as too long.
        let mut n = 0;
        while n < buf.len() {
            match rustix::io::read(&fd, &mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(Errno::INTR) => {}
                Err(_) => return Err(CopyState::Invalid),
            }
        }
        if n == buf.len() {
            return Err(CopyState::Invalid);
        }
        Ok(n)
    }

    fn read_copy(&self, copy: RecordCopy) -> (Option<[u8; RECORD_LEN]>, CopyState) {
        let path = join(&[BOOT_DIR.as_bytes(), copy.file_name().as_bytes()]);
        let rel = path.strip_prefix(b"/").unwrap_or(&path);
        // One byte more than a record, to notice a file that is too long.
        let mut buf = [0u8; RECORD_LEN + 1];
        match self.read_small(rel, &mut buf) {
            Ok(RECORD_LEN) => {}
            Ok(_) => return (None, CopyState::Invalid),
            Err(state) => return (None, state),
        }
        let mut out = [0u8; RECORD_LEN];
        out.copy_from_slice(&buf[..RECORD_LEN]);
        match Record::decode(&out) {
            Ok(r) => (Some(out), CopyState::Valid(r.generation)),
            Err(_) => (None, CopyState::Invalid),
        }
    }

    /// The deployment named by `berth/boot/loader-trial`: a trial whose tries the boot
    /// loader counts. `None` when the marker is missing or is anything but a regular
    /// file holding one valid name (and a newline); opened so that nothing in its place
    /// can block.
    pub fn loader_trial(&self) -> Option<DeploymentName> {
        self.read_name(LOADER_TRIAL)
    }

    /// The deployment named by `berth/boot/last-good`, read as [`Sysroot::loader_trial`].
    pub fn last_good(&self) -> Option<DeploymentName> {
        self.read_name(LAST_GOOD)
    }

    /// A small file holding one deployment name (and a newline): `None` unless it is a
    /// regular file of at most 64 bytes holding a valid name.
    fn read_name(&self, rel: &str) -> Option<DeploymentName> {
        let mut buf = [0u8; 65];
        let n = self.read_small(rel.as_bytes(), &mut buf).ok()?;
        let text = buf.get(..n)?;
        let text = text.strip_suffix(b"\n").unwrap_or(text);
        DeploymentName::new(text).ok()
    }

    /// Writes `berth/boot/last-good` = `name`, durably (temporary file, fsync, rename,
    /// fsync of the directory): a power cut leaves the old name or the new one.
    pub fn write_last_good(&self, name: &DeploymentName) -> Result<(), SysrootError> {
        self.write_name("last-good", name)
    }

    /// Writes `berth/boot/loader-trial` = `name` (the trial whose tries the boot loader
    /// counts), durably, as [`Sysroot::write_last_good`] does.
    pub fn write_loader_trial(&self, name: &DeploymentName) -> Result<(), SysrootError> {
        self.write_name("loader-trial", name)
    }

    /// Removes `berth/boot/loader-trial`, durably; a missing one is fine.
    pub fn clear_loader_trial(&self) -> Result<(), SysrootError> {
        let dir = self.boot_dir()?;
        match fsop::unlinkat(dir.as_fd(), "loader-trial", rustix::fs::AtFlags::empty()) {
            Ok(()) => {}
            Err(rustix::io::Errno::NOENT) => return Ok(()),
            Err(e) => return Err(SysrootError::new("remove loader-trial", e)),
        }
        fsop::fsync(dir.as_fd()).map_err(|e| SysrootError::new("fsync berth/boot", e))
    }

    fn boot_dir(&self) -> Result<OwnedFd, SysrootError> {
        rustix::fs::openat(
            &self.fd,
            BOOT_DIR,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| SysrootError::new("open berth/boot", e))
    }

    /// Writes `berth/boot/<file>` = `name` and a newline: temporary file, fsync,
    /// rename, fsync of the directory.
    fn write_name(&self, file: &'static str, name: &DeploymentName) -> Result<(), SysrootError> {
        let dir = self.boot_dir()?;
        let tmp = if file == "last-good" {
            "last-good.tmp"
        } else {
            "loader-trial.tmp"
        };
        let fd = fsop::create(
            dir.as_fd(),
            tmp,
            OFlags::WRONLY | OFlags::TRUNC | OFlags::NONBLOCK,
            Mode::from_raw_mode(0o644),
        )
        .map_err(|e| SysrootError::new("create berth/boot temporary file", e))?;
        let mut line = Vec::with_capacity(name.as_str().len() + 1);
        line.extend_from_slice(name.as_bytes());
        line.push(b'\n');
        fsop::write_all(fd.as_fd(), &line)
            .map_err(|e| SysrootError::new("write berth/boot temporary file", e))?;
        // Durability: the name is on disk before the rename publishes it.
        fsop::fsync(fd.as_fd())
            .map_err(|e| SysrootError::new("fsync berth/boot temporary file", e))?;
        drop(fd);
        fsop::renameat(dir.as_fd(), tmp, dir.as_fd(), file)
            .map_err(|e| SysrootError::new("rename into berth/boot", e))?;
        fsop::fsync(dir.as_fd()).map_err(|e| SysrootError::new("fsync berth/boot", e))
    }

    /// Reads both copies; returns the winner and what each copy held.
    pub fn read_record(&self) -> (Option<(Record, RecordCopy)>, [CopyState; 2]) {
        let (a, sa) = self.read_copy(RecordCopy::A);
        let (b, sb) = self.read_copy(RecordCopy::B);
        (
            record::choose(a.as_ref().map(|x| &x[..]), b.as_ref().map(|x| &x[..])),
            [sa, sb],
        )
    }

    /// Writes `new` durably over the copy that did not win, with the next generation:
    /// write a temporary file, fsync it, rename it over the copy, fsync the directory.
    /// The winning copy is never touched, so a power cut at any point leaves at least
    /// one valid copy: the old winner, or the new one.
    pub fn write_record(
        &self,
        current: Option<(Record, RecordCopy)>,
        new: &Record,
    ) -> Result<Record, SysrootError> {
        let (copy, generation) = record::next_write(current);
        let rec = Record { generation, ..*new };
        let bytes = rec.encode();
        let dir = rustix::fs::openat(
            &self.fd,
            BOOT_DIR,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| SysrootError::new("open berth/boot", e))?;
        let tmp = "record.tmp";
        // O_NONBLOCK: a FIFO left as record.tmp fails (ENXIO) instead of blocking
        // berth-init; a device there is refused below, or the "write" would go to it
        // and the rename would put the device in place of a copy.
        let fd = fsop::create(
            dir.as_fd(),
            tmp,
            OFlags::WRONLY | OFlags::TRUNC | OFlags::NONBLOCK | OFlags::NOCTTY,
            Mode::from_raw_mode(0o644),
        )
        .map_err(|e| SysrootError::new("create record.tmp", e))?;
        match rustix::fs::fstat(&fd) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {}
            Ok(_) => return Err(SysrootError::new("record.tmp is not a file", Errno::INVAL)),
            Err(e) => return Err(SysrootError::new("stat record.tmp", e)),
        }
        fsop::write_all(fd.as_fd(), &bytes)
            .map_err(|e| SysrootError::new("write record.tmp", e))?;
        // Durability: the bytes must be on disk before the name points at them.
        fsop::fsync(fd.as_fd()).map_err(|e| SysrootError::new("fsync record.tmp", e))?;
        drop(fd);
        fsop::renameat(dir.as_fd(), tmp, dir.as_fd(), copy.file_name())
            .map_err(|e| SysrootError::new("rename record", e))?;
        // Durability: the rename is persistent only once the directory is.
        fsop::fsync(dir.as_fd()).map_err(|e| SysrootError::new("fsync berth/boot", e))?;
        Ok(rec)
    }

    /// Deployment names present on disk (valid names only), at most `max`.
    pub fn deployments(&self, max: usize) -> Vec<DeploymentName> {
        let mut out = Vec::new();
        let Ok(dir) = rustix::fs::openat(
            &self.fd,
            DEPLOY_DIR,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            return out;
        };
        let Ok(mut entries) = rustix::fs::Dir::read_from(&dir) else {
            return out;
        };
        while let Some(Ok(e)) = entries.read() {
            if e.file_type() != FileType::Directory && e.file_type() != FileType::Unknown {
                continue;
            }
            if let Ok(name) = DeploymentName::new(e.file_name().to_bytes())
                && out.len() < max
            {
                out.push(name);
            }
        }
        out
    }
}

/// Whether `path` (absolute, resolved inside the tree at `root`, symlinks included)
/// is an executable regular file.
pub fn executable_in(root: &OwnedFd, path: &[u8]) -> bool {
    let rel = path.strip_prefix(b"/").unwrap_or(path);
    // RESOLVE_IN_ROOT: absolute symlinks such as /sbin/init -> /lib/systemd/systemd
    // resolve inside the deployment, as they will after the switch. Kernels before 5.6
    // have no openat2: the same resolution is done step by step.
    let fd = match rustix::fs::openat2(
        root,
        rel,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT,
    ) {
        Ok(fd) => fd,
        // ENOSYS: no openat2; EPERM: a seccomp filter that forbids it.
        Err(Errno::NOSYS | Errno::PERM) => match open_in_root(root, rel) {
            Some(fd) => fd,
            None => return false,
        },
        Err(_) => return false,
    };
    rustix::fs::fstat(&fd).is_ok_and(|st| {
        FileType::from_raw_mode(st.st_mode) == FileType::RegularFile && st.st_mode & 0o111 != 0
    })
}

/// Symlinks followed at most, as the kernel's `MAXSYMLINKS`.
const SYMLINKS_MAX: usize = 40;

/// `path` opened `O_PATH` under `root` as `RESOLVE_IN_ROOT` would: every symlink is
/// followed with `root` as `/`, and `..` never climbs above it. For kernels without
/// `openat2`; a boot-time probe, so no one is racing it.
pub fn open_in_root(root: &OwnedFd, path: &[u8]) -> Option<OwnedFd> {
    if path.is_empty() {
        return None; // ENOENT, as openat2 says
    }
    // Components still to walk, last first; the real directories walked so far.
    let mut todo: Vec<Vec<u8>> = path
        .split(|&b| b == b'/')
        .rev()
        .map(<[u8]>::to_vec)
        .collect();
    let mut done: Vec<Vec<u8>> = Vec::new();
    let mut links = 0;
    // Whether the last thing walked is a directory: nothing may follow what is not
    // (ENOTDIR, even `.`, `..` or a trailing slash).
    let mut in_dir = true;
    while let Some(name) = todo.pop() {
        if !in_dir {
            return None;
        }
        match name.as_slice() {
            b"" | b"." => continue,
            b".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        done.push(name);
        let here = join(&done.iter().map(Vec::as_slice).collect::<Vec<_>>());
        let here = here.strip_prefix(b"/").unwrap_or(&here);
        let fd = rustix::fs::openat(
            root,
            here,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        let st = rustix::fs::fstat(&fd).ok()?;
        let kind = FileType::from_raw_mode(st.st_mode);
        if kind != FileType::Symlink {
            if todo.is_empty() {
                return Some(fd);
            }
            in_dir = kind == FileType::Directory;
            continue;
        }
        links += 1;
        if links > SYMLINKS_MAX {
            return None;
        }
        let target = rustix::fs::readlinkat(root, here, Vec::new()).ok()?;
        let target = target.as_bytes();
        done.pop();
        if target.starts_with(b"/") {
            done.clear();
        }
        todo.extend(target.split(|&b| b == b'/').rev().map(<[u8]>::to_vec));
    }
    // The path ended in `.` or `..` (or was empty): the directory walked to.
    let here = join(&done.iter().map(Vec::as_slice).collect::<Vec<_>>());
    let here = match here.strip_prefix(b"/").unwrap_or(&here) {
        b"" => b".".as_slice(),
        h => h,
    };
    rustix::fs::openat(
        root,
        here,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()
}

impl Sysroot {
    /// Whether deployment `name` can be booted with `init` (absolute, inside it).
    pub fn probe(&self, name: &DeploymentName, init: &[u8]) -> Bootable {
        let path = join(&[DEPLOY_DIR.as_bytes(), name.as_bytes()]);
        match rustix::fs::openat(
            &self.fd,
            path.as_slice(),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => {
                if executable_in(&fd, init) {
                    Bootable::Yes
                } else {
                    Bootable::NoInit
                }
            }
            Err(_) => Bootable::Missing,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt as _, symlink};

    use super::*;

    fn identity(fd: &OwnedFd) -> (u64, u64) {
        let st = rustix::fs::fstat(fd).unwrap();
        (st.st_dev, st.st_ino)
    }

    /// The step-by-step resolution finds what the kernel's `RESOLVE_IN_ROOT` finds, on a
    /// deployment-like tree with absolute, relative, looping and escaping symlinks.
    #[test]
    fn open_in_root_resolves_as_the_kernel_does() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for d in ["lib/systemd", "usr/bin", "sbin"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        for f in ["lib/systemd/systemd", "usr/bin/sh"] {
            std::fs::write(r.join(f), b"#!").unwrap();
            std::fs::set_permissions(r.join(f), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        symlink("/lib/systemd/systemd", r.join("sbin/init")).unwrap();
        symlink("usr/bin", r.join("bin")).unwrap();
        symlink("../../../../../../etc/passwd", r.join("sbin/escape")).unwrap();
        symlink("/../../usr/bin/sh", r.join("sbin/climb")).unwrap();
        symlink("loop", r.join("sbin/loop")).unwrap();
        symlink("../bin/sh", r.join("sbin/sh")).unwrap();
        let root = rustix::fs::open(r, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        for path in [
            "sbin/init",
            "/sbin/init",
            "bin/sh",
            "sbin/sh",
            "sbin/climb",
            "usr/../sbin/init",
            "../../sbin/init",
            "sbin/escape",
            "sbin/loop",
            "sbin/init/x",
            "missing",
            "usr/.",
            "usr/bin/..",
            "sbin/init/",
            "sbin/init/.",
            "bin/sh/..",
            "sbin/sh/",
            "usr/bin/",
            "",
        ] {
            let rel = path.strip_prefix('/').unwrap_or(path);
            let kernel = rustix::fs::openat2(
                &root,
                rel,
                OFlags::PATH | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::IN_ROOT,
            )
            .ok();
            let ours = open_in_root(&root, rel.as_bytes());
            assert_eq!(
                ours.as_ref().map(identity),
                kernel.as_ref().map(identity),
                "{path}"
            );
        }
        assert!(executable_in(&root, b"/sbin/init"));
        assert!(!executable_in(&root, b"/sbin/escape"));
        assert!(!executable_in(&root, b"/usr/bin"));
    }
}
