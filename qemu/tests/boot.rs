//! Real boots under QEMU (TCG) on both boards: disk images from `berth-image disk`,
//! Debian's kernels, berth-init from the initramfs, the test rootfs's init reporting on
//! the serial console. Each scenario builds its own disk and boots it one or more times;
//! changes persist between those boots as on a real disk.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

use qemu_tests::{Images, TARGETS, Target, skip};

fn images(t: Target) -> Images {
    Images::build(t)
}

fn first_boot_and_persistence(t: Target) {
    let im = images(t);
    let disk = im.disk("first", &["--commit", &im.good]);
    let name = disk.name_of(&im.good);

    let b1 = disk.boot("berthtest=write");
    assert!(
        b1.value("init").starts_with("pid 1 release good-1"),
        "{}",
        b1.serial
    );
    let j = b1.boot_json();
    assert_eq!(j["choice"]["deployment"], name.as_str(), "{}", b1.serial);
    assert_eq!(j["reason"], "default");
    assert_eq!(j["mode"], "initramfs");
    assert_eq!(
        b1.value("rootmount"),
        format!("/berth/deploy/{name} ro,relatime"),
        "/ is the read-only deployment"
    );
    assert_eq!(b1.value("etcmount"), "overlay");
    assert_eq!(b1.value("root"), "read-only");
    assert_eq!(
        (b1.value("etc"), b1.value("var")),
        ("good-1", "good-1"),
        "written this boot"
    );

    let b2 = disk.boot("berthtest=report");
    assert_eq!(
        (b2.value("etc"), b2.value("var")),
        ("good-1", "good-1"),
        "/etc and /var survive a reboot:\n{}",
        b2.serial
    );
    assert_eq!(b2.value("root"), "read-only");
    for b in [&b1, &b2] {
        timings_add_up(&b.boot_json(), b.shim_ms(), &b.serial);
    }
    eprintln!(
        "{}: shim's own time {:?} / {:?} ms, wall {:?} / {:?}",
        t.board,
        b1.shim_ms(),
        b2.shim_ms(),
        b1.wall,
        b2.wall
    );
}

/// boot.json's phases are each within the boot, do not overlap (their sum fits between
/// start and exec), the overlay is within the assembly, and the console's "shim's own
/// time" is exec - start - modules - device wait, give or take the log line's own cost.
fn timings_add_up(j: &serde_json::Value, shim_ms: Option<f64>, serial: &str) {
    let ns = &j["boottime_ns"];
    let get = |k: &str| {
        ns[k]
            .as_u64()
            .unwrap_or_else(|| panic!("boottime_ns.{k} is missing: {j}\n{serial}"))
    };
    let total = get("exec") - get("start");
    let phases = [
        "early",
        "modules",
        "device_wait",
        "sysroot_mount",
        "record_read",
        "plan",
        "assemble",
    ];
    let sum: u64 = phases.iter().map(|k| get(k)).sum();
    assert!(sum <= total, "phases {sum} ns > boot {total} ns: {j}");
    for k in phases {
        assert!(get(k) > 0, "{k} took no time: {j}");
    }
    assert!(get("overlay_mount") <= get("assemble"), "{j}");
    let own_us = (total - get("modules") - get("device_wait")) / 1000;
    let own = f64::from(u32::try_from(own_us).expect("under an hour")) / 1e3;
    let shown = shim_ms.expect("an exec line with the shim's own time");
    // The exec line is stamped a moment after boot.json's "exec", in whole microseconds.
    assert!(
        shown >= own - 0.001 && shown < own + 5.0,
        "console says {shown} ms, boot.json gives {own} ms"
    );
}

fn boot_counting_rolls_back_to_the_default(t: Target) {
    let im = images(t);
    let disk = im.disk(
        "counting",
        &["--commit", &im.good, "--trial", &im.crash, "--tries", "2"],
    );
    let (good, crash) = (disk.name_of(&im.good), disk.name_of(&im.crash));
    for n in 1..=2 {
        let b = disk.boot("berthtest=report");
        assert!(
            b.shows(&format!("berth-init: booting {crash} (trial)")),
            "boot {n}: the trial:\n{}",
            b.serial
        );
        assert!(
            b.shows("BERTH-TEST: crashing on purpose"),
            "boot {n}:\n{}",
            b.serial
        );
        assert!(
            b.shows("Kernel panic"),
            "boot {n}: init died, the kernel panicked:\n{}",
            b.serial
        );
    }
    let b = disk.boot("berthtest=report");
    let j = b.boot_json();
    assert_eq!(
        j["choice"]["deployment"],
        good.as_str(),
        "after the last try, the default:\n{}",
        b.serial
    );
    assert_eq!(j["reason"], "default");
    assert_eq!(
        j["fallbacks"][0]["event"], "trial-exhausted",
        "the booted system can read why"
    );
    assert_eq!(j["fallbacks"][0]["deployment"], crash.as_str());
    let status = b.test_values("status").join("\n");
    assert!(
        status.contains(&format!("last rollback: from {crash} (tries-exhausted)")),
        "berth status says why:\n{}",
        b.serial
    );
    // And it stays that way: the trial is gone from the record.
    let again = disk.boot("berthtest=report");
    let j = again.boot_json();
    assert_eq!(
        (
            j["choice"]["deployment"].as_str(),
            j["fallbacks"].as_array().map(Vec::len)
        ),
        (Some(good.as_str()), Some(0)),
        "{}",
        again.serial
    );
}

