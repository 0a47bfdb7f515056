//! `berth-image flash` to a file: the bytes of the image, its holes kept; refusals of a
//! damaged image, a bmap that fails its checksum or fits another image, a missing bmap,
//! and targets that are neither files nor block devices. (Block devices: `flash_device.rs`.)
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_berth-image"))
}

fn berth(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(bin()).args(args).output().unwrap()
}

/// A 6 MiB + 1000 byte sparse image: noise at 0, at 1 MiB + 100 (across a block
/// boundary), 1 MiB + 5 bytes at 3 MiB, and 500 bytes at the very end (a partial last
/// block); holes elsewhere.
fn sparse_image(dir: &Path) -> PathBuf {
    let path = dir.join("disk.img");
    let mut f = File::create(&path).unwrap();
    let size = (6 << 20) + 1000;
    f.set_len(size).unwrap();
    for (at, len) in [
        (0u64, 4096usize),
        ((1 << 20) + 100, 10_000),
        (3 << 20, (1 << 20) + 5),
        (size - 500, 500),
    ] {
        f.seek(SeekFrom::Start(at)).unwrap();
        let mut data = testkit::noise(len + 7);
        data.drain(..7); // a different stream per extent
        f.write_all(&data).unwrap();
    }
    f.sync_all().unwrap();
    path
}

/// `berth-image bmap IMAGE`: the bmap's path.
fn bmap(image: &Path) -> PathBuf {
    let out = berth(&["bmap".as_ref(), image.as_os_str()]);
    assert!(out.status.success(), "{out:?}");
    let path = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert_eq!(path, PathBuf::from(format!("{}.bmap", image.display())));
    path
}

/// Runs flash and expects a one-line refusal holding every `want`; returns it.
fn refused(args: &[&std::ffi::OsStr], want: &[&str]) -> String {
    let out = berth(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("berth-image: "), "{err}");
    for w in want {
        assert!(err.contains(w), "{args:?}: {err:?} lacks {w:?}");
    }
    err
}

#[test]
fn flash_to_a_file_writes_the_image_and_keeps_its_holes() {
    let tmp = tempfile::tempdir().unwrap();
    let img = sparse_image(tmp.path());
    let map = bmap(&img);
    let text = std::fs::read_to_string(&map).unwrap();
    assert!(text.contains("<bmap version=\"2.0\">"), "{text}");
    let ranges = text.matches("<Range ").count();

    // A new file.
    let out_path = tmp.path().join("out.img");
    let out = berth(&[
        "flash".as_ref(),
        img.as_os_str(),
        out_path.as_os_str(),
        "--json".as_ref(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    testkit::assert_same_bytes(&out_path, &img);
    let size = std::fs::metadata(&img).unwrap().len();
    assert_eq!(j["image_size"], size);
    assert_eq!(j["target_kind"], "file");
    assert_eq!(j["bmap"], map.to_str().unwrap());
    assert_eq!(j["ranges"].as_u64().unwrap(), ranges as u64);
    let written = j["bytes_written"].as_u64().unwrap();
    // What is mapped: the four extents rounded out to blocks (the 10,000 bytes at
    // 1 MiB + 100 span 3 blocks, the 1 MiB + 5 at 3 MiB 257), the last block cut at the
    // image's end; unless this filesystem reports no holes.
    let mapped = 4096 + 3 * 4096 + 257 * 4096 + 1000;
    if ranges > 1 {
        assert_eq!(written, mapped, "{j}");
        // Holes stay holes: about as many blocks allocated as the image has.
        let allocated = std::fs::metadata(&out_path).unwrap().blocks() * 512;
        assert!(
            allocated < 2 * mapped,
            "{allocated} bytes allocated for {mapped} mapped"
        );
    }

    // Over an existing, larger file full of other bytes: truncated, then the image.
    std::fs::write(&out_path, vec![0xa5u8; 8 << 20]).unwrap();
    let out = berth(&["flash".as_ref(), img.as_os_str(), out_path.as_os_str()]);
    assert!(out.status.success(), "{out:?}");
    let summary = String::from_utf8(out.stdout).unwrap();
    assert!(
        summary.starts_with("wrote ") && summary.contains("read back and verified"),
        "{summary}"
    );
    testkit::assert_same_bytes(&out_path, &img);
}

#[test]
fn a_damaged_image_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let img = sparse_image(tmp.path());
    bmap(&img);
    // One bit flipped in the mapped range at 3 MiB (blocks 768-1024).
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    let mut b = [0u8; 1];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut b, (3 << 20) + 12345).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[b[0] ^ 0x10], (3 << 20) + 12345).unwrap();

    // A target that does not exist is not created.
    let new = tmp.path().join("new.img");
    refused(
        &["flash".as_ref(), img.as_os_str(), new.as_os_str()],
        &[
            "disk.img: blocks 768-1024 do not match the bmap's sha256",
            "nothing was written to",
        ],
    );
    assert!(!new.exists(), "the target was created");
    // A target that exists keeps every byte (and its size).
    let old = tmp.path().join("old.img");
    std::fs::write(&old, b"what was there before").unwrap();
    refused(
        &["flash".as_ref(), img.as_os_str(), old.as_os_str()],
        &["do not match the bmap's sha256"],
    );
    assert_eq!(std::fs::read(&old).unwrap(), b"what was there before");
}

