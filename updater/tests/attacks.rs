//! The signature and metadata attack suite, after TUF's attack classes: every forged
//! update is refused with a one-line error, and the device (record, keys, store,
//! deployments) is byte for byte as it was (`Lab::fails`).
//!
//! | TUF class | tests here |
//! |---|---|
//! | arbitrary installation | wrong key; a flipped bit in the body and in the signature; a signature of 63 and of 65 bytes; non-canonical S (S + L); a forgery under a small-order key; one signature counted twice |
//! | rollback | an older and an equal version; a downgrade only with `--allow-downgrade` |
//! | mix-and-match | one update's superblock with another's parts; another update's signature block |
//! | endless data | bytes after the last part; a body and a signature block one byte over their limits, and at them; a part that decompresses to one byte more than it declares |
//! | slow retrieval | a source that stalls (a FIFO whose writer stops): `--deadline` ends it |
//!
//! Damage (truncation, bit flips in parts) is in `tests/update.rs` and the hostile-input
//! corpus; freeze and fast-forward attacks need signed metadata with expiry, which
//! the channel work brings.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own
#![allow(clippy::cast_possible_truncation)] // test fixtures: every size here is small

mod common;

use std::fs;
use std::path::PathBuf;

use common::{Lab, Parsed};
use ed25519_dalek::{Signer, SigningKey};

/// The device runs v1; v2 and v3 are newer. Returns the v1 → v2 update's bytes too.
fn lab() -> (Lab, [String; 3], Vec<u8>) {
    let lab = Lab::new();
    let v1 = lab.commit("1.0", &[("usr/share/doc/readme", b"one\n")]);
    let big: Vec<u8> = (0..100_000u32).flat_map(u32::to_le_bytes).collect();
    let v2 = lab.commit(
        "1.1",
        &[
            ("usr/share/doc/readme", b"two\n"),
            ("usr/lib/big.bin", &big),
        ],
    );
    let v3 = lab.commit("1.2", &[("usr/share/doc/readme", b"three\n")]);
    lab.install(&v1, &[]);
    lab.booted(&v1[..16], "default");
    let update =
        fs::read(lab.delta(Some(&v1), &v2, "v2.berth", &["--part-size", "60000"])).unwrap();
    (lab, [v1, v2, v3], update)
}

fn write(lab: &Lab, name: &str, bytes: &[u8]) -> String {
    let p = lab.tmp.path().join(name);
    fs::write(&p, bytes).unwrap();
    p.to_str().unwrap().to_owned()
}

/// A signature block (FORMAT.md, "Signatures") from raw entries: no checks, so it can
/// hold what `Signatures` would never encode.
fn sig_block(entries: &[([u8; 32], Vec<u8>)]) -> Vec<u8> {
    let mut b = b"BRTS".to_vec();
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (key, sig) in entries {
        b.push(1);
        b.extend_from_slice(key);
        b.extend_from_slice(sig);
    }
    b
}

fn lab_key(lab: &Lab) -> SigningKey {
    format::key::parse_secret(&fs::read(lab.keys.join("berth.key")).unwrap()).unwrap()
}

