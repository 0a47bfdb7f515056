//! The boot decision, as a pure function of the command line, the boot record and
//! what exists on disk. No I/O: the caller probes deployments and writes the record.

use format::cmdline::Cmdline;
use format::record::{DeploymentName, Record, Rollback, RollbackReason};

pub use sysroot::Bootable;

// The decision's vocabulary is the boot report's (`/run/berth/boot.json`), so that
// its writer here and its reader in the agent share one definition.
pub use format::bootreport::{Choice, Event, Reason};

/// Most events one plan can hold (one per candidate, plus "no record").
pub const EVENTS_MAX: usize = 6;

/// The decision: what to boot, why, what was passed over, and the record to write
/// (durably, before booting) if it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// What to boot.
    pub choice: Choice,
    /// Why.
    pub why: Reason,
    /// Candidates passed over, in order.
    pub events: [Option<Event>; EVENTS_MAX],
    /// The record to write before booting, if it changes. Its generation is left to the
    /// writer (see `format::record::next_write`).
    pub write: Option<Record>,
}

impl Plan {
    fn new() -> Self {
        Self {
            choice: Choice::Reboot,
            why: Reason::NothingBootable,
            events: [None; EVENTS_MAX],
            write: None,
        }
    }

    fn push(&mut self, e: Event) {
        if let Some(slot) = self.events.iter_mut().find(|s| s.is_none()) {
            *slot = Some(e);
        }
    }

    /// The events, in order.
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.events.iter().flatten()
    }

    /// The trial's remaining tries after this boot, if a trial is being booted.
    pub fn tries_left(&self) -> Option<u8> {
        match (self.why, &self.write) {
            (Reason::Trial, Some(r)) => Some(r.tries_left),
            _ => None,
        }
    }
}

/// What the planner may look at on disk.
pub trait Disk {
    /// Whether `name` can be booted.
    fn probe(&mut self, name: &DeploymentName) -> Bootable;
    /// The one deployment on disk if there is exactly one (used only when no record
    /// copy is valid).
    fn only_deployment(&mut self) -> Option<DeploymentName>;
    /// Whether a rescue shell exists.
    fn has_rescue(&mut self) -> bool;
    /// The trial whose tries the boot loader counts (`berth/boot/loader-trial`), if any.
    fn loader_trial(&mut self) -> Option<DeploymentName>;
    /// The last deployment made the default (`berth/boot/last-good`), if any.
    fn last_good(&mut self) -> Option<DeploymentName>;
}

/// Decides what to boot.
///
/// - Without a valid record: the only deployment on disk, else the last good one
///   (`berth/boot/last-good`), else rescue or reboot.
/// - `berth.rescue` goes straight to rescue; `berth.deployment=` boots that deployment
///   for this boot only, leaving the record alone, if it is bootable.
/// - A trial with tries left is booted after its count is decremented (the returned
///   `write`, which the caller must make durable first). With no tries left, or if it
///   cannot be booted, it is dropped and the rollback recorded in `write`.
/// - With `berth.entry=` (a loader that counts tries started this kernel) and a trial that
///   `berth/boot/loader-trial` names: if the entry is the trial's, the trial boots and
///   its tries are not counted again; if it is another, the loader gave the trial up, so
///   it is dropped (as tries exhausted) and never booted under that other entry's
///   kernel. A trial without the marker is berth-init's to count, as without a loader.
/// - Then the entry's deployment if it is the default or the previous one (the kernel
///   running is its), then the default, then the previous deployment; then rescue,
///   else reboot.
/// - `count_trials` is false when the caller could not write the record: a trial is then
///   never booted (its tries could not be counted), so a broken trial cannot loop.
pub fn plan(
    cmd: &Cmdline<'_>,
    record: Option<&Record>,
    disk: &mut dyn Disk,
    count_trials: bool,
) -> Plan {
    let mut p = Plan::new();
    if cmd.rescue {
        p.why = Reason::RescueRequested;
        p.choice = Choice::Rescue;
        return p;
    }
    if let Some(name) = cmd.deployment.and_then(|n| DeploymentName::new(n).ok()) {
        match disk.probe(&name) {
            Bootable::Yes => {
                p.choice = Choice::Deploy(name);
                p.why = Reason::Forced;
                return p;
            }
            b => p.push(Event::ForcedUnbootable(name, b)),
        }
    }
    let Some(rec) = record else {
        p.push(Event::NoRecord);
        if let Some(only) = disk.only_deployment()
            && disk.probe(&only) == Bootable::Yes
        {
            p.choice = Choice::Deploy(only);
            p.why = Reason::OnlyDeployment;
            return p;
        }
        // Both copies damaged (flash wear, a stray write): the last deployment a person
        // or a health check made the default, rather than a reboot loop.
        if let Some(good) = disk.last_good()
            && disk.probe(&good) == Bootable::Yes
        {
            p.choice = Choice::Deploy(good);
            p.why = Reason::LastGood;
            return p;
        }
        return last_resort(p, disk);
    };
    let entry = cmd.entry.and_then(|e| DeploymentName::new(e).ok());
    if let Some(decided) = loader_plan(p, entry, rec, disk) {
        return decided;
    }
    if let Some(trial) = rec.trial {
        let drop_trial = |reason| Record {
            trial: None,
            tries_left: 0,
            last_rollback: Some(Rollback {
                from: trial,
                reason,
            }),
            ..*rec
        };
        if rec.tries_left == 0 {
            p.push(Event::TrialExhausted(trial));
            p.write = Some(drop_trial(RollbackReason::TriesExhausted));
        } else {
            match disk.probe(&trial) {
                Bootable::Yes if count_trials => {
                    p.write = Some(Record {
                        tries_left: rec.tries_left - 1,
                        ..*rec
                    });
                    p.choice = Choice::Deploy(trial);
                    p.why = Reason::Trial;
                    return p;
                }
                // The record cannot be written, so neither can the rollback: leave it.
                Bootable::Yes => p.push(Event::TrialNotCounted(trial)),
                b => {
                    p.push(Event::TrialUnbootable(trial, b));
                    p.write = Some(drop_trial(RollbackReason::TrialUnbootable));
                }
            }
        }
    }
    if let Some(d) = rec.default {
        match disk.probe(&d) {
            Bootable::Yes => {
                p.choice = Choice::Deploy(d);
                p.why = Reason::Default;
                return p;
            }
            b => p.push(Event::DefaultUnbootable(d, b)),
        }
    }
    if let Some(prev) = rec.previous {
        match disk.probe(&prev) {
            Bootable::Yes => {
                p.choice = Choice::Deploy(prev);
                p.why = Reason::Previous;
                return p;
            }
            b => p.push(Event::PreviousUnbootable(prev, b)),
        }
    }
    last_resort(p, disk)
}

