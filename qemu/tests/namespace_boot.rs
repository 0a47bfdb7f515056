//! berth-init really boots deployments, as PID 1 of a fresh PID and mount namespace:
//! - direct mode: chrooted into a sysroot directory, it assembles the root and pivots;
//! - initramfs mode: chrooted into a tmpfs holding only itself, it finds the sysroot
//!   filesystem on a loop device by path or by `LABEL=`, mounts it, assembles the root
//!   and switches with `MS_MOVE` + chroot. (`PARTUUID=` needs a partitioned disk; loop
//!   partition scanning does not create partitions on this host's kernel, so that path
//!   is left to the QEMU boots; its GPT parsing is unit-tested in `format::probe`.)
//!
//! The deployment's init (a static probe) reports what it sees. Needs root, gcc, the
//! loop driver, sfdisk/mkfs.ext4/debugfs and the static device build of berth-init
//! (`ci/check-init.sh`). Kernel modules are never loaded on the host: the initramfs
//! here has no module list.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use format::record::{DeploymentName, Record};
use testkit::skip_unless_root;

fn shim() -> Option<PathBuf> {
    let p = testkit::workspace().join("target/x86_64-unknown-linux-musl/device/berth-init");
    if p.exists() {
        return Some(p);
    }
    testkit::missing(
        "namespace boot",
        &format!("{} is missing (run ci/check-init.sh)", p.display()),
    );
    None
}

