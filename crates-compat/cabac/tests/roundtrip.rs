//! The coders round-trip every bit sequence under every order of contexts, and the VP8
//! reader survives any bytes: it never panics, never reads past its input, and ends.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

use std::io::{self, Cursor, Read};

use cabac::debug::{DebugContext, DebugReader, DebugWriter};
use cabac::vp8::{VP8Context, VP8Reader, VP8Writer};
use cabac::{CabacReader, CabacWriter};
use proptest::prelude::*;

/// One thing a caller writes: a bit with context `ctx`, a bypass bit, an n-bit number or
/// a unary number with context set `set`.
#[derive(Debug, Clone)]
enum Op {
    Bit { bit: bool, ctx: usize },
    Bypass(bool),
    NBits { value: u64, n: usize, set: usize },
    Unary { value: usize, set: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (any::<bool>(), 0..8usize).prop_map(|(bit, ctx)| Op::Bit { bit, ctx }),
        // Skewed bits: the contexts learn them, and carries through 0xff bytes happen.
        4 => (prop::bool::weighted(0.02), 0..2usize).prop_map(|(bit, ctx)| Op::Bit { bit, ctx }),
        1 => any::<bool>().prop_map(Op::Bypass),
        2 => (any::<u64>(), 0..=64usize, 0..2usize).prop_map(|(value, n, set)| Op::NBits { value, n, set }),
        2 => (0..40usize, 0..2usize).prop_map(|(value, set)| Op::Unary { value, set }),
    ]
}

fn mask(value: u64, n: usize) -> u64 {
    if n >= 64 {
        value
    } else {
        value & ((1u64 << n) - 1)
    }
}

fn write_ops(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = VP8Writer::new(&mut out).unwrap();
    let mut ctx = [VP8Context::default(); 8];
    let mut sets = [[VP8Context::default(); 4]; 2];
    for op in ops {
        match *op {
            Op::Bit { bit, ctx: c } => w.put(bit, &mut ctx[c]).unwrap(),
            Op::Bypass(bit) => w.put_bypass(bit).unwrap(),
            Op::NBits { value, n, set } => w.put_n_bits(value, n, &mut sets[set]).unwrap(),
            Op::Unary { value, set } => w.put_unary_encoded(value, &mut sets[set]).unwrap(),
        }
    }
    w.finish().unwrap();
    out
}

fn check_ops(bytes: &[u8], ops: &[Op]) -> Result<(), TestCaseError> {
    let mut r = VP8Reader::new(Cursor::new(bytes)).unwrap();
    let mut ctx = [VP8Context::default(); 8];
    let mut sets = [[VP8Context::default(); 4]; 2];
    for (i, op) in ops.iter().enumerate() {
        match *op {
            Op::Bit { bit, ctx: c } => {
                prop_assert_eq!(r.get(&mut ctx[c]).unwrap(), bit, "op {}", i);
            }
            Op::Bypass(bit) => {
                prop_assert_eq!(r.get_bypass().unwrap(), bit, "op {}", i);
            }
            Op::NBits { value, n, set } => {
                prop_assert_eq!(
                    r.get_n_bits(n, &mut sets[set]).unwrap(),
                    mask(value, n),
                    "op {}",
                    i
                );
            }
            Op::Unary { value, set } => {
                prop_assert_eq!(
                    r.get_unary_encoded(&mut sets[set]).unwrap(),
                    value,
                    "op {}",
                    i
                );
            }
        }
    }
    Ok(())
}

