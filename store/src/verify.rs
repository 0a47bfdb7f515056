//! Verifying objects against their names: one file object, or the whole store (`fsck`).

use std::collections::HashSet;
use std::os::fd::{AsFd, BorrowedFd};

use format::{EntryKind, FileKind, ObjectId, ObjectKind};
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::inode::{self, XattrSource};
use crate::repo::object_path;
use crate::{Repo, StoreError};

/// What [`Repo::fsck`] found.
#[derive(Debug, Default)]
pub struct FsckReport {
    /// Objects whose content was re-hashed.
    pub checked: u64,
    /// Objects that do not match their name, or cannot be read.
    pub corrupt: Vec<StoreError>,
    /// Objects referenced by a commit or tree that are not in the store.
    pub missing: Vec<StoreError>,
    /// The names of the corrupt and missing objects (a corrupt signature file names its
    /// commit), for `berth fsck --repair`.
    pub bad: Vec<(ObjectId, ObjectKind)>,
}

impl FsckReport {
    /// Whether the store is sound.
    pub fn is_ok(&self) -> bool {
        self.corrupt.is_empty() && self.missing.is_empty()
    }
}

impl Repo {
    /// Re-hashes a file object from its inode: metadata, xattrs and content.
    pub fn verify_file(&self, id: &ObjectId) -> Result<(), StoreError> {
        let shown = self.objects_path(&object_path(id, ObjectKind::File.suffix()));
        let (header, mut content) = self.file_object(id)?;
        let mut hasher = header.hasher();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = std::io::Read::read(&mut content, &mut buf)
                .map_err(|e| StoreError::io(&shown, "read", e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        // A regular file whose length no longer matches its inode's size cannot happen
        // (the header's size comes from the same inode), so any mismatch is corruption.
        let actual = hasher.finish().map_err(|e| StoreError::format(&shown, e))?;
        if actual == *id {
            Ok(())
        } else {
            Err(StoreError::Corrupt {
                id: *id,
                kind: "file",
                actual,
            })
        }
    }

    /// A small file object's content (refused past `max` bytes), re-hashed with its
    /// metadata against `id` before it is returned.
    pub fn read_file(&self, id: &ObjectId, max: u64) -> Result<Vec<u8>, StoreError> {
        let shown = self.objects_path(&object_path(id, ObjectKind::File.suffix()));
        let (header, content) = self.file_object(id)?;
        if header.size > max {
            return Err(StoreError::Unsupported {
                path: shown,
                reason: format!("larger than the {max}-byte limit"),
            });
        }
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(content, max), &mut bytes)
            .map_err(|e| StoreError::io(&shown, "read", e))?;
        let mut hasher = header.hasher();
        hasher.update(&bytes);
        let actual = hasher.finish().map_err(|e| StoreError::format(&shown, e))?;
        if actual != *id {
            return Err(StoreError::Corrupt {
                id: *id,
                kind: "file",
                actual,
            });
        }
        Ok(bytes)
    }

    /// Every object file under `objects/`: its id and suffix (`file`, `tree`, `commit`,
    /// `sig`), sorted. Names that are not object names are skipped.
    fn list_objects(&self) -> Result<Vec<(ObjectId, String)>, StoreError> {
        let objects_path = self.path().join("objects");
        let read_names =
            |fd: BorrowedFd<'_>, path: &std::path::Path| -> Result<Vec<String>, StoreError> {
                let err = |e| StoreError::io(path, "read directory", e);
                let mut names = Vec::new();
                let mut dir = rustix::fs::Dir::read_from(fd).map_err(err)?;
                while let Some(entry) = dir.read() {
                    names.push(
                        entry
                            .map_err(err)?
                            .file_name()
                            .to_string_lossy()
                            .into_owned(),
                    );
                }
                Ok(names)
            };
        let mut out = Vec::new();
        for prefix in read_names(self.objects_fd(), &objects_path)? {
            if prefix.len() != 2 || !prefix.bytes().all(|c| c.is_ascii_hexdigit()) {
                continue;
            }
            let dir_path = objects_path.join(&prefix);
            let dir = inode::open_dir_at(self.objects_fd(), prefix.as_bytes(), &dir_path)?;
            for name in read_names(dir.as_fd(), &dir_path)? {
                let Some((rest, suffix)) = name.split_once('.') else {
                    continue;
                };
                if let Ok(id) = format!("{prefix}{rest}").parse::<ObjectId>() {
                    out.push((id, suffix.to_owned()));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Re-hashes every object in the store and checks that every commit's trees and
    /// files are present.
    pub fn fsck(&self) -> Result<FsckReport, StoreError> {
        let mut report = FsckReport::default();
        let mut commits = Vec::new();
        for (id, suffix) in self.list_objects()? {
            let result = match suffix.as_str() {
                "file" => self.verify_file(&id),
                "tree" => self.read_tree(&id).map(drop),
                "commit" => self.read_commit(&id).map(|_| commits.push(id)),
                "sig" => self.read_signatures(&id).map(drop),
                _ => continue,
            };
            report.checked += 1;
            if let Err(e) = result {
                report.corrupt.push(e);
                let kind = match suffix.as_str() {
                    "file" => ObjectKind::File,
                    "tree" => ObjectKind::Tree,
                    _ => ObjectKind::Commit,
                };
                report.bad.push((id, kind));
            }
        }
        let mut seen = HashSet::new();
        for commit in commits {
            if let Ok((c, _)) = self.read_commit(&commit) {
                self.check_tree(&c.root, &mut seen, &mut report)?;
            }
        }
        Ok(report)
    }

    fn check_tree(
        &self,
        id: &ObjectId,
        seen: &mut HashSet<ObjectId>,
        report: &mut FsckReport,
    ) -> Result<(), StoreError> {
        if !seen.insert(*id) {
            return Ok(());
        }
        let tree = match self.read_tree(id) {
            Ok(t) => t,
            Err(e @ StoreError::Missing { .. }) => {
                report.missing.push(e);
                report.bad.push((*id, ObjectKind::Tree));
                return Ok(());
            }
            // Already reported as corrupt by the per-object pass.
            Err(_) => return Ok(()),
        };
        for entry in tree.entries() {
            match entry.kind {
                EntryKind::Tree => self.check_tree(&entry.id, seen, report)?,
                EntryKind::File => {
                    if seen.insert(entry.id) && !self.has(&entry.id, ObjectKind::File)? {
                        report
                            .missing
                            .push(StoreError::missing(entry.id, ObjectKind::File));
                        report.bad.push((entry.id, ObjectKind::File));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The content of a file object, to read it back out of the store.
#[derive(Debug)]
pub enum FileContent {
    /// A regular file's data.
    File(std::fs::File),
    /// A symlink's target (empty for devices and FIFOs).
    Bytes(std::io::Cursor<Vec<u8>>),
}

impl std::io::Read for FileContent {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::File(f) => f.read(buf),
            Self::Bytes(c) => c.read(buf),
        }
    }
}

impl Repo {
    /// Opens a file object: its header (from the inode) and its content. The content is
    /// not re-hashed here; writing it into another store through [`crate::Txn`] does that.
    pub fn file_object(
        &self,
        id: &ObjectId,
    ) -> Result<(format::FileHeader, FileContent), StoreError> {
        let rel = object_path(id, ObjectKind::File.suffix());
        let shown = self.objects_path(&rel);
        let objects = self.objects_fd();
        let st = match rustix::fs::statat(objects, rel.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Err(StoreError::missing(*id, ObjectKind::File)),
            Err(e) => return Err(StoreError::io(&shown, "stat", e)),
        };
        let kind = inode::file_kind(&st, &shown)?;
        if kind == FileKind::Regular {
            let fd = rustix::fs::openat(
                objects,
                rel.as_str(),
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| StoreError::io(&shown, "open", e))?;
            let xattrs = inode::read_xattrs(&XattrSource::Fd(fd.as_fd()), &shown)?;
            Ok((
                inode::header_from_stat(&st, kind, xattrs),
                FileContent::File(std::fs::File::from(fd)),
            ))
        } else {
            let target = if kind == FileKind::Symlink {
                rustix::fs::readlinkat(objects, rel.as_str(), Vec::new())
                    .map_err(|e| StoreError::io(&shown, "read symlink", e))?
                    .into_bytes()
            } else {
                Vec::new()
            };
            let link = inode::proc_path(objects, rel.as_bytes());
            let xattrs = inode::read_xattrs(&XattrSource::Link(&link), &shown)?;
            let mut header = inode::header_from_stat(&st, kind, xattrs);
            header.size = target.len() as u64;
            Ok((header, FileContent::Bytes(std::io::Cursor::new(target))))
        }
    }
}

#[cfg(feature = "write")]
impl Repo {
    /// Removes every object whose id is not in `keep` (a commit's signature file goes with
    /// its commit). Returns how many objects went and the content bytes of the regular
    /// files among them. Used by garbage collection, which computes `keep` from what it
    /// must not lose.
    pub fn remove_unreachable(&self, keep: &HashSet<ObjectId>) -> Result<(u64, u64), StoreError> {
        let (mut count, mut bytes) = (0, 0);
        let mut doomed: Vec<(ObjectId, String)> = self
            .list_objects()?
            .into_iter()
            .filter(|(id, _)| !keep.contains(id))
            .collect();
        // Commits first, then their signatures, trees and files: cut at any point, the
        // store holds no commit that names a removed object, only unreferenced leftovers
        // (which the next collection removes).
        doomed.sort_by_key(|(_, suffix)| match suffix.as_str() {
            "commit" => 0,
            "sig" => 1,
            "tree" => 2,
            _ => 3,
        });
        for (id, suffix) in doomed {
            let rel = object_path(&id, &suffix);
            let shown = self.objects_path(&rel);
            let st = rustix::fs::statat(self.objects_fd(), rel.as_str(), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| StoreError::io(&shown, "stat", e))?;
            if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile
            {
                bytes += u64::try_from(st.st_size).unwrap_or(0);
            }
            fsop::unlinkat(self.objects_fd(), rel.as_str(), AtFlags::empty())
                .map_err(|e| StoreError::io(&shown, "remove", e))?;
            count += 1;
        }
        Ok((count, bytes))
    }
}
