//! `berth-image flash IMAGE TARGET`: writes a disk image to a block device (a USB stick,
//! an SD card) or a file, using the image's bmap, and checks what it wrote.
//!
//! 1. The bmap (`IMAGE.bmap`, or `--bmap FILE`) is read and checked ([`crate::bmap`]); it
//!    must be for an image of IMAGE's size. Without one, flash refuses unless `--no-bmap`
//!    (then every block is written).
//! 2. TARGET is looked at before anything is written: a block device that is mounted,
//!    swap or held by device-mapper/md (it or any partition on it) is refused, even with
//!    `--force`; a fixed disk (including a loop device, [`crate::device`]) is refused
//!    without `--force`; a device smaller than the image is refused with both sizes; the
//!    image itself is refused as a target.
//! 3. Every mapped range of IMAGE is read and its sha256 compared with the bmap's, so a
//!    damaged image is refused before TARGET is opened for writing (a file target is
//!    then not even created or truncated).
//! 4. The ranges are written (a block device opened `O_EXCL`, which the kernel refuses
//!    while anything holds it; a file truncated to the image's size first, so the holes
//!    stay holes), hashing them again as they are read, then TARGET is fsynced.
//! 5. Every range is read back from TARGET and hashed: with `O_DIRECT` from a block
//!    device, so the page cache cannot answer for the device, and from a file after
//!    `posix_fadvise(DONTNEED)` dropped its cached pages.
//!
//! Blocks outside the bmap are not written: on a device they keep what they held, as
//! with `bmaptool copy`. Progress goes to stderr; the result is one line (or JSON).

use std::fs::{File, OpenOptions};
use std::io::IsTerminal;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::bmap::{self, Bmap, CHUNK};
use crate::device::{self, BlockDevice, Host, Removable};

/// Inputs of `flash`.
#[derive(Debug)]
pub struct FlashArgs {
    pub image: PathBuf,
    pub target: PathBuf,
    /// The bmap (default `IMAGE.bmap`).
    pub bmap: Option<PathBuf>,
    /// Write every block, with no bmap.
    pub no_bmap: bool,
    /// Write a fixed (non-removable) disk.
    pub force: bool,
}

/// What `flash` did.
#[derive(Debug, serde::Serialize)]
pub struct FlashOutput {
    pub image: PathBuf,
    pub target: PathBuf,
    /// "file" or "block device".
    pub target_kind: &'static str,
    /// The block device's kernel name (`sdb`, `mmcblk0`, `loop3`).
    pub device: Option<String>,
    pub bmap: Option<PathBuf>,
    pub image_size: u64,
    pub bytes_written: u64,
    pub ranges: usize,
    pub write_seconds: f64,
    pub verify_seconds: f64,
}

/// One run of blocks to write, in bytes, and its sha256 if the bmap gave one.
#[derive(Debug, Clone, Copy)]
struct Span {
    first: u64,
    last: u64,
    start: u64,
    len: u64,
    sha256: Option<[u8; 32]>,
}

/// Blocks per span when there is no bmap: small enough that a read-back mismatch names
/// a useful place.
const NO_BMAP_SPAN_BLOCKS: u64 = 256;

/// Alignment of `O_DIRECT` reads (offsets, lengths and the buffer): 4096 covers every
/// logical block size in use.
const DIRECT_ALIGN: usize = 4096;

#[derive(Debug)]
enum Target {
    File,
    Block(BlockDevice),
}

