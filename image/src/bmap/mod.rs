//! Block maps: bmap-tools' format 2.0, which `bmaptool copy` and `berth-image flash` read
//! to write only the blocks of a sparse image that hold data.
//!
//! - [`create`] finds the mapped blocks of an image file with `lseek(SEEK_DATA/SEEK_HOLE)`
//!   and hashes each range with sha256, as bmap-tools' `BmapCreate.py` does with FIEMAP.
//! - [`Bmap::to_xml`] writes the XML (pure); [`write_beside`] puts it beside the image
//!   atomically (temporary name, fsync, rename, fsync of the directory).
//! - [`Bmap::parse`] reads one back (pure). A bmap is untrusted input: its size is bounded,
//!   its own checksum (`BmapFileChecksum`) is checked, every count must agree with the
//!   ranges, and ranges must be sorted, disjoint and inside the image.
//!
//! Non-goals: bmap versions 1.x (sha1, md5 or no checksums), other checksum types, XML
//! beyond what the format uses (entities, CDATA, processing instructions other than the
//! declaration, unknown elements are refused rather than guessed at).

mod parse;
mod xml;

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use format::ObjectId;
use sha2::{Digest, Sha256};

/// The block size Berth writes bmaps with: bmap-tools' default, and the page and ext4
/// block size, so a range never splits a filesystem block.
pub const BLOCK_SIZE: u64 = 4096;

/// The largest bmap file read (about 600,000 ranges). A bmap is a few kilobytes for a
/// filesystem image; anything this large is not one.
pub const MAX_BMAP_BYTES: u64 = 64 << 20;

/// Bytes read at a time when hashing or copying a range.
pub const CHUNK: usize = 1 << 20;

/// The checksum type Berth writes and reads.
const CHECKSUM_TYPE: &str = "sha256";

/// Why a bmap was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BmapError {
    #[error("larger than {MAX_BMAP_BYTES} bytes: not a bmap")]
    TooLarge,
    #[error("not text (UTF-8)")]
    NotText,
    #[error("line {line}: {what}")]
    Syntax { line: usize, what: String },
    #[error("bmap version {0} is not supported (Berth reads 2.x)")]
    Version(String),
    #[error("checksum type {0:?} is not supported (Berth reads sha256)")]
    ChecksumType(String),
    #[error("<{0}> is missing")]
    Missing(&'static str),
    #[error("<{0}> appears twice")]
    Duplicate(&'static str),
    #[error("checksum mismatch: the file hashes to {computed}, BmapFileChecksum says {stated}")]
    FileChecksum { computed: String, stated: String },
    #[error("{0}")]
    Inconsistent(String),
    #[error("line {line}: range {text}: {what}")]
    Range {
        line: usize,
        text: String,
        what: &'static str,
    },
}

/// A run of mapped blocks, `first..=last`, and the sha256 of its bytes (clipped to the
/// image's size in the last block).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub first: u64,
    pub last: u64,
    pub sha256: [u8; 32],
}

/// A block map: what an image holds and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bmap {
    pub image_size: u64,
    pub block_size: u64,
    pub ranges: Vec<Range>,
}

impl Bmap {
    /// Blocks in the image (the last one may be partial).
    pub fn blocks_count(&self) -> u64 {
        self.image_size.div_ceil(self.block_size)
    }

    /// Blocks the ranges cover.
    pub fn mapped_blocks(&self) -> u64 {
        self.ranges.iter().map(|r| r.last - r.first + 1).sum()
    }

    /// Bytes of image the ranges cover (the last block clipped to the image).
    pub fn mapped_bytes(&self) -> u64 {
        self.ranges.iter().map(|r| self.byte_span(r).1).sum()
    }

    /// Offset and length in bytes of a range, clipped to the image's size.
    pub fn byte_span(&self, r: &Range) -> (u64, u64) {
        let start = r.first * self.block_size;
        let end = ((r.last + 1) * self.block_size).min(self.image_size);
        (start, end - start)
    }

