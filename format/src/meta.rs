//! File objects: the metadata header that, with the content, names a non-directory inode.

use alloc::vec::Vec;

use sha2::{Digest, Sha256};

use crate::limits::{SYMLINK_MAX, XATTR_COUNT_MAX, XATTR_NAME_MAX, XATTR_VALUE_MAX};
use crate::wire::{self, Preamble, Reader};
use crate::{FormatError, ObjectId};

const FILE: Preamble = Preamble {
    magic: *b"BRTF",
    version: 1,
    what: "file header",
};

/// Permission bits kept in a mode: rwx for user/group/other plus setuid, setgid, sticky.
/// The file type is kept separately, in [`FileKind`].
pub const MODE_BITS: u32 = 0o7777;

/// The kind of a non-directory inode. The numeric values are part of the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FileKind {
    /// A regular file; the content is its data.
    Regular = 1,
    /// A symbolic link; the content is its target.
    Symlink = 2,
    /// A character device; no content.
    CharDevice = 3,
    /// A block device; no content.
    BlockDevice = 4,
    /// A named pipe; no content.
    Fifo = 5,
}

impl FileKind {
    fn from_u8(v: u8) -> Result<Self, FormatError> {
        Ok(match v {
            1 => Self::Regular,
            2 => Self::Symlink,
            3 => Self::CharDevice,
            4 => Self::BlockDevice,
            5 => Self::Fifo,
            _ => {
                return Err(FormatError::Invalid {
                    what: "file kind",
                    value: u64::from(v),
                });
            }
        })
    }

    /// Whether this kind carries device numbers.
    pub const fn is_device(self) -> bool {
        matches!(self, Self::CharDevice | Self::BlockDevice)
    }
}

/// Extended attributes, kept sorted by name with unique names, so encoding is canonical.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Xattrs(Vec<(Vec<u8>, Vec<u8>)>);

impl Xattrs {
    /// No attributes.
    pub const fn new() -> Self {
        Self(Vec::new())
    }

    /// Builds the set from pairs in any order. Fails on a duplicate name or a size limit.
    pub fn from_pairs(mut pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Self, FormatError> {
        if pairs.len() > XATTR_COUNT_MAX {
            return Err(too_large("xattr count", pairs.len(), XATTR_COUNT_MAX));
        }
        for (name, value) in &pairs {
            check_xattr(name, value)?;
        }
        pairs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if pairs.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(FormatError::NotSorted {
                what: "xattr names",
            });
        }
        Ok(Self(pairs))
    }

    /// The attributes, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.0.iter().map(|(n, v)| (n.as_slice(), v.as_slice()))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn write(&self, w: &mut Vec<u8>) {
        wire::put_u32(w, wire::len_u32(self.0.len()));
        for (name, value) in &self.0 {
            wire::put_u16(w, wire::len_u16(name.len()));
            w.extend_from_slice(name);
            wire::put_u32(w, wire::len_u32(value.len()));
            w.extend_from_slice(value);
        }
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, FormatError> {
        let raw = r.u32()?;
        let count = Reader::len(u64::from(raw), XATTR_COUNT_MAX, "xattr count")?;
        let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(count);
        for _ in 0..count {
            let raw = r.u16()?;
            let n = Reader::len(u64::from(raw), XATTR_NAME_MAX, "xattr name length")?;
            let name = r.bytes(n)?.to_vec();
            let raw = r.u32()?;
            let n = Reader::len(u64::from(raw), XATTR_VALUE_MAX, "xattr value length")?;
            let value = r.bytes(n)?.to_vec();
            check_xattr(&name, &value)?;
            if pairs.last().is_some_and(|(prev, _)| *prev >= name) {
                return Err(FormatError::NotSorted {
                    what: "xattr names",
                });
            }
            pairs.push((name, value));
        }
        Ok(Self(pairs))
    }
}

fn check_xattr(name: &[u8], value: &[u8]) -> Result<(), FormatError> {
    if name.is_empty() || name.contains(&0) {
        return Err(FormatError::BadText {
            what: "xattr name",
            reason: "is empty or contains NUL",
        });
    }
    if name.len() > XATTR_NAME_MAX {
        return Err(too_large("xattr name length", name.len(), XATTR_NAME_MAX));
    }
    if value.len() > XATTR_VALUE_MAX {
        return Err(too_large(
            "xattr value length",
            value.len(),
            XATTR_VALUE_MAX,
        ));
    }
    Ok(())
}

fn too_large(what: &'static str, len: usize, limit: usize) -> FormatError {
    FormatError::TooLarge {
        what,
        len: len as u64,
        limit: limit as u64,
    }
}

