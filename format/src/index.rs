//! Object indexes: what a device needs to pull a commit object by object from a static
//! repository (`docs/FORMAT.md`, "Static repositories").
//!
//! The channel pointer signs the index's length and sha256; the index carries the commit
//! object (whose id the pointer names) and its signatures, and every file and tree object
//! the commit reaches with two sizes: the bytes published (`objects/<ab>/<cd…>.<kind>`, a
//! zstd frame) and the bytes they decompress to (the object's canonical encoding, whose
//! sha256 is its id). A device fetches only the objects it lacks, each bounded by both.

use alloc::vec::Vec;

use crate::wire::{self, Preamble, Reader};
use crate::{FormatError, ObjectId, ObjectKind};

const INDEX: Preamble = Preamble {
    magic: *b"BRTI",
    version: 1,
    what: "object index",
};

/// Most objects one index lists.
pub const ENTRIES_MAX: usize = 1 << 22;

/// One object of the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// [`ObjectKind::File`] or [`ObjectKind::Tree`].
    pub kind: ObjectKind,
    /// The object's id.
    pub id: ObjectId,
    /// Bytes of the published (compressed) object.
    pub stored: u64,
    /// Bytes it decompresses to: a file's header and content, or a tree's encoding.
    pub size: u64,
}

/// The object index of one commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    /// The commit object's encoding.
    pub commit: Vec<u8>,
    /// Its signature file (empty if the commit is not signed).
    pub signatures: Vec<u8>,
    /// Every file and tree object the commit reaches, sorted by id then kind, unique.
    pub entries: Vec<IndexEntry>,
}

fn kind_byte(kind: ObjectKind) -> u8 {
    match kind {
        ObjectKind::File => 1,
        ObjectKind::Tree => 2,
        // Not listed: the commit travels in the index itself.
        ObjectKind::Commit => 0,
    }
}

impl Index {
    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(24 + self.commit.len() + self.entries.len() * 49);
        INDEX.write(&mut w);
        wire::put_u32(&mut w, wire::len_u32(self.commit.len()));
        w.extend_from_slice(&self.commit);
        wire::put_u32(&mut w, wire::len_u32(self.signatures.len()));
        w.extend_from_slice(&self.signatures);
        wire::put_u32(&mut w, wire::len_u32(self.entries.len()));
        for e in &self.entries {
            wire::put_u8(&mut w, kind_byte(e.kind));
            w.extend_from_slice(e.id.as_bytes());
            wire::put_u64(&mut w, e.stored);
            wire::put_u64(&mut w, e.size);
        }
        w
    }

    /// Decodes an index (call only after its sha256 matched the signed pointer's).
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes, INDEX.what);
        INDEX.read(&mut r)?;
        let n = Reader::len(
            u64::from(r.u32()?),
            crate::limits::COMMIT_MAX,
            "index commit length",
        )?;
        let commit = r.bytes(n)?.to_vec();
        let n = Reader::len(
            u64::from(r.u32()?),
            crate::update::SIGNATURES_BYTES_MAX,
            "index signatures length",
        )?;
        let signatures = r.bytes(n)?.to_vec();
        let count = Reader::len(u64::from(r.u32()?), ENTRIES_MAX, "index entry count")?;
        // Each entry is 49 bytes: a count the bytes cannot hold is refused before
        // anything is allocated for it.
        let mut entries: Vec<IndexEntry> = Vec::with_capacity(count.min(bytes.len() / 49));
        for _ in 0..count {
            let kind = match r.u8()? {
                1 => ObjectKind::File,
                2 => ObjectKind::Tree,
                v => {
                    return Err(FormatError::Invalid {
                        what: "index entry kind",
                        value: u64::from(v),
                    });
                }
            };
            let e = IndexEntry {
                kind,
                id: ObjectId::from_bytes(r.array()?),
                stored: r.u64()?,
                size: r.u64()?,
            };
            if e.stored == 0 {
                return Err(FormatError::Invalid {
                    what: "index entry stored length",
                    value: 0,
                });
            }
            if entries
                .last()
                .is_some_and(|p| (p.id, kind_byte(p.kind)) >= (e.id, kind_byte(e.kind)))
            {
                return Err(FormatError::NotSorted {
                    what: "index entries",
                });
            }
            entries.push(e);
        }
        r.finish()?;
        Ok(Self {
            commit,
            signatures,
            entries,
        })
    }

    /// The entry of an object, if the index lists it.
    pub fn find(&self, id: &ObjectId, kind: ObjectKind) -> Option<&IndexEntry> {
        let key = (*id, kind_byte(kind));
        self.entries
            .binary_search_by(|e| (e.id, kind_byte(e.kind)).cmp(&key))
            .ok()
            .and_then(|i| self.entries.get(i))
    }

    /// Bytes of every object it lists, as published.
    pub fn stored_total(&self) -> u64 {
        self.entries
            .iter()
            .fold(0u64, |n, e| n.saturating_add(e.stored))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Index {
        let e = |n: u8, kind| IndexEntry {
            kind,
            id: ObjectId::from_bytes([n; 32]),
            stored: 10 + u64::from(n),
            size: 100 + u64::from(n),
        };
        Index {
            commit: b"BRTC commit bytes".to_vec(),
            signatures: b"sigs".to_vec(),
            entries: alloc::vec![
                e(1, ObjectKind::File),
                e(1, ObjectKind::Tree),
                e(7, ObjectKind::Tree)
            ],
        }
    }

    #[test]
    fn round_trip_and_find() {
        let i = sample();
        let bytes = i.encode();
        assert_eq!(Index::decode(&bytes).unwrap(), i);
        let id = ObjectId::from_bytes([1; 32]);
        assert_eq!(i.find(&id, ObjectKind::Tree).unwrap().size, 101);
        assert_eq!(
            i.find(&id, ObjectKind::File).unwrap().kind,
            ObjectKind::File
        );
        assert!(
            i.find(&ObjectId::from_bytes([7; 32]), ObjectKind::File)
                .is_none()
        );
        assert_eq!(i.stored_total(), 11 + 11 + 17);
    }

    #[test]
    fn refusals() {
        let mut i = sample();
        i.entries.swap(1, 2);
        assert!(Index::decode(&i.encode()).is_err(), "unsorted");
        let mut i = sample();
        i.entries[1] = i.entries[0];
        assert!(Index::decode(&i.encode()).is_err(), "duplicate");
        let mut i = sample();
        i.entries[0].stored = 0;
        assert!(Index::decode(&i.encode()).is_err(), "empty object");
        let mut i = sample();
        i.entries[0].kind = ObjectKind::Commit;
        assert!(Index::decode(&i.encode()).is_err(), "a commit entry");
        let bytes = sample().encode();
        assert!(
            Index::decode(&bytes[..bytes.len() - 1]).is_err(),
            "truncated"
        );
        let mut long = bytes.clone();
        long.push(0);
        assert!(Index::decode(&long).is_err(), "trailing bytes");
        // A count far beyond the bytes is refused without allocating for it.
        let mut lying = Index {
            entries: Vec::new(),
            ..sample()
        }
        .encode();
        let at = lying.len() - 4;
        lying[at..].copy_from_slice(&4_000_000u32.to_le_bytes());
        assert!(Index::decode(&lying).is_err(), "count past the bytes");
    }
}
