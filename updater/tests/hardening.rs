//! Defects found by attacking the agent as a hostile mirror, a damaged disk and a busy
//! device would: each test failed before its fix.
//!
//! - the updater's own directories are never followed through a symlink;
//! - one writer at a time (locks), and what a device left by an older gc recovers from;
//! - an interrupted update survives a gc;
//! - trusted keys follow the `/etc` overlay (whiteouts);
//! - a slow mirror is cut, a lying one is named;
//! - state that cannot be read fails closed (channel state, the running commit);
//! - a socket in `/etc` is skipped, and `status` survives a full stdout.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};

use common::Lab;
use testkit::http::Server;

/// v1 installed and booted, v2 committed (a changed big file and a new one).
fn lab() -> (Lab, String, String) {
    common::two_releases()
}

/// Runs berth with `args`; returns (exit code, stderr).
fn run(lab: &Lab, args: &[&str]) -> (Option<i32>, String) {
    let out = lab.berth(args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A directory outside the sysroot with a file in it, to point symlinks at.
fn bystander(lab: &Lab) -> std::path::PathBuf {
    let dir = lab.tmp.path().join("bystander");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("precious"), b"keep me").unwrap();
    dir
}

fn untouched(dir: &Path) {
    let names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["precious"], "{} changed", dir.display());
    assert_eq!(fs::read(dir.join("precious")).unwrap(), b"keep me");
}

