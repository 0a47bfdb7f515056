//! ELF patches (`format::elfpatch`): the head comes from a signed update, but a signing
//! key's holder is not trusted to be correct. Decoding must never panic and must give
//! back what it encodes; restoring any bytes through any head that decodes must never
//! panic, must keep the length, must give the same bytes whatever the buffer sizes of
//! the stream, and normalizing the result must give the bytes back (the two directions
//! are inverse bijections for every valid head: what the device makes is exact).
//!
//! Input: a head length (u16 little-endian), the head, a byte that sets the stream's
//! buffer size, then the file's bytes.
#![no_main]

use format::elfpatch::{Direction, ElfHead, Rewriter};
use libfuzzer_sys::fuzz_target;

/// `data` through `head`'s rewriter in `dir`, fed `chunk` bytes at a time.
fn stream(head: &ElfHead, dir: Direction, data: &[u8], chunk: usize) -> Vec<u8> {
    let mut rw = Rewriter::new(head.arch, &head.code, &head.map, dir).unwrap();
    let (mut out, mut pending, mut start) = (Vec::new(), Vec::new(), 0u64);
    for (i, piece) in data.chunks(chunk).enumerate() {
        pending.extend_from_slice(piece);
        let last = (i + 1) * chunk >= data.len();
        let done = rw.run(&mut pending, start, last);
        let k = usize::try_from(done - start).unwrap();
        out.extend(pending.drain(..k));
        start = done;
    }
    if data.is_empty() {
        rw.run(&mut pending, 0, true);
    }
    assert!(pending.is_empty(), "bytes held back after the last buffer");
    out
}

fuzz_target!(|data: &[u8]| {
    if let Ok(head) = ElfHead::decode(data) {
        assert_eq!(ElfHead::decode(&head.encode()), Ok(head));
    }
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
    let (head, rest) = rest.split_at(len);
    let Ok(head) = ElfHead::decode(head) else {
        return;
    };
    let Some((&chunk, file)) = rest.split_first() else {
        return;
    };
    let whole = stream(&head, Direction::Restore, file, file.len().max(1));
    assert_eq!(whole.len(), file.len());
    let pieces = stream(&head, Direction::Restore, file, usize::from(chunk) + 1);
    assert_eq!(pieces, whole);
    assert_eq!(stream(&head, Direction::Normalize, &whole, file.len().max(1)), file);
});
