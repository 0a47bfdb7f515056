//! `berth update` with files from `berth-image delta`: the whole cycle on a sysroot,
//! resuming, and every refusal leaving the sysroot exactly as it was.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own
#![allow(clippy::cast_possible_truncation)] // test fixtures: every size here is small

mod common;

use std::fs;
use std::process::Command;

use common::{Lab, berth};

/// A device running v1 (default), with v2 and v3 committed on the host. v2 changes
/// one file and adds a large one, so its update spans several parts.
fn lab() -> (Lab, String, String, String) {
    let lab = Lab::new();
    let v1 = lab.commit("1.0", &[("usr/share/doc/readme", b"version one\n")]);
    let big: Vec<u8> = (0..300_000u32).flat_map(u32::to_le_bytes).collect();
    let v2 = lab.commit(
        "1.1",
        &[
            ("usr/share/doc/readme", b"version two\n"),
            ("usr/lib/big.bin", &big),
        ],
    );
    // v3 changes a few bytes in the middle of the big file: a patch against v2's.
    let mut big3 = big.clone();
    big3[600_000..600_016].copy_from_slice(b"sixteen changed!");
    let v3 = lab.commit(
        "1.2",
        &[
            ("usr/share/doc/readme", b"version three\n"),
            ("usr/lib/big.bin", &big3),
        ],
    );
    lab.install(&v1, &[]);
    lab.booted(&v1[..16], "default");
    (lab, v1, v2, v3)
}

#[test]
fn update_mark_good_update_again_rollback() {
    let (lab, v1, v2, v3) = lab();
    // Local configuration made on v1 must carry forward.
    let upper_v1 = lab
        .sysroot
        .join("berth/state/etc")
        .join(&v1[..16])
        .join("upper");
    fs::create_dir_all(&upper_v1).unwrap();
    fs::write(upper_v1.join("hostname"), "my-device\n").unwrap();

    let u12 = lab.delta(Some(&v1), &v2, "v1-v2.berth", &["--part-size", "100000"]);
    let out = lab.ok(&["update", u12.to_str().unwrap(), "--progress", "none"]);
    assert!(
        out.contains(&format!("installed {} (version 1.1)", &v2[..16])),
        "{out}"
    );
    let s = lab.status();
    assert_eq!(
        (Lab::role(&s, "default"), Lab::role(&s, "trial")),
        (Some(v1[..16].to_owned()), Some(v2[..16].to_owned()))
    );
    assert_eq!(
        lab.next_boot(),
        (v2[..16].to_owned(), "trial".to_owned()),
        "berth-init boots the trial next"
    );
    let deployed = lab.sysroot.join("berth/deploy").join(&v2[..16]);
    assert_eq!(
        fs::read(deployed.join("usr/share/doc/readme")).unwrap(),
        b"version two\n"
    );
    assert_eq!(
        fs::read(deployed.join("usr/lib/big.bin")).unwrap().len(),
        1_200_000
    );
    assert_eq!(
        fs::read(
            lab.sysroot
                .join("berth/state/etc")
                .join(&v2[..16])
                .join("upper/hostname")
        )
        .unwrap(),
        b"my-device\n"
    );

    // Reboot into the trial; the health check marks it good.
    lab.booted(&v2[..16], "trial");
    lab.ok(&["mark-good"]);
    // Update again, v2 -> v3: only what changed travels.
    let u23 = lab.delta(Some(&v2), &v3, "v2-v3.berth", &[]);
    let u23_len = fs::metadata(&u23).unwrap().len();
    assert!(
        u23_len < 4096,
        "the changed 1.2 MB file travels as a small patch: {u23_len} bytes"
    );
    lab.booted(&v2[..16], "default");
    lab.ok(&["update", u23.to_str().unwrap()]);
    let s = lab.status();
    assert_eq!(
        (
            Lab::role(&s, "default"),
            Lab::role(&s, "previous"),
            Lab::role(&s, "trial")
        ),
        (
            Some(v2[..16].to_owned()),
            Some(v1[..16].to_owned()),
            Some(v3[..16].to_owned())
        )
    );
    let big3 = fs::read(
        lab.sysroot
            .join("berth/deploy")
            .join(&v3[..16])
            .join("usr/lib/big.bin"),
    )
    .unwrap();
    assert_eq!(
        (big3.len(), &big3[600_000..600_016]),
        (1_200_000, &b"sixteen changed!"[..]),
        "the patched file is exact"
    );
    // Changed our mind: roll back; v2 stays the default.
    lab.ok(&["rollback"]);
    assert_eq!(lab.next_boot(), (v2[..16].to_owned(), "default".to_owned()));
    assert!(lab.ok(&["fsck"]).contains("sound"));
}

