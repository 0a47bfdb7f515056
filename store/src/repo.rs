//! Opening and creating a store, and reading its tree and commit objects.

use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use format::sig::Signatures;
use format::{Commit, ObjectId, ObjectKind, Tree};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::StoreError;

/// The store layout version written to `config`. Bump it, or add an `incompat` feature,
/// when a change would make an older reader misread the store.
pub const STORE_VERSION: u32 = 1;

/// Largest `config` file read.
const CONFIG_MAX: u64 = 4096;

/// Largest tree object read: `TREE_ENTRIES_MAX` entries of at most 291 bytes each would
/// be larger, but no real directory comes near this, and it bounds memory.
const TREE_BYTES_MAX: u64 = 64 << 20;

/// An open store.
#[derive(Debug)]
pub struct Repo {
    path: PathBuf,
    /// The store's directory (transactions stage under its `tmp/`).
    #[cfg_attr(not(feature = "write"), allow(dead_code))]
    root: OwnedFd,
    objects: OwnedFd,
}

/// The relative path of an object (or its signature file) under `objects/`.
pub(crate) fn object_path(id: &ObjectId, suffix: &str) -> String {
    let hex = id.to_string();
    format!("{}/{}.{suffix}", &hex[..2], &hex[2..])
}

fn open_dir(dirfd: BorrowedFd<'_>, name: &str, path: &Path) -> Result<OwnedFd, StoreError> {
    rustix::fs::openat(
        dirfd,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| StoreError::io(path.join(name), "open directory", e))
}

