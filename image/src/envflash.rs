//! U-Boot's environment for QEMU's `virt` flash, so that a U-Boot board under QEMU
//! boots at once: Debian's `qemu_arm64` has `bootdelay=2` built in and reads its
//! environment from the second flash bank, where `saveenv` fails under QEMU 7.2.
//!
//! The image is U-Boot's own built-in default environment (found in `u-boot.bin`) with
//! `bootdelay=0`, encoded as a valid environment block ([`format::uboot_env`]) at offset
//! 0 of a flash bank, the rest erased (0xff). U-Boot loads it instead of its default.
//! `berth-image disk` writes it beside a u-boot board's image (`DISK.vars`), and the
//! U-Boot QEMU test uses it for its own disks.

use anyhow::{Context, Result, bail};
use format::uboot_env;

/// `CONFIG_ENV_SIZE` of Debian's `qemu_arm64`: the environment block's size, which
/// U-Boot checks the CRC over. A U-Boot built with another size ignores the image.
pub const ENV_SIZE: usize = 0x4_0000;

/// The size of one flash bank of QEMU's `virt` machine (`-drive if=pflash,unit=1`).
pub const FLASH_SIZE: usize = 64 << 20;

/// The first variable of the built-in default environment of Debian's `qemu_arm64`
/// (no `bootargs`, so `bootcmd` comes first), which is how it is found in the binary.
const FIRST_VAR: &[u8] = b"bootcmd=run distro_bootcmd\0";

/// The flash bank's bytes, from the bytes of `u-boot.bin`.
pub fn env_flash(u_boot: &[u8]) -> Result<Vec<u8>> {
    let start = u_boot
        .windows(FIRST_VAR.len())
        .position(|w| w == FIRST_VAR)
        .context("no built-in default environment (bootcmd=run distro_bootcmd) in U-Boot")?;
    let len = u_boot[start..]
        .windows(2)
        .position(|w| w == b"\0\0")
        .context("the built-in default environment does not end")?;
    let mut vars = Vec::new();
    for kv in u_boot[start..start + len].split(|&b| b == 0) {
        let eq = kv
            .iter()
            .position(|&b| b == b'=')
            .context("the built-in default environment has a variable without '='")?;
        let (key, value) = (&kv[..eq], &kv[eq + 1..]);
        vars.push((
            key,
            if key == b"bootdelay" {
                &b"0"[..]
            } else {
                value
            },
        ));
    }
    if !vars.iter().any(|(k, _)| *k == b"bootdelay") {
        bail!("the built-in default environment has no bootdelay");
    }
    vars.sort_unstable();
    let mut flash = uboot_env::encode(&vars, ENV_SIZE).context("encode U-Boot's environment")?;
    flash.resize(FLASH_SIZE, 0xff);
    Ok(flash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_environment_gets_bootdelay_0() {
        let mut bin = b"\x7fcode".to_vec();
        bin.extend_from_slice(b"bootcmd=run distro_bootcmd\0bootdelay=2\0arch=arm\0\0tail");
        let flash = env_flash(&bin).unwrap();
        assert_eq!(flash.len(), FLASH_SIZE);
        assert!(flash[ENV_SIZE..].iter().all(|&b| b == 0xff));
        let vars = uboot_env::decode(&flash[..ENV_SIZE]).unwrap();
        assert_eq!(
            vars,
            [
                (&b"arch"[..], &b"arm"[..]),
                (b"bootcmd", b"run distro_bootcmd"),
                (b"bootdelay", b"0"),
            ]
        );
        assert!(env_flash(b"no environment").is_err());
        assert!(env_flash(b"bootcmd=run distro_bootcmd\0arch=arm\0\0").is_err());
    }
}
