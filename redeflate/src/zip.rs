//! Zip patches (`format::ops::ZIP_PATCH`): a file of stored stretches and deflate
//! streams, a zip archive's members, through its *expansion* (each stream replaced by its
//! uncompressed data). The build host ([`make_zip`]) finds the members' streams in the
//! central directory, expands both sides, diffs the expansions, and keeps as streams the
//! new members that preflate recreates exactly (the others travel stored, inside the
//! patch; a member whose compressed bytes are the same on both sides stays compressed on
//! both, so the patch copies it and it costs no reconstruction data); the device ([`rebuild_zip`]) expands its base, applies the patch, and deflates
//! each stream again as it streams the file out. [`make_zip`] runs [`rebuild_zip`] on what
//! it made and keeps the patch only if the bytes come back exactly.

use std::io::{Cursor, Read};

use format::zippatch::{BasePiece, NewPiece, ZipHead};

use crate::{RebuildError, read_bounded};

fn err(what: impl AsRef<str>) -> RebuildError {
    RebuildError(format!("zip patch: {}", what.as_ref()))
}

/// Why [`rebuild_zip`] failed: the patch (its rebuilding), or what the bytes were given
/// to.
#[derive(Debug)]
pub enum ZipError<E> {
    /// The patch does not rebuild: one line.
    Rebuild(RebuildError),
    /// The consumer of the rebuilt bytes failed on its own.
    Consume(E),
}

/// Expands the base: each stored stretch as it is, each stream inflated to exactly its
/// declared length from at most its declared bytes (a stream that inflates to more is
/// never inflated further). The pieces must cover the base to its end.
fn expand_base(mut base: impl Read, head: &ZipHead) -> Result<Vec<u8>, RebuildError> {
    let mut out = Vec::new();
    for (i, piece) in head.base_pieces.iter().enumerate() {
        let n = i + 1;
        match *piece {
            BasePiece::Stored { len } => {
                let (bytes, _) = read_bounded(&mut (&mut base).take(len), len)
                    .map_err(|e| err(format!("reading the base's piece {n}: {e}")))?;
                if bytes.len() as u64 != len {
                    return Err(err(format!("the base ends inside its piece {n}")));
                }
                out.extend_from_slice(&bytes);
            }
            BasePiece::Stream { len, plain } => {
                let mut take = (&mut base).take(len);
                let mut inflater = flate2::read::DeflateDecoder::new(&mut take);
                let (bytes, more) = read_bounded(&mut inflater, plain)
                    .map_err(|e| err(format!("the base's piece {n} does not inflate: {e}")))?;
                if more || bytes.len() as u64 != plain {
                    return Err(err(format!(
                        "the base's piece {n} inflates to {}{} bytes, where the operation says {plain}",
                        if more { "more than " } else { "" },
                        bytes.len()
                    )));
                }
                drop(inflater);
                // Whatever the inflater left of the piece, so the next starts in place.
                std::io::copy(&mut take, &mut std::io::sink())
                    .map_err(|e| err(format!("reading the base's piece {n}: {e}")))?;
                if take.limit() != 0 {
                    return Err(err(format!("the base ends inside its piece {n}")));
                }
                out.extend_from_slice(&bytes);
            }
        }
    }
    let mut more = [0u8; 1];
    if base
        .read(&mut more)
        .map_err(|e| err(format!("reading the base: {e}")))?
        != 0
    {
        return Err(err("the base is longer than its pieces"));
    }
    Ok(out)
}

/// An error of the patch's reader: a read past its end is the patch's fault.
fn patch_error(e: &std::io::Error) -> RebuildError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        err("bad patch: it reads past the base's expansion or past its own end")
    } else {
        err(format!("bad patch: {e}"))
    }
}

/// The new file, a piece at a time, as [`rebuild_zip`] hands it out.
struct Pieces<'a, P, F> {
    patch: P,
    left: std::slice::Iter<'a, NewPiece>,
    corrections: &'a [u8],
    recreate: F,
    /// Stored bytes of the current piece still to copy.
    stored: u64,
    /// A recreated stream, and how much of it was handed out.
    stream: Vec<u8>,
    at: usize,
    /// Which piece (from 1), for errors.
    n: usize,
    failed: Option<RebuildError>,
}

