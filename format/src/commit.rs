//! Commit objects: a root tree plus version, time, parent and free-form metadata.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::limits::{
    COMMIT_MAX, COMMIT_META_COUNT_MAX, COMMIT_META_KEY_MAX, COMMIT_META_VALUE_MAX, VERSION_MAX,
};
use crate::wire::{self, Preamble, Reader};
use crate::{FormatError, ObjectId};

const COMMIT: Preamble = Preamble {
    magic: *b"BRTC",
    version: 1,
    what: "commit",
};

/// A release version: 1 to 64 bytes of `[A-Za-z0-9.+~_-]`, starting with an alphanumeric.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Version(String);

impl Version {
    /// Validates a version string.
    pub fn new(s: &str) -> Result<Self, FormatError> {
        let what = "version";
        if s.is_empty() || s.len() > VERSION_MAX {
            return Err(FormatError::BadText {
                what,
                reason: "must be 1 to 64 bytes long",
            });
        }
        if !s.bytes().next().is_some_and(|c| c.is_ascii_alphanumeric()) {
            return Err(FormatError::BadText {
                what,
                reason: "must start with a letter or digit",
            });
        }
        if !s
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b".+~_-".contains(&c))
        {
            return Err(FormatError::BadText {
                what,
                reason: "may only contain letters, digits and . + ~ _ -",
            });
        }
        Ok(Self(String::from(s)))
    }

    /// The version text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Release order: the text is split into runs of digits and runs of other bytes;
    /// digit runs compare as numbers, other runs bytewise, run by run, and a version
    /// that is a prefix of another is older. So `1.9 < 1.10 < 1.10.1` and
    /// `2024.05 < 2024.11`. Used for rollback protection.
    pub fn cmp_release(&self, other: &Self) -> core::cmp::Ordering {
        let (mut a, mut b) = (self.0.as_bytes(), other.0.as_bytes());
        loop {
            match (a.is_empty(), b.is_empty()) {
                (true, true) => return core::cmp::Ordering::Equal,
                (true, false) => return core::cmp::Ordering::Less,
                (false, true) => return core::cmp::Ordering::Greater,
                _ => {}
            }
            let (ra, rest_a) = split_run(a);
            let (rb, rest_b) = split_run(b);
            let ord = if ra[0].is_ascii_digit() && rb[0].is_ascii_digit() {
                let (ta, tb) = (trim_zeros(ra), trim_zeros(rb));
                ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb))
            } else {
                ra.cmp(rb)
            };
            if ord != core::cmp::Ordering::Equal {
                return ord;
            }
            a = rest_a;
            b = rest_b;
        }
    }
}

/// The first run of digits or of non-digits, and the rest. `s` is not empty.
fn split_run(s: &[u8]) -> (&[u8], &[u8]) {
    let digit = s[0].is_ascii_digit();
    let n = s
        .iter()
        .position(|c| c.is_ascii_digit() != digit)
        .unwrap_or(s.len());
    s.split_at(n)
}

fn trim_zeros(s: &[u8]) -> &[u8] {
    let n = s.iter().position(|&c| c != b'0').unwrap_or(s.len());
    &s[n..]
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Version({})", self.0)
    }
}

/// A commit. Its id is the sha256 of its encoding; signatures are detached
/// (see [`crate::sig`]) so that signing does not change the id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Commit {
    /// The root directory's tree object.
    pub root: ObjectId,
    /// The commit this one follows, if any.
    pub parent: Option<ObjectId>,
    /// When it was made, in seconds since 1970-01-01T00:00:00Z.
    pub timestamp: u64,
    /// The release version.
    pub version: Version,
    /// Free-form metadata, sorted by key, keys unique (use [`Commit::new`]).
    metadata: Vec<(String, String)>,
}

