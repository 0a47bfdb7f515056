//! The Raspberry Pi 4 image (`boards/rpi4`), checked by structure: QEMU cannot run the
//! Pi's firmware. A GPT disk whose first partition (FAT, legacy-BIOS-bootable, which
//! U-Boot's distro boot scans) holds the firmware (`start4.elf`, `fixup4.dat`),
//! `config.txt`, U-Boot (`u-boot.bin`, `rpi_arm64`), the device tree the firmware loads by
//! name, `boot.scr`, both loader-state copies and the deployment's entry with the device
//! tree boot.scr passes; the sysroot's `berth/boot/loader.conf` says so. Needs Debian's
//! arm64 kernel (`ci/fetch-kernels.sh`) and the Pi's loaders (`ci/fetch-loaders.sh`):
//! and berth-init for aarch64 (`ci/check-init.sh`): missing is a skip, or a failure
//! under `BERTH_STRICT=1`.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_berth-image"))
}

fn ok(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(bin())
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

fn tool(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    out.stdout
}

/// A file of the FAT partition `part` (`IMAGE@@OFFSET`), read with mtools.
fn fat_file(part: &str, path: &str, scratch: &Path) -> Vec<u8> {
    let out = scratch.join("fat-file");
    tool(
        Command::new("mcopy")
            .args(["-n", "-o", "-i", part])
            .arg(format!("::{path}"))
            .arg(&out),
    );
    fs::read(&out).unwrap()
}

/// A root filesystem with the arm64 kernel set made for the board, committed, and the
/// board's disk image: (root, kernel version, commit, image, `disk --json`). The
/// kernel package, berth-init and the unpacked firmware are the cache's and the build's,
/// given explicitly: berth-image has no default for them.
fn build(
    dir: &Path,
    kdir: &Path,
    init: &Path,
    loaders: &Path,
) -> (PathBuf, String, String, PathBuf, serde_json::Value) {
    let root = dir.join("root");
    for d in [
        "sbin", "etc", "var", "run", "dev", "proc", "sys", "sysroot", "usr/lib",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(root.join("sbin/init"), b"#!/bin/sh\n").unwrap();
    let made: serde_json::Value = serde_json::from_str(&ok(&[
        os("initramfs"),
        os("--json"),
        os("--board"),
        os("rpi4"),
        os("--root"),
        root.as_os_str(),
        os("--kernel-dir"),
        kdir.as_os_str(),
        os("--init"),
        init.as_os_str(),
    ]))
    .unwrap();
    let kver = made["version"].as_str().unwrap().to_owned();
    let repo = dir.join("repo");
    let commit = ok(&[
        os("commit"),
        os("--repo"),
        repo.as_os_str(),
        os("--tree"),
        root.as_os_str(),
        os("--version"),
        os("pi-1"),
    ])
    .trim()
    .to_owned();
    let img = dir.join("pi.img");
    let info: serde_json::Value = serde_json::from_str(&ok(&[
        os("disk"),
        os("--json"),
        os("--board"),
        os("rpi4"),
        os("--repo"),
        repo.as_os_str(),
        os("--commit"),
        os(&commit),
        os("--loader-dir"),
        loaders.as_os_str(),
        os("-o"),
        img.as_os_str(),
    ]))
    .unwrap();
    (root, kver, commit, img, info)
}

#[test]
fn the_pi_4_image_holds_firmware_u_boot_boot_scr_state_and_the_entry() {
    let cache =
        std::env::var_os("BERTH_CACHE").map_or_else(|| "/var/cache/berth".into(), PathBuf::from);
    let kdir = cache.join("debian/arm64/kernel");
    let loaders = cache.join("loaders/rpi");
    let init = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .join("target/aarch64-unknown-linux-musl/device/berth-init");
    for need in [
        kdir.join("lib/modules"),
        loaders.join(".complete"),
        init.clone(),
    ] {
        if !need.exists() {
            testkit::missing(
                "the_pi_4_image_holds_firmware_u_boot_boot_scr_state_and_the_entry",
                &format!(
                    "{}: missing (ci/fetch-kernels.sh, ci/fetch-loaders.sh, ci/check-init.sh)",
                    need.display()
                ),
            );
            return;
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let (root, kver, commit, img, info) = build(tmp.path(), &kdir, &init, &loaders);
    assert!(info["qemu"].is_null(), "QEMU cannot boot it: {info}");
    assert!(
        Path::new(info["bmap"].as_str().unwrap()).is_file(),
        "{info}"
    );
    let partuuid = info["partuuid"].as_str().unwrap().to_owned();

    // The partition table: GPT, the boot partition first (bootable for distro boot).
    let table: serde_json::Value =
        serde_json::from_slice(&tool(Command::new("sfdisk").arg("--json").arg(&img))).unwrap();
    let t = &table["partitiontable"];
    assert_eq!(t["label"], "gpt", "{table}");
    let parts = &t["partitions"];
    assert_eq!(parts[0]["name"], "boot", "{table}");
    assert_eq!(
        parts[0]["type"], "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
        "{table}"
    );
    assert_eq!(parts[0]["attrs"], "LegacyBIOSBootable", "{table}");
    assert_eq!(
        parts[0]["size"].as_u64().unwrap() * 512,
        256 << 20,
        "{table}"
    );
    assert_eq!(parts[1]["name"], "sysroot", "{table}");
    assert_eq!(
        parts[1]["uuid"].as_str().unwrap().to_lowercase(),
        partuuid,
        "{table}"
    );
    let part = format!(
        "{}@@{}",
        img.display(),
        parts[0]["start"].as_u64().unwrap() * 512
    );

    let name = commit[..16].to_owned();
    check_firmware(&part, &loaders, &kdir, &kver, tmp.path());
    check_entry(
        &part,
        &name,
        &root.join("usr/lib/modules").join(&kver),
        &partuuid,
        &kdir,
        &kver,
        tmp.path(),
    );
    check_sysroot(&img, parts, tmp.path());
}

/// The firmware, U-Boot, config.txt, the device tree and boot.scr, byte for byte.
fn check_firmware(part: &str, loaders: &Path, kdir: &Path, kver: &str, scratch: &Path) {
    for (on_fat, src) in [
        ("start4.elf", "usr/lib/raspi-firmware/start4.elf"),
        ("fixup4.dat", "usr/lib/raspi-firmware/fixup4.dat"),
        ("u-boot.bin", "usr/lib/u-boot/rpi_arm64/u-boot.bin"),
    ] {
        assert!(
            fat_file(part, on_fat, scratch) == fs::read(loaders.join(src)).unwrap(),
            "{on_fat} is {src}"
        );
    }
    let config = String::from_utf8(fat_file(part, "config.txt", scratch)).unwrap();
    for line in [
        "arm_64bit=1",
        "kernel=u-boot.bin",
        "enable_uart=1",
        "device_tree=bcm2711-rpi-4-b.dtb",
    ] {
        assert!(config.lines().any(|l| l == line), "{line} in {config}");
    }
    let dtb = fs::read(kdir.join(format!(
        "usr/lib/linux-image-{kver}/broadcom/bcm2711-rpi-4-b.dtb"
    )))
    .unwrap();
    assert_eq!(&dtb[..4], b"\xd0\x0d\xfe\xed", "a flattened device tree");
    assert!(fat_file(part, "bcm2711-rpi-4-b.dtb", scratch) == dtb);
    // boot.scr: a legacy U-Boot image (magic 0x27051956) of type script.
    let scr = fat_file(part, "boot.scr", scratch);
    assert_eq!(&scr[..4], b"\x27\x05\x19\x56");
    assert_eq!(scr[30], 6, "IH_TYPE_SCRIPT");
}

/// The loader state names the deployment; its entry holds the set and the device tree.
fn check_entry(
    part: &str,
    name: &str,
    set: &Path,
    partuuid: &str,
    kdir: &Path,
    kver: &str,
    scratch: &Path,
) {
    let dtb = fs::read(kdir.join(format!(
        "usr/lib/linux-image-{kver}/broadcom/bcm2711-rpi-4-b.dtb"
    )))
    .unwrap();
    for (copy, generation) in [("berth/a/state", 1), ("berth/b/state", 2)] {
        let st = format::loader::LoaderState::decode(&fat_file(part, copy, scratch)).unwrap();
        assert_eq!(
            (st.generation, st.default.as_str(), st.previous, st.trial),
            (generation, name, None, None),
            "{copy}"
        );
    }
    for f in ["vmlinuz", "initramfs.img"] {
        assert!(
            fat_file(part, &format!("{name}/{f}"), scratch) == fs::read(set.join(f)).unwrap(),
            "{name}/{f}"
        );
    }
    assert!(fat_file(part, &format!("{name}/dtb"), scratch) == dtb);
    let cmdline = String::from_utf8(fat_file(part, &format!("{name}/cmdline"), scratch)).unwrap();
    assert_eq!(
        cmdline,
        format!("console=tty1 console=ttyS1,115200 panic=10 berth.root=PARTUUID={partuuid}")
    );
}

/// berth on the device learns the loader from the sysroot's `berth/boot/loader.conf`.
fn check_sysroot(img: &Path, parts: &serde_json::Value, scratch: &Path) {
    let sysroot = scratch.join("sysroot.ext4");
    tool(
        Command::new("dd")
            .arg(format!("if={}", img.display()))
            .arg(format!("of={}", sysroot.display()))
            .arg(format!(
                "skip={}",
                parts[1]["start"].as_u64().unwrap() / 2048
            ))
            .args(["bs=1M", "status=none"]),
    );
    let conf = tool(
        Command::new("debugfs")
            .args(["-R", "cat /berth/boot/loader.conf"])
            .arg(&sysroot),
    );
    let conf = format::bootconf::BootConfig::decode(&conf).unwrap();
    assert_eq!(conf.loader, format::bootconf::Loader::UBoot);
    assert_eq!(
        conf.devicetree.as_deref(),
        Some("broadcom/bcm2711-rpi-4-b.dtb")
    );
    assert_eq!(
        conf.partuuid,
        parts[0]["uuid"].as_str().unwrap().to_lowercase()
    );
}
