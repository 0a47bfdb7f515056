//! Write transactions: stage objects, make them durable, then publish them.
//!
//! Crash safety (see `docs/ARCHITECTURE.md`, "Durability"):
//! 1. every object is written under a temporary name in `tmp/txn-<boot>-<pid>-<n>/`
//!    (named in [`crate::staging`]);
//! 2. [`Txn::commit`] calls `syncfs` once, so all staged data and metadata are on disk;
//! 3. file and tree objects are renamed to their final names, then `syncfs` again;
//! 4. commit objects and signatures are renamed last, then `syncfs` a third time (each
//!    of these two only if it renamed something).
//!
//! A power cut at any point leaves only whole objects under final names, and a commit
//! object only once everything it references is durable. Staging left by a crash (or
//! from an earlier boot) is garbage that the next transaction removes, and never blocks
//! it.

use std::collections::HashSet;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use format::sig::Signatures;
use format::{Commit, FileHeader, FileKind, ObjectId, ObjectKind, Tree};
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::inode;
use crate::repo::object_path;
use crate::staging::{self, Reserved};
use crate::{Repo, StoreError};

/// Regular files up to this size are read into memory and hashed before anything is
/// written, so content already in the store costs no write at all. Larger files are
/// streamed to a staging file while hashing. Bounds memory per file, not a format limit.
const INLINE_MAX: u64 = 4 << 20;

/// How many staging names a transaction tries before giving up. Another name exists only
/// if a stale directory could not be removed (logged), so a few tries are plenty.
const STAGING_TRIES: usize = 16;

/// Counts of what a transaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxnStats {
    /// Objects written (new to the store).
    pub written: u64,
    /// Objects found already present (in the store or earlier in this transaction).
    pub reused: u64,
    /// Content bytes of new file objects.
    pub bytes_written: u64,
}

/// One staged object: its temporary name and where it goes.
#[derive(Debug)]
struct Staged {
    tmp: String,
    rel: String,
    last: bool,
}

/// A write transaction on a [`Repo`]. Dropping it without [`Txn::commit`] discards
/// everything staged; the store is left exactly as it was.
#[derive(Debug)]
pub struct Txn<'r> {
    repo: &'r Repo,
    staging: OwnedFd,
    /// Dropped after [`Drop::drop`] removed the directory, so no other transaction of
    /// this process takes it for garbage before then.
    staging_name: Reserved,
    /// Repair mode: write only these objects, over a corrupt copy if there is one.
    only: Option<HashSet<(ObjectId, ObjectKind)>>,
    staged: Vec<Staged>,
    known: HashSet<(ObjectId, ObjectKind)>,
    next_tmp: u64,
    buf: Vec<u8>,
    stats: TxnStats,
    done: bool,
}

impl<'r> Txn<'r> {
    /// Starts a transaction, removing staging directories no transaction can be using
    /// (left by exited processes or earlier boots, see [`crate::staging`]).
    pub fn begin(repo: &'r Repo) -> Result<Self, StoreError> {
        let tmp_path = repo.path().join("tmp");
        let tmp = inode::open_dir_at(repo.root_fd(), b"tmp", &tmp_path)?;
        remove_stale(&tmp, &tmp_path);
        let mut tries = 0;
        let staging_name = loop {
            let name = Reserved::next();
            match fsop::mkdirat(tmp.as_fd(), name.name(), Mode::from_raw_mode(0o700)) {
                Ok(()) => break name,
                // A directory that could not be removed: take the next name.
                Err(e) if e == Errno::EXIST && tries + 1 < STAGING_TRIES => {
                    log::debug!("{}: exists, taking the next name", name.name());
                    tries += 1;
                }
                Err(e) => {
                    return Err(StoreError::io(
                        tmp_path.join(name.name()),
                        "create staging directory",
                        e,
                    ));
                }
            }
        };
        let staging = inode::open_dir_at(
            tmp.as_fd(),
            staging_name.name().as_bytes(),
            &tmp_path.join(staging_name.name()),
        )?;
        Ok(Self {
            repo,
            staging,
            staging_name,
            only: None,
            staged: Vec::new(),
            known: HashSet::new(),
            next_tmp: 0,
            buf: Vec::new(),
            stats: TxnStats::default(),
            done: false,
        })
    }

