//! `berth agent` against the hawkBit DDI test server (`testkit::ddi`), and `berth health`:
//! a rollout through reboot to `closed`+`success`, a failed health check ending in
//! `closed`+`failure`, cancels before and during the download and after the trial,
//! download-only actions and maintenance windows, a wrong token, a 429 storm, a forged
//! artifact, a hostile server, and a final feedback that outlives a server outage.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use common::Lab;
use testkit::ddi::{ActionState, Assign, Handling, Hawkbit};

const TENANT: &str = "DEFAULT";
const DEVICE: &str = "dev-01";

/// A device at 1.0 with 2.0 released (a full update and the delta from 1.0, and a
/// delta from an unrelated commit that the device must pass over), and a server.
struct Fleet {
    lab: Lab,
    hb: Hawkbit,
    token: PathBuf,
    v1: String,
    v2: String,
    artifacts: Vec<(String, Vec<u8>)>,
}

impl Fleet {
    fn new() -> Self {
        let lab = Lab::new();
        let v0 = lab.commit("0.9", &[("usr/share/zero", b"zero")]);
        let v1 = lab.commit("1.0", &[("usr/share/big", &testkit::noise(300_000))]);
        let mut big = testkit::noise(300_000);
        // A change that does not compress: the delta is ~60 KB, downloaded in pieces
        // when the server drops connections.
        let fresh = testkit::noise(360_000);
        big[1000..61_000].copy_from_slice(&fresh[300_000..]);
        let v2 = lab.commit("2.0", &[("usr/share/big", &big)]);
        lab.install(&v1, &[]);
        lab.booted(&v1[..16], "default");
        let full = lab.delta(None, &v2, "full.berth", &[]);
        let delta = lab.delta(Some(&v1), &v2, "v1-v2.berth", &[]);
        let other = lab.delta(Some(&v0), &v2, "v0-v2.berth", &[]);
        let artifacts = [
            ("v0-v2.berth", other),
            ("full.berth", full),
            ("v1-v2.berth", delta),
        ]
        .into_iter()
        .map(|(n, p)| (n.to_owned(), fs::read(p).unwrap()))
        .collect();
        let hb = Hawkbit::start(TENANT);
        hb.add_target(DEVICE, "s3cret");
        let token = lab.tmp.path().join("token");
        fs::write(&token, "s3cret\n").unwrap();
        // Named on every run, so that the machine's /etc/berth/agent.toml stays out.
        fs::write(lab.tmp.path().join("base.toml"), "board = \"qemu-test\"\n").unwrap();
        Self {
            lab,
            hb,
            token,
            v1,
            v2,
            artifacts,
        }
    }

    fn reboot_marker(&self) -> PathBuf {
        self.lab.tmp.path().join("rebooted")
    }

    /// `berth agent --once` with `extra` flags.
    fn agent(&self, extra: &[&str]) -> Output {
        let marker = format!("touch {}", self.reboot_marker().display());
        self.lab
            .command()
            .args([
                "agent",
                "--once",
                "--server",
                &self.hb.url(),
                "--tenant",
                TENANT,
            ])
            .args(["--controller-id", DEVICE, "--token-file"])
            .arg(&self.token)
            .args(["--reboot-command", &marker, "--config"])
            .arg(self.lab.tmp.path().join("base.toml"))
            .args(extra)
            .output()
            .unwrap()
    }

    /// `berth agent --once` that must succeed; its stderr (the agent's log).
    fn cycle(&self) -> String {
        let out = self.agent(&[]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "berth agent --once: {err}");
        err
    }

    /// The reboot into the trial: berth-init's report names it.
    fn boot_into(&self, commit: &str) {
        self.lab.booted(&commit[..16], "trial");
    }

    fn role(&self, role: &str) -> Option<String> {
        Lab::role(&self.lab.status(), role)
    }

    /// The executions of the action's history, `finished` appended when not `none`.
    fn said(&self, id: u64) -> Vec<String> {
        self.hb
            .history(id)
            .iter()
            .filter(|e| e.progress.is_none())
            .map(|e| match e.finished.as_str() {
                "none" => e.execution.clone(),
                f => format!("{}+{f}", e.execution),
            })
            .collect()
    }

