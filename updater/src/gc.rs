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
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

use rustix::fd::{AsFd as _, OwnedFd};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use format::{EntryKind, ObjectId, ObjectKind};
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
    /// Objects kept only because an interrupted update's index lists them.
    pub kept_for_updates: u64,
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

fn open_dir(path: &Path) -> Result<Option<OwnedFd>, UpdaterError> {
    match rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(UpdaterError::State(format!(
            "{}: open: {e}",
            path.display()
        ))),
    }
}

/// Names in `dir` (not `.` and `..`).
fn names(dir: &OwnedFd, path: &Path) -> Result<Vec<Vec<u8>>, UpdaterError> {
    let err = |e: Errno| UpdaterError::State(format!("{}: read directory: {e}", path.display()));
    let mut out = Vec::new();
    let mut entries = rustix::fs::Dir::read_from(dir).map_err(err)?;
    while let Some(entry) = entries.read() {
        let n = entry.map_err(err)?.file_name().to_bytes().to_vec();
        if n != b"." && n != b".." {
            out.push(n);
        }
    }
    Ok(out)
}

/// Removes `name` under `dir` and everything below it.
fn remove(dir: &OwnedFd, path: &Path, name: &[u8]) -> Result<(), UpdaterError> {
    store::checkout::remove_tree(dir.as_fd(), name, 0).map_err(|e| {
        UpdaterError::State(format!(
            "{}: remove: {e}",
            path.join(OsStr::from_bytes(name)).display()
        ))
    })
}

impl Device {
    /// The objects listed by the indexes of object pulls in progress (download
    /// directories `berth/repo/tmp/download-*-objects/index`). An index that does not
    /// decode (a download cut short) lists nothing.
    fn pending_pulls(&self) -> Vec<(ObjectId, ObjectKind)> {
        let mut out = Vec::new();
        for (name, path) in self.download_dirs() {
            if !name.ends_with("-objects") {
                continue;
            }
            if let Ok(bytes) = std::fs::read(path.join("index"))
                && let Ok(index) = format::index::Index::decode(&bytes)
            {
                out.extend(index.entries.iter().map(|x| (x.id, x.kind)));
            }
        }
        out
    }

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
        // Deployments go in three steps, each safe to cut: renamed out of sight (one
        // atomic step each, made durable before anything inside is removed); the `/etc`
        // layers of deployments that no longer exist; then the renamed trees. A crash
        // leaves only garbage that the next `gc` finds by the same rules.
        let deploy_path = self.path.join("berth/deploy");
        if let Some(deploy) = open_dir(&deploy_path)? {
            for d in self.sysroot.deployments(4096) {
                if !keep_names.iter().any(|k| k == d.as_str()) {
                    let trash = format!("{TRASH}{}", d.as_str());
                    fsop::renameat(deploy.as_fd(), d.as_str(), deploy.as_fd(), trash.as_str())
                        .map_err(|e| {
                            UpdaterError::State(format!(
                                "{}: rename for removal: {e}",
                                deploy_path.join(d.as_str()).display()
                            ))
                        })?;
                    report.deployments.push(d.as_str().to_owned());
                }
            }
            fsop::fsync(deploy.as_fd()).map_err(|e| {
                UpdaterError::State(format!("{}: fsync: {e}", deploy_path.display()))
            })?;
            let present: Vec<Vec<u8>> = names(&deploy, &deploy_path)?;
            let etc_path = self.path.join("berth/state/etc");
            if let Some(etc) = open_dir(&etc_path)? {
                for n in names(&etc, &etc_path)? {
                    if !present.contains(&n) {
                        remove(&etc, &etc_path, &n)?;
                    }
                }
            }
            for n in present.iter().filter(|n| n.starts_with(TRASH.as_bytes())) {
                remove(&deploy, &deploy_path, n)?;
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
        for (id, kind) in self.pending_pulls() {
            if repo.has(&id, kind)? && keep.insert(id) {
                report.kept_for_updates += 1;
            }
        }
        let (objects, bytes) = repo.remove_unreachable(&keep)?;
        report.objects = objects;
        report.bytes = bytes;
        Ok(report)
    }
}
