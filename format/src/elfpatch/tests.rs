//! Tests of ELF patches: round trips over random and dense bytes and maps, and the
//! semantics of each architecture's sites.
#![allow(clippy::cast_possible_truncation)] // test data: random bytes and small sizes

use super::*;
use crate::ops::Window;

/// Random bytes; bytes from a small alphabet of opcodes and displacement bytes, so
/// candidates overlap in every way.
const DENSE: [u8; 10] = [0xE8, 0xE9, 0x0F, 0x84, 0x00, 0xFF, 0x05, 0x8B, 0x14, 0x94];
use crate::{FileHeader, FileKind};

fn head(arch: Arch, size: u64, code: Vec<CodeRange>, map: Vec<MapRange>) -> ElfHead {
    ElfHead {
        patch: PatchHead {
            header: FileHeader {
                kind: FileKind::Regular,
                mode: 0o755,
                uid: 0,
                gid: 0,
                rdev_major: 0,
                rdev_minor: 0,
                size,
                xattrs: crate::Xattrs::new(),
            },
            base: 3,
            windows: alloc::vec![Window {
                base_start: 0,
                base_len: 10,
                out_len: size,
                patch_len: 7,
            }],
        },
        arch,
        code,
        map,
    }
}

/// A small deterministic generator (xorshift), so the tests need no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random disjoint ranges of `arch`'s space, sorted by new address.
fn random_map(rng: &mut Rng, arch: Arch) -> Vec<MapRange> {
    let space = 1u64 << arch.bits();
    let a = arch.align();
    let mut out: Vec<MapRange> = Vec::new();
    for _ in 0..rng.below(12) {
        let len = (1 + rng.below(space / 16 / a)) * a;
        let (new, old) = (
            rng.below((space - len) / a) * a,
            rng.below((space - len) / a) * a,
        );
        let overlaps = |a: u64, b: u64, l: u64| a < b + len && b < a + l;
        if out
            .iter()
            .any(|m| overlaps(m.new, new, m.len) || overlaps(m.old, old, m.len))
        {
            continue;
        }
        out.push(MapRange { new, old, len });
    }
    out.sort_unstable_by_key(|m| m.new);
    out
}

#[test]
fn the_map_is_a_bijection_and_its_inverse_undoes_it() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for arch in [Arch::X86_64, Arch::Aarch64] {
        for _ in 0..200 {
            let ranges = random_map(&mut rng, arch);
            let map = Map::new(arch, &ranges).unwrap();
            for m in &ranges {
                assert_eq!(map.forward(m.new), m.old);
                assert_eq!(map.forward(m.new + m.len - 1), m.old + m.len - 1);
            }
            for _ in 0..200 {
                let x = rng.below(1 << arch.bits());
                let y = map.forward(x);
                assert!(y < 1 << arch.bits());
                assert_eq!(map.inverse(y), x, "{ranges:?} at {x}");
                // Each stretch holds its address, and shifts all of its own as
                // the map does, looked up at each one.
                for (p, f) in [
                    (map.forward_piece(x), Map::forward as fn(&Map, u64) -> u64),
                    (map.inverse_piece(x), Map::inverse),
                ] {
                    assert!(p.holds(x), "{p:?} {x}");
                    let inside = p.lo + rng.below(p.hi - p.lo);
                    for z in [p.lo, p.hi - 1, inside] {
                        assert_eq!(p.at(z), f(&map, z), "{ranges:?} {p:?} at {z}");
                    }
                }
            }
        }
    }
    // Exhaustively on a small example: a permutation of the whole space.
    let map = Map::new(
        Arch::X86_64,
        &[
            MapRange {
                new: 2,
                old: 100,
                len: 3,
            },
            MapRange {
                new: 10,
                old: 0,
                len: 4,
            },
        ],
    )
    .unwrap();
    let mut seen = alloc::collections::BTreeSet::new();
    for x in (0..300).chain((300..1u64 << 25).step_by(997)) {
        let y = map.forward(x);
        assert!(seen.insert(y));
        assert_eq!(map.inverse(y), x);
    }
    assert_eq!(
        map.forward(0),
        4,
        "the first address outside the ranges on both sides"
    );
    assert_eq!(map.forward(5), 6);
}

