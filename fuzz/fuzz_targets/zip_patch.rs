//! Zip patches (`format::zippatch::ZipHead`, `redeflate::rebuild_zip`): the head and the
//! payload come from a signed update, but a signing key's holder is not trusted to be
//! correct. Decoding must never panic and must round-trip; rebuilding against a base
//! must never panic, never inflate a base piece past its declared size, and hand out
//! exactly the header's size or fail. Preflate's own reconstruction runs in a child
//! process on the device (it can panic on data its corrections do not describe), so a
//! stand-in takes its place here: it makes the longest stream the piece allows.
//!
//! Input: a head length (u16 little-endian), the head, then the payload. The base is a
//! fixed archive-like file: 30 stored bytes, a deflate stream (a little text, level 6),
//! 22 stored bytes.
#![no_main]

use std::io::{Read, Write};
use std::sync::OnceLock;

use format::zippatch::ZipHead;
use libfuzzer_sys::fuzz_target;

fn base() -> &'static [u8] {
    static BASE: OnceLock<Vec<u8>> = OnceLock::new();
    BASE.get_or_init(|| {
        let text: Vec<u8> = (0..500u32)
            .flat_map(|i| format!("def method_{i}(self): return {i}\n").into_bytes())
            .collect();
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(6));
        e.write_all(&text).unwrap();
        let mut out = vec![b'L'; 30];
        out.extend_from_slice(&e.finish().unwrap());
        out.extend_from_slice(&[b'C'; 22]);
        out
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(head) = ZipHead::decode(data) {
        assert_eq!(ZipHead::decode(&head.encode()), Ok(head));
    }
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
    let (head, mut payload) = rest.split_at(len);
    let Ok(head) = ZipHead::decode(head) else {
        return;
    };
    let stand_in = |_: Vec<u8>, _: Vec<u8>, max: u64| Ok(vec![0; usize::try_from(max).unwrap()]);
    let size = head.header.size;
    let made = redeflate::rebuild_zip(base(), &head, &mut payload, stand_in, |r| {
        // As the device's store does: at most the header's size.
        let mut out = Vec::new();
        r.take(size).read_to_end(&mut out).map(|_| out)
    });
    if let Ok(out) = made {
        assert_eq!(out.len() as u64, size);
    }
});
