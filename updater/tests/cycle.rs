//! The agent's record commands on a sysroot laid out by `berth-image install`, checked
//! against what berth-init would boot next (its `--dry-run`).
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use testkit::{bin, run_ok};

fn berth() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_berth"))
}

struct Device {
    _tmp: tempfile::TempDir,
    sysroot: PathBuf,
    boot_json: PathBuf,
    v1: String,
    v2: String,
}

/// A root filesystem with an init, committed as `version`.
fn commit(tmp: &Path, repo: &Path, version: &str) -> String {
    let tree = tmp.join(format!("tree-{version}"));
    for d in ["etc", "var", "run", "dev", "proc", "sys", "sysroot", "sbin"] {
        fs::create_dir_all(tree.join(d)).unwrap();
    }
    fs::write(tree.join("etc/release"), version).unwrap();
    fs::write(tree.join("sbin/init"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(tree.join("sbin/init"), fs::Permissions::from_mode(0o755)).unwrap();
    let out = run_ok(
        &bin("berth-image"),
        &[
            "commit".as_ref(),
            "--repo".as_ref(),
            repo.as_os_str(),
            "--tree".as_ref(),
            tree.as_os_str(),
            "--version".as_ref(),
            version.as_ref(),
        ],
    );
    out.trim().to_owned()
}

/// v1 is the default and v2 a trial with 3 tries; v2 is booted.
fn device() -> Device {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let v1 = commit(tmp.path(), &repo, "1");
    let v2 = commit(tmp.path(), &repo, "2");
    let sysroot = tmp.path().join("sysroot");
    run_ok(
        &bin("berth-image"),
        &[
            "install".as_ref(),
            "--repo".as_ref(),
            repo.as_os_str(),
            "--commit".as_ref(),
            v1.as_ref(),
            "--trial".as_ref(),
            v2.as_ref(),
            "--tries".as_ref(),
            "3".as_ref(),
            "--sysroot".as_ref(),
            sysroot.as_os_str(),
        ],
    );
    let boot_json = tmp.path().join("boot.json");
    let d = Device {
        sysroot,
        boot_json,
        v1: v1[..16].to_owned(),
        v2: v2[..16].to_owned(),
        _tmp: tmp,
    };
    d.booted(&d.v2.clone(), "trial");
    d
}

impl Device {
    fn booted(&self, name: &str, reason: &str) {
        fs::write(
            &self.boot_json,
            format!(
                r#"{{"choice":{{"kind":"deployment","deployment":"{name}"}},"reason":"{reason}"}}"#
            ),
        )
        .unwrap();
    }

    fn berth(&self, args: &[&str]) -> Output {
        Command::new(berth())
            .arg("--sysroot")
            .arg(&self.sysroot)
            .arg("--boot-json")
            .arg(&self.boot_json)
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.berth(args);
        assert!(
            out.status.success(),
            "berth {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn fails(&self, args: &[&str], needle: &str) {
        let before = self.record_bytes();
        let out = self.berth(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "berth {args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(
            err.contains(needle),
            "berth {args:?}: {err:?} lacks {needle:?}"
        );
        assert_eq!(
            self.record_bytes(),
            before,
            "berth {args:?} changed the record"
        );
    }

    fn status(&self) -> Value {
        serde_json::from_str(&self.ok(&["status", "--json"])).unwrap()
    }

    fn role(status: &Value, role: &str) -> Option<String> {
        status["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d[role] == true)
            .map(|d| d["name"].as_str().unwrap().to_owned())
    }

    fn record_bytes(&self) -> Vec<Vec<u8>> {
        ["record.a", "record.b"]
            .iter()
            .map(|f| fs::read(self.sysroot.join("berth/boot").join(f)).unwrap_or_default())
            .collect()
    }

    /// What berth-init would boot next, from its dry run on this sysroot.
    fn next_boot(&self) -> (String, String) {
        let v: Value = serde_json::from_str(&run_ok(
            &bin("berth-init"),
            &[
                "--dry-run".as_ref(),
                "--sysroot".as_ref(),
                self.sysroot.as_os_str(),
            ],
        ))
        .unwrap();
        (
            v["choice"]["deployment"]
                .as_str()
                .unwrap_or("none")
                .to_owned(),
            v["reason"].as_str().unwrap().to_owned(),
        )
    }
}

#[test]
fn status_mark_good_rollback_cycle() {
    let d = device();
    let s = d.status();
    assert_eq!(Device::role(&s, "default"), Some(d.v1.clone()));
    assert_eq!(Device::role(&s, "trial"), Some(d.v2.clone()));
    assert_eq!(Device::role(&s, "booted"), Some(d.v2.clone()));
    let v2 = s["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == d.v2.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        (
            v2["version"].as_str(),
            v2["tries_left"].as_u64(),
            v2["state"].as_str()
        ),
        (Some("2"), Some(3), Some("bootable"))
    );
    assert!(v2["commit"].as_str().unwrap().starts_with(&d.v2));
    assert!(s["last_rollback"].is_null());
    let text = d.ok(&["status"]);
    assert!(
        text.contains(&format!("● {}  version 2", d.v2)) && text.contains("trial, 3 tries left"),
        "{text}"
    );

    // The health check passes: the trial becomes the default.
    let out = d.ok(&["mark-good"]);
    assert!(
        out.contains(&format!("{} is now the default", d.v2)),
        "{out}"
    );
    let s = d.status();
    assert_eq!(
        (
            Device::role(&s, "default"),
            Device::role(&s, "previous"),
            Device::role(&s, "trial")
        ),
        (Some(d.v2.clone()), Some(d.v1.clone()), None)
    );
    assert_eq!(
        d.next_boot(),
        (d.v2.clone(), "default".to_owned()),
        "berth-init agrees"
    );
    d.booted(&d.v2, "default");
    assert!(d.ok(&["mark-good"]).contains("already the default"));

    // A manual rollback: the next boot uses the previous deployment.
    let out = d.ok(&["rollback"]);
    assert!(
        out.contains(&format!("the next boot uses {}", d.v1)),
        "{out}"
    );
    let s = d.status();
    assert_eq!(
        (Device::role(&s, "default"), Device::role(&s, "previous")),
        (Some(d.v1.clone()), Some(d.v2.clone()))
    );
    assert_eq!(s["last_rollback"]["from"], d.v2.as_str());
    assert_eq!(s["last_rollback"]["reason"], "manual");
    assert_eq!(d.next_boot(), (d.v1.clone(), "default".to_owned()));
    assert!(
        d.ok(&["status"])
            .contains(&format!("last rollback: from {} (manual)", d.v2))
    );

    let fsck = d.ok(&["fsck"]);
    assert!(fsck.contains("record and deployments sound"), "{fsck}");
}

#[test]
fn rollback_drops_a_pending_trial() {
    let d = device();
    d.ok(&["rollback"]);
    let s = d.status();
    assert_eq!(
        (Device::role(&s, "default"), Device::role(&s, "trial")),
        (Some(d.v1.clone()), None)
    );
    assert_eq!(d.next_boot(), (d.v1.clone(), "default".to_owned()));
    // Nothing left to roll back to: no trial, no previous.
    d.fails(&["rollback"], "nothing to roll back to");
}

#[test]
fn refusals_change_nothing() {
    let d = device();
    d.booted(&d.v1, "default");
    d.fails(
        &["mark-good"],
        &format!("the booted deployment {} is not the trial {}", d.v1, d.v2),
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
    let d = device();
    // Damage one file object in the device store.
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
