//! Applying one part's operations (`format::ops`) to a store transaction.
//!
//! Operations do not name the objects they make: each object is hashed as it is written
//! and remembered in `made`, so that later trees of the same part can point at it by
//! position. The commit's signed root tree id checks the whole result afterwards.
//!
//! Memory stays bounded whatever the update claims: an operation's head is read only up
//! to [`ops::HEAD_MAX`] (and only as far as the part's capped stream really goes), file
//! content and patches stream through, and a patch reads its base through a window of
//! the base file with `pread`, so nothing holds a whole file.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::path::Path;

use format::elfpatch::ElfHead;
use format::ops::{self, DeflateHead, ObjRef, PatchHead, TreeOp};
use format::zippatch::ZipHead;
use format::{EntryKind, FileHeader, FileKind, FormatError, ObjectId, ObjectKind};
use store::{Repo, Txn};

use crate::UpdaterError;
use crate::checks::TreeChecks;
use crate::error::bad;
use crate::policy::Forbidden;

mod compressed;
mod patch;

/// The walk of the commit an update starts from (see `format::ops::base_order`), which
/// `ObjRef::Base` indexes; empty for a full update.
pub(crate) fn base_order(
    repo: &Repo,
    from: Option<&ObjectId>,
) -> Result<Vec<(ObjectId, EntryKind)>, UpdaterError> {
    let mut out = Vec::new();
    if let Some(from) = from {
        let (commit, _) = repo.read_commit(from)?;
        ops::base_order(&commit.root, &mut |id| repo.read_tree(id), &mut out)?;
    }
    Ok(out)
}

/// What one part's operations made so far, and where to find the base's objects.
///
/// A deflate patch's stream is recreated by a child process while the next operations
/// are applied: its file waits in `waiting` (and `made` holds `None` for it until it is
/// written), and so does every tree read after it, since a tree needs its entries'
/// ids. They are settled in order when the replies come: at the part's end
/// ([`Applier::finish`]), before a zip patch, or when what waits would hold more than
/// [`WAITING_BYTES_MAX`].
pub(crate) struct Applier<'a, 'r> {
    pub repo: &'a Repo,
    pub base: &'a [(ObjectId, EntryKind)],
    pub shown: &'a Path,
    made: Vec<(Option<ObjectId>, EntryKind)>,
    /// Operations read so far (errors name the operation, from 1).
    ops: u64,
    forbid: Forbidden,
    checks: &'a mut TreeChecks<'r>,
    /// The child that recreates deflate streams, on a thread of its own.
    background: crate::deflate::Background,
    /// Operations read but not yet settled, in order.
    waiting: VecDeque<Waiting>,
    /// What they hold, and what their replies will (see [`WAITING_BYTES_MAX`]).
    waiting_bytes: u64,
}

/// An operation whose object is not made yet; `slot` is its place in `made`.
enum Waiting {
    /// A deflate patch's file, whose stream the child is recreating.
    Deflate {
        op: u64,
        slot: usize,
        head: Box<DeflateHead>,
        bytes: u64,
    },
    /// A tree read after such a file.
    Tree { op: u64, slot: usize, head: Vec<u8> },
}

/// The most that waiting operations may hold in memory: the new data and
/// reconstruction data of the streams being recreated, their streams to come, and the
/// heads of the trees read after them. Past it, the oldest are settled first (one
/// stream may hold up to `ops::DEFLATE_PLAIN_MAX` on its own), so apply stays well
/// within its 64 MiB.
const WAITING_BYTES_MAX: u64 = 16 << 20;

impl<'a, 'r> Applier<'a, 'r> {
    pub(crate) fn new(
        repo: &'a Repo,
        base: &'a [(ObjectId, EntryKind)],
        shown: &'a Path,
        forbid: Forbidden,
        checks: &'a mut TreeChecks<'r>,
    ) -> Self {
        Self {
            repo,
            base,
            shown,
            made: Vec::new(),
            ops: 0,
            forbid,
            checks,
            background: crate::deflate::Background::new(
                crate::deflate::Recreator::new,
                crate::deflate::WORKERS_MAX,
            ),
            waiting: VecDeque::new(),
            waiting_bytes: 0,
        }
    }

