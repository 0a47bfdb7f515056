//! No brick on a double fault: with both copies of the boot record damaged, berth-init
//! boots the last good deployment (`berth/boot/last-good`, kept by `berth-image
//! install`, `mark-good` and `rollback`), says so, and `berth fsck --repair` writes a
//! fresh record.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

mod common;

use std::fs;

use common::Lab;
use serde_json::Value;
use testkit::bin;

fn dry_run(lab: &Lab) -> Value {
    let out = std::process::Command::new(bin("berth-init"))
        .args(["--dry-run", "--sysroot"])
        .arg(&lab.sysroot)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn last_good(lab: &Lab) -> String {
    fs::read_to_string(lab.sysroot.join("berth/boot/last-good"))
        .unwrap()
        .trim()
        .to_owned()
}

fn damage_both_copies(lab: &Lab) {
    for c in ["record.a", "record.b"] {
        fs::write(lab.sysroot.join("berth/boot").join(c), [0xffu8; 512]).unwrap();
    }
}

#[test]
fn both_record_copies_damaged_boot_the_last_good_deployment_and_repair_rewrites_them() {
    let lab = Lab::new();
    let v1 = lab.commit("1.0", &[]);
    let v2 = lab.commit("2.0", &[("usr/lib/two", b"2")]);
    // Two deployments on disk: no "only deployment" to fall back on.
    lab.install(&v2, &["--previous", &v1]);
    assert_eq!(last_good(&lab), v2[..16]);
    damage_both_copies(&lab);
    let j = dry_run(&lab);
    assert_eq!(j["choice"]["deployment"], &v2[..16], "{j}");
    assert_eq!(j["reason"], "last-good", "{j}");
    // Booted so, the device says why and repairs its record.
    fs::write(&lab.boot_json, serde_json::to_vec(&j).unwrap()).unwrap();
    let s = lab.status();
    assert_eq!(s["boot_reason"], "last-good", "{s}");
    assert_eq!(
        s["record_copies"],
        serde_json::json!(["invalid", "invalid"]),
        "{s}"
    );
    let out = lab.berth(&["fsck", "--repair"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("wrote a fresh boot record: default {}", &v2[..16])),
        "{err}"
    );
    let s = lab.status();
    assert_eq!(
        s["record_copies"],
        serde_json::json!(["valid", "valid"]),
        "{s}"
    );
    assert_eq!(Lab::role(&s, "default").as_deref(), Some(&v2[..16]));
    assert_eq!(dry_run(&lab)["reason"], "default");
    // A sound record is left alone.
    let before = lab.record_bytes();
    lab.ok(&["fsck", "--repair"]);
    assert_eq!(lab.record_bytes(), before);
}

#[test]
fn mark_good_and_rollback_move_the_last_good_deployment() {
    let lab = Lab::new();
    let v1 = lab.commit("1.0", &[]);
    let v2 = lab.commit("2.0", &[("usr/lib/two", b"2")]);
    lab.install(&v1, &["--trial", &v2, "--tries", "3"]);
    assert_eq!(last_good(&lab), v1[..16], "a trial is not good yet");
    lab.booted(&v2[..16], "trial");
    lab.ok(&["mark-good"]);
    assert_eq!(last_good(&lab), v2[..16]);
    lab.ok(&["rollback"]);
    assert_eq!(
        last_good(&lab),
        v1[..16],
        "rolled back to the previous default"
    );
    // A retried rollback (cut between its record and last-good writes) converges.
    fs::write(
        lab.sysroot.join("berth/boot/last-good"),
        format!("{}\n", &v2[..16]),
    )
    .unwrap();
    lab.ok(&["rollback", "--from", &v2[..16]]);
    assert_eq!(last_good(&lab), v1[..16]);
}

#[test]
fn without_a_last_good_deployment_nothing_is_guessed() {
    let lab = Lab::new();
    let v1 = lab.commit("1.0", &[]);
    let v2 = lab.commit("2.0", &[("usr/lib/two", b"2")]);
    lab.install(&v2, &["--previous", &v1]);
    damage_both_copies(&lab);
    fs::remove_file(lab.sysroot.join("berth/boot/last-good")).unwrap();
    let j = dry_run(&lab);
    assert_eq!(j["reason"], "nothing-bootable", "{j}");
    let out = lab.berth(&["fsck", "--repair"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no valid boot record"), "{err}");
}
