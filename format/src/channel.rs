//! Channel pointers: the signed file of a static repository that names a channel's
//! commit and the updates that lead to it (`docs/FORMAT.md`, "Static repositories").
//!
//! A device fetches the pointer first, verifies its signature over the exact body bytes
//! before decoding the body, refuses a serial lower than the last one it accepted and a
//! pointer past its expiry, and then fetches only what the pointer declares, each file
//! bounded by its signed length and checked against its signed sha256.

use alloc::string::String;
use alloc::vec::Vec;

use crate::wire::{self, Preamble, Reader};
use crate::{FormatError, ObjectId};

const FILE: Preamble = Preamble {
    magic: *b"BRTN",
    version: 1,
    what: "channel file",
};
const BODY: Preamble = Preamble {
    magic: *b"BRTP",
    version: 1,
    what: "channel pointer",
};

/// Largest pointer body: bounds what is read before the signature is checked.
pub const BODY_MAX: usize = 1 << 20;
/// Largest whole channel file (head, body, signatures).
pub const FILE_MAX: usize = 12 + BODY_MAX + 4 + crate::update::SIGNATURES_BYTES_MAX;
/// Most deltas one pointer lists.
pub const DELTAS_MAX: usize = 1024;
/// Longest channel name.
pub const NAME_MAX: usize = 64;

/// An update file of the repository, in its split form (`superblock`, `part-NNNNN`):
/// the superblock's length and sha256, and the length of the whole update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateRef {
    /// Bytes of `superblock`.
    pub superblock_len: u64,
    /// sha256 of `superblock`.
    pub superblock_sha256: ObjectId,
    /// Bytes of the superblock and every part together (what a download costs).
    pub total_len: u64,
}

/// The signed body of a channel file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    /// Grows with every publication of the channel; a device never goes back.
    pub serial: u64,
    /// When it was published (seconds since the Unix epoch).
    pub issued: u64,
    /// After this (seconds since the Unix epoch) a device refuses it.
    pub expires: u64,
    /// The channel's name.
    pub channel: String,
    /// The channel's commit.
    pub commit: ObjectId,
    /// That commit's version, for `berth check`.
    pub version: String,
    /// The full update to `commit`.
    pub full: UpdateRef,
    /// Deltas to `commit`, by the commit they start from; sorted, unique.
    pub deltas: Vec<(ObjectId, UpdateRef)>,
    /// The commit's plain objects, for a device that has no delta (`indexes/<commit>`):
    /// here `superblock_len` and `superblock_sha256` are the object index's
    /// ([`crate::index`]) and `total_len` counts the index and every object it lists.
    pub objects: Option<UpdateRef>,
}

/// Checks a channel name: 1 to 64 bytes of lowercase letters, digits, `.`, `_`, `-`,
/// not starting with `.` (it is a file name in the repository).
pub fn check_name(name: &str) -> Result<(), FormatError> {
    let bad = |reason| FormatError::BadText {
        what: "channel name",
        reason,
    };
    if name.is_empty() || name.len() > NAME_MAX {
        return Err(bad("must be 1 to 64 bytes long"));
    }
    if name.starts_with('.') {
        return Err(bad("must not start with '.'"));
    }
    if !name
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-'))
    {
        return Err(bad("may only contain a-z, 0-9 and . _ -"));
    }
    Ok(())
}

fn put_ref(w: &mut Vec<u8>, r: &UpdateRef) {
    wire::put_u64(w, r.superblock_len);
    w.extend_from_slice(r.superblock_sha256.as_bytes());
    wire::put_u64(w, r.total_len);
}

fn get_ref(r: &mut Reader<'_>) -> Result<UpdateRef, FormatError> {
    let out = UpdateRef {
        superblock_len: r.u64()?,
        superblock_sha256: ObjectId::from_bytes(r.array()?),
        total_len: r.u64()?,
    };
    if out.superblock_len > out.total_len {
        return Err(FormatError::Invalid {
            what: "channel update length (shorter than its superblock)",
            value: out.total_len,
        });
    }
    Ok(out)
}

