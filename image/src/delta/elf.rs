//! The build host's half of an ELF patch (`format::elfpatch`): where a new ELF file's
//! code is, which of its address ranges came from which of the base's (the plain
//! patch's matches), and the normalized file that is diffed instead of the new one.

use std::collections::BTreeMap;

use format::elfpatch::{Arch, CodeRange, Direction, MapRange, RangeKind, Rewriter};

/// Matches shorter than this do not go into the map: they cost more in the head than
/// the references they could fix.
const MATCH_MIN: u64 = 64;

/// What an ELF patch needs besides its diff.
pub(super) struct Normalized {
    pub arch: Arch,
    pub code: Vec<CodeRange>,
    pub map: Vec<MapRange>,
    /// The new file with its references in the base's addresses.
    pub bytes: Vec<u8>,
}

/// The parts of an ELF file's header this needs: 64-bit little-endian only.
struct Elf {
    arch: Arch,
    /// A relocatable object (a kernel module): addresses are file offsets.
    relocatable: bool,
    /// Loaded segments: (file offset, file size, address, executable).
    loads: Vec<(u64, u64, u64, bool)>,
    /// Executable sections of a relocatable object: (file offset, size).
    sections: Vec<(u64, u64)>,
    /// Where the file header and program headers end.
    headers_end: u64,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

impl Elf {
    fn parse(b: &[u8]) -> Option<Self> {
        if !b.starts_with(b"\x7fELF\x02\x01") {
            return None;
        }
        let arch = match u16_at(b, 18)? {
            62 => Arch::X86_64,
            183 => Arch::Aarch64,
            _ => return None,
        };
        let kind = u16_at(b, 16)?;
        let (phoff, phentsize, phnum) = (
            usize::try_from(u64_at(b, 32)?).ok()?,
            usize::from(u16_at(b, 54)?),
            usize::from(u16_at(b, 56)?),
        );
        let (shoff, shentsize, shnum) = (
            usize::try_from(u64_at(b, 40)?).ok()?,
            usize::from(u16_at(b, 58)?),
            usize::from(u16_at(b, 60)?),
        );
        let size = b.len() as u64;
        let mut loads = Vec::new();
        for i in 0..phnum {
            let at = phoff.checked_add(i.checked_mul(phentsize)?)?;
            if u32_at(b, at)? != 1 {
                continue;
            }
            let (flags, off, addr, filesz) = (
                u32_at(b, at + 4)?,
                u64_at(b, at + 8)?,
                u64_at(b, at + 16)?,
                u64_at(b, at + 32)?,
            );
            if off.checked_add(filesz)? <= size {
                loads.push((off, filesz, addr, flags & 1 != 0));
            }
        }
        let mut sections = Vec::new();
        if kind == 1 {
            for i in 0..shnum {
                let at = shoff.checked_add(i.checked_mul(shentsize)?)?;
                let (typ, flags, off, len) = (
                    u32_at(b, at + 4)?,
                    u64_at(b, at + 8)?,
                    u64_at(b, at + 24)?,
                    u64_at(b, at + 32)?,
                );
                if typ == 1 && flags & 4 != 0 && off.checked_add(len)? <= size {
                    sections.push((off, len));
                }
            }
        }
        Some(Self {
            arch,
            relocatable: kind == 1,
            loads,
            sections,
            headers_end: (phoff + phentsize * phnum).max(64) as u64,
        })
    }

    /// The address of file offset `off` if it is loaded, and how many bytes from there
    /// on are loaded with it (to the segment's end); else `None` and how many bytes
    /// from there are not loaded (to the next segment, or to the end).
    fn addr(&self, off: u64) -> (Option<u64>, u64) {
        if self.relocatable {
            return (Some(off), u64::MAX - off);
        }
        if let Some(&(o, len, a, _)) = self
            .loads
            .iter()
            .find(|&&(o, len, _, _)| o <= off && off < o + len)
        {
            return (Some(a.wrapping_add(off - o)), o + len - off);
        }
        let next = self
            .loads
            .iter()
            .map(|l| l.0)
            .filter(|&o| o > off)
            .min()
            .unwrap_or(u64::MAX);
        (None, next - off)
    }

