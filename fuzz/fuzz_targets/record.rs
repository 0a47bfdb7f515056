//! Boot record parser. Panics are bugs: the boot shim runs this on every boot, on bytes
//! a power cut may have torn.
#![no_main]

use format::record::{self, Record, RECORD_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Record::decode(data) {
        // Canonical: whatever decodes re-encodes to the same bytes.
        assert_eq!(&r.encode()[..], data);
    }
    // Two copies from one input: the choice must be one of the valid copies.
    let (a, b) = data.split_at(data.len().min(RECORD_LEN));
    if let Some((r, copy)) = record::choose(Some(a), Some(b)) {
        let bytes = if copy == record::RecordCopy::A { a } else { b };
        assert_eq!(Record::decode(bytes), Ok(r));
    }
});