fn put_text(w: &mut Vec<u8>, s: &str) {
    wire::put_u8(w, u8::try_from(s.len()).unwrap_or(u8::MAX));
    w.extend_from_slice(s.as_bytes());
}

fn get_text(r: &mut Reader<'_>, what: &'static str) -> Result<String, FormatError> {
    let n = usize::from(r.u8()?);
    let bytes = r.bytes(n)?;
    core::str::from_utf8(bytes)
        .map(String::from)
        .map_err(|_| FormatError::BadText {
            what,
            reason: "is not UTF-8",
        })
}

impl Pointer {
    /// The canonical encoding (the bytes that are signed).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::new();
        BODY.write(&mut w);
        wire::put_u64(&mut w, self.serial);
        wire::put_u64(&mut w, self.issued);
        wire::put_u64(&mut w, self.expires);
        put_text(&mut w, &self.channel);
        w.extend_from_slice(self.commit.as_bytes());
        put_text(&mut w, &self.version);
        put_ref(&mut w, &self.full);
        wire::put_u32(&mut w, wire::len_u32(self.deltas.len()));
        for (from, r) in &self.deltas {
            w.extend_from_slice(from.as_bytes());
            put_ref(&mut w, r);
        }
        match &self.objects {
            None => wire::put_u8(&mut w, 0),
            Some(r) => {
                wire::put_u8(&mut w, 1);
                put_ref(&mut w, r);
            }
        }
        w
    }

    /// Decodes a body (call only after its signature verified).
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes, BODY.what);
        BODY.read(&mut r)?;
        let serial = r.u64()?;
        let issued = r.u64()?;
        let expires = r.u64()?;
        let channel = get_text(&mut r, "channel name")?;
        check_name(&channel)?;
        let commit = ObjectId::from_bytes(r.array()?);
        let version = get_text(&mut r, "channel version")?;
        let full = get_ref(&mut r)?;
        let count = Reader::len(u64::from(r.u32()?), DELTAS_MAX, "channel delta count")?;
        let mut deltas: Vec<(ObjectId, UpdateRef)> = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            let from = ObjectId::from_bytes(r.array()?);
            if deltas.last().is_some_and(|(prev, _)| *prev >= from) {
                return Err(FormatError::NotSorted {
                    what: "channel deltas",
                });
            }
            deltas.push((from, get_ref(&mut r)?));
        }
        let objects = match r.u8()? {
            0 => None,
            1 => Some(get_ref(&mut r)?),
            v => {
                return Err(FormatError::Invalid {
                    what: "channel has_objects flag",
                    value: u64::from(v),
                });
            }
        };
        r.finish()?;
        if expires < issued {
            return Err(FormatError::Invalid {
                what: "channel expiry (before its issue time)",
                value: expires,
            });
        }
        Ok(Self {
            serial,
            issued,
            expires,
            channel,
            commit,
            version,
            full,
            deltas,
            objects,
        })
    }

    /// The delta from `from`, if the channel lists one.
    pub fn delta_from(&self, from: &ObjectId) -> Option<&UpdateRef> {
        self.deltas
            .binary_search_by(|(f, _)| f.cmp(from))
            .ok()
            .and_then(|i| self.deltas.get(i))
            .map(|(_, r)| r)
    }
}

/// A channel file: head, the body, the signature block.
pub fn encode_file(body: &[u8], signatures: &[u8]) -> Vec<u8> {
    let mut w = Vec::with_capacity(16 + body.len() + signatures.len());
    FILE.write(&mut w);
    wire::put_u32(&mut w, wire::len_u32(body.len()));
    w.extend_from_slice(body);
    wire::put_u32(&mut w, wire::len_u32(signatures.len()));
    w.extend_from_slice(signatures);
    w
}

/// Splits a channel file into its body and signature bytes (nothing decoded yet).
pub fn split_file(bytes: &[u8]) -> Result<(&[u8], &[u8]), FormatError> {
    let mut r = Reader::new(bytes, FILE.what);
    FILE.read(&mut r)?;
    let n = Reader::len(u64::from(r.u32()?), BODY_MAX, "channel body length")?;
    let body = r.bytes(n)?;
    let n = Reader::len(
        u64::from(r.u32()?),
        crate::update::SIGNATURES_BYTES_MAX,
        "channel signatures length",
    )?;
    let sigs = r.bytes(n)?;
    r.finish()?;
    Ok((body, sigs))
}

