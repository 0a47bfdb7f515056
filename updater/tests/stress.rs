//! Commands side by side, as on a device where an agent, a timer and a person all run
//! `berth`: update (then rollback), gc, mark-good, fsck and status in loops on their
//! own threads for a bounded time. Writers wait for one another (the locks); readers
//! never wait. Afterwards the crash test's invariants hold: fsck passes, berth-init's
//! dry run boots a deployment, and every deployment the record names is whole.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::Lab;

/// Runs `cmd` in a loop until `stop`; each run must end as `ok` says. Returns the runs.
fn looped(
    mut cmd: Command,
    stop: Arc<AtomicBool>,
    what: &'static str,
    ok: fn(Option<i32>, &str) -> bool,
) -> std::thread::JoinHandle<u32> {
    std::thread::spawn(move || {
        let mut runs = 0;
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let out = cmd.output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                ok(out.status.code(), &err),
                "{what}: {:?}: {err}",
                out.status
            );
            assert!(
                started.elapsed() < Duration::from_mins(1),
                "{what} took {:?}",
                started.elapsed()
            );
            runs += 1;
        }
        runs
    })
}

#[test]
fn update_gc_mark_good_fsck_and_status_side_by_side() {
    let lab = Lab::new();
    let noise: Vec<u8> = (0..300_000u32)
        .map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes()[3])
        .collect();
    let v1 = lab.commit("1.0", &[]);
    let v2 = lab.commit("2.0", &[("usr/share/a", &noise[..150_000])]);
    let v3 = lab.commit("3.0", &[("usr/share/b", &noise[150_000..])]);
    lab.install(&v1, &[]);
    lab.booted(&v1[..16], "default");
    let updates = [
        lab.delta(None, &v2, "u2.berth", &["--part-size", "40000"]),
        lab.delta(None, &v3, "u3.berth", &["--part-size", "40000"]),
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let with = |args: &[&str]| {
        let mut c = lab.command();
        c.args(["--wait", "60"]).args(args);
        c
    };
    let clean = |code: Option<i32>, _: &str| code == Some(0);
    // mark-good has nothing to do here (v1 is booted and the default; a trial is not
    // booted): it must say so, never fail otherwise.
    let mark_good = |code: Option<i32>, err: &str| {
        code == Some(0) || (code == Some(1) && err.contains("is not the trial"))
    };
    let threads = [
        ("gc", looped(with(&["gc"]), stop.clone(), "gc", clean)),
        ("fsck", looped(with(&["fsck"]), stop.clone(), "fsck", clean)),
        (
            "status",
            looped(with(&["status", "--json"]), stop.clone(), "status", clean),
        ),
        (
            "mark-good",
            looped(with(&["mark-good"]), stop.clone(), "mark-good", mark_good),
        ),
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut updates_done = 0;
    while Instant::now() < deadline {
        let u = &updates[updates_done % 2];
        let out = with(&["update", "--allow-downgrade"])
            .arg(u)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "update {updates_done}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = with(&["rollback"]).output().unwrap();
        assert!(
            out.status.success(),
            "rollback: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        updates_done += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let mut counts = vec![format!("update+rollback {updates_done}")];
    for (name, t) in threads {
        let runs = t.join().unwrap();
        assert!(runs > 0, "{name} never ran");
        counts.push(format!("{name} {runs}"));
    }
    eprintln!("stress: {} iterations, 0 violations", counts.join(", "));
    assert!(updates_done >= 2);
    // The crash test's invariants.
    lab.ok(&["fsck"]);
    let (next, reason) = lab.next_boot();
    assert_eq!(
        (next.as_str(), reason.as_str()),
        (&v1[..16], "default"),
        "every trial was rolled back"
    );
    let s = lab.status();
    for d in s["deployments"].as_array().unwrap() {
        if d["default"] == true || d["trial"] == true || d["previous"] == true {
            assert_eq!(d["state"], "bootable", "{s}");
        }
    }
}
