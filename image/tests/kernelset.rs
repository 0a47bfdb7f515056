//! Kernel sets: `berth-image initramfs` completes a root filesystem's kernel set, and
//! `berth-image show` finds it in a commit, with its content id. The first test needs
//! Debian's kernel for the host's architecture (`ci/fetch-kernels.sh`; missing is a skip,
//! or a failure under `BERTH_STRICT=1`); berth-image itself stands in for berth-init
//! (an ELF of the host's architecture), as nothing is booted here (the QEMU tier boots
//! a kernel set: `qemu/tests/boot.rs`).
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_berth-image"))
}

fn run(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(bin())
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&std::ffi::OsStr]) -> String {
    let out = run(args);
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

fn host_board() -> (&'static str, &'static str) {
    if cfg!(target_arch = "aarch64") {
        ("qemu-aarch64", "arm64")
    } else {
        ("qemu-x86_64", "amd64")
    }
}

/// A minimal root filesystem at `dir/name`, with `files` (path, content) in it.
fn tree(dir: &Path, name: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let t = dir.join(name);
    for d in ["sbin", "etc", "usr/lib"] {
        fs::create_dir_all(t.join(d)).unwrap();
    }
    fs::write(t.join("sbin/init"), b"#!/bin/sh\n").unwrap();
    for (p, c) in files {
        let p = t.join(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, c).unwrap();
    }
    t
}

fn commit(repo: &Path, tree: &Path, version: &str) -> String {
    ok(&[
        os("commit"),
        os("--repo"),
        repo.as_os_str(),
        os("--tree"),
        tree.as_os_str(),
        os("--version"),
        os(version),
    ])
    .trim()
    .to_owned()
}

fn show(repo: &Path, commit: &str) -> Output {
    run(&[
        os("show"),
        os("--json"),
        os("--repo"),
        repo.as_os_str(),
        os(commit),
    ])
}

#[test]
fn initramfs_completes_a_kernel_set_from_a_kernel_package() {
    let (board, arch) = host_board();
    let cache =
        std::env::var_os("BERTH_CACHE").map_or_else(|| "/var/cache/berth".into(), PathBuf::from);
    let kdir = cache.join("debian").join(arch).join("kernel");
    if !kdir.join("lib/modules").is_dir() {
        testkit::missing(
            "initramfs_completes_a_kernel_set_from_a_kernel_package",
            &format!("{}: no kernel (ci/fetch-kernels.sh)", kdir.display()),
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tree(tmp.path(), "root", &[]);
    let out = ok(&[
        os("initramfs"),
        os("--json"),
        os("--board"),
        os(board),
        os("--root"),
        root.as_os_str(),
        os("--kernel-dir"),
        kdir.as_os_str(),
        os("--init"),
        bin().as_os_str(),
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let version = v["version"].as_str().unwrap();
    let kset = root.join("usr/lib/modules").join(version);
    for f in ["vmlinuz", "initramfs.img", "modules.dep"] {
        assert!(kset.join(f).is_file(), "{f} in {}", kset.display());
    }
    // The initramfs: berth-init as /init, the modules and their list, and the sysroot
    // by label (each disk names its partition on the kernel command line).
    let list = Command::new("cpio")
        .args(["-t", "--quiet", "-F"])
        .arg(kset.join("initramfs.img"))
        .output()
        .unwrap();
    let names = String::from_utf8(list.stdout).unwrap();
    for want in ["init", "etc/berth/modules", "etc/berth/cmdline"] {
        assert!(names.lines().any(|l| l == want), "{want} in {names}");
    }
    let kos = names
        .lines()
        .filter(|l| Path::new(l).extension().is_some_and(|e| e == "ko"))
        .count();
    assert_eq!(kos as u64, v["modules"].as_u64().unwrap(), "{names}");
    assert!(kos >= 5, "{names}");
    let extract = tmp.path().join("x");
    fs::create_dir_all(&extract).unwrap();
    let st = Command::new("cpio")
        .args(["-i", "--quiet", "-d", "-F"])
        .arg(kset.join("initramfs.img"))
        .current_dir(&extract)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        fs::read_to_string(extract.join("etc/berth/cmdline")).unwrap(),
        "berth.root=LABEL=berth-sysroot\n"
    );
    assert_eq!(
        fs::read(extract.join("init")).unwrap(),
        fs::read(bin()).unwrap()
    );
    // Run again on the completed tree: the same bytes (a reproducible build step).
    let first = fs::read(kset.join("initramfs.img")).unwrap();
    ok(&[
        os("initramfs"),
        os("--board"),
        os(board),
        os("--root"),
        root.as_os_str(),
        os("--init"),
        bin().as_os_str(),
    ]);
    assert!(first == fs::read(kset.join("initramfs.img")).unwrap());
    // Committed, it is found, with its content id.
    let repo = tmp.path().join("repo");
    let c = commit(&repo, &root, "1.0");
    let s: serde_json::Value = serde_json::from_slice(&show(&repo, &c).stdout).unwrap();
    assert_eq!(s["kernel_set"]["version"], version);
    assert_eq!(s["kernel_set"]["kargs"], "");
}

#[test]
fn kernel_sets_are_identified_by_content() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let kset = |extra: &[(&'static str, &'static [u8])]| {
        let mut files: Vec<(&str, &[u8])> = vec![
            ("usr/lib/modules/6.1.0-9-test/vmlinuz", b"kernel"),
            ("usr/lib/modules/6.1.0-9-test/initramfs.img", b"initramfs"),
        ];
        files.extend_from_slice(extra);
        files
    };
    let id = |name: &str, files: &[(&str, &[u8])]| -> serde_json::Value {
        let t = tree(tmp.path(), name, files);
        let c = commit(&repo, &t, "1.0");
        let out = show(&repo, &c);
        assert!(out.status.success(), "{out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["kernel_set"]["id"].clone()
    };
    let base = id("a", &kset(&[]));
    assert!(base.is_string());
    // Another release with the same kernel set (other files changed) shares its id.
    assert_eq!(id("b", &kset(&[("etc/release", b"2")])), base);
    // The kernel arguments, the device trees, the kernel: each makes another set.
    let others = [
        id("c", &kset(&[("usr/lib/berth/kargs", b"quiet\n")])),
        id(
            "d",
            &kset(&[("usr/lib/modules/6.1.0-9-test/dtb/board.dtb", b"dtb")]),
        ),
        id(
            "e",
            &[
                ("usr/lib/modules/6.1.0-9-test/vmlinuz", &b"kernel2"[..]),
                ("usr/lib/modules/6.1.0-9-test/initramfs.img", b"initramfs"),
            ],
        ),
    ];
    for o in &others {
        assert!(o.is_string() && *o != base, "{o} vs {base}");
    }
    assert_ne!(others[0], others[1]);
    // No kernel: no set; modules without a kernel are not a set either.
    assert!(id("f", &[("usr/lib/modules/6.1.0-9-test/modules.dep", b"")]).is_null());
}

/// Files of a test tree: (path, content).
type Files<'a> = &'a [(&'a str, &'a [u8])];

#[test]
fn a_broken_kernel_set_is_refused_with_its_cause() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let cases: [(&str, Files<'_>, &str); 3] = [
        (
            "no-initramfs",
            &[("usr/lib/modules/6.1.0-9-test/vmlinuz", b"k")],
            "has a vmlinuz but no initramfs.img (run berth-image initramfs)",
        ),
        (
            "two-kernels",
            &[
                ("usr/lib/modules/6.1.0-9-a/vmlinuz", b"k"),
                ("usr/lib/modules/6.1.0-9-a/initramfs.img", b"i"),
                ("usr/lib/modules/6.1.0-9-b/vmlinuz", b"k"),
                ("usr/lib/modules/6.1.0-9-b/initramfs.img", b"i"),
            ],
            "several kernel sets (6.1.0-9-a, 6.1.0-9-b)",
        ),
        (
            "bad-kargs",
            &[
                ("usr/lib/modules/6.1.0-9-a/vmlinuz", b"k"),
                ("usr/lib/modules/6.1.0-9-a/initramfs.img", b"i"),
                ("usr/lib/berth/kargs", b"one\ntwo\n"),
            ],
            "usr/lib/berth/kargs: must be one line of printable ASCII",
        ),
    ];
    for (name, files, want) in cases {
        let t = tree(tmp.path(), name, files);
        let c = commit(&repo, &t, "1.0");
        let out = show(&repo, &c);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains(want), "{name}: {err}");
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
    }
    // initramfs on a tree without modules says what to do.
    let t = tree(tmp.path(), "bare", &[]);
    let out = run(&[
        os("initramfs"),
        os("--board"),
        os(host_board().0),
        os("--root"),
        t.as_os_str(),
        os("--init"),
        bin().as_os_str(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no kernel modules (give --kernel-dir"),
        "{err}"
    );
}
