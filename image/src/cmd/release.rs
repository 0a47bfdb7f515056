//! What a release is made of, as `publish` and `push` both take it on the command line.

use std::path::PathBuf;

use anyhow::Result;

use crate::keys::SigningKeys;
use crate::publish::Release;

/// What a release is made of, for `publish` and `push`.
#[derive(Debug, clap::Args)]
pub struct ReleaseArgs {
    /// The repository holding the commits.
    #[arg(long, value_name = "REPO")]
    repo: PathBuf,
    /// The commit the channel points at.
    #[arg(long, value_name = "COMMIT")]
    commit: String,
    /// The secret key to sign the updates and the pointer with; repeat it to sign with
    /// several while devices move from one key to the next (docs/KEYS.md).
    #[arg(long, value_name = "K", required = true)]
    key: Vec<PathBuf>,
    /// Also make a delta from this commit (repeatable).
    #[arg(long, value_name = "COMMIT")]
    from: Vec<String>,
    /// Days until devices refuse the pointer (1 to 3650: republish well before then).
    #[arg(long, value_name = "DAYS", default_value_t = 30)]
    expires_in_days: u64,
    /// Uncompressed bytes per part (the unit of resuming a download).
    #[arg(long, value_name = "BYTES", default_value_t = 8 << 20)]
    part_size: u64,
    /// zstd compression level (1 to 22).
    #[arg(long, value_name = "N", default_value_t = 19, value_parser = clap::value_parser!(i32).range(1..=22))]
    level: i32,
}

impl ReleaseArgs {
    /// The release, its keys read (the one place they are).
    pub fn read(self) -> Result<Release> {
        Ok(Release {
            keys: SigningKeys::read(&self.key)?,
            repo: self.repo,
            commit: self.commit,
            from: self.from,
            expires_days: self.expires_in_days,
            part_size: self.part_size,
            level: self.level,
        })
    }
}