#[test]
fn an_interrupted_update_resumes_where_it_stopped() {
    let (lab, v1, v2, _) = lab();
    let u = lab.delta(Some(&v1), &v2, "v1-v2.berth", &["--part-size", "100000"]);
    let run = |abort: Option<&str>| {
        let mut c = Command::new(berth());
        c.arg("--sysroot")
            .arg(&lab.sysroot)
            .arg("--boot-json")
            .arg(&lab.boot_json)
            .args(["update", u.to_str().unwrap(), "--progress", "json"]);
        if let Some(n) = abort {
            c.env("BERTH_TEST_ABORT_AFTER_PARTS", n);
        }
        c.output().unwrap()
    };
    let first = run(Some("2"));
    assert_eq!(first.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&first.stderr).contains("stopped after 2 parts"));
    assert_eq!(
        Lab::role(&lab.status(), "trial"),
        None,
        "no trial until the update completed"
    );
    let second = run(None);
    let out = String::from_utf8_lossy(&second.stdout);
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(
        out.contains("already done") && !out.contains(", 0 already done"),
        "{out}"
    );
    let parts_line = out.lines().last().unwrap().to_owned();
    assert!(
        parts_line.contains("2 already done"),
        "resumed after the 2 parts applied: {parts_line}"
    );
    // Progress for programs: one JSON object per applied part.
    let progress = String::from_utf8_lossy(&second.stderr);
    assert!(
        progress
            .lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "{progress}"
    );
    assert_eq!(Lab::role(&lab.status(), "trial"), Some(v2[..16].to_owned()));
}

#[test]
fn full_update_needs_no_base() {
    let (lab, _, v2, _) = lab();
    let full = lab.delta(None, &v2, "full.berth", &[]);
    lab.ok(&["update", full.to_str().unwrap()]);
    assert_eq!(lab.next_boot(), (v2[..16].to_owned(), "trial".to_owned()));
}

#[test]
fn hostile_updates_are_refused_and_change_nothing() {
    let (lab, v1, v2, v3) = lab();
    let good = lab.delta(Some(&v1), &v2, "good.berth", &["--part-size", "100000"]);
    let bytes = fs::read(&good).unwrap();
    let write = |name: &str, b: &[u8]| {
        let p = lab.tmp.path().join(name);
        fs::write(&p, b).unwrap();
        p.to_str().unwrap().to_owned()
    };
    // Where the parts start: head (12) + body + u32 + signatures.
    let body_len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    let sig_len =
        u32::from_le_bytes(bytes[12 + body_len..16 + body_len].try_into().unwrap()) as usize;
    let parts_at = 16 + body_len + sig_len;

    let mut t = bytes.clone();
    t[40] ^= 1;
    lab.fails(&["update", &write("tampered-superblock", &t)], "signature");
    let mut t = bytes.clone();
    t[parts_at + 10] ^= 1;
    lab.fails(&["update", &write("tampered-part", &t)], "damaged");
    lab.fails(
        &["update", &write("truncated", &bytes[..bytes.len() - 7])],
        "truncated or not this update's parts",
    );
    lab.fails(
        &["update", &write("cut-in-superblock", &bytes[..100])],
        "truncated",
    );
    lab.fails(
        &[
            "update",
            &write("garbage", b"not an update at all, clearly"),
        ],
        "update file",
    );

    // A delta from a commit the device does not have. (Signatures, rollback and
    // mix-and-match: tests/attacks.rs.)
    let from_v2 = lab.delta(Some(&v2), &v3, "from-v2.berth", &[]);
    lab.fails(
        &["update", from_v2.to_str().unwrap()],
        "which this device does not have",
    );
}

