//! Zip patches round-trip: made by `make_zip` from two zip archives (Python's zipfile at
//! several levels, with stored members among the deflated ones, and 7-Zip's), rebuilt
//! by `rebuild_zip` to the exact new bytes, much smaller than a patch of the compressed
//! bytes; what is not a zip archive gets none; and lying heads are refused in one line.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own
#![allow(clippy::cast_possible_truncation)] // test fixtures: every size here is small

use std::process::Command;

use format::zippatch::{BasePiece, NewPiece, ZipHead};
use format::{FileHeader, FileKind, Xattrs};
use redeflate::{ZipError, make_zip, rebuild_zip, recreate, zip_streams};

fn header(size: usize) -> FileHeader {
    FileHeader {
        kind: FileKind::Regular,
        mode: 0o644,
        uid: 0,
        gid: 0,
        rdev_major: 0,
        rdev_minor: 0,
        size: size as u64,
        xattrs: Xattrs::new(),
    }
}

/// Source-like text: `n` numbered lines.
fn text(seed: u32, n: u32, changed: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let v = if i == changed { 7777 } else { i * 31 + seed };
        out.extend_from_slice(
            format!(
                "    def method_{i}(self, value={v}):\n        return self.update(value) + {}\n",
                i % 17
            )
            .as_bytes(),
        );
    }
    out
}

/// A member: its name, content, and whether it is stored rather than deflated.
type Member = (String, Vec<u8>, bool);

/// A zip archive of `members` made by Python's zipfile at `level` (fixed dates, so the
/// same members make the same bytes).
fn pyzip(members: &[Member], level: u32) -> Option<Vec<u8>> {
    let members: Vec<(&str, &[u8], bool)> = members
        .iter()
        .map(|(n, d, stored)| (n.as_str(), d.as_slice(), *stored))
        .collect();
    testkit::zip::python_zip(&members, level)
}

/// A release of a small Python package and the next one: members edited, one added, one
/// removed, one stored (as a jar's manifest may be), one of binary data.
fn releases() -> (Vec<Member>, Vec<Member>) {
    let blob = |seed: u8| {
        (0..20_000u32)
            .map(|i| (i * 7 + u32::from(seed)) as u8 ^ (i >> 5) as u8)
            .collect::<Vec<u8>>()
    };
    let old = vec![
        ("pkg/__init__.py".into(), text(1, 200, 999), false),
        ("pkg/core.py".into(), text(2, 1500, 999), false),
        ("pkg/util.py".into(), text(3, 800, 999), false),
        ("pkg/gone.py".into(), text(4, 300, 999), false),
        (
            "META-INF/MANIFEST.MF".into(),
            b"Manifest-Version: 1.0\nVersion: 1.0\n".to_vec(),
            true,
        ),
        ("pkg/data.bin".into(), blob(1), false),
    ];
    let new = vec![
        ("pkg/__init__.py".into(), text(1, 200, 999), false),
        ("pkg/core.py".into(), text(2, 1510, 40), false),
        ("pkg/util.py".into(), text(3, 800, 700), false),
        ("pkg/added.py".into(), text(5, 100, 999), false),
        (
            "META-INF/MANIFEST.MF".into(),
            b"Manifest-Version: 1.0\nVersion: 1.1\n".to_vec(),
            true,
        ),
        ("pkg/data.bin".into(), blob(2), false),
    ];
    (old, new)
}

fn rebuild(old: &[u8], head: &ZipHead, payload: &[u8]) -> Result<Vec<u8>, String> {
    rebuild_zip(old, head, &mut &payload[..], recreate, |r| {
        let mut v = Vec::new();
        r.read_to_end(&mut v).map(|_| v)
    })
    .map_err(|e| match e {
        ZipError::Rebuild(e) => e.to_string(),
        ZipError::Consume(e) => format!("consume: {e}"),
    })
}

fn python_missing() -> bool {
    if Command::new("python3").arg("--version").output().is_err() {
        testkit::missing("zip patches", "python3 (apt install python3)");
        return true;
    }
    false
}

#[test]
fn zip_archives_round_trip_through_their_members() {
    if python_missing() {
        return;
    }
    let (old_members, new_members) = releases();
    for level in [1, 6, 9] {
        let old = pyzip(&old_members, level).unwrap();
        let new = pyzip(&new_members, level).unwrap();
        assert_eq!(zip_streams(&new).unwrap().len(), 5, "five deflated members");
        let (head, payload) = make_zip(&old, &new, header(new.len()), 3)
            .unwrap_or_else(|e| panic!("level {level}: {e}"));
        assert_eq!(head.base, 3);
        assert_eq!(payload.len() as u64, head.payload_len());
        assert_eq!(
            rebuild(&old, &head, &payload).unwrap(),
            new,
            "level {level}"
        );
        // Read in small and empty reads, as any reader may: the same bytes.
        let mut small = Vec::new();
        rebuild_zip(&old[..], &head, &mut &payload[..], recreate, |r| {
            let mut b = [0u8; 7];
            loop {
                assert_eq!(r.read(&mut [])?, 0);
                match r.read(&mut b)? {
                    0 => return Ok::<_, std::io::Error>(()),
                    n => small.extend_from_slice(&b[..n]),
                }
            }
        })
        .map_err(|_| "rebuild")
        .unwrap();
        assert!(small == new, "level {level}: small reads");
        // What it costs against a patch of the compressed bytes (both compressed, as
        // the parts are).
        let mut plain = Vec::new();
        bidiff::simple_diff(&old, &new, &mut plain).unwrap();
        let z = |b: &[u8]| zstd::bulk::compress(b, 19).unwrap().len();
        let (cost, plain_cost) = (z(&payload) + head.encode().len(), z(&plain));
        eprintln!(
            "level {level}: zip patch {cost} bytes, plain patch {plain_cost}, file {}",
            new.len()
        );
        assert!(
            cost * 2 < plain_cost,
            "level {level}: {cost} against {plain_cost}"
        );
    }
}