/// Everything about a non-directory inode that Berth preserves, except its content.
///
/// Modification times are deliberately absent: every checkout has them set to 0
/// (1970-01-01), as `OSTree` does, so that identical files share one object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileHeader {
    /// What kind of inode.
    pub kind: FileKind,
    /// Permission bits, including setuid/setgid/sticky (see [`MODE_BITS`]).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device major number (character and block devices only, else 0).
    pub rdev_major: u32,
    /// Device minor number (character and block devices only, else 0).
    pub rdev_minor: u32,
    /// Length of the content that follows the header: file data or symlink target.
    pub size: u64,
    /// Extended attributes.
    pub xattrs: Xattrs,
}

impl FileHeader {
    /// Checks the invariants between the fields.
    pub fn validate(&self) -> Result<(), FormatError> {
        if self.mode & !MODE_BITS != 0 {
            return Err(FormatError::Invalid {
                what: "file mode",
                value: u64::from(self.mode),
            });
        }
        if !self.kind.is_device() && (self.rdev_major != 0 || self.rdev_minor != 0) {
            return Err(FormatError::Invalid {
                what: "device number on a non-device",
                value: 0,
            });
        }
        let size_ok = match self.kind {
            FileKind::Regular => true,
            FileKind::Symlink => self.size > 0 && self.size <= SYMLINK_MAX,
            FileKind::CharDevice | FileKind::BlockDevice | FileKind::Fifo => self.size == 0,
        };
        if !size_ok {
            return Err(if self.kind == FileKind::Symlink {
                FormatError::TooLarge {
                    what: "symlink target",
                    len: self.size,
                    limit: SYMLINK_MAX,
                }
            } else {
                FormatError::Invalid {
                    what: "size of a device or FIFO",
                    value: self.size,
                }
            });
        }
        Ok(())
    }

    /// The canonical encoding (see `docs/FORMAT.md`, "File objects").
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(48);
        FILE.write(&mut w);
        wire::put_u8(&mut w, self.kind as u8);
        wire::put_u8(&mut w, 0);
        wire::put_u16(&mut w, 0);
        wire::put_u32(&mut w, self.mode);
        wire::put_u32(&mut w, self.uid);
        wire::put_u32(&mut w, self.gid);
        wire::put_u32(&mut w, self.rdev_major);
        wire::put_u32(&mut w, self.rdev_minor);
        wire::put_u64(&mut w, self.size);
        self.xattrs.write(&mut w);
        w
    }

    /// Parses a header encoded by [`FileHeader::encode`]; `bytes` must hold exactly one.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let (header, used) = Self::decode_prefix(bytes)?;
        if used != bytes.len() {
            return Err(FormatError::TrailingBytes {
                what: FILE.what,
                extra: bytes.len() - used,
            });
        }
        Ok(header)
    }

    /// Parses the header at the start of `bytes` (a file object: header, then content).
    /// Returns it and its length. [`FormatError::Truncated`] means `bytes` ends inside it.
    pub fn decode_prefix(bytes: &[u8]) -> Result<(Self, usize), FormatError> {
        let mut r = Reader::new(bytes, FILE.what);
        FILE.read(&mut r)?;
        let kind = FileKind::from_u8(r.u8()?)?;
        if r.u8()? != 0 || r.u16()? != 0 {
            return Err(FormatError::Invalid {
                what: "file header reserved bytes",
                value: 1,
            });
        }
        let header = Self {
            kind,
            mode: r.u32()?,
            uid: r.u32()?,
            gid: r.u32()?,
            rdev_major: r.u32()?,
            rdev_minor: r.u32()?,
            size: r.u64()?,
            xattrs: Xattrs::read(&mut r)?,
        };
        header.validate()?;
        Ok((header, bytes.len() - r.remaining()))
    }

    /// Starts hashing a file object: feed the content to the result, then finish it.
    pub fn hasher(&self) -> FileHasher {
        let mut h = Sha256::new();
        h.update(self.encode());
        FileHasher {
            h,
            expected: self.size,
            seen: 0,
        }
    }

    /// The id of the file object with this header and `content`.
    pub fn object_id(&self, content: &[u8]) -> Result<ObjectId, FormatError> {
        let mut h = self.hasher();
        h.update(content);
        h.finish()
    }
}

/// Streaming sha256 of a file object; checks the content length matches the header.
#[derive(Debug, Clone)]
pub struct FileHasher {
    h: Sha256,
    expected: u64,
    seen: u64,
}

impl FileHasher {
    /// Feeds more content.
    pub fn update(&mut self, content: &[u8]) {
        self.seen = self.seen.saturating_add(content.len() as u64);
        self.h.update(content);
    }

