//! Deflate patches round-trip: made by `make` from two gzip (or zlib) files, rebuilt by
//! `rebuild` to the exact new bytes, for streams of every flate2 level, every zlib
//! strategy, and of the gzip, pigz, zopfli and 7-Zip programs; and hostile heads and
//! payloads are refused in one line.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own
#![allow(clippy::cast_possible_truncation)] // test fixtures: every size here is small

use std::io::Write;
use std::process::{Command, Stdio};

use format::ops::DeflateHead;
use format::{FileHeader, FileKind, Xattrs};
use proptest::prelude::*;
use redeflate::{make, rebuild, recreate};

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

/// Text that compresses like a man page: words of a small vocabulary, some numbers.
fn text(words: &[u16]) -> Vec<u8> {
    const VOCAB: &[&str] = &[
        "the",
        "update",
        "device",
        "file",
        "of",
        "a",
        "to",
        "and",
        "is",
        "in",
        "berth",
        "\n.TP\n",
        "\\fB",
        "\\fR",
        "kernel",
        "security",
        "changelog",
        "--",
        " ",
        "\n",
        "Debian",
        "version",
        "1.2.3-4",
        "upstream",
        "fix",
        "CVE-2026-",
        "(closes: #",
    ];
    let mut out = Vec::new();
    for &w in words {
        let w = usize::from(w);
        if w >= VOCAB.len() * 8 {
            out.extend_from_slice(format!("{} ", w * 7919 % 100_000).as_bytes());
        } else {
            out.extend_from_slice(VOCAB[w % VOCAB.len()].as_bytes());
            out.push(b' ');
        }
    }
    out
}

fn flate2_gz(data: &[u8], level: u32) -> Vec<u8> {
    let mut e = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::new(level));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// `program args…` with `data` on stdin (or in a file named by the argument `FILE`);
/// its stdout (or what it wrote to the file named by the argument `OUT`).
fn run(program: &str, args: &[&str], data: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data");
    let output = dir.path().join("out.gz");
    std::fs::write(&file, data).unwrap();
    let to_file = args.contains(&"OUT");
    let args: Vec<&std::ffi::OsStr> = args
        .iter()
        .map(|&a| match a {
            "FILE" => file.as_os_str(),
            "OUT" => output.as_os_str(),
            _ => a.as_ref(),
        })
        .collect();
    let mut child = Command::new(program)
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    // A program that reads a file instead closes its stdin early: that is fine.
    let feed = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    feed.join().unwrap();
    assert!(out.status.success(), "{program} {args:?}");
    if to_file {
        std::fs::read(&output).unwrap()
    } else {
        out.stdout
    }
}

/// Makes the patch, rebuilds it as the device does, and checks the bytes and that it
/// is much smaller than the new file.
fn round_trip(old: &[u8], new: &[u8], what: &str) -> (DeflateHead, Vec<u8>) {
    let (head, payload) = make(old, new, header(new.len()), 3)
        .unwrap_or_else(|e| panic!("{what}: no patch made: {e}"));
    assert_eq!(payload.len() as u64, head.payload_len());
    let mut rest = payload.as_slice();
    let base = &old[usize::try_from(head.base_start).unwrap()..];
    let back = rebuild(base, &head, &mut rest, recreate).unwrap();
    assert!(rest.is_empty(), "{what}: payload left over");
    assert!(back == new, "{what}: not the same bytes");
    // The encoded head decodes to itself (as the device reads it).
    assert_eq!(DeflateHead::decode(&head.encode()).unwrap(), head);
    (head, payload)
}

/// A pair of texts: `old`, and `old` with a few words changed near the start.
fn pair(n: usize) -> (Vec<u8>, Vec<u8>) {
    let words: Vec<u16> = (0..n).map(|i| ((i * 31 + i / 7) % 300) as u16).collect();
    let old = text(&words);
    let mut w2 = words;
    w2.insert(10, 250);
    w2[n / 2] = 17;
    (old, text(&w2))
}

#[test]
fn every_flate2_level_round_trips() {
    let (old, new) = pair(20_000);
    for level in 0..=9 {
        let (o, n) = (flate2_gz(&old, level), flate2_gz(&new, level));
        let (_, payload) = round_trip(&o, &n, &format!("flate2 level {level}"));
        // What it costs is its compressed size (the parts are zstd).
        let cost = zstd::bulk::compress(&payload, 19).unwrap().len();
        if level > 0 {
            assert!(
                cost * 4 < n.len(),
                "level {level}: {cost} bytes of payload for a {}-byte file",
                n.len()
            );
        }
    }
}

