//! `berth-image boards`: the boards berth-image knows.

use std::path::PathBuf;

use anyhow::Result;

/// The arguments of `boards`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the board files are.
    #[arg(long, value_name = "DIR", default_value = "boards")]
    boards: PathBuf,
}

pub fn run(a: &Args) -> Result<()> {
    for b in crate::board::all(&a.boards)? {
        println!(
            "{:<18} {:<8} kernel {:<18} bootloader {:<12} {}",
            b.name,
            b.arch.musl_triple().split('-').next().unwrap_or_default(),
            b.kernel.debian_package,
            format!("{:?}", b.bootloader.kind),
            b.description
        );
    }
    Ok(())
}