#[test]
fn forged_signatures_are_refused() {
    let (lab, [v1, v2, _], update) = lab();
    let key = lab_key(&lab);
    let pk = key.verifying_key().to_bytes();
    let good = Parsed::parse(&update);
    let sig = key.sign(&good.body_bytes).to_bytes();
    let with_sigs = |name: &str, sigs: Vec<u8>| {
        let mut p = Parsed::parse(&update);
        p.sigs = sigs;
        write(&lab, name, &p.encode())
    };
    // The forged block itself is well-formed: the same block with the real signature
    // is accepted at the end, so each refusal below is the forgery's doing.
    let real = sig_block(&[(pk, sig.to_vec())]);

    // Wrong key: a key pair the device does not trust signs a real update.
    let untrusted = lab.delta_signed(Some(&v1), &v2, "untrusted.berth", &[], &lab.untrusted_key());
    lab.fails(
        &["update", untrusted.to_str().unwrap()],
        "not signed by any trusted key",
    );

    // A flipped bit in the signed body, and in the signature.
    let mut p = Parsed::parse(&update);
    p.body_bytes[20] ^= 0x10;
    lab.fails(
        &["update", &write(&lab, "body-bit.berth", &p.encode())],
        "a trusted key's signature does not match",
    );
    let mut flipped = sig;
    flipped[5] ^= 1;
    lab.fails(
        &[
            "update",
            &with_sigs("sig-bit.berth", sig_block(&[(pk, flipped.to_vec())])),
        ],
        "a trusted key's signature does not match",
    );

    // Short and long signatures (OSTree GHSA-gqf4-p3gv-g8vw: lengths unchecked).
    lab.fails(
        &[
            "update",
            &with_sigs("sig-63.berth", sig_block(&[(pk, sig[..63].to_vec())])),
        ],
        "signature file",
    );
    let mut long = sig.to_vec();
    long.push(0);
    lab.fails(
        &[
            "update",
            &with_sigs("sig-65.berth", sig_block(&[(pk, long)])),
        ],
        "signature file",
    );

    // Non-canonical S: S + L verifies under a lax check (same point), not under
    // verify_strict.
    let mut malleated = sig;
    add_group_order(&mut malleated[32..]);
    lab.fails(
        &[
            "update",
            &with_sigs("sig-s-plus-l.berth", sig_block(&[(pk, malleated.to_vec())])),
        ],
        "a trusted key's signature does not match",
    );

    // The same signature twice (tough CVE-2020-15093 counted it twice towards a
    // threshold): the block must list each key once, in order.
    lab.fails(
        &[
            "update",
            &with_sigs(
                "sig-twice.berth",
                sig_block(&[(pk, sig.to_vec()), (pk, sig.to_vec())]),
            ),
        ],
        "signature keys",
    );

    // Another update's signature block (valid, over other bytes).
    let other_update =
        fs::read(lab.delta(None, &v2, "full.berth", &["--part-size", "60000"])).unwrap();
    lab.fails(
        &[
            "update",
            &with_sigs("sig-of-another.berth", Parsed::parse(&other_update).sigs),
        ],
        "a trusted key's signature does not match",
    );

    lab.ok(&["update", &with_sigs("real.berth", real)]);
}

/// Adds the order L of the ed25519 group to a 32-byte little-endian scalar.
fn add_group_order(s: &mut [u8]) {
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut carry = 0u16;
    for (b, l) in s.iter_mut().zip(L) {
        let v = u16::from(*b) + u16::from(l) + carry;
        *b = v as u8;
        carry = v >> 8;
    }
    assert_eq!(carry, 0, "S + L fits in 256 bits for a canonical S");
}

#[test]
fn a_small_order_key_cannot_be_trusted_or_forged_under() {
    let (lab, [v1, _, _], update) = lab();
    // The identity point (y = 1) has order 1: with R = identity and S = 0, the lax
    // ed25519 equation holds for every message.
    let mut weak = [0u8; 32];
    weak[0] = 1;
    let mut forged = [0u8; 64];
    forged[0] = 1;
    let keys = lab
        .sysroot
        .join("berth/state/etc")
        .join(&v1[..16])
        .join("upper/berth/keys");
    fs::create_dir_all(&keys).unwrap();
    // The same 32 bytes as a key file: 01 then 31 zero bytes.
    fs::write(
        keys.join("weak.pub"),
        format!("berth-ed25519-public-v1 01{}\n", "00".repeat(31)),
    )
    .unwrap();
    let mut p = Parsed::parse(&update);
    p.sigs = sig_block(&[(weak, forged.to_vec())]);
    lab.fails(
        &["update", &write(&lab, "weak.berth", &p.encode())],
        "weak (small-order) key",
    );
}

#[test]
fn rollback_and_mix_and_match_are_refused() {
    let (lab, [v1, _, v3], update) = lab();
    let older = lab.commit("0.9", &[]);
    let down = lab.delta(None, &older, "older.berth", &[]);
    lab.fails(
        &["update", down.to_str().unwrap()],
        "is not newer than the installed 1.0",
    );
    let same = lab.commit("1.0", &[("etc/other", b"same version, other content")]);
    let equal = lab.delta(None, &same, "equal.berth", &[]);
    lab.fails(
        &["update", equal.to_str().unwrap()],
        "is not newer than the installed 1.0",
    );

    // The superblock of v1 → v2 with the parts of v1 → v3.
    let good = Parsed::parse(&update);
    let other = Parsed::parse(&fs::read(lab.delta(Some(&v1), &v3, "v3.berth", &[])).unwrap());
    let mut mixed = good.encode();
    let parts_len: usize = good.parts.iter().map(Vec::len).sum();
    mixed.truncate(mixed.len() - parts_len);
    let other_parts: Vec<u8> = other.parts.concat();
    mixed.extend_from_slice(&other_parts);
    lab.fails(
        &["update", &write(&lab, "mixed.berth", &mixed)],
        "but its superblock describes",
    );
    // Cut or padded to the same length, only the parts' signed hashes can tell.
    let same_len = with_parts_of(&good, &other);
    lab.fails(
        &["update", &write(&lab, "mixed-same-length.berth", &same_len)],
        "damaged",
    );

    // A downgrade on purpose works, and only then.
    lab.ok(&["update", down.to_str().unwrap(), "--allow-downgrade"]);
}

