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
//! - Everything is compressed solid within a part, so patches of related files share a
//!   window.
//!
//! What keeps it bounded: files up to twice the window ([`WINDOW`] by default) are
//! diffed in memory in one piece; larger ones in windows of that many output bytes,
//! each against the base bytes around the same
//! relative position, their patches staged on disk. Patches are computed on every core,
//! a batch at a time, while another thread compresses what is ready.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use format::ops::{self, ObjRef, PatchHead, TreeOp};
use format::sig::Signatures;
use format::update::{self, Body, PartInfo};
use format::{EntryKind, FileHeader, FileKind, ObjectId, Tree, TreeEntry};
use store::{FileContent, Repo};

use crate::keys::SigningKeys;

/// Output bytes per window (the default of `--window`). A file (new or base) up to twice
/// this is diffed in one piece; a larger one in windows, each against the base bytes at
/// the same relative position with half a window of margin on each side, so diffing
/// holds at most two windows of base and one of output (the suffix array is ~8x that).
pub const WINDOW: u64 = 16 << 20;
/// Bytes of new files diffed in parallel before their operations are written.
const BATCH_BYTES: u64 = 64 << 20;

/// Inputs of `delta`.
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
    pub parts: usize,
    pub uncompressed: u64,
    pub bytes: u64,
}

/// What the compressing thread is sent.
enum Msg {
    Data(Vec<u8>),
    Cut,
}