#[test]
fn seven_zip_archives_round_trip() {
    if Command::new("7z").arg("--help").output().is_err() {
        testkit::missing(
            "seven_zip_archives_round_trip",
            "7z (apt install p7zip-full)",
        );
        return;
    }
    let (old_members, new_members) = releases();
    let make = |members: &[Member], name: &str| {
        let dir = tempfile::tempdir().unwrap();
        for (path, data, _) in members {
            let p = dir.path().join("tree").join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, data).unwrap();
        }
        let out = dir.path().join(name);
        let status = Command::new("7z")
            .args(["a", "-tzip", "-mx=7", "-bd"])
            .arg(&out)
            .arg(".")
            .current_dir(dir.path().join("tree"))
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::read(out).unwrap()
    };
    let (old, new) = (make(&old_members, "a.zip"), make(&new_members, "b.zip"));
    let (head, payload) = make_zip(&old, &new, header(new.len()), 0).unwrap();
    assert!(
        head.pieces
            .iter()
            .filter(|p| matches!(p, NewPiece::Stream { .. }))
            .count()
            >= 4
    );
    assert_eq!(rebuild(&old, &head, &payload).unwrap(), new);
}

#[test]
fn what_is_not_a_zip_archive_gets_no_zip_patch() {
    if python_missing() {
        return;
    }
    let (old_members, new_members) = releases();
    let old = pyzip(&old_members, 6).unwrap();
    let new = pyzip(&new_members, 6).unwrap();
    let text = text(1, 100, 999);
    assert!(
        make_zip(&text, &new, header(new.len()), 0).is_err(),
        "base not zip"
    );
    assert!(
        make_zip(&old, &text, header(text.len()), 0).is_err(),
        "new not zip"
    );
    // Every member stored: nothing to gain.
    let stored: Vec<Member> = new_members
        .iter()
        .map(|(n, d, _)| (n.clone(), d.clone(), true))
        .collect();
    let all_stored = pyzip(&stored, 6).unwrap();
    assert_eq!(
        make_zip(&old, &all_stored, header(all_stored.len()), 0).unwrap_err(),
        "no member is recreated exactly"
    );
    // A central directory that points past the end.
    let mut cut = new.clone();
    cut.truncate(new.len() / 2);
    cut.extend_from_slice(&new[new.len() - 200..]);
    assert!(zip_streams(&cut).is_none() || make_zip(&old, &cut, header(cut.len()), 0).is_err());
}

/// A lie in a head, and what its refusal says.
type Lie = fn(&mut ZipHead);

/// The first of the base's streams.
fn stream_at(h: &ZipHead) -> usize {
    h.base_pieces
        .iter()
        .position(|p| matches!(p, BasePiece::Stream { .. }))
        .unwrap()
}

#[test]
fn lying_heads_are_refused_in_one_line() {
    if python_missing() {
        return;
    }
    let (old_members, new_members) = releases();
    let old = pyzip(&old_members, 9).unwrap();
    let new = pyzip(&new_members, 9).unwrap();
    let (head, payload) = make_zip(&old, &new, header(new.len()), 0).unwrap();
    let lies: [(Lie, &str); 5] = [
        (
            |h| {
                let i = stream_at(h);
                if let BasePiece::Stream { plain, .. } = &mut h.base_pieces[i] {
                    *plain -= 1;
                }
            },
            "inflates to more than",
        ),
        (
            |h| {
                let i = stream_at(h);
                if let BasePiece::Stream { plain, .. } = &mut h.base_pieces[i] {
                    *plain += 1;
                }
            },
            "inflates to",
        ),
        (
            |h| {
                h.base_pieces.pop();
            },
            "longer than its pieces",
        ),
        (
            |h| {
                if let Some(BasePiece::Stored { len }) = h.base_pieces.last_mut() {
                    *len += 1;
                }
            },
            "ends inside its piece",
        ),
        (
            |h| {
                // The last stored piece one byte longer, the file too: the patch runs out.
                if let Some(NewPiece::Stored { len }) = h.pieces.last_mut() {
                    *len += 1;
                }
                h.header.size += 1;
            },
            "the patch ends inside stored piece",
        ),
    ];
    for (lie, needle) in lies {
        let mut h = head.clone();
        lie(&mut h);
        let h = ZipHead::decode(&h.encode()).unwrap();
        let e = rebuild(&old, &h, &payload).unwrap_err();
        assert!(e.contains(needle), "{needle}: {e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }
    // The patch's length a byte short: it cannot make the pieces, or has bytes over.
    let mut h = head.clone();
    h.patch_len -= 1;
    assert!(rebuild(&old, &h, &payload).is_err());
    // A stream whose recreated length differs from what the head says.
    let mut h = head;
    let i = h
        .pieces
        .iter()
        .position(|p| matches!(p, NewPiece::Stream { .. }))
        .unwrap();
    if let NewPiece::Stream { stream_len, .. } = &mut h.pieces[i] {
        *stream_len += 1;
    }
    h.header.size += 1;
    let e = rebuild(&old, &h, &payload).unwrap_err();
    assert!(e.contains("more than") || e.contains("stream"), "{e}");
}
