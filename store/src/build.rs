//! Building tree objects: from a directory on disk, or from entries in any order
//! (a tarball) through [`MemDir`].

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use format::limits::TREE_DEPTH_MAX;
use format::meta::MODE_BITS;
use format::{DirMeta, EntryKind, EntryName, FileKind, ObjectId, Tree, TreeEntry};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::inode::{self, XattrSource};
use crate::{StoreError, Txn};

/// Counts of what a build read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BuildStats {
    /// Non-directory entries read.
    pub files: u64,
    /// Directories read.
    pub dirs: u64,
    /// Content bytes read.
    pub bytes: u64,
}

/// Called now and then during a build with the counts so far.
pub type Progress<'a> = &'a mut dyn FnMut(&BuildStats);

/// Commits the directory tree at `root` into `txn`; returns the root tree id.
///
/// Entries are read with `lstat` semantics: symlinks are stored, never followed. The
/// root directory's own metadata becomes the root tree's metadata. Hard links in the
/// input are read once (they have the same content and metadata, so the same object).
pub fn build_dir(
    txn: &mut Txn<'_>,
    root: &Path,
    progress: Progress<'_>,
) -> Result<(ObjectId, BuildStats), StoreError> {
    build(txn, root, progress, false)
}

/// As [`build_dir`], for a root filesystem: a symlink whose relative target climbs
/// out of `root` is refused, naming it (`format::link`; a device refuses such a
/// deployment). Not for a part of a tree, such as an `/etc` layer, whose relative
/// links are relative to a directory above it.
pub fn build_root(
    txn: &mut Txn<'_>,
    root: &Path,
    progress: Progress<'_>,
) -> Result<(ObjectId, BuildStats), StoreError> {
    build(txn, root, progress, true)
}

/// As [`build_dir`], for a live `/etc` layer opened by the caller (`dirfd`, shown as
/// `shown`): Unix sockets, which a running service may leave in `/etc` and which
/// cannot be stored, are skipped rather than refused. Returns their paths too, for a
/// warning (the /etc merge of `OSTree` skips them the same way).
pub fn build_layer(
    txn: &mut Txn<'_>,
    dirfd: BorrowedFd<'_>,
    shown: &Path,
    progress: Progress<'_>,
) -> Result<(ObjectId, BuildStats, Vec<PathBuf>), StoreError> {
    let mut walker = Walker {
        txn,
        stats: BuildStats::default(),
        links: HashMap::new(),
        progress,
        last_report: 0,
        check_links: false,
        skipped: Some(Vec::new()),
    };
    let id = walker.tree(dirfd, shown, 0)?;
    (walker.progress)(&walker.stats);
    Ok((id, walker.stats, walker.skipped.unwrap_or_default()))
}

fn build(
    txn: &mut Txn<'_>,
    root: &Path,
    progress: Progress<'_>,
    check_links: bool,
) -> Result<(ObjectId, BuildStats), StoreError> {
    let fd = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| StoreError::io(root, "open directory", e))?;
    let mut walker = Walker {
        txn,
        stats: BuildStats::default(),
        links: HashMap::new(),
        progress,
        last_report: 0,
        check_links,
        skipped: None,
    };
    let id = walker.tree(fd.as_fd(), root, 0)?;
    (walker.progress)(&walker.stats);
    Ok((id, walker.stats))
}

struct Walker<'t, 'r, 'p> {
    txn: &'t mut Txn<'r>,
    stats: BuildStats,
    /// (device, inode) → object, for inputs with more than one link.
    links: HashMap<(u64, u64), ObjectId>,
    progress: Progress<'p>,
    last_report: u64,
    /// Refuse symlinks that climb out of the root.
    check_links: bool,
    /// With `Some`, sockets are skipped and listed here instead of refused.
    skipped: Option<Vec<PathBuf>>,
}

