//! Tree objects: one directory's metadata and its sorted entries (a Merkle node).

use alloc::vec::Vec;

use crate::limits::{NAME_MAX, TREE_ENTRIES_MAX};
use crate::meta::MODE_BITS;
use crate::wire::{self, Preamble, Reader};
use crate::{EntryName, FormatError, ObjectId, Xattrs};

const TREE: Preamble = Preamble {
    magic: *b"BRTT",
    version: 1,
    what: "tree",
};

/// A directory's own metadata.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DirMeta {
    /// Permission bits, including setgid and sticky.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Extended attributes.
    pub xattrs: Xattrs,
}

impl DirMeta {
    /// Mode, owner, group and xattrs, as in a tree's encoding.
    pub(crate) fn write(&self, w: &mut Vec<u8>) {
        wire::put_u32(w, self.mode);
        wire::put_u32(w, self.uid);
        wire::put_u32(w, self.gid);
        self.xattrs.write(w);
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, FormatError> {
        let mode = r.u32()?;
        if mode & !MODE_BITS != 0 {
            return Err(FormatError::Invalid {
                what: "directory mode",
                value: u64::from(mode),
            });
        }
        Ok(Self {
            mode,
            uid: r.u32()?,
            gid: r.u32()?,
            xattrs: Xattrs::read(r)?,
        })
    }
}

/// What a tree entry points at. The numeric values are part of the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EntryKind {
    /// A file object (regular file, symlink, device node or FIFO).
    File = 1,
    /// A tree object (a subdirectory).
    Tree = 2,
}

/// One named entry of a directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TreeEntry {
    /// The entry's name in its directory.
    pub name: EntryName,
    /// Whether `id` names a file or a tree.
    pub kind: EntryKind,
    /// The object the entry points at.
    pub id: ObjectId,
}

/// A directory: its metadata and its entries, sorted by name bytes, names unique.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tree {
    meta: DirMeta,
    entries: Vec<TreeEntry>,
}

impl Tree {
    /// Builds a tree from entries in any order; fails on a duplicate name.
    ///
    /// Sorting here is what makes a tree's id independent of the order in which a
    /// filesystem listed the directory.
    pub fn new(meta: DirMeta, mut entries: Vec<TreeEntry>) -> Result<Self, FormatError> {
        if meta.mode & !MODE_BITS != 0 {
            return Err(FormatError::Invalid {
                what: "directory mode",
                value: u64::from(meta.mode),
            });
        }
        if entries.len() > TREE_ENTRIES_MAX {
            return Err(FormatError::TooLarge {
                what: "tree entry count",
                len: entries.len() as u64,
                limit: TREE_ENTRIES_MAX as u64,
            });
        }
        entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        if entries.windows(2).any(|w| w[0].name == w[1].name) {
            return Err(FormatError::NotSorted {
                what: "tree entry names",
            });
        }
        Ok(Self { meta, entries })
    }

    /// The directory's own metadata.
    pub fn meta(&self) -> &DirMeta {
        &self.meta
    }

    /// The entries, sorted by name.
    pub fn entries(&self) -> &[TreeEntry] {
        &self.entries
    }

