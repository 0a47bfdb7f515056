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
    let (lab, v1, v2) = common::two_releases();
    let v3 = lab.commit("3.0", &[("usr/lib/big.bin", &common::big_files().1)]);
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
fn a_device_that_lacks_more_than_the_full_update_costs_takes_it_even_from_a_server_that_ignores_ranges()
 {
    let (lab, [_, v2, v3]) = lab();
    // v4 adds 300 near-identical documents: one zstd stream compresses them together,
    // one frame per object cannot, so pulling them would cost more than the full update.
    let mut files = vec![(
        "usr/lib/big.bin".to_owned(),
        fs::read(lab.tmp.path().join("tree-3.0/usr/lib/big.bin")).unwrap(),
    )];
    files.extend(docs("usr/share/doc", 300, "v4"));
    let v4 = commit_with(&lab, "4.0", &files);
    // The channel has no delta from v1.
    lab.publish(&v2, &[]);
    let www = lab.publish(&v4, &[&v3]);
    let server = Server::start(&www);
    let (p, _) = pointer(&www);
    let (trees, files) = lacking(&lab, &index(&www, &p));
    assert!(files > p.full.total_len, "{files} vs {}", p.full.total_len);
    // Drops shorter than a part, from a server that ignores ranges: every retry starts
    // the file over, gets no further, and berth gives up saying so, having waited 0.1,
    // 0.2, 0.4, 0.8 and 1.6 s before the five retries.
    server.set(|f| {
        f.drop_every = Some(8 << 10);
        f.ignore_range = true;
        f.faulty = "updates/".into();
    });
    let started = std::time::Instant::now();
    let out = lab.berth(&[
        "update",
        &server.url(),
        "--channel",
        "stable",
        "--retry-delay",
        "0.1",
    ]);
    let waited = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no progress after 6 attempts"), "{err}");
    assert!(
        waited >= std::time::Duration::from_millis(3100),
        "backed off for {waited:?}"
    );
    // Without the drops, the same server serves the full update; a retried file starts
    // over, so the bytes already on disk are fetched again. The index and the trees
    // were kept from the first run, which had walked them to learn what is missing.
    server.set(|f| f.drop_every = None);
    let run = lab.berth(&[
        "update",
        &server.url(),
        "--channel",
        "stable",
        "--progress",
        "text",
    ]);
    let (out, err) = (
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
    );
    assert!(run.status.success(), "{err}");
    assert!(out.contains("for the full update"), "{out}");
    assert!(
        err.contains(&format!(
            "the missing objects ({files} bytes) cost more than the full update ({} bytes)",
            p.full.total_len
        )),
        "{err}"
    );
    // The superblock (under 8 KiB) came whole in the first run and is not fetched again.
    assert!(p.full.superblock_len < 8 << 10);
    assert!(trees > 0);
    assert_eq!(
        downloaded(&out),
        p.full.total_len - p.full.superblock_len,
        "{err}"
    );
    // Nothing is left in the download area.
    let tmp = lab.sysroot.join("berth/repo/tmp");
    let left: Vec<_> = fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with("download-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let s = lab.status();
    assert_eq!(Lab::role(&s, "trial").as_deref(), Some(&v4[..16]));
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
    let out = lab
        .command()
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
    // The same stall (a minute, on the connection in use) while the run has no
    // deadline: the connection is cut after --stall-timeout without a byte, and the
    // download resumes where it stopped once the server answers again.
    let started = std::time::Instant::now();
    let child = lab
        .command()
        .args([
            "update",
            &url,
            "--channel",
            "stable",
            "--stall-timeout",
            "2",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    server.set(|f| f.stall_after = None);
    let out = child.wait_with_output().unwrap();
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("for the delta update"), "{text}");
    assert!(
        took < std::time::Duration::from_secs(40),
        "the stalled connection was held {took:?}, past the server's own minute"
    );
    lab.ok(&["fsck"]);
}

/// Bytes `berth update` reports it downloaded, from its summary line.
fn downloaded(out: &str) -> u64 {
    out.split(" bytes downloaded")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no download summary in {out:?}"))
}

/// `count` small text files under `dir`, numbered from 0, all different.
fn docs(dir: &str, count: usize, salt: &str) -> Vec<(String, Vec<u8>)> {
    (0..count)
        .map(|i| {
            (
                format!("{dir}/doc-{i:04}"),
                format!("document {i} of {salt}: {}\n", "words ".repeat(40)).into_bytes(),
            )
        })
        .collect()
}

fn commit_with(lab: &Lab, version: &str, files: &[(String, Vec<u8>)]) -> String {
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_slice()))
        .collect();
    lab.commit(version, &refs)
}