#[test]
fn maps_that_are_not_bijections_are_refused() {
    let r = |new, old, len| MapRange { new, old, len };
    for bad in [
        alloc::vec![r(0, 0, 0)],
        alloc::vec![r(10, 0, 5), r(12, 50, 5)],
        alloc::vec![r(10, 0, 5), r(2, 50, 5)],
        alloc::vec![r(0, 10, 5), r(20, 12, 5)],
        alloc::vec![r((1 << 25) - 2, 0, 5)],
        alloc::vec![r(0, (1 << 25) - 2, 5)],
        alloc::vec![r(0, u64::MAX, 5)],
    ] {
        assert!(Map::new(Arch::X86_64, &bad).is_err(), "{bad:?}");
    }
    assert!(Map::new(Arch::Aarch64, &[r((1 << 25) - 8, 0, 8)]).is_ok());
    // AArch64 ranges must send words to words.
    for bad in [r(2, 0, 8), r(0, 2, 8), r(0, 0, 6)] {
        assert!(Map::new(Arch::Aarch64, &[bad]).is_err(), "{bad:?}");
    }
}

/// Runs a rewriter over `data` in pieces of `chunk` bytes, as a stream would.
fn stream(data: &[u8], head: &ElfHead, dir: Direction, chunk: usize) -> Vec<u8> {
    let mut rw = Rewriter::new(head.arch, &head.code, &head.map, dir).unwrap();
    let mut out = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut start = 0u64;
    let mut fed = 0;
    loop {
        let take = chunk.min(data.len() - fed);
        pending.extend_from_slice(&data[fed..fed + take]);
        fed += take;
        let last = fed == data.len();
        let done = rw.run(&mut pending, start, last);
        let k = (done - start) as usize;
        out.extend_from_slice(&pending[..k]);
        pending.drain(..k);
        start = done;
        if last {
            assert!(pending.is_empty());
            return out;
        }
    }
}

/// Code-like bytes: plenty of opcode bytes followed by small displacements.
fn code(rng: &mut Rng, n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        match rng.below(7) {
            0 => v.extend_from_slice(&[0xE8, rng.next() as u8, rng.next() as u8, 0, 0]),
            1 => v.extend_from_slice(&[0x0F, 0x84, rng.next() as u8, 0xF0, 0xFF, 0xFF]),
            2 => v.extend_from_slice(&[0x48, 0x8B, 0x05, rng.next() as u8, 0x10, 0x00, 0x00]),
            3 => v.extend_from_slice(
                &(0x9400_0000u32 | rng.next() as u32 & 0x3FF_FFFF).to_le_bytes(),
            ),
            // adrp x3 with a small page displacement, then an add or an 8-byte
            // load through x3.
            4 => {
                let pages = rng.below(64) as u32;
                let adrp = 0x9000_0003 | (pages & 3) << 29 | (pages >> 2) << 5;
                let (second, max) = if rng.below(2) == 0 {
                    (0x9100_0063, 0xFFF)
                } else {
                    (0xF940_0063, 0x1FF)
                };
                v.extend_from_slice(&adrp.to_le_bytes());
                v.extend_from_slice(&(second | (rng.next() as u32 & max) << 10).to_le_bytes());
            }
            _ => v.push(rng.next() as u8),
        }
    }
    v.truncate(n);
    v
}

