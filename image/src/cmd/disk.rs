//! `berth-image disk`: a bootable disk image for a board, with its bmap.

use std::path::PathBuf;

use anyhow::Result;

use super::layout::LayoutArgs;

/// The arguments of `disk`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The board: a directory under --boards holding board.toml.
    #[arg(long, value_name = "NAME")]
    board: String,
    /// The repository holding the commits.
    #[arg(long, value_name = "REPO")]
    repo: PathBuf,
    #[command(flatten)]
    layout: LayoutArgs,
    /// The disk image to write; the kernel and initramfs go beside it
    /// (NAME.kernel, NAME.initrd).
    #[arg(short = 'o', long = "output", value_name = "DISK.IMG")]
    output: PathBuf,
    /// Where the board files are.
    #[arg(long, value_name = "DIR", default_value = "boards")]
    boards: PathBuf,
    /// The unpacked Debian kernel package (default: what ci/fetch-kernels.sh made
    /// under /var/cache/berth/debian/<arch>/kernel).
    #[arg(long, value_name = "DIR")]
    kernel_dir: Option<PathBuf>,
    /// berth-init for the board's architecture (default: the installed one,
    /// /usr/lib/berth/init/<target>/berth-init beside /usr/bin/berth-image, else the one
    /// ci/check-init.sh built beside this build of berth-image).
    #[arg(long, value_name = "PATH")]
    init: Option<PathBuf>,
    /// The unpacked firmware and loaders of boards that boot through them (default:
    /// what ci/fetch-loaders.sh made: the board's bootloader.loader-dir under
    /// /var/cache/berth, else /var/cache/berth/debian/<arch>/loaders).
    #[arg(long, value_name = "DIR")]
    loader_dir: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let out = crate::disk::disk(&crate::disk::DiskArgs {
        board: a.board,
        boards_dir: a.boards,
        repo: a.repo,
        layout: a.layout.layout(),
        output: a.output,
        kernel_dir: a.kernel_dir,
        init: a.init,
        loader_dir: a.loader_dir,
    })?;
    if a.json {
        println!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    println!("disk:       {}", out.disk.display());
    println!("bmap:       {}", out.bmap.display());
    println!("kernel:     {}", out.kernel.display());
    println!("initramfs:  {}", out.initramfs.display());
    println!("sysroot:    PARTUUID={}", out.partuuid);
    for (name, commit) in &out.deployments {
        println!("deployment: {name} (commit {commit})");
    }
    if let Some(q) = &out.qemu {
        let quoted: Vec<String> = q
            .iter()
            .map(|a| {
                if a.contains(' ') {
                    format!("'{a}'")
                } else {
                    a.clone()
                }
            })
            .collect();
        println!("boot it with:\n  {}", quoted.join(" "));
    }
    println!(
        "flash it to a USB stick or SD card (/dev/sdX) with either of:\n  bmaptool copy --bmap {bmap} {disk} /dev/sdX\n  berth-image flash {disk} /dev/sdX",
        bmap = out.bmap.display(),
        disk = out.disk.display()
    );
    Ok(())
}
