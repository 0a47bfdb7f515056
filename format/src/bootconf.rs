//! `berth/boot/loader.conf`: how a device's boot loader finds its kernels, written by
//! `berth-image disk` for a board with a boot partition and read by `berth` when an
//! update, a mark-good, a rollback or a gc changes what the loader boots
//! (`docs/FORMAT.md`, "Loader configuration").
//!
//! ```text
//! loader systemd-boot                       systemd-boot | u-boot
//! partuuid 6f1c…-…                          the boot partition's GPT PARTUUID
//! cmdline console=ttyS0 panic=-1            the board's kernel command line
//! root PARTUUID=0123…                       what berth.root= names
//! devicetree broadcom/bcm2711-rpi-4-b.dtb   optional: the device tree, in a set's dtb/
//! ```
//!
//! Lines are `key value`, each key once, in any order; unknown keys are errors, so a
//! newer file is never half understood.

use alloc::format;
use alloc::string::{String, ToString};
use core::fmt::Write as _;

use crate::FormatError;

/// Where the file lives, relative to the sysroot.
pub const PATH: &str = "berth/boot/loader.conf";
/// The keys, in the order of the parsed fields.
const KEYS: [&str; 5] = ["loader", "partuuid", "cmdline", "root", "devicetree"];
/// Longest file read.
pub const MAX: usize = 4096;

/// Which loader reads the boot partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loader {
    /// systemd-boot on an ESP: Boot Loader Specification entries, counted natively.
    SystemdBoot,
    /// U-Boot with Berth's `boot.scr` and two state copies.
    UBoot,
}

impl Loader {
    /// Its name in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SystemdBoot => "systemd-boot",
            Self::UBoot => "u-boot",
        }
    }
}

/// The parsed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootConfig {
    /// The loader.
    pub loader: Loader,
    /// The boot partition's PARTUUID (lowercase text form).
    pub partuuid: String,
    /// The board's kernel command line.
    pub cmdline: String,
    /// The sysroot, as `berth.root=` names it (`PARTUUID=…`).
    pub root: String,
    /// The device tree to pass, relative to a kernel set's `dtb/`.
    pub devicetree: Option<String>,
}

fn bad(reason: &'static str) -> FormatError {
    FormatError::BadText {
        what: "berth/boot/loader.conf",
        reason,
    }
}

impl BootConfig {
    /// The kernel command line a kernel set with arguments `kargs` boots with: the
    /// board's, the set's, then the sysroot (`berth.entry=` is the loader's to add).
    pub fn kernel_cmdline(&self, kargs: &str) -> String {
        let mut line = self.cmdline.clone();
        if !kargs.is_empty() {
            line.push(' ');
            line.push_str(kargs);
        }
        format!("{line} berth.root={}", self.root)
    }

    /// The file's bytes.
    pub fn encode(&self) -> String {
        let mut s = format!(
            "loader {}\npartuuid {}\ncmdline {}\nroot {}\n",
            self.loader.as_str(),
            self.partuuid,
            self.cmdline,
            self.root
        );
        if let Some(dt) = &self.devicetree {
            let _ = writeln!(s, "devicetree {dt}");
        }
        s
    }

    /// Parses the file: printable ASCII lines, every key known and present once.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        if bytes.len() > MAX {
            return Err(FormatError::TooLarge {
                what: "berth/boot/loader.conf",
                len: bytes.len() as u64,
                limit: MAX as u64,
            });
        }
        if !bytes
            .iter()
            .all(|&b| b == b'\n' || (0x20..0x7f).contains(&b))
        {
            return Err(bad("must be printable ASCII lines"));
        }
        // Checked above: ASCII only.
        let text = core::str::from_utf8(bytes).map_err(|_| bad("must be ASCII"))?;
        let mut fields: [Option<&str>; 5] = [None; 5];
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (key, value) = line.split_once(' ').ok_or(bad("a line without a value"))?;
            let i = KEYS
                .iter()
                .position(|k| *k == key)
                .ok_or(bad("unknown key"))?;
            if fields[i].replace(value.trim()).is_some() {
                return Err(bad("a key given twice"));
            }
        }
        let need = |i: usize, what| fields[i].filter(|v| !v.is_empty()).ok_or(bad(what));
        let loader = match need(0, "no loader")? {
            "systemd-boot" => Loader::SystemdBoot,
            "u-boot" => Loader::UBoot,
            _ => return Err(bad("loader must be systemd-boot or u-boot")),
        };
        let partuuid = need(1, "no partuuid")?;
        if partuuid.len() != 36 || !partuuid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return Err(bad("partuuid must be a GUID in text form"));
        }
        let devicetree = fields[4].map(ToString::to_string);
        if devicetree.as_deref().is_some_and(|d| {
            d.is_empty() || d.starts_with('/') || d.split('/').any(|c| c == ".." || c.is_empty())
        }) {
            return Err(bad("devicetree must be a relative path inside dtb/"));
        }
        Ok(Self {
            loader,
            partuuid: partuuid.to_ascii_lowercase(),
            cmdline: need(2, "no cmdline")?.to_string(),
            root: need(3, "no root")?.to_string(),
            devicetree,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf() -> BootConfig {
        BootConfig {
            loader: Loader::SystemdBoot,
            partuuid: "0123abcd-0000-4000-8000-00000000000a".into(),
            cmdline: "console=ttyS0 panic=-1".into(),
            root: "PARTUUID=fedcba98-7654-3210-fedc-ba9876543210".into(),
            devicetree: None,
        }
    }

    #[test]
    fn round_trips_and_builds_the_command_line() {
        for c in [
            conf(),
            BootConfig {
                loader: Loader::UBoot,
                devicetree: Some("broadcom/bcm2711-rpi-4-b.dtb".into()),
                ..conf()
            },
        ] {
            assert_eq!(BootConfig::decode(c.encode().as_bytes()).unwrap(), c);
        }
        assert_eq!(
            conf().kernel_cmdline("quiet"),
            "console=ttyS0 panic=-1 quiet berth.root=PARTUUID=fedcba98-7654-3210-fedc-ba9876543210"
        );
        assert_eq!(
            conf().kernel_cmdline(""),
            "console=ttyS0 panic=-1 berth.root=PARTUUID=fedcba98-7654-3210-fedc-ba9876543210"
        );
    }

    #[test]
    fn refuses_what_it_does_not_understand() {
        let good = conf().encode();
        for bad in [
            String::new(),
            good.replace("loader systemd-boot", "loader grub"),
            good.replace("partuuid ", "partuuid x"),
            format!("{good}colour blue\n"),
            format!("{good}root PARTUUID=x\n"),
            good.replace("cmdline console=ttyS0 panic=-1\n", ""),
            format!("{good}devicetree ../x.dtb\n"),
            format!("{good}devicetree /x.dtb\n"),
            good.replace("panic", "p\u{e9}nic"),
        ] {
            assert!(BootConfig::decode(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }
}