    fn artifact_gets(&self) -> usize {
        self.hb
            .requests()
            .iter()
            .filter(|r| r.starts_with("GET ") && r.contains("/artifacts/"))
            .count()
    }
}

#[test]
fn a_rollout_reports_success_only_once_the_trial_is_committed() {
    let f = Fleet::new();
    let id = f.hb.assign(DEVICE, Assign::soft(f.artifacts.clone()));
    let log = f.cycle();
    assert!(
        log.contains("downloaded v1-v2.berth"),
        "took the delta from the running commit: {log}"
    );
    let attrs = f.hb.attributes(DEVICE);
    assert_eq!(attrs["version"], "1.0");
    assert_eq!(attrs["commit"], f.v1);
    assert_eq!(attrs["board"], "qemu-test");
    assert_eq!(attrs["architecture"], std::env::consts::ARCH);
    assert!(attrs.contains_key("berth_version"));
    assert_eq!(f.role("trial").as_deref(), Some(&f.v2[..16]));
    assert!(f.reboot_marker().exists(), "the reboot command ran");
    assert_eq!(f.said(id), ["proceeding"]);
    assert!(
        f.hb.history(id).last().unwrap().details[0].contains("written, rebooting"),
        "{:?}",
        f.hb.history(id)
    );
    // Before the reboot, and booted into the trial but not yet committed: nothing to say.
    f.cycle();
    f.boot_into(&f.v2);
    f.cycle();
    assert_eq!(f.said(id), ["proceeding"]);
    assert_eq!(f.hb.state(id), ActionState::Running);
    // The health unit commits it; the next cycle reports success, then the new attributes.
    let none = f.lab.tmp.path().join("no-checks.d");
    fs::create_dir(&none).unwrap();
    let out = f.lab.ok(&[
        "health",
        "--checks",
        none.to_str().unwrap(),
        "--health-check",
        "true",
    ]);
    assert!(out.contains("1 checks passed"), "{out}");
    f.cycle();
    assert_eq!(f.said(id), ["proceeding", "closed+success"]);
    assert_eq!(f.hb.state(id), ActionState::Finished);
    assert_eq!(f.hb.attributes(DEVICE)["version"], "2.0");
    assert!(!f.lab.sysroot.join("berth/state/agent").exists());
    // Nothing more to do: another cycle sends nothing.
    let requests = f.hb.requests().len();
    f.cycle();
    assert_eq!(
        f.hb.requests()[requests..],
        ["GET /DEFAULT/controller/v1/dev-01"]
    );
    assert_eq!(f.said(id), ["proceeding", "closed+success"]);
}

