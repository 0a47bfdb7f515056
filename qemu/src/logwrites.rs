//! Reading a dm-log-writes log (the kernel's `drivers/md/dm-log-writes.c` format) and
//! replaying it onto a copy of the device it recorded.
//!
//! The log device holds, in units of the recorded device's logical sector size `S`:
//! - sector 0: the super block `{magic u64, version u64, nr_entries u64, sectorsize u32}`,
//!   little-endian, magic `0x6a736677736872`, version 1;
//! - from sector 1, one entry per write, flush, discard or mark: a header sector
//!   `{sector u64, nr_sectors u64, flags u64, data_len u64}` (a mark's name follows the
//!   header inside the same sector), then, for a write, its `nr_sectors * S` bytes.
//!
//! Writes are logged in completion order and only once a flush has covered them, so
//! every prefix of the log that ends at a flush or FUA entry is a state the disk could
//! hold after a power cut.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// A flush request (`REQ_PREFLUSH`).
pub const FLUSH: u64 = 1;
/// A forced-unit-access write (`REQ_FUA`).
pub const FUA: u64 = 1 << 1;
/// A discard.
pub const DISCARD: u64 = 1 << 2;
/// A mark set with `dmsetup message DEV 0 mark NAME`.
pub const MARK: u64 = 1 << 3;

const MAGIC: u64 = 0x006a_7366_7773_6872;

/// One entry of the log.
#[derive(Debug, Clone)]
pub struct Entry {
    /// First sector written, in the device's sectors.
    pub sector: u64,
    /// Sectors written (or discarded).
    pub nr_sectors: u64,
    /// `FLUSH`, `FUA`, `DISCARD`, `MARK` (and the kernel's metadata bit).
    pub flags: u64,
    /// Where the written data starts in the log file (writes only).
    pub data_at: u64,
    /// A mark's name.
    pub mark: Option<String>,
}

/// A parsed log.
#[derive(Debug)]
pub struct Log {
    /// The recorded device's logical sector size.
    pub sectorsize: u64,
    /// The entries, in log order.
    pub entries: Vec<Entry>,
    file: File,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

impl Log {
    /// Parses the log in `path`; fails on a bad super block or an entry past the end.
    pub fn open(path: &Path) -> Result<Self, String> {
        let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        let mut sb = [0u8; 28];
        file.read_exact_at(&mut sb, 0)
            .map_err(|e| format!("{}: super block: {e}", path.display()))?;
        if u64_at(&sb, 0) != MAGIC || u64_at(&sb, 8) != 1 {
            return Err(format!("{}: not a dm-log-writes log", path.display()));
        }
        let count = u64_at(&sb, 16);
        let sectorsize = u64::from(u32::from_le_bytes([sb[24], sb[25], sb[26], sb[27]]));
        if !(512..=65536).contains(&sectorsize) || !sectorsize.is_power_of_two() {
            return Err(format!("{}: sector size {sectorsize}", path.display()));
        }
        let mut entries = Vec::new();
        let mut at = sectorsize;
        let mut head = vec![0u8; usize::try_from(sectorsize).unwrap_or(512)];
        for i in 0..count {
            if at + sectorsize > len {
                return Err(format!("{}: entry {i} lies past the end", path.display()));
            }
            file.read_exact_at(&mut head, at)
                .map_err(|e| format!("{}: entry {i}: {e}", path.display()))?;
            let (sector, nr_sectors, flags, data_len) = (
                u64_at(&head, 0),
                u64_at(&head, 8),
                u64_at(&head, 16),
                u64_at(&head, 24),
            );
            let mark = (flags & MARK != 0).then(|| {
                let n = usize::try_from(data_len).unwrap_or(0).min(head.len() - 32);
                String::from_utf8_lossy(&head[32..32 + n]).into_owned()
            });
            at += sectorsize;
            let data_at = at;
            if flags & (DISCARD | MARK) == 0 {
                at += nr_sectors * sectorsize;
            }
            if at > len {
                return Err(format!(
                    "{}: entry {i}'s data lies past the end",
                    path.display()
                ));
            }
            entries.push(Entry {
                sector,
                nr_sectors,
                flags,
                data_at,
                mark,
            });
        }
        Ok(Self {
            sectorsize,
            entries,
            file,
        })
    }

