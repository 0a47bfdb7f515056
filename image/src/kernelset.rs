//! Kernel sets in root filesystems and commits (`format::kernelset`).
//!
//! `berth-image initramfs --board NAME --root DIR` completes the kernel set of a root
//! filesystem before it is committed, so that the committed tree is exactly what boots
//! and berth-init itself is updated (with fallback) like any file:
//!
//! 1. the kernel version is the one directory under `DIR/usr/lib/modules` (or
//!    `--kver`); with `--kernel-dir KDIR` (an unpacked Debian kernel package), its
//!    kernel, the board's module closure and `modules.*` are copied in first;
//! 2. `vmlinuz` is taken from `DIR/boot/vmlinuz-<kver>` if it is not there yet, and
//!    the device trees from `DIR/usr/lib/linux-image-<kver>/` (Debian's layout);
//! 3. `modules.dep` is made with `depmod` if the tree has none;
//! 4. the board's modules and their dependencies are resolved from the tree's own
//!    modules (`modprobe --show-depends`), and `initramfs.img` is written (temporary
//!    name, then rename): berth-init as `/init`, the modules, `/etc/berth/modules`, and
//!    `/etc/berth/cmdline` = `berth.root=LABEL=berth-sysroot` (a loader or QEMU may
//!    name the partition more precisely on the kernel command line, which wins).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use format::ObjectId;
use format::kernelset::{self, KernelSet};
use store::Repo;

use crate::board::Board;

/// Inputs of `initramfs`.
#[derive(Debug)]
pub struct InitramfsArgs {
    pub board: String,
    pub boards: crate::catalog::Catalog,
    pub root: PathBuf,
    pub kver: Option<String>,
    pub kernel_dir: Option<PathBuf>,
    pub init: Option<PathBuf>,
}

/// What `initramfs` made.
#[derive(Debug, serde::Serialize)]
pub struct InitramfsOutput {
    /// The kernel version.
    pub version: String,
    /// The initramfs written.
    pub initramfs: PathBuf,
    /// Modules in it.
    pub modules: usize,
    /// Its size in bytes.
    pub bytes: u64,
    /// What else was put into the tree (the kernel, device trees, `modules.dep`).
    pub added: Vec<String>,
}

pub fn initramfs(args: &InitramfsArgs) -> Result<InitramfsOutput> {
    let board = args.boards.load(&args.board)?;
    let init = crate::initramfs::init_for(args.init.as_deref(), board.arch)?;
    let root = &args.root;
    if !root.join("usr").is_dir() {
        bail!("{}: not a root filesystem (no usr/)", root.display());
    }
    let mods = root.join(kernelset::MODULES_DIR);
    let mut added = Vec::new();
    let version = match (&args.kver, &args.kernel_dir) {
        (Some(v), _) => v.clone(),
        (None, Some(kdir)) => crate::initramfs::kernel_version(kdir)?,
        (None, None) => only_version(&mods)?,
    };
    let kset = mods.join(&version);
    if let Some(kdir) = &args.kernel_dir {
        added.extend(copy_from_package(kdir, &version, &board, &kset)?);
    }
    if !kset.is_dir() {
        bail!("{}: no such kernel version directory", kset.display());
    }
    let vmlinuz = kset.join(kernelset::KERNEL);
    if !vmlinuz.is_file() {
        let debian = root.join(format!("boot/vmlinuz-{version}"));
        if !debian.is_file() {
            bail!(
                "{}: no kernel (and no {} to take it from): copy the kernel there",
                vmlinuz.display(),
                debian.display()
            );
        }
        std::fs::copy(&debian, &vmlinuz)
            .with_context(|| format!("{}: copy from {}", vmlinuz.display(), debian.display()))?;
        added.push(format!(
            "{} (from boot/vmlinuz-{version})",
            rel(root, &vmlinuz)
        ));
    }
    let dtbs = root.join(format!("usr/lib/linux-image-{version}"));
    let dtb = kset.join(kernelset::DTB_DIR);
    if dtbs.is_dir() && !dtb.exists() {
        copy_tree(&dtbs, &dtb)?;
        added.push(format!("{}/ (from {})", rel(root, &dtb), rel(root, &dtbs)));
    }
    // modprobe and depmod look for `lib/modules/<kver>` under a base directory: a
    // scratch one whose `lib` leads to the tree's `usr/lib` (usr-merged or not).
    let base = tempfile::tempdir().context("create a scratch directory")?;
    std::os::unix::fs::symlink(root.join("usr/lib"), base.path().join("lib"))
        .context("link the scratch directory to the tree")?;
    if !kset.join("modules.dep").is_file() {
        crate::tools::run(
            Command::new("depmod")
                .arg("-b")
                .arg(base.path())
                .arg(&version),
        )
        .context("make modules.dep (install kmod)")?;
        added.push(format!("{}/modules.dep (depmod)", rel(root, &kset)));
    }
    let modules = crate::initramfs::module_closure(base.path(), &version, &board)?;
    let out = kset.join(kernelset::INITRAMFS);
    let tmp = kset.join(".initramfs.img.tmp");
    crate::initramfs::write_initramfs(
        &tmp,
        &init,
        base.path(),
        &modules,
        &format!("berth.root=LABEL={}", crate::disk::SYSROOT_LABEL),
    )?;
    std::fs::rename(&tmp, &out).with_context(|| format!("{}: move into place", out.display()))?;
    let bytes = std::fs::metadata(&out)?.len();
    Ok(InitramfsOutput {
        version,
        initramfs: out,
        modules: modules.len(),
        bytes,
        added,
    })
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

/// The one kernel version directory under `mods`.
fn only_version(mods: &Path) -> Result<String> {
    let mut versions: Vec<String> = std::fs::read_dir(mods)
        .with_context(|| {
            format!(
                "{}: no kernel modules (give --kernel-dir to take a kernel package's)",
                mods.display()
            )
        })?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    versions.sort();
    match versions.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("{}: no kernel version directory", mods.display()),
        more => bail!(
            "{}: several kernel versions ({}); choose one with --kver",
            mods.display(),
            more.join(", ")
        ),
    }
}

