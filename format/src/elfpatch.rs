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

use core::cell::Cell;

use alloc::vec::Vec;

use crate::FormatError;
use crate::ops::PatchHead;
use crate::wire::{self, Reader};

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

/// A bijection of the addresses modulo 2^bits: the given ranges onto theirs, the other
/// addresses of the new side onto the other addresses of the old side, in order.
#[derive(Debug, Clone)]
pub struct Map {
    mask: u64,
    /// By new start: (new, old, len), and the lengths of the ranges before.
    by_new: Vec<(MapRange, u64)>,
    /// By old start, the same.
    by_old: Vec<(MapRange, u64)>,
}

impl Map {
    /// The map of `ranges` in `arch`'s address space. Each range is not empty, aligned
    /// to [`Arch::align`] and within the space on both sides; ranges are sorted by
    /// `new` and disjoint on both sides. Anything else is refused: it would not be a
    /// bijection (or would not send `AArch64` words to words).
    pub fn new(arch: Arch, ranges: &[MapRange]) -> Result<Self, FormatError> {
        let space = 1u64 << arch.bits();
        let bad = |value| FormatError::Invalid {
            what: "ELF patch map range (sorted by new address, disjoint on both sides, aligned, within the address space)",
            value,
        };
        let align = arch.align();
        let mut end = 0u64;
        for m in ranges {
            if m.len == 0
                || (m.new | m.old | m.len) % align != 0
                || m.new < end
                || m.new.checked_add(m.len).is_none_or(|e| e > space)
                || m.old.checked_add(m.len).is_none_or(|e| e > space)
            {
                return Err(bad(m.new));
            }
            end = m.new + m.len;
        }
        let mut old: Vec<MapRange> = ranges.to_vec();
        old.sort_unstable_by_key(|m| m.old);
        if let Some(w) = old.windows(2).find(|w| w[0].old + w[0].len > w[1].old) {
            return Err(bad(w[1].old));
        }
        let prefix = |v: &[MapRange]| {
            let mut sum = 0u64;
            v.iter()
                .map(|m| {
                    let before = sum;
                    sum += m.len;
                    (*m, before)
                })
                .collect::<Vec<_>>()
        };
        Ok(Self {
            mask: space - 1,
            by_new: prefix(ranges),
            by_old: prefix(&old),
        })
    }

    /// Where `x` (new side) goes on the old side.
    pub fn forward(&self, x: u64) -> u64 {
        self.forward_piece(x).at(x & self.mask)
    }

    /// Where `y` (old side) comes from on the new side.
    pub fn inverse(&self, y: u64) -> u64 {
        self.inverse_piece(y).at(y & self.mask)
    }

    /// The stretch around `x` (new side, taken modulo the space) that [`Map::forward`]
    /// shifts by one amount.
    pub fn forward_piece(&self, x: u64) -> Piece {
        Self::piece(
            &self.by_new,
            &self.by_old,
            x & self.mask,
            self.mask,
            |m| m.new,
            |m| m.old,
        )
    }

    /// The stretch around `y` (old side) that [`Map::inverse`] shifts by one amount.
    pub fn inverse_piece(&self, y: u64) -> Piece {
        Self::piece(
            &self.by_old,
            &self.by_new,
            y & self.mask,
            self.mask,
            |m| m.old,
            |m| m.new,
        )
    }

    fn piece(
        from: &[(MapRange, u64)],
        to: &[(MapRange, u64)],
        x: u64,
        mask: u64,
        start: fn(&MapRange) -> u64,
        dest: fn(&MapRange) -> u64,
    ) -> Piece {
        // The ranges starting at or before x.
        let k = from.partition_point(|(m, _)| start(m) <= x);
        let (gap_lo, covered) = if let Some((m, before)) = k.checked_sub(1).map(|i| &from[i]) {
            if x < start(m) + m.len {
                return Piece {
                    lo: start(m),
                    hi: start(m) + m.len,
                    to: dest(m),
                };
            }
            (start(m) + m.len, before + m.len)
        } else {
            (0, 0)
        };
        // x is the rank-th address outside the ranges on its side: the rank-th outside
        // them on the other side, past every range that starts before it. Addresses
        // outside the ranges on the other side are counted by `dest - before`.
        let rank = x - covered;
        let c = to.partition_point(|(m, before)| dest(m) - before <= rank);
        let (y, first_rank) = c.checked_sub(1).map_or((rank, 0), |i| {
            let (m, before) = &to[i];
            (rank + before + m.len, dest(m) - before)
        });
        // One shift while x stays in its gap and its image in the other side's.
        let gap_hi = from.get(k).map_or(mask + 1, |(m, _)| start(m));
        let run_hi = to
            .get(c)
            .map_or(u64::MAX, |(m, before)| x + (dest(m) - before - rank));
        let lo = gap_lo.max(x - (rank - first_rank));
        Piece {
            lo,
            hi: gap_hi.min(run_hi),
            to: y - (x - lo),
        }
    }
}