fn trial_marked_good_becomes_the_default(t: Target) {
    let im = images(t);
    let disk = im.disk(
        "markgood",
        &["--commit", &im.good, "--trial", &im.good2, "--tries", "3"],
    );
    let (v1, v2) = (disk.name_of(&im.good), disk.name_of(&im.good2));
    let b = disk.boot("berthtest=markgood");
    let j = b.boot_json();
    assert_eq!(
        (
            j["choice"]["deployment"].as_str(),
            j["reason"].as_str(),
            j["tries_left"].as_u64()
        ),
        (Some(v2.as_str()), Some("trial"), Some(2)),
        "{}",
        b.serial
    );
    assert!(
        b.value("markgood")
            .contains(&format!("{v2} is now the default; previous: {v1}")),
        "{}",
        b.serial
    );
    let b = disk.boot("berthtest=report");
    let j = b.boot_json();
    assert_eq!(
        (j["choice"]["deployment"].as_str(), j["reason"].as_str()),
        (Some(v2.as_str()), Some("default")),
        "{}",
        b.serial
    );
    let status = b.test_values("status").join("\n");
    assert!(
        status.contains(&format!("● {v2}  version good-2")) && status.contains("default"),
        "{status}"
    );
    assert!(
        status.contains(&format!("  {v1}  version good-1")) && status.contains("previous"),
        "{status}"
    );
}

fn update_from_a_usb_stick_then_a_crashing_update_rolls_back(t: Target) {
    let im = images(t);
    let disk = im.disk("usb-update", &["--commit", &im.good]);
    let (v1, v2, v3) = (
        disk.name_of(&im.good),
        disk.name_of(&im.good2),
        disk.name_of(&im.crash),
    );
    // v1 runs; berth update from the stick (a delta v1 -> v2) installs v2 as the trial.
    let stick = im.usb_stick("stick-v2", Some(&im.good), &im.good2);
    let b = disk.boot_with("berthtest=update", Some(&stick));
    assert!(
        b.value("update")
            .contains(&format!("installed {v2} (version good-2)")),
        "{}",
        b.serial
    );
    // Reboot into the trial; its health check marks it good.
    let b = disk.boot("berthtest=markgood");
    assert_eq!(b.boot_json()["reason"], "trial", "{}", b.serial);
    assert!(b.value("init").contains("release good-2"), "{}", b.serial);
    assert!(
        b.value("markgood")
            .contains(&format!("{v2} is now the default; previous: {v1}")),
        "{}",
        b.serial
    );
    // v3's init crashes. Install it from a second stick.
    let stick = im.usb_stick("stick-v3", Some(&im.good2), &im.crash);
    let b = disk.boot_with("berthtest=update", Some(&stick));
    assert!(b.value("init").contains("release good-2"), "{}", b.serial);
    assert!(
        b.value("update").contains(&format!("installed {v3}")),
        "{}",
        b.serial
    );
    for n in 1..=3 {
        let b = disk.boot("berthtest=report");
        assert!(
            b.shows(&format!("berth-init: booting {v3} (trial)")) && b.shows("crashing on purpose"),
            "crash boot {n}:\n{}",
            b.serial
        );
    }
    // Its tries are used up: v2 boots again, and berth status says why.
    let b = disk.boot("berthtest=report");
    let j = b.boot_json();
    assert_eq!(
        (j["choice"]["deployment"].as_str(), j["reason"].as_str()),
        (Some(v2.as_str()), Some("default")),
        "{}",
        b.serial
    );
    let status = b.test_values("status").join("\n");
    assert!(
        status.contains(&format!("last rollback: from {v3} (tries-exhausted)")),
        "{status}"
    );
    assert!(status.contains(&format!("● {v2}")), "{status}");
}

fn missing_init_falls_back_in_the_same_boot(t: Target) {
    let im = images(t);
    let disk = im.disk(
        "fallback",
        &["--commit", &im.noinit, "--previous", &im.good],
    );
    let b = disk.boot("berthtest=report");
    let j = b.boot_json();
    assert_eq!(
        j["choice"]["deployment"],
        disk.name_of(&im.good).as_str(),
        "{}",
        b.serial
    );
    assert_eq!(j["reason"], "previous");
    assert_eq!(j["fallbacks"][0]["event"], "default-unbootable");
    assert_eq!(j["fallbacks"][0]["state"], "no-init");
    assert!(
        b.value("init").starts_with("pid 1 release good-1"),
        "one boot, no reboot:\n{}",
        b.serial
    );
}

fn corrupt_record_copy_uses_the_other(t: Target) {
    let im = images(t);
    // Two deployments, so "only deployment" cannot explain a good outcome.
    let disk = im.disk("corrupt", &["--commit", &im.good, "--previous", &im.noinit]);
    // The install writes both copies; B (generation 2) is the newer. Damage it.
    disk.corrupt("/berth/boot/record.b");
    let b = disk.boot("berthtest=report");
    let j = b.boot_json();
    assert_eq!(
        j["choice"]["deployment"],
        disk.name_of(&im.good).as_str(),
        "{}",
        b.serial
    );
    assert_eq!(
        j["reason"], "default",
        "the intact copy A was used:\n{}",
        b.serial
    );
    assert_eq!(j["record_generation"], 1, "copy A's generation");
}