/// The compressing thread: writes `part-N` files in `dir`; returns each with its
/// uncompressed size.
fn compress_parts(dir: &Path, level: i32, rx: &Receiver<Msg>) -> Result<Vec<(PathBuf, u64)>> {
    let mut done = Vec::new();
    let mut current: Option<(zstd::Encoder<'static, BufWriter<File>>, u64)> = None;
    let finish = |current: &mut Option<(zstd::Encoder<'static, BufWriter<File>>, u64)>,
                  done: &mut Vec<(PathBuf, u64)>|
     -> Result<()> {
        if let Some((enc, n)) = current.take() {
            enc.finish()?.flush()?;
            done.push((dir.join(format!("part-{}", done.len())), n));
        }
        Ok(())
    };
    for msg in rx {
        match msg {
            Msg::Data(bytes) => {
                if current.is_none() {
                    let path = dir.join(format!("part-{}", done.len()));
                    let f = File::create(&path)
                        .with_context(|| format!("{}: create", path.display()))?;
                    let mut enc = zstd::Encoder::new(BufWriter::new(f), level)?;
                    // The device's decoder holds one window, and refuses one over
                    // PART_WINDOW_MAX (8 MiB): that bounds its memory.
                    enc.window_log(format::update::PART_WINDOW_MAX.trailing_zeros())?;
                    current = Some((enc, 0));
                }
                if let Some((enc, n)) = &mut current {
                    enc.write_all(&bytes)?;
                    *n += bytes.len() as u64;
                }
            }
            Msg::Cut => finish(&mut current, &mut done)?,
        }
    }
    finish(&mut current, &mut done)?;
    Ok(done)
}

/// The operation stream, as the device will see it: where each object was made, so
/// that later trees can refer to it by position.
struct Out {
    tx: SyncSender<Msg>,
    part_size: u64,
    part_no: usize,
    part_bytes: u64,
    /// Bytes of operations so far.
    total: u64,
    /// Objects made so far in the current part.
    made: u64,
    /// Where each object this update makes was made: (part, position from 1).
    at: HashMap<ObjectId, (usize, u64)>,
}

impl Out {
    fn send(&mut self, bytes: Vec<u8>) -> Result<()> {
        self.part_bytes += bytes.len() as u64;
        self.total += bytes.len() as u64;
        self.tx
            .send(Msg::Data(bytes))
            .map_err(|_| anyhow::anyhow!("the compressing thread stopped"))
    }

    fn op(&mut self, kind: u8, head: &[u8], payload: &[u8]) -> Result<()> {
        let mut b = Vec::with_capacity(5 + head.len() + payload.len());
        b.push(kind);
        b.extend_from_slice(
            &u32::try_from(head.len())
                .ok()
                .filter(|&n| n as usize <= ops::HEAD_MAX)
                .context("operation head too large")?
                .to_le_bytes(),
        );
        b.extend_from_slice(head);
        b.extend_from_slice(payload);
        self.send(b)
    }

    /// Records that the operation just written made `id`, and ends the part if it is
    /// big enough (parts end between operations only).
    fn made(&mut self, id: ObjectId) -> Result<()> {
        self.made += 1;
        self.at.insert(id, (self.part_no, self.made));
        if self.part_bytes >= self.part_size {
            self.tx
                .send(Msg::Cut)
                .map_err(|_| anyhow::anyhow!("the compressing thread stopped"))?;
            self.part_no += 1;
            self.part_bytes = 0;
            self.made = 0;
        }
        Ok(())
    }

    /// How the device can name `id` here.
    fn refer(&self, id: &ObjectId, base_index: &HashMap<ObjectId, u64>) -> ObjRef {
        match self.at.get(id) {
            Some(&(part, pos)) if part == self.part_no => ObjRef::Local(self.made - pos + 1),
            _ => base_index
                .get(id)
                .map_or(ObjRef::Id(*id), |&i| ObjRef::Base(i)),
        }
    }
}

/// One object to send, in order.
enum Job {
    File {
        id: ObjectId,
        /// A regular file the device has to patch from, and whether it is at the same
        /// path.
        base: Option<(ObjectId, bool)>,
    },
    /// A tree, read once while planning, and the base tree it is an edit of.
    Tree {
        id: ObjectId,
        tree: Tree,
        base: Option<(ObjectId, Tree)>,
    },
}

/// How alike two names are, in thousandths: the length of their common prefix and
/// suffix over the longer name's length (1000 for equal names).
fn likeness(a: &[u8], b: &[u8]) -> usize {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let rest = a.len().min(b.len()) - prefix;
    let suffix = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take(rest)
        .take_while(|(x, y)| x == y)
        .count();
    (prefix + suffix) * 1000 / a.len().max(b.len()).max(1)
}

/// Names at least this alike (and with no entry of their own in the new tree) are taken
/// for a renamed entry.
const LIKENESS_MIN: usize = 600;

/// Decides what to send and against which bases.
struct Planner<'a> {
    repo: &'a Repo,
    /// Base commit's files by name, for moves across directories.
    by_name: HashMap<Vec<u8>, ObjectId>,
    have: HashSet<ObjectId>,
    jobs: Vec<Job>,
}

impl Planner<'_> {
    /// The base entry for `e`: same name, else the most alike name of the same kind
    /// that the new tree no longer has.
    fn base_for(new: &Tree, base: Option<&Tree>, e: &TreeEntry) -> Option<(ObjectId, bool)> {
        let base = base?;
        if let Some(b) = base
            .entries()
            .binary_search_by(|b| b.name.cmp(&e.name))
            .ok()
            .map(|i| &base.entries()[i])
        {
            return (b.kind == e.kind).then_some((b.id, true));
        }
        base.entries()
            .iter()
            .filter(|b| b.kind == e.kind)
            .filter(|b| {
                new.entries()
                    .binary_search_by(|n| n.name.cmp(&b.name))
                    .is_err()
            })
            .map(|b| (likeness(b.name.as_bytes(), e.name.as_bytes()), b))
            .filter(|(l, _)| *l >= LIKENESS_MIN)
            .max_by_key(|x| x.0)
            .map(|(_, b)| (b.id, false))
    }

    fn plan(&mut self, tree: &ObjectId, base: Option<ObjectId>) -> Result<()> {
        if self.have.contains(tree) {
            return Ok(());
        }
        let t = self.repo.read_tree(tree)?;
        let bt = base
            .map(|b| self.repo.read_tree(&b).map(|t| (b, t)))
            .transpose()?;
        for e in t.entries() {
            match e.kind {
                EntryKind::Tree => {
                    let b = Self::base_for(&t, bt.as_ref().map(|b| &b.1), e).map(|(id, _)| id);
                    self.plan(&e.id, b)?;
                }
                EntryKind::File if self.have.insert(e.id) => {
                    let base = Self::base_for(&t, bt.as_ref().map(|b| &b.1), e)
                        .or_else(|| self.by_name.get(e.name.as_bytes()).map(|&id| (id, false)));
                    self.jobs.push(Job::File { id: e.id, base });
                }
                EntryKind::File => {}
            }
        }
        self.jobs.push(Job::Tree {
            id: *tree,
            tree: t,
            base: bt,
        });
        self.have.insert(*tree);
        Ok(())
    }
}

/// A regular file's header and content, or `None` for other kinds.
fn regular(repo: &Repo, id: &ObjectId) -> Result<Option<(FileHeader, File)>> {
    Ok(match repo.file_object(id)? {
        (h, FileContent::File(f)) if h.kind == FileKind::Regular => Some((h, f)),
        _ => None,
    })
}

/// What to send for a file that has a base, worked out off the writing thread.
enum Prepared {
    /// One-window patch over the base's whole content: the new file's header, the
    /// base's size, the patch.
    Patch(FileHeader, u64, Vec<u8>),
    /// Too big for one window: done while writing, window by window.
    Windowed,
    /// The patch does not pay: send the file whole.
    Whole,
}