    /// What this transaction has done so far.
    pub fn stats(&self) -> TxnStats {
        self.stats
    }

    fn staging_path(&self) -> PathBuf {
        self.repo.path().join("tmp").join(self.staging_name.name())
    }

    fn tmp_name(&mut self) -> String {
        self.next_tmp += 1;
        format!("o{}", self.next_tmp)
    }

    /// Repair mode (`berth fsck --repair`): the transaction writes only `wanted`, even
    /// where the store holds a (corrupt) object of that name, which the commit's rename
    /// replaces in one step. Every other object counts as present and is not written.
    pub fn repair_only(&mut self, wanted: HashSet<(ObjectId, ObjectKind)>) {
        self.only = Some(wanted);
    }

    /// Whether the object is already stored or staged; counts a reuse if so.
    fn known(&mut self, id: ObjectId, kind: ObjectKind) -> Result<bool, StoreError> {
        if let Some(wanted) = &self.only
            && !self.known.contains(&(id, kind))
        {
            if wanted.contains(&(id, kind)) {
                return Ok(false);
            }
            self.stats.reused += 1;
            return Ok(true);
        }
        if self.known.contains(&(id, kind)) || self.repo.has(&id, kind)? {
            self.known.insert((id, kind));
            self.stats.reused += 1;
            return Ok(true);
        }
        Ok(false)
    }

    /// Whether the object is in the store or staged by this transaction (without
    /// counting a reuse).
    pub fn contains(&self, id: &ObjectId, kind: ObjectKind) -> Result<bool, StoreError> {
        Ok(self.known.contains(&(*id, kind)) || self.repo.has(id, kind)?)
    }

    fn stage(&mut self, tmp: String, id: ObjectId, kind: ObjectKind, suffix: &str) {
        self.known.insert((id, kind));
        self.stats.written += 1;
        self.staged.push(Staged {
            tmp,
            rel: object_path(&id, suffix),
            last: kind == ObjectKind::Commit,
        });
    }

    /// Stores a file object: `header` plus exactly `header.size` bytes from `content`.
    /// `shown` names the input in errors. Content that is shorter or longer than the
    /// header says is an error (for a directory, the file changed while being read).
    pub fn write_file(
        &mut self,
        header: &FileHeader,
        content: &mut dyn Read,
        shown: &Path,
    ) -> Result<ObjectId, StoreError> {
        header
            .validate()
            .map_err(|e| StoreError::format(shown, e))?;
        if header.kind == FileKind::Regular && header.size > INLINE_MAX {
            return self.write_large(header, content, shown);
        }
        let mut buf = std::mem::take(&mut self.buf);
        let result = self.write_small(header, content, shown, &mut buf);
        self.buf = buf;
        result
    }

    fn write_small(
        &mut self,
        header: &FileHeader,
        content: &mut dyn Read,
        shown: &Path,
        buf: &mut Vec<u8>,
    ) -> Result<ObjectId, StoreError> {
        buf.clear();
        read_exact_size(content, header.size, buf, shown)?;
        let id = header
            .object_id(buf)
            .map_err(|e| StoreError::format(shown, e))?;
        if self.known(id, ObjectKind::File)? {
            return Ok(id);
        }
        let tmp = self.tmp_name();
        let staged_path = self.staging_path().join(&tmp);
        if header.kind == FileKind::Regular {
            let fd = self.create_tmp(&tmp, &staged_path)?;
            fsop::write_all(fd.as_fd(), buf)
                .map_err(|e| StoreError::io(&staged_path, "write", e))?;
            inode::apply_header(fd.as_fd(), header, shown)?;
        } else {
            inode::create_special(self.staging.as_fd(), tmp.as_bytes(), header, buf, shown)?;
        }
        self.stats.bytes_written += header.size;
        self.stage(tmp, id, ObjectKind::File, ObjectKind::File.suffix());
        Ok(id)
    }

