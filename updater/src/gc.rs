//! `berth gc`: removes deployments nothing points at, then the objects no kept
//! deployment references.
//!
//! Kept, always: the booted deployment and every deployment the record names (default,
//! trial, previous). Order is what makes it crash-safe: deployments go first (a crash
//! leaves unreferenced objects, which the next `gc` removes), and an object is removed
//! only if no kept commit reaches it. Staging directories of dead processes are removed
//! by the store itself.

use std::collections::HashSet;
use std::path::Path;

use format::{EntryKind, ObjectId};
use store::Repo;

use crate::{Device, UpdaterError};

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

fn remove_all(path: &Path) -> Result<(), UpdaterError> {
    // Checkouts have read-only directories; make them writable on the way down.
    if let Ok(entries) = std::fs::read_dir(path) {
        let _ = std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o700));
        for e in entries.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_all(&p)?;
            } else {
                std::fs::remove_file(&p).map_err(|err| {
                    UpdaterError::State(format!("{}: remove: {err}", p.display()))
                })?;
            }
        }
        std::fs::remove_dir(path)
            .map_err(|err| UpdaterError::State(format!("{}: remove: {err}", path.display())))?;
    }
    Ok(())
}

impl Device {
    /// Removes what nothing references.
    pub fn gc(&self) -> Result<GcReport, UpdaterError> {
        let (rec, _) = self.record()?;
        let booted = self.booted()?.map(|b| b.0);
        let mut keep_names: Vec<String> = [rec.default, rec.trial, rec.previous]
            .iter()
            .flatten()
            .map(|n| n.as_str().to_owned())
            .collect();
        keep_names.extend(booted);
        let mut report = GcReport::default();
        for d in self.sysroot.deployments(4096) {
            if !keep_names.iter().any(|k| k == d.as_str()) {
                remove_all(&self.path.join("berth/deploy").join(d.as_str()))?;
                remove_all(&self.path.join("berth/state/etc").join(d.as_str()))?;
                report.deployments.push(d.as_str().to_owned());
            }
        }
        let repo = Repo::open(&self.path.join("berth/repo"))?;
        let mut keep = HashSet::new();
        for name in &keep_names {
            // A kept deployment whose commit the store lacks cannot be protected by
            // reachability: refuse rather than guess.
            let id = repo.resolve_commit(name).map_err(|e| {
                UpdaterError::State(format!("deployment {name} is kept but its commit is not in the store ({e}); not collecting"))
            })?;
            keep.insert(id);
            let (c, _) = repo.read_commit(&id)?;
            reach(&repo, &c.root, &mut keep)?;
        }
        let (objects, bytes) = repo.remove_unreachable(&keep)?;
        report.objects = objects;
        report.bytes = bytes;
        Ok(report)
    }
}
