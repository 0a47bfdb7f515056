//! What the device refuses, whatever signed it: files `--forbid` names, releases that
//! are not newer than the running one (rollback protection), deltas from a commit the
//! device lacks, and updates that do not fit.

use std::path::Path;

use format::record::DeploymentName;
use format::{Commit, ObjectId, ObjectKind};
use store::{Repo, StoreError};

use crate::Device;
use crate::error::{Refusal, UpdaterError, refused};

/// A kind of file an update may not make (`berth update --forbid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forbid {
    /// Character and block device nodes.
    Device,
    /// Regular files with the setuid or setgid bit.
    Setuid,
}

/// The kinds of file an update may not make; none by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forbidden {
    device: bool,
    setuid: bool,
}

impl Forbidden {
    /// This set and `kind`.
    #[must_use]
    pub fn with(self, kind: Forbid) -> Self {
        match kind {
            Forbid::Device => Self {
                device: true,
                ..self
            },
            Forbid::Setuid => Self {
                setuid: true,
                ..self
            },
        }
    }

    /// What is wrong with a file `header` describes, if the policy refuses it.
    pub(crate) fn refuses(self, header: &format::FileHeader) -> Option<String> {
        use format::FileKind;
        let what = match header.kind {
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            _ => "",
        };
        if self.device && header.kind.is_device() {
            return Some(format!(
                "{what} {}:{}, which --forbid device refuses",
                header.rdev_major, header.rdev_minor
            ));
        }
        if self.setuid && header.kind == FileKind::Regular && header.mode & 0o6000 != 0 {
            return Some(format!(
                "a setuid or setgid regular file (mode 0{:o}), which --forbid setuid refuses",
                header.mode
            ));
        }
        None
    }
}

/// Rollback protection: the target must be newer than the running deployment's
/// commit, unless `allow_downgrade`.
pub(crate) fn check_newer(
    repo: &Repo,
    file: &Path,
    commit: &Commit,
    running: &DeploymentName,
    allow_downgrade: bool,
) -> Result<(), UpdaterError> {
    if allow_downgrade {
        return Ok(());
    }
    // Fail closed: without the running commit's version there is no floor, and an
    // update is refused rather than let an older release in.
    let unknown = |e: StoreError| {
        refused(
            file.display(),
            Refusal::NoFloor {
                deployment: running.as_str().to_owned(),
                cause: e.to_string(),
            },
        )
    };
    let id = repo.resolve_commit(running.as_str()).map_err(unknown)?;
    let (current, _) = repo.read_commit(&id).map_err(unknown)?;
    if commit.version.cmp_release(&current.version) == std::cmp::Ordering::Greater {
        return Ok(());
    }
    Err(refused(
        file.display(),
        Refusal::NotNewer {
            version: commit.version.to_string(),
            installed: current.version.to_string(),
        },
    ))
}

/// A delta's base commit must be in the store.
pub(crate) fn check_base(
    repo: &Repo,
    file: &Path,
    from: Option<ObjectId>,
) -> Result<(), UpdaterError> {
    match from.filter(|f| !repo.has(f, ObjectKind::Commit).unwrap_or(false)) {
        Some(from) => Err(refused(file.display(), Refusal::MissingBase { from })),
        None => Ok(()),
    }
}

impl Device {
    /// Refuses an update that needs more than the free space (with 1 MiB to spare).
    pub(crate) fn check_space(&self, bytes: u64) -> Result<(), UpdaterError> {
        let need = bytes.saturating_add(1 << 20);
        let vfs = rustix::fs::statvfs(&self.path).map_err(|e| UpdaterError::Sysroot {
            path: self.path.clone(),
            step: "statvfs",
            errno: e,
        })?;
        let free = vfs.f_bavail.saturating_mul(vfs.f_frsize);
        if free < need {
            return Err(refused(
                self.path.display(),
                Refusal::NoSpace { need, free },
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use format::{FileHeader, FileKind, Xattrs};

    fn header(kind: FileKind, mode: u32) -> FileHeader {
        let device = kind.is_device();
        FileHeader {
            kind,
            mode,
            uid: 0,
            gid: 0,
            rdev_major: u32::from(device),
            rdev_minor: if device { 3 } else { 0 },
            size: 0,
            xattrs: Xattrs::new(),
        }
    }

    #[test]
    fn forbidden_kinds() {
        let none = Forbidden::default();
        let dev = none.with(Forbid::Device);
        let suid = none.with(Forbid::Setuid);
        let both = dev.with(Forbid::Setuid);
        // (header, refused by: nothing, device, setuid, both)
        let (n, y) = (false, true);
        let table = [
            (header(FileKind::Regular, 0o755), [n, n, n, n]),
            (header(FileKind::Regular, 0o4755), [n, n, y, y]),
            (header(FileKind::Regular, 0o2711), [n, n, y, y]),
            (header(FileKind::Regular, 0o1777), [n, n, n, n]),
            (header(FileKind::CharDevice, 0o666), [n, y, n, y]),
            (header(FileKind::BlockDevice, 0o660), [n, y, n, y]),
            (header(FileKind::Fifo, 0o644), [n, n, n, n]),
            // A symlink's mode bits mean nothing; only regular files are setuid.
            (header(FileKind::Symlink, 0o4777), [n, n, n, n]),
        ];
        for (h, want) in &table {
            let got = [none, dev, suid, both].map(|f| f.refuses(h).is_some());
            assert_eq!(&got, want, "{h:?}");
        }
        let why = dev.refuses(&header(FileKind::CharDevice, 0o666)).unwrap();
        assert_eq!(why, "a character device 1:3, which --forbid device refuses");
    }
}
