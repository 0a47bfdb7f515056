//! The EFI system partition of a systemd-boot board, built as a FAT image file with
//! `mkfs.vfat` and mtools (no mount, no loop device):
//!
//! ```text
//! EFI/BOOT/BOOTX64.EFI                 systemd-boot (the firmware's fallback path)
//! loader/loader.conf                   timeout 0, the default entry
//! loader/entries/berth-<name>.conf     one Boot Loader Specification (Type #1) entry per
//!                                      deployment that carries a kernel set
//! berth/<set id16>/vmlinuz             each kernel set once, shared by the entries
//! berth/<set id16>/initramfs.img         that boot it
//! berth/<set id16>/dtb/                (when the set has device trees)
//! ```
//!
//! Files are only ever added under new names; an entry names its set's directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::disk::run;

/// One loader entry: a deployment and the kernel set it boots.
#[derive(Debug)]
pub struct Entry {
    /// The deployment's name (`loader/entries/berth-<name>.conf`).
    pub name: String,
    /// Its release version, for the menu and systemd-boot's sorting.
    pub version: String,
    /// The set's directory on the ESP (`berth/<id16>`).
    pub set_dir: String,
    /// The unpacked kernel set to copy there (`usr/lib/modules/<kver>/` of a checkout).
    pub set_src: PathBuf,
    /// Whether the set has device trees.
    pub dtb: bool,
    /// The kernel command line.
    pub options: String,
}

/// Builds the ESP image at `path` (`size_mib` MiB, FAT32) with `efi` as the fallback
/// loader and `entries`, the first being the default.
pub fn build(
    path: &Path,
    size_mib: u64,
    efi: &Path,
    efi_name: &str,
    entries: &[Entry],
) -> Result<()> {
    let img = path.to_str().context("the ESP image's path is not UTF-8")?;
    run(Command::new("mkfs.vfat")
        .args(["-C", "-F", "32", "-n", "BERTH-ESP", img])
        .arg((size_mib * 1024).to_string()))
    .context("make the ESP (install dosfstools)")?;
    let mut dirs = vec![
        "::/EFI".to_owned(),
        "::/EFI/BOOT".into(),
        "::/loader".into(),
        "::/loader/entries".into(),
        "::/berth".into(),
    ];
    let mut sets: Vec<&str> = Vec::new();
    for e in entries {
        if !sets.contains(&e.set_dir.as_str()) {
            sets.push(&e.set_dir);
            dirs.push(format!("::/{}", e.set_dir));
        }
    }
    run(Command::new("mmd").args(["-i", img]).args(&dirs))
        .context("make the ESP's directories (install mtools)")?;
    let copy = |src: &Path, dest: &str| -> Result<()> {
        run(Command::new("mcopy")
            .args(["-i", img, "-s", "-o"])
            .arg(src)
            .arg(format!("::/{dest}")))
        .with_context(|| format!("copy {} to the ESP's {dest}", src.display()))
    };
    copy(efi, &format!("EFI/BOOT/{efi_name}"))?;
    let scratch = tempfile::tempdir().context("create a scratch directory")?;
    let text = |name: &str, body: &str| -> Result<PathBuf> {
        let p = scratch.path().join(name);
        std::fs::write(&p, body).with_context(|| format!("{}: write", p.display()))?;
        Ok(p)
    };
    let default = entries.first().map_or("berth-*", |e| e.name.as_str());
    copy(
        &text(
            "loader.conf",
            &format!("timeout 0\ndefault berth-{default}.conf\n"),
        )?,
        "loader/loader.conf",
    )?;
    let mut copied: Vec<&str> = Vec::new();
    for e in entries {
        if !copied.contains(&e.set_dir.as_str()) {
            copied.push(&e.set_dir);
            for f in [format::kernelset::KERNEL, format::kernelset::INITRAMFS] {
                copy(&e.set_src.join(f), &format!("{}/{f}", e.set_dir))?;
            }
            if e.dtb {
                copy(&e.set_src.join(format::kernelset::DTB_DIR), &e.set_dir)?;
            }
        }
        let conf = entry_text(e);
        let file = format!("berth-{}.conf", e.name);
        copy(&text(&file, &conf)?, &format!("loader/entries/{file}"))?;
    }
    Ok(())
}

/// A Boot Loader Specification Type #1 entry.
fn entry_text(e: &Entry) -> String {
    format!(
        "title Berth {} ({})\nversion {}\nsort-key berth\nlinux /{}/{}\ninitrd /{}/{}\noptions {}\n",
        e.version,
        e.name,
        e.version,
        e.set_dir,
        format::kernelset::KERNEL,
        e.set_dir,
        format::kernelset::INITRAMFS,
        e.options
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_names_its_set_and_options() {
        let e = Entry {
            name: "0123456789abcdef".into(),
            version: "1.2".into(),
            set_dir: "berth/fedcba9876543210".into(),
            set_src: PathBuf::new(),
            dtb: false,
            options: "console=ttyS0 berth.root=PARTUUID=x".into(),
        };
        assert_eq!(
            entry_text(&e),
            "title Berth 1.2 (0123456789abcdef)\nversion 1.2\nsort-key berth\n\
             linux /berth/fedcba9876543210/vmlinuz\ninitrd /berth/fedcba9876543210/initramfs.img\n\
             options console=ttyS0 berth.root=PARTUUID=x\n"
        );
    }
}
