//! The boot flow as PID 1: plan, count the trial, assemble, report, exec; and the entry
//! point that sends a run by hand to the test mode ([`crate::dryrun`]).

use alloc::vec::Vec;
use core::ffi::CStr;

use format::cmdline::Cmdline;
use format::record::DeploymentName;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::disk::SysrootDisk;
use crate::log::{Log, boottime_ns, ms3};
use crate::plan::{self, Bootable, Choice, Disk, Plan};
use crate::report::Timing;
use crate::steps::{self, Mode as BootMode, Step};
use crate::{InitError, dryrun, exec, initramfs, report};
use sysroot::Sysroot;

/// Replaces the process image: `execve(path, argv, envp)`. Returns only on failure.
pub type ExecFn = fn(path: &CStr, argv: &[&CStr], envp: &[&CStr]) -> Errno;

/// What the process was started with.
#[derive(Debug)]
pub struct Host<'a> {
    /// `argv`, including `argv[0]`.
    pub args: &'a [&'a CStr],
    /// The environment.
    pub env: &'a [&'a CStr],
    /// How to exec.
    pub exec: ExecFn,
}

pub(crate) const DEFAULT_INIT: &[u8] = b"/sbin/init";
pub(crate) const DEFAULT_RESCUE: &[u8] = b"/bin/sh";
/// How long to wait before rebooting when nothing can be booted, so the log can be read
/// on a console and a reboot loop does not spin.
const REBOOT_DELAY_SECS: i64 = 10;
/// How many candidates one boot tries before giving up on assembly.
const ATTEMPTS_MAX: usize = 4;

/// Entry point: the boot as PID 1, else the test modes. Returns an exit code only in
/// the test modes; as PID 1 it never returns.
pub fn main(host: &Host<'_>) -> i32 {
    if rustix::process::getpid().is_init()
        && !host.args.iter().any(|a| a.to_bytes() == b"--dry-run")
    {
        boot(host)
    }
    dryrun::run(host)
}

/// A deployment that failed to assemble this boot; the planner then sees it as unbootable.
struct Excluding<'a, 'b> {
    inner: &'a mut SysrootDisk<'b>,
    failed: &'a [DeploymentName],
}

impl Disk for Excluding<'_, '_> {
    fn probe(&mut self, name: &DeploymentName) -> Bootable {
        if self.failed.contains(name) {
            Bootable::NoInit
        } else {
            self.inner.probe(name)
        }
    }
    fn only_deployment(&mut self) -> Option<DeploymentName> {
        self.inner.only_deployment()
    }
    fn has_rescue(&mut self) -> bool {
        self.inner.has_rescue()
    }
    fn loader_trial(&mut self) -> Option<DeploymentName> {
        self.inner.loader_trial()
    }
    fn last_good(&mut self) -> Option<DeploymentName> {
        self.inner.last_good()
    }
}

fn boot(host: &Host<'_>) -> ! {
    let mut t = Timing {
        start: boottime_ns(),
        ..Timing::default()
    };
    let mut log = Log::stderr();
    let mode = if root_is_ramfs() {
        BootMode::Initramfs
    } else {
        BootMode::Direct
    };
    initramfs::mount_pseudo(&log);
    initramfs::ensure_console();
    log.open_kmsg();
    let mut b = [0u8; 32];
    log.line(&[
        b"start, mode ",
        mode.as_str().as_bytes(),
        b", t=",
        ms3(&mut b, t.start),
        b" ms",
    ]);
    // Defaults baked into the initramfs come first, so the kernel command line (read
    // after them) overrides them: the last occurrence of a parameter wins.
    let mut cmdline = match mode {
        BootMode::Initramfs => {
            initramfs::read_small(initramfs::BAKED_CMDLINE.as_bytes(), 4096).unwrap_or_default()
        }
        BootMode::Direct => Vec::new(),
    };
    cmdline.push(b' ');
    cmdline.extend(initramfs::read_small(b"/proc/cmdline", 4096).unwrap_or_default());
    let cmd = Cmdline::parse(&cmdline);
    t.early = boottime_ns().saturating_sub(t.start);
    if cmd.ignored > 0 {
        log.line(&[b"ignored malformed or unknown berth.* parameters on the command line"]);
    }
    let sysroot_path: &[u8] = match mode {
        BootMode::Direct => b"/",
        BootMode::Initramfs => {
            let (n, ns) = initramfs::load_modules(&log);
            t.modules = ns;
            let mut c = [0u8; 20];
            log.line(&[
                b"modules: ",
                crate::log::u64_dec(&mut c, u64::from(n)),
                b" loaded in ",
                ms3(&mut b, ns),
                b" ms",
            ]);
            if let Err(e) = mount_sysroot(&cmd, &log, &mut t) {
                log.error(e.step.as_bytes(), b"", e.errno);
                give_up(host, &log, &cmd, None);
            }
            initramfs::SYSROOT
        }
    };
    let sysroot = match Sysroot::open(sysroot_path) {
        Ok(s) => s,
        Err(e) => {
            log.error(e.step.as_bytes(), sysroot_path, e.errno);
            give_up(host, &log, &cmd, None);
        }
    };
    run_candidates(host, &log, mode, &cmd, &sysroot, sysroot_path, &t)
}

