//! The boolean entropy coder of RFC 6386 (VP8) section 7, with adaptive contexts.
//!
//! The coder itself is the RFC's: 8-bit probabilities, a range kept in 128..=255, one
//! bit shifted in or out per doubling of the range, carries propagated back into the bytes
//! already written. What the RFC leaves to the format, how a probability is chosen, is
//! [`VP8Context`]: an estimate from the counts of the zeros and ones it has seen.

use std::io::{self, Read, Write};

use crate::{CabacReader, CabacWriter};

/// When a context has counted this many bits, both counts are halved, so that it follows
/// data whose odds drift rather than averaging over all of it.
const COUNT_LIMIT: u16 = 1024;

/// Past the end of its input the reader decodes as if zero bytes followed (RFC 6386
/// section 7.3); after this many such bytes, which no stream the writer makes ever needs
/// (it needs at most a few), every bit reads as 0 so that any loop over bits ends.
const PAST_END_BUDGET: u32 = 32;

/// The writer drops zero bytes at the end of what it writes (the reader supplies them
/// again), at most this many: the reader's [`PAST_END_BUDGET`] must cover them.
const MAX_STRIPPED_ZEROS: usize = 4;

/// The odds of a bit: counts of the zeros and ones coded with this context.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VP8Context {
    zeros: u16,
    ones: u16,
}

impl VP8Context {
    pub fn new() -> Self {
        Self::default()
    }

    /// The probability that the next bit is 0, in 256ths (1..=255): the counts'
    /// estimate (zeros + 1/2) / (all + 1), so an unused context says 128 (even odds).
    pub fn probability(&self) -> u8 {
        let zeros = 2 * u32::from(self.zeros) + 1;
        let all = 2 * (u32::from(self.zeros) + u32::from(self.ones)) + 2;
        let p = (zeros * 256 / all).clamp(1, 255);
        u8::try_from(p).unwrap_or(255)
    }

    /// Counts `bit`, halving both counts when they reach [`COUNT_LIMIT`].
    pub fn record(&mut self, bit: bool) {
        if bit {
            self.ones += 1;
        } else {
            self.zeros += 1;
        }
        if self.zeros + self.ones >= COUNT_LIMIT {
            self.zeros = self.zeros.div_ceil(2);
            self.ones = self.ones.div_ceil(2);
        }
    }
}

/// Where a bit with probability `prob` (of 0, in 256ths) splits a range (RFC 6386, 7.3):
/// 1..range, so both halves are non-empty.
fn split(range: u32, prob: u8) -> u32 {
    1 + (((range - 1) * u32::from(prob)) >> 8)
}

/// Codes bits into `out`. The bytes are kept in memory until [`CabacWriter::finish`]
/// (a carry may still change any of the trailing 0xff bytes), then written at once.
#[derive(Debug)]
pub struct VP8Writer<W> {
    out: W,
    bytes: Vec<u8>,
    /// The low end of the range, the bits not yet settled into `bytes`.
    bottom: u32,
    range: u32,
    /// Doublings of the range until the next byte leaves `bottom`.
    bit_count: u32,
    finished: bool,
}

impl<W: Write> VP8Writer<W> {
    pub fn new(out: W) -> io::Result<Self> {
        Ok(Self {
            out,
            bytes: Vec::new(),
            bottom: 0,
            range: 255,
            bit_count: 24,
            finished: false,
        })
    }

    /// Adds one to the bytes written so far (a carry out of `bottom`).
    fn carry(&mut self) {
        for b in self.bytes.iter_mut().rev() {
            if *b == 0xff {
                *b = 0;
            } else {
                *b += 1;
                return;
            }
        }
        // A carry past the first byte cannot happen: the whole stream codes a number
        // below 255/256. Nothing to add it to; dropping it keeps the writer total.
    }

    fn put_with(&mut self, bit: bool, prob: u8) {
        let split = split(self.range, prob);
        if bit {
            self.bottom = self.bottom.wrapping_add(split);
            self.range -= split;
        } else {
            self.range = split;
        }
        while self.range < 128 {
            self.range <<= 1;
            if self.bottom & (1 << 31) != 0 {
                self.carry();
            }
            self.bottom <<= 1;
            self.bit_count -= 1;
            if self.bit_count == 0 {
                self.bytes.push(self.bottom.to_be_bytes()[0]);
                self.bottom &= (1 << 24) - 1;
                self.bit_count = 8;
            }
        }
    }
}

impl<W: Write> CabacWriter<VP8Context> for VP8Writer<W> {
    fn put_bypass(&mut self, bit: bool) -> io::Result<()> {
        self.put_with(bit, 128);
        Ok(())
    }

    fn put(&mut self, bit: bool, ctx: &mut VP8Context) -> io::Result<()> {
        self.put_with(bit, ctx.probability());
        ctx.record(bit);
        Ok(())
    }

    /// Settles the low end of the range into four more bytes (RFC 6386, 7.3), drops up
    /// to [`MAX_STRIPPED_ZEROS`] zero bytes at the end, and writes all to `out`.
    /// A second call writes nothing.
    fn finish(&mut self) -> io::Result<()> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        let c = self.bit_count;
        if self.bottom & (1 << (32 - c)) != 0 {
            self.carry();
        }
        let v = self.bottom << c;
        self.bytes.extend_from_slice(&v.to_be_bytes());
        for _ in 0..MAX_STRIPPED_ZEROS {
            if self.bytes.last() == Some(&0) {
                self.bytes.pop();
            }
        }
        self.out.write_all(&self.bytes)?;
        self.bytes = Vec::new();
        self.out.flush()
    }
}

