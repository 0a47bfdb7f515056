//! Staging directories left behind never block a transaction, and the next transaction
//! collects them: PIDs do not survive a reboot, so a directory named after a PID that is
//! alive again (PID 1 in a container, this process) is no proof of a live transaction.
//!
//! One test in this file: the transaction counter is per process, so this test knows
//! that its first transaction would use the counter 0.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

use std::fs;
use std::path::Path;
use std::process::Command;

use format::{DirMeta, FileHeader, FileKind, Xattrs};
use store::build::MemDir;
use store::{Repo, Txn};

/// The first 16 hex digits of this boot's id, as staging names carry it
/// (`docs/FORMAT.md`, "Object store layout").
fn boot_tag() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(16)
        .collect()
}

/// Makes `tmp/<name>/` holding one staged file.
fn plant(repo: &Path, name: &str) {
    let dir = repo.join("tmp").join(name);
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("o1"), b"half-written object").unwrap();
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn stale_staging_never_blocks_a_transaction_and_is_collected() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("repo");
    let repo = Repo::create(&path).unwrap();
    let me = std::process::id();
    let boot = boot_tag();
    assert_eq!(boot.len(), 16, "boot id {boot:?}");
    let other_boot = if boot.starts_with('0') {
        "1".repeat(16)
    } else {
        "0".repeat(16)
    };
    // A process of this boot that is alive while the transaction runs: its staging is
    // kept.
    let mut live = Command::new("sleep").arg("60").spawn().unwrap();
    // A process of this boot that has exited.
    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let stale = [
        // The old naming, from an earlier boot: PID 1 and this PID are alive again now.
        "txn-1-0".to_owned(),
        format!("txn-{me}-0"),
        // The current naming, from another boot, with PIDs alive in this one.
        format!("txn-{other_boot}-1-0"),
        format!("txn-{other_boot}-{me}-0"),
        // This boot, this PID, but not a transaction of this process (the PID was
        // reused within the boot); and this boot, a PID that has exited.
        format!("txn-{boot}-{me}-0"),
        format!("txn-{boot}-{dead_pid}-3"),
        // Not parsable as either naming.
        "txn-garbage".to_owned(),
    ];
    for name in &stale {
        plant(&path, name);
    }
    let kept = [
        format!("txn-{boot}-{}-0", live.id()),
        // Not a staging directory: an interrupted download is kept.
        "download-0123456789abcdef-full".to_owned(),
    ];
    for name in &kept {
        plant(&path, name);
    }

    let (uid, gid) = (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    );
    let mut txn = Txn::begin(&repo).expect("a stale staging directory blocked the transaction");
    let content = b"hello\n";
    let header = FileHeader {
        kind: FileKind::Regular,
        mode: 0o644,
        uid,
        gid,
        rdev_major: 0,
        rdev_minor: 0,
        size: content.len() as u64,
        xattrs: Xattrs::new(),
    };
    let file = txn
        .write_file(&header, &mut content.as_slice(), Path::new("mem"))
        .unwrap();
    let meta = DirMeta {
        mode: 0o755,
        uid,
        gid,
        xattrs: Xattrs::new(),
    };
    let mut root = MemDir::new(meta);
    root.add_file(&[b"hello".as_slice()], file).unwrap();
    let tree_id = root.write(&mut txn).unwrap();
    // A second transaction of this process, started while the first is open, keeps the
    // first one's staging.
    let second = Txn::begin(&repo).unwrap();
    drop(second);
    txn.commit().unwrap();
    assert!(repo.has(&tree_id, format::ObjectKind::Tree).unwrap());

    let mut want: Vec<String> = kept.to_vec();
    want.sort();
    assert_eq!(
        listing(&path.join("tmp")),
        want,
        "stale staging not collected"
    );

    live.kill().unwrap();
    live.wait().unwrap();
}
