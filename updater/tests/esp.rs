//! The boot partition of a systemd-boot board (`berth/boot/loader.conf`, `--boot-dir`):
//! `berth update` copies a new kernel set and writes a counted entry, `mark-good`
//! blesses it, `rollback` removes or reorders entries, `gc` removes what the record no
//! longer needs; a rootfs-only update leaves the partition alone. After every step, the
//! entry systemd-boot would boot (its order: `format::bls`) and berth-init's choice
//! under that entry's `berth.entry=` agree, and the kernel that runs is the set of the
//! deployment that boots.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

mod common;

use std::fs;
use std::path::Path;

use common::Lab;
use common::esp::{Esp, set_files};
use format::bls::{self, EntryName};
use serde_json::Value;
use testkit::run_ok;

fn short(c: &str) -> &str {
    &c[..16]
}

#[test]
fn a_new_kernel_is_a_counted_entry_then_the_default_and_gc_keeps_only_what_boots() {
    let d = Esp::new();
    let v1 = d.commit("1.0", "one", None);
    let v2 = d.commit("2.0", "two", None);
    let v3 = d.commit("3.0", "two", Some("quiet"));
    d.install(&v1);
    d.lab.booted(short(&v1), "default");
    assert_eq!(d.boot(), (short(&v1).to_owned(), "default".to_owned()));

    let up = d.update(&v1, &v2);
    d.ok(&["update", up.to_str().unwrap(), "--tries", "2"]);
    assert_eq!(
        d.entries(),
        [
            format!("berth-2-{}.conf", short(&v1)),
            format!("berth-3-{}+2.conf", short(&v2))
        ]
    );
    let (s1, s2) = (d.set_dir(&v1), d.set_dir(&v2));
    assert_eq!(
        fs::read(d.part.join(&s2).join("vmlinuz")).unwrap(),
        common::esp::fake_kernel("kernel two")
    );
    assert_eq!(d.marker().as_deref(), Some(short(&v2)));
    let text = fs::read_to_string(
        d.part
            .join(bls::ENTRIES_DIR)
            .join(format!("berth-3-{}+2.conf", short(&v2))),
    )
    .unwrap();
    assert!(
        text.contains(&format!(
            "options console=ttyS0 panic=-1 berth.root=PARTUUID=fedcba98-7654-3210-fedc-ba9876543210 berth.entry={}",
            short(&v2)
        )),
        "{text}"
    );
    // The loader boots the trial's kernel; berth-init does not count it again.
    assert_eq!(d.boot(), (short(&v2).to_owned(), "loader-trial".to_owned()));
    d.ok(&["mark-good"]);
    assert_eq!(
        d.entries(),
        [
            format!("berth-2-{}.conf", short(&v1)),
            format!("berth-3-{}.conf", short(&v2))
        ]
    );
    assert_eq!(d.marker(), None);
    assert_eq!(d.boot(), (short(&v2).to_owned(), "default".to_owned()));
    // mark-good again is a no-op.
    d.ok(&["mark-good"]);

    // Changed kernel arguments are a new set too.
    let up = d.update(&v2, &v3);
    d.ok(&["update", up.to_str().unwrap()]);
    let s3 = d.set_dir(&v3);
    assert_ne!(s3, s2);
    assert_eq!(d.boot(), (short(&v3).to_owned(), "loader-trial".to_owned()));
    d.ok(&["mark-good"]);
    // v1 is no longer in the record: its entry went with the mark-good, its set with gc.
    assert_eq!(
        d.entries(),
        [
            format!("berth-3-{}.conf", short(&v2)),
            format!("berth-4-{}.conf", short(&v3))
        ]
    );
    assert_eq!(d.sets(), {
        let mut v = vec![s1.clone(), s2.clone(), s3.clone()];
        v.sort();
        v
    });
    let gc: Value = serde_json::from_str(&d.ok(&["gc", "--json"])).unwrap();
    assert_eq!(gc["kernel_sets"], serde_json::json!([s1]));
    let mut want = vec![s2, s3];
    want.sort();
    assert_eq!(d.sets(), want);
    assert_eq!(d.boot(), (short(&v3).to_owned(), "default".to_owned()));
}

