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
//! Writes are logged in completion order and only once a flush has covered them (the
//! kernel keeps completed writes aside and logs them just before the flush that follows;
//! a FUA write is logged when it completes), so every prefix of the log that ends at a
//! flush or FUA entry is a state the disk could hold after a power cut. Between two such
//! barriers (an epoch) the drive may have kept any subset of the writes in its volatile
//! cache, in any order: [`Epoch`] builds those states, and [`ImageKey`] tells which of
//! them are the same disk.

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
        if !writes(e) {
            return Ok(());
        }
        let buf = self.data(e)?;
        dev.write_all_at(&buf, e.sector * self.sectorsize)
            .map_err(|err| format!("replay at sector {}: {err}", e.sector))
    }

    /// Entry `e`'s data: what a write wrote, zeros for a discard, nothing for a mark.
    pub fn data(&self, e: &Entry) -> Result<Vec<u8>, String> {
        if e.flags & MARK != 0 || e.nr_sectors == 0 {
            return Ok(Vec::new());
        }
        let len = usize::try_from(e.nr_sectors * self.sectorsize).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; len];
        if e.flags & DISCARD == 0 {
            self.file
                .read_exact_at(&mut buf, e.data_at)
                .map_err(|err| format!("log data at {}: {err}", e.data_at))?;
        }
        Ok(buf)
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

/// Whether entry `e` changes the device (a write or a discard, not a mark or an empty
/// flush).
pub fn writes(e: &Entry) -> bool {
    e.flags & MARK == 0 && e.nr_sectors > 0
}

/// The identity of a disk image, up to hash collisions: the sum over every sector of a
/// 128-bit hash of (sector number, content), taken relative to a starting image (whose
/// key is 0). A sum updates in place when a few sectors change, so the key of every
/// crash state costs only the sectors its epoch touched, and two states with the same
/// bytes (different subsets whose writes overwrite one another, a flush that carries
/// no data) get the same key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageKey(u128);

impl ImageKey {
    fn sector(sector: u64, content: &[u8]) -> u128 {
        use std::hash::{Hash as _, Hasher as _};
        // Two differently salted SipHash runs make 128 bits; `DefaultHasher::new()`
        // has fixed keys, so keys are the same from run to run.
        let half = |salt: u8| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (salt, sector, content).hash(&mut h);
            u128::from(h.finish())
        };
        half(1) << 64 | half(2)
    }

    /// The key after `sector` changed from `old` to `new`.
    #[must_use]
    pub fn change(self, sector: u64, old: &[u8], new: &[u8]) -> Self {
        if old == new {
            return self;
        }
        Self(
            self.0
                .wrapping_add(Self::sector(sector, new))
                .wrapping_sub(Self::sector(sector, old)),
        )
    }
}

/// The write entries between two barriers: the kernel may have put them on the disk in
/// any order, so after a power cut any subset of them may have landed (on top of
/// everything up to the barrier before them, the epoch's base). Subsets are applied in
/// log order, so where two writes overlap the later one wins when both landed.
#[derive(Debug)]
pub struct Epoch {
    /// The entries' indices in the log, in log order.
    pub writes: Vec<usize>,
    /// Each write's data (zeros for a discard).
    data: Vec<Vec<u8>>,
    /// The base's content of every sector the writes touch.
    before: std::collections::BTreeMap<u64, Vec<u8>>,
    sectorsize: u64,
}

impl Epoch {
    /// Reads the writes `writes` (indices of write or discard entries of `log`, in
    /// order) and the content of the sectors they touch in `base`.
    pub fn new(log: &Log, writes: Vec<usize>, base: &File) -> Result<Self, String> {
        let s = log.sectorsize;
        let mut data = Vec::with_capacity(writes.len());
        let mut before = std::collections::BTreeMap::new();
        for &i in &writes {
            let e = &log.entries[i];
            data.push(log.data(e)?);
            for sector in e.sector..e.sector + e.nr_sectors {
                if let std::collections::btree_map::Entry::Vacant(v) = before.entry(sector) {
                    let mut b = vec![0u8; usize::try_from(s).map_err(|e| e.to_string())?];
                    base.read_exact_at(&mut b, sector * s)
                        .map_err(|err| format!("base at sector {sector}: {err}"))?;
                    v.insert(b);
                }
            }
        }
        Ok(Self {
            writes,
            data,
            before,
            sectorsize: s,
        })
    }

