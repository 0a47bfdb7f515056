//! `berth update URL --channel NAME` and `berth check` against a static repository
//! from `berth-image publish`, served on 127.0.0.1 by a test server that drops
//! connections, stalls, sends endless data or replays old pointers.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

mod common;

use std::fs;

use common::Lab;
use format::channel::{self, Pointer};
use testkit::http::Server;

/// v1 installed and booted; v2 (a changed big file and a new one) and v3 committed.
fn lab() -> (Lab, [String; 3]) {
    let lab = Lab::new();
    let big: Vec<u8> = (0..120_000u32).flat_map(u32::to_le_bytes).collect();
    let mut big2 = big.clone();
    big2[1000..1100].fill(9);
    let noise: Vec<u8> = (0..60_000u32)
        .map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes()[1])
        .collect();
    let v1 = lab.commit("1.0", &[("usr/lib/big.bin", &big)]);
    let v2 = lab.commit(
        "2.0",
        &[("usr/lib/big.bin", &big2), ("usr/share/noise", &noise)],
    );
    let v3 = lab.commit("3.0", &[("usr/lib/big.bin", &big2)]);
    lab.install(&v1, &[]);
    lab.booted(&v1[..16], "default");
    (lab, [v1, v2, v3])
}

fn check(lab: &Lab, url: &str) -> (Option<i32>, serde_json::Value, String) {
    let out = lab.berth(&["check", url, "--channel", "stable", "--json"]);
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (
        out.status.code(),
        v,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn pointer(dir: &std::path::Path) -> (Pointer, u64) {
    let bytes = fs::read(dir.join("channels/stable")).unwrap();
    let (body, _) = channel::split_file(&bytes).unwrap();
    (Pointer::decode(body).unwrap(), bytes.len() as u64)
}

/// `p` signed with the lab's key, as a channel file.
fn signed(lab: &Lab, p: &Pointer) -> Vec<u8> {
    let key = format::key::parse_secret(&fs::read(lab.keys.join("berth.key")).unwrap()).unwrap();
    let body = p.encode();
    let mut sigs = format::sig::Signatures::new();
    sigs.sign(&body, &key).unwrap();
    channel::encode_file(&body, &sigs.encode())
}

#[test]
fn a_delta_over_a_link_that_drops_every_20_kib_completes_without_fetching_twice() {
    let (lab, [v1, v2, _]) = lab();
    let www = lab.publish(&v2, &[&v1]);
    let server = Server::start(&www);
    let url = server.url();
    let (code, offer, err) = check(&lab, &url);
    assert_eq!(code, Some(100), "{err}");
    assert_eq!(offer["kind"], "delta");
    assert_eq!(offer["version"], "2.0");
    let (p, pointer_len) = pointer(&www);
    let delta = *p
        .delta_from(&format::ObjectId::parse_hex(v1.as_bytes()).unwrap())
        .unwrap();
    assert!(
        delta.total_len < p.full.total_len,
        "{delta:?} vs {:?}",
        p.full
    );

    server.set(|f| f.drop_every = Some(20 << 10));
    let before = server.sent();
    let run = lab.berth(&["update", &url, "--channel", "stable", "--progress", "json"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let out = String::from_utf8_lossy(&run.stdout);
    // Progress on stderr: one JSON object per file, the last one complete.
    let progress = String::from_utf8_lossy(&run.stderr);
    let last = progress
        .lines()
        .rfind(|l| l.contains("downloaded"))
        .unwrap();
    assert_eq!(
        last,
        format!(r#"{{"downloaded":{0},"total":{0}}}"#, delta.total_len)
    );
    assert!(
        out.contains(&format!(
            "{} bytes downloaded for the delta update",
            delta.total_len
        )),
        "{out}"
    );
    // Every byte of the delta crossed the link once: the drops cost requests, not bytes.
    assert_eq!(server.sent() - before, pointer_len + delta.total_len);
    assert!(server.requests() > 2 + delta.total_len / (20 << 10));
    let s = lab.status();
    assert_eq!(Lab::role(&s, "trial").as_deref(), Some(&v2[..16]));
    lab.ok(&["fsck"]);

    // The trial waits for its boot: nothing to offer, even before it runs.
    let (code, offer, _) = check(&lab, &url);
    assert_eq!((code, offer["available"].as_bool()), (Some(0), Some(false)));
    // Up to date once it runs, too.
    lab.booted(&v2[..16], "trial");
    let (code, offer, _) = check(&lab, &url);
    assert_eq!((code, offer["available"].as_bool()), (Some(0), Some(false)));
    assert!(
        lab.ok(&["update", &url, "--channel", "stable"])
            .contains("already up to date")
    );
}

#[test]
fn a_device_without_a_delta_takes_the_full_update_even_from_a_server_that_ignores_ranges() {
    let (lab, [_, v2, v3]) = lab();
    // The channel has no delta from v1.
    let www = lab.publish(&v2, &[&v3]);
    let server = Server::start(&www);
    let (p, _) = pointer(&www);
    // Drops shorter than a part, from a server that ignores ranges: every retry starts
    // the file over, gets no further, and berth gives up saying so.
    server.set(|f| {
        f.drop_every = Some(8 << 10);
        f.ignore_range = true;
    });
    let out = lab.berth(&["update", &server.url(), "--channel", "stable"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no progress after 6 attempts"), "{err}");
    // Without the drops, the same server serves the full update; a retried file starts
    // over, so the bytes already on disk are fetched again.
    server.set(|f| f.drop_every = None);
    let out = lab.ok(&["update", &server.url(), "--channel", "stable"]);
    assert!(out.contains("for the full update"), "{out}");
    let downloaded: u64 = out
        .split(" bytes downloaded")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(downloaded > 0 && downloaded <= p.full.total_len, "{out}");
    lab.ok(&["fsck"]);
}

#[test]
fn stale_replayed_expired_endless_and_stalled_sources_are_refused() {
    let (lab, [v1, v2, v3]) = lab();
    let www = lab.publish(&v2, &[&v1]);
    let first = fs::read(www.join("channels/stable")).unwrap();
    let (p1, _) = pointer(&www);
    let www = lab.publish(&v3, &[&v1]);
    let (p2, _) = pointer(&www);
    assert_eq!((p1.serial, p2.serial), (1, 2));
    let server = Server::start(&www);
    let url = server.url();
    lab.ok(&["update", &url, "--channel", "stable"]);
    let accepted = lab.manifest();

    // The first pointer again (validly signed, but serial 1 < 2).
    server.set(|f| {
        f.replace.insert("channels/stable".into(), first.clone());
    });
    lab.fails(
        &["update", &url, "--channel", "stable"],
        "is older than serial 2",
    );
    let (code, _, err) = check(&lab, &url);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("replayed or stale"), "{err}");

    // Serial 2 again with other content.
    let mut other = p2.clone();
    other.expires += 1;
    server.set(|f| {
        f.replace
            .insert("channels/stable".into(), signed(&lab, &other));
    });
    lab.fails(
        &["update", &url, "--channel", "stable"],
        "was accepted before with other content",
    );

    // A newer serial that expired.
    let mut expired = p2.clone();
    expired.serial = 3;
    expired.issued = 1_000_000;
    expired.expires = 2_000_000;
    server.set(|f| {
        f.replace
            .insert("channels/stable".into(), signed(&lab, &expired));
    });
    lab.fails(
        &["update", &url, "--channel", "stable"],
        "expired at 2000000",
    );

    // A clock that says 1970 does not revive a pointer issued before the newest seen.
    let mut old = p2.clone();
    old.serial = 4;
    old.issued = p2.issued - 10;
    old.expires = p2.issued - 1;
    server.set(|f| {
        f.replace
            .insert("channels/stable".into(), signed(&lab, &old));
    });
    let out = std::process::Command::new(common::berth())
        .args(["--sysroot"])
        .arg(&lab.sysroot)
        .arg("--boot-json")
        .arg(&lab.boot_json)
        .args(["check", &url, "--channel", "stable"])
        .env("BERTH_TEST_CLOCK", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("from the clock or the newest pointer seen"),
        "{err}"
    );

    // Signed by a key the device does not trust.
    let other_keys = lab.tmp.path().join("other-keys");
    testkit::run_ok(
        &testkit::bin("berth-image"),
        &["keygen".as_ref(), "--out".as_ref(), other_keys.as_os_str()],
    );
    let forged_key =
        format::key::parse_secret(&fs::read(other_keys.join("berth.key")).unwrap()).unwrap();
    let mut forged = p2.clone();
    forged.serial = 9;
    let body = forged.encode();
    let mut sigs = format::sig::Signatures::new();
    sigs.sign(&body, &forged_key).unwrap();
    server.set(|f| {
        f.replace.insert(
            "channels/stable".into(),
            channel::encode_file(&body, &sigs.encode()),
        );
    });
    lab.fails(
        &["check", &url, "--channel", "stable"],
        "not signed by any trusted key",
    );
    assert_eq!(lab.manifest(), accepted, "refusals changed the device");
}

#[test]
fn endless_data_is_cut_at_the_signed_length_and_a_stall_meets_the_deadline() {
    let (lab, [v1, v2, _]) = lab();
    let www = lab.publish(&v2, &[&v1]);
    let server = Server::start(&www);
    let url = server.url();
    let (p, _) = pointer(&www);
    let delta = *p
        .delta_from(&format::ObjectId::parse_hex(v1.as_bytes()).unwrap())
        .unwrap();

    // The pointer itself streams on: refused past the channel file limit.
    server.set(|f| f.endless = Some(String::new()));
    let out = lab.berth(&["check", &url, "--channel", "stable"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is larger than the"));

    // Only the update's files stream on: cut at the superblock's signed length.
    server.set(|f| f.endless = Some("updates/".into()));
    let out = lab.berth(&["update", &url, "--channel", "stable"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "sends more than the {} bytes",
            delta.superblock_len
        )),
        "{err}"
    );
    // What reached the disk stops at the signed length.
    let sb = lab.sysroot.join(format!(
        "berth/repo/tmp/download-{}-delta/superblock",
        &v2[..16]
    ));
    assert_eq!(fs::metadata(&sb).unwrap().len(), delta.superblock_len);

    // A stall after 100 bytes of each file: the deadline ends it; a later run resumes.
    server.set(|f| {
        f.endless = None;
        f.faulty = "updates/".into();
        f.stall_after = Some(100);
    });
    let out = lab.berth(&["update", &url, "--channel", "stable", "--deadline", "3"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("was not applied within the 3 s deadline"),
        "{err}{}",
        String::from_utf8_lossy(&out.stdout)
    );
    server.set(|f| f.stall_after = None);
    let out = lab.ok(&["update", &url, "--channel", "stable"]);
    assert!(out.contains("for the delta update"), "{out}");
    lab.ok(&["fsck"]);
}
