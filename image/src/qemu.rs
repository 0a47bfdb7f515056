//! The QEMU command line that boots a disk image of a QEMU board: the kernel and
//! initramfs directly, or the board's firmware (UEFI or U-Boot) with its variable store
//! beside the image. `berth-image disk` prints it, and `berth-image qemu` runs it: from
//! the image, the kernel and initramfs beside it, and `DISK.qemu.json`, which `disk`
//! writes beside them (the board's name and the kernel command line).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// What `berth-image disk` leaves beside a QEMU board's image for `berth-image qemu`:
/// `DISK.qemu.json`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sidecar {
    /// The board the image was built for.
    pub board: String,
    /// The kernel command line QEMU passes to a kernel it loads itself (qemu-direct).
    pub cmdline: String,
}

impl Sidecar {
    /// Writes it to `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).context("encode DISK.qemu.json")?;
        std::fs::write(path, text + "\n").with_context(|| format!("{}: write", path.display()))
    }

    /// Reads `path`; `None` if there is no such file.
    pub fn read(path: &Path) -> Result<Option<Self>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("{}: read", path.display())),
        };
        serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("{}: not what berth-image disk writes", path.display()))
    }
}

/// `DISK.qemu.json` for the image `disk` (beside `DISK.kernel` and `DISK.initrd`).
pub fn sidecar_path(disk: &Path) -> PathBuf {
    beside(disk, "qemu.json")
}

/// `DISK.<ext>` beside the image `disk.img`: its name without the extension, plus `ext`.
pub fn beside(disk: &Path, ext: &str) -> PathBuf {
    PathBuf::from(format!("{}.{ext}", disk.with_extension("").display()))
}

/// What QEMU boots.
#[derive(Debug, Clone, Copy)]
pub struct Boot<'a> {
    /// The kernel (qemu-direct boards).
    pub kernel: &'a Path,
    /// The initramfs (qemu-direct boards).
    pub initrd: &'a Path,
    /// The disk image.
    pub image: &'a Path,
    /// The kernel command line (qemu-direct boards).
    pub cmdline: &'a str,
}

/// The firmware's variable store beside the image (`DISK.vars`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vars {
    /// A new one, replacing any: a new disk starts with new firmware variables.
    Fresh,
    /// The one there, as the firmware last left it (a machine rebooted keeps them);
    /// a new one if there is none.
    Keep,
}

