//! Rotating the signing key (docs/KEYS.md). Release 2 ships a new public key and drops
//! the old one; it is accepted under the old key. While it is only a trial, the device
//! still trusts the committed default's keys: an update signed by the new key alone is
//! refused. Once it is committed, updates and channel pointers signed by the new key
//! are accepted and those signed only by the dropped key are refused. During the move, a
//! publisher signs with both keys (`--key` twice), which devices on either side accept.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use common::Lab;
use testkit::{bin, run_ok};

/// A release whose only trusted key is `public` (and `extra` files).
fn release(lab: &Lab, version: &str, public: &Path) -> String {
    let tree = lab.tmp.path().join(format!("tree-{version}"));
    for d in [
        "etc",
        "var",
        "run",
        "dev",
        "proc",
        "sys",
        "sysroot",
        "sbin",
        "usr/lib/berth/keys",
    ] {
        fs::create_dir_all(tree.join(d)).unwrap();
    }
    fs::write(tree.join("etc/release"), version).unwrap();
    fs::write(tree.join("sbin/init"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(tree.join("sbin/init"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::copy(public, tree.join("usr/lib/berth/keys/release.pub")).unwrap();
    run_ok(
        &bin("berth-image"),
        &[
            "commit".as_ref(),
            "--repo".as_ref(),
            lab.repo.as_os_str(),
            "--tree".as_ref(),
            tree.as_os_str(),
            "--version".as_ref(),
            version.as_ref(),
        ],
    )
    .trim()
    .to_owned()
}

fn keygen(lab: &Lab, name: &str) -> PathBuf {
    let dir = lab.tmp.path().join(name);
    run_ok(
        &bin("berth-image"),
        &["keygen".as_ref(), "--out".as_ref(), dir.as_os_str()],
    );
    dir
}

/// `berth update FILE` fails with one line containing `needle` and changes nothing.
fn refused(lab: &Lab, file: &Path, needle: &str) {
    lab.fails(&["update", file.to_str().unwrap()], needle);
}

#[test]
fn a_new_key_is_trusted_once_the_release_that_ships_it_is_committed() {
    let lab = Lab::new();
    let (k1, k2) = (lab.keys.clone(), keygen(&lab, "k2"));
    let v1 = release(&lab, "1.0", &k1.join("berth.pub"));
    let v2 = release(&lab, "2.0", &k2.join("berth.pub"));
    let v3 = release(&lab, "3.0", &k2.join("berth.pub"));
    lab.install(&v1, &[]);
    lab.booted(&v1[..16], "default");

    // Release 2, signed by the key release 1 trusts.
    let u12 = lab.delta_signed(Some(&v1), &v2, "u12", &[], &k1.join("berth.key"));
    lab.ok(&["update", u12.to_str().unwrap()]);
    lab.booted(&v2[..16], "trial");

    // A trial does not change who may sign: the default (v1) trusts k1 only.
    let by_k2 = lab.delta_signed(Some(&v2), &v3, "u23-k2", &[], &k2.join("berth.key"));
    refused(&lab, &by_k2, &format!("deployment {}", &v1[..16]));

    lab.ok(&["mark-good"]);
    // Committed: k2 is trusted, k1 (dropped by release 2) is not.
    let by_k1 = lab.delta_signed(Some(&v2), &v3, "u23-k1", &[], &k1.join("berth.key"));
    refused(&lab, &by_k1, "not signed by any trusted key");
    lab.ok(&["update", by_k2.to_str().unwrap()]);
    let s = lab.status();
    assert_eq!(Lab::role(&s, "trial").as_deref(), Some(&v3[..16]));
}

#[test]
fn a_channel_signed_with_both_keys_serves_devices_on_either_side_of_the_move() {
    let lab = Lab::new();
    let (k1, k2) = (lab.keys.clone(), keygen(&lab, "k2"));
    let v1 = release(&lab, "1.0", &k1.join("berth.pub"));
    let v2 = release(&lab, "2.0", &k2.join("berth.pub"));
    let v3 = release(&lab, "3.0", &k2.join("berth.pub"));
    let www = lab.tmp.path().join("www");
    let publish = |keys: &[&Path]| {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "publish".as_ref(),
            "--repo".as_ref(),
            lab.repo.as_os_str(),
            "--to".as_ref(),
            www.as_os_str(),
            "--channel".as_ref(),
            "stable".as_ref(),
            "--commit".as_ref(),
            v3.as_ref(),
            "--from".as_ref(),
            v1.as_ref(),
            "--from".as_ref(),
            v2.as_ref(),
        ];
        for k in keys {
            args.extend(["--key".as_ref(), k.as_os_str()]);
        }
        run_ok(&bin("berth-image"), &args);
    };
    // Two devices: one still on release 1 (trusts k1), one that committed 2 (trusts k2).
    lab.install(&v1, &[]);
    let on_v1 = lab.tmp.path().join("sysroot-v1");
    fs::rename(&lab.sysroot, &on_v1).unwrap();
    lab.install(&v2, &[]);
    let on_v2 = lab.sysroot.clone();
    let server = testkit::http::Server::start(&www);
    let url = server.url();
    let update = |sysroot: &Path, booted: &str| {
        lab.booted(booted, "default");
        std::process::Command::new(common::berth())
            .arg("--sysroot")
            .arg(sysroot)
            .arg("--boot-json")
            .arg(&lab.boot_json)
            .args(["update", &url, "--channel", "stable"])
            .output()
            .unwrap()
    };

    // Signed by the new key alone: the device still on release 1 refuses the pointer.
    publish(&[&k2.join("berth.key")]);
    let out = update(&on_v1, &v1[..16]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("not signed by any trusted key"), "{err}");

    // Signed by both: either device takes release 3.
    fs::remove_dir_all(&www).unwrap();
    publish(&[&k1.join("berth.key"), &k2.join("berth.key")]);
    for (sysroot, booted) in [(&on_v1, &v1[..16]), (&on_v2, &v2[..16])] {
        let out = update(sysroot, booted);
        assert!(
            out.status.success(),
            "{}: {}",
            sysroot.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&v3[..16]),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
