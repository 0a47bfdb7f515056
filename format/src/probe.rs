//! Recognising the sysroot device without udev: the ext4 volume label, and GPT
//! partition GUIDs. Pure parsers over bytes read from a block device.

/// Offset of the ext4 superblock on the device.
pub const EXT4_SUPERBLOCK_OFFSET: u64 = 1024;
/// Bytes of the superblock these parsers need.
pub const EXT4_SUPERBLOCK_NEEDED: usize = 0x88;

/// The ext2/3/4 volume label from the superblock (`sb` starts at device offset 1024),
/// or `None` if this is not an ext filesystem or it has no label.
pub fn ext4_label(sb: &[u8]) -> Option<&[u8]> {
    let magic = sb.get(0x38..0x3a)?;
    if magic != [0x53, 0xef] {
        return None;
    }
    let name = sb.get(0x78..0x88)?;
    let len = name.iter().position(|&c| c == 0).unwrap_or(name.len());
    (len > 0).then(|| &name[..len])
}

/// Where a GPT's partition entries are, from its header (LBA 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GptHeader {
    /// First LBA of the entry array.
    pub entries_lba: u64,
    /// Number of entries.
    pub count: u32,
    /// Size of one entry in bytes (128 or a larger multiple of 8).
    pub entry_size: u32,
}

/// Parses the GPT header at LBA 1; `None` if it is not one (signature, sizes).
pub fn gpt_header(lba1: &[u8]) -> Option<GptHeader> {
    if lba1.get(..8)? != b"EFI PART" {
        return None;
    }
    let u32_at = |o: usize| {
        lba1.get(o..o + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    };
    let u64_at = |o: usize| {
        lba1.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let h = GptHeader {
        entries_lba: u64_at(72)?,
        count: u32_at(80)?,
        entry_size: u32_at(84)?,
    };
    (h.entry_size >= 128
        && h.entry_size.is_multiple_of(8)
        && h.entry_size <= 4096
        && h.count <= 1024
        && h.entries_lba >= 2)
        .then_some(h)
}

/// The unique partition GUID of one entry, as the 36-character lowercase text form
/// (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, first three groups little-endian, as
/// `blkid` shows PARTUUID). `None` for an unused entry.
pub fn gpt_entry_partuuid(entry: &[u8]) -> Option<[u8; 36]> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let type_guid = entry.get(..16)?;
    if type_guid.iter().all(|&b| b == 0) {
        return None;
    }
    let g = entry.get(16..32)?;
    let order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
    let mut out = [0u8; 36];
    let mut n = 0;
    for (i, &idx) in order.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[n] = b'-';
            n += 1;
        }
        let b = g[idx];
        out[n] = HEX[usize::from(b >> 4)];
        out[n + 1] = HEX[usize::from(b & 15)];
        n += 2;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext4_label_parsing() {
        let mut sb = [0u8; EXT4_SUPERBLOCK_NEEDED];
        assert_eq!(ext4_label(&sb), None, "no magic");
        sb[0x38] = 0x53;
        sb[0x39] = 0xef;
        assert_eq!(ext4_label(&sb), None, "no label");
        sb[0x78..0x78 + 10].copy_from_slice(b"berth-root");
        assert_eq!(ext4_label(&sb), Some(&b"berth-root"[..]));
        sb[0x78..0x88].copy_from_slice(b"sixteen-bytes-ok");
        assert_eq!(ext4_label(&sb), Some(&b"sixteen-bytes-ok"[..]));
        assert_eq!(ext4_label(&sb[..0x80]), None, "short read");
    }

    #[test]
    fn gpt_parsing() {
        let mut h = [0u8; 512];
        assert_eq!(gpt_header(&h), None);
        h[..8].copy_from_slice(b"EFI PART");
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        assert_eq!(
            gpt_header(&h),
            Some(GptHeader {
                entries_lba: 2,
                count: 128,
                entry_size: 128
            })
        );
        h[84..88].copy_from_slice(&100u32.to_le_bytes());
        assert_eq!(gpt_header(&h), None, "bad entry size");

        let mut e = [0u8; 128];
        assert_eq!(gpt_entry_partuuid(&e), None, "unused entry");
        e[0] = 1;
        // GUID 01020304-0506-0708-090a-0b0c0d0e0f10 in its on-disk (mixed-endian) form.
        e[16..32].copy_from_slice(&[4, 3, 2, 1, 6, 5, 8, 7, 9, 10, 11, 12, 13, 14, 15, 16]);
        assert_eq!(
            &gpt_entry_partuuid(&e).unwrap(),
            b"01020304-0506-0708-090a-0b0c0d0e0f10"
        );
    }
}