#[test]
fn a_trial_the_loader_gives_up_boots_the_default_and_gc_removes_its_entry() {
    let d = Esp::new();
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
    // Its kernel panics twice (the loader counts), then the default's entry boots.
    for _ in 0..2 {
        let (entry, _) = d.loader_boots();
        assert_eq!(entry, short(&v2));
        let names = d.entries();
        let first = bls::parse_dir(names.iter().map(String::as_str))[0];
        let (left, done) = first.counter.unwrap();
        let next = EntryName {
            counter: Some((left - 1, Some(done.unwrap_or(0) + 1))),
            ..first
        };
        let e = d.part.join(bls::ENTRIES_DIR);
        fs::rename(e.join(first.file_name()), e.join(next.file_name())).unwrap();
    }
    assert_eq!(d.boot(), (short(&v1).to_owned(), "default".to_owned()));
    let s = d.lab.status();
    assert_eq!(s["last_rollback"]["from"], short(&v2));
    assert_eq!(Lab::role(&s, "trial"), None);
    let gc: Value = serde_json::from_str(&d.ok(&["gc", "--json"])).unwrap();
    assert_eq!(
        gc["boot_entries"],
        serde_json::json!([format!("berth-3-{}+0-2.conf", short(&v2))])
    );
    assert_eq!(d.entries(), [format!("berth-2-{}.conf", short(&v1))]);
    assert_eq!(d.sets(), [d.set_dir(&v1)]);
}

#[test]
fn a_root_filesystem_update_leaves_the_partition_alone_until_mark_good() {
    let d = Esp::new();
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
    assert_eq!(d.marker(), None);
    // The default's entry boots it, and berth-init counts its tries.
    assert_eq!(d.boot(), (short(&v2).to_owned(), "trial".to_owned()));
    d.ok(&["mark-good"]);
    // Now it needs an entry of its own (the same set), newest first.
    assert_eq!(
        d.entries(),
        [
            format!("berth-2-{}.conf", short(&v1)),
            format!("berth-3-{}.conf", short(&v2))
        ]
    );
    assert_eq!(d.sets(), [d.set_dir(&v1)]);
    assert_eq!(d.boot(), (short(&v2).to_owned(), "default".to_owned()));
}

#[test]
fn rollback_drops_the_trial_entry_or_puts_the_previous_entry_first() {
    let d = Esp::new();
    let v1 = d.commit("1.0", "one", None);
    let v2 = d.commit("2.0", "two", None);
    d.install(&v1);
    d.lab.booted(short(&v1), "default");
    d.ok(&["update", d.update(&v1, &v2).to_str().unwrap()]);
    d.ok(&["rollback"]);
    assert_eq!(d.entries(), [format!("berth-2-{}.conf", short(&v1))]);
    assert_eq!(d.marker(), None);
    assert_eq!(d.boot(), (short(&v1).to_owned(), "default".to_owned()));

    d.ok(&["update", d.update(&v1, &v2).to_str().unwrap()]);
    assert_eq!(d.boot(), (short(&v2).to_owned(), "loader-trial".to_owned()));
    d.ok(&["mark-good"]);
    // No trial: the previous deployment becomes the default, with the newest entry.
    d.ok(&["rollback"]);
    assert_eq!(
        d.entries(),
        [
            format!("berth-3-{}.conf", short(&v2)),
            format!("berth-4-{}.conf", short(&v1))
        ]
    );
    assert_eq!(d.boot(), (short(&v1).to_owned(), "default".to_owned()));
}