/// Decodes the bits a [`VP8Writer`] coded. Reads `input` in blocks, never past its end;
/// on damaged or cut input it returns wrong bits, never a panic (see [`PAST_END_BUDGET`]).
#[derive(Debug)]
pub struct VP8Reader<R> {
    input: R,
    buf: Box<[u8]>,
    pos: usize,
    len: usize,
    at_end: bool,
    past_end: u32,
    /// The coded number's bits ahead of the range's low end: always below `range << 8`.
    value: u32,
    range: u32,
    /// Doublings since the last byte came in.
    bit_count: u32,
}

impl<R: Read> VP8Reader<R> {
    /// Reads the first two bytes (RFC 6386, 7.3).
    pub fn new(input: R) -> io::Result<Self> {
        let mut r = Self {
            input,
            buf: vec![0; 4096].into_boxed_slice(),
            pos: 0,
            len: 0,
            at_end: false,
            past_end: 0,
            value: 0,
            range: 255,
            bit_count: 0,
        };
        let hi = r.next_byte()?;
        let lo = r.next_byte()?;
        // A writer's stream starts below 0xff00 (it codes a number below 255/256);
        // damaged input may not, and the decoder's arithmetic needs it to.
        r.value = u32::from(u16::from_be_bytes([hi, lo])).min((r.range << 8) - 1);
        Ok(r)
    }

    /// The next input byte, or 0 past the end.
    fn next_byte(&mut self) -> io::Result<u8> {
        if self.pos == self.len && !self.at_end {
            self.pos = 0;
            self.len = loop {
                match self.input.read(&mut self.buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            };
            self.at_end = self.len == 0;
        }
        if self.at_end {
            self.past_end = self.past_end.saturating_add(1);
            return Ok(0);
        }
        let b = self.buf[self.pos];
        self.pos += 1;
        Ok(b)
    }

    fn get_with(&mut self, prob: u8) -> io::Result<bool> {
        if self.past_end > PAST_END_BUDGET {
            return Ok(false);
        }
        let split = split(self.range, prob);
        let big_split = split << 8;
        let bit = if self.value >= big_split {
            self.range -= split;
            self.value -= big_split;
            true
        } else {
            self.range = split;
            false
        };
        while self.range < 128 {
            self.value <<= 1;
            self.range <<= 1;
            self.bit_count += 1;
            if self.bit_count == 8 {
                self.bit_count = 0;
                self.value |= u32::from(self.next_byte()?);
            }
        }
        Ok(bit)
    }
}

impl<R: Read> CabacReader<VP8Context> for VP8Reader<R> {
    fn get_bypass(&mut self) -> io::Result<bool> {
        self.get_with(128)
    }

    fn get(&mut self, ctx: &mut VP8Context) -> io::Result<bool> {
        let bit = self.get_with(ctx.probability())?;
        ctx.record(bit);
        Ok(bit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Codes `bits` and checks that they decode; returns how many times a carry changed
    /// bytes already written.
    fn round_trip(bits: &[(bool, u8)]) -> usize {
        let mut carries = 0;
        let mut out = Vec::new();
        let mut w = VP8Writer::new(&mut out).unwrap();
        for &(bit, prob) in bits {
            let before = w.bytes.clone();
            w.put_with(bit, prob);
            if w.bytes[..before.len()] != before[..] {
                carries += 1;
            }
        }
        w.finish().unwrap();
        let mut r = VP8Reader::new(io::Cursor::new(&out)).unwrap();
        for (i, &(bit, prob)) in bits.iter().enumerate() {
            assert_eq!(r.get_with(prob).unwrap(), bit, "bit {i} of {bits:?}");
        }
        carries
    }

    /// Bits that keep 1/2 inside the coded interval, below its top, for `n` steps at
    /// probability 100 (with which the split never lands on 1/2 in 100 steps, so the
    /// low end stays below it): the writer has written 0x7f 0xff 0xff …. Then a 1 at
    /// probability 255 moves the low end to one unit below the top, at or above 1/2:
    /// the carry ripples back through every 0xff byte.
    fn straddling_one_half(n: usize) -> Vec<(bool, u8)> {
        // The interval [low, low + range) and 1/2, all scaled by 2^(8 + doublings).
        let (mut low, mut range, mut half) = (0u128, 255u128, 128u128);
        let mut bits = Vec::new();
        for _ in 0..n {
            let split = 1 + (((range - 1) * 100) >> 8);
            let bit = half >= low + split;
            if bit {
                low += split;
                range -= split;
            } else {
                range = split;
            }
            while range < 128 {
                low <<= 1;
                range <<= 1;
                half <<= 1;
            }
            bits.push((bit, 100));
        }
        bits.push((true, 255));
        bits
    }

    #[test]
    fn carries_ripple_back_and_round_trip() {
        for n in [1, 2, 8, 23, 24, 25, 31, 32, 33, 40, 64, 100] {
            let bits = straddling_one_half(n);
            let carries = round_trip(&bits);
            if n >= 40 {
                // 40 steps make more than 32 doublings, so bytes were written (the
                // first after 24 doublings).
                assert!(carries > 0, "n {n}: no carry reached the written bytes");
            }
        }
    }
}
