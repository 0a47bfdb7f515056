//! A hostile registry's manifest costs bounded memory: only each layer's title and
//! digest are kept, whatever else the manifest holds, so `berth check oci://…` stays
//! within the agent's 64 MiB budget on a manifest just under the 32 MiB cap.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

mod common;

use std::fmt::Write as _;
use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::Lab;
use testkit::http::Server;

/// The memory budget the device agent is held to.
const BUDGET: u64 = 64 << 20;

/// Annotations in the hostile manifest: ten bytes each (`"abcd":"",`), 32 MB in all,
/// under `format::oci::MANIFEST_MAX`.
const ANNOTATIONS: u32 = 3_200_000;

/// A 4-character name for `i`, unique below 62⁴.
fn short_name(mut i: u32, out: &mut String) {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    for _ in 0..4 {
        out.push(char::from(ALPHABET[(i % 62) as usize]));
        i /= 62;
    }
}

/// The peak resident memory (`VmHWM`) of process `pid`, in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// The manifest of one layer holding `pointer`'s title after `filler`: JSON that goes in
/// the layers list before it.
fn manifest(filler: &str, annotations: u32, digest: &str) -> String {
    let mut m = String::with_capacity(33 << 20);
    m.push_str(r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","#);
    m.push_str(r#""artifactType":"application/vnd.berth.repository.v1","layers":["#);
    m.push_str(filler);
    let _ = write!(
        m,
        r#"{{"mediaType":"application/vnd.berth.file.v1","digest":"{digest}","size":1,"#
    );
    m.push_str(r#""annotations":{"#);
    for i in 0..annotations {
        m.push('"');
        short_name(i, &mut m);
        m.push_str(r#"":"","#);
    }
    m.push_str(r#""org.opencontainers.image.title":"channels/stable"}}]}"#);
    m
}

/// Peak memory of `berth check` on `lab` against a registry serving `manifest` as the
/// tag `os:stable` (whose pointer blob never finishes, so the child is alive, with its
/// high-water mark, once it has read the manifest).
fn check_peak(lab: &Lab, name: &str, manifest: &str, digest: &str) -> u64 {
    let www = lab.tmp.path().join(name);
    fs::create_dir_all(www.join("v2/os/manifests")).unwrap();
    fs::create_dir_all(www.join("v2/os/blobs")).unwrap();
    fs::write(www.join("v2/os/manifests/stable"), manifest).unwrap();
    fs::write(www.join("v2/os/blobs").join(digest), b"x").unwrap();
    let server = Server::start(&www);
    server.set(|f| {
        f.faulty = "v2/os/blobs/".into();
        f.stall_after = Some(0);
    });
    let url = format!("oci://{}/os:stable", server.addr);
    let mut child = lab
        .command()
        .args(["check", &url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    // Requests: GET /v2/, the manifest, then the pointer's blob.
    while server.requests() < 3 {
        if let Some(st) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "{name}: berth check ended ({st}) before asking for the pointer: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            start.elapsed() < Duration::from_mins(2),
            "{name}: berth check did not ask for the pointer in 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let peak = peak_rss(child.id()).expect("the child's VmHWM");
    child.kill().unwrap();
    child.wait().unwrap();
    fs::remove_dir_all(&www).unwrap();
    peak
}

#[test]
fn hostile_manifests_under_the_cap_are_read_within_the_memory_budget() {
    let lab = Lab::new();
    let v1 = lab.commit("1.0", &[]);
    lab.install(&v1, &[]);
    lab.booted(&v1[..16], "default");
    let digest = format!("sha256:{}", "ab".repeat(32));

    // Millions of layers with no title (nothing of them is kept), and hundreds of
    // thousands with a title and a digest (the most a manifest can make Berth keep).
    let untitled = r#"{"digest":""},"#.repeat(2_300_000);
    let mut titled = String::new();
    let mut i = 0u32;
    while titled.len() < 32_500_000 {
        let _ = write!(
            titled,
            r#"{{"digest":"{digest}","annotations":{{"org.opencontainers.image.title":"o/{i}"}}}},"#
        );
        i += 1;
    }
    let cases = [
        ("annotations", manifest("", ANNOTATIONS, &digest)),
        ("untitled-layers", manifest(&untitled, 0, &digest)),
        ("titled-layers", manifest(&titled, 0, &digest)),
    ];
    drop((untitled, titled));
    let mut failed = Vec::new();
    for (name, m) in &cases {
        assert!(
            m.len() < format::oci::MANIFEST_MAX && m.len() > 30 << 20,
            "{name}: {} bytes, not just under the cap",
            m.len()
        );
        let peak = check_peak(&lab, name, m, &digest);
        eprintln!(
            "berth check, {name} ({} bytes): peak RSS {} KiB",
            m.len(),
            peak >> 10
        );
        if peak >= BUDGET {
            failed.push(format!("{name}: {} MiB", peak >> 20));
        }
    }
    assert!(
        failed.is_empty(),
        "over the {} MiB budget: {failed:?}",
        BUDGET >> 20
    );
}
