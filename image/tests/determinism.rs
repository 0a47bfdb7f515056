//! Commit ids are reproducible, and a directory and a tarball of the same tree give the
//! same root tree id.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use testkit::{make_fixture, run_ok};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_berth-image"))
}

fn commit(repo: &Path, source: (&str, &Path), extra: &[&str]) -> String {
    let mut args: Vec<&OsStr> = vec![
        "commit".as_ref(),
        "--repo".as_ref(),
        repo.as_os_str(),
        source.0.as_ref(),
        source.1.as_os_str(),
        "--version".as_ref(),
        "1.0".as_ref(),
    ];
    args.extend(extra.iter().map(OsStr::new));
    run_ok(bin(), &args).trim().to_owned()
}

fn root_of(repo: &Path, commit: &str) -> String {
    let json = run_ok(
        bin(),
        &[
            "show".as_ref(),
            "--repo".as_ref(),
            repo.as_os_str(),
            commit.as_ref(),
            "--json".as_ref(),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["root"].as_str().unwrap().to_owned()
}

#[test]
fn same_tree_same_ids_across_repositories() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    make_fixture(&src);
    let a = commit(
        &tmp.path().join("r1"),
        ("--tree", &src),
        &["--timestamp", "1700000000"],
    );
    let b = commit(
        &tmp.path().join("r2"),
        ("--tree", &src),
        &["--timestamp", "1700000000"],
    );
    assert_eq!(a, b, "same tree, version and time: same commit id");
    let c = commit(
        &tmp.path().join("r3"),
        ("--tree", &src),
        &["--timestamp", "1700000001"],
    );
    assert_ne!(a, c, "the timestamp is part of the commit");
    assert_eq!(
        root_of(&tmp.path().join("r1"), &a),
        root_of(&tmp.path().join("r3"), &c),
        "but not of the tree"
    );
    // SOURCE_DATE_EPOCH stands in for --timestamp.
    let out = Command::new(bin())
        .args(["commit", "--repo"])
        .arg(tmp.path().join("r4"))
        .arg("--tree")
        .arg(&src)
        .args(["--version", "1.0"])
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), a);
    testkit::make_writable(tmp.path());
}

#[test]
fn directory_and_tarball_give_the_same_root_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    make_fixture(&src);
    let tarball = tmp.path().join("rootfs.tar");
    let st = Command::new("tar")
        .args([
            "--xattrs",
            "--xattrs-include=*",
            "--numeric-owner",
            "--format=posix",
            "-C",
        ])
        .arg(&src)
        .arg("-cpf")
        .arg(&tarball)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success(), "GNU tar failed");
    let from_dir = commit(&tmp.path().join("r1"), ("--tree", &src), &[]);
    let from_tar = commit(&tmp.path().join("r2"), ("--tar", &tarball), &[]);
    assert_eq!(
        root_of(&tmp.path().join("r1"), &from_dir),
        root_of(&tmp.path().join("r2"), &from_tar)
    );
    // Compressed tarballs too.
    let gz = tmp.path().join("rootfs.tar.gz");
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -c {} > {}", tarball.display(), gz.display()))
        .status()
        .unwrap();
    assert!(st.success());
    let from_gz = commit(&tmp.path().join("r3"), ("--tar", &gz), &[]);
    assert_eq!(
        root_of(&tmp.path().join("r1"), &from_dir),
        root_of(&tmp.path().join("r3"), &from_gz)
    );
    testkit::make_writable(tmp.path());
}
