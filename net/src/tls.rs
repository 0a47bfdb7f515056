//! TLS for `https://` repositories and registries: rustls with the ring provider, the
//! server's certificate verified against the system's roots or a fleet's own CA.
//!
//! - [`Trust::System`] (the default): the roots OpenSSL would use, read at each run by
//!   rustls-native-certs: `SSL_CERT_FILE` and/or `SSL_CERT_DIR` when set, else the
//!   distribution's bundle (`/etc/ssl/certs/ca-certificates.crt` and `/etc/ssl/certs` on
//!   Debian, from the ca-certificates package). No roots are compiled in.
//! - [`Trust::Only`] (`--ca FILE`, repeatable): only the certificates in those PEM
//!   files. A fleet with its own CA then trusts nothing else for its repository; to
//!   trust the system's roots as well, name their bundle as one more `--ca`.
//!
//! A certificate that does not verify ends the run with one line naming the URL and the
//! cause (unknown issuer, another name, expired) before anything is written. An
//! `https://` repository is never followed to a plain `http://` redirect.
//!
//! Not done: client certificates, pinning, revocation (CRL, OCSP). What makes an update
//! trusted is its signature, checked whatever the transport; TLS keeps a fleet's
//! traffic private and a stranger from answering for its server. Certificates are
//! checked against the device's clock: a device that boots at 1970 without a network
//! time sees "not valid yet" until its clock is set.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use rustls::{CertificateError, RootCertStore};
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};

use crate::NetError;

/// Which certificate authorities an `https://` repository's certificate must chain to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Trust {
    /// The system's roots (`SSL_CERT_FILE`, `SSL_CERT_DIR`, else the distribution's).
    #[default]
    System,
    /// Only the certificates in these PEM files, instead of the system's roots.
    Only(Vec<PathBuf>),
}

impl Trust {
    /// For error messages: what was trusted.
    fn describe(&self) -> String {
        match self {
            Self::System => {
                // Name what the environment chose, since it replaces the distribution's.
                let set: Vec<String> = ["SSL_CERT_FILE", "SSL_CERT_DIR"]
                    .iter()
                    .filter_map(|v| {
                        std::env::var_os(v).map(|p| format!("{v}={}", p.to_string_lossy()))
                    })
                    .collect();
                if set.is_empty() {
                    "the system roots".to_owned()
                } else {
                    format!("the system roots, from {}", set.join(" and "))
                }
            }
            Self::Only(files) => format!(
                "only the CAs in {}",
                files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// The TLS settings for the repository at `url`, reading the roots now (so a missing or
/// broken `--ca` file is reported before any request).
pub fn config(url: &str, trust: &Trust) -> Result<TlsConfig, NetError> {
    let roots = if url.starts_with("https://") {
        match trust {
            Trust::System => system_roots(url)?,
            Trust::Only(files) => {
                let mut all = Vec::new();
                for f in files {
                    all.extend(read_ca(f)?);
                }
                all
            }
        }
    } else {
        if let Trust::Only(files) = trust {
            return Err(NetError::Access(format!(
                "--ca {}: {url} is not an https:// repository; a CA applies to https:// only",
                files
                    .first()
                    .map_or(String::new(), |f| f.display().to_string())
            )));
        }
        // A plain-http repository speaks no TLS. ureq must still be given roots (it
        // panics without), so it gets none: a redirect to https:// fails its handshake
        // and `explain` says to use the https:// URL itself.
        Vec::new()
    };
    let roots: Vec<Certificate<'static>> = roots
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    Ok(TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        // ring, given explicitly: ureq's own `rustls` feature would compile Mozilla's
        // roots in as well. (ureq marks this setter unversioned: it follows rustls 0.23,
        // which Cargo.lock pins.)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .root_certs(RootCerts::new_with_certs(&roots))
        .build())
}

/// The system's roots; an error when there are none, since nothing could verify.
fn system_roots(url: &str) -> Result<Vec<CertificateDer<'static>>, NetError> {
    let found = rustls_native_certs::load_native_certs();
    if found.certs.is_empty() {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_owned(), ToString::to_string);
        return Err(NetError::Access(format!(
            "{url}: no system root certificates to verify it with ({why}); install ca-certificates, set SSL_CERT_FILE, or pass --ca FILE"
        )));
    }
    // Errors beside certificates (an unreadable file in SSL_CERT_DIR, say) are left as
    // OpenSSL leaves them: what loaded is used, and a CA that did not load shows up as an
    // unknown issuer whose message says which roots were trusted.
    Ok(found.certs)
}

/// The certificates of one `--ca` PEM file, each checked to be usable as a root.
fn read_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, NetError> {
    let bad = |why: String| NetError::Access(format!("--ca {}: {why}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM bundle: {e}")))?;
    if certs.is_empty() {
        return Err(bad(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned(),
        ));
    }
    let mut check = RootCertStore::empty();
    for (i, c) in certs.iter().enumerate() {
        check
            .add(c.clone())
            .map_err(|e| bad(format!("certificate {} cannot be a root: {e}", i + 1)))?;
    }
    Ok(certs)
}

/// The rustls error inside a ureq error, if any: ureq hands handshake failures back as
/// I/O errors wrapping it.
fn rustls_error(e: &ureq::Error) -> Option<&rustls::Error> {
    match e {
        ureq::Error::Rustls(r) => Some(r),
        ureq::Error::Io(io) => io.get_ref()?.downcast_ref::<rustls::Error>(),
        _ => None,
    }
}

/// A TLS failure said plainly (`None` when `e` is not about TLS): a certificate does not
/// get better by retrying, so callers stop at once.
pub fn explain(e: &ureq::Error, url: &str, trust: &Trust) -> Option<String> {
    if let ureq::Error::Tls(why) = e {
        return Some(format!("TLS: {why}"));
    }
    let tls = rustls_error(e)?;
    if !url.starts_with("https://") {
        return Some(format!(
            "redirected to an https:// address, which a plain-http repository does not follow; give berth that https:// URL ({tls})"
        ));
    }
    let cause = match tls {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => format!(
                "the server's certificate is not issued by a trusted certificate authority (unknown issuer; trusted: {})",
                trust.describe()
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("the server's certificate is for another name: {c}")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                format!("{c}; is this device's clock set?")
            }
            _ => format!("the server's certificate is refused: {c}"),
        },
        other => other.to_string(),
    };
    Some(format!("TLS: {cause}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_files_are_checked_before_any_request() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(
            &junk,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let missing = dir.path().join("missing.pem");
        for (url, trust, needle) in [
            (
                "https://h/",
                Trust::Only(vec![missing.clone()]),
                "missing.pem: No such file",
            ),
            (
                "https://h/",
                Trust::Only(vec![empty.clone()]),
                "empty.pem: holds no PEM certificate",
            ),
            (
                "https://h/",
                Trust::Only(vec![junk.clone()]),
                "junk.pem: certificate 1 cannot be a root",
            ),
            (
                "http://h/",
                Trust::Only(vec![empty.clone()]),
                "http://h/ is not an https:// repository",
            ),
        ] {
            let err = config(url, &trust).unwrap_err().to_string();
            assert!(err.contains(needle), "{trust:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
        // A plain-http repository needs no roots at all.
        assert!(config("http://h/", &Trust::System).is_ok());
    }
}
