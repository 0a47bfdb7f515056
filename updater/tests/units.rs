//! The systemd units in `systemd/` pass `systemd-analyze verify`, run against a root
//! that holds the units, the built `berth` at `/usr/bin/berth` and the host's own
//! systemd units (the targets they name); any warning fails the test, and so does a
//! unit with a misspelt key (the check itself is checked).
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

const UNITS: [&str; 2] = ["berth-agent.service", "berth-health.service"];

/// `systemd-analyze verify` of `units` in a root laid out in `dir`: its output.
fn verify(dir: &Path, units: &[(&str, String)]) -> (bool, String) {
    let root = dir.join("root");
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join("usr/lib/systemd")).unwrap();
    fs::create_dir_all(root.join("etc/systemd/system")).unwrap();
    std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
    let cp = Command::new("cp")
        .arg("-a")
        .arg("/usr/lib/systemd/system")
        .arg(root.join("usr/lib/systemd/"))
        .status()
        .unwrap();
    assert!(cp.success());
    fs::copy(common::berth(), root.join("usr/bin/berth")).unwrap();
    let mut args = vec!["verify".to_owned(), format!("--root={}", root.display())];
    for (name, text) in units {
        fs::write(root.join("etc/systemd/system").join(name), text).unwrap();
        args.push(format!("/etc/systemd/system/{name}"));
    }
    let out = Command::new("systemd-analyze")
        .args(&args)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && said.trim().is_empty(), said)
}

#[test]
fn the_units_verify_cleanly() {
    if !Path::new("/usr/bin/systemd-analyze").exists()
        && testkit::missing(
            "the_units_verify_cleanly",
            "systemd-analyze (ci/setup.sh installs systemd)",
        )
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let units: Vec<(&str, String)> = UNITS
        .iter()
        .map(|u| {
            (
                *u,
                fs::read_to_string(testkit::workspace().join("systemd").join(u)).unwrap(),
            )
        })
        .collect();
    let (ok, said) = verify(tmp.path(), &units);
    assert!(ok, "systemd-analyze verify: {said}");
    // The check can fail: a misspelt key is reported.
    let typo = vec![(UNITS[0], units[0].1.replace("RestartSec=", "RestartSecs="))];
    let (ok, said) = verify(tmp.path(), &typo);
    assert!(!ok && said.contains("RestartSecs"), "{said}");
}
