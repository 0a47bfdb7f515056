//! The EFI system partition of a systemd-boot board, built as a FAT image file with
//! `mkfs.vfat` and mtools (no mount, no loop device):
//!
//! ```text
//! EFI/BOOT/BOOTX64.EFI                 systemd-boot (the firmware's fallback path)
//! loader/loader.conf                   timeout 0
//! loader/entries/berth-<gen>-<name>.conf
//!                                      one Boot Loader Specification (Type #1) entry per
//!                                      deployment that carries a kernel set, ordered by
//!                                      generation (format::bls); a trial whose set differs
//!                                      from the default's is berth-<gen>-<name>+<tries>.conf:
//!                                      systemd-boot counts it (berth/boot/loader-trial
//!                                      tells berth-init so)
//! berth/<set id16>/vmlinuz             each kernel set once, shared by the entries
//! berth/<set id16>/initramfs.img         that boot it
//! berth/<set id16>/dtb/                (when the set has device trees)
//! ```
//!
//! Files are only ever added under new names; an entry names its set's directory. On the
//! device, `berth` keeps the same layout (`updater/src/bootpart.rs`).

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::board::Arch;
use crate::bootpart::{BootPart, Slot};
use crate::fat::Fat;

/// One loader entry: a deployment and the kernel set it boots.
#[derive(Debug)]
pub struct Entry {
    /// Its file name (`loader/entries/berth-<gen>-<name>[+<tries>].conf`): the generation
    /// orders the entries (the trial, then the default, then the previous deployment),
    /// and a trial the loader counts has its tries.
    pub name: format::bls::EntryName,
    /// Its release version, for the menu.
    pub release: String,
    /// The set's directory on the ESP (`berth/<id16>`).
    pub set_dir: String,
    /// The unpacked kernel set to copy there (`usr/lib/modules/<kver>/` of a checkout).
    pub set_src: PathBuf,
    /// Whether the set has device trees.
    pub dtb: bool,
    /// The kernel command line (without `berth.entry=`, which the entry adds).
    pub options: String,
}

/// The ESP of a systemd-boot board, at `work/esp.img` (`size_mib` MiB): systemd-boot and
/// one entry for the default deployment, booting its kernel set.
pub fn image(p: &BootPart<'_>, size_mib: u64) -> Result<PathBuf> {
    let efi = p
        .loaders
        .join(p.board.bootloader.efi_binary.as_deref().unwrap_or_default());
    if !efi.is_file() {
        bail!(
            "{}: no systemd-boot (install Debian's systemd-boot-efi, or give --loader-dir DIR where it is unpacked)",
            efi.display()
        );
    }
    let (default, default_files) = p.default_set()?;
    let mut entries = Vec::new();
    for (slot, name, commit) in &p.deployments {
        let files = if *name == default {
            p.kernel_set(name, commit)?
        } else {
            p.kernel_set(name, commit)?
                .filter(|f| f.set.id() != default_files.set.id() || *slot == Slot::Previous)
        };
        let Some(files) = files else {
            // No kernel set of its own (or the default's, for a trial): booted through
            // the default's entry, and counted by berth-init.
            continue;
        };
        // Generations order the entries newest first: the trial, the default, the
        // previous deployment. A counted trial whose tries are spent sorts last.
        let (generation, counter) = match slot {
            Slot::Trial => (3, Some((u32::from(p.trial_tries), None))),
            Slot::Default => (2, None),
            Slot::Previous => (1, None),
        };
        entries.push(Entry {
            name: format::bls::EntryName {
                generation,
                deployment: *name,
                counter,
            },
            release: files.version.clone(),
            set_dir: format!("berth/{}", files.set.dir_name()),
            dtb: files.set.dtb.is_some(),
            options: p.cmdline(&files.set),
            set_src: files.src,
        });
        if *slot == Slot::Trial {
            // The loader counts this trial's tries; berth-init must not count them again.
            crate::bootpart::mark_loader_trial(p.sysroot, name)?;
        }
    }
    let efi_name = match p.board.arch {
        Arch::X86_64 => "BOOTX64.EFI",
        Arch::Aarch64 => "BOOTAA64.EFI",
    };
    let img = p.work.join("esp.img");
    eprintln!(
        "berth-image disk: ESP ({size_mib} MiB) with systemd-boot and {} entries",
        entries.len()
    );
    build(&img, size_mib, &efi, efi_name, &entries)?;
    Ok(img)
}

/// Builds the ESP image at `path` (`size_mib` MiB, FAT32) with `efi` as the fallback
/// loader and `entries`, the first being the default.
fn build(path: &Path, size_mib: u64, efi: &Path, efi_name: &str, entries: &[Entry]) -> Result<()> {
    let fat = Fat::create(path, size_mib, "BERTH-ESP", true)?;
    let mut dirs = vec![
        "EFI".to_owned(),
        "EFI/BOOT".into(),
        "loader".into(),
        "loader/entries".into(),
        "berth".into(),
    ];
    for e in entries {
        if !dirs.contains(&e.set_dir) {
            dirs.push(e.set_dir.clone());
        }
    }
    fat.mkdirs(&dirs)?;
    fat.copy(efi, &format!("EFI/BOOT/{efi_name}"))?;
    // No `default`: systemd-boot boots the first entry in its order (the generations).
    fat.write("loader/loader.conf", b"timeout 0\n")?;
    let mut copied: Vec<&str> = Vec::new();
    for e in entries {
        if !copied.contains(&e.set_dir.as_str()) {
            copied.push(&e.set_dir);
            for f in [format::kernelset::KERNEL, format::kernelset::INITRAMFS] {
                fat.copy(&e.set_src.join(f), &format!("{}/{f}", e.set_dir))?;
            }
            if e.dtb {
                fat.copy(&e.set_src.join(format::kernelset::DTB_DIR), &e.set_dir)?;
            }
        }
        let file = format!("{}/{}", format::bls::ENTRIES_DIR, e.name.file_name());
        fat.write(&file, entry_text(e).as_bytes())?;
    }
    Ok(())
}

/// A Boot Loader Specification Type #1 entry ([`format::bls::EntryText`]).
fn entry_text(e: &Entry) -> String {
    format::bls::EntryText {
        release: &e.release,
        deployment: e.name.deployment.as_str(),
        generation: e.name.generation,
        set_dir: &e.set_dir,
        devicetree: None,
        options: &e.options,
    }
    .render()
}
