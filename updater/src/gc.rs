//! `berth gc`: removes deployments nothing points at, then the objects no kept
//! deployment references.
//!
//! Kept, always: the booted deployment and every deployment the record names (default,
//! trial, previous), and the objects an interrupted object pull has stored so far (those
//! that the index in its download directory lists: the next run of the update needs
//! them, and the next update of another commit removes that directory). Order is what
//! makes it crash-safe: deployments go first (a crash
//! leaves unreferenced objects, which the next `gc` removes), and an object is removed
//! only if no kept commit reaches it. Staging directories of dead processes are removed
//! by the store itself.

use std::collections::HashSet;

use format::record::DeploymentName;
use format::{EntryKind, ObjectId, ObjectKind};
use store::Repo;
use sysroot::Bootable;

use crate::{Device, ETC_DIR, TMP_DIR, UpdaterError};

/// What `gc` removed.
#[derive(Debug, Default, serde::Serialize)]
pub struct GcReport {
    /// Deployments removed.
    pub deployments: Vec<String>,
    /// Objects removed.
    pub objects: u64,
    /// Bytes of object content freed (regular files' sizes; hard links to kept
    /// checkouts do not exist for removed objects).
    pub bytes: u64,
    /// Objects kept only because an interrupted update's index lists them.
    pub kept_for_updates: u64,
    /// Interrupted file updates whose progress was forgotten: their next run applies
    /// every part again, since the objects of the parts applied so far may be gone.
    pub progress_forgotten: u64,
    /// Loader entries removed from the boot partition (of deployments the record no
    /// longer names, or older ones of those it does).
    pub boot_entries: Vec<String>,
    /// Kernel sets removed from the boot partition (no remaining entry boots them).
    pub kernel_sets: Vec<String>,
}

fn reach(repo: &Repo, tree: &ObjectId, keep: &mut HashSet<ObjectId>) -> Result<(), UpdaterError> {
    if !keep.insert(*tree) {
        return Ok(());
    }
    for e in repo.read_tree(tree)?.entries() {
        match e.kind {
            EntryKind::Tree => reach(repo, &e.id, keep)?,
            EntryKind::File => {
                keep.insert(e.id);
            }
        }
    }
    Ok(())
}

/// The prefix of a deployment being removed: not a valid deployment name, so neither
/// `status` nor berth-init's fallback ever sees a half-removed deployment.
const TRASH: &str = ".gc-";

/// The most of a kept object index gc reads: above the largest index a pull accepts
/// (`format::index::ENTRIES_MAX` entries of 49 bytes, plus the commit).
const INDEX_READ_MAX: u64 = 1 << 28;

impl Device {
    /// The objects listed by the indexes of object pulls in progress (download
    /// directories `berth/repo/tmp/download-*-objects/index`). An index that does not
    /// decode (a download cut short) lists nothing.
    fn pending_pulls(&self) -> Result<Vec<(ObjectId, ObjectKind)>, UpdaterError> {
        let mut out = Vec::new();
        for name in self.download_dirs()? {
            if !name.ends_with("-objects") {
                continue;
            }
            let Some(dir) = self.own_dir(&format!("{TMP_DIR}/{name}"), None)? else {
                continue;
            };
            if let Ok(Some(bytes)) = dir.read("index", INDEX_READ_MAX)
                && let Ok(index) = format::index::Index::decode(&bytes)
            {
                out.extend(index.entries.iter().map(|x| (x.id, x.kind)));
            }
        }
        Ok(out)
    }

    /// Forgets the progress of interrupted file updates (`update-<id16>.done`): the
    /// objects their applied parts stored are referenced by nothing yet, so gc removes
    /// them, and a retry that skipped those parts could never complete. Without the
    /// file, the retry applies every part again. Made durable before any object goes.
    /// Returns how many were forgotten.
    fn forget_update_progress(&self) -> Result<u64, UpdaterError> {
        let Some(tmp) = self.own_dir(TMP_DIR, None)? else {
            return Ok(0);
        };
        let mut n = 0;
        for name in tmp.names()? {
            if name.starts_with(b"update-") && name.ends_with(b".done") {
                tmp.remove(&name)?;
                n += 1;
            }
        }
        if n > 0 {
            tmp.sync()?;
        }
        Ok(n)
    }

