//! `berth-image checkout`: a commit as a directory tree, optionally checked against
//! public keys first.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use store::Repo;
use store::checkout::CheckoutOptions;

use crate::keys;

/// The arguments of `checkout`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The repository.
    #[arg(long, value_name = "REPO")]
    repo: PathBuf,
    /// The commit (full id or a unique prefix of at least 8 digits).
    commit: String,
    /// Where to create the tree.
    dest: PathBuf,
    /// Copy files instead of hard-linking them to the repository.
    #[arg(long)]
    copy: bool,
    /// Refuse the commit unless it is signed by this public key (repeatable).
    #[arg(long, value_name = "PUB")]
    verify: Vec<PathBuf>,
}

pub fn run(a: &Args) -> Result<()> {
    let r = Repo::open(&a.repo)?;
    let id = r.resolve_commit(&a.commit)?;
    let (c, bytes) = r.read_commit(&id)?;
    if !a.verify.is_empty() {
        let trusted = a
            .verify
            .iter()
            .map(|p| keys::read_public(p))
            .collect::<Result<Vec<_>>>()?;
        let who = r
            .read_signatures(&id)?
            .verify(&bytes, &trusted)
            .with_context(|| format!("commit {id}"))?;
        eprintln!(
            "commit {id}: good signature from key {}",
            format::key::fingerprint(&who)
        );
    }
    let start = Instant::now();
    let stats = store::checkout::checkout(
        &r,
        &c.root,
        &a.dest,
        CheckoutOptions {
            copy: a.copy,
            sync: false,
        },
    )?;
    eprintln!(
        "checked out {} (version {}) at {}: {} directories, {} files linked, {} copied in {:.2}s",
        id,
        c.version,
        a.dest.display(),
        stats.dirs,
        stats.linked,
        stats.copied,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
