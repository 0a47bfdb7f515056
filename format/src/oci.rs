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

    /// The registry's API root: `http://REGISTRY/v2/NAME` or `https://…`.
    pub fn api(&self) -> String {
        let scheme = if self.is_loopback() { "http" } else { "https" };
        format!("{scheme}://{}/v2/{}", self.registry, self.name)
    }
}

impl core::fmt::Display for Reference {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "oci://{}/{}:{}", self.registry, self.name, self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