#[test]
fn restoring_a_normalized_file_gives_it_back_for_any_bytes_and_any_map() {
    let mut rng = Rng(7);
    for round in 0..300 {
        let arch = if round % 2 == 0 {
            Arch::X86_64
        } else {
            Arch::Aarch64
        };
        let n = 1 + rng.below(3000) as usize;
        let data: Vec<u8> = match round % 3 {
            0 => (0..n).map(|_| rng.next() as u8).collect(),
            1 => (0..n).map(|_| DENSE[rng.below(10) as usize]).collect(),
            _ => code(&mut rng, n),
        };
        let mut ranges = Vec::new();
        let mut at = rng.below(8);
        while at < n as u64 {
            let len = 1 + rng.below(n as u64);
            let len = len.min(n as u64 - at);
            ranges.push(CodeRange {
                kind: if rng.below(3) == 0 {
                    RangeKind::Pointers
                } else {
                    RangeKind::Code
                },
                offset: at,
                len,
                addr: rng.below(1 << 40),
            });
            at += len + rng.below(20);
        }
        let h = head(arch, n as u64, ranges, random_map(&mut rng, arch));
        let chunk = 1 + rng.below(64) as usize;
        let norm = stream(&data, &h, Direction::Normalize, n + 1);
        let back = stream(&norm, &h, Direction::Restore, chunk);
        assert_eq!(back, data, "round {round}");
        // Streaming in pieces gives what one piece gives.
        assert_eq!(stream(&data, &h, Direction::Normalize, chunk), norm);
    }
}

#[test]
fn a_reference_between_ranges_that_moved_together_gets_the_bases_value() {
    // New: a call at 0x100 to 0x400; 16 bytes were inserted at 0x50, so in the
    // base both ends are 16 lower, and so is everything from 0x60 on.
    let mut new = alloc::vec![0x90u8; 0x800];
    new[0x100..0x105].copy_from_slice(&[0xE8, 0xFB, 0x02, 0x00, 0x00]);
    let map = alloc::vec![
        MapRange {
            new: 0,
            old: 0,
            len: 0x50
        },
        MapRange {
            new: 0x60,
            old: 0x50,
            len: 0x7A0
        },
    ];
    let code = alloc::vec![CodeRange {
        kind: RangeKind::Code,
        offset: 0,
        len: 0x800,
        addr: 0,
    }];
    let h = head(Arch::X86_64, 0x800, code, map);
    let norm = stream(&new, &h, Direction::Normalize, 0x801);
    // Site (operand end) 0x105 → 0xF5, target 0x400 → 0x3F0: the same 0x2FB.
    assert_eq!(norm[0x101..0x105], [0xFB, 0x02, 0x00, 0x00]);
    // A call across the insertion: from 0x10 (before) to 0x400 (after) holds
    // 0x3EB in the new file and 0x3DB, 16 less, in the normalized one.
    let mut new2 = new.clone();
    new2[0x10..0x15].copy_from_slice(&[0xE8, 0xEB, 0x03, 0x00, 0x00]);
    let norm2 = stream(&new2, &h, Direction::Normalize, 0x801);
    assert_eq!(norm2[0x11..0x15], [0xDB, 0x03, 0x00, 0x00]);
    assert_eq!(stream(&norm2, &h, Direction::Restore, 5), new2);
}