#[test]
fn other_compressors_round_trip() {
    let (old, new) = pair(8_000);
    let mut made = Vec::new();
    for level in 1..=9 {
        let arg = format!("-{level}n");
        let (o, n) = (run("gzip", &[&arg], &old), run("gzip", &[&arg], &new));
        round_trip(&o, &n, &format!("gzip {arg}"));
        made.push(format!("gzip {arg}"));
    }
    // pigz (blocks compressed independently, then joined), zopfli (an optimal parse) and
    // 7-Zip, when installed: ci/setup.sh installs them for CI.
    for (program, package, args) in [
        ("pigz", "pigz", &["-9n", "-b", "32"][..]),
        ("pigz", "pigz", &["-6n", "-p", "1"][..]),
        ("pigz", "pigz", &["-11n"][..]),
        ("zopfli", "zopfli", &["-c", "--i5", "FILE"][..]),
        // 7-Zip's own deflate encoder, at its fastest and its best.
        (
            "7z",
            "p7zip-full",
            &["a", "-tgzip", "-mx=1", "OUT", "FILE"][..],
        ),
        (
            "7z",
            "p7zip-full",
            &["a", "-tgzip", "-mx=9", "OUT", "FILE"][..],
        ),
    ] {
        if Command::new(program).arg("--help").output().is_err() {
            testkit::missing(
                "other_compressors_round_trip",
                &format!("{program} (apt install {package})"),
            );
            continue;
        }
        let (o, n) = (run(program, args, &old), run(program, args, &new));
        round_trip(&o, &n, &format!("{program} {args:?}"));
        made.push(format!("{program} {args:?}"));
    }
    eprintln!("round-tripped: {made:?}");
}

/// A zlib stream of `data` made by Python's zlib module (the system zlib) with the given
/// level, memory level and strategy (0 default, 1 filtered, 2 Huffman only, 3 RLE, 4
/// fixed codes).
fn python_zlib(data: &[u8], level: u32, mem: u32, strategy: u32) -> Vec<u8> {
    let script = format!(
        "import sys, zlib; c = zlib.compressobj({level}, zlib.DEFLATED, 15, {mem}, {strategy}); \
         sys.stdout.buffer.write(c.compress(sys.stdin.buffer.read()) + c.flush())"
    );
    run("python3", &["-c", &script], data)
}

/// zlib's every strategy (default, filtered, Huffman only, RLE, fixed codes) at low,
/// default and high levels and memory levels, made by Python's zlib module (the system
/// zlib): each is patched and rebuilt exactly, or refused on the build host.
#[test]
fn every_zlib_strategy_round_trips() {
    if Command::new("python3").arg("--version").output().is_err() {
        testkit::missing(
            "every_zlib_strategy_round_trips",
            "python3 (apt install python3)",
        );
        return;
    }
    let (old, new) = pair(8_000);
    let (mut patched, mut refused) = (Vec::new(), Vec::new());
    for strategy in 0..=4 {
        for (level, mem) in [(1, 8), (6, 1), (6, 8), (9, 9)] {
            let what = format!("strategy {strategy}, level {level}, memLevel {mem}");
            let (o, n) = (
                python_zlib(&old, level, mem, strategy),
                python_zlib(&new, level, mem, strategy),
            );
            match make(&o, &n, header(n.len()), 0) {
                Ok(_) => {
                    round_trip(&o, &n, &what);
                    patched.push(what);
                }
                Err(e) => refused.push(format!("{what}: {e}")),
            }
        }
    }
    eprintln!("patched: {patched:?}\nrefused: {refused:?}");
    assert!(refused.is_empty(), "{refused:?}");
}

#[test]
fn not_gzip_or_two_members_is_no_patch() {
    let (old, new) = pair(2000);
    let (o, n) = (flate2_gz(&old, 6), flate2_gz(&new, 6));
    assert!(make(&old, &n, header(n.len()), 0).is_err(), "plain base");
    assert!(
        make(&o, &new, header(new.len()), 0).is_err(),
        "plain new file"
    );
    let mut two = n.clone();
    two.extend_from_slice(&n);
    assert!(make(&o, &two, header(two.len()), 0).is_err(), "two members");
    // zlib with a preset dictionary (which the device would not have).
    let mut dict = zlib(&new, 6);
    dict[1] = 0x20;
    dict[1] += 31 - ((u16::from(dict[0]) << 8 | u16::from(dict[1])) % 31) as u8;
    assert!(make(&o, &dict, header(dict.len()), 0).is_err(), "FDICT");
    // Bytes that only look like a zlib header.
    let mut fake = b"\x78\x9c".to_vec();
    fake.extend_from_slice(&new);
    assert!(
        make(&o, &fake, header(fake.len()), 0).is_err(),
        "not deflate"
    );
}

