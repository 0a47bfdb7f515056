//! `berth-image qemu`: boot a disk image under QEMU, console on this terminal.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};

use super::boards::BoardsArg;

/// The arguments of `qemu`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The disk image `berth-image disk` made (DISK.IMG); DISK.kernel, DISK.initrd and
    /// DISK.qemu.json beside it are read, and the firmware's variables are kept in
    /// DISK.vars from one boot to the next (made when missing).
    #[arg(value_name = "DISK.IMG")]
    image: PathBuf,
    /// The board (default: the one DISK.qemu.json names, the board `disk` built for).
    #[arg(long, value_name = "NAME")]
    board: Option<String>,
    #[command(flatten)]
    boards: BoardsArg,
    /// What the board's firmware paths (qemu.firmware, qemu.firmware-vars, qemu.bios)
    /// are relative to: `/` takes them from the host's Debian packages (ovmf for
    /// OVMF, u-boot-qemu for U-Boot); give the directory you unpacked them into
    /// otherwise (dpkg-deb -x PACKAGE.deb DIR).
    #[arg(long, value_name = "DIR", default_value = "/")]
    loader_dir: PathBuf,
    /// Guest memory in MiB, instead of the board's qemu.memory-mib.
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u32).range(16..))]
    memory: Option<u32>,
    /// Kill QEMU after this many seconds (an error: the guest did not power off).
    /// Without it QEMU runs until the guest powers off or reboots, or until you quit
    /// (Ctrl-C).
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    timeout: Option<u64>,
    /// The kernel command line, instead of the one DISK.qemu.json holds (boards whose
    /// kernel QEMU loads itself; a loader reads it from the disk's boot partition).
    #[arg(long, value_name = "CMDLINE")]
    append: Option<String>,
    /// Print the QEMU command line (shell-quoted) instead of running it.
    #[arg(long)]
    dry_run: bool,
    /// Print {"board", "image", "argv"} as JSON instead of running it (implies
    /// --dry-run).
    #[arg(long)]
    json: bool,
    /// More QEMU arguments, after `--`, appended as they are (a network card, a second
    /// disk).
    #[arg(last = true, value_name = "QEMU-ARGS")]
    extra: Vec<String>,
}

pub fn run(a: Args) -> Result<()> {
    let planned = crate::qemu::plan(&crate::qemu::QemuArgs {
        image: a.image,
        board: a.board,
        boards: a.boards.catalog()?,
        loader_dir: a.loader_dir,
        memory_mib: a.memory,
        append: a.append,
        extra: a.extra,
    })?;
    if a.json {
        println!("{}", serde_json::to_string(&planned)?);
        return Ok(());
    }
    if a.dry_run {
        println!("{}", shell_quote(&planned.argv));
        return Ok(());
    }
    eprintln!(
        "berth-image qemu: booting {} ({}); the serial console follows",
        planned.image.display(),
        planned.board
    );
    match crate::qemu::run(&planned.argv, a.timeout.map(Duration::from_secs))? {
        None => bail!(
            "{}: QEMU still running after {} s: killed (--timeout)",
            planned.image.display(),
            a.timeout.unwrap_or_default()
        ),
        Some(s) if !s.success() => bail!(
            "{}: {} exited with {s}",
            planned.image.display(),
            planned.argv[0]
        ),
        Some(_) => Ok(()),
    }
}

/// `argv` as one shell command line: arguments with anything but safe characters in
/// single quotes.
pub fn shell_quote(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"-_./=,:@%+".contains(&c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
