//! `berth fsck --repair --source UPDATE`: rewrites only the objects that are corrupt or
//! missing, from an update that carries them.
//!
//! 1. `fsck` names the bad objects (a corrupt signature file names its commit).
//! 2. The update's superblock is verified against the running deployment's keys, as for
//!    `berth update`, and every part against its signed hash.
//! 3. Its parts are applied in repair mode (`Txn::repair_only`): an object is written
//!    only if it is one of the bad ones, and it replaces the corrupt copy with one
//!    `rename` when the transaction commits. A delta rebuilds what it carries (new and
//!    changed files, trees on the changed paths); a full update (`berth-image delta
//!    --empty`) rebuilds any object of its commit.
//! 4. Deployments are hard links into the store, so they still reach the corrupt inodes:
//!    each file of a repaired object is swapped for a link to the new one (one `rename`
//!    per file).
//!
//! Nothing else is written: no progress file, no record change, no version check (a
//! repair never changes what boots).

use std::collections::HashSet;
use std::path::Path;

use format::{Commit, ObjectId, ObjectKind};
use store::{Repo, Txn};

use crate::error;
use crate::part::PartRun;
use crate::policy::Forbidden;
use crate::source::{self, Source};
use crate::{Device, UpdaterError};

/// What a repair did.
#[derive(Debug, Default, serde::Serialize)]
pub struct RepairReport {
    /// Objects fsck re-hashed.
    pub checked: u64,
    /// Objects that were corrupt or missing.
    pub bad: u64,
    /// Of those, how many are sound now.
    pub repaired: u64,
    /// Deployment files pointed back at a repaired object.
    pub relinked: u64,
    /// What is still wrong, one line each.
    pub remaining: Vec<String>,
}

impl Device {
    /// Repairs the store from `source`; see the module documentation.
    pub fn repair(&self, source: &Path) -> Result<RepairReport, UpdaterError> {
        let _lock = self.lock(crate::lock::LockKind::Store, "fsck --repair")?;
        let repo = Repo::open(&self.path.join("berth/repo"))?;
        let fsck = repo.fsck()?;
        let bad: HashSet<(ObjectId, ObjectKind)> = fsck.bad.iter().copied().collect();
        let mut report = RepairReport {
            checked: fsck.checked,
            bad: bad.len() as u64,
            ..RepairReport::default()
        };
        if bad.is_empty() {
            return Ok(report);
        }
        let (rec, _) = self.record()?;
        let running = self.running(&rec)?;
        let Source {
            mut f,
            body,
            parts_start,
            split,
        } = self.open_source(source, &running)?;
        source::check_all_parts(source, &mut f, split, parts_start, &body, &[])?;
        let base = crate::apply::base_order(&repo, body.from.as_ref())?;
        let commit = Commit::decode(&body.commit).map_err(|e| error::bad(source, e.to_string()))?;
        let mut checks = crate::checks::TreeChecks::new(&repo, commit.root);
        let run = PartRun {
            repo: &repo,
            base: &base,
            forbid: Forbidden::default(),
            parts: body.parts.len(),
            only: Some(&bad),
        };
        let mut offset = parts_start;
        for (i, part) in body.parts.iter().enumerate() {
            let start = offset;
            offset += part.len;
            let (mut pf, at, shown) = source::open_part(source, &mut f, split, i, start, part)?;
            run.apply(&mut checks, &mut pf, &shown, i, at, part)?;
        }
        let commit_id = ObjectId::digest(&body.commit);
        if bad.contains(&(commit_id, ObjectKind::Commit)) {
            let sigs = if body.commit_signatures.is_empty() {
                None
            } else {
                Some(
                    format::sig::Signatures::decode(&body.commit_signatures)
                        .map_err(|e| error::bad(source, e.to_string()))?,
                )
            };
            let mut txn = Txn::begin(&repo)?;
            txn.repair_only(bad.clone());
            txn.write_commit(&commit, sigs.as_ref())?;
            txn.commit()?;
        }

        let after = repo.fsck()?;
        let still: HashSet<(ObjectId, ObjectKind)> = after.bad.iter().copied().collect();
        report.repaired = bad.difference(&still).count() as u64;
        report.remaining = after
            .corrupt
            .iter()
            .chain(&after.missing)
            .map(ToString::to_string)
            .collect();
        let fixed_files: HashSet<ObjectId> = bad
            .difference(&still)
            .filter(|(_, k)| *k == ObjectKind::File)
            .map(|(id, _)| *id)
            .collect();
        if !fixed_files.is_empty() {
            for d in self.sysroot.deployments(4096) {
                let Ok(c) = repo.resolve_commit(d.as_str()) else {
                    continue;
                };
                let Ok((commit, _)) = repo.read_commit(&c) else {
                    continue;
                };
                report.relinked += store::checkout::relink(
                    &repo,
                    &commit.root,
                    &self.path.join("berth/deploy").join(d.as_str()),
                    &fixed_files,
                )?;
            }
            let sync = rustix::fs::open(
                &self.path,
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
                rustix::fs::Mode::empty(),
            )
            .and_then(|fd| fsop::syncfs(rustix::fd::AsFd::as_fd(&fd)));
            sync.map_err(|e| UpdaterError::Sysroot {
                path: self.path.clone(),
                step: "sync",
                errno: e,
            })?;
        }
        Ok(report)
    }
}
