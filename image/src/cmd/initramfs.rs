//! `berth-image initramfs`: complete a root filesystem's kernel set before it is
//! committed.

use std::path::PathBuf;

use anyhow::Result;

/// The arguments of `initramfs`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The board (`berth-image boards` lists them).
    #[arg(long, value_name = "NAME")]
    board: String,
    #[command(flatten)]
    boards: super::boards::BoardsArg,
    /// The root filesystem to complete (modified in place).
    #[arg(long, value_name = "DIR")]
    root: PathBuf,
    /// The kernel version, when DIR/usr/lib/modules holds several.
    #[arg(long, value_name = "KVER")]
    kver: Option<String>,
    /// Take the kernel and the board's modules from this unpacked Debian kernel package
    /// (dpkg-deb -x linux-image-….deb KDIR), for a tree without a kernel of its own.
    #[arg(long, value_name = "KDIR")]
    kernel_dir: Option<PathBuf>,
    /// berth-init built for the board's architecture (`x86_64-unknown-linux-musl` or
    /// `aarch64-unknown-linux-musl`). Default: the installed one, beside this berth-image
    /// (/usr/bin/berth-image: /usr/lib/berth/init/<target>/berth-init, as the berth-image
    /// package installs it); ci/check-init.sh builds target/<target>/device/berth-init.
    #[arg(long, value_name = "PATH")]
    init: Option<PathBuf>,
    /// Print JSON for programs.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let out = crate::kernelset::initramfs(&crate::kernelset::InitramfsArgs {
        board: a.board,
        boards: a.boards.catalog()?,
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