    /// Removes what nothing references.
    pub fn gc(&self) -> Result<GcReport, UpdaterError> {
        let _lock = self.lock(crate::lock::LockKind::Store, "gc")?;
        let (rec, _) = self.record()?;
        let booted = self.booted()?.map(|b| b.0);
        let mut keep_names: Vec<String> = [rec.default, rec.trial, rec.previous]
            .iter()
            .flatten()
            .map(|n| n.as_str().to_owned())
            .collect();
        keep_names.extend(booted);
        let mut report = GcReport::default();
        // Deployments go in three steps, each safe to cut: renamed out of sight (one
        // atomic step each, made durable before anything inside is removed); the `/etc`
        // layers of deployments that no longer exist; then the renamed trees. A crash
        // leaves only garbage that the next `gc` finds by the same rules.
        if let Some(deploy) = self.own_dir(sysroot::DEPLOY_DIR, None)? {
            for d in self.sysroot.deployments(4096) {
                if !keep_names.iter().any(|k| k == d.as_str()) {
                    let trash = format!("{TRASH}{}", d.as_str());
                    fsop::renameat(deploy.fd(), d.as_str(), deploy.fd(), trash.as_str()).map_err(
                        |e| {
                            UpdaterError::State(format!(
                                "{}: rename for removal: {e}",
                                deploy.join(d.as_str()).display()
                            ))
                        },
                    )?;
                    report.deployments.push(d.as_str().to_owned());
                }
            }
            deploy.sync()?;
            let present: Vec<Vec<u8>> = deploy.names()?;
            if let Some(etc) = self.own_dir(ETC_DIR, None)? {
                for n in etc.names()? {
                    if !present.contains(&n) {
                        etc.remove(&n)?;
                    }
                }
            }
            for n in present.iter().filter(|n| n.starts_with(TRASH.as_bytes())) {
                deploy.remove(n)?;
            }
        }
        let repo = Repo::open(&self.path.join("berth/repo"))?;
        let mut keep = HashSet::new();
        for name in &keep_names {
            // A name the record keeps but whose deployment is not on disk (an update's
            // checkout that an older gc removed) holds nothing to protect; the channel
            // offers that update again (`offers_new`).
            if DeploymentName::new(name.as_bytes())
                .is_ok_and(|n| self.sysroot.probe(&n, b"/sbin/init") == Bootable::Missing)
            {
                continue;
            }
            // A kept deployment whose commit the store lacks cannot be protected by
            // reachability: refuse rather than guess.
            let id = repo.resolve_commit(name).map_err(|e| {
                UpdaterError::State(format!("deployment {name} is kept but its commit is not in the store ({e}); not collecting"))
            })?;
            keep.insert(id);
            let (c, _) = repo.read_commit(&id)?;
            reach(&repo, &c.root, &mut keep)?;
        }
        report.progress_forgotten = self.forget_update_progress()?;
        for (id, kind) in self.pending_pulls()? {
            if repo.has(&id, kind)? && keep.insert(id) {
                report.kept_for_updates += 1;
            }
        }
        let (objects, bytes) = repo.remove_unreachable(&keep)?;
        report.objects = objects;
        report.bytes = bytes;
        // The boot partition, under the record lock: what the loader boots follows the
        // record, and no mark-good or rollback rewrites entries meanwhile.
        if self.boot_config()?.is_some() {
            let _lock = self.lock(crate::lock::LockKind::Record, "gc")?;
            let (rec, _) = self.record()?;
            (report.boot_entries, report.kernel_sets) =
                self.boot_settle(self.boot_part()?.as_ref(), &rec, true)?;
        }
        Ok(report)
    }
}