fn zlib(data: &[u8], level: u32) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(level));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn zlib_streams_round_trip_and_mix_with_gzip() {
    let (old, new) = pair(20_000);
    for level in 0..=9 {
        let (o, n) = (zlib(&old, level), zlib(&new, level));
        let (head, payload) = round_trip(&o, &n, &format!("zlib level {level}"));
        assert_eq!(
            (head.base_start, head.prefix.len(), head.suffix.len()),
            (2, 2, 4)
        );
        if level > 0 {
            let cost = zstd::bulk::compress(&payload, 19).unwrap().len();
            assert!(
                cost * 4 < n.len(),
                "level {level}: {cost} bytes for {}",
                n.len()
            );
        }
    }
    // The base's framing does not matter, only its uncompressed data.
    let (head, _) = round_trip(&flate2_gz(&old, 9), &zlib(&new, 9), "gzip to zlib");
    assert_eq!((head.base_start, head.suffix.len()), (10, 4));
    let (head, _) = round_trip(&zlib(&old, 9), &flate2_gz(&new, 9), "zlib to gzip");
    assert_eq!((head.base_start, head.suffix.len()), (2, 8));
    // Every window size a zlib header can name (the stream itself is the same).
    for cinfo in 0..=7u8 {
        let mut n = zlib(&new, 6);
        n[0] = cinfo << 4 | 8;
        n[1] = (n[1] & 0xc0) + 31 - ((u16::from(n[0]) << 8 | u16::from(n[1] & 0xc0)) % 31) as u8;
        round_trip(&zlib(&old, 6), &n, &format!("zlib CINFO {cinfo}"));
    }
}

fn sample() -> (Vec<u8>, Vec<u8>, DeflateHead, Vec<u8>) {
    let (old, new) = pair(5000);
    let (o, n) = (flate2_gz(&old, 9), flate2_gz(&new, 9));
    let (head, payload) = round_trip(&o, &n, "sample");
    (o, n, head, payload)
}

fn rebuild_err(old: &[u8], head: &DeflateHead, payload: &[u8]) -> String {
    let base = &old[usize::try_from(head.base_start).unwrap().min(old.len())..];
    let e = rebuild(base, head, &mut &payload[..], recreate)
        .unwrap_err()
        .to_string();
    assert!(!e.contains('\n'), "one line: {e}");
    e
}

/// A lie in a head.
type Lie = fn(&mut DeflateHead);

#[test]
fn lying_sizes_are_refused() {
    let (o, _, head, payload) = sample();
    let cases: [(Lie, &str); 6] = [
        (|h| h.base_plain -= 1, "the base inflates to more than"),
        (|h| h.base_plain += 1, "the base inflates to"),
        (|h| h.plain -= 1, "the patch makes more than"),
        (|h| h.plain += 1, "the patch makes"),
        (|h| h.stream_len += 1, "the reconstruction makes a"),
        (|h| h.base_start += 1, "does not inflate"),
    ];
    for (i, (f, want)) in cases.iter().enumerate() {
        let mut h = head.clone();
        f(&mut h);
        let e = rebuild_err(&o, &h, &payload);
        assert!(e.contains(want), "case {i}: {e}");
    }
    // A patch shorter or longer than the head says; a payload cut short.
    let mut h = head.clone();
    h.patch_len += 5;
    let mut longer = payload.clone();
    longer.extend_from_slice(&[0x7f; 5]);
    let e = rebuild_err(&o, &h, &longer);
    assert!(e.contains("left over") || e.contains("bad patch"), "{e}");
    let mut h = head.clone();
    h.patch_len -= 1;
    assert!(rebuild_err(&o, &h, &payload[..payload.len() - 1]).contains("bad patch"));
    let e = rebuild_err(&o, &head, &payload[..3]);
    assert!(e.contains("ends inside the reconstruction data"), "{e}");
}

#[test]
fn a_bomb_base_is_never_inflated_past_its_size() {
    // 64 MiB of zeros in about 64 KiB of deflate: the device inflates base_plain + 1
    // bytes of it and stops.
    let zeros = vec![0u8; 64 << 20];
    let bomb = flate2_gz(&zeros, 9);
    let (_, _, mut head, payload) = sample();
    head.base_start = 10;
    let e = rebuild_err(&bomb, &head, &payload);
    assert!(e.contains("inflates to more than"), "{e}");
}

