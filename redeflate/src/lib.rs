//! Deflate-aware patches (`format::ops::DEFLATE_PATCH`, see `docs/FORMAT.md`, "Part
//! operations"): a gzip or zlib file's new bytes from its old ones, through the
//! uncompressed data.
//!
//! A small change early in a deflate stream rewrites everything after it, so a patch of
//! the compressed bytes is about as large as the file. Instead the build host
//! ([`make`]) inflates both sides, diffs the uncompressed data (a bidiff patch, as for
//! any file), and sends what recreates the new stream bit for bit from its
//! uncompressed data: preflate's reconstruction data, which predicts the compressor's
//! every choice and records where the prediction is wrong (a few hundred bytes for a
//! Debian `gzip -9n` file, whatever compressor made it). The device ([`rebuild`])
//! inflates its base, applies the patch, recreates the stream and puts the header and
//! trailer (gzip's or zlib's: to the device, bytes before and after) around it. [`make`] runs [`rebuild`] itself on what it made, and keeps the
//! patch only if the bytes come back exactly: a file that cannot be recreated gets a
//! plain patch, decided on the build host, never discovered on the device.
//!
//! Memory: every side is at most [`DEFLATE_PLAIN_MAX`] uncompressed bytes, held in
//! memory on the device (the base's, then the new data's with the reconstruction's
//! state, about four times as much): under 48 MiB at the limit.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::io::{Cursor, Read, Write};

mod zip;
pub use zip::{ZipError, rebuild_zip};
#[cfg(feature = "make")]
pub use zip::{make_zip, zip_streams};

pub use format::ops::DEFLATE_PLAIN_MAX;
use format::ops::DeflateHead;
#[cfg(feature = "make")]
use format::ops::{DEFLATE_CORRECTIONS_MAX, DEFLATE_FRAME_MAX, DEFLATE_STREAM_MAX};

/// Why a deflate patch cannot be rebuilt: one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RebuildError(String);

fn err(what: impl AsRef<str>) -> RebuildError {
    RebuildError(format!("deflate patch: {}", what.as_ref()))
}

/// Reads at most `limit` bytes of `r` into a vector that grows as they arrive (a lying
/// length cannot allocate more than is really there), and says whether more followed.
fn read_bounded(r: &mut impl Read, limit: u64) -> std::io::Result<(Vec<u8>, bool)> {
    let mut out = Vec::new();
    r.take(limit.saturating_add(1)).read_to_end(&mut out)?;
    let more = out.len() as u64 > limit;
    out.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok((out, more))
}

/// The new file's content: `base` is the base file from the start of its deflate stream
/// (`head.base_start`), `payload` the operation's payload (exactly
/// `head.payload_len()` bytes are read from it). Every length is checked against the
/// head: the base must inflate to exactly `base_plain` bytes (it is never inflated
/// further), the patch must make exactly `plain` bytes using its whole length, and the
/// reconstruction must make exactly `stream_len` bytes.
///
/// `recreate` turns the new uncompressed data and the reconstruction data into the
/// deflate stream, of at most the given length: [`recreate`] in this process, or (on
/// the device) [`recreate`] in a child process running [`serve`], so that a panic of
/// the reconstruction on hostile data is an error, not the end of the program. The
/// device splits this in two, [`prepare`] and [`finish`], to go on with other work
/// while the child recreates the stream.
pub fn rebuild(
    base: impl Read,
    head: &DeflateHead,
    payload: &mut impl Read,
    recreate: impl FnOnce(Vec<u8>, Vec<u8>, u64) -> Result<Vec<u8>, String>,
) -> Result<Vec<u8>, RebuildError> {
    let Request {
        plain,
        corrections,
        max,
    } = prepare(base, head, payload)?;
    // Given away, so a recreate in a child can free them while the child works.
    finish(head, recreate(plain, corrections, max))
}

/// What a deflate patch's stream is recreated from (see [`recreate`]).
#[derive(Debug)]
pub struct Request {
    /// The new uncompressed data.
    pub plain: Vec<u8>,
    /// The reconstruction data.
    pub corrections: Vec<u8>,
    /// The stream's length: a longer one is refused.
    pub max: u64,
}