impl<P: Read, F: FnMut(Vec<u8>, Vec<u8>, u64) -> Result<Vec<u8>, String>> Pieces<'_, P, F> {
    fn fail(&mut self, e: RebuildError) -> std::io::Error {
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string());
        self.failed = Some(e);
        io
    }

    /// The patch's bytes: a read past its end is the patch's fault.
    fn read_patch(&mut self, buf: &mut [u8]) -> Result<usize, RebuildError> {
        self.patch.read(buf).map_err(|e| patch_error(&e))
    }

    /// Moves to the next piece: `false` at the end.
    fn next_piece(&mut self) -> Result<bool, RebuildError> {
        let Some(&piece) = self.left.next() else {
            return Ok(false);
        };
        self.n += 1;
        let n = self.n;
        match piece {
            NewPiece::Stored { len } => self.stored = len,
            NewPiece::Stream {
                stream_len,
                plain,
                corrections_len,
            } => {
                let mut data = Vec::new();
                (&mut self.patch)
                    .take(plain)
                    .read_to_end(&mut data)
                    .map_err(|e| patch_error(&e))?;
                if (data.len() as u64) < plain {
                    return Err(err(format!(
                        "the patch ends inside the uncompressed data of piece {n}"
                    )));
                }
                // Within the head's total, which the caller read whole.
                let cut = usize::try_from(corrections_len).unwrap_or(usize::MAX);
                let (mine, rest) = self.corrections.split_at(cut.min(self.corrections.len()));
                self.corrections = rest;
                let stream = (self.recreate)(data, mine.to_vec(), stream_len)
                    .map_err(|e| err(format!("piece {n}: {e}")))?;
                if stream.len() as u64 != stream_len {
                    return Err(err(format!(
                        "piece {n}: the reconstruction makes a {}-byte stream, where the operation says {stream_len}",
                        stream.len()
                    )));
                }
                self.stream = stream;
                self.at = 0;
            }
        }
        Ok(true)
    }
}

impl<P: Read, F: FnMut(Vec<u8>, Vec<u8>, u64) -> Result<Vec<u8>, String>> Read
    for Pieces<'_, P, F>
{
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if let Some(e) = &self.failed {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                e.to_string(),
            ));
        }
        loop {
            if self.at < self.stream.len() {
                let n = buf.len().min(self.stream.len() - self.at);
                buf[..n].copy_from_slice(&self.stream[self.at..self.at + n]);
                self.at += n;
                return Ok(n);
            }
            if self.stored > 0 {
                let want = usize::try_from(self.stored).map_or(buf.len(), |s| s.min(buf.len()));
                let got = match self.read_patch(&mut buf[..want]) {
                    Ok(0) => Err(err(format!(
                        "the patch ends inside stored piece {}",
                        self.n
                    ))),
                    other => other,
                };
                return match got {
                    Ok(got) => {
                        self.stored -= got as u64;
                        Ok(got)
                    }
                    Err(e) => Err(self.fail(e)),
                };
            }
            match self.next_piece() {
                Ok(true) => {}
                Ok(false) => return Ok(0),
                Err(e) => return Err(self.fail(e)),
            }
        }
    }
}

/// Rebuilds the new file of a zip patch and hands it to `consume` as a reader (which
/// must read it to its end: the head's size). `base` is the whole base file, `payload`
/// the operation's payload (exactly [`ZipHead::payload_len`] bytes are read from it).
/// The base's expansion is held in memory (at most `format::zippatch::ZIP_EXPANSION_MAX`
/// bytes), and one stream's uncompressed data at a time; stored bytes stream through.
/// `recreate` deflates a stream's data again, as for [`crate::rebuild`].
pub fn rebuild_zip<T, E>(
    base: impl Read,
    head: &ZipHead,
    payload: &mut impl Read,
    recreate: impl FnMut(Vec<u8>, Vec<u8>, u64) -> Result<Vec<u8>, String>,
    consume: impl FnOnce(&mut dyn Read) -> Result<T, E>,
) -> Result<T, ZipError<E>> {
    let expansion = expand_base(base, head).map_err(ZipError::Rebuild)?;
    let want = head.corrections_len();
    let mut corrections = Vec::new();
    payload
        .take(want)
        .read_to_end(&mut corrections)
        .map_err(|e| ZipError::Rebuild(err(format!("reading the reconstruction data: {e}"))))?;
    if corrections.len() as u64 != want {
        return Err(ZipError::Rebuild(err(
            "the part ends inside the reconstruction data",
        )));
    }
    let mut patch = payload.take(head.patch_len);
    let reader = bipatch::Reader::new(&mut patch, Cursor::new(&expansion[..]))
        .map_err(|e| ZipError::Rebuild(err(format!("bad patch: {e}"))))?;
    let mut pieces = Pieces {
        patch: reader,
        left: head.pieces.iter(),
        corrections: &corrections,
        recreate,
        stored: 0,
        stream: Vec::new(),
        at: 0,
        n: 0,
        failed: None,
    };
    let out = match consume(&mut pieces) {
        Ok(out) => out,
        Err(e) => {
            return Err(match pieces.failed.take() {
                Some(f) => ZipError::Rebuild(f),
                None => ZipError::Consume(e),
            });
        }
    };
    // Everything the pieces make was taken (the consumer stops at the head's size,
    // which the pieces add up to), and the patch makes no more and has no more.
    let mut more = [0u8; 1];
    let extra = pieces.read_patch(&mut more).map_err(ZipError::Rebuild)?;
    if extra != 0 || pieces.stored != 0 || pieces.at < pieces.stream.len() || pieces.left.len() != 0
    {
        return Err(ZipError::Rebuild(err(
            "the patch makes more than the pieces take",
        )));
    }
    drop(pieces);
    if patch.limit() != 0 {
        return Err(ZipError::Rebuild(err(format!(
            "{} bytes of the patch are left over",
            patch.limit()
        ))));
    }
    Ok(out)
}

