//! `berth update https://…` and `berth check https://…`: a static repository from
//! `berth-image publish` behind a TLS front (`testkit::tls`) on 127.0.0.1 whose
//! certificate a CA made for the test issues. With that CA (`--ca`, or `SSL_CERT_FILE`)
//! the update goes through; with the system's roots alone, for another name, or
//! expired, berth stops at the handshake with one line naming the URL and the cause,
//! and the sysroot is left as it was, byte for byte.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::Lab;
use testkit::http::Server;
use testkit::tls::{Ca, TlsServer};

/// A device on v1, a repository whose channel offers v2 (with a delta from v1) on a
/// plain server, the fleet's CA and its certificate in `ca.pem`.
struct Fleet {
    lab: Lab,
    v1: String,
    v2: String,
    www: PathBuf,
    ca: Ca,
    ca_pem: PathBuf,
}

fn fleet() -> Fleet {
    let lab = Lab::new();
    let big: Vec<u8> = (0..60_000u32).flat_map(u32::to_le_bytes).collect();
    let mut big2 = big.clone();
    big2[500..600].fill(7);
    let v1 = lab.commit("1.0", &[("usr/lib/big.bin", &big)]);
    let v2 = lab.commit(
        "2.0",
        &[
            ("usr/lib/big.bin", &big2),
            ("usr/share/noise", &testkit::noise(30_000)),
        ],
    );
    lab.install(&v1, &[]);
    lab.booted(&v1[..16], "default");
    let www = lab.publish(&v2, &[&v1]);
    let ca = Ca::new("Berth test fleet CA");
    let ca_pem = lab.tmp.path().join("ca.pem");
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    Fleet {
        lab,
        v1,
        v2,
        www,
        ca,
        ca_pem,
    }
}

/// Runs berth on the lab's device with `env` set and no TLS or proxy settings inherited
/// from the test's environment: without `env`, the roots are the system's own, and no
/// request can be sent through a proxy (nothing but 127.0.0.1 is contacted).
fn berth(lab: &Lab, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(common::berth());
    for var in [
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied())
        .arg("--sysroot")
        .arg(&lab.sysroot)
        .arg("--boot-json")
        .arg(&lab.boot_json)
        .args(args)
        .output()
        .unwrap()
}

/// Everything of the sysroot, its scratch directory, times and inodes included.
fn snapshot(lab: &Lab) -> BTreeMap<Vec<u8>, testkit::EntryInfo> {
    testkit::scan(&lab.sysroot)
}

/// Runs berth expecting exit 1 with one line holding every `needle`, and the sysroot
/// untouched (every entry, times and inodes included).
fn refused(lab: &Lab, args: &[&str], env: &[(&str, &Path)], needles: &[&str]) -> String {
    let before = snapshot(lab);
    let out = berth(lab, args, env);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "berth {args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    for n in needles {
        assert!(err.contains(n), "berth {args:?}: {err:?} lacks {n:?}");
    }
    assert!(
        snapshot(lab) == before,
        "berth {args:?} changed the sysroot"
    );
    err
}

