//! The map of an ELF patch: a bijection of the address space, looked up a stretch at a
//! time.

use alloc::vec::Vec;

use super::{Arch, MapRange};
use crate::FormatError;

/// A bijection of the addresses modulo 2^bits: the given ranges onto theirs, the other
/// addresses of the new side onto the other addresses of the old side, in order.
#[derive(Debug, Clone)]
pub struct Map {
    pub(super) mask: u64,
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
