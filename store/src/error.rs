//! The store's error type: every variant says what was being done, and to which path.
//!
//! A variant that wraps another error shows it in its own message and does not also
//! return it as its `source()`: callers print error chains (`{:#}` in the binaries),
//! which would otherwise say the cause twice.

use std::io;
use std::path::PathBuf;

use format::{FormatError, ObjectId, ObjectKind};

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A system call failed.
    #[error("{}: {what}: {cause}", path.display())]
    Io {
        /// The file or directory it failed on.
        path: PathBuf,
        /// What was being done (`"open"`, `"rename into place"`, …).
        what: &'static str,
        /// The OS error (in the message; not a `source()`).
        cause: io::Error,
    },
    /// The directory is not a Berth store.
    #[error("{}: not a berth repository: {reason}", path.display())]
    NotARepo {
        /// The directory.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
    /// Bytes on disk or in the input do not decode.
    #[error("{}: {cause}", path.display())]
    Format {
        /// Where the bytes came from.
        path: PathBuf,
        /// The decoding error (in the message; not a `source()`).
        cause: FormatError,
    },
    /// An object is not in the store.
    #[error("{kind} object {id} is not in the repository")]
    Missing {
        /// Its id.
        id: ObjectId,
        /// Its kind.
        kind: &'static str,
    },
    /// An object's content does not hash to its name.
    #[error("{kind} object {id} is corrupt: its content hashes to {actual}")]
    Corrupt {
        /// Its name.
        id: ObjectId,
        /// Its kind.
        kind: &'static str,
        /// What it hashes to.
        actual: ObjectId,
    },
    /// The input holds something Berth does not store.
    #[error("{}: {reason}", path.display())]
    Unsupported {
        /// The entry.
        path: PathBuf,
        /// Why it cannot be stored.
        reason: String,
    },
}

impl StoreError {
    pub(crate) fn io(
        path: impl Into<PathBuf>,
        what: &'static str,
        source: impl Into<io::Error>,
    ) -> Self {
        Self::Io {
            path: path.into(),
            what,
            cause: source.into(),
        }
    }

    pub(crate) fn format(path: impl Into<PathBuf>, source: FormatError) -> Self {
        Self::Format {
            path: path.into(),
            cause: source,
        }
    }

    pub(crate) fn missing(id: ObjectId, kind: ObjectKind) -> Self {
        Self::Missing {
            id,
            kind: kind.suffix(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_is_said_once() {
        for e in [
            StoreError::io("/x", "read", io::Error::other("bad patch")),
            StoreError::format("/x", FormatError::Truncated { what: "tree" }),
        ] {
            assert!(std::error::Error::source(&e).is_none(), "{e}");
            let shown = e.to_string();
            let cause = shown.rsplit(": ").next().unwrap();
            assert_eq!(shown.matches(cause).count(), 1, "{shown}");
        }
    }
}