#[test]
fn a_bmap_that_fails_its_checksum_or_fits_another_image_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let img = sparse_image(tmp.path());
    let map = bmap(&img);
    let good = std::fs::read_to_string(&map).unwrap();
    let target = tmp.path().join("out.img");
    let with = |m: &Path, want: &[&str]| {
        refused(
            &[
                "flash".as_ref(),
                img.as_os_str(),
                target.as_os_str(),
                "--bmap".as_ref(),
                m.as_os_str(),
            ],
            want,
        )
    };

    // A range's checksum edited (the image is fine): the bmap's own checksum catches it.
    let at = good.find("chksum=\"").unwrap() + 8;
    let mut edited = good.clone();
    let c = if &good[at..=at] == "0" { "1" } else { "0" };
    edited.replace_range(at..=at, c);
    let bad = tmp.path().join("edited.bmap");
    std::fs::write(&bad, &edited).unwrap();
    with(
        &bad,
        &["edited.bmap: checksum mismatch: the file hashes to"],
    );

    // Cut in half; not text at all.
    let cut = tmp.path().join("cut.bmap");
    std::fs::write(&cut, &good[..good.len() / 2]).unwrap();
    with(&cut, &["cut.bmap: line"]);
    let not_xml = tmp.path().join("not.bmap");
    std::fs::write(&not_xml, [0xffu8, 0, 1]).unwrap();
    with(&not_xml, &["not.bmap: not text"]);
    assert!(!target.exists(), "a refused flash created the target");

    // A good bmap for an image that has since grown by a block.
    let grown = tmp.path().join("grown.img");
    std::fs::copy(&img, &grown).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&grown)
        .unwrap();
    f.set_len(f.metadata().unwrap().len() + 4096).unwrap();
    refused(
        &[
            "flash".as_ref(),
            grown.as_os_str(),
            target.as_os_str(),
            "--bmap".as_ref(),
            map.as_os_str(),
        ],
        &[
            "disk.img.bmap: made for an image of 6292456 bytes, but",
            "has 6296552",
        ],
    );
    assert!(!target.exists());
}

#[test]
fn without_a_bmap_flash_refuses_unless_told_to_write_every_block() {
    let tmp = tempfile::tempdir().unwrap();
    let img = sparse_image(tmp.path());
    let target = tmp.path().join("out.img");
    refused(
        &["flash".as_ref(), img.as_os_str(), target.as_os_str()],
        &["disk.img.bmap: no bmap beside the image", "--no-bmap"],
    );
    let missing = tmp.path().join("missing.bmap");
    refused(
        &[
            "flash".as_ref(),
            img.as_os_str(),
            target.as_os_str(),
            "--bmap".as_ref(),
            missing.as_os_str(),
        ],
        &["missing.bmap: read: No such file"],
    );
    assert!(!target.exists());
    let out = berth(&[
        "flash".as_ref(),
        "--no-bmap".as_ref(),
        "--json".as_ref(),
        img.as_os_str(),
        target.as_os_str(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["bmap"], serde_json::Value::Null);
    assert_eq!(j["bytes_written"], std::fs::metadata(&img).unwrap().len());
    testkit::assert_same_bytes(&target, &img);
}

#[test]
fn targets_that_are_not_files_or_block_devices_or_are_the_image_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let img = sparse_image(tmp.path());
    bmap(&img);
    let before = tmp.path().join("before.img");
    std::fs::copy(&img, &before).unwrap();
    refused(
        &["flash".as_ref(), img.as_os_str(), "/dev/null".as_ref()],
        &["/dev/null: not a regular file or a block device"],
    );
    refused(
        &["flash".as_ref(), img.as_os_str(), tmp.path().as_os_str()],
        &["not a regular file or a block device"],
    );
    // The image itself, under another name (a hard link).
    let link = tmp.path().join("link.img");
    std::fs::hard_link(&img, &link).unwrap();
    refused(
        &["flash".as_ref(), img.as_os_str(), link.as_os_str()],
        &["link.img: is the image itself"],
    );
    testkit::assert_same_bytes(&img, &before);
    let missing_dir = tmp.path().join("no/such/dir/out.img");
    refused(
        &["flash".as_ref(), img.as_os_str(), missing_dir.as_os_str()],
        &["out.img: open for writing"],
    );
}