#[test]
fn an_update_over_https_with_the_fleet_ca_makes_the_deployment() {
    let f = fleet();
    let plain = Server::start(&f.www);
    let front = TlsServer::start(&plain, &f.ca.issue(&["localhost"]));
    let url = format!("{}/", front.url());
    let ca = f.ca_pem.to_str().unwrap();
    let pointer = std::fs::read(f.www.join("channels/stable")).unwrap();
    let (body, _) = format::channel::split_file(&pointer).unwrap();
    let p = format::channel::Pointer::decode(body).unwrap();
    let delta = p
        .delta_from(&format::ObjectId::parse_hex(f.v1.as_bytes()).unwrap())
        .unwrap()
        .total_len;

    // Connections dropped behind the TLS front every 20 KiB: each is resumed over a new
    // TLS session, and no byte crosses twice.
    plain.set(|x| x.drop_every = Some(20 << 10));
    let out = berth(
        &f.lab,
        &["update", &url, "--channel", "stable", "--ca", ca],
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("bytes downloaded for the delta update"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{delta} bytes downloaded")),
        "{stdout}"
    );
    assert_eq!(plain.sent(), pointer.len() as u64 + delta);
    // Every request went through the TLS front to the plain server, more than one per
    // file since the drops.
    assert!(
        plain.requests() > 2 + delta / (20 << 10),
        "{}",
        plain.requests()
    );
    assert_eq!(front.connections(), plain.requests());

    let s = f.lab.status();
    assert_eq!(Lab::role(&s, "trial").as_deref(), Some(&f.v2[..16]));
    assert_eq!(f.lab.next_boot().0, f.v2[..16]);
    let deployed = f.lab.sysroot.join("berth/deploy").join(&f.v2[..16]);
    assert_eq!(
        std::fs::read_to_string(deployed.join("etc/release")).unwrap(),
        "2.0"
    );
    assert_eq!(
        std::fs::read(deployed.join("usr/share/noise")).unwrap(),
        testkit::noise(30_000)
    );
    f.lab.ok(&["fsck"]);

    // Run again: nothing new on the channel.
    let out = berth(
        &f.lab,
        &["update", &url, "--channel", "stable", "--ca", ca],
        &[],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("already up to date"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_over_https_reports_the_offer_and_writes_nothing() {
    let f = fleet();
    let plain = Server::start(&f.www);
    let front = TlsServer::start(&plain, &f.ca.issue(&["localhost", "127.0.0.1"]));
    let ca = f.ca_pem.to_str().unwrap();
    let before = snapshot(&f.lab);
    let out = berth(
        &f.lab,
        &[
            "check",
            &front.url(),
            "--channel",
            "stable",
            "--json",
            "--ca",
            ca,
        ],
        &[],
    );
    common::offers_an_update(&out);
    let offer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(offer["available"], true);
    assert_eq!(offer["kind"], "delta");
    assert_eq!(offer["version"], "2.0");
    assert_eq!(offer["commit"], f.v2);
    assert!(snapshot(&f.lab) == before, "check changed the sysroot");

    // By address as well: the certificate names 127.0.0.1 too.
    let by_ip = format!("https://127.0.0.1:{}", front.addr.port());
    let out = berth(
        &f.lab,
        &["check", &by_ip, "--channel", "stable", "--ca", ca],
        &[],
    );
    common::offers_an_update(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("update available on channel stable"));
}

#[test]
fn the_system_roots_alone_refuse_a_private_ca_and_nothing_changes() {
    let f = fleet();
    let plain = Server::start(&f.www);
    let front = TlsServer::start(&plain, &f.ca.issue(&["localhost"]));
    let url = front.url();
    // The system's roots (SSL_CERT_FILE and SSL_CERT_DIR unset: /etc/ssl/certs).
    for cmd in [
        &["update", &url, "--channel", "stable"][..],
        &["check", &url, "--channel", "stable"][..],
    ] {
        refused(
            &f.lab,
            cmd,
            &[],
            &[
                &format!("{url}/channels/stable: TLS: "),
                "not issued by a trusted certificate authority (unknown issuer; trusted: the system roots)",
            ],
        );
    }
    // Another CA's certificate given with --ca is no better.
    let other = f.lab.tmp.path().join("other-ca.pem");
    std::fs::write(&other, Ca::new("another fleet").pem()).unwrap();
    let other_arg = other.to_str().unwrap();
    refused(
        &f.lab,
        &["update", &url, "--channel", "stable", "--ca", other_arg],
        &[],
        &[
            &url,
            "unknown issuer; trusted: only the CAs in",
            "other-ca.pem",
        ],
    );
    // The handshake failed each time: no request reached the repository.
    assert!(front.connections() >= 3);
    assert_eq!(plain.requests(), 0);
}

#[test]
fn ssl_cert_file_replaces_the_system_roots() {
    let f = fleet();
    let plain = Server::start(&f.www);
    let front = TlsServer::start(&plain, &f.ca.issue(&["localhost"]));
    let url = front.url();
    // SSL_CERT_FILE names the fleet's CA: verified without --ca.
    let out = berth(
        &f.lab,
        &["check", &url, "--channel", "stable"],
        &[("SSL_CERT_FILE", &f.ca_pem)],
    );
    common::offers_an_update(&out);
    // --ca wins over SSL_CERT_FILE: the system's bundle named there does not help.
    refused(
        &f.lab,
        &[
            "check",
            &url,
            "--channel",
            "stable",
            "--ca",
            "/etc/ssl/certs/ca-certificates.crt",
        ],
        &[("SSL_CERT_FILE", &f.ca_pem)],
        &["unknown issuer"],
    );
    // Roots that cannot be read are said to be missing, before any request.
    let missing = f.lab.tmp.path().join("no-such-bundle.pem");
    refused(
        &f.lab,
        &["check", &url, "--channel", "stable"],
        &[("SSL_CERT_FILE", &missing)],
        &[&url, "no system root certificates", "no-such-bundle.pem"],
    );
}

#[test]
fn a_certificate_for_another_name_or_an_expired_one_is_refused() {
    let f = fleet();
    let plain = Server::start(&f.www);
    let ca = f.ca_pem.to_str().unwrap();

    let wrong = TlsServer::start(&plain, &f.ca.issue(&["repo.berth.invalid"]));
    let url = wrong.url();
    refused(
        &f.lab,
        &["update", &url, "--channel", "stable", "--ca", ca],
        &[],
        &[
            &format!("{url}/channels/stable: TLS: "),
            "the server's certificate is for another name",
            "\"localhost\"",
            "repo.berth.invalid",
        ],
    );

    let expired = TlsServer::start(&plain, &f.ca.issue_expired(&["localhost"]));
    let url = expired.url();
    refused(
        &f.lab,
        &["update", &url, "--channel", "stable", "--ca", ca],
        &[],
        &[&url, "certificate expired"],
    );
    assert_eq!(plain.requests(), 0);
}
