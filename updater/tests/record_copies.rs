//! A record copy that is not a regular file (a FIFO, a directory, a symlink, a device)
//! is an invalid copy: `berth status` and berth-init's dry run finish, say so, and boot
//! from the other copy. Before, a FIFO as `record.a` blocked both forever; berth-init
//! must never hang.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::Lab;
use serde_json::Value;

/// Runs `cmd`, killing it and failing the test if it has not finished in 20 s.
fn finishes(cmd: Command, what: &str) -> Output {
    let out = in_time(cmd, what);
    assert!(
        out.status.success(),
        "{what}: {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `cmd` to its end, killing it and failing the test past 20 s.
fn in_time(mut cmd: Command, what: &str) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("{what}: still running after 20 s (hung)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Puts something that is not a record copy at a path.
type Maker<'a> = &'a dyn Fn(&Path);

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_record_copy_that_is_not_a_regular_file_is_invalid_and_never_hangs() {
    let lab = Lab::new();
    let v1 = lab.commit("1.0", &[]);
    lab.install(&v1, &[]);
    lab.booted(&v1[..16], "default");
    let boot = lab.sysroot.join("berth/boot");
    // The valid copy as record.b, whatever install wrote.
    let good = lab
        .record_bytes()
        .into_iter()
        .find(|b| format::record::Record::decode(b).is_ok())
        .unwrap();
    fs::write(boot.join("record.b"), &good).unwrap();

    let fifo = |p: &Path| {
        let st = Command::new("mkfifo").arg(p).status().unwrap();
        assert!(st.success());
    };
    let dir = |p: &Path| fs::create_dir(p).unwrap();
    let link = |p: &Path| std::os::unix::fs::symlink("record.b", p).unwrap();
    // A device that reads forever, when the test may make one.
    let zero = |p: &Path| {
        let st = Command::new("mknod").arg(p).args(["c", "1", "5"]).status();
        assert!(st.unwrap().success());
    };
    let mut cases: Vec<(&str, Maker<'_>)> = vec![
        ("a FIFO", &fifo),
        ("a directory", &dir),
        ("a symlink", &link),
    ];
    if testkit::is_root() {
        cases.push(("/dev/zero", &zero));
    }
    for (what, make) in cases {
        let a = boot.join("record.a");
        let _ = fs::remove_file(&a);
        let _ = fs::remove_dir(&a);
        make(&a);

        let mut status = lab.command();
        status.args(["status", "--json"]);
        let s = json(&finishes(status, &format!("{what}: berth status")));
        assert_eq!(
            s["record_copies"],
            serde_json::json!(["invalid", "valid"]),
            "{what}: {s}"
        );
        assert_eq!(
            Lab::role(&s, "default"),
            Some(v1[..16].to_owned()),
            "{what}"
        );

        let mut dry = Command::new(testkit::bin("berth-init"));
        dry.arg("--dry-run").arg("--sysroot").arg(&lab.sysroot);
        let d = json(&finishes(dry, &format!("{what}: berth-init --dry-run")));
        assert_eq!(
            d["record_copies"],
            serde_json::json!(["invalid", "valid"]),
            "{what}: {d}"
        );
        assert_eq!(d["choice"]["deployment"], v1[..16], "{what}: {d}");
        assert_eq!(d["reason"], "default", "{what}: {d}");
    }
}

/// `berth status` reads berth-init's `boot.json`: a FIFO there is an error naming it,
/// never a read that blocks.
#[test]
fn a_boot_json_that_is_not_a_regular_file_is_an_error_not_a_hang() {
    let lab = Lab::new();
    let v1 = lab.commit("1.0", &[]);
    lab.install(&v1, &[]);
    let st = Command::new("mkfifo").arg(&lab.boot_json).status().unwrap();
    assert!(st.success());
    let mut status = lab.command();
    status.args(["status", "--json"]);
    let out = in_time(status, "berth status");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("boot.json") && err.contains("not a regular file"),
        "{err}"
    );
}
