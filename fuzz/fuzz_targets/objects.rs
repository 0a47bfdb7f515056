//! Tree, commit, signature, file-header, object-index and channel-pointer decoders.
//! Panics are bugs: these parse objects read from stores, update files and static
//! repositories.
#![no_main]

use format::sig::Signatures;
use format::{Commit, FileHeader, Tree};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Canonical: whatever decodes re-encodes to the same bytes.
    if let Ok(t) = Tree::decode(data) {
        assert_eq!(t.encode(), data);
    }
    if let Ok(c) = Commit::decode(data) {
        assert_eq!(c.encode(), data);
    }
    if let Ok(s) = Signatures::decode(data) {
        assert_eq!(s.encode(), data);
    }
    if let Ok(h) = FileHeader::decode(data) {
        assert_eq!(h.encode(), data);
    }
    // A header at the start of a file object: the same header, and no more bytes.
    if let Ok((h, used)) = FileHeader::decode_prefix(data) {
        assert_eq!(h.encode(), &data[..used]);
    }
    if let Ok(i) = format::index::Index::decode(data) {
        assert_eq!(i.encode(), data);
    }
    if let Ok(p) = format::channel::Pointer::decode(data) {
        assert_eq!(p.encode(), data);
    }
    let _ = format::probe::gpt_header(data);
    let _ = format::probe::gpt_entry_partuuid(data);
    let _ = format::probe::ext4_label(data);
});
