//! Loader-state parser (the U-Boot environment copies on the FAT boot partition). Panics
//! are bugs: berth reads these bytes, which U-Boot, a power cut or anyone with the
//! partition may have written.
#![no_main]

use format::loader::{LoaderState, STATE_LEN};
use format::uboot_env;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // As given, and with the CRC made right, so the fuzzer gets past the checksum.
    let mut fixed = vec![0u8; STATE_LEN];
    let n = data.len().min(STATE_LEN - 4);
    fixed[4..4 + n].copy_from_slice(&data[..n]);
    let sum = uboot_env::crc32(&fixed[4..]);
    fixed[..4].copy_from_slice(&sum.to_le_bytes());
    for bytes in [data, &fixed[..]] {
        if let Ok(s) = LoaderState::decode(bytes) {
            // Canonical: whatever decodes re-encodes to the same bytes.
            assert_eq!(s.encode().as_deref(), Ok(bytes));
        }
        if let Ok(vars) = uboot_env::decode(bytes) {
            assert_eq!(uboot_env::encode(&vars, bytes.len()).as_deref(), Ok(bytes));
        }
    }
});
