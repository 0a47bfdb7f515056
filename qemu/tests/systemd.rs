//! The health-gated commit on a real systemd: a Debian bookworm root filesystem with
//! systemd as init (`ci/fetch-rootfs.sh systemd`), the static `berth` and the units of
//! `systemd/`, booted under QEMU by berth-init as a trial. Nobody logs in:
//! - a trial whose health check passes is committed by `berth-health.service` in the
//!   boot that tries it;
//! - a trial whose check fails is rolled back and the machine reboots into the default,
//!   which records why.
//!
//! A test unit ordered after the health unit prints `berth status --json` on the serial
//! console and powers off. `x86_64` only (the amd64 rootfs); root only (debootstrap's
//! tree holds root-owned files).
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use qemu_tests::{Disk, TARGETS, Target, bin, cache, run, skip, workspace};
use serde_json::Value;

/// The report unit: after the health check has succeeded, say what runs and power off.
const REPORT_UNIT: &str = "[Unit]
Description=Berth test: report on the console and power off
Requires=berth-health.service
After=berth-health.service

[Service]
Type=oneshot
StandardOutput=journal+console
ExecStart=/bin/sh -c 'echo \"BERTH-TEST: release $(cat /etc/berth-release) health $(systemctl is-active berth-health.service)\"; echo \"BERTH-TEST: status $(berth status --json)\"'
ExecStartPost=/bin/systemctl --no-block poweroff

[Install]
WantedBy=multi-user.target
";

/// A repository and its signing keys in a scratch directory.
struct Lab {
    target: Target,
    dir: tempfile::TempDir,
    repo: PathBuf,
    keys: PathBuf,
}

impl Lab {
    fn new(target: Target) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-systemd-")
            .tempdir_in(workspace().join("target"))
            .unwrap();
        let (repo, keys) = (dir.path().join("repo"), dir.path().join("keys"));
        run(Command::new(bin("berth-image"))
            .args(["keygen", "--out"])
            .arg(&keys));
        Self {
            target,
            dir,
            repo,
            keys,
        }
    }

    /// Commits `tree` as release `release`, after setting the release and its health
    /// check's exit status (the only differences between the releases).
    fn commit(&self, tree: &Path, release: &str, check_exit: u8) -> String {
        fs::write(tree.join("etc/berth-release"), release).unwrap();
        fs::write(
            tree.join("etc/berth/health.d/10-test"),
            format!("#!/bin/sh\necho \"BERTH-TEST: health check of {release}: exit {check_exit}\" >/dev/console\nexit {check_exit}\n"),
        )
        .unwrap();
        run(Command::new(bin("berth-image"))
            .args(["commit", "--repo"])
            .arg(&self.repo)
            .arg("--tree")
            .arg(tree)
            .args(["--version", release]))
        .trim()
        .to_owned()
    }

    /// A disk image with `layout` (`berth-image disk` arguments), in directory `name`.
    fn disk(&self, name: &str, layout: &[&str]) -> Disk {
        let d = self.dir.path().join(name);
        fs::create_dir_all(&d).unwrap();
        let out = run(Command::new(bin("berth-image"))
            .args(["disk", "--json", "--board", self.target.board, "--repo"])
            .arg(&self.repo)
            .args(self.target.disk_inputs())
            .args(layout)
            .arg("-o")
            .arg(d.join("disk.img")));
        Disk {
            info: serde_json::from_str(&out).unwrap(),
            dir: d,
        }
    }
}

