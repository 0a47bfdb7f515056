//! The boot record: which deployment to boot, kept as two checksummed copies.
//!
//! Each copy is exactly [`RECORD_LEN`] bytes (see `docs/FORMAT.md`, "Boot record").
//! The copy with the higher generation among the *valid* ones wins, so a torn write of
//! one copy falls back to the other. Writers always overwrite the copy that did not win
//! (the older or invalid one), so the current winner is never touched.
//!
//! Nothing here allocates: the boot shim parses and writes records with this module.

use crate::FormatError;

/// Length of one encoded record copy.
pub const RECORD_LEN: usize = 512;

/// Longest deployment name, in bytes.
pub const NAME_LEN_MAX: usize = 63;

const MAGIC: [u8; 4] = *b"BRTR";
const VERSION: u16 = 1;
/// Bytes covered by the checksum; the CRC32C of them follows, then zero padding.
const BODY_LEN: usize = RECORD_LEN - 32;

const OFF_GEN: usize = 8;
const OFF_DEFAULT: usize = 16;
const OFF_PREVIOUS: usize = 80;
const OFF_TRIAL: usize = 144;
const OFF_TRIES: usize = 208;
const OFF_REASON: usize = 209;
const OFF_ROLLBACK_FROM: usize = 216;
const OFF_RESERVED: usize = 280;
const SLOT: usize = 64;

/// A deployment's name: 1 to 63 bytes of `[A-Za-z0-9._-]`, not starting with `.`.
/// It is a directory name under `berth/deploy/`, so it can never be a path.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeploymentName {
    len: u8,
    bytes: [u8; NAME_LEN_MAX],
}

impl DeploymentName {
    /// Validates a name.
    pub fn new(name: &[u8]) -> Result<Self, FormatError> {
        let bad = |reason| FormatError::BadText {
            what: "deployment name",
            reason,
        };
        if name.is_empty() || name.len() > NAME_LEN_MAX {
            return Err(bad("must be 1 to 63 bytes long"));
        }
        if name[0] == b'.' {
            return Err(bad("must not start with '.'"));
        }
        if !name
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || c == b'-')
        {
            return Err(bad("may only contain letters, digits and . _ -"));
        }
        let mut bytes = [0u8; NAME_LEN_MAX];
        bytes[..name.len()].copy_from_slice(name);
        // len <= 63 was checked above.
        Ok(Self {
            len: u8::try_from(name.len()).unwrap_or(0),
            bytes,
        })
    }

    /// The deployment name of a commit, as `berth-image install` and `berth update`
    /// give it: the first 16 hex digits of the commit id.
    pub fn for_commit(commit: &crate::ObjectId) -> Self {
        let hex = commit.to_hex();
        let mut bytes = [0u8; NAME_LEN_MAX];
        bytes[..16].copy_from_slice(&hex[..16]);
        Self { len: 16, bytes }
    }

    /// The name's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The name as text (always ASCII).
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

impl core::fmt::Debug for DeploymentName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the shim gave up on a trial deployment. The numeric values are part of the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RollbackReason {
    /// The trial was booted as many times as it was allowed without being marked good.
    TriesExhausted = 1,
    /// The trial deployment is missing or has no init.
    TrialUnbootable = 2,
    /// Someone ran `berth rollback`.
    Manual = 3,
}

impl RollbackReason {
    /// A short, stable, lowercase token for logs and JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::TriesExhausted => "tries-exhausted",
            Self::TrialUnbootable => "trial-unbootable",
            Self::Manual => "manual",
        }
    }
}

/// Written as its token (`berth status --json` shows the last rollback's reason).
#[cfg(feature = "serde")]
impl serde::Serialize for RollbackReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The last rollback: which trial was dropped, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rollback {
    /// The trial deployment that was given up.
    pub from: DeploymentName,
    /// Why.
    pub reason: RollbackReason,
}

/// The boot state shared by the shim (which decrements trials and rolls back) and the
/// agent (which starts trials and marks them good).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// Increases by one on every write; the valid copy with the higher one wins.
    pub generation: u64,
    /// The deployment known to be good.
    pub default: Option<DeploymentName>,
    /// The good deployment before `default`, kept as the fallback.
    pub previous: Option<DeploymentName>,
    /// A deployment being tried, not yet marked good.
    pub trial: Option<DeploymentName>,
    /// How many more times the trial may be booted (0 when there is no trial).
    pub tries_left: u8,
    /// The last rollback, kept until the next one replaces it.
    pub last_rollback: Option<Rollback>,
}

impl Record {
    /// An empty record (generation 0, nothing to boot).
    pub const fn empty() -> Self {
        Self {
            generation: 0,
            default: None,
            previous: None,
            trial: None,
            tries_left: 0,
            last_rollback: None,
        }
    }