/// The object index a pointer names, as published.
fn index(www: &std::path::Path, p: &Pointer) -> format::index::Index {
    let bytes = fs::read(www.join(format!("indexes/{}", p.commit))).unwrap();
    assert_eq!(bytes.len() as u64, p.objects.unwrap().superblock_len);
    format::index::Index::decode(&bytes).unwrap()
}

#[test]
fn without_a_delta_the_device_pulls_only_the_objects_it_lacks_over_a_dropping_link() {
    let lab = Lab::new();
    let mut v1_files = docs("usr/share/doc", 40, "v1");
    let big: Vec<u8> = (0..120_000u32).flat_map(u32::to_le_bytes).collect();
    v1_files.push(("usr/lib/big.bin".into(), big.clone()));
    let v1 = commit_with(&lab, "1.0", &v1_files);
    // v2 and v3 keep v1's documents; v3 changes one, adds a large incompressible file
    // (fetched to disk with resume, not in memory) and a small one.
    let v2 = commit_with(&lab, "2.0", &v1_files);
    let mut v3_files = v1_files.clone();
    v3_files[3].1 = b"changed\n".to_vec();
    v3_files.push(("usr/lib/blob".into(), testkit::noise(4_400_000)));
    v3_files.push(("usr/share/new".into(), b"new file\n".to_vec()));
    let v3 = commit_with(&lab, "3.0", &v3_files);
    lab.install(&v1, &[]);
    lab.booted(&v1[..16], "default");
    lab.publish(&v2, &[]);
    // The channel moves on from v2: its only delta starts there, not at v1.
    let www = lab.publish(&v3, &[]);
    let (p, pointer_len) = pointer(&www);
    assert!(
        p.delta_from(&format::ObjectId::parse_hex(v1.as_bytes()).unwrap())
            .is_none()
    );
    // The trees and the files the device's store lacks, as published.
    let lacks = lacking(&lab, &index(&www, &p));

    let server = Server::start(&www);
    let url = server.url();
    let (code, offer, err) = check(&lab, &url);
    assert_eq!(code, Some(100), "{err}");
    assert_eq!(offer["kind"], "objects");

    server.set(|f| f.drop_every = Some(20 << 10));
    let before = server.sent();
    let run = lab.berth(&["update", &url, "--channel", "stable", "--progress", "json"]);
    let (out, err) = (
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
    );
    assert!(run.status.success(), "{err}");
    assert!(out.contains("for the objects update"), "{out}");
    let got = downloaded(&out);
    // Exactly the index and the objects v1 lacks: the changed document, the two new
    // files, and the trees above them (root, usr, usr/lib, usr/share, usr/share/doc,
    // etc for the release file).
    assert_eq!(got, p.objects.unwrap().superblock_len + lacks.0 + lacks.1);
    assert!(got < p.full.total_len, "{got} vs full {}", p.full.total_len);
    // The drops cost requests, not bytes: nothing crossed the link twice.
    assert_eq!(server.sent() - before, pointer_len + got);
    assert!(server.requests() > 4_400_000 / (20 << 10));
    let last = err.lines().rfind(|l| l.contains("downloaded")).unwrap();
    assert_eq!(last, format!(r#"{{"downloaded":{got},"total":{got}}}"#));

    let s = lab.status();
    assert_eq!(Lab::role(&s, "trial").as_deref(), Some(&v3[..16]));
    lab.ok(&["fsck"]);
    let deployed = lab.sysroot.join("berth/deploy").join(&v3[..16]);
    let source = lab.tmp.path().join("tree-3.0");
    if let Err(diffs) = testkit::compare_trees(&source, &deployed, true) {
        panic!("the pulled deployment differs from v3: {diffs:?}");
    }
}

/// Bytes (as published) of the trees and of the files in `idx` that the device's store
/// lacks.
fn lacking(lab: &Lab, idx: &format::index::Index) -> (u64, u64) {
    let device = store::Repo::open(&lab.sysroot.join("berth/repo")).unwrap();
    let (mut trees, mut files) = (0, 0);
    for e in &idx.entries {
        if !device.has(&e.id, e.kind).unwrap() {
            match e.kind {
                format::ObjectKind::Tree => trees += e.stored,
                _ => files += e.stored,
            }
        }
    }
    (trees, files)
}

/// `n` bytes no compressor can shrink, different for each `seed` (sha256 in counter mode).
fn random(seed: &str, n: usize) -> Vec<u8> {
    use sha2::Digest as _;
    let mut out = Vec::with_capacity(n + 32);
    let mut i = 0u64;
    while out.len() < n {
        out.extend_from_slice(&sha2::Sha256::digest(format!("{seed}/{i}")));
        i += 1;
    }
    out.truncate(n);
    out
}

#[test]
fn an_interrupted_pull_keeps_the_objects_it_stored_and_a_tampered_object_is_refused() {
    let (lab, _) = lab();
    let mut files: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| {
            (
                format!("usr/share/data/{i}"),
                random(&format!("f{i}"), 30_000),
            )
        })
        .collect();
    files.push((
        "usr/lib/big.bin".into(),
        fs::read(lab.tmp.path().join("tree-1.0/usr/lib/big.bin")).unwrap(),
    ));
    let v3 = commit_with(&lab, "3.1", &files);
    // The first publish of the channel: no delta at all.
    let www = lab.publish(&v3, &[]);
    let (p, _) = pointer(&www);
    assert!(p.deltas.is_empty());
    let idx = index(&www, &p);
    let device = store::Repo::open(&lab.sysroot.join("berth/repo")).unwrap();
    let mut wanted: Vec<_> = idx
        .entries
        .iter()
        .filter(|e| e.kind == format::ObjectKind::File && !device.has(&e.id, e.kind).unwrap())
        .copied()
        .collect();
    wanted.sort_by_key(|e| e.id);
    assert_eq!(wanted.len(), 7, "six data files and the new release file");

    // The last data file (by id, the order of the pull) is replaced by a well-formed
    // file object of the same sizes whose bytes are not its id.
    let at = wanted.iter().rposition(|e| e.size > 30_000).unwrap();
    let last = wanted[at];
    let hex = last.id.to_string();
    let rel = format!("objects/{}/{}.file", &hex[..2], &hex[2..]);
    let forged = forged(&last);
    let server = Server::start(&www);
    server.set(|f| {
        f.replace.insert(rel.clone(), forged.clone());
    });
    let url = server.url();
    let record = lab.record_bytes();
    let run = |batch: &str| {
        lab.command()
            .args(["update", &url, "--channel", "stable"])
            .env("BERTH_TEST_PULL_BATCH", batch)
            .output()
            .unwrap()
    };
    let out = run("2");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("{url}/{rel}: is not object {}", last.id)),
        "{err}"
    );
    assert_eq!(lab.record_bytes(), record, "the record changed");
    assert_eq!(Lab::role(&lab.status(), "trial"), None);
    lab.ok(&["fsck"]);
    // Batches of two: the batches before the forged object's made it into the store;
    // its own batch and the later ones did not.
    let device = store::Repo::open(&lab.sysroot.join("berth/repo")).unwrap();
    let kept: Vec<bool> = wanted
        .iter()
        .map(|e| device.has(&e.id, e.kind).unwrap())
        .collect();
    let expected: Vec<bool> = (0..wanted.len()).map(|j| j / 2 < at / 2).collect();
    assert_eq!(kept, expected, "forged object at {at}");

    // gc in between keeps what the interrupted pull stored, and says so.
    let gc: serde_json::Value = serde_json::from_str(&lab.ok(&["gc", "--json"])).unwrap();
    assert_eq!(gc["kept_for_updates"], at / 2 * 2, "{gc}");
    assert_eq!(gc["objects"], 0, "{gc}");
    let (trees, files) = lacking(&lab, &idx);
    assert!(trees > 0, "the trees are published only at the end");
    assert_eq!(
        files,
        wanted[at / 2 * 2..].iter().map(|e| e.stored).sum::<u64>()
    );

    // A kept tree damaged on the device is not used: it no longer hashes to its id.
    let refetched = damage_a_kept_tree(&lab, &v3, &idx);

    // Repaired at the server: the next run fetches the objects still missing and the
    // damaged tree, nothing else (the index and the other trees are on the device).
    server.set(|f| f.replace.clear());
    let out = run("2");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(downloaded(&text), files + refetched);
    assert_eq!(
        Lab::role(&lab.status(), "trial").as_deref(),
        Some(&v3[..16])
    );
    lab.ok(&["fsck"]);
    let deployed = lab.sysroot.join("berth/deploy").join(&v3[..16]);
    if let Err(diffs) = testkit::compare_trees(&lab.tmp.path().join("tree-3.1"), &deployed, true) {
        panic!("the pulled deployment differs from its commit: {diffs:?}");
    }
}

