//! `berth-image delta`: an update file from one commit to another (or from nothing).
//!
//! The update carries every object the target needs that the source commit does not
//! have, in a fixed order (depth first, files before the tree that names them), as the
//! operations of `format::ops`, cut into zstd-compressed parts of about `--part-size`
//! bytes each, and a signed superblock that names the parts by sha256 (see
//! `docs/FORMAT.md`, "Update files" and "Part operations").
//!
//! What makes it small:
//! - No operation carries the id of the object it makes, and a tree travels as edits of
//!   the base commit's tree at the same place: ids are the one thing that never
//!   compresses, and a security update touches a few files in directories of hundreds.
//! - A regular file whose base the device has travels as a bidiff (bsdiff-style) patch
//!   when that compresses smaller. Its base is the file at the same path, else a file of
//!   a similar name that went away from the same directory (`libfoo.so.1.2.3` becomes
//!   `.1.2.4`; a directory such as `/lib/modules/6.1.0-27-amd64` is matched the same
//!   way), else a file of the same name anywhere in the base commit (a move).
//! - A zip archive whose base is one too travels as a zip patch when that is smaller:
//!   a patch of both sides' expansions (each member's deflate stream replaced by its
//!   uncompressed data), and the new members' reconstruction data (`redeflate::make_zip`).
//! - A gzip file (one member) whose base is gzip too travels as a deflate patch when that
//!   is smaller: a patch of the uncompressed data plus preflate's reconstruction data
//!   (the `redeflate` crate), kept only if the device's reconstruction, run here, gives
//!   back the exact bytes. A change early in a deflate stream rewrites all of it, so a
//!   patch of the compressed bytes is about as large as the file.
//! - An ELF file (x86-64 or `AArch64`) whose base is ELF too travels as an ELF patch when
//!   that is smaller: its code's references (relative calls and jumps, RIP-relative
//!   operands, `AArch64` branches and `adrp` pairs) and its data's pointers rewritten into
//!   the base's addresses through a map made from the plain patch's matches (`elf.rs`,
//!   `format::elfpatch`), then diffed. Where code moved, the references that cross the
//!   move then hold the base's values, and
//!   the patch does not pay for each of them.
//! - Everything is compressed solid within a part, so patches of related files share a
//!   window.
//!
//! What keeps it bounded: files up to twice the window ([`WINDOW`] by default) are
//! diffed in memory in one piece; larger ones in windows of that many output bytes,
//! each against the base bytes around the same
//! relative position, their patches staged on disk. Patches are computed on every core,
//! a batch at a time, while another thread compresses what is ready.
//!
//! The steps: `plan` decides what to send and against which bases, `diff` works out the
//! patches, `write` turns the plan into operations in compressed parts; this module
//! signs the superblock and puts the update in place.

mod diff;
mod elf;
mod plan;
mod write;

use std::fs::File;
use std::io::{BufWriter, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use format::ObjectId;
use format::sig::Signatures;
use format::update::{self, Body, PartInfo};
use store::Repo;

use crate::keys::SigningKeys;

/// Output bytes per window (the default of `--window`). A file (new or base) up to twice
/// this is diffed in one piece; a larger one in windows, each against the base bytes at
/// the same relative position with half a window of margin on each side, so diffing
/// holds at most two windows of base and one of output (the suffix array is ~8x that).
pub const WINDOW: u64 = 16 << 20;

/// Inputs of `delta`.
#[allow(clippy::struct_excessive_bools)] // the command's switches, passed through
#[derive(Debug)]
pub struct DeltaArgs<'a> {
    pub repo: PathBuf,
    pub from: Option<String>,
    pub to: String,
    /// Keys to sign with.
    pub keys: &'a SigningKeys,
    pub output: PathBuf,
    pub part_size: u64,
    pub level: i32,
    /// Write a directory (superblock and one file per part) instead of one file.
    pub split: bool,
    /// Show progress on stderr.
    pub progress: bool,
    /// Output bytes per patch window (see [`WINDOW`]).
    pub window: u64,
    /// Send gzip files as deflate patches when smaller (the update then needs a berth
    /// that knows them).
    pub deflate: bool,
    /// Send ELF files as ELF patches when smaller (the update then needs a berth that
    /// knows them).
    pub elf: bool,
    /// Also count the update's bytes by kind of file (a second compression).
    pub by_kind: bool,
}

/// What `delta` wrote.
#[derive(Debug, serde::Serialize)]
pub struct DeltaOutput {
    pub output: PathBuf,
    pub from: Option<String>,
    pub to: String,
    pub objects: u64,
    /// Of those, sent as patches against an object the device has.
    pub patched: u64,
    /// Of the patched, how many against a base at another path (renamed or moved).
    pub patched_elsewhere: u64,
    /// Of the patched, how many gzip or zlib files as deflate patches (through their
    /// uncompressed data; the update then carries the deflate-patch flag).
    pub deflated: u64,
    /// Of the patched, how many zip archives as zip patches (through their members'
    /// uncompressed data; the update then carries the zip-patch flag).
    pub zip_patched: u64,
    /// Of the patched, how many ELF files as ELF patches (the update then carries the
    /// ELF-patch flag).
    pub elf_patched: u64,
    /// With `--by-kind`: per kind of object (gzip, elf, other, tree), its objects, its
    /// operations' bytes, and those compressed on their own (so they add up to a little
    /// more than the update: each kind loses the others' matches).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_kind: Option<std::collections::BTreeMap<&'static str, write::KindBytes>>,
    pub parts: usize,
    pub uncompressed: u64,
    pub bytes: u64,
}