/// The decision when a loader that counts tries started this kernel (`berth.entry=`):
/// see [`plan`]. `None` when berth-init decides as without a loader.
fn loader_plan(
    mut p: Plan,
    entry: Option<DeploymentName>,
    rec: &Record,
    disk: &mut dyn Disk,
) -> Option<Plan> {
    let loader_counts = entry.is_some() && rec.trial.is_some() && disk.loader_trial() == rec.trial;
    if let Some(trial) = rec.trial
        && loader_counts
    {
        let dropped = Record {
            trial: None,
            tries_left: 0,
            last_rollback: Some(Rollback {
                from: trial,
                reason: RollbackReason::TriesExhausted,
            }),
            ..*rec
        };
        if entry == Some(trial) {
            match disk.probe(&trial) {
                Bootable::Yes => {
                    p.choice = Choice::Deploy(trial);
                    p.why = Reason::LoaderTrial;
                    return Some(p);
                }
                b => {
                    p.push(Event::TrialUnbootable(trial, b));
                    p.write = Some(Record {
                        last_rollback: Some(Rollback {
                            from: trial,
                            reason: RollbackReason::TrialUnbootable,
                        }),
                        ..dropped
                    });
                }
            }
        } else {
            p.push(Event::LoaderFellBack(trial));
            p.write = Some(dropped);
        }
        // The loader started this entry's kernel: its deployment goes first.
        let order = [entry, rec.default, rec.previous];
        return Some(boot_first_of(p, disk, rec, &order));
    }
    if let Some(entry) = entry
        && rec.trial.is_none()
        && rec.previous == Some(entry)
        && rec.default != Some(entry)
    {
        // The loader fell back from the default's entry to the previous one's.
        return Some(boot_first_of(p, disk, rec, &[Some(entry), rec.default]));
    }
    None
}

/// Boots the first bootable of `order` (each the default or the previous deployment of
/// `rec`, or neither and skipped), noting the others; else rescue or reboot.
fn boot_first_of(
    mut p: Plan,
    disk: &mut dyn Disk,
    rec: &Record,
    order: &[Option<DeploymentName>],
) -> Plan {
    for (i, d) in order.iter().enumerate() {
        let Some(d) = d else {
            continue;
        };
        if order.iter().take(i).any(|x| *x == Some(*d)) {
            continue;
        }
        let why = if rec.default == Some(*d) {
            Reason::Default
        } else if rec.previous == Some(*d) {
            Reason::Previous
        } else {
            continue;
        };
        match disk.probe(d) {
            Bootable::Yes => {
                p.choice = Choice::Deploy(*d);
                p.why = why;
                return p;
            }
            b if why == Reason::Default => p.push(Event::DefaultUnbootable(*d, b)),
            b => p.push(Event::PreviousUnbootable(*d, b)),
        }
    }
    last_resort(p, disk)
}

fn last_resort(mut p: Plan, disk: &mut dyn Disk) -> Plan {
    p.why = Reason::NothingBootable;
    p.choice = if disk.has_rescue() {
        Choice::Rescue
    } else {
        Choice::Reboot
    };
    p
}

#[cfg(test)]
mod tests;
