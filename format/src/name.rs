//! Directory entry names: one path component, validated at construction.

use alloc::vec::Vec;
use core::fmt;

use crate::FormatError;
use crate::limits::NAME_MAX;

/// A single, safe path component: 1 to 255 bytes, no `/`, no NUL, not `.` or `..`.
///
/// Names are bytes, not text: Linux allows any bytes but `/` and NUL, and a tree keeps
/// names that are not UTF-8 exactly as they were. Because every name in a tree passes
/// through this type, a checkout can never be steered outside its destination by a name.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryName(Vec<u8>);

impl EntryName {
    /// Validates `bytes` as one path component.
    pub fn new(bytes: &[u8]) -> Result<Self, FormatError> {
        check(bytes)?;
        Ok(Self(bytes.to_vec()))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Checks that `bytes` is one safe path component.
pub fn check(bytes: &[u8]) -> Result<(), FormatError> {
    let reason = if bytes.is_empty() {
        "is empty"
    } else if bytes.len() > NAME_MAX {
        "is longer than 255 bytes"
    } else if bytes.contains(&b'/') {
        "contains '/'"
    } else if bytes.contains(&0) {
        "contains NUL"
    } else if bytes == b"." || bytes == b".." {
        "is '.' or '..'"
    } else {
        return Ok(());
    };
    Err(FormatError::BadName { reason })
}

impl fmt::Debug for EntryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

impl fmt::Display for EntryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.escape_ascii())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let long = [b'x'; 255];
        let too_long = [b'x'; 256];
        let cases: &[(&[u8], bool)] = &[
            (b"etc", true),
            (b".hidden", true),
            (b"...", true),
            (b"\xff\xfe not utf-8", true),
            (&long, true),
            (b"", false),
            (b".", false),
            (b"..", false),
            (b"a/b", false),
            (b"/", false),
            (b"a\0b", false),
            (&too_long, false),
        ];
        for (name, ok) in cases {
            assert_eq!(EntryName::new(name).is_ok(), *ok, "{}", name.escape_ascii());
        }
    }
}