/// The first half of [`rebuild`]: the base inflated, the patch applied and the
/// reconstruction data read, every length checked; the payload is read to its end.
pub fn prepare(
    base: impl Read,
    head: &DeflateHead,
    payload: &mut impl Read,
) -> Result<Request, RebuildError> {
    let mut inflater = flate2::read::DeflateDecoder::new(base);
    let (old, more) = read_bounded(&mut inflater, head.base_plain)
        .map_err(|e| err(format!("the base's deflate stream does not inflate: {e}")))?;
    if more || old.len() as u64 != head.base_plain {
        return Err(err(format!(
            "the base inflates to {}{} bytes, where the operation says {}",
            if more { "more than " } else { "" },
            old.len(),
            head.base_plain
        )));
    }
    // Exactly its length: the patch follows in the same stream.
    let mut corrections = Vec::new();
    payload
        .take(head.corrections_len)
        .read_to_end(&mut corrections)
        .map_err(|e| err(format!("reading the reconstruction data: {e}")))?;
    if corrections.len() as u64 != head.corrections_len {
        return Err(err("the part ends inside the reconstruction data"));
    }
    let mut patch = payload.take(head.patch_len);
    let new = {
        let mut reader = bipatch::Reader::new(&mut patch, Cursor::new(&old[..]))
            .map_err(|e| err(format!("bad patch: {e}")))?;
        let (new, more) = read_bounded(&mut reader, head.plain).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                err("bad patch: it reads past the base's uncompressed data or past its own end")
            } else {
                err(format!("bad patch: {e}"))
            }
        })?;
        if more || new.len() as u64 != head.plain {
            return Err(err(format!(
                "the patch makes {}{} bytes, where the operation says {}",
                if more { "more than " } else { "" },
                new.len(),
                head.plain
            )));
        }
        new
    };
    if patch.limit() != 0 {
        return Err(err(format!(
            "{} bytes of the patch are left over",
            patch.limit()
        )));
    }
    Ok(Request {
        plain: new,
        corrections,
        max: head.stream_len,
    })
}

/// The second half of [`rebuild`]: the file from the recreated stream (or the reason
/// there is none), its length checked, framed by the head's prefix and suffix.
pub fn finish(
    head: &DeflateHead,
    stream: Result<Vec<u8>, String>,
) -> Result<Vec<u8>, RebuildError> {
    let stream = stream.map_err(err)?;
    if stream.len() as u64 != head.stream_len {
        return Err(err(format!(
            "the reconstruction makes a {}-byte stream, where the operation says {}",
            stream.len(),
            head.stream_len
        )));
    }
    let mut out = Vec::with_capacity(head.prefix.len() + stream.len() + head.suffix.len());
    out.extend_from_slice(&head.prefix);
    out.extend_from_slice(&stream);
    out.extend_from_slice(&head.suffix);
    Ok(out)
}

/// The deflate stream that `plain` and the reconstruction data `corrections` describe,
/// in this process: refused if longer than `max`. Preflate may panic on damaged
/// reconstruction data (seen with preflate-rs 0.7.6: an index out of bounds), so the
/// device runs this in a child process ([`serve`]).
#[allow(clippy::needless_pass_by_value)] // the shape `rebuild` takes
pub fn recreate(plain: Vec<u8>, corrections: Vec<u8>, max: u64) -> Result<Vec<u8>, String> {
    let stream = preflate_rs::recreate_whole_deflate_stream(&plain, &corrections).map_err(|e| {
        let first = e.message().lines().next().unwrap_or("").trim();
        format!(
            "the reconstruction data does not recreate a stream ({:?}: {first})",
            e.exit_code()
        )
    })?;
    if stream.len() as u64 > max {
        return Err(format!(
            "the reconstruction makes more than {max} bytes of stream"
        ));
    }
    Ok(stream)
}

/// The request [`serve`] reads: `max`, the lengths of `plain` and `corrections` (u64
/// little-endian each), then their bytes.
pub fn write_request(
    w: &mut impl Write,
    plain: &[u8],
    corrections: &[u8],
    max: u64,
) -> std::io::Result<()> {
    w.write_all(&max.to_le_bytes())?;
    w.write_all(&(plain.len() as u64).to_le_bytes())?;
    w.write_all(&(corrections.len() as u64).to_le_bytes())?;
    w.write_all(plain)?;
    w.write_all(corrections)?;
    w.flush()
}

/// Longest reason a reply of [`serve`] gives for a stream it cannot recreate.
pub const REPLY_REASON_MAX: u64 = 4096;

