//! Why a command failed: [`UpdaterError`], and for an input the device will not take,
//! a typed [`Refusal`] that a program can match on (the text stays one line naming the
//! input and the cause).

use std::path::{Path, PathBuf};

use format::ObjectId;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum UpdaterError {
    /// A sysroot operation failed.
    #[error("{path}: {step}: {errno}", path = path.display(), errno = std::io::Error::from(*errno))]
    Sysroot {
        /// The sysroot.
        path: PathBuf,
        /// What was being done.
        step: &'static str,
        /// The OS error.
        errno: rustix::io::Errno,
    },
    /// The object store failed.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// Neither copy of the boot record is valid.
    #[error("{}: no valid boot record (berth/boot/record.a and record.b are missing or damaged)", path.display())]
    NoRecord {
        /// The sysroot.
        path: PathBuf,
    },
    /// An input (an update, a part of one, a channel pointer, an object) was refused;
    /// nothing was changed because of it.
    #[error("{input}: {why}")]
    Refused {
        /// The input, as the user named it (a path or a URL).
        input: String,
        /// Why.
        why: Refusal,
    },
    /// The command does not apply to the device's state.
    #[error("{0}")]
    State(String),
    /// A repository or registry could not be reached, trusted or entered.
    #[error(transparent)]
    Net(#[from] net::NetError),
    /// An update's parts were all applied but did not make its commit.
    #[error("{0}")]
    Incomplete(String),
    /// Another berth command holds a lock this one needs ([`crate::lock`]).
    #[error("{0}")]
    Busy(String),
    /// `/run/berth/boot.json` could not be read.
    #[error("{}: {reason}", path.display())]
    BootJson {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Why an input was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Rollback protection: the target is not newer than the running release.
    #[error(
        "version {version} is not newer than the installed {installed}; refusing (pass --allow-downgrade to install it anyway)"
    )]
    NotNewer {
        /// The update's version.
        version: String,
        /// The running deployment's version.
        installed: String,
    },
    /// Rollback protection cannot be checked: the running commit is unreadable.
    #[error(
        "the running deployment {deployment}'s commit cannot be read ({cause}), so rollback protection cannot check the version; refusing (repair the store with berth fsck --repair, or pass --allow-downgrade)"
    )]
    NoFloor {
        /// The running deployment.
        deployment: String,
        /// Why its commit cannot be read.
        cause: String,
    },
    /// A delta whose base commit the device does not have.
    #[error(
        "is a delta from commit {from}, which this device does not have; use a full update (berth-image delta --empty)"
    )]
    MissingBase {
        /// The delta's base commit.
        from: ObjectId,
    },
    /// Not enough free space in the sysroot.
    #[error("not enough free space: the update needs {need} bytes, {free} are free")]
    NoSpace {
        /// Bytes needed (with 1 MiB to spare).
        need: u64,
        /// Bytes free.
        free: u64,
    },
    /// A new kernel set does not fit on the boot partition.
    #[error(
        "not enough room on the boot partition for kernel set {set} ({version}): it needs {need} bytes, {free} are free (berth gc removes the sets no deployment uses)"
    )]
    NoBootSpace {
        /// The kernel set's directory name.
        set: String,
        /// Its kernel version.
        version: String,
        /// Bytes needed.
        need: u64,
        /// Bytes free.
        free: u64,
    },
    /// No trusted key signed it, or a signature is bad.
    #[error("{cause} (keys trusted by deployment {trusted_by})")]
    BadSignature {
        /// What the signature check said.
        cause: String,
        /// The deployment whose keys were tried.
        trusted_by: String,
    },
    /// It makes a file that `--forbid` refuses.
    #[error("{0}")]
    Forbidden(String),
    /// A channel pointer that is older than, or conflicts with, one accepted before, or
    /// has expired.
    #[error("{0}")]
    Stale(String),
    /// Anything else wrong with it: truncated, damaged, malformed, not what its signed
    /// metadata says.
    #[error("{0}")]
    Invalid(String),
}

/// An input refused for `why`.
pub(crate) fn refused(input: impl std::fmt::Display, why: Refusal) -> UpdaterError {
    UpdaterError::Refused {
        input: input.to_string(),
        why,
    }
}

/// An error about `file` (an update, a part of one): one line naming it and the cause.
pub(crate) fn bad(file: &Path, what: impl Into<String>) -> UpdaterError {
    refused(file.display(), Refusal::Invalid(what.into()))
}

/// Maps a sysroot error at `path` into an [`UpdaterError`].
pub(crate) fn sys_err(path: &Path) -> impl Fn(sysroot::SysrootError) -> UpdaterError + '_ {
    move |e| UpdaterError::Sysroot {
        path: path.to_path_buf(),
        step: e.step,
        errno: e.errno,
    }
}