/// Both copies of the record damaged: berth-init boots the last good deployment instead
/// of rebooting forever, and the booted system's `berth fsck --repair` writes a fresh
/// record that the next boot uses.
fn both_record_copies_damaged_boot_the_last_good(t: Target) {
    let im = images(t);
    let disk = im.disk("double", &["--commit", &im.good2, "--previous", &im.good]);
    let good2 = disk.name_of(&im.good2);
    disk.corrupt("/berth/boot/record.a");
    disk.corrupt("/berth/boot/record.b");
    let b = disk.boot("berthtest=repair");
    let j = b.boot_json();
    assert_eq!(j["choice"]["deployment"], good2.as_str(), "{}", b.serial);
    assert_eq!(j["reason"], "last-good", "{}", b.serial);
    assert!(
        b.value("repair").contains("wrote a fresh boot record"),
        "{}",
        b.serial
    );
    let b = disk.boot("berthtest=report");
    let j = b.boot_json();
    assert_eq!(j["reason"], "default", "{}", b.serial);
    assert_eq!(j["choice"]["deployment"], good2.as_str(), "{}", b.serial);
}

/// A root filesystem completed by `berth-image initramfs` carries its kernel set
/// (kernel, initramfs with berth-init and the modules, kernel arguments), and the disk
/// boots exactly that: its initramfs, and its `usr/lib/berth/kargs`.
fn kernel_set_in_the_deployment_boots(t: Target) {
    let im = images(t);
    let (commit, kset, tree) = im.kernel_set_commit("kset-1");
    let version = kset["version"].as_str().unwrap().to_owned();
    let disk = im.disk("kset", &["--commit", &commit]);
    assert_eq!(disk.info["kernel_set"], kset["id"], "{}", disk.info);
    let initrd = std::fs::read(disk.info["initramfs"].as_str().unwrap()).unwrap();
    let committed = std::fs::read(
        tree.join("usr/lib/modules")
            .join(&version)
            .join("initramfs.img"),
    )
    .unwrap();
    assert!(
        initrd == committed,
        "the disk boots the deployment's own initramfs"
    );
    let b = disk.boot("");
    assert!(
        b.value("init").contains("release kset-1 scenario write"),
        "{}",
        b.serial
    );
    assert_eq!(b.value("etc"), "kset-1", "{}", b.serial);
    assert_eq!(b.boot_json()["reason"], "default", "{}", b.serial);
}