/// The child's side: answers requests (see [`write_request`]) from `r` on `w` until `r`
/// ends between two of them. Each reply is a status byte (0: the stream follows; 1: the
/// reason it cannot be recreated follows, one line), its length (u64 little-endian) and
/// its bytes; see [`read_reply`]. A request over the format's limits or cut short is an
/// error: the stream of requests cannot be trusted after it, so serving ends.
pub fn serve(r: &mut impl Read, w: &mut impl Write) -> Result<(), String> {
    let io = |e: std::io::Error| format!("reading the request: {e}");
    loop {
        let mut first = [0u8; 8];
        // The end of the requests: nothing at all where the next one would start.
        match r.read(&mut first[..1]).map_err(io)? {
            0 => return Ok(()),
            _ => r.read_exact(&mut first[1..]).map_err(io)?,
        }
        let mut field = || {
            let mut b = [0u8; 8];
            r.read_exact(&mut b).map(|()| u64::from_le_bytes(b))
        };
        let (max, plain_len, corrections_len) = (
            u64::from_le_bytes(first),
            field().map_err(io)?,
            field().map_err(io)?,
        );
        if plain_len > DEFLATE_PLAIN_MAX
            || corrections_len > format::ops::DEFLATE_CORRECTIONS_MAX
            || max > format::ops::DEFLATE_STREAM_MAX
        {
            return Err("a request over the limits".into());
        }
        let mut plain = Vec::new();
        r.by_ref()
            .take(plain_len)
            .read_to_end(&mut plain)
            .map_err(io)?;
        let mut corrections = Vec::new();
        r.by_ref()
            .take(corrections_len)
            .read_to_end(&mut corrections)
            .map_err(io)?;
        if plain.len() as u64 != plain_len || corrections.len() as u64 != corrections_len {
            return Err("a truncated request".into());
        }
        let (status, body) = match recreate(plain, corrections, max) {
            Ok(stream) => (0u8, stream),
            Err(why) => {
                let mut why = why.into_bytes();
                why.truncate(usize::try_from(REPLY_REASON_MAX).unwrap_or(usize::MAX));
                (1, why)
            }
        };
        w.write_all(&[status])
            .and_then(|()| w.write_all(&(body.len() as u64).to_le_bytes()))
            .and_then(|()| w.write_all(&body))
            .and_then(|()| w.flush())
            .map_err(|e| format!("writing the reply: {e}"))?;
    }
}

/// One reply of [`serve`] from `r`: the recreated stream (at most `max` bytes), or the
/// child's reason it could not be recreated. A reply that breaks the protocol (an
/// unknown status, a stream longer than `max`, a reason over [`REPLY_REASON_MAX`], or one
/// cut short) is an I/O error of kind `InvalidData` or `UnexpectedEof`.
pub fn read_reply(r: &mut impl Read, max: u64) -> std::io::Result<Result<Vec<u8>, String>> {
    let mut head = [0u8; 9];
    r.read_exact(&mut head)?;
    let len = u64::from_le_bytes(head[1..].try_into().unwrap_or_default());
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let limit = match head[0] {
        0 => max,
        1 => REPLY_REASON_MAX,
        s => return Err(invalid(format!("a reply with status {s}"))),
    };
    if len > limit {
        return Err(invalid(if head[0] == 0 {
            format!("the reconstruction makes more than {max} bytes of stream")
        } else {
            format!("a reason of {len} bytes")
        }));
    }
    let mut body = Vec::new();
    r.take(len).read_to_end(&mut body)?;
    if body.len() as u64 != len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(match head[0] {
        0 => Ok(body),
        _ => Err(String::from_utf8_lossy(&body).into_owned()),
    })
}

/// Where the deflate stream of a gzip file starts: after the member header (magic
/// `1f 8b`, method 8, and the optional extra field, name, comment and header crc its
/// flags announce). `None` if `b` is not such a file, or has reserved flags set.
#[cfg(feature = "make")]
pub fn gzip_stream_start(b: &[u8]) -> Option<usize> {
    const FHCRC: u8 = 2;
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    if b.get(..3)? != [0x1f, 0x8b, 8] {
        return None;
    }
    let flags = *b.get(3)?;
    if flags & 0xe0 != 0 {
        return None;
    }
    let mut at = 10usize;
    if flags & FEXTRA != 0 {
        let n = u16::from_le_bytes([*b.get(at)?, *b.get(at + 1)?]);
        at = at.checked_add(2 + usize::from(n))?;
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            at += b.get(at..)?.iter().position(|&c| c == 0)? + 1;
        }
    }
    if flags & FHCRC != 0 {
        at += 2;
    }
    (at <= b.len()).then_some(at)
}

