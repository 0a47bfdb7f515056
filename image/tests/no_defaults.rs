//! berth-image has no defaults into the source tree or the CI scripts' caches: run
//! from elsewhere, `disk` asks for the kernel package and berth-init it needs, and
//! names the firmware it misses, in one line each, and writes no image.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

use std::path::Path;
use std::process::{Command, Output};

fn berth_image(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth-image"))
        .current_dir(cwd)
        .env("BERTH_BOARDS_DIR", cwd.join("no-system-boards"))
        .env_remove("BERTH_CACHE")
        .args(args)
        .output()
        .unwrap()
}

/// Commits `dir/tree` into `dir/repo` as version 1; its commit id.
fn commit_tree(dir: &std::path::Path) -> String {
    let out = berth_image(
        dir,
        &[
            "commit",
            "--repo",
            "repo",
            "--tree",
            "tree",
            "--version",
            "1",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The error of a command that must fail with status 1: one line (after any progress
/// lines `disk` writes).
fn error(cwd: &Path, args: &[&str]) -> String {
    let out = berth_image(cwd, args);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("berth-image: "))
        .collect();
    assert_eq!(errors.len(), 1, "one line: {err}");
    assert_eq!(err.lines().last(), errors.first().copied(), "last: {err}");
    errors[0].to_owned()
}

#[test]
fn disk_asks_for_what_it_needs_instead_of_looking_in_the_source_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("tree/sbin")).unwrap();
    std::fs::write(dir.join("tree/sbin/init"), b"#!/bin/sh\n").unwrap();
    let commit = commit_tree(dir);
    let disk = |more: &[&str]| {
        let mut args = vec!["disk", "--board", "qemu-x86_64", "--repo", "repo"];
        args.extend(["--commit", &commit, "-o", "disk.img"]);
        args.extend(more);
        error(dir, &args)
    };
    let err = disk(&[]);
    assert!(
        err.contains(&format!("commit {commit} carries no kernel set: give --kernel-dir DIR (the board's linux-image-amd64 package")),
        "{err}"
    );
    // A kernel package (a stand-in: its version and image), but no berth-init.
    let kdir = dir.join("kernel");
    std::fs::create_dir_all(kdir.join("lib/modules/6.1.0-9-amd64")).unwrap();
    std::fs::create_dir_all(kdir.join("boot")).unwrap();
    std::fs::write(kdir.join("boot/vmlinux"), b"").unwrap();
    let err = disk(&["--kernel-dir", "kernel"]);
    // (This berth-image is a build's, with no berth-init installed beside it.)
    assert!(
        err.contains("no berth-init for x86_64-unknown-linux-musl: none installed at ")
            && err.contains("give --init PATH"),
        "{err}"
    );
    let err = disk(&["--kernel-dir", "nowhere"]);
    assert!(err.contains("nowhere/lib/modules: no kernel here"), "{err}");
    // Nor can initramfs: it says so in one line, and the tree is left as it was.
    let out = berth_image(
        dir,
        &["initramfs", "--board", "qemu-x86_64", "--root", "tree"],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("give --init PATH") && err.lines().count() == 1,
        "{err}"
    );
    assert!(
        !dir.join("tree/usr/lib/modules").exists(),
        "the tree is unchanged"
    );
    assert!(
        std::fs::read_dir(dir).unwrap().all(|e| {
            let name = e.unwrap().file_name();
            !name.to_string_lossy().starts_with("disk")
        }),
        "no image, nothing beside it"
    );
}

#[test]
fn a_uefi_image_needs_systemd_boot_but_not_ovmf() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // A commit carrying a (stand-in) kernel set, as a loader board needs.
    let set = dir.join("tree/usr/lib/modules/6.1.0-9-test");
    std::fs::create_dir_all(&set).unwrap();
    std::fs::create_dir_all(dir.join("tree/sbin")).unwrap();
    std::fs::write(dir.join("tree/sbin/init"), b"#!/bin/sh\n").unwrap();
    std::fs::write(set.join("vmlinuz"), b"kernel").unwrap();
    std::fs::write(set.join("initramfs.img"), b"initramfs").unwrap();
    let commit = commit_tree(dir);
    let loaders = dir.join("loaders");
    std::fs::create_dir(&loaders).unwrap();
    let args = [
        "disk",
        "--json",
        "--board",
        "uefi-x86_64",
        "--repo",
        "repo",
        "--commit",
        &commit,
        "--loader-dir",
        "loaders",
        "-o",
        "pc.img",
    ];
    let err = error(dir, &args);
    assert!(
        err.contains("loaders/usr/lib/systemd/boot/efi/systemd-bootx64.efi: no systemd-boot (install Debian's systemd-boot-efi, or give --loader-dir DIR"),
        "{err}"
    );
    assert!(!dir.join("pc.img").exists());
    // With systemd-boot (a stand-in) the image is made; without OVMF there is no QEMU
    // command line, which is said, and `berth-image qemu` names what it misses.
    let efi = loaders.join("usr/lib/systemd/boot/efi");
    std::fs::create_dir_all(&efi).unwrap();
    std::fs::write(efi.join("systemd-bootx64.efi"), b"MZ").unwrap();
    let out = berth_image(dir, &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(info["qemu"].is_null(), "{info}");
    assert!(
        stderr.contains("berth-image disk: no QEMU command line: loaders/usr/share/OVMF/OVMF_CODE_4M.fd: no UEFI firmware"),
        "{stderr}"
    );
    let qemu_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("pc.qemu.json")).unwrap()).unwrap();
    assert_eq!(qemu_json["board"], "uefi-x86_64");
    let err = error(dir, &["qemu", "pc.img", "--loader-dir", "loaders"]);
    assert!(err.contains("OVMF_CODE_4M.fd: no UEFI firmware"), "{err}");
}
