//! Tests of part operations: heads' round trips and refusals, tree edits, and the base walk.

use super::*;
use crate::Xattrs;
use alloc::vec;

fn meta(mode: u32) -> DirMeta {
    DirMeta {
        mode,
        uid: 0,
        gid: 0,
        xattrs: Xattrs::new(),
    }
}

fn e(name: &str, kind: EntryKind, seed: u8) -> TreeEntry {
    TreeEntry {
        name: EntryName::new(name.as_bytes()).unwrap(),
        kind,
        id: ObjectId::from_bytes([seed; 32]),
    }
}

fn tree(entries: Vec<TreeEntry>) -> Tree {
    Tree::new(meta(0o755), entries).unwrap()
}

/// Names a changed object by a short base index (its seed), so `build` can
/// resolve it back.
fn by_id(e: &TreeEntry) -> ObjRef {
    ObjRef::Base(u64::from(e.id.as_bytes()[0]))
}

fn resolve(r: &ObjRef, _: EntryKind) -> Result<ObjectId, FormatError> {
    match r {
        ObjRef::Id(id) => Ok(*id),
        ObjRef::Base(n) => Ok(ObjectId::from_bytes([n.to_le_bytes()[0]; 32])),
        ObjRef::Local(_) => Err(FormatError::Invalid {
            what: "test reference",
            value: 0,
        }),
    }
}

#[test]
fn diff_then_build_gives_the_target() {
    let base = tree(vec![
        e("a", EntryKind::File, 1),
        e("b", EntryKind::File, 2),
        e("c", EntryKind::Tree, 3),
        e("d", EntryKind::File, 4),
        e("e", EntryKind::File, 5),
        e("f", EntryKind::File, 6),
    ]);
    let target = Tree::new(
        meta(0o700),
        vec![
            e("a", EntryKind::File, 1),
            e("aa", EntryKind::File, 9),
            e("b", EntryKind::File, 7),
            e("c", EntryKind::File, 3),
            e("e", EntryKind::File, 5),
            e("f", EntryKind::File, 6),
            e("g", EntryKind::Tree, 8),
        ],
    )
    .unwrap();
    let op = TreeOp::diff(Some((4, &base)), &target, by_id);
    let bytes = op.encode();
    let back = TreeOp::decode(&bytes).unwrap();
    assert_eq!(back, op);
    assert_eq!(back.build(Some(&base), resolve).unwrap(), target);
    // Unchanged entries cost no id: far smaller than the tree itself.
    assert!(bytes.len() < target.encode().len() / 2, "{}", bytes.len());
    // Without a base, every entry is new.
    let full = TreeOp::diff(None, &target, by_id);
    assert_eq!(
        TreeOp::decode(&full.encode())
            .unwrap()
            .build(None, resolve)
            .unwrap(),
        target
    );
}

#[test]
fn edits_past_the_base_are_refused() {
    let base = tree(vec![e("a", EntryKind::File, 1)]);
    for edits in [
        vec![Edit::Copy(2)],
        vec![Edit::Skip(1), Edit::Skip(1)],
        vec![
            Edit::Copy(1),
            Edit::Replace(ObjRef::Id(ObjectId::from_bytes([2; 32]))),
        ],
        vec![Edit::Copy(u64::MAX)],
    ] {
        let op = TreeOp {
            base: Some(0),
            meta: meta(0o755),
            edits,
        };
        assert!(op.build(Some(&base), resolve).is_err(), "{op:?}");
    }
    // A duplicate name is refused by the tree itself.
    let dup = TreeOp {
        base: Some(0),
        meta: meta(0o755),
        edits: vec![Edit::New {
            name: EntryName::new(b"a").unwrap(),
            kind: EntryKind::File,
            target: ObjRef::Id(ObjectId::from_bytes([3; 32])),
        }],
    };
    assert!(dup.build(Some(&base), resolve).is_err());
    // A base given where none is named, and the reverse.
    let op = TreeOp::diff(None, &base, by_id);
    assert!(op.build(Some(&base), resolve).is_err());
    let op = TreeOp::diff(Some((0, &base)), &base, by_id);
    assert!(op.build(None, resolve).is_err());
}

