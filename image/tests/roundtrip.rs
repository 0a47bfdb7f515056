//! A commit of a tree holding every kind of file, checked out again, is the same tree.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use testkit::{compare_trees, make_fixture, run_ok};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_berth-image"))
}

fn commit(repo: &Path, tree: &Path, version: &str) -> String {
    let out = run_ok(
        bin(),
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

fn checkout(repo: &Path, commit: &str, dest: &Path, extra: &[&OsStr]) {
    let mut args: Vec<&OsStr> = vec![
        "checkout".as_ref(),
        "--repo".as_ref(),
        repo.as_os_str(),
        commit.as_ref(),
        dest.as_os_str(),
    ];
    args.extend_from_slice(extra);
    run_ok(bin(), &args);
}

#[test]
fn every_file_kind_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let info = make_fixture(&src);
    if !info.privileged {
        eprintln!("not root: devices, other owners and security.* xattrs are left out of this run");
    }
    let repo = tmp.path().join("repo");
    let id = commit(&repo, &src, "1.0");
    assert_eq!(id.len(), 64, "commit prints the id: {id:?}");

    let out = tmp.path().join("out");
    checkout(&repo, &id, &out, &[]);
    let compared = compare_trees(&src, &out, true)
        .unwrap_or_else(|d| panic!("checkout differs:\n{}", d.join("\n")));
    assert!(compared.entries > 40, "fixture too small: {compared:?}");
    assert_eq!(compared.link_groups, 1, "the fixture's one hard-link group");

    // A copy checkout is the same tree too, without sharing inodes with the store.
    let copy = tmp.path().join("copy");
    checkout(&repo, &id[..12], &copy, &["--copy".as_ref()]);
    compare_trees(&src, &copy, true)
        .unwrap_or_else(|d| panic!("copy checkout differs:\n{}", d.join("\n")));
    let linked = std::fs::metadata(out.join("etc/hostname")).unwrap();
    let copied = std::fs::metadata(copy.join("etc/hostname")).unwrap();
    assert_ne!(linked.ino(), copied.ino());

    let fsck = run_ok(
        bin(),
        &["fsck".as_ref(), "--repo".as_ref(), repo.as_os_str()],
    );
    assert!(fsck.contains("all sound"), "{fsck}");
    testkit::make_writable(tmp.path());
}

#[test]
fn second_checkout_shares_every_file_with_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    make_fixture(&src);
    let repo = tmp.path().join("repo");
    let id = commit(&repo, &src, "1.0");
    // A second commit of a slightly changed tree reuses the unchanged objects.
    std::fs::write(src.join("etc/hostname"), b"changed\n").unwrap();
    let id2 = commit(&repo, &src, "1.1");
    assert_ne!(id, id2);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    checkout(&repo, &id, &a, &[]);
    checkout(&repo, &id2, &b, &[]);
    let big_a = std::fs::metadata(a.join("usr/lib/big.bin")).unwrap();
    let big_b = std::fs::metadata(b.join("usr/lib/big.bin")).unwrap();
    assert_eq!(
        big_a.ino(),
        big_b.ino(),
        "unchanged files are the same inode in both checkouts"
    );
    let host_a = std::fs::metadata(a.join("etc/hostname")).unwrap();
    let host_b = std::fs::metadata(b.join("etc/hostname")).unwrap();
    assert_ne!(host_a.ino(), host_b.ino(), "the changed file is not");
    // Identical files with identical metadata share one object, so one inode.
    let same_a = std::fs::metadata(a.join("usr/share/same-a")).unwrap();
    let same_b = std::fs::metadata(a.join("usr/share/same-b")).unwrap();
    let same_x = std::fs::metadata(a.join("usr/share/same-but-exec")).unwrap();
    assert_eq!(same_a.ino(), same_b.ino());
    assert_ne!(
        same_a.ino(),
        same_x.ino(),
        "a different mode is a different object"
    );
    testkit::make_writable(tmp.path());
}

#[test]
fn signed_commit_verifies_only_with_its_key() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let other = tmp.path().join("other");
    run_ok(
        bin(),
        &["keygen".as_ref(), "--out".as_ref(), keys.as_os_str()],
    );
    run_ok(
        bin(),
        &["keygen".as_ref(), "--out".as_ref(), other.as_os_str()],
    );
    let mode = std::fs::metadata(keys.join("berth.key")).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o600, "secret key is private");
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/os-release"), b"ID=berth\n").unwrap();
    let repo = tmp.path().join("repo");
    let id = run_ok(
        bin(),
        &[
            "commit".as_ref(),
            "--repo".as_ref(),
            repo.as_os_str(),
            "--tree".as_ref(),
            src.as_os_str(),
            "--version".as_ref(),
            "2".as_ref(),
            "--key".as_ref(),
            keys.join("berth.key").as_os_str(),
        ],
    );
    let id = id.trim();
    let show = run_ok(
        bin(),
        &[
            "show".as_ref(),
            "--repo".as_ref(),
            repo.as_os_str(),
            id.as_ref(),
            "--json".as_ref(),
        ],
    );
    assert!(show.contains("\"version\":\"2\""), "{show}");
    assert!(show.contains("\"signed_by\":[\""), "{show}");

    let good = tmp.path().join("good");
    checkout(
        &repo,
        id,
        &good,
        &["--verify".as_ref(), keys.join("berth.pub").as_os_str()],
    );
    assert!(good.join("etc/os-release").exists());

    let bad = tmp.path().join("bad");
    let out = testkit::run(
        bin(),
        &[
            "checkout".as_ref(),
            "--repo".as_ref(),
            repo.as_os_str(),
            id.as_ref(),
            bad.as_os_str(),
            "--verify".as_ref(),
            other.join("berth.pub").as_os_str(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not signed by any trusted key"), "{err}");
    assert!(
        !bad.exists(),
        "nothing is checked out when verification fails"
    );
}
