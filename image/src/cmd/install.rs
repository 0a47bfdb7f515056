//! `berth-image install`: a sysroot directory for a device's first boot.

use std::path::PathBuf;

use anyhow::Result;
use store::Repo;

use super::layout::LayoutArgs;

/// The arguments of `install`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The repository holding the commits.
    #[arg(long, value_name = "REPO")]
    repo: PathBuf,
    #[command(flatten)]
    layout: LayoutArgs,
    /// The sysroot directory to fill (new or empty).
    #[arg(long, value_name = "DIR")]
    sysroot: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    let r = Repo::open(&a.repo)?;
    let done = crate::install::install(&r, &a.layout.layout(), &a.sysroot)?;
    for (name, commit) in &done.deployments {
        println!(
            "{}/berth/deploy/{} {commit}",
            a.sysroot.display(),
            name.as_str()
        );
    }
    Ok(())
}
