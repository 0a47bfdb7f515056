//! `berth-image keygen`: a new signing key pair.

use std::path::PathBuf;

use anyhow::Result;

use crate::keys;

/// The arguments of `keygen`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to write the keys into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

pub fn run(a: &Args) -> Result<()> {
    let (secret, public) = keys::keygen(&a.out)?;
    println!("{}", secret.display());
    println!("{}", public.display());
    Ok(())
}
