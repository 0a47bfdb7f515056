//! `berth-image disk`: a bootable disk image for a board, with its bmap.

use std::path::PathBuf;

use anyhow::Result;

use super::boards::BoardsArg;
use super::layout::LayoutArgs;

/// The arguments of `disk`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The board (`berth-image boards` lists them).
    #[arg(long, value_name = "NAME")]
    board: String,
    #[command(flatten)]
    boards: BoardsArg,
    /// The repository holding the commits.
    #[arg(long, value_name = "REPO")]
    repo: PathBuf,
    #[command(flatten)]
    layout: LayoutArgs,
    /// The disk image to write; the kernel and initramfs go beside it
    /// (NAME.kernel, NAME.initrd).
    #[arg(short = 'o', long = "output", value_name = "DISK.IMG")]
    output: PathBuf,
    /// The board's Debian kernel package, unpacked (dpkg-deb -x linux-image-….deb
    /// DIR): its kernel and modules boot a commit that carries no kernel set (then it
    /// is required, with --init); for a board whose kernel QEMU loads, its image of the
    /// commit's own kernel (x86's PVH vmlinux) is used when the versions match.
    #[arg(long, value_name = "DIR")]
    kernel_dir: Option<PathBuf>,
    /// berth-init built for the board's architecture (`x86_64-unknown-linux-musl` or
    /// `aarch64-unknown-linux-musl`). Default: the installed one, beside this berth-image
    /// (/usr/bin/berth-image: /usr/lib/berth/init/<target>/berth-init, as the berth-image
    /// package installs it); ci/check-init.sh builds target/<target>/device/berth-init.
    #[arg(long, value_name = "PATH")]
    init: Option<PathBuf>,
    /// What the board's loader and firmware paths (bootloader.efi-binary, firmware,
    /// u-boot) are relative to: `/` takes them from the host's Debian packages
    /// (systemd-boot-efi, ovmf, u-boot-qemu); give the directory you unpacked them
    /// into otherwise (dpkg-deb -x PACKAGE.deb DIR).
    #[arg(long, value_name = "DIR", default_value = "/")]
    loader_dir: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    // `berth-image qemu` finds the board and the firmware where `disk` did.
    let mut qemu_cmd = vec!["berth-image".to_owned(), "qemu".to_owned()];
    qemu_cmd.push(a.output.display().to_string());
    qemu_cmd.extend(a.boards.args());
    if a.loader_dir != std::path::Path::new("/") {
        qemu_cmd.extend([
            "--loader-dir".to_owned(),
            a.loader_dir.display().to_string(),
        ]);
    }
    let out = crate::disk::disk(&crate::disk::DiskArgs {
        board: a.board,
        boards: a.boards.catalog()?,
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
        println!(
            "boot it with:\n  {}\nwhich runs:\n  {}",
            super::qemu::shell_quote(&qemu_cmd),
            super::qemu::shell_quote(q)
        );
    }
    println!(
        "flash it to a USB stick or SD card (/dev/sdX) with either of:\n  bmaptool copy --bmap {bmap} {disk} /dev/sdX\n  berth-image flash {disk} /dev/sdX",
        bmap = out.bmap.display(),
        disk = out.disk.display()
    );
    Ok(())
}
