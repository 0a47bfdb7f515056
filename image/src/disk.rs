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
//! 5. the kernel is copied beside the image;
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
use crate::initramfs::{
    check_elf_arch, default_init, kernel_version, module_closure, write_initramfs,
};
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
    pub boards_dir: PathBuf,
    pub repo: PathBuf,
    pub layout: Layout,
    pub output: PathBuf,
    pub kernel_dir: Option<PathBuf>,
    pub init: Option<PathBuf>,
    pub loader_dir: Option<PathBuf>,
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
    /// The QEMU command line (argv) that boots the image, for QEMU boards.
    pub qemu: Option<Vec<String>>,
}

pub fn disk(args: &DiskArgs) -> Result<DiskOutput> {
    let board = Board::load(&args.boards_dir, &args.board)?;
    check_supported(&board)?;
    let kdir = args
        .kernel_dir
        .clone()
        .unwrap_or_else(|| cache_dir(&board, "kernel"));
    let repo = Repo::open(&args.repo)?;
    let boot = choose_boot(&board, &kdir, &repo, args)?;
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
    let loaders = loader_dir(&board, args);
    let boot_part = crate::bootpart::build(&crate::bootpart::BootPart {
        board: &board,
        loaders: &loaders,
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
    // Everything is complete: move the results into place (the bmap right after the
    // image: a new image beside an old bmap fails the bmap's checksums, never flashes).
    for (from, to) in [
        ("disk.img", out.as_path()),
        ("disk.img.bmap", bmap.as_path()),
        ("initrd", initrd.as_path()),
        ("kernel", kernel.as_path()),
    ] {
        std::fs::rename(work.path().join(from), to)
            .with_context(|| format!("{}: move into place", to.display()))?;
    }
    let qemu = board
        .qemu
        .as_ref()
        .map(|q| crate::qemu::argv(q, &loaders, &kernel, &initrd, out, &cmdline))
        .transpose()?;
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
    kdir: &'a Path,
    repo: &Repo,
    args: &DiskArgs,
) -> Result<BootInputs<'a>> {
    let default_id = repo.resolve_commit(&args.layout.default)?;
    let kset = crate::kernelset::find(repo, &repo.read_commit(&default_id)?.0.root)?;
    // A loader boots the set's own kernel (an EFI-stub image, say), never the
    // package's QEMU-only image of it.
    let direct = board.bootloader.kind == BootloaderKind::QemuDirect;
    let package = match &kset {
        None => Some(kernel_version(kdir)?),
        Some(k) => kernel_version(kdir)
            .ok()
            .filter(|v| direct && *v == k.version),
    };
    let kernel_src = package
        .as_ref()
        .map(|v| board.kernel_image(kdir, v))
        .transpose()?;
    let init = if kset.is_some() {
        None
    } else {
        let init = match &args.init {
            Some(p) => p.clone(),
            None => default_init(board.arch)?,
        };
        check_elf_arch(&init, board.arch)?;
        Some(init)
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
    kdir: &'a Path,
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

/// `$BERTH_CACHE/debian/<arch>/<what>` (`/var/cache/berth` by default), where the
/// fetch scripts unpack Debian's packages.
fn cache_dir(board: &Board, what: &str) -> PathBuf {
    cache()
        .join("debian")
        .join(&board.kernel.debian_arch)
        .join(what)
}

/// `$BERTH_CACHE`, else `/var/cache/berth`: what the fetch scripts fill.
fn cache() -> PathBuf {
    PathBuf::from(std::env::var_os("BERTH_CACHE").unwrap_or_else(|| "/var/cache/berth".into()))
}

/// The unpacked firmware and loaders (`--loader-dir`, else where `ci/fetch-loaders.sh`
/// put them: the board's `bootloader.loader-dir` under the cache, or the default).
fn loader_dir(board: &Board, args: &DiskArgs) -> PathBuf {
    match (&args.loader_dir, &board.bootloader.loader_dir) {
        (Some(dir), _) => dir.clone(),
        (None, Some(rel)) => cache().join(rel),
        (None, None) => cache_dir(board, "loaders"),
    }
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
