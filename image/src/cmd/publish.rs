//! `berth-image publish`: a commit to a channel of a static repository.

use std::path::PathBuf;

use anyhow::Result;

use super::release::ReleaseArgs;

/// The arguments of `publish`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    release: ReleaseArgs,
    /// The static repository directory (created if missing).
    #[arg(long = "to", value_name = "DIR")]
    to: PathBuf,
    /// The channel (a-z, 0-9, . _ -).
    #[arg(long, value_name = "NAME")]
    channel: String,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let out = crate::publish::publish(&a.release.read()?, &a.to, &a.channel, 0)?;
    if a.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!(
            "channel {} serial {} -> {} (full update {} bytes; {} deltas: {})",
            out.channel,
            out.serial,
            &out.commit[..16],
            out.full_bytes,
            out.deltas.len(),
            out.deltas
                .iter()
                .map(|(f, b)| format!("from {} {b} bytes", &f[..16]))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}
