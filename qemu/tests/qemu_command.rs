//! `berth-image qemu`, as a user runs it: a disk image from `berth-image disk` for the
//! `qemu-x86_64` board, booted from another directory than the repository's (the
//! board is the built-in one, named by DISK.qemu.json beside the image) with the
//! command `disk` printed; the test root filesystem's init reports on the serial
//! console, which is berth-image's stdout, and powers off, and berth-image exits with
//! QEMU's status.
//! `--timeout` cuts a guest that does not power off. Needs root and the caches, as the
//! rest of the VM tier (`skip`).
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

use std::process::{Command, Stdio};
use std::time::Instant;

use qemu_tests::{TARGETS, bin, run, skip, workspace};

#[test]
fn berth_image_qemu_boots_an_image_to_its_serial_console() {
    let t = TARGETS[0];
    if skip(t, "berth_image_qemu_boots_an_image_to_its_serial_console") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("berth-qemu-cmd-")
        .tempdir_in(workspace().join("target"))
        .unwrap();
    let tree = dir.path().join("rootfs");
    run(Command::new("bash")
        .arg(workspace().join("qemu/rootfs/make-rootfs.sh"))
        .arg(t.debian_arch)
        .arg(&tree)
        .arg("qemu-cmd-1"));
    let repo = dir.path().join("repo");
    let commit = run(Command::new(bin("berth-image"))
        .args(["commit", "--repo"])
        .arg(&repo)
        .arg("--tree")
        .arg(&tree)
        .args(["--version", "qemu-cmd-1"]))
    .trim()
    .to_owned();
    let printed = run(Command::new(bin("berth-image"))
        .current_dir(dir.path())
        .args([
            "disk", "--board", t.board, "--repo", "repo", "--commit", &commit,
        ])
        .args(t.disk_inputs())
        .args(["-o", "disk.img"]));
    let suggested = printed
        .lines()
        .skip_while(|l| *l != "boot it with:")
        .nth(1)
        .unwrap_or_else(|| panic!("no command to boot it: {printed}"));
    assert_eq!(
        suggested,
        format!(
            "  berth-image qemu disk.img --loader-dir {}",
            t.loader_dir().display()
        ),
        "{printed}"
    );

    let started = Instant::now();
    let out = Command::new(bin("berth-image"))
        .current_dir(dir.path())
        .args(suggested.split_whitespace().skip(1))
        .args(["--timeout", "120"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let wall = started.elapsed();
    let serial = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}\n{serial}");
    assert!(
        serial.contains("BERTH-TEST: init pid 1 release qemu-cmd-1 scenario none"),
        "{serial}"
    );
    assert!(serial.contains("BERTH-TEST: done"), "{serial}");
    assert!(
        stderr.contains("booting disk.img (qemu-x86_64)"),
        "{stderr}"
    );
    eprintln!("berth-image qemu: booted and powered off in {wall:?}");

    // The same guest given one second: still booting, it is cut by --timeout, and
    // berth-image says so in one line, with status 1.
    let started = Instant::now();
    let out = Command::new(bin("berth-image"))
        .current_dir(dir.path())
        .args(["qemu", "disk.img", "--timeout", "1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.lines().last().is_some_and(
            |l| l == "berth-image: disk.img: QEMU still running after 1 s: killed (--timeout)"
        ),
        "{stderr}"
    );
    assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
}
