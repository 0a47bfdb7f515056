//! Installing a commit whose objects are in the store: its closure checked, the commit
//! written, its deployment checked out, `/etc` carried forward, and the record flipped
//! to make it the trial (with its boot-partition entry, on a loader board).

use std::path::{Path, PathBuf};

use format::record::{DeploymentName, Record};
use format::sig::Signatures;
use format::{Commit, EntryKind, ObjectId, ObjectKind};
use store::checkout::{CheckoutOptions, checkout};
use store::{Repo, Txn};

use crate::Device;
use crate::checks::TreeChecks;
use crate::error::UpdaterError;

impl Device {
    /// The steps every update ends with, once its objects are in the store: checks the
    /// commit's tree and writes the commit, checks out its deployment, carries `/etc`
    /// forward, disarms the deadline and makes the deployment the trial.
    #[allow(clippy::too_many_arguments)] // each is a different part of the update's state
    pub(crate) fn finish_update(
        &self,
        repo: &Repo,
        file: &Path,
        checks: &mut TreeChecks<'_>,
        (commit, sigs): (&Commit, Option<&Signatures>),
        default: &DeploymentName,
        tries: u8,
        deadline: Option<&crate::deadline::Armed>,
    ) -> Result<Vec<PathBuf>, UpdaterError> {
        let name = DeploymentName::for_commit(&ObjectId::digest(&commit.encode()));
        // On a loader board the commit must carry a kernel set, and a new one must fit on
        // the boot partition: checked before the deployment is checked out or the record
        // touched (the objects fetched stay in the store until gc).
        let boot = self.boot_part()?;
        if let Some(bp) = &boot {
            crate::bootpart::check_space(bp, repo, &commit.root)?;
        }
        install_commit(
            repo,
            file,
            checks,
            commit,
            sigs,
            &self.path.join("berth/deploy").join(name.as_str()),
        )?;
        let skipped = self.carry_etc(repo, default, &name)?;
        if let Some(d) = deadline {
            d.disarm();
        }
        // Read now, not when the update started: a long download must not undo what
        // happened meanwhile (a mark-good, a rollback); under the record lock, so none
        // happens between this read and the write.
        let _lock = self.lock(crate::lock::LockKind::Record, "update")?;
        let (rec, copy) = self.record()?;
        let new = Record {
            trial: Some(name),
            tries_left: tries,
            ..rec
        };
        // A trial with its own kernel set: its entry is written inert before the record
        // names it, and activated after (docs/FORMAT.md, "Loader entries").
        let pending = match &boot {
            Some(bp) => self.boot_stage_trial(bp, repo, &name, &new, tries)?,
            None => None,
        };
        self.write(&(rec, copy), &new)?;
        if let (Some(bp), Some(p)) = (&boot, pending) {
            bp.activate_pending(p, &new)?;
        }
        Ok(skipped)
    }

    /// Starts the new deployment's persistent `/etc` layer as a copy of the old one's,
    /// so local configuration carries forward. Copied through the store (build, then a
    /// copy checkout), which keeps owners, modes, xattrs and overlay whiteouts. Unix
    /// sockets (a service's, left in `/etc`) cannot be stored: they are skipped, and
    /// their paths returned for a warning. Every directory on the way is opened without
    /// following a symlink ([`crate::dirs`]).
    fn carry_etc(
        &self,
        repo: &Repo,
        from: &DeploymentName,
        to: &DeploymentName,
    ) -> Result<Vec<PathBuf>, UpdaterError> {
        let etc = crate::ETC_DIR;
        let Some(old) = self.own_dir(&format!("{etc}/{}/upper", from.as_str()), None)? else {
            return Ok(Vec::new());
        };
        let new_dir = self
            .own_dir(&format!("{etc}/{}", to.as_str()), Some(0o755))?
            .ok_or_else(|| UpdaterError::State(format!("{etc}/{}: not made", to.as_str())))?;
        // Carried already (a retry after the checkout); a symlink there is refused.
        if new_dir.sub("upper", None)?.is_some() {
            return Ok(Vec::new());
        }
        let mut txn = Txn::begin(repo)?;
        let (tree, _, skipped) =
            store::build::build_layer(&mut txn, old.fd(), old.path(), &mut |_| {})?;
        txn.commit()?;
        checkout(
            repo,
            &tree,
            &new_dir.join("upper"),
            CheckoutOptions {
                copy: true,
                sync: true,
            },
        )?;
        Ok(skipped)
    }
}

/// Checks that everything the commit names is in the store, writes the commit object
/// (and its signatures) and checks out the deployment at `dest` (synced).
fn install_commit(
    repo: &Repo,
    file: &Path,
    checks: &mut TreeChecks<'_>,
    commit: &Commit,
    commit_sigs: Option<&Signatures>,
    dest: &Path,
) -> Result<(), UpdaterError> {
    // Everything the commit names must be here now (a root tree made by an earlier,
    // interrupted run was checked then; checked again, it costs a walk).
    let incomplete = |why: String| {
        UpdaterError::Incomplete(format!("{}: update is incomplete: {why}", file.display()))
    };
    if !repo.has(&commit.root, ObjectKind::Tree)? {
        return Err(incomplete(format!(
            "its operations do not make the commit's root tree {}",
            commit.root
        )));
    }
    checks.check_root(file)?;
    check_closure(repo, &commit.root, 0).map_err(incomplete)?;
    let mut txn = Txn::begin(repo)?;
    txn.write_commit(commit, commit_sigs)?;
    txn.commit()?;
    if !dest.exists() {
        checkout(
            repo,
            &commit.root,
            dest,
            CheckoutOptions {
                copy: false,
                sync: true,
            },
        )?;
    }
    Ok(())
}

fn check_closure(repo: &Repo, root: &ObjectId, depth: usize) -> Result<(), String> {
    if depth > format::limits::TREE_DEPTH_MAX {
        return Err(format!(
            "tree {root} is nested deeper than the limit of {}",
            format::limits::TREE_DEPTH_MAX
        ));
    }
    let tree = repo.read_tree(root).map_err(|e| e.to_string())?;
    for e in tree.entries() {
        match e.kind {
            EntryKind::Tree => check_closure(repo, &e.id, depth + 1)?,
            EntryKind::File => {
                if !repo
                    .has(&e.id, ObjectKind::File)
                    .map_err(|x| x.to_string())?
                {
                    return Err(format!("object {} is missing", e.id));
                }
            }
        }
    }
    Ok(())
}
