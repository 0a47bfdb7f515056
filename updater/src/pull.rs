//! Object pull: `berth update URL` when the channel lists no delta from the running
//! commit. The device fetches the commit's object index, then only the objects its store
//! lacks, as an `OSTree` pull does (`docs/FORMAT.md`, "Static repositories").
//!
//! What makes it safe:
//! - the index's length and sha256 are signed by the channel pointer, and it carries the
//!   commit whose id the pointer signs, so every id below is trusted;
//! - each object is fetched bounded by its published length, decompressed bounded by its
//!   size (both from the index), and written through the store, which hashes it: an
//!   object whose bytes are not its id is refused;
//! - trees are held in memory until every file is in the store, then checked (nesting,
//!   escaping symlinks) before any is published; files are checked against `--forbid`
//!   before they are written.
//!
//! What makes it resumable: files go into the store in batches, each one transaction, so
//! an interrupted pull fetches only what is still missing (and `berth gc` keeps what the
//! download directory's index lists). Each fetched tree is kept in the download
//! directory once it hashes to its id, and read from there (hashed again) by the next
//! run. Objects larger than [`IN_MEMORY_MAX`] are downloaded into the download
//! directory with `Range` resume.
//!
//! When pulling would cost more bytes than the full update (a device that shares little
//! with the new commit: many small objects compress worse one by one), the caller takes
//! the full update instead.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use format::channel::{Pointer, UpdateRef};
use format::index::{Index, IndexEntry};
use format::limits::TREE_DEPTH_MAX;
use format::sig::Signatures;
use format::{Commit, EntryKind, FileHeader, FormatError, ObjectId, ObjectKind, Tree};
use rustix::fs::AtFlags;
use store::{Repo, Txn};

use crate::Device;
use crate::checks::TreeChecks;
use crate::dirs::Dir;
use crate::error::UpdaterError;
use crate::error::bad;
use crate::policy::check_newer;
use crate::progress::{self, Event};
use crate::remote::Remote;
use crate::update::{UpdateOptions, UpdateReport};

/// Objects published at most this size are fetched into memory; larger ones into a file
/// of the download directory, which survives a reboot.
pub(crate) const IN_MEMORY_MAX: u64 = 4 << 20;

/// Objects (or their decompressed bytes) a store transaction takes before it commits.
const BATCH_OBJECTS: usize = 512;
const BATCH_BYTES: u64 = 64 << 20;

