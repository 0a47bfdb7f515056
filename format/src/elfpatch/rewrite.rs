//! Rewriting a file's reference sites as it streams by: the scan for sites, and each
//! architecture's turn of them through the map.

use core::cell::Cell;

use alloc::vec::Vec;

use super::{Arch, CodeRange, Map, MapRange, Piece, RIP, RangeKind, X86_START};
use crate::FormatError;

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