proptest! {
    // 96 cases: generating thousands of ops is most of the time (about 4 s, unoptimized).
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn vp8_round_trips_any_bits_and_contexts(ops in prop::collection::vec(op(), 0..3000)) {
        let bytes = write_ops(&ops);
        check_ops(&bytes, &ops)?;
    }

    /// Long runs of one value under one context: the probabilities reach their bounds,
    /// the counts are halved, and (for zeros) the stream ends in zero bytes.
    #[test]
    fn vp8_round_trips_long_runs(bit in any::<bool>(), n in 0..5_000usize, tail in prop::collection::vec(any::<bool>(), 0..64)) {
        let mut ops: Vec<Op> = (0..n).map(|_| Op::Bit { bit, ctx: 0 }).collect();
        ops.extend(tail.iter().map(|&bit| Op::Bypass(bit)));
        let bytes = write_ops(&ops);
        check_ops(&bytes, &ops)?;
    }

    /// Any input, cut anywhere: reading far more bits than it holds ends without a
    /// panic, and a unary read ends too.
    #[test]
    fn vp8_reader_survives_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256), reads in 0..5000usize) {
        let mut r = VP8Reader::new(Cursor::new(&bytes)).unwrap();
        let mut ctx = [VP8Context::default(); 4];
        for i in 0..reads {
            r.get(&mut ctx[i % 4]).unwrap();
        }
        for _ in 0..100 {
            r.get_unary_encoded(&mut ctx).unwrap();
            r.get_n_bits(200, &mut ctx).unwrap();
        }
    }

    #[test]
    fn debug_round_trips(bits in prop::collection::vec(any::<bool>(), 0..500)) {
        let mut out = Vec::new();
        let mut w = DebugWriter::new(&mut out).unwrap();
        for &b in &bits {
            w.put(b, &mut DebugContext).unwrap();
        }
        w.finish().unwrap();
        let mut r = DebugReader::new(Cursor::new(&out)).unwrap();
        for &b in &bits {
            prop_assert_eq!(r.get(&mut DebugContext).unwrap(), b);
        }
        prop_assert!(!r.get(&mut DebugContext).unwrap(), "past the end: 0");
    }
}

/// A reader that counts what it was asked for beyond its bytes, and fails if so.
struct Strict<'a> {
    bytes: &'a [u8],
    reads_at_end: usize,
}

impl Read for Strict<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.bytes.is_empty() {
            self.reads_at_end += 1;
            return Ok(0);
        }
        let n = buf.len().min(self.bytes.len());
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Ok(n)
    }
}

#[test]
fn vp8_reader_asks_its_input_once_past_the_end() {
    let bytes = [0xffu8; 10];
    let mut input = Strict {
        bytes: &bytes,
        reads_at_end: 0,
    };
    let mut r = VP8Reader::new(&mut input).unwrap();
    let mut ctx = VP8Context::default();
    for _ in 0..100_000 {
        r.get(&mut ctx).unwrap();
    }
    drop(r);
    assert_eq!(input.reads_at_end, 1);
}

#[test]
fn vp8_compresses_skewed_bits() {
    // 100000 bits, one in 50 a 1: about 0.14 bits each, 1770 bytes of entropy.
    let ops: Vec<Op> = (0..100_000)
        .map(|i| Op::Bit {
            bit: i % 50 == 0,
            ctx: 0,
        })
        .collect();
    let bytes = write_ops(&ops);
    assert!(bytes.len() < 2000, "{} bytes", bytes.len());
    check_ops(&bytes, &ops).unwrap();
}

#[test]
fn vp8_round_trips_a_million_zeros_then_ones() {
    // Far past the count limit; the stream ends in a long run of zero bits.
    let mut ops: Vec<Op> = (0..1_000_000)
        .map(|_| Op::Bit { bit: false, ctx: 0 })
        .collect();
    ops.extend((0..1000).map(|_| Op::Bit { bit: true, ctx: 0 }));
    ops.extend((0..1000).map(|_| Op::Bypass(false)));
    let bytes = write_ops(&ops);
    // 1e6 zeros at the best probability, 255/256: 705 bytes; the ones while the context
    // relearns, and 125 bytes of bypass bits.
    assert!(bytes.len() < 1400, "{} bytes", bytes.len());
    check_ops(&bytes, &ops).unwrap();
}

#[test]
fn vp8_an_empty_stream_is_empty() {
    assert_eq!(write_ops(&[]), Vec::<u8>::new());
}
