//! `berth-image qemu --json`/`--dry-run`: the command line that boots an image, from
//! the files `disk` leaves beside it (DISK.kernel, DISK.initrd, DISK.qemu.json) and the
//! board's firmware under `--loader-dir`, whose variables (DISK.vars) are made once
//! and then kept. QEMU itself is not run here (`qemu/tests/qemu_command.rs` boots).
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn berth_image(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth-image"))
        .current_dir(cwd)
        .env("BERTH_BOARDS_DIR", cwd.join("no-system-boards"))
        .args(args)
        .output()
        .unwrap()
}

fn planned(cwd: &Path, args: &[&str]) -> (Value, Vec<String>) {
    let out = berth_image(cwd, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    let argv = j["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    (j, argv)
}

fn error(cwd: &Path, args: &[&str]) -> String {
    let out = berth_image(cwd, args);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err
}

/// The value after `flag` in `argv`.
fn after<'a>(argv: &'a [String], flag: &str) -> &'a str {
    let i = argv.iter().position(|a| a == flag).unwrap();
    &argv[i + 1]
}

#[test]
fn a_direct_board_boots_the_kernel_and_command_line_disk_left_beside_the_image() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for f in ["disk.img", "disk.kernel", "disk.initrd"] {
        std::fs::write(dir.join(f), b"").unwrap();
    }
    let err = error(dir, &["qemu", "disk.img", "--json"]);
    assert!(
        err.contains("disk.qemu.json beside it (berth-image disk writes it): give --board NAME"),
        "{err}"
    );
    std::fs::write(
        dir.join("disk.qemu.json"),
        r#"{"board": "qemu-aarch64", "cmdline": "console=ttyAMA0 berthtest=x"}"#,
    )
    .unwrap();
    let (j, argv) = planned(dir, &["qemu", "disk.img", "--json"]);
    assert_eq!(j["board"], "qemu-aarch64");
    assert_eq!(argv[0], "qemu-system-aarch64");
    for (flag, value) in [
        ("-accel", "tcg"),
        ("-cpu", "cortex-a57"),
        ("-serial", "stdio"),
        ("-kernel", "disk.kernel"),
        ("-initrd", "disk.initrd"),
        ("-append", "console=ttyAMA0 berthtest=x"),
        ("-drive", "file=disk.img,if=none,format=raw,id=d0"),
        ("-m", "256"),
    ] {
        assert_eq!(after(&argv, flag), value, "{argv:?}");
    }
    assert!(argv.contains(&"-no-reboot".to_owned()), "{argv:?}");

    // --memory, --append and extra arguments after `--`; --dry-run prints it quoted.
    let (_, argv) = planned(
        dir,
        &[
            "qemu",
            "disk.img",
            "--json",
            "--memory",
            "512",
            "--append",
            "a b",
            "--",
            "-device",
            "virtio-rng-pci",
        ],
    );
    assert_eq!(after(&argv, "-m"), "512");
    assert_eq!(after(&argv, "-append"), "a b");
    assert_eq!(argv[argv.len() - 2..], ["-device", "virtio-rng-pci"]);
    let out = berth_image(dir, &["qemu", "disk.img", "--dry-run", "--append", "a b"]);
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(
        line.starts_with("qemu-system-aarch64 -M virt ") && line.contains(" -append 'a b' "),
        "{line}"
    );

    // The board given wins over the one recorded; what is missing is named.
    let (j, _) = planned(
        dir,
        &["qemu", "disk.img", "--json", "--board", "qemu-x86_64"],
    );
    assert_eq!(j["board"], "qemu-x86_64");
    std::fs::remove_file(dir.join("disk.initrd")).unwrap();
    let err = error(dir, &["qemu", "disk.img", "--json"]);
    assert!(err.contains("disk.initrd: missing"), "{err}");
    let err = error(dir, &["qemu", "other.img"]);
    assert!(err.contains("other.img: no such disk image"), "{err}");
    std::fs::write(dir.join("disk.qemu.json"), b"{\"board\": 1}").unwrap();
    let err = error(dir, &["qemu", "disk.img", "--json"]);
    assert!(
        err.contains("disk.qemu.json: not what berth-image disk writes"),
        "{err}"
    );
}

#[test]
fn a_uefi_board_boots_the_firmware_and_keeps_its_variables() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("pc.img"), b"").unwrap();
    let loaders = dir.join("loaders");
    let args = [
        "qemu",
        "pc.img",
        "--json",
        "--board",
        "uefi-x86_64",
        "--loader-dir",
        loaders.to_str().unwrap(),
    ];
    let err = error(dir, &args);
    assert!(
        err.contains("usr/share/OVMF/OVMF_CODE_4M.fd: no UEFI firmware (install Debian's ovmf, or give --loader-dir"),
        "{err}"
    );
    assert!(!dir.join("pc.vars").exists());
    let ovmf = loaders.join("usr/share/OVMF");
    std::fs::create_dir_all(&ovmf).unwrap();
    std::fs::write(ovmf.join("OVMF_CODE_4M.fd"), b"code").unwrap();
    std::fs::write(ovmf.join("OVMF_VARS_4M.fd"), b"template").unwrap();
    let (_, argv) = planned(dir, &args);
    assert!(!argv.contains(&"-kernel".to_owned()), "{argv:?}");
    let code = format!(
        "if=pflash,format=raw,unit=0,readonly=on,file={}",
        ovmf.join("OVMF_CODE_4M.fd").display()
    );
    assert!(argv.contains(&code), "{argv:?}");
    assert!(
        argv.contains(&"if=pflash,format=raw,unit=1,file=pc.vars".to_owned()),
        "{argv:?}"
    );
    assert_eq!(std::fs::read(dir.join("pc.vars")).unwrap(), b"template");
    // What the firmware wrote stays for the next boot.
    std::fs::write(dir.join("pc.vars"), b"written by the firmware").unwrap();
    planned(dir, &args);
    assert_eq!(
        std::fs::read(dir.join("pc.vars")).unwrap(),
        b"written by the firmware"
    );
}