/// A UEFI PC: OVMF starts systemd-boot from the ESP, which boots the deployment's kernel
/// set through its Boot Loader Specification entry; berth-init takes it from there.
fn uefi_first_boot_through_firmware_and_systemd_boot(t: Target) {
    let im = images(t);
    let (commit, kset, _) = im.kernel_set_commit("uefi-1");
    let disk = im.disk("uefi", &["--commit", &commit]);
    assert_eq!(disk.info["kernel_set"], kset["id"], "{}", disk.info);
    let argv: Vec<&str> = disk.info["qemu"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(
        !argv.contains(&"-kernel"),
        "the firmware loads the kernel: {argv:?}"
    );
    assert!(argv.iter().any(|a| a.contains("OVMF_CODE")), "{argv:?}");
    let b = disk.boot("");
    let set = &kset["id"].as_str().unwrap()[..16];
    assert!(
        b.serial
            .contains(&format!("initrd=\\berth\\{set}\\initramfs.img")),
        "systemd-boot loaded the set's initramfs from the ESP:\n{}",
        b.serial
    );
    assert!(
        b.serial
            .contains(&format!("berth.entry={}", disk.name_of(&commit))),
        "the entry names itself on the command line:\n{}",
        b.serial
    );
    assert!(
        b.value("init").contains("release uefi-1 scenario write"),
        "{}",
        b.serial
    );
    assert_eq!(b.value("root"), "read-only", "{}", b.serial);
    assert_eq!(b.boot_json()["reason"], "default", "{}", b.serial);
    eprintln!("uefi-x86_64: OVMF + systemd-boot boot, wall {:?}", b.wall);
}

/// An arm64 board with U-Boot: `berth-image disk --board qemu-aarch64-uboot` makes one
/// disk (a FAT boot partition with boot.scr, the loader state and an entry per
/// deployment with a kernel set, then the sysroot); QEMU starts U-Boot as `-bios`, its
/// distro boot sources boot.scr from partition 1, and the script boots the default
/// entry. The state copies are read back as written: nothing is counted without a trial.
fn uboot_first_boot_through_distro_boot_and_boot_scr(t: Target) {
    let im = images(t);
    let (old, _, _) = im.kernel_set_commit("ub-1");
    let (commit, kset, _) = im.kernel_set_commit("ub-2");
    let disk = im.disk("uboot", &["--commit", &commit, "--previous", &old]);
    assert_eq!(disk.info["kernel_set"], kset["id"], "{}", disk.info);
    let argv: Vec<&str> = disk.info["qemu"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(
        argv.contains(&"-bios") && !argv.contains(&"-kernel") && !argv.contains(&"-append"),
        "U-Boot loads the kernel: {argv:?}"
    );
    let (default, previous) = (disk.name_of(&commit), disk.name_of(&old));
    let partuuid = disk.info["partuuid"].as_str().unwrap().to_owned();
    let boot_part = uboot_partition(&disk, &partuuid);
    let written = (
        loader_state(1, &default, &previous),
        loader_state(2, &default, &previous),
    );
    let on_disk = || {
        (
            read_fat(&boot_part, "berth/a/state"),
            read_fat(&boot_part, "berth/b/state"),
        )
    };
    assert_eq!(on_disk(), written, "the state as built");
    for entry in [&default, &previous] {
        let cmdline = read_fat(&boot_part, &format!("{entry}/cmdline"));
        assert!(
            cmdline.ends_with(format!("berth.root=PARTUUID={partuuid}").as_bytes()),
            "{entry}: {}",
            String::from_utf8_lossy(&cmdline)
        );
    }

    let b = disk.boot("");
    let kernel_line = b
        .serial
        .lines()
        .find(|l| l.contains("Kernel command line:"))
        .unwrap_or_else(|| panic!("no kernel started:\n{}", b.serial));
    assert!(
        b.shows("Scanning virtio 0:1...")
            && b.shows("Found U-Boot script /boot.scr")
            && b.shows("berth: using state b"),
        "distro boot ran boot.scr from partition 1:\n{}",
        b.serial
    );
    for arg in [
        format!("berth.entry={default}"),
        format!("berth.root=PARTUUID={partuuid}"),
        "berthtest=write".to_owned(),
    ] {
        assert!(
            kernel_line.split_whitespace().any(|w| w == arg),
            "{arg} in {kernel_line}"
        );
    }
    assert!(
        b.value("init").contains("release ub-2 scenario write"),
        "{}",
        b.serial
    );
    assert_eq!(b.boot_json()["reason"], "default", "{}", b.serial);
    assert_eq!(on_disk(), written, "no trial: nothing was written");
    eprintln!(
        "qemu-aarch64-uboot: U-Boot + boot.scr boot, wall {:?}",
        b.wall
    );
}

/// The boot partition of a U-Boot board's image, for mtools (`IMAGE@@OFFSET`): the
/// first partition, named `boot` and marked legacy-BIOS-bootable; the sysroot is the
/// second, with the PARTUUID `berth-image disk` reported.
fn uboot_partition(disk: &qemu_tests::Disk, partuuid: &str) -> String {
    let table: serde_json::Value = serde_json::from_str(&qemu_tests::run(
        std::process::Command::new("sfdisk")
            .arg("--json")
            .arg(disk.image()),
    ))
    .unwrap();
    let parts = &table["partitiontable"]["partitions"];
    assert_eq!(parts[0]["name"], "boot", "{table}");
    assert_eq!(parts[0]["attrs"], "LegacyBIOSBootable", "{table}");
    assert_eq!(parts[1]["name"], "sysroot", "{table}");
    assert_eq!(
        parts[1]["uuid"].as_str().map(str::to_lowercase).as_deref(),
        Some(partuuid),
        "{table}"
    );
    let start = parts[0]["start"].as_u64().unwrap() * 512;
    format!("{}@@{start}", disk.image().display())
}

/// A file of a FAT partition (`IMAGE@@OFFSET`), read with mtools.
fn read_fat(part: &str, path: &str) -> Vec<u8> {
    let out = tempfile::NamedTempFile::new().unwrap();
    qemu_tests::run(
        std::process::Command::new("mcopy")
            .args(["-n", "-o", "-i", part])
            .arg(format!("::{path}"))
            .arg(out.path()),
    );
    std::fs::read(out.path()).unwrap()
}

/// The loader state `berth-image disk` writes: no trial; decoded from and checked
/// against its canonical encoding.
fn loader_state(generation: u64, default: &str, previous: &str) -> Vec<u8> {
    use format::loader::LoaderState;
    use format::record::DeploymentName;
    let name = |s: &str| DeploymentName::new(s.as_bytes()).unwrap();
    let state = LoaderState {
        generation,
        default: name(default),
        previous: Some(name(previous)),
        trial: None,
    };
    let bytes = state.encode().unwrap();
    assert_eq!(LoaderState::decode(&bytes).unwrap(), state);
    bytes
}

macro_rules! on_both_boards {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            for t in TARGETS {
                if skip(t, stringify!($name)) {
                    continue;
                }
                super::$name(t);
            }
        }
    )*};
}