    /// Objects made by this part so far.
    pub(crate) fn made(&self) -> u64 {
        self.made.len() as u64
    }

    fn base_entry(&self, i: u64, kind: EntryKind) -> Result<ObjectId, FormatError> {
        let at = usize::try_from(i).ok().and_then(|i| self.base.get(i));
        let what = (
            "base reference to a tree where a file goes",
            "base reference to a file where a tree goes",
            "base reference past the base commit's objects",
        );
        of_kind(at, kind, i, what)
    }

    /// The object a reference of operation `op`, whose object goes to `made[at]`,
    /// names. An id must name an object the store (or this part's transaction) holds as
    /// `kind`: a tree must never name what is not there, or a file where a directory
    /// goes.
    fn resolve(
        &self,
        r: &ObjRef,
        kind: EntryKind,
        txn: &Txn<'_>,
        refused: &std::cell::Cell<Option<UpdaterError>>,
        (at, op): (usize, u64),
    ) -> Result<ObjectId, FormatError> {
        if let ObjRef::Id(id) = *r {
            let as_kind = match kind {
                EntryKind::File => ObjectKind::File,
                EntryKind::Tree => ObjectKind::Tree,
            };
            let held = txn.contains(&id, as_kind);
            if !matches!(held, Ok(true)) {
                // Incomplete: what the update needs is not stored (a resumed update whose
                // earlier parts' objects an older gc removed, say), so its progress is
                // forgotten and the next run applies every part again.
                refused.set(Some(held.err().map_or_else(
                    || {
                        UpdaterError::Incomplete(format!(
                            "{}: operation {op} names object {id}, which the store does not hold as a {}",
                            self.shown.display(),
                            as_kind.suffix()
                        ))
                    },
                    UpdaterError::from,
                )));
                return Err(FormatError::Invalid {
                    what: "reference by id",
                    value: 0,
                });
            }
        }
        match *r {
            ObjRef::Local(n) => {
                // Everything before a tree is made when it is built: one still waiting
                // would be a bug, taken for an object that is not there.
                let found = usize::try_from(n)
                    .ok()
                    .filter(|&n| n >= 1)
                    .and_then(|n| at.checked_sub(n))
                    .and_then(|i| match self.made[i] {
                        (Some(id), k) => Some((id, k)),
                        (None, _) => None,
                    });
                let what = (
                    "local reference to a tree where a file goes",
                    "local reference to a file where a tree goes",
                    "reference to an object this part has not made",
                );
                of_kind(found.as_ref(), kind, n, what)
            }
            ObjRef::Base(i) => self.base_entry(i, kind),
            ObjRef::Id(id) => Ok(id),
        }
    }

