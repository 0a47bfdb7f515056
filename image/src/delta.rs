//! `berth-image delta`: an update file from one commit to another (or from nothing).
//!
//! The update carries every object the target needs that the source commit does not
//! have, in a fixed order (depth first, files before the tree that names them), cut
//! into zstd-compressed parts of about `--part-size` bytes each, and a signed superblock
//! that names the parts by sha256 (see `docs/FORMAT.md`, "Update files"). Objects are
//! streamed through the compressor, so memory stays bounded whatever their size.
//!
//! Not yet: objects encoded as binary deltas against an object the device already has;
//! a changed file is sent whole (compressed).

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
}

/// What `delta` wrote.
#[derive(Debug, serde::Serialize)]
pub struct DeltaOutput {
    pub output: PathBuf,
    pub from: Option<String>,
    pub to: String,
    pub objects: u64,
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

fn emit(
    repo: &Repo,
    tree: &ObjectId,
    have: &mut HashSet<ObjectId>,
    parts: &mut Parts<'_>,
    objects: &mut u64,
) -> Result<()> {
    if have.contains(tree) {
        return Ok(());
    }
    let t = repo.read_tree(tree)?;
    for e in t.entries() {
        match e.kind {
            EntryKind::Tree => emit(repo, &e.id, have, parts, objects)?,
            EntryKind::File if have.insert(e.id) => {
                let (header, mut content) = repo.file_object(&e.id)?;
                let h = header.encode();
                parts.write(&[op::FILE])?;
                parts.write(e.id.as_bytes())?;
                parts.write(
                    &u32::try_from(h.len())
                        .context("header too large")?
                        .to_le_bytes(),
                )?;
                parts.write(&h)?;
                let mut buf = vec![0u8; 1 << 16];
                let mut left = header.size;
                while left > 0 {
                    let n = content
                        .read(&mut buf[..usize::try_from(left.min(1 << 16)).unwrap_or(1 << 16)])?;
                    if n == 0 {
                        bail!("object {}: shorter than its header says", e.id);
                    }
                    parts.write(&buf[..n])?;
                    left -= n as u64;
                }
                *objects += 1;
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
    *objects += 1;
    parts.maybe_cut()
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
    if let Some(f) = &from {
        let (c, _) = repo.read_commit(f)?;
        closure(&repo, &c.root, &mut have)?;
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
    let mut objects = 0;
    emit(&repo, &target.root, &mut have, &mut parts, &mut objects)?;
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

    let tmp = work.path().join("update");
    let mut out = BufWriter::new(File::create(&tmp)?);
    out.write_all(&update::encode_head(body.len()))?;
    out.write_all(&body)?;
    out.write_all(&u32::try_from(sig_bytes.len())?.to_le_bytes())?;
    out.write_all(&sig_bytes)?;
    for (path, _) in &parts.done {
        std::io::copy(&mut File::open(path)?, &mut out)?;
    }
    let mut f = out
        .into_inner()
        .map_err(std::io::IntoInnerError::into_error)?;
    f.sync_all()?;
    let bytes = f.stream_position()?;
    std::fs::rename(&tmp, &args.output)
        .with_context(|| format!("{}: write", args.output.display()))?;
    Ok(DeltaOutput {
        output: args.output.clone(),
        from: from.map(|f| f.to_string()),
        to: to.to_string(),
        objects,
        parts: parts.done.len(),
        uncompressed: parts.done.iter().map(|p| p.1).sum(),
        bytes,
    })
}