/// Flips a bit in one tree that an interrupted pull of `commit` kept in its download
/// directory; returns that tree's published size (what fetching it again costs).
fn damage_a_kept_tree(lab: &Lab, commit: &str, idx: &format::index::Index) -> u64 {
    let dl = lab
        .sysroot
        .join(format!("berth/repo/tmp/download-{}-objects", &commit[..16]));
    let kept: Vec<_> = fs::read_dir(&dl)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".tree-verified"))
        .collect();
    assert!(
        !kept.is_empty(),
        "the walked trees are kept in {}",
        dl.display()
    );
    let damaged = &kept[0];
    let mut bytes = fs::read(damaged).unwrap();
    bytes[0] ^= 1;
    fs::write(damaged, bytes).unwrap();
    let id: format::ObjectId = damaged
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_end_matches(".tree-verified")
        .parse()
        .unwrap();
    idx.find(&id, format::ObjectKind::Tree).unwrap().stored
}

/// A well-formed file object with the sizes of `e` (decompressed and published) whose
/// bytes are not `e`'s id.
fn forged(e: &format::index::IndexEntry) -> Vec<u8> {
    let head = format::FileHeader {
        kind: format::FileKind::Regular,
        mode: 0o644,
        uid: 0,
        gid: 0,
        rdev_major: 0,
        rdev_minor: 0,
        size: 0,
        xattrs: format::Xattrs::new(),
    };
    let content = e.size - head.encode().len() as u64;
    let mut forged = format::FileHeader {
        size: content,
        ..head
    }
    .encode();
    forged.extend(random("forged", usize::try_from(content).unwrap()));
    let mut forged = zstd::encode_all(&forged[..], 19).unwrap();
    // Bytes after the zstd frame are never read.
    assert!(forged.len() as u64 <= e.stored);
    forged.resize(usize::try_from(e.stored).unwrap(), 0);
    forged
}