#[test]
fn gc_keeps_what_the_record_and_the_boot_use_and_nothing_else() {
    let (lab, v1, v2, v3) = lab();
    let (n1, n2, n3) = (
        v1[..16].to_owned(),
        v2[..16].to_owned(),
        v3[..16].to_owned(),
    );
    let u12 = lab.delta(Some(&v1), &v2, "u12.berth", &[]);
    lab.ok(&["update", u12.to_str().unwrap()]);
    lab.booted(&n2, "trial");
    lab.ok(&["mark-good"]);
    let u23 = lab.delta(Some(&v2), &v3, "u23.berth", &[]);
    lab.ok(&["update", u23.to_str().unwrap()]);
    lab.booted(&n3, "trial");
    lab.ok(&["mark-good"]);
    // Now: default v3, previous v2; v1 is referenced by nothing.
    let deploy = lab.sysroot.join("berth/deploy");
    assert!(deploy.join(&n1).exists());
    let v1_only = lab
        .sysroot
        .join("berth/deploy")
        .join(&n1)
        .join("usr/share/doc/readme");
    let v1_object_ino = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&v1_only).unwrap());
    let out: serde_json::Value = serde_json::from_str(&lab.ok(&["gc", "--json"])).unwrap();
    assert_eq!(out["deployments"], serde_json::json!([n1]), "{out}");
    assert!(
        out["objects"].as_u64().unwrap() >= 3,
        "v1's readme, its trees and its commit: {out}"
    );
    assert!(!deploy.join(&n1).exists());
    assert!(deploy.join(&n2).exists() && deploy.join(&n3).exists());
    // v1's readme object is gone from the store; nothing else is lost.
    let still_there = walk_inodes(&lab.sysroot.join("berth/repo/objects"));
    assert!(
        !still_there.contains(&v1_object_ino),
        "v1's object was collected"
    );
    assert!(lab.ok(&["fsck"]).contains("sound"));
    assert_eq!(lab.next_boot(), (n3.clone(), "default".to_owned()));
    // A second gc finds nothing.
    let again: serde_json::Value = serde_json::from_str(&lab.ok(&["gc", "--json"])).unwrap();
    assert_eq!(
        (
            again["deployments"].as_array().map(Vec::len),
            again["objects"].as_u64()
        ),
        (Some(0), Some(0))
    );
    // The booted deployment is kept even when the record does not name it: install v1
    // again as a trial, drop the trial, and say v1 is booted (berth.deployment=).
    let full_v1 = lab.delta(None, &v1, "full-v1.berth", &[]);
    lab.ok(&["update", full_v1.to_str().unwrap(), "--allow-downgrade"]);
    lab.ok(&["rollback"]);
    let s = lab.status();
    assert_eq!(Lab::role(&s, "trial"), None);
    lab.booted(&n1, "forced");
    let r: serde_json::Value = serde_json::from_str(&lab.ok(&["gc", "--json"])).unwrap();
    assert_eq!(
        r["deployments"].as_array().map(Vec::len),
        Some(0),
        "the booted v1 stays: {r}"
    );
    assert!(deploy.join(&n1).exists());
    // Once something else is booted, v1 goes.
    lab.booted(&n3, "default");
    let r: serde_json::Value = serde_json::from_str(&lab.ok(&["gc", "--json"])).unwrap();
    assert_eq!(r["deployments"], serde_json::json!([n1]), "{r}");
}

