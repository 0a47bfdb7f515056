//! `berth-image flash` to block devices, with loop devices standing in for USB sticks
//! (root only, as CI runs the suite): a loop device counts as a fixed disk, so it is
//! refused without `--force` and written and verified with it (only the mapped blocks:
//! the rest keeps what it held); a device smaller than the image is refused with both
//! sizes; a device with a mounted filesystem, on itself or on a partition, is refused
//! even with `--force` (mounted in a private mount namespace, which goes away with it).
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_berth-image"))
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// A loop device over a file, detached on drop.
struct Loop {
    dev: PathBuf,
}

impl Loop {
    /// Attaches `file`; with `partitions`, the kernel scans its partition table (and
    /// `partx -u` adds them where the scan did not, as in some containers).
    fn attach(file: &Path, partitions: bool) -> Self {
        let mut cmd = Command::new("losetup");
        cmd.args(["--find", "--show"]);
        if partitions {
            cmd.arg("--partscan");
        }
        let dev = PathBuf::from(ok(cmd.arg(file)).trim());
        let l = Self { dev };
        if partitions {
            // Update rather than add: the kernel's scan may or may not have run yet.
            ok(Command::new("partx").arg("-u").arg(&l.dev));
        }
        l
    }

    fn name(&self) -> String {
        self.dev.file_name().unwrap().to_string_lossy().into_owned()
    }

