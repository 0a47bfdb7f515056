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
/// Largest decompressed part: a plausibility bound, not a memory one (a part is
/// decompressed as a stream, capped at its signed size, and nothing is allocated by
/// it). A part holds whole operations, so this must exceed the largest file an image
/// may carry: at 1 GiB, a delta or full update of a 2 GiB file was refused by every
/// device (`ci/bench-memory.sh`). Raising it is compatible for new devices; older ones
/// still refuse parts over their own limit.
pub const PART_MAX: u64 = 1 << 40;
/// Largest zstd window a part's frame may declare. The decoder keeps a window of
/// output in memory, so this bounds the device's memory whatever a part claims;
/// `berth-image delta` writes 8 MiB windows.
pub const PART_WINDOW_MAX: u64 = 8 << 20;
/// Incompatible feature flag of the body: some part holds a deflate patch
/// (`format::ops::DEFLATE_PATCH`). A device that does not know it refuses the update
/// before writing anything.
pub const FLAG_DEFLATE_PATCH: u16 = 1;
/// Incompatible feature flag of the body: some part holds an ELF patch
/// (`format::ops::ELF_PATCH`). A device that does not know it refuses the update before
/// writing anything.
pub const FLAG_ELF_PATCH: u16 = 2;
/// Incompatible feature flag of the body: some part holds a zip patch
/// (`format::ops::ZIP_PATCH`). A device that does not know it refuses the update before
/// writing anything.
pub const FLAG_ZIP_PATCH: u16 = 4;
/// The body's flags this build knows.
pub const KNOWN_FLAGS: u16 = FLAG_DEFLATE_PATCH | FLAG_ELF_PATCH | FLAG_ZIP_PATCH;
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
    /// Incompatible feature flags (see [`FLAG_DEFLATE_PATCH`]).
    pub flags: u16,
}

impl Body {
    /// The canonical encoding (the bytes that are signed).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::new();
        BODY.write_flags(&mut w, self.flags);
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
        let flags = BODY.read_flags(&mut r, KNOWN_FLAGS)?;
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
            flags,
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

/// Bytes of the signature-length field between the body and the signatures.
const SIG_LEN_LEN: usize = 4;

/// The start of an update file, up to where its parts begin: the head, the signed body,
/// the signature length and the signature block. The split form's `superblock` file is
/// exactly this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The signed body's bytes (decode them with [`Body::decode`] only after the
    /// signatures verify over them).
    pub body: &'a [u8],
    /// The signature block's bytes (a signature file, see `format::sig`).
    pub signatures: &'a [u8],
    /// Offset of the parts area from the start of the file: the envelope's length.
    pub parts_start: usize,
}

/// Encodes the envelope of an update whose signed body is `body` and whose signature
/// block is `signatures`: the head, the body, the signature length, the signatures.
///
/// The caller keeps to [`BODY_MAX`] and [`SIGNATURES_BYTES_MAX`] (as [`Body::encode`] and
/// a few signatures do); lengths past `u32` saturate, and [`decode_envelope`] refuses
/// anything over the limits, so no reader ever accepts such bytes.
pub fn encode_envelope(body: &[u8], signatures: &[u8]) -> Vec<u8> {
    let mut w = encode_head(body.len());
    w.reserve(body.len() + SIG_LEN_LEN + signatures.len());
    w.extend_from_slice(body);
    wire::put_u32(&mut w, wire::len_u32(signatures.len()));
    w.extend_from_slice(signatures);
    w
}