    /// The XML text, as bmap-tools lays it out (comments included, for a human reading
    /// it), with `BmapFileChecksum` set: the sha256 of the text with that value written as
    /// 64 '0' characters. Does no I/O.
    pub fn to_xml(&self) -> String {
        use std::fmt::Write as _;
        let zeros = "0".repeat(64);
        let mapped = self.mapped_blocks();
        let blocks = self.blocks_count();
        // Per mille, in integers: 12.3% reads as 123.
        let permille = (mapped * 1000).checked_div(blocks).unwrap_or(0);
        let mut x = String::new();
        x.push_str("<?xml version=\"1.0\" ?>\n");
        x.push_str(
            "<!-- The block map of an image file (bmap-tools' format 2.0, written by\n     \
             berth-image): the blocks that hold data, which are all a flashing tool\n     \
             (bmaptool copy, berth-image flash) needs to write. The other blocks of the\n     \
             image are holes, zero when read. -->\n\n",
        );
        x.push_str("<bmap version=\"2.0\">\n");
        let _ = writeln!(
            x,
            "    <!-- Image size in bytes: {} -->",
            human(self.image_size)
        );
        let _ = writeln!(x, "    <ImageSize> {} </ImageSize>\n", self.image_size);
        x.push_str("    <!-- Size of a block in bytes -->\n");
        let _ = writeln!(x, "    <BlockSize> {} </BlockSize>\n", self.block_size);
        x.push_str("    <!-- Count of blocks in the image file -->\n");
        let _ = writeln!(x, "    <BlocksCount> {blocks} </BlocksCount>\n");
        let _ = writeln!(
            x,
            "    <!-- Count of mapped blocks: {} or {}.{}% -->",
            human(mapped * self.block_size),
            permille / 10,
            permille % 10
        );
        let _ = writeln!(x, "    <MappedBlocksCount> {mapped} </MappedBlocksCount>\n");
        x.push_str("    <!-- Type of checksum used in this file -->\n");
        let _ = writeln!(x, "    <ChecksumType> {CHECKSUM_TYPE} </ChecksumType>\n");
        x.push_str(
            "    <!-- sha256 of this file, computed with this value written as 64 ASCII\n         \
             \"0\" characters -->\n",
        );
        x.push_str("    <BmapFileChecksum> ");
        let checksum_at = x.len();
        let _ = writeln!(x, "{zeros} </BmapFileChecksum>\n");
        x.push_str(
            "    <!-- The mapped blocks: FIRST-LAST or a single block number, each with the\n         \
             sha256 of its bytes ('chksum'), the last block cut at ImageSize -->\n",
        );
        x.push_str("    <BlockMap>\n");
        for r in &self.ranges {
            let sum = ObjectId::from_bytes(r.sha256);
            if r.first == r.last {
                let _ = writeln!(x, "        <Range chksum=\"{sum}\"> {} </Range>", r.first);
            } else {
                let _ = writeln!(
                    x,
                    "        <Range chksum=\"{sum}\"> {}-{} </Range>",
                    r.first, r.last
                );
            }
        }
        x.push_str("    </BlockMap>\n</bmap>\n");
        let sum = ObjectId::digest(x.as_bytes()).to_string();
        x.replace_range(checksum_at..checksum_at + 64, &sum);
        x
    }
}

/// A size for people: "256 MiB", "12.3 MiB", "812 bytes".
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut unit = 0;
    let mut scale = 1024u64;
    while unit + 1 < UNITS.len() && bytes / scale >= 1024 {
        unit += 1;
        scale *= 1024;
    }
    // Tenths, in integers.
    let tenths = bytes * 10 / scale;
    if tenths.is_multiple_of(10) {
        format!("{} {}", tenths / 10, UNITS[unit])
    } else {
        format!("{}.{} {}", tenths / 10, tenths % 10, UNITS[unit])
    }
}

