//! The boot report, `/run/berth/boot.json`: what berth-init chose, why, what it passed
//! over, and where the boot's time went. Written once, just before the exec, for the
//! booted system (`berth status`) to read.

use format::record::{DeploymentName, Record};
use rustix::fs::{Mode, OFlags};

use crate::exec;
use crate::json::Json;
use crate::log::{Log, boottime_ns};
use crate::plan::{Bootable, Choice, Event, Plan};
use crate::steps::Mode as BootMode;

/// Where the boot's time went, in nanoseconds: the start, and the length of each phase.
/// Module loading and the device wait are not the shim's own time (the budget's
/// measure); the rest is, the sysroot mount included, and each phase is reported apart
/// so a slow boot can be read from boot.json.
#[derive(Debug, Default, Clone, Copy)]
pub struct Timing {
    /// When the shim started, on `CLOCK_BOOTTIME`.
    pub start: u64,
    /// Mounting /dev, /proc and /sys, opening the console and the kernel log, and
    /// reading the command line.
    pub early: u64,
    /// Loading the board's modules (initramfs mode).
    pub modules: u64,
    /// Waiting for the sysroot device (initramfs mode).
    pub device: u64,
    /// Mounting the sysroot (initramfs mode).
    pub mount: u64,
    /// Reading the two record copies (cold reads from the sysroot).
    pub record: u64,
    /// Planning (probing the deployments) and writing the record, over all candidates.
    pub plan: u64,
    /// Root assembly, over all candidates.
    pub assemble: u64,
    /// The /etc overlay mount (overlayfs probes its upper filesystem on every mount).
    pub overlay: u64,
}

fn bootable_str(b: Bootable) -> &'static [u8] {
    b.as_str().as_bytes()
}

pub(crate) fn event_parts(e: &Event) -> (&'static str, Option<DeploymentName>, Option<Bootable>) {
    match *e {
        Event::ForcedUnbootable(n, b) => ("forced-unbootable", Some(n), Some(b)),
        Event::TrialExhausted(n) => ("trial-exhausted", Some(n), None),
        Event::TrialUnbootable(n, b) => ("trial-unbootable", Some(n), Some(b)),
        Event::TrialNotCounted(n) => ("trial-not-counted", Some(n), None),
        Event::LoaderFellBack(n) => ("loader-fell-back", Some(n), None),
        Event::DefaultUnbootable(n, b) => ("default-unbootable", Some(n), Some(b)),
        Event::PreviousUnbootable(n, b) => ("previous-unbootable", Some(n), Some(b)),
        Event::NoRecord => ("no-valid-record", None, None),
    }
}

pub(crate) fn json_plan(j: &mut Json, p: &Plan) {
    j.key("choice").open();
    match &p.choice {
        Choice::Deploy(n) => j
            .key("kind")
            .str(b"deployment")
            .key("deployment")
            .str(n.as_bytes()),
        Choice::Rescue => j.key("kind").str(b"rescue").key("deployment").null(),
        Choice::Reboot => j.key("kind").str(b"reboot").key("deployment").null(),
    };
    j.close();
    j.key("reason").str(p.why.as_str().as_bytes());
    j.key("tries_left");
    match p.tries_left() {
        Some(n) => j.num(u64::from(n)),
        None => j.null(),
    };
    j.key("fallbacks").open_list();
    for e in p.events() {
        let (kind, name, state) = event_parts(e);
        j.open()
            .key("event")
            .str(kind.as_bytes())
            .key("deployment")
            .opt_str(name.as_ref().map(DeploymentName::as_bytes));
        j.key("state").opt_str(state.map(bootable_str)).close();
    }
    j.close_list();
}

/// Writes `/run/berth/boot.json` for the booted system; a failure is logged, never
/// fatal (the report is for reading, the boot goes on without it).
pub fn write(
    log: &Log,
    p: &Plan,
    mode: BootMode,
    record: Option<&Record>,
    init: &[u8],
    t: &Timing,
) {
    let mut j = Json::default();
    j.open();
    json_plan(&mut j, p);
    j.key("mode").str(mode.as_str().as_bytes());
    j.key("init").str(init);
    j.key("record_generation")
        .opt_num(record.map(|r| r.generation));
    j.key("boottime_ns")
        .open()
        .key("start")
        .num(t.start)
        .key("early")
        .num(t.early)
        .key("modules")
        .num(t.modules)
        .key("device_wait")
        .num(t.device);
    j.key("sysroot_mount")
        .num(t.mount)
        .key("record_read")
        .num(t.record)
        .key("plan")
        .num(t.plan)
        .key("assemble")
        .num(t.assemble)
        .key("overlay_mount")
        .num(t.overlay)
        .key("exec")
        .num(boottime_ns())
        .close();
    j.close();
    j.out.push(b'\n');
    // After the switch, / is the deployment and /run our tmpfs.
    if let Err(e) = exec::mkdir_p(b"/run/berth").and_then(|()| {
        let fd = rustix::fs::open(
            "/run/berth/boot.json",
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )?;
        fsop::write_all(rustix::fd::AsFd::as_fd(&fd), &j.out)
    }) {
        log.error(b"write /run/berth/boot.json", b"", e);
    }
}