/// A stretch of addresses `lo .. hi` that a [`Map`] shifts by one amount: `lo` goes to
/// `to`, `lo + 1` to `to + 1`, and so on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Piece {
    /// The first address of the stretch.
    pub lo: u64,
    /// The address after its last.
    pub hi: u64,
    /// Where `lo` goes.
    pub to: u64,
}

impl Piece {
    /// Where `x`, within the stretch, goes.
    #[must_use]
    pub const fn at(&self, x: u64) -> u64 {
        self.to + (x - self.lo)
    }

    /// Whether `x` is within the stretch.
    #[must_use]
    pub const fn holds(&self, x: u64) -> bool {
        self.lo <= x && x < self.hi
    }
}

/// Which way [`Rewriter::run`] turns the sites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// New file to normalized (the build host).
    Normalize,
    /// Normalized to new file (the device).
    Restore,
}

/// Rewrites a file's sites as it streams by, a buffer at a time.
#[derive(Debug, Clone)]
pub struct Rewriter {
    arch: Arch,
    code: Vec<CodeRange>,
    map: Map,
    dir: Direction,
    /// The next code range, and the next file offset to scan in it.
    range: usize,
    pos: u64,
    /// File offsets of bytes that refused x86-64 candidates read (see `x86`).
    guarded: Vec<u64>,
    /// The map's last stretches looked up, each way: sites come in address order, and
    /// most pointer words repeat (zeros), so most lookups fall in the last one.
    fwd: Cell<Piece>,
    inv: Cell<Piece>,
}

impl Rewriter {
    /// A rewriter of the sites in `code` (sorted and disjoint, as
    /// [`ElfHead::decode`] checks) through the map of `map`.
    pub fn new(
        arch: Arch,
        code: &[CodeRange],
        map: &[MapRange],
        dir: Direction,
    ) -> Result<Self, FormatError> {
        Ok(Self {
            arch,
            map: Map::new(arch, map)?,
            pos: code.first().map_or(0, |c| c.offset),
            code: code.to_vec(),
            dir,
            range: 0,
            guarded: Vec::new(),
            fwd: Cell::default(),
            inv: Cell::default(),
        })
    }

    /// [`Map::forward`], through the last stretch looked up.
    fn forward(&self, x: u64) -> u64 {
        let x = x & self.map.mask;
        let mut p = self.fwd.get();
        if !p.holds(x) {
            p = self.map.forward_piece(x);
            self.fwd.set(p);
        }
        p.at(x)
    }

    /// [`Map::inverse`], through the last stretch looked up.
    fn inverse(&self, y: u64) -> u64 {
        let y = y & self.map.mask;
        let mut p = self.inv.get();
        if !p.holds(y) {
            p = self.map.inverse_piece(y);
            self.inv.set(p);
        }
        p.at(y)
    }