    fn partition(&self) -> PathBuf {
        PathBuf::from(format!("{}p1", self.dev.display()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        // Best effort: a failed detach leaves a loop device, never a wrong result.
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// Root and working loop devices, else a skip (root is `testkit::skip_unless_root`'s
/// rule; loop devices missing under root fail only under `BERTH_STRICT=1`).
fn skip(test: &str) -> bool {
    if testkit::skip_unless_root(test) {
        return true;
    }
    if Path::new("/dev/loop-control").exists() {
        return false;
    }
    testkit::missing(test, "no loop devices here (/dev/loop-control)")
}

/// A 6 MiB + 1000 byte sparse image with noise at 0, 1 MiB + 100 and 3 MiB, and its
/// bmap; returns the image and its bytes.
fn image(dir: &Path) -> (PathBuf, Vec<u8>) {
    let path = dir.join("disk.img");
    let mut f = File::create(&path).unwrap();
    f.set_len((6 << 20) + 1000).unwrap();
    let noise = testkit::noise(1 << 20);
    for (at, len) in [
        (0u64, 4096usize),
        ((1 << 20) + 100, 10_000),
        (3 << 20, 1 << 20),
    ] {
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&noise[..len]).unwrap();
    }
    f.sync_all().unwrap();
    ok(Command::new(bin()).arg("bmap").arg(&path));
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
}

/// A backing file of `mib` MiB, every byte 0x5a.
fn backing(dir: &Path, name: &str, mib: usize) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, vec![0x5au8; mib << 20]).unwrap();
    p
}

fn flash(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(bin())
        .arg("flash")
        .args(args)
        .output()
        .unwrap()
}

fn refusal(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    err
}

#[test]
fn a_loop_device_needs_force_and_then_gets_the_mapped_blocks_verified() {
    if skip("a_loop_device_needs_force_and_then_gets_the_mapped_blocks_verified") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (img, bytes) = image(tmp.path());
    let l = Loop::attach(&backing(tmp.path(), "stick", 8), false);
    let read_dev = || std::fs::read(&l.dev).unwrap();

    let err = refusal(&flash(&[img.as_os_str(), l.dev.as_os_str()]));
    assert!(
        err.contains(&format!(
            "{}: {} is not removable: a loop device (its backing file may be anything); give --force",
            l.dev.display(),
            l.name()
        )),
        "{err}"
    );
    assert!(
        read_dev().iter().all(|&b| b == 0x5a),
        "written without --force"
    );

    let out = flash(&[
        "--force".as_ref(),
        "--json".as_ref(),
        img.as_os_str(),
        l.dev.as_os_str(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["target_kind"], "block device");
    assert_eq!(j["device"], l.name());
    assert_eq!(j["bytes_written"], 4096 + 3 * 4096 + (1 << 20));
    let dev = read_dev();
    // The mapped blocks hold the image; the holes between them and everything past the
    // image keep the device's old bytes (flash writes only what the bmap lists).
    for (start, len) in [(0usize, 4096usize), (1 << 20, 3 * 4096), (3 << 20, 1 << 20)] {
        assert_eq!(
            dev[start..start + len],
            bytes[start..start + len],
            "at {start}"
        );
    }
    assert!(
        dev[8192..1 << 20].iter().all(|&b| b == 0x5a),
        "a hole was written"
    );
    assert!(
        dev[bytes.len()..].iter().all(|&b| b == 0x5a),
        "past the image was written"
    );
    // What a device's reader sees of the image: its data, wherever the image has any.
    assert_eq!(
        dev[..bytes.len()]
            .iter()
            .zip(&bytes)
            .filter(|(d, b)| **b != 0 && d != b)
            .count(),
        0
    );
}

#[test]
fn a_device_smaller_than_the_image_is_refused_with_both_sizes() {
    if skip("a_device_smaller_than_the_image_is_refused_with_both_sizes") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (img, _) = image(tmp.path());
    let l = Loop::attach(&backing(tmp.path(), "small", 4), false);
    let err = refusal(&flash(&[
        "--force".as_ref(),
        img.as_os_str(),
        l.dev.as_os_str(),
    ]));
    assert!(
        err.contains("4194304 bytes (4 MiB), smaller than the image's 6292456 bytes (6 MiB)"),
        "{err}"
    );
    assert!(std::fs::read(&l.dev).unwrap().iter().all(|&b| b == 0x5a));
}

/// Runs `script` in a private mount namespace (its mounts vanish with it) and returns
/// the output of the `berth-image flash` run inside.
fn in_mount_namespace(script: &str) -> Output {
    Command::new("unshare")
        .args(["--mount", "sh", "-ec", script])
        .output()
        .unwrap()
}

#[test]
fn a_device_with_a_mounted_filesystem_is_refused_even_with_force() {
    if skip("a_device_with_a_mounted_filesystem_is_refused_even_with_force") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (img, bytes) = image(tmp.path());
    // Mounting writes to the filesystem (mount count, journal), so "unchanged" is: none
    // of the image's blocks arrived (its first block is noise, unlike any filesystem's).
    let untouched = |dev: &Path| {
        let d = std::fs::read(dev).unwrap();
        d[..4096] != bytes[..4096]
            && d[3 << 20..(3 << 20) + 4096] != bytes[3 << 20..(3 << 20) + 4096]
    };
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();

    // A filesystem on the whole device.
    let whole = Loop::attach(&backing(tmp.path(), "whole", 16), false);
    ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&whole.dev));
    let out = in_mount_namespace(&format!(
        "mount {dev} {mnt}; exec {bin} flash --force {img} {dev}",
        dev = whole.dev.display(),
        mnt = mnt.display(),
        bin = bin().display(),
        img = img.display()
    ));
    let err = refusal(&out);
    assert!(
        err.contains(&format!(
            "{}: in use: {} is mounted at {}; unmount it first (--force does not override this)",
            whole.dev.display(),
            whole.name(),
            mnt.display()
        )),
        "{err}"
    );
    assert!(
        untouched(&whole.dev),
        "the image was written to a mounted device"
    );

    // A filesystem on a partition: the disk and the partition are both refused.
    let file = backing(tmp.path(), "parted", 16);
    let mut sfdisk = Command::new("sfdisk")
        .args(["--quiet"])
        .arg(&file)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: gpt\nstart=2048, size=20480, type=linux\n")
        .unwrap();
    assert!(sfdisk.wait().unwrap().success());
    let parted = Loop::attach(&file, true);
    ok(Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(parted.partition()));
    for target in [parted.dev.clone(), parted.partition()] {
        let out = in_mount_namespace(&format!(
            "mount {part} {mnt}; exec {bin} flash --force {img} {target}",
            part = parted.partition().display(),
            mnt = mnt.display(),
            bin = bin().display(),
            img = img.display(),
            target = target.display()
        ));
        let err = refusal(&out);
        assert!(
            err.contains(&format!(
                "{}: in use: {}p1 is mounted at {}",
                target.display(),
                parted.name(),
                mnt.display()
            )),
            "{err}"
        );
    }
    assert!(
        untouched(&parted.dev),
        "the image was written to a mounted device"
    );
}