/// Objects per transaction. Test hook: `BERTH_TEST_PULL_BATCH=N` makes small batches, so
/// a test can interrupt a pull after some of them (whoever sets berth's environment is
/// root on the device already).
fn batch_objects() -> usize {
    #[cfg(feature = "test-hooks")]
    if let Some(n) = std::env::var("BERTH_TEST_PULL_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
    {
        return n;
    }
    BATCH_OBJECTS
}

/// The end of a pull.
pub(crate) enum Pulled {
    /// The new deployment is the trial.
    Done {
        report: UpdateReport,
        downloaded: u64,
    },
    /// The objects still missing would cost more than the full update: nothing was
    /// written but the index and the trees' walk (`downloaded` bytes).
    Costlier { downloaded: u64, missing: u64 },
}

/// The objects a commit needs that the store lacks.
struct Missing {
    /// Trees fetched, by id (held in memory until checked).
    trees: HashMap<ObjectId, Tree>,
    /// Files to fetch, in id order.
    files: Vec<IndexEntry>,
    /// Bytes fetched for the trees.
    downloaded: u64,
    /// Bytes the fetched trees take (their encodings).
    tree_bytes: u64,
}

impl Device {
    /// Pulls `pointer`'s commit object by object; `objects` is its index reference and
    /// `dir` the download directory.
    pub(crate) fn pull(
        &self,
        remote: &Remote,
        pointer: &Pointer,
        objects: &UpdateRef,
        dir: &Dir,
        opts: UpdateOptions,
        deadline: Option<&crate::deadline::Armed>,
    ) -> Result<Pulled, UpdaterError> {
        let (rec, _) = self.record()?;
        let default = self.running(&rec)?;
        let repo = Repo::open(&self.path.join("berth/repo"))?;
        let rel = format!("indexes/{}", pointer.commit);
        let shown = PathBuf::from(remote.url(&rel));
        // Downloaded as `index.part`, named `index` once it matches the signed sha256:
        // `berth gc` keeps what an `index` lists, so it must be the signed one.
        let mut downloaded = 0;
        let kept = dir.read("index", objects.superblock_len)?;
        let bytes = match kept {
            Some(b) if ObjectId::digest(&b) == objects.superblock_sha256 => b,
            _ => {
                downloaded += remote.download(&rel, dir, "index.part", objects.superblock_len)?;
                let b = dir
                    .read("index.part", objects.superblock_len)?
                    .ok_or_else(|| bad(&dir.join("index.part"), "vanished after its download"))?;
                if ObjectId::digest(&b) != objects.superblock_sha256 {
                    let _ = fsop::unlinkat(dir.fd(), "index.part", AtFlags::empty());
                    return Err(bad(
                        &shown,
                        "does not match the sha256 its channel pointer signs; removed",
                    ));
                }
                fsop::renameat(dir.fd(), "index.part", dir.fd(), "index")
                    .map_err(|e| bad(&dir.join("index"), format!("rename: {e}")))?;
                b
            }
        };
        let index = Index::decode(&bytes).map_err(|e| bad(&shown, e.to_string()))?;
        if ObjectId::digest(&index.commit) != pointer.commit {
            return Err(bad(
                &shown,
                format!("holds a commit other than the channel's {}", pointer.commit),
            ));
        }
        let commit = Commit::decode(&index.commit).map_err(|e| bad(&shown, e.to_string()))?;
        let sigs = (!index.signatures.is_empty())
            .then(|| Signatures::decode(&index.signatures))
            .transpose()
            .map_err(|e| bad(&shown, format!("commit signatures: {e}")))?;
        check_newer(&repo, &shown, &commit, &default, opts.allow_downgrade)?;

        let missing = Walk {
            repo: &repo,
            remote,
            index: &index,
            dir,
        }
        .missing(&commit.root)?;
        downloaded += missing.downloaded;
        let to_fetch: u64 = missing.files.iter().map(|e| e.stored).sum();
        if to_fetch > pointer.full.total_len {
            return Ok(Pulled::Costlier {
                downloaded,
                missing: to_fetch,
            });
        }
        self.check_space(missing.files.iter().map(|e| e.size).sum::<u64>() + missing.tree_bytes)?;

        let total = downloaded + to_fetch;
        let mut checks = TreeChecks::new(&repo, commit.root);
        let fetched = Fetch {
            repo: &repo,
            remote,
            dir,
            opts,
        };
        downloaded += fetched.files(&missing.files, downloaded, total)?;
        // Every file is in the store: the trees can be checked, then published.
        checks.pending(&missing.trees);
        checks.check_root(&shown)?;
        let mut txn = Txn::begin(&repo)?;
        for tree in missing.trees.values() {
            txn.write_tree(tree)?;
        }
        txn.commit()?;
        let id = ObjectId::digest(&index.commit);
        let mut report = UpdateReport {
            commit: id.to_string(),
            version: commit.version.to_string(),
            deployment: format::record::DeploymentName::for_commit(&id)
                .as_str()
                .to_owned(),
            parts_applied: 0,
            parts_skipped: 0,
            objects: (missing.files.len() + missing.trees.len()) as u64,
            etc_skipped: Vec::new(),
            installed: false,
        };
        // Every object is in the store, and the index stays in the download directory
        // (so gc keeps them): the next run finds nothing missing and installs.
        if opts.download_only {
            return Ok(Pulled::Done { report, downloaded });
        }
        let skipped = self.finish_update(
            &repo,
            &shown,
            &mut checks,
            (&commit, sigs.as_ref()),
            &default,
            opts.tries,
            deadline,
        )?;
        crate::update::forget_progress(self, &id);
        report.etc_skipped = skipped.iter().map(|p| p.display().to_string()).collect();
        report.installed = true;
        Ok(Pulled::Done { report, downloaded })
    }
}

/// One object's decompressed bytes, bounded by its signed size.
struct Object {
    reader: Box<dyn Read>,
    url: String,
    size: u64,
    /// The download of a large object (its name in the download directory), to remove
    /// if it is refused: a resume would otherwise find it complete and refuse it again,
    /// run after run.
    cached: Option<String>,
}

/// Removes a refused object's download, if it has one (best effort: a resume checks
/// it again anyway).
fn discard(dir: &Dir, cached: Option<&String>) {
    if let Some(name) = cached {
        let _ = fsop::unlinkat(dir.fd(), name.as_str(), AtFlags::empty());
    }
}

impl Object {
    fn bad(&self, why: impl Into<String>) -> UpdaterError {
        bad(Path::new(&self.url), why)
    }

    /// The whole object (a tree), checked against its id.
    fn whole(mut self, id: &ObjectId) -> Result<Vec<u8>, UpdaterError> {
        let mut out = Vec::new();
        (&mut self.reader)
            .take(self.size + 1)
            .read_to_end(&mut out)
            .map_err(|e| self.bad(format!("zstd: {e}")))?;
        if out.len() as u64 != self.size {
            return Err(self.bad(format!(
                "decompresses to {}{} bytes, not the {} its index signs",
                if out.len() as u64 > self.size {
                    "more than "
                } else {
                    ""
                },
                out.len()
                    .min(usize::try_from(self.size).unwrap_or(usize::MAX)),
                self.size
            )));
        }
        if ObjectId::digest(&out) != *id {
            return Err(self.bad(format!("is not object {id}: its bytes hash to another id")));
        }
        Ok(out)
    }

    /// A file object's header and a reader of exactly its content.
    fn file(self) -> Result<(FileHeader, impl Read, String), UpdaterError> {
        let Self {
            reader, url, size, ..
        } = self;
        let fail = |why: String| bad(Path::new(&url), why);
        let mut r = reader.take(size + 1);
        let mut head = Vec::new();
        let (header, used) = loop {
            match FileHeader::decode_prefix(&head) {
                Ok(h) => break h,
                Err(FormatError::Truncated { .. }) if (head.len() as u64) < size => {
                    // Read as much again as there is (at least 4 KiB), so a header with
                    // large xattrs is parsed a logarithmic number of times.
                    let want = head.len().max(4096);
                    let at = head.len();
                    head.resize(at + want, 0);
                    let n = r
                        .read(&mut head[at..])
                        .map_err(|e| fail(format!("zstd: {e}")))?;
                    head.truncate(at + n);
                    if n == 0 {
                        return Err(fail("ends inside its file header".into()));
                    }
                }
                Err(e) => return Err(fail(format!("file header: {e}"))),
            }
        };
        if (used as u64).checked_add(header.size) != Some(size) {
            return Err(fail(format!(
                "its header says {} content bytes, but the index signs {} in all",
                header.size, size
            )));
        }
        let rest = head.split_off(used);
        Ok((header, Cursor::new(rest).chain(r), url))
    }
}

/// Fetches one object: into memory, or for a large one into `dir` with resume.
fn open_object(remote: &Remote, dir: &Dir, e: &IndexEntry) -> Result<(Object, u64), UpdaterError> {
    let hex = e.id.to_string();
    let rel = format!("objects/{}/{}.{}", &hex[..2], &hex[2..], e.kind.suffix());
    let url = remote.url(&rel);
    let (raw, got, cached): (Box<dyn Read>, u64, _) = if e.stored <= IN_MEMORY_MAX {
        let (bytes, got) = remote.fetch_bytes(&rel, e.stored)?;
        (Box::new(Cursor::new(bytes)), got, None)
    } else {
        let name = format!("{hex}.{}", e.kind.suffix());
        let got = remote.download(&rel, dir, &name, e.stored)?;
        let f = dir
            .open_file(&name)?
            .ok_or_else(|| bad(&dir.join(&name), "vanished after its download"))?;
        (Box::new(f), got, Some(name))
    };
    let decoder = ruzstd::decoding::StreamingDecoder::new_with_max_window_size(
        raw,
        format::update::PART_WINDOW_MAX,
    )
    .map_err(|err| {
        discard(dir, cached.as_ref());
        bad(Path::new(&url), format!("zstd frame refused: {err}"))
    })?;
    Ok((
        Object {
            reader: Box::new(decoder),
            url,
            size: e.size,
            cached,
        },
        got,
    ))
}

/// The walk of a commit's trees that finds what the store lacks.
struct Walk<'a> {
    repo: &'a Repo,
    remote: &'a Remote,
    index: &'a Index,
    dir: &'a Dir,
}

