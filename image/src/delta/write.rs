//! Writing the planned objects as operations (`format::ops`) into zstd-compressed parts:
//! this thread writes the operations in order, diffing a batch at a time on every core,
//! while another compresses what is ready and cuts parts between operations once they
//! reach the part size.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use format::ObjectId;
use format::ops::{self, ObjRef, PatchHead, TreeOp};
use store::Repo;

use super::diff::{Prepared, prepare_batch, regular};
use super::plan::{Job, Plan};

/// How the parts are cut and compressed.
pub(super) struct Settings {
    /// Uncompressed bytes per part (parts end between operations only).
    pub part_size: u64,
    /// zstd level.
    pub level: i32,
    /// Output bytes per patch window.
    pub window: u64,
    /// Show progress on stderr.
    pub progress: bool,
    /// Which kinds of patch besides the plain one (deflate, ELF) may be sent.
    pub kinds: super::diff::Kinds,
    /// Also compress each kind of file's operations on their own, for [`ByKind`].
    pub by_kind: bool,
}

/// The kinds of object an update's bytes are counted by.
pub(super) const KINDS: [&str; 4] = ["gzip", "elf", "other", "tree"];

/// One kind's share of an update: its objects, their operations' bytes, and those
/// operations compressed on their own (one zstd stream per kind, as in the parts).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct KindBytes {
    pub objects: u64,
    pub uncompressed: u64,
    pub compressed: u64,
}

/// Counts bytes written.
#[derive(Default)]
struct Count(u64);

impl Write for Count {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Per kind of object, its operations compressed on their own.
struct ByKind {
    current: usize,
    enc: Vec<zstd::Encoder<'static, Count>>,
    stats: Vec<KindBytes>,
}

impl ByKind {
    fn new(level: i32) -> Result<Self> {
        let enc = KINDS
            .iter()
            .map(|_| {
                let mut e = zstd::Encoder::new(Count::default(), level)?;
                e.window_log(format::update::PART_WINDOW_MAX.trailing_zeros())?;
                anyhow::Ok(e)
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            current: 0,
            enc,
            stats: vec![KindBytes::default(); KINDS.len()],
        })
    }

    fn finish(self) -> Result<Vec<(&'static str, KindBytes)>> {
        let mut out = Vec::new();
        for ((name, enc), mut st) in KINDS.iter().zip(self.enc).zip(self.stats) {
            st.compressed = enc.finish()?.0;
            out.push((*name, st));
        }
        Ok(out)
    }
}

/// The kind of a file object, by its first bytes.
fn file_kind(repo: &Repo, id: &ObjectId) -> Result<usize> {
    let (header, mut content) = repo.file_object(id)?;
    let mut magic = [0u8; 4];
    let n = usize::try_from(header.size.min(4))?;
    content.read_exact(&mut magic[..n])?;
    Ok(match magic {
        [0x1f, 0x8b, ..] => 0,
        [0x7f, b'E', b'L', b'F'] => 1,
        _ => 2,
    })
}

/// Counts of what went into the update.
#[derive(Debug, Default)]
pub(super) struct Emitted {
    pub patched: u64,
    pub patched_elsewhere: u64,
    pub deflated: u64,
    pub zip_patched: u64,
    pub elf_patched: u64,
    /// With `Settings::by_kind`: each kind's share.
    pub by_kind: Option<Vec<(&'static str, KindBytes)>>,
}

/// Writes every job of `plan` as operations into compressed parts `part-N` in `work`.
/// Returns the counts, and each part's path with its uncompressed size.
pub(super) fn parts(
    repo: &Repo,
    plan: &Plan,
    work: &Path,
    settings: &Settings,
) -> Result<(Emitted, Vec<(PathBuf, u64)>)> {
    let (tx, rx) = sync_channel(64);
    let mut out = Out {
        tx,
        part_size: settings.part_size,
        part_no: 0,
        part_bytes: 0,
        total: 0,
        made: 0,
        at: HashMap::new(),
        by_kind: if settings.by_kind {
            Some(ByKind::new(settings.level)?)
        } else {
            None
        },
    };
    let mut meter = Meter {
        on: settings.progress,
        total: plan.jobs.len(),
        last: Instant::now(),
    };
    std::thread::scope(|s| {
        let level = settings.level;
        let writer = s.spawn(move || compress_parts(work, level, &rx));
        let emitted = write_jobs(
            repo,
            &plan.jobs,
            &plan.base_index,
            work,
            settings,
            &mut out,
            &mut meter,
        );
        let by_kind = out.by_kind.take().map(ByKind::finish).transpose();
        drop(out);
        let done = writer
            .join()
            .map_err(|_| anyhow::anyhow!("the compressing thread panicked"))?;
        let mut emitted = emitted?;
        emitted.by_kind = by_kind?;
        anyhow::Ok((emitted, done?))
    })
}

/// Bytes of new files diffed in parallel before their operations are written.
const BATCH_BYTES: u64 = 64 << 20;

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
    by_kind: Option<ByKind>,
}

impl Out {
    fn send(&mut self, bytes: Vec<u8>) -> Result<()> {
        if let Some(k) = &mut self.by_kind {
            k.enc[k.current].write_all(&bytes)?;
            k.stats[k.current].uncompressed += bytes.len() as u64;
        }
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
    /// The kind of the object whose operation comes next (for the counts by kind).
    fn kind(&mut self, kind: impl FnOnce() -> Result<usize>) -> Result<()> {
        if let Some(k) = &mut self.by_kind {
            k.current = kind()?;
            k.stats[k.current].objects += 1;
        }
        Ok(())
    }

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

/// Writes every job's operation, in order.
fn write_jobs(
    repo: &Repo,
    jobs: &[Job],
    base_index: &HashMap<ObjectId, u64>,
    work: &Path,
    settings: &Settings,
    out: &mut Out,
    meter: &mut Meter,
) -> Result<Emitted> {
    let window = settings.window;
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
        let prepared = prepare_batch(repo, &jobs[at..end], window, settings.kinds)?;
        for (job, prep) in jobs[at..end].iter().zip(prepared) {
            match job {
                Job::File { id, .. } => out.kind(|| file_kind(repo, id))?,
                Job::Tree { .. } => out.kind(|| Ok(3))?,
            }
            match (job, prep) {
                (
                    Job::File {
                        id,
                        base: Some((base, same_path)),
                    },
                    Some(
                        p @ (Prepared::Patch(..)
                        | Prepared::Windowed
                        | Prepared::Deflate(..)
                        | Prepared::Zip(..)
                        | Prepared::Elf(..)),
                    ),
                ) => {
                    let index = *base_index
                        .get(base)
                        .context("a patch base outside the base commit")?;
                    if let Prepared::Deflate(mut head, payload) = p {
                        head.base = index;
                        out.op(ops::DEFLATE_PATCH, &head.encode(), &payload)?;
                        n.deflated += 1;
                    } else if let Prepared::Zip(mut head, payload) = p {
                        head.base = index;
                        out.op(ops::ZIP_PATCH, &head.encode(), &payload)?;
                        n.zip_patched += 1;
                    } else if let Prepared::Elf(e) = p {
                        out.op(ops::ELF_PATCH, &e.head(index).encode(), &e.patch)?;
                        n.elf_patched += 1;
                    } else if let Prepared::Patch(header, base_len, patch) = p {
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
