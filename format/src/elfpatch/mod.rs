//! Executable-aware patches ([`crate::ops::ELF_PATCH`]): the references in an ELF
//! file's code, rewritten into the base file's addresses before the diff.
//!
//! When a function grows, everything after it moves, and every relative call, jump or
//! RIP-relative operand that crosses the change point gets a new value, as does every
//! pointer in the data (vtables, relocation addends, the GOT) to what moved: a
//! bsdiff-style patch pays a few bytes for each. The build host knows which address
//! ranges of the new file came from which of the base (the first diff's matches), and
//! describes that as a [`Map`]: a bijection of the architecture's address space
//! (addresses modulo 2^[`Arch::bits`]) that sends those ranges of the new file onto
//! theirs in the base, and the rest onto the rest in order. Each reference site of the
//! new file's code then holds `map(target) - map(site)` instead of `target - site`, and
//! each pointer word of its data `map(pointer)`: where things moved together, the value
//! the base holds. The device makes that *normalized* file from the patch, and turns
//! each site and pointer back with the inverse map.
//!
//! Sites are found by a scan that reads only what the rewriting keeps (opcodes, the
//! `ModRM` byte, whether an x86 operand's top byte is `0x00` or `0xFF`, which the
//! rewriting preserves by staying within 25 signed bits, and whether a pointer word is
//! below 2^bits, which a bijection of that space preserves), so the device finds in the
//! normalized file the very sites the build host rewrote in the new one, and the
//! round trip is exact for any bytes and any valid map. The scan is a heuristic (no
//! disassembly): a byte that only looks like an opcode is rewritten too, which costs
//! patch bytes, never correctness. What the device makes is checked by its sha256 like
//! every object. See docs/FORMAT.md, "ELF patches".

use alloc::vec::Vec;

use crate::FormatError;
use crate::ops::PatchHead;
use crate::wire::{self, Reader};

mod map;
mod rewrite;
#[cfg(test)]
mod tests;

pub use map::{Map, Piece};
pub use rewrite::{Direction, Rewriter};

/// Most code and pointer ranges in one head.
pub const RANGES_MAX: usize = 1 << 12;
/// Most map ranges in one head.
pub const MAP_RANGES_MAX: usize = 1 << 16;

/// The instruction set whose references are rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// x86-64: `call`/`jmp rel32` (`E8`, `E9`), `jcc rel32` (`0F 80`–`0F 8F`) and
    /// common RIP-relative operands (an opcode of [`X86_RIP_OPCODES`] with `ModRM`
    /// `mod=00 rm=101`), whose 32-bit displacement is within ±16 MiB.
    X86_64 = 1,
    /// `AArch64`: `b` and `bl` (imm26, ±128 MiB), and `adrp` (within ±128 MiB) with the
    /// `add` or integer `ldr`/`str` (unsigned offset) right after it that completes its
    /// address, as one 28-bit displacement.
    Aarch64 = 2,
}

impl Arch {
    /// The map's address space: byte addresses modulo 2^bits (the reach of the
    /// references rewritten; pointers at or past it are left alone).
    pub const fn bits(self) -> u32 {
        match self {
            Self::X86_64 => 25,
            Self::Aarch64 => 28,
        }
    }

    /// What the map's ranges are aligned to, on both sides and in length. A map of
    /// 8-byte aligned ranges keeps every address's remainder modulo 8: `AArch64`
    /// instructions stay 4-byte words, and a load's offset stays a multiple of its size.
    pub const fn align(self) -> u64 {
        match self {
            Self::X86_64 => 1,
            Self::Aarch64 => 8,
        }
    }

    fn from_code(v: u64) -> Result<Self, FormatError> {
        match v {
            1 => Ok(Self::X86_64),
            2 => Ok(Self::Aarch64),
            _ => Err(FormatError::Invalid {
                what: "ELF patch architecture",
                value: v,
            }),
        }
    }
}

/// One-byte opcodes whose `ModRM` operand, when RIP-relative, is rewritten on x86-64
/// (arithmetic, `test`, `xchg`, `mov`, `movsxd`, `lea`, the immediate groups, `inc`/`call`
/// group 5).
pub const X86_RIP_OPCODES: [u8; 27] = [
    0x01, 0x03, 0x09, 0x0B, 0x21, 0x23, 0x29, 0x2B, 0x31, 0x33, 0x39, 0x3B, 0x63, 0x80, 0x81, 0x83,
    0x85, 0x87, 0x88, 0x89, 0x8A, 0x8B, 0x8D, 0xC6, 0xC7, 0xF7, 0xFF,
];

/// What an x86-64 byte can start: [`RIP`] for an opcode of [`X86_RIP_OPCODES`], [`SITE`]
/// for any byte a site can begin with (those, `E8`/`E9` and the `0F` escape). A byte
/// with neither starts nothing, so the scan steps over runs of them at once.
const X86_START: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < X86_RIP_OPCODES.len() {
        t[X86_RIP_OPCODES[i] as usize] = RIP | SITE;
        i += 1;
    }
    t[0xE8] = SITE;
    t[0xE9] = SITE;
    t[0x0F] = SITE;
    t
};
const SITE: u8 = 1;
const RIP: u8 = 2;