#[test]
fn a_pulled_tree_with_a_symlink_that_leaves_the_root_is_refused_before_it_is_published() {
    let (lab, [v1, _, _]) = lab();
    // A commit berth-image would never make (it refuses such links), signed all the
    // same: v1's root plus `usr/evil -> ../../../etc/shadow`.
    let repo = store::Repo::open(&lab.repo).unwrap();
    let (c1, _) = repo
        .read_commit(&repo.resolve_commit(&v1).unwrap())
        .unwrap();
    let root = repo.read_tree(&c1.root).unwrap();
    let usr_entry = root
        .entries()
        .iter()
        .find(|e| e.name.as_bytes() == b"usr")
        .unwrap()
        .clone();
    let usr = repo.read_tree(&usr_entry.id).unwrap();
    let mut txn = store::Txn::begin(&repo).unwrap();
    let target = b"../../../etc/shadow";
    let link = txn
        .write_file(
            &format::FileHeader {
                kind: format::FileKind::Symlink,
                mode: 0o777,
                uid: 0,
                gid: 0,
                rdev_major: 0,
                rdev_minor: 0,
                size: target.len() as u64,
                xattrs: format::Xattrs::new(),
            },
            &mut &target[..],
            std::path::Path::new("evil"),
        )
        .unwrap();
    let with = |tree: &format::Tree, name: &[u8], kind, id| {
        let mut entries: Vec<format::TreeEntry> = tree
            .entries()
            .iter()
            .filter(|e| e.name.as_bytes() != name)
            .cloned()
            .collect();
        entries.push(format::TreeEntry {
            name: format::EntryName::new(name).unwrap(),
            kind,
            id,
        });
        format::Tree::new(tree.meta().clone(), entries).unwrap()
    };
    let evil_usr = with(&usr, b"evil", format::EntryKind::File, link);
    let usr_id = txn.write_tree(&evil_usr).unwrap();
    let evil_root = with(&root, b"usr", format::EntryKind::Tree, usr_id);
    let root_id = txn.write_tree(&evil_root).unwrap();
    let commit = format::Commit::new(
        root_id,
        None,
        c1.timestamp + 1,
        format::Version::new("6.0").unwrap(),
        Vec::new(),
    )
    .unwrap();
    let evil = txn.write_commit(&commit, None).unwrap().to_string();
    txn.commit().unwrap();

    let www = lab.publish(&evil, &[]);
    let server = Server::start(&www);
    let record = lab.record_bytes();
    let out = lab.berth(&["update", &server.url(), "--channel", "stable"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("symlink usr/evil -> ../../../etc/shadow"),
        "{err}"
    );
    assert_eq!(lab.record_bytes(), record);
    // Its trees were never published on the device.
    let device = store::Repo::open(&lab.sysroot.join("berth/repo")).unwrap();
    for id in [root_id, usr_id] {
        assert!(!device.has(&id, format::ObjectKind::Tree).unwrap());
    }
    lab.ok(&["fsck"]);
}

#[test]
fn a_refused_large_object_is_not_kept_so_the_next_run_fetches_it_again() {
    let (lab, _) = lab();
    // Over 4 MiB as published: downloaded into a file, which a resume would reuse.
    let v3 = commit_with(
        &lab,
        "3.2",
        &[("usr/lib/blob".to_owned(), random("blob", 4_300_000))],
    );
    let www = lab.publish(&v3, &[]);
    let (p, _) = pointer(&www);
    let idx = index(&www, &p);
    let big = *idx.entries.iter().find(|e| e.stored > 4 << 20).unwrap();
    let hex = big.id.to_string();
    let rel = format!("objects/{}/{}.file", &hex[..2], &hex[2..]);
    let server = Server::start(&www);
    server.set(|f| {
        f.replace.insert(rel.clone(), forged(&big));
    });
    let url = server.url();
    // The channel state and the download directory change; the record does not.
    let out = lab.berth(&["update", &url, "--channel", "stable"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("is not object {}", big.id)), "{err}");
    assert_eq!(Lab::role(&lab.status(), "trial"), None);
    let cached = lab.sysroot.join(format!(
        "berth/repo/tmp/download-{}-objects/{hex}.file",
        &v3[..16]
    ));
    assert!(!cached.exists(), "the refused download was kept");
    server.set(|f| f.replace.clear());
    let out = lab.ok(&["update", &url, "--channel", "stable"]);
    assert!(out.contains("for the objects update"), "{out}");
    assert_eq!(
        Lab::role(&lab.status(), "trial").as_deref(),
        Some(&v3[..16])
    );
    lab.ok(&["fsck"]);
}

/// `berth update URL --download-only` leaves the update in the store and the download
/// directory, with the record and the deployments as they were; the run that installs
/// it (in a maintenance window, say) fetches the channel pointer again and nothing else.
/// With a delta, and with only the full update and the objects to choose from.
#[test]
fn download_only_then_install_fetches_only_the_pointer_again() {
    for deltas in [true, false] {
        let (lab, [v1, v2, _]) = lab();
        let from = [v1.as_str()];
        let www = lab.publish(&v2, if deltas { &from[..] } else { &[] });
        let (_, pointer_len) = pointer(&www);
        let server = Server::start(&www);
        let url = server.url();
        let record = lab.record_bytes();
        let out = lab.ok(&["update", &url, "--channel", "stable", "--download-only"]);
        assert!(
            out.contains(&format!(
                "downloaded {} (version 2.0) into the store, not installed",
                &v2[..16]
            )),
            "{out}"
        );
        assert_eq!(lab.record_bytes(), record, "the record changed");
        assert!(!lab.sysroot.join("berth/deploy").join(&v2[..16]).exists());

        let before = server.sent();
        let out = lab.ok(&["update", &url, "--channel", "stable"]);
        assert!(
            out.contains(&format!("installed {} (version 2.0)", &v2[..16]))
                && out.contains("; 0 bytes downloaded for the"),
            "deltas {deltas}: {out}"
        );
        assert_eq!(
            server.sent() - before,
            pointer_len,
            "deltas {deltas}: {out}"
        );
        assert_eq!(lab.next_boot(), (v2[..16].to_owned(), "trial".to_owned()));
        // Installed: the download directories and the progress are gone.
        let left: Vec<_> = fs::read_dir(lab.sysroot.join("berth/repo/tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("download-") || n.starts_with("update-"))
            .collect();
        assert!(left.is_empty(), "deltas {deltas}: {left:?}");
    }
}
