//! Updates from an OCI registry (`berth update oci://REGISTRY/NAME:TAG`), pushed by
//! `berth-image push` (`docs/FORMAT.md`, "OCI registries").
//!
//! The tag's manifest maps each file of the static repository (its layer's title) to a
//! blob; everything else is the static repository's path: the channel pointer (the tag
//! is the channel), verified and checked for freshness, then a delta, the objects or the
//! full update, each fetched as a blob with `Range` resume, bounded by the lengths the
//! pointer signs and checked against its hashes. The manifest itself is not trusted: it
//! is bounded by [`oci::MANIFEST_MAX`], and a manifest that points a path at the wrong
//! blob only makes a download fail its check.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufReader, Read};

use format::ObjectId;
use format::oci::{self, Reference};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::UpdaterError;

/// Each path of the repository (a layer's title) and the sha256 of its blob: all that is
/// kept of the manifests. A `BTreeMap` of boxed titles and 32-byte digests costs about
/// what the JSON of a minimal layer does, and never doubles while it grows as a hash
/// table's resize does.
#[derive(Debug)]
pub(crate) struct Blobs {
    /// `http(s)://REGISTRY/v2/NAME`.
    api: String,
    paths: BTreeMap<Box<str>, ObjectId>,
}

impl Blobs {
    /// The blob URL of the repository's path `rel`, if a manifest names it.
    pub(crate) fn url(&self, rel: &str) -> Option<String> {
        self.paths
            .get(rel)
            .map(|d| format!("{}/blobs/sha256:{d}", self.api))
    }
}

/// The keys of a manifest or an index that are read; every other member is skipped
/// with [`IgnoredAny`], which allocates nothing.
#[derive(serde::Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Key {
    Layers,
    /// An image index's manifests (a tag with more layers than one manifest takes).
    Manifests,
    #[serde(other)]
    Other,
}

/// A manifest or an index, decoded as it is read: each titled layer goes into `paths`;
/// the value is the index's manifests.
struct Document<'a> {
    paths: &'a mut BTreeMap<Box<str>, ObjectId>,
}

impl<'de> DeserializeSeed<'de> for Document<'_> {
    type Value = Vec<ObjectId>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Document<'_> {
    type Value = Vec<ObjectId>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an OCI manifest or index")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let paths = self.paths;
        let mut children = Vec::new();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Layers => map.next_value_seed(Layers { paths: &mut *paths })?,
                Key::Manifests => children = map.next_value::<Children>()?.0,
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(children)
    }
}

/// A manifest's layers, each put into `paths` as it is read.
struct Layers<'a> {
    paths: &'a mut BTreeMap<Box<str>, ObjectId>,
}

impl<'de> DeserializeSeed<'de> for Layers<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Layers<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of layers")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(l) = seq.next_element::<Layer>()? {
            let Some(title) = l.annotations.0 else {
                continue;
            };
            let digest = digest(&l.digest).ok_or_else(|| {
                de::Error::custom(format!(
                    "layer {title:?} has digest {:?}, not sha256:<64 hex digits>",
                    l.digest
                ))
            })?;
            self.paths.insert(title.into_boxed_str(), digest);
        }
        Ok(())
    }
}

#[derive(serde::Deserialize)]
struct Layer {
    digest: String,
    #[serde(default)]
    annotations: Title,
}

/// A layer's annotations, of which only the title is kept: the others are skipped
/// unread, so a layer with millions of annotations costs nothing but its title.
#[derive(Default)]
struct Title(Option<String>);

#[derive(serde::Deserialize)]
#[serde(field_identifier)]
enum AnnotationKey {
    #[serde(rename = "org.opencontainers.image.title")]
    Title,
    #[serde(other)]
    Other,
}

impl<'de> serde::Deserialize<'de> for Title {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Title;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of annotations")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Title, A::Error> {
                let mut title = None;
                while let Some(key) = map.next_key::<AnnotationKey>()? {
                    match key {
                        AnnotationKey::Title => title = Some(map.next_value::<String>()?),
                        AnnotationKey::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(Title(title))
            }
        }
        d.deserialize_map(V)
    }
}

/// An index's manifests: their digests, at most [`oci::MANIFESTS_MAX`].
struct Children(Vec<ObjectId>);