/// What a device remembers of a channel (`berth/state/channels/NAME`): the newest
/// pointer it accepted. Text, four lines in this order: `version=2`, `serial=N`,
/// `issued=N`, `body=HEX` (the sha256 of that pointer's body, 64 hex digits). The
/// first berth wrote the last three alone; that form is read as version 1.
///
/// The decoder is strict: this state is the replay floor, so a damaged file must be
/// an error, never "nothing seen yet" (which would accept replayed, older pointers).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The serial of the newest pointer accepted.
    pub serial: u64,
    /// The newest `issued` time accepted (seconds since the Unix epoch).
    pub issued: u64,
    /// The sha256 of the accepted pointer's body (`None` only before the first).
    pub body: Option<ObjectId>,
}

/// Longest channel-state file: four short lines.
pub const SEEN_MAX: usize = 256;

/// The channel state's version that [`Seen::encode`] writes.
pub const SEEN_VERSION: u32 = 2;

impl Seen {
    /// The file's bytes.
    pub fn encode(&self) -> String {
        match self.body {
            Some(b) => alloc::format!(
                "version={SEEN_VERSION}\nserial={}\nissued={}\nbody={b}\n",
                self.serial,
                self.issued
            ),
            None => alloc::format!(
                "version={SEEN_VERSION}\nserial={}\nissued={}\nbody=\n",
                self.serial,
                self.issued
            ),
        }
    }

