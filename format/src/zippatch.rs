//! The head of a [`crate::ops::ZIP_PATCH`] operation: a file made of stored stretches and
//! deflate streams (a zip archive, whose members are each a deflate stream), as a patch of
//! its *expansion* — the file with each of its streams replaced by its uncompressed data —
//! against the base's expansion. See docs/FORMAT.md, "Zip patch".
//!
//! The device expands the base (it inflates each stream the head names, to exactly its
//! declared length, and keeps the stretches between), applies the bidiff patch to that,
//! and walks the new file's pieces through the result: a stored stretch is copied, a
//! stream's uncompressed data is deflated again, bit for bit, by preflate's reconstruction
//! data (as a [`crate::ops::DEFLATE_PATCH`]'s stream is).

use alloc::vec::Vec;

use crate::ops::{
    DEFLATE_CORRECTIONS_MAX, DEFLATE_PLAIN_MAX, DEFLATE_STREAM_MAX, WINDOWS_MAX, patched_header,
};
use crate::wire::{self, Reader};
use crate::{FileHeader, FormatError};

/// Most bytes of the base's expansion, which the device holds in memory for the patch to
/// read anywhere in it: as much as one side of a deflate patch.
pub const ZIP_EXPANSION_MAX: u64 = DEFLATE_PLAIN_MAX;

/// A stretch of the base file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BasePiece {
    /// `len` bytes taken as they are.
    Stored {
        /// Its length.
        len: u64,
    },
    /// A deflate stream of at most `len` bytes that inflates to exactly `plain` bytes.
    Stream {
        /// The bytes of the base it takes: the stream, and nothing after it is read.
        len: u64,
        /// Its uncompressed length.
        plain: u64,
    },
}

/// A stretch of the new file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewPiece {
    /// `len` bytes of the expansion, copied.
    Stored {
        /// Its length.
        len: u64,
    },
    /// `plain` bytes of the expansion, deflated by the next `corrections_len` bytes of
    /// reconstruction data into exactly `stream_len` bytes.
    Stream {
        /// The deflate stream's length.
        stream_len: u64,
        /// Its uncompressed length.
        plain: u64,
        /// Its reconstruction data's length.
        corrections_len: u64,
    },
}

impl NewPiece {
    /// Its bytes in the new file.
    #[must_use]
    pub const fn out_len(&self) -> u64 {
        match *self {
            Self::Stored { len } => len,
            Self::Stream { stream_len, .. } => stream_len,
        }
    }
}

impl BasePiece {
    /// Its bytes in the base file.
    #[must_use]
    pub const fn in_base(&self) -> u64 {
        match *self {
            Self::Stored { len } | Self::Stream { len, .. } => len,
        }
    }

    /// Its bytes in the expansion.
    #[must_use]
    pub const fn expanded(&self) -> u64 {
        match *self {
            Self::Stored { len } => len,
            Self::Stream { plain, .. } => plain,
        }
    }
}

/// The head of a zip patch. The payload is the new streams' reconstruction data, one
/// after the other ([`ZipHead::corrections_len`] bytes), then a bidiff patch of
/// `patch_len` bytes from the base's expansion to the new file's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZipHead {
    /// The new file's header (a regular file).
    pub header: FileHeader,
    /// The base file, as an index into the base commit's walk.
    pub base: u64,
    /// The base file, from its first byte to its last, in pieces.
    pub base_pieces: Vec<BasePiece>,
    /// The new file, from its first byte to its last, in pieces.
    pub pieces: Vec<NewPiece>,
    /// The length of the patch of the expansion, after the reconstruction data.
    pub patch_len: u64,
}

const STORED: u64 = 0;
const STREAM: u64 = 1;