    /// Reads one operation of kind `kind` from `r` and writes its object into `txn`;
    /// `left` is how many bytes of the part's signed size follow the kind byte.
    pub(crate) fn apply<R: Read>(
        &mut self,
        txn: &mut Txn<'_>,
        r: &mut R,
        kind: u8,
        left: u64,
    ) -> Result<(), UpdaterError> {
        self.ops += 1;
        let op = self.ops;
        let shown = self.shown;
        let io = |e: io::Error| bad(shown, e.to_string());
        let fmt = |e: FormatError| bad(shown, format!("operation {op}: {e}"));
        let mut len = [0u8; 4];
        r.read_exact(&mut len).map_err(io)?;
        let len = u32::from_le_bytes(len) as usize;
        if len > ops::HEAD_MAX {
            return Err(bad(
                shown,
                format!("operation {op} (kind {kind}) has a {len}-byte head, over the limit"),
            ));
        }
        // Grown as bytes arrive, so a lying length cannot allocate more than the part holds.
        let mut head = Vec::new();
        r.by_ref()
            .take(len as u64)
            .read_to_end(&mut head)
            .map_err(io)?;
        if head.len() != len {
            return Err(bad(shown, format!("operation {op}: truncated operation")));
        }
        // What the operation's payload may take: the rest of the part's signed size.
        let left = left.saturating_sub(4 + len as u64);
        let too_big = |what: &str, n: u64| {
            bad(
                shown,
                format!(
                    "operation {op} is {what} of {n} bytes, with {left} bytes of its signed size left"
                ),
            )
        };
        match kind {
            ops::FILE => {
                let header = FileHeader::decode(&head).map_err(fmt)?;
                if header.size > left {
                    return Err(too_big("a file", header.size));
                }
                let content = &mut r.by_ref().take(header.size);
                if let Some(why) = self.forbid.refuses(&header) {
                    // Named by its id, computed without writing a byte of it.
                    let id = hash_only(&header, content, shown)?;
                    return Err(self.forbidden(&why, &id, self.ops));
                }
                let (id, target) = if header.kind == FileKind::Symlink {
                    // At most SYMLINK_MAX bytes: the header was validated.
                    let mut target = Vec::new();
                    content.read_to_end(&mut target).map_err(io)?;
                    let id = txn.write_file(&header, &mut target.as_slice(), shown)?;
                    (id, Some(target))
                } else {
                    (txn.write_file(&header, content, shown)?, None)
                };
                self.checks.made_file(id, target);
                self.made.push((Some(id), EntryKind::File));
            }
            ops::FILE_PATCH | ops::ELF_PATCH => {
                let (ph, elf, what) = if kind == ops::ELF_PATCH {
                    let eh = ElfHead::decode(&head).map_err(fmt)?;
                    (eh.patch.clone(), Some(eh), "an ELF patch")
                } else {
                    (PatchHead::decode(&head).map_err(fmt)?, None, "a patch")
                };
                if ph.payload_len() > left {
                    return Err(too_big(what, ph.payload_len()));
                }
                let id = self.apply_patch(txn, r, &ph, elf.as_ref())?;
                self.checks.made_file(id, None);
                self.made.push((Some(id), EntryKind::File));
            }
            ops::DEFLATE_PATCH => {
                let dh = DeflateHead::decode(&head).map_err(fmt)?;
                if dh.payload_len() > left {
                    return Err(too_big("a deflate patch", dh.payload_len()));
                }
                self.apply_deflate(txn, r, dh)?;
            }
            ops::ZIP_PATCH => {
                let zh = ZipHead::decode(&head).map_err(fmt)?;
                if zh.payload_len() > left {
                    return Err(too_big("a zip patch", zh.payload_len()));
                }
                let id = self.apply_zip(txn, r, &zh)?;
                self.checks.made_file(id, None);
                self.made.push((Some(id), EntryKind::File));
            }
            ops::TREE => {
                let slot = self.made.len();
                self.made.push((None, EntryKind::Tree));
                if self.waiting.is_empty() {
                    self.build_tree(txn, &head, op, slot)?;
                } else {
                    self.waiting_bytes += head.len() as u64;
                    self.waiting.push_back(Waiting::Tree { op, slot, head });
                    self.settle_over(txn, 0)?;
                }
            }
            k => return Err(bad(shown, format!("operation {op}: unknown operation {k}"))),
        }
        Ok(())
    }

    /// A tree, as edits of a base tree (or of none), made by operation `op` into
    /// `made[slot]`.
    fn build_tree(
        &mut self,
        txn: &mut Txn<'_>,
        head: &[u8],
        op: u64,
        slot: usize,
    ) -> Result<(), UpdaterError> {
        let shown = self.shown;
        let fmt = |e: FormatError| bad(shown, format!("operation {op}: {e}"));
        let top = TreeOp::decode(head).map_err(fmt)?;
        let base = top
            .base
            .map(|i| {
                let id = self.base_entry(i, EntryKind::Tree).map_err(fmt)?;
                Ok::<_, UpdaterError>(self.repo.read_tree(&id)?)
            })
            .transpose()?;
        let refused = std::cell::Cell::new(None);
        let tree = top
            .build(base.as_ref(), |r, k| {
                self.resolve(r, k, txn, &refused, (slot, op))
            })
            .map_err(|e| refused.take().unwrap_or_else(|| fmt(e)))?;
        let id = tree.id();
        self.checks.made_tree(&tree, id, shown, op)?;
        txn.write_tree(&tree)?;
        self.made[slot].0 = Some(id);
        Ok(())
    }