    /// Where the references are (outside the headers), sorted and disjoint: the
    /// executable segments' code, the other loaded segments' pointer words (from an
    /// 8-byte aligned offset); a relocatable object's executable sections only (its
    /// pointers are left to relocations).
    fn code(&self) -> Vec<CodeRange> {
        let mut code: Vec<CodeRange> = if self.relocatable {
            self.sections
                .iter()
                .map(|&(offset, len)| CodeRange {
                    kind: RangeKind::Code,
                    offset,
                    len,
                    addr: offset,
                })
                .collect()
        } else {
            self.loads
                .iter()
                .map(|&(o, len, a, exec)| {
                    let start = o.max(self.headers_end).min(o + len);
                    let start = if exec {
                        start
                    } else {
                        start.next_multiple_of(8).min(o + len)
                    };
                    CodeRange {
                        kind: if exec {
                            RangeKind::Code
                        } else {
                            RangeKind::Pointers
                        },
                        offset: start,
                        len: o + len - start,
                        addr: a.wrapping_add(start - o),
                    }
                })
                .collect()
        };
        code.retain(|c| c.len > 0);
        code.sort_unstable_by_key(|c| c.offset);
        let mut end = 0;
        code.retain(|c| {
            let keep = c.offset >= end;
            if keep {
                end = c.offset + c.len;
            }
            keep
        });
        code
    }
}

/// The matches of a bidiff patch: (new offset, base offset, length) of each stretch
/// the patch makes by adding to base bytes.
fn matches(patch: &[u8]) -> Option<Vec<(u64, u64, u64)>> {
    fn varint(p: &[u8], at: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *p.get(*at)?;
            *at += 1;
            v |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut at = 8; // magic and version
    let (mut new, mut old) = (0u64, 0u64);
    let mut out = Vec::new();
    while at < patch.len() {
        let add = varint(patch, &mut at)?;
        out.push((new, old, add));
        at = at.checked_add(usize::try_from(add).ok()?)?;
        new += add;
        old += add;
        let copy = varint(patch, &mut at)?;
        at = at.checked_add(usize::try_from(copy).ok()?)?;
        new += copy;
        // Zigzag-encoded signed seek.
        let z = varint(patch, &mut at)?;
        let seek = (z >> 1).cast_signed() ^ -(z & 1).cast_signed();
        old = old.checked_add_signed(seek)?;
    }
    Some(out)
}

/// The map: the plain patch's long matches, in address units, disjoint on both sides
/// (longest first), sorted by new address, neighbours with the same shift merged.
fn map_of(arch: Arch, new: &Elf, old: &Elf, plain: &[u8]) -> Option<Vec<MapRange>> {
    let (align, space) = (arch.align(), 1u64 << arch.bits());
    let mut cands = Vec::new();
    for (mut n, mut o, mut left) in matches(plain)? {
        // Cut where a segment starts or ends on either side: each piece is loaded in
        // one segment on both sides, or not at all on one.
        while left > 0 {
            let ((a, on_new), (b, on_old)) = (new.addr(n), old.addr(o));
            let len = left.min(on_new).min(on_old);
            (n, o, left) = (n + len, o + len, left - len);
            let (Some(a), Some(b)) = (a, b) else {
                continue;
            };
            if len < MATCH_MIN || a.wrapping_sub(b) % align != 0 {
                continue;
            }
            let skip = (align - a % align) % align;
            let len = (len - skip) / align * align;
            let (a, b) = ((a + skip) % space, (b + skip) % space);
            if len == 0 || a + len > space || b + len > space {
                continue;
            }
            cands.push(MapRange {
                new: a,
                old: b,
                len,
            });
        }
    }
    cands.sort_unstable_by_key(|m| std::cmp::Reverse(m.len));
    let free = |taken: &BTreeMap<u64, u64>, s: u64, len: u64| {
        taken
            .range(..s + len)
            .next_back()
            .is_none_or(|(&ts, &tl)| ts + tl <= s)
    };
    let (mut on_new, mut on_old) = (BTreeMap::new(), BTreeMap::new());
    let mut map = Vec::new();
    for m in cands {
        if free(&on_new, m.new, m.len) && free(&on_old, m.old, m.len) {
            on_new.insert(m.new, m.len);
            on_old.insert(m.old, m.len);
            map.push(m);
        }
    }
    map.sort_unstable_by_key(|m| m.new);
    let mut merged: Vec<MapRange> = Vec::with_capacity(map.len());
    for m in map {
        match merged.last_mut() {
            Some(p) if p.new + p.len == m.new && p.old + p.len == m.old => p.len += m.len,
            _ => merged.push(m),
        }
    }
    Some(merged)
}

/// The normalized form of `new` against `old` for an ELF patch, given the plain bidiff
/// patch between them; `None` unless both are ELF files of the same supported
/// architecture with code. The device's restoring is run here on the result.
pub(super) fn normalize(old: &[u8], new: &[u8], plain: &[u8]) -> Option<Normalized> {
    let (o, n) = (Elf::parse(old)?, Elf::parse(new)?);
    if o.arch != n.arch {
        return None;
    }
    let arch = n.arch;
    let code = n.code();
    let map = map_of(arch, &n, &o, plain)?;
    if code.is_empty() || map.is_empty() {
        return None;
    }
    let mut bytes = new.to_vec();
    Rewriter::new(arch, &code, &map, Direction::Normalize)
        .ok()?
        .run(&mut bytes, 0, true);
    if bytes == new {
        return None;
    }
    let mut back = bytes.clone();
    Rewriter::new(arch, &code, &map, Direction::Restore)
        .ok()?
        .run(&mut back, 0, true);
    (back == new).then_some(Normalized {
        arch,
        code,
        map,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_patchs_matches_are_read_back() {
        let old: Vec<u8> = (0..4000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut new = old[..1000].to_vec();
        new.extend_from_slice(&[0xAA; 300]);
        new.extend_from_slice(&old[1000..]);
        let mut patch = Vec::new();
        bidiff::simple_diff(&old, &new, &mut patch).unwrap();
        let m = matches(&patch).unwrap();
        // Everything but the insertion is matched, and at the same place.
        let covered: u64 = m.iter().map(|x| x.2).sum();
        assert!(covered >= 3900, "{m:?}");
        assert!(
            m.iter()
                .any(|&(n, o, l)| n >= 1300 && o + 300 == n && l > 2000),
            "{m:?}"
        );
    }

    /// This machine's own programs: every one normalizes and restores exactly (the
    /// check `normalize` runs) against another, and against an edited copy of itself.
    #[test]
    fn real_elf_files_round_trip() {
        let dir = std::path::Path::new("/usr/bin");
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                std::fs::read(p).is_ok_and(|b| b.starts_with(b"\x7fELF") && b.len() < 400_000)
            })
            .collect();
        files.sort();
        files.truncate(6);
        assert!(files.len() >= 2, "ELF programs in /usr/bin");
        for pair in files.windows(2) {
            let (old, new) = (
                std::fs::read(&pair[0]).unwrap(),
                std::fs::read(&pair[1]).unwrap(),
            );
            // An edit early in the code: everything after it moves by 16 bytes.
            let mut edited = new.clone();
            let code = Elf::parse(&new).unwrap().code();
            let first = code.iter().find(|c| c.kind == RangeKind::Code).unwrap();
            let at = usize::try_from(first.offset).unwrap() + 64;
            edited.splice(at..at, [0x90u8; 16]);
            for (o, n) in [(&old, &new), (&new, &edited)] {
                let mut plain = Vec::new();
                bidiff::simple_diff(o, n, &mut plain).unwrap();
                let norm = normalize(o, n, &plain).expect("an x86-64 ELF pair");
                assert_eq!(norm.bytes.len(), n.len());
            }
        }
    }
}
