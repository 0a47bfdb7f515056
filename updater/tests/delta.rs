//! The delta engine end to end: `berth-image delta` on the host, `berth update` on a
//! device, for random trees and their mutations (renames, moves, edits in the middle,
//! truncation, growth), and for the cases the encoder treats specially: renamed sonames,
//! moved files, windowed large files, and patches that lie about their output.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own
#![allow(clippy::cast_possible_truncation)] // test fixtures: every size here is small

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use common::Lab;
use proptest::prelude::*;

type Files = BTreeMap<String, Vec<u8>>;

/// Every regular file under `root` (paths relative, sorted).
fn files_under(root: &Path) -> Files {
    let mut out = Files::new();
    for (p, e) in testkit::scan(root) {
        if e.mode & 0o170_000 == 0o100_000 {
            out.insert(String::from_utf8(p).unwrap(), e.content);
        }
    }
    out
}

fn refs(f: &Files) -> Vec<(&str, &[u8])> {
    f.iter().map(|(k, c)| (k.as_str(), c.as_slice())).collect()
}

/// Updates a device from `from` to `to` with a delta (extra `args` to `delta`), checks
/// the new deployment holds exactly `to`'s files, and returns the delta's JSON report.
fn round_trip(base: &Files, target: &Files, args: &[&str]) -> serde_json::Value {
    let lab = Lab::new();
    let v1 = lab.commit("1.0", &refs(base));
    let v2 = lab.commit("2.0", &refs(target));
    lab.install(&v1, &[]);
    lab.booted(&v1[..16], "default");
    let update = lab.tmp.path().join("u.berth");
    let mut delta_args = vec![
        "delta",
        "--repo",
        lab.repo.to_str().unwrap(),
        "--from",
        &v1,
        "--to",
        &v2,
        "--key",
        lab.keys.join("berth.key").to_str().unwrap(),
        "-o",
        update.to_str().unwrap(),
        "--json",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect::<Vec<_>>();
    delta_args.extend(args.iter().map(|a| (*a).to_owned()));
    let report = testkit::run_ok(
        &testkit::bin("berth-image"),
        &delta_args
            .iter()
            .map(std::ffi::OsStr::new)
            .collect::<Vec<_>>(),
    );
    lab.ok(&["update", update.to_str().unwrap(), "--progress", "none"]);
    lab.ok(&["fsck"]);
    let got = files_under(&lab.sysroot.join("berth/deploy").join(&v2[..16]));
    let want = files_under(&lab.tmp.path().join("tree-2.0"));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (k, v) in &want {
        assert!(got[k] == *v, "{k} differs after the update");
    }
    serde_json::from_str(&report).unwrap()
}

/// Bytes that look like a binary: runs of structure with noise, so patches pay.
fn blob(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i % 16 < 12 {
                (i / 64) as u8
            } else {
                x.to_le_bytes()[0]
            }
        })
        .collect()
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Overwrite bytes in the middle of a file.
    Edit(usize, usize, u8),
    /// Insert bytes in the middle of a file.
    Insert(usize, usize),
    /// Cut a file short.
    Truncate(usize),
    /// Rename a file in its directory (like a soname bump).
    Rename(usize),
    /// Move a file to another directory.
    Move(usize, usize),
    /// Delete a file.
    Delete(usize),
    /// Add a file.
    Add(u64, usize),
}

const DIRS: [&str; 4] = ["usr/lib", "usr/lib/x", "usr/share/doc", "opt/a/b"];

fn pick(files: &Files, i: usize) -> Option<String> {
    (!files.is_empty()).then(|| files.keys().nth(i % files.len()).unwrap().clone())
}

