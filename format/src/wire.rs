//! Little-endian primitives shared by the encoders and decoders.
//!
//! Every multi-byte integer in every Berth format is little-endian. The reader never
//! panics: every read is bounds-checked and reports which structure was truncated.

use alloc::vec::Vec;

use crate::FormatError;

/// The header every versioned structure starts with: magic, version, incompatible flags.
pub(crate) struct Preamble {
    pub magic: [u8; 4],
    pub version: u16,
    pub what: &'static str,
}

impl Preamble {
    pub(crate) fn write(&self, w: &mut Vec<u8>) {
        // Most structures define no incompatible feature flags.
        self.write_flags(w, 0);
    }

    pub(crate) fn write_flags(&self, w: &mut Vec<u8>, flags: u16) {
        w.extend_from_slice(&self.magic);
        put_u16(w, self.version);
        put_u16(w, flags);
    }

    pub(crate) fn read(&self, r: &mut Reader<'_>) -> Result<(), FormatError> {
        self.read_flags(r, 0).map(|_| ())
    }

    /// Reads the preamble; incompatible flags outside `known` are refused.
    pub(crate) fn read_flags(&self, r: &mut Reader<'_>, known: u16) -> Result<u16, FormatError> {
        let what = self.what;
        if r.bytes(4)? != self.magic {
            return Err(FormatError::BadMagic { what });
        }
        let version = r.u16()?;
        if version != self.version {
            return Err(FormatError::UnsupportedVersion { what, version });
        }
        let flags = r.u16()?;
        if flags & !known != 0 {
            return Err(FormatError::UnknownFlags {
                what,
                flags: flags & !known,
            });
        }
        Ok(flags)
    }
}

pub(crate) fn put_u8(w: &mut Vec<u8>, v: u8) {
    w.push(v);
}
pub(crate) fn put_u16(w: &mut Vec<u8>, v: u16) {
    w.extend_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_u32(w: &mut Vec<u8>, v: u32) {
    w.extend_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_u64(w: &mut Vec<u8>, v: u64) {
    w.extend_from_slice(&v.to_le_bytes());
}

/// Appends `v` as an unsigned LEB128 varint (7 bits a byte, low bits first).
pub(crate) fn put_varint(w: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        w.push(v.to_le_bytes()[0] | 0x80);
        v >>= 7;
    }
    w.push(v.to_le_bytes()[0]);
}

/// Converts a length that the caller has already checked against a limit that fits
/// the field. Saturating keeps the encoder panic-free even if that check were missed;
/// the decoder would then reject the value, so no wrong bytes are ever accepted.
pub(crate) fn len_u16(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}
pub(crate) fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A bounds-checked cursor over untrusted bytes.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, what }
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if n > self.buf.len() {
            return Err(FormatError::Truncated { what: self.what });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.array::<1>()?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Reads an unsigned LEB128 varint of at most 10 bytes that fits in a `u64`.
    pub(crate) fn varint(&mut self) -> Result<u64, FormatError> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.u8()?;
            let bits = u64::from(b & 0x7f);
            if i == 9 && bits > 1 {
                return Err(FormatError::Invalid {
                    what: "varint (over 64 bits)",
                    value: bits,
                });
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(FormatError::Invalid {
            what: "varint (over 10 bytes)",
            value: 10,
        })
    }

    /// How many bytes are left.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Whether every byte was read.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Checks a length field it against `limit` before anything is allocated.
    pub(crate) fn len(raw: u64, limit: usize, what: &'static str) -> Result<usize, FormatError> {
        let limit64 = u64::try_from(limit).unwrap_or(u64::MAX);
        if raw > limit64 {
            return Err(FormatError::TooLarge {
                what,
                len: raw,
                limit: limit64,
            });
        }
        // `raw <= limit`, which is a usize, so this cannot fail.
        usize::try_from(raw).map_err(|_| FormatError::TooLarge {
            what,
            len: raw,
            limit: limit64,
        })
    }

    pub(crate) fn finish(self) -> Result<(), FormatError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FormatError::TrailingBytes {
                what: self.what,
                extra: self.buf.len(),
            })
        }
    }
}
