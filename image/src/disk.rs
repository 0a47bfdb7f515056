//! `berth-image disk`: a bootable disk image for a board, built without mounting
//! anything and without loop devices (so it works unprivileged in containers and CI,
//! given a tree it may read):
//!
//! 1. `install` lays the sysroot out in a scratch directory;
//! 2. `mkfs.ext4 -d` turns it into the sysroot filesystem image; a board that boots
//!    through a loader also gets its boot partition, a FAT image (`bootpart.rs`: the
//!    ESP of `esp.rs`, U-Boot's partition of `uboot.rs`);
//! 3. the disk image gets a GPT (`sfdisk` on the file) and the partitions in the board's
//!    order, the first at 1 MiB;
//! 4. the initramfs (a `newc` cpio) holds berth-init as `/init`, the board's kernel
//!    modules with their dependencies (from `modprobe --show-depends` on the unpacked
//!    kernel), `/etc/berth/modules` (load order) and `/etc/berth/cmdline`
//!    (`berth.root=PARTUUID=…`);
//! 5. the kernel is copied beside the image, and `DISK.qemu.json` (the board's name
//!    and the kernel command line), which `berth-image qemu` reads;
//! 6. the block map (`DISK.IMG.bmap`, bmap-tools' format 2.0) lists the image's mapped
//!    blocks with their sha256, for `bmaptool copy` and `berth-image flash`.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use format::ObjectId;
use format::record::DeploymentName;
use store::Repo;

use crate::board::{Board, BootloaderKind, PartitionTable, Role};
use crate::initramfs::{init_for, kernel_version, module_closure, write_initramfs};
use crate::install::{self, Layout};
use crate::tools::{run, run_with_input};

/// The GPT partition type of a Linux filesystem.
const LINUX_FS_TYPE: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
/// The sysroot's ext4 label (also usable as `berth.root=LABEL=berth-sysroot`).
pub const SYSROOT_LABEL: &str = "berth-sysroot";

/// Inputs of `disk`.
#[derive(Debug)]
pub struct DiskArgs {
    pub board: String,
    pub boards: crate::catalog::Catalog,
    pub repo: PathBuf,
    pub layout: Layout,
    pub output: PathBuf,
    /// The unpacked kernel package; needed when the commit carries no kernel set.
    pub kernel_dir: Option<PathBuf>,
    /// berth-init; needed when the commit carries no kernel set.
    pub init: Option<PathBuf>,
    /// What the board's loader paths are relative to (`/`: the host's packages).
    pub loader_dir: PathBuf,
}

/// What `disk` made.
#[derive(Debug, serde::Serialize)]
pub struct DiskOutput {
    pub board: String,
    pub disk: PathBuf,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub cmdline: String,
    pub partuuid: String,
    pub deployments: Vec<(String, String)>,
    /// The block map beside the image (`DISK.IMG.bmap`).
    pub bmap: PathBuf,
    /// The id of the default deployment's kernel set, when it carries one (and boots it).
    pub kernel_set: Option<String>,
    /// The QEMU command line (argv) that boots the image, for QEMU boards whose
    /// firmware (if they boot through one) is under `--loader-dir`.
    pub qemu: Option<Vec<String>>,
}