impl Commit {
    /// Builds a commit; `metadata` may be in any order but its keys must be unique.
    pub fn new(
        root: ObjectId,
        parent: Option<ObjectId>,
        timestamp: u64,
        version: Version,
        mut metadata: Vec<(String, String)>,
    ) -> Result<Self, FormatError> {
        if metadata.len() > COMMIT_META_COUNT_MAX {
            return Err(FormatError::TooLarge {
                what: "commit metadata count",
                len: metadata.len() as u64,
                limit: COMMIT_META_COUNT_MAX as u64,
            });
        }
        for (k, v) in &metadata {
            check_meta(k, v)?;
        }
        metadata.sort_unstable();
        if metadata.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(FormatError::NotSorted {
                what: "commit metadata keys",
            });
        }
        let commit = Self {
            root,
            parent,
            timestamp,
            version,
            metadata,
        };
        let len = commit.encode().len();
        if len > COMMIT_MAX {
            return Err(FormatError::TooLarge {
                what: "commit",
                len: len as u64,
                limit: COMMIT_MAX as u64,
            });
        }
        Ok(commit)
    }

    /// The metadata pairs, sorted by key.
    pub fn metadata(&self) -> &[(String, String)] {
        &self.metadata
    }

    /// The canonical encoding (see `docs/FORMAT.md`, "Commit objects").
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(128);
        COMMIT.write(&mut w);
        w.extend_from_slice(self.root.as_bytes());
        match &self.parent {
            Some(p) => {
                wire::put_u8(&mut w, 1);
                w.extend_from_slice(p.as_bytes());
            }
            None => wire::put_u8(&mut w, 0),
        }
        wire::put_u64(&mut w, self.timestamp);
        wire::put_u16(&mut w, wire::len_u16(self.version.0.len()));
        w.extend_from_slice(self.version.0.as_bytes());
        wire::put_u32(&mut w, wire::len_u32(self.metadata.len()));
        for (k, v) in &self.metadata {
            wire::put_u16(&mut w, wire::len_u16(k.len()));
            w.extend_from_slice(k.as_bytes());
            wire::put_u32(&mut w, wire::len_u32(v.len()));
            w.extend_from_slice(v.as_bytes());
        }
        w
    }

    /// The commit's object id.
    pub fn id(&self) -> ObjectId {
        ObjectId::digest(&self.encode())
    }

    /// Parses exactly one encoded commit.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        if bytes.len() > COMMIT_MAX {
            return Err(FormatError::TooLarge {
                what: "commit",
                len: bytes.len() as u64,
                limit: COMMIT_MAX as u64,
            });
        }
        let mut r = Reader::new(bytes, COMMIT.what);
        COMMIT.read(&mut r)?;
        let root = ObjectId::from_bytes(r.array()?);
        let parent = match r.u8()? {
            0 => None,
            1 => Some(ObjectId::from_bytes(r.array()?)),
            v => {
                return Err(FormatError::Invalid {
                    what: "commit parent flag",
                    value: u64::from(v),
                });
            }
        };
        let timestamp = r.u64()?;
        let n = Reader::len(u64::from(r.u16()?), VERSION_MAX, "version length")?;
        let version = Version::new(utf8(r.bytes(n)?, "version")?)?;
        let raw = r.u32()?;
        let count = Reader::len(
            u64::from(raw),
            COMMIT_META_COUNT_MAX,
            "commit metadata count",
        )?;
        let mut metadata: Vec<(String, String)> = Vec::with_capacity(count);
        for _ in 0..count {
            let n = Reader::len(
                u64::from(r.u16()?),
                COMMIT_META_KEY_MAX,
                "commit metadata key length",
            )?;
            let k = utf8(r.bytes(n)?, "commit metadata key")?;
            let n = Reader::len(
                u64::from(r.u32()?),
                COMMIT_META_VALUE_MAX,
                "commit metadata value length",
            )?;
            let v = utf8(r.bytes(n)?, "commit metadata value")?;
            check_meta(k, v)?;
            if metadata.last().is_some_and(|(prev, _)| prev.as_str() >= k) {
                return Err(FormatError::NotSorted {
                    what: "commit metadata keys",
                });
            }
            metadata.push((String::from(k), String::from(v)));
        }
        r.finish()?;
        Ok(Self {
            root,
            parent,
            timestamp,
            version,
            metadata,
        })
    }
}

fn utf8<'a>(b: &'a [u8], what: &'static str) -> Result<&'a str, FormatError> {
    core::str::from_utf8(b).map_err(|_| FormatError::BadText {
        what,
        reason: "is not valid UTF-8",
    })
}

fn check_meta(k: &str, v: &str) -> Result<(), FormatError> {
    if k.is_empty() || k.len() > COMMIT_META_KEY_MAX || k.contains(['=', '\0']) {
        return Err(FormatError::BadText {
            what: "commit metadata key",
            reason: "must be 1 to 255 bytes without '=' or NUL",
        });
    }
    if v.len() > COMMIT_META_VALUE_MAX {
        return Err(FormatError::TooLarge {
            what: "commit metadata value",
            len: v.len() as u64,
            limit: COMMIT_META_VALUE_MAX as u64,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn commit() -> Commit {
        Commit::new(
            ObjectId::from_bytes([1; 32]),
            Some(ObjectId::from_bytes([2; 32])),
            1_700_000_000,
            Version::new("1.2.3").unwrap(),
            vec![
                ("board".into(), "qemu-x86_64".into()),
                ("a".into(), String::new()),
            ],
        )
        .unwrap()
    }

    #[test]
    fn round_trip_and_sorted() {
        let c = commit();
        assert_eq!(c.metadata()[0].0, "a");
        assert_eq!(Commit::decode(&c.encode()), Ok(c.clone()));
        let no_parent = Commit {
            parent: None,
            ..c.clone()
        };
        assert_eq!(Commit::decode(&no_parent.encode()), Ok(no_parent.clone()));
        assert_ne!(no_parent.id(), c.id());
    }

    #[test]
    fn truncation_is_an_error() {
        let bytes = commit().encode();
        for cut in 0..bytes.len() {
            assert!(Commit::decode(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
    }

    #[test]
    fn versions() {
        for ok in ["1", "1.2.3", "2024.05.1+build7", "v1~rc1", "a_b-c"] {
            assert!(Version::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".1", "-x", "1 2", "1/2", "é", &"9".repeat(65)] {
            assert!(Version::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn release_order() {
        let v = |s| Version::new(s).unwrap();
        let ascending = [
            "1", "1.2", "1.9", "1.10", "1.10.1", "2", "2024.05", "2024.11", "good-1", "good-2",
            "good-10",
        ];
        for w in ascending.windows(2) {
            assert_eq!(
                v(w[0]).cmp_release(&v(w[1])),
                core::cmp::Ordering::Less,
                "{} < {}",
                w[0],
                w[1]
            );
            assert_eq!(v(w[1]).cmp_release(&v(w[0])), core::cmp::Ordering::Greater);
        }
        assert_eq!(v("1.02").cmp_release(&v("1.2")), core::cmp::Ordering::Equal);
    }

    #[test]
    fn duplicate_metadata_keys_are_rejected() {
        let r = Commit::new(
            ObjectId::from_bytes([1; 32]),
            None,
            0,
            Version::new("1").unwrap(),
            vec![("k".into(), "1".into()), ("k".into(), "2".into())],
        );
        assert!(r.is_err());
    }
}
