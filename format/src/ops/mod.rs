//! The operations inside an update's parts (see `docs/FORMAT.md`, "Part operations").
//!
//! A decompressed part is a sequence of operations, each
//! `kind (u8) | head length (u32 LE) | head | payload`. No operation names the object it
//! makes: the device hashes what it writes, and later operations of the same part refer
//! to it by position ([`ObjRef::Local`]). Objects of the device's base commit are named by
//! their position in that commit's walk ([`ObjRef::Base`], see [`base_order`]). What
//! checks the result is the commit's root tree id, signed in the superblock: a wrong byte
//! anywhere changes that id, and the update is refused as incomplete.
//!
//! Trees travel as edits of the tree at the same place in the base commit ([`TreeOp`]),
//! so an unchanged entry costs a byte or less instead of its 32-byte id, and files as
//! whole content or as bsdiff-style patches against a base object, cut into windows
//! ([`PatchHead`]) so that no side ever needs a whole large file in memory.

use alloc::vec::Vec;

use crate::limits::{NAME_MAX, TREE_ENTRIES_MAX};
use crate::wire::{self, Reader};
use crate::{
    DirMeta, EntryKind, EntryName, FileHeader, FileKind, FormatError, ObjectId, Tree, TreeEntry,
};

/// A file object: head is its [`FileHeader`]; payload its `size` bytes of content.
pub const FILE: u8 = 1;
/// A tree object: head is a [`TreeOp`]; no payload.
pub const TREE: u8 = 2;
/// A regular file as a patch: head is a [`PatchHead`]; payload the windows' patches in
/// order, each a bidiff (bsdiff-style) patch of `patch_len` bytes.
pub const FILE_PATCH: u8 = 3;

/// A regular file holding one deflate stream (a gzip member, say), as a patch of its
/// uncompressed data: head is a [`DeflateHead`]; payload the reconstruction data
/// (`corrections_len` bytes), then a bidiff patch (`patch_len` bytes) that turns the
/// base's uncompressed data into the new file's. An update that holds one sets
/// [`crate::update::FLAG_DEFLATE_PATCH`].
pub const DEFLATE_PATCH: u8 = 4;

/// An ELF file (program, shared library, kernel module) as a patch with its code's
/// references (relative calls, jumps, RIP-relative operands, `AArch64` branches) rewritten
/// into the base's addresses before the diff: head is an [`crate::elfpatch::ElfHead`];
/// payload as a [`FILE_PATCH`]'s, the windows' patches, which make the *normalized*
/// file that the head's reference map turns back into the new one. An update that holds
/// one sets [`crate::update::FLAG_ELF_PATCH`].
pub const ELF_PATCH: u8 = 5;

/// A regular file of stored stretches and deflate streams (a zip archive: each member a
/// deflate stream) as a patch of its expansion, each stream replaced by its uncompressed
/// data: head is a [`crate::zippatch::ZipHead`]; payload the new streams' reconstruction
/// data, then a bidiff patch from the base's expansion to the new file's. An update that
/// holds one sets [`crate::update::FLAG_ZIP_PATCH`].
pub const ZIP_PATCH: u8 = 6;

/// Largest operation head.
pub const HEAD_MAX: usize = 64 << 20;
/// Most windows in one patch.
pub const WINDOWS_MAX: usize = 1 << 16;

/// Where an operation finds an object the device already has or has just made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjRef {
    /// The object made `n` operations ago in this part (1 is the one just before).
    Local(u64),
    /// Entry `n` of the base commit's walk (see [`base_order`]).
    Base(u64),
    /// An object named in full (one made in an earlier part, or one the device has).
    Id(ObjectId),
}

/// One step of a [`TreeOp`], walking the base tree's sorted entries with a cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Keep the next `n` base entries as they are.
    Copy(u64),
    /// Drop the next `n` base entries.
    Skip(u64),
    /// Keep the next base entry's name and kind, pointing at another object.
    Replace(ObjRef),
    /// Add an entry.
    New {
        /// Its name.
        name: EntryName,
        /// File or tree.
        kind: EntryKind,
        /// What it points at.
        target: ObjRef,
    },
}