pub fn disk(args: &DiskArgs) -> Result<DiskOutput> {
    let board = args.boards.load(&args.board)?;
    check_supported(&board)?;
    let repo = Repo::open(&args.repo)?;
    let boot = choose_boot(&board, args.kernel_dir.as_deref(), &repo, args)?;
    let kernel_set = boot.kset.as_ref().map(|k| k.id().to_string());

    let out = &args.output;
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let work = tempfile::Builder::new()
        .prefix(".berth-disk-")
        .tempdir_in(parent)
        .with_context(|| format!("{}: cannot create a scratch directory", parent.display()))?;
    let sysroot = work.path().join("sysroot");
    eprintln!(
        "berth-image disk: installing {} into a scratch sysroot",
        args.layout.default
    );
    let installed = install::install(&repo, &args.layout, &sysroot)?;
    let default_commit = installed
        .deployments
        .first()
        .map(|d| d.1)
        .context("no deployment installed")?;
    let partuuid = guid_text(&default_commit);

    let stem = out.with_extension("");
    let initrd = PathBuf::from(format!("{}.initrd", stem.display()));
    let kernel = PathBuf::from(format!("{}.kernel", stem.display()));
    let tmp_initrd = work.path().join("initrd");
    let (kernel_src, cmdline) =
        boot_files(boot, &sysroot, &default_commit, &partuuid, &tmp_initrd)?;
    let loaders = args.loader_dir.as_path();
    let boot_part = crate::bootpart::build(&crate::bootpart::BootPart {
        board: &board,
        loaders,
        repo: &repo,
        sysroot: &sysroot,
        deployments: crate::bootpart::slots(&args.layout, &installed),
        partuuid: &partuuid,
        work: work.path(),
        trial_tries: args.layout.trial.as_ref().map_or(0, |t| t.1),
    })?;
    build_disk_image(
        &sysroot,
        work.path(),
        &board,
        &partuuid,
        &default_commit,
        boot_part.as_deref(),
    )?;
    std::fs::copy(&kernel_src, work.path().join("kernel"))
        .with_context(|| format!("{}: copy", kernel_src.display()))?;
    write_bmap(&work.path().join("disk.img"))?;
    let bmap = crate::bmap::path_beside(out);
    let qemu_json = crate::qemu::sidecar_path(out);
    crate::qemu::Sidecar {
        board: board.name.clone(),
        cmdline: cmdline.clone(),
    }
    .write(&work.path().join("disk.qemu.json"))?;
    // Everything is complete: move the results into place (the bmap right after the
    // image: a new image beside an old bmap fails the bmap's checksums, never flashes).
    for (from, to) in [
        ("disk.img", out.as_path()),
        ("disk.img.bmap", bmap.as_path()),
        ("initrd", initrd.as_path()),
        ("kernel", kernel.as_path()),
        ("disk.qemu.json", qemu_json.as_path()),
    ] {
        std::fs::rename(work.path().join(from), to)
            .with_context(|| format!("{}: move into place", to.display()))?;
    }
    let boot = crate::qemu::Boot {
        kernel: &kernel,
        initrd: &initrd,
        image: out,
        cmdline: &cmdline,
    };
    // The image is complete and good for real hardware whether or not QEMU's firmware
    // (OVMF, U-Boot for QEMU) is here: without it there is no QEMU command line to print,
    // which is said, not an error. `berth-image qemu --loader-dir` boots it later.
    let qemu = board.qemu.as_ref().and_then(|q| {
        crate::qemu::argv(q, loaders, &boot, crate::qemu::Vars::Fresh)
            .map_err(|e| eprintln!("berth-image disk: no QEMU command line: {e:#}"))
            .ok()
    });
    Ok(DiskOutput {
        board: board.name,
        disk: out.clone(),
        kernel,
        initramfs: initrd,
        cmdline,
        partuuid,
        deployments: installed
            .deployments
            .iter()
            .map(|(n, c)| (n.as_str().to_owned(), c.to_string()))
            .collect(),
        bmap,
        kernel_set,
        qemu,
    })
}

/// What the disk boots. A default commit that carries its kernel set boots it: its
/// initramfs as it is, and its kernel (or the same kernel's image for this board from
/// the unpacked package, such as x86's PVH vmlinux, when the versions match). Otherwise
/// the kernel package's kernel and an initramfs made here with berth-init.
fn choose_boot<'a>(
    board: &'a Board,
    kdir: Option<&'a Path>,
    repo: &Repo,
    args: &DiskArgs,
) -> Result<BootInputs<'a>> {
    let default_id = repo.resolve_commit(&args.layout.default)?;
    let kset = crate::kernelset::find(repo, &repo.read_commit(&default_id)?.0.root)?;
    // A loader boots the set's own kernel (an EFI-stub image, say), never the
    // package's QEMU-only image of it.
    let direct = board.bootloader.kind == BootloaderKind::QemuDirect;
    let package = match (&kset, kdir) {
        (None, Some(kdir)) => Some(kernel_version(kdir)?),
        (None, None) => bail!(
            "commit {default_id} carries no kernel set: give --kernel-dir DIR (the board's {} package unpacked with dpkg-deb -x) and --init, or complete the tree with berth-image initramfs before committing",
            board.kernel.debian_package
        ),
        (Some(k), Some(kdir)) => kernel_version(kdir)
            .ok()
            .filter(|v| direct && *v == k.version),
        (Some(_), None) => None,
    };
    let kernel_src = match (&package, kdir) {
        (Some(v), Some(kdir)) => Some(board.kernel_image(kdir, v)?),
        _ => None,
    };
    let init = if kset.is_some() {
        None
    } else {
        Some(init_for(args.init.as_deref(), board.arch)?)
    };
    Ok(BootInputs {
        board,
        kdir,
        kset,
        init,
        package,
        kernel_src,
    })
}