    /// The object id, or an error if the content length differs from the header's size.
    pub fn finish(self) -> Result<ObjectId, FormatError> {
        if self.seen != self.expected {
            return Err(FormatError::Invalid {
                what: "content length differs from header size",
                value: self.seen,
            });
        }
        Ok(ObjectId::from_bytes(self.h.finalize().into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    fn header() -> FileHeader {
        FileHeader {
            kind: FileKind::Regular,
            mode: 0o4755,
            uid: 0,
            gid: 0,
            rdev_major: 0,
            rdev_minor: 0,
            size: 5,
            xattrs: Xattrs::from_pairs(vec![
                (b"user.b".to_vec(), b"2".to_vec()),
                (b"security.capability".to_vec(), vec![1, 0, 0, 2]),
            ])
            .unwrap(),
        }
    }

    #[test]
    fn round_trip() {
        let h = header();
        let bytes = h.encode();
        assert_eq!(FileHeader::decode(&bytes), Ok(h));
    }

    #[test]
    fn golden_encoding() {
        // Pins the v1 encoding: changing it changes every object id in every store.
        let h = FileHeader {
            xattrs: Xattrs::new(),
            ..header()
        };
        let expected: &[u8] = &[
            b'B', b'R', b'T', b'F', 1, 0, 0, 0, // magic, version 1, no flags
            1, 0, 0, 0, // kind regular, reserved
            0xed, 0x09, 0, 0, // mode 0o4755
            0, 0, 0, 0, 0, 0, 0, 0, // uid, gid
            0, 0, 0, 0, 0, 0, 0, 0, // rdev major, minor
            5, 0, 0, 0, 0, 0, 0, 0, // size
            0, 0, 0, 0, // no xattrs
        ];
        assert_eq!(h.encode(), expected);
        assert_eq!(
            h.object_id(b"hello").unwrap().to_string(),
            ObjectId::digest(&[expected, b"hello"].concat()).to_string()
        );
    }

    #[test]
    fn every_field_changes_the_id() {
        let base = header();
        let id = base.object_id(b"hello").unwrap();
        let variants = [
            FileHeader {
                mode: 0o755,
                ..base.clone()
            },
            FileHeader {
                uid: 1,
                ..base.clone()
            },
            FileHeader {
                gid: 1,
                ..base.clone()
            },
            FileHeader {
                xattrs: Xattrs::new(),
                ..base.clone()
            },
            FileHeader {
                kind: FileKind::Symlink,
                ..base.clone()
            },
        ];
        for v in variants {
            assert_ne!(v.object_id(b"hello").unwrap(), id, "{v:?}");
        }
        assert_ne!(base.object_id(b"hellO").unwrap(), id);
        let dev = FileHeader {
            kind: FileKind::CharDevice,
            size: 0,
            rdev_major: 1,
            rdev_minor: 3,
            ..base.clone()
        };
        let dev2 = FileHeader {
            rdev_minor: 5,
            ..dev.clone()
        };
        assert_ne!(dev.object_id(b"").unwrap(), dev2.object_id(b"").unwrap());
    }

    #[test]
    fn rejects_bad_headers() {
        let good = header().encode();
        for cut in 0..good.len() {
            assert!(
                FileHeader::decode(&good[..cut]).is_err(),
                "truncated at {cut}"
            );
        }
        let mut extra = good.clone();
        extra.push(0);
        assert!(FileHeader::decode(&extra).is_err());
        let mut bad_kind = good.clone();
        bad_kind[8] = 9;
        assert!(FileHeader::decode(&bad_kind).is_err());
        let mut bad_version = good.clone();
        bad_version[4] = 2;
        assert_eq!(
            FileHeader::decode(&bad_version),
            Err(FormatError::UnsupportedVersion {
                what: "file header",
                version: 2
            })
        );
        let bad_mode = FileHeader {
            mode: 0o100_644,
            ..header()
        };
        assert!(FileHeader::decode(&bad_mode.encode()).is_err());
        assert!(
            header().object_id(b"four").is_err(),
            "length must match the header"
        );
    }

    #[test]
    fn xattrs_are_canonical() {
        let dup = vec![(b"user.a".to_vec(), vec![]), (b"user.a".to_vec(), vec![1])];
        assert!(Xattrs::from_pairs(dup).is_err());
        let a = Xattrs::from_pairs(vec![
            (b"user.a".to_vec(), vec![]),
            (b"user.b".to_vec(), vec![]),
        ])
        .unwrap();
        let b = Xattrs::from_pairs(vec![
            (b"user.b".to_vec(), vec![]),
            (b"user.a".to_vec(), vec![]),
        ])
        .unwrap();
        assert_eq!(a, b);
        assert!(Xattrs::from_pairs(vec![(vec![b'x'; 256], vec![])]).is_err());
        assert!(Xattrs::from_pairs(vec![(b"user.big".to_vec(), vec![0; 65_537])]).is_err());
    }
}
