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

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use format::elfpatch::{Direction, ElfHead, Rewriter};
use format::ops::{self, DeflateHead, ObjRef, PatchHead, TreeOp};
use format::zippatch::ZipHead;
use format::{EntryKind, FileHeader, FileKind, FormatError, ObjectId, ObjectKind};
use store::{Repo, Txn};

use crate::UpdaterError;
use crate::checks::TreeChecks;
use crate::error::bad;
use crate::policy::Forbidden;

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

    fn forbidden(&self, why: &str, id: &ObjectId, op: u64) -> UpdaterError {
        bad(
            self.shown,
            format!("operation {op} makes {why} (object {id})"),
        )
    }

    /// A file patch, or with `elf` an ELF patch: the windows make the normalized file,
    /// whose references the head's map turns back as it streams by.
    fn apply_patch<R: Read>(
        &self,
        txn: &mut Txn<'_>,
        r: &mut R,
        ph: &PatchHead,
        elf: Option<&ElfHead>,
    ) -> Result<ObjectId, UpdaterError> {
        let shown = self.shown;
        let base = self
            .base_entry(ph.base, EntryKind::File)
            .map_err(|e| bad(shown, e.to_string()))?;
        let (bheader, content) = self
            .repo
            .file_object(&base)
            .map_err(|e| bad(shown, format!("a patch's base {base} cannot be read: {e}")))?;
        let store::FileContent::File(base_file) = content else {
            return Err(bad(
                shown,
                format!("a patch's base {base} is not a regular file"),
            ));
        };
        if let Some(w) = ph
            .windows
            .iter()
            .find(|w| w.base_start + w.base_len > bheader.size)
        {
            return Err(bad(
                shown,
                format!(
                    "a patch window reads base bytes {}..{}, past the end of {base} ({} bytes)",
                    w.base_start,
                    w.base_start + w.base_len,
                    bheader.size
                ),
            ));
        }
        let src = RefCell::new(r);
        let patch_left = Cell::new(0);
        let mut windows = Windows {
            src: &src,
            patch_left: &patch_left,
            base: &base_file,
            list: &ph.windows,
            next: 0,
            current: None,
        };
        let rewriter = elf
            .map(|h| Rewriter::new(h.arch, &h.code, &h.map, Direction::Restore))
            .transpose()
            .map_err(|e| bad(shown, format!("operation {}: {e}", self.ops)))?;
        let mut restored;
        let content: &mut dyn Read = match rewriter {
            Some(rw) => {
                restored = Restore::new(&mut windows, rw, ph.header.size);
                &mut restored
            }
            None => &mut windows,
        };
        if let Some(why) = self.forbid.refuses(&ph.header) {
            let id = hash_only(&ph.header, content, shown)?;
            windows.finish().map_err(|e| bad(shown, e.to_string()))?;
            return Err(self.forbidden(&why, &id, self.ops));
        }
        let id = txn.write_file(&ph.header, content, shown)?;
        // write_file stops at the header's size; every window must have ended exactly.
        windows.finish().map_err(|e| bad(shown, e.to_string()))?;
        Ok(id)
    }
}

impl Applier<'_, '_> {
    /// A gzip file from its base's uncompressed data (see `redeflate`): the base
    /// inflated to its declared size and no further and the patch applied, in memory
    /// (each side at most `ops::DEFLATE_PLAIN_MAX` uncompressed); the stream is then
    /// recreated by the part's child while the next operations are applied, and the
    /// file written and hashed as any file when it is settled.
    fn apply_deflate<R: Read>(
        &mut self,
        txn: &mut Txn<'_>,
        r: &mut R,
        dh: DeflateHead,
    ) -> Result<(), UpdaterError> {
        let shown = self.shown;
        let op = self.ops;
        let base = self
            .base_entry(dh.base, EntryKind::File)
            .map_err(|e| bad(shown, format!("operation {op}: {e}")))?;
        let (bheader, content) = self.repo.file_object(&base).map_err(|e| {
            bad(
                shown,
                format!("a deflate patch's base {base} cannot be read: {e}"),
            )
        })?;
        let store::FileContent::File(base_file) = content else {
            return Err(bad(
                shown,
                format!("a deflate patch's base {base} is not a regular file"),
            ));
        };
        if dh.base_start > bheader.size {
            return Err(bad(
                shown,
                format!(
                    "a deflate patch's stream starts at byte {}, past the end of {base} ({} bytes)",
                    dh.base_start, bheader.size
                ),
            ));
        }
        let stream = std::io::BufReader::new(Slice {
            file: &base_file,
            start: dh.base_start,
            len: bheader.size - dh.base_start,
            pos: 0,
        });
        let request = redeflate::prepare(stream, &dh, r)
            .map_err(|e| bad(shown, format!("operation {op}: {e}")))?;
        let bytes = (request.plain.len() + request.corrections.len()) as u64 + request.max;
        self.settle_over(txn, bytes)?;
        self.background.send(request);
        let slot = self.made.len();
        self.made.push((None, EntryKind::File));
        self.waiting_bytes += bytes;
        self.waiting.push_back(Waiting::Deflate {
            op,
            slot,
            head: Box::new(dh),
            bytes,
        });
        Ok(())
    }
}

