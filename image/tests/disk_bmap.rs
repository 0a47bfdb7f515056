//! `berth-image disk` writes DISK.IMG.bmap beside the image; `berth-image flash` and
//! `bmaptool copy` write the same bytes with it, and `--json` and the text output name
//! it. Needs Debian's kernel for the host's architecture (`ci/fetch-kernels.sh`, as the
//! QEMU tier does; `BERTH_CACHE` as there); missing is a skip, or a failure under
//! `BERTH_STRICT=1`. berth-init is not needed: the image is never booted here, so
//! berth-image itself stands in as `--init` (an ELF of the host's architecture).
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_berth-image"))
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The board for the host's architecture and Debian's name for that architecture.
fn host_board() -> (&'static str, &'static str) {
    if cfg!(target_arch = "aarch64") {
        ("qemu-aarch64", "arm64")
    } else {
        ("qemu-x86_64", "amd64")
    }
}

fn skip(test: &str, why: &str) -> bool {
    testkit::missing(test, why)
}

/// A repository in `dir` with one commit of a small tree: (repository, commit id).
fn small_commit(dir: &Path) -> (PathBuf, String) {
    let tree = dir.join("tree");
    for d in ["sbin", "etc", "usr/lib"] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
    }
    std::fs::write(tree.join("sbin/init"), "#!/bin/sh\necho hello\n").unwrap();
    std::fs::write(tree.join("etc/hostname"), "bmap\n").unwrap();
    std::fs::write(tree.join("usr/lib/data.bin"), testkit::noise(1 << 20)).unwrap();
    let repo = dir.join("repo");
    let commit = ok(Command::new(bin())
        .args(["commit", "--version", "1.0", "--repo"])
        .arg(&repo)
        .arg("--tree")
        .arg(&tree));
    (repo, commit.trim().to_owned())
}

/// A loop device, detached on drop (best effort: a leftover loop device never changes a
/// result).
struct Detach(String);

impl Drop for Detach {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// Flashed onto a "used card" (a loop device over random bytes), where every block
/// outside the bmap keeps its garbage, the sysroot still passes `e2fsck -fn`: nothing
/// the GPT or ext4 reads lies outside the mapped blocks.
fn used_card_still_checks_clean(img: &Path, dir: &Path) {
    let card = dir.join("used-card");
    // 1 MiB of noise over and over: garbage in every block, cheaply.
    let size = usize::try_from(std::fs::metadata(img).unwrap().len()).unwrap();
    std::fs::write(&card, testkit::noise(1 << 20).repeat(size >> 20)).unwrap();
    let dev = Detach(
        ok(Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&card))
        .trim()
        .to_owned(),
    );
    ok(Command::new(bin())
        .args(["flash", "--force"])
        .arg(img)
        .arg(&dev.0));
    // The partition table is there now: have the kernel's view match it (it may have
    // rescanned by itself, so update rather than add).
    ok(Command::new("partx").args(["-u", &dev.0]));
    let check = Command::new("e2fsck")
        .args(["-fn", &format!("{}p1", dev.0)])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "e2fsck -fn on the used card: {check:?}"
    );
}

#[test]
fn disk_writes_a_bmap_that_flash_and_bmaptool_write_identically() {
    let test = "disk_writes_a_bmap_that_flash_and_bmaptool_write_identically";
    let (board, arch) = host_board();
    let cache = std::env::var_os("BERTH_CACHE")
        .map_or_else(|| PathBuf::from("/var/cache/berth"), PathBuf::from);
    let complete = cache.join("debian").join(arch).join(".complete");
    if !complete.exists()
        && skip(
            test,
            &format!(
                "{} is missing (run ci/fetch-kernels.sh)",
                complete.display()
            ),
        )
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (repo, commit) = small_commit(tmp.path());
    let disk = |name: &str, json: bool| {
        let mut cmd = Command::new(bin());
        cmd.args(["disk", "--board", board, "--commit", &commit])
            .arg("--repo")
            .arg(&repo)
            .arg("--kernel-dir")
            .arg(cache.join("debian").join(arch).join("kernel"))
            .arg("--init")
            .arg(bin())
            .arg("-o")
            .arg(tmp.path().join(name));
        if json {
            cmd.arg("--json");
        }
        ok(&mut cmd)
    };

    let info: serde_json::Value = serde_json::from_str(&disk("disk.img", true)).unwrap();
    let img = tmp.path().join("disk.img");
    let bmap = tmp.path().join("disk.img.bmap");
    assert_eq!(info["disk"], img.to_str().unwrap());
    assert_eq!(info["bmap"], bmap.to_str().unwrap());
    assert!(
        info["qemu"].as_array().is_some_and(|a| !a.is_empty()),
        "{info}"
    );
    let text = std::fs::read_to_string(&bmap).unwrap();
    let size = std::fs::metadata(&img).unwrap().len();
    assert!(
        text.contains(&format!("<ImageSize> {size} </ImageSize>")),
        "{text}"
    );

    let flashed = tmp.path().join("flashed.img");
    let j: serde_json::Value = serde_json::from_str(&ok(Command::new(bin())
        .arg("flash")
        .arg(&img)
        .arg(&flashed)
        .arg("--json")))
    .unwrap();
    testkit::assert_same_bytes(&flashed, &img);
    // The image is sparse: a few MiB of its 256 are written.
    let written = j["bytes_written"].as_u64().unwrap();
    assert!(written > 1 << 20 && written < size / 8, "{j}");

    if Command::new("bmaptool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let copied = tmp.path().join("bmaptool.img");
        ok(Command::new("bmaptool")
            .args(["copy", "--bmap"])
            .arg(&bmap)
            .arg(&img)
            .arg(&copied));
        testkit::assert_same_bytes(&copied, &img);
    } else {
        skip(
            test,
            "bmaptool is missing for the bmaptool part (apt-get install bmap-tools)",
        );
    }

    if testkit::is_root() && Path::new("/dev/loop-control").exists() {
        used_card_still_checks_clean(&img, tmp.path());
    } else {
        eprintln!("not root (or no loop devices): the used-card part is left out of this run");
    }

    // The text output names the bmap and shows both ways to flash.
    let out = disk("second.img", false);
    let second = tmp.path().join("second.img");
    for want in [
        format!("bmap:       {}.bmap", second.display()),
        format!(
            "bmaptool copy --bmap {0}.bmap {0} /dev/sdX",
            second.display()
        ),
        format!("berth-image flash {} /dev/sdX", second.display()),
    ] {
        assert!(out.contains(&want), "{want:?} missing from\n{out}");
    }
}
