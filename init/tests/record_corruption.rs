//! Every single-bit flip and every truncation of the boot record, in one copy or both:
//! the shim still chooses a deployment that exists, or falls back, and never invents one.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use format::cmdline::Cmdline;
use format::record::{DeploymentName, RECORD_LEN, Record};
use init::disk::SysrootDisk;
use init::plan::{self, Bootable, Choice, Disk};
use sysroot::Sysroot;

fn name(s: &str) -> DeploymentName {
    DeploymentName::new(s.as_bytes()).unwrap()
}

fn deployment(root: &Path, n: &str) {
    let sbin = root.join("berth/deploy").join(n).join("sbin");
    fs::create_dir_all(&sbin).unwrap();
    fs::write(sbin.join("init"), b"#!/bin/true\n").unwrap();
    fs::set_permissions(sbin.join("init"), fs::Permissions::from_mode(0o755)).unwrap();
}

/// Plans a boot of the sysroot at `root` and checks the choice is sane.
fn check(root: &Path, what: &str) -> Choice {
    let sysroot = Sysroot::open(root.as_os_str().as_encoded_bytes()).unwrap();
    let (current, _) = sysroot.read_record();
    let mut disk = SysrootDisk {
        sysroot: &sysroot,
        init: b"/sbin/init",
        rescue: None,
    };
    let p = plan::plan(
        &Cmdline::default(),
        current.as_ref().map(|c| &c.0),
        &mut disk,
        true,
    );
    if let Choice::Deploy(d) = p.choice {
        assert_eq!(
            disk.probe(&d),
            Bootable::Yes,
            "{what}: chose {d:?}, which cannot boot"
        );
        assert!(
            ["a", "b"].contains(&d.as_str()),
            "{what}: chose {d:?}, which does not exist"
        );
    }
    p.choice
}

#[test]
fn bit_flips_and_truncations_never_choose_a_missing_deployment() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fs::create_dir_all(root.join("berth/boot")).unwrap();
    // On disk: a (default) and b (previous). The record also names trial "t", which
    // does not exist, so a flip that made the trial look bootable would be caught.
    deployment(root, "a");
    deployment(root, "b");
    let older = Record {
        generation: 6,
        default: Some(name("b")),
        previous: None,
        trial: None,
        tries_left: 0,
        last_rollback: None,
    };
    let newer = Record {
        generation: 7,
        default: Some(name("a")),
        previous: Some(name("b")),
        trial: Some(name("t")),
        tries_left: 2,
        last_rollback: None,
    };
    let good_a = newer.encode();
    let good_b = older.encode();
    let (ra, rb) = (
        root.join("berth/boot/record.a"),
        root.join("berth/boot/record.b"),
    );

    // Intact: the newer copy wins, the missing trial is dropped, a boots.
    fs::write(&ra, good_a).unwrap();
    fs::write(&rb, good_b).unwrap();
    assert_eq!(check(root, "intact"), Choice::Deploy(name("a")));

    let mut cases = 0;
    let mut variants: Vec<(String, Vec<u8>)> = Vec::new();
    for byte in 0..RECORD_LEN {
        for bit in 0..8 {
            let mut b = good_a;
            b[byte] ^= 1 << bit;
            variants.push((format!("flip byte {byte} bit {bit}"), b.to_vec()));
        }
    }
    for len in 0..RECORD_LEN {
        variants.push((format!("truncated to {len}"), good_a[..len].to_vec()));
    }
    for (what, bytes) in &variants {
        // One copy damaged, the other (older) intact: the older one is used.
        fs::write(&ra, bytes).unwrap();
        fs::write(&rb, good_b).unwrap();
        assert_eq!(
            check(root, what),
            Choice::Deploy(name("b")),
            "{what}: the intact older copy must win"
        );
        // Both copies damaged the same way: no valid record; two deployments on disk,
        // so no guess is made.
        fs::write(&rb, bytes).unwrap();
        assert_eq!(
            check(root, what),
            Choice::Reboot,
            "{what}: both copies damaged"
        );
        cases += 2;
    }
    assert_eq!(cases, 2 * (RECORD_LEN * 8 + RECORD_LEN));
}

#[test]
fn both_copies_damaged_with_one_deployment_boots_it() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fs::create_dir_all(root.join("berth/boot")).unwrap();
    deployment(root, "a");
    fs::write(root.join("berth/boot/record.a"), [0u8; 100]).unwrap();
    assert_eq!(
        check(root, "garbage, one deployment"),
        Choice::Deploy(name("a"))
    );
}