/// Where the deflate stream of a zlib stream (RFC 1950) starts, and so `Some(2)`: a
/// two-byte header of method 8 with a window of at most 32 KiB, its check bits right and
/// no preset dictionary (the device would not have it). Two bytes say little, so the
/// caller's inflating and exact rebuilding decide the rest.
#[cfg(feature = "make")]
pub fn zlib_stream_start(b: &[u8]) -> Option<usize> {
    const FDICT: u8 = 0x20;
    let (cmf, flg) = (*b.first()?, *b.get(1)?);
    (cmf & 0x0f == 8
        && cmf >> 4 <= 7
        && (u16::from(cmf) << 8 | u16::from(flg)) % 31 == 0
        && flg & FDICT == 0)
        .then_some(2)
}

/// The framing around a file's one deflate stream: where the stream starts, and how long
/// the trailer after it is (gzip: its member header, then crc32 and size, 8 bytes; zlib:
/// two bytes, then the Adler-32, 4 bytes). `None` for anything else.
#[cfg(feature = "make")]
pub fn framing(b: &[u8]) -> Option<(usize, usize)> {
    gzip_stream_start(b)
        .map(|start| (start, 8))
        .or_else(|| zlib_stream_start(b).map(|start| (start, 4)))
}

/// A deflate patch that turns `old` into `new`, each one deflate stream in its framing
/// (a gzip member or a zlib stream, see [`framing`]; the two sides may differ), with
/// `header` as the new file's header and `base` its base index: the operation's head
/// and payload. Refused (with the reason) when either is not such a file, a side is
/// over the limits, or the device's [`rebuild`] would not give back `new` exactly
/// (checked by running it).
#[cfg(feature = "make")]
pub fn make(
    old: &[u8],
    new: &[u8],
    header: format::FileHeader,
    base: u64,
) -> Result<(DeflateHead, Vec<u8>), &'static str> {
    let (old_start, _) = framing(old).ok_or("the base is neither gzip nor zlib")?;
    let (new_start, trailer) = framing(new).ok_or("neither gzip nor zlib")?;
    if new_start > DEFLATE_FRAME_MAX {
        return Err("header too long");
    }
    // The base: only its uncompressed data matters (the device inflates the same bytes).
    let mut inflater = flate2::bufread::DeflateDecoder::new(&old[old_start..]);
    let (old_plain, more) =
        read_bounded(&mut inflater, DEFLATE_PLAIN_MAX).map_err(|_| "the base does not inflate")?;
    if more {
        return Err("the base is too large uncompressed");
    }
    let config = preflate_rs::PreflateConfig {
        plain_text_limit: usize::try_from(DEFLATE_PLAIN_MAX).unwrap_or(usize::MAX),
        // `rebuild` below checks the result, as the device will make it.
        verify_compression: false,
        ..preflate_rs::PreflateConfig::default()
    };
    // One stream: then its trailer, then nothing.
    let stream_end = new.len().checked_sub(trailer).ok_or("too short")?;
    let stream = new.get(new_start..stream_end).ok_or("too short")?;
    let (found, plain) = preflate_rs::preflate_whole_deflate_stream(stream, &config)
        .map_err(|_| "preflate cannot model the stream")?;
    if found.compressed_size != stream.len() {
        return Err("not one stream and its trailer");
    }
    if stream.len() as u64 > DEFLATE_STREAM_MAX || plain.text().len() as u64 > DEFLATE_PLAIN_MAX {
        return Err("too large uncompressed");
    }
    if found.corrections.len() as u64 > DEFLATE_CORRECTIONS_MAX {
        return Err("reconstruction data too large");
    }
    let mut patch = Vec::new();
    bidiff::simple_diff(&old_plain, plain.text(), &mut patch).map_err(|_| "diff failed")?;
    let head = DeflateHead {
        header,
        base,
        base_start: old_start as u64,
        base_plain: old_plain.len() as u64,
        plain: plain.text().len() as u64,
        prefix: new[..new_start].to_vec(),
        stream_len: stream.len() as u64,
        suffix: new[stream_end..].to_vec(),
        corrections_len: found.corrections.len() as u64,
        patch_len: patch.len() as u64,
    };
    drop(plain);
    let mut payload = found.corrections;
    payload.extend_from_slice(&patch);
    drop(patch);
    let back = rebuild(&old[old_start..], &head, &mut payload.as_slice(), recreate)
        .map_err(|_| "the reconstruction fails")?;
    if back != new {
        return Err("the reconstruction is not exact");
    }
    Ok((head, payload))
}
