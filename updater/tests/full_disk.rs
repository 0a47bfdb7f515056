//! A filesystem that fills up after the free-space check passed: another program
//! writes while `berth update` runs (played with the `BERTH_TEST_PAUSE_AFTER_CHECKS`
//! hook, which holds berth between its checks and its first write while the test fills
//! a small tmpfs). berth must fail with one line naming ENOSPC, leave the device as it
//! was, and complete the same update once the space is back.
//!
//! Root only (it mounts a tmpfs); skipped with a note otherwise, a failure under
//! `BERTH_STRICT=1`.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

mod common;

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Lab;

/// A tmpfs of `size` mounted at `at`, unmounted when dropped (also when the test fails).
struct Mounted(PathBuf);

impl Mounted {
    fn tmpfs(at: &Path, size: &str) -> Self {
        fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "berth-test-full",
            ])
            .arg(at)
            .status()
            .unwrap();
        assert!(st.success(), "mount a tmpfs at {}", at.display());
        Self(at.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        // Lazy: a berth still running after a failed assertion must not keep it.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn free_bytes(path: &Path) -> u64 {
    let v = rustix::fs::statvfs(path).unwrap();
    v.f_bavail * v.f_frsize
}

/// Opens `fifo` for writing once berth opened it for reading (berth passed every check),
/// giving up if berth ends first.
fn wait_for_reader(fifo: &Path, berth: &mut std::process::Child) -> fs::File {
    let start = Instant::now();
    loop {
        match fs::OpenOptions::new()
            .write(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits().cast_signed())
            .open(fifo)
        {
            Ok(f) => return f,
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NXIO.raw_os_error()) => {}
            Err(e) => panic!("open {}: {e}", fifo.display()),
        }
        if let Some(st) = berth.try_wait().unwrap() {
            let out = berth.wait_with_output_now();
            panic!("berth ended ({st}) before its checks passed: {out}");
        }
        assert!(
            start.elapsed() < Duration::from_mins(1),
            "berth never reached the pause"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

trait Stderr {
    fn wait_with_output_now(&mut self) -> String;
}

impl Stderr for std::process::Child {
    fn wait_with_output_now(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.stderr.take() {
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
        }
        s
    }
}

#[test]
fn a_filesystem_filled_after_the_space_check_fails_cleanly_and_the_update_completes_later() {
    let test =
        "a_filesystem_filled_after_the_space_check_fails_cleanly_and_the_update_completes_later";
    if !testkit::is_root() && testkit::missing(test, "needs root (mounts a tmpfs)") {
        return;
    }
    let mut lab = Lab::new();
    // The device: its whole sysroot on a 32 MiB tmpfs.
    let small = lab.tmp.path().join("small");
    let _mounted = Mounted::tmpfs(&small, "32m");
    lab.sysroot = small.join("sysroot");
    // 4 MiB that do not compress, changed in a few scattered places by v2: the update
    // is a patch, and applying it writes a new 4 MiB object.
    let big = testkit::noise(4 << 20);
    let mut big2 = big.clone();
    for at in [100_000, 1_500_000, 3_000_000, 4_000_000] {
        big2[at..at + 300].fill(7);
    }
    let v1 = lab.commit("1.0", &[("usr/lib/big.bin", &big)]);
    let v2 = lab.commit("2.0", &[("usr/lib/big.bin", &big2)]);
    lab.install(&v1, &[]);
    lab.booted(&v1[..16], "default");
    let update = lab.delta(Some(&v1), &v2, "v1-v2.berth", &[]);
    let update = update.to_str().unwrap();
    assert!(
        free_bytes(&lab.sysroot) > 20 << 20,
        "room for the update when berth checks"
    );

    let before = lab.manifest();
    let records = lab.record_bytes();
    let fifo = lab.tmp.path().join("pause");
    let st = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success());
    let mut child = lab
        .command()
        .args(["update", update])
        .env("BERTH_TEST_PAUSE_AFTER_CHECKS", &fifo)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pause = wait_for_reader(&fifo, &mut child);
    // Another program takes all but 256 KiB while berth holds between check and write.
    let filler = small.join("filler");
    let take = free_bytes(&small) - (256 << 10);
    let mut f = fs::File::create(&filler).unwrap();
    let chunk = vec![0x5a; 1 << 20];
    let mut left = take;
    while left > 0 {
        let n = usize::try_from(left.min(1 << 20)).unwrap();
        f.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    drop(f);
    pause.write_all(b"go").unwrap();
    drop(pause);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "berth update: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("No space left on device"),
        "the line names ENOSPC: {err}"
    );
    // The device is as it was: the same files (berth's scratch directory aside), the
    // same record, v1 boots next, and the store is sound.
    assert_eq!(
        lab.manifest(),
        before,
        "the failed update changed the sysroot"
    );
    assert_eq!(lab.record_bytes(), records, "the record changed");
    assert_eq!(lab.next_boot().0, v1[..16]);
    assert_eq!(Lab::role(&lab.status(), "trial"), None);
    assert!(lab.ok(&["fsck"]).contains("sound"));

    // The space comes back: the same update completes.
    fs::remove_file(&filler).unwrap();
    lab.ok(&["update", update]);
    assert_eq!(
        Lab::role(&lab.status(), "trial").as_deref(),
        Some(&v2[..16])
    );
    assert!(lab.ok(&["fsck"]).contains("sound"));
    eprintln!("full disk: berth said {}", err.trim());
}
