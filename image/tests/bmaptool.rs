//! Our bmaps and bmap-tools' agree: `bmaptool copy` accepts a bmap `berth-image bmap`
//! wrote and copies the same bytes, `bmaptool create` maps the same ranges with the same
//! checksums, and `berth-image flash` reads a bmap bmaptool wrote. bmaptool (Debian's
//! bmap-tools, which `ci/setup.sh` installs) missing is a skip, or a failure under
//! `BERTH_STRICT=1`.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_berth-image"))
}

/// Whether bmaptool runs here; if not, says so (or fails under `BERTH_STRICT=1`).
fn have_bmaptool(test: &str) -> bool {
    if Command::new("bmaptool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return true;
    }
    !testkit::missing(
        test,
        "bmaptool is missing (apt-get install bmap-tools, or run ci/setup.sh)",
    )
}

/// A sparse image of 20 MiB + 3000 bytes: data at a few places, holes between, a
/// partial last block.
fn sparse_image(dir: &Path) -> PathBuf {
    let path = dir.join("img.raw");
    let mut f = File::create(&path).unwrap();
    let size = (20 << 20) + 3000;
    f.set_len(size).unwrap();
    let noise = testkit::noise(3 << 20);
    for (at, len) in [
        (512u64, 1000usize),
        (64 << 10, 200 << 10),
        (5 << 20, 3 << 20),
        (size - 2000, 2000),
    ] {
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&noise[..len]).unwrap();
    }
    f.sync_all().unwrap();
    path
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The `<Range …>` lines of a bmap, trimmed.
fn ranges(bmap: &Path) -> Vec<String> {
    std::fs::read_to_string(bmap)
        .unwrap()
        .lines()
        .filter(|l| l.contains("<Range "))
        .map(|l| l.trim().to_owned())
        .collect()
}

#[test]
fn bmaptool_copies_with_our_bmap_and_maps_the_same_ranges() {
    if !have_bmaptool("bmaptool_copies_with_our_bmap_and_maps_the_same_ranges") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let img = sparse_image(tmp.path());
    let ours = PathBuf::from(ok(Command::new(bin()).arg("bmap").arg(&img)).trim());
    let out = tmp.path().join("copy.raw");
    ok(Command::new("bmaptool")
        .args(["copy", "--bmap"])
        .arg(&ours)
        .arg(&img)
        .arg(&out));
    testkit::assert_same_bytes(&out, &img);

    // bmaptool create finds the same ranges (FIEMAP where we use SEEK_DATA) and hashes
    // them the same way, so the block maps agree line for line.
    let theirs = tmp.path().join("theirs.bmap");
    ok(Command::new("bmaptool")
        .args(["create", "-o"])
        .arg(&theirs)
        .arg(&img));
    let ours_ranges = ranges(&ours);
    assert!(ours_ranges.len() >= 4, "{ours_ranges:?}");
    assert_eq!(ours_ranges, ranges(&theirs));
}

#[test]
fn flash_reads_a_bmap_that_bmaptool_wrote() {
    if !have_bmaptool("flash_reads_a_bmap_that_bmaptool_wrote") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let img = sparse_image(tmp.path());
    let theirs = tmp.path().join("theirs.bmap");
    ok(Command::new("bmaptool")
        .args(["create", "-o"])
        .arg(&theirs)
        .arg(&img));
    let out = tmp.path().join("flashed.raw");
    let j: serde_json::Value = serde_json::from_str(&ok(Command::new(bin())
        .arg("flash")
        .arg(&img)
        .arg(&out)
        .arg("--bmap")
        .arg(&theirs)
        .arg("--json")))
    .unwrap();
    assert_eq!(j["ranges"].as_u64().unwrap(), ranges(&theirs).len() as u64);
    testkit::assert_same_bytes(&out, &img);
}