pub fn flash(args: &FlashArgs, host: &Host) -> Result<FlashOutput> {
    let img_name = args.image.display().to_string();
    let tgt_name = args.target.display().to_string();
    let image = File::open(&args.image).with_context(|| format!("{img_name}: open"))?;
    let meta = image
        .metadata()
        .with_context(|| format!("{img_name}: stat"))?;
    if !meta.is_file() {
        bail!("{img_name}: not a regular file");
    }
    let size = meta.len();
    if size == 0 {
        bail!("{img_name}: empty");
    }
    let (spans, bmap_path) = plan(args, size)?;
    let target = check_target(args, &meta, host, size)?;
    let total: u64 = spans.iter().map(|s| s.len).sum();

    // 3. The image against its bmap, before anything is written.
    if bmap_path.is_some() {
        check_image(&image, &spans, &img_name, &tgt_name)?;
    }

    // 4. Write.
    let started = Instant::now();
    let out = open_for_writing(&args.target, &target, size)?;
    let mut written = Vec::with_capacity(spans.len());
    let mut p = Progress::new("writing", total);
    let mut buf = vec![0u8; CHUNK];
    for s in &spans {
        let mut h = Sha256::new();
        let mut done = 0;
        while done < s.len {
            let n = usize::try_from(s.len - done).unwrap_or(CHUNK).min(CHUNK);
            let chunk = &mut buf[..n];
            let at = s.start + done;
            image
                .read_exact_at(chunk, at)
                .with_context(|| format!("{img_name}: read at {at}"))?;
            h.update(&*chunk);
            out.write_all_at(chunk, at)
                .with_context(|| format!("{tgt_name}: write at {at}"))?;
            done += n as u64;
            p.add(n as u64);
        }
        let got: [u8; 32] = h.finalize().into();
        if s.sha256.is_some_and(|want| want != got) {
            bail!(
                "{img_name}: blocks {}-{} changed while being written (their sha256 no longer matches the bmap); {tgt_name} is incomplete",
                s.first,
                s.last
            );
        }
        written.push(got);
    }
    p.finish();
    // Durable before the read-back, which must see the device, not what is queued.
    out.sync_all()
        .with_context(|| format!("{tgt_name}: fsync"))?;
    drop(out);
    let write_seconds = started.elapsed().as_secs_f64();

    // 5. Read back.
    let started = Instant::now();
    // O_DIRECT wants aligned offsets: true of 4096-byte bmaps (Berth's), not
    // necessarily of another tool's 512-byte ones, which are read through the cache
    // after dropping it.
    let aligned = spans.iter().all(|s| s.start % DIRECT_ALIGN as u64 == 0);
    let back = open_for_reading(&args.target, &target, size, aligned)?;
    read_back(&back.0, back.1, &spans, &written, &tgt_name)?;
    Ok(FlashOutput {
        image: args.image.clone(),
        target: args.target.clone(),
        target_kind: match target {
            Target::File => "file",
            Target::Block(_) => "block device",
        },
        device: match target {
            Target::File => None,
            Target::Block(b) => Some(b.name),
        },
        bmap: bmap_path,
        image_size: size,
        bytes_written: total,
        ranges: spans.len(),
        write_seconds,
        verify_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Every span of the image against its sha256 in the bmap.
fn check_image(image: &File, spans: &[Span], img_name: &str, tgt_name: &str) -> Result<()> {
    let total = spans.iter().map(|s| s.len).sum();
    let mut p = Progress::new("checking the image", total);
    let mut buf = vec![0u8; CHUNK];
    for s in spans {
        let got = hash_spans(image, s, &mut buf, &mut p)
            .with_context(|| format!("{img_name}: read blocks {}-{}", s.first, s.last))?;
        if Some(got) != s.sha256 {
            bail!(
                "{img_name}: blocks {}-{} do not match the bmap's sha256 (a damaged image, or not the one the bmap was made for); nothing was written to {tgt_name}",
                s.first,
                s.last
            );
        }
    }
    p.finish();
    Ok(())
}

/// Every span of the target against the sha256 of what was written there.
fn read_back(
    target: &File,
    direct: bool,
    spans: &[Span],
    written: &[[u8; 32]],
    tgt_name: &str,
) -> Result<()> {
    let total = spans.iter().map(|s| s.len).sum();
    let mut p = Progress::new("reading back", total);
    let mut reader = Reader::new(direct);
    for (s, want) in spans.iter().zip(written) {
        let got = reader
            .hash(target, s, &mut p)
            .with_context(|| format!("{tgt_name}: read back blocks {}-{}", s.first, s.last))?;
        if got != *want {
            bail!(
                "{tgt_name}: blocks {}-{} read back differ from what was written (a failing card or device, or one that is smaller than it says)",
                s.first,
                s.last
            );
        }
    }
    p.finish();
    Ok(())
}

/// The spans to write: the bmap's ranges, or (with `--no-bmap`) the whole image.
fn plan(args: &FlashArgs, size: u64) -> Result<(Vec<Span>, Option<PathBuf>)> {
    if args.no_bmap {
        let block = bmap::BLOCK_SIZE;
        let blocks = size.div_ceil(block);
        let spans = (0..blocks)
            .step_by(usize::try_from(NO_BMAP_SPAN_BLOCKS).unwrap_or(1))
            .map(|first| {
                let last = (first + NO_BMAP_SPAN_BLOCKS - 1).min(blocks - 1);
                let start = first * block;
                let end = ((last + 1) * block).min(size);
                Span {
                    first,
                    last,
                    start,
                    len: end - start,
                    sha256: None,
                }
            })
            .collect();
        return Ok((spans, None));
    }
    let path = args
        .bmap
        .clone()
        .unwrap_or_else(|| bmap::path_beside(&args.image));
    let name = path.display();
    let bytes = match read_bounded(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && args.bmap.is_none() => bail!(
            "{name}: no bmap beside the image (give --bmap FILE, or --no-bmap to write every block)"
        ),
        Err(e) => return Err(e).with_context(|| format!("{name}: read")),
    };
    let map = Bmap::parse(&bytes).with_context(|| format!("{name}"))?;
    if map.image_size != size {
        bail!(
            "{name}: made for an image of {} bytes, but {} has {size}",
            map.image_size,
            args.image.display()
        );
    }
    let spans = map
        .ranges
        .iter()
        .map(|r| {
            let (start, len) = map.byte_span(r);
            Span {
                first: r.first,
                last: r.last,
                start,
                len,
                sha256: Some(r.sha256),
            }
        })
        .collect();
    Ok((spans, Some(path)))
}

/// A file of at most [`bmap::MAX_BMAP_BYTES`] + 1 bytes (the parser refuses more).
fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    File::open(path)?
        .take(bmap::MAX_BMAP_BYTES + 1)
        .read_to_end(&mut out)?;
    Ok(out)
}

/// The refusals that come before anything is written.
fn check_target(
    args: &FlashArgs,
    image: &std::fs::Metadata,
    host: &Host,
    size: u64,
) -> Result<Target> {
    let name = args.target.display();
    let meta = match std::fs::metadata(&args.target) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Target::File),
        Err(e) => return Err(e).with_context(|| format!("{name}: stat")),
    };
    let ft = meta.file_type();
    if ft.is_file() {
        if (meta.dev(), meta.ino()) == (image.dev(), image.ino()) {
            bail!("{name}: is the image itself");
        }
        return Ok(Target::File);
    }
    if !ft.is_block_device() {
        bail!("{name}: not a regular file or a block device");
    }
    let rdev = meta.rdev();
    let dev = (rustix::fs::major(rdev), rustix::fs::minor(rdev));
    let b = device::inspect(host, dev, &args.target)?;
    if !b.in_use.is_empty() {
        bail!(
            "{name}: in use: {}; unmount it first (--force does not override this)",
            b.in_use.join(", ")
        );
    }
    if let Removable::No(why) = &b.removable
        && !args.force
    {
        bail!(
            "{name}: {} is not removable: {why}; give --force to write it anyway",
            b.disk
        );
    }
    let dev_size = File::open(&args.target)
        .and_then(|f| rustix::fs::seek(&f, rustix::fs::SeekFrom::End(0)).map_err(Into::into))
        .with_context(|| format!("{name}: find its size"))?;
    if dev_size < size {
        bail!(
            "{name}: {dev_size} bytes ({}), smaller than the image's {size} bytes ({})",
            bmap::human(dev_size),
            bmap::human(size)
        );
    }
    Ok(Target::Block(b))
}

