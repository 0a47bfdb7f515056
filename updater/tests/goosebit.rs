//! `berth agent` against goosebit (`goosebit` from the Python Package Index, a
//! hawkBit-DDI-compatible server; `testkit::goosebit`), driven through goosebit's own
//! management API and judged by what goosebit records: a rollout through reboot to
//! `Finished`, a failed health check ending in `Error`, a download resumed across
//! dropped connections, a wrong token and an unknown device refused, a forged file
//! ending in `Error`, and how goosebit takes Berth files (through the plugin in
//! `testkit/goosebit/`). Skipped (a failure under `BERTH_STRICT=1`) when
//! `ci/setup-goosebit.sh` has not installed goosebit.
//!
//! What goosebit does not model, so is not run here (`updater/tests/agent.rs` runs it
//! against the DDI test server): cancels, download-only actions, maintenance windows,
//! soft actions (everything is `forced`), several artifacts per action (one file per
//! software), `410` on an ended action, gateway tokens and sha256 hashes.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Output;

use common::Lab;
use testkit::goosebit::{self, Goosebit};
use testkit::proxy::Proxy;

const DEVICE: &str = "dev-01";
const TOKEN: &str = "s3cret";

/// A device at 1.0 with 2.0 committed, and a goosebit that knows the device.
struct Fleet {
    lab: Lab,
    gb: Goosebit,
    /// The URL the device polls (goosebit's own, or a proxy's before it).
    server: String,
    token: PathBuf,
    v1: String,
    v2: String,
}

impl Fleet {
    /// `None` when goosebit is not installed (a failure under `BERTH_STRICT=1`).
    fn new(test: &str) -> Option<Self> {
        if let Some(why) = goosebit::unavailable() {
            testkit::missing(test, &why);
            return None;
        }
        let (lab, v1, v2) = common::two_releases();
        let gb = Goosebit::start();
        gb.add_device(DEVICE, TOKEN);
        let token = lab.tmp.path().join("token");
        fs::write(&token, format!("{TOKEN}\n")).unwrap();
        // Named on every run, so that the machine's /etc/berth/agent.toml stays out.
        fs::write(lab.tmp.path().join("base.toml"), "board = \"qemu-test\"\n").unwrap();
        Some(Self {
            lab,
            server: gb.url(),
            gb,
            token,
            v1,
            v2,
        })
    }

    fn reboot_marker(&self) -> PathBuf {
        self.lab.tmp.path().join("rebooted")
    }

    /// `berth agent --once` as `device`.
    fn agent_as(&self, device: &str) -> Output {
        let marker = format!("touch {}", self.reboot_marker().display());
        self.lab
            .command()
            .args(["agent", "--once", "--server", &self.server])
            .args(["--tenant", "DEFAULT", "--controller-id", device])
            .arg("--token-file")
            .arg(&self.token)
            .args(["--reboot-command", &marker, "--config"])
            .arg(self.lab.tmp.path().join("base.toml"))
            .output()
            .unwrap()
    }

    /// `berth agent --once` that must succeed; its stderr (the agent's log).
    fn cycle(&self) -> String {
        let out = self.agent_as(DEVICE);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "berth agent --once: {err}\ngoosebit: {}",
            self.gb.log()
        );
        err
    }

    /// The first poll: goosebit asks for the attributes only (and offers nothing
    /// before it has them), and registers the device.
    fn register(&self) {
        assert_eq!(self.gb.state(DEVICE), "Unknown");
        let log = self.cycle();
        assert!(log.contains("attributes"), "{log}");
        assert!(!log.contains("action"), "nothing offered yet: {log}");
        assert_eq!(self.gb.state(DEVICE), "Registered");
    }

    fn role(&self, role: &str) -> Option<String> {
        Lab::role(&self.lab.status(), role)
    }

    fn file(&self, from: Option<&str>, name: &str) -> Vec<u8> {
        fs::read(self.lab.delta(from, &self.v2, name, &[])).unwrap()
    }
}