impl Walker<'_, '_, '_> {
    fn tree(
        &mut self,
        dirfd: BorrowedFd<'_>,
        shown: &Path,
        depth: usize,
    ) -> Result<ObjectId, StoreError> {
        let st = rustix::fs::fstat(dirfd).map_err(|e| StoreError::io(shown, "stat", e))?;
        let xattrs = inode::read_xattrs(&XattrSource::Fd(dirfd), shown)?;
        let meta = DirMeta {
            mode: st.st_mode & MODE_BITS,
            uid: st.st_uid,
            gid: st.st_gid,
            xattrs,
        };
        self.stats.dirs += 1;
        // Read all names first so that only one fd per level stays open while recursing.
        let mut names = Vec::new();
        let mut dir = rustix::fs::Dir::read_from(dirfd)
            .map_err(|e| StoreError::io(shown, "read directory", e))?;
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(|e| StoreError::io(shown, "read directory", e))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(name.to_vec());
            }
        }
        drop(dir);
        let mut entries = Vec::with_capacity(names.len());
        for name in names {
            let path = shown.join(OsStr::from_bytes(&name));
            let entry_name = EntryName::new(&name).map_err(|e| StoreError::format(&path, e))?;
            let st = rustix::fs::statat(dirfd, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| StoreError::io(&path, "stat", e))?;
            let ftype = FileType::from_raw_mode(st.st_mode);
            if ftype == FileType::Socket
                && let Some(skipped) = &mut self.skipped
            {
                skipped.push(path);
                continue;
            }
            let (kind, id) = if ftype == FileType::Directory {
                if depth + 1 > TREE_DEPTH_MAX {
                    return Err(StoreError::Unsupported {
                        path,
                        reason: format!(
                            "is nested deeper than the limit of {TREE_DEPTH_MAX} directories"
                        ),
                    });
                }
                let child = inode::open_dir_at(dirfd, &name, &path)?;
                (EntryKind::Tree, self.tree(child.as_fd(), &path, depth + 1)?)
            } else {
                (EntryKind::File, self.file(dirfd, &name, &st, &path, depth)?)
            };
            entries.push(TreeEntry {
                name: entry_name,
                kind,
                id,
            });
        }
        let tree = Tree::new(meta, entries).map_err(|e| StoreError::format(shown, e))?;
        self.txn.write_tree(&tree)
    }

    fn file(
        &mut self,
        dirfd: BorrowedFd<'_>,
        name: &[u8],
        st: &rustix::fs::Stat,
        path: &Path,
        depth: usize,
    ) -> Result<ObjectId, StoreError> {
        let kind = inode::file_kind(st, path)?;
        // Checked at every path, hard links to one symlink included (its object is
        // read once, below).
        if self.check_links && kind == FileKind::Symlink {
            let target = rustix::fs::readlinkat(dirfd, name, Vec::new())
                .map_err(|e| StoreError::io(path, "read symlink", e))?;
            format::link::check(target.as_bytes(), depth).map_err(|e| StoreError::Unsupported {
                path: path.to_path_buf(),
                reason: format!("symlink target {e}"),
            })?;
        }
        let key = (st.st_dev, st.st_ino);
        if st.st_nlink > 1
            && let Some(id) = self.links.get(&key)
        {
            self.stats.files += 1;
            return Ok(*id);
        }
        let id = if kind == FileKind::Regular {
            let fd: OwnedFd = rustix::fs::openat(
                dirfd,
                name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| StoreError::io(path, "open", e))?;
            // Re-stat through the fd: the entry may have been replaced since `statat`.
            let st = rustix::fs::fstat(&fd).map_err(|e| StoreError::io(path, "stat", e))?;
            let xattrs = inode::read_xattrs(&XattrSource::Fd(fd.as_fd()), path)?;
            let header = inode::header_from_stat(&st, FileKind::Regular, xattrs);
            self.stats.bytes += header.size;
            let mut file = std::fs::File::from(fd);
            self.txn.write_file(&header, &mut file, path)?
        } else {
            let target = if kind == FileKind::Symlink {
                rustix::fs::readlinkat(dirfd, name, Vec::new())
                    .map_err(|e| StoreError::io(path, "read symlink", e))?
                    .into_bytes()
            } else {
                Vec::new()
            };

            let link = inode::proc_path(dirfd, name);
            let xattrs = inode::read_xattrs(&XattrSource::Link(&link), path)?;
            let mut header = inode::header_from_stat(st, kind, xattrs);
            header.size = target.len() as u64;
            self.txn.write_file(&header, &mut target.as_slice(), path)?
        };
        if st.st_nlink > 1 {
            self.links.insert(key, id);
        }
        self.stats.files += 1;
        if self.stats.files - self.last_report >= 1000 {
            self.last_report = self.stats.files;
            (self.progress)(&self.stats);
        }
        Ok(id)
    }
}

/// A directory tree assembled in memory from entries that arrive in any order (for
/// example from a tarball), then written as tree objects by [`MemDir::write`].
#[derive(Debug, Clone)]
pub struct MemDir {
    meta: DirMeta,
    /// Whether `meta` came from an explicit entry (else it is the default for
    /// directories that are only implied by their children).
    explicit: bool,
    children: BTreeMap<EntryName, MemNode>,
}

