//! The QEMU command line that boots a disk image of a QEMU board: the kernel and
//! initramfs directly, or the board's firmware (UEFI or U-Boot) with its variable store
//! beside the image.

use std::path::Path;

use anyhow::{Context, Result, bail};

/// The QEMU command line that boots the image (serial console on stdio, no reboot).
/// For a board that boots through its firmware (`firmware_args`), the firmware replaces
/// `-kernel`, `-initrd` and `-append`.
pub(crate) fn argv(
    q: &crate::board::Qemu,
    loaders: &Path,
    kernel: &Path,
    initrd: &Path,
    out: &Path,
    cmdline: &str,
) -> Result<Vec<String>> {
    let mut v: Vec<String> = vec![
        q.binary.clone(),
        "-M".into(),
        q.machine.clone(),
        "-accel".into(),
        "tcg".into(),
        "-cpu".into(),
        q.cpu.clone(),
        "-smp".into(),
        "1".into(),
        "-m".into(),
        q.memory_mib.to_string(),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-display".into(),
        "none".into(),
        "-serial".into(),
        "stdio".into(),
        "-no-reboot".into(),
    ];
    if let Some(firmware) = firmware_args(q, loaders, out)? {
        v.extend(firmware);
    } else {
        v.extend([
            "-kernel".into(),
            kernel.display().to_string(),
            "-initrd".into(),
            initrd.display().to_string(),
        ]);
        v.extend(["-append".into(), cmdline.to_owned()]);
    }
    v.extend([
        "-drive".into(),
        format!("file={},if=none,format=raw,id=d0", out.display()),
    ]);
    v.extend(["-device".into(), format!("{},drive=d0", q.disk_device)]);
    Ok(v)
}

/// How QEMU starts the board's firmware, for a board that boots through it: UEFI code
/// and a writable copy of its variable store beside the image (`DISK.vars`) as flash,
/// or U-Boot as `-bios` with its environment flash (`DISK.vars`, read-only: bootdelay 0,
/// see `envflash.rs`). `None` for a board QEMU boots directly.
fn firmware_args(
    q: &crate::board::Qemu,
    loaders: &Path,
    out: &Path,
) -> Result<Option<Vec<String>>> {
    let vars_file = out.with_extension("vars");
    if let Some(bios) = &q.bios {
        let bios = loaders.join(bios);
        let code = std::fs::read(&bios).with_context(|| {
            format!("{}: no firmware (run ci/fetch-loaders.sh)", bios.display())
        })?;
        let flash = image::envflash::env_flash(&code)
            .with_context(|| format!("{}: U-Boot's environment", bios.display()))?;
        std::fs::write(&vars_file, flash)
            .with_context(|| format!("{}: write", vars_file.display()))?;
        return Ok(Some(vec![
            "-bios".into(),
            bios.display().to_string(),
            "-drive".into(),
            format!(
                "if=pflash,format=raw,unit=1,readonly=on,file={}",
                vars_file.display()
            ),
        ]));
    }
    let (Some(code), Some(vars)) = (&q.firmware, &q.firmware_vars) else {
        return Ok(None);
    };
    let code = loaders.join(code);
    if !code.is_file() {
        bail!("{}: no firmware (run ci/fetch-loaders.sh)", code.display());
    }
    std::fs::copy(loaders.join(vars), &vars_file).with_context(|| {
        format!(
            "{}: copy the firmware's variables",
            loaders.join(vars).display()
        )
    })?;
    Ok(Some(vec![
        "-drive".into(),
        format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={}",
            code.display()
        ),
        "-drive".into(),
        format!("if=pflash,format=raw,unit=1,file={}", vars_file.display()),
    ]))
}