/// How long the envelope starting `prefix` (the first bytes of an update file or a
/// superblock) is, as far as `prefix` can tell, for a reader that reads a file in steps:
/// [`HEAD_LEN`] while `prefix` is shorter than the head; then up to and including the
/// signature length; then the whole envelope. Read until `prefix` is at least the
/// length returned (at most three reads: the head, the body and the signature length,
/// the signatures); then [`decode_envelope`] takes it.
///
/// The body and signature lengths are checked against [`BODY_MAX`] and
/// [`SIGNATURES_BYTES_MAX`] as soon as they are read, so no step reads more than those.
pub fn envelope_len(prefix: &[u8]) -> Result<usize, FormatError> {
    let Some(head) = prefix.get(..HEAD_LEN) else {
        return Ok(HEAD_LEN);
    };
    let body_len = decode_head(head)?;
    let sig_len_at = HEAD_LEN + body_len;
    let Some(sig_len) = prefix.get(sig_len_at..sig_len_at + SIG_LEN_LEN) else {
        return Ok(sig_len_at + SIG_LEN_LEN);
    };
    let mut r = Reader::new(sig_len, FILE.what);
    let sig_len = Reader::len(
        u64::from(r.u32()?),
        SIGNATURES_BYTES_MAX,
        "update signatures length",
    )?;
    Ok(sig_len_at + SIG_LEN_LEN + sig_len)
}

