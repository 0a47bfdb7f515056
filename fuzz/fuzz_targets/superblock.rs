//! The update file's head and signed body (the superblock), as `berth update` reads them
//! from an untrusted file: the head's length field, then the body's commit, signatures and
//! part table. Panics are bugs.
#![no_main]

use format::update::{Body, HEAD_LEN, decode_head};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() >= HEAD_LEN
        && let Ok(n) = decode_head(&data[..HEAD_LEN])
    {
        assert!(n <= format::update::BODY_MAX);
    }
    // Canonical: whatever decodes re-encodes to the same bytes, so one body has one
    // signature.
    if let Ok(b) = Body::decode(data) {
        assert_eq!(b.encode(), data);
        assert!(b.parts.len() <= format::update::PARTS_MAX);
        assert!(b.parts.iter().all(|p| p.size <= format::update::PART_MAX));
    }
});
