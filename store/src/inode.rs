//! Reading and applying inode metadata (owner, mode, xattrs, times) by directory fd.
//!
//! Symlinks, device nodes and FIFOs cannot be opened safely (opening a FIFO blocks, a
//! device may act), so their xattrs are read and written through the `l*xattr` calls on
//! `/proc/self/fd/<dirfd>/<name>`: the kernel resolves the directory fd, and the final
//! component is not followed. That keeps paths short at any depth.

use std::ffi::OsStr;
#[cfg(feature = "write")]
use std::os::fd::AsFd;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use format::meta::MODE_BITS;
use format::{FileHeader, FileKind, Xattrs};
#[cfg(feature = "write")]
use rustix::fs::{AtFlags, Timespec, Timestamps};
use rustix::fs::{FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::StoreError;

/// Whether this process runs as root (some tests and some trees need it).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The path through which `l*xattr` reach `name` in the directory `dirfd`.
pub(crate) fn proc_path(dirfd: BorrowedFd<'_>, name: &[u8]) -> PathBuf {
    let mut p = format!("/proc/self/fd/{}/", std::os::fd::AsRawFd::as_raw_fd(&dirfd)).into_bytes();
    p.extend_from_slice(name);
    PathBuf::from(OsStr::from_bytes(&p))
}

/// Where an xattr list is read from.
pub(crate) enum XattrSource<'a> {
    /// An open regular file or directory.
    Fd(BorrowedFd<'a>),
    /// A symlink, device or FIFO, by its `/proc/self/fd/...` path (not followed).
    Link(&'a Path),
}

/// Reads all extended attributes, sorted by name. Filesystems without xattr support
/// (`EOPNOTSUPP`) have none.
pub(crate) fn read_xattrs(src: &XattrSource<'_>, shown: &Path) -> Result<Xattrs, StoreError> {
    let err = |e: Errno| StoreError::io(shown, "read extended attributes", e);
    let mut names = Vec::new();
    // Retry when the list grows between the size query and the read.
    for _ in 0..8 {
        let size = match src {
            XattrSource::Fd(fd) => rustix::fs::flistxattr_query(fd),
            XattrSource::Link(p) => rustix::fs::llistxattr_query(*p),
        };
        let size = match size {
            Ok(n) => n,
            Err(Errno::NOTSUP) => return Ok(Xattrs::new()),
            Err(e) => return Err(err(e)),
        };
        names.resize(size, 0);
        let got = match src {
            XattrSource::Fd(fd) => rustix::fs::flistxattr(fd, &mut names[..]),
            XattrSource::Link(p) => rustix::fs::llistxattr(*p, &mut names[..]),
        };
        match got {
            Ok(n) => {
                names.truncate(n);
                break;
            }
            Err(Errno::RANGE) => {}
            Err(e) => return Err(err(e)),
        }
    }
    let mut pairs = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let mut value = Vec::new();
        for _ in 0..8 {
            let size = match src {
                XattrSource::Fd(fd) => rustix::fs::fgetxattr_query(fd, name),
                XattrSource::Link(p) => rustix::fs::lgetxattr_query(*p, name),
            };
            let size = match size {
                Ok(n) => n,
                Err(Errno::NODATA) => break, // removed meanwhile
                Err(e) => return Err(err(e)),
            };
            value.resize(size, 0);
            let got = match src {
                XattrSource::Fd(fd) => rustix::fs::fgetxattr(fd, name, &mut value[..]),
                XattrSource::Link(p) => rustix::fs::lgetxattr(*p, name, &mut value[..]),
            };
            match got {
                Ok(n) => {
                    value.truncate(n);
                    pairs.push((name.to_vec(), std::mem::take(&mut value)));
                    break;
                }
                Err(Errno::RANGE) => {}
                Err(Errno::NODATA) => break,
                Err(e) => return Err(err(e)),
            }
        }
    }
    Xattrs::from_pairs(pairs).map_err(|e| StoreError::format(shown, e))
}

/// The kind of a non-directory inode, or why it cannot be stored.
pub(crate) fn file_kind(st: &Stat, shown: &Path) -> Result<FileKind, StoreError> {
    Ok(match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => FileKind::Regular,
        FileType::Symlink => FileKind::Symlink,
        FileType::CharacterDevice => FileKind::CharDevice,
        FileType::BlockDevice => FileKind::BlockDevice,
        FileType::Fifo => FileKind::Fifo,
        FileType::Socket => {
            return Err(StoreError::Unsupported {
                path: shown.into(),
                reason: "is a socket; sockets are created at run time and cannot be committed"
                    .into(),
            });
        }
        _ => {
            return Err(StoreError::Unsupported {
                path: shown.into(),
                reason: "has an unknown file type".into(),
            });
        }
    })
}