#[test]
fn a_failed_health_check_rolls_back_and_reports_failure_with_the_reason() {
    let f = Fleet::new();
    let id = f.hb.assign(DEVICE, Assign::soft(f.artifacts.clone()));
    f.cycle();
    f.boot_into(&f.v2);
    let checks = f.lab.tmp.path().join("health.d");
    fs::create_dir(&checks).unwrap();
    fs::write(
        checks.join("10-app"),
        "#!/bin/sh\necho app is down >&2\nexit 3\n",
    )
    .unwrap();
    fs::set_permissions(
        checks.join("10-app"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let marker = f.lab.tmp.path().join("health-rebooted");
    let out = f
        .lab
        .command()
        .args(["health", "--checks"])
        .arg(&checks)
        .args(["--reboot-command", &format!("touch {}", marker.display())])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("10-app: failed"), "{said}");
    assert!(marker.exists(), "rebooted after the rollback");
    assert_eq!(f.role("default").as_deref(), Some(&f.v1[..16]));
    assert_eq!(f.role("trial"), None);
    // The device boots the default again; the agent reports the failure.
    f.lab.booted(&f.v1[..16], "default");
    f.cycle();
    assert_eq!(f.said(id), ["proceeding", "closed+failure"]);
    let why = f.hb.history(id).last().unwrap().details[0].clone();
    assert!(
        why.contains(&format!("rolled back from {}", &f.v2[..16])),
        "{why}"
    );
    assert_eq!(f.hb.state(id), ActionState::Error);
    // A report on an action that has ended (a power cut after the server took it, and
    // no installedBase for a failed one): 410, and it is dropped.
    let state_file = f.lab.sysroot.join("berth/state/agent");
    fs::write(
        &state_file,
        format!("version=1\naction={id}\nphase=report\nfinished=failure\ndetail=again\n"),
    )
    .unwrap();
    let log = f.cycle();
    assert!(log.contains("410"), "{log}");
    assert!(!state_file.exists());
    assert_eq!(f.said(id), ["proceeding", "closed+failure"]);
    // Not booted into a trial: nothing to decide.
    let out = f.lab.ok(&["health", "--checks", "/nonexistent"]);
    assert!(out.contains("nothing to decide"), "{out}");
}

#[test]
fn a_checks_directory_someone_named_must_exist() {
    let f = Fleet::new();
    f.hb.assign(DEVICE, Assign::soft(f.artifacts.clone()));
    f.cycle();
    f.boot_into(&f.v2);
    let config = f.lab.tmp.path().join("agent.toml");
    for (flags, shown) in [
        (
            vec!["--checks", "/nonexistent/health.d"],
            "/nonexistent/health.d",
        ),
        (
            vec!["--config", config.to_str().unwrap()],
            "/nonexistent/from-config.d",
        ),
    ] {
        fs::write(
            &config,
            "[health]\nchecks = \"/nonexistent/from-config.d\"\n",
        )
        .unwrap();
        let before = f.lab.manifest();
        let out = f
            .lab
            .command()
            .arg("health")
            .args(&flags)
            .args(["--health-check", "true"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(shown), "{err}");
        assert_eq!(f.role("trial").as_deref(), Some(&f.v2[..16]));
        assert_eq!(f.lab.manifest(), before, "nothing changed");
    }
}

#[test]
fn cancels_are_taken_before_the_trial_and_rejected_after() {
    let f = Fleet::new();
    let before = f.lab.manifest();
    let id = f.hb.assign(DEVICE, Assign::soft(f.artifacts.clone()));
    f.hb.cancel(id);
    f.cycle();
    assert_eq!(f.hb.state(id), ActionState::Canceled);
    assert_eq!(
        f.lab.manifest(),
        before,
        "a cancel before the download changes nothing"
    );
    assert_eq!(f.artifact_gets(), 0);

    // During the download: the server cancels after the first request of the file
    // (its resume then gets 404, as hawkBit answers for a canceled action).
    let id = f.hb.assign(DEVICE, Assign::soft(f.artifacts.clone()));
    f.hb.drop_every(Some(3000));
    // Three heads (one request each), then the first piece of the delta.
    f.hb.cancel_after_artifact_gets(id, 4);
    let log = f.cycle();
    assert_eq!(f.hb.state(id), ActionState::Canceled, "{log}");
    assert!(
        log.contains("stopped") && log.contains("404"),
        "cut mid-download: {log}"
    );
    assert_eq!(f.role("trial"), None);
    let tmp = f.lab.sysroot.join("berth/repo/tmp");
    let left: Vec<_> = fs::read_dir(&tmp)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !left
            .iter()
            .any(|n| n.to_string_lossy().starts_with("download-")),
        "the canceled download is removed: {left:?}"
    );
    f.hb.drop_every(None);

    // After the trial is written: rejected, and the action runs on.
    let id = f.hb.assign(DEVICE, Assign::soft(f.artifacts.clone()));
    f.cycle();
    assert_eq!(f.role("trial").as_deref(), Some(&f.v2[..16]));
    f.hb.cancel(id);
    f.cycle();
    let last = f.hb.history(id).last().unwrap().clone();
    assert_eq!(
        (last.execution.as_str(), last.on_cancel),
        ("rejected", true)
    );
    assert_eq!(f.hb.state(id), ActionState::Running);
    assert_eq!(f.role("trial").as_deref(), Some(&f.v2[..16]));
}

#[test]
fn a_closed_window_downloads_now_and_installs_when_it_opens() {
    let f = Fleet::new();
    let id = f.hb.assign(
        DEVICE,
        Assign {
            window: Some(false),
            ..Assign::soft(f.artifacts.clone())
        },
    );
    f.cycle();
    assert_eq!(
        f.role("trial"),
        None,
        "not installed while the window is closed"
    );
    assert_eq!(f.said(id), ["proceeding"]);
    let said = f.hb.history(id).last().unwrap().details[0].clone();
    assert!(said.contains("maintenance window"), "{said}");
    // Polling while the window stays closed does nothing more.
    f.cycle();
    assert_eq!(f.said(id), ["proceeding"]);
    let gets = f.artifact_gets();
    f.hb.open_window(id);
    f.cycle();
    assert_eq!(f.role("trial").as_deref(), Some(&f.v2[..16]));
    // Only the three heads were read again; the update was not downloaded twice.
    assert_eq!(f.artifact_gets() - gets, 3);
    assert_eq!(f.said(id), ["proceeding", "proceeding"]);

    // A download-only action: stored, `downloaded` ends it, nothing installed.
    let g = Fleet::new();
    let id = g.hb.assign(
        DEVICE,
        Assign {
            update: Handling::Skip,
            ..Assign::soft(g.artifacts.clone())
        },
    );
    g.cycle();
    assert_eq!(g.said(id), ["downloaded"]);
    assert_eq!(g.hb.state(id), ActionState::Finished);
    assert_eq!(g.role("trial"), None);
    // `berth update` of the same file then installs it.
    let out = g.lab.ok(&[
        "update",
        g.lab.tmp.path().join("v1-v2.berth").to_str().unwrap(),
    ]);
    assert!(out.contains(&g.v2[..16]), "{out}");
}

#[test]
fn a_wrong_token_a_forged_artifact_and_a_hostile_server_change_nothing() {
    let f = Fleet::new();
    let before = f.lab.manifest();
    fs::write(&f.token, "wrong\n").unwrap();
    let out = f.agent(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("401") && err.contains("token"), "{err}");
    fs::write(&f.token, "s3cret\n").unwrap();

    // Signed by a key the device does not trust: refused before download, reported.
    let forged = f.lab.delta_signed(
        Some(&f.v1),
        &f.v2,
        "forged.berth",
        &[],
        &f.lab.untrusted_key(),
    );
    let id = f.hb.assign(
        DEVICE,
        Assign::soft(vec![("forged.berth".into(), fs::read(forged).unwrap())]),
    );
    f.cycle();
    assert_eq!(f.said(id), ["closed+failure"]);
    let why = f.hb.history(id)[0].details[0].clone();
    assert!(
        why.contains("forged.berth") && why.contains("signature"),
        "{why}"
    );
    assert_eq!(f.lab.manifest(), before);

    let huge = vec![b' '; 300 << 10];
    for (body, needle) in [
        (&b"{not json"[..], "controller/v1"),
        (
            br#"{"config":{"polling":{"sleep":"00:00:01"}},"_links":{"deploymentBase":{"href":"http://192.0.2.1/x"}}}"#,
            "off the server",
        ),
        (br#"{"config":{"polling":{"sleep":"soon"}}}"#, "HH:MM:SS"),
        (&huge[..], "larger than"),
    ] {
        f.hb.hostile(Some((200, body.to_vec())));
        let out = f.agent(&[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{err:?} lacks {needle:?}");
    }
    f.hb.hostile(None);
    assert_eq!(f.lab.manifest(), before);

    // A deployment with a word the protocol does not have: refused, and reported on
    // the action its link names.
    let id = f.hb.assign(DEVICE, Assign::soft(f.artifacts.clone()));
    f.hb.garble_deployment(Some(
        br#"{"id":"2","deployment":{"download":"sometimes","update":"attempt","chunks":[]}}"#
            .to_vec(),
    ));
    let out = f.agent(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("unknown variant"), "{err}");
    f.hb.garble_deployment(None);
    assert_eq!(f.said(id), ["closed+failure"]);
    assert!(f.hb.history(id)[0].details[0].contains("sometimes"));

    // Artifacts deleted on the server mid-download: one 404, then failure, no retry loop.
    let id = f.hb.assign(DEVICE, Assign::soft(f.artifacts.clone()));
    f.hb.drop_every(Some(3000));
    f.hb.lose_artifacts_after_gets(id, f.artifact_gets() as u64 + 4);
    let gets = f.artifact_gets();
    f.cycle();
    f.hb.drop_every(None);
    assert_eq!(f.said(id), ["closed+failure"]);
    let why = f.hb.history(id).last().unwrap().details[0].clone();
    assert!(why.contains("404") && why.contains("v1-v2.berth"), "{why}");
    assert_eq!(
        f.artifact_gets() - gets,
        5,
        "three heads, one piece, one 404"
    );
    assert_eq!(f.lab.manifest(), before);
}

#[test]
fn the_agent_backs_off_through_a_429_storm() {
    let f = Fleet::new();
    f.hb.storm(3);
    let marker = format!("touch {}", f.reboot_marker().display());
    let mut child = f
        .lab
        .command()
        .args(["agent", "--server", &f.hb.url(), "--tenant", TENANT])
        .args(["--controller-id", DEVICE, "--token-file"])
        .arg(&f.token)
        .args([
            "--reboot-command",
            &marker,
            "--retry-delay",
            "0.1",
            "--config",
        ])
        .arg(f.lab.tmp.path().join("base.toml"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let began = Instant::now();
    while f.hb.attributes(DEVICE).is_empty() && began.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !f.hb.attributes(DEVICE).is_empty(),
        "never got through: {err}"
    );
    assert_eq!(err.matches("HTTP 429").count(), 3, "{err}");
    assert!(err.contains("trying again in"), "{err}");
}

#[test]
fn a_final_feedback_outlives_a_server_outage() {
    let f = Fleet::new();
    let id = f.hb.assign(DEVICE, Assign::soft(f.artifacts.clone()));
    f.cycle();
    f.boot_into(&f.v2);
    f.lab.ok(&["mark-good"]);
    // The server is down when the device comes back: the verdict is kept.
    f.hb.hostile(Some((503, Vec::new())));
    let out = f.agent(&[]);
    assert_eq!(out.status.code(), Some(1));
    let state = fs::read_to_string(f.lab.sysroot.join("berth/state/agent")).unwrap();
    assert!(
        state.contains("phase=report") && state.contains("finished=success"),
        "{state}"
    );
    // Back, but the action's status quota is spent (hawkBit's 1,000 entries): 429, and
    // the report is kept.
    f.hb.hostile(None);
    f.hb.set_status_max(f.hb.history(id).len());
    let out = f.agent(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("429"), "{err}");
    assert!(
        fs::read_to_string(f.lab.sysroot.join("berth/state/agent"))
            .unwrap()
            .contains("phase=report")
    );
    f.hb.set_status_max(testkit::ddi::STATUS_MAX);
    f.cycle();
    assert_eq!(f.said(id), ["proceeding", "closed+success"]);
    assert!(!f.lab.sysroot.join("berth/state/agent").exists());
    // The server took it, but the power went before the state file was removed: the
    // base's installedBase names the action, and nothing is sent again.
    let state_file = f.lab.sysroot.join("berth/state/agent");
    fs::write(&state_file, &state).unwrap();
    let requests = f.hb.requests().len();
    f.cycle();
    assert_eq!(
        f.hb.requests()[requests..],
        ["GET /DEFAULT/controller/v1/dev-01"]
    );
    assert!(!state_file.exists());
    // A damaged state file is an error that names it, never a silent loss.
    fs::write(&state_file, "version=9\n").unwrap();
    let out = f.agent(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("berth/state/agent"), "{err}");
}

#[test]
fn the_configuration_file_says_what_the_flags_would() {
    let f = Fleet::new();
    let config = f.lab.tmp.path().join("agent.toml");
    let marker = f.reboot_marker();
    fs::write(
        &config,
        format!(
            "server = \"{}\"\ntenant = \"{TENANT}\"\ncontroller_id = \"{DEVICE}\"\ntoken_file = \"{}\"\nboard = \"rpi4\"\ntries = 5\nmax_rate = 30000\nreboot_command = \"touch {}\"\n\n[health]\ncommands = [\"true\"]\ntimeout = 20\n",
            f.hb.url(),
            f.token.display(),
            marker.display()
        ),
    )
    .unwrap();
    let id = f.hb.assign(DEVICE, Assign::soft(f.artifacts.clone()));
    let began = Instant::now();
    let out = f
        .lab
        .command()
        .args(["agent", "--once", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let took = began.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(f.hb.attributes(DEVICE)["board"], "rpi4");
    let status = f.lab.status();
    let trial = status["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["trial"] == true)
        .unwrap();
    assert_eq!(trial["tries_left"], 5);
    assert!(marker.exists());
    // The cap held the ~60 KB delta to 30,000 bytes a second: two seconds at least.
    let size = f.artifacts[2].1.len() as u128;
    assert!(
        took.as_millis() >= size * 1000 / 30_000 - 200,
        "{size} bytes in {took:?} under a 30,000 B/s cap"
    );
    // Progress: at most one a second and one per 5% step.
    let progress: Vec<u64> =
        f.hb.history(id)
            .iter()
            .filter_map(|e| e.progress.map(|p| p.0))
            .collect();
    assert!(!progress.is_empty());
    assert!(
        progress.len() as u64 <= took.as_secs() + 1,
        "{progress:?} in {took:?}"
    );
    assert!(
        progress.windows(2).all(|w| w[1] >= w[0] + 5),
        "{progress:?}"
    );
    // The health table is read by berth health.
    f.boot_into(&f.v2);
    let none = f.lab.tmp.path().join("no-checks.d");
    fs::create_dir(&none).unwrap();
    let (none, config_s) = (none.to_str().unwrap(), config.to_str().unwrap());
    let out = f
        .lab
        .ok(&["health", "--checks", none, "--config", config_s]);
    assert!(out.contains("1 checks passed"), "{out}");
    f.cycle();
    assert_eq!(f.said(id), ["proceeding", "closed+success"]);

    // A key the agent does not know is an error that names the file and the key.
    fs::write(&config, "server = \"http://127.0.0.1:1\"\npolling = 5\n").unwrap();
    let out = f
        .lab
        .command()
        .args(["agent", "--once", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("agent.toml") && err.contains("polling"),
        "{err}"
    );
    // So is a missing setting.
    fs::write(&config, "server = \"http://127.0.0.1:1\"\n").unwrap();
    let out = f
        .lab
        .command()
        .args(["agent", "--once", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no tenant") && err.contains("--tenant"),
        "{err}"
    );
}

#[test]
fn a_download_that_goes_quiet_is_cut_and_resumed() {
    let f = Fleet::new();
    let id = f.hb.assign(DEVICE, Assign::soft(f.artifacts.clone()));
    f.hb.stall_once(20_000);
    let gets = f.artifact_gets();
    let began = Instant::now();
    let out = f.agent(&["--stall-timeout", "1"]);
    let took = began.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(f.role("trial").as_deref(), Some(&f.v2[..16]));
    assert_eq!(f.said(id), ["proceeding"]);
    // Three heads, the stalled request, its resume.
    assert_eq!(f.artifact_gets() - gets, 5);
    assert!(
        took < Duration::from_secs(30),
        "cut after the stall timeout, not the minute: {took:?}"
    );
}

#[test]
fn a_busy_store_is_tried_again_later_not_reported_as_a_failure() {
    let f = Fleet::new();
    let id = f.hb.assign(DEVICE, Assign::soft(f.artifacts.clone()));
    // Another berth command (here: flock, as one would) holds the store's lock.
    // -o: the lock stays with flock itself, so killing it frees the lock.
    let mut holder = std::process::Command::new("flock")
        .arg("-o")
        .arg(f.lab.sysroot.join("berth/store.lock"))
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = f.agent(&["--wait", "0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(err.contains("holds the lock"), "{err}");
    assert!(f.said(id).is_empty(), "{:?}", f.said(id));
    assert_eq!(f.hb.state(id), ActionState::Running);
    f.cycle();
    assert_eq!(f.role("trial").as_deref(), Some(&f.v2[..16]));
    assert_eq!(f.said(id), ["proceeding"]);
}