/// The root filesystem: the systemd rootfs, `berth`, the units enabled and a health
/// check (its release and exit status are set by [`Lab::commit`]).
fn tree(lab: &Lab) -> PathBuf {
    let t = lab.dir.path().join("tree");
    run(Command::new("cp")
        .arg("-a")
        .arg(cache().join("rootfs-bookworm-systemd"))
        .arg(&t));
    // What a device image would leave out, to keep the disk small.
    for d in [
        "usr/share/doc",
        "usr/share/man",
        "usr/share/locale",
        "usr/share/info",
    ] {
        let _ = fs::remove_dir_all(t.join(d));
    }
    let berth = workspace().join("target/x86_64-unknown-linux-musl/device/berth");
    fs::copy(&berth, t.join("usr/bin/berth"))
        .unwrap_or_else(|e| panic!("{}: {e} (ci/check-init.sh builds it)", berth.display()));
    // berth-init mounts the physical sysroot here; debootstrap does not make it.
    fs::create_dir(t.join("sysroot")).unwrap();
    let keys = t.join("usr/lib/berth/keys");
    fs::create_dir_all(&keys).unwrap();
    fs::copy(lab.keys.join("berth.pub"), keys.join("berth.pub")).unwrap();
    let units = t.join("etc/systemd/system");
    for u in ["berth-health.service", "berth-agent.service"] {
        fs::copy(workspace().join("systemd").join(u), units.join(u)).unwrap();
    }
    fs::write(units.join("berth-test-report.service"), REPORT_UNIT).unwrap();
    // `systemctl enable`, by hand: the [Install] sections' links.
    for (dir, unit) in [
        ("multi-user.target.wants", "berth-health.service"),
        ("boot-complete.target.requires", "berth-health.service"),
        ("multi-user.target.wants", "berth-test-report.service"),
    ] {
        fs::create_dir_all(units.join(dir)).unwrap();
        std::os::unix::fs::symlink(
            format!("/etc/systemd/system/{unit}"),
            units.join(dir).join(unit),
        )
        .unwrap();
    }
    // No getty on the serial console: nobody logs in, and without udev its device unit
    // would never appear.
    for unit in ["serial-getty@ttyS0.service", "getty@tty1.service"] {
        std::os::unix::fs::symlink("/dev/null", units.join(unit)).unwrap();
    }
    let checks = t.join("etc/berth/health.d");
    fs::create_dir_all(&checks).unwrap();
    fs::write(checks.join("10-test"), "").unwrap();
    fs::set_permissions(checks.join("10-test"), fs::Permissions::from_mode(0o755)).unwrap();
    t
}

/// `berth status --json` as the booted system printed it.
fn status(serial: &str) -> Value {
    let line = serial
        .lines()
        .find_map(|l| l.split("BERTH-TEST: status ").nth(1))
        .unwrap_or_else(|| panic!("no status on the console:\n{serial}"));
    serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line}"))
}

fn role(s: &Value, role: &str) -> Option<String> {
    s["deployments"]
        .as_array()?
        .iter()
        .find(|d| d[role] == true)
        .and_then(|d| d["name"].as_str().map(str::to_owned))
}

#[test]
fn systemd_health_unit_commits_a_healthy_trial_and_rolls_back_a_sick_one() {
    let t = TARGETS[0];
    let name = "systemd_health_unit_commits_a_healthy_trial_and_rolls_back_a_sick_one";
    if skip(t, name) {
        return;
    }
    if !cache()
        .join("rootfs-bookworm-systemd/etc/os-release")
        .exists()
        && testkit::missing(name, "the systemd rootfs (ci/fetch-rootfs.sh systemd)")
    {
        return;
    }
    let lab = Lab::new(t);
    let tree = tree(&lab);
    let v1 = lab.commit(&tree, "sd-1", 0);
    let good = lab.commit(&tree, "sd-2", 0);
    let sick = lab.commit(&tree, "sd-3", 1);

    // A healthy trial: committed in the boot that tries it.
    let disk = lab.disk(
        "healthy",
        &["--commit", &v1, "--trial", &good, "--tries", "2"],
    );
    let boot = disk.boot("");
    assert!(
        boot.shows("BERTH-TEST: health check of sd-2: exit 0"),
        "{}",
        boot.serial
    );
    assert!(
        boot.shows("BERTH-TEST: release sd-2 health active"),
        "{}",
        boot.serial
    );
    let s = status(&boot.serial);
    assert_eq!(role(&s, "default"), Some(disk.name_of(&good)), "{s}");
    assert_eq!(role(&s, "previous"), Some(disk.name_of(&v1)), "{s}");
    assert_eq!(role(&s, "trial"), None, "{s}");
    println!(
        "systemd: healthy trial committed in one boot of {} s",
        boot.wall.as_secs()
    );

    // A sick trial: rolled back, and the reboot lands on the default.
    let disk = lab.disk("sick", &["--commit", &v1, "--trial", &sick, "--tries", "2"]);
    let first = disk.boot("");
    assert!(
        first.shows("BERTH-TEST: health check of sd-3: exit 1"),
        "{}",
        first.serial
    );
    assert!(
        !first.shows("BERTH-TEST: release"),
        "no report from a sick trial:\n{}",
        first.serial
    );
    let second = disk.boot("");
    assert!(
        second.shows("BERTH-TEST: release sd-1 health active"),
        "{}",
        second.serial
    );
    let s = status(&second.serial);
    assert_eq!(role(&s, "default"), Some(disk.name_of(&v1)), "{s}");
    assert_eq!(role(&s, "trial"), None, "{s}");
    assert_eq!(s["last_rollback"]["from"], disk.name_of(&sick), "{s}");
    assert_eq!(s["last_rollback"]["reason"], "manual", "{s}");
    println!(
        "systemd: sick trial rolled back in {} s, default booted in {} s",
        first.wall.as_secs(),
        second.wall.as_secs()
    );
}