#[test]
fn a_goosebit_rollout_finishes_only_once_the_trial_is_committed() {
    let Some(f) = Fleet::new("a_goosebit_rollout_finishes_only_once_the_trial_is_committed") else {
        return;
    };
    let sw =
        f.gb.software("v1-v2.berth", &f.file(Some(&f.v1), "v1-v2.berth"));
    // A device added through the API follows the rollouts of feed `default`.
    let rollout = f.gb.rollout("default", sw);
    f.register();

    let log = f.cycle();
    assert!(log.contains("downloaded v1-v2.berth"), "{log}");
    assert_eq!(f.role("trial").as_deref(), Some(&f.v2[..16]));
    assert!(f.reboot_marker().exists(), "the reboot command ran");
    assert_eq!(f.gb.state(DEVICE), "Running");
    let said = f.gb.device_log(DEVICE);
    assert!(said.contains("written, rebooting"), "{said}");

    // Before the reboot, and booted into the trial that is not yet committed: goosebit
    // still offers the action, the device has nothing new to say.
    f.cycle();
    f.lab.booted(&f.v2[..16], "trial");
    f.cycle();
    assert_eq!(f.gb.state(DEVICE), "Running");
    assert_eq!(f.gb.rollout_state(rollout)["success_count"], 0);

    // The health check commits it; the next poll reports the success.
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
    let log = f.cycle();
    assert!(log.contains("reported success"), "{log}");
    let d = f.gb.device(DEVICE);
    assert_eq!(d["last_state"], "Finished", "{d}");
    assert_eq!(d["sw_version"], "2.0", "goosebit records the version");
    assert_eq!(d["progress"], 100);
    let r = f.gb.rollout_state(rollout);
    assert_eq!(r["success_count"], 1, "{r}");
    assert_eq!(r["failure_count"], 0, "{r}");
    assert!(!f.lab.sysroot.join("berth/state/agent").exists());

    // The device runs the rollout's version: goosebit offers nothing more.
    let log = f.cycle();
    assert!(!log.contains("action"), "{log}");
    assert_eq!(f.gb.state(DEVICE), "Finished");
}

