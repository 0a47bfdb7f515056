//! The binary's test mode against sysroot directories: the plan it prints, and the
//! records it writes when asked to act as a real boot would.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use format::record::{DeploymentName, Record, RecordCopy, RollbackReason};
use serde_json::Value;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_berth-init"))
}

fn name(s: &str) -> DeploymentName {
    DeploymentName::new(s.as_bytes()).unwrap()
}

fn executable(path: &Path) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, b"\x7fELF not really").unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

fn sysroot_with(deployments: &[&str], record: Option<&Record>) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("berth/boot")).unwrap();
    for d in deployments {
        executable(&tmp.path().join("berth/deploy").join(d).join("sbin/init"));
    }
    if let Some(r) = record {
        fs::write(tmp.path().join("berth/boot/record.a"), r.encode()).unwrap();
    }
    tmp
}

fn dry_run(root: &Path, extra: &[&str]) -> Value {
    let out = Command::new(bin())
        .arg("--dry-run")
        .arg("--sysroot")
        .arg(root)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn read_copy(root: &Path, c: RecordCopy) -> Option<Record> {
    fs::read(root.join("berth/boot").join(c.file_name()))
        .ok()
        .and_then(|b| Record::decode(&b).ok())
}

fn record(default: &str, previous: Option<&str>, trial: Option<(&str, u8)>) -> Record {
    Record {
        generation: 1,
        default: Some(name(default)),
        previous: previous.map(name),
        trial: trial.map(|t| name(t.0)),
        tries_left: trial.map_or(0, |t| t.1),
        last_rollback: None,
    }
}

#[test]
fn repeated_boots_count_the_trial_down_then_roll_back() {
    let tmp = sysroot_with(
        &["v1", "v0", "v2"],
        Some(&record("v1", Some("v0"), Some(("v2", 3)))),
    );
    let root = tmp.path();
    let mut chosen = Vec::new();
    for boot in 0..5 {
        let v = dry_run(root, &["--write-record"]);
        chosen.push(v["choice"]["deployment"].as_str().unwrap().to_owned());
        if boot < 3 {
            assert_eq!(v["reason"], "trial");
            assert_eq!(v["tries_left"], 2 - boot);
            // Written to the copy that did not win, with the next generation.
            let written = &v["record_written"];
            assert_eq!(written["generation"], 2 + boot);
            assert_eq!(
                written["copy"],
                if boot % 2 == 0 {
                    "record.b"
                } else {
                    "record.a"
                }
            );
        }
        if boot == 3 {
            assert_eq!(v["reason"], "default");
            assert_eq!(v["fallbacks"][0]["event"], "trial-exhausted");
            assert_eq!(v["record_write"]["last_rollback"]["from"], "v2");
            assert_eq!(
                v["record_write"]["last_rollback"]["reason"],
                "tries-exhausted"
            );
        }
        if boot == 4 {
            assert!(
                v["record_write"].is_null(),
                "nothing changes once the trial is gone"
            );
        }
    }
    assert_eq!(chosen, ["v2", "v2", "v2", "v1", "v1"]);
    // Both copies are valid; the newer one holds the rollback.
    let a = read_copy(root, RecordCopy::A).unwrap();
    let b = read_copy(root, RecordCopy::B).unwrap();
    let newest = if a.generation > b.generation { a } else { b };
    assert_eq!(newest.generation, 5);
    assert_eq!(newest.trial, None);
    assert_eq!(newest.default, Some(name("v1")));
    assert_eq!(
        newest.previous,
        Some(name("v0")),
        "the last good deployments are never forgotten"
    );
    assert_eq!(
        newest.last_rollback.map(|r| (r.from, r.reason)),
        Some((name("v2"), RollbackReason::TriesExhausted))
    );
    assert_eq!(
        a.generation.abs_diff(b.generation),
        1,
        "the older copy is one write behind"
    );
}

#[test]
fn init_is_resolved_inside_the_deployment() {
    let tmp = sysroot_with(&[], Some(&record("abs", Some("host"), None)));
    let root = tmp.path();
    // abs: /sbin/init -> /lib/systemd/systemd, present inside the deployment.
    let abs = root.join("berth/deploy/abs");
    executable(&abs.join("lib/systemd/systemd"));
    fs::create_dir_all(abs.join("sbin")).unwrap();
    symlink("/lib/systemd/systemd", abs.join("sbin/init")).unwrap();
    let v = dry_run(root, &[]);
    assert_eq!(v["choice"]["deployment"], "abs");

    // Now the default's init points at a file that exists on the host but not in the
    // deployment: it must not count.
    fs::remove_file(abs.join("sbin/init")).unwrap();
    symlink("/bin/sh", abs.join("sbin/init")).unwrap();
    let host = root.join("berth/deploy/host");
    executable(&host.join("sbin/init"));
    let v = dry_run(root, &[]);
    assert_eq!(v["choice"]["deployment"], "host");
    assert_eq!(v["reason"], "previous");
    assert_eq!(v["fallbacks"][0]["event"], "default-unbootable");
    assert_eq!(v["fallbacks"][0]["state"], "no-init");

    // berth.init= changes what counts as the init.
    executable(&abs.join("usr/lib/custom-init"));
    let v = dry_run(
        root,
        &["--cmdline", "quiet berth.init=/usr/lib/custom-init"],
    );
    assert_eq!(v["choice"]["deployment"], "abs");
    assert_eq!(v["init"], "/usr/lib/custom-init");
}

#[test]
fn command_line_overrides() {
    let tmp = sysroot_with(&["v1", "v2"], Some(&record("v1", None, Some(("v2", 2)))));
    let root = tmp.path();
    let v = dry_run(
        root,
        &["--cmdline", "berth.deployment=v1", "--write-record"],
    );
    assert_eq!(
        (v["choice"]["deployment"].as_str(), v["reason"].as_str()),
        (Some("v1"), Some("forced"))
    );
    assert!(
        v["record_written"].is_null(),
        "a forced boot changes nothing"
    );
    assert_eq!(read_copy(root, RecordCopy::A).unwrap().tries_left, 2);

    let v = dry_run(root, &["--cmdline", "berth.rescue"]);
    assert_eq!(
        (v["choice"]["kind"].as_str(), v["reason"].as_str()),
        (Some("rescue"), Some("rescue-requested"))
    );
    assert_eq!(v["steps"].as_array().unwrap().len(), 0);

    let v = dry_run(root, &["--cmdline", "berth.deployment=gone"]);
    assert_eq!(v["reason"], "trial");
    assert_eq!(v["fallbacks"][0]["event"], "forced-unbootable");

    let v = dry_run(root, &["--mode", "initramfs"]);
    let ops: Vec<&str> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["op"].as_str().unwrap())
        .collect();
    assert_eq!(ops.last(), Some(&"move-root"));
    assert_eq!(v["steps"][1]["args"][0], "/sysroot/berth/deploy/v2");
}