/// The deflate streams of a zip archive's members (method 8), as (offset, length), in
/// file order and disjoint: from the end of central directory record, the central
/// directory's entries and each member's local header. `None` for what is not such an
/// archive (or a zip64 one).
#[cfg(feature = "make")]
pub fn zip_streams(b: &[u8]) -> Option<Vec<(usize, usize)>> {
    let u16_at = |at: usize| Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?));
    // The end of central directory record: the last one, within a comment's reach.
    let last = b.len().checked_sub(22)?;
    let eocd = (last.saturating_sub(0xFFFF)..=last)
        .rev()
        .find(|&at| b[at..at + 4] == [0x50, 0x4b, 0x05, 0x06])?;
    let entries = u16_at(eocd + 10)?;
    let (size, offset) = (u32_at(eocd + 12)?, u32_at(eocd + 16)?);
    if entries == 0xFFFF || size == u32::MAX || offset == u32::MAX {
        return None;
    }
    let mut at = usize::try_from(offset).ok()?;
    let mut streams = Vec::new();
    for _ in 0..entries {
        if b.get(at..at + 4)? != [0x50, 0x4b, 0x01, 0x02] {
            return None;
        }
        let method = u16_at(at + 10)?;
        let csize = usize::try_from(u32_at(at + 20)?).ok()?;
        let (n, e, c) = (
            usize::from(u16_at(at + 28)?),
            usize::from(u16_at(at + 30)?),
            usize::from(u16_at(at + 32)?),
        );
        let local = usize::try_from(u32_at(at + 42)?).ok()?;
        at += 46 + n + e + c;
        if method != 8 || csize == 0 || csize == u32::MAX as usize {
            continue;
        }
        if b.get(local..local + 4)? != [0x50, 0x4b, 0x03, 0x04] {
            return None;
        }
        let start =
            local + 30 + usize::from(u16_at(local + 26)?) + usize::from(u16_at(local + 28)?);
        if start.checked_add(csize)? > b.len() {
            return None;
        }
        streams.push((start, csize));
    }
    streams.sort_unstable();
    let mut end = 0;
    streams.retain(|&(s, l)| {
        let keep = s >= end;
        if keep {
            end = s + l;
        }
        keep
    });
    Some(streams)
}

/// The base's pieces and expansion: each of `streams` that inflates to its end exactly
/// (within what the expansion may hold) as a stream, the rest stored.
#[cfg(feature = "make")]
fn expand_old(old: &[u8], streams: Vec<(usize, usize)>) -> (Vec<BasePiece>, Vec<u8>) {
    use format::zippatch::ZIP_EXPANSION_MAX;
    let (mut base_pieces, mut old_exp, mut at) = (Vec::new(), Vec::new(), 0usize);
    for (s, l) in streams {
        let mut inflater = flate2::bufread::DeflateDecoder::new(&old[s..s + l]);
        let room = ZIP_EXPANSION_MAX.saturating_sub((old_exp.len() + s - at) as u64);
        let Ok((plain, false)) = read_bounded(&mut inflater, room) else {
            continue;
        };
        if inflater.total_in() != l as u64 {
            continue;
        }
        if s > at {
            base_pieces.push(BasePiece::Stored {
                len: (s - at) as u64,
            });
            old_exp.extend_from_slice(&old[at..s]);
        }
        base_pieces.push(BasePiece::Stream {
            len: l as u64,
            plain: plain.len() as u64,
        });
        old_exp.extend_from_slice(&plain);
        at = s + l;
    }
    if old.len() > at {
        base_pieces.push(BasePiece::Stored {
            len: (old.len() - at) as u64,
        });
        old_exp.extend_from_slice(&old[at..]);
    }
    (base_pieces, old_exp)
}