#[test]
fn a_child_answers_every_request_until_its_input_ends() {
    // The sample's request, as the device's rebuild hands it over.
    let (o, n, head, payload) = sample();
    let mut asked = None;
    let base = &o[usize::try_from(head.base_start).unwrap()..];
    rebuild(base, &head, &mut &payload[..], |plain, corrections, max| {
        asked = Some((plain.clone(), corrections.clone(), max));
        recreate(plain, corrections, max)
    })
    .unwrap();
    let (plain, corrections, max) = asked.unwrap();
    let stream = &n[10..n.len() - 8];
    assert_eq!(max, stream.len() as u64);
    // Three requests, the second too small for its stream: a refusal, and serving goes on.
    let mut requests = Vec::new();
    for m in [max, max - 1, max] {
        redeflate::write_request(&mut requests, &plain, &corrections, m).unwrap();
    }
    let mut replies = Vec::new();
    redeflate::serve(&mut requests.as_slice(), &mut replies).unwrap();
    let mut r = replies.as_slice();
    assert_eq!(redeflate::read_reply(&mut r, max).unwrap().unwrap(), stream);
    let refused = redeflate::read_reply(&mut r, max).unwrap().unwrap_err();
    assert!(
        refused.contains(&format!("more than {} bytes", max - 1)),
        "{refused}"
    );
    assert_eq!(redeflate::read_reply(&mut r, max).unwrap().unwrap(), stream);
    assert!(r.is_empty());
    // A reply longer than the reader's bound is refused before it is read.
    let e = redeflate::read_reply(&mut replies.as_slice(), max - 1).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    assert!(
        e.to_string()
            .contains(&format!("more than {} bytes", max - 1)),
        "{e}"
    );
    // A request cut short, or over the limits, ends serving with an error.
    let e = redeflate::serve(&mut &requests[..requests.len() - 1], &mut Vec::new()).unwrap_err();
    assert!(e.contains("truncated"), "{e}");
    let mut over = Vec::new();
    redeflate::write_request(&mut over, &plain, &corrections, u64::MAX).unwrap();
    let e = redeflate::serve(&mut over.as_slice(), &mut Vec::new()).unwrap_err();
    assert!(e.contains("over the limits"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random texts and edits at every level.
    #[test]
    fn random_edits_round_trip(
        words in proptest::collection::vec(0u16..400, 1..3000),
        at in 0usize..3000,
        insert in proptest::collection::vec(0u16..400, 0..20),
        cut in 0usize..20,
        level in 0u32..=9,
    ) {
        let old = text(&words);
        let mut w2 = words.clone();
        let at = at.min(w2.len());
        w2.drain(at..(at + cut).min(w2.len()));
        for (i, w) in insert.into_iter().enumerate() {
            w2.insert(at + i, w);
        }
        let new = text(&w2);
        let (o, n) = (flate2_gz(&old, level), flate2_gz(&new, level));
        // Preflate models most streams; one it cannot is sent as a plain patch (the
        // build host's decision), and what it makes is exact (`make` checks by
        // rebuilding; `round_trip` again).
        match make(&o, &n, header(n.len()), 3) {
            Ok(_) => {
                round_trip(&o, &n, "random");
            }
            Err(e) => prop_assert_eq!(e, "preflate cannot model the stream"),
        }
    }

    /// Random texts and edits through zlib's every strategy (Python's zlib module, the
    /// system zlib), at random levels and memory levels.
    #[test]
    fn random_edits_round_trip_with_every_zlib_strategy(
        words in proptest::collection::vec(0u16..400, 1..2000),
        at in 0usize..2000,
        insert in proptest::collection::vec(0u16..400, 0..20),
        strategy in 0u32..=4,
        level in 1u32..=9,
        mem in 1u32..=9,
    ) {
        if Command::new("python3").arg("--version").output().is_err() {
            testkit::missing("random_edits_round_trip_with_every_zlib_strategy", "python3");
            return Ok(());
        }
        let old = text(&words);
        let mut w2 = words.clone();
        let at = at.min(w2.len());
        for (i, w) in insert.into_iter().enumerate() {
            w2.insert(at + i, w);
        }
        let new = text(&w2);
        let (o, n) = (
            python_zlib(&old, level, mem, strategy),
            python_zlib(&new, level, mem, strategy),
        );
        match make(&o, &n, header(n.len()), 0) {
            Ok(_) => {
                round_trip(&o, &n, "random zlib");
            }
            Err(e) => prop_assert_eq!(e, "preflate cannot model the stream"),
        }
    }

    /// Damaged patches: refused, or (when bipatch reads them as another patch) a
    /// file of the declared size that the device's sha256 refuses; never a panic.
    #[test]
    fn damaged_patches_never_panic(at in any::<prop::sample::Index>(), mask in 1u8..=255) {
        let (o, n, head, mut payload) = sample();
        let start = usize::try_from(head.corrections_len).unwrap();
        let i = start + at.index(payload.len() - start);
        payload[i] ^= mask;
        let base = &o[usize::try_from(head.base_start).unwrap()..];
        // Preflate panics on uncompressed data its reconstruction data does not
        // describe (the device runs it in a child process): stand in for it.
        let stand_in = |_: Vec<u8>, _: Vec<u8>, max: u64| Ok(vec![0; usize::try_from(max).unwrap()]);
        if let Ok(back) = rebuild(base, &head, &mut &payload[..], stand_in) {
            prop_assert_eq!(back.len(), n.len());
        }
    }
}
