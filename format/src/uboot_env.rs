//! U-Boot's binary environment block: what `env export -c -s SIZE`, `env import -c` and
//! `mkenvimage -s SIZE -p 0` read and write.
//!
//! ```text
//! offset  size      field
//! 0       4         CRC-32 (IEEE 802.3, as zlib) of bytes 4..SIZE, u32 little-endian
//! 4       SIZE-4    "key=value\0" for each variable, keys in ascending byte order,
//!                   then one more "\0", then zero bytes up to SIZE
//! ```
//!
//! This is the layout of a U-Boot built without `CONFIG_ENV_REDUNDANT` (no flags byte
//! after the CRC), such as Debian's `u-boot-qemu` and `u-boot-rpi`. U-Boot sorts the
//! variables by key when it exports them and pads with zeros, so the encoding here is
//! byte for byte what U-Boot 2023.01 writes for the same variables (checked against a
//! copy it wrote, and against `mkenvimage`).
//!
//! The decoder is strict: keys sorted and unique, no `=` in a key, zero padding. It
//! accepts every block U-Boot's `env export -c` writes and nothing else, so one set of
//! variables has one encoding.

use alloc::vec::Vec;

use crate::FormatError;

/// Bytes before the variables: the CRC-32.
pub const HEADER_LEN: usize = 4;