#[derive(serde::Deserialize)]
struct Child {
    digest: String,
}

impl<'de> serde::Deserialize<'de> for Children {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Children;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of manifests")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Children, A::Error> {
                let mut out = Vec::new();
                while let Some(c) = seq.next_element::<Child>()? {
                    if out.len() == oci::MANIFESTS_MAX {
                        return Err(de::Error::custom(format!(
                            "the index names more than {} manifests",
                            oci::MANIFESTS_MAX
                        )));
                    }
                    out.push(digest(&c.digest).ok_or_else(|| {
                        de::Error::custom(format!(
                            "the index names manifest {:?}, not sha256:<64 hex digits>",
                            c.digest
                        ))
                    })?);
                }
                Ok(Children(out))
            }
        }
        d.deserialize_seq(V)
    }
}

/// Whether `d` is `sha256:` and 64 lowercase hex digits (it goes into a URL).
fn is_digest(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')))
}

/// The sha256 of a digest `sha256:<64 lowercase hex digits>`.
fn digest(d: &str) -> Option<ObjectId> {
    if !is_digest(d) {
        return None;
    }
    d.strip_prefix("sha256:")
        .and_then(|h| ObjectId::parse_hex(h.as_bytes()).ok())
}

/// A reader that fails once more than `left` bytes have come through it.
struct Bounded<R> {
    inner: R,
    left: u64,
    over: bool,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let Some(left) = self.left.checked_sub(n as u64) else {
            self.over = true;
            return Err(io::Error::other("over the limit"));
        };
        self.left = left;
        Ok(n)
    }
}

/// A GET of a manifest URL, authorized (and answering a `401`) as the caller does.
pub(crate) type GetManifest<'a> =
    dyn Fn(&str) -> Result<ureq::http::Response<ureq::Body>, UpdaterError> + 'a;

/// Reads the manifest or index at `reference` (the tag or a digest) as it arrives, at
/// most `budget` bytes, which it spends: its titled layers go into `paths`; returns the
/// manifests an index names.
fn manifest(
    get: &GetManifest<'_>,
    r: &Reference,
    reference: &str,
    budget: &mut u64,
    paths: &mut BTreeMap<Box<str>, ObjectId>,
) -> Result<Vec<ObjectId>, UpdaterError> {
    let fail = |what: String| UpdaterError::State(format!("{r}: {what}"));
    let mut resp = get(&format!("{}/manifests/{reference}", r.api()))?;
    match resp.status().as_u16() {
        200 => {}
        404 => {
            return Err(fail(format!(
                "no manifest {reference} in the registry (HTTP 404)"
            )));
        }
        s => return Err(fail(format!("manifest {reference}: HTTP {s}"))),
    }
    // Decoded from the stream, never held whole: only what `Document` keeps stays.
    let mut body = Bounded {
        inner: resp.body_mut().as_reader(),
        left: *budget,
        over: false,
    };
    let mut de = serde_json::Deserializer::from_reader(BufReader::new(&mut body));
    let decoded = Document { paths }
        .deserialize(&mut de)
        .and_then(|children| de.end().map(|()| children));
    drop(de);
    let children = decoded.map_err(|e| {
        if body.over {
            fail(format!(
                "manifest {reference}: over the limit (the manifests may take {} bytes in all)",
                oci::MANIFEST_MAX
            ))
        } else {
            fail(format!("manifest {reference}: {e}"))
        }
    })?;
    *budget = body.left;
    Ok(children)
}

/// Reads the tag's manifest, or its index and the manifests that names: the blob of
/// each path of the repository.
pub(crate) fn blobs(get: &GetManifest<'_>, r: &Reference) -> Result<Blobs, UpdaterError> {
    let mut budget = oci::MANIFEST_MAX as u64;
    let mut paths = BTreeMap::new();
    let children = manifest(get, r, &r.tag, &mut budget, &mut paths)?;
    for c in &children {
        // One level: a manifest's own `manifests` are not followed.
        manifest(get, r, &format!("sha256:{c}"), &mut budget, &mut paths)?;
    }
    Ok(Blobs {
        api: r.api(),
        paths,
    })
}

