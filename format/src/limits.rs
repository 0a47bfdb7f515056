//! Size limits shared by encoders and decoders.
//!
//! Changing a limit does not change any encoding, but lowering one can make existing
//! repositories unreadable, and raising one lets larger untrusted input through. Each
//! limit is checked before anything is allocated for the value it bounds.

/// Longest directory entry name, in bytes: Linux's `NAME_MAX`.
pub const NAME_MAX: usize = 255;

/// Longest extended-attribute name, in bytes: Linux's `XATTR_NAME_MAX`.
pub const XATTR_NAME_MAX: usize = 255;

/// Largest extended-attribute value, in bytes: Linux's `XATTR_SIZE_MAX`.
pub const XATTR_VALUE_MAX: usize = 65_536;

/// Most extended attributes on one inode. Real systems carry a handful
/// (`security.capability`, `security.selinux`, ACLs); this bounds hostile input.
pub const XATTR_COUNT_MAX: usize = 256;

/// Longest symlink target, in bytes: Linux's `PATH_MAX` minus the NUL.
pub const SYMLINK_MAX: u64 = 4095;

/// Most entries in one directory (tree object). A Debian rootfs's largest directory has
/// a few thousand; this bounds memory when decoding untrusted trees.
pub const TREE_ENTRIES_MAX: usize = 1 << 20;

/// Deepest directory nesting accepted when building or checking out a tree. The walkers
/// hold one directory fd per level, so this also bounds open files.
pub const TREE_DEPTH_MAX: usize = 256;

/// Largest encoded commit, in bytes.
pub const COMMIT_MAX: usize = 1 << 20;

/// Longest version string, in bytes.
pub const VERSION_MAX: usize = 64;

/// Most free-form metadata pairs on a commit.
pub const COMMIT_META_COUNT_MAX: usize = 256;

/// Longest commit metadata key, in bytes.
pub const COMMIT_META_KEY_MAX: usize = 255;

/// Longest commit metadata value, in bytes.
pub const COMMIT_META_VALUE_MAX: usize = 65_536;

/// Most signatures on one commit.
pub const SIGNATURES_MAX: usize = 16;

/// Most bytes the layers of one container image may unpack to, all layers together
/// (`berth-image commit --oci`; `--max-unpacked` overrides it). Past it a layer is taken
/// for a decompression bomb (a few kilobytes of gzip that unpack to terabytes of
/// zeros). A bound on the build host's work, not part of any format.
pub const OCI_UNPACKED_MAX: u64 = 32 << 30;

/// Most tar entries the layers of one container image may hold, all layers together
/// (`--max-entries` overrides it): a Debian root file system has about 30 000; past
/// this bound a layer is taken for a bomb of empty entries. Not part of any format.
pub const OCI_ENTRIES_MAX: u64 = 4 << 20;
