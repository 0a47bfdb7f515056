//! Opening an update: the file (or the split form's directory), its superblock's
//! signature checked over the exact body bytes before the body is decoded, its length
//! against the parts the body lists, and each part against its signed sha256.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use format::record::DeploymentName;
use format::sig::Signatures;
use format::update::{self, Body};

use crate::Device;
use crate::error::{Refusal, UpdaterError, bad, refused};
use crate::part::Hashing;

/// An update whose superblock is verified: the file, the signed body, where the parts
/// start, and whether it is the split form.
pub(crate) struct Source {
    pub(crate) f: File,
    pub(crate) body: Body,
    pub(crate) parts_start: u64,
    pub(crate) split: bool,
}

impl Device {
    /// Opens the update `file` (or the split form's directory) and verifies its
    /// superblock against the keys `running` trusts.
    pub(crate) fn open_source(
        &self,
        file: &Path,
        running: &DeploymentName,
    ) -> Result<Source, UpdaterError> {
        let (signer_of, keys) = self.trusted_keys(running)?;
        // A directory is the split form: DIR/superblock and DIR/part-NNNNN.
        let split = file.is_dir();
        let head_path = if split {
            file.join("superblock")
        } else {
            file.to_path_buf()
        };
        let mut f = File::open(&head_path).map_err(|e| bad(&head_path, e.to_string()))?;
        let (body, parts_start) = verified_body(&mut f, &head_path, &keys, &signer_of, split)?;
        Ok(Source {
            f,
            body,
            parts_start,
            split,
        })
    }
}

/// The target commit's signature file, carried in the body and stored beside the
/// commit at the end: decoded now, before anything is written.
pub(crate) fn commit_signatures(
    file: &Path,
    body: &Body,
) -> Result<Option<Signatures>, UpdaterError> {
    if body.commit_signatures.is_empty() {
        return Ok(None);
    }
    Signatures::decode(&body.commit_signatures)
        .map(Some)
        .map_err(|e| bad(file, format!("commit signatures: {e}")))
}

/// Reads the head, the signed body and the signatures; verifies the signatures over the
/// exact body bytes against `keys` before decoding the body; checks the file's length
/// against the parts the body lists. Returns the body and where the parts start.
fn verified_body(
    f: &mut File,
    file: &Path,
    keys: &[ed25519_dalek::VerifyingKey],
    default: &DeploymentName,
    split: bool,
) -> Result<(Body, u64), UpdaterError> {
    let file_len = f.metadata().map_err(|e| bad(file, e.to_string()))?.len();
    // The envelope (format::update) in at most three reads: the head, the body with the
    // signature length, the signatures; each length checked before it is read.
    let mut prefix = Vec::new();
    for what in ["head", "superblock", "signatures"] {
        let want = update::envelope_len(&prefix).map_err(|e| bad(file, e.to_string()))?;
        if prefix.len() >= want {
            break;
        }
        let at = prefix.len();
        prefix.resize(want, 0);
        f.read_exact(&mut prefix[at..])
            .map_err(|_| bad(file, format!("truncated ({what})")))?;
    }
    let (body, parts_start) = verify_envelope(&prefix, &file.display(), keys, default)?;
    // The parts are contiguous (the body's decoder checked it), so they end where the
    // last one does; with the superblock before them, that may pass 2^64 in a lying body.
    let parts_len = body.parts.last().map_or(0, |p| p.offset + p.len);
    let describes =
        |n: Option<u64>| n.map_or_else(|| "more than 2^64".to_owned(), |n| n.to_string());
    // The split form's superblock file ends where the parts would start.
    let expected = if split {
        Some(parts_start)
    } else {
        parts_start.checked_add(parts_len)
    };
    if expected != Some(file_len) {
        let expected = describes(expected);
        return Err(bad(
            file,
            format!(
                "is {file_len} bytes, but its superblock describes {expected} (truncated or not this update's parts)"
            ),
        ));
    }
    Ok((body, parts_start))
}

/// Verifies the signatures of an update's envelope (`prefix` holds at least
/// [`update::envelope_len`] bytes) over the exact body bytes against `keys`, then
/// decodes the body. Returns it and where the parts start. `input` names the update.
pub(crate) fn verify_envelope(
    prefix: &[u8],
    input: &dyn std::fmt::Display,
    keys: &[ed25519_dalek::VerifyingKey],
    default: &DeploymentName,
) -> Result<(Body, u64), UpdaterError> {
    let invalid = |e: String| refused(input, Refusal::Invalid(e));
    let envelope = update::decode_envelope(prefix).map_err(|e| invalid(e.to_string()))?;
    let sigs = Signatures::decode(envelope.signatures).map_err(|e| invalid(e.to_string()))?;
    sigs.verify(envelope.body, keys).map_err(|e| {
        refused(
            input,
            Refusal::BadSignature {
                cause: e.to_string(),
                trusted_by: default.as_str().to_owned(),
            },
        )
    })?;
    let body = Body::decode(envelope.body).map_err(|e| invalid(e.to_string()))?;
    Ok((body, envelope.parts_start as u64))
}

/// Checks every part not yet applied against its signed hash.
pub(crate) fn check_all_parts(
    file: &Path,
    f: &mut File,
    split: bool,
    parts_start: u64,
    body: &Body,
    done: &[usize],
) -> Result<(), UpdaterError> {
    let mut offset = parts_start;
    for (i, part) in body.parts.iter().enumerate() {
        let start = offset;
        offset += part.len;
        if !done.contains(&i) {
            let (mut pf, at, shown) = open_part(file, f, split, i, start, part)?;
            check_part_hash(&mut pf, &shown, at, part)?;
        }
    }
    Ok(())
}

/// The file a part is in and where it starts: the update file at `start`, or in the
/// split form `DIR/part-NNNNN` at 0 (whose length must be the signed one).
pub(crate) fn open_part(
    file: &Path,
    f: &mut File,
    split: bool,
    i: usize,
    start: u64,
    part: &update::PartInfo,
) -> Result<(File, u64, PathBuf), UpdaterError> {
    if !split {
        let dup = f.try_clone().map_err(|e| bad(file, e.to_string()))?;
        return Ok((dup, start, file.to_path_buf()));
    }
    let path = file.join(format!("part-{i:05}"));
    let pf = File::open(&path).map_err(|e| bad(&path, e.to_string()))?;
    let len = pf.metadata().map_err(|e| bad(&path, e.to_string()))?.len();
    if len != part.len {
        return Err(bad(
            &path,
            format!("is {len} bytes, but the superblock says {}", part.len),
        ));
    }
    Ok((pf, 0, path))
}

/// Checks a part's compressed bytes against the signed sha256.
fn check_part_hash(
    f: &mut File,
    shown: &Path,
    start: u64,
    part: &update::PartInfo,
) -> Result<(), UpdaterError> {
    let io = |e: std::io::Error| bad(shown, e.to_string());
    f.seek(SeekFrom::Start(start)).map_err(io)?;
    let mut r = Hashing::new(f.take(part.len));
    let n = std::io::copy(&mut r, &mut std::io::sink()).map_err(io)?;
    if n != part.len {
        return Err(bad(shown, "truncated"));
    }
    if r.finish().map_err(io)? != part.sha256 {
        return Err(bad(
            shown,
            "damaged: a part's sha256 does not match the signed superblock",
        ));
    }
    Ok(())
}
