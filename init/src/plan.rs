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
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::vec::Vec;

    fn n(s: &str) -> DeploymentName {
        DeploymentName::new(s.as_bytes()).unwrap()
    }

    /// A disk with the given deployments (name → bootable) and maybe a rescue shell.
    struct FakeDisk {
        deps: BTreeMap<&'static str, Bootable>,
        rescue: bool,
        loader_trial: Option<&'static str>,
        last_good: Option<&'static str>,
    }

    impl Disk for FakeDisk {
        fn probe(&mut self, name: &DeploymentName) -> Bootable {
            self.deps
                .get(name.as_str())
                .copied()
                .unwrap_or(Bootable::Missing)
        }
        fn only_deployment(&mut self) -> Option<DeploymentName> {
            (self.deps.len() == 1).then(|| n(self.deps.keys().next().unwrap()))
        }
        fn has_rescue(&mut self) -> bool {
            self.rescue
        }
        fn loader_trial(&mut self) -> Option<DeploymentName> {
            self.loader_trial.map(n)
        }
        fn last_good(&mut self) -> Option<DeploymentName> {
            self.last_good.map(n)
        }
    }

    fn rec(default: Option<&str>, previous: Option<&str>, trial: Option<(&str, u8)>) -> Record {
        Record {
            generation: 10,
            default: default.map(n),
            previous: previous.map(n),
            trial: trial.map(|t| n(t.0)),
            tries_left: trial.map_or(0, |t| t.1),
            last_rollback: None,
        }
    }

    use Bootable::{Missing, NoInit, Yes};

    struct Case {
        what: &'static str,
        cmdline: &'static [u8],
        record: Option<Record>,
        disk: &'static [(&'static str, Bootable)],
        rescue: bool,
        choice: Choice,
        why: Reason,
        write: Option<Record>,
    }

    #[test]
    #[allow(clippy::too_many_lines)] // one row per case reads best
    fn table() {
        let dropped = |r: Record, from: &str, reason| Record {
            trial: None,
            tries_left: 0,
            last_rollback: Some(Rollback {
                from: n(from),
                reason,
            }),
            ..r
        };
        let with_trial = rec(Some("a"), Some("z"), Some(("b", 3)));
        let cases = [
            Case {
                what: "no record, nothing on disk, no rescue",
                cmdline: b"",
                record: None,
                disk: &[],
                rescue: false,
                choice: Choice::Reboot,
                why: Reason::NothingBootable,
                write: None,
            },
            Case {
                what: "no record, nothing on disk, rescue",
                cmdline: b"",
                record: None,
                disk: &[],
                rescue: true,
                choice: Choice::Rescue,
                why: Reason::NothingBootable,
                write: None,
            },
            Case {
                what: "no record, one deployment",
                cmdline: b"",
                record: None,
                disk: &[("a", Yes)],
                rescue: false,
                choice: Choice::Deploy(n("a")),
                why: Reason::OnlyDeployment,
                write: None,
            },
            Case {
                what: "no record, one deployment without init",
                cmdline: b"",
                record: None,
                disk: &[("a", NoInit)],
                rescue: true,
                choice: Choice::Rescue,
                why: Reason::NothingBootable,
                write: None,
            },
            Case {
                what: "no record, two deployments: no guessing",
                cmdline: b"",
                record: None,
                disk: &[("a", Yes), ("b", Yes)],
                rescue: false,
                choice: Choice::Reboot,
                why: Reason::NothingBootable,
                write: None,
            },
            Case {
                what: "default only",
                cmdline: b"",
                record: Some(rec(Some("a"), None, None)),
                disk: &[("a", Yes)],
                rescue: false,
                choice: Choice::Deploy(n("a")),
                why: Reason::Default,
                write: None,
            },
            Case {
                what: "default missing, no previous",
                cmdline: b"",
                record: Some(rec(Some("a"), None, None)),
                disk: &[],
                rescue: true,
                choice: Choice::Rescue,
                why: Reason::NothingBootable,
                write: None,
            },
            Case {
                what: "default without init: previous",
                cmdline: b"",
                record: Some(rec(Some("a"), Some("z"), None)),
                disk: &[("a", NoInit), ("z", Yes)],
                rescue: false,
                choice: Choice::Deploy(n("z")),
                why: Reason::Previous,
                write: None,
            },
            Case {
                what: "default missing: previous",
                cmdline: b"",
                record: Some(rec(Some("a"), Some("z"), None)),
                disk: &[("z", Yes)],
                rescue: false,
                choice: Choice::Deploy(n("z")),
                why: Reason::Previous,
                write: None,
            },
            Case {
                what: "previous only",
                cmdline: b"",
                record: Some(rec(None, Some("z"), None)),
                disk: &[("z", Yes)],
                rescue: false,
                choice: Choice::Deploy(n("z")),
                why: Reason::Previous,
                write: None,
            },
            Case {
                what: "both broken, no rescue",
                cmdline: b"",
                record: Some(rec(Some("a"), Some("z"), None)),
                disk: &[("a", NoInit), ("z", NoInit)],
                rescue: false,
                choice: Choice::Reboot,
                why: Reason::NothingBootable,
                write: None,
            },
            Case {
                what: "trial with 3 tries",
                cmdline: b"",
                record: Some(with_trial),
                disk: &[("a", Yes), ("b", Yes), ("z", Yes)],
                rescue: false,
                choice: Choice::Deploy(n("b")),
                why: Reason::Trial,
                write: Some(Record {
                    tries_left: 2,
                    ..with_trial
                }),
            },
            Case {
                what: "trial with 1 try",
                cmdline: b"",
                record: Some(rec(Some("a"), None, Some(("b", 1)))),
                disk: &[("a", Yes), ("b", Yes)],
                rescue: false,
                choice: Choice::Deploy(n("b")),
                why: Reason::Trial,
                write: Some(rec(Some("a"), None, Some(("b", 0)))),
            },
            Case {
                what: "trial exhausted: default, rollback recorded",
                cmdline: b"",
                record: Some(rec(Some("a"), Some("z"), Some(("b", 0)))),
                disk: &[("a", Yes), ("b", Yes)],
                rescue: false,
                choice: Choice::Deploy(n("a")),
                why: Reason::Default,
                write: Some(dropped(with_trial, "b", RollbackReason::TriesExhausted)),
            },
            Case {
                what: "trial exhausted, default broken: previous",
                cmdline: b"",
                record: Some(rec(Some("a"), Some("z"), Some(("b", 0)))),
                disk: &[("a", Missing), ("b", Yes), ("z", Yes)],
                rescue: false,
                choice: Choice::Deploy(n("z")),
                why: Reason::Previous,
                write: Some(dropped(with_trial, "b", RollbackReason::TriesExhausted)),
            },
            Case {
                what: "trial missing: default, rollback recorded",
                cmdline: b"",
                record: Some(with_trial),
                disk: &[("a", Yes)],
                rescue: false,
                choice: Choice::Deploy(n("a")),
                why: Reason::Default,
                write: Some(dropped(with_trial, "b", RollbackReason::TrialUnbootable)),
            },
            Case {
                what: "trial without init: default",
                cmdline: b"",
                record: Some(with_trial),
                disk: &[("a", Yes), ("b", NoInit)],
                rescue: false,
                choice: Choice::Deploy(n("a")),
                why: Reason::Default,
                write: Some(dropped(with_trial, "b", RollbackReason::TrialUnbootable)),
            },
            Case {
                what: "forced",
                cmdline: b"berth.deployment=z",
                record: Some(with_trial),
                disk: &[("a", Yes), ("b", Yes), ("z", Yes)],
                rescue: false,
                choice: Choice::Deploy(n("z")),
                why: Reason::Forced,
                write: None,
            },
            Case {
                what: "forced but missing: normal choice",
                cmdline: b"berth.deployment=q",
                record: Some(rec(Some("a"), None, None)),
                disk: &[("a", Yes)],
                rescue: false,
                choice: Choice::Deploy(n("a")),
                why: Reason::Default,
                write: None,
            },
            Case {
                what: "forced without a record",
                cmdline: b"berth.deployment=b",
                record: None,
                disk: &[("a", Yes), ("b", Yes)],
                rescue: false,
                choice: Choice::Deploy(n("b")),
                why: Reason::Forced,
                write: None,
            },
            Case {
                what: "rescue requested",
                cmdline: b"berth.rescue berth.deployment=a",
                record: Some(with_trial),
                disk: &[("a", Yes), ("b", Yes)],
                rescue: false,
                choice: Choice::Rescue,
                why: Reason::RescueRequested,
                write: None,
            },
        ];
        for c in cases {
            let mut disk = FakeDisk {
                deps: c.disk.iter().copied().collect(),
                rescue: c.rescue,
                loader_trial: None,
                last_good: None,
            };
            let p = plan(
                &Cmdline::parse(c.cmdline),
                c.record.as_ref(),
                &mut disk,
                true,
            );
            assert_eq!(
                (p.choice, p.why, p.write),
                (c.choice, c.why, c.write),
                "{}: {:?}",
                c.what,
                p.events().collect::<Vec<_>>()
            );
            if let Choice::Deploy(d) = p.choice {
                assert_eq!(
                    disk.probe(&d),
                    Yes,
                    "{}: chose an unbootable deployment",
                    c.what
                );
            }
        }
    }

    #[test]
    fn trial_is_never_booted_when_its_count_cannot_be_written() {
        let r = rec(Some("a"), None, Some(("b", 3)));
        let mut disk = FakeDisk {
            deps: [("a", Yes), ("b", Yes)].into_iter().collect(),
            rescue: false,
            loader_trial: None,
            last_good: None,
        };
        let p = plan(&Cmdline::default(), Some(&r), &mut disk, false);
        assert_eq!(
            (p.choice, p.why, p.write),
            (Choice::Deploy(n("a")), Reason::Default, None)
        );
        assert_eq!(p.events().next(), Some(&Event::TrialNotCounted(n("b"))));
    }

    #[test]
    fn a_trial_boots_exactly_its_tries_then_rolls_back() {
        // Simulate boots that never reach mark-good: the record each boot writes is the
        // next boot's input.
        let mut r = rec(Some("a"), Some("z"), Some(("b", 3)));
        let mut disk = FakeDisk {
            deps: [("a", Yes), ("b", Yes), ("z", Yes)].into_iter().collect(),
            rescue: false,
            loader_trial: None,
            last_good: None,
        };
        let mut booted = Vec::new();
        for _ in 0..6 {
            let p = plan(&Cmdline::default(), Some(&r), &mut disk, true);
            if let Choice::Deploy(d) = p.choice {
                booted.push(d.as_str().to_owned());
            }
            if let Some(w) = p.write {
                r = Record {
                    generation: r.generation + 1,
                    ..w
                };
            }
        }
        assert_eq!(booted, ["b", "b", "b", "a", "a", "a"]);
        assert_eq!(r.trial, None);
        assert_eq!(r.default, Some(n("a")), "the last good deployment is kept");
        assert_eq!(r.previous, Some(n("z")));
        assert_eq!(
            r.last_rollback,
            Some(Rollback {
                from: n("b"),
                reason: RollbackReason::TriesExhausted
            })
        );
    }
    /// With a loader that counts (`berth.entry=`): (cmdline, marker, disk) → (choice,
    /// why, record write, events). The record: default a, previous z, trial b with 3.
    #[test]
    #[allow(clippy::type_complexity, clippy::too_many_lines)] // one row per case reads best
    fn loader_counted_trials() {
        let r = rec(Some("a"), Some("z"), Some(("b", 3)));
        let dropped = |reason| Record {
            trial: None,
            tries_left: 0,
            last_rollback: Some(Rollback {
                from: n("b"),
                reason,
            }),
            ..r
        };
        let all = &[("a", Yes), ("b", Yes), ("z", Yes)][..];
        let cases: [(
            &str,
            &[u8],
            Option<&'static str>,
            &[(&'static str, Bootable)],
            Choice,
            Reason,
            Option<Record>,
            Option<Event>,
        ); 8] = [
            (
                "the loader boots the trial's entry: not counted again",
                b"berth.entry=b",
                Some("b"),
                all,
                Choice::Deploy(n("b")),
                Reason::LoaderTrial,
                None,
                None,
            ),
            (
                "the loader fell back to the default's entry: trial dropped, never booted under a's kernel",
                b"berth.entry=a",
                Some("b"),
                all,
                Choice::Deploy(n("a")),
                Reason::Default,
                Some(dropped(RollbackReason::TriesExhausted)),
                Some(Event::LoaderFellBack(n("b"))),
            ),
            (
                "the loader fell back to the previous entry: its deployment boots",
                b"berth.entry=z",
                Some("b"),
                all,
                Choice::Deploy(n("z")),
                Reason::Previous,
                Some(dropped(RollbackReason::TriesExhausted)),
                Some(Event::LoaderFellBack(n("b"))),
            ),
            (
                "the trial's entry, but its deployment is gone: dropped, the default boots",
                b"berth.entry=b",
                Some("b"),
                &[("a", Yes), ("z", Yes)],
                Choice::Deploy(n("a")),
                Reason::Default,
                Some(dropped(RollbackReason::TrialUnbootable)),
                Some(Event::TrialUnbootable(n("b"), Missing)),
            ),
            (
                "no marker: a rootfs-only trial under the default's kernel, counted by berth-init",
                b"berth.entry=a",
                None,
                all,
                Choice::Deploy(n("b")),
                Reason::Trial,
                Some(Record { tries_left: 2, ..r }),
                None,
            ),
            (
                "a marker for another deployment is stale: berth-init counts",
                b"berth.entry=a",
                Some("q"),
                all,
                Choice::Deploy(n("b")),
                Reason::Trial,
                Some(Record { tries_left: 2, ..r }),
                None,
            ),
            (
                "no entry (QEMU direct, or a loader that does not count): berth-init counts",
                b"",
                Some("b"),
                all,
                Choice::Deploy(n("b")),
                Reason::Trial,
                Some(Record { tries_left: 2, ..r }),
                None,
            ),
            (
                "fell back to the default's entry and the default is broken: the previous",
                b"berth.entry=a",
                Some("b"),
                &[("a", NoInit), ("b", Yes), ("z", Yes)],
                Choice::Deploy(n("z")),
                Reason::Previous,
                Some(dropped(RollbackReason::TriesExhausted)),
                Some(Event::LoaderFellBack(n("b"))),
            ),
        ];
        for (what, cmdline, marker, deps, choice, why, write, event) in cases {
            let mut disk = FakeDisk {
                deps: deps.iter().copied().collect(),
                rescue: false,
                loader_trial: marker,
                last_good: None,
            };
            let p = plan(&Cmdline::parse(cmdline), Some(&r), &mut disk, true);
            assert_eq!((p.choice, p.why, p.write), (choice, why, write), "{what}");
            assert_eq!(p.events().next().copied(), event, "{what}");
        }
        // No trial: the loader fell back from the default's entry to the previous one's.
        let mut disk = FakeDisk {
            deps: all.iter().copied().collect(),
            rescue: false,
            loader_trial: None,
            last_good: None,
        };
        let r2 = rec(Some("a"), Some("z"), None);
        let p = plan(
            &Cmdline::parse(b"berth.entry=z"),
            Some(&r2),
            &mut disk,
            true,
        );
        assert_eq!(
            (p.choice, p.why, p.write),
            (Choice::Deploy(n("z")), Reason::Previous, None)
        );
    }
    #[test]
    #[allow(clippy::type_complexity)] // one row per case reads best
    fn without_a_record_the_last_good_deployment_boots() {
        // (disk, last-good) → choice, why
        let cases: [(
            &[(&'static str, Bootable)],
            Option<&'static str>,
            Choice,
            Reason,
        ); 5] = [
            (
                &[("a", Yes), ("b", Yes)],
                Some("a"),
                Choice::Deploy(n("a")),
                Reason::LastGood,
            ),
            (
                &[("a", Yes), ("b", Yes)],
                Some("b"),
                Choice::Deploy(n("b")),
                Reason::LastGood,
            ),
            (
                &[("a", NoInit), ("b", Yes)],
                Some("a"),
                Choice::Reboot,
                Reason::NothingBootable,
            ),
            (
                &[("a", Yes), ("b", Yes)],
                None,
                Choice::Reboot,
                Reason::NothingBootable,
            ),
            // One deployment: it boots whatever last-good says.
            (
                &[("b", Yes)],
                Some("a"),
                Choice::Deploy(n("b")),
                Reason::OnlyDeployment,
            ),
        ];
        for (deps, good, choice, why) in cases {
            let mut disk = FakeDisk {
                deps: deps.iter().copied().collect(),
                rescue: false,
                loader_trial: None,
                last_good: good,
            };
            let p = plan(&Cmdline::default(), None, &mut disk, true);
            assert_eq!(
                (p.choice, p.why, p.write),
                (choice, why, None),
                "{deps:?} {good:?}"
            );
            assert_eq!(p.events().next(), Some(&Event::NoRecord));
        }
    }
}
