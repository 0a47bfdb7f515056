//! `berth-image push` to a real OCI registry (Debian's docker-registry, distribution 2.8,
//! on 127.0.0.1) and `berth update oci://…` from it, also through a link that drops.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

mod common;

use common::Lab;
use testkit::proxy::Proxy;
use testkit::registry::Registry;

fn push(
    lab: &Lab,
    reference: &str,
    commit: &str,
    from: &[&str],
    extra: &[&str],
) -> serde_json::Value {
    let mut args = lab.release_args("push", commit, from);
    args.push("--json".into());
    args.extend(extra.iter().map(Into::into));
    args.push(reference.into());
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsString::as_os_str).collect();
    serde_json::from_str(&testkit::run_ok(&testkit::bin("berth-image"), &args)).unwrap()
}

fn downloaded(out: &str) -> (u64, String) {
    let tail = out
        .split("; ")
        .find(|s| s.contains("bytes downloaded for the"))
        .unwrap_or_else(|| panic!("no download summary in {out:?}"));
    let mut words = tail.split(' ');
    let n = words.next().unwrap().parse().unwrap();
    let kind = tail
        .split("for the ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    (n, kind.to_owned())
}

/// v1 installed and booted; v2 adds a file, v3 changes another.
fn lab() -> (Lab, [String; 3]) {
    let lab = Lab::new();
    let big: Vec<u8> = (0..150_000u32).flat_map(u32::to_le_bytes).collect();
    let mut big3 = big.clone();
    big3[300_000..300_100].fill(7);
    let noise = testkit::noise(200_000);
    let v1 = lab.commit("1.0", &[("usr/lib/big.bin", &big)]);
    let v2 = lab.commit(
        "2.0",
        &[("usr/lib/big.bin", &big), ("usr/share/noise", &noise)],
    );
    let v3 = lab.commit(
        "3.0",
        &[("usr/lib/big.bin", &big3), ("usr/share/noise", &noise)],
    );
    lab.install(&v1, &[]);
    lab.booted(&v1[..16], "default");
    (lab, [v1, v2, v3])
}

#[test]
fn push_then_update_from_the_registry_and_again_through_a_link_that_drops() {
    let registry = Registry::start();
    let (lab, [v1, v2, v3]) = lab();
    let tag = format!("{}/fleet/device:stable", registry.host());

    // The first push of the tag: no delta; its serial is the time in milliseconds.
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let first = push(&lab, &tag, &v2, &[], &[]);
    let s1 = first["serial"].as_u64().unwrap();
    assert!(u128::from(s1) >= started, "{first}");
    assert_eq!(first["uploaded"], first["blobs"]);
    let first_manifest = get_manifest(&registry);
    let url = format!("oci://{tag}");
    let out = lab.berth(&["check", &url, "--json"]);
    common::offers_an_update(&out);
    let offer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (offer["channel"].as_str(), offer["serial"].as_u64()),
        (Some("stable"), Some(s1))
    );
    // v1 shares most of v2's bytes but has no delta to it: an object pull.
    let out = lab.ok(&["update", &url]);
    let (_, kind) = downloaded(&out);
    assert_eq!(kind, "objects", "{out}");
    assert_eq!(
        Lab::role(&lab.status(), "trial").as_deref(),
        Some(&v2[..16])
    );
    lab.ok(&["fsck"]);

    // The second push reads the first's serial and v2 from the registry: a higher
    // serial, a delta from v2 and, asked for, one from v1. Blobs the registry has are
    // not sent again. At 5 layers a manifest, the tag now names an image index of
    // several manifests.
    let second = push(&lab, &tag, &v3, &[&v1], &["--manifest-layers", "5"]);
    let s2 = second["serial"].as_u64().unwrap();
    assert!(s2 > s1, "{second}");
    let index: serde_json::Value = serde_json::from_slice(&get_manifest(&registry)).unwrap();
    assert_eq!(index["mediaType"], format::oci::INDEX_TYPE);
    assert!(index["manifests"].as_array().unwrap().len() > 2, "{index}");
    let uploaded = second["uploaded"].as_u64().unwrap();
    assert!(uploaded < second["blobs"].as_u64().unwrap(), "{second}");

    // A second device on v1, through a proxy that cuts every connection after 24 KiB.
    let lab2 = device_like(&lab, &v1);
    let proxy = Proxy::start(registry.addr);
    proxy.cut_every(Some(24 << 10));
    let through = format!("oci://{}/fleet/device:stable", proxy.host());
    let out = lab2.ok(&["update", &through, "--channel", "stable"]);
    let (got, kind) = downloaded(&out);
    assert_eq!(kind, "delta", "{out}");
    assert!(
        got > 3 * (24 << 10),
        "the delta ({got} bytes) must span several cuts"
    );
    assert_eq!(
        Lab::role(&lab2.status(), "trial").as_deref(),
        Some(&v3[..16])
    );
    lab2.ok(&["fsck"]);
    // Resumed, not restarted: what crossed the proxy is the delta, the pointer and the
    // manifest, and a response head per request (each well under 1 KiB).
    let requests = got / (24 << 10) + 16;
    assert!(
        proxy.sent() < got + (64 << 10) + requests * 1024,
        "{} bytes sent through the proxy for a {got}-byte delta",
        proxy.sent()
    );

    // The first device boots v2 and marks it good: v3 comes as the delta from v2.
    lab.booted(&v2[..16], "trial");
    lab.ok(&["mark-good"]);
    let out = lab.ok(&["update", &url]);
    assert_eq!(downloaded(&out).1, "delta", "{out}");
    lab.fails(
        &["update", &url, "--channel", "beta"],
        "differs from the tag stable",
    );

    // The registry replays the first manifest at the tag (its blobs are still there):
    // a validly signed pointer with the first serial, refused after the second.
    put_manifest(&registry, &first_manifest);
    lab.fails(&["check", &url], &format!("is older than serial {s2}"));
    // A push onto the rolled-back tag still issues a serial above the second, which
    // the device takes.
    let third = push(&lab, &tag, &v3, &[], &[]);
    assert!(third["serial"].as_u64().unwrap() > s2, "{third}");
    let out = lab.berth(&["check", &url]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(matches!(out.status.code(), Some(0 | 100)), "{err}");
}

fn get_manifest(registry: &Registry) -> Vec<u8> {
    get_manifest_of(registry, "stable")
}

/// The manifest (or index) at `tag` of fleet/device.
fn get_manifest_of(registry: &Registry, tag: &str) -> Vec<u8> {
    let mut resp = ureq::get(format!(
        "http://{}/v2/fleet/device/manifests/{tag}",
        registry.host()
    ))
    .header("Accept", format::oci::MANIFEST_ACCEPT)
    .call()
    .unwrap();
    resp.body_mut().read_to_vec().unwrap()
}

fn put_manifest(registry: &Registry, body: &[u8]) {
    let resp = ureq::put(format!(
        "http://{}/v2/fleet/device/manifests/stable",
        registry.host()
    ))
    .header("Content-Type", format::oci::MANIFEST_TYPE)
    .send(body)
    .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
}

/// A second device at `commit`, with the build host of `lab`.
fn device_like(lab: &Lab, commit: &str) -> Lab {
    let tmp = tempfile::tempdir().unwrap();
    let other = Lab {
        repo: lab.repo.clone(),
        keys: lab.keys.clone(),
        sysroot: tmp.path().join("sysroot"),
        boot_json: tmp.path().join("boot.json"),
        tmp,
    };
    other.install(commit, &[]);
    other.booted(&commit[..16], "default");
    other
}

#[test]
fn a_registry_behind_token_authentication_needs_the_credentials_and_renews_its_tokens() {
    let registry = Registry::start();
    let (lab, [_, v2, _]) = lab();
    push(
        &lab,
        &format!("{}/fleet/device:stable", registry.host()),
        &v2,
        &[],
        &[],
    );
    // base64 of "fleet:secret"; each token is good for 3 requests.
    let basic = "ZmxlZXQ6c2VjcmV0";
    let gate = testkit::gate::TokenGate::start(registry.addr, 3, Some(basic));
    let url = format!("oci://{}/fleet/device:stable", gate.host());

    // Without credentials the token service refuses: nothing changes on the device.
    let record = lab.record_bytes();
    lab.fails(&["check", &url], "the registry asks for credentials");
    let out = lab.berth(&["update", &url]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("pass --registry-auth FILE"), "{err}");
    assert_eq!(lab.record_bytes(), record);

    // With them (as `docker login` writes them), the update goes through, asking for a
    // new token whenever one runs out.
    let auth = lab.tmp.path().join("config.json");
    std::fs::write(
        &auth,
        format!(r#"{{"auths":{{"{}":{{"auth":"{basic}"}}}}}}"#, gate.host()),
    )
    .unwrap();
    let out = lab.ok(&["update", &url, "--registry-auth", auth.to_str().unwrap()]);
    assert_eq!(downloaded(&out).1, "objects", "{out}");
    assert_eq!(
        Lab::role(&lab.status(), "trial").as_deref(),
        Some(&v2[..16])
    );
    assert!(
        gate.issued() >= 3,
        "{} tokens for a pull of many requests",
        gate.issued()
    );
    lab.ok(&["fsck"]);
}

/// `berth-image push --json` of `commit` to `reference`, with the names of `hosts`.
fn push_as_by_name(
    hosts: &testkit::hosts::Hosts,
    lab: &Lab,
    commit: &str,
    reference: &str,
    extra: &[&std::path::Path],
) -> std::process::Output {
    let mut c = hosts.command(&testkit::bin("berth-image"));
    c.arg("push")
        .arg("--repo")
        .arg(&lab.repo)
        .arg("--commit")
        .arg(commit)
        .arg("--key")
        .arg(lab.keys.join("berth.key"))
        .arg("--json");
    for pair in extra.chunks(2) {
        c.args(pair);
    }
    c.arg(reference).output().unwrap()
}

/// `berth-image push` and `berth update oci://` to a registry that is what a fleet
/// runs: HTTPS with its own CA, token authentication with credentials (tokens good for
/// 4 requests), reached by name. The name resolves to 127.0.0.1 only inside the
/// commands' own mount namespaces (`testkit::hosts`).
#[test]
fn push_and_update_over_https_to_a_registry_that_wants_credentials() {
    if testkit::skip_unless_root("push_and_update_over_https_to_a_registry_that_wants_credentials")
    {
        return;
    }
    let registry = Registry::start();
    let basic = "ZmxlZXQ6c2VjcmV0"; // fleet:secret
    let gate = testkit::gate::TokenGate::start(registry.addr, 4, Some(basic));
    let ca = testkit::tls::Ca::new("fleet CA");
    let front = testkit::tls::TlsServer::front(gate.addr, &ca.issue(&["registry.test"]));
    let host = format!("registry.test:{}", front.addr.port());
    gate.set_realm(&format!("https://{host}/token"));
    let hosts = testkit::hosts::Hosts::new(&["registry.test"]);

    let (lab, [_, v2, _]) = lab();
    let ca_pem = lab.tmp.path().join("ca.pem");
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    let auth = lab.tmp.path().join("config.json");
    std::fs::write(
        &auth,
        format!(r#"{{"auths":{{"{host}":{{"auth":"{basic}"}}}}}}"#),
    )
    .unwrap();
    let reference = format!("{host}/fleet/device:stable");
    let push = |extra: &[&std::path::Path]| push_as_by_name(&hosts, &lab, &v2, &reference, extra);
    let (ca_flag, auth_flag) = (
        std::path::Path::new("--ca"),
        std::path::Path::new("--registry-auth"),
    );

    // Without the fleet's CA: refused at the handshake, before anything is sent.
    let out = push(&[auth_flag, &auth]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("not issued by a trusted certificate authority"),
        "{err}"
    );
    // Without credentials: the token service refuses.
    let out = push(&[ca_flag, &ca_pem]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("pass --registry-auth FILE"), "{err}");
    assert_eq!(gate.issued(), 0, "no token without credentials");
    // With both: pushed, renewing tokens on the way.
    let out = push(&[ca_flag, &ca_pem, auth_flag, &auth]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pushed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(pushed["serial"].as_u64().unwrap() > 0);
    assert!(pushed["uploaded"].as_u64().unwrap() > 4);
    let tokens = gate.issued();
    assert!(tokens >= 2, "{tokens} tokens for a push of many requests");

    // The device updates from it over the same HTTPS, with the same credentials.
    let url = format!("oci://{reference}");
    let device = |extra: &[&str]| {
        hosts
            .command(common::berth())
            .arg("--sysroot")
            .arg(&lab.sysroot)
            .arg("--boot-json")
            .arg(&lab.boot_json)
            .args(["update", &url])
            .args(extra)
            .output()
            .unwrap()
    };
    let record = lab.record_bytes();
    let out = device(&["--ca", ca_pem.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("pass --registry-auth FILE"), "{err}");
    assert_eq!(
        lab.record_bytes(),
        record,
        "refused: the device is unchanged"
    );
    let out = device(&[
        "--ca",
        ca_pem.to_str().unwrap(),
        "--registry-auth",
        auth.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(downloaded(&text).1, "objects", "{text}");
    assert_eq!(
        Lab::role(&lab.status(), "trial").as_deref(),
        Some(&v2[..16])
    );
    assert!(gate.issued() > tokens, "the device got its own tokens");
    assert!(front.connections() > 0);
    lab.ok(&["fsck"]);
}

/// `berth-image push` of `commit` to `reference`, signed with `key`: its output.
fn push_with_key(
    lab: &Lab,
    reference: &str,
    commit: &str,
    key: &std::path::Path,
) -> std::process::Output {
    testkit::run(
        &testkit::bin("berth-image"),
        &[
            "push".as_ref(),
            "--repo".as_ref(),
            lab.repo.as_os_str(),
            "--commit".as_ref(),
            commit.as_ref(),
            "--key".as_ref(),
            key.as_os_str(),
            reference.as_ref(),
        ],
    )
}

/// The registry is storage that anyone with push access writes: a push carries on the
/// tag's serial only from a pointer its own key signed, and otherwise changes nothing.
#[test]
fn a_push_carries_on_only_a_pointer_signed_by_its_own_key() {
    let registry = Registry::start();
    let (lab, [_, v2, v3]) = lab();
    let reference = format!("{}/fleet/device:stable", registry.host());
    let first = push(&lab, &reference, &v2, &[], &[])["serial"]
        .as_u64()
        .unwrap();
    let before = get_manifest(&registry);

    let other = lab.tmp.path().join("other-keys");
    testkit::run_ok(
        &testkit::bin("berth-image"),
        &["keygen".as_ref(), "--out".as_ref(), other.as_os_str()],
    );
    let out = push_with_key(&lab, &reference, &v3, &other.join("berth.key"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("channels/stable is not signed by") && err.contains("refusing"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(get_manifest(&registry), before, "the tag is unchanged");

    // Nor the pointer of another channel, signed by the right key but copied from the
    // tag "beta" to "stable" under the title channels/stable.
    let beta = format!("{}/fleet/device:beta", registry.host());
    push(&lab, &beta, &v3, &[], &[]);
    let beta_manifest = String::from_utf8(get_manifest_of(&registry, "beta"))
        .unwrap()
        .replace("\"channels/beta\"", "\"channels/stable\"");
    put_manifest(&registry, beta_manifest.as_bytes());
    let out = push_with_key(&lab, &reference, &v3, &lab.keys.join("berth.key"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(r#"holds the pointer of channel "beta", not "stable""#),
        "{err}"
    );
    put_manifest(&registry, &before);

    // The rightful key carries on, with a higher serial.
    let pushed = push(&lab, &reference, &v3, &[], &[]);
    assert!(pushed["serial"].as_u64().unwrap() > first, "{pushed}");
}

/// A registry whose `/v2/` answers anyone (public repositories beside private ones)
/// asks for credentials only on the repository: push and pull answer that `401`'s
/// challenge instead of taking the registry for open.
#[test]
fn credentials_asked_only_by_the_repository_are_given() {
    let registry = Registry::start();
    let basic = "ZmxlZXQ6c2VjcmV0"; // fleet:secret
    let gate = testkit::gate::TokenGate::start(registry.addr, 100, Some(basic));
    gate.open_root();
    let (lab, [_, v2, _]) = lab();
    let auth = lab.tmp.path().join("config.json");
    std::fs::write(
        &auth,
        format!(r#"{{"auths":{{"{}":{{"auth":"{basic}"}}}}}}"#, gate.host()),
    )
    .unwrap();
    let reference = format!("{}/fleet/device:stable", gate.host());
    let pushed = push(
        &lab,
        &reference,
        &v2,
        &[],
        &["--registry-auth", auth.to_str().unwrap()],
    );
    assert!(pushed["uploaded"].as_u64().unwrap() > 4, "{pushed}");
    let after_push = gate.issued();
    assert!(
        after_push >= 1,
        "the push answered the repository's challenge"
    );

    let url = format!("oci://{reference}");
    let out = lab.ok(&["update", &url, "--registry-auth", auth.to_str().unwrap()]);
    assert_eq!(downloaded(&out).1, "objects", "{out}");
    assert!(gate.issued() > after_push, "the pull answered it too");
    assert_eq!(
        Lab::role(&lab.status(), "trial").as_deref(),
        Some(&v2[..16])
    );
}
