//! The agent's record commands on a sysroot laid out by `berth-image install`, checked
//! against what berth-init would boot next (its `--dry-run`).
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

mod common;

use std::fs;
use std::process::Command;

use common::{Lab, berth};

/// v1 is the default and v2 a trial with 3 tries; v2 is booted.
fn device() -> (Lab, String, String) {
    let lab = Lab::new();
    let v1 = lab.commit("1", &[]);
    let v2 = lab.commit("2", &[]);
    lab.install(&v1, &["--trial", &v2, "--tries", "3"]);
    let (v1, v2) = (v1[..16].to_owned(), v2[..16].to_owned());
    lab.booted(&v2, "trial");
    (lab, v1, v2)
}

#[test]
fn status_mark_good_rollback_cycle() {
    let (d, v1, v2) = device();
    let s = d.status();
    assert_eq!(Lab::role(&s, "default"), Some(v1.clone()));
    assert_eq!(Lab::role(&s, "trial"), Some(v2.clone()));
    assert_eq!(Lab::role(&s, "booted"), Some(v2.clone()));
    let v2s = s["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == v2.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        (
            v2s["version"].as_str(),
            v2s["tries_left"].as_u64(),
            v2s["state"].as_str()
        ),
        (Some("2"), Some(3), Some("bootable"))
    );
    assert!(v2s["commit"].as_str().unwrap().starts_with(&v2));
    assert!(s["last_rollback"].is_null());
    let text = d.ok(&["status"]);
    assert!(
        text.contains(&format!("● {v2}  version 2")) && text.contains("trial, 3 tries left"),
        "{text}"
    );

    // The health check passes: the trial becomes the default.
    let out = d.ok(&["mark-good"]);
    assert!(out.contains(&format!("{v2} is now the default")), "{out}");
    let s = d.status();
    assert_eq!(
        (
            Lab::role(&s, "default"),
            Lab::role(&s, "previous"),
            Lab::role(&s, "trial")
        ),
        (Some(v2.clone()), Some(v1.clone()), None)
    );
    assert_eq!(
        d.next_boot(),
        (v2.clone(), "default".to_owned()),
        "berth-init agrees"
    );
    d.booted(&v2, "default");
    assert!(d.ok(&["mark-good"]).contains("already the default"));

    // A manual rollback: the next boot uses the previous deployment.
    let out = d.ok(&["rollback"]);
    assert!(out.contains(&format!("the next boot uses {v1}")), "{out}");
    let s = d.status();
    assert_eq!(
        (Lab::role(&s, "default"), Lab::role(&s, "previous")),
        (Some(v1.clone()), Some(v2.clone()))
    );
    assert_eq!(s["last_rollback"]["from"], v2.as_str());
    assert_eq!(s["last_rollback"]["reason"], "manual");
    assert_eq!(d.next_boot(), (v1.clone(), "default".to_owned()));
    assert!(
        d.ok(&["status"])
            .contains(&format!("last rollback: from {v2} (manual)"))
    );

    let fsck = d.ok(&["fsck"]);
    assert!(fsck.contains("record and deployments sound"), "{fsck}");
}

#[test]
fn rollback_drops_a_pending_trial() {
    let (d, v1, _) = device();
    d.ok(&["rollback"]);
    let s = d.status();
    assert_eq!(
        (Lab::role(&s, "default"), Lab::role(&s, "trial")),
        (Some(v1.clone()), None)
    );
    assert_eq!(d.next_boot(), (v1, "default".to_owned()));
    // Nothing left to roll back to: no trial, no previous.
    d.fails(&["rollback"], "nothing to roll back to");
}

#[test]
fn refusals_change_nothing() {
    let (d, v1, v2) = device();
    d.booted(&v1, "default");
    d.fails(
        &["mark-good"],
        &format!("the booted deployment {v1} is not the trial {v2}"),
    );
    fs::remove_file(&d.boot_json).unwrap();
    d.fails(&["mark-good"], "cannot tell which deployment is booted");
    fs::write(&d.boot_json, "{not json").unwrap();
    d.fails(&["status"], "not JSON");
    let out = Command::new(berth())
        .args(["--sysroot", "/nonexistent/sysroot", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with("berth: /nonexistent/sysroot: open sysroot:")
    );
}

#[test]
fn fsck_finds_a_corrupt_object() {
    let (d, _, _) = device();
    // Damage one file object in the device store: the one-byte etc/release.
    let objects = d.sysroot.join("berth/repo/objects");
    let victim = fs::read_dir(&objects)
        .unwrap()
        .flat_map(|e| fs::read_dir(e.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.extension().is_some_and(|x| x == "file")
                && fs::symlink_metadata(p).unwrap().file_type().is_file()
                && fs::metadata(p).unwrap().len() == 1
        })
        .expect("the one-byte etc/release object");
    fs::write(&victim, "X").unwrap();
    let out = d.berth(&["fsck"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is corrupt") && err.contains("1 problems"),
        "{err}"
    );
}