impl Applier<'_, '_> {
    /// A zip archive from its base's expansion (see `redeflate::rebuild_zip`): the base
    /// expanded in memory (its streams inflated, each to its declared size and no
    /// further), the patch applied, each new stream recreated by the part's child, and
    /// the file written and hashed as it streams out.
    fn apply_zip<R: Read>(
        &mut self,
        txn: &mut Txn<'_>,
        r: &mut R,
        zh: &ZipHead,
    ) -> Result<ObjectId, UpdaterError> {
        let shown = self.shown;
        let op = self.ops;
        let base = self
            .base_entry(zh.base, EntryKind::File)
            .map_err(|e| bad(shown, format!("operation {op}: {e}")))?;
        let (bheader, content) = self.repo.file_object(&base).map_err(|e| {
            bad(
                shown,
                format!("a zip patch's base {base} cannot be read: {e}"),
            )
        })?;
        let store::FileContent::File(base_file) = content else {
            return Err(bad(
                shown,
                format!("a zip patch's base {base} is not a regular file"),
            ));
        };
        if zh.base_len() != bheader.size {
            return Err(bad(
                shown,
                format!(
                    "a zip patch's pieces cover {} bytes of its base {base}, which has {}",
                    zh.base_len(),
                    bheader.size
                ),
            ));
        }
        // Its streams are recreated one by one by the same child: what waits for it
        // is settled first.
        self.finish(txn)?;
        let base_reader = std::io::BufReader::new(&base_file);
        let refuses = self.forbid.refuses(&zh.header);
        let background = &mut self.background;
        let made = redeflate::rebuild_zip(
            base_reader,
            zh,
            r,
            |plain, corrections, max| {
                background.send(redeflate::Request {
                    plain,
                    corrections,
                    max,
                });
                background.take()
            },
            |content| match &refuses {
                Some(_) => hash_only(&zh.header, content, shown).map(Err),
                None => txn
                    .write_file(&zh.header, content, shown)
                    .map(Ok)
                    .map_err(Into::into),
            },
        );
        match made {
            Ok(Ok(id)) => Ok(id),
            Ok(Err(id)) => Err(self.forbidden(refuses.as_deref().unwrap_or_default(), &id, op)),
            Err(redeflate::ZipError::Rebuild(e)) => Err(bad(shown, format!("operation {op}: {e}"))),
            Err(redeflate::ZipError::Consume(e)) => Err(e),
        }
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

/// An ELF patch's new file, from its normalized form as the windows make it: the sites
/// are turned back a buffer at a time (64 KiB), holding back the few bytes a site
/// that straddles the buffer's end needs.
struct Restore<'a> {
    inner: &'a mut dyn Read,
    rw: Rewriter,
    buf: Vec<u8>,
    /// File offset of `buf[0]`; bytes of `buf` before `ready` are final, before `out`
    /// already given out.
    start: u64,
    ready: usize,
    out: usize,
    /// The file's size: reaching it ends the stream, whatever comes after.
    size: u64,
}

impl<'a> Restore<'a> {
    fn new(inner: &'a mut dyn Read, rw: Rewriter, size: u64) -> Self {
        Self {
            inner,
            rw,
            buf: Vec::with_capacity(64 << 10),
            start: 0,
            ready: 0,
            out: 0,
            size,
        }
    }
}

impl Read for Restore<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.out == self.ready {
            // Drop what was given out; read on after what was kept.
            self.buf.drain(..self.out);
            self.start += self.out as u64;
            self.ready = 0;
            self.out = 0;
            let have = self.start + self.buf.len() as u64;
            if have >= self.size {
                return Ok(0);
            }
            let want = usize::try_from((self.size - have).min(64 << 10)).unwrap_or(64 << 10);
            let at = self.buf.len();
            self.buf.resize(at + want, 0);
            let k = self.inner.read(&mut self.buf[at..])?;
            self.buf.truncate(at + k);
            let last = k == 0 || self.start + self.buf.len() as u64 == self.size;
            let done = self.rw.run(&mut self.buf, self.start, last);
            self.ready = usize::try_from(done - self.start).unwrap_or(self.buf.len());
            if k == 0 && self.ready == 0 {
                // The windows ended early; write_file reports the short file.
                return Ok(0);
            }
        }
        let n = out.len().min(self.ready - self.out);
        out[..n].copy_from_slice(&self.buf[self.out..self.out + n]);
        self.out += n;
        Ok(n)
    }
}