    /// The canonical encoding of one copy.
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut b = [0u8; RECORD_LEN];
        b[..4].copy_from_slice(&MAGIC);
        b[4..6].copy_from_slice(&VERSION.to_le_bytes());
        // bytes 6..8: incompatible flags, none in version 1.
        b[OFF_GEN..OFF_GEN + 8].copy_from_slice(&self.generation.to_le_bytes());
        put_name(&mut b, OFF_DEFAULT, self.default.as_ref());
        put_name(&mut b, OFF_PREVIOUS, self.previous.as_ref());
        put_name(&mut b, OFF_TRIAL, self.trial.as_ref());
        b[OFF_TRIES] = if self.trial.is_some() {
            self.tries_left
        } else {
            0
        };
        if let Some(r) = &self.last_rollback {
            b[OFF_REASON] = r.reason as u8;
            put_name(&mut b, OFF_ROLLBACK_FROM, Some(&r.from));
        }
        let sum = crc32c(&b[..BODY_LEN]);
        b[BODY_LEN..BODY_LEN + 4].copy_from_slice(&sum.to_le_bytes());
        b
    }

    /// Parses one copy. Any damage (wrong length, checksum, magic, version, a bad name,
    /// non-zero reserved bytes, inconsistent fields) is an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let what = "boot record";
        if bytes.len() != RECORD_LEN {
            return Err(if bytes.len() < RECORD_LEN {
                FormatError::Truncated { what }
            } else {
                FormatError::TrailingBytes {
                    what,
                    extra: bytes.len() - RECORD_LEN,
                }
            });
        }
        let (body, tail) = bytes.split_at(BODY_LEN);
        let (sum, pad) = tail.split_at(4);
        if sum != crc32c(body).to_le_bytes() || pad.iter().any(|&x| x != 0) {
            return Err(FormatError::Invalid {
                what: "boot record checksum",
                value: 0,
            });
        }
        if body[..4] != MAGIC {
            return Err(FormatError::BadMagic { what });
        }
        let version = u16::from_le_bytes([body[4], body[5]]);
        if version != VERSION {
            return Err(FormatError::UnsupportedVersion { what, version });
        }
        let flags = u16::from_le_bytes([body[6], body[7]]);
        if flags != 0 {
            return Err(FormatError::UnknownFlags { what, flags });
        }
        let mut generation = [0u8; 8];
        generation.copy_from_slice(&body[OFF_GEN..OFF_GEN + 8]);
        let trial = get_name(body, OFF_TRIAL)?;
        let tries_left = body[OFF_TRIES];
        if trial.is_none() && tries_left != 0 {
            return Err(FormatError::Invalid {
                what: "boot record tries without a trial",
                value: u64::from(tries_left),
            });
        }
        let reason = match body[OFF_REASON] {
            0 => None,
            1 => Some(RollbackReason::TriesExhausted),
            2 => Some(RollbackReason::TrialUnbootable),
            3 => Some(RollbackReason::Manual),
            v => {
                return Err(FormatError::Invalid {
                    what: "boot record rollback reason",
                    value: u64::from(v),
                });
            }
        };
        let from = get_name(body, OFF_ROLLBACK_FROM)?;
        let last_rollback = match (reason, from) {
            (None, None) => None,
            (Some(reason), Some(from)) => Some(Rollback { from, reason }),
            _ => {
                return Err(FormatError::Invalid {
                    what: "boot record rollback fields",
                    value: 0,
                });
            }
        };
        if body[OFF_REASON + 1..OFF_ROLLBACK_FROM]
            .iter()
            .chain(&body[OFF_RESERVED..])
            .any(|&x| x != 0)
        {
            return Err(FormatError::Invalid {
                what: "boot record reserved bytes",
                value: 1,
            });
        }
        Ok(Self {
            generation: u64::from_le_bytes(generation),
            default: get_name(body, OFF_DEFAULT)?,
            previous: get_name(body, OFF_PREVIOUS)?,
            trial,
            tries_left,
            last_rollback,
        })
    }
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as used by ext4 and iSCSI.
/// Bitwise: a record is 512 bytes, and the boot shim stays small without a table.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn put_name(b: &mut [u8; RECORD_LEN], off: usize, name: Option<&DeploymentName>) {
    if let Some(n) = name {
        b[off] = n.len;
        b[off + 1..off + 1 + n.as_bytes().len()].copy_from_slice(n.as_bytes());
    }
}

fn get_name(body: &[u8], off: usize) -> Result<Option<DeploymentName>, FormatError> {
    let slot = body.get(off..off + SLOT).ok_or(FormatError::Truncated {
        what: "boot record",
    })?;
    let len = usize::from(slot[0]);
    if len > NAME_LEN_MAX {
        return Err(FormatError::Invalid {
            what: "boot record name length",
            value: len as u64,
        });
    }
    if slot[1 + len..].iter().any(|&x| x != 0) {
        return Err(FormatError::Invalid {
            what: "boot record name padding",
            value: 1,
        });
    }
    if len == 0 {
        return Ok(None);
    }
    DeploymentName::new(&slot[1..=len]).map(Some)
}