#[test]
fn a_failed_health_check_ends_the_goosebit_action_in_error() {
    let Some(f) = Fleet::new("a_failed_health_check_ends_the_goosebit_action_in_error") else {
        return;
    };
    // Assigned to the device alone, and a full update this time.
    let sw = f.gb.software("full.berth", &f.file(None, "full.berth"));
    f.gb.assign(DEVICE, sw);
    f.register();
    let log = f.cycle();
    assert!(log.contains("downloaded full.berth"), "{log}");
    assert_eq!(f.gb.state(DEVICE), "Running");

    f.lab.booted(&f.v2[..16], "trial");
    let checks = f.lab.tmp.path().join("health.d");
    fs::create_dir(&checks).unwrap();
    fs::write(
        checks.join("10-app"),
        "#!/bin/sh\necho app is down >&2\nexit 3\n",
    )
    .unwrap();
    fs::set_permissions(checks.join("10-app"), fs::Permissions::from_mode(0o755)).unwrap();
    let out = f
        .lab
        .command()
        .args(["health", "--checks"])
        .arg(&checks)
        .args(["--reboot-command", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(f.role("trial"), None);
    f.lab.booted(&f.v1[..16], "default");

    let log = f.cycle();
    assert!(log.contains("reported failure"), "{log}");
    let d = f.gb.device(DEVICE);
    assert_eq!(d["last_state"], "Error", "{d}");
    assert_ne!(d["sw_version"], "2.0");
    let said = f.gb.device_log(DEVICE);
    assert!(
        said.contains(&format!("rolled back from {}", &f.v2[..16])),
        "{said}"
    );
    // goosebit offers a device in error nothing until an operator forces it.
    let log = f.cycle();
    assert!(!log.contains("action"), "{log}");
    // Forced: the device does not install again a commit it rolled back from; it
    // reports the same failure (the next cycle), and goosebit drops the force.
    f.gb.force(DEVICE);
    let log = f.cycle();
    assert!(log.contains("known to the record"), "{log}");
    let log = f.cycle();
    assert!(log.contains("reported failure"), "{log}");
    let d = f.gb.device(DEVICE);
    assert_eq!(d["last_state"], "Error", "{d}");
    assert_eq!(d["force_update"], false, "{d}");
    assert_eq!(f.role("trial"), None);
    assert_eq!(f.role("default").as_deref(), Some(&f.v1[..16]));
}

#[test]
fn a_download_from_goosebit_resumes_across_dropped_connections() {
    let Some(mut f) = Fleet::new("a_download_from_goosebit_resumes_across_dropped_connections")
    else {
        return;
    };
    let full = f.file(None, "full.berth");
    let sw = f.gb.software("full.berth", &full);
    f.gb.assign(DEVICE, sw);
    // Every connection through the proxy is cut after 16 KB: only a download that
    // goosebit serves in ranges (`Range`, 206) gets through.
    let proxy = Proxy::start(f.gb.addr);
    let cut = 16_000;
    assert!(full.len() > 4 * cut, "{} bytes", full.len());
    proxy.cut_every(Some(cut as u64));
    f.server = format!("http://{}", proxy.host());
    f.register();
    let log = f.cycle();
    assert!(log.contains("downloaded full.berth"), "{log}");
    assert_eq!(f.role("trial").as_deref(), Some(&f.v2[..16]));
    assert_eq!(f.gb.state(DEVICE), "Running");
}

#[test]
fn goosebit_refuses_a_wrong_token_and_the_device_refuses_a_forged_file() {
    let Some(f) = Fleet::new("goosebit_refuses_a_wrong_token_and_the_device_refuses_a_forged_file")
    else {
        return;
    };
    let before = f.lab.manifest();
    fs::write(&f.token, "wrong\n").unwrap();
    for device in [DEVICE, "dev-unknown"] {
        let out = f.agent_as(device);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("401") && err.contains("token"), "{err}");
    }
    // Strict mode: the refused polls registered nothing.
    assert_eq!(f.gb.state(DEVICE), "Unknown");
    let devices = f.gb.api("GET", "/api/v1/devices", None).json();
    assert_eq!(devices["devices"].as_array().unwrap().len(), 1, "{devices}");
    fs::write(&f.token, format!("{TOKEN}\n")).unwrap();

    // Signed by a key the device does not trust: goosebit takes it (it reads the
    // version only), the device refuses it before downloading it and says why.
    let forged = f.lab.delta_signed(
        Some(&f.v1),
        &f.v2,
        "forged.berth",
        &[],
        &f.lab.untrusted_key(),
    );
    let sw = f.gb.software("forged.berth", &fs::read(forged).unwrap());
    f.gb.assign(DEVICE, sw);
    f.register();
    let log = f.cycle();
    assert!(log.contains("failed"), "{log}");
    assert_eq!(f.gb.state(DEVICE), "Error");
    let said = f.gb.device_log(DEVICE);
    assert!(
        said.contains("forged.berth") && said.contains("signature"),
        "{said}"
    );
    assert_eq!(f.lab.manifest(), before);
}

#[test]
fn goosebit_takes_berth_files_by_their_signed_version() {
    let Some(f) = Fleet::new("goosebit_takes_berth_files_by_their_signed_version") else {
        return;
    };
    let delta = f.file(Some(&f.v1), "v1-v2.berth");
    let sw = f.gb.software("v1-v2.berth", &delta);
    let listed = f.gb.api("GET", "/api/v1/software", None).json();
    let s = &listed["software"][0];
    assert_eq!(s["id"], sw);
    assert_eq!(s["version"], "2.0", "the commit's version: {listed}");
    assert_eq!(s["size"], delta.len());
    assert_eq!(s["name"], "v1-v2.berth");
    // goosebit keeps one file per version and hardware: the full update of the same
    // release is a conflict (so a goosebit release is one file: the full update, or
    // the delta from the release the fleet runs).
    let a = f.gb.upload("full.berth", &f.file(None, "full.berth"));
    assert_eq!(a.status, 409, "{}", String::from_utf8_lossy(&a.body));
    // A damaged Berth file, and a file of no known format, are refused.
    for (name, bytes) in [
        ("cut.berth", delta[..40].to_vec()),
        ("notes.txt", b"not an update\n".to_vec()),
    ] {
        let a = f.gb.upload(name, &bytes);
        assert_eq!(
            a.status,
            422,
            "{name}: {}",
            String::from_utf8_lossy(&a.body)
        );
    }
}
