//! Board descriptions: one `boards/<name>/board.toml` per board, data only.
//!
//! A board says which architecture and Debian kernel it runs, the kernel command line,
//! the modules its initramfs needs, its partition layout, how it boots (the bootloader
//! kind) and, for QEMU machines, how to start it. `berth-image disk` reads it; adding a
//! board is adding a file. Unknown keys are errors, so a typo cannot pass silently.
//! Where board files are found (built in, a system directory, `--boards`) is
//! `catalog.rs`'s business; this module parses and validates one.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// One board.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Board {
    /// Its name: the directory name under `boards/`.
    pub name: String,
    /// The CPU architecture.
    pub arch: Arch,
    /// One line for people.
    pub description: String,
    /// The kernel.
    pub kernel: Kernel,
    /// The initramfs.
    pub initramfs: Initramfs,
    /// How the board's firmware gets to the kernel.
    pub bootloader: Bootloader,
    /// The disk layout.
    pub disk: Disk,
    /// How to start it under QEMU (QEMU machines only).
    #[serde(default)]
    pub qemu: Option<Qemu>,
}

/// CPU architectures Berth builds for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    /// 64-bit x86.
    #[serde(rename = "x86_64")]
    X86_64,
    /// 64-bit ARM.
    Aarch64,
}

impl Arch {
    /// The Rust target triple of the device binaries.
    pub const fn musl_triple(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64-unknown-linux-musl",
            Self::Aarch64 => "aarch64-unknown-linux-musl",
        }
    }
}

/// The kernel: a Debian kernel package, unpacked by `ci/fetch-kernels.sh`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Kernel {
    /// Debian's name for the architecture (`amd64`, `arm64`).
    pub debian_arch: String,
    /// The kernel metapackage (`linux-image-amd64`).
    pub debian_package: String,
    /// The kernel file inside the unpacked package (`boot/vmlinux`); a `-<version>`
    /// suffix is tried too (`boot/vmlinuz` finds `boot/vmlinuz-6.1.0-56-arm64`).
    pub image: String,
    /// The kernel command line (console, `panic=`); `berth.*` parameters are added.
    pub cmdline: String,
}

/// What goes into the initramfs besides berth-init.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Initramfs {
    /// Kernel modules by name, in load order; dependencies are added before each.
    pub modules: Vec<String>,
}

/// How the board boots the kernel.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Bootloader {
    /// The kind.
    pub kind: BootloaderKind,
    /// The loader's EFI binary (systemd-boot), relative to the loader directory
    /// (`--loader-dir`, default `/`: where Debian's package installs it): installed as
    /// the ESP's `EFI/BOOT/BOOT<arch>.EFI`.
    #[serde(default)]
    pub efi_binary: Option<String>,
    /// The device tree the loader passes (u-boot), relative to the kernel set's `dtb/`;
    /// without it the firmware's own is passed (QEMU's `virt` generates one).
    #[serde(default)]
    pub device_tree: Option<String>,
    /// Firmware that starts U-Boot from the boot partition (the Raspberry Pi's): files
    /// relative to the loader directory, copied to the partition's root under their
    /// own names.
    #[serde(default)]
    pub firmware: Vec<String>,
    /// U-Boot itself, when firmware on the boot partition starts it: relative to the
    /// loader directory, copied to the partition's root as `u-boot.bin`.
    #[serde(default)]
    pub u_boot: Option<String>,
    /// The firmware's `config.txt`, written to the partition's root (the Pi's).
    #[serde(default)]
    pub config_txt: Option<String>,
}

/// Bootloader kinds. The schema names the common ones so boards can be described;
/// `berth-image disk` builds images for those it supports and says so for the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootloaderKind {
    /// QEMU loads kernel and initramfs itself (`-kernel`, `-initrd`, `-append`).
    QemuDirect,
    /// U-Boot with a boot script on a FAT boot partition.
    UBoot,
    /// The Raspberry Pi firmware (`config.txt`, `cmdline.txt` on a FAT boot partition).
    RpiFirmware,
    /// GRUB on an EFI system partition.
    GrubEfi,
    /// systemd-boot on an EFI system partition.
    SystemdBoot,
}

/// The disk layout.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Disk {
    /// The partition table.
    pub label: PartitionTable,
    /// The whole disk image's size.
    pub size_mib: u64,
    /// The partitions, in order.
    pub partitions: Vec<Partition>,
}

