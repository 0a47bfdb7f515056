//! An adaptive binary arithmetic coder with the interface `preflate-rs` calls.
//!
//! Berth's own implementation (MIT OR Apache-2.0), written from that interface and
//! RFC 6386 section 7; not derived from the LGPL crate of the same name. See README.md.
//!
//! A writer codes bits, each with a context (`C`) that predicts it and learns from it; the
//! reader, given the same contexts in the same order, gets the same bits back.

pub mod debug;
pub mod vp8;

use std::io;

/// Writes bits, each coded with the probability its context predicts.
pub trait CabacWriter<C> {
    /// Writes one bit with even odds and no context.
    fn put_bypass(&mut self, bit: bool) -> io::Result<()>;

    /// Writes one bit with the probability `ctx` predicts, and teaches `ctx` the bit.
    fn put(&mut self, bit: bool, ctx: &mut C) -> io::Result<()>;

    /// Writes out whatever the coder still holds; call once, after the last bit.
    fn finish(&mut self) -> io::Result<()>;

    /// Writes the low `num_bits` bits of `bits`, most significant first; bit `i` is
    /// coded with `contexts[i]` (or the last context when `i` is past the end).
    fn put_n_bits<const A: usize>(
        &mut self,
        bits: u64,
        num_bits: usize,
        contexts: &mut [C; A],
    ) -> io::Result<()> {
        for i in (0..num_bits).rev() {
            let bit = u32::try_from(i)
                .ok()
                .and_then(|s| bits.checked_shr(s))
                .is_some_and(|b| b & 1 == 1);
            self.put(bit, context_at(contexts, i))?;
        }
        Ok(())
    }

    /// Writes `v` in unary: `v` one bits and a closing zero; the `i`th bit is coded with
    /// `contexts[i]` (or the last context when `i` is past the end).
    fn put_unary_encoded<const A: usize>(
        &mut self,
        v: usize,
        contexts: &mut [C; A],
    ) -> io::Result<()> {
        for i in 0..v {
            self.put(true, context_at(contexts, i))?;
        }
        self.put(false, context_at(contexts, v))
    }
}

/// Reads the bits a [`CabacWriter`] wrote, given the same contexts in the same order.
pub trait CabacReader<C> {
    /// Reads one bit written by [`CabacWriter::put_bypass`].
    fn get_bypass(&mut self) -> io::Result<bool>;

    /// Reads one bit written by [`CabacWriter::put`] with a context in the same state.
    fn get(&mut self, ctx: &mut C) -> io::Result<bool>;

    /// Reads a value written by [`CabacWriter::put_unary_encoded`].
    fn get_unary_encoded<const A: usize>(&mut self, contexts: &mut [C; A]) -> io::Result<usize> {
        let mut v = 0;
        while self.get(context_at(contexts, v))? {
            v += 1;
        }
        Ok(v)
    }

    /// Reads `num_bits` bits written by [`CabacWriter::put_n_bits`]. Bits beyond the 64
    /// a `u64` holds are read (so the stream stays in step) and dropped.
    fn get_n_bits<const A: usize>(
        &mut self,
        num_bits: usize,
        contexts: &mut [C; A],
    ) -> io::Result<u64> {
        let mut v = 0u64;
        for i in (0..num_bits).rev() {
            let bit = self.get(context_at(contexts, i))?;
            if bit && let Some(b) = u32::try_from(i).ok().and_then(|s| 1u64.checked_shl(s)) {
                v |= b;
            }
        }
        Ok(v)
    }
}

/// `contexts[i]`, or the last context when `i` is past the end.
///
/// # Panics
/// When `A` is 0: there is no context to code with (a caller's bug, not input's).
fn context_at<C, const A: usize>(contexts: &mut [C; A], i: usize) -> &mut C {
    let last = A.checked_sub(1).expect("at least one context");
    &mut contexts[i.min(last)]
}
