//! Deflate patches (`format::ops::DeflateHead`, `redeflate::rebuild`): the head and the
//! payload come from a signed update, but a signing key's holder is not trusted to be
//! correct. Decoding must never panic; rebuilding against a base must never panic, never
//! inflate the base past its declared size, and make exactly the header's size or fail.
//! Preflate's own reconstruction runs in a child process on the device (it can panic on
//! data its corrections do not describe), so a stand-in takes its place here: it makes
//! the longest stream the head allows.
//!
//! Input: a head length (u16 little-endian), the head, then the payload. The base is a
//! fixed deflate stream (a little text, level 6).
#![no_main]

use std::io::Write;
use std::sync::OnceLock;

use format::ops::DeflateHead;
use libfuzzer_sys::fuzz_target;

fn base() -> &'static [u8] {
    static BASE: OnceLock<Vec<u8>> = OnceLock::new();
    BASE.get_or_init(|| {
        let text: Vec<u8> = (0..2000u32)
            .flat_map(|i| format!("entry {i}: a line of a changelog\n").into_bytes())
            .collect();
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(6));
        e.write_all(&text).unwrap();
        e.finish().unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(head) = DeflateHead::decode(data) {
        assert_eq!(DeflateHead::decode(&head.encode()), Ok(head));
    }
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
    let (head, mut payload) = rest.split_at(len);
    let Ok(head) = DeflateHead::decode(head) else {
        return;
    };
    let base = base();
    let start = usize::try_from(head.base_start).unwrap_or(usize::MAX).min(base.len());
    let stand_in = |_: Vec<u8>, _: Vec<u8>, max: u64| Ok(vec![0; usize::try_from(max).unwrap()]);
    if let Ok(out) = redeflate::rebuild(&base[start..], &head, &mut payload, stand_in) {
        assert_eq!(out.len() as u64, head.header.size);
    }
});