    /// Rewrites the sites in `buf`, which holds the file's bytes from offset `start`
    /// (`last`: up to the file's end). Returns the offset before which every byte is
    /// final; the caller keeps the bytes from there and calls again with more after
    /// them. Sites are found in file order, each once, so every call must start where
    /// the previous one's final bytes ended.
    pub fn run(&mut self, buf: &mut [u8], start: u64, last: bool) -> u64 {
        let end = start + buf.len() as u64;
        while let Some(c) = self.code.get(self.range).copied() {
            let stop = c.offset + c.len;
            self.pos = self.pos.max(c.offset);
            if self.pos < start {
                // Bytes the caller already took as final: only before the first call.
                self.pos = start;
            }
            let x86 = (c.kind, self.arch) == (RangeKind::Code, Arch::X86_64);
            let width = if x86 { 6 } else { 8 };
            loop {
                if x86 && self.pos < stop.min(end) {
                    // Bytes that start no site are final as they are: step over them.
                    // Both within the buffer: start <= pos < min(stop, end) <= end.
                    let at = usize::try_from(self.pos - start).unwrap_or(usize::MAX);
                    let upto = usize::try_from(stop.min(end) - start).unwrap_or(usize::MAX);
                    let run = buf[at..upto]
                        .iter()
                        .position(|&b| X86_START[usize::from(b)] != 0)
                        .unwrap_or(upto - at);
                    self.pos += run as u64;
                }
                // Bytes the decision at pos may read: 6 on x86-64 (opcode, ModRM,
                // displacement), one word on AArch64, one pointer word; fewer at the
                // range's end.
                let need = (self.pos + width).min(stop);
                if self.pos >= stop {
                    break;
                }
                if need > end && !last {
                    return self.pos.min(end);
                }
                if need > end {
                    // The file ended inside the range (a lying head): nothing more.
                    self.range = self.code.len();
                    return end;
                }
                // Within the buffer (pos < end), and at most 8 of what is left.
                let at = usize::try_from(self.pos - start).unwrap_or(usize::MAX);
                let left = usize::try_from((stop - self.pos).min(8)).unwrap_or(8);
                let addr = c.addr.wrapping_add(self.pos - c.offset);
                self.pos += match (c.kind, self.arch) {
                    (RangeKind::Pointers, _) => {
                        if left >= 8 {
                            self.pointer(&mut buf[at..at + 8]);
                        }
                        8
                    }
                    (RangeKind::Code, Arch::X86_64) => {
                        self.x86(&mut buf[at..at + left.min(6)], addr, self.pos)
                    }
                    (RangeKind::Code, Arch::Aarch64) => {
                        if left >= 4 {
                            self.a64(&mut buf[at..at + left.min(8)], addr)
                        } else {
                            4
                        }
                    }
                };
            }
            self.range += 1;
        }
        end
    }

    /// One position of x86-64 code (`b` holds up to 6 bytes from it, fewer only at the
    /// range's end; `addr` its address): rewrites a site starting here and returns how
    /// far to move on.
    ///
    /// A candidate is a site when its displacement's top byte is `0x00` or `0xFF` (which
    /// the rewriting keeps so) and its displacement holds no byte that an earlier
    /// candidate's refusal read (`guarded`): rewriting that byte could turn the
    /// earlier refusal into an acceptance when the device scans the normalized file.
    fn x86(&mut self, b: &mut [u8], addr: u64, pos: u64) -> u64 {
        let op = match b {
            [0xE8 | 0xE9, ..] => 1,
            [0x0F, 0x80..=0x8F, ..] => 2,
            [o, m, ..] if X86_START[usize::from(*o)] & RIP != 0 && *m & 0xC7 == 0x05 => 2,
            _ => return 1,
        };
        let Some(d) = b.get_mut(op..op + 4) else {
            return 1;
        };
        let first = pos + op as u64;
        self.guarded.retain(|&g| g >= pos);
        if self
            .guarded
            .iter()
            .any(|&g| (first..first + 3).contains(&g))
        {
            return 1;
        }
        if d[3] != 0 && d[3] != 0xFF {
            self.guarded.push(first + 3);
            return 1;
        }
        let v = i32::from_le_bytes([d[0], d[1], d[2], d[3]]);
        // The displacement counts from the operand's end (for an instruction with an
        // immediate after it, a few bytes early: the same on both sides).
        let op = op as u64;
        let site = addr.wrapping_add(op + 4);
        let w = self.turn(site, i64::from(v).cast_unsigned());
        d.copy_from_slice(&low32(sign_extend(w, 25).cast_unsigned()).to_le_bytes());
        op + 4
    }

