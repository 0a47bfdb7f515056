//! Checking out a tree: a directory of hard links into the store.
//!
//! Every non-directory entry is a hard link to its file object, which already carries the
//! entry's mode, owner and xattrs; files with the same object share one inode, so a
//! second checkout of a similar tree costs almost no space. Directories are created,
//! filled, and only then given their mode, owner, xattrs and a zero mtime (so read-only
//! directories can still be filled). The checkout is built under a temporary sibling name
//! and renamed to `dest` at the end, so `dest` never exists half-made.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use format::limits::TREE_DEPTH_MAX;
use format::{EntryKind, ObjectId, ObjectKind};
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::inode;
use crate::repo::object_path;
use crate::{FileContent, Repo, StoreError};

/// How to check out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckoutOptions {
    /// Copy every file instead of hard-linking it (for a destination on another
    /// filesystem, or one that must not share inodes with the store). Without it, files
    /// are copied only where the kernel refuses a link (`EXDEV`, `EMLINK`).
    pub copy: bool,
    /// `syncfs` the destination before renaming it into place and again after, so the
    /// checkout is durable when this returns (for deployments on a device).
    pub sync: bool,
}

/// What a checkout did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckoutStats {
    /// Directories created.
    pub dirs: u64,
    /// Files hard-linked (to the store, or with `copy`, to the first copy of the object).
    pub linked: u64,
    /// Files copied.
    pub copied: u64,
}

/// Checks out the tree `root` at `dest`, which must not exist; its parent must.
pub fn checkout(
    repo: &Repo,
    root: &ObjectId,
    dest: &Path,
    opts: CheckoutOptions,
) -> Result<CheckoutStats, StoreError> {
    let (parent, name) = split_dest(dest)?;
    let parent_fd = rustix::fs::open(
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| StoreError::io(parent, "open directory", e))?;
    match rustix::fs::statat(&parent_fd, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => {}
        Ok(_) => {
            return Err(StoreError::Unsupported {
                path: dest.into(),
                reason: "already exists".into(),
            });
        }
        Err(e) => return Err(StoreError::io(dest, "stat", e)),
    }
    let pid = rustix::process::getpid().as_raw_nonzero().get();
    let mut tmp = b".".to_vec();
    tmp.extend_from_slice(name.as_bytes());
    tmp.extend_from_slice(format!(".berth-tmp-{pid}").as_bytes());
    if tmp.len() > format::limits::NAME_MAX {
        tmp = format!(".berth-checkout-tmp-{pid}").into_bytes();
    }
    let tmp_shown = parent.join(OsStr::from_bytes(&tmp));
    fsop::mkdirat(
        parent_fd.as_fd(),
        tmp.as_slice(),
        Mode::from_raw_mode(0o700),
    )
    .map_err(|e| StoreError::io(&tmp_shown, "create directory", e))?;
    let result = (|| {
        let fd = inode::open_dir_at(parent_fd.as_fd(), &tmp, &tmp_shown)?;
        let mut w = Writer {
            repo,
            opts,
            stats: CheckoutStats::default(),
            root: fd
                .try_clone()
                .map_err(|e| StoreError::io(&tmp_shown, "dup", e))?,
            dest: dest.to_path_buf(),
            copies: HashMap::new(),
        };
        w.fill(root, fd.as_fd(), dest.to_path_buf(), 0)?;
        if opts.sync {
            fsop::syncfs(fd.as_fd()).map_err(|e| StoreError::io(dest, "sync checkout", e))?;
        }
        fsop::renameat(parent_fd.as_fd(), tmp.as_slice(), parent_fd.as_fd(), name)
            .map_err(|e| StoreError::io(dest, "rename checkout into place", e))?;
        if opts.sync {
            // Durability: the rename is persistent only once the parent directory is.
            fsop::fsync(parent_fd.as_fd())
                .map_err(|e| StoreError::io(parent, "fsync directory", e))?;
        }
        Ok(w.stats)
    })();
    if result.is_err()
        && let Err(e) = remove_tree(parent_fd.as_fd(), &tmp, 0)
    {
        log::warn!(
            "{}: cannot remove partial checkout: {e}",
            tmp_shown.display()
        );
    }
    result
}

