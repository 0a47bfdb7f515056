//! `berth-image install`: lays out a sysroot directory as a device's first boot needs it:
//! the object store with the commits, their deployments checked out, the persistent
//! state seeded, and the boot record.
//!
//! ```text
//! <sysroot>/berth/repo/                 the object store (config, objects/, tmp/)
//! <sysroot>/berth/deploy/<name>/        one checkout per deployment (hard links into repo)
//! <sysroot>/berth/state/var/            persistent /var, seeded from the default's /var
//! <sysroot>/berth/boot/record.{a,b}     the boot record, both copies
//! <sysroot>/berth/boot/last-good         the default's name (booted without a valid record)
//! <sysroot>/berth/{store,record}.lock   empty files berth locks (flock) to keep one writer
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use format::record::{DeploymentName, Record};
use format::{EntryKind, ObjectId};
use store::checkout::{CheckoutOptions, checkout};
use store::{Repo, Txn};

/// Which commits go where in the record.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The default deployment.
    pub default: String,
    /// The previous (fallback) deployment.
    pub previous: Option<String>,
    /// A trial deployment and its tries.
    pub trial: Option<(String, u8)>,
}

/// What was installed.
#[derive(Debug)]
pub struct Installed {
    /// (deployment name, commit) for default, previous, trial, in that order.
    pub deployments: Vec<(DeploymentName, ObjectId)>,
}

/// Installs the commits of `layout` from `repo` into the empty (or new) directory `sysroot`.
pub fn install(repo: &Repo, layout: &Layout, sysroot: &Path) -> Result<Installed> {
    let resolve = |c: &str| {
        repo.resolve_commit(c)
            .with_context(|| format!("commit {c}"))
    };
    let default = resolve(&layout.default)?;
    let previous = layout.previous.as_deref().map(resolve).transpose()?;
    let trial = layout
        .trial
        .as_ref()
        .map(|(c, n)| resolve(c).map(|id| (id, *n)))
        .transpose()?;
    if let Some((_, 0)) = trial {
        bail!("--tries must be at least 1");
    }
    match std::fs::read_dir(sysroot) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{}: not empty; install needs a new or empty directory",
                    sysroot.display()
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(sysroot)
                .with_context(|| format!("{}: create", sysroot.display()))?;
        }
        Err(e) => return Err(e).with_context(|| format!("{}: cannot read", sysroot.display())),
    }
    let berth = sysroot.join("berth");
    for d in ["deploy", "boot", "state"] {
        std::fs::create_dir_all(berth.join(d))
            .with_context(|| format!("{}: create", berth.join(d).display()))?;
    }
    // The device agent's lock files, made now so that its first locked command changes
    // nothing on the device (it makes them itself on a sysroot without them).
    for f in ["store.lock", "record.lock"] {
        std::fs::write(berth.join(f), b"")
            .with_context(|| format!("{}: create", berth.join(f).display()))?;
    }
    let target = Repo::create(&berth.join("repo"))?;
    let mut commits: Vec<ObjectId> = vec![default];
    commits.extend(previous);
    commits.extend(trial.map(|t| t.0));
    let mut txn = Txn::begin(&target)?;
    let mut seen = HashSet::new();
    for c in &commits {
        copy_commit(repo, &mut txn, c, &mut seen)?;
    }
    txn.commit()?;

    let mut deployments = Vec::new();
    for c in &commits {
        let name = DeploymentName::for_commit(c);
        let dest = berth.join("deploy").join(name.as_str());
        if !dest.exists() {
            let (commit, _) = target.read_commit(c)?;
            checkout(
                &target,
                &commit.root,
                &dest,
                CheckoutOptions {
                    copy: false,
                    sync: false,
                },
            )?;
        }
        deployments.push((name, *c));
    }
    seed_var(&target, &default, &berth.join("state/var"))?;

    let name = DeploymentName::for_commit;
    let record = Record {
        generation: 1,
        default: Some(name(&default)),
        previous: previous.as_ref().map(name),
        trial: trial.as_ref().map(|t| name(&t.0)),
        tries_left: trial.map_or(0, |t| t.1),
        last_rollback: None,
    };
    // Both copies, so the record is redundant from the first boot on; B is the newer.
    std::fs::write(berth.join("boot/record.a"), record.encode()).context("write boot record")?;
    let record = Record {
        generation: 2,
        ..record
    };
    std::fs::write(berth.join("boot/record.b"), record.encode()).context("write boot record")?;
    // What berth-init boots if both copies are ever damaged: the default.
    std::fs::write(
        berth.join("boot/last-good"),
        format!("{}\n", name(&default).as_str()),
    )
    .context("write berth/boot/last-good")?;
    // One syncfs makes the whole sysroot durable (this runs on a build host or a
    // device being provisioned; either way nothing is booted from it before this).
    let fd = rustix::fs::open(
        sysroot,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
        rustix::fs::Mode::empty(),
    )
    .with_context(|| format!("{}: open", sysroot.display()))?;
    rustix::fs::syncfs(&fd).with_context(|| format!("{}: sync", sysroot.display()))?;
    Ok(Installed { deployments })
}

/// Copies a commit and everything it references into `txn` (objects are re-hashed on
/// the way in, so a damaged source object stops the install).
fn copy_commit(
    from: &Repo,
    txn: &mut Txn<'_>,
    id: &ObjectId,
    seen: &mut HashSet<ObjectId>,
) -> Result<()> {
    let (commit, _) = from.read_commit(id)?;
    let sigs = from.read_signatures(id)?;
    copy_tree(from, txn, &commit.root, seen)?;
    txn.write_commit(&commit, (!sigs.entries().is_empty()).then_some(&sigs))?;
    Ok(())
}

fn copy_tree(
    from: &Repo,
    txn: &mut Txn<'_>,
    id: &ObjectId,
    seen: &mut HashSet<ObjectId>,
) -> Result<()> {
    if !seen.insert(*id) {
        return Ok(());
    }
    let tree = from.read_tree(id)?;
    for e in tree.entries() {
        match e.kind {
            EntryKind::Tree => copy_tree(from, txn, &e.id, seen)?,
            EntryKind::File => {
                if seen.insert(e.id) {
                    let (header, mut content) = from.file_object(&e.id)?;
                    let shown = PathBuf::from(format!("object {}", e.id));
                    let got = txn.write_file(&header, &mut content, &shown)?;
                    if got != e.id {
                        bail!(
                            "object {}: content hashes to {got}; the source repository is corrupt",
                            e.id
                        );
                    }
                }
            }
        }
    }
    txn.write_tree(&tree)?;
    Ok(())
}

/// Seeds persistent `/var` with a copy (not hard links: it is written to) of the
/// default deployment's `/var`.
fn seed_var(repo: &Repo, commit: &ObjectId, dest: &Path) -> Result<()> {
    let (c, _) = repo.read_commit(commit)?;
    let root = repo.read_tree(&c.root)?;
    match root
        .entries()
        .iter()
        .find(|e| e.name.as_bytes() == b"var" && e.kind == EntryKind::Tree)
    {
        Some(var) => {
            checkout(
                repo,
                &var.id,
                dest,
                CheckoutOptions {
                    copy: true,
                    sync: false,
                },
            )?;
        }
        None => {
            std::fs::create_dir_all(dest).with_context(|| format!("{}: create", dest.display()))?;
        }
    }
    Ok(())
}