/// Makes the update `args` describe and puts it at `args.output` (which must not exist).
pub fn delta(args: &DeltaArgs<'_>) -> Result<DeltaOutput> {
    if args.part_size == 0 {
        bail!("--part-size must be at least 1 byte");
    }
    if args.window < 2 {
        bail!("--window must be at least 2 bytes");
    }
    let repo = Repo::open(&args.repo)?;
    let to = repo.resolve_commit(&args.to)?;
    let from = args
        .from
        .as_deref()
        .map(|f| repo.resolve_commit(f))
        .transpose()?;
    let (target, commit_bytes) = repo.read_commit(&to)?;
    let plan = plan::plan(&repo, from.as_ref(), &target.root)?;

    let parent = args
        .output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let work = tempfile::Builder::new()
        .prefix(".berth-delta-")
        .tempdir_in(parent)?;
    let (emitted, done) = write::parts(
        &repo,
        &plan,
        work.path(),
        &write::Settings {
            part_size: args.part_size,
            level: args.level,
            window: args.window,
            progress: args.progress,
            kinds: diff::Kinds {
                deflate: args.deflate,
                elf: args.elf,
            },
            by_kind: args.by_kind,
        },
    )?;

    let mut flags = 0;
    if emitted.deflated > 0 {
        flags |= update::FLAG_DEFLATE_PATCH;
    }
    if emitted.elf_patched > 0 {
        flags |= update::FLAG_ELF_PATCH;
    }
    if emitted.zip_patched > 0 {
        flags |= update::FLAG_ZIP_PATCH;
    }
    let head = superblock(
        &repo,
        from,
        &to,
        commit_bytes,
        &done,
        args.keys.keys(),
        flags,
    )?;
    let bytes = write_output(&args.output, work.path(), &head, &done, args.split)?;
    Ok(DeltaOutput {
        output: args.output.clone(),
        from: from.map(|f| f.to_string()),
        to: to.to_string(),
        objects: plan.jobs.len() as u64,
        patched: emitted.patched,
        patched_elsewhere: emitted.patched_elsewhere,
        deflated: emitted.deflated,
        zip_patched: emitted.zip_patched,
        elf_patched: emitted.elf_patched,
        by_kind: emitted.by_kind.map(|v| v.into_iter().collect()),
        parts: done.len(),
        uncompressed: done.iter().map(|p| p.1).sum(),
        bytes,
    })
}

/// Writes the update: one file (head, then the parts), or with `split` a directory
/// (`superblock` holding the head, and `part-NNNNN`). Built in `work`, renamed into place.
/// Returns the total size.
fn write_output(
    output: &Path,
    work: &Path,
    head: &[u8],
    parts: &[(PathBuf, u64)],
    split: bool,
) -> Result<u64> {
    if split {
        let tmp = work.join("update.d");
        std::fs::create_dir(&tmp)?;
        let mut sb = File::create(tmp.join("superblock"))?;
        sb.write_all(head)?;
        sb.sync_all()?;
        let mut total = head.len() as u64;
        for (i, (path, _)) in parts.iter().enumerate() {
            let dest = tmp.join(format!("part-{i:05}"));
            std::fs::rename(path, &dest)?;
            let f = File::open(&dest)?;
            f.sync_all()?;
            total += f.metadata()?.len();
        }
        std::fs::rename(&tmp, output)
            .with_context(|| format!("{}: write (it must not exist)", output.display()))?;
        return Ok(total);
    }
    let tmp = work.join("update");
    let mut out = BufWriter::new(File::create(&tmp)?);
    out.write_all(head)?;
    for (path, _) in parts {
        std::io::copy(&mut File::open(path)?, &mut out)?;
    }
    let mut f = out
        .into_inner()
        .map_err(std::io::IntoInnerError::into_error)?;
    f.sync_all()?;
    let bytes = f.stream_position()?;
    std::fs::rename(&tmp, output).with_context(|| format!("{}: write", output.display()))?;
    Ok(bytes)
}

/// The head, signed body and signatures of an update whose parts are `done`.
fn superblock(
    repo: &Repo,
    from: Option<ObjectId>,
    to: &ObjectId,
    commit_bytes: Vec<u8>,
    done: &[(PathBuf, u64)],
    key: &[ed25519_dalek::SigningKey],
    flags: u16,
) -> Result<Vec<u8>> {
    let mut infos = Vec::new();
    let mut offset = 0u64;
    for (path, size) in done {
        let bytes = std::fs::read(path)?;
        let len = bytes.len() as u64;
        infos.push(PartInfo {
            offset,
            len,
            size: *size,
            sha256: ObjectId::digest(&bytes),
        });
        offset += len;
    }
    let sigs = repo.read_signatures(to)?;
    let body = Body {
        from,
        commit: commit_bytes,
        commit_signatures: if sigs.entries().is_empty() {
            Vec::new()
        } else {
            sigs.encode()
        },
        parts: infos,
        flags,
    }
    .encode();
    let mut signatures = Signatures::new();
    for k in key {
        signatures.sign(&body, k).context("sign the update")?;
    }
    Ok(update::encode_envelope(&body, &signatures.encode()))
}