/// `mine`'s head, body and signatures, then `other`'s part bytes padded or cut to the
/// length of `mine`'s.
fn with_parts_of(mine: &Parsed, other: &Parsed) -> Vec<u8> {
    let bytes = mine.encode();
    let parts_len: usize = mine.parts.iter().map(Vec::len).sum();
    let mut out = bytes[..bytes.len() - parts_len].to_vec();
    let mut theirs = other.parts.concat();
    theirs.resize(parts_len, 0);
    out.extend_from_slice(&theirs);
    out
}

#[test]
fn endless_data_is_cut_at_the_limit() {
    let (lab, _, update) = lab();
    let mut longer = update.clone();
    longer.extend_from_slice(b"and then some");
    lab.fails(
        &["update", &write(&lab, "longer.berth", &longer)],
        "but its superblock describes",
    );

    // The body length field: at the limit the head is accepted (and the file is then
    // too short); one byte over, it is refused before anything is read.
    let at = format::update::BODY_MAX;
    for (len, needle) in [
        (at, "truncated (superblock)"),
        (at + 1, "update body length"),
    ] {
        let mut f = format::update::encode_head(len);
        f.extend_from_slice(&update[12..]);
        lab.fails(
            &["update", &write(&lab, &format!("body-{len}.berth"), &f)],
            needle,
        );
    }
    // The signature block length: one byte over the limit is refused by its length.
    let p = Parsed::parse(&update);
    let max = format::update::SIGNATURES_BYTES_MAX;
    for (len, needle) in [(max, "signature file"), (max + 1, "over the limit")] {
        let mut q = Parsed::parse(&update);
        q.sigs = p.sigs.clone();
        q.sigs.resize(len, 0);
        lab.fails(
            &[
                "update",
                &write(&lab, &format!("sigs-{len}.berth"), &q.encode()),
            ],
            needle,
        );
    }

    // A part that decompresses to one byte more than it declares: refused at that byte.
    // At exactly its declared size the same bytes apply.
    let plain = zstd::decode_all(&p.parts[0][..]).unwrap();
    let mut over = Parsed::parse(&update);
    over.replace_part(&lab, 0, &plain, -1);
    lab.fails(
        &["update", &write(&lab, "part-over.berth", &over.encode())],
        "part 1",
    );
    let mut exact = Parsed::parse(&update);
    exact.replace_part(&lab, 0, &plain, 0);
    lab.ok(&["update", &write(&lab, "part-exact.berth", &exact.encode())]);
}

#[test]
fn a_stalled_source_meets_the_deadline() {
    let (lab, _, update) = lab();
    let fifo: PathBuf = lab.tmp.path().join("stalled.berth");
    let st = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(st.success());
    // The writer sends the head and a little of the body, then stalls for longer than
    // the deadline.
    let head = update[..40].to_vec();
    let writer_path = fifo.clone();
    let writer = std::thread::spawn(move || {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(&writer_path)
            .unwrap();
        std::io::Write::write_all(&mut f, &head).unwrap();
        std::thread::sleep(std::time::Duration::from_secs(6));
    });
    // Without the deadline, berth would wait for the writer and then find the file
    // truncated; the message shows which one ended it.
    lab.fails(
        &["update", fifo.to_str().unwrap(), "--deadline", "2"],
        "was not applied within the 2 s deadline",
    );
    writer.join().unwrap();
    // With no deadline the same device takes the real update.
    lab.ok(&[
        "update",
        &write(&lab, "real.berth", &update),
        "--deadline",
        "60",
    ]);
}