/// What a [`CodeRange`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeKind {
    /// Instructions: the architecture's reference sites are rewritten.
    Code = 0,
    /// 8-byte little-endian words (from the range's start): each below 2^bits is an
    /// address, and is rewritten through the map.
    Pointers = 1,
}

/// A stretch of the new file whose references are rewritten: `len` bytes from file
/// offset `offset`, loaded at `addr` (the address of its first byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeRange {
    /// Code or pointers.
    pub kind: RangeKind,
    /// File offset of the first byte.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// The address the first byte is loaded at.
    pub addr: u64,
}

/// `len` addresses from `new` in the new file's address space that are `old` onwards
/// in the base's (modulo 2^[`Arch::bits`], aligned to [`Arch::align`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapRange {
    /// First address in the new file.
    pub new: u64,
    /// First address in the base.
    pub old: u64,
    /// Addresses in the range.
    pub len: u64,
}

/// The head of an [`crate::ops::ELF_PATCH`]: a [`PatchHead`] (whose windows make the
/// normalized file), the architecture, the code ranges and the map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfHead {
    /// The new file, its base and the windows of the patch.
    pub patch: PatchHead,
    /// Whose references.
    pub arch: Arch,
    /// Where the sites and pointers are, sorted by offset, not overlapping, within the
    /// file.
    pub code: Vec<CodeRange>,
    /// The map's ranges, sorted by `new`.
    pub map: Vec<MapRange>,
}

impl ElfHead {
    /// The encoding: the [`PatchHead`]'s, then the architecture (varint), the ranges'
    /// count and four varints each (`kind`, `offset`, `len`, `addr`), the map ranges'
    /// count and three varints each: `new` less the previous range's end, the change of
    /// `old - new` from the previous range's (zigzag: a moved stretch's ranges share
    /// it), and `len` (all modulo 2^64; the first range's predecessor ends at 0 with a
    /// shift of 0).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = self.patch.encode();
        wire::put_varint(&mut w, self.arch as u64);
        wire::put_varint(&mut w, self.code.len() as u64);
        for c in &self.code {
            for v in [c.kind as u64, c.offset, c.len, c.addr] {
                wire::put_varint(&mut w, v);
            }
        }
        wire::put_varint(&mut w, self.map.len() as u64);
        let (mut end, mut shift) = (0u64, 0u64);
        for m in &self.map {
            let s = m.old.wrapping_sub(m.new);
            let d = s.wrapping_sub(shift).cast_signed();
            for v in [
                m.new.wrapping_sub(end),
                ((d << 1) ^ (d >> 63)).cast_unsigned(),
                m.len,
            ] {
                wire::put_varint(&mut w, v);
            }
            (end, shift) = (m.new.wrapping_add(m.len), s);
        }
        w
    }

    /// Parses and checks an ELF patch head: the patch head's checks, code ranges sorted,
    /// disjoint and within the file, and a map that is a bijection ([`Map::new`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes, "ELF patch operation");
        let patch = PatchHead::read(&mut r, bytes.len())?;
        let arch = Arch::from_code(r.varint()?)?;
        let n = Reader::len(r.varint()?, RANGES_MAX, "ELF patch code range count")?;
        let mut code = Vec::with_capacity(n.min(bytes.len() / 4));
        let mut end = 0u64;
        for _ in 0..n {
            let kind = match r.varint()? {
                0 => RangeKind::Code,
                1 => RangeKind::Pointers,
                k => {
                    return Err(FormatError::Invalid {
                        what: "ELF patch range kind",
                        value: k,
                    });
                }
            };
            let c = CodeRange {
                kind,
                offset: r.varint()?,
                len: r.varint()?,
                addr: r.varint()?,
            };
            let stop = c.offset.checked_add(c.len).ok_or(FormatError::Overflow {
                what: "ELF patch code range",
            })?;
            if c.offset < end || stop > patch.header.size || c.len == 0 {
                return Err(FormatError::Invalid {
                    what: "ELF patch code range (sorted, disjoint, not empty, within the file)",
                    value: c.offset,
                });
            }
            end = stop;
            code.push(c);
        }
        let n = Reader::len(r.varint()?, MAP_RANGES_MAX, "ELF patch map range count")?;
        let mut map = Vec::with_capacity(n.min(bytes.len() / 3));
        let (mut end, mut shift) = (0u64, 0u64);
        for _ in 0..n {
            let new = end.wrapping_add(r.varint()?);
            let z = r.varint()?;
            shift = shift
                .wrapping_add(((z >> 1).cast_signed() ^ -(z & 1).cast_signed()).cast_unsigned());
            let len = r.varint()?;
            map.push(MapRange {
                new,
                old: new.wrapping_add(shift),
                len,
            });
            end = new.wrapping_add(len);
        }
        r.finish()?;
        Map::new(arch, &map)?;
        Ok(Self {
            patch,
            arch,
            code,
            map,
        })
    }
}
