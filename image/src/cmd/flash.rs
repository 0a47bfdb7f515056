//! `berth-image flash`: a disk image onto a device or a file, by its bmap, verified.

use std::path::PathBuf;

use anyhow::Result;

/// The arguments of `flash`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The disk image.
    image: PathBuf,
    /// A block device (/dev/sdX, /dev/mmcblkN, /dev/disk/by-id/…) or a file.
    target: PathBuf,
    /// The bmap (default: IMAGE.bmap).
    #[arg(long, value_name = "FILE", conflicts_with = "no_bmap")]
    bmap: Option<PathBuf>,
    /// Write every block of the image, without a bmap (and without checking the
    /// image; the read-back still checks the target).
    #[arg(long)]
    no_bmap: bool,
    /// Write a disk that is not removable (a fixed disk or a loop device). Never
    /// writes a device that is in use.
    #[arg(long)]
    force: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let args = crate::flash::FlashArgs {
        image: a.image,
        target: a.target,
        bmap: a.bmap,
        no_bmap: a.no_bmap,
        force: a.force,
    };
    let out = crate::flash::flash(&args, &crate::device::Host::real())?;
    if a.json {
        println!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    let secs = out.write_seconds.max(1e-3);
    let kind = match &out.device {
        Some(d) => format!("{} {d}", out.target_kind),
        None => out.target_kind.to_owned(),
    };
    println!(
        "wrote {} ({} bytes) in {} ranges of {} to {} ({kind}) in {:.2} s ({:.1} MiB/s); read back and verified in {:.2} s",
        crate::bmap::human(out.bytes_written),
        out.bytes_written,
        out.ranges,
        out.image.display(),
        out.target.display(),
        out.write_seconds,
        mib(out.bytes_written) / secs,
        out.verify_seconds
    );
    Ok(())
}

/// Bytes as MiB, for display (a rate); precision past 2^52 bytes does not matter there.
#[allow(clippy::cast_precision_loss)]
fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}