impl Walk<'_> {
    fn entry(
        &self,
        id: &ObjectId,
        kind: ObjectKind,
        named_by: &ObjectId,
    ) -> Result<IndexEntry, UpdaterError> {
        self.index.find(id, kind).copied().ok_or_else(|| {
            UpdaterError::State(format!(
                "{}: does not list {} object {id}, which tree {named_by} names",
                self.remote.url("indexes/"),
                kind.suffix()
            ))
        })
    }

    /// Fetches the tree `e`, checks it and keeps it for the next run. Returns it and
    /// the bytes fetched.
    fn fetch_tree(&self, e: &IndexEntry) -> Result<(Tree, u64), UpdaterError> {
        let (obj, got) = open_object(self.remote, self.dir, e)?;
        let (url, cached) = (obj.url.clone(), obj.cached.clone());
        let bytes = obj
            .whole(&e.id)
            .inspect_err(|_| discard(self.dir, cached.as_ref()))?;
        let tree = Tree::decode(&bytes)
            .map_err(|err| bad(Path::new(&url), err.to_string()))
            .inspect_err(|_| discard(self.dir, cached.as_ref()))?;
        self.keep_tree(&e.id, &bytes);
        Ok((tree, got))
    }

    /// The name under which a fetched tree is kept between runs.
    fn tree_name(id: &ObjectId) -> String {
        format!("{id}.tree-verified")
    }

    /// A tree an earlier run fetched, if it is still there and still hashes to `id`.
    /// `size` is its signed size.
    fn kept_tree(&self, id: &ObjectId, size: u64) -> Option<Tree> {
        let bytes = self.dir.read(&Self::tree_name(id), size).ok()??;
        (ObjectId::digest(&bytes) == *id)
            .then(|| Tree::decode(&bytes).ok())
            .flatten()
    }

    /// Keeps a fetched tree (whose bytes hash to `id`) for the next run. Best effort:
    /// without it, the next run fetches the tree again; a torn file fails its hash.
    fn keep_tree(&self, id: &ObjectId, bytes: &[u8]) {
        let name = Self::tree_name(id);
        if let Ok(fd) = fsop::create(
            self.dir.fd(),
            name.as_str(),
            rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::TRUNC,
            rustix::fs::Mode::from_raw_mode(0o600),
        ) && fsop::write_all(rustix::fd::AsFd::as_fd(&fd), bytes).is_err()
        {
            let _ = fsop::unlinkat(self.dir.fd(), name.as_str(), AtFlags::empty());
        }
    }

    /// Walks every tree from `root` (the store's own, or fetched), breadth first.
    fn missing(&self, root: &ObjectId) -> Result<Missing, UpdaterError> {
        let mut out = Missing {
            trees: HashMap::new(),
            files: Vec::new(),
            downloaded: 0,
            tree_bytes: 0,
        };
        let mut seen_trees = HashSet::from([*root]);
        let mut seen_files = HashSet::new();
        let mut todo = VecDeque::from([(*root, *root, 0usize)]);
        while let Some((id, parent, level)) = todo.pop_front() {
            if level > TREE_DEPTH_MAX {
                return Err(UpdaterError::State(format!(
                    "{}: the commit's trees nest deeper than the limit of {TREE_DEPTH_MAX}",
                    self.remote.url("indexes/")
                )));
            }
            let tree = if self.repo.has(&id, ObjectKind::Tree)? {
                self.repo.read_tree(&id)?
            } else {
                let e = self.entry(&id, ObjectKind::Tree, &parent)?;
                out.tree_bytes += e.size;
                let tree = if let Some(t) = self.kept_tree(&id, e.size) {
                    t
                } else {
                    let (t, got) = self.fetch_tree(&e)?;
                    out.downloaded += got;
                    t
                };
                out.trees.insert(id, tree.clone());
                tree
            };
            for child in tree.entries() {
                match child.kind {
                    EntryKind::Tree => {
                        if seen_trees.insert(child.id) {
                            todo.push_back((child.id, id, level + 1));
                        }
                    }
                    EntryKind::File => {
                        if seen_files.insert(child.id)
                            && !self.repo.has(&child.id, ObjectKind::File)?
                        {
                            out.files
                                .push(self.entry(&child.id, ObjectKind::File, &id)?);
                        }
                    }
                }
            }
        }
        out.files.sort_by_key(|e| e.id);
        Ok(out)
    }
}

