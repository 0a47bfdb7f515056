//! OCI registry references and the names Berth gives its artifacts
//! (`docs/FORMAT.md`, "OCI registries").
//!
//! A static repository is pushed as one OCI artifact per channel: the tag is the
//! channel, every file of the repository is a blob whose layer carries its path in the
//! `org.opencontainers.image.title` annotation. The manifest is not trusted: it only
//! says where the files are; the channel pointer's signature and the lengths and
//! hashes it signs still check everything a device fetches.

use alloc::format;
use alloc::string::{String, ToString};

use crate::FormatError;

/// `artifactType` of a Berth repository manifest.
pub const ARTIFACT_TYPE: &str = "application/vnd.berth.repository.v1";
/// Media type of the config blob (the static repository's `config` file).
pub const CONFIG_TYPE: &str = "application/vnd.berth.repository.config.v1";
/// Media type of every other file of the repository.
pub const FILE_TYPE: &str = "application/vnd.berth.file.v1";
/// The annotation that names a layer's path in the repository.
pub const TITLE: &str = "org.opencontainers.image.title";
/// The manifest's media type.
pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The media type of an image index: a tag whose files need more layers than one
/// manifest takes points at one, which names several manifests.
pub const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// The `Accept` header of a manifest request: a manifest or an index.
pub const MANIFEST_ACCEPT: &str =
    "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";
/// Most manifests one index names.
pub const MANIFESTS_MAX: usize = 256;
/// Most bytes of manifests (an index and the manifests it names) a device reads; they
/// list every object of a commit.
pub const MANIFEST_MAX: usize = 32 << 20;

/// `REGISTRY/NAME:TAG`, as in `oci://registry.example.com:5000/fleet/device:stable`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]`.
    pub registry: String,
    /// The repository name: lowercase components separated by `/`.
    pub name: String,
    /// The tag, which is the channel's name.
    pub tag: String,
}

fn bad(reason: &'static str) -> FormatError {
    FormatError::BadText {
        what: "OCI reference",
        reason,
    }
}

/// One path component of a repository name, as the distribution spec says:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn check_component(c: &str) -> bool {
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let b = c.as_bytes();
    if !b.first().is_some_and(|&x| alnum(x)) || !b.last().is_some_and(|&x| alnum(x)) {
        return false;
    }
    // Every run of non-alphanumeric bytes is one separator.
    b.split(|&x| alnum(x))
        .filter(|sep| !sep.is_empty())
        .all(|sep| matches!(sep, b"." | b"_" | b"__") || sep.iter().all(|&x| x == b'-'))
}

impl Reference {
    /// Parses `REGISTRY/NAME:TAG` (with or without `oci://`). The tag must be a valid
    /// channel name ([`crate::channel::check_name`]).
    pub fn parse(text: &str) -> Result<Self, FormatError> {
        let rest = text.strip_prefix("oci://").unwrap_or(text);
        let (registry, path) = rest.split_once('/').ok_or(bad("needs REGISTRY/NAME:TAG"))?;
        if registry.is_empty()
            || !registry
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b':' | b'[' | b']'))
        {
            return Err(bad(
                "the registry must be a host name or address, with an optional :port",
            ));
        }
        let (name, tag) = path
            .rsplit_once(':')
            .ok_or(bad("needs a :TAG (the channel) after the name"))?;
        if name.is_empty() || name.len() > 255 || !name.split('/').all(check_component) {
            return Err(bad(
                "the name must be lowercase components of a-z 0-9 . _ - separated by /",
            ));
        }
        crate::channel::check_name(tag)?;
        // OCI tags start with a letter, a digit or `_`.
        if tag.starts_with('-') {
            return Err(bad("the tag must not start with '-'"));
        }
        Ok(Self {
            registry: registry.to_string(),
            name: name.to_string(),
            tag: tag.to_string(),
        })
    }

    /// Whether the registry is this machine (`localhost`, `127.0.0.1`, `[::1]`), which
    /// is reached over plain HTTP; every other registry over HTTPS.
    pub fn is_loopback(&self) -> bool {
        let host = match self.registry.rsplit_once(':') {
            Some((h, port)) if !port.contains(']') => h,
            _ => self.registry.as_str(),
        };
        matches!(host, "localhost" | "127.0.0.1" | "[::1]")
    }

    /// The repository's API root: `http://REGISTRY/v2/NAME` or `https://…`.
    pub fn api(&self) -> String {
        format!("{}{}", self.root(), self.name)
    }

    /// The registry's API root, `http://REGISTRY/v2/` or `https://…`: what answers
    /// whether and how to authenticate.
    pub fn root(&self) -> String {
        let scheme = if self.is_loopback() { "http" } else { "https" };
        format!("{scheme}://{}/v2/", self.registry)
    }
}