/// The header of a non-directory inode from its `lstat` and xattrs.
pub(crate) fn header_from_stat(st: &Stat, kind: FileKind, xattrs: Xattrs) -> FileHeader {
    let (rdev_major, rdev_minor) = if kind.is_device() {
        (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev))
    } else {
        (0, 0)
    };
    let size = match kind {
        FileKind::Regular | FileKind::Symlink => u64::try_from(st.st_size).unwrap_or(0),
        _ => 0,
    };
    FileHeader {
        kind,
        mode: st.st_mode & MODE_BITS,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev_major,
        rdev_minor,
        size,
        xattrs,
    }
}

#[cfg(feature = "write")]
const EPOCH: Timestamps = Timestamps {
    last_access: Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    },
    last_modification: Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    },
};

#[cfg(feature = "write")]
fn uid_gid(uid: u32, gid: u32) -> (Option<rustix::fs::Uid>, Option<rustix::fs::Gid>) {
    (
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )
}

#[cfg(feature = "write")]
fn owner_error(shown: &Path, uid: u32, gid: u32, e: Errno) -> StoreError {
    if e == Errno::PERM && !is_root() {
        StoreError::Unsupported {
            path: shown.into(),
            reason: format!(
                "cannot set owner {uid}:{gid} without root (run as root to store files of other owners)"
            ),
        }
    } else {
        StoreError::io(shown, "set owner", e)
    }
}

#[cfg(feature = "write")]
fn set_xattrs_fd(fd: BorrowedFd<'_>, xattrs: &Xattrs, shown: &Path) -> Result<(), StoreError> {
    for (name, value) in xattrs.iter() {
        rustix::fs::fsetxattr(fd, name, value, rustix::fs::XattrFlags::empty())
            .map_err(|e| StoreError::io(shown, "set extended attribute", e))?;
    }
    Ok(())
}

#[cfg(feature = "write")]
/// Applies owner, mode, xattrs and a zero mtime to an open regular file or directory.
/// Owner first: `chown` clears setuid/setgid and file capabilities, so mode and
/// `security.capability` must come after it.
pub(crate) fn apply_fd(
    fd: BorrowedFd<'_>,
    mode: u32,
    uid: u32,
    gid: u32,
    xattrs: &Xattrs,
    shown: &Path,
) -> Result<(), StoreError> {
    let (u, g) = uid_gid(uid, gid);
    rustix::fs::fchown(fd, u, g).map_err(|e| owner_error(shown, uid, gid, e))?;
    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))
        .map_err(|e| StoreError::io(shown, "set mode", e))?;
    set_xattrs_fd(fd, xattrs, shown)?;
    rustix::fs::futimens(fd, &EPOCH).map_err(|e| StoreError::io(shown, "set times", e))
}

/// [`apply_fd`] with a file object's header.
#[cfg(feature = "write")]
pub(crate) fn apply_header(
    fd: BorrowedFd<'_>,
    header: &FileHeader,
    shown: &Path,
) -> Result<(), StoreError> {
    apply_fd(
        fd,
        header.mode,
        header.uid,
        header.gid,
        &header.xattrs,
        shown,
    )
}