/// A tree, as edits of a base tree the device has (or of an empty one). Base entries
/// left after the last edit are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeOp {
    /// The base tree, as an index into the base commit's walk.
    pub base: Option<u64>,
    /// The new tree's own metadata.
    pub meta: DirMeta,
    /// The edits, in base order.
    pub edits: Vec<Edit>,
}

// Edit commands: a varint `arg << 3 | cmd`.
const CMD_COPY: u64 = 0;
const CMD_SKIP: u64 = 1;
const CMD_REPLACE_LOCAL: u64 = 2;
const CMD_REPLACE_BASE: u64 = 3;
const CMD_REPLACE_ID: u64 = 4;
const CMD_NEW: u64 = 5;

fn put_ref_kind(r: &ObjRef) -> u64 {
    match r {
        ObjRef::Local(_) => 0,
        ObjRef::Base(_) => 1,
        ObjRef::Id(_) => 2,
    }
}

fn put_ref_value(w: &mut Vec<u8>, r: &ObjRef) {
    match r {
        ObjRef::Local(n) | ObjRef::Base(n) => wire::put_varint(w, *n),
        ObjRef::Id(id) => w.extend_from_slice(id.as_bytes()),
    }
}

fn read_ref(r: &mut Reader<'_>, kind: u64) -> Result<ObjRef, FormatError> {
    Ok(match kind {
        0 => ObjRef::Local(r.varint()?),
        1 => ObjRef::Base(r.varint()?),
        2 => ObjRef::Id(ObjectId::from_bytes(r.array()?)),
        v => {
            return Err(FormatError::Invalid {
                what: "tree edit reference kind",
                value: v,
            });
        }
    })
}

