//! U-Boot's boot partition (`berth/boot/loader.conf` says `loader u-boot`; `--boot-dir`):
//! `berth update` writes a new kernel set's entry directory and, once the record names
//! the trial, the loader state that makes `boot.scr` count it; `mark-good` and
//! `rollback` write the state before the record; gc removes entries the record and the
//! state no longer name. A model of `boot.scr` (`common::esp`) and berth-init's dry run
//! check every boot: the kernel that runs is the booted deployment's own.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

mod common;

use std::fs;

use common::esp::Esp;
use format::loader::{LoaderState, Trial};
use format::record::DeploymentName;

fn short(c: &str) -> &str {
    &c[..16]
}

fn n(c: &str) -> DeploymentName {
    DeploymentName::new(&c.as_bytes()[..16]).unwrap()
}

fn state(d: &Esp) -> (DeploymentName, Option<DeploymentName>, Option<Trial>) {
    let s: LoaderState = d.uboot_state().unwrap();
    (s.default, s.previous, s.trial)
}

#[test]
fn a_new_kernel_is_an_entry_the_script_counts_then_the_default() {
    let d = Esp::uboot();
    let v1 = d.commit("1.0", "one", None);
    let v2 = d.commit("2.0", "two", None);
    let v3 = d.commit("3.0", "two", Some("quiet"));
    d.install(&v1);
    d.lab.booted(short(&v1), "default");
    assert_eq!(d.boot(), (short(&v1).to_owned(), "default".to_owned()));

    d.ok(&[
        "update",
        d.update(&v1, &v2).to_str().unwrap(),
        "--tries",
        "2",
    ]);
    assert_eq!(d.entries(), {
        let mut v = vec![short(&v1).to_owned(), short(&v2).to_owned()];
        v.sort();
        v
    });
    let e2 = d.part.join(short(&v2));
    assert_eq!(
        fs::read(e2.join("vmlinuz")).unwrap(),
        common::esp::fake_kernel("kernel two")
    );
    assert_eq!(fs::read_to_string(e2.join("set")).unwrap(), d.set_id(&v2));
    assert_eq!(
        fs::read_to_string(e2.join("cmdline")).unwrap(),
        "console=ttyAMA0 panic=-1 berth.root=PARTUUID=fedcba98-7654-3210-fedc-ba9876543210"
    );
    assert_eq!(
        state(&d),
        (
            n(&v1),
            None,
            Some(Trial {
                entry: n(&v2),
                tries_left: 2
            })
        )
    );
    assert_eq!(d.boot(), (short(&v2).to_owned(), "loader-trial".to_owned()));
    d.ok(&["mark-good"]);
    assert_eq!(state(&d), (n(&v2), Some(n(&v1)), None));
    assert!(!d.lab.sysroot.join("berth/boot/loader-trial").exists());
    assert_eq!(d.boot(), (short(&v2).to_owned(), "default".to_owned()));

    // New kernel arguments: another set, another entry; v1 leaves with the mark-good.
    d.ok(&["update", d.update(&v2, &v3).to_str().unwrap()]);
    assert_eq!(d.boot(), (short(&v3).to_owned(), "loader-trial".to_owned()));
    d.ok(&["mark-good"]);
    assert_eq!(state(&d), (n(&v3), Some(n(&v2)), None));
    assert_eq!(d.entries(), {
        let mut v = vec![short(&v2).to_owned(), short(&v3).to_owned()];
        v.sort();
        v
    });
    assert_eq!(
        fs::read_to_string(d.part.join(short(&v3)).join("cmdline")).unwrap(),
        "console=ttyAMA0 panic=-1 quiet berth.root=PARTUUID=fedcba98-7654-3210-fedc-ba9876543210"
    );
}

#[test]
fn a_trial_the_script_gives_up_is_dropped_and_collected() {
    let d = Esp::uboot();
    let v1 = d.commit("1.0", "one", None);
    let v2 = d.commit("2.0", "two", Some("rdinit=/nonexistent"));
    d.install(&v1);
    d.lab.booted(short(&v1), "default");
    d.ok(&[
        "update",
        d.update(&v1, &v2).to_str().unwrap(),
        "--tries",
        "2",
    ]);
    // Its kernel panics twice: the script takes both tries, berth-init never runs.
    for _ in 0..2 {
        assert_eq!(d.loader_choice().unwrap().0, short(&v2));
        d.loader_take_try();
    }
    assert_eq!(d.boot(), (short(&v1).to_owned(), "default".to_owned()));
    let s = d.lab.status();
    assert_eq!(s["last_rollback"]["from"], short(&v2));
    assert_eq!(s["last_rollback"]["reason"], "tries-exhausted");
    let gc: serde_json::Value = serde_json::from_str(&d.ok(&["gc", "--json"])).unwrap();
    assert_eq!(gc["boot_entries"], serde_json::json!([short(&v2)]));
    assert_eq!(d.entries(), [short(&v1).to_owned()]);
    assert_eq!(state(&d), (n(&v1), None, None));
}

