//! Committing a tarball: every entry is checked for path safety, stored as it streams
//! past, and placed in an in-memory directory tree that is written at the end.
//!
//! Accepted: ustar, GNU and PAX archives (plain, gzip or zstd); regular files, directories,
//! symlinks, hard links to earlier entries, character and block devices, FIFOs; xattrs
//! from PAX `SCHILY.xattr.*` records; PAX `uid`/`gid` overrides.
//! Refused, with the entry named: absolute paths, `..` components, hard links to entries
//! not seen before, sparse files, symlinks whose relative target climbs out of the root
//! (`format::link`), and an archive that ends without its end-of-archive block (a
//! truncated download).

use std::cell::Cell;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use anyhow::{Context, Result, anyhow, bail};
use format::meta::MODE_BITS;
use format::{DirMeta, FileHeader, FileKind, ObjectId, Xattrs};
use store::Txn;
use store::build::{BuildStats, MemDir, Progress};
use tar::EntryType;

/// A reader that remembers whether the underlying file ran out ([`each_entry`] reads
/// archives through one). A well-formed archive ends with zero blocks that the tar
/// reader stops at, so reaching the end of the file during iteration means the archive
/// was cut short.
pub struct EofTracker<R> {
    inner: R,
    hit_eof: Rc<Cell<bool>>,
}

impl<R> std::fmt::Debug for EofTracker<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EofTracker")
            .field("hit_eof", &self.hit_eof.get())
            .finish_non_exhaustive()
    }
}

impl<R: Read> Read for EofTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.hit_eof.set(true);
        }
        Ok(n)
    }
}

/// Opens the tarball at `path`, decompressing it if it is gzip or zstd.
pub fn open_decompressed(path: &Path) -> Result<Box<dyn Read>> {
    let mut file =
        File::open(path).with_context(|| format!("{}: cannot read tarball", path.display()))?;
    let mut magic = [0u8; 6];
    let n =
        read_up_to(&mut file, &mut magic).with_context(|| format!("{}: read", path.display()))?;
    let file = BufReader::new(
        File::open(path).with_context(|| format!("{}: cannot read tarball", path.display()))?,
    );
    Ok(match &magic[..n] {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::MultiGzDecoder::new(file)),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Box::new(
            zstd::stream::read::Decoder::new(file)
                .with_context(|| format!("{}: zstd", path.display()))?,
        ),
        [0xfd, b'7', b'z', b'X', b'Z', 0] => {
            bail!(
                "{}: xz-compressed tarballs are not supported; decompress it first (xz -d)",
                path.display()
            )
        }
        _ => Box::new(file),
    })
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Splits an archive path into safe components: strips `./` prefixes and empty or `.`
/// components; refuses absolute paths and `..`. An empty result is the root directory.
pub fn components(raw: &[u8]) -> Result<Vec<&[u8]>, &'static str> {
    if raw.first() == Some(&b'/') {
        return Err("absolute path");
    }
    let mut out = Vec::new();
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err("path contains '..'"),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Commits the tarball at `path` into `txn`; returns the root tree id.
pub fn build_tar(
    txn: &mut Txn<'_>,
    path: &Path,
    progress: Progress<'_>,
) -> Result<(ObjectId, BuildStats)> {
    let mut root = MemDir::new(MemDir::implied_meta());
    let mut stats = BuildStats::default();
    each_entry(open_decompressed(path)?, path, |entry, comps, shown| {
        let place = |e: store::build::MemDirError| anyhow!("{}: {e}", shown.display());
        match read_entry(txn, entry, comps, shown, &mut stats)? {
            Item::Dir(meta) => root.add_dir(comps, meta).map_err(place)?,
            Item::File(id) => root.add_file(comps, id).map_err(place)?,
            Item::HardLink(target) => {
                let id = root.file_at(&target.comps()).with_context(|| {
                    format!(
                        "{}: hard link to {:?}, which is not a file earlier in the archive",
                        shown.display(),
                        target.shown()
                    )
                })?;
                stats.files += 1;
                root.add_file(comps, id).map_err(place)?;
            }
            Item::Skip => {}
        }
        if stats.files.is_multiple_of(1000) {
            progress(&stats);
        }
        Ok(())
    })?;
    let id = root.write(txn)?;
    progress(&stats);
    Ok((id, stats))
}