#[test]
fn a_symlink_at_a_download_directory_is_refused_and_not_followed() {
    let (lab, v1, v2) = lab();
    let www = lab.publish(&v2, &[&v1]);
    let server = Server::start(&www);
    let outside = bystander(&lab);
    let tmp = lab.sysroot.join("berth/repo/tmp");
    fs::create_dir_all(&tmp).unwrap();
    symlink(&outside, tmp.join(format!("download-{}-delta", &v2[..16]))).unwrap();
    let (code, err) = run(&lab, &["update", &server.url(), "--channel", "stable"]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    untouched(&outside);
}

#[test]
fn a_symlink_at_the_channel_state_directory_is_refused() {
    let (lab, v1, v2) = lab();
    let www = lab.publish(&v2, &[&v1]);
    let server = Server::start(&www);
    let outside = bystander(&lab);
    fs::create_dir_all(lab.sysroot.join("berth/state")).unwrap();
    symlink(&outside, lab.sysroot.join("berth/state/channels")).unwrap();
    for args in [
        &["check", &server.url(), "--channel", "stable"][..],
        &["update", &server.url(), "--channel", "stable"],
    ] {
        let (code, err) = run(&lab, args);
        assert_eq!(code, Some(1), "{err}");
        assert!(
            err.contains("berth/state/channels: is a symbolic link"),
            "{err}"
        );
        untouched(&outside);
    }
}

#[test]
fn a_symlink_at_the_new_etc_layer_is_refused() {
    let (lab, v1, v2) = lab();
    // The running deployment has an /etc layer to carry.
    let upper = lab
        .sysroot
        .join("berth/state/etc")
        .join(&v1[..16])
        .join("upper");
    fs::create_dir_all(&upper).unwrap();
    fs::write(upper.join("hostname"), b"device-7\n").unwrap();
    let outside = bystander(&lab);
    symlink(
        &outside,
        lab.sysroot.join("berth/state/etc").join(&v2[..16]),
    )
    .unwrap();
    let update = lab.delta(Some(&v1), &v2, "u.berth", &[]);
    let (code, err) = run(&lab, &["update", update.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("is a symbolic link"), "{err}");
    untouched(&outside);
    // The trial was not started.
    assert_eq!(Lab::role(&lab.status(), "trial"), None);
}

/// Holds `berth/store.lock` as another berth would.
fn hold_store_lock(lab: &Lab) -> fs::File {
    let f = fs::File::open(lab.sysroot.join("berth/store.lock")).unwrap();
    rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    f
}

#[test]
fn writers_wait_for_the_lock_and_name_its_holder_while_readers_go_on() {
    let (lab, v1, v2) = lab();
    let update = lab.delta(Some(&v1), &v2, "u.berth", &[]);
    let held = hold_store_lock(&lab);
    let before = lab.manifest();
    for args in [
        &["--wait", "0", "gc"][..],
        &["--wait", "1", "update", update.to_str().unwrap()],
    ] {
        let started = Instant::now();
        let (code, err) = run(&lab, args);
        assert_eq!(code, Some(75), "berth {args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        // The holder is named: this test process.
        assert!(
            err.contains(&format!("pid {}: ", std::process::id())),
            "{err}"
        );
        if args[1] == "1" {
            assert!(started.elapsed() >= Duration::from_secs(1));
        }
    }
    assert_eq!(
        lab.manifest(),
        before,
        "a refused writer changed the sysroot"
    );
    // Readers never wait; record writers take the record lock, not the store's.
    lab.ok(&["--wait", "0", "status"]);
    lab.ok(&["--wait", "0", "mark-good"]);
    drop(held);
    lab.ok(&["--wait", "0", "update", update.to_str().unwrap()]);
    lab.ok(&["--wait", "0", "gc"]);
    assert_eq!(
        Lab::role(&lab.status(), "trial").as_deref(),
        Some(&v2[..16])
    );
}

#[test]
fn gc_in_a_loop_beside_updates_never_breaks_one() {
    let (lab, v1, v2) = lab();
    let v3 = lab.commit("3.0", &[("usr/lib/other", b"three")]);
    let updates = [
        lab.delta(Some(&v1), &v2, "u2.berth", &[]),
        lab.delta(None, &v3, "u3.berth", &["--part-size", "20000"]),
    ];
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gc = {
        let stop = stop.clone();
        let mut cmd = lab.command();
        cmd.args(["--wait", "60", "gc"]);
        std::thread::spawn(move || {
            let mut runs = 0u32;
            let deadline = Instant::now() + Duration::from_mins(1);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                let out = cmd.output().unwrap();
                assert!(
                    out.status.success(),
                    "gc: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                runs += 1;
            }
            runs
        })
    };
    for round in 0..3 {
        for (u, name) in updates.iter().zip([&v2[..16], &v3[..16]]) {
            let out = lab
                .command()
                .args(["--wait", "60", "update", "--allow-downgrade"])
                .arg(u)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(Lab::role(&lab.status(), "trial").as_deref(), Some(name));
            lab.ok(&["--wait", "60", "fsck"]);
            lab.ok(&["--wait", "60", "rollback"]);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(gc.join().unwrap() > 0);
    lab.ok(&["fsck"]);
}

#[test]
fn an_interrupted_update_completes_after_a_gc() {
    let (lab, v1, _) = lab();
    let noise: Vec<u8> = (0..200_000u32)
        .map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes()[2])
        .collect();
    let v4 = lab.commit(
        "4.0",
        &[
            ("usr/share/a", &noise[..100_000]),
            ("usr/share/b", &noise[100_000..]),
        ],
    );
    let update = lab.delta(Some(&v1), &v4, "u4.berth", &["--part-size", "20000"]);
    let out = lab
        .command()
        .env("BERTH_TEST_ABORT_AFTER_PARTS", "2")
        .arg("update")
        .arg(&update)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let gc: serde_json::Value = serde_json::from_str(&lab.ok(&["gc", "--json"])).unwrap();
    assert_eq!(gc["progress_forgotten"], 1, "{gc}");
    assert!(gc["objects"].as_u64().unwrap() > 0, "{gc}");
    let done = lab.ok(&["update", update.to_str().unwrap()]);
    assert!(done.contains("0 already done"), "{done}");
    assert_eq!(
        Lab::role(&lab.status(), "trial").as_deref(),
        Some(&v4[..16])
    );
    lab.ok(&["fsck"]);
}

#[test]
fn a_device_whose_trial_an_older_gc_removed_installs_it_again() {
    let (lab, v1, v2) = lab();
    let www = lab.publish(&v2, &[&v1]);
    let server = Server::start(&www);
    lab.ok(&["update", &server.url(), "--channel", "stable"]);
    // What a gc beside the update did before there were locks: the checkout is gone
    // while the record names it.
    fs::remove_dir_all(lab.sysroot.join("berth/deploy").join(&v2[..16])).unwrap();
    lab.ok(&["gc"]);
    let out = lab.berth(&["check", &server.url(), "--channel", "stable", "--json"]);
    common::offers_an_update(&out);
    lab.ok(&["update", &server.url(), "--channel", "stable"]);
    assert_eq!(lab.next_boot().0, v2[..16]);
    lab.ok(&["fsck"]);

    // The same damage found only at the next boot: berth-init drops the missing trial
    // (a rollback from it), and this boot's report says why, so it is offered again.
    fs::remove_dir_all(lab.sysroot.join("berth/deploy").join(&v2[..16])).unwrap();
    let out = std::process::Command::new(testkit::bin("berth-init"))
        .args(["--dry-run", "--write-record", "--sysroot"])
        .arg(&lab.sysroot)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    fs::write(&lab.boot_json, &out.stdout).unwrap();
    let s = lab.status();
    assert_eq!(s["last_rollback"]["from"], &v2[..16], "{s}");
    assert_eq!(s["last_rollback"]["reason"], "trial-unbootable", "{s}");
    let out = lab.berth(&["check", &server.url(), "--channel", "stable", "--json"]);
    common::offers_an_update(&out);
    lab.ok(&["update", &server.url(), "--channel", "stable"]);
    assert_eq!(lab.next_boot().0, v2[..16]);
}

#[test]
fn a_whiteout_of_a_trusted_key_in_etc_hides_it() {
    let lab = Lab::new();
    let other = lab.untrusted_key();
    let other_pub = fs::read(other.with_extension("pub")).unwrap();
    // v1 trusts the lab's key (usr/lib) and another one in /etc.
    let v1 = lab.commit("1.0", &[("etc/berth/keys/other.pub", &other_pub)]);
    let v2 = lab.commit("2.0", &[]);
    lab.install(&v1, &[]);
    lab.booted(&v1[..16], "default");
    // The operator deletes /etc/berth/keys/other.pub: a whiteout in the upper layer.
    let keys = lab
        .sysroot
        .join("berth/state/etc")
        .join(&v1[..16])
        .join("upper/berth/keys");
    fs::create_dir_all(&keys).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        keys.join("other.pub"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    )
    .unwrap();
    // Signed by the deleted key: refused. Signed by the lab's key: accepted (before,
    // every update failed reading the whiteout).
    let by_other = lab.delta_signed(Some(&v1), &v2, "other.berth", &[], &other);
    let (code, err) = run(&lab, &["update", by_other.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("signature"), "{err}");
    let good = lab.delta(Some(&v1), &v2, "good.berth", &[]);
    lab.ok(&["update", good.to_str().unwrap()]);
}

#[test]
fn a_mirror_that_sends_a_byte_now_and_then_is_cut() {
    let (lab, v1, v2) = lab();
    let www = lab.publish(&v2, &[&v1]);
    let server = Server::start(&www);
    server.set(|f| {
        f.faulty = "updates/".into();
        f.trickle = Some(Duration::from_millis(100));
    });
    let started = Instant::now();
    let mut child = lab
        .command()
        .args(["update", &server.url(), "--channel", "stable"])
        .args([
            "--stall-timeout",
            "1",
            "--retry-delay",
            "0",
            "--min-rate",
            "1000",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Before the fix this ran for hours: each byte reset the stall timer and the
    // retry count.
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_mins(2) {
            child.kill().unwrap();
            panic!("still downloading after 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("updates/"), "names the URL: {err}");
    assert_eq!(Lab::role(&lab.status(), "trial"), None);
}

#[test]
fn a_mirror_that_lies_in_content_range_is_named() {
    let (lab, v1, v2) = lab();
    let www = lab.publish(&v2, &[&v1]);
    let server = Server::start(&www);
    let parts = format!("updates/{v1}-{v2}/part-");
    server.set(|f| {
        f.faulty = parts;
        f.drop_every = Some(300);
        f.lying_range = true;
    });
    let (code, err) = run(
        &lab,
        &[
            "update",
            &server.url(),
            "--channel",
            "stable",
            "--retry-delay",
            "0",
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&server.url()), "names the URL: {err}");
    assert!(err.contains("Content-Range"), "{err}");
}

#[test]
fn a_damaged_channel_state_fails_closed() {
    let (lab, v1, v2) = lab();
    let www = lab.publish(&v2, &[&v1]);
    let server = Server::start(&www);
    lab.ok(&["update", &server.url(), "--channel", "stable"]);
    let state = lab.sysroot.join("berth/state/channels/stable");
    let len = fs::metadata(&state).unwrap().len();
    fs::write(&state, vec![0u8; usize::try_from(len).unwrap()]).unwrap();
    for verb in ["check", "update"] {
        let (code, err) = run(&lab, &[verb, &server.url(), "--channel", "stable"]);
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("berth/state/channels/stable"), "{err}");
        assert!(err.contains("replay check cannot be made"), "{err}");
    }
}

#[test]
fn an_unreadable_running_commit_fails_the_downgrade_check_closed() {
    let lab = Lab::new();
    let v1 = lab.commit("1.0", &[]);
    let v2 = lab.commit("2.0", &[("usr/lib/two", b"2")]);
    lab.install(&v2, &[]);
    lab.booted(&v2[..16], "default");
    let older = lab.delta(None, &v1, "older.berth", &[]);
    // The running commit's object is gone (a damaged store).
    let commit = lab
        .sysroot
        .join("berth/repo/objects")
        .join(&v2[..2])
        .join(format!("{}.commit", &v2[2..]));
    fs::remove_file(&commit).unwrap();
    lab.fails(
        &["update", older.to_str().unwrap()],
        "rollback protection cannot check",
    );
    // With --allow-downgrade the operator takes the decision.
    lab.ok(&["update", "--allow-downgrade", older.to_str().unwrap()]);
}

#[test]
fn a_socket_in_the_etc_layer_is_skipped_with_a_warning() {
    let (lab, v1, v2) = lab();
    let upper = lab
        .sysroot
        .join("berth/state/etc")
        .join(&v1[..16])
        .join("upper");
    fs::create_dir_all(upper.join("run")).unwrap();
    fs::write(upper.join("hostname"), b"device-7\n").unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(upper.join("run/control.sock")).unwrap();
    let update = lab.delta(Some(&v1), &v2, "u.berth", &[]);
    let out = lab.berth(&["update", update.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("control.sock") && err.contains("warning"),
        "{err}"
    );
    let new = lab
        .sysroot
        .join("berth/state/etc")
        .join(&v2[..16])
        .join("upper");
    assert_eq!(fs::read(new.join("hostname")).unwrap(), b"device-7\n");
    assert!(!new.join("run/control.sock").exists());
}

#[test]
fn status_to_a_full_disk_is_an_error_not_a_panic() {
    let (lab, _, _) = lab();
    for args in [&["status", "--json"][..], &["status"]] {
        let out = lab
            .command()
            .args(args)
            .stdout(fs::File::create("/dev/full").unwrap())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("standard output") && err.contains("No space left"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}