/// What decides the kernel and initramfs a disk boots.
struct BootInputs<'a> {
    board: &'a Board,
    kdir: Option<&'a Path>,
    kset: Option<format::kernelset::KernelSet>,
    init: Option<PathBuf>,
    /// The kernel package's version, when it is to be used.
    package: Option<String>,
    /// The package's kernel image for the board, when it is to be used.
    kernel_src: Option<PathBuf>,
}

/// Writes the initramfs to `tmp_initrd` (the deployment's own, or one made here) and
/// returns the kernel to copy and the kernel command line.
fn boot_files(
    inputs: BootInputs<'_>,
    sysroot: &Path,
    default_commit: &ObjectId,
    partuuid: &str,
    tmp_initrd: &Path,
) -> Result<(PathBuf, String)> {
    let BootInputs {
        board,
        kdir,
        kset,
        init,
        package,
        kernel_src,
    } = inputs;
    let mut cmdline = board.kernel.cmdline.clone();
    let kernel_src = match (&kset, init, package) {
        (Some(k), _, package) => {
            let set = sysroot
                .join("berth/deploy")
                .join(DeploymentName::for_commit(default_commit).as_str())
                .join(format::kernelset::MODULES_DIR)
                .join(&k.version);
            eprintln!(
                "berth-image disk: the deployment's kernel set {} ({}{})",
                k.dir_name(),
                k.version,
                if package.is_some() {
                    ", the package's image of it"
                } else {
                    ""
                }
            );
            std::fs::copy(set.join(format::kernelset::INITRAMFS), tmp_initrd)
                .with_context(|| format!("{}: copy", set.display()))?;
            cmdline = crate::bootpart::cmdline(board, k, partuuid);
            kernel_src.unwrap_or_else(|| set.join(format::kernelset::KERNEL))
        }
        (None, Some(init), Some(version)) => {
            let kdir = kdir.context("a kernel package without its directory")?;
            let modules = module_closure(kdir, &version, board)?;
            eprintln!(
                "berth-image disk: initramfs with berth-init and {} modules",
                modules.len()
            );
            write_initramfs(
                tmp_initrd,
                &init,
                kdir,
                &modules,
                &format!("berth.root=PARTUUID={partuuid}"),
            )?;
            kernel_src.context("the package's kernel")?
        }
        (None, ..) => bail!("no kernel: neither the commit nor the kernel package has one"),
    };
    Ok((kernel_src, cmdline))
}