impl TreeOp {
    /// The encoding: base (varint, 0 for none, else index + 1), the directory's
    /// metadata as in a tree, then the edits to the end.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(16 + self.edits.len() * 4);
        wire::put_varint(&mut w, self.base.map_or(0, |b| b.saturating_add(1)));
        self.meta.write(&mut w);
        for e in &self.edits {
            match e {
                Edit::Copy(n) => wire::put_varint(&mut w, n << 3 | CMD_COPY),
                Edit::Skip(n) => wire::put_varint(&mut w, n << 3 | CMD_SKIP),
                Edit::Replace(r @ (ObjRef::Local(n) | ObjRef::Base(n))) => {
                    let cmd = if matches!(r, ObjRef::Local(_)) {
                        CMD_REPLACE_LOCAL
                    } else {
                        CMD_REPLACE_BASE
                    };
                    wire::put_varint(&mut w, n << 3 | cmd);
                }
                Edit::Replace(ObjRef::Id(id)) => {
                    wire::put_varint(&mut w, CMD_REPLACE_ID);
                    w.extend_from_slice(id.as_bytes());
                }
                Edit::New { name, kind, target } => {
                    let arg = put_ref_kind(target) << 1 | u64::from(*kind == EntryKind::Tree);
                    wire::put_varint(&mut w, arg << 3 | CMD_NEW);
                    // EntryName guarantees 1..=255 bytes.
                    wire::put_u8(
                        &mut w,
                        u8::try_from(name.as_bytes().len()).unwrap_or(u8::MAX),
                    );
                    w.extend_from_slice(name.as_bytes());
                    put_ref_value(&mut w, target);
                }
            }
        }
        w
    }

    /// Parses a tree operation's head.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes, "tree operation");
        let base = r.varint()?.checked_sub(1);
        let meta = DirMeta::read(&mut r)?;
        let mut edits = Vec::new();
        while !r.is_empty() {
            let v = r.varint()?;
            let (arg, cmd) = (v >> 3, v & 7);
            edits.push(match cmd {
                CMD_COPY | CMD_SKIP if arg == 0 => {
                    return Err(FormatError::Invalid {
                        what: "tree edit run of zero entries",
                        value: cmd,
                    });
                }
                CMD_COPY => Edit::Copy(arg),
                CMD_SKIP => Edit::Skip(arg),
                CMD_REPLACE_LOCAL => Edit::Replace(ObjRef::Local(arg)),
                CMD_REPLACE_BASE => Edit::Replace(ObjRef::Base(arg)),
                CMD_REPLACE_ID if arg == 0 => {
                    Edit::Replace(ObjRef::Id(ObjectId::from_bytes(r.array()?)))
                }
                CMD_NEW => {
                    let kind = if arg & 1 == 1 {
                        EntryKind::Tree
                    } else {
                        EntryKind::File
                    };
                    let n = Reader::len(u64::from(r.u8()?), NAME_MAX, "entry name length")?;
                    let name = EntryName::new(r.bytes(n)?)?;
                    let target = read_ref(&mut r, arg >> 1)?;
                    Edit::New { name, kind, target }
                }
                _ => {
                    return Err(FormatError::Invalid {
                        what: "tree edit command",
                        value: v,
                    });
                }
            });
        }
        Ok(Self { base, meta, edits })
    }

    /// The edits that turn `base` (the tree at index `.0` of the base walk) into
    /// `target`; `refer` says how to name the object of a changed or added entry.
    pub fn diff(
        base: Option<(u64, &Tree)>,
        target: &Tree,
        mut refer: impl FnMut(&TreeEntry) -> ObjRef,
    ) -> Self {
        let old: &[TreeEntry] = base.map_or(&[], |(_, t)| t.entries());
        let mut edits: Vec<Edit> = Vec::new();
        let push_run = |edits: &mut Vec<Edit>, copy: bool| match (edits.last_mut(), copy) {
            (Some(Edit::Copy(n)), true) | (Some(Edit::Skip(n)), false) => *n += 1,
            (_, true) => edits.push(Edit::Copy(1)),
            (_, false) => edits.push(Edit::Skip(1)),
        };
        let (mut i, mut j) = (0, 0);
        let new = target.entries();
        while i < old.len() || j < new.len() {
            match (old.get(i), new.get(j)) {
                (Some(o), Some(n)) if o.name == n.name => {
                    if o.kind != n.kind {
                        push_run(&mut edits, false);
                        edits.push(Edit::New {
                            name: n.name.clone(),
                            kind: n.kind,
                            target: refer(n),
                        });
                    } else if o.id == n.id {
                        push_run(&mut edits, true);
                    } else {
                        edits.push(Edit::Replace(refer(n)));
                    }
                    i += 1;
                    j += 1;
                }
                (Some(o), Some(n)) if n.name < o.name => {
                    edits.push(Edit::New {
                        name: n.name.clone(),
                        kind: n.kind,
                        target: refer(n),
                    });
                    j += 1;
                }
                (Some(_), _) => {
                    push_run(&mut edits, false);
                    i += 1;
                }
                (None, Some(n)) => {
                    edits.push(Edit::New {
                        name: n.name.clone(),
                        kind: n.kind,
                        target: refer(n),
                    });
                    j += 1;
                }
                (None, None) => break,
            }
        }
        // Trailing base entries are kept without saying so.
        if let Some(Edit::Copy(_)) = edits.last() {
            edits.pop();
        }
        Self {
            base: base.map(|(b, _)| b),
            meta: target.meta().clone(),
            edits,
        }
    }

    /// Builds the tree: `base` is the tree that [`TreeOp::base`] names (the caller
    /// loads it), and `resolve` turns a reference into an object id, given the kind of
    /// the entry that needs it (the device refuses a reference to the wrong kind).
    pub fn build(
        &self,
        base: Option<&Tree>,
        mut resolve: impl FnMut(&ObjRef, EntryKind) -> Result<ObjectId, FormatError>,
    ) -> Result<Tree, FormatError> {
        if base.is_some() != self.base.is_some() {
            return Err(FormatError::Invalid {
                what: "tree operation base (given without one, or missing)",
                value: u64::from(base.is_some()),
            });
        }
        let old: &[TreeEntry] = base.map_or(&[], Tree::entries);
        let past_end = |what| FormatError::Invalid {
            what,
            value: old.len() as u64,
        };
        let mut at = 0usize;
        let mut out: Vec<TreeEntry> = Vec::new();
        let room = |out: &Vec<TreeEntry>, more: usize| {
            if out.len().saturating_add(more) > TREE_ENTRIES_MAX {
                Err(FormatError::TooLarge {
                    what: "tree entry count",
                    len: (out.len() + more) as u64,
                    limit: TREE_ENTRIES_MAX as u64,
                })
            } else {
                Ok(())
            }
        };
        for e in &self.edits {
            match e {
                Edit::Copy(n) | Edit::Skip(n) => {
                    let n = usize::try_from(*n).unwrap_or(usize::MAX);
                    let end = at
                        .checked_add(n)
                        .filter(|&end| end <= old.len())
                        .ok_or_else(|| past_end("tree edit past the base's last entry"))?;
                    if matches!(e, Edit::Copy(_)) {
                        room(&out, n)?;
                        out.extend_from_slice(&old[at..end]);
                    }
                    at = end;
                }
                Edit::Replace(r) => {
                    let o = old
                        .get(at)
                        .ok_or_else(|| past_end("tree edit replaces past the base's last entry"))?;
                    room(&out, 1)?;
                    out.push(TreeEntry {
                        name: o.name.clone(),
                        kind: o.kind,
                        id: resolve(r, o.kind)?,
                    });
                    at += 1;
                }
                Edit::New { name, kind, target } => {
                    room(&out, 1)?;
                    out.push(TreeEntry {
                        name: name.clone(),
                        kind: *kind,
                        id: resolve(target, *kind)?,
                    });
                }
            }
        }
        room(&out, old.len() - at)?;
        out.extend_from_slice(&old[at..]);
        Tree::new(self.meta.clone(), out)
    }
}

