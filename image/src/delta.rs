//! `berth-image delta`: an update file from one commit to another (or from nothing).
//!
//! The update carries every object the target needs that the source commit does not
//! have, in a fixed order (depth first, files before the tree that names them), cut
//! into zstd-compressed parts of about `--part-size` bytes each, and a signed superblock
//! that names the parts by sha256 (see `docs/FORMAT.md`, "Update files"). Objects are
//! streamed through the compressor, so memory stays bounded whatever their size.
//!
//! A regular file that changed at the same path is sent as a bidiff patch (bsdiff-style)
//! against the old version, which the device already has, when the patch is smaller than
//! the file (both at most [`PATCH_MAX`] bytes; larger files travel whole). The device
//! applies patches streaming, reading the base from its store.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use format::sig::Signatures;
use format::update::{self, Body, PartInfo, op};
use format::{EntryKind, ObjectId};
use store::Repo;

use crate::keys;

/// Largest base or target file made into a patch: bidiff holds both in memory (on the
/// build host only; the device streams).
pub const PATCH_MAX: u64 = 64 << 20;

/// Inputs of `delta`.
#[derive(Debug)]
pub struct DeltaArgs {
    pub repo: PathBuf,
    pub from: Option<String>,
    pub to: String,
    pub key: PathBuf,
    pub output: PathBuf,
    pub part_size: u64,
    pub level: i32,
    /// Write a directory (superblock and one file per part) instead of one file.
    pub split: bool,
}

/// What `delta` wrote.
#[derive(Debug, serde::Serialize)]
pub struct DeltaOutput {
    pub output: PathBuf,
    pub from: Option<String>,
    pub to: String,
    pub objects: u64,
    /// Of those, sent as patches against the device's version.
    pub patched: u64,
    pub parts: usize,
    pub uncompressed: u64,
    pub bytes: u64,
}

/// Streams ops into zstd-compressed part files.
struct Parts<'a> {
    dir: &'a Path,
    level: i32,
    part_size: u64,
    current: Option<(zstd::Encoder<'static, BufWriter<File>>, u64)>,
    done: Vec<(PathBuf, u64)>,
}

impl Parts<'_> {
    fn writer(&mut self) -> Result<&mut zstd::Encoder<'static, BufWriter<File>>> {
        if self.current.is_none() {
            let path = self.dir.join(format!(
                "part-{}",
                self.done.len() + usize::from(self.current.is_some())
            ));
            let f = File::create(&path).with_context(|| format!("{}: create", path.display()))?;
            self.current = Some((zstd::Encoder::new(BufWriter::new(f), self.level)?, 0));
        }
        // Just made sure it is Some.
        Ok(&mut self.current.as_mut().context("part writer")?.0)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.writer()?.write_all(bytes)?;
        if let Some((_, n)) = &mut self.current {
            *n += bytes.len() as u64;
        }
        Ok(())
    }

    /// Ends the current part if it is big enough (called between objects only).
    fn maybe_cut(&mut self) -> Result<()> {
        if self
            .current
            .as_ref()
            .is_some_and(|(_, n)| *n >= self.part_size)
        {
            self.cut()?;
        }
        Ok(())
    }

    fn cut(&mut self) -> Result<()> {
        if let Some((enc, n)) = self.current.take() {
            enc.finish()?.flush()?;
            self.done
                .push((self.dir.join(format!("part-{}", self.done.len())), n));
        }
        Ok(())
    }
}

fn closure(repo: &Repo, root: &ObjectId, out: &mut HashSet<ObjectId>) -> Result<()> {
    if !out.insert(*root) {
        return Ok(());
    }
    for e in repo.read_tree(root)?.entries() {
        match e.kind {
            EntryKind::Tree => closure(repo, &e.id, out)?,
            EntryKind::File => {
                out.insert(e.id);
            }
        }
    }
    Ok(())
}

/// Counts of what went into the update.
#[derive(Debug, Default)]
struct Emitted {
    objects: u64,
    patched: u64,
}

/// The entry named `name` in the base tree, if it has the given kind.
fn base_entry(
    base: Option<&format::Tree>,
    name: &format::EntryName,
    kind: EntryKind,
) -> Option<ObjectId> {
    base?
        .entries()
        .iter()
        .find(|b| &b.name == name && b.kind == kind)
        .map(|b| b.id)
}

/// Writes an object operation's head: op, id, header length, header.
fn op_head(
    parts: &mut Parts<'_>,
    op: u8,
    id: &ObjectId,
    header: &format::FileHeader,
) -> Result<()> {
    let h = header.encode();
    parts.write(&[op])?;
    parts.write(id.as_bytes())?;
    parts.write(
        &u32::try_from(h.len())
            .context("header too large")?
            .to_le_bytes(),
    )?;
    parts.write(&h)
}

/// A patch from `base` to `new` if the base is a regular file of at most [`PATCH_MAX`]
/// bytes and the patch compresses smaller than `new`.
fn patch_for(repo: &Repo, base: &ObjectId, new: &[u8]) -> Result<Option<Vec<u8>>> {
    let (bheader, mut bcontent) = repo.file_object(base)?;
    if bheader.kind != format::FileKind::Regular || bheader.size > PATCH_MAX {
        return Ok(None);
    }
    let mut old = Vec::new();
    bcontent.read_to_end(&mut old)?;
    let mut patch = Vec::new();
    bidiff::simple_diff(&old, new, &mut patch)?;
    // A raw patch is about as long as the file (its "add" block is the byte-wise
    // difference, mostly zeros); what it costs is its compressed size. Compare that with
    // the file's own compressed size, at a quick level.
    let cost = |b: &[u8]| zstd::bulk::compress(b, 3).map(|c| c.len());
    Ok((cost(&patch)? < cost(new)?).then_some(patch))
}

