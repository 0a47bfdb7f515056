//! `berth-image fsck`: re-hash every object of a repository.

use std::path::PathBuf;

use anyhow::Result;
use store::Repo;

/// The arguments of `fsck`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The repository.
    #[arg(long, value_name = "REPO")]
    repo: PathBuf,
}

pub fn run(a: &Args) -> Result<()> {
    let r = Repo::open(&a.repo)?;
    let report = r.fsck()?;
    for e in report.corrupt.iter().chain(&report.missing) {
        eprintln!("{e}");
    }
    if report.is_ok() {
        println!("{} objects checked, all sound", report.checked);
        Ok(())
    } else {
        anyhow::bail!(
            "{}: {} corrupt and {} missing objects ({} checked)",
            a.repo.display(),
            report.corrupt.len(),
            report.missing.len(),
            report.checked
        )
    }
}
