//! Update files: a signed superblock followed by compressed parts of objects.
//!
//! See `docs/FORMAT.md`, "Update files". The superblock's body is signed; readers verify
//! the signature over the exact body bytes before decoding anything in it. The body
//! carries the sha256 and the sizes of every part, so a part is checked against the
//! signed hash before it is decompressed, and its decompressed size is capped by the
//! signed size.

use alloc::vec::Vec;

use crate::wire::{self, Preamble, Reader};
use crate::{FormatError, ObjectId};

const FILE: Preamble = Preamble {
    magic: *b"BRTU",
    version: 2,
    what: "update file",
};
const BODY: Preamble = Preamble {
    magic: *b"BRTB",
    version: 2,
    what: "update body",
};

/// Largest signed body: bounds what is read before the signature is checked.
pub const BODY_MAX: usize = 16 << 20;
/// Largest signature block.
pub const SIGNATURES_BYTES_MAX: usize = 4096;
/// Most parts in one update.
pub const PARTS_MAX: usize = 1 << 16;
/// Largest decompressed part.
pub const PART_MAX: u64 = 1 << 30;
/// Largest zstd window a part's frame may declare. The decoder keeps a window of
/// output in memory, so this bounds the device's memory whatever a part claims;
/// `berth-image delta` writes 8 MiB windows.
pub const PART_WINDOW_MAX: u64 = 8 << 20;
/// Length of the fixed head: preamble (8) and body length (4).
pub const HEAD_LEN: usize = 12;

/// One part: where it is, how big, and the sha256 of its compressed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartInfo {
    /// Offset from the start of the parts area (just after the signature block).
    pub offset: u64,
    /// Compressed length.
    pub len: u64,
    /// Decompressed length (a hard cap when decompressing).
    pub size: u64,
    /// sha256 of the compressed bytes.
    pub sha256: ObjectId,
}

/// The signed body of an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    /// The commit the parts are relative to (the device must have it); `None` for a
    /// full update.
    pub from: Option<ObjectId>,
    /// The target commit object's exact bytes.
    pub commit: Vec<u8>,
    /// The target commit's signature file, exactly (may be empty).
    pub commit_signatures: Vec<u8>,
    /// The parts, in order.
    pub parts: Vec<PartInfo>,
}

impl Body {
    /// The canonical encoding (the bytes that are signed).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::new();
        BODY.write(&mut w);
        match &self.from {
            Some(f) => {
                wire::put_u8(&mut w, 1);
                w.extend_from_slice(f.as_bytes());
            }
            None => wire::put_u8(&mut w, 0),
        }
        wire::put_u32(&mut w, wire::len_u32(self.commit.len()));
        w.extend_from_slice(&self.commit);
        wire::put_u32(&mut w, wire::len_u32(self.commit_signatures.len()));
        w.extend_from_slice(&self.commit_signatures);
        wire::put_u32(&mut w, wire::len_u32(self.parts.len()));
        for p in &self.parts {
            wire::put_u64(&mut w, p.offset);
            wire::put_u64(&mut w, p.len);
            wire::put_u64(&mut w, p.size);
            w.extend_from_slice(p.sha256.as_bytes());
        }
        w
    }

    /// Decodes a body (call only after its signature verified).
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes, BODY.what);
        BODY.read(&mut r)?;
        let from = match r.u8()? {
            0 => None,
            1 => Some(ObjectId::from_bytes(r.array()?)),
            v => {
                return Err(FormatError::Invalid {
                    what: "update from flag",
                    value: u64::from(v),
                });
            }
        };
        let n = Reader::len(
            u64::from(r.u32()?),
            crate::limits::COMMIT_MAX,
            "update commit length",
        )?;
        let commit = r.bytes(n)?.to_vec();
        let n = Reader::len(
            u64::from(r.u32()?),
            SIGNATURES_BYTES_MAX,
            "update commit signatures length",
        )?;
        let commit_signatures = r.bytes(n)?.to_vec();
        let count = Reader::len(u64::from(r.u32()?), PARTS_MAX, "update part count")?;
        if count.saturating_mul(56) > bytes.len() {
            return Err(FormatError::Truncated { what: BODY.what });
        }
        let mut parts = Vec::with_capacity(count);
        let mut end = 0u64;
        for _ in 0..count {
            let p = PartInfo {
                offset: r.u64()?,
                len: r.u64()?,
                size: r.u64()?,
                sha256: ObjectId::from_bytes(r.array()?),
            };
            if p.offset != end {
                return Err(FormatError::Invalid {
                    what: "update part offset (parts must be contiguous)",
                    value: p.offset,
                });
            }
            if p.size > PART_MAX {
                return Err(FormatError::TooLarge {
                    what: "update part size",
                    len: p.size,
                    limit: PART_MAX,
                });
            }
            end = p.offset.checked_add(p.len).ok_or(FormatError::Invalid {
                what: "update part length",
                value: p.len,
            })?;
            parts.push(p);
        }
        r.finish()?;
        Ok(Self {
            from,
            commit,
            commit_signatures,
            parts,
        })
    }
}

/// The head of an update file: `"BRTU"`, version, flags, then the body length.
pub fn encode_head(body_len: usize) -> Vec<u8> {
    let mut w = Vec::with_capacity(HEAD_LEN);
    FILE.write(&mut w);
    wire::put_u32(&mut w, wire::len_u32(body_len));
    w
}

/// Parses the head; returns the body length (checked against [`BODY_MAX`]).
pub fn decode_head(head: &[u8]) -> Result<usize, FormatError> {
    let mut r = Reader::new(head, FILE.what);
    FILE.read(&mut r)?;
    let n = Reader::len(u64::from(r.u32()?), BODY_MAX, "update body length")?;
    r.finish()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn body() -> Body {
        Body {
            from: Some(ObjectId::from_bytes([3; 32])),
            commit: vec![1, 2, 3],
            commit_signatures: vec![],
            parts: vec![
                PartInfo {
                    offset: 0,
                    len: 10,
                    size: 100,
                    sha256: ObjectId::from_bytes([1; 32]),
                },
                PartInfo {
                    offset: 10,
                    len: 5,
                    size: 7,
                    sha256: ObjectId::from_bytes([2; 32]),
                },
            ],
        }
    }

    #[test]
    fn round_trip_and_truncation() {
        let b = body();
        let bytes = b.encode();
        assert_eq!(Body::decode(&bytes), Ok(b));
        for cut in 0..bytes.len() {
            assert!(Body::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(decode_head(&encode_head(1234)), Ok(1234));
        assert!(decode_head(&encode_head(BODY_MAX + 1)).is_err());
    }

    #[test]
    fn parts_must_be_contiguous_and_bounded() {
        let mut b = body();
        b.parts[1].offset = 11;
        assert!(Body::decode(&b.encode()).is_err());
        let mut b = body();
        b.parts[0].size = PART_MAX + 1;
        assert!(Body::decode(&b.encode()).is_err());
    }
}
