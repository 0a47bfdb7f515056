//! Tests of the boot plan: which deployment boots, and what the boot record becomes.

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
