//! Every filesystem mutation the device makes: creating, writing, syncing, renaming,
//! linking, unlinking and making directories, nodes and symlinks.
//!
//! The store, the sysroot and the updater call these instead of `rustix::fs`, so that
//! one counter sees every step of an update, `mark-good`, `rollback` or `gc`. In the
//! crash-test build (feature `crash-points`) that counter can stop the process before
//! any step, which is how the tests prove that a power cut at any instant leaves a
//! bootable device, or fail that step and every later one with `ENOSPC`, `EIO` or
//! `EROFS`, as a full or failing disk would (see `updater/tests/crash.rs`).
//!
//! Metadata changes (owner, mode, xattrs, times) are not crash points: Berth only makes
//! them on inodes that no published name reaches yet (staged objects, the inside of a
//! checkout before its rename), so no crash between them is observable.
#![cfg_attr(not(feature = "crash-points"), no_std)]

use rustix::fd::{BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, Dev, FileType, Mode, OFlags};
use rustix::io::Errno;
use rustix::path::Arg;

#[cfg(feature = "crash-points")]
mod crash;

/// The kinds of mutation, as the crash-test build reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `openat` with `O_CREAT`.
    Create,
    /// `write`.
    Write,
    /// `fsync` of a file or directory.
    Fsync,
    /// `syncfs`.
    Syncfs,
    /// `renameat`.
    Rename,
    /// `linkat`.
    Link,
    /// `unlinkat`, of a file or (with `AT_REMOVEDIR`) a directory.
    Unlink,
    /// `mkdirat`.
    Mkdir,
    /// `symlinkat`.
    Symlink,
    /// `mknodat`.
    Mknod,
}

/// Before each mutation: in the crash-test build, where the process may be stopped or
/// the mutation failed with an injected error; otherwise nothing.
#[inline]
#[cfg_attr(
    not(feature = "crash-points"),
    allow(clippy::unnecessary_wraps) // the crash-test build's errors come through here
)]
fn point(op: Op, fd: Option<BorrowedFd<'_>>) -> Result<(), Errno> {
    #[cfg(feature = "crash-points")]
    return crash::point(op, fd);
    #[cfg(not(feature = "crash-points"))]
    {
        let _ = (op, fd);
        Ok(())
    }
}

/// `openat(dirfd, path, flags | O_CREAT | O_CLOEXEC | O_NOFOLLOW, mode)`.
pub fn create<P: Arg>(
    dirfd: BorrowedFd<'_>,
    path: P,
    flags: OFlags,
    mode: Mode,
) -> Result<OwnedFd, Errno> {
    point(Op::Create, None)?;
    rustix::fs::openat(
        dirfd,
        path,
        flags | OFlags::CREATE | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        mode,
    )
}

/// Writes all of `bytes`, retrying short writes and `EINTR`.
pub fn write_all(fd: BorrowedFd<'_>, mut bytes: &[u8]) -> Result<(), Errno> {
    point(Op::Write, Some(fd))?;
    while !bytes.is_empty() {
        match rustix::io::write(fd, bytes) {
            Ok(0) => return Err(Errno::IO),
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `fsync`.
pub fn fsync(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    point(Op::Fsync, Some(fd))?;
    rustix::fs::fsync(fd)
}

/// `syncfs`.
pub fn syncfs(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    point(Op::Syncfs, Some(fd))?;
    rustix::fs::syncfs(fd)
}

/// `renameat`.
pub fn renameat<P: Arg, Q: Arg>(
    old_dirfd: BorrowedFd<'_>,
    old: P,
    new_dirfd: BorrowedFd<'_>,
    new: Q,
) -> Result<(), Errno> {
    point(Op::Rename, None)?;
    rustix::fs::renameat(old_dirfd, old, new_dirfd, new)
}

/// `linkat` (never following a symlink).
pub fn linkat<P: Arg, Q: Arg>(
    old_dirfd: BorrowedFd<'_>,
    old: P,
    new_dirfd: BorrowedFd<'_>,
    new: Q,
) -> Result<(), Errno> {
    point(Op::Link, None)?;
    rustix::fs::linkat(old_dirfd, old, new_dirfd, new, AtFlags::empty())
}

/// `unlinkat`; `AtFlags::REMOVEDIR` removes an empty directory.
pub fn unlinkat<P: Arg>(dirfd: BorrowedFd<'_>, path: P, flags: AtFlags) -> Result<(), Errno> {
    point(Op::Unlink, None)?;
    rustix::fs::unlinkat(dirfd, path, flags)
}

/// `mkdirat`.
pub fn mkdirat<P: Arg>(dirfd: BorrowedFd<'_>, path: P, mode: Mode) -> Result<(), Errno> {
    point(Op::Mkdir, None)?;
    rustix::fs::mkdirat(dirfd, path, mode)
}

/// `symlinkat`.
pub fn symlinkat<P: Arg, Q: Arg>(target: P, dirfd: BorrowedFd<'_>, path: Q) -> Result<(), Errno> {
    point(Op::Symlink, None)?;
    rustix::fs::symlinkat(target, dirfd, path)
}

/// `mknodat`.
pub fn mknodat<P: Arg>(
    dirfd: BorrowedFd<'_>,
    path: P,
    file_type: FileType,
    mode: Mode,
    dev: Dev,
) -> Result<(), Errno> {
    point(Op::Mknod, None)?;
    rustix::fs::mknodat(dirfd, path, file_type, mode, dev)
}