/// The channel of a repository URL: `--channel` for `http://`; the tag for `oci://`
/// (where `--channel`, if given, must name it).
pub fn channel_for(url: &str, channel: Option<&str>) -> Result<String, UpdaterError> {
    if url.starts_with("oci://") {
        let r = Reference::parse(url).map_err(|e| UpdaterError::State(format!("{url}: {e}")))?;
        return match channel {
            Some(c) if c != r.tag => Err(UpdaterError::State(format!(
                "{url}: --channel {c} differs from the tag {}, which is the channel",
                r.tag
            ))),
            _ => Ok(r.tag),
        };
    }
    channel
        .map(str::to_owned)
        .ok_or_else(|| UpdaterError::State(format!("{url}: a repository URL needs --channel NAME")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `json` as a manifest or index: the paths it maps, and its manifests.
    fn decode(json: &str) -> Result<(Vec<(String, String)>, usize), String> {
        let mut paths = BTreeMap::new();
        let mut de = serde_json::Deserializer::from_str(json);
        let children = Document { paths: &mut paths }
            .deserialize(&mut de)
            .and_then(|c| de.end().map(|()| c))
            .map_err(|e| e.to_string())?;
        let paths = paths
            .into_iter()
            .map(|(k, v)| (k.into_string(), v.to_string()))
            .collect();
        Ok((paths, children.len()))
    }

    #[test]
    fn manifests_keep_titles_and_digests_only() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let hex = "ab".repeat(32);
        let child = format!(r#"{{"digest":"{d}","mediaType":"m","size":1}}"#);
        let many = vec![child.as_str(); oci::MANIFESTS_MAX + 1].join(",");
        let max = vec![child.as_str(); oci::MANIFESTS_MAX].join(",");
        for (json, want) in [
            (
                format!(
                    r#"{{"schemaVersion":2,"config":{{"x":[1,2]}},"layers":[{{"digest":"{d}","annotations":{{"a":"1","org.opencontainers.image.title":"channels/x","b":{{"c":[]}}}}}},{{"digest":"nonsense"}},{{"digest":"nonsense","annotations":{{"a":"b"}}}}]}}"#
                ),
                Ok((vec![("channels/x".to_owned(), hex.clone())], 0)),
            ),
            (format!(r#"{{"manifests":[{max}]}}"#), Ok((vec![], oci::MANIFESTS_MAX))),
            (
                format!(r#"{{"manifests":[{many}]}}"#),
                Err("more than 256 manifests"),
            ),
            (
                r#"{"manifests":[{"digest":"sha256:AB"}]}"#.to_owned(),
                Err("not sha256:<64 hex digits>"),
            ),
            (
                r#"{"layers":[{"digest":"x","annotations":{"org.opencontainers.image.title":"p"}}]}"#
                    .to_owned(),
                Err(r#"layer "p" has digest "x""#),
            ),
            (r#"{"layers":[{"annotations":{}}]}"#.to_owned(), Err("missing field `digest`")),
            (r#"{"layers":{}}"#.to_owned(), Err("a list of layers")),
            ("[]".to_owned(), Err("an OCI manifest or index")),
            ("{} trailing".to_owned(), Err("trailing characters")),
        ] {
            match (decode(&json), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{json}"),
                (Err(e), Err(needle)) => assert!(e.contains(needle), "{json}: {e}"),
                (got, want) => panic!("{json}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn digests_and_channels() {
        assert!(is_digest(&format!("sha256:{}", "ab".repeat(32))));
        for bad in [
            "sha256:".to_owned(),
            format!("sha256:{}", "AB".repeat(32)),
            format!("sha512:{}", "ab".repeat(32)),
            format!("sha256:{}/../x", "ab".repeat(32)),
        ] {
            assert!(!is_digest(&bad), "{bad}");
        }
        let oci = "oci://127.0.0.1:5000/os:stable";
        assert_eq!(channel_for(oci, None).unwrap(), "stable");
        assert_eq!(channel_for(oci, Some("stable")).unwrap(), "stable");
        assert!(channel_for(oci, Some("beta")).is_err());
        assert!(channel_for("http://h/r", None).is_err());
        assert_eq!(channel_for("http://h/r", Some("beta")).unwrap(), "beta");
    }
}
