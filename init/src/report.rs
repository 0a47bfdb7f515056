//! The boot report, `/run/berth/boot.json`: what berth-init chose, why, what it passed
//! over, and where the boot's time went. Written once, just before the exec, for the
//! booted system (`berth status`) to read. Its schema and encoder are
//! `format::bootreport`, shared with the agent that reads it.

use alloc::vec::Vec;

use format::bootreport::{Decision, Event, Report};
use rustix::fs::{Mode, OFlags};

use crate::exec;
use crate::log::{Log, boottime_ns};
use crate::plan::Plan;
use crate::steps::Mode as BootMode;

pub use format::bootreport::Timing;

/// The plan's decision, as the report and the dry-run output hold it. `events` is
/// scratch space for the fallbacks (the plan keeps them in a fixed array of options).
pub fn decision<'a>(p: &Plan, events: &'a mut Vec<Event>) -> Decision<'a> {
    events.clear();
    events.extend(p.events().copied());
    Decision {
        choice: p.choice,
        reason: p.why,
        tries_left: p.tries_left(),
        fallbacks: events,
    }
}

/// Writes `/run/berth/boot.json` for the booted system, stamping the exec time now; a
/// failure is logged, never fatal (the report is for reading, the boot goes on
/// without it).
pub fn write(
    log: &Log,
    p: &Plan,
    mode: BootMode,
    record_generation: Option<u64>,
    init: &[u8],
    t: &Timing,
) {
    let mut events = Vec::new();
    let bytes = Report {
        decision: decision(p, &mut events),
        mode,
        init,
        record_generation,
        boottime_ns: *t,
    }
    .encode_stamped(boottime_ns);
    // After the switch, / is the deployment and /run our tmpfs.
    if let Err(e) = exec::mkdir_p(b"/run/berth").and_then(|()| {
        let fd = rustix::fs::open(
            "/run/berth/boot.json",
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )?;
        fsop::write_all(rustix::fd::AsFd::as_fd(&fd), &bytes)
    }) {
        log.error(b"write /run/berth/boot.json", b"", e);
    }
}
