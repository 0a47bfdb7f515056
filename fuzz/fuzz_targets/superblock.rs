//! The update file's head and signed body (the superblock), as `berth update` reads them
//! from an untrusted file: the head's length field, the envelope (body and signature
//! lengths), then the body's commit, signatures and part table. Panics are bugs.
#![no_main]

use format::update::{Body, HEAD_LEN, decode_envelope, decode_head, envelope_len};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() >= HEAD_LEN
        && let Ok(n) = decode_head(&data[..HEAD_LEN])
    {
        assert!(n <= format::update::BODY_MAX);
    }
    // The envelope: read in steps as far as `envelope_len` says, it decodes exactly
    // when the whole of it is there, and re-encodes to the same bytes.
    if let Ok(n) = envelope_len(data) {
        match decode_envelope(data) {
            Ok(e) => {
                assert_eq!(e.parts_start, n);
                assert_eq!(
                    format::update::encode_envelope(e.body, e.signatures),
                    &data[..n]
                );
            }
            Err(_) => assert!(data.len() < n),
        }
    }
    // Canonical: whatever decodes re-encodes to the same bytes, so one body has one
    // signature.
    if let Ok(b) = Body::decode(data) {
        assert_eq!(b.encode(), data);
        assert!(b.parts.len() <= format::update::PARTS_MAX);
        assert!(b.parts.iter().all(|p| p.size <= format::update::PART_MAX));
    }
});
