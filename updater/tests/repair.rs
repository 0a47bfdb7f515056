//! `berth fsck --repair --source UPDATE`: only the corrupt or missing objects are
//! rewritten, from a signed update that carries them, and the deployments' files point
//! at the repaired objects again.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::Lab;

/// Every object file in the store: relative path → inode.
fn object_inodes(lab: &Lab) -> BTreeMap<PathBuf, u64> {
    let objects = lab.sysroot.join("berth/repo/objects");
    let mut out = BTreeMap::new();
    for d in fs::read_dir(&objects).unwrap().flatten() {
        for f in fs::read_dir(d.path()).unwrap().flatten() {
            let rel = f.path().strip_prefix(&objects).unwrap().to_path_buf();
            out.insert(rel, f.metadata().unwrap().ino());
        }
    }
    out
}

/// The store path of the file object at `path` inside deployment `name`: the object
/// with the same inode.
fn object_of(lab: &Lab, name: &str, path: &str) -> PathBuf {
    let ino = fs::metadata(lab.sysroot.join("berth/deploy").join(name).join(path))
        .unwrap()
        .ino();
    let objects = lab.sysroot.join("berth/repo/objects");
    object_inodes(lab)
        .into_iter()
        .find(|(_, i)| *i == ino)
        .map_or_else(
            || panic!("{path} is not linked to an object"),
            |(rel, _)| objects.join(rel),
        )
}

fn flip_byte(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x20;
    f.write_all_at(&b, at).unwrap();
}

/// The store path of deployment `name`'s root tree object.
fn root_tree_object(lab: &Lab, name: &str) -> PathBuf {
    let status = lab.status();
    let commit = status["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap()["commit"]
        .as_str()
        .unwrap()
        .to_owned();
    let show = testkit::run_ok(
        &testkit::bin("berth-image"),
        &[
            "show".as_ref(),
            "--repo".as_ref(),
            lab.sysroot.join("berth/repo").as_os_str(),
            commit.as_ref(),
            "--json".as_ref(),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&show).unwrap();
    let root = v["root"].as_str().unwrap();
    lab.sysroot
        .join("berth/repo/objects")
        .join(format!("{}/{}.tree", &root[..2], &root[2..]))
}

/// `berth fsck --repair --source SOURCE --json`, which must succeed.
fn repair(lab: &Lab, source: &Path) -> serde_json::Value {
    let out = lab.ok(&[
        "fsck",
        "--repair",
        "--source",
        source.to_str().unwrap(),
        "--json",
    ]);
    serde_json::from_str(&out).unwrap()
}

fn fsck_problems(lab: &Lab) -> String {
    let out = lab.berth(&["fsck"]);
    assert!(!out.status.success(), "fsck passed on a damaged store");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn repair_rewrites_only_the_bad_objects_from_an_update_that_carries_them() {
    let lab = Lab::new();
    let v1 = lab.commit(
        "1.0",
        &[
            ("usr/share/doc/kept", b"unchanged in 2.0\n"),
            ("usr/lib/a", b"a1"),
        ],
    );
    let v2 = lab.commit(
        "2.0",
        &[
            ("usr/share/doc/kept", b"unchanged in 2.0\n"),
            ("usr/lib/a", b"a2, changed in 2.0"),
        ],
    );
    lab.install(&v1, &[]);
    lab.booted(&v1[..16], "default");
    let delta = lab.delta(Some(&v1), &v2, "delta.berth", &[]);
    let full = lab.delta(None, &v2, "full.berth", &[]);
    lab.ok(&["update", delta.to_str().unwrap()]);
    let d2 = &v2[..16];
    let deployed = |p: &str| fs::read(lab.sysroot.join("berth/deploy").join(d2).join(p)).unwrap();
    assert_eq!(deployed("usr/lib/a"), b"a2, changed in 2.0");

    // A changed file, which the delta carries: corrupt in place (the deployment shares
    // the inode, so it reads the damage too).
    let a = object_of(&lab, d2, "usr/lib/a");
    flip_byte(&a, 1);
    assert_ne!(deployed("usr/lib/a"), b"a2, changed in 2.0");
    assert!(fsck_problems(&lab).contains("is corrupt"));
    let before = object_inodes(&lab);
    let r = repair(&lab, &delta);
    assert_eq!(
        (r["bad"].as_u64(), r["repaired"].as_u64()),
        (Some(1), Some(1)),
        "{r}"
    );
    assert!(r["relinked"].as_u64().unwrap() >= 1, "{r}");
    lab.ok(&["fsck"]);
    assert_eq!(deployed("usr/lib/a"), b"a2, changed in 2.0");
    // Only the bad object was rewritten: every other object keeps its inode.
    let after = object_inodes(&lab);
    let rel_a = a
        .strip_prefix(lab.sysroot.join("berth/repo/objects"))
        .unwrap();
    let changed: Vec<_> = before
        .iter()
        .filter(|(rel, ino)| after.get(*rel) != Some(ino))
        .map(|(rel, _)| rel.clone())
        .collect();
    assert_eq!(changed, [rel_a.to_path_buf()]);

    // A file the delta does not carry (unchanged since 1.0), and a missing tree: the
    // delta cannot make them, and says so; the full update can.
    let kept = object_of(&lab, d2, "usr/share/doc/kept");
    flip_byte(&kept, 0);
    let root_tree = root_tree_object(&lab, d2);
    fs::remove_file(&root_tree).unwrap();
    let out = lab.berth(&["fsck", "--repair", "--source", delta.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("problems remain after the repair"), "{err}");
    let r = repair(&lab, &full);
    assert_eq!(r["remaining"].as_array().unwrap().len(), 0, "{r}");
    lab.ok(&["fsck"]);
    assert_eq!(deployed("usr/share/doc/kept"), b"unchanged in 2.0\n");
    assert!(root_tree.exists());

    // A clean store needs nothing, and says so.
    let r = repair(&lab, &full);
    assert_eq!(r["bad"].as_u64(), Some(0));
}

#[test]
fn repair_refuses_an_untrusted_source_and_changes_nothing() {
    let lab = Lab::new();
    let v1 = lab.commit("1.0", &[("usr/lib/a", b"a1")]);
    lab.install(&v1, &[]);
    lab.booted(&v1[..16], "default");
    let a = object_of(&lab, &v1[..16], "usr/lib/a");
    flip_byte(&a, 0);
    let forged = lab.delta_signed(None, &v1, "forged.berth", &[], &lab.untrusted_key());
    lab.fails(
        &["fsck", "--repair", "--source", forged.to_str().unwrap()],
        "not signed by any trusted key",
    );
}
