//! Detached commit signatures.
//!
//! A signature covers the exact encoded bytes of a commit object. Signatures live in a
//! separate file so that adding one does not change the commit id.

use alloc::vec::Vec;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::FormatError;
use crate::limits::SIGNATURES_MAX;
use crate::wire::{self, Preamble, Reader};

const SIGS: Preamble = Preamble {
    magic: *b"BRTS",
    version: 1,
    what: "signature file",
};

/// The only algorithm defined in version 1.
const ALG_ED25519: u8 = 1;

/// One signature: who signed, and the signature bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigEntry {
    /// The signer's public key.
    pub key: [u8; 32],
    /// The ed25519 signature over the commit bytes.
    pub signature: [u8; 64],
}

/// The signatures on one commit, at most one per key, in key order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Signatures(Vec<SigEntry>);

impl Signatures {
    /// No signatures.
    pub const fn new() -> Self {
        Self(Vec::new())
    }

    /// The entries.
    pub fn entries(&self) -> &[SigEntry] {
        &self.0
    }

    /// Signs `signed_bytes` with `key`, replacing any earlier signature by the same key.
    pub fn sign(&mut self, signed_bytes: &[u8], key: &SigningKey) -> Result<(), FormatError> {
        let entry = SigEntry {
            key: key.verifying_key().to_bytes(),
            signature: key.sign(signed_bytes).to_bytes(),
        };
        match self.0.binary_search_by(|e| e.key.cmp(&entry.key)) {
            Ok(i) => {
                if let Some(slot) = self.0.get_mut(i) {
                    *slot = entry;
                }
            }
            Err(i) => {
                if self.0.len() >= SIGNATURES_MAX {
                    return Err(FormatError::TooLarge {
                        what: "signature count",
                        len: self.0.len() as u64 + 1,
                        limit: SIGNATURES_MAX as u64,
                    });
                }
                self.0.insert(i, entry);
            }
        }
        Ok(())
    }

    /// Verifies `signed_bytes` against the trusted keys with `verify_strict`.
    ///
    /// Succeeds with the first trusted key that signed. Fails if no trusted key signed,
    /// and also if any trusted key's signature is present but wrong: that is tampering,
    /// not a missing signature.
    pub fn verify(
        &self,
        signed_bytes: &[u8],
        trusted: &[VerifyingKey],
    ) -> Result<VerifyingKey, FormatError> {
        let mut good = None;
        for entry in &self.0 {
            let Some(key) = trusted.iter().find(|k| k.as_bytes() == &entry.key) else {
                continue;
            };
            let sig = Signature::from_bytes(&entry.signature);
            if key.verify_strict(signed_bytes, &sig).is_err() {
                return Err(FormatError::Signature {
                    reason: "a trusted key's signature does not match the commit",
                });
            }
            good.get_or_insert(*key);
        }
        good.ok_or(FormatError::Signature {
            reason: "not signed by any trusted key",
        })
    }

    /// The canonical encoding (see `docs/FORMAT.md`, "Signatures").
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(12 + self.0.len() * 97);
        SIGS.write(&mut w);
        wire::put_u32(&mut w, wire::len_u32(self.0.len()));
        for e in &self.0 {
            wire::put_u8(&mut w, ALG_ED25519);
            w.extend_from_slice(&e.key);
            w.extend_from_slice(&e.signature);
        }
        w
    }

    /// Parses exactly one signature file.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes, SIGS.what);
        SIGS.read(&mut r)?;
        let raw = r.u32()?;
        let count = Reader::len(u64::from(raw), SIGNATURES_MAX, "signature count")?;
        let mut out: Vec<SigEntry> = Vec::with_capacity(count);
        for _ in 0..count {
            let alg = r.u8()?;
            if alg != ALG_ED25519 {
                return Err(FormatError::Invalid {
                    what: "signature algorithm",
                    value: u64::from(alg),
                });
            }
            let entry = SigEntry {
                key: r.array()?,
                signature: r.array()?,
            };
            if out.last().is_some_and(|prev| prev.key >= entry.key) {
                return Err(FormatError::NotSorted {
                    what: "signature keys",
                });
            }
            out.push(entry);
        }
        r.finish()?;
        Ok(Self(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_tamper() {
        let a = SigningKey::from_bytes(&[1; 32]);
        let b = SigningKey::from_bytes(&[2; 32]);
        let msg = b"BRTC commit bytes";
        let mut sigs = Signatures::new();
        sigs.sign(msg, &a).unwrap();
        sigs.sign(msg, &a).unwrap();
        assert_eq!(sigs.entries().len(), 1, "re-signing replaces");
        let decoded = Signatures::decode(&sigs.encode()).unwrap();
        assert_eq!(decoded, sigs);
        assert_eq!(
            decoded.verify(msg, &[a.verifying_key()]).unwrap(),
            a.verifying_key()
        );
        assert!(
            decoded.verify(msg, &[b.verifying_key()]).is_err(),
            "wrong key"
        );
        assert!(
            decoded
                .verify(b"BRTC commit bytez", &[a.verifying_key()])
                .is_err(),
            "tampered message"
        );
        assert!(
            Signatures::new().verify(msg, &[a.verifying_key()]).is_err(),
            "unsigned"
        );
        let mut flipped = sigs.encode();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let flipped = Signatures::decode(&flipped).unwrap();
        assert!(
            flipped.verify(msg, &[a.verifying_key()]).is_err(),
            "bit flip in signature"
        );
    }

    /// Why `verify` uses `verify_strict`: under a small-order key (here the identity
    /// point), the signature R = identity, S = 0 satisfies the lax equation for every
    /// message. The strict check refuses it, so even a weak key that slipped past
    /// `key::parse_public` could not be forged under.
    #[test]
    fn a_forgery_under_a_small_order_key_passes_only_the_lax_check() {
        use ed25519_dalek::Verifier;
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let weak = VerifyingKey::from_bytes(&identity).unwrap();
        assert!(weak.is_weak());
        let mut forged = [0u8; 64];
        forged[0] = 1;
        let forged = Signature::from_bytes(&forged);
        for msg in [&b"BRTU anything"[..], b"something else"] {
            assert!(weak.verify(msg, &forged).is_ok(), "the lax check accepts");
            assert!(weak.verify_strict(msg, &forged).is_err());
        }
        let sigs = Signatures(alloc::vec![SigEntry {
            key: identity,
            signature: forged.to_bytes(),
        }]);
        assert!(sigs.verify(b"BRTU anything", &[weak]).is_err());
    }
}