/// Plans, writes the record, assembles and execs; on a reversible failure, plans again
/// without the deployment that failed. Never returns.
fn run_candidates(
    host: &Host<'_>,
    log: &Log,
    mode: BootMode,
    cmd: &Cmdline<'_>,
    sysroot: &Sysroot,
    sysroot_path: &[u8],
    t: &Timing,
) -> ! {
    let root = rustix::fs::open(
        "/",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok();
    let init = cmd.init.unwrap_or(DEFAULT_INIT);
    let rescue = cmd.rescue_shell.unwrap_or(DEFAULT_RESCUE);
    let record_start = boottime_ns();
    let (mut current, _) = sysroot.read_record();
    let mut t = *t;
    t.record_read = boottime_ns().saturating_sub(record_start);
    let mut failed: Vec<DeploymentName> = Vec::new();
    let mut count_trials = true;
    for _ in 0..ATTEMPTS_MAX {
        let mut disk = SysrootDisk {
            sysroot,
            init,
            rescue: root.as_ref().map(|r| (r, rescue)),
        };
        let mut disk = Excluding {
            inner: &mut disk,
            failed: &failed,
        };
        let plan_start = boottime_ns();
        let p = plan::plan(cmd, current.as_ref().map(|c| &c.0), &mut disk, count_trials);
        log_plan(log, &p);
        if let Some(w) = &p.write {
            match sysroot.write_record(current, w) {
                Ok(r) => current = Some((r, format::record::next_write(current).0)),
                Err(e) => {
                    log.error(e.step.as_bytes(), b"boot record", e.errno);
                    if p.why == plan::Reason::Trial {
                        // The try could not be counted: never boot a trial uncounted.
                        count_trials = false;
                        t.plan += boottime_ns().saturating_sub(plan_start);
                        continue;
                    }
                }
            }
        }
        t.plan += boottime_ns().saturating_sub(plan_start);
        match p.choice {
            Choice::Deploy(name) => {
                let steps = steps::assemble(mode, sysroot_path, &name);
                let assemble_start = boottime_ns();
                let assembled = assemble(log, &steps, &mut t);
                t.assemble += boottime_ns().saturating_sub(assemble_start);
                match assembled {
                    Ok(()) => {}
                    Err(Reversible(true)) => {
                        failed.push(name);
                        continue;
                    }
                    Err(Reversible(false)) => give_up(host, log, cmd, None),
                }
                report::write(
                    log,
                    &p,
                    mode,
                    current.as_ref().map(|c| c.0.generation),
                    init,
                    &t,
                );
                let now = boottime_ns();
                // The budget's measure: everything but module loading and the wait for
                // the device, both set by the kernel and the hardware.
                let own = now
                    .saturating_sub(t.start)
                    .saturating_sub(t.modules + t.device_wait);
                let (mut b, mut b2, mut b3, mut b4) = ([0u8; 32], [0u8; 32], [0u8; 32], [0u8; 32]);
                let mut b5 = [0u8; 32];
                // On the console: one line that says what booted and why.
                log.notice(&[
                    b"booting ",
                    name.as_bytes(),
                    b" (",
                    p.why.as_str().as_bytes(),
                    b"): exec ",
                    init,
                    b" at t=",
                    ms3(&mut b, now),
                    b" ms; shim's own time ",
                    ms3(&mut b2, own),
                    b" ms (sysroot mount ",
                    ms3(&mut b5, t.sysroot_mount),
                    b" ms, record read ",
                    ms3(&mut b3, t.record_read),
                    b" ms, /etc overlay mount ",
                    ms3(&mut b4, t.overlay_mount),
                    b" ms)",
                ]);
                let errno = exec_path(host, init);
                log.error(b"exec", init, errno);
                give_up(host, log, cmd, None)
            }
            Choice::Rescue => give_up(host, log, cmd, Some(rescue)),
            Choice::Reboot => give_up(host, log, cmd, None),
        }
    }
    log.line(&[b"too many failed attempts"]);
    give_up(host, log, cmd, None)
}

fn mount_sysroot(cmd: &Cmdline<'_>, log: &Log, t: &mut Timing) -> Result<(), InitError> {
    let spec = cmd.root.ok_or(InitError::new(
        "berth.root= is missing from the command line",
        Errno::INVAL,
    ))?;
    let start = boottime_ns();
    let dev = initramfs::wait_for_root(&spec, cmd.root_wait_secs.unwrap_or(10))?;
    t.device_wait = boottime_ns().saturating_sub(start);
    let start = boottime_ns();
    initramfs::mount_sysroot(&dev, cmd.rootfstype.unwrap_or(b"ext4"))?;
    t.sysroot_mount = boottime_ns().saturating_sub(start);
    let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
    log.line(&[
        b"sysroot ",
        &dev,
        b": device wait ",
        ms3(&mut a, t.device_wait),
        b" ms, mount ",
        ms3(&mut b, t.sysroot_mount),
        b" ms",
    ]);
    Ok(())
}

/// Whether a failed assembly can be undone (so another candidate may be tried).
struct Reversible(bool);

fn assemble(log: &Log, steps: &[Step], t: &mut Timing) -> Result<(), Reversible> {
    const LINE_MAX: usize = 800;
    let new_root = steps.iter().find_map(|s| {
        if let Step::Bind(a, b) = s {
            (a == b).then_some(a.as_slice())
        } else {
            None
        }
    });
    // As few lines as possible: the kernel rate-limits /dev/kmsg writes from user space
    // (10 lines per 5 s by default), and the exec line must not be dropped. A line is
    // cut before the kernel's limit of 992 bytes per /dev/kmsg record.
    let mut done: Vec<u8> = Vec::with_capacity(1024);
    done.extend_from_slice(b"assembled:");
    for step in steps {
        if done.len() > LINE_MAX {
            log.line(&[&done]);
            done.clear();
            done.extend_from_slice(b"assembled (continued):");
        }
        done.extend_from_slice(b" ");
        done.extend_from_slice(step.name().as_bytes());
        done.extend_from_slice(b" ");
        done.extend_from_slice(step.target());
        let step_start = boottime_ns();
        let result = exec::run(step);
        let took = boottime_ns().saturating_sub(step_start);
        if matches!(step, Step::Overlay { .. }) {
            t.overlay_mount = took;
        }
        let mut b = [0u8; 32];
        done.extend_from_slice(b" ");
        done.extend_from_slice(ms3(&mut b, took));
        done.extend_from_slice(b"ms");
        if let Err(e) = result {
            log.line(&[&done, b" <- failed"]);
            log.error(step.name().as_bytes(), e.step.as_bytes(), e.errno);
            if step.commits() {
                return Err(Reversible(false));
            }
            if let Some(r) = new_root {
                // Best effort: a failed detach leaves mounts under a directory nobody
                // will use; the next candidate has its own.
                if let Err(u) = exec::undo(r) {
                    log.error(b"undo", u.step.as_bytes(), u.errno);
                }
            }
            return Err(Reversible(true));
        }
        done.push(b',');
    }
    log.line(&[&done]);
    Ok(())
}

fn root_is_ramfs() -> bool {
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    rustix::fs::statfs("/").is_ok_and(|s| {
        let t = s.f_type;
        t == RAMFS_MAGIC || t == TMPFS_MAGIC
    })
}

fn exec_path(host: &Host<'_>, path: &[u8]) -> Errno {
    let mut p = path.to_vec();
    p.push(0);
    let Ok(cpath) = CStr::from_bytes_with_nul(&p) else {
        return Errno::INVAL;
    };
    let mut argv: Vec<&CStr> = Vec::with_capacity(host.args.len());
    argv.push(cpath);
    argv.extend(host.args.iter().skip(1));
    (host.exec)(cpath, &argv, host.env)
}

/// Last resort: the rescue shell if there is one, else reboot after a delay. Never returns.
fn give_up(host: &Host<'_>, log: &Log, _cmd: &Cmdline<'_>, rescue: Option<&[u8]>) -> ! {
    if let Some(shell) = rescue {
        log.line(&[b"exec rescue shell ", shell]);
        let errno = exec_path(host, shell);
        log.error(b"exec rescue shell", shell, errno);
    }
    let mut n = [0u8; 20];
    log.line(&[
        b"nothing to boot; rebooting in ",
        crate::log::u64_dec(&mut n, REBOOT_DELAY_SECS.unsigned_abs()),
        b" s",
    ]);
    let _ = rustix::thread::nanosleep(&rustix::time::Timespec {
        tv_sec: REBOOT_DELAY_SECS,
        tv_nsec: 0,
    });
    rustix::fs::sync();
    loop {
        if let Err(e) = rustix::system::reboot(rustix::system::RebootCommand::Restart) {
            log.error(b"reboot", b"", e);
        }
        let _ = rustix::thread::nanosleep(&rustix::time::Timespec {
            tv_sec: REBOOT_DELAY_SECS,
            tv_nsec: 0,
        });
    }
}

fn log_plan(log: &Log, p: &Plan) {
    let target: &[u8] = match &p.choice {
        Choice::Deploy(n) => n.as_bytes(),
        Choice::Rescue => b"rescue shell",
        Choice::Reboot => b"reboot",
    };
    let mut line: Vec<u8> = Vec::with_capacity(160);
    line.extend_from_slice(b"choose ");
    line.extend_from_slice(target);
    line.extend_from_slice(b" (");
    line.extend_from_slice(p.why.as_str().as_bytes());
    line.extend_from_slice(b")");
    for (i, e) in p.events().enumerate() {
        line.extend_from_slice(if i == 0 { b"; passed over:" } else { b"," });
        for part in [
            e.kind().as_str().as_bytes(),
            e.deployment()
                .as_ref()
                .map_or(&b""[..], DeploymentName::as_bytes),
            e.state().map_or(&b""[..], |s| s.as_str().as_bytes()),
        ] {
            if !part.is_empty() {
                line.push(b' ');
                line.extend_from_slice(part);
            }
        }
    }
    log.line(&[&line]);
}