#[test]
fn aarch64_branches_adrp_pairs_and_pointers_get_the_bases_values() {
    // New: 64 bytes were inserted at 0x1000, so from 0x1040 on everything is 64
    // bytes lower in the base.
    let map = alloc::vec![
        MapRange {
            new: 0,
            old: 0,
            len: 0x1000
        },
        MapRange {
            new: 0x1040,
            old: 0x1000,
            len: 0x10000
        },
    ];
    let code = alloc::vec![
        CodeRange {
            kind: RangeKind::Code,
            offset: 0,
            len: 0x100,
            addr: 0x800,
        },
        CodeRange {
            kind: RangeKind::Pointers,
            offset: 0x100,
            len: 0x10,
            addr: 0x900,
        },
    ];
    let h = head(Arch::Aarch64, 0x110, code, map);
    let mut new = alloc::vec![0u8; 0x110];
    let put = |b: &mut Vec<u8>, at: usize, w: u32| b[at..at + 4].copy_from_slice(&w.to_le_bytes());
    // At 0x800: bl 0x5000 (0x1200 words ahead).
    put(&mut new, 0, 0x9400_0000 | 0x1200);
    // At 0x808: adrp x3, page of 0x5123 (5 pages from page 0x0); add x3, x3, #0x123.
    put(&mut new, 8, 0x9000_0003 | (5 & 3) << 29 | (5 >> 2) << 5);
    put(&mut new, 12, 0x9100_0063 | 0x123 << 10);
    // A pointer to 0x5123.
    new[0x100..0x108].copy_from_slice(&0x5123u64.to_le_bytes());
    let norm = stream(&new, &h, Direction::Normalize, 0x111);
    // bl: to 0x4fc0 from 0x800, 0x11f0 words.
    assert_eq!(norm[0..4], (0x9400_0000u32 | 0x11F0).to_le_bytes());
    // adrp/add: 0x50e3, page 5 from page 0x0 and offset 0xe3.
    assert_eq!(
        norm[8..12],
        (0x9000_0003u32 | (5 & 3) << 29 | (5 >> 2) << 5).to_le_bytes()
    );
    assert_eq!(norm[12..16], (0x9100_0063u32 | 0xE3 << 10).to_le_bytes());
    assert_eq!(norm[0x100..0x108], 0x50E3u64.to_le_bytes());
    // A value past the address space is not a pointer.
    let mut big = new.clone();
    big[0x108..0x110].copy_from_slice(&(1u64 << 40 | 0x5123).to_le_bytes());
    assert_eq!(
        stream(&big, &h, Direction::Normalize, 0x111)[0x108..],
        big[0x108..]
    );
    assert_eq!(stream(&norm, &h, Direction::Restore, 3), new);
}

#[test]
fn heads_round_trip_and_bad_ones_are_refused() {
    let code = alloc::vec![
        CodeRange {
            kind: RangeKind::Code,
            offset: 0,
            len: 10,
            addr: 0x1000
        },
        CodeRange {
            kind: RangeKind::Pointers,
            offset: 20,
            len: 5,
            addr: 0x2000
        },
    ];
    let map = alloc::vec![MapRange {
        new: 8,
        old: 16,
        len: 24
    }];
    let h = head(Arch::Aarch64, 30, code.clone(), map.clone());
    assert_eq!(ElfHead::decode(&h.encode()).unwrap(), h);
    let mut bad = Vec::new();
    // Overlapping, past the end, empty code ranges.
    let mut c = code.clone();
    c[1].offset = 8;
    bad.push(head(Arch::Aarch64, 30, c, map.clone()));
    let mut c = code.clone();
    c[1].len = 11;
    bad.push(head(Arch::Aarch64, 30, c, map.clone()));
    let mut c = code.clone();
    c[0].len = 0;
    bad.push(head(Arch::Aarch64, 30, c, map.clone()));
    // A map that is not a bijection.
    let mut m = map.clone();
    m.push(MapRange {
        new: 100,
        old: 10,
        len: 1,
    });
    bad.push(head(Arch::Aarch64, 30, code.clone(), m));
    for b in bad {
        assert!(ElfHead::decode(&b.encode()).is_err(), "{b:?}");
    }
    // An unknown architecture, and trailing bytes.
    let mut e = h.encode();
    let arch_at = h.patch.encode().len();
    e[arch_at] = 3;
    assert!(ElfHead::decode(&e).is_err());
    let mut e = h.encode();
    e.push(0);
    assert!(ElfHead::decode(&e).is_err());
    // Every truncation.
    let e = h.encode();
    for n in 0..e.len() {
        assert!(ElfHead::decode(&e[..n]).is_err(), "{n}");
    }
}
