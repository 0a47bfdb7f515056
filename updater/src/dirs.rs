//! The sysroot's own directories (`berth/repo/tmp`, `berth/state/channels`,
//! `berth/state/etc/<name>`, …), opened from the sysroot's directory fd one component
//! at a time with `O_NOFOLLOW | O_DIRECTORY`: a symlink (or anything else that is not
//! a directory) at any step is refused with one line, never followed into another
//! tree. What the updater then writes or removes there goes through the directory's fd
//! (`*at` calls), so a name planted later cannot redirect it either.
//!
//! The components are the updater's own constants and validated names (deployment,
//! commit, channel): nothing here takes `..` or a `/` from outside.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Read as _;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::UpdaterError;

/// An open directory of the sysroot, with its path for messages.
#[derive(Debug)]
pub(crate) struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// One line saying what is wrong at `path`.
fn refuse(path: &Path, what: &str) -> UpdaterError {
    UpdaterError::State(format!("{}: {what}", path.display()))
}

/// What stands at `name` in `dir`, in words, for a refusal.
fn describe(dir: BorrowedFd<'_>, name: &OsStr) -> &'static str {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .map(|s| FileType::from_raw_mode(s.st_mode))
    {
        Ok(FileType::Symlink) => {
            "is a symbolic link, not a directory; refused (berth never follows a link inside the sysroot)"
        }
        Ok(FileType::Directory) => "cannot be opened as a directory",
        Ok(_) => "is not a directory; refused",
        Err(_) => "cannot be examined",
    }
}

impl Dir {
    /// Opens the directory at `path` itself (the sysroot: following a link here is the
    /// caller's choice, as for any command-line path).
    pub(crate) fn open_root(path: &Path) -> Result<Self, UpdaterError> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| refuse(path, &format!("open directory: {e}")))?;
        Ok(Self {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The directory's path, for messages and for readers that take a path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The directory's fd.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// `rel` (components separated by `/`) below this directory; `None` if a component
    /// is missing, unless `create` gives the mode to make it with.
    pub(crate) fn sub(&self, rel: &str, create: Option<u32>) -> Result<Option<Self>, UpdaterError> {
        let mut fd = None::<OwnedFd>;
        let mut path = self.path.clone();
        for name in rel.split('/').filter(|c| !c.is_empty()) {
            debug_assert!(name != "." && name != "..", "constant names only");
            let parent = fd.as_ref().map_or(self.fd.as_fd(), AsFd::as_fd);
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let opened = match rustix::fs::openat(parent, name, flags, Mode::empty()) {
                Err(Errno::NOENT) => match create {
                    None => return Ok(None),
                    Some(mode) => {
                        match fsop::mkdirat(parent, name, Mode::from_raw_mode(mode)) {
                            Ok(()) | Err(Errno::EXIST) => {}
                            Err(e) => {
                                return Err(refuse(
                                    &path.join(name),
                                    &format!("create directory: {e}"),
                                ));
                            }
                        }
                        rustix::fs::openat(parent, name, flags, Mode::empty())
                    }
                },
                other => other,
            };
            let next = match opened {
                Ok(f) => f,
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    return Err(refuse(&path.join(name), describe(parent, OsStr::new(name))));
                }
                Err(e) => return Err(refuse(&path.join(name), &format!("open directory: {e}"))),
            };
            path.push(name);
            fd = Some(next);
        }
        Ok(Some(Self {
            fd: match fd {
                Some(f) => f,
                None => rustix::io::fcntl_dupfd_cloexec(&self.fd, 0)
                    .map_err(|e| refuse(&self.path, &format!("dup: {e}")))?,
            },
            path,
        }))
    }

    /// The names in the directory (not `.` and `..`).
    pub(crate) fn names(&self) -> Result<Vec<Vec<u8>>, UpdaterError> {
        let err = |e: Errno| refuse(&self.path, &format!("read directory: {e}"));
        let mut out = Vec::new();
        let mut entries = rustix::fs::Dir::read_from(&self.fd).map_err(err)?;
        while let Some(entry) = entries.read() {
            let n = entry.map_err(err)?.file_name().to_bytes().to_vec();
            if n != b"." && n != b".." {
                out.push(n);
            }
        }
        Ok(out)
    }

    /// The path of `name` in this directory, for messages.
    pub(crate) fn join(&self, name: impl AsRef<OsStr>) -> PathBuf {
        self.path.join(name.as_ref())
    }

    /// Opens the regular file `name` for reading; `None` if it does not exist. Refuses
    /// a symlink, a FIFO, a device or a directory there (none can hang the reader).
    pub(crate) fn open_file(&self, name: &str) -> Result<Option<File>, UpdaterError> {
        let path = self.join(name);
        let fd = match rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::LOOP) => {
                return Err(refuse(&path, "is a symbolic link, not a file; refused"));
            }
            Err(e) => return Err(refuse(&path, &format!("open: {e}"))),
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| refuse(&path, &format!("stat: {e}")))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(refuse(&path, "is not a regular file; refused"));
        }
        Ok(Some(File::from(fd)))
    }

    /// The whole regular file `name`, refused past `max` bytes; `None` if it does not
    /// exist.
    pub(crate) fn read(&self, name: &str, max: u64) -> Result<Option<Vec<u8>>, UpdaterError> {
        let Some(f) = self.open_file(name)? else {
            return Ok(None);
        };
        let path = self.join(name);
        let mut out = Vec::new();
        f.take(max + 1)
            .read_to_end(&mut out)
            .map_err(|e| refuse(&path, &format!("read: {e}")))?;
        if out.len() as u64 > max {
            return Err(refuse(
                &path,
                &format!("is larger than the {max} bytes allowed"),
            ));
        }
        Ok(Some(out))
    }

    /// The size of the regular file `name` (0 if it does not exist).
    pub(crate) fn file_len(&self, name: &str) -> Result<u64, UpdaterError> {
        Ok(self
            .open_file(name)?
            .map_or(0, |f| f.metadata().map_or(0, |m| m.len())))
    }

    /// Removes `name` here (a file, a symlink itself, or a whole directory tree, never
    /// following a link); a missing name is fine.
    pub(crate) fn remove(&self, name: &[u8]) -> Result<(), UpdaterError> {
        match store::checkout::remove_tree(self.fd.as_fd(), name, 0) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(refuse(
                &self.join(OsStr::from_bytes(name)),
                &format!("remove: {e}"),
            )),
        }
    }

    /// Replaces the file `name` with `bytes` so that a power cut leaves the old file or
    /// the new one: a temporary `.NAME.tmp`, fsync, rename over `name`, fsync this
    /// directory.
    pub(crate) fn replace(&self, name: &str, bytes: &[u8], mode: u32) -> Result<(), UpdaterError> {
        let path = self.join(name);
        let tmp = format!(".{name}.tmp");
        let io = |e: Errno| refuse(&path, &format!("write: {e}"));
        let f = fsop::create(
            self.fd.as_fd(),
            tmp.as_str(),
            OFlags::WRONLY | OFlags::TRUNC,
            Mode::from_raw_mode(mode),
        )
        .map_err(io)?;
        fsop::write_all(f.as_fd(), bytes).map_err(io)?;
        fsop::fsync(f.as_fd()).map_err(io)?;
        fsop::renameat(self.fd.as_fd(), tmp.as_str(), self.fd.as_fd(), name).map_err(io)?;
        self.sync()
    }

    /// Makes the directory's entries durable.
    pub(crate) fn sync(&self) -> Result<(), UpdaterError> {
        fsop::fsync(self.fd.as_fd()).map_err(|e| refuse(&self.path, &format!("fsync: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_links_and_files_at_every_step() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Dir::open_root(tmp.path()).unwrap();
        let made = root.sub("a/b/c", Some(0o755)).unwrap().unwrap();
        assert_eq!(made.path(), tmp.path().join("a/b/c"));
        assert!(root.sub("a/x", None).unwrap().is_none());
        std::fs::create_dir(tmp.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("elsewhere"), tmp.path().join("a/link"))
            .unwrap();
        std::fs::write(tmp.path().join("a/file"), b"x").unwrap();
        for rel in ["a/link", "a/link/deeper", "a/file", "a/file/deeper"] {
            for create in [None, Some(0o755)] {
                let e = root.sub(rel, create).unwrap_err().to_string();
                assert!(e.contains("refused"), "{rel}: {e}");
                assert!(!e.contains('\n'));
            }
        }
        assert!(!tmp.path().join("elsewhere/deeper").exists());
        // Files: a symlink or a FIFO is refused, a missing one is None.
        let a = root.sub("a", None).unwrap().unwrap();
        assert_eq!(a.read("file", 10).unwrap().unwrap(), b"x");
        assert!(a.read("missing", 10).unwrap().is_none());
        assert!(a.read("file", 0).is_err());
        std::os::unix::fs::symlink("file", tmp.path().join("a/flink")).unwrap();
        assert!(a.read("flink", 10).is_err());
        rustix::fs::mknodat(
            a.fd(),
            "fifo",
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert!(
            a.read("fifo", 10)
                .unwrap_err()
                .to_string()
                .contains("not a regular file")
        );
        a.remove(b"flink").unwrap();
        assert!(tmp.path().join("a/file").exists());
    }
}
