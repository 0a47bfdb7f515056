//! Diffing a file against its base, off the writing thread: a one-window patch when it
//! compresses smaller than the file, on every core a batch at a time.

use std::fs::File;
use std::io::Read;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Result;
use format::{FileHeader, FileKind, ObjectId};
use store::{FileContent, Repo};

use super::plan::Job;

/// A regular file's header and content, or `None` for other kinds.
pub(super) fn regular(repo: &Repo, id: &ObjectId) -> Result<Option<(FileHeader, File)>> {
    Ok(match repo.file_object(id)? {
        (h, FileContent::File(f)) if h.kind == FileKind::Regular => Some((h, f)),
        _ => None,
    })
}

/// What to send for a file that has a base, worked out off the writing thread.
pub(super) enum Prepared {
    /// One-window patch over the base's whole content: the new file's header, the
    /// base's size, the patch.
    Patch(FileHeader, u64, Vec<u8>),
    /// A gzip file as a deflate patch (`redeflate`): the head (its base index is filled
    /// in when written) and the payload.
    Deflate(Box<format::ops::DeflateHead>, Vec<u8>),
    /// A zip archive as a zip patch (`redeflate::make_zip`): the head (its base index is
    /// filled in when written) and the payload.
    Zip(Box<format::zippatch::ZipHead>, Vec<u8>),
    /// An ELF file as an ELF patch: one-window patch over the base's whole content
    /// that makes the normalized file (`elf.rs`).
    Elf(Box<ElfPatch>),
    /// Too big for one window: done while writing, window by window.
    Windowed,
    /// The patch does not pay: send the file whole.
    Whole,
}

/// An ELF patch's parts (the head's base index is filled in when written).
pub(super) struct ElfPatch {
    pub header: FileHeader,
    pub base_len: u64,
    pub arch: format::elfpatch::Arch,
    pub code: Vec<format::elfpatch::CodeRange>,
    pub map: Vec<format::elfpatch::MapRange>,
    pub patch: Vec<u8>,
}

impl ElfPatch {
    /// The operation's head, with the base at `base`.
    pub(super) fn head(&self, base: u64) -> format::elfpatch::ElfHead {
        format::elfpatch::ElfHead {
            patch: format::ops::PatchHead {
                header: self.header.clone(),
                base,
                windows: vec![format::ops::Window {
                    base_start: 0,
                    base_len: self.base_len,
                    out_len: self.header.size,
                    patch_len: self.patch.len() as u64,
                }],
            },
            arch: self.arch,
            code: self.code.clone(),
            map: self.map.clone(),
        }
    }
}

/// Which kinds of patch `prepare` may choose besides the plain one.
#[derive(Debug, Clone, Copy)]
pub(super) struct Kinds {
    pub deflate: bool,
    pub elf: bool,
}

fn prepare(
    repo: &Repo,
    id: &ObjectId,
    base: &ObjectId,
    window: u64,
    kinds: Kinds,
) -> Result<Prepared> {
    let (Some((header, mut f)), Some((bheader, mut bf))) =
        (regular(repo, id)?, regular(repo, base)?)
    else {
        return Ok(Prepared::Whole);
    };
    if header.size > 2 * window || bheader.size > 2 * window {
        return Ok(Prepared::Windowed);
    }
    let (mut new, mut old) = (Vec::new(), Vec::new());
    f.read_to_end(&mut new)?;
    bf.read_to_end(&mut old)?;
    let mut patch = Vec::new();
    bidiff::simple_diff(&old, &new, &mut patch)?;
    // A raw patch is about as long as the file (its "add" block is the byte-wise
    // difference, mostly zeros); what it costs is its compressed size. Compare that with
    // the file's own compressed size, at a quick level.
    let cost = |b: &[u8]| zstd::bulk::compress(b, 3).map(|c| c.len());
    let (plain_cost, whole_cost) = (cost(&patch)?, cost(&new)?);
    let elf = kinds
        .elf
        .then(|| super::elf::normalize(&old, &new, &patch))
        .flatten()
        .map(|norm| {
            let mut p = Vec::new();
            bidiff::simple_diff(&old, &norm.bytes, &mut p)?;
            let e = ElfPatch {
                header: header.clone(),
                base_len: bheader.size,
                arch: norm.arch,
                code: norm.code,
                map: norm.map,
                patch: p,
            };
            let c = cost(&e.patch)? + e.head(0).encode().len();
            anyhow::Ok((c, e))
        })
        .transpose()?;
    // Through the uncompressed data: a gzip or zlib file's, else a zip archive's members'.
    let deflate = if kinds.deflate {
        match deflate_patch(&old, &new, &header) {
            Some((head, payload)) => Some((
                cost(&payload)? + head.encode().len(),
                Prepared::Deflate(Box::new(head), payload),
            )),
            None => match redeflate::make_zip(&old, &new, header.clone(), 0) {
                Ok((head, payload)) => Some((
                    cost(&payload)? + head.encode().len(),
                    Prepared::Zip(Box::new(head), payload),
                )),
                Err(_) => None,
            },
        }
    } else {
        None
    };
    Ok(match (deflate, elf) {
        (Some((c, p)), _) if c < plain_cost.min(whole_cost) => p,
        (_, Some((c, e))) if c < plain_cost.min(whole_cost) => Prepared::Elf(Box::new(e)),
        _ if plain_cost < whole_cost => Prepared::Patch(header, bheader.size, patch),
        _ => Prepared::Whole,
    })
}

/// A deflate patch from `old` to `new` when both are one deflate stream in a gzip or
/// zlib framing (their headers say so; `redeflate::make` checks the rest, and runs the
/// device's reconstruction), else `None`. Its base index is 0 until written.
fn deflate_patch(
    old: &[u8],
    new: &[u8],
    header: &FileHeader,
) -> Option<(format::ops::DeflateHead, Vec<u8>)> {
    if redeflate::framing(old).is_none() || redeflate::framing(new).is_none() {
        return None;
    }
    redeflate::make(old, new, header.clone(), 0).ok()
}

/// Diffs the batch's files that have bases, on every core; `None` for the others.
pub(super) fn prepare_batch(
    repo: &Repo,
    jobs: &[Job],
    window: u64,
    kinds: Kinds,
) -> Result<Vec<Option<Prepared>>> {
    let slots: Vec<Mutex<Option<Result<Prepared>>>> =
        jobs.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    if let Job::File {
                        id,
                        base: Some((base, _)),
                    } = job
                    {
                        let r = prepare(repo, id, base, window, kinds);
                        if let Ok(mut slot) = slots[i].lock() {
                            *slot = Some(r);
                        }
                    }
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|m| {
            m.into_inner()
                .map_err(|_| anyhow::anyhow!("a diff thread panicked"))?
                .transpose()
        })
        .collect()
}