/// `DISK.IMG.bmap` beside the finished image (`work/disk.img`).
fn write_bmap(image: &Path) -> Result<()> {
    let started = std::time::Instant::now();
    let map = crate::bmap::create(image)?;
    crate::bmap::write_beside(image, &map)?;
    eprintln!(
        "berth-image disk: bmap: {} mapped in {} ranges, of {} ({:.2} s)",
        crate::bmap::human(map.mapped_bytes()),
        map.ranges.len(),
        crate::bmap::human(map.image_size),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The board's partitions with their start and size in MiB (after the GPT's first MiB;
/// a size of 0 takes the rest but the backup table's last MiB).
pub(crate) fn layout(board: &Board) -> Vec<(&crate::board::Partition, u64, u64)> {
    let fixed: u64 = board.disk.partitions.iter().map(|p| p.size_mib).sum();
    let mut start = 1;
    let mut out = Vec::new();
    for p in &board.disk.partitions {
        let size = if p.size_mib == 0 {
            board.disk.size_mib - 2 - fixed
        } else {
            p.size_mib
        };
        out.push((p, start, size));
        start += size;
    }
    out
}

/// The disk image at `work/disk.img`: the sysroot filesystem (`mkfs.ext4 -d`) and the
/// boot partition's image `boot`, if the board has one, in a sparse GPT disk.
fn build_disk_image(
    sysroot: &Path,
    work: &Path,
    board: &Board,
    partuuid: &str,
    default_commit: &ObjectId,
    boot: Option<&Path>,
) -> Result<()> {
    let tmp_disk = work.join("disk.img");
    let mut images = Vec::new();
    let mut table = format!(
        "label: gpt\nlabel-id: {}\n",
        guid_text(&ObjectId::digest(default_commit.as_bytes()))
    );
    for (p, start, size) in layout(board) {
        let (image, (kind, attrs), uuid) = match p.role {
            Role::Sysroot => {
                let part_img = work.join("sysroot.ext4");
                eprintln!("berth-image disk: mkfs.ext4 -d ({size} MiB)");
                run(Command::new("mkfs.ext4")
                    .args(["-q", "-F", "-L", SYSROOT_LABEL, "-d"])
                    .arg(sysroot)
                    .arg(&part_img)
                    .arg(format!("{size}M")))
                .context("build the sysroot filesystem")?;
                (part_img, (LINUX_FS_TYPE, ""), partuuid.to_owned())
            }
            Role::Boot => {
                let img = boot.context("the board's boot partition has no content")?;
                // A GUID of its own, derived from the sysroot's: deterministic per commit.
                let uuid = boot_partuuid(partuuid);
                let kind = crate::bootpart::gpt_type(board.bootloader.kind);
                (img.to_path_buf(), kind, uuid)
            }
        };
        images.push((start, image));
        // Writing to a String cannot fail.
        let _ = writeln!(
            table,
            "start={}, size={}, type={kind}, uuid={uuid}, name={}{}",
            start * 2048,
            size * 2048,
            p.name,
            if attrs.is_empty() {
                String::new()
            } else {
                format!(", attrs={attrs}")
            }
        );
    }
    write_disk(&tmp_disk, &images, board.disk.size_mib)?;
    let mut sfdisk = Command::new("sfdisk");
    sfdisk
        .args(["--quiet", "--wipe", "never", "--wipe-partitions", "never"])
        .arg(&tmp_disk);
    run_with_input(&mut sfdisk, table.as_bytes()).context("write the partition table")?;

    Ok(())
}

/// What `disk` builds images for: boards whose kernel QEMU loads, UEFI boards with
/// systemd-boot and arm64 boards with U-Boot; GPT disks.
fn check_supported(board: &Board) -> Result<()> {
    if !matches!(
        board.bootloader.kind,
        BootloaderKind::QemuDirect | BootloaderKind::SystemdBoot | BootloaderKind::UBoot
    ) {
        bail!(
            "board {}: bootloader kind {:?} is described but berth-image disk cannot build images for it yet",
            board.name,
            board.bootloader.kind
        );
    }
    if board.disk.label != PartitionTable::Gpt {
        bail!(
            "board {}: berth-image disk writes GPT disks only, and this board asks for {:?}",
            board.name,
            board.disk.label
        );
    }
    Ok(())
}

/// The boot partition's PARTUUID on a disk whose sysroot's is `sysroot`: a GUID of its
/// own, derived from the sysroot's, so deterministic per commit.
pub(crate) fn boot_partuuid(sysroot: &str) -> String {
    guid_text(&ObjectId::digest(sysroot.as_bytes()))
}

/// A GUID in text form from the first 16 bytes of an id (deterministic per commit).
fn guid_text(id: &ObjectId) -> String {
    let h = id.to_string();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A sparse disk image of `mib` MiB with each partition image at its start (MiB).
fn write_disk(disk: &Path, parts: &[(u64, PathBuf)], mib: u64) -> Result<()> {
    let mut d = File::create(disk).with_context(|| format!("{}: create", disk.display()))?;
    d.set_len(mib << 20)?;
    let mut buf = vec![0u8; 1 << 16];
    for (start, part) in parts {
        let mut p = File::open(part).with_context(|| format!("{}: open", part.display()))?;
        d.seek(SeekFrom::Start(start << 20))?;
        loop {
            let n = p.read(&mut buf)?;
            if n == 0 {
                break;
            }
            // Leave all-zero blocks as holes: the image stays sparse.
            if buf[..n].iter().all(|&b| b == 0) {
                d.seek(SeekFrom::Current(i64::try_from(n).unwrap_or(0)))?;
            } else {
                d.write_all(&buf[..n])?;
            }
        }
    }
    d.sync_all()?;
    Ok(())
}