    /// One `AArch64` word at `addr` (`b` holds it and the next, if the range has it):
    /// rewrites `b` and `bl` (whose immediate counts words; the map sends words to
    /// words, so the result does too), or an `adrp` pair. Returns how far to move on.
    fn a64(&self, b: &mut [u8], addr: u64) -> u64 {
        let word =
            |b: &[u8], at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let w0 = word(b, 0);
        if w0 & 0x7C00_0000 == 0x1400_0000 {
            let imm = u64::from(w0 & 0x03FF_FFFF) << 2;
            let t = low32(self.turn(addr & !3, imm) >> 2) & 0x03FF_FFFF;
            b[..4].copy_from_slice(&((w0 & 0xFC00_0000) | t).to_le_bytes());
            return 4;
        }
        if w0 & 0x9F00_0000 != 0x9000_0000 || b.len() < 8 {
            return 4;
        }
        // adrp Xd: its page displacement (immhi:immlo, 21 bits of pages); within 28
        // signed bits of bytes only (preserved: the rewritten value is made so).
        let pages = u64::from(((w0 >> 5) & 0x7_FFFF) << 2 | (w0 >> 29) & 3);
        let pages = sign_extend(pages, 21);
        if pages >> 15 != 0 && pages >> 15 != -1 {
            return 4;
        }
        let w1 = word(b, 4);
        let rd = w0 & 0x1F;
        if (w1 >> 5) & 0x1F != rd {
            return 4;
        }
        // The low 12 bits from the next instruction: `add Xd, Xd, #imm` (no shift), or
        // an integer load or store with an unsigned offset scaled by its size.
        let scale = if w1 & 0xFFC0_0000 == 0x9100_0000 {
            0
        } else if w1 & 0x3F00_0000 == 0x3900_0000 {
            w1 >> 30
        } else {
            return 4;
        };
        // Only offsets below a page: then the pair is one 28-bit displacement, and the
        // rewritten offset is one too.
        let lo = u64::from((w1 >> 10) & 0xFFF) << scale;
        if lo > 0xFFF {
            return 4;
        }
        let v = (pages.cast_unsigned() << 12).wrapping_add(lo);
        let w = self.turn_page(addr & !3, v);
        let (pages, lo) = (sign_extend(w, 28) >> 12, (w & 0xFFF) >> scale);
        let pages = low32(pages.cast_unsigned()) & 0x1F_FFFF;
        let w0 = (w0 & 0x9F00_001F) | (pages & 3) << 29 | (pages >> 2) << 5;
        let w1 = (w1 & 0xFFC0_03FF) | low32(lo) << 10;
        b[..4].copy_from_slice(&w0.to_le_bytes());
        b[4..8].copy_from_slice(&w1.to_le_bytes());
        8
    }

    /// [`Rewriter::turn`] for an `adrp` pair at `site`: its displacement counts from
    /// the site's page, and the rewritten one from the mapped site's page (so that code
    /// that moved as a whole, by any multiple of 8, gets the base's value back).
    fn turn_page(&self, site: u64, v: u64) -> u64 {
        let mask = (1u64 << self.arch.bits()) - 1;
        let page = site & !0xFFF;
        let mapped = self.forward(site) & !0xFFF;
        match self.dir {
            Direction::Normalize => {
                let target = page.wrapping_add(v);
                self.forward(target).wrapping_sub(mapped) & mask
            }
            Direction::Restore => {
                let target = self.inverse(v.wrapping_add(mapped));
                target.wrapping_sub(page) & mask
            }
        }
    }

    /// One pointer word: an address below 2^bits goes through the map (which keeps it
    /// below), anything else stays.
    fn pointer(&self, b: &mut [u8]) {
        let mut w = [0u8; 8];
        w.copy_from_slice(b);
        let v = u64::from_le_bytes(w);
        if v >> self.arch.bits() != 0 {
            return;
        }
        let turned = match self.dir {
            Direction::Normalize => self.forward(v),
            Direction::Restore => self.inverse(v),
        };
        b.copy_from_slice(&turned.to_le_bytes());
    }

    /// The rewritten value of a reference at `site` holding `v` (both in address units,
    /// modulo 2^bits).
    fn turn(&self, site: u64, v: u64) -> u64 {
        let mask = (1u64 << self.arch.bits()) - 1;
        match self.dir {
            Direction::Normalize => {
                let target = site.wrapping_add(v);
                self.map.forward(target).wrapping_sub(self.forward(site)) & mask
            }
            Direction::Restore => {
                let target = self.inverse(v.wrapping_add(self.forward(site)));
                target.wrapping_sub(site) & mask
            }
        }
    }
}

/// `v`'s low `bits` bits as a signed number.
fn sign_extend(v: u64, bits: u32) -> i64 {
    let shift = 64 - bits;
    (v << shift).cast_signed() >> shift
}

/// `v`'s low 32 bits: the bit fields here are masked to their width, and a displacement
/// is stored as the low 32 bits of its sign extension.
#[allow(clippy::cast_possible_truncation)] // keeping the low bits is the point
const fn low32(v: u64) -> u32 {
    v as u32
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test data: random bytes and small sizes
mod tests {
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
        let put =
            |b: &mut Vec<u8>, at: usize, w: u32| b[at..at + 4].copy_from_slice(&w.to_le_bytes());
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
}