    /// Decodes a channel-state file; anything but exactly what [`Seen::encode`] writes
    /// (or version 1, without its `version=` line) is an error, and so is another
    /// version.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        const WHAT: &str = "channel state";
        let bad = |reason| FormatError::BadText { what: WHAT, reason };
        if bytes.len() > SEEN_MAX {
            return Err(FormatError::TooLarge {
                what: WHAT,
                len: bytes.len() as u64,
                limit: SEEN_MAX as u64,
            });
        }
        let text = core::str::from_utf8(bytes).map_err(|_| bad("not UTF-8"))?;
        let text = text
            .strip_suffix('\n')
            .ok_or(bad("does not end with a newline"))?;
        let mut lines = text.split('\n').peekable();
        if let Some(v) = lines.peek().and_then(|l| l.strip_prefix("version=")) {
            if v != "2" {
                return Err(bad("a version this berth does not read (it reads 1 and 2)"));
            }
            lines.next();
        }
        let mut field = |key: &str| -> Result<&str, FormatError> {
            lines
                .next()
                .and_then(|l| l.strip_prefix(key))
                .and_then(|l| l.strip_prefix('='))
                .ok_or(bad(
                    "expected the lines version=, serial=, issued=, body= in that order",
                ))
        };
        let number = |v: &str| -> Result<u64, FormatError> {
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("serial and issued must be decimal numbers"));
            }
            v.parse().map_err(|_| bad("a number is over 64 bits"))
        };
        let serial = number(field("serial")?)?;
        let issued = number(field("issued")?)?;
        let body = match field("body")? {
            "" => None,
            hex => Some(ObjectId::parse_hex(hex.as_bytes())?),
        };
        if lines.next().is_some() {
            return Err(bad("has lines after body="));
        }
        if body.is_none() && serial != 0 {
            return Err(bad("a serial without the body it was accepted with"));
        }
        Ok(Self {
            serial,
            issued,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Pointer {
        let r = |n: u8| UpdateRef {
            superblock_len: 100 + u64::from(n),
            superblock_sha256: ObjectId::from_bytes([n; 32]),
            total_len: 1000 + u64::from(n),
        };
        Pointer {
            serial: 7,
            issued: 1_700_000_000,
            expires: 1_700_600_000,
            channel: "stable".into(),
            commit: ObjectId::from_bytes([9; 32]),
            version: "2.0".into(),
            full: r(1),
            deltas: alloc::vec![
                (ObjectId::from_bytes([2; 32]), r(2)),
                (ObjectId::from_bytes([3; 32]), r(3))
            ],
            objects: Some(r(4)),
        }
    }

    #[test]
    fn round_trip_and_lookups() {
        let p = sample();
        let body = p.encode();
        assert_eq!(Pointer::decode(&body).unwrap(), p);
        let without = Pointer {
            objects: None,
            ..p.clone()
        };
        assert_eq!(Pointer::decode(&without.encode()).unwrap(), without);
        let file = encode_file(&body, b"sigs");
        assert_eq!(split_file(&file).unwrap(), (&body[..], &b"sigs"[..]));
        assert_eq!(
            p.delta_from(&ObjectId::from_bytes([3; 32]))
                .unwrap()
                .total_len,
            1003
        );
        assert!(p.delta_from(&ObjectId::from_bytes([4; 32])).is_none());
    }

    #[test]
    fn refusals() {
        let mut p = sample();
        p.deltas.swap(0, 1);
        assert!(Pointer::decode(&p.encode()).is_err(), "unsorted deltas");
        let mut p = sample();
        p.expires = p.issued - 1;
        assert!(
            Pointer::decode(&p.encode()).is_err(),
            "expires before issued"
        );
        for bad in ["", "Stable", ".hidden", "a/b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        let body = sample().encode();
        assert!(
            Pointer::decode(&body[..body.len() - 1]).is_err(),
            "truncated"
        );
        let mut long = body.clone();
        long.push(0);
        assert!(Pointer::decode(&long).is_err(), "trailing bytes");
        let mut flag = Pointer {
            objects: None,
            ..sample()
        }
        .encode();
        *flag.last_mut().unwrap() = 2;
        assert!(
            Pointer::decode(&flag).is_err(),
            "has_objects other than 0 or 1"
        );
        let mut file = encode_file(&body, b"");
        file.push(0);
        assert!(
            split_file(&file).is_err(),
            "trailing bytes after the signatures"
        );
    }
    #[test]
    fn seen_round_trips_and_refuses_damage() {
        use alloc::format;
        use alloc::string::ToString as _;
        let seen = Seen {
            serial: 42,
            issued: 1_700_000_000,
            body: Some(ObjectId::from_bytes([7; 32])),
        };
        let text = seen.encode();
        assert_eq!(Seen::decode(text.as_bytes()), Ok(seen));
        assert_eq!(
            Seen::decode(Seen::default().encode().as_bytes()),
            Ok(Seen::default())
        );
        let hex = ObjectId::from_bytes([7; 32]).to_string();
        let damaged: [&[u8]; 11] = [
            b"",
            &[0u8; 64],
            b"serial=42\nissued=1\n",
            b"serial=42\nissued=1\nbody=",
            b"issued=1\nserial=42\nbody=\n",
            b"serial=-1\nissued=1\nbody=\n",
            b"serial=99999999999999999999999\nissued=1\nbody=\n",
            b"serial=42\nissued=1\nbody=abc\n",
            b"serial=42\nissued=1\nbody=\n",
            b"serial= 4\nissued=1\nbody=\n",
            b"serial=0\nissued=0\nbody=\nextra=1\n",
        ];
        for d in damaged {
            assert!(Seen::decode(d).is_err(), "{:?}", String::from_utf8_lossy(d));
        }
        // What the first berth wrote, without its version line, is version 1.
        let v1 = format!("serial=42\nissued=1700000000\nbody={hex}\n");
        assert_eq!(Seen::decode(v1.as_bytes()), Ok(seen));
        assert!(text.starts_with("version=2\nserial=42\n"), "{text}");
        for other in [
            "version=3\n",
            "version=1\n",
            "version=\n",
            "version=2\nversion=2\n",
        ] {
            let t = format!("{other}serial=42\nissued=1700000000\nbody={hex}\n");
            assert!(Seen::decode(t.as_bytes()).is_err(), "{t}");
        }
        let long = format!("serial=1\nissued=1\nbody={hex}\n{}", " ".repeat(SEEN_MAX));
        assert!(matches!(
            Seen::decode(long.as_bytes()),
            Err(FormatError::TooLarge { .. })
        ));
    }
}