/// Copies the kernel, the board's module closure and the `modules.*` index inputs of
/// the unpacked kernel package `kdir` into the kernel set directory `kset`.
fn copy_from_package(
    kdir: &Path,
    version: &str,
    board: &Board,
    kset: &Path,
) -> Result<Vec<String>> {
    let mut added = Vec::new();
    let modules = crate::initramfs::module_closure(kdir, version, board)?;
    std::fs::create_dir_all(kset).with_context(|| format!("{}: create", kset.display()))?;
    let prefix = format!("lib/modules/{version}/");
    for m in &modules {
        let inner = m.strip_prefix(&prefix).unwrap_or(m);
        let dest = kset.join(inner);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("{}: create", parent.display()))?;
        }
        std::fs::copy(kdir.join(m), &dest)
            .with_context(|| format!("{}: copy", kdir.join(m).display()))?;
    }
    for f in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        let src = kdir.join(&prefix).join(f);
        if src.is_file() {
            std::fs::copy(&src, kset.join(f))
                .with_context(|| format!("{}: copy", src.display()))?;
        }
    }
    added.push(format!("{} modules from {}", modules.len(), kdir.display()));
    let image = kdir.join(format!("boot/vmlinuz-{version}"));
    if image.is_file() {
        std::fs::copy(&image, kset.join(kernelset::KERNEL))
            .with_context(|| format!("{}: copy", image.display()))?;
        added.push(format!("vmlinuz from {}", image.display()));
    }
    let dtbs = kdir.join(format!("usr/lib/linux-image-{version}"));
    if dtbs.is_dir() {
        copy_tree(&dtbs, &kset.join(kernelset::DTB_DIR))?;
        added.push(format!("dtb/ from {}", dtbs.display()));
    }
    // The closure is all there is: depmod indexes what was copied.
    let _ = std::fs::remove_file(kset.join("modules.dep"));
    Ok(added)
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("{}: create", to.display()))?;
    for e in std::fs::read_dir(from).with_context(|| format!("{}: read", from.display()))? {
        let e = e?;
        let (src, dest) = (e.path(), to.join(e.file_name()));
        if e.file_type()?.is_dir() {
            copy_tree(&src, &dest)?;
        } else {
            std::fs::copy(&src, &dest).with_context(|| format!("{}: copy", src.display()))?;
        }
    }
    Ok(())
}

/// The kernel set of the commit tree `root`, if it carries one ([`store::kernelset::find`]).
pub fn find(repo: &Repo, root: &ObjectId) -> Result<Option<KernelSet>> {
    Ok(store::kernelset::find(repo, root)?)
}
