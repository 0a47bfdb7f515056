//! FAT partition images built with `mkfs.vfat` and mtools, without mounting anything
//! (no loop device, no privileges): the ESP of a systemd-boot board (`esp.rs`) and the
//! boot partition of a U-Boot board (`uboot.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::tools::run;

/// A FAT image file being filled.
#[derive(Debug)]
pub struct Fat {
    /// The image's path, as mtools takes it (`-i`).
    img: String,
    /// Where file contents given as bytes are staged for `mcopy`.
    scratch: tempfile::TempDir,
}

impl Fat {
    /// Makes an empty FAT filesystem of `size_mib` MiB labelled `label` at `path`;
    /// FAT32 if `fat32`, else the FAT size `mkfs.vfat` picks for the size.
    pub fn create(path: &Path, size_mib: u64, label: &str, fat32: bool) -> Result<Self> {
        let img = path
            .to_str()
            .context("the FAT image's path is not UTF-8")?
            .to_owned();
        let mut mkfs = Command::new("mkfs.vfat");
        mkfs.args(["-C", "-n", label]);
        if fat32 {
            mkfs.args(["-F", "32"]);
        }
        run(mkfs.arg(&img).arg((size_mib * 1024).to_string()))
            .context("make the FAT filesystem (install dosfstools)")?;
        let scratch = tempfile::tempdir().context("create a scratch directory")?;
        Ok(Self { img, scratch })
    }

    /// Makes directories (`a`, `a/b`: parents first).
    pub fn mkdirs<S: AsRef<str>>(&self, dirs: &[S]) -> Result<()> {
        if dirs.is_empty() {
            return Ok(());
        }
        let dirs: Vec<String> = dirs.iter().map(|d| format!("::/{}", d.as_ref())).collect();
        run(Command::new("mmd").args(["-i", &self.img]).args(&dirs))
            .context("make directories on the FAT partition (install mtools)")
    }

    /// Copies the file or directory tree `src` to `dest` (a path on the partition).
    pub fn copy(&self, src: &Path, dest: &str) -> Result<()> {
        run(Command::new("mcopy")
            .args(["-i", &self.img, "-s", "-o"])
            .arg(src)
            .arg(format!("::/{dest}")))
        .with_context(|| format!("copy {} to the FAT partition's {dest}", src.display()))
    }

    /// Writes `bytes` as the file `dest`.
    pub fn write(&self, dest: &str, bytes: &[u8]) -> Result<()> {
        let staged = self.staged(dest);
        std::fs::write(&staged, bytes).with_context(|| format!("{}: write", staged.display()))?;
        self.copy(&staged, dest)
    }

    /// A scratch path for `dest`'s content: its path with `/` as `_`, one per file.
    fn staged(&self, dest: &str) -> PathBuf {
        self.scratch.path().join(dest.replace('/', "_"))
    }
}
