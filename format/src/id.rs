//! Object ids: the sha256 that names every object in a store.

use core::fmt;
use core::str::FromStr;

use sha2::{Digest, Sha256};

use crate::FormatError;

/// The sha256 of an object's canonical encoding. See `docs/FORMAT.md`, "Object ids".
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectId([u8; 32]);

/// The kinds of object a store holds; each has its own file-name suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// A file, symlink, device node or FIFO with its metadata (stored as the inode itself).
    File,
    /// A directory: its metadata and its sorted entries.
    Tree,
    /// A commit: root tree, parent, version, timestamp, metadata.
    Commit,
}

impl ObjectKind {
    /// The file-name suffix of this kind in the object store (`<2 hex>/<62 hex>.<suffix>`).
    pub const fn suffix(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Tree => "tree",
            Self::Commit => "commit",
        }
    }
}

impl ObjectId {
    /// Wraps a raw digest.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw digest.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The sha256 of `bytes`.
    pub fn digest(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// Writes the 64 lowercase hex digits into `out`.
    pub fn to_hex(&self) -> [u8; 64] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (pair, byte) in out.chunks_exact_mut(2).zip(self.0) {
            pair.copy_from_slice(&[HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0xf)]]);
        }
        out
    }

    /// The relative path of this object in the object directory:
    /// `<first 2 hex digits>/<other 62>.<suffix>`, as fixed bytes (no allocation).
    pub fn path_bytes(&self, kind: ObjectKind) -> ([u8; 72], usize) {
        let hex = self.to_hex();
        let mut out = [0u8; 72];
        let suffix = kind.suffix().as_bytes();
        let mut n = 0;
        for &b in hex[..2]
            .iter()
            .chain(b"/")
            .chain(&hex[2..])
            .chain(b".")
            .chain(suffix)
        {
            if let Some(slot) = out.get_mut(n) {
                *slot = b;
                n += 1;
            }
        }
        (out, n)
    }

    /// Parses 64 hex digits (either case).
    pub fn parse_hex(s: &[u8]) -> Result<Self, FormatError> {
        let bad = FormatError::BadText {
            what: "object id",
            reason: "expected 64 hexadecimal digits",
        };
        if s.len() != 64 {
            return Err(bad);
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
            let hi = hex_val(pair[0]).ok_or_else(|| bad.clone())?;
            let lo = hex_val(pair[1]).ok_or_else(|| bad.clone())?;
            *byte = (hi << 4) | lo;
        }
        Ok(Self(out))
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl FromStr for ObjectId {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_hex(s.as_bytes())
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.to_hex();
        // The hex digits are ASCII by construction.
        f.write_str(core::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn hex_round_trip_and_path() {
        let id = ObjectId::digest(b"abc");
        let s = id.to_string();
        assert_eq!(
            s,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(s.parse::<ObjectId>(), Ok(id));
        assert_eq!(s.to_uppercase().parse::<ObjectId>(), Ok(id));
        let (p, n) = id.path_bytes(ObjectKind::Tree);
        assert_eq!(
            &p[..n],
            b"ba/7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad.tree"
        );
        let (_, n) = id.path_bytes(ObjectKind::Commit);
        assert_eq!(n, 72);
    }

    #[test]
    fn rejects_bad_hex() {
        for bad in ["", "ab", &"g".repeat(64), &"a".repeat(63), &"a".repeat(65)] {
            assert!(bad.parse::<ObjectId>().is_err(), "{bad}");
        }
    }
}