/// Partition table kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartitionTable {
    /// GUID partition table.
    Gpt,
    /// MBR (DOS) partition table, for boot ROMs that need it.
    Mbr,
}

/// One partition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Partition {
    /// Its name (the GPT partition name).
    pub name: String,
    /// What it is for.
    pub role: Role,
    /// Its filesystem.
    pub filesystem: Filesystem,
    /// Its size; 0 means the rest of the disk (last partition only).
    pub size_mib: u64,
}

/// Partition roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The Berth sysroot: store, deployments, boot record, persistent state.
    Sysroot,
    /// Firmware and bootloader files (FAT).
    Boot,
}

/// Filesystems.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Filesystem {
    /// ext4 (the sysroot).
    Ext4,
    /// FAT32 (boot partitions).
    Vfat,
}

/// How to start the board under QEMU.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Qemu {
    /// `qemu-system-…`.
    pub binary: String,
    /// `-M`.
    pub machine: String,
    /// `-cpu`.
    pub cpu: String,
    /// `-m`.
    pub memory_mib: u32,
    /// The `-device` the disk is attached with.
    pub disk_device: String,
    /// The firmware's code (`-drive if=pflash`, read-only), relative to the unpacked
    /// loaders; boards whose loader is not `qemu-direct` boot through it.
    #[serde(default)]
    pub firmware: Option<String>,
    /// The firmware's variable store template, copied beside each disk image.
    #[serde(default)]
    pub firmware_vars: Option<String>,
    /// Firmware QEMU loads with `-bios` (U-Boot), relative to the unpacked loaders;
    /// for a u-boot board, its environment goes beside each disk image (`DISK.vars`).
    #[serde(default)]
    pub bios: Option<String>,
}