/// The guest fetches its update from a static repository served by the test on the
/// host's 127.0.0.1: QEMU user networking with `restrict=on`, so its only way out is the
/// `guestfwd` to that server. Then it reboots into the trial and marks it good.
fn update_over_http_from_the_host_then_mark_good(t: Target) {
    let im = images(t);
    let disk = im.disk("http-update", &["--commit", &im.good]);
    let (v1, v2) = (disk.name_of(&im.good), disk.name_of(&im.good2));
    let www = im.dir.path().join("www");
    let out = std::process::Command::new(qemu_tests::bin("berth-image"))
        .args(["publish", "--repo"])
        .arg(&im.repo)
        .arg("--to")
        .arg(&www)
        .args([
            "--channel",
            "stable",
            "--commit",
            &im.good2,
            "--from",
            &im.good,
        ])
        .arg("--key")
        .arg(im.keys.join("berth.key"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = testkit::http::Server::start(&www);
    // Drops every 64 KiB: the guest resumes with ranges.
    server.set(|f| f.drop_every = Some(64 << 10));
    let b = disk.boot_net("berthtest=httpupdate", server.addr.port());
    assert_eq!(b.value("network"), "up", "{}", b.serial);
    assert!(
        b.value("update")
            .contains(&format!("installed {v2} (version good-2)"))
            && b.value("update").contains("for the delta update"),
        "{}",
        b.serial
    );
    assert!(server.requests() >= 3, "pointer, superblock and parts");
    let b = disk.boot("berthtest=markgood");
    assert_eq!(b.boot_json()["reason"], "trial", "{}", b.serial);
    assert!(
        b.value("markgood")
            .contains(&format!("{v2} is now the default; previous: {v1}")),
        "{}",
        b.serial
    );
}

/// A trial with another kernel set on the UEFI board: systemd-boot counts its tries
/// (`+2` → `+1-1` → `+0-2`) while its kernel panics, then boots the default's entry;
/// berth-init sees the loader gave the trial up, drops it, and `berth status` says so.
fn uefi_panicking_trial_kernel_falls_back_through_systemd_boot(t: Target) {
    let im = images(t);
    let (v1, ..) = im.kernel_set_commit("uefi-1");
    // Another set (its kargs differ): an initramfs whose init cannot be found.
    let (v2, ..) = im.kernel_set_commit_with("uefi-2", "rdinit=/nonexistent");
    let disk = im.disk(
        "uefi-trial",
        &["--commit", &v1, "--trial", &v2, "--tries", "2"],
    );
    let (n1, n2) = (disk.name_of(&v1), disk.name_of(&v2));
    for n in 1..=2 {
        let b = disk.boot("");
        assert!(
            b.serial.contains(&format!("berth.entry={n2}")) && b.serial.contains("Kernel panic"),
            "boot {n}: systemd-boot starts the trial's entry, whose kernel panics:\n{}",
            b.serial
        );
    }
    let b = disk.boot("");
    assert!(
        b.serial.contains(&format!("berth.entry={n1}")),
        "its tries spent, the default's entry:\n{}",
        b.serial
    );
    let j = b.boot_json();
    assert_eq!(j["choice"]["deployment"], n1.as_str(), "{}", b.serial);
    assert_eq!(
        j["fallbacks"][0]["event"], "loader-fell-back",
        "{}",
        b.serial
    );
    assert!(
        b.serial
            .contains(&format!("the boot loader gave up the trial {n2}")),
        "berth status says so:\n{}",
        b.serial
    );
    assert!(
        b.serial.contains("last rollback: from") && b.serial.contains("tries-exhausted"),
        "{}",
        b.serial
    );
}

/// A kernel update over the air on the UEFI board, the device running its own cycle at
/// every boot (`berthtest=ota`: mark-good, gc, then the update on a USB stick if one is
/// attached). Each release has its own kernel set (its arguments differ): `berth update`
/// copies it to the ESP with a counted entry, systemd-boot boots it, mark-good blesses
/// it, and gc leaves only the sets the record's deployments boot.
fn uefi_kernel_update_over_the_air(t: Target) {
    let im = images(t);
    let (v1, k1, _) = im.kernel_set_commit_with("ota-1", "berthtest=ota");
    let (v2, k2, _) = im.kernel_set_commit_with("ota-2", "berthtest=ota berth_test_release=2");
    let (v3, k3, _) = im.kernel_set_commit_with("ota-3", "berthtest=ota berth_test_release=3");
    let disk = im.disk("uefi-ota", &["--commit", &v1]);
    let (n1, n2, n3) = (disk.name_of(&v1), disk.name_of(&v2), disk.name_of(&v3));
    let set = |k: &serde_json::Value| k["id"].as_str().unwrap()[..16].to_owned();
    let entries = || disk.boot_partition_names("loader/entries");
    let sets = || disk.boot_partition_names("berth");
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };

    let b = disk.boot_with("", Some(&im.usb_stick("ota-stick-2", Some(&v1), &v2)));
    assert!(
        b.serial.contains(&format!("berth.entry={n1}")),
        "{}",
        b.serial
    );
    assert!(
        b.test_values("update").iter().any(|l| l.contains(&n2)),
        "the update from the stick:\n{}",
        b.serial
    );
    assert_eq!(
        entries(),
        [format!("berth-2-{n1}.conf"), format!("berth-3-{n2}+3.conf")]
    );
    assert_eq!(sets(), sorted(vec![set(&k1), set(&k2)]));

    let b = disk.boot("");
    assert!(
        b.serial.contains(&format!("berth.entry={n2}")),
        "systemd-boot starts the trial's entry:\n{}",
        b.serial
    );
    assert_eq!(b.boot_json()["reason"], "loader-trial", "{}", b.serial);
    assert!(
        b.value("markgood").contains("is now the default"),
        "{}",
        b.serial
    );
    assert_eq!(
        entries(),
        [format!("berth-2-{n1}.conf"), format!("berth-3-{n2}.conf")]
    );

    let b = disk.boot_with("", Some(&im.usb_stick("ota-stick-3", Some(&v2), &v3)));
    assert!(
        b.serial.contains(&format!("berth.entry={n2}")),
        "{}",
        b.serial
    );
    assert_eq!(b.boot_json()["reason"], "default", "{}", b.serial);
    let b = disk.boot("");
    assert!(
        b.serial.contains(&format!("berth.entry={n3}")),
        "{}",
        b.serial
    );
    assert!(
        b.value("markgood").contains("is now the default"),
        "{}",
        b.serial
    );
    assert!(
        b.value("gc").contains(&set(&k1)),
        "gc removes v1's set:\n{}",
        b.serial
    );
    assert_eq!(
        entries(),
        [format!("berth-3-{n2}.conf"), format!("berth-4-{n3}.conf")]
    );
    assert_eq!(sets(), sorted(vec![set(&k2), set(&k3)]));

    let b = uefi_root_filesystem_update(&im, &disk, (&v3, &k3), &n2);
    eprintln!(
        "uefi-x86_64: kernel update over the air, last boot wall {:?}",
        b.wall
    );
}

/// The over-the-air test's last step on the UEFI board: a root filesystem update. v4
/// has v3's kernel set (the default's): the ESP stays as it is, the loader boots v3's
/// entry and berth-init counts v4's tries; once committed, v4 gets an entry of its own
/// for the same set.
fn uefi_root_filesystem_update(
    im: &qemu_tests::Images,
    disk: &qemu_tests::Disk,
    (v3, k3): (&str, &serde_json::Value),
    n2: &str,
) -> qemu_tests::Boot {
    let n3 = disk.name_of(v3);
    let set = |k: &serde_json::Value| k["id"].as_str().unwrap()[..16].to_owned();
    let entries = || disk.boot_partition_names("loader/entries");
    let (v4, k4, _) = im.kernel_set_commit_with("ota-4", "berthtest=ota berth_test_release=3");
    let n4 = disk.name_of(&v4);
    assert_eq!(
        k4["id"], k3["id"],
        "the same kernel, initramfs and arguments"
    );
    let b = disk.boot_with("", Some(&im.usb_stick("ota-stick-4", Some(v3), &v4)));
    assert!(
        b.test_values("update").iter().any(|l| l.contains(&n4)),
        "{}",
        b.serial
    );
    assert_eq!(
        entries(),
        [format!("berth-3-{n2}.conf"), format!("berth-4-{n3}.conf")]
    );
    let b = disk.boot("");
    assert!(
        b.serial.contains(&format!("berth.entry={n3}")),
        "{}",
        b.serial
    );
    assert_eq!(
        b.boot_json()["reason"],
        "trial",
        "berth-init counts it:\n{}",
        b.serial
    );
    assert_eq!(
        b.boot_json()["choice"]["deployment"],
        n4.as_str(),
        "{}",
        b.serial
    );
    assert!(
        b.value("markgood").contains("is now the default"),
        "{}",
        b.serial
    );
    assert_eq!(
        entries(),
        [format!("berth-4-{n3}.conf"), format!("berth-5-{n4}.conf")]
    );
    // The same boot's gc (after the mark-good) collected v2 and its set.
    assert_eq!(disk.boot_partition_names("berth"), [set(k3)]);
    b
}

/// The same cycle on the U-Boot board: `berth update` writes the new set's entry
/// directory and the state copy that makes `boot.scr` count the trial; mark-good writes
/// the state that makes it the default; gc leaves the entries the record boots.
fn uboot_kernel_update_over_the_air(t: Target) {
    use format::loader::LoaderState;
    let im = images(t);
    let (v1, _, _) = im.kernel_set_commit_with("ubota-1", "berthtest=ota");
    let (v2, _, _) = im.kernel_set_commit_with("ubota-2", "berthtest=ota berth_test_release=2");
    let (v3, k3, _) = im.kernel_set_commit_with("ubota-3", "berthtest=ota berth_test_release=3");
    let disk = im.disk("uboot-ota", &["--commit", &v1]);
    let (n1, n2, n3) = (disk.name_of(&v1), disk.name_of(&v2), disk.name_of(&v3));
    let part = uboot_partition(&disk, disk.info["partuuid"].as_str().unwrap());
    let state = || {
        let read = |p| LoaderState::decode(&read_fat(&part, p)).ok();
        let (a, b) = (read("berth/a/state"), read("berth/b/state"));
        let s = format::loader::winner(a.as_ref(), b.as_ref()).unwrap().1;
        (
            s.default.as_str().to_owned(),
            s.previous.map(|p| p.as_str().to_owned()),
            s.trial.map(|t| (t.entry.as_str().to_owned(), t.tries_left)),
        )
    };
    let entries = || {
        let mut v: Vec<String> = disk
            .boot_partition_names("")
            .into_iter()
            .filter(|n| n.len() == 16)
            .collect();
        v.sort();
        v
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };

    let b = disk.boot_with("", Some(&im.usb_stick("ubota-stick-2", Some(&v1), &v2)));
    assert!(
        b.serial.contains(&format!("berth.entry={n1}")),
        "{}",
        b.serial
    );
    assert!(
        b.test_values("update").iter().any(|l| l.contains(&n2)),
        "the update from the stick:\n{}",
        b.serial
    );
    assert_eq!(state(), (n1.clone(), None, Some((n2.clone(), 3))));
    assert_eq!(entries(), sorted(vec![n1.clone(), n2.clone()]));

    let b = disk.boot("");
    assert!(
        b.serial.contains(&format!("berth: booting entry {n2}")),
        "boot.scr takes a try of the trial and boots it:\n{}",
        b.serial
    );
    assert_eq!(b.boot_json()["reason"], "loader-trial", "{}", b.serial);
    assert!(
        b.value("markgood").contains("is now the default"),
        "{}",
        b.serial
    );
    assert_eq!(state(), (n2.clone(), Some(n1.clone()), None));

    let b = disk.boot_with("", Some(&im.usb_stick("ubota-stick-3", Some(&v2), &v3)));
    assert_eq!(b.boot_json()["reason"], "default", "{}", b.serial);
    assert_eq!(
        state(),
        (n2.clone(), Some(n1.clone()), Some((n3.clone(), 3)))
    );
    let b = disk.boot("");
    assert!(
        b.serial.contains(&format!("berth.entry={n3}")),
        "{}",
        b.serial
    );
    assert!(
        b.value("markgood").contains("is now the default"),
        "{}",
        b.serial
    );
    assert_eq!(state(), (n3.clone(), Some(n2.clone()), None));
    assert_eq!(entries(), sorted(vec![n2.clone(), n3.clone()]));

    let b = uboot_root_filesystem_update(&im, &disk, (&v3, &k3), &n2, &state);
    eprintln!(
        "qemu-aarch64-uboot: kernel update over the air, last boot wall {:?}",
        b.wall
    );
}

/// The over-the-air test's last step on the U-Boot board: a root filesystem update (v4
/// has v3's kernel set): the partition stays as it is, boot.scr boots v3's entry and
/// berth-init counts v4's tries; mark-good gives v4 an entry of its own.
fn uboot_root_filesystem_update(
    im: &qemu_tests::Images,
    disk: &qemu_tests::Disk,
    (v3, k3): (&str, &serde_json::Value),
    n2: &str,
    state: &dyn Fn() -> (String, Option<String>, Option<(String, u8)>),
) -> qemu_tests::Boot {
    let n3 = disk.name_of(v3);
    let n2 = n2.to_owned();
    let (v4, k4, _) = im.kernel_set_commit_with("ubota-4", "berthtest=ota berth_test_release=3");
    let n4 = disk.name_of(&v4);
    assert_eq!(
        k4["id"], k3["id"],
        "the same kernel, initramfs and arguments"
    );
    let b = disk.boot_with("", Some(&im.usb_stick("ubota-stick-4", Some(v3), &v4)));
    assert!(
        b.test_values("update").iter().any(|l| l.contains(&n4)),
        "{}",
        b.serial
    );
    assert_eq!(state(), (n3.clone(), Some(n2.clone()), None));
    let b = disk.boot("");
    assert!(
        b.serial.contains(&format!("berth.entry={n3}")),
        "{}",
        b.serial
    );
    assert_eq!(
        b.boot_json()["reason"],
        "trial",
        "berth-init counts it:\n{}",
        b.serial
    );
    assert!(
        b.value("markgood").contains("is now the default"),
        "{}",
        b.serial
    );
    assert_eq!(state(), (n4.clone(), Some(n3.clone()), None));
    b
}

#[test]
fn qemu_aarch64_uboot_kernel_update_over_the_air() {
    let t = qemu_tests::UBOOT_AARCH64;
    if !skip(t, "kernel_update_over_the_air") {
        uboot_kernel_update_over_the_air(t);
    }
}

/// Kernels that fail after an update over the air, on a loader board: one that panics
/// (its arguments name an init that does not exist) and one the loader cannot load (its
/// `vmlinuz` on the boot partition overwritten). Each gets one try
/// (`berth_test_tries=1`); then the loader boots the default's entry, berth-init drops
/// the trial, `berth status` reports the loader's fallback, and gc removes the entry.
/// systemd-boot does not go on to the next entry when a kernel will not load: it returns
/// to the firmware, and only the next power-on (after the try it counted) boots the
/// default.
fn broken_kernels_after_an_update_fall_back(t: Target) {
    let im = images(t);
    let uboot = t.board.contains("uboot");
    let (v1, ..) = im.kernel_set_commit_with("fb-1", "berthtest=ota berth_test_tries=1");
    let (v2, ..) = im.kernel_set_commit_with("fb-2", "berthtest=ota rdinit=/nonexistent");
    let (v3, k3, _) = im.kernel_set_commit_with("fb-3", "berthtest=ota berth_test_release=3");
    let disk = im.disk(&format!("{}-fallback", t.board), &["--commit", &v1]);
    let (n1, n2, n3) = (disk.name_of(&v1), disk.name_of(&v2), disk.name_of(&v3));
    let b = disk.boot_with("", Some(&im.usb_stick("fb-stick-2", Some(&v1), &v2)));
    assert!(
        b.test_values("update").iter().any(|l| l.contains(&n2)),
        "{}",
        b.serial
    );
    let b = disk.boot("");
    assert!(
        b.serial.contains("Kernel panic") && !b.serial.contains("BERTH-TEST: init"),
        "the trial's kernel panics:\n{}",
        b.serial
    );
    // The fallback boot also takes v3 from a stick.
    let b = disk.boot_with("", Some(&im.usb_stick("fb-stick-3", Some(&v1), &v3)));
    assert!(
        b.serial.contains(&format!("berth.entry={n1}")),
        "{}",
        b.serial
    );
    assert_eq!(
        b.boot_json()["fallbacks"][0]["event"],
        "loader-fell-back",
        "{}",
        b.serial
    );
    assert!(
        b.serial
            .contains(&format!("the boot loader gave up the trial {n2}")),
        "berth status says so:\n{}",
        b.serial
    );
    assert!(
        b.value("gc").contains(&n2),
        "gc removes its entry:\n{}",
        b.serial
    );
    assert!(
        b.test_values("update").iter().any(|l| l.contains(&n3)),
        "{}",
        b.serial
    );

    // v3's kernel on the boot partition is overwritten with garbage of the same size.
    let set = &k3["id"].as_str().unwrap()[..16];
    let path = if uboot {
        format!("{n3}/vmlinuz")
    } else {
        format!("berth/{set}/vmlinuz")
    };
    disk.overwrite_boot_file(&path);
    let b = if uboot {
        // booti refuses the kernel and the script boots the next entry in the same boot.
        disk.boot("")
    } else {
        // systemd-boot counts the try, fails to load the kernel and returns to the
        // firmware, which stops in its boot menu: a watchdog or a person cuts the power.
        let b = disk.boot_until("Error loading");
        assert!(
            b.serial
                .contains(&format!("Error loading \\berth\\{set}\\vmlinuz")),
            "{}",
            b.serial
        );
        disk.boot("")
    };
    assert!(
        b.serial.contains(&format!("berth.entry={n1}")),
        "the loader falls back:\n{}",
        b.serial
    );
    assert_eq!(
        b.boot_json()["choice"]["deployment"],
        n1.as_str(),
        "{}",
        b.serial
    );
    assert!(
        b.serial
            .contains(&format!("the boot loader gave up the trial {n3}")),
        "{}",
        b.serial
    );
}

#[test]
fn uefi_x86_64_broken_kernels_after_an_update_fall_back() {
    let t = qemu_tests::UEFI_X86_64;
    if !skip(t, "broken_kernels_after_an_update_fall_back") {
        broken_kernels_after_an_update_fall_back(t);
    }
}

#[test]
fn qemu_aarch64_uboot_broken_kernels_after_an_update_fall_back() {
    let t = qemu_tests::UBOOT_AARCH64;
    if !skip(t, "broken_kernels_after_an_update_fall_back") {
        broken_kernels_after_an_update_fall_back(t);
    }
}

/// `berth-image disk --trial` on the U-Boot board: a trial with its own kernel set is the
/// loader state's trial, so boot.scr counts it; its kernel panics once, then the default
/// boots and berth-init reports the loader's fallback.
fn uboot_trial_in_the_image_is_counted_by_the_script(t: Target) {
    let im = images(t);
    let (v1, ..) = im.kernel_set_commit("ubt-1");
    let (v2, ..) = im.kernel_set_commit_with("ubt-2", "rdinit=/nonexistent");
    let disk = im.disk(
        "uboot-trial",
        &["--commit", &v1, "--trial", &v2, "--tries", "1"],
    );
    let (n1, n2) = (disk.name_of(&v1), disk.name_of(&v2));
    let b = disk.boot("");
    assert!(
        b.serial
            .contains(&format!("berth: trial {n2}: 0 tries left after this boot"))
            && b.serial.contains("Kernel panic"),
        "{}",
        b.serial
    );
    let b = disk.boot("");
    assert!(
        b.serial.contains(&format!("berth.entry={n1}")),
        "{}",
        b.serial
    );
    assert_eq!(
        b.boot_json()["fallbacks"][0]["event"],
        "loader-fell-back",
        "{}",
        b.serial
    );
}

#[test]
fn qemu_aarch64_uboot_trial_in_the_image_is_counted_by_the_script() {
    let t = qemu_tests::UBOOT_AARCH64;
    if !skip(t, "trial_in_the_image_is_counted_by_the_script") {
        uboot_trial_in_the_image_is_counted_by_the_script(t);
    }
}

#[test]
fn uefi_x86_64_kernel_update_over_the_air() {
    let t = qemu_tests::UEFI_X86_64;
    if !skip(t, "kernel_update_over_the_air") {
        uefi_kernel_update_over_the_air(t);
    }
}

#[test]
fn uefi_x86_64_panicking_trial_kernel_falls_back_through_systemd_boot() {
    let t = qemu_tests::UEFI_X86_64;
    if !skip(t, "panicking_trial_kernel_falls_back_through_systemd_boot") {
        uefi_panicking_trial_kernel_falls_back_through_systemd_boot(t);
    }
}

#[test]
fn uefi_x86_64_first_boot_through_firmware_and_systemd_boot() {
    let t = qemu_tests::UEFI_X86_64;
    if !skip(t, "first_boot_through_firmware_and_systemd_boot") {
        uefi_first_boot_through_firmware_and_systemd_boot(t);
    }
}

#[test]
fn qemu_aarch64_uboot_first_boot_through_distro_boot_and_boot_scr() {
    let t = qemu_tests::UBOOT_AARCH64;
    if !skip(t, "first_boot_through_distro_boot_and_boot_scr") {
        uboot_first_boot_through_distro_boot_and_boot_scr(t);
    }
}

#[test]
fn qemu_x86_64_update_over_http_from_the_host_then_mark_good() {
    let t = TARGETS[0];
    if !skip(t, "update_over_http_from_the_host_then_mark_good") {
        update_over_http_from_the_host_then_mark_good(t);
    }
}

mod qemu {
    use super::{TARGETS, skip};
    on_both_boards!(
        first_boot_and_persistence,
        boot_counting_rolls_back_to_the_default,
        trial_marked_good_becomes_the_default,
        update_from_a_usb_stick_then_a_crashing_update_rolls_back,
        missing_init_falls_back_in_the_same_boot,
        corrupt_record_copy_uses_the_other,
        both_record_copies_damaged_boot_the_last_good,
        kernel_set_in_the_deployment_boots
    );
}