fn open_for_writing(path: &Path, target: &Target, size: u64) -> Result<File> {
    let name = path.display();
    match target {
        Target::File => {
            let f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .with_context(|| format!("{name}: open for writing"))?;
            // Emptied, then the image's size: every block the bmap does not list is a
            // hole, as in the image.
            f.set_len(0)
                .and_then(|()| f.set_len(size))
                .with_context(|| format!("{name}: truncate to {size} bytes"))?;
            Ok(f)
        }
        Target::Block(_) => {
            use rustix::fs::{Mode, OFlags};
            // O_EXCL on a block device (without O_CREAT) claims it: the kernel refuses
            // while a filesystem, swap or device-mapper holds it or one of its
            // partitions, which closes the gap after the checks above.
            let fd = rustix::fs::open(
                path,
                OFlags::WRONLY | OFlags::EXCL | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| {
                if e == rustix::io::Errno::BUSY {
                    anyhow::anyhow!(
                        "{name}: in use (mounted, swap or held by another driver): the kernel refused exclusive access"
                    )
                } else {
                    anyhow::Error::new(std::io::Error::from(e))
                        .context(format!("{name}: open for writing"))
                }
            })?;
            Ok(File::from(fd))
        }
    }
}

/// The target opened for the read-back, and whether reads bypass the page cache
/// (`O_DIRECT`).
fn open_for_reading(
    path: &Path,
    target: &Target,
    size: u64,
    aligned: bool,
) -> Result<(File, bool)> {
    use rustix::fs::{Advice, Mode, OFlags};
    let name = path.display();
    if aligned && matches!(target, Target::Block(_)) {
        match rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECT | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => return Ok((File::from(fd), true)),
            // A device that refuses O_DIRECT: fall back to dropping its cache below.
            Err(rustix::io::Errno::INVAL) => {}
            Err(e) => {
                return Err(std::io::Error::from(e))
                    .with_context(|| format!("{name}: open to read back"));
            }
        }
    }
    let f = File::open(path).with_context(|| format!("{name}: open to read back"))?;
    let len = rustix::fs::seek(&f, rustix::fs::SeekFrom::End(0))
        .with_context(|| format!("{name}: find its size"))?;
    if matches!(target, Target::File) && len != size {
        bail!("{name}: {len} bytes after writing, the image has {size}");
    }
    // The data was fsynced, so its pages are clean and DONTNEED drops them: the reads
    // below come from the disk, not from what this process just wrote.
    rustix::fs::fadvise(&f, 0, None, Advice::DontNeed)
        .with_context(|| format!("{name}: drop cached pages (posix_fadvise)"))?;
    Ok((f, false))
}

