//! A loader's boot partition: what goes into it (the installed deployments that carry a
//! kernel set, and the kernel command line each boots with) and which module builds it:
//! systemd-boot's ESP (`esp.rs`) or U-Boot's boot partition (`uboot.rs`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use format::ObjectId;
use format::bootconf::{BootConfig, Loader};
use format::kernelset::KernelSet;
use format::record::DeploymentName;
use store::Repo;

use crate::board::{Board, BootloaderKind, Role};
use crate::install::{Installed, Layout};

/// The GPT type of an EFI system partition.
const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// The GPT type of a FAT data partition ("Microsoft basic data"), for U-Boot's.
const BASIC_DATA_TYPE: &str = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7";

/// A deployment's place in the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// The default deployment.
    Default,
    /// The previous (fallback) one.
    Previous,
    /// The one on trial.
    Trial,
}

/// What a boot partition is built from.
#[derive(Debug)]
pub struct BootPart<'a> {
    pub board: &'a Board,
    /// The unpacked firmware and loaders.
    pub loaders: &'a Path,
    pub repo: &'a Repo,
    /// The scratch sysroot, with the deployments checked out.
    pub sysroot: &'a Path,
    /// The installed deployments: the default first, then previous and trial if the
    /// layout names them.
    pub deployments: Vec<(Slot, DeploymentName, ObjectId)>,
    /// The sysroot partition's PARTUUID.
    pub partuuid: &'a str,
    /// Where the partition image is written.
    pub work: &'a Path,
    /// The trial's tries, when the layout has a trial.
    pub trial_tries: u8,
}

/// Writes `berth/boot/loader-trial` = `trial` in the scratch sysroot: the loader counts
/// this trial's tries, and berth-init must not count them again (docs/FORMAT.md,
/// "Loader-counted trials").
pub fn mark_loader_trial(sysroot: &Path, trial: &DeploymentName) -> Result<()> {
    let path = sysroot.join(sysroot::LOADER_TRIAL);
    std::fs::write(&path, format!("{}\n", trial.as_str()))
        .with_context(|| format!("{}: write", path.display()))
}

/// A deployment's kernel set, as checked out in the scratch sysroot.
#[derive(Debug)]
pub struct SetFiles {
    pub set: KernelSet,
    /// `usr/lib/modules/<kver>/` of the deployment's checkout.
    pub src: PathBuf,
    /// The commit's release version.
    pub version: String,
}

/// The installed deployments with their places, in `installed`'s order.
pub fn slots(layout: &Layout, installed: &Installed) -> Vec<(Slot, DeploymentName, ObjectId)> {
    let wanted = [
        Some(Slot::Default),
        layout.previous.as_ref().map(|_| Slot::Previous),
        layout.trial.as_ref().map(|_| Slot::Trial),
    ];
    wanted
        .into_iter()
        .flatten()
        .zip(&installed.deployments)
        .map(|(slot, (name, commit))| (slot, *name, *commit))
        .collect()
}

/// What `berth` on the device needs to know to write the boot partition
/// (`berth/boot/loader.conf`): the loader, the partition, the board's command line and
/// the sysroot's PARTUUID.
pub fn config(board: &Board, partuuid: &str, loader: Loader) -> BootConfig {
    BootConfig {
        loader,
        partuuid: crate::disk::boot_partuuid(partuuid),
        cmdline: board.kernel.cmdline.clone(),
        root: format!("PARTUUID={partuuid}"),
        devicetree: board.bootloader.device_tree.clone(),
    }
}

/// The kernel command line a loader boots a kernel set with: the board's, the set's
/// `kargs`, and the sysroot by PARTUUID (the initramfs's own `berth.root=LABEL=` is
/// overridden: the kernel's command line wins). The same text `berth` writes on the
/// device ([`BootConfig::kernel_cmdline`]).
pub fn cmdline(board: &Board, set: &KernelSet, partuuid: &str) -> String {
    config(board, partuuid, Loader::SystemdBoot).kernel_cmdline(&set.kargs)
}

/// The GPT type and attributes (sfdisk's `attrs=`) of a loader's boot partition. U-Boot's
/// distro boot scans the partitions `part list -bootable` names (the legacy BIOS
/// bootable attribute on GPT), else partition 1.
pub fn gpt_type(kind: BootloaderKind) -> (&'static str, &'static str) {
    match kind {
        BootloaderKind::UBoot => (BASIC_DATA_TYPE, "LegacyBIOSBootable"),
        _ => (ESP_TYPE, ""),
    }
}

impl BootPart<'_> {
    /// The kernel set of deployment `name` (commit `commit`), if it carries one.
    pub fn kernel_set(&self, name: &DeploymentName, commit: &ObjectId) -> Result<Option<SetFiles>> {
        let (c, _) = self.repo.read_commit(commit)?;
        let Some(set) = crate::kernelset::find(self.repo, &c.root)? else {
            return Ok(None);
        };
        let src = self
            .sysroot
            .join("berth/deploy")
            .join(name.as_str())
            .join(format::kernelset::MODULES_DIR)
            .join(&set.version);
        Ok(Some(SetFiles {
            set,
            src,
            version: c.version.to_string(),
        }))
    }

    /// The default deployment and its kernel set, which a loader board needs.
    pub fn default_set(&self) -> Result<(DeploymentName, SetFiles)> {
        let (_, name, commit) = self
            .deployments
            .first()
            .context("no deployment installed")?;
        let set = self.kernel_set(name, commit)?.with_context(|| {
            format!(
                "board {}: its loader boots the deployment's own kernel set, and commit {commit} has none (complete the root filesystem with berth-image initramfs before committing it)",
                self.board.name
            )
        })?;
        Ok((*name, set))
    }

    /// The kernel command line for `set` on this disk.
    pub fn cmdline(&self, set: &KernelSet) -> String {
        cmdline(self.board, set, self.partuuid)
    }
}

/// Writes `berth/boot/loader.conf` in the scratch sysroot: berth on the device keeps the
/// boot partition in step with the record.
fn write_config(p: &BootPart<'_>, loader: Loader) -> Result<()> {
    let path = p.sysroot.join(format::bootconf::PATH);
    std::fs::write(&path, config(p.board, p.partuuid, loader).encode())
        .with_context(|| format!("{}: write", path.display()))
}

/// The board's boot partition image, built by its loader's module; `None` for boards
/// without one.
pub fn build(p: &BootPart<'_>) -> Result<Option<PathBuf>> {
    let Some((_, _, size)) = crate::disk::layout(p.board)
        .into_iter()
        .find(|(part, ..)| part.role == Role::Boot)
    else {
        return Ok(None);
    };
    match p.board.bootloader.kind {
        BootloaderKind::SystemdBoot => {
            write_config(p, Loader::SystemdBoot)?;
            crate::esp::image(p, size).map(Some)
        }
        BootloaderKind::UBoot => {
            write_config(p, Loader::UBoot)?;
            crate::uboot::image(p, size).map(Some)
        }
        kind => bail!(
            "board {}: bootloader kind {kind:?} has no boot partition builder",
            p.board.name
        ),
    }
}