impl core::fmt::Display for Reference {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "oci://{}/{}:{}", self.registry, self.name, self.tag)
    }
}

/// What a registry's `401` asks for (`WWW-Authenticate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm="…"`: the credentials on every request.
    Basic,
    /// `Bearer realm="…",service="…",scope="…"`: a token from `realm` (the distribution
    /// spec's token authentication), then `Authorization: Bearer TOKEN`.
    Bearer {
        /// Where tokens come from.
        realm: String,
        /// The `service` parameter to pass back, if any.
        service: Option<String>,
    },
}

impl Challenge {
    /// Parses a `WWW-Authenticate` value; `None` for a scheme Berth does not speak.
    pub fn parse(header: &str) -> Option<Self> {
        let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
        let mut realm = None;
        let mut service = None;
        // key="value" pairs separated by commas (values here hold no quotes or commas).
        for part in params.split(',') {
            let Some((k, v)) = part.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"').to_string();
            match k.trim().to_ascii_lowercase().as_str() {
                "realm" => realm = Some(v),
                "service" => service = Some(v),
                _ => {}
            }
        }
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => Some(Self::Basic),
            "bearer" => Some(Self::Bearer {
                realm: realm.filter(|r| r.starts_with("http://") || r.starts_with("https://"))?,
                service,
            }),
            _ => None,
        }
    }

    /// The token request for `scope` (e.g. `repository:NAME:pull`), for a Bearer
    /// challenge.
    pub fn token_url(&self, scope: &str) -> Option<String> {
        let Self::Bearer { realm, service } = self else {
            return None;
        };
        let mut url = realm.clone();
        url.push(if url.contains('?') { '&' } else { '?' });
        if let Some(s) = service {
            url.push_str("service=");
            url.push_str(&encode(s));
            url.push('&');
        }
        url.push_str("scope=");
        url.push_str(&encode(scope));
        Some(url)
    }
}

/// Percent-encodes a query value (everything but unreserved characters).
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let hex = b"0123456789ABCDEF";
            out.push('%');
            out.push(char::from(hex[usize::from(b >> 4)]));
            out.push(char::from(hex[usize::from(b & 15)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_accept_header_names_both_types() {
        assert_eq!(MANIFEST_ACCEPT, format!("{MANIFEST_TYPE}, {INDEX_TYPE}"));
    }

    #[test]
    fn challenges() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:os:pull""#,
        )
        .unwrap();
        assert_eq!(
            c.token_url("repository:fleet/os:pull").unwrap(),
            "https://auth.example.com/token?service=registry.example.com&scope=repository%3Afleet%2Fos%3Apull"
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Basic"), Some(Challenge::Basic));
        assert_eq!(Challenge::parse("Negotiate abc"), None);
        // A realm that is not an http(s) URL is not followed.
        assert_eq!(
            Challenge::parse(r#"Bearer realm="file:///etc/shadow""#),
            None
        );
        assert_eq!(Challenge::parse("Bearer"), None);
    }

    #[test]
    fn parses_and_refuses() {
        let r = Reference::parse("oci://127.0.0.1:5000/fleet/device:stable").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.name.as_str(), r.tag.as_str()),
            ("127.0.0.1:5000", "fleet/device", "stable")
        );
        assert!(r.is_loopback());
        assert_eq!(r.api(), "http://127.0.0.1:5000/v2/fleet/device");
        assert_eq!(r.to_string(), "oci://127.0.0.1:5000/fleet/device:stable");
        let r = Reference::parse("registry.example.com/os:beta-2").unwrap();
        assert!(!r.is_loopback());
        assert_eq!(r.api(), "https://registry.example.com/v2/os");
        assert!(
            Reference::parse("localhost:5000/os:stable")
                .unwrap()
                .is_loopback()
        );
        assert!(
            Reference::parse("[::1]:5000/os:stable")
                .unwrap()
                .is_loopback()
        );
        assert!(Reference::parse("r/a--b/c__d/e.f:stable").is_ok());
        for bad in [
            "",
            "registry",
            "registry/os",
            "/os:stable",
            "registry/OS:stable",
            "registry/os:Stable",
            "registry/os:",
            "registry/a//b:stable",
            "registry/a._b:stable",
            "registry/a___b:stable",
            "registry/-a:stable",
            "reg istry/os:stable",
            "registry/os:.hidden",
            "registry/os:-x",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?}");
        }
    }
}