#[test]
fn a_trial_is_not_booted_when_its_try_cannot_be_recorded() {
    let tmp = sysroot_with(&["v1", "v2"], Some(&record("v1", None, Some(("v2", 3)))));
    let root = tmp.path();
    // A directory where the temporary record file must go makes every write fail.
    fs::create_dir(root.join("berth/boot/record.tmp")).unwrap();
    let out = Command::new(bin())
        .arg("--dry-run")
        .arg("--sysroot")
        .arg(root)
        .arg("--write-record")
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["choice"]["deployment"], "v1");
    assert_eq!(v["fallbacks"][0]["event"], "trial-not-counted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("berth-init: create record.tmp: boot record: EISDIR"),
        "{err}"
    );
    assert_eq!(
        read_copy(root, RecordCopy::A).unwrap().tries_left,
        3,
        "record unchanged"
    );
}

#[test]
fn usage_errors() {
    for args in [
        &[][..],
        &["--dry-run"][..],
        &["--bogus"][..],
        &["--dry-run", "--sysroot", "/x", "--mode", "sideways"][..],
    ] {
        let out = Command::new(bin()).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).starts_with("berth-init: "),
            "{args:?}"
        );
    }
    let out = Command::new(bin())
        .args(["--dry-run", "--sysroot", "/nonexistent/sysroot"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("open sysroot: /nonexistent/sysroot: ENOENT")
    );
}