/// A window of the base file, read with `pread`, seekable only within itself.
struct Slice<'f> {
    file: &'f File,
    start: u64,
    len: u64,
    pos: u64,
}

impl Read for Slice<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len - self.pos;
        let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        let k = self.file.read_at(&mut buf[..n], self.start + self.pos)?;
        self.pos += k as u64;
        Ok(k)
    }
}

impl Seek for Slice<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let (from, delta) = match to {
            SeekFrom::Start(n) => (0i128, i128::from(n)),
            SeekFrom::Current(d) => (i128::from(self.pos), i128::from(d)),
            SeekFrom::End(d) => (i128::from(self.len), i128::from(d)),
        };
        self.pos = u64::try_from(from + delta)
            .ok()
            .filter(|&at| at <= self.len)
            .ok_or_else(|| invalid("a patch seeks outside its base window".into()))?;
        Ok(self.pos)
    }
}

/// At most `left` bytes of the part's stream, shared by the windows in turn.
struct Shared<'s, R> {
    src: &'s RefCell<&'s mut R>,
    left: &'s Cell<u64>,
}

impl<R: Read> Read for Shared<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.left.get();
        let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        if n == 0 {
            return Ok(0);
        }
        let k = self.src.borrow_mut().read(&mut buf[..n])?;
        if k == 0 {
            return Err(invalid("the part ends inside a patch".into()));
        }
        self.left.set(left - k as u64);
        Ok(k)
    }
}

type WindowReader<'s, 'f, R> = bipatch::Reader<Shared<'s, R>, Slice<'f>>;

/// The new file's content: each window's patch applied to its base slice, in order.
struct Windows<'s, 'f, R: Read> {
    src: &'s RefCell<&'s mut R>,
    /// Patch bytes of the current window not read yet.
    patch_left: &'s Cell<u64>,
    base: &'f File,
    list: &'s [ops::Window],
    next: usize,
    /// The window being read, and how many of its bytes are still to come.
    current: Option<(WindowReader<'s, 'f, R>, u64)>,
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl<R: Read> Windows<'_, '_, R> {
    /// Ends the current window: it must make nothing more and have used its whole patch.
    fn close(&mut self) -> io::Result<()> {
        if let Some((mut reader, left)) = self.current.take() {
            if left != 0 {
                return Err(invalid(format!(
                    "patch window {} ends {left} bytes early",
                    self.next
                )));
            }
            let mut one = [0u8; 1];
            if reader.read(&mut one)? != 0 {
                return Err(invalid(format!(
                    "patch window {} makes more than its declared size",
                    self.next
                )));
            }
            if self.patch_left.get() != 0 {
                return Err(invalid(format!(
                    "patch window {} has {} bytes of patch left over",
                    self.next,
                    self.patch_left.get()
                )));
            }
        }
        Ok(())
    }

    /// After the last byte: every window was used, each to its end.
    fn finish(mut self) -> io::Result<()> {
        self.close()?;
        if self.next != self.list.len() {
            return Err(invalid("the patch has windows past the file's end".into()));
        }
        Ok(())
    }
}

impl<R: Read> Read for Windows<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let window = self.next;
            if let Some((reader, left)) = &mut self.current
                && *left > 0
            {
                let n = usize::try_from(*left).map_or(buf.len(), |l| l.min(buf.len()));
                let k = reader.read(&mut buf[..n]).map_err(|e| {
                    // bipatch says only "failed to fill whole buffer" when it runs out.
                    if e.kind() == io::ErrorKind::UnexpectedEof {
                        invalid(format!(
                            "bad patch: window {window} reads past its base bytes or past its patch"
                        ))
                    } else {
                        invalid(format!("bad patch: {e}"))
                    }
                })?;
                if k == 0 {
                    return Err(invalid(format!(
                        "patch window {} ends {left} bytes early",
                        self.next
                    )));
                }
                *left -= k as u64;
                return Ok(k);
            }
            self.close()?;
            let Some(w) = self.list.get(self.next) else {
                return Ok(0);
            };
            self.next += 1;
            self.patch_left.set(w.patch_len);
            let patch = Shared {
                src: self.src,
                left: self.patch_left,
            };
            let slice = Slice {
                file: self.base,
                start: w.base_start,
                len: w.base_len,
                pos: 0,
            };
            let reader = bipatch::Reader::new(patch, slice)
                .map_err(|e| invalid(format!("bad patch: {e}")))?;
            self.current = Some((reader, w.out_len));
        }
    }
}
