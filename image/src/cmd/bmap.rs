//! `berth-image bmap`: IMAGE.bmap for a sparse image made another way than `disk`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;

/// The arguments of `bmap`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image file.
    image: PathBuf,
}

pub fn run(a: &Args) -> Result<()> {
    let image = &a.image;
    let started = Instant::now();
    let map = crate::bmap::create(image)?;
    let path = crate::bmap::write_beside(image, &map)?;
    println!("{}", path.display());
    eprintln!(
        "{}: {} mapped in {} ranges, of {} ({:.2} s)",
        image.display(),
        crate::bmap::human(map.mapped_bytes()),
        map.ranges.len(),
        crate::bmap::human(map.image_size),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
