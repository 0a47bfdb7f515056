//! The one error type of this crate.

/// Why bytes could not be decoded, or a value could not be built.
///
/// Every variant names the structure (`what`) it was reading, so a caller can
/// say "tree abc…: entry names not sorted" without guessing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The input ended before the structure did.
    #[error("{what}: truncated")]
    Truncated {
        /// The structure being read.
        what: &'static str,
    },
    /// Bytes remained after the structure ended.
    #[error("{what}: {extra} unexpected trailing bytes")]
    TrailingBytes {
        /// The structure being read.
        what: &'static str,
        /// How many bytes were left over.
        extra: usize,
    },
    /// The magic number is not the one this structure starts with.
    #[error("{what}: bad magic (not a berth {what})")]
    BadMagic {
        /// The structure being read.
        what: &'static str,
    },
    /// The format version is not one this build understands.
    #[error("{what}: unsupported format version {version}")]
    UnsupportedVersion {
        /// The structure being read.
        what: &'static str,
        /// The version found.
        version: u16,
    },
    /// Incompatible feature flags are set that this build does not know.
    #[error("{what}: unknown incompatible feature flags {flags:#06x}")]
    UnknownFlags {
        /// The structure being read.
        what: &'static str,
        /// The flags found.
        flags: u16,
    },
    /// A length or count is over its documented limit.
    #[error("{what}: {len} is over the limit of {limit}")]
    TooLarge {
        /// The field that is too large.
        what: &'static str,
        /// The length or count found.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// Adding up fields overflows 64 bits (a reader in wrapping arithmetic would see a
    /// small number).
    #[error("{what} overflows 64 bits")]
    Overflow {
        /// The sum.
        what: &'static str,
    },
    /// A field holds a value outside its domain.
    #[error("{what}: invalid value {value}")]
    Invalid {
        /// The field.
        what: &'static str,
        /// The value found (numeric fields).
        value: u64,
    },
    /// A name or key is not in canonical (strictly ascending, unique) order.
    #[error("{what}: not in strictly ascending order (duplicate or unsorted)")]
    NotSorted {
        /// The collection.
        what: &'static str,
    },
    /// A directory entry name is not a single safe path component.
    #[error("entry name {reason}")]
    BadName {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A text field is not valid UTF-8 or uses characters outside its charset.
    #[error("{what}: {reason}")]
    BadText {
        /// The field.
        what: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A signature did not verify against any trusted key.
    #[error("signature: {reason}")]
    Signature {
        /// What failed.
        reason: &'static str,
    },
}