/// Splits the envelope from `bytes`, which hold at least the whole envelope (anything
/// after it, the parts, is left alone): the body and signature bytes, nothing decoded
/// yet, and where the parts start. Short input is [`FormatError::Truncated`]; a body or
/// signature length over its limit is [`FormatError::TooLarge`].
pub fn decode_envelope(bytes: &[u8]) -> Result<Envelope<'_>, FormatError> {
    let mut r = Reader::new(bytes, FILE.what);
    let body_len = decode_head(r.bytes(HEAD_LEN)?)?;
    let body = r.bytes(body_len)?;
    let sig_len = Reader::len(
        u64::from(r.u32()?),
        SIGNATURES_BYTES_MAX,
        "update signatures length",
    )?;
    let signatures = r.bytes(sig_len)?;
    Ok(Envelope {
        body,
        signatures,
        parts_start: bytes.len() - r.remaining(),
    })
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
            flags: 0,
        }
    }

    #[test]
    fn flags_known_and_unknown() {
        let mut b = body();
        b.flags = FLAG_DEFLATE_PATCH;
        assert_eq!(Body::decode(&b.encode()), Ok(b.clone()));
        b.flags = 0x8001;
        assert_eq!(
            Body::decode(&b.encode()),
            Err(FormatError::UnknownFlags {
                what: "update body",
                flags: 0x8000
            })
        );
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

    /// An envelope of `body_len` and `sig_len` bytes of filler, with `tail` part bytes.
    fn envelope(body_len: usize, sig_len: usize, tail: usize) -> Vec<u8> {
        let mut bytes = encode_envelope(&vec![0xb0; body_len], &vec![0x51; sig_len]);
        bytes.extend(core::iter::repeat_n(0xa7, tail));
        bytes
    }

    #[test]
    fn envelope_round_trip() {
        let b = body().encode();
        let sigs = [7u8; 100];
        for tail in [0, 1, 50] {
            let mut bytes = encode_envelope(&b, &sigs);
            let len = bytes.len();
            assert_eq!(len, HEAD_LEN + b.len() + 4 + sigs.len());
            assert_eq!(&bytes[..HEAD_LEN], &encode_head(b.len())[..]);
            bytes.extend(core::iter::repeat_n(0xa7, tail));
            let e = decode_envelope(&bytes).unwrap();
            assert_eq!(e.body, &b[..]);
            assert_eq!(e.signatures, &sigs[..]);
            assert_eq!(e.parts_start, len);
            assert_eq!(envelope_len(&bytes), Ok(len));
        }
        // Empty body and signatures are well-formed envelopes (the body's own decoder
        // and the signature check refuse them later).
        let e = envelope(0, 0, 0);
        assert_eq!(
            decode_envelope(&e),
            Ok(Envelope {
                body: &[],
                signatures: &[],
                parts_start: HEAD_LEN + 4,
            })
        );
    }

    #[test]
    fn envelope_truncated_at_every_length() {
        for (body_len, sig_len) in [(0, 0), (3, 0), (0, 5), (57, 64)] {
            let bytes = envelope(body_len, sig_len, 0);
            for cut in 0..bytes.len() {
                assert_eq!(
                    decode_envelope(&bytes[..cut]),
                    Err(FormatError::Truncated {
                        what: "update file"
                    }),
                    "{body_len}/{sig_len}: cut at {cut}"
                );
            }
        }
    }

    /// Reading in steps: each step's answer is at least what was read, never past the
    /// envelope, and reading up to it until it stops growing gives the whole envelope.
    #[test]
    fn envelope_len_in_steps() {
        let bytes = envelope(57, 64, 9);
        let whole = HEAD_LEN + 57 + 4 + 64;
        for cut in 0..=bytes.len() {
            let want = match cut {
                c if c < HEAD_LEN => HEAD_LEN,
                c if c < HEAD_LEN + 57 + 4 => HEAD_LEN + 57 + 4,
                _ => whole,
            };
            assert_eq!(envelope_len(&bytes[..cut]), Ok(want), "cut at {cut}");
        }
        let mut read = 0;
        let mut steps = 0;
        loop {
            let need = envelope_len(&bytes[..read]).unwrap();
            if read >= need {
                break;
            }
            read = need;
            steps += 1;
        }
        assert_eq!((read, steps), (whole, 3));
        assert_eq!(decode_envelope(&bytes[..read]).unwrap().parts_start, whole);
    }

    #[test]
    fn envelope_oversized_lengths_refused() {
        // A head claiming a body over BODY_MAX: refused from the head alone.
        let mut bytes = encode_head(BODY_MAX + 1);
        let over_body = Some(FormatError::TooLarge {
            what: "update body length",
            len: (BODY_MAX + 1) as u64,
            limit: BODY_MAX as u64,
        });
        assert_eq!(envelope_len(&bytes).err(), over_body);
        bytes.resize(HEAD_LEN + BODY_MAX + 1 + 4, 0);
        assert_eq!(decode_envelope(&bytes).err(), over_body);
        // A signature length one over SIGNATURES_BYTES_MAX (4096), and u32::MAX.
        assert_eq!(SIGNATURES_BYTES_MAX, 4096);
        for sig_len in [4097, u32::MAX] {
            let mut bytes = encode_head(3);
            bytes.extend_from_slice(&[0; 3]);
            bytes.extend_from_slice(&sig_len.to_le_bytes());
            let over_sigs = Some(FormatError::TooLarge {
                what: "update signatures length",
                len: u64::from(sig_len),
                limit: SIGNATURES_BYTES_MAX as u64,
            });
            assert_eq!(envelope_len(&bytes).err(), over_sigs);
            bytes.resize(bytes.len() + SIGNATURES_BYTES_MAX + 1, 0);
            assert_eq!(decode_envelope(&bytes).err(), over_sigs);
        }
        // The limits themselves are accepted.
        let bytes = envelope(0, SIGNATURES_BYTES_MAX, 0);
        assert_eq!(
            decode_envelope(&bytes).map(|e| e.signatures.len()),
            Ok(SIGNATURES_BYTES_MAX)
        );
        // A bad magic is the head's error, from either function.
        let mut bytes = envelope(3, 3, 0);
        bytes[0] = b'X';
        let bad = Some(FormatError::BadMagic {
            what: "update file",
        });
        assert_eq!(envelope_len(&bytes).err(), bad);
        assert_eq!(decode_envelope(&bytes).err(), bad);
    }

    #[test]
    fn parts_must_be_contiguous_and_bounded() {
        let mut b = body();
        b.parts[1].offset = 11;
        assert!(Body::decode(&b.encode()).is_err());
        let mut b = body();
        b.parts[0].size = PART_MAX + 1;
        assert!(Body::decode(&b.encode()).is_err());
        // A part holds a whole file's operation: one of a 2 GiB file must be accepted.
        let mut b = body();
        b.parts[0].size = (2 << 30) + 4096;
        assert!(Body::decode(&b.encode()).is_ok());
    }
}