/// Reads every entry of the tar stream `reader` (named `path` in messages), handing each
/// to `each` with its safe path components and its name for messages
/// (`ARCHIVE:ENTRY`); returns the reader, whose rest (padding after the end-of-archive
/// marker) is unread. Refuses an archive that ends without its end-of-archive marker.
pub fn each_entry<R: Read>(
    reader: R,
    path: &Path,
    mut each: impl FnMut(&mut tar::Entry<'_, EofTracker<R>>, &[&[u8]], &Path) -> Result<()>,
) -> Result<R> {
    let hit_eof = Rc::new(Cell::new(false));
    let reader = EofTracker {
        inner: reader,
        hit_eof: hit_eof.clone(),
    };
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .with_context(|| format!("{}: not a tar archive", path.display()))?;
    for (index, entry) in entries.enumerate() {
        let mut entry = entry.with_context(|| {
            format!(
                "{}: entry {}: cannot read (truncated or not a tar archive?)",
                path.display(),
                index + 1
            )
        })?;
        let raw_path = entry.path_bytes().into_owned();
        let shown = tar_entry_path(path, &raw_path);
        let comps = components(&raw_path).map_err(|why| anyhow!("{}: {why}", shown.display()))?;
        each(&mut entry, &comps, &shown)?;
    }
    if hit_eof.get() {
        bail!(
            "{}: truncated: the archive ends without its end-of-archive marker",
            path.display()
        );
    }
    Ok(archive.into_inner().inner)
}

fn tar_entry_path(tar: &Path, raw: &[u8]) -> PathBuf {
    let mut s = tar.as_os_str().to_owned();
    s.push(":");
    s.push(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(raw));
    PathBuf::from(s)
}

/// The metadata of a tar entry, with PAX overrides and xattrs applied.
struct Owner {
    mode: u32,
    uid: u32,
    gid: u32,
    major: u32,
    minor: u32,
    xattrs: Xattrs,
}

fn owner<R: Read>(entry: &mut tar::Entry<'_, R>, shown: &Path) -> Result<Owner> {
    let header = entry.header();
    let mode = header
        .mode()
        .with_context(|| format!("{}: bad mode field", shown.display()))?
        & MODE_BITS;
    let mut uid = header
        .uid()
        .with_context(|| format!("{}: bad uid field", shown.display()))?;
    let mut gid = header
        .gid()
        .with_context(|| format!("{}: bad gid field", shown.display()))?;
    let major = header.device_major().ok().flatten().unwrap_or(0);
    let minor = header.device_minor().ok().flatten().unwrap_or(0);
    let mut xattrs = Vec::new();
    if let Some(pax) = entry
        .pax_extensions()
        .with_context(|| format!("{}: bad PAX header", shown.display()))?
    {
        for ext in pax {
            let ext = ext.with_context(|| format!("{}: bad PAX record", shown.display()))?;
            let Ok(key) = ext.key() else { continue };
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                xattrs.push((name.as_bytes().to_vec(), ext.value_bytes().to_vec()));
            } else if key == "uid" || key == "gid" {
                let v: u64 = std::str::from_utf8(ext.value_bytes())
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .with_context(|| format!("{}: bad PAX {key}", shown.display()))?;
                if key == "uid" {
                    uid = v;
                } else {
                    gid = v;
                }
            }
        }
    }
    let uid = u32::try_from(uid)
        .map_err(|_| anyhow!("{}: uid {uid} is out of range", shown.display()))?;
    let gid = u32::try_from(gid)
        .map_err(|_| anyhow!("{}: gid {gid} is out of range", shown.display()))?;
    let xattrs =
        Xattrs::from_pairs(xattrs).with_context(|| format!("{}: xattrs", shown.display()))?;
    Ok(Owner {
        mode,
        uid,
        gid,
        major,
        minor,
        xattrs,
    })
}

/// The target of a hard link entry, as safe path components.
pub(crate) struct LinkTarget(Vec<u8>);

impl LinkTarget {
    /// The target's components (checked when the entry was read).
    pub(crate) fn comps(&self) -> Vec<&[u8]> {
        // `read_entry` only makes a `LinkTarget` of a path `components` accepts.
        components(&self.0).unwrap_or_default()
    }

