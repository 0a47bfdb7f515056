//! One part of an update: checked against its signed sha256 as it is read, decompressed
//! with its signed size as a hard cap, and its objects applied ([`crate::apply`]) in
//! one store transaction.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use format::update;
use format::{EntryKind, ObjectId, ObjectKind};
use store::{Repo, Txn};

use crate::apply::Applier;
use crate::checks::TreeChecks;
use crate::error::{UpdaterError, bad};
use crate::policy::Forbidden;

/// Counts what a reader hands out.
struct Counting<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n += k as u64;
        Ok(k)
    }
}

/// Hashes what a reader hands out: a part's compressed bytes as they are decoded, or
/// read to check them, or a downloaded file.
pub(crate) struct Hashing<R> {
    inner: R,
    hasher: sha2::Sha256,
}

impl<R: Read> Hashing<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: <sha2::Sha256 as sha2::Digest>::new(),
        }
    }

    /// Reads what is left and returns the sha256 of everything read.
    pub(crate) fn finish(mut self) -> std::io::Result<ObjectId> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        Ok(ObjectId::from_bytes(
            sha2::Digest::finalize(self.hasher).into(),
        ))
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        sha2::Digest::update(&mut self.hasher, &buf[..k]);
        Ok(k)
    }
}

/// Where a part is applied, and what for.
pub(crate) struct PartRun<'a> {
    pub(crate) repo: &'a Repo,
    pub(crate) base: &'a [(ObjectId, EntryKind)],
    pub(crate) forbid: Forbidden,
    /// How many parts the update has: the last must leave the commit's root tree made.
    pub(crate) parts: usize,
    /// Repair (`berth fsck --repair`): write only these objects (`Txn::repair_only`).
    pub(crate) only: Option<&'a HashSet<(ObjectId, ObjectKind)>>,
}

impl PartRun<'_> {
    /// Checks one part against its signed hash, then applies its objects in one
    /// transaction. Returns how many objects it held.
    pub(crate) fn apply(
        &self,
        checks: &mut TreeChecks<'_>,
        f: &mut File,
        file: &Path,
        i: usize,
        start: u64,
        part: &update::PartInfo,
    ) -> Result<u64, UpdaterError> {
        let shown = PathBuf::from(format!("{} part {}", file.display(), i + 1));
        let io = |e: std::io::Error| bad(&shown, e.to_string());
        f.seek(SeekFrom::Start(start)).map_err(io)?;
        // The compressed bytes are hashed as they are decoded: the part was checked before
        // anything was applied, and this catches a file that changed since, before commit.
        let hashing = Hashing::new((&mut *f).take(part.len));
        // The decoder keeps a window of output in memory: bounded, whatever the frame
        // asks for.
        let decoder = ruzstd::decoding::StreamingDecoder::new_with_max_window_size(
            hashing,
            update::PART_WINDOW_MAX,
        )
        .map_err(|e| bad(&shown, format!("zstd frame refused: {e}")))?;
        // The signed size caps decompression: one byte more is a refusal, not an OOM.
        let mut r = Counting {
            inner: decoder.take(part.size + 1),
            n: 0,
        };
        let more = || {
            bad(
                &shown,
                format!("decompresses to more than its signed {} bytes", part.size),
            )
        };
        let mut txn = Txn::begin(self.repo)?;
        if let Some(only) = self.only {
            txn.repair_only(only.clone());
        }
        let mut applier = Applier::new(self.repo, self.base, &shown, self.forbid, checks);
        loop {
            let mut kind = [0u8; 1];
            if r.read(&mut kind).map_err(io)? == 0 {
                break;
            }
            if r.n > part.size {
                return Err(more());
            }
            let left = part.size - r.n;
            applier.apply(&mut txn, &mut r, kind[0], left)?;
            if r.n > part.size {
                return Err(more());
            }
        }
        if r.n != part.size {
            return Err(bad(
                &shown,
                format!(
                    "decompresses to {} bytes, not its signed {}",
                    r.n, part.size
                ),
            ));
        }
        let hashing = r.inner.into_inner().into_inner();
        if hashing.finish().map_err(io)? != part.sha256 {
            return Err(bad(
                &shown,
                "changed while being applied: its sha256 no longer matches the signed superblock",
            ));
        }
        // The objects still waiting for their deflate streams, and the trees after them.
        applier.finish(&mut txn)?;
        let objects = applier.made();
        // Operations do not name what they make, so a part whose bytes lie (signed by a
        // trusted key, yet wrong) shows here: its trees hash to something else and the
        // signed root is not made. Refused before this part is published.
        let last = i + 1 == self.parts;
        if last && !checks.root_made && !self.repo.has(&checks.root(), ObjectKind::Tree)? {
            return Err(UpdaterError::Incomplete(format!(
                "{}: update is incomplete: its operations do not make the commit's root tree {}",
                file.display(),
                checks.root()
            )));
        }
        txn.commit()?;
        Ok(objects)
    }
}