impl Repo {
    /// Opens an existing store.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let root = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| StoreError::io(path, "open repository", e))?;
        let config = match rustix::fs::openat(
            &root,
            "config",
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => {
                return Err(StoreError::NotARepo {
                    path: path.into(),
                    reason: "it has no config file".into(),
                });
            }
            Err(e) => return Err(StoreError::io(path.join("config"), "open", e)),
        };
        let mut text = String::new();
        std::fs::File::from(config)
            .take(CONFIG_MAX)
            .read_to_string(&mut text)
            .map_err(|e| StoreError::NotARepo {
                path: path.into(),
                reason: format!("config is unreadable: {e}"),
            })?;
        parse_config(&text).map_err(|reason| StoreError::NotARepo {
            path: path.into(),
            reason,
        })?;
        let objects = open_dir(root.as_fd(), "objects", path)?;
        Ok(Self {
            path: path.into(),
            root,
            objects,
        })
    }

    /// Creates a store at `path`, which must not exist or be an empty directory.
    /// Opens it if it is already a store.
    #[cfg(feature = "write")]
    pub fn create(path: &Path) -> Result<Self, StoreError> {
        match fsop::mkdirat(rustix::fs::CWD, path, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(StoreError::io(path, "create repository directory", e)),
        }
        let root = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| StoreError::io(path, "open repository", e))?;
        match rustix::fs::statat(&root, "config", rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
            // Already a store (or something claiming to be): let `open` judge its config.
            Ok(_) => return Self::open(path),
            Err(Errno::NOENT) => {}
            Err(e) => return Err(StoreError::io(path.join("config"), "stat", e)),
        }
        let mut dir = rustix::fs::Dir::read_from(&root)
            .map_err(|e| StoreError::io(path, "read directory", e))?;
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(|e| StoreError::io(path, "read directory", e))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                return Err(StoreError::NotARepo {
                    path: path.into(),
                    reason: "it has no config file and is not empty".into(),
                });
            }
        }
        for dir in ["objects", "tmp"] {
            // 0700: file objects keep their real modes, including setuid binaries; only
            // the store's owner may reach them through the store (as OSTree's bare repos).
            match fsop::mkdirat(root.as_fd(), dir, Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(StoreError::io(path.join(dir), "create directory", e)),
            }
        }
        let config =
            format!("berth-store\nversion={STORE_VERSION}\ncompat=\nro-compat=\nincompat=\n");
        crate::inode::write_file_atomic(root.as_fd(), "config", config.as_bytes(), path)?;
        Self::open(path)
    }

    /// The store's directory, as given to [`Repo::open`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    #[cfg(feature = "write")]
    pub(crate) fn root_fd(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    pub(crate) fn objects_fd(&self) -> BorrowedFd<'_> {
        self.objects.as_fd()
    }

    pub(crate) fn objects_path(&self, rel: &str) -> PathBuf {
        self.path.join("objects").join(rel)
    }

    /// Whether the object is present (under its final name).
    pub fn has(&self, id: &ObjectId, kind: ObjectKind) -> Result<bool, StoreError> {
        let rel = object_path(id, kind.suffix());
        match rustix::fs::statat(
            &self.objects,
            rel.as_str(),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        ) {
            Ok(_) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(StoreError::io(self.objects_path(&rel), "stat", e)),
        }
    }

    /// The target of a symlink file object, `None` for a file object of another kind
    /// (one `lstat`, and a `readlink` for a symlink).
    pub fn symlink_target(&self, id: &ObjectId) -> Result<Option<Vec<u8>>, StoreError> {
        let rel = object_path(id, ObjectKind::File.suffix());
        match rustix::fs::readlinkat(&self.objects, rel.as_str(), Vec::new()) {
            Ok(t) => Ok(Some(t.into_bytes())),
            // Not a symlink: readlink says EINVAL.
            Err(Errno::INVAL) => Ok(None),
            Err(Errno::NOENT) => Err(StoreError::missing(*id, ObjectKind::File)),
            Err(e) => Err(StoreError::io(self.objects_path(&rel), "read symlink", e)),
        }
    }

    /// Reads an object's bytes and checks they hash to its id.
    fn read_verified(
        &self,
        id: &ObjectId,
        kind: ObjectKind,
        max: u64,
    ) -> Result<Vec<u8>, StoreError> {
        let rel = object_path(id, kind.suffix());
        let bytes = self
            .read_bounded(&rel, max)?
            .ok_or_else(|| StoreError::missing(*id, kind))?;
        let actual = ObjectId::digest(&bytes);
        if actual != *id {
            return Err(StoreError::Corrupt {
                id: *id,
                kind: kind.suffix(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Reads a file under `objects/`, refusing one larger than `max`; `None` if absent.
    fn read_bounded(&self, rel: &str, max: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let fd = match rustix::fs::openat(
            &self.objects,
            rel,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(StoreError::io(self.objects_path(rel), "open", e)),
        };
        let mut bytes = Vec::new();
        std::fs::File::from(fd)
            .take(max + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| StoreError::io(self.objects_path(rel), "read", e))?;
        if bytes.len() as u64 > max {
            return Err(StoreError::Unsupported {
                path: self.objects_path(rel),
                reason: format!("larger than the {max}-byte limit"),
            });
        }
        Ok(Some(bytes))
    }

    /// Reads and decodes a tree object, verifying its hash.
    pub fn read_tree(&self, id: &ObjectId) -> Result<Tree, StoreError> {
        let bytes = self.read_verified(id, ObjectKind::Tree, TREE_BYTES_MAX)?;
        Tree::decode(&bytes)
            .map_err(|e| StoreError::format(self.objects_path(&object_path(id, "tree")), e))
    }

    /// Reads and decodes a commit object, verifying its hash. Returns the exact bytes too,
    /// since those are what signatures cover.
    pub fn read_commit(&self, id: &ObjectId) -> Result<(Commit, Vec<u8>), StoreError> {
        let bytes =
            self.read_verified(id, ObjectKind::Commit, format::limits::COMMIT_MAX as u64)?;
        let commit = Commit::decode(&bytes)
            .map_err(|e| StoreError::format(self.objects_path(&object_path(id, "commit")), e))?;
        Ok((commit, bytes))
    }

    /// Reads a commit's detached signatures; an unsigned commit has none.
    pub fn read_signatures(&self, id: &ObjectId) -> Result<Signatures, StoreError> {
        let rel = object_path(id, "sig");
        match self.read_bounded(&rel, 4096)? {
            None => Ok(Signatures::new()),
            Some(bytes) => Signatures::decode(&bytes)
                .map_err(|e| StoreError::format(self.objects_path(&rel), e)),
        }
    }

    /// Resolves a commit id given in full or as a unique prefix of at least 8 hex digits.
    pub fn resolve_commit(&self, text: &str) -> Result<ObjectId, StoreError> {
        let bad = |reason: &str| StoreError::Unsupported {
            path: PathBuf::from(text),
            reason: reason.into(),
        };
        if text.len() == 64 {
            let id: ObjectId = text.parse().map_err(|e| StoreError::format(text, e))?;
            return if self.has(&id, ObjectKind::Commit)? {
                Ok(id)
            } else {
                Err(StoreError::missing(id, ObjectKind::Commit))
            };
        }
        if text.len() < 8 || text.len() > 64 || !text.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad("not a commit id (expected 8 to 64 hexadecimal digits)"));
        }
        let prefix = text.to_ascii_lowercase();
        let sub = match open_dir(
            self.objects.as_fd(),
            &prefix[..2],
            &self.path.join("objects"),
        ) {
            Ok(fd) => fd,
            Err(StoreError::Io { cause, .. }) if cause.kind() == std::io::ErrorKind::NotFound => {
                return Err(bad("no commit with this id in the repository"));
            }
            Err(e) => return Err(e),
        };
        let mut found = None;
        let mut dir = rustix::fs::Dir::read_from(&sub)
            .map_err(|e| StoreError::io(self.objects_path(&prefix[..2]), "read directory", e))?;
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(|e| {
                StoreError::io(self.objects_path(&prefix[..2]), "read directory", e)
            })?;
            let name = entry.file_name().to_string_lossy();
            if let Some(rest) = name.strip_suffix(".commit")
                && rest.starts_with(&prefix[2..])
            {
                if found.is_some() {
                    return Err(bad("ambiguous commit id prefix"));
                }
                found = Some(format!("{}{rest}", &prefix[..2]));
            }
        }
        let full = found.ok_or_else(|| bad("no commit with this id in the repository"))?;
        full.parse().map_err(|e| StoreError::format(text, e))
    }
}

/// Parses `config`; the error is the reason the directory is not a usable store.
fn parse_config(text: &str) -> Result<(), String> {
    let mut lines = text.lines();
    if lines.next() != Some("berth-store") {
        return Err("config does not start with 'berth-store'".into());
    }
    let mut version = None;
    for line in lines {
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("config line {line:?} is not key=value"))?;
        match k {
            "version" => {
                version = Some(
                    v.parse::<u32>()
                        .map_err(|_| format!("config version {v:?} is not a number"))?,
                );
            }
            "incompat" if !v.is_empty() => {
                return Err(format!("it needs features this build does not have: {v}"));
            }
            // No compat or ro-compat features exist yet, and unknown ones are safe to
            // ignore by definition; unknown keys likewise.
            _ => {}
        }
    }
    match version {
        Some(STORE_VERSION) => Ok(()),
        Some(v) => Err(format!(
            "store version {v} is not supported (this build reads version {STORE_VERSION})"
        )),
        None => Err("config has no version".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_table() {
        let ok = "berth-store\nversion=1\ncompat=\nro-compat=\nincompat=\n";
        assert_eq!(parse_config(ok), Ok(()));
        for bad in [
            "",
            "ostree\nversion=1",
            "berth-store\n",
            "berth-store\nversion=2",
            "berth-store\nversion=1\nincompat=zstd-objects",
            "berth-store\nversion",
        ] {
            assert!(parse_config(bad).is_err(), "{bad:?}");
        }
    }
}
