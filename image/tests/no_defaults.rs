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

fn error(cwd: &Path, args: &[&str]) -> String {
    let out = berth_image(cwd, args);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err
}

#[test]
fn disk_asks_for_what_it_needs_instead_of_looking_in_the_source_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("tree/sbin")).unwrap();
    std::fs::write(dir.join("tree/sbin/init"), b"#!/bin/sh\n").unwrap();
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
    let commit = String::from_utf8(out.stdout).unwrap().trim().to_owned();
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
    assert!(
        err.contains(
            "no berth-init: give --init PATH, berth-init built for x86_64-unknown-linux-musl"
        ),
        "{err}"
    );
    let err = disk(&["--kernel-dir", "nowhere"]);
    assert!(err.contains("nowhere/lib/modules: no kernel here"), "{err}");
    // initramfs cannot do without berth-init: the command line says so.
    let out = berth_image(
        dir,
        &["initramfs", "--board", "qemu-x86_64", "--root", "tree"],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--init <PATH>"));
    assert!(
        std::fs::read_dir(dir).unwrap().all(|e| {
            let name = e.unwrap().file_name();
            !name.to_string_lossy().starts_with("disk")
        }),
        "no image, nothing beside it"
    );
}