#[test]
fn decoding_refuses_bad_commands_and_truncation() {
    let target = tree(vec![e("a", EntryKind::File, 1), e("b", EntryKind::Tree, 2)]);
    let bytes = TreeOp::diff(None, &target, by_id).encode();
    for cut in 1..bytes.len() {
        // A cut may land between edits (a shorter, valid op); it must never panic.
        let _ = TreeOp::decode(&bytes[..cut]);
    }
    let mut bad = bytes.clone();
    bad.push(7);
    assert!(TreeOp::decode(&bad).is_err());
    let mut zero = TreeOp::diff(None, &target, by_id).encode();
    zero.push(0);
    assert!(TreeOp::decode(&zero).is_err(), "Copy(0)");
    let mut long = bytes;
    long.extend_from_slice(&[0xff; 11]);
    assert!(TreeOp::decode(&long).is_err(), "an 11-byte varint");
}

#[test]
fn patch_heads_round_trip_and_must_add_up() {
    let mut header = FileHeader {
        kind: FileKind::Regular,
        mode: 0o644,
        uid: 0,
        gid: 0,
        rdev_major: 0,
        rdev_minor: 0,
        size: 100,
        xattrs: crate::Xattrs::new(),
    };
    let head = PatchHead {
        header: header.clone(),
        base: 42,
        windows: vec![
            Window {
                base_start: 0,
                base_len: 80,
                out_len: 60,
                patch_len: 10,
            },
            Window {
                base_start: 40,
                base_len: 60,
                out_len: 40,
                patch_len: 7,
            },
        ],
    };
    let bytes = head.encode();
    assert_eq!(PatchHead::decode(&bytes), Ok(head.clone()));
    assert_eq!(head.payload_len(), 17);
    for cut in 0..bytes.len() {
        assert!(PatchHead::decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    header.size = 101;
    let wrong = PatchHead {
        header,
        ..head.clone()
    };
    assert!(PatchHead::decode(&wrong.encode()).is_err());
    let mut huge = head.clone();
    huge.windows[0].patch_len = u64::MAX;
    assert!(PatchHead::decode(&huge.encode()).is_err());
    let mut none = head;
    none.windows.clear();
    none.header.size = 0;
    assert!(PatchHead::decode(&none.encode()).is_err());
}

fn deflate_head() -> DeflateHead {
    DeflateHead {
        header: FileHeader {
            kind: FileKind::Regular,
            mode: 0o644,
            uid: 0,
            gid: 0,
            rdev_major: 0,
            rdev_minor: 0,
            size: 10 + 300 + 8,
            xattrs: crate::Xattrs::new(),
        },
        base: 7,
        base_start: 10,
        base_plain: 1000,
        plain: 1100,
        prefix: vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 3],
        stream_len: 300,
        suffix: vec![1, 2, 3, 4, 5, 6, 7, 8],
        corrections_len: 20,
        patch_len: 90,
    }
}

#[test]
fn deflate_heads_round_trip_and_are_bounded() {
    let head = deflate_head();
    let bytes = head.encode();
    assert_eq!(DeflateHead::decode(&bytes), Ok(head.clone()));
    assert_eq!(head.payload_len(), 110);
    for cut in 0..bytes.len() {
        assert!(DeflateHead::decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut extra = bytes;
    extra.push(0);
    assert!(DeflateHead::decode(&extra).is_err(), "a trailing byte");
    // Each bounded length one past its limit, and a size that does not add up.
    let bad: [fn(&mut DeflateHead); 7] = [
        |h| h.base_plain = DEFLATE_PLAIN_MAX + 1,
        |h| h.plain = DEFLATE_PLAIN_MAX + 1,
        |h| {
            h.stream_len = DEFLATE_STREAM_MAX + 1;
            h.header.size = h.stream_len + 18;
        },
        |h| h.corrections_len = DEFLATE_CORRECTIONS_MAX + 1,
        |h| {
            h.prefix = vec![0; DEFLATE_FRAME_MAX + 1];
            h.header.size += h.prefix.len() as u64 - 10;
        },
        |h| h.header.size += 1,
        |h| h.base_start = u64::MAX,
    ];
    for (i, f) in bad.iter().enumerate() {
        let mut h = deflate_head();
        f(&mut h);
        assert!(DeflateHead::decode(&h.encode()).is_err(), "case {i}");
    }
    let mut sym = deflate_head();
    sym.header.kind = FileKind::Symlink;
    assert!(DeflateHead::decode(&sym.encode()).is_err());
}