/// The QEMU command line that boots the image (serial console on stdio, no reboot).
/// For a board that boots through its firmware (`firmware_args`), the firmware replaces
/// `-kernel`, `-initrd` and `-append`.
pub fn argv(
    q: &crate::board::Qemu,
    loaders: &Path,
    boot: &Boot<'_>,
    vars: Vars,
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
    if let Some(firmware) = firmware_args(q, loaders, boot.image, vars)? {
        v.extend(firmware);
    } else {
        v.extend([
            "-kernel".into(),
            boot.kernel.display().to_string(),
            "-initrd".into(),
            boot.initrd.display().to_string(),
        ]);
        v.extend(["-append".into(), boot.cmdline.to_owned()]);
    }
    v.extend([
        "-drive".into(),
        format!("file={},if=none,format=raw,id=d0", boot.image.display()),
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
    vars: Vars,
) -> Result<Option<Vec<String>>> {
    let vars_file = out.with_extension("vars");
    let make_vars = vars == Vars::Fresh || !vars_file.exists();
    if let Some(bios) = &q.bios {
        let bios = loaders.join(bios);
        let code = std::fs::read(&bios).with_context(|| {
            format!(
                "{}: no U-Boot (install Debian's u-boot-qemu, or give --loader-dir DIR where it is unpacked)",
                bios.display()
            )
        })?;
        if make_vars {
            let flash = image::envflash::env_flash(&code)
                .with_context(|| format!("{}: U-Boot's environment", bios.display()))?;
            std::fs::write(&vars_file, flash)
                .with_context(|| format!("{}: write", vars_file.display()))?;
        }
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
    let (Some(code), Some(template)) = (&q.firmware, &q.firmware_vars) else {
        return Ok(None);
    };
    let code = loaders.join(code);
    if !code.is_file() {
        bail!(
            "{}: no UEFI firmware (install Debian's ovmf, or give --loader-dir DIR where it is unpacked)",
            code.display()
        );
    }
    if make_vars {
        let template = loaders.join(template);
        std::fs::copy(&template, &vars_file).with_context(|| {
            format!(
                "{}: copy the firmware's variables to {}",
                template.display(),
                vars_file.display()
            )
        })?;
    }
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

/// How long QEMU has to exit after SIGTERM (it restores the terminal it put in raw
/// mode) before it is killed outright.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// Runs `argv` with the console on this process's stdio; stops it after `timeout`.
/// Returns QEMU's exit status, or `None` when it was stopped.
pub fn run(argv: &[String], timeout: Option<Duration>) -> Result<Option<ExitStatus>> {
    let (binary, args) = argv.split_first().context("an empty QEMU command line")?;
    let mut child = Command::new(binary)
        .args(args)
        .spawn()
        .with_context(|| format!("{binary}: cannot start QEMU (is it installed?)"))?;
    let Some(timeout) = timeout else {
        return child
            .wait()
            .map(Some)
            .with_context(|| format!("{binary}: wait"));
    };
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("{binary}: wait"))?
        {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            // Cutting the power: the guest is stuck or does not power off by itself.
            // SIGTERM first, so QEMU gives the terminal back as it found it.
            if let Some(pid) = rustix::process::Pid::from_raw(child.id().cast_signed()) {
                // ESRCH: it has exited meanwhile, which the wait below sees.
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            let grace = Instant::now() + TERM_GRACE;
            while Instant::now() < grace {
                if child
                    .try_wait()
                    .with_context(|| format!("{binary}: wait"))?
                    .is_some()
                {
                    return Ok(None);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            child.kill().with_context(|| format!("{binary}: kill"))?;
            child.wait().with_context(|| format!("{binary}: wait"))?;
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Inputs of `berth-image qemu`.
#[derive(Debug)]
pub struct QemuArgs {
    /// The disk image (`berth-image disk`'s output).
    pub image: PathBuf,
    /// The board; default: the one `DISK.qemu.json` names.
    pub board: Option<String>,
    /// Where boards are looked up.
    pub boards: crate::catalog::Catalog,
    /// What the board's firmware paths are relative to.
    pub loader_dir: PathBuf,
    /// `-m`, instead of the board's.
    pub memory_mib: Option<u32>,
    /// The kernel command line, instead of `DISK.qemu.json`'s (qemu-direct boards).
    pub append: Option<String>,
    /// Appended to QEMU's command line as they are.
    pub extra: Vec<String>,
}

/// What `berth-image qemu` runs.
#[derive(Debug, serde::Serialize)]
pub struct Planned {
    /// The board.
    pub board: String,
    /// The disk image.
    pub image: PathBuf,
    /// The command line (argv).
    pub argv: Vec<String>,
}

/// The command line that boots `args.image`, as `berth-image disk` printed it, with
/// the firmware's variables kept from earlier boots (made when missing).
pub fn plan(args: &QemuArgs) -> Result<Planned> {
    let image = &args.image;
    if !image.is_file() {
        bail!("{}: no such disk image", image.display());
    }
    let sidecar_file = sidecar_path(image);
    let sidecar = Sidecar::read(&sidecar_file)?;
    let name = match (&args.board, &sidecar) {
        (Some(b), _) => b.clone(),
        (None, Some(s)) => s.board.clone(),
        (None, None) => bail!(
            "{}: no {} beside it (berth-image disk writes it): give --board NAME",
            image.display(),
            sidecar_file.display()
        ),
    };
    let board = args.boards.load(&name)?;
    let Some(q) = &board.qemu else {
        bail!("board {name}: no [qemu] section, so QEMU cannot boot it (flash the image instead)");
    };
    let mut q = q.clone();
    if let Some(m) = args.memory_mib {
        q.memory_mib = m;
    }
    let (kernel, initrd) = (beside(image, "kernel"), beside(image, "initrd"));
    let direct = q.firmware.is_none() && q.bios.is_none();
    let cmdline = match (&args.append, &sidecar) {
        (Some(a), _) => a.clone(),
        (None, Some(s)) => s.cmdline.clone(),
        (None, None) if direct => bail!(
            "{}: no {} beside it for the kernel command line: give --append CMDLINE",
            image.display(),
            sidecar_file.display()
        ),
        (None, None) => String::new(),
    };
    if direct {
        for f in [&kernel, &initrd] {
            if !f.is_file() {
                bail!(
                    "{}: missing (berth-image disk writes the kernel and initramfs beside the image)",
                    f.display()
                );
            }
        }
    }
    let boot = Boot {
        kernel: &kernel,
        initrd: &initrd,
        image,
        cmdline: &cmdline,
    };
    let mut argv = argv(&q, &args.loader_dir, &boot, Vars::Keep)?;
    argv.extend(args.extra.iter().cloned());
    Ok(Planned {
        board: board.name,
        image: image.clone(),
        argv,
    })
}