fn mutate(base: &Files, muts: &[Mutation]) -> Files {
    let mut t = base.clone();
    for m in muts {
        match *m {
            Mutation::Edit(f, at, v) => {
                if let Some(k) = pick(&t, f) {
                    let c = t.get_mut(&k).unwrap();
                    if !c.is_empty() {
                        let at = at % c.len();
                        let end = (at + 37).min(c.len());
                        c[at..end].iter_mut().for_each(|b| *b ^= v | 1);
                    }
                }
            }
            Mutation::Insert(f, at) => {
                if let Some(k) = pick(&t, f) {
                    let c = t.get_mut(&k).unwrap();
                    let at = at % (c.len() + 1);
                    let ins = blob(at as u64, 300);
                    c.splice(at..at, ins);
                }
            }
            Mutation::Truncate(f) => {
                if let Some(k) = pick(&t, f) {
                    let c = t.get_mut(&k).unwrap();
                    c.truncate(c.len() / 2);
                }
            }
            Mutation::Rename(f) => {
                if let Some(k) = pick(&t, f) {
                    let c = t.remove(&k).unwrap();
                    t.insert(format!("{k}.1"), c);
                }
            }
            Mutation::Move(f, d) => {
                if let Some(k) = pick(&t, f) {
                    let c = t.remove(&k).unwrap();
                    let name = k.rsplit('/').next().unwrap();
                    t.insert(format!("{}/{name}", DIRS[d % DIRS.len()]), c);
                }
            }
            Mutation::Delete(f) => {
                if let Some(k) = pick(&t, f) {
                    t.remove(&k);
                }
            }
            Mutation::Add(seed, len) => {
                t.insert(
                    format!("{}/new-{seed}", DIRS[seed as usize % DIRS.len()]),
                    blob(seed, len),
                );
            }
        }
    }
    without_clashes(&mut t);
    t
}