/// The base commit's walk: every entry's object, depth first in name order, a tree
/// before its entries, the root tree first (index 0). [`ObjRef::Base`] indexes it.
/// `read_tree` loads a tree of the base commit.
pub fn base_order<E>(
    root: &ObjectId,
    read_tree: &mut impl FnMut(&ObjectId) -> Result<Tree, E>,
    out: &mut Vec<(ObjectId, EntryKind)>,
) -> Result<(), E> {
    out.push((*root, EntryKind::Tree));
    walk(root, read_tree, out, 0)
}

fn walk<E>(
    tree: &ObjectId,
    read_tree: &mut impl FnMut(&ObjectId) -> Result<Tree, E>,
    out: &mut Vec<(ObjectId, EntryKind)>,
    depth: usize,
) -> Result<(), E> {
    // A base commit is the device's own, already checked; depth is bounded by the store.
    if depth > crate::limits::TREE_DEPTH_MAX {
        return Ok(());
    }
    let t = read_tree(tree)?;
    for e in t.entries() {
        out.push((e.id, e.kind));
        if e.kind == EntryKind::Tree {
            walk(&e.id, read_tree, out, depth + 1)?;
        }
    }
    Ok(())
}

/// One window of a patch: `out_len` bytes of the new file, made from the base file's
/// bytes `base_start .. base_start + base_len` by a patch of `patch_len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Where the window's base bytes start in the base file.
    pub base_start: u64,
    /// How many base bytes the window's patch may read.
    pub base_len: u64,
    /// How many bytes of the new file the window makes.
    pub out_len: u64,
    /// The length of the window's patch in the payload.
    pub patch_len: u64,
}

/// The head of a [`FILE_PATCH`] operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchHead {
    /// The new file's header (a regular file).
    pub header: FileHeader,
    /// The base file, as an index into the base commit's walk.
    pub base: u64,
    /// The windows, in the new file's order; their `out_len` add up to its size.
    pub windows: Vec<Window>,
}

/// A patch head's length-prefixed header of the file it makes (at most `len` bytes),
/// which must be a regular file's: only regular files are patched.
pub(crate) fn patched_header(
    r: &mut Reader<'_>,
    len: usize,
    what: &'static str,
) -> Result<FileHeader, FormatError> {
    let n = Reader::len(r.varint()?, len, what)?;
    let header = FileHeader::decode(r.bytes(n)?)?;
    if header.kind != FileKind::Regular {
        return Err(FormatError::Invalid {
            what: "patched file kind (only regular files are patched)",
            value: header.kind as u64,
        });
    }
    Ok(header)
}