    /// Settles waiting operations, oldest first, until what waits holds at most
    /// [`WAITING_BYTES_MAX`] less `room`.
    fn settle_over(&mut self, txn: &mut Txn<'_>, room: u64) -> Result<(), UpdaterError> {
        while self.waiting_bytes + room > WAITING_BYTES_MAX && !self.waiting.is_empty() {
            self.settle_one(txn)?;
        }
        Ok(())
    }

    /// Settles every waiting operation: the part's objects are all made after this.
    pub(crate) fn finish(&mut self, txn: &mut Txn<'_>) -> Result<(), UpdaterError> {
        while !self.waiting.is_empty() {
            self.settle_one(txn)?;
        }
        Ok(())
    }

    /// Makes the oldest waiting operation's object: a deflate patch's file from its
    /// recreated stream (waiting for the child), or a tree.
    fn settle_one(&mut self, txn: &mut Txn<'_>) -> Result<(), UpdaterError> {
        let shown = self.shown;
        match self.waiting.pop_front() {
            None => {}
            Some(Waiting::Tree { op, slot, head }) => {
                self.waiting_bytes -= head.len() as u64;
                self.build_tree(txn, &head, op, slot)?;
            }
            Some(Waiting::Deflate {
                op,
                slot,
                head,
                bytes,
            }) => {
                self.waiting_bytes -= bytes;
                let content = redeflate::finish(&head, self.background.take())
                    .map_err(|e| bad(shown, format!("operation {op}: {e}")))?;
                if let Some(why) = self.forbid.refuses(&head.header) {
                    let id = hash_only(&head.header, &mut content.as_slice(), shown)?;
                    return Err(self.forbidden(&why, &id, op));
                }
                let id = txn.write_file(&head.header, &mut content.as_slice(), shown)?;
                self.checks.made_file(id, None);
                self.made[slot].0 = Some(id);
            }
        }
        Ok(())
    }

    /// The header and open file of `base`, the base of `what` ("a patch", …), which
    /// must be a regular file the store can read.
    fn base_file(
        &self,
        base: &ObjectId,
        what: &str,
    ) -> Result<(FileHeader, std::fs::File), UpdaterError> {
        let shown = self.shown;
        let (header, content) = self
            .repo
            .file_object(base)
            .map_err(|e| bad(shown, format!("{what}'s base {base} cannot be read: {e}")))?;
        let store::FileContent::File(file) = content else {
            return Err(bad(
                shown,
                format!("{what}'s base {base} is not a regular file"),
            ));
        };
        Ok((header, file))
    }

    fn forbidden(&self, why: &str, id: &ObjectId, op: u64) -> UpdaterError {
        bad(
            self.shown,
            format!("operation {op} makes {why} (object {id})"),
        )
    }
}

/// The id of the file object `header` and `content` would make, without writing it.
fn hash_only(
    header: &FileHeader,
    content: &mut dyn Read,
    shown: &Path,
) -> Result<ObjectId, UpdaterError> {
    let mut hasher = header.hasher();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = content
            .read(&mut buf)
            .map_err(|e| bad(shown, e.to_string()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hasher
        .finish()
        .map_err(|e| bad(shown, format!("the part ends inside a file: {e}")))
}

/// The id of a referenced object, if it is there and of the kind the entry needs;
/// `what` says what is wrong: a tree where a file goes, the reverse, or nothing there.
fn of_kind(
    found: Option<&(ObjectId, EntryKind)>,
    kind: EntryKind,
    value: u64,
    (tree_not_file, file_not_tree, missing): (&'static str, &'static str, &'static str),
) -> Result<ObjectId, FormatError> {
    match found {
        Some(&(id, k)) if k == kind => Ok(id),
        Some(_) => Err(FormatError::Invalid {
            what: match kind {
                EntryKind::File => tree_not_file,
                EntryKind::Tree => file_not_tree,
            },
            value,
        }),
        None => Err(FormatError::Invalid {
            what: missing,
            value,
        }),
    }
}