/// The byte extents of `file` that hold data, from `lseek(SEEK_DATA)` and
/// `lseek(SEEK_HOLE)`, in order. A filesystem without hole reporting reports the whole
/// file as data, which is correct, only not sparse.
///
/// # References
/// - [lseek(2)](https://man7.org/linux/man-pages/man2/lseek.2.html), `SEEK_DATA`
pub fn data_extents(file: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    use rustix::fs::{SeekFrom, seek};
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < size {
        let start = match seek(file, SeekFrom::Data(pos)) {
            Ok(s) => s,
            // ENXIO: no data at or after `pos`; the rest is a hole.
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let end = seek(file, SeekFrom::Hole(start))?.min(size);
        if end <= start {
            break;
        }
        out.push((start, end));
        pos = end;
    }
    Ok(out)
}

/// Byte extents (sorted, disjoint) to the block ranges that cover them, merged where they
/// touch: `(first, last)` inclusive.
pub fn block_ranges(extents: &[(u64, u64)], block_size: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &(start, end) in extents {
        if end <= start {
            continue;
        }
        let first = start / block_size;
        let last = (end - 1) / block_size;
        match out.last_mut() {
            Some(prev) if first <= prev.1 + 1 => prev.1 = prev.1.max(last),
            _ => out.push((first, last)),
        }
    }
    out
}

/// The bmap of an image file: its mapped ranges at [`BLOCK_SIZE`], each hashed.
pub fn create(image: &Path) -> anyhow::Result<Bmap> {
    use anyhow::Context as _;
    let file = File::open(image).with_context(|| format!("{}: open", image.display()))?;
    let size = file
        .metadata()
        .with_context(|| format!("{}: stat", image.display()))?
        .len();
    anyhow::ensure!(size > 0, "{}: an empty image has no bmap", image.display());
    let extents = data_extents(&file, size)
        .with_context(|| format!("{}: find the data (SEEK_DATA)", image.display()))?;
    let mut bmap = Bmap {
        image_size: size,
        block_size: BLOCK_SIZE,
        ranges: Vec::new(),
    };
    let mut buf = vec![0u8; CHUNK];
    for (first, last) in block_ranges(&extents, BLOCK_SIZE) {
        let mut r = Range {
            first,
            last,
            sha256: [0; 32],
        };
        let (start, len) = bmap.byte_span(&r);
        r.sha256 = hash_span(&file, start, len, &mut buf)
            .with_context(|| format!("{}: read blocks {first}-{last}", image.display()))?;
        bmap.ranges.push(r);
    }
    Ok(bmap)
}

/// The sha256 of `len` bytes of `file` at `start`; a file that ends early is an error.
pub fn hash_span(file: &File, start: u64, len: u64, buf: &mut [u8]) -> io::Result<[u8; 32]> {
    let mut h = Sha256::new();
    let mut done = 0;
    while done < len {
        let want = usize::try_from(len - done)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let chunk = &mut buf[..want];
        file.read_exact_at(chunk, start + done)?;
        h.update(&*chunk);
        done += want as u64;
    }
    Ok(h.finalize().into())
}

/// `IMAGE.bmap` (the image's whole name, then `.bmap`, as bmaptool looks for it).
pub fn path_beside(image: &Path) -> PathBuf {
    let mut s = image.as_os_str().to_owned();
    s.push(".bmap");
    PathBuf::from(s)
}

/// Writes `bmap` to `IMAGE.bmap` durably: a temporary name in the same directory, fsync,
/// rename over, fsync of the directory, so a reader sees the old bmap or the whole new
/// one and never a torn file beside a new image.
pub fn write_beside(image: &Path, bmap: &Bmap) -> anyhow::Result<PathBuf> {
    use anyhow::Context as _;
    use std::io::Write as _;
    let dest = path_beside(image);
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".berth-bmap-")
        .tempfile_in(dir)
        .with_context(|| format!("{}: create a temporary file", dir.display()))?;
    tmp.write_all(bmap.to_xml().as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("{}: write", tmp.path().display()))?;
    // Readable like the image (tempfile makes it 0600).
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .with_context(|| format!("{}: chmod", tmp.path().display()))?;
    tmp.persist(&dest)
        .with_context(|| format!("{}: rename into place", dest.display()))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("{}: fsync", dir.display()))?;
    Ok(dest)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(super) fn sample() -> Bmap {
        Bmap {
            image_size: 10 * 4096 + 100,
            block_size: 4096,
            ranges: vec![
                Range {
                    first: 0,
                    last: 2,
                    sha256: [1; 32],
                },
                Range {
                    first: 5,
                    last: 5,
                    sha256: [2; 32],
                },
                Range {
                    first: 9,
                    last: 10,
                    sha256: [3; 32],
                },
            ],
        }
    }

    #[test]
    fn block_ranges_round_out_and_merge() {
        type Case<'a> = (&'a [(u64, u64)], &'a [(u64, u64)]);
        let cases: &[Case<'_>] = &[
            (&[], &[]),
            (&[(0, 4096)], &[(0, 0)]),
            (&[(0, 4097)], &[(0, 1)]),
            (&[(100, 200)], &[(0, 0)]),
            // Touching blocks merge; a block apart does not.
            (&[(0, 4096), (4096, 8192)], &[(0, 1)]),
            (&[(0, 4096), (8192, 8193)], &[(0, 0), (2, 2)]),
            // Two extents inside one block (a 1 KiB-block filesystem).
            (&[(0, 1024), (2048, 3072)], &[(0, 0)]),
            (&[(0, 1024), (5000, 9000)], &[(0, 2)]),
            (&[(10, 10)], &[]),
        ];
        for (extents, want) in cases {
            assert_eq!(&block_ranges(extents, 4096), want, "{extents:?}");
        }
    }

    #[test]
    fn xml_round_trips_and_reads_like_bmap_tools() {
        let b = sample();
        let x = b.to_xml();
        assert_eq!(Bmap::parse(x.as_bytes()), Ok(b.clone()));
        for want in [
            "<bmap version=\"2.0\">",
            "<ImageSize> 41060 </ImageSize>",
            "<BlockSize> 4096 </BlockSize>",
            "<BlocksCount> 11 </BlocksCount>",
            "<MappedBlocksCount> 6 </MappedBlocksCount>",
            "<ChecksumType> sha256 </ChecksumType>",
            &format!("<Range chksum=\"{}\"> 0-2 </Range>", "01".repeat(32)),
            &format!("<Range chksum=\"{}\"> 5 </Range>", "02".repeat(32)),
        ] {
            assert!(x.contains(want), "{want} missing from\n{x}");
        }
        // The file checksum is over the text with its own value zeroed.
        let at = x.find("<BmapFileChecksum> ").unwrap() + 19;
        let stated = &x[at..at + 64];
        let mut zeroed = x.clone();
        zeroed.replace_range(at..at + 64, &"0".repeat(64));
        assert_eq!(stated, ObjectId::digest(zeroed.as_bytes()).to_string());
        assert_eq!(b.mapped_bytes(), 5 * 4096 + 100);
    }

    /// Re-signs an edited bmap text, so a test reaches the check behind the checksum.
    #[test]
    fn create_maps_the_data_of_a_sparse_file_and_hashes_it() {
        use std::io::{Seek, SeekFrom, Write};
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("sparse.img");
        let mut f = File::create(&img).unwrap();
        // Data in block 0, blocks 3-4 (one write across the boundary) and a partial last
        // block; holes elsewhere. 10 blocks and 100 bytes.
        f.set_len(10 * 4096 + 100).unwrap();
        f.write_all(b"first").unwrap();
        f.seek(SeekFrom::Start(3 * 4096 + 4000)).unwrap();
        f.write_all(&[7u8; 200]).unwrap();
        f.seek(SeekFrom::Start(10 * 4096 + 50)).unwrap();
        f.write_all(b"tail").unwrap();
        f.sync_all().unwrap();
        let all = std::fs::read(&img).unwrap();
        let b = create(&img).unwrap();
        assert_eq!(b.image_size, 41060);
        assert_eq!(b.block_size, 4096);
        let spans: Vec<(u64, u64)> = b.ranges.iter().map(|r| (r.first, r.last)).collect();
        if spans.len() == 1 {
            // A filesystem that reports no holes maps everything, which is still right.
            assert_eq!(spans, [(0, 10)]);
        } else {
            assert_eq!(spans, [(0, 0), (3, 4), (10, 10)]);
        }
        for r in &b.ranges {
            let (start, len) = b.byte_span(r);
            let bytes = &all[usize::try_from(start).unwrap()..][..usize::try_from(len).unwrap()];
            assert_eq!(ObjectId::digest(bytes).as_bytes(), &r.sha256, "{r:?}");
        }
        assert_eq!(Bmap::parse(b.to_xml().as_bytes()).unwrap(), b);
        // Beside the image, as bmaptool looks for it; readable like the image.
        let written = write_beside(&img, &b).unwrap();
        assert_eq!(written, dir.path().join("sparse.img.bmap"));
        assert_eq!(std::fs::read_to_string(&written).unwrap(), b.to_xml());
        let empty = dir.path().join("empty.img");
        File::create(&empty).unwrap();
        let err = format!("{:#}", create(&empty).unwrap_err());
        assert!(
            err.contains("empty.img: an empty image has no bmap"),
            "{err}"
        );
    }

    #[test]
    fn human_sizes() {
        for (n, want) in [
            (0, "0 bytes"),
            (1023, "1023 bytes"),
            (1024, "1 KiB"),
            (1536, "1.5 KiB"),
            (256 << 20, "256 MiB"),
            (3 << 30, "3 GiB"),
        ] {
            assert_eq!(human(n), want);
        }
    }
}