/// CRC-32 as zlib, Ethernet and U-Boot compute it (reflected polynomial 0xEDB88320,
/// initial value and final XOR all ones).
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        // The table index is the low byte of crc ^ byte, so always in 0..256.
        crc = TABLE[((crc ^ u32::from(byte)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// The byte-at-a-time table of [`crc32`], built at compile time.
const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        #[allow(clippy::cast_possible_truncation)] // i < 256
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// One variable: its key and value bytes.
pub type Var<'a> = (&'a [u8], &'a [u8]);

/// Encodes `vars` as an environment block of exactly `size` bytes. `vars` must be sorted
/// by key and unique, keys non-empty without `=` or NUL, values without NUL, and the
/// whole must fit (with its final NUL) in `size - 4` bytes.
pub fn encode(vars: &[Var<'_>], size: usize) -> Result<Vec<u8>, FormatError> {
    let what = "U-Boot environment";
    if vars.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(FormatError::NotSorted { what });
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&[0; HEADER_LEN]);
    for (key, value) in vars {
        check_key(key)?;
        if value.contains(&0) {
            return Err(FormatError::BadText {
                what: "U-Boot environment value",
                reason: "contains NUL",
            });
        }
        out.extend_from_slice(key);
        out.push(b'=');
        out.extend_from_slice(value);
        out.push(0);
    }
    // The empty string ends the list.
    out.push(0);
    if out.len() > size {
        return Err(FormatError::TooLarge {
            what,
            len: out.len() as u64,
            limit: size as u64,
        });
    }
    out.resize(size, 0);
    let sum = crc32(&out[HEADER_LEN..]);
    out[..HEADER_LEN].copy_from_slice(&sum.to_le_bytes());
    Ok(out)
}

/// Decodes an environment block (its whole length is the environment's size): checks
/// the CRC, then returns the variables in their stored (ascending) order.
pub fn decode(bytes: &[u8]) -> Result<Vec<Var<'_>>, FormatError> {
    let what = "U-Boot environment";
    if bytes.len() <= HEADER_LEN {
        return Err(FormatError::Truncated { what });
    }
    let (sum, data) = bytes.split_at(HEADER_LEN);
    if sum != crc32(data).to_le_bytes() {
        return Err(FormatError::Invalid {
            what: "U-Boot environment checksum",
            value: 0,
        });
    }
    let mut vars: Vec<Var<'_>> = Vec::new();
    let mut rest = data;
    loop {
        let Some(end) = rest.iter().position(|&b| b == 0) else {
            return Err(FormatError::Truncated { what });
        };
        let (entry, after) = (&rest[..end], &rest[end + 1..]);
        if entry.is_empty() {
            // The end of the list: only zero padding may follow.
            if after.iter().any(|&b| b != 0) {
                return Err(FormatError::Invalid {
                    what: "U-Boot environment padding",
                    value: 0,
                });
            }
            return Ok(vars);
        }
        let eq = entry
            .iter()
            .position(|&b| b == b'=')
            .ok_or(FormatError::BadText {
                what: "U-Boot environment variable",
                reason: "has no '='",
            })?;
        let (key, value) = (&entry[..eq], &entry[eq + 1..]);
        check_key(key)?;
        if vars.last().is_some_and(|(last, _)| *last >= key) {
            return Err(FormatError::NotSorted { what });
        }
        vars.push((key, value));
        rest = after;
    }
}

fn check_key(key: &[u8]) -> Result<(), FormatError> {
    let bad = |reason| FormatError::BadText {
        what: "U-Boot environment key",
        reason,
    };
    if key.is_empty() {
        return Err(bad("is empty"));
    }
    if key.contains(&b'=') || key.contains(&0) {
        return Err(bad("contains '=' or NUL"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        // The standard check value of CRC-32 (IEEE), as zlib computes it.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    /// The bytes U-Boot 2023.01 (Debian's `qemu_arm64`) wrote with
    /// `env export -c -s 0x1000 ADDR berth_default berth_gen berth_tries` after
    /// `setenv berth_gen 5; setenv berth_default a; setenv berth_tries 2`, read back from
    /// the FAT file it `fatwrite`-d. `mkenvimage -s 4096 -p 0` gives the same bytes.
    const UBOOT_WROTE: &[u8] = include_bytes!("../tests/data/loader/uboot-export-c.bin");

    #[test]
    fn encodes_as_uboot_exports() {
        let vars: [(&[u8], &[u8]); 3] = [
            (b"berth_default", b"a"),
            (b"berth_gen", b"5"),
            (b"berth_tries", b"2"),
        ];
        assert_eq!(encode(&vars, 4096).unwrap(), UBOOT_WROTE);
        assert_eq!(decode(UBOOT_WROTE).unwrap(), vars);
    }

    #[test]
    fn round_trips() {
        let cases: &[&[(&[u8], &[u8])]] = &[
            &[],
            &[(b"a", b"")],
            &[(b"a", b"1"), (b"b", b"x y=z")],
            &[(b"bootcmd", b"run distro_bootcmd"), (b"bootdelay", b"0")],
        ];
        for vars in cases {
            for size in [8, 64, 4096] {
                let Ok(b) = encode(vars, size) else {
                    continue; // too large for this size; checked below
                };
                assert_eq!(b.len(), size);
                assert_eq!(&decode(&b).unwrap(), vars, "{vars:?} in {size}");
            }
        }
        assert!(encode(&[(b"bootcmd", b"run distro_bootcmd")], 8).is_err());
    }

    #[test]
    fn refuses() {
        let with_crc = |mut b: Vec<u8>| {
            let sum = crc32(&b[HEADER_LEN..]);
            b[..HEADER_LEN].copy_from_slice(&sum.to_le_bytes());
            b
        };
        let block = |data: &[u8]| {
            let mut b = alloc::vec![0u8; 64];
            b[HEADER_LEN..HEADER_LEN + data.len()].copy_from_slice(data);
            with_crc(b)
        };
        let mut flipped = block(b"a=1\0\0");
        flipped[5] ^= 1;
        let cases: &[(&str, Vec<u8>)] = &[
            ("zeroed", alloc::vec![0u8; 64]),
            ("erased flash", alloc::vec![0xffu8; 64]),
            ("bit flip", flipped),
            ("too short", alloc::vec![0u8; 4]),
            ("unsorted", block(b"b=1\0a=1\0\0")),
            ("duplicate", block(b"a=1\0a=2\0\0")),
            ("no equals", block(b"a\0\0")),
            ("empty key", block(b"=1\0\0")),
            ("junk after the end", block(b"a=1\0\0x")),
            ("no end", with_crc(alloc::vec![b'a'; 64])),
        ];
        for (name, bytes) in cases {
            assert!(decode(bytes).is_err(), "{name}: {:?}", decode(bytes));
        }
        let refused: &[&[(&[u8], &[u8])]] = &[
            &[(b"b", b"1"), (b"a", b"1")],
            &[(b"a", b"1"), (b"a", b"1")],
            &[(b"a=b", b"1")],
            &[(b"", b"1")],
            &[(b"a", b"1\0")],
        ];
        for vars in refused {
            assert!(encode(vars, 64).is_err(), "{vars:?}");
        }
    }
}