impl ZipHead {
    /// The encoding: header length (varint), header, base (varint); the base's piece
    /// count (varint), each a tag (varint, 0 stored, 1 stream) then `len` (and `plain`);
    /// the new file's piece count, each a tag then `len`, or `stream_len`, `plain` and
    /// `corrections_len`; `patch_len` (varint).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let h = self.header.encode();
        let mut w =
            Vec::with_capacity(h.len() + 16 + 8 * self.base_pieces.len() + 12 * self.pieces.len());
        wire::put_varint(&mut w, h.len() as u64);
        w.extend_from_slice(&h);
        wire::put_varint(&mut w, self.base);
        wire::put_varint(&mut w, self.base_pieces.len() as u64);
        for p in &self.base_pieces {
            match *p {
                BasePiece::Stored { len } => {
                    wire::put_varint(&mut w, STORED);
                    wire::put_varint(&mut w, len);
                }
                BasePiece::Stream { len, plain } => {
                    wire::put_varint(&mut w, STREAM);
                    wire::put_varint(&mut w, len);
                    wire::put_varint(&mut w, plain);
                }
            }
        }
        wire::put_varint(&mut w, self.pieces.len() as u64);
        for p in &self.pieces {
            match *p {
                NewPiece::Stored { len } => {
                    wire::put_varint(&mut w, STORED);
                    wire::put_varint(&mut w, len);
                }
                NewPiece::Stream {
                    stream_len,
                    plain,
                    corrections_len,
                } => {
                    wire::put_varint(&mut w, STREAM);
                    wire::put_varint(&mut w, stream_len);
                    wire::put_varint(&mut w, plain);
                    wire::put_varint(&mut w, corrections_len);
                }
            }
        }
        wire::put_varint(&mut w, self.patch_len);
        w
    }

    /// Parses and checks a zip patch head: a regular file whose size is its pieces'
    /// lengths; at most [`WINDOWS_MAX`] pieces a side; the base's expansion at most
    /// [`ZIP_EXPANSION_MAX`] bytes; each new stream within a deflate patch's limits, and
    /// their reconstruction data together within [`DEFLATE_CORRECTIONS_MAX`].
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes, "zip patch operation");
        let header = patched_header(&mut r, bytes.len(), "zip patch header length")?;
        let base = r.varint()?;
        let count = |r: &mut Reader<'_>, what| Reader::len(r.varint()?, WINDOWS_MAX, what);
        let too_large = |what, len, limit| FormatError::TooLarge { what, len, limit };
        let n = count(&mut r, "zip patch base piece count")?;
        let mut base_pieces = Vec::with_capacity(n.min(r.remaining() / 2));
        let mut expansion = 0u64;
        for _ in 0..n {
            let piece = if tag(&mut r)? == STORED {
                BasePiece::Stored { len: r.varint()? }
            } else {
                BasePiece::Stream {
                    len: r.varint()?,
                    plain: r.varint()?,
                }
            };
            let expanded = piece.expanded();
            expansion = expansion
                .checked_add(expanded)
                .filter(|&e| e <= ZIP_EXPANSION_MAX)
                .ok_or_else(|| {
                    too_large(
                        "zip patch base's expansion",
                        expansion.saturating_add(expanded),
                        ZIP_EXPANSION_MAX,
                    )
                })?;
            base_pieces.push(piece);
        }
        let n = count(&mut r, "zip patch piece count")?;
        let mut pieces = Vec::with_capacity(n.min(r.remaining() / 2));
        let (mut size, mut corrections) = (0u64, 0u64);
        for _ in 0..n {
            let piece = new_piece(&mut r, &mut corrections)?;
            size = size
                .checked_add(piece.out_len())
                .ok_or(FormatError::Overflow {
                    what: "zip patch size",
                })?;
            pieces.push(piece);
        }
        let patch_len = r.varint()?;
        r.finish()?;
        patch_len
            .checked_add(corrections)
            .ok_or(FormatError::Overflow {
                what: "zip patch payload length",
            })?;
        if size != header.size {
            return Err(FormatError::Invalid {
                what: "zip patch size (its pieces must make the file's size)",
                value: size,
            });
        }
        Ok(Self {
            header,
            base,
            base_pieces,
            pieces,
            patch_len,
        })
    }

    /// The length of the reconstruction data: every new stream's, first in the payload.
    #[must_use]
    pub fn corrections_len(&self) -> u64 {
        self.pieces
            .iter()
            .map(|p| match *p {
                NewPiece::Stream {
                    corrections_len, ..
                } => corrections_len,
                NewPiece::Stored { .. } => 0,
            })
            .sum()
    }

    /// The length of the payload: the reconstruction data and the patch.
    #[must_use]
    pub fn payload_len(&self) -> u64 {
        self.corrections_len().saturating_add(self.patch_len)
    }

    /// The length of the base's expansion.
    #[must_use]
    pub fn base_expansion(&self) -> u64 {
        self.base_pieces.iter().map(BasePiece::expanded).sum()
    }

    /// The length of the base file the pieces cover.
    #[must_use]
    pub fn base_len(&self) -> u64 {
        self.base_pieces
            .iter()
            .map(BasePiece::in_base)
            .fold(0u64, u64::saturating_add)
    }
}

/// A piece tag: 0 stored, 1 stream.
fn tag(r: &mut Reader<'_>) -> Result<u64, FormatError> {
    match r.varint()? {
        t @ (STORED | STREAM) => Ok(t),
        t => Err(FormatError::Invalid {
            what: "zip patch piece (0 stored, 1 stream)",
            value: t,
        }),
    }
}

