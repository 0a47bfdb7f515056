//! Trials whose tries the boot loader counts (`berth/boot/loader-trial`, `berth.entry=`
//! on the kernel command line): berth-init does not count them again, drops one the
//! loader gave up (never booting it under another entry's kernel), and `berth status`
//! says so.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

mod common;

use std::fs;

use common::Lab;
use serde_json::Value;
use testkit::bin;

/// v1 the default and v2 a trial with 3 tries, the loader counting v2's.
fn lab() -> (Lab, String, String) {
    let lab = Lab::new();
    let v1 = lab.commit("1.0", &[]);
    let v2 = lab.commit("2.0", &[("usr/lib/two", b"2")]);
    lab.install(&v1, &["--trial", &v2, "--tries", "3"]);
    fs::write(
        lab.sysroot.join("berth/boot/loader-trial"),
        format!("{}\n", &v2[..16]),
    )
    .unwrap();
    (lab, v1[..16].to_owned(), v2[..16].to_owned())
}

/// berth-init's dry run with `cmdline`, writing the record as a boot would.
fn boot(lab: &Lab, cmdline: &str) -> Value {
    let out = std::process::Command::new(bin("berth-init"))
        .args(["--dry-run", "--write-record", "--sysroot"])
        .arg(&lab.sysroot)
        .args(["--cmdline", cmdline])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_loaders_entry_for_the_trial_boots_it_without_counting_again() {
    let (lab, _, v2) = lab();
    let before = lab.record_bytes();
    for _ in 0..4 {
        let j = boot(&lab, &format!("console=ttyS0 berth.entry={v2}"));
        assert_eq!(j["choice"]["deployment"], v2.as_str(), "{j}");
        assert_eq!(j["reason"], "loader-trial", "{j}");
    }
    assert_eq!(
        lab.record_bytes(),
        before,
        "the loader counts; the record is untouched"
    );
    let s = lab.status();
    assert_eq!(Lab::role(&s, "trial").as_deref(), Some(v2.as_str()));
}

#[test]
fn a_trial_the_loader_gave_up_is_dropped_and_status_says_so() {
    let (lab, v1, v2) = lab();
    let j = boot(&lab, &format!("berth.entry={v1}"));
    assert_eq!(j["choice"]["deployment"], v1.as_str(), "{j}");
    assert_eq!(j["reason"], "default", "{j}");
    assert_eq!(j["fallbacks"][0]["event"], "loader-fell-back", "{j}");
    assert_eq!(j["fallbacks"][0]["deployment"], v2.as_str(), "{j}");
    // berth-init's boot report, as the booted system sees it.
    fs::write(&lab.boot_json, serde_json::to_vec(&j).unwrap()).unwrap();
    let s = lab.status();
    assert_eq!(Lab::role(&s, "trial"), None, "{s}");
    assert_eq!(s["last_rollback"]["from"], v2.as_str(), "{s}");
    assert_eq!(s["last_rollback"]["reason"], "tries-exhausted", "{s}");
    let why = s["boot_reason"].as_str().unwrap();
    assert!(
        why.contains(&format!("the boot loader gave up the trial {v2}")),
        "{why}"
    );
    let text = lab.ok(&["status"]);
    assert!(text.contains("gave up the trial"), "{text}");
    // The next boot, through the same entry, changes nothing more.
    let again = boot(&lab, &format!("berth.entry={v1}"));
    assert_eq!(again["reason"], "default", "{again}");
    assert_eq!(
        again["fallbacks"].as_array().map(Vec::len),
        Some(0),
        "{again}"
    );
}

#[test]
fn without_the_marker_berth_init_counts_a_rootfs_only_trial() {
    let (lab, v1, v2) = lab();
    fs::remove_file(lab.sysroot.join("berth/boot/loader-trial")).unwrap();
    let j = boot(&lab, &format!("berth.entry={v1}"));
    assert_eq!(j["choice"]["deployment"], v2.as_str(), "{j}");
    assert_eq!(j["reason"], "trial", "{j}");
    assert_eq!(j["tries_left"], 2, "{j}");
}