impl PatchHead {
    /// The encoding: header length (varint), header, base (varint), window count
    /// (varint), then four varints per window.
    pub fn encode(&self) -> Vec<u8> {
        let h = self.header.encode();
        let mut w = Vec::with_capacity(h.len() + 8 + self.windows.len() * 12);
        wire::put_varint(&mut w, h.len() as u64);
        w.extend_from_slice(&h);
        wire::put_varint(&mut w, self.base);
        wire::put_varint(&mut w, self.windows.len() as u64);
        for win in &self.windows {
            for v in [win.base_start, win.base_len, win.out_len, win.patch_len] {
                wire::put_varint(&mut w, v);
            }
        }
        w
    }

    /// Parses and checks a patch head: a regular file, 1 to [`WINDOWS_MAX`] windows
    /// whose outputs add up to the header's size, and no sum that overflows.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes, "patch operation");
        let head = Self::read(&mut r, bytes.len())?;
        r.finish()?;
        Ok(head)
    }

    /// [`PatchHead::decode`]'s parsing and checks, from `r` (at most `len` bytes),
    /// leaving what follows to the caller (an [`ELF_PATCH`]'s head goes on).
    pub(crate) fn read(r: &mut Reader<'_>, len: usize) -> Result<Self, FormatError> {
        let header = patched_header(r, len, "patch header length")?;
        let base = r.varint()?;
        let count = Reader::len(r.varint()?, WINDOWS_MAX, "patch window count")?;
        if count == 0 || count.saturating_mul(4) > len {
            return Err(FormatError::Invalid {
                what: "patch window count",
                value: count as u64,
            });
        }
        let mut windows = Vec::with_capacity(count);
        let (mut out, mut patch) = (0u64, 0u64);
        let overflow = |what| FormatError::Overflow { what };
        for _ in 0..count {
            let win = Window {
                base_start: r.varint()?,
                base_len: r.varint()?,
                out_len: r.varint()?,
                patch_len: r.varint()?,
            };
            win.base_start
                .checked_add(win.base_len)
                .ok_or(overflow("patch window base range"))?;
            out = out
                .checked_add(win.out_len)
                .ok_or(overflow("patch window output sum"))?;
            patch = patch
                .checked_add(win.patch_len)
                .ok_or(overflow("patch length sum"))?;
            windows.push(win);
        }
        if out != header.size {
            return Err(FormatError::Invalid {
                what: "patch windows' output (must add up to the file's size)",
                value: out,
            });
        }
        Ok(Self {
            header,
            base,
            windows,
        })
    }

    /// The payload's length: the sum of the windows' patch lengths.
    pub fn payload_len(&self) -> u64 {
        self.windows.iter().map(|w| w.patch_len).sum()
    }
}

/// Most uncompressed bytes on either side of a [`DEFLATE_PATCH`]: the device holds
/// them in memory (the base's, then the new file's with its reconstruction state, about
/// four times as much), so this bounds its memory.
pub const DEFLATE_PLAIN_MAX: u64 = 8 << 20;
/// Longest deflate stream a [`DEFLATE_PATCH`] makes.
pub const DEFLATE_STREAM_MAX: u64 = 2 * DEFLATE_PLAIN_MAX;
/// Longest reconstruction data of a [`DEFLATE_PATCH`] (held in memory on the device).
pub const DEFLATE_CORRECTIONS_MAX: u64 = 2 << 20;
/// Longest bytes before or after the deflate stream (a gzip header with its name and
/// comment; the trailer) in a [`DEFLATE_PATCH`].
pub const DEFLATE_FRAME_MAX: usize = 64 << 10;

/// The head of a [`DEFLATE_PATCH`] operation. The new file is `prefix`, then the deflate
/// stream that the reconstruction data recreates from the new uncompressed data, then
/// `suffix`; the new uncompressed data is the bidiff patch applied to the base's
/// (the deflate stream starting at `base_start` in the base file, inflated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeflateHead {
    /// The new file's header (a regular file).
    pub header: FileHeader,
    /// The base file, as an index into the base commit's walk.
    pub base: u64,
    /// Where the base's deflate stream starts in the base file.
    pub base_start: u64,
    /// The base's uncompressed length: its stream must inflate to exactly this.
    pub base_plain: u64,
    /// The new file's uncompressed length: the patch must make exactly this.
    pub plain: u64,
    /// The new file's bytes before its deflate stream.
    pub prefix: Vec<u8>,
    /// The length of the new deflate stream: the reconstruction must make exactly this.
    pub stream_len: u64,
    /// The new file's bytes after its deflate stream.
    pub suffix: Vec<u8>,
    /// The length of the reconstruction data, first in the payload.
    pub corrections_len: u64,
    /// The length of the patch of the uncompressed data, after it.
    pub patch_len: u64,
}