    fn write_large(
        &mut self,
        header: &FileHeader,
        content: &mut dyn Read,
        shown: &Path,
    ) -> Result<ObjectId, StoreError> {
        let tmp = self.tmp_name();
        let staged_path = self.staging_path().join(&tmp);
        let fd = self.create_tmp(&tmp, &staged_path)?;
        let mut hasher = header.hasher();
        let mut chunk = vec![0u8; 1 << 20];
        let mut left = header.size;
        while left > 0 {
            let want = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
            let n = read_some(content, &mut chunk[..want], shown)?;
            if n == 0 {
                return Err(changed(shown, "is shorter than its recorded size"));
            }
            hasher.update(&chunk[..n]);
            fsop::write_all(fd.as_fd(), &chunk[..n])
                .map_err(|e| StoreError::io(&staged_path, "write", e))?;
            left -= n as u64;
        }
        if read_some(content, &mut chunk[..1], shown)? != 0 {
            return Err(changed(shown, "is longer than its recorded size"));
        }
        let id = hasher.finish().map_err(|e| StoreError::format(shown, e))?;
        if self.known(id, ObjectKind::File)? {
            drop(fd);
            fsop::unlinkat(self.staging.as_fd(), tmp.as_str(), AtFlags::empty())
                .map_err(|e| StoreError::io(&staged_path, "remove", e))?;
            return Ok(id);
        }
        inode::apply_header(fd.as_fd(), header, shown)?;
        self.stats.bytes_written += header.size;
        self.stage(tmp, id, ObjectKind::File, ObjectKind::File.suffix());
        Ok(id)
    }

    fn create_tmp(&self, tmp: &str, shown: &Path) -> Result<OwnedFd, StoreError> {
        fsop::create(
            self.staging.as_fd(),
            tmp,
            OFlags::WRONLY | OFlags::EXCL,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| StoreError::io(shown, "create", e))
    }

    /// Writes `bytes` to a new staging file (mode 0644); returns its name.
    fn write_tmp(&mut self, bytes: &[u8]) -> Result<String, StoreError> {
        let tmp = self.tmp_name();
        let staged_path = self.staging_path().join(&tmp);
        let fd = self.create_tmp(&tmp, &staged_path)?;
        fsop::write_all(fd.as_fd(), bytes).map_err(|e| StoreError::io(&staged_path, "write", e))?;
        rustix::fs::fchmod(fd.as_fd(), Mode::from_raw_mode(0o644))
            .map_err(|e| StoreError::io(&staged_path, "set mode", e))?;
        Ok(tmp)
    }

    /// Stores a tree object.
    pub fn write_tree(&mut self, tree: &Tree) -> Result<ObjectId, StoreError> {
        let bytes = tree.encode();
        let id = ObjectId::digest(&bytes);
        if !self.known(id, ObjectKind::Tree)? {
            let tmp = self.write_tmp(&bytes)?;
            self.stage(tmp, id, ObjectKind::Tree, ObjectKind::Tree.suffix());
        }
        Ok(id)
    }

    /// Stores a commit object and, if given, its signatures. Both are published after
    /// every other object of the transaction.
    pub fn write_commit(
        &mut self,
        commit: &Commit,
        signatures: Option<&Signatures>,
    ) -> Result<ObjectId, StoreError> {
        let bytes = commit.encode();
        let id = ObjectId::digest(&bytes);
        if !self.known(id, ObjectKind::Commit)? {
            let tmp = self.write_tmp(&bytes)?;
            self.stage(tmp, id, ObjectKind::Commit, ObjectKind::Commit.suffix());
        }
        if let Some(sigs) = signatures {
            let tmp = self.write_tmp(&sigs.encode())?;
            self.staged.push(Staged {
                tmp,
                rel: object_path(&id, "sig"),
                last: true,
            });
        }
        Ok(id)
    }