/// Drops the files whose path is also a directory of another file's path.
fn without_clashes(files: &mut Files) {
    let dirs: Vec<String> = files
        .keys()
        .flat_map(|k| {
            k.match_indices('/')
                .map(|(i, _)| k[..i].to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    files.retain(|k, _| !dirs.contains(k));
}

fn tree_strategy() -> impl Strategy<Value = Files> {
    prop::collection::btree_map(
        (0..DIRS.len(), "[a-z]{1,6}(\\.so\\.[0-9])?"),
        (any::<u64>(), 0usize..6000),
        1..12,
    )
    .prop_map(|m| {
        let mut files: Files = m
            .into_iter()
            .map(|((d, name), (seed, len))| (format!("{}/{name}", DIRS[d]), blob(seed, len)))
            .collect();
        without_clashes(&mut files);
        files
    })
}

fn mutation_strategy() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<usize>(), any::<u8>()).prop_map(|(a, b, c)| Mutation::Edit(a, b, c)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Insert(a, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        any::<usize>().prop_map(Mutation::Rename),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Move(a, b)),
        any::<usize>().prop_map(Mutation::Delete),
        (any::<u64>(), 0usize..5000).prop_map(|(a, b)| Mutation::Add(a, b)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever the trees and their changes, the device ends with exactly the target,
    /// with small windows and small parts so windows, and references across parts, are
    /// exercised too.
    #[test]
    fn applied_deltas_reproduce_the_target(
        base in tree_strategy(),
        muts in prop::collection::vec(mutation_strategy(), 0..8),
        small in any::<bool>(),
    ) {
        let target = mutate(&base, &muts);
        let args: &[&str] = if small { &["--window", "1500", "--part-size", "3000"] } else { &[] };
        round_trip(&base, &target, args);
    }
}

#[test]
fn renamed_sonames_and_moved_files_are_patched_against_their_old_selves() {
    let lib = blob(7, 200_000);
    let doc = blob(8, 50_000);
    let base: Files = [
        ("usr/lib/libfoo.so.1.2.3".to_owned(), lib.clone()),
        ("usr/share/doc/foo/notes".to_owned(), doc.clone()),
        ("usr/lib/other".to_owned(), blob(9, 1000)),
    ]
    .into();
    let mut lib2 = lib;
    lib2[100_000..100_010].copy_from_slice(b"0123456789");
    let mut doc2 = doc;
    doc2[10..20].copy_from_slice(b"abcdefghij");
    let target: Files = [
        ("usr/lib/libfoo.so.1.2.4".to_owned(), lib2),
        ("opt/foo/notes".to_owned(), doc2),
        ("usr/lib/other".to_owned(), blob(9, 1000)),
    ]
    .into();
    let report = round_trip(&base, &target, &[]);
    assert_eq!(report["patched"], 2, "{report}");
    assert_eq!(report["patched_elsewhere"], 2, "{report}");
    // Two small patches, not 250 KB of content.
    assert!(report["bytes"].as_u64().unwrap() < 5_000, "{report}");
}

#[test]
fn a_large_file_changed_in_the_middle_travels_as_windows() {
    let big = blob(3, 1 << 20);
    let mut big2 = big.clone();
    // 5000 new bytes in the middle shift everything after them.
    big2.splice(500_000..500_000, blob(4, 5000));
    let base: Files = [("usr/lib/big".to_owned(), big)].into();
    let target: Files = [("usr/lib/big".to_owned(), big2)].into();
    // Windows of 64 KiB: the file is 16 of them, each diffed against its old position.
    let report = round_trip(&base, &target, &["--window", "65536"]);
    assert_eq!(report["patched"], 1, "{report}");
    assert!(report["bytes"].as_u64().unwrap() < 20_000, "{report}");
}

/// Decodes the operations of a plain part: (offset of the op, kind, head, payload length).
fn ops_of(plain: &[u8]) -> Vec<(usize, u8, Vec<u8>, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < plain.len() {
        let kind = plain[at];
        let len = u32::from_le_bytes(plain[at + 1..at + 5].try_into().unwrap()) as usize;
        let head = plain[at + 5..at + 5 + len].to_vec();
        let payload = match kind {
            format::ops::FILE => format::FileHeader::decode(&head).unwrap().size as usize,
            format::ops::FILE_PATCH => {
                format::ops::PatchHead::decode(&head).unwrap().payload_len() as usize
            }
            _ => 0,
        };
        out.push((at, kind, head, payload));
        at += 5 + len + payload;
    }
    out
}

#[test]
fn a_patch_that_makes_more_or_less_than_it_declares_is_refused() {
    let lab = Lab::new();
    let old = blob(1, 100_000);
    let mut new = old.clone();
    new[50_000..50_004].copy_from_slice(b"four");
    let v1 = lab.commit("1.0", &[("usr/lib/f", &old)]);
    let v2 = lab.commit("2.0", &[("usr/lib/f", &new)]);
    lab.install(&v1, &[]);
    lab.booted(&v1[..16], "default");
    let good = fs::read(lab.delta(Some(&v1), &v2, "good.berth", &[])).unwrap();
    for (delta, needle) in [
        (-1i64, "makes more than its declared size"),
        (1, "ends 1 bytes early"),
    ] {
        let bad = common::resign(&lab, &good, |plain| {
            let (at, _, head, _) = ops_of(plain)
                .into_iter()
                .find(|o| o.1 == format::ops::FILE_PATCH)
                .expect("a patch op");
            let mut ph = format::ops::PatchHead::decode(&head).unwrap();
            ph.header.size = ph.header.size.checked_add_signed(delta).unwrap();
            ph.windows[0].out_len = ph.header.size;
            let new_head = ph.encode();
            let mut op = vec![format::ops::FILE_PATCH];
            op.extend_from_slice(&(new_head.len() as u32).to_le_bytes());
            op.extend_from_slice(&new_head);
            plain.splice(at..at + 5 + head.len(), op);
        });
        let path = lab.tmp.path().join("bad.berth");
        fs::write(&path, &bad).unwrap();
        lab.fails(&["update", path.to_str().unwrap()], needle);
    }
    let path = lab.tmp.path().join("good.berth");
    lab.ok(&["update", path.to_str().unwrap()]);
}

/// A lie told in a deflate patch: its head and payload changed.
type Lie = fn(&mut format::ops::DeflateHead, &mut [u8]);

/// `gzip -9n` of `data` (as Debian compresses its man pages and changelogs).
fn gzip(data: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("gzip")
        .arg("-9n")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    // Written from a thread: gzip's output fills its pipe before a large input ends.
    let mut stdin = child.stdin.take()?;
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().ok()?;
    writer.join().ok()?.ok()?;
    out.status.success().then_some(out.stdout)
}

/// A changelog-like text of `n` entries, entry `changed` reworded.
fn changelog(n: usize, changed: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in (0..n).rev() {
        let what = if i == changed {
            "security fix"
        } else {
            "rebuild"
        };
        out.extend_from_slice(
            format!(
                "pkg (1.{i}-1) bookworm; urgency=medium\n\n  * {what} for entry {i}, closes: #{}\n\n -- Maintainer <m@example.org>  Mon, {} Jan 2024 12:00:00 +0000\n\n",
                i * 7919 % 100_000,
                i % 28 + 1
            )
            .as_bytes(),
        );
    }
    out
}

#[test]
fn gzip_and_zlib_files_travel_as_deflate_patches_and_lies_are_refused() {
    if gzip(b"x").is_none() {
        testkit::missing("gzip_files", "gzip (apt install gzip)");
        return;
    }
    let mut base = Files::new();
    let mut target = Files::new();
    for (i, n) in [300usize, 1000, 3000].into_iter().enumerate() {
        let name = format!("usr/share/doc/p{i}/changelog.Debian.gz");
        base.insert(name.clone(), gzip(&changelog(n, usize::MAX)).unwrap());
        // A new entry at the top and an old one reworded: every compressed byte after
        // the top changes.
        target.insert(name, gzip(&changelog(n + 1, n / 2)).unwrap());
    }
    // A zlib stream (as a program's data file might be): the same, framed by zlib.
    let zlib = |data: &[u8]| {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut e, data).unwrap();
        e.finish().unwrap()
    };
    base.insert(
        "usr/share/p/data.zz".into(),
        zlib(&changelog(2000, usize::MAX)),
    );
    target.insert("usr/share/p/data.zz".into(), zlib(&changelog(2001, 1000)));
    // Not gzip, and gzip whose base is not: plain patches or whole files.
    base.insert("usr/lib/x".into(), blob(3, 20_000));
    target.insert("usr/lib/x".into(), blob(4, 20_000));
    let gz_bytes: usize = target.values().map(Vec::len).sum::<usize>() - 20_000;
    let report = round_trip(&base, &target, &[]);
    assert_eq!(report["deflated"], 4, "{report}");
    assert!(
        report["bytes"].as_u64().unwrap() < gz_bytes as u64 / 4,
        "{report} against {gz_bytes} bytes of gzip"
    );

    // For devices whose berth predates deflate patches: no flag, plain patches, larger.
    let (lab, good, plain) = with_and_without(
        &base,
        &target,
        format::update::FLAG_DEFLATE_PATCH,
        "--no-deflate",
    );
    assert!(
        plain.len() > 2 * good.len(),
        "{} against {}",
        plain.len(),
        good.len()
    );
    // Lies, each signed with the trusted key: refused in one line, nothing changed.
    let lies: [(Lie, &str); 5] = [
        // The reconstruction data damaged: preflate, in its child process, fails or
        // panics; either way one line.
        (
            |h, payload| {
                for b in &mut payload[4..h.corrections_len as usize] {
                    *b ^= 0x5a;
                }
            },
            "deflate patch: ",
        ),
        (|h, _| h.base_plain -= 1, "the base inflates to more than"),
        (|h, _| h.plain += 1, "the patch makes"),
        (
            |h, _| {
                h.stream_len += 1;
                h.header.size += 1;
            },
            "the reconstruction makes a",
        ),
        (|h, _| h.base_start = 1 << 40, "past the end of"),
    ];
    for (lie, needle) in lies {
        let bad = changed_op(&lab, &good, format::ops::DEFLATE_PATCH, |head, payload| {
            let mut h = format::ops::DeflateHead::decode(head).unwrap();
            lie(&mut h, payload);
            h.encode()
        });
        lab.fails(&["update", bad.to_str().unwrap()], needle);
    }
    // An incompatible flag this berth does not know (as an older berth sees this one).
    let mut p = common::Parsed::parse(&good);
    p.body.flags |= 0x8000;
    p.sign(&lab);
    let path = lab.tmp.path().join("flag.berth");
    fs::write(&path, p.encode()).unwrap();
    lab.fails(
        &["update", path.to_str().unwrap()],
        "unknown incompatible feature flags 0x8000",
    );
    let path = lab.tmp.path().join("good.berth");
    lab.ok(&["update", path.to_str().unwrap()]);
}

/// Deflate streams are recreated while the part goes on; three of about 6 MiB each, in
/// one part, hold more than the 16 MiB that may wait (each counts its data, its
/// reconstruction data and its stream), so the third settles the first before it is
/// sent, and the small streams and the trees read between them wait and are made in
/// order.
#[test]
fn deflate_streams_past_the_memory_bound_are_settled_in_order() {
    if gzip(b"x").is_none() {
        testkit::missing("gzip_files", "gzip (apt install gzip)");
        return;
    }
    let mut base = Files::new();
    let mut target = Files::new();
    for i in 0..3 {
        let big = format!("usr/share/doc/big{i}/changelog.Debian.gz");
        let n = 42_000 + i * 100;
        base.insert(big.clone(), gzip(&changelog(n, usize::MAX)).unwrap());
        target.insert(big, gzip(&changelog(n + 1, n / 3)).unwrap());
        for j in 0..2 {
            let small = format!("usr/share/doc/small{i}{j}/changelog.Debian.gz");
            let n = 200 + 10 * i + j;
            base.insert(small.clone(), gzip(&changelog(n, usize::MAX)).unwrap());
            target.insert(small, gzip(&changelog(n + 1, 50)).unwrap());
        }
    }
    let plain = changelog(42_000, usize::MAX).len();
    assert!(plain > 5 << 20 && 3 * plain > 16 << 20, "{plain}");
    let report = round_trip(&base, &target, &["--part-size", "67108864"]);
    assert_eq!(report["deflated"], 9, "{report}");
    assert_eq!(report["parts"], 1, "{report}");
}

/// A zip archive of `members` (name, content), deflated at `level` by Python's zipfile,
/// with fixed dates; `None` without python3.
fn pyzip(members: &[(&str, Vec<u8>)], level: u32) -> Option<Vec<u8>> {
    let members: Vec<(&str, &[u8], bool)> = members
        .iter()
        .map(|(n, d)| (*n, d.as_slice(), false))
        .collect();
    testkit::zip::python_zip(&members, level)
}

/// A zip patch's lie, with the payload.
type ZipLie = fn(&mut format::zippatch::ZipHead, &mut [u8]);

#[test]
fn zip_archives_travel_through_their_members_and_lies_are_refused() {
    let release = |n: usize, changed: usize| {
        vec![
            ("app/main.py", changelog(n, changed)),
            ("app/lib.py", changelog(2 * n, usize::MAX)),
            ("app/data.txt", changelog(n / 2, changed / 2)),
        ]
    };
    let Some(old_zip) = pyzip(&release(1500, usize::MAX), 9) else {
        testkit::missing("zip_archives", "python3 (apt install python3)");
        return;
    };
    let new_zip = pyzip(&release(1501, 700), 9).unwrap();
    let mut base = Files::new();
    let mut target = Files::new();
    base.insert("usr/share/app/app.zip".into(), old_zip);
    target.insert("usr/share/app/app.zip".into(), new_zip.clone());
    let report = round_trip(&base, &target, &[]);
    assert_eq!(report["zip_patched"], 1, "{report}");
    assert!(
        report["bytes"].as_u64().unwrap() < new_zip.len() as u64 / 4,
        "{report} against a {}-byte archive",
        new_zip.len()
    );

    // For devices whose berth predates zip patches: no flag, a plain patch, larger.
    let (lab, good, plain) = with_and_without(
        &base,
        &target,
        format::update::FLAG_ZIP_PATCH,
        "--no-deflate",
    );
    assert!(
        plain.len() > 2 * good.len(),
        "{} against {}",
        plain.len(),
        good.len()
    );
    // Lies, each signed with the trusted key: refused in one line, nothing changed.
    let lies: [(ZipLie, &str); 5] = [
        // The reconstruction data damaged: preflate, in the child, fails or panics.
        (
            |_, payload| {
                for b in &mut payload[4..40] {
                    *b ^= 0x5a;
                }
            },
            "zip patch: piece ",
        ),
        (
            |h, _| {
                for p in &mut h.base_pieces {
                    if let format::zippatch::BasePiece::Stream { plain, .. } = p {
                        *plain -= 1;
                        break;
                    }
                }
            },
            "zip patch: the base's piece 2 inflates to more than",
        ),
        (
            |h, _| {
                h.base_pieces
                    .push(format::zippatch::BasePiece::Stored { len: 1 });
            },
            "pieces cover",
        ),
        (|h, _| h.patch_len -= 1, "zip patch: bad patch"),
        (
            |h, _| {
                h.base = 1 << 40;
            },
            "base reference past the base commit's objects",
        ),
    ];
    for (lie, needle) in lies {
        let bad = changed_op(&lab, &good, format::ops::ZIP_PATCH, |head, payload| {
            let mut h = format::zippatch::ZipHead::decode(head).unwrap();
            lie(&mut h, payload);
            h.encode()
        });
        lab.fails(&["update", bad.to_str().unwrap()], needle);
    }
    let path = lab.tmp.path().join("good.berth");
    lab.ok(&["update", path.to_str().unwrap()]);
}

/// A device at 1.0 (`base`) and two updates to 2.0 (`target`): the default one, which
/// must carry the incompatible `flag`, and one made with `compat` for berths that
/// predate it, which carries none.
fn with_and_without(
    base: &Files,
    target: &Files,
    flag: u16,
    compat: &str,
) -> (Lab, Vec<u8>, Vec<u8>) {
    let lab = Lab::new();
    let v1 = lab.commit("1.0", &refs(base));
    let v2 = lab.commit("2.0", &refs(target));
    lab.install(&v1, &[]);
    lab.booted(&v1[..16], "default");
    let good = fs::read(lab.delta(Some(&v1), &v2, "good.berth", &[])).unwrap();
    assert_eq!(common::Parsed::parse(&good).body.flags, flag);
    let plain = fs::read(lab.delta(Some(&v1), &v2, "plain.berth", &[compat])).unwrap();
    assert_eq!(common::Parsed::parse(&plain).body.flags, 0);
    (lab, good, plain)
}

/// `update` with its first operation of kind `kind` changed by `change` (given the head
/// and the payload, it returns the new head), signed again with the trusted key, at
/// `bad.berth` in the lab.
fn changed_op(
    lab: &Lab,
    update: &[u8],
    kind: u8,
    change: impl Fn(&[u8], &mut Vec<u8>) -> Vec<u8>,
) -> std::path::PathBuf {
    let bad = common::resign(lab, update, |plain| {
        let (at, head, payload_len) = op_of(plain, kind);
        let payload_at = at + 5 + head.len();
        let mut payload = plain[payload_at..payload_at + payload_len].to_vec();
        let new_head = change(&head, &mut payload);
        let mut op = vec![kind];
        op.extend_from_slice(&(new_head.len() as u32).to_le_bytes());
        op.extend_from_slice(&new_head);
        op.extend_from_slice(&payload);
        plain.splice(at..payload_at + payload_len, op);
    });
    let path = lab.tmp.path().join("bad.berth");
    fs::write(&path, &bad).unwrap();
    path
}

/// The first operation of kind `want` in a plain part: its offset, head and payload's
/// length.
fn op_of(plain: &[u8], want: u8) -> (usize, Vec<u8>, usize) {
    let mut at = 0;
    while at < plain.len() {
        let kind = plain[at];
        let len = u32::from_le_bytes(plain[at + 1..at + 5].try_into().unwrap()) as usize;
        let head = plain[at + 5..at + 5 + len].to_vec();
        let payload = match kind {
            format::ops::FILE => format::FileHeader::decode(&head).unwrap().size,
            format::ops::FILE_PATCH => format::ops::PatchHead::decode(&head).unwrap().payload_len(),
            format::ops::DEFLATE_PATCH => format::ops::DeflateHead::decode(&head)
                .unwrap()
                .payload_len(),
            format::ops::ELF_PATCH => format::elfpatch::ElfHead::decode(&head)
                .unwrap()
                .patch
                .payload_len(),
            format::ops::ZIP_PATCH => format::zippatch::ZipHead::decode(&head)
                .unwrap()
                .payload_len(),
            _ => 0,
        } as usize;
        if kind == want {
            return (at, head, payload);
        }
        at += 5 + len + payload;
    }
    panic!("no operation of kind {want} in the part");
}

/// The executable stretches of a 64-bit little-endian ELF file (its `PF_X` loaded
/// segments past the headers): (file offset, length, address).
fn exec_segments(elf: &[u8]) -> Vec<format::elfpatch::CodeRange> {
    let u16_at = |at: usize| u64::from(u16::from_le_bytes(elf[at..at + 2].try_into().unwrap()));
    let u64_at = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().unwrap());
    let (phoff, phentsize, phnum) = (u64_at(32), u16_at(54), u16_at(56));
    let headers = phoff + phentsize * phnum;
    (0..phnum)
        .map(|i| (phoff + i * phentsize) as usize)
        .filter(|&at| elf[at] == 1 && elf[at + 4] & 1 != 0)
        .map(|at| {
            let (off, addr, len) = (u64_at(at + 8), u64_at(at + 16), u64_at(at + 32));
            let start = off.max(headers);
            format::elfpatch::CodeRange {
                kind: format::elfpatch::RangeKind::Code,
                offset: start,
                len: off + len - start,
                addr: addr + (start - off),
            }
        })
        .collect()
}

/// `elf` as a linker would lay it out with `n` bytes (`fill`) inserted at file offset
/// `at` of its code: everything after moves, and every reference the scan finds (calls,
/// jumps, RIP-relative operands) gets the displacement that still reaches its target.
/// (The ELF patch's own restoring does that, through a map that says what moved; the
/// segment table is left alone, as only the code matters here.)
fn relinked(elf: &[u8], at: usize, n: usize, fill: u8) -> Vec<u8> {
    use format::elfpatch::{Arch, Direction, MapRange, Rewriter};
    let code = exec_segments(elf);
    let c = code[0];
    let mut out = elf.to_vec();
    out.splice(at..at, std::iter::repeat_n(fill, n));
    let moved = |off: u64| c.addr + (off - c.offset);
    let (a, end) = (moved(at as u64), moved(elf.len() as u64));
    let map = [
        MapRange {
            new: 0,
            old: 0,
            len: a,
        },
        MapRange {
            new: a + n as u64,
            old: a,
            len: end - a,
        },
    ];
    let grown = [format::elfpatch::CodeRange {
        len: c.len + n as u64,
        ..c
    }];
    Rewriter::new(Arch::X86_64, &grown, &map, Direction::Restore)
        .unwrap()
        .run(&mut out, 0, true);
    out
}

/// x86-64 programs of this machine between 40 and 400 kB, a few.
fn programs(k: usize) -> Vec<Vec<u8>> {
    let mut paths: Vec<_> = fs::read_dir("/usr/bin")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .filter_map(|p| fs::read(p).ok())
        .filter(|b| {
            b.starts_with(b"\x7fELF\x02\x01")
                && b[18] == 62
                && (40_000..400_000).contains(&b.len())
                && !exec_segments(b).is_empty()
        })
        .take(k)
        .collect()
}

/// A change to an ELF patch's head.
type ElfLie = fn(&mut format::elfpatch::ElfHead);

#[test]
fn elf_files_travel_as_elf_patches_and_lies_are_refused() {
    let progs = programs(3);
    assert_eq!(progs.len(), 3, "x86-64 programs in /usr/bin");
    let mut base = Files::new();
    let mut target = Files::new();
    for (i, p) in progs.iter().enumerate() {
        base.insert(format!("usr/bin/p{i}"), p.clone());
        let code = exec_segments(p)[0];
        // A function grew early in the code: most references cross the change.
        let at = (code.offset + code.len / (5 + i as u64)) as usize;
        target.insert(format!("usr/bin/p{i}"), relinked(p, at, 40 + 24 * i, 0x90));
    }
    let report = round_trip(&base, &target, &[]);
    assert_eq!(report["elf_patched"], 3, "{report}");

    // For devices whose berth predates ELF patches: no flag, plain patches, larger
    // (each crossing reference costs the plain patch bytes).
    let (lab, good, plain) =
        with_and_without(&base, &target, format::update::FLAG_ELF_PATCH, "--no-elf");
    assert!(
        plain.len() * 2 > good.len() * 3,
        "{} against {}",
        plain.len(),
        good.len()
    );

    // Lies, each signed with the trusted key: refused in one line, nothing changed.
    let lies: [(ElfLie, &str); 4] = [
        // A map that is a bijection but not the one the patch was made with: the
        // file comes out wrong, and its tree does not match.
        (
            |h| {
                let m = h.map.iter_mut().max_by_key(|m| m.len).unwrap();
                m.old += 1;
                m.len -= 1;
            },
            "its operations do not make the commit's root tree",
        ),
        (
            |h| h.code[0].len = h.patch.header.size + 1,
            "ELF patch code range",
        ),
        (
            |h| {
                let m = h.map[0];
                h.map.push(format::elfpatch::MapRange {
                    new: m.new + m.len + (1 << 20),
                    old: m.old,
                    len: 1,
                });
            },
            "ELF patch map range",
        ),
        (|h| h.patch.windows[0].out_len += 1, "patch windows' output"),
    ];
    for (lie, needle) in lies {
        let bad = changed_op(&lab, &good, format::ops::ELF_PATCH, |head, _| {
            let mut h = format::elfpatch::ElfHead::decode(head).unwrap();
            lie(&mut h);
            h.encode()
        });
        lab.fails(&["update", bad.to_str().unwrap()], needle);
    }
    let path = lab.tmp.path().join("good.berth");
    lab.ok(&["update", path.to_str().unwrap()]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// A program edited as a compiler and linker would (insertions and deletions in its
    /// code, references fixed up, a few bytes changed): the update makes it exactly.
    #[test]
    fn elf_programs_edited_anywhere_round_trip(
        which in 0usize..3,
        edits in proptest::collection::vec((0u64..1000, 1usize..300, any::<u8>(), any::<bool>()), 1..4),
    ) {
        let p = programs(3).swap_remove(which);
        let mut new = p.clone();
        for (where_, n, fill, insert) in edits {
            let code = exec_segments(&new)[0];
            let at = (code.offset + where_ * (code.len - 400) / 1000) as usize;
            new = if insert {
                relinked(&new, at, n, fill)
            } else {
                let mut v = new.clone();
                v[at..at + n.min(16)].fill(fill);
                v
            };
        }
        let base = Files::from([("usr/bin/p".to_owned(), p)]);
        let target = Files::from([("usr/bin/p".to_owned(), new)]);
        round_trip(&base, &target, &[]);
    }
}