/// Runs the shim copied to `root/berth-init` as PID 1 of new PID and mount namespaces,
/// with the sysroot directory as its root (bind-mounted onto itself, so it is a mount
/// point as a real root is). Returns stdout and a report for assertion messages.
fn boot_in_namespace(root: &Path) -> (String, String) {
    let script = format!(
        "mount --make-rprivate / && mount --bind {0} {0} && cd {0} && exec chroot . /berth-init",
        root.display()
    );
    let out = Command::new("timeout")
        .args([
            "-k", "5", "60", "unshare", "--mount", "--pid", "--fork", "sh", "-c", &script,
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let report = format!(
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (stdout, report)
}

/// A scratch directory with the static probe init compiled into it.
fn probe_init(tmp: &Path) -> PathBuf {
    let probe = tmp.join("probe-init");
    let cc = Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(&probe)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/probe-init.c"))
        .output()
        .unwrap();
    assert!(
        cc.status.success(),
        "gcc: {}",
        String::from_utf8_lossy(&cc.stderr)
    );
    probe
}

fn name(s: &str) -> DeploymentName {
    DeploymentName::new(s.as_bytes()).unwrap()
}

/// `tmp/sysroot` with one deployment per name (the probe as its init), a record
/// (default, optional trial with tries, generation) as copy A, and, for booting it in a
/// chroot, the shim at `/berth-init`. Returns the sysroot and the probe.
fn sysroot(
    tmp: &Path,
    shim: Option<&Path>,
    names: &[&str],
    record: (&str, Option<(&str, u8)>, u64),
) -> (PathBuf, PathBuf) {
    let probe = probe_init(tmp);
    let root = tmp.join("sysroot");
    fs::create_dir_all(root.join("berth/boot")).unwrap();
    for n in names {
        deployment(&root, n, &probe);
    }
    let (default, trial, generation) = record;
    let rec = Record {
        generation,
        default: Some(name(default)),
        previous: None,
        trial: trial.map(|t| name(t.0)),
        tries_left: trial.map_or(0, |t| t.1),
        last_rollback: None,
    };
    fs::write(root.join("berth/boot/record.a"), rec.encode()).unwrap();
    if let Some(shim) = shim {
        fs::copy(shim, root.join("berth-init")).unwrap();
    }
    (root, probe)
}

fn deployment(root: &Path, name: &str, probe: &Path) {
    let d = root.join("berth/deploy").join(name);
    for dir in ["etc", "var", "run", "dev", "proc", "sys", "sysroot", "sbin"] {
        fs::create_dir_all(d.join(dir)).unwrap();
    }
    fs::write(d.join("etc/hostname"), format!("{name}\n")).unwrap();
    fs::copy(probe, d.join("sbin/init")).unwrap();
    fs::set_permissions(d.join("sbin/init"), fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn direct_mode_pivots_into_the_deployment() {
    if skip_unless_root("direct_mode_pivots_into_the_deployment") {
        return;
    }
    let Some(shim) = shim() else { return };
    if !std::env::consts::ARCH.eq("x86_64") {
        eprintln!("SKIPPED: the static shim under test is the x86_64 build");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // v2 is on trial with 2 tries; v1 is the default.
    let (root, _) = sysroot(
        tmp.path(),
        Some(&shim),
        &["v1", "v2"],
        ("v1", Some(("v2", 2)), 1),
    );

    let (stdout, report) = boot_in_namespace(&root);
    let has = |needle: &str| stdout.lines().any(|l| l.contains(needle));

    assert!(
        has("PROBE-INIT pid=1 argv0=/sbin/init"),
        "the deployment's init ran as PID 1:\n{report}"
    );
    assert!(
        has("HOSTNAME v2"),
        "the trial deployment was booted:\n{report}"
    );
    assert!(
        stdout.lines().any(|l| l.starts_with("MOUNT / ")
            && l.contains("opts=ro")
            && l.ends_with("/berth/deploy/v2")),
        "root is the read-only deployment:\n{report}"
    );
    assert!(
        has("MOUNT /etc fstype=overlay"),
        "/etc is an overlay:\n{report}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("MOUNT /var ") && l.ends_with("/berth/state/var")),
        "/var is persistent state:\n{report}"
    );
    assert!(has("MOUNT /run fstype=tmpfs"), "/run is a tmpfs:\n{report}");
    assert!(
        stdout.lines().any(|l| l.starts_with("MOUNT /sysroot ")
            && l.contains("opts=rw")
            && l.ends_with("/sysroot")),
        "the physical sysroot is at /sysroot, writable:\n{report}"
    );
    assert!(
        has("SYSROOT-RECORD visible"),
        "/sysroot shows the sysroot:\n{report}"
    );
    assert!(
        has("WRITE /etc/written-by-probe ok") && has("WRITE /var/written-by-probe ok"),
        "/etc and /var are writable:\n{report}"
    );
    assert!(
        has("WRITE /written-to-root Read-only file system"),
        "the deployment is read-only:\n{report}"
    );
    let json_line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("BOOTJSON "))
        .unwrap_or("");
    let boot: serde_json::Value =
        serde_json::from_str(json_line).unwrap_or_else(|e| panic!("boot.json ({e}):\n{report}"));
    assert_eq!(boot["choice"]["deployment"], "v2");
    assert_eq!(boot["reason"], "trial");
    assert_eq!(boot["tries_left"], 1);
    assert_eq!(boot["mode"], "direct");

    // On the sysroot: the try was counted durably before the boot, in the other copy;
    // /etc and /var changes landed in persistent state, not in the deployment.
    let b = Record::decode(&fs::read(root.join("berth/boot/record.b")).unwrap()).unwrap();
    assert_eq!(
        (b.generation, b.tries_left, b.trial),
        (2, 1, Some(name("v2")))
    );
    assert!(
        root.join("berth/state/etc/v2/upper/written-by-probe")
            .exists()
    );
    assert!(root.join("berth/state/var/written-by-probe").exists());
    assert!(!root.join("berth/deploy/v2/etc/written-by-probe").exists());
}

#[test]
fn a_trial_that_fails_to_assemble_falls_back_in_the_same_boot() {
    if skip_unless_root("a_trial_that_fails_to_assemble_falls_back_in_the_same_boot") {
        return;
    }
    let Some(shim) = shim() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (root, _) = sysroot(
        tmp.path(),
        Some(&shim),
        &["good", "broken"],
        ("good", Some(("broken", 3)), 4),
    );
    // The trial has an init but no /run to mount a tmpfs on: assembly fails midway.
    fs::remove_dir(root.join("berth/deploy/broken/run")).unwrap();

    let (stdout, report) = boot_in_namespace(&root);
    assert!(
        stdout.contains("HOSTNAME good"),
        "fell back to the default in the same boot:\n{report}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("MOUNT / ") && l.ends_with("/berth/deploy/good")),
        "{report}"
    );
    let json_line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("BOOTJSON "))
        .unwrap_or("");
    let boot: serde_json::Value =
        serde_json::from_str(json_line).unwrap_or_else(|e| panic!("boot.json ({e}):\n{report}"));
    assert_eq!(boot["reason"], "default");
    assert_eq!(boot["fallbacks"][0]["event"], "trial-unbootable");
    // The try was counted (generation 5), then the trial dropped with its reason (6).
    let newest = ["record.a", "record.b"]
        .iter()
        .filter_map(|f| Record::decode(&fs::read(root.join("berth/boot").join(f)).ok()?).ok())
        .max_by_key(|r| r.generation)
        .unwrap();
    assert_eq!(newest.generation, 6, "{newest:?}");
    assert_eq!(newest.trial, None);
    assert_eq!(newest.default, Some(name("good")));
    assert_eq!(
        newest.last_rollback.map(|r| (r.from, r.reason.as_str())),
        Some((name("broken"), "trial-unbootable"))
    );
}

/// An ext4 image of the sysroot `dir`, labelled `LABEL`, attached to a loop device.
struct LoopDisk {
    dev: String,
    image: PathBuf,
}

const LABEL: &str = "berth-sysroot";

impl LoopDisk {
    fn new(dir: &Path, image: &Path) -> Self {
        let run = |cmd: &mut Command| {
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "{cmd:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        run(Command::new("mkfs.ext4")
            .args(["-F", "-q", "-L", LABEL, "-d"])
            .arg(dir)
            .arg(image)
            .arg("64M"));
        let dev = run(Command::new("losetup").args(["-f", "--show"]).arg(image));
        Self {
            dev,
            image: image.to_path_buf(),
        }
    }

    /// Reads a file from the sysroot filesystem without mounting it.
    fn read(&self, path: &str) -> Vec<u8> {
        let out = Command::new("debugfs")
            .arg("-R")
            .arg(format!("cat {path}"))
            .arg(&self.image)
            .output()
            .unwrap();
        out.stdout
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
        let _ = fs::remove_file(&self.image);
    }
}

/// Boots the static shim from a tmpfs "initramfs" holding only /init and a baked
/// command line, as PID 1 of new PID and mount namespaces.
fn boot_from_initramfs(tmp: &Path, shim: &Path, cmdline: &str) -> (String, String) {
    let initramfs = tmp.join("initramfs");
    fs::create_dir_all(&initramfs).unwrap();
    let script = format!(
        "set -e; mount --make-rprivate /; mount -t tmpfs initramfs {r}; cp {shim} {r}/init; \
         mkdir -p {r}/etc/berth; printf '%s' '{cmdline}' > {r}/etc/berth/cmdline; cd {r}; exec chroot . /init",
        r = initramfs.display(),
        shim = shim.display(),
    );
    let out = Command::new("timeout")
        .args([
            "-k", "5", "60", "unshare", "--mount", "--pid", "--fork", "sh", "-c", &script,
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let report = format!(
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (stdout, report)
}

#[test]
fn initramfs_mode_finds_the_sysroot_by_path_and_label_and_switches_root() {
    if skip_unless_root("initramfs_mode_finds_the_sysroot_by_path_and_label_and_switches_root") {
        return;
    }
    let Some(shim) = shim() else { return };
    if !Path::new("/dev/loop-control").exists() {
        assert!(
            std::env::var_os("BERTH_STRICT").is_none(),
            "no loop device support"
        );
        eprintln!("SKIPPED: no /dev/loop-control");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // The shim runs from the initramfs here, not from the sysroot.
    let (root, _) = sysroot(tmp.path(), None, &["v1", "v2"], ("v1", Some(("v2", 2)), 1));
    let disk = LoopDisk::new(&root, &tmp.path().join("disk.img"));

    for (boot, spec) in [
        (1, format!("berth.root={}", disk.dev)),
        (2, format!("berth.root=LABEL={LABEL}")),
    ] {
        let (stdout, report) =
            boot_from_initramfs(tmp.path(), &shim, &format!("{spec} berth.root_wait=5"));
        let has = |needle: &str| stdout.lines().any(|l| l.contains(needle));
        assert!(
            has("PROBE-INIT pid=1 argv0=/sbin/init"),
            "boot {boot}: init ran as PID 1:\n{report}"
        );
        assert!(
            has("HOSTNAME v2"),
            "boot {boot}: the trial was booted:\n{report}"
        );
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("MOUNT / fstype=ext4 opts=ro")
                    && l.ends_with("root=/berth/deploy/v2")),
            "boot {boot}:\n{report}"
        );
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("MOUNT /sysroot fstype=ext4 opts=rw")
                    && l.ends_with("root=/")),
            "boot {boot}: sysroot at /sysroot:\n{report}"
        );
        assert!(
            has("MOUNT /etc fstype=overlay") && has("SYSROOT-RECORD visible"),
            "boot {boot}:\n{report}"
        );
        let json_line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("BOOTJSON "))
            .unwrap_or("");
        let j: serde_json::Value = serde_json::from_str(json_line)
            .unwrap_or_else(|e| panic!("boot.json ({e}):\n{report}"));
        assert_eq!(j["mode"], "initramfs", "{report}");
        assert_eq!(j["tries_left"], 2 - boot, "{report}");
    }
    // The counted tries reached the disk: generation 2 in copy B, 3 in copy A.
    let a = Record::decode(&disk.read("/berth/boot/record.a")).unwrap();
    let b = Record::decode(&disk.read("/berth/boot/record.b")).unwrap();
    assert_eq!((a.generation, a.tries_left), (3, 0));
    assert_eq!((b.generation, b.tries_left), (2, 1));
    assert_eq!(
        disk.read("/berth/state/etc/v2/upper/written-by-probe"),
        b"x\n"
    );
}

#[test]
fn nothing_bootable_execs_the_rescue_shell() {
    if skip_unless_root("nothing_bootable_execs_the_rescue_shell") {
        return;
    }
    let Some(shim) = shim() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (root, probe) = sysroot(tmp.path(), Some(&shim), &["broken"], ("broken", None, 1));
    // The default has no init and there is no previous deployment; the sysroot has a
    // rescue shell (the probe, as /bin/sh).
    fs::remove_file(root.join("berth/deploy/broken/sbin/init")).unwrap();
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::copy(&probe, root.join("bin/sh")).unwrap();
    fs::set_permissions(root.join("bin/sh"), fs::Permissions::from_mode(0o755)).unwrap();

    let (stdout, report) = boot_in_namespace(&root);
    assert!(
        stdout.contains("PROBE-INIT pid=1 argv0=/bin/sh"),
        "the rescue shell runs as PID 1:\n{report}"
    );
    assert!(
        stdout.contains("BOOTJSON missing"),
        "no deployment was assembled:\n{report}"
    );
}
