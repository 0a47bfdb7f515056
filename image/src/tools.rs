//! Running the host tools `berth-image` drives (mkfs.ext4, sfdisk, mkfs.vfat, mtools,
//! mkimage, depmod): a failure is one line naming the tool and its stderr.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// Runs `cmd` to its end, its output captured; fails unless it exits 0.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("run {}", Path::new(cmd.get_program()).display()))?;
    succeeded(cmd, &out)
}

/// A command's failure, named with its stderr.
fn succeeded(cmd: &Command, out: &std::process::Output) -> Result<()> {
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            Path::new(cmd.get_program()).display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `cmd` with `input` on its stdin; fails unless it exits 0.
pub(crate) fn run_with_input(cmd: &mut Command, input: &[u8]) -> Result<()> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run {}", Path::new(cmd.get_program()).display()))?;
    child.stdin.take().context("stdin")?.write_all(input)?;
    let out = child.wait_with_output()?;
    succeeded(cmd, &out)
}