impl DeflateHead {
    /// The encoding: header length (varint), header, then varints `base`,
    /// `base_start`, `base_plain`, `plain`; the prefix's length (varint) and bytes;
    /// `stream_len` (varint); the suffix's length (varint) and bytes; `corrections_len`
    /// and `patch_len` (varints).
    pub fn encode(&self) -> Vec<u8> {
        let h = self.header.encode();
        let mut w = Vec::with_capacity(h.len() + 48 + self.prefix.len() + self.suffix.len());
        wire::put_varint(&mut w, h.len() as u64);
        w.extend_from_slice(&h);
        for v in [self.base, self.base_start, self.base_plain, self.plain] {
            wire::put_varint(&mut w, v);
        }
        wire::put_varint(&mut w, self.prefix.len() as u64);
        w.extend_from_slice(&self.prefix);
        wire::put_varint(&mut w, self.stream_len);
        wire::put_varint(&mut w, self.suffix.len() as u64);
        w.extend_from_slice(&self.suffix);
        wire::put_varint(&mut w, self.corrections_len);
        wire::put_varint(&mut w, self.patch_len);
        w
    }

    /// Parses and checks a deflate patch head: a regular file whose size is the prefix,
    /// the stream and the suffix, every length within its limit.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes, "deflate patch operation");
        let header = patched_header(&mut r, bytes.len(), "deflate patch header length")?;
        let base = r.varint()?;
        let base_start = r.varint()?;
        let limit = |r: &mut Reader<'_>, max: u64, what| {
            let v = r.varint()?;
            if v > max {
                return Err(FormatError::TooLarge {
                    what,
                    len: v,
                    limit: max,
                });
            }
            Ok(v)
        };
        let base_plain = limit(
            &mut r,
            DEFLATE_PLAIN_MAX,
            "deflate patch base's uncompressed length",
        )?;
        let plain = limit(
            &mut r,
            DEFLATE_PLAIN_MAX,
            "deflate patch uncompressed length",
        )?;
        let n = Reader::len(
            r.varint()?,
            DEFLATE_FRAME_MAX,
            "deflate patch prefix length",
        )?;
        let prefix = r.bytes(n)?.to_vec();
        let stream_len = limit(&mut r, DEFLATE_STREAM_MAX, "deflate patch stream length")?;
        let n = Reader::len(
            r.varint()?,
            DEFLATE_FRAME_MAX,
            "deflate patch suffix length",
        )?;
        let suffix = r.bytes(n)?.to_vec();
        let corrections_len = limit(
            &mut r,
            DEFLATE_CORRECTIONS_MAX,
            "deflate patch reconstruction data length",
        )?;
        let patch_len = r.varint()?;
        r.finish()?;
        base_start.checked_add(1).ok_or(FormatError::Overflow {
            what: "deflate patch base start",
        })?;
        patch_len
            .checked_add(corrections_len)
            .ok_or(FormatError::Overflow {
                what: "deflate patch payload length",
            })?;
        // Small values (each bounded above), so no overflow.
        let size = (prefix.len() + suffix.len()) as u64 + stream_len;
        if size != header.size {
            return Err(FormatError::Invalid {
                what: "deflate patch size (prefix, stream and suffix must make the file's size)",
                value: size,
            });
        }
        Ok(Self {
            header,
            base,
            base_start,
            base_plain,
            plain,
            prefix,
            stream_len,
            suffix,
            corrections_len,
            patch_len,
        })
    }

    /// The payload's length: the reconstruction data and the patch.
    pub fn payload_len(&self) -> u64 {
        self.corrections_len.saturating_add(self.patch_len)
    }
}

#[cfg(test)]
mod tests;