/// Fetches files into the store.
struct Fetch<'a> {
    repo: &'a Repo,
    remote: &'a Remote,
    dir: &'a Dir,
    opts: UpdateOptions,
}

impl Fetch<'_> {
    /// Writes one fetched file object into `txn`, checked against `--forbid` before it
    /// is written and against its id as it is.
    fn store(&self, txn: &mut Txn<'_>, obj: Object, e: &IndexEntry) -> Result<(), UpdaterError> {
        let (header, mut content, url) = obj.file()?;
        let url = PathBuf::from(&url);
        if let Some(why) = self.opts.forbid.refuses(&header) {
            return Err(bad(&url, format!("object {} is {why}", e.id)));
        }
        let id = txn.write_file(&header, &mut content, &url)?;
        if id != e.id {
            return Err(bad(
                &url,
                format!("is not object {}: its bytes hash to {id}", e.id),
            ));
        }
        let mut extra = [0u8; 1];
        if content.read(&mut extra).unwrap_or(0) != 0 {
            return Err(bad(&url, "decompresses to more bytes than its index signs"));
        }
        Ok(())
    }

    /// Fetches and stores `files`, in batches of one transaction each. `done` of `total`
    /// bytes are fetched already (for progress). Returns the bytes fetched.
    fn files(&self, files: &[IndexEntry], done: u64, total: u64) -> Result<u64, UpdaterError> {
        let mut fetched = 0u64;
        let mut shown = 0u64;
        for batch in batches(files) {
            let mut txn = Txn::begin(self.repo)?;
            for e in batch {
                let (obj, got) = open_object(self.remote, self.dir, e)?;
                fetched += got;
                let cached = obj.cached.clone();
                self.store(&mut txn, obj, e)
                    .inspect_err(|_| discard(self.dir, cached.as_ref()))?;
                // At most one progress line per percent.
                let percent = (done + fetched) * 100 / total.max(1);
                if percent > shown {
                    shown = percent;
                    progress::report(
                        self.opts.progress,
                        Event::Downloaded {
                            downloaded: done + fetched,
                            total,
                        },
                    );
                }
            }
            txn.commit()?;
            // Large objects were downloaded to files: done with them.
            for e in batch.iter().filter(|e| e.stored > IN_MEMORY_MAX) {
                let name = format!("{}.{}", e.id, e.kind.suffix());
                let _ = fsop::unlinkat(self.dir.fd(), name.as_str(), AtFlags::empty());
            }
        }
        progress::report(
            self.opts.progress,
            Event::Downloaded {
                downloaded: done + fetched,
                total,
            },
        );
        Ok(fetched)
    }
}

/// Splits `files` into store transactions of at most [`batch_objects`] objects and about
/// [`BATCH_BYTES`] bytes.
fn batches(files: &[IndexEntry]) -> Vec<&[IndexEntry]> {
    let most = batch_objects();
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, e) in files.iter().enumerate() {
        if i > start && (i - start >= most || bytes + e.size > BATCH_BYTES) {
            out.push(&files[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += e.size;
    }
    if start < files.len() {
        out.push(&files[start..]);
    }
    out
}