#[test]
fn a_damaged_loader_configuration_or_a_kernelless_commit_changes_nothing() {
    let d = Esp::new();
    let v1 = d.commit("1.0", "one", None);
    let v2 = d.commit("2.0", "two", None);
    let bare = d.lab.commit("2.1", &[]);
    d.install(&v1);
    d.lab.booted(short(&v1), "default");
    let conf = d.lab.sysroot.join("berth/boot/loader.conf");
    let good = fs::read(&conf).unwrap();
    fs::write(&conf, b"loader grub\n").unwrap();
    let esp_before = testkit::scan(&d.part);
    let record = d.lab.record_bytes();
    d.fails(
        &["update", d.update(&v1, &v2).to_str().unwrap()],
        "loader.conf",
    );
    assert_eq!(d.lab.record_bytes(), record);
    assert!(testkit::scan(&d.part) == esp_before);
    fs::write(&conf, &good).unwrap();
    // Refused once its objects are in the store (gc removes them), before a deployment
    // is checked out or the record or the boot partition touched.
    let out = d.lab.berth(&[
        "--boot-dir",
        d.part.to_str().unwrap(),
        "update",
        d.update(&v1, &bare).to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("carries no kernel set"), "{err}");
    assert_eq!(d.lab.record_bytes(), record);
    assert!(testkit::scan(&d.part) == esp_before);
    assert!(
        !d.lab
            .sysroot
            .join("berth/deploy")
            .join(short(&bare))
            .exists()
    );
}

/// Runs `berth` with the ESP on a 256 KiB tmpfs, in a mount namespace of its own.
fn with_small_esp(d: &Esp, args: &[&str]) -> std::process::Output {
    let script = format!(
        "mount -t tmpfs -o size=256k berth-test-esp {esp} && cp -a {esp}.copy/. {esp}/ && exec \"$@\"",
        esp = d.part.display()
    );
    std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script, "sh"])
        .arg(common::berth())
        .arg("--sysroot")
        .arg(&d.lab.sysroot)
        .arg("--boot-json")
        .arg(&d.lab.boot_json)
        .arg("--boot-dir")
        .arg(&d.part)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_kernel_set_that_does_not_fit_is_refused_before_a_deployment_or_the_record_is_written() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let d = Esp::new();
    let v1 = d.commit("1.0", "one", None);
    d.install(&v1);
    d.lab.booted(short(&v1), "default");
    // A kernel larger than the partition's free space.
    let mut files = set_files("big", None);
    files[0].1 = common::esp::fake_kernel("big");
    files[0].1.resize(512 << 10, 7);
    let extra: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_slice()))
        .collect();
    let v2 = d.lab.commit("2.0", &extra);
    run_ok(
        Path::new("cp"),
        &[
            "-a".as_ref(),
            d.part.as_os_str(),
            format!("{}.copy", d.part.display()).as_ref(),
        ],
    );
    let record = d.lab.record_bytes();
    let up = d.update(&v1, &v2);
    let out = with_small_esp(&d, &["update", up.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("not enough room on the boot partition"),
        "{err}"
    );
    assert!(
        err.contains("bytes, ") && err.contains(" are free"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(d.lab.record_bytes(), record);
    assert!(!d.lab.sysroot.join("berth/deploy").join(short(&v2)).exists());
}

#[test]
fn a_kernel_the_loader_cannot_start_is_refused_before_checkout() {
    let d = Esp::new();
    let v1 = d.commit("1.0", "one", None);
    d.install(&v1);
    d.lab.booted(short(&v1), "default");
    // An ELF vmlinux where systemd-boot needs an EFI executable.
    let mut files = set_files("elf", None);
    files[0].1 = b"\x7fELF\x02\x01\x01 not an EFI executable".to_vec();
    let extra: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_slice()))
        .collect();
    let v2 = d.lab.commit("2.0", &extra);
    let esp_before = testkit::scan(&d.part);
    let record = d.lab.record_bytes();
    let out = d.lab.berth(&[
        "--boot-dir",
        d.part.to_str().unwrap(),
        "update",
        d.update(&v1, &v2).to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("is not an EFI executable"), "{err}");
    assert_eq!(d.lab.record_bytes(), record);
    assert!(testkit::scan(&d.part) == esp_before);
    assert!(!d.lab.sysroot.join("berth/deploy").join(short(&v2)).exists());
}

/// A rename cut short on FAT can leave the new name's short entry without its long name:
/// an entry shows as `BERTH-~3.CON` (systemd-boot reads only `*.conf`), a kernel set
/// directory as `C4A1B2~1`. Found by `qemu/tests/powercut.rs`: the next command removes
/// them (entries with the record's next write, directories with gc), as it removes an
/// inert or empty entry; a file of another loader's stays.
#[test]
fn short_names_whose_long_names_a_cut_lost_are_removed() {
    let d = Esp::new();
    let v1 = d.commit("1.0", "one", None);
    let v2 = d.commit("2.0", "two", None);
    d.install(&v1);
    d.lab.booted(short(&v1), "default");
    let entries = d.part.join(bls::ENTRIES_DIR);
    fs::write(entries.join("BERTH-~3.CON"), "").unwrap();
    fs::write(entries.join("OTHER-~1.CON"), "title another loader's\n").unwrap();
    fs::create_dir(d.part.join("berth/C4A1B2~1")).unwrap();
    d.ok(&["update", d.update(&v1, &v2).to_str().unwrap()]);
    assert!(!entries.join("BERTH-~3.CON").exists());
    assert!(entries.join("OTHER-~1.CON").exists());
    assert_eq!(d.boot(), (short(&v2).to_owned(), "loader-trial".to_owned()));
    d.ok(&["mark-good"]);
    let gc: Value = serde_json::from_str(&d.ok(&["gc", "--json"])).unwrap();
    assert_eq!(gc["kernel_sets"], serde_json::json!(["berth/C4A1B2~1"]));
    let mut want = vec![d.set_dir(&v1), d.set_dir(&v2)];
    want.sort();
    assert_eq!(d.sets(), want);
    assert_eq!(d.boot(), (short(&v2).to_owned(), "default".to_owned()));
}