impl Board {
    /// Loads `<boards>/<name>/board.toml` and validates it (the tests' shortcut; the
    /// program looks boards up through `catalog.rs`).
    #[cfg(test)]
    pub fn load(boards: &Path, name: &str) -> Result<Self> {
        check_name(name)?;
        let path = boards.join(name).join("board.toml");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "board {name}: cannot read {} (boards are in {})",
                path.display(),
                boards.display()
            )
        })?;
        Self::parse(&text, name, &path.display().to_string())
    }

    /// Parses and validates the board file `text` of board `name`; errors name
    /// `origin` (the file's path, or the built-in board).
    pub fn parse(text: &str, name: &str, origin: &str) -> Result<Self> {
        let board: Self =
            toml::from_str(text).with_context(|| format!("{origin}: invalid board file"))?;
        board
            .validate()
            .with_context(|| format!("{origin}: invalid board file"))?;
        if board.name != name {
            bail!(
                "{origin}: names the board {:?}, but it is in the directory {name:?}",
                board.name
            );
        }
        Ok(board)
    }

    /// Checks what the schema alone cannot.
    pub fn validate(&self) -> Result<()> {
        let sysroots = self
            .disk
            .partitions
            .iter()
            .filter(|p| p.role == Role::Sysroot)
            .count();
        if sysroots != 1 {
            bail!("needs exactly one partition with role \"sysroot\", has {sysroots}");
        }
        for (i, p) in self.disk.partitions.iter().enumerate() {
            if p.size_mib == 0 && i + 1 != self.disk.partitions.len() {
                bail!(
                    "partition {}: size-mib 0 (the rest of the disk) is only allowed for the last partition",
                    p.name
                );
            }
            if p.role == Role::Sysroot && p.filesystem != Filesystem::Ext4 {
                bail!("partition {}: the sysroot must be ext4", p.name);
            }
        }
        let fixed: u64 = self.disk.partitions.iter().map(|p| p.size_mib).sum();
        if fixed + 2 > self.disk.size_mib {
            bail!(
                "partitions need {fixed} MiB plus 2 MiB for the partition table, but the disk is {} MiB",
                self.disk.size_mib
            );
        }
        self.validate_loader()?;
        self.validate_qemu()?;
        if self.kernel.cmdline.contains("berth.") {
            bail!("kernel.cmdline must not set berth.* parameters; berth-image adds them");
        }
        Ok(())
    }

    /// What the bootloader kind needs of the disk and of the `[bootloader]` keys.
    fn validate_loader(&self) -> Result<()> {
        let kind = self.bootloader.kind;
        let name = match kind {
            BootloaderKind::SystemdBoot => "systemd-boot",
            BootloaderKind::UBoot => "u-boot",
            _ => return Ok(()),
        };
        let boots = self.disk.partitions.iter().filter(|p| p.role == Role::Boot);
        if boots.clone().count() != 1 || boots.clone().any(|p| p.filesystem != Filesystem::Vfat) {
            bail!("bootloader kind {name} needs exactly one vfat partition with role \"boot\"");
        }
        if self.disk.label != PartitionTable::Gpt {
            bail!("bootloader kind {name} needs a GPT disk");
        }
        if kind == BootloaderKind::SystemdBoot && self.bootloader.efi_binary.is_none() {
            bail!("bootloader kind systemd-boot needs bootloader.efi-binary");
        }
        if kind == BootloaderKind::UBoot && self.arch != Arch::Aarch64 {
            // boot.cmd starts the kernel with booti: arm64 Images only.
            bail!("bootloader kind u-boot is built for aarch64 boards only (boot.scr uses booti)");
        }
        let b = &self.bootloader;
        let on_partition = !b.firmware.is_empty() || b.u_boot.is_some() || b.config_txt.is_some();
        if on_partition
            && (kind != BootloaderKind::UBoot || b.u_boot.is_none() || b.firmware.is_empty())
        {
            bail!(
                "bootloader.firmware, u-boot and config-txt go together, for u-boot boards whose firmware starts U-Boot from the boot partition"
            );
        }
        let inside = |f: &str| {
            !f.is_empty()
                && Path::new(f)
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)))
        };
        if let Some(f) = b.firmware.iter().chain(&b.u_boot).find(|f| !inside(f)) {
            bail!("bootloader file {f:?}: must be a path inside the loader directory");
        }
        if let Some(dt) = &self.bootloader.device_tree {
            let safe = Path::new(dt)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            if kind != BootloaderKind::UBoot || dt.is_empty() || !safe {
                bail!(
                    "bootloader.device-tree {dt:?}: only for u-boot, a path inside the kernel set's dtb/"
                );
            }
        }
        Ok(())
    }

    /// What the `[qemu]` section needs for the bootloader kind.
    fn validate_qemu(&self) -> Result<()> {
        let kind = self.bootloader.kind;
        let Some(q) = &self.qemu else {
            if kind == BootloaderKind::QemuDirect {
                bail!("bootloader kind qemu-direct needs a [qemu] section");
            }
            return Ok(());
        };
        let pflash = q.firmware.is_some() && q.firmware_vars.is_some();
        match kind {
            BootloaderKind::QemuDirect => {
                if q.firmware.is_some() || q.firmware_vars.is_some() || q.bios.is_some() {
                    bail!("bootloader kind qemu-direct boots without qemu.firmware or qemu.bios");
                }
            }
            BootloaderKind::UBoot => {
                if q.bios.is_none() || q.firmware.is_some() || q.firmware_vars.is_some() {
                    bail!(
                        "a QEMU board with bootloader kind u-boot needs qemu.bios (U-Boot), and no qemu.firmware or qemu.firmware-vars"
                    );
                }
            }
            _ => {
                if !pflash || q.bios.is_some() {
                    bail!(
                        "a QEMU board that boots through a loader needs qemu.firmware and qemu.firmware-vars"
                    );
                }
            }
        }
        Ok(())
    }

    /// The kernel file in the unpacked kernel tree at `kdir`.
    pub fn kernel_image(&self, kdir: &Path, version: &str) -> Result<PathBuf> {
        let exact = kdir.join(&self.kernel.image);
        if exact.is_file() {
            return Ok(exact);
        }
        let versioned = kdir.join(format!("{}-{version}", self.kernel.image));
        if versioned.is_file() {
            return Ok(versioned);
        }
        bail!(
            "{}: no kernel image {} (or {}) (give --kernel-dir the unpacked {} package)",
            kdir.display(),
            exact.display(),
            versioned.display(),
            self.kernel.debian_package
        )
    }
}