/// A zip patch that turns the archive `old` into the archive `new`, with `header` as the
/// new file's header and `base` its base index: the operation's head and payload.
/// Refused (with the reason) when either is not a zip archive, the new one has no
/// member preflate recreates exactly, the base's expansion is over the limit, or the
/// device's [`rebuild_zip`] would not give back `new` exactly (checked by running it).
#[cfg(feature = "make")]
pub fn make_zip(
    old: &[u8],
    new: &[u8],
    header: format::FileHeader,
    base: u64,
) -> Result<(ZipHead, Vec<u8>), &'static str> {
    use format::ops::{DEFLATE_CORRECTIONS_MAX, DEFLATE_PLAIN_MAX, DEFLATE_STREAM_MAX};
    use format::zippatch::ZIP_EXPANSION_MAX;

    let mut old_streams = zip_streams(old).ok_or("the base is not a zip archive")?;
    let mut new_streams = zip_streams(new).ok_or("not a zip archive")?;
    // A member whose compressed bytes did not change stays compressed on both sides: the
    // patch copies it as it is, and it costs no reconstruction data.
    let unchanged: std::collections::HashSet<&[u8]> = {
        let olds: std::collections::HashSet<&[u8]> =
            old_streams.iter().map(|&(s, l)| &old[s..s + l]).collect();
        new_streams
            .iter()
            .map(|&(s, l)| &new[s..s + l])
            .filter(|b| olds.contains(b))
            .collect()
    };
    old_streams.retain(|&(s, l)| !unchanged.contains(&old[s..s + l]));
    new_streams.retain(|&(s, l)| !unchanged.contains(&new[s..s + l]));
    let (base_pieces, old_exp) = expand_old(old, old_streams);
    if old_exp.len() as u64 > ZIP_EXPANSION_MAX {
        return Err("the base is too large expanded");
    }
    // The new file: each member preflate recreates exactly, as a stream.
    let config = preflate_rs::PreflateConfig {
        plain_text_limit: usize::try_from(DEFLATE_PLAIN_MAX).unwrap_or(usize::MAX),
        verify_compression: false,
        ..preflate_rs::PreflateConfig::default()
    };
    let (mut pieces, mut new_exp, mut corrections, mut at) =
        (Vec::new(), Vec::new(), Vec::new(), 0usize);
    for (s, l) in new_streams {
        let stream = &new[s..s + l];
        let Ok((found, plain)) = preflate_rs::preflate_whole_deflate_stream(stream, &config) else {
            continue;
        };
        if found.compressed_size != l
            || l as u64 > DEFLATE_STREAM_MAX
            || (corrections.len() + found.corrections.len()) as u64 > DEFLATE_CORRECTIONS_MAX
            || crate::recreate(plain.text().to_vec(), found.corrections.clone(), l as u64)
                .ok()
                .as_deref()
                != Some(stream)
        {
            continue;
        }
        if s > at {
            pieces.push(NewPiece::Stored {
                len: (s - at) as u64,
            });
            new_exp.extend_from_slice(&new[at..s]);
        }
        pieces.push(NewPiece::Stream {
            stream_len: l as u64,
            plain: plain.text().len() as u64,
            corrections_len: found.corrections.len() as u64,
        });
        new_exp.extend_from_slice(plain.text());
        corrections.extend_from_slice(&found.corrections);
        at = s + l;
    }
    if pieces.is_empty() {
        return Err("no member is recreated exactly");
    }
    if new.len() > at {
        pieces.push(NewPiece::Stored {
            len: (new.len() - at) as u64,
        });
        new_exp.extend_from_slice(&new[at..]);
    }
    let mut patch = Vec::new();
    bidiff::simple_diff(&old_exp, &new_exp, &mut patch).map_err(|_| "diff failed")?;
    let head = ZipHead {
        header,
        base,
        base_pieces,
        pieces,
        patch_len: patch.len() as u64,
    };
    // As the device reads it: encoded, decoded, within every limit.
    let head = ZipHead::decode(&head.encode()).map_err(|_| "over the format's limits")?;
    let mut payload = corrections;
    payload.extend_from_slice(&patch);
    let back = rebuild_zip(old, &head, &mut payload.as_slice(), crate::recreate, |r| {
        let mut v = Vec::new();
        r.read_to_end(&mut v).map(|_| v)
    })
    .map_err(|_| "the rebuild fails")?;
    if back != new {
        return Err("the rebuild is not exact");
    }
    Ok((head, payload))
}