fn prepare(repo: &Repo, id: &ObjectId, base: &ObjectId, window: u64) -> Result<Prepared> {
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
    Ok(if cost(&patch)? < cost(&new)? {
        Prepared::Patch(header, bheader.size, patch)
    } else {
        Prepared::Whole
    })
}

/// Diffs the batch's files that have bases, on every core; `None` for the others.
fn prepare_batch(repo: &Repo, jobs: &[Job], window: u64) -> Result<Vec<Option<Prepared>>> {
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
                        let r = prepare(repo, id, base, window);
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

/// Streams a file whole.
fn send_whole(repo: &Repo, id: &ObjectId, out: &mut Out) -> Result<()> {
    let (header, mut content) = repo.file_object(id)?;
    out.op(ops::FILE, &header.encode(), &[])?;
    let mut left = header.size;
    while left > 0 {
        let mut buf = vec![0u8; usize::try_from(left.min(1 << 20)).unwrap_or(1 << 20)];
        content
            .read_exact(&mut buf)
            .with_context(|| format!("object {id}: shorter than its header says"))?;
        left -= buf.len() as u64;
        out.send(buf)?;
    }
    Ok(())
}

/// Sends a large file as a patch of windows, each diffed against the base bytes around
/// the same relative position; the patches are staged in `stage` so memory stays at
/// one window.
fn send_windowed(
    repo: &Repo,
    id: &ObjectId,
    base: &ObjectId,
    base_index: u64,
    window: u64,
    stage: &Path,
    out: &mut Out,
) -> Result<()> {
    let (Some((header, f)), Some((bheader, bf))) = (regular(repo, id)?, regular(repo, base)?)
    else {
        return send_whole(repo, id, out);
    };
    let (n, b) = (header.size, bheader.size);
    let mut staged = File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(stage)?;
    let mut windows = Vec::new();
    let mut start = 0u64;
    let margin = window / 2;
    while start < n {
        let out_len = window.min(n - start);
        let center = u64::try_from(u128::from(start) * u128::from(b) / u128::from(n))?;
        let base_start = center.saturating_sub(margin);
        let base_end = b.min(center + out_len + margin);
        let base_len = base_end - base_start;
        let mut new = vec![0u8; usize::try_from(out_len)?];
        let mut old = vec![0u8; usize::try_from(base_len)?];
        f.read_exact_at(&mut new, start)?;
        bf.read_exact_at(&mut old, base_start)?;
        let mut patch = Vec::new();
        bidiff::simple_diff(&old, &new, &mut patch)?;
        staged.write_all(&patch)?;
        windows.push(ops::Window {
            base_start,
            base_len,
            out_len,
            patch_len: patch.len() as u64,
        });
        start += out_len;
    }
    let head = PatchHead {
        header,
        base: base_index,
        windows,
    };
    out.op(ops::FILE_PATCH, &head.encode(), &[])?;
    staged.rewind()?;
    loop {
        let mut buf = vec![0u8; 1 << 20];
        let k = staged.read(&mut buf)?;
        if k == 0 {
            break;
        }
        buf.truncate(k);
        out.send(buf)?;
    }
    Ok(())
}

/// Progress on a terminal: at most ten lines a second, overwritten in place.
struct Meter {
    on: bool,
    total: usize,
    last: Instant,
}

impl Meter {
    fn tick(&mut self, done: usize, bytes: u64) {
        if self.on && (self.last.elapsed() > Duration::from_millis(100) || done == self.total) {
            self.last = Instant::now();
            eprint!(
                "\rdelta: {done}/{} objects, {} MiB of operations",
                self.total,
                bytes >> 20
            );
            if done == self.total {
                eprintln!();
            }
        }
    }
}

/// Counts of what went into the update.
#[derive(Debug, Default)]
struct Emitted {
    patched: u64,
    patched_elsewhere: u64,
}

/// Writes every job's operation, in order.
fn write_jobs(
    repo: &Repo,
    jobs: &[Job],
    base_index: &HashMap<ObjectId, u64>,
    work: &Path,
    window: u64,
    out: &mut Out,
    meter: &mut Meter,
) -> Result<Emitted> {
    let mut n = Emitted::default();
    let mut at = 0;
    while at < jobs.len() {
        // A batch: jobs until BATCH_BYTES of files with bases (or 1024 jobs).
        let mut end = at;
        let mut bytes = 0u64;
        while end < jobs.len() && bytes < BATCH_BYTES && end - at < 1024 {
            if let Job::File { id, base: Some(_) } = &jobs[end] {
                bytes += repo.file_object(id)?.0.size;
            }
            end += 1;
        }
        let prepared = prepare_batch(repo, &jobs[at..end], window)?;
        for (job, prep) in jobs[at..end].iter().zip(prepared) {
            match (job, prep) {
                (
                    Job::File {
                        id,
                        base: Some((base, same_path)),
                    },
                    Some(p @ (Prepared::Patch(..) | Prepared::Windowed)),
                ) => {
                    let index = *base_index
                        .get(base)
                        .context("a patch base outside the base commit")?;
                    if let Prepared::Patch(header, base_len, patch) = p {
                        let head = PatchHead {
                            windows: vec![ops::Window {
                                base_start: 0,
                                base_len,
                                out_len: header.size,
                                patch_len: patch.len() as u64,
                            }],
                            header,
                            base: index,
                        };
                        out.op(ops::FILE_PATCH, &head.encode(), &patch)?;
                    } else {
                        send_windowed(repo, id, base, index, window, &work.join("window"), out)?;
                    }
                    n.patched += 1;
                    n.patched_elsewhere += u64::from(!same_path);
                    out.made(*id)?;
                }
                (Job::File { id, .. }, _) => {
                    send_whole(repo, id, out)?;
                    out.made(*id)?;
                }
                (Job::Tree { id, tree, base }, _) => {
                    let base = base
                        .as_ref()
                        .map(|(b, t)| {
                            let i = base_index
                                .get(b)
                                .context("a base tree outside the base commit")?;
                            anyhow::Ok((*i, t))
                        })
                        .transpose()?;
                    let op = TreeOp::diff(base, tree, |e| out.refer(&e.id, base_index));
                    out.op(ops::TREE, &op.encode(), &[])?;
                    out.made(*id)?;
                }
            }
        }
        at = end;
        meter.tick(at, out.total);
    }
    Ok(n)
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
    let mut base_index = HashMap::new();
    let mut by_name = HashMap::new();
    let mut base_root = None;
    if let Some(f) = &from {
        let (c, _) = repo.read_commit(f)?;
        let mut order = Vec::new();
        // One walk: the base indices, and every file's name as its tree goes by.
        let mut read_tree = |id: &ObjectId| {
            let t = repo.read_tree(id)?;
            for e in t.entries().iter().filter(|e| e.kind == EntryKind::File) {
                by_name.entry(e.name.as_bytes().to_vec()).or_insert(e.id);
            }
            anyhow::Ok(t)
        };
        ops::base_order(&c.root, &mut read_tree, &mut order)?;
        for (i, (id, _)) in order.iter().enumerate() {
            base_index.entry(*id).or_insert(i as u64);
        }
        base_root = Some(c.root);
    }
    let mut planner = Planner {
        repo: &repo,
        by_name,
        have: base_index.keys().copied().collect(),
        jobs: Vec::new(),
    };
    planner.plan(&target.root, base_root)?;
    let jobs = planner.jobs;

    let parent = args
        .output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let work = tempfile::Builder::new()
        .prefix(".berth-delta-")
        .tempdir_in(parent)?;
    let (tx, rx) = sync_channel(64);
    let mut out = Out {
        tx,
        part_size: args.part_size,
        part_no: 0,
        part_bytes: 0,
        total: 0,
        made: 0,
        at: HashMap::new(),
    };
    let mut meter = Meter {
        on: args.progress,
        total: jobs.len(),
        last: Instant::now(),
    };
    let (emitted, done) = std::thread::scope(|s| {
        let dir = work.path();
        let level = args.level;
        let writer = s.spawn(move || compress_parts(dir, level, &rx));
        let emitted = write_jobs(
            &repo,
            &jobs,
            &base_index,
            work.path(),
            args.window,
            &mut out,
            &mut meter,
        );
        drop(out);
        let done = writer
            .join()
            .map_err(|_| anyhow::anyhow!("the compressing thread panicked"))?;
        anyhow::Ok((emitted?, done?))
    })?;

    let head = superblock(&repo, from, &to, commit_bytes, &done, args.keys.keys())?;
    let bytes = write_output(&args.output, work.path(), &head, &done, args.split)?;
    Ok(DeltaOutput {
        output: args.output.clone(),
        from: from.map(|f| f.to_string()),
        to: to.to_string(),
        objects: jobs.len() as u64,
        patched: emitted.patched,
        patched_elsewhere: emitted.patched_elsewhere,
        parts: done.len(),
        uncompressed: done.iter().map(|p| p.1).sum(),
        bytes,
    })
}

/// The head, signed body and signatures of an update whose parts are `done`.
fn superblock(
    repo: &Repo,
    from: Option<ObjectId>,
    to: &ObjectId,
    commit_bytes: Vec<u8>,
    done: &[(PathBuf, u64)],
    key: &[ed25519_dalek::SigningKey],
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
    }
    .encode();
    let mut signatures = Signatures::new();
    for k in key {
        signatures.sign(&body, k).context("sign the update")?;
    }
    Ok(update::encode_envelope(&body, &signatures.encode()))
}