/// Writes a file object: as a patch against `base` when that pays, else whole (streamed).
/// Returns whether it was a patch.
fn write_file_op(
    repo: &Repo,
    id: &ObjectId,
    base: Option<ObjectId>,
    parts: &mut Parts<'_>,
) -> Result<bool> {
    let (header, mut content) = repo.file_object(id)?;
    if let Some(base) =
        base.filter(|_| header.kind == format::FileKind::Regular && header.size <= PATCH_MAX)
    {
        let mut new = Vec::new();
        content.read_to_end(&mut new)?;
        if let Some(patch) = patch_for(repo, &base, &new)? {
            op_head(parts, op::FILE_PATCH, id, &header)?;
            parts.write(base.as_bytes())?;
            parts.write(&(patch.len() as u64).to_le_bytes())?;
            parts.write(&patch)?;
            return Ok(true);
        }
        op_head(parts, op::FILE, id, &header)?;
        parts.write(&new)?;
        return Ok(false);
    }
    op_head(parts, op::FILE, id, &header)?;
    let mut buf = vec![0u8; 1 << 16];
    let mut left = header.size;
    while left > 0 {
        let k = content.read(&mut buf[..usize::try_from(left.min(1 << 16)).unwrap_or(1 << 16)])?;
        if k == 0 {
            bail!("object {id}: shorter than its header says");
        }
        parts.write(&buf[..k])?;
        left -= k as u64;
    }
    Ok(false)
}

/// Emits what `tree` needs that the device lacks, depth first; `base` is the tree at
/// the same path in the device's commit, where patch bases come from.
fn emit(
    repo: &Repo,
    tree: &ObjectId,
    base: Option<&ObjectId>,
    have: &mut HashSet<ObjectId>,
    parts: &mut Parts<'_>,
    n: &mut Emitted,
) -> Result<()> {
    if have.contains(tree) {
        return Ok(());
    }
    let t = repo.read_tree(tree)?;
    let base_tree = base.map(|b| repo.read_tree(b)).transpose()?;
    for e in t.entries() {
        match e.kind {
            EntryKind::Tree => {
                let b = base_entry(base_tree.as_ref(), &e.name, EntryKind::Tree);
                emit(repo, &e.id, b.as_ref(), have, parts, n)?;
            }
            EntryKind::File if have.insert(e.id) => {
                let base = base_entry(base_tree.as_ref(), &e.name, EntryKind::File);
                if write_file_op(repo, &e.id, base, parts)? {
                    n.patched += 1;
                }
                n.objects += 1;
                parts.maybe_cut()?;
            }
            EntryKind::File => {}
        }
    }
    let bytes = t.encode();
    parts.write(&[op::TREE])?;
    parts.write(tree.as_bytes())?;
    parts.write(
        &u32::try_from(bytes.len())
            .context("tree too large")?
            .to_le_bytes(),
    )?;
    parts.write(&bytes)?;
    have.insert(*tree);
    n.objects += 1;
    parts.maybe_cut()
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

pub fn delta(args: &DeltaArgs) -> Result<DeltaOutput> {
    let key = keys::read_secret(&args.key)?;
    if args.part_size == 0 {
        bail!("--part-size must be at least 1 byte");
    }
    let repo = Repo::open(&args.repo)?;
    let to = repo.resolve_commit(&args.to)?;
    let from = args
        .from
        .as_deref()
        .map(|f| repo.resolve_commit(f))
        .transpose()?;
    let (target, commit_bytes) = repo.read_commit(&to)?;
    let mut have = HashSet::new();
    let mut base_root = None;
    if let Some(f) = &from {
        let (c, _) = repo.read_commit(f)?;
        closure(&repo, &c.root, &mut have)?;
        base_root = Some(c.root);
    }
    let parent = args
        .output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let work = tempfile::Builder::new()
        .prefix(".berth-delta-")
        .tempdir_in(parent)?;
    let mut parts = Parts {
        dir: work.path(),
        level: args.level,
        part_size: args.part_size,
        current: None,
        done: Vec::new(),
    };
    let mut emitted = Emitted::default();
    emit(
        &repo,
        &target.root,
        base_root.as_ref(),
        &mut have,
        &mut parts,
        &mut emitted,
    )?;
    parts.cut()?;

    let mut infos = Vec::new();
    let mut offset = 0u64;
    for (path, size) in &parts.done {
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
    let sigs = repo.read_signatures(&to)?;
    let body = Body {
        from,
        commit: commit_bytes,
        commit_signatures: if sigs.entries().is_empty() {
            Vec::new()
        } else {
            sigs.encode()
        },
        parts: infos,
    }
    .encode();
    let mut signatures = Signatures::new();
    signatures.sign(&body, &key).context("sign the update")?;
    let sig_bytes = signatures.encode();

    let mut head = update::encode_head(body.len());
    head.extend_from_slice(&body);
    head.extend_from_slice(&u32::try_from(sig_bytes.len())?.to_le_bytes());
    head.extend_from_slice(&sig_bytes);
    let bytes = write_output(&args.output, work.path(), &head, &parts.done, args.split)?;
    Ok(DeltaOutput {
        output: args.output.clone(),
        from: from.map(|f| f.to_string()),
        to: to.to_string(),
        objects: emitted.objects,
        patched: emitted.patched,
        parts: parts.done.len(),
        uncompressed: parts.done.iter().map(|p| p.1).sum(),
        bytes,
    })
}