/// Which of the two copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordCopy {
    /// `record.a`.
    A,
    /// `record.b`.
    B,
}

impl RecordCopy {
    /// The file name of this copy in `berth/boot/`.
    pub const fn file_name(self) -> &'static str {
        match self {
            Self::A => "record.a",
            Self::B => "record.b",
        }
    }

    /// The other copy.
    #[must_use]
    pub const fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }
}

/// Picks the record to use from the two copies' bytes (`None` for a missing copy).
/// Returns the winning record and its copy; `None` if neither copy is valid.
pub fn choose(a: Option<&[u8]>, b: Option<&[u8]>) -> Option<(Record, RecordCopy)> {
    let ra = a.and_then(|x| Record::decode(x).ok());
    let rb = b.and_then(|x| Record::decode(x).ok());
    match (ra, rb) {
        (Some(x), Some(y)) if y.generation > x.generation => Some((y, RecordCopy::B)),
        (Some(x), _) => Some((x, RecordCopy::A)),
        (None, Some(y)) => Some((y, RecordCopy::B)),
        (None, None) => None,
    }
}

/// Where the next write goes: the copy that did not win (or A when neither is valid),
/// with the generation it must carry.
pub fn next_write(current: Option<(Record, RecordCopy)>) -> (RecordCopy, u64) {
    match current {
        Some((r, c)) => (c.other(), r.generation.saturating_add(1)),
        None => (RecordCopy::A, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> DeploymentName {
        DeploymentName::new(s.as_bytes()).unwrap()
    }

    fn sample() -> Record {
        Record {
            generation: 7,
            default: Some(name("v1")),
            previous: Some(name("v0")),
            trial: Some(name("v2")),
            tries_left: 3,
            last_rollback: Some(Rollback {
                from: name("v1.5"),
                reason: RollbackReason::TriesExhausted,
            }),
        }
    }

    #[test]
    fn round_trip() {
        for r in [
            sample(),
            Record::empty(),
            Record {
                trial: None,
                tries_left: 0,
                last_rollback: None,
                ..sample()
            },
        ] {
            assert_eq!(Record::decode(&r.encode()), Ok(r));
        }
    }

    #[test]
    fn names() {
        for ok in ["a", "v1.2.3", "2024-05-01_rc1", &"x".repeat(63)] {
            assert!(DeploymentName::new(ok.as_bytes()).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", "é", &"x".repeat(64)] {
            assert!(DeploymentName::new(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn deployment_name_of_a_commit() {
        let id = crate::ObjectId::digest(b"commit");
        let n = DeploymentName::for_commit(&id);
        assert_eq!(n.as_str(), &alloc::string::ToString::to_string(&id)[..16]);
        assert_eq!(DeploymentName::new(n.as_bytes()), Ok(n));
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let good = sample().encode();
        for byte in 0..RECORD_LEN {
            for bit in 0..8 {
                let mut b = good;
                b[byte] ^= 1 << bit;
                assert!(
                    Record::decode(&b).is_err(),
                    "flip of byte {byte} bit {bit} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let good = sample().encode();
        for len in 0..RECORD_LEN {
            assert!(Record::decode(&good[..len]).is_err(), "truncation to {len}");
        }
    }

    #[test]
    fn newer_valid_copy_wins() {
        let old = Record {
            generation: 4,
            ..sample()
        }
        .encode();
        let new = Record {
            generation: 5,
            ..sample()
        }
        .encode();
        let mut torn = new;
        torn[100] ^= 0xff;
        assert_eq!(
            choose(Some(&old), Some(&new)).map(|(r, c)| (r.generation, c)),
            Some((5, RecordCopy::B))
        );
        assert_eq!(
            choose(Some(&new), Some(&old)).map(|(r, c)| (r.generation, c)),
            Some((5, RecordCopy::A))
        );
        assert_eq!(
            choose(Some(&old), Some(&torn)).map(|(r, c)| (r.generation, c)),
            Some((4, RecordCopy::A))
        );
        assert_eq!(
            choose(None, Some(&old)).map(|(r, c)| (r.generation, c)),
            Some((4, RecordCopy::B))
        );
        assert_eq!(choose(Some(&torn), Some(&torn[..10])), None);
        assert_eq!(
            next_write(choose(Some(&old), Some(&new))),
            (RecordCopy::A, 6)
        );
        assert_eq!(next_write(None), (RecordCopy::A, 1));
    }

    #[test]
    fn inconsistent_fields_are_rejected() {
        // Hand-build a body with tries but no trial, with a correct checksum.
        let mut b = Record {
            trial: None,
            tries_left: 0,
            ..sample()
        }
        .encode();
        b[OFF_TRIES] = 2;
        let sum = crc32c(&b[..BODY_LEN]);
        b[BODY_LEN..BODY_LEN + 4].copy_from_slice(&sum.to_le_bytes());
        assert!(Record::decode(&b).is_err());
    }

    #[test]
    fn crc32c_check_value() {
        // The standard check value of CRC-32C.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }
}