fn split_dest(dest: &Path) -> Result<(&Path, &OsStr), StoreError> {
    let name = dest.file_name().ok_or_else(|| StoreError::Unsupported {
        path: dest.into(),
        reason: "is not a usable destination name".into(),
    })?;
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((parent, name))
}

struct Writer<'r> {
    repo: &'r Repo,
    opts: CheckoutOptions,
    stats: CheckoutStats,
    /// The checkout's root directory, and its final path (for messages).
    root: OwnedFd,
    dest: PathBuf,
    /// Where each object was first copied to, relative to `root`, so later entries with
    /// the same object become hard links to it, as they would be to the store.
    copies: HashMap<ObjectId, PathBuf>,
}

impl Writer<'_> {
    fn fill(
        &mut self,
        id: &ObjectId,
        dirfd: BorrowedFd<'_>,
        shown: PathBuf,
        depth: usize,
    ) -> Result<(), StoreError> {
        if depth > TREE_DEPTH_MAX {
            return Err(StoreError::Unsupported {
                path: shown,
                reason: format!("tree is nested deeper than {TREE_DEPTH_MAX}"),
            });
        }
        let tree = self.repo.read_tree(id)?;
        self.stats.dirs += 1;
        for entry in tree.entries() {
            let name = entry.name.as_bytes();
            let path = shown.join(OsStr::from_bytes(name));
            match entry.kind {
                EntryKind::Tree => {
                    fsop::mkdirat(dirfd, name, Mode::from_raw_mode(0o700))
                        .map_err(|e| StoreError::io(&path, "create directory", e))?;
                    let child = inode::open_dir_at(dirfd, name, &path)?;
                    self.fill(&entry.id, child.as_fd(), path, depth + 1)?;
                }
                EntryKind::File => self.file(&entry.id, dirfd, name, &path)?,
            }
        }
        let m = tree.meta();
        inode::apply_fd(dirfd, m.mode, m.uid, m.gid, &m.xattrs, &shown)
    }

    fn file(
        &mut self,
        id: &ObjectId,
        dirfd: BorrowedFd<'_>,
        name: &[u8],
        path: &Path,
    ) -> Result<(), StoreError> {
        let rel = object_path(id, ObjectKind::File.suffix());
        if !self.opts.copy {
            match fsop::linkat(self.repo.objects_fd(), rel.as_str(), dirfd, name) {
                Ok(()) => {
                    self.stats.linked += 1;
                    return Ok(());
                }
                Err(Errno::NOENT) => return Err(StoreError::missing(*id, ObjectKind::File)),
                // Another filesystem, or the object's link count is at its maximum.
                Err(Errno::XDEV | Errno::MLINK) => {}
                Err(e) => return Err(StoreError::io(path, "hard-link from the store", e)),
            }
        }
        if let Some(first) = self.copies.get(id) {
            match fsop::linkat(self.root.as_fd(), first.as_path(), dirfd, name) {
                Ok(()) => {
                    self.stats.linked += 1;
                    return Ok(());
                }
                // A path longer than PATH_MAX, or too many links: copy once more.
                Err(Errno::NAMETOOLONG | Errno::MLINK) => {}
                Err(e) => return Err(StoreError::io(path, "hard-link to an earlier copy", e)),
            }
        }
        self.copy(id, dirfd, name, path)?;
        if let Ok(relative) = path.strip_prefix(&self.dest) {
            self.copies
                .entry(*id)
                .or_insert_with(|| relative.to_path_buf());
        }
        self.stats.copied += 1;
        Ok(())
    }

    fn copy(
        &mut self,
        id: &ObjectId,
        dirfd: BorrowedFd<'_>,
        name: &[u8],
        path: &Path,
    ) -> Result<(), StoreError> {
        let (header, content) = self.repo.file_object(id)?;
        match content {
            FileContent::File(mut src) => {
                let dst = fsop::create(
                    dirfd,
                    name,
                    OFlags::WRONLY | OFlags::EXCL,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| StoreError::io(path, "create", e))?;
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = match std::io::Read::read(&mut src, &mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(StoreError::io(path, "copy", e)),
                    };
                    fsop::write_all(dst.as_fd(), &buf[..n])
                        .map_err(|e| StoreError::io(path, "copy", e))?;
                }
                inode::apply_header(dst.as_fd(), &header, path)
            }
            FileContent::Bytes(target) => {
                inode::create_special(dirfd, name, &header, target.get_ref(), path)
            }
        }
    }
}