fn walk_inodes(dir: &std::path::Path) -> Vec<u64> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        let m = fs::symlink_metadata(e.path()).unwrap();
        if m.is_dir() {
            out.extend(walk_inodes(&e.path()));
        } else {
            out.push(std::os::unix::fs::MetadataExt::ino(&m));
        }
    }
    out
}

#[test]
fn a_signed_update_cannot_make_anything_but_its_objects() {
    let (lab, v1, v2, _) = lab();
    let good = fs::read(lab.delta(Some(&v1), &v2, "good.berth", &[])).unwrap();
    let write = |name: &str, b: &[u8]| {
        let p = lab.tmp.path().join(name);
        fs::write(&p, b).unwrap();
        p.to_str().unwrap().to_owned()
    };
    // Change the first file's first byte of content (after kind, head length, head):
    // operations do not name their objects, so the lie shows as a root tree not made.
    let lying = common::resign(&lab, &good, |plain| {
        assert_eq!(plain[0], format::ops::FILE);
        let head = u32::from_le_bytes(plain[1..5].try_into().unwrap()) as usize;
        plain[5 + head] ^= 0xff;
    });
    // Its objects are stored under their true names (nothing can be stored under a
    // wrong one), unreferenced: fsck passes, and gc takes the sysroot back to before.
    let before = lab.manifest();
    let out = lab.berth(&["update", &write("lying.berth", &lying)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("do not make the commit's root tree") && err.lines().count() == 1,
        "{err}"
    );
    lab.ok(&["fsck"]);
    lab.ok(&["gc"]);
    // (Empty fan-out directories of the object store may stay.)
    let fanout = |m: Vec<(Vec<u8>, u32, u32, Vec<u8>)>| -> Vec<_> {
        m.into_iter()
            .filter(|e| !(e.0.starts_with(b"berth/repo/objects/") && e.0.len() == 21))
            .collect()
    };
    let (before, after) = (fanout(before), fanout(lab.manifest()));
    let show = |m: &[(Vec<u8>, u32, u32, Vec<u8>)]| {
        m.iter()
            .map(|e| String::from_utf8_lossy(&e.0).into_owned())
            .collect::<Vec<_>>()
    };
    assert!(
        after == before,
        "gc removes what the lying update left: {:?} vs {:?}",
        show(&after)
            .into_iter()
            .filter(|p| !show(&before).contains(p))
            .collect::<Vec<_>>(),
        show(&before)
            .into_iter()
            .filter(|p| !show(&after).contains(p))
            .collect::<Vec<_>>()
    );
    // More decompressed bytes than the body says: the signed size is a hard cap.
    let bomb = common::resign(&lab, &good, |plain| {
        plain.extend(std::iter::repeat_n(0u8, 1 << 20));
    });
    let mut capped = bomb.clone();
    // Re-sign with the original (smaller) size: decompression must stop at it.
    let body_len = u32::from_le_bytes(bomb[8..12].try_into().unwrap()) as usize;
    let mut body = format::update::Body::decode(&bomb[12..12 + body_len]).unwrap();
    body.parts[0].size -= 1 << 20;
    let body_bytes = body.encode();
    let key = format::key::parse_secret(&fs::read(lab.keys.join("berth.key")).unwrap()).unwrap();
    let mut sigs = format::sig::Signatures::new();
    sigs.sign(&body_bytes, &key).unwrap();
    let sig_bytes = sigs.encode();
    let old_sig_len =
        u32::from_le_bytes(bomb[12 + body_len..16 + body_len].try_into().unwrap()) as usize;
    capped.splice(12..16 + body_len + old_sig_len, {
        let mut v = body_bytes.clone();
        v.extend_from_slice(&(sig_bytes.len() as u32).to_le_bytes());
        v.extend_from_slice(&sig_bytes);
        v
    });
    capped[8..12].copy_from_slice(&(body_bytes.len() as u32).to_le_bytes());
    lab.fails(
        &["update", &write("bomb.berth", &capped)],
        "more than its signed",
    );
    // And the untouched update still applies.
    lab.ok(&["update", &write("good.berth", &good)]);
}

#[test]
fn too_little_space_is_refused_with_the_numbers_before_writing() {
    if testkit::skip_unless_root("too_little_space_is_refused_with_the_numbers_before_writing") {
        return;
    }
    let (lab, v1, _, _) = lab();
    // 6 MB that compress poorly, on a 4 MiB sysroot.
    let noise = testkit::noise(6_000_000);
    let v4 = lab.commit("2.0", &[("usr/lib/noise.bin", &noise)]);
    let update = lab.delta(Some(&v1), &v4, "big.berth", &[]);
    let small = lab.tmp.path().join("small-sysroot");
    fs::create_dir(&small).unwrap();
    // A private mount namespace: the tmpfs disappears with the shell.
    let script = format!(
        "mount -t tmpfs -o size=4m tmpfs {small} && cp -a {src}/. {small}/ && \
         {berth} --sysroot {small} --boot-json {bj} update {u}; echo rc=$?; \
         {berth} --sysroot {small} --boot-json {bj} status --json",
        small = small.display(),
        src = lab.sysroot.display(),
        berth = berth().display(),
        bj = lab.boot_json.display(),
        u = update.display(),
    );
    let out = Command::new("unshare")
        .args(["--mount", "sh", "-c", &script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("rc=1"), "{stdout}{stderr}");
    assert!(
        stderr.contains("not enough free space: the update needs") && stderr.contains("are free"),
        "{stderr}"
    );
    let status: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(Lab::role(&status, "trial"), None, "nothing was installed");
}

#[test]
fn a_patch_whose_base_the_device_lost_is_refused() {
    let (lab, v1, v2, v3) = lab();
    let good = lab.delta(Some(&v1), &v2, "good.berth", &[]);
    let u23 = lab.delta(Some(&v2), &v3, "patch.berth", &[]);
    lab.ok(&["update", good.to_str().unwrap()]);
    let base = fs::read_dir(lab.sysroot.join("berth/repo/objects"))
        .unwrap()
        .flat_map(|e| fs::read_dir(e.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .find(|p| fs::metadata(p).is_ok_and(|m| m.len() == 1_200_000))
        .expect("v2's big.bin object");
    fs::remove_file(&base).unwrap();
    lab.booted(&v2[..16], "trial");
    lab.ok(&["mark-good"]);
    lab.booted(&v2[..16], "default");
    lab.fails(&["update", u23.to_str().unwrap()], "cannot be read");
}

#[test]
fn the_split_form_applies_and_its_parts_are_checked() {
    let (lab, v1, v2, _) = lab();
    let dir = lab.delta(
        Some(&v1),
        &v2,
        "v1-v2.d",
        &["--split", "--part-size", "100000"],
    );
    let mut parts: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    parts.sort();
    assert_eq!(parts.first().map(String::as_str), Some("part-00000"));
    assert_eq!(parts.last().map(String::as_str), Some("superblock"));
    assert!(
        parts.len() >= 3,
        "at least two parts and the superblock: {parts:?}"
    );
    // A damaged part file, then a missing one: refused, nothing changes.
    let p1 = dir.join("part-00001");
    let good = fs::read(&p1).unwrap();
    let mut bad = good.clone();
    bad[3] ^= 1;
    fs::write(&p1, &bad).unwrap();
    lab.fails(&["update", dir.to_str().unwrap()], "damaged");
    fs::remove_file(&p1).unwrap();
    lab.fails(&["update", dir.to_str().unwrap()], "part-00001");
    fs::write(&p1, &good).unwrap();
    let out = lab.ok(&["update", dir.to_str().unwrap()]);
    assert!(out.contains(&format!("installed {}", &v2[..16])), "{out}");
    assert_eq!(lab.next_boot(), (v2[..16].to_owned(), "trial".to_owned()));
}

/// `berth update` run as PID 1 (a container, an early-boot service) with a staging
/// directory an earlier boot's PID 1 left: PIDs do not survive a reboot, so the old
/// directory neither blocks the update nor stays behind.
#[test]
fn staging_left_by_an_earlier_boots_pid_1_does_not_block_an_update_as_pid_1() {
    // Root: a PID namespace, so berth runs as its PID 1.
    if testkit::skip_unless_root(
        "staging_left_by_an_earlier_boots_pid_1_does_not_block_an_update_as_pid_1",
    ) {
        return;
    }
    let (lab, _, v2, _) = lab();
    let full = lab.delta(None, &v2, "full.berth", &[]);
    let tmp = lab.sysroot.join("berth/repo/tmp");
    for name in ["txn-1-0", "txn-1-1"] {
        fs::create_dir(tmp.join(name)).unwrap();
        fs::write(tmp.join(name).join("o1"), b"half-written").unwrap();
    }
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(berth())
        .arg("--sysroot")
        .arg(&lab.sysroot)
        .arg("--boot-json")
        .arg(&lab.boot_json)
        .args(["update", full.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "berth update as PID 1: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lab.next_boot(), (v2[..16].to_owned(), "trial".to_owned()));
    let left: Vec<_> = fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with("txn-"))
        .collect();
    assert!(
        left.is_empty(),
        "staging left in {}: {left:?}",
        tmp.display()
    );
}

/// The store warns through `log` when it cannot clean up a stale staging directory;
/// berth installs a logger, so the warning reaches the user as berth's own (and the
/// update still goes through).
#[test]
fn the_store_s_warnings_reach_the_user() {
    let (lab, _, v2, _) = lab();
    let full = lab.delta(None, &v2, "full.berth", &[]);
    // An old-style staging directory (no boot id: stale) holding a directory, which the
    // store's clean-up removes as a file and cannot.
    let stale = lab.sysroot.join("berth/repo/tmp/txn-1-0");
    fs::create_dir_all(stale.join("not-a-staged-file")).unwrap();
    let out = lab.berth(&["update", full.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "berth: warning: {}: cannot remove staged file",
            stale.join("not-a-staged-file").display()
        )),
        "{err}"
    );
    assert!(err.contains("cannot remove staging directory"), "{err}");
    assert_eq!(lab.next_boot(), (v2[..16].to_owned(), "trial".to_owned()));
}

/// `--download-only` verifies the update and puts its objects in the store, and stops:
/// no deployment, the same record. The same update without it installs, applying
/// nothing again.
#[test]
fn download_only_then_install_applies_nothing_twice() {
    let (lab, v1, v2, _) = lab();
    let u12 = lab.delta(Some(&v1), &v2, "v1-v2.berth", &["--part-size", "100000"]);
    let record = lab.record_bytes();
    let out = lab.ok(&["update", u12.to_str().unwrap(), "--download-only"]);
    assert!(
        out.contains(&format!(
            "downloaded {} (version 1.1) into the store, not installed",
            &v2[..16]
        )),
        "{out}"
    );
    let parts: usize = out
        .split(" parts applied")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(parts > 1, "{out}");
    assert_eq!(lab.record_bytes(), record, "the record changed");
    assert!(!lab.sysroot.join("berth/deploy").join(&v2[..16]).exists());
    assert_eq!(lab.next_boot(), (v1[..16].to_owned(), "default".to_owned()));

    // A bad update is still refused in this mode, before anything is stored.
    let forged = lab.delta_signed(Some(&v1), &v2, "forged.berth", &[], &lab.untrusted_key());
    lab.fails(
        &["update", forged.to_str().unwrap(), "--download-only"],
        "keys trusted by deployment",
    );

    let out = lab.ok(&["update", u12.to_str().unwrap()]);
    assert!(
        out.contains(&format!("installed {} (version 1.1)", &v2[..16]))
            && out.contains(&format!("(0 parts applied, {parts} already done)")),
        "{out}"
    );
    assert_eq!(lab.next_boot(), (v2[..16].to_owned(), "trial".to_owned()));
}