#[cfg(feature = "write")]
/// Creates a symlink, device node or FIFO named `name` in `dirfd`, with all its metadata.
pub(crate) fn create_special(
    dirfd: BorrowedFd<'_>,
    name: &[u8],
    header: &FileHeader,
    target: &[u8],
    shown: &Path,
) -> Result<(), StoreError> {
    let mode = Mode::from_raw_mode(header.mode);
    match header.kind {
        FileKind::Symlink => fsop::symlinkat(target, dirfd, name)
            .map_err(|e| StoreError::io(shown, "create symlink", e))?,
        FileKind::CharDevice | FileKind::BlockDevice | FileKind::Fifo => {
            let ft = match header.kind {
                FileKind::CharDevice => FileType::CharacterDevice,
                FileKind::BlockDevice => FileType::BlockDevice,
                _ => FileType::Fifo,
            };
            let dev = rustix::fs::makedev(header.rdev_major, header.rdev_minor);
            fsop::mknodat(dirfd, name, ft, mode, dev).map_err(|e| {
                if e == Errno::PERM && !is_root() {
                    StoreError::Unsupported {
                        path: shown.into(),
                        reason: "creating device nodes needs root".into(),
                    }
                } else {
                    StoreError::io(shown, "create node", e)
                }
            })?;
        }
        FileKind::Regular => {
            return Err(StoreError::Unsupported {
                path: shown.into(),
                reason: "internal: regular file passed to create_special".into(),
            });
        }
    }
    let (u, g) = uid_gid(header.uid, header.gid);
    rustix::fs::chownat(dirfd, name, u, g, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| owner_error(shown, header.uid, header.gid, e))?;
    if header.kind != FileKind::Symlink {
        // Not a symlink, so following is harmless; symlinks have no mode of their own.
        rustix::fs::chmodat(dirfd, name, mode, AtFlags::empty())
            .map_err(|e| StoreError::io(shown, "set mode", e))?;
    }
    let link = proc_path(dirfd, name);
    for (xname, value) in header.xattrs.iter() {
        rustix::fs::lsetxattr(&link, xname, value, rustix::fs::XattrFlags::empty())
            .map_err(|e| StoreError::io(shown, "set extended attribute", e))?;
    }
    rustix::fs::utimensat(dirfd, name, &EPOCH, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| StoreError::io(shown, "set times", e))
}

/// Opens a directory entry as a directory without following symlinks.
pub(crate) fn open_dir_at(
    dirfd: BorrowedFd<'_>,
    name: &[u8],
    shown: &Path,
) -> Result<OwnedFd, StoreError> {
    rustix::fs::openat(
        dirfd,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| StoreError::io(shown, "open directory", e))
}

/// Writes a small file atomically: temp name, fsync, rename, fsync the directory.
#[cfg(feature = "write")]
pub(crate) fn write_file_atomic(
    dirfd: BorrowedFd<'_>,
    name: &str,
    bytes: &[u8],
    dir_shown: &Path,
) -> Result<(), StoreError> {
    let tmp = format!(".{name}.tmp");
    let shown = dir_shown.join(name);
    let fd = fsop::create(
        dirfd,
        tmp.as_str(),
        OFlags::WRONLY | OFlags::TRUNC,
        Mode::from_raw_mode(0o644),
    )
    .map_err(|e| StoreError::io(&shown, "create", e))?;
    fsop::write_all(fd.as_fd(), bytes).map_err(|e| StoreError::io(&shown, "write", e))?;
    // Durability: the data must be on disk before the name points at it.
    fsop::fsync(fd.as_fd()).map_err(|e| StoreError::io(&shown, "fsync", e))?;
    fsop::renameat(dirfd, tmp.as_str(), dirfd, name)
        .map_err(|e| StoreError::io(&shown, "rename into place", e))?;
    // Durability: the rename is only persistent once the directory is.
    fsop::fsync(dirfd).map_err(|e| StoreError::io(dir_shown, "fsync directory", e))
}
