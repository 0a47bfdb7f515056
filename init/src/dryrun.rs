//! The test mode, `berth-init --dry-run`: what a boot would decide for a sysroot on
//! disk, printed as JSON, with nothing mounted.

use alloc::vec::Vec;

use format::cmdline::Cmdline;
use format::json::Json;
use format::record::{DeploymentName, Record, RecordCopy};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use sysroot::{CopyState, Sysroot};

use crate::boot::{DEFAULT_INIT, DEFAULT_RESCUE, Host};
use crate::disk::SysrootDisk;
use crate::initramfs;
use crate::log::Log;
use crate::plan::{self, Choice, Plan};
use crate::report;
use crate::steps::{self, Mode as BootMode, Step};

const USAGE: &[u8] = b"usage: berth-init --dry-run --sysroot DIR [--cmdline TEXT] [--mode direct|initramfs] [--write-record]

berth-init is the Berth boot shim; the kernel runs it as PID 1. Run by hand, it only
has this test mode: it reads DIR/berth/boot/record.{a,b} and DIR/berth/deploy/*,
decides what it would boot for the given kernel command line, and prints the plan
as JSON (the choice, why, fallbacks, the record it would write, the mount steps).
Nothing is mounted. --write-record writes the record as a real boot would (durably,
to the older copy), so repeated runs simulate repeated boots.
";

/// The test mode: `--dry-run --sysroot DIR [--cmdline TEXT] [--mode M] [--write-record]`.
pub fn run(host: &Host<'_>) -> i32 {
    let out = sys::stdout();
    let err = sys::stderr();
    let mut sysroot_path: Option<&[u8]> = None;
    let mut cmdline: &[u8] = b"";
    let mut mode = BootMode::Direct;
    let mut dry = false;
    let mut write = false;
    let mut it = host.args.iter().skip(1).map(|a| a.to_bytes());
    while let Some(a) = it.next() {
        match a {
            b"--dry-run" => dry = true,
            b"--write-record" => write = true,
            b"--sysroot" => sysroot_path = it.next(),
            b"--cmdline" => cmdline = it.next().unwrap_or_default(),
            b"--mode" => match it.next() {
                Some(b"direct") => mode = BootMode::Direct,
                Some(b"initramfs") => mode = BootMode::Initramfs,
                _ => return usage(err, b"--mode takes direct or initramfs\n"),
            },
            b"--help" | b"-h" => {
                let _ = print(out, USAGE);
                return 0;
            }
            _ => return usage(err, b"unknown argument\n"),
        }
    }
    let (true, Some(path)) = (dry, sysroot_path) else {
        return usage(
            err,
            b"not PID 1: only --dry-run --sysroot DIR is available\n",
        );
    };
    let log = Log::stderr();
    let sysroot = match Sysroot::open(path) {
        Ok(s) => s,
        Err(e) => {
            log.error(e.step.as_bytes(), path, e.errno);
            return 1;
        }
    };
    let cmd = Cmdline::parse(cmdline);
    let init = cmd.init.unwrap_or(DEFAULT_INIT);
    let rescue = cmd.rescue_shell.unwrap_or(DEFAULT_RESCUE);
    let root = rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok();
    let (current, copies) = sysroot.read_record();
    let mut disk = SysrootDisk {
        sysroot: &sysroot,
        init,
        rescue: root.as_ref().map(|r| (r, rescue)),
    };
    let mut p = plan::plan(&cmd, current.as_ref().map(|c| &c.0), &mut disk, true);
    let mut written = None;
    if write && let Some(w) = &p.write {
        match sysroot.write_record(current, w) {
            Ok(r) => written = Some((r, format::record::next_write(current).0)),
            Err(e) => {
                log.error(e.step.as_bytes(), b"boot record", e.errno);
                if p.why == plan::Reason::Trial {
                    p = plan::plan(&cmd, current.as_ref().map(|c| &c.0), &mut disk, false);
                }
            }
        }
    }
    let mut j = report(
        mode,
        path,
        init,
        copies,
        current.as_ref(),
        &p,
        written.as_ref(),
    );
    j.out.push(b'\n');
    i32::from(print(out, &j.out).is_err())
}

/// The dry-run JSON.
fn report(
    mode: BootMode,
    path: &[u8],
    init: &[u8],
    copies: [CopyState; 2],
    current: Option<&(Record, RecordCopy)>,
    p: &Plan,
    written: Option<&(Record, RecordCopy)>,
) -> Json {
    let mut j = Json::default();
    j.open();
    j.key("mode").str(mode.as_str().as_bytes());
    j.key("sysroot").str(path);
    j.key("init").str(init);
    j.key("record_copies").open_list();
    for c in copies {
        match c {
            CopyState::Missing => j.str(b"missing"),
            CopyState::Invalid => j.str(b"invalid"),
            CopyState::Valid(_) => j.str(b"valid"),
        };
    }
    j.close_list();
    j.key("record");
    match current {
        Some((r, _)) => json_record(&mut j, r),
        None => {
            j.null();
        }
    }
    report::decision(p, &mut Vec::new()).write(&mut j);
    j.key("record_write");
    match &p.write {
        Some(r) => json_record(
            &mut j,
            &Record {
                generation: format::record::next_write(current.copied()).1,
                ..*r
            },
        ),
        None => {
            j.null();
        }
    }
    j.key("record_written");
    match written {
        Some((r, copy)) => {
            j.open()
                .key("copy")
                .str(copy_name(*copy))
                .key("generation")
                .num(r.generation)
                .close();
        }
        None => {
            j.null();
        }
    }
    j.key("steps").open_list();
    if let Choice::Deploy(name) = &p.choice {
        for s in steps::assemble(
            mode,
            if mode == BootMode::Direct {
                b"/"
            } else {
                initramfs::SYSROOT
            },
            name,
        ) {
            json_step(&mut j, &s);
        }
    }
    j.close_list();
    j.close();
    j
}

fn json_record(j: &mut Json, r: &Record) {
    j.open();
    j.key("generation").num(r.generation);
    j.key("default")
        .opt_str(r.default.as_ref().map(DeploymentName::as_bytes));
    j.key("previous")
        .opt_str(r.previous.as_ref().map(DeploymentName::as_bytes));
    j.key("trial")
        .opt_str(r.trial.as_ref().map(DeploymentName::as_bytes));
    j.key("tries_left").num(u64::from(r.tries_left));
    j.key("last_rollback");
    match &r.last_rollback {
        Some(rb) => {
            j.open()
                .key("from")
                .str(rb.from.as_bytes())
                .key("reason")
                .str(rb.reason.as_str().as_bytes())
                .close();
        }
        None => {
            j.null();
        }
    }
    j.close();
}

fn copy_name(c: RecordCopy) -> &'static [u8] {
    c.file_name().as_bytes()
}

fn json_step(j: &mut Json, s: &Step) {
    j.open()
        .key("op")
        .str(s.name().as_bytes())
        .key("args")
        .open_list();
    match s {
        Step::MakePrivate(p)
        | Step::Mkdir(p)
        | Step::RemountReadOnly(p)
        | Step::Tmpfs(p)
        | Step::MoveRoot(p) => {
            j.str(p);
        }
        Step::Bind(a, b) | Step::Move(a, b) => {
            j.str(a).str(b);
        }
        Step::Overlay {
            lower,
            upper,
            work,
            target,
        } => {
            j.str(lower).str(upper).str(work).str(target);
        }
        Step::PivotRoot { new_root, put_old } => {
            j.str(new_root).str(put_old);
        }
    }
    j.close_list().close();
}

fn usage(err: rustix::fd::BorrowedFd<'_>, why: &[u8]) -> i32 {
    let _ = print(err, b"berth-init: ");
    let _ = print(err, why);
    let _ = print(err, USAGE);
    2
}

/// Writes all of `bytes` to the terminal (stdout or stderr), retrying short writes and
/// `EINTR`. Not `fsop::write_all`: that is for filesystem mutations, each a crash point
/// in the crash-test build, and printing is not one.
fn print(fd: rustix::fd::BorrowedFd<'_>, mut bytes: &[u8]) -> Result<(), Errno> {
    while !bytes.is_empty() {
        match rustix::io::write(fd, bytes) {
            Ok(0) => return Err(Errno::IO),
            Ok(n) => bytes = bytes.get(n..).unwrap_or_default(),
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