/// Hashes one span of the image (the check before writing).
fn hash_spans(image: &File, s: &Span, buf: &mut [u8], p: &mut Progress) -> Result<[u8; 32]> {
    let mut h = Sha256::new();
    let mut done = 0;
    while done < s.len {
        let n = usize::try_from(s.len - done)
            .unwrap_or(buf.len())
            .min(buf.len());
        image.read_exact_at(&mut buf[..n], s.start + done)?;
        h.update(&buf[..n]);
        done += n as u64;
        p.add(n as u64);
    }
    Ok(h.finalize().into())
}

/// Reads spans back, through an aligned buffer when the file is open with `O_DIRECT`.
struct Reader {
    direct: bool,
    buf: Vec<u8>,
}

impl Reader {
    fn new(direct: bool) -> Self {
        Self {
            direct,
            buf: vec![0u8; CHUNK + DIRECT_ALIGN],
        }
    }

    fn hash(&mut self, f: &File, s: &Span, p: &mut Progress) -> Result<[u8; 32]> {
        // An aligned window of the buffer (align_offset on a byte pointer is always
        // computable; the fallback keeps it safe anyway).
        let off = self
            .buf
            .as_ptr()
            .align_offset(DIRECT_ALIGN)
            .min(DIRECT_ALIGN);
        let buf = &mut self.buf[off..off + CHUNK];
        let mut h = Sha256::new();
        let mut done = 0;
        while done < s.len {
            let need = usize::try_from(s.len - done).unwrap_or(CHUNK).min(CHUNK);
            // O_DIRECT lengths are whole aligned blocks; only the last block of an image
            // whose size is not a multiple of 4096 reads past what it needs.
            let len = if self.direct {
                need.next_multiple_of(DIRECT_ALIGN).min(CHUNK)
            } else {
                need
            };
            let got = read_full_at(f, &mut buf[..len], s.start + done)?;
            if got < need {
                bail!("ends {} bytes early", need - got);
            }
            h.update(&buf[..need]);
            done += need as u64;
            p.add(need as u64);
        }
        Ok(h.finalize().into())
    }
}

/// Reads until `buf` is full or the end of the file; returns the bytes read.
fn read_full_at(f: &File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], at + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Progress on stderr: a line rewritten in place on a terminal, else a line every few
/// seconds (logs), for each phase that takes long enough to wonder about.
struct Progress {
    what: &'static str,
    total: u64,
    done: u64,
    tty: bool,
    last: Instant,
    shown: bool,
}

impl Progress {
    fn new(what: &'static str, total: u64) -> Self {
        Self {
            what,
            total,
            done: 0,
            tty: std::io::stderr().is_terminal(),
            last: Instant::now(),
            shown: false,
        }
    }

    fn add(&mut self, n: u64) {
        self.done += n;
        let every = if self.tty {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(5)
        };
        if self.last.elapsed() >= every {
            self.last = Instant::now();
            self.show();
        }
    }

    fn show(&mut self) {
        let pct = (self.done * 100).checked_div(self.total).unwrap_or(100);
        let line = format!(
            "berth-image flash: {} {pct}% ({} of {})",
            self.what,
            bmap::human(self.done),
            bmap::human(self.total)
        );
        if self.tty {
            eprint!("\r\x1b[K{line}");
        } else {
            eprintln!("{line}");
        }
        self.shown = true;
    }

    fn finish(&mut self) {
        if self.shown {
            self.show();
            if self.tty {
                eprintln!();
            }
        }
    }
}
