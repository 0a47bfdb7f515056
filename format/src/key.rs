//! Key files: ed25519 keys as one line of text.
//!
//! ```text
//! berth-ed25519-secret-v1 <64 hex digits: the 32-byte seed>
//! berth-ed25519-public-v1 <64 hex digits: the 32-byte public key>
//! ```
//! A trailing newline is allowed; nothing else is.

use alloc::string::String;
use core::fmt;

use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::{FormatError, ObjectId};

const SECRET_TAG: &str = "berth-ed25519-secret-v1";
const PUBLIC_TAG: &str = "berth-ed25519-public-v1";

/// What a key file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFileKind {
    /// A secret (signing) key.
    Secret,
    /// A public (verifying) key.
    Public,
}

impl fmt::Display for KeyFileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Secret => "a secret key",
            Self::Public => "a public key",
        })
    }
}

/// Which kind of key file `text` claims to be, from its first word, if either.
pub fn kind_of(text: &[u8]) -> Option<KeyFileKind> {
    if text.starts_with(SECRET_TAG.as_bytes()) {
        Some(KeyFileKind::Secret)
    } else if text.starts_with(PUBLIC_TAG.as_bytes()) {
        Some(KeyFileKind::Public)
    } else {
        None
    }
}

fn parse_line<'a>(text: &'a [u8], tag: &str) -> Result<&'a [u8], FormatError> {
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    let rest = text
        .strip_prefix(tag.as_bytes())
        .and_then(|r| r.strip_prefix(b" "))
        .ok_or(FormatError::BadText {
            what: "key file",
            reason: "does not start with the expected key tag",
        })?;
    Ok(rest)
}

/// Parses a secret key file.
pub fn parse_secret(text: &[u8]) -> Result<SigningKey, FormatError> {
    let hex = parse_line(text, SECRET_TAG)?;
    let seed = ObjectId::parse_hex(hex).map_err(|_| FormatError::BadText {
        what: "secret key",
        reason: "expected 64 hexadecimal digits",
    })?;
    Ok(SigningKey::from_bytes(seed.as_bytes()))
}

/// Parses a public key file. Rejects points that are not valid curve points.
pub fn parse_public(text: &[u8]) -> Result<VerifyingKey, FormatError> {
    let hex = parse_line(text, PUBLIC_TAG)?;
    let raw = ObjectId::parse_hex(hex).map_err(|_| FormatError::BadText {
        what: "public key",
        reason: "expected 64 hexadecimal digits",
    })?;
    let key = VerifyingKey::from_bytes(raw.as_bytes()).map_err(|_| FormatError::BadText {
        what: "public key",
        reason: "is not a valid ed25519 point",
    })?;
    if key.is_weak() {
        return Err(FormatError::BadText {
            what: "public key",
            reason: "is a weak (small-order) key",
        });
    }
    Ok(key)
}

/// The text of a secret key file.
pub fn format_secret(key: &SigningKey) -> String {
    line(SECRET_TAG, &key.to_bytes())
}

/// The text of a public key file.
pub fn format_public(key: &VerifyingKey) -> String {
    line(PUBLIC_TAG, key.as_bytes())
}

/// A short, stable name for a public key: the first 16 hex digits of its sha256.
pub fn fingerprint(key: &VerifyingKey) -> String {
    let hex = ObjectId::digest(key.as_bytes()).to_hex();
    String::from_utf8_lossy(&hex[..16]).into_owned()
}

fn line(tag: &str, bytes: &[u8; 32]) -> String {
    let hex = ObjectId::from_bytes(*bytes).to_hex();
    let mut s = String::with_capacity(tag.len() + 66);
    s.push_str(tag);
    s.push(' ');
    s.push_str(&String::from_utf8_lossy(&hex));
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let sk = SigningKey::from_bytes(&[7; 32]);
        let text = format_secret(&sk);
        assert_eq!(kind_of(text.as_bytes()), Some(KeyFileKind::Secret));
        assert_eq!(
            parse_secret(text.as_bytes()).unwrap().to_bytes(),
            sk.to_bytes()
        );
        let pk = format_public(&sk.verifying_key());
        assert_eq!(kind_of(pk.as_bytes()), Some(KeyFileKind::Public));
        assert_eq!(parse_public(pk.as_bytes()).unwrap(), sk.verifying_key());
        assert!(parse_secret(pk.as_bytes()).is_err());
        assert!(parse_public(text.as_bytes()).is_err());
        assert!(parse_public(b"berth-ed25519-public-v1 zz").is_err());
        assert!(parse_secret(b"").is_err());
    }

    #[test]
    fn rejects_small_order_public_key() {
        // The identity point (y = 1) has small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let text = line(PUBLIC_TAG, &identity);
        assert!(parse_public(text.as_bytes()).is_err());
    }
}