#[derive(Debug, Clone)]
enum MemNode {
    File(ObjectId),
    Dir(MemDir),
}

/// Why an entry could not be added to a [`MemDir`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemDirError {
    /// A path component is not a safe name (`..`, empty, too long, …).
    #[error("unsafe path component: {0}")]
    BadName(format::FormatError),
    /// The path goes through something that is not a directory.
    #[error("a parent of this path is not a directory")]
    NotADirectory,
    /// The path names something that already exists with a different type.
    #[error("already present as a different type of entry")]
    TypeClash,
    /// The path is nested too deeply.
    #[error("nested deeper than {TREE_DEPTH_MAX} directories")]
    TooDeep,
}

impl MemDir {
    /// An empty directory with metadata `meta`.
    pub fn new(meta: DirMeta) -> Self {
        Self {
            meta,
            explicit: true,
            children: BTreeMap::new(),
        }
    }

    /// Metadata for directories that only appear as parents of other entries:
    /// mode 0755, owned by root, no xattrs.
    pub fn implied_meta() -> DirMeta {
        DirMeta {
            mode: 0o755,
            uid: 0,
            gid: 0,
            xattrs: format::Xattrs::new(),
        }
    }

    fn walk(&mut self, parents: &[&[u8]]) -> Result<&mut MemDir, MemDirError> {
        if parents.len() > TREE_DEPTH_MAX {
            return Err(MemDirError::TooDeep);
        }
        let mut dir = self;
        for comp in parents {
            let name = EntryName::new(comp).map_err(MemDirError::BadName)?;
            let node = dir.children.entry(name).or_insert_with(|| {
                MemNode::Dir(MemDir {
                    meta: Self::implied_meta(),
                    explicit: false,
                    children: BTreeMap::new(),
                })
            });
            dir = match node {
                MemNode::Dir(d) => d,
                MemNode::File(_) => return Err(MemDirError::NotADirectory),
            };
        }
        Ok(dir)
    }

    /// Adds (or replaces) a file entry at `path` (components, relative to this directory).
    pub fn add_file(&mut self, path: &[&[u8]], id: ObjectId) -> Result<(), MemDirError> {
        let Some((last, parents)) = path.split_last() else {
            return Err(MemDirError::TypeClash);
        };
        let name = EntryName::new(last).map_err(MemDirError::BadName)?;
        let dir = self.walk(parents)?;
        if matches!(dir.children.get(&name), Some(MemNode::Dir(_))) {
            return Err(MemDirError::TypeClash);
        }
        dir.children.insert(name, MemNode::File(id));
        Ok(())
    }

    /// Adds a directory at `path`, or sets the metadata of one already implied.
    /// An empty `path` sets this directory's own metadata.
    pub fn add_dir(&mut self, path: &[&[u8]], meta: DirMeta) -> Result<(), MemDirError> {
        let dir = self.walk(path)?;
        dir.meta = meta;
        dir.explicit = true;
        Ok(())
    }

    /// Looks up the object of a file entry.
    pub fn file_at(&self, path: &[&[u8]]) -> Option<ObjectId> {
        let (last, parents) = path.split_last()?;
        let mut dir = self;
        for comp in parents {
            match dir.children.get(&EntryName::new(comp).ok()?)? {
                MemNode::Dir(d) => dir = d,
                MemNode::File(_) => return None,
            }
        }
        match dir.children.get(&EntryName::new(last).ok()?)? {
            MemNode::File(id) => Some(*id),
            MemNode::Dir(_) => None,
        }
    }

    /// Writes every directory as a tree object (children first); returns the root's id.
    pub fn write(&self, txn: &mut Txn<'_>) -> Result<ObjectId, StoreError> {
        let mut entries = Vec::with_capacity(self.children.len());
        for (name, node) in &self.children {
            let (kind, id) = match node {
                MemNode::File(id) => (EntryKind::File, *id),
                MemNode::Dir(d) => (EntryKind::Tree, d.write(txn)?),
            };
            entries.push(TreeEntry {
                name: name.clone(),
                kind,
                id,
            });
        }
        let tree =
            Tree::new(self.meta.clone(), entries).map_err(|e| StoreError::format(txn_path(), e))?;
        txn.write_tree(&tree)
    }

    /// Whether this directory's metadata was given explicitly.
    pub fn is_explicit(&self) -> bool {
        self.explicit
    }
}

fn txn_path() -> PathBuf {
    PathBuf::from("<tree>")
}
