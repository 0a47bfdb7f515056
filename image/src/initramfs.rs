//! The initramfs `berth-image` makes from an unpacked kernel package: berth-init as
//! `/init`, the board's kernel modules with their dependencies (from `modprobe
//! --show-depends` on the unpacked kernel) in load order, `/etc/berth/modules` and
//! `/etc/berth/cmdline`. `disk` uses it for a commit without a kernel set, `initramfs`
//! (`kernelset.rs`) to complete one.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::board::{Arch, Board};
use crate::cpio::Cpio;

/// The one kernel version an unpacked kernel package holds (`KDIR/lib/modules/<ver>`).
pub(crate) fn kernel_version(kdir: &Path) -> Result<String> {
    let dir = kdir.join("lib/modules");
    let mut versions: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| {
            format!(
                "{}: no kernel here (--kernel-dir takes a Debian kernel package unpacked with dpkg-deb -x)",
                dir.display()
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    versions.sort();
    match versions.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("{}: no kernel version directory", dir.display()),
        more => bail!(
            "{}: several kernel versions ({}); give --kernel-dir with one",
            dir.display(),
            more.join(", ")
        ),
    }
}

/// berth-init for `arch`: `--init`, else the one installed beside this executable
/// (`/usr/bin/berth-image` and `/usr/lib/berth/init/<triple>/berth-init`, as the
/// berth-image package lays them out); checked to be an ELF executable for `arch`.
pub(crate) fn init_for(given: Option<&Path>, arch: Arch) -> Result<PathBuf> {
    let p = if let Some(p) = given {
        p.to_path_buf()
    } else {
        let exe = std::env::current_exe().context("locate berth-image")?;
        let installed = exe
            .parent()
            .and_then(Path::parent)
            .context("locate berth-image's directory")?
            .join("lib/berth/init")
            .join(arch.musl_triple())
            .join("berth-init");
        if !installed.is_file() {
            bail!(
                "no berth-init for {}: none installed at {}; give --init PATH (ci/check-init.sh builds target/{}/device/berth-init)",
                arch.musl_triple(),
                installed.display(),
                arch.musl_triple()
            );
        }
        installed
    };
    check_elf_arch(&p, arch)?;
    Ok(p)
}

/// Checks that `path` is an ELF executable for `arch` (berth-init built for the board).
pub(crate) fn check_elf_arch(path: &Path, arch: Arch) -> Result<()> {
    let mut head = [0u8; 20];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .with_context(|| format!("{}: cannot read berth-init", path.display()))?;
    let machine = u16::from_le_bytes([head[18], head[19]]);
    let want = match arch {
        Arch::X86_64 => 0x3e,
        Arch::Aarch64 => 0xb7,
    };
    if &head[..4] != b"\x7fELF" || machine != want {
        bail!(
            "{}: not an ELF executable for {}",
            path.display(),
            arch.musl_triple()
        );
    }
    Ok(())
}

/// The board's modules with their dependencies, in load order, as paths relative to
/// the kernel tree (`lib/modules/<ver>/kernel/...`).
pub(crate) fn module_closure(kdir: &Path, version: &str, board: &Board) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for name in &board.initramfs.modules {
        let o = Command::new("modprobe")
            .arg("-d")
            .arg(kdir)
            .args(["-S", version, "--show-depends", name])
            .output()
            .context("run modprobe (install kmod)")?;
        if !o.status.success() {
            bail!(
                "board {}: module {name} is not in kernel {version}: {}",
                board.name,
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            let Some(path) = line.strip_prefix("insmod ") else {
                continue;
            };
            let path = path.split_whitespace().next().unwrap_or_default();
            let rel = Path::new(path)
                .strip_prefix(kdir)
                .map(|p| p.display().to_string())
                .with_context(|| format!("modprobe named {path}, outside {}", kdir.display()))?;
            if !out.contains(&rel) {
                out.push(rel);
            }
        }
    }
    Ok(out)
}

/// Writes the initramfs at `path`: berth-init as `/init`, `modules` (paths relative
/// to `kdir`, in load order) and the list of them, and `root` (`berth.root=…`) as the
/// baked command line.
pub(crate) fn write_initramfs(
    path: &Path,
    init: &Path,
    kdir: &Path,
    modules: &[String],
    root: &str,
) -> Result<()> {
    let f = File::create(path).with_context(|| format!("{}: create", path.display()))?;
    let mut c = Cpio::new(std::io::BufWriter::new(f));
    for d in [
        "dev",
        "proc",
        "sys",
        "sysroot",
        "etc",
        "etc/berth",
        "lib",
        "lib/modules",
    ] {
        c.dir(d)?;
    }
    c.file(
        "init",
        0o755,
        &std::fs::read(init).with_context(|| format!("{}: read", init.display()))?,
    )?;
    let mut dirs: Vec<String> = Vec::new();
    let mut list = String::new();
    for m in modules {
        let mut prefix = String::new();
        for comp in Path::new(m).parent().into_iter().flat_map(Path::components) {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(&comp.as_os_str().to_string_lossy());
            if prefix != "lib" && prefix != "lib/modules" && !dirs.contains(&prefix) {
                dirs.push(prefix.clone());
                c.dir(&prefix)?;
            }
        }
        let data = std::fs::read(kdir.join(m))
            .with_context(|| format!("{}: read", kdir.join(m).display()))?;
        c.file(m, 0o644, &data)?;
        list.push('/');
        list.push_str(m);
        list.push('\n');
    }
    c.file("etc/berth/modules", 0o644, list.as_bytes())?;
    c.file("etc/berth/cmdline", 0o644, format!("{root}\n").as_bytes())?;
    c.finish()?.flush()?;
    Ok(())
}