/// One of the new file's pieces, a stream's within a deflate patch's limits;
/// `corrections` adds up the reconstruction data, within its limit too.
fn new_piece(r: &mut Reader<'_>, corrections: &mut u64) -> Result<NewPiece, FormatError> {
    let too_large = |what, len, limit| FormatError::TooLarge { what, len, limit };
    if tag(r)? == STORED {
        return Ok(NewPiece::Stored { len: r.varint()? });
    }
    let (stream_len, plain, corrections_len) = (r.varint()?, r.varint()?, r.varint()?);
    if stream_len > DEFLATE_STREAM_MAX {
        return Err(too_large(
            "zip patch stream length",
            stream_len,
            DEFLATE_STREAM_MAX,
        ));
    }
    if plain > DEFLATE_PLAIN_MAX {
        return Err(too_large(
            "zip patch stream's uncompressed length",
            plain,
            DEFLATE_PLAIN_MAX,
        ));
    }
    *corrections = corrections
        .checked_add(corrections_len)
        .filter(|&c| c <= DEFLATE_CORRECTIONS_MAX)
        .ok_or_else(|| {
            too_large(
                "zip patch reconstruction data length",
                corrections.saturating_add(corrections_len),
                DEFLATE_CORRECTIONS_MAX,
            )
        })?;
    Ok(NewPiece::Stream {
        stream_len,
        plain,
        corrections_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    use crate::{FileKind, Xattrs};

    fn head() -> ZipHead {
        ZipHead {
            header: FileHeader {
                kind: FileKind::Regular,
                mode: 0o644,
                uid: 0,
                gid: 0,
                rdev_major: 0,
                rdev_minor: 0,
                size: 30 + 500 + 100,
                xattrs: Xattrs::new(),
            },
            base: 7,
            base_pieces: alloc::vec![
                BasePiece::Stored { len: 30 },
                BasePiece::Stream {
                    len: 400,
                    plain: 1000
                },
                BasePiece::Stored { len: 90 },
            ],
            pieces: alloc::vec![
                NewPiece::Stored { len: 30 },
                NewPiece::Stream {
                    stream_len: 500,
                    plain: 1200,
                    corrections_len: 40
                },
                NewPiece::Stored { len: 100 },
            ],
            patch_len: 77,
        }
    }

    #[test]
    fn a_head_round_trips_and_every_truncation_is_refused() {
        let h = head();
        let bytes = h.encode();
        assert_eq!(ZipHead::decode(&bytes).unwrap(), h);
        assert_eq!(
            (h.payload_len(), h.base_expansion(), h.base_len()),
            (117, 1120, 520)
        );
        for n in 0..bytes.len() {
            assert!(ZipHead::decode(&bytes[..n]).is_err(), "{n}");
        }
        let mut long = bytes;
        long.push(0);
        assert!(ZipHead::decode(&long).is_err());
    }

    #[test]
    fn heads_over_the_limits_or_that_do_not_add_up_are_refused() {
        type Lie = fn(&mut ZipHead);
        let lies: [(Lie, &str); 6] = [
            (|h| h.header.size += 1, "pieces must make the file's size"),
            (
                |h| {
                    h.base_pieces[1] = BasePiece::Stream {
                        len: 400,
                        plain: ZIP_EXPANSION_MAX,
                    };
                },
                "base's expansion",
            ),
            (
                |h| {
                    h.pieces[1] = NewPiece::Stream {
                        stream_len: 500,
                        plain: DEFLATE_PLAIN_MAX + 1,
                        corrections_len: 40,
                    };
                },
                "uncompressed length",
            ),
            (
                |h| {
                    h.pieces[1] = NewPiece::Stream {
                        stream_len: DEFLATE_STREAM_MAX + 1,
                        plain: 1200,
                        corrections_len: 40,
                    };
                    h.header.size = h.pieces.iter().map(NewPiece::out_len).sum();
                },
                "stream length",
            ),
            (
                |h| {
                    let stream = NewPiece::Stream {
                        stream_len: 1,
                        plain: 1,
                        corrections_len: DEFLATE_CORRECTIONS_MAX / 2 + 1,
                    };
                    h.pieces = alloc::vec![stream, stream];
                    h.header.size = 2;
                },
                "reconstruction data",
            ),
            (
                |h| {
                    h.pieces = alloc::vec![NewPiece::Stored { len: 1 }; WINDOWS_MAX + 1];
                    h.header.size = h.pieces.len() as u64;
                },
                "piece count",
            ),
        ];
        for (lie, needle) in lies {
            let mut h = head();
            lie(&mut h);
            let e = ZipHead::decode(&h.encode()).unwrap_err().to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
        // An unknown piece tag.
        let mut bytes = head().encode();
        let h = head().header.encode();
        // header length, header, base (7), base count (3), then the first tag.
        let at = 1 + h.len() + 2;
        assert_eq!(bytes[at], 0);
        bytes[at] = 2;
        let e = ZipHead::decode(&bytes).unwrap_err().to_string();
        assert!(e.contains("0 stored, 1 stream"), "{e}");
    }
}