    /// The key of the state where the writes with `landed[k]` set reached the disk,
    /// given the base's key.
    pub fn key(&self, log: &Log, base: ImageKey, landed: &[bool]) -> ImageKey {
        let s = usize::try_from(self.sectorsize).unwrap_or(512);
        let mut now: std::collections::BTreeMap<u64, &[u8]> = std::collections::BTreeMap::new();
        for (k, &i) in self.writes.iter().enumerate() {
            if !landed.get(k).copied().unwrap_or(false) {
                continue;
            }
            let e = &log.entries[i];
            for (n, chunk) in self.data[k].chunks(s).enumerate() {
                now.insert(e.sector + n as u64, chunk);
            }
        }
        now.into_iter().fold(base, |key, (sector, new)| {
            key.change(sector, &self.before[&sector], new)
        })
    }

    /// Writes the writes with `landed[k]` set, in log order, onto `dev` (a copy of the
    /// base).
    pub fn apply(&self, log: &Log, landed: &[bool], dev: &File) -> Result<(), String> {
        for (k, &i) in self.writes.iter().enumerate() {
            if landed.get(k).copied().unwrap_or(false) {
                let e = &log.entries[i];
                dev.write_all_at(&self.data[k], e.sector * self.sectorsize)
                    .map_err(|err| format!("replay at sector {}: {err}", e.sector))?;
            }
        }
        Ok(())
    }
}

/// A small seeded generator (`SplitMix64`, Steele, Lea and Flood, "Fast splittable
/// pseudorandom number generators", OOPSLA 2014), so the sampled reorderings are the
/// same on every run.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (`n` > 0; the modulo bias is negligible for small `n`).
    pub fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next_u64() % (n as u64)).unwrap_or(0)
    }
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
    #[test]
    fn an_epochs_subsets_give_the_images_and_keys_their_writes_make() {
        let s = 512usize;
        let mut log = vec![0u8; s];
        log[0..8].copy_from_slice(&MAGIC.to_le_bytes());
        log[8..16].copy_from_slice(&1u64.to_le_bytes());
        log[16..24].copy_from_slice(&3u64.to_le_bytes());
        log[24..28].copy_from_slice(&512u32.to_le_bytes());
        // Sector 1 written twice (the second time with what the base holds), sector 3
        // once.
        log.extend(entry(1, 1, 0, &[7u8; 512], "", s));
        log.extend(entry(3, 1, 0, &[8u8; 512], "", s));
        log.extend(entry(1, 1, 0, &[1u8; 512], "", s));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, &log).unwrap();
        let l = Log::open(&path).unwrap();
        let base_path = dir.path().join("base");
        std::fs::write(&base_path, vec![1u8; 4 * 512]).unwrap();
        let base = File::open(&base_path).unwrap();
        let ep = Epoch::new(&l, vec![0, 1, 2], &base).unwrap();
        let image = |landed: &[bool]| {
            let p = dir.path().join("state");
            std::fs::copy(&base_path, &p).unwrap();
            let dev = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
            ep.apply(&l, landed, &dev).unwrap();
            std::fs::read(&p).unwrap()
        };
        let key = |landed: &[bool]| ep.key(&l, ImageKey::default(), landed);
        // Only the first write: sector 1 holds 7s.
        assert_eq!(&image(&[true, false, false])[512..1024], &[7u8; 512][..]);
        // Both writes to sector 1 landed: the later one wins, as if neither had, so
        // the image and key are the base's.
        assert_eq!(image(&[true, false, true]), vec![1u8; 4 * 512]);
        assert_eq!(key(&[true, false, true]), ImageKey::default());
        assert_eq!(key(&[false, false, true]), ImageKey::default());
        // Different images, different keys; the same image from other subsets, the
        // same key.
        assert_ne!(key(&[true, false, false]), key(&[false, true, false]));
        assert_ne!(key(&[true, true, false]), key(&[false, true, false]));
        assert_eq!(key(&[true, true, true]), key(&[false, true, false]));
        assert_eq!(image(&[true, true, true]), image(&[false, true, false]));
        // Keys add up: the base moved past the first write, then the second.
        let moved = ImageKey::default().change(1, &[1u8; 512], &[7u8; 512]);
        let base2 = moved.change(3, &[1u8; 512], &[8u8; 512]);
        assert_eq!(key(&[true, true, false]), base2);
    }

    #[test]
    fn the_generator_repeats_from_its_seed() {
        let a: Vec<u64> = std::iter::repeat_with({
            let mut r = Rng::new(7);
            move || r.next_u64()
        })
        .take(4)
        .collect();
        let mut r = Rng::new(7);
        assert_eq!(a, (0..4).map(|_| r.next_u64()).collect::<Vec<_>>());
        assert!(a.windows(2).all(|w| w[0] != w[1]));
        assert!((0..100).all(|_| r.below(3) < 3));
    }
}
