//! Kernel sets: the kernel, its initramfs (berth-init and the board's modules) and its
//! device trees, carried inside a deployment so that an update ships them like any
//! file and the committed tree is exactly what boots (`docs/FORMAT.md`, "Kernel sets").
//!
//! ```text
//! usr/lib/modules/<kver>/vmlinuz         the kernel (required)
//! usr/lib/modules/<kver>/initramfs.img   berth-init and the module closure (required)
//! usr/lib/modules/<kver>/dtb/            device trees (optional)
//! usr/lib/berth/kargs                    one line appended to the board's command line (optional)
//! ```
//!
//! A kernel set is identified by its content: [`KernelSet::id`] hashes the version,
//! the object ids of the kernel and the initramfs, the tree id of `dtb/` and the
//! arguments. Deployments with equal ids boot the same way and share one copy on a boot
//! partition; an update that keeps the id leaves the boot partition alone.

use alloc::string::String;
use alloc::vec::Vec;

use crate::{FormatError, ObjectId};

/// Where kernel sets live in a deployment, relative to its root.
pub const MODULES_DIR: &str = "usr/lib/modules";
/// The kernel's file name in `usr/lib/modules/<kver>/`.
pub const KERNEL: &str = "vmlinuz";
/// The initramfs's file name in `usr/lib/modules/<kver>/`.
pub const INITRAMFS: &str = "initramfs.img";
/// The device trees' directory in `usr/lib/modules/<kver>/`.
pub const DTB_DIR: &str = "dtb";
/// The per-deployment kernel arguments, relative to the deployment's root.
pub const KARGS: &str = "usr/lib/berth/kargs";
/// Longest `usr/lib/berth/kargs` (a kernel command line is at most 4096 bytes on
/// arm64 and 2048 on x86; the board's own arguments need room too).
pub const KARGS_MAX: usize = 1024;

/// A kernel set, as found in a deployment's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelSet {
    /// The kernel version (the directory name under `usr/lib/modules`).
    pub version: String,
    /// The object id of `vmlinuz`.
    pub kernel: ObjectId,
    /// The object id of `initramfs.img`.
    pub initramfs: ObjectId,
    /// The tree id of `dtb/`, if there is one.
    pub dtb: Option<ObjectId>,
    /// The kernel arguments from `usr/lib/berth/kargs` (one line, no newline).
    pub kargs: String,
}

/// Domain separation for [`KernelSet::id`]; changing it changes every id.
const ID_DOMAIN: &[u8] = b"berth kernel set v1\0";

impl KernelSet {
    /// The set's identity: sha256 over the domain; the version and the arguments, each
    /// preceded by its length (u32, little-endian); the kernel's and the initramfs's
    /// ids; then 1 and the device trees' tree id, or 0 without one.
    pub fn id(&self) -> ObjectId {
        let mut b = Vec::with_capacity(ID_DOMAIN.len() + 128 + self.kargs.len());
        b.extend_from_slice(ID_DOMAIN);
        for field in [self.version.as_bytes(), self.kargs.as_bytes()] {
            // Both are bounded far below 4 GiB (a name, and KARGS_MAX).
            b.extend_from_slice(&u32::try_from(field.len()).unwrap_or(u32::MAX).to_le_bytes());
            b.extend_from_slice(field);
        }
        b.extend_from_slice(self.kernel.as_bytes());
        b.extend_from_slice(self.initramfs.as_bytes());
        match &self.dtb {
            Some(d) => {
                b.push(1);
                b.extend_from_slice(d.as_bytes());
            }
            None => b.push(0),
        }
        ObjectId::digest(&b)
    }

    /// The short name of the set's directory on a boot partition: the first 16 hex
    /// digits of its id.
    pub fn dir_name(&self) -> String {
        let mut s = alloc::format!("{}", self.id());
        s.truncate(16);
        s
    }
}

/// Parses `usr/lib/berth/kargs`: one line of printable ASCII (a trailing newline is
/// allowed), at most [`KARGS_MAX`] bytes. An empty file means no arguments.
pub fn parse_kargs(bytes: &[u8]) -> Result<String, FormatError> {
    const WHAT: &str = "usr/lib/berth/kargs";
    if bytes.len() > KARGS_MAX {
        return Err(FormatError::TooLarge {
            what: WHAT,
            len: bytes.len() as u64,
            limit: KARGS_MAX as u64,
        });
    }
    let line = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if !line.iter().all(|b| (0x20..0x7f).contains(b)) {
        return Err(FormatError::BadText {
            what: WHAT,
            reason: "must be one line of printable ASCII",
        });
    }
    // Checked above: ASCII only.
    Ok(String::from_utf8_lossy(line).trim().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> KernelSet {
        KernelSet {
            version: "6.1.0-56-arm64".into(),
            kernel: ObjectId::from_bytes([1; 32]),
            initramfs: ObjectId::from_bytes([2; 32]),
            dtb: None,
            kargs: String::new(),
        }
    }

    #[test]
    fn the_id_changes_with_every_field_and_nothing_else() {
        let base = set();
        assert_eq!(base.id(), set().id());
        assert_eq!(base.dir_name().len(), 16);
        let changed = [
            KernelSet {
                version: "6.1.0-57-arm64".into(),
                ..set()
            },
            KernelSet {
                kernel: ObjectId::from_bytes([3; 32]),
                ..set()
            },
            KernelSet {
                initramfs: ObjectId::from_bytes([3; 32]),
                ..set()
            },
            KernelSet {
                dtb: Some(ObjectId::from_bytes([0; 32])),
                ..set()
            },
            KernelSet {
                kargs: "quiet".into(),
                ..set()
            },
            // Lengths are framed: moving bytes between version and kargs is a change.
            KernelSet {
                version: "6.1.0-56-arm6".into(),
                kargs: "4".into(),
                ..set()
            },
        ];
        let mut ids: Vec<ObjectId> = changed.iter().map(KernelSet::id).collect();
        ids.push(base.id());
        let n = ids.len();
        ids.sort_by_key(|a| *a.as_bytes());
        ids.dedup();
        assert_eq!(ids.len(), n, "every change gives another id");
    }

    #[test]
    fn kargs_are_one_printable_line() {
        for (text, want) in [
            (&b""[..], Some("")),
            (b"quiet\n", Some("quiet")),
            (
                b"rdinit=/nonexistent panic=5",
                Some("rdinit=/nonexistent panic=5"),
            ),
            (b"  loglevel=3  \n", Some("loglevel=3")),
            (b"a\nb", None),
            (b"a\n\n", None),
            (b"tab\there", None),
            (b"\xc3\xa9", None),
        ] {
            assert_eq!(parse_kargs(text).ok().as_deref(), want, "{text:?}");
        }
        assert!(parse_kargs(&[b'a'; KARGS_MAX + 1]).is_err());
    }
}