    /// The target as the archive spells it, for messages.
    pub(crate) fn shown(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

/// What one archive entry is, once its content (if any) is in the store.
pub(crate) enum Item {
    /// A directory with this metadata.
    Dir(DirMeta),
    /// A non-directory, stored as this object.
    File(ObjectId),
    /// A hard link to another path, which the caller resolves.
    HardLink(LinkTarget),
    /// Nothing to place (a PAX global header).
    Skip,
}

/// Reads the entry at `comps` (shown as `shown`), storing its content in `txn`; counts
/// it in `stats` unless it is a hard link, which the caller counts once resolved.
pub(crate) fn read_entry<R: Read>(
    txn: &mut Txn<'_>,
    entry: &mut tar::Entry<'_, R>,
    comps: &[&[u8]],
    shown: &Path,
    stats: &mut BuildStats,
) -> Result<Item> {
    let ty = entry.header().entry_type();
    let Owner {
        mode,
        uid,
        gid,
        major,
        minor,
        xattrs,
    } = owner(entry, shown)?;
    let link = entry.link_name_bytes().map(std::borrow::Cow::into_owned);

    let kind = match ty {
        EntryType::Directory => {
            stats.dirs += 1;
            return Ok(Item::Dir(DirMeta {
                mode,
                uid,
                gid,
                xattrs,
            }));
        }
        EntryType::Link => {
            let target =
                link.with_context(|| format!("{}: hard link without a target", shown.display()))?;
            components(&target)
                .map_err(|why| anyhow!("{}: hard link target: {why}", shown.display()))?;
            return Ok(Item::HardLink(LinkTarget(target)));
        }
        EntryType::Regular | EntryType::Continuous => FileKind::Regular,
        EntryType::Symlink => FileKind::Symlink,
        EntryType::Char => FileKind::CharDevice,
        EntryType::Block => FileKind::BlockDevice,
        EntryType::Fifo => FileKind::Fifo,
        EntryType::XGlobalHeader => return Ok(Item::Skip),
        EntryType::GNUSparse => bail!(
            "{}: sparse entries are not supported (create the tarball without --sparse)",
            shown.display()
        ),
        other => bail!(
            "{}: unsupported entry type {:?}",
            shown.display(),
            other.as_byte() as char
        ),
    };
    if comps.is_empty() {
        bail!("{}: the archive root must be a directory", shown.display());
    }
    let (rdev_major, rdev_minor) = if kind.is_device() {
        (major, minor)
    } else {
        (0, 0)
    };
    let target = if kind == FileKind::Symlink {
        let t = link.with_context(|| format!("{}: symlink without a target", shown.display()))?;
        // A device refuses a relative target that climbs out of the deployment; say so
        // here, where the image is made.
        format::link::check(&t, comps.len() - 1)
            .map_err(|e| anyhow!("{}: symlink target {e}", shown.display()))?;
        Some(t)
    } else {
        None
    };
    let size = match (&target, kind) {
        (Some(t), _) => t.len() as u64,
        (None, FileKind::Regular) => entry.size(),
        (None, _) => 0,
    };
    let header = FileHeader {
        kind,
        mode,
        uid,
        gid,
        rdev_major,
        rdev_minor,
        size,
        xattrs,
    };
    let id = if let Some(t) = &target {
        txn.write_file(&header, &mut t.as_slice(), shown)?
    } else {
        stats.bytes += size;
        txn.write_file(&header, entry, shown)?
    };
    stats.files += 1;
    Ok(Item::File(id))
}

#[cfg(test)]
mod tests {
    use super::components;

    #[test]
    fn path_components() {
        let ok: &[(&[u8], &[&[u8]])] = &[
            (b"./", &[]),
            (b".", &[]),
            (b"./etc/passwd", &[b"etc", b"passwd"]),
            (b"etc//./passwd", &[b"etc", b"passwd"]),
            (b"usr/bin/", &[b"usr", b"bin"]),
            (b"..foo/bar..", &[b"..foo", b"bar.."]),
        ];
        for (raw, want) in ok {
            assert_eq!(components(raw).unwrap(), *want, "{}", raw.escape_ascii());
        }
        for bad in [&b"/etc/passwd"[..], b"../x", b"a/../../b", b"a/.."] {
            assert!(components(bad).is_err(), "{}", bad.escape_ascii());
        }
    }
}