/// Checks that `name` is a board name (letters, digits, `-`, `_`): it becomes a
/// directory name under each board directory.
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    {
        bail!("{name:?}: not a board name (letters, digits, '-' and '_')");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boards_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../boards")
    }

    #[test]
    fn every_board_in_the_repository_loads() {
        let boards: Vec<Board> = crate::catalog::BUILTIN
            .iter()
            .map(|(n, _)| Board::load(&boards_dir(), n).unwrap())
            .collect();
        let names: Vec<&str> = boards.iter().map(|b| b.name.as_str()).collect();
        assert!(
            [
                "qemu-x86_64",
                "qemu-aarch64",
                "uefi-x86_64",
                "qemu-aarch64-uboot"
            ]
            .iter()
            .all(|n| names.contains(n)),
            "{names:?}"
        );
        for b in &boards {
            assert!(!b.initramfs.modules.is_empty(), "{}: no modules", b.name);
        }
    }

    #[test]
    fn bad_boards_are_refused() {
        let good = std::fs::read_to_string(boards_dir().join("qemu-x86_64/board.toml")).unwrap();
        let cases = [
            (
                "unknown key",
                good.replace("cpu = \"max\"", "cpu = \"max\"\ncpus = 2"),
            ),
            (
                "unknown arch",
                good.replace("arch = \"x86_64\"", "arch = \"riscv64\""),
            ),
            (
                "unknown bootloader",
                good.replace("kind = \"qemu-direct\"", "kind = \"lilo\""),
            ),
            (
                "berth params in cmdline",
                good.replace("panic=-1", "panic=-1 berth.rescue"),
            ),
            (
                "no sysroot",
                good.replace("role = \"sysroot\"", "role = \"boot\""),
            ),
            ("too small", good.replace("size-mib = 256", "size-mib = 1")),
        ];
        for (what, text) in cases {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("qemu-x86_64")).unwrap();
            std::fs::write(dir.path().join("qemu-x86_64/board.toml"), text).unwrap();
            let err = Board::load(dir.path(), "qemu-x86_64").unwrap_err();
            assert!(format!("{err:#}").contains("board.toml"), "{what}: {err:#}");
        }
        let uboot =
            std::fs::read_to_string(boards_dir().join("qemu-aarch64-uboot/board.toml")).unwrap();
        let bios = "bios = \"usr/lib/u-boot/qemu_arm64/u-boot.bin\"";
        let uboot_cases = [
            ("u-boot without qemu.bios", uboot.replace(bios, "")),
            (
                "u-boot with pflash firmware",
                uboot.replace(bios, &format!("{bios}\nfirmware = \"x\"")),
            ),
            (
                "u-boot on x86_64",
                uboot.replace("arch = \"aarch64\"", "arch = \"x86_64\""),
            ),
            (
                "u-boot on MBR",
                uboot.replace("label = \"gpt\"", "label = \"mbr\""),
            ),
            (
                "u-boot without a vfat boot partition",
                uboot.replace("filesystem = \"vfat\"", "filesystem = \"ext4\""),
            ),
            (
                "device tree outside dtb/",
                uboot.replace(
                    "kind = \"u-boot\"",
                    "kind = \"u-boot\"\ndevice-tree = \"../x.dtb\"",
                ),
            ),
            (
                "qemu-direct with -bios",
                good.replace("cpu = \"max\"", &format!("cpu = \"max\"\n{bios}")),
            ),
        ];
        for (what, text) in uboot_cases {
            let dir = tempfile::tempdir().unwrap();
            let name = if what.starts_with("qemu-direct") {
                "qemu-x86_64"
            } else {
                "qemu-aarch64-uboot"
            };
            std::fs::create_dir(dir.path().join(name)).unwrap();
            std::fs::write(dir.path().join(name).join("board.toml"), text).unwrap();
            let err = Board::load(dir.path(), name).unwrap_err();
            assert!(format!("{err:#}").contains("board.toml"), "{what}: {err:#}");
        }
        let ok = uboot.replace(
            "kind = \"u-boot\"",
            "kind = \"u-boot\"\ndevice-tree = \"broadcom/bcm2711-rpi-4-b.dtb\"",
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("qemu-aarch64-uboot")).unwrap();
        std::fs::write(dir.path().join("qemu-aarch64-uboot/board.toml"), ok).unwrap();
        Board::load(dir.path(), "qemu-aarch64-uboot").unwrap();
        assert!(Board::load(&boards_dir(), "../etc").is_err());
        assert!(Board::load(&boards_dir(), "no-such-board").is_err());
    }
}