#[test]
fn a_root_filesystem_update_leaves_the_partition_alone_until_mark_good() {
    let d = Esp::uboot();
    let v1 = d.commit("1.0", "one", None);
    let v2 = d.commit("2.0", "one", None);
    d.install(&v1);
    d.lab.booted(short(&v1), "default");
    let before = testkit::scan(&d.part);
    d.ok(&["update", d.update(&v1, &v2).to_str().unwrap()]);
    assert!(
        testkit::scan(&d.part) == before,
        "the boot partition changed"
    );
    assert_eq!(d.boot(), (short(&v2).to_owned(), "trial".to_owned()));
    d.ok(&["mark-good"]);
    assert_eq!(state(&d), (n(&v2), Some(n(&v1)), None));
    assert_eq!(
        fs::read(d.part.join(short(&v2)).join("vmlinuz")).unwrap(),
        common::esp::fake_kernel("kernel one")
    );
    assert_eq!(d.boot(), (short(&v2).to_owned(), "default".to_owned()));
}

#[test]
fn rollback_ends_the_trial_or_swaps_the_entries_in_the_state() {
    let d = Esp::uboot();
    let v1 = d.commit("1.0", "one", None);
    let v2 = d.commit("2.0", "two", None);
    d.install(&v1);
    d.lab.booted(short(&v1), "default");
    d.ok(&["update", d.update(&v1, &v2).to_str().unwrap()]);
    d.ok(&["rollback"]);
    assert_eq!(state(&d), (n(&v1), None, None));
    assert_eq!(d.entries(), [short(&v1).to_owned()]);
    assert_eq!(d.boot(), (short(&v1).to_owned(), "default".to_owned()));

    d.ok(&["update", d.update(&v1, &v2).to_str().unwrap()]);
    assert_eq!(d.boot(), (short(&v2).to_owned(), "loader-trial".to_owned()));
    d.ok(&["mark-good"]);
    d.ok(&["rollback"]);
    assert_eq!(state(&d), (n(&v1), Some(n(&v2)), None));
    assert_eq!(d.boot(), (short(&v1).to_owned(), "default".to_owned()));
}

#[test]
fn a_state_with_no_valid_copy_refuses_the_update_before_checkout_and_record() {
    let d = Esp::uboot();
    let v1 = d.commit("1.0", "one", None);
    let v2 = d.commit("2.0", "two", None);
    d.install(&v1);
    d.lab.booted(short(&v1), "default");
    for c in ["berth/a/state", "berth/b/state"] {
        let p = d.part.join(c);
        let mut b = fs::read(&p).unwrap();
        b[100] ^= 1;
        fs::write(&p, b).unwrap();
    }
    let record = d.lab.record_bytes();
    let out = d.lab.berth(&[
        "--boot-dir",
        d.part.to_str().unwrap(),
        "update",
        d.update(&v1, &v2).to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no valid loader state"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(d.lab.record_bytes(), record);
    assert!(!d.lab.sysroot.join("berth/deploy").join(short(&v2)).exists());
}

/// A rename cut short on FAT can leave an entry directory's short name without its long
/// name (`1FA6FF~1`, empty or holding an entry): the next tidy removes it. A file or a
/// directory of the firmware's with such a name (the root is shared) stays.
#[test]
fn entry_directories_whose_long_names_a_cut_lost_are_removed() {
    let d = Esp::uboot();
    let v1 = d.commit("1.0", "one", None);
    let v2 = d.commit("2.0", "two", None);
    d.install(&v1);
    d.lab.booted(short(&v1), "default");
    fs::create_dir(d.part.join("1FA6FF~1")).unwrap();
    fs::create_dir(d.part.join("D15695~1")).unwrap();
    fs::write(d.part.join("D15695~1/set"), "0123456789abcdef").unwrap();
    fs::write(d.part.join("CONFIG~1.TXT"), "the firmware's").unwrap();
    fs::create_dir(d.part.join("OVERLA~1")).unwrap();
    fs::write(d.part.join("OVERLA~1/x.dtbo"), "the firmware's").unwrap();
    d.ok(&["update", d.update(&v1, &v2).to_str().unwrap()]);
    let mut want = vec![
        "CONFIG~1.TXT".to_owned(),
        "OVERLA~1".to_owned(),
        short(&v1).to_owned(),
        short(&v2).to_owned(),
    ];
    want.sort();
    assert_eq!(d.entries(), want);
    assert_eq!(d.boot(), (short(&v2).to_owned(), "loader-trial".to_owned()));
}