    /// The canonical encoding (see `docs/FORMAT.md`, "Tree objects").
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(24 + self.entries.len() * 48);
        TREE.write(&mut w);
        self.meta.write(&mut w);
        wire::put_u32(&mut w, wire::len_u32(self.entries.len()));
        for e in &self.entries {
            wire::put_u8(&mut w, e.kind as u8);
            // EntryName guarantees 1..=255 bytes.
            wire::put_u8(
                &mut w,
                u8::try_from(e.name.as_bytes().len()).unwrap_or(u8::MAX),
            );
            w.extend_from_slice(e.name.as_bytes());
            w.extend_from_slice(e.id.as_bytes());
        }
        w
    }

    /// The tree's object id: the sha256 of its encoding.
    pub fn id(&self) -> ObjectId {
        ObjectId::digest(&self.encode())
    }

    /// Parses exactly one encoded tree.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes, TREE.what);
        TREE.read(&mut r)?;
        let meta = DirMeta::read(&mut r)?;
        let raw = r.u32()?;
        let count = Reader::len(u64::from(raw), TREE_ENTRIES_MAX, "tree entry count")?;
        // Each entry takes at least 35 bytes, so a count the input cannot hold is
        // rejected before reserving memory for it.
        if count.saturating_mul(35) > bytes.len() {
            return Err(FormatError::Truncated { what: TREE.what });
        }
        let mut entries: Vec<TreeEntry> = Vec::with_capacity(count);
        for _ in 0..count {
            let kind = match r.u8()? {
                1 => EntryKind::File,
                2 => EntryKind::Tree,
                v => {
                    return Err(FormatError::Invalid {
                        what: "tree entry kind",
                        value: u64::from(v),
                    });
                }
            };
            let n = Reader::len(u64::from(r.u8()?), NAME_MAX, "entry name length")?;
            let name = EntryName::new(r.bytes(n)?)?;
            let id = ObjectId::from_bytes(r.array()?);
            if entries.last().is_some_and(|prev| prev.name >= name) {
                return Err(FormatError::NotSorted {
                    what: "tree entry names",
                });
            }
            entries.push(TreeEntry { name, kind, id });
        }
        r.finish()?;
        Ok(Self { meta, entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn entry(name: &[u8], kind: EntryKind, seed: u8) -> TreeEntry {
        TreeEntry {
            name: EntryName::new(name).unwrap(),
            kind,
            id: ObjectId::from_bytes([seed; 32]),
        }
    }

    fn meta() -> DirMeta {
        DirMeta {
            mode: 0o1777,
            uid: 0,
            gid: 0,
            xattrs: Xattrs::new(),
        }
    }

    #[test]
    fn order_independent_and_round_trips() {
        let a = vec![
            entry(b"b", EntryKind::File, 1),
            entry(b"a", EntryKind::Tree, 2),
            entry(b"\xff", EntryKind::File, 3),
        ];
        let mut b = a.clone();
        b.reverse();
        let ta = Tree::new(meta(), a).unwrap();
        let tb = Tree::new(meta(), b).unwrap();
        assert_eq!(ta.id(), tb.id());
        assert_eq!(Tree::decode(&ta.encode()), Ok(ta.clone()));
        assert_eq!(ta.entries()[0].name.as_bytes(), b"a");
    }

    #[test]
    fn rejects_duplicates_and_bad_bytes() {
        assert!(
            Tree::new(
                meta(),
                vec![
                    entry(b"a", EntryKind::File, 1),
                    entry(b"a", EntryKind::Tree, 2)
                ]
            )
            .is_err()
        );
        let t = Tree::new(
            meta(),
            vec![
                entry(b"a", EntryKind::File, 1),
                entry(b"b", EntryKind::File, 2),
            ],
        )
        .unwrap();
        let bytes = t.encode();
        for cut in 0..bytes.len() {
            assert!(Tree::decode(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        // Swap the two names so they are out of order.
        let mut swapped = bytes.clone();
        let first = bytes.len() - 2 * 35 + 2;
        swapped[first] = b'b';
        swapped[first + 35] = b'a';
        assert_eq!(
            Tree::decode(&swapped),
            Err(FormatError::NotSorted {
                what: "tree entry names"
            })
        );
        // A name with '/' is refused even if everything else is well formed.
        let mut slash = bytes.clone();
        slash[first] = b'/';
        assert!(matches!(
            Tree::decode(&slash),
            Err(FormatError::BadName { .. })
        ));
        // A huge count in a small buffer is refused before allocation.
        let mut huge = bytes;
        let count_at = 4 + 2 + 2 + 12 + 4;
        huge[count_at..count_at + 4].copy_from_slice(&0x000f_ffffu32.to_le_bytes());
        assert!(Tree::decode(&huge).is_err());
    }
}
