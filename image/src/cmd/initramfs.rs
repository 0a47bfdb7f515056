//! `berth-image initramfs`: complete a root filesystem's kernel set before it is
//! committed.

use std::path::PathBuf;

use anyhow::Result;

/// The arguments of `initramfs`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The board (a directory under --boards holding board.toml).
    #[arg(long, value_name = "NAME")]
    board: String,
    /// The root filesystem to complete (modified in place).
    #[arg(long, value_name = "DIR")]
    root: PathBuf,
    /// The kernel version, when DIR/usr/lib/modules holds several.
    #[arg(long, value_name = "KVER")]
    kver: Option<String>,
    /// Take the kernel and the board's modules from this unpacked kernel package.
    #[arg(long, value_name = "KDIR")]
    kernel_dir: Option<PathBuf>,
    /// berth-init for the board's architecture (default: the installed one,
    /// /usr/lib/berth/init/<target>/berth-init beside /usr/bin/berth-image, else the one
    /// ci/check-init.sh built beside this build of berth-image).
    #[arg(long, value_name = "PATH")]
    init: Option<PathBuf>,
    /// Where the board files are.
    #[arg(long, value_name = "DIR", default_value = "boards")]
    boards: PathBuf,
    /// Print JSON for programs.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let out = crate::kernelset::initramfs(&crate::kernelset::InitramfsArgs {
        board: a.board,
        boards_dir: a.boards,
        root: a.root,
        kver: a.kver,
        kernel_dir: a.kernel_dir,
        init: a.init,
    })?;
    if a.json {
        println!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    for a in &out.added {
        eprintln!("berth-image initramfs: added {a}");
    }
    println!(
        "{}: kernel {}, berth-init and {} modules, {} bytes",
        out.initramfs.display(),
        out.version,
        out.modules,
        out.bytes
    );
    Ok(())
}