    /// Applies entry `e` to the device image `dev`: writes its data; a discard writes
    /// zeros (what the kernel's own replay tool does by default).
    pub fn apply(&self, e: &Entry, dev: &File) -> Result<(), String> {
        if e.flags & MARK != 0 || e.nr_sectors == 0 {
            return Ok(());
        }
        let len = usize::try_from(e.nr_sectors * self.sectorsize).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; len];
        if e.flags & DISCARD == 0 {
            self.file
                .read_exact_at(&mut buf, e.data_at)
                .map_err(|err| format!("log data at {}: {err}", e.data_at))?;
        }
        dev.write_all_at(&buf, e.sector * self.sectorsize)
            .map_err(|err| format!("replay at sector {}: {err}", e.sector))
    }

    /// The index of the entry marked `name`.
    pub fn mark(&self, name: &str) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.mark.as_deref() == Some(name))
    }
}

/// Whether a power cut right after entry `e` is a distinct durable state: the entry is
/// a flush or a FUA write.
pub fn is_barrier(e: &Entry) -> bool {
    e.flags & (FLUSH | FUA) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(sector: u64, nr: u64, flags: u64, data: &[u8], mark: &str, s: usize) -> Vec<u8> {
        let mut h = vec![0u8; s];
        h[0..8].copy_from_slice(&sector.to_le_bytes());
        h[8..16].copy_from_slice(&nr.to_le_bytes());
        h[16..24].copy_from_slice(&flags.to_le_bytes());
        h[24..32].copy_from_slice(
            &(if mark.is_empty() {
                data.len()
            } else {
                mark.len()
            } as u64)
                .to_le_bytes(),
        );
        h[32..32 + mark.len()].copy_from_slice(mark.as_bytes());
        h.extend_from_slice(data);
        h
    }

    #[test]
    fn a_log_replays_in_order_and_finds_marks_and_barriers() {
        let s = 512usize;
        let mut log = vec![0u8; s];
        log[0..8].copy_from_slice(&MAGIC.to_le_bytes());
        log[8..16].copy_from_slice(&1u64.to_le_bytes());
        log[16..24].copy_from_slice(&4u64.to_le_bytes());
        log[24..28].copy_from_slice(&512u32.to_le_bytes());
        log.extend(entry(0, 0, MARK, &[], "start", s));
        log.extend(entry(2, 1, 0, &[7u8; 512], "", s));
        log.extend(entry(2, 2, FUA, &[9u8; 1024], "", s));
        log.extend(entry(0, 0, FLUSH, &[], "", s));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, &log).unwrap();
        let l = Log::open(&path).unwrap();
        assert_eq!(l.entries.len(), 4);
        assert_eq!(l.mark("start"), Some(0));
        let barriers: Vec<bool> = l.entries.iter().map(is_barrier).collect();
        assert_eq!(barriers, [false, false, true, true]);
        let dev_path = dir.path().join("dev");
        std::fs::write(&dev_path, vec![1u8; 4 * 512]).unwrap();
        let dev = std::fs::OpenOptions::new()
            .write(true)
            .open(&dev_path)
            .unwrap();
        for e in &l.entries[..2] {
            l.apply(e, &dev).unwrap();
        }
        let after_one = std::fs::read(&dev_path).unwrap();
        assert_eq!(&after_one[1024..1536], &[7u8; 512][..]);
        assert_eq!(&after_one[1536..], &[1u8; 512][..]);
        l.apply(&l.entries[2], &dev).unwrap();
        assert_eq!(&std::fs::read(&dev_path).unwrap()[1024..], &[9u8; 1024][..]);
        // A log that claims more entries than it holds is refused.
        let mut short = log.clone();
        short[16..24].copy_from_slice(&9u64.to_le_bytes());
        std::fs::write(&path, &short).unwrap();
        assert!(Log::open(&path).unwrap_err().contains("past the end"));
    }
}