/// Removes `name` in `dirfd` and everything under it, without following symlinks.
pub fn remove_tree(dirfd: BorrowedFd<'_>, name: &[u8], depth: usize) -> Result<(), Errno> {
    match fsop::unlinkat(dirfd, name, AtFlags::empty()) {
        Ok(()) => return Ok(()),
        Err(Errno::ISDIR | Errno::PERM) => {}
        Err(e) => return Err(e),
    }
    if depth > TREE_DEPTH_MAX + 1 {
        return Err(Errno::LOOP);
    }
    let dir = rustix::fs::openat(
        dirfd,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    // A checkout may have given the directory a read-only mode; restore write access.
    rustix::fs::fchmod(&dir, Mode::from_raw_mode(0o700))?;
    let mut names = Vec::new();
    let mut entries = rustix::fs::Dir::read_from(&dir)?;
    while let Some(entry) = entries.read() {
        let entry = entry?;
        let n = entry.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    for n in names {
        remove_tree(dir.as_fd(), &n, depth + 1)?;
    }
    fsop::unlinkat(dirfd, name, AtFlags::REMOVEDIR)
}

/// Points every file of the checkout at `dest` (of the tree `root`) whose object is in
/// `ids` back at the store's object, where it is another inode: after a repair replaced a
/// corrupt object, the checkout's hard links still reach the corrupt inode. Each file is
/// swapped with one `rename` (a link to the object under a temporary name first), so a
/// crash leaves every file either old or repaired. Returns how many files were swapped.
pub fn relink<S: std::hash::BuildHasher>(
    repo: &Repo,
    root: &ObjectId,
    dest: &Path,
    ids: &std::collections::HashSet<ObjectId, S>,
) -> Result<u64, StoreError> {
    let fd = rustix::fs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| StoreError::io(dest, "open directory", e))?;
    let mut swapped = 0;
    relink_dir(repo, root, fd.as_fd(), dest, ids, 0, &mut swapped)?;
    Ok(swapped)
}

fn relink_dir<S: std::hash::BuildHasher>(
    repo: &Repo,
    id: &ObjectId,
    dirfd: BorrowedFd<'_>,
    shown: &Path,
    ids: &std::collections::HashSet<ObjectId, S>,
    depth: usize,
    swapped: &mut u64,
) -> Result<(), StoreError> {
    if depth > TREE_DEPTH_MAX {
        return Err(StoreError::Unsupported {
            path: shown.into(),
            reason: format!("tree is nested deeper than {TREE_DEPTH_MAX}"),
        });
    }
    for entry in repo.read_tree(id)?.entries() {
        let name = entry.name.as_bytes();
        let path = shown.join(OsStr::from_bytes(name));
        match entry.kind {
            EntryKind::Tree => {
                let child = inode::open_dir_at(dirfd, name, &path)?;
                relink_dir(
                    repo,
                    &entry.id,
                    child.as_fd(),
                    &path,
                    ids,
                    depth + 1,
                    swapped,
                )?;
            }
            EntryKind::File if ids.contains(&entry.id) => {
                let rel = object_path(&entry.id, ObjectKind::File.suffix());
                let object =
                    rustix::fs::statat(repo.objects_fd(), rel.as_str(), AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(|e| StoreError::io(repo.objects_path(&rel), "stat", e))?;
                let here = rustix::fs::statat(dirfd, name, AtFlags::SYMLINK_NOFOLLOW);
                if here.is_ok_and(|h| h.st_dev == object.st_dev && h.st_ino == object.st_ino) {
                    continue;
                }
                let tmp = ".berth-relink";
                match fsop::unlinkat(dirfd, tmp, AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(e) => return Err(StoreError::io(&path, "remove stale link", e)),
                }
                fsop::linkat(repo.objects_fd(), rel.as_str(), dirfd, tmp)
                    .map_err(|e| StoreError::io(&path, "hard-link from the store", e))?;
                fsop::renameat(dirfd, tmp, dirfd, name)
                    .map_err(|e| StoreError::io(&path, "replace with the repaired object", e))?;
                *swapped += 1;
            }
            EntryKind::File => {}
        }
    }
    Ok(())
}