    /// Makes every staged object durable and publishes it under its final name.
    pub fn commit(mut self) -> Result<TxnStats, StoreError> {
        let objects_path = self.repo.path().join("objects");
        let sync = |what: &'static str| {
            fsop::syncfs(self.staging.as_fd())
                .map_err(|e| StoreError::io(self.staging_path(), what, e))
        };
        // Durability: data and metadata of every staged object reach the disk before any
        // final name can point at them.
        sync("sync staged objects")?;
        let mut made = HashSet::new();
        for last in [false, true] {
            let mut renamed = false;
            for s in self.staged.iter().filter(|s| s.last == last) {
                renamed = true;
                let prefix = &s.rel[..2];
                if made.insert(prefix.to_owned()) {
                    match fsop::mkdirat(self.repo.objects_fd(), prefix, Mode::from_raw_mode(0o755))
                    {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => {
                            return Err(StoreError::io(
                                objects_path.join(prefix),
                                "create directory",
                                e,
                            ));
                        }
                    }
                }
                fsop::renameat(
                    self.staging.as_fd(),
                    s.tmp.as_str(),
                    self.repo.objects_fd(),
                    s.rel.as_str(),
                )
                .map_err(|e| StoreError::io(objects_path.join(&s.rel), "rename into place", e))?;
            }
            // Durability: the renames of referenced objects are on disk before the commit
            // that references them is published (first pass), and the commit itself is
            // durable before we report success (second pass). A pass that renamed nothing
            // (a transaction without commits, as an update's parts are) has nothing to
            // make durable: the sync before it covered everything.
            if renamed {
                sync("sync published objects")?;
            }
        }
        self.staged.clear();
        self.done = true;
        self.remove_staging();
        Ok(self.stats)
    }

    fn remove_staging(&self) {
        let tmp_path = self.repo.path().join("tmp");
        if let Ok(tmp) = inode::open_dir_at(self.repo.root_fd(), b"tmp", &tmp_path) {
            remove_flat_dir(&tmp, self.staging_name.name(), &tmp_path);
        }
    }
}

impl Drop for Txn<'_> {
    fn drop(&mut self) {
        if !self.done {
            log::debug!(
                "discarding staging directory {}",
                self.staging_path().display()
            );
            self.remove_staging();
        }
    }
}

/// Removes `tmp/<name>` and the files directly in it (staging directories are flat).
/// Failures are logged, not returned: staging is garbage either way, and the next
/// transaction retries the removal.
fn remove_flat_dir(tmp: &OwnedFd, name: &str, tmp_path: &Path) {
    let Ok(dir) = inode::open_dir_at(tmp.as_fd(), name.as_bytes(), &tmp_path.join(name)) else {
        return;
    };
    if let Ok(mut entries) = rustix::fs::Dir::read_from(&dir) {
        while let Some(Ok(entry)) = entries.read() {
            let n = entry.file_name();
            if n.to_bytes() != b"."
                && n.to_bytes() != b".."
                && let Err(e) = fsop::unlinkat(dir.as_fd(), n, AtFlags::empty())
            {
                log::warn!(
                    "{}: cannot remove staged file: {e}",
                    tmp_path
                        .join(name)
                        .join(std::ffi::OsStr::from_bytes(n.to_bytes()))
                        .display()
                );
            }
        }
    }
    if let Err(e) = fsop::unlinkat(tmp.as_fd(), name, AtFlags::REMOVEDIR) {
        log::warn!(
            "{}: cannot remove staging directory: {e}",
            tmp_path.join(name).display()
        );
    }
}

/// Removes the staging directories no transaction can be using ([`staging::is_stale`]).
fn remove_stale(tmp: &OwnedFd, tmp_path: &Path) {
    let Ok(mut entries) = rustix::fs::Dir::read_from(tmp) else {
        return;
    };
    let mut stale = Vec::new();
    while let Some(Ok(entry)) = entries.read() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if staging::is_stale(&name) {
            stale.push(name);
        }
    }
    for name in stale {
        log::debug!("removing stale staging directory {name}");
        remove_flat_dir(tmp, &name, tmp_path);
    }
}

fn changed(shown: &Path, what: &str) -> StoreError {
    StoreError::Unsupported {
        path: shown.into(),
        reason: format!("{what} (did it change while being read?)"),
    }
}

fn read_some(r: &mut dyn Read, buf: &mut [u8], shown: &Path) -> Result<usize, StoreError> {
    loop {
        match r.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(StoreError::io(shown, "read", e)),
        }
    }
}

fn read_exact_size(
    r: &mut dyn Read,
    size: u64,
    buf: &mut Vec<u8>,
    shown: &Path,
) -> Result<(), StoreError> {
    let got = r
        .take(size)
        .read_to_end(buf)
        .map_err(|e| StoreError::io(shown, "read", e))?;
    if got as u64 != size {
        return Err(changed(shown, "is shorter than its recorded size"));
    }
    let mut one = [0u8; 1];
    if read_some(r, &mut one, shown)? != 0 {
        return Err(changed(shown, "is longer than its recorded size"));
    }
    Ok(())
}
