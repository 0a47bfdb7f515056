//! Part operations (`format::ops`): tree edits and patch heads come from the update file,
//! after its signature, but a signing key's holder is not trusted to be correct. Decoding
//! and building must never panic, and a built tree must be a valid tree.
#![no_main]

use format::ops::{ObjRef, PatchHead, TreeOp};
use format::{EntryKind, ObjectId, Tree};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(head) = PatchHead::decode(data) {
        assert_eq!(head.windows.iter().map(|w| w.out_len).sum::<u64>(), head.header.size);
        assert_eq!(PatchHead::decode(&head.encode()), Ok(head));
    }
    // The first bytes, if they are a tree, are the base; the rest is the operation.
    let split = data.first().map_or(0, |&n| usize::from(n)).min(data.len());
    let (base, rest) = data.split_at(split);
    let base = Tree::decode(base.get(1..).unwrap_or_default()).ok();
    if let Ok(op) = TreeOp::decode(rest) {
        assert_eq!(TreeOp::decode(&op.encode()).as_ref(), Ok(&op));
        let resolve = |r: &ObjRef, kind: EntryKind| match r {
            ObjRef::Id(id) => Ok(*id),
            ObjRef::Local(n) | ObjRef::Base(n) => {
                let mut b = [u8::from(kind == EntryKind::Tree); 32];
                b[..8].copy_from_slice(&n.to_le_bytes());
                Ok(ObjectId::from_bytes(b))
            }
        };
        if let Ok(tree) = op.build(base.as_ref(), resolve) {
            assert_eq!(Tree::decode(&tree.encode()), Ok(tree));
        }
    }
});
