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

use std::collections::HashMap;

use format::oci::{self, Reference};

use crate::UpdaterError;

#[derive(serde::Deserialize)]
struct Manifest {
    #[serde(default)]
    layers: Vec<Layer>,
    /// An image index's manifests (a tag with more layers than one manifest takes).
    #[serde(default)]
    manifests: Vec<Child>,
}

#[derive(serde::Deserialize)]
struct Layer {
    digest: String,
    #[serde(default)]
    annotations: HashMap<String, String>,
}

#[derive(serde::Deserialize)]
struct Child {
    digest: String,
}

/// Whether `d` is `sha256:` and 64 lowercase hex digits (it goes into a URL).
fn is_digest(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')))
}

/// A GET of a manifest URL, authorized (and answering a `401`) as the caller does.
pub(crate) type GetManifest<'a> =
    dyn Fn(&str) -> Result<ureq::http::Response<ureq::Body>, UpdaterError> + 'a;

/// Reads the manifest or index at `reference` (the tag or a digest), at most `budget`
/// bytes, which it spends.
fn manifest(
    get: &GetManifest<'_>,
    r: &Reference,
    reference: &str,
    budget: &mut u64,
) -> Result<Manifest, UpdaterError> {
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
    let body = resp
        .body_mut()
        .with_config()
        .limit(*budget)
        .read_to_vec()
        .map_err(|e| {
            fail(format!(
                "manifest {reference}: {e} (the manifests may take {} bytes in all)",
                oci::MANIFEST_MAX
            ))
        })?;
    *budget -= body.len() as u64;
    serde_json::from_slice(&body).map_err(|e| fail(format!("manifest {reference}: {e}")))
}

/// Reads the tag's manifest, or its index and the manifests that names: the blob URL of
/// each path of the repository.
pub(crate) fn blobs(
    get: &GetManifest<'_>,
    r: &Reference,
) -> Result<HashMap<String, String>, UpdaterError> {
    let fail = |what: String| UpdaterError::State(format!("{r}: {what}"));
    let mut budget = oci::MANIFEST_MAX as u64;
    let top = manifest(get, r, &r.tag, &mut budget)?;
    let mut layers = top.layers;
    if top.manifests.len() > oci::MANIFESTS_MAX {
        return Err(fail(format!(
            "the index names {} manifests, over the limit of {}",
            top.manifests.len(),
            oci::MANIFESTS_MAX
        )));
    }
    for c in &top.manifests {
        if !is_digest(&c.digest) {
            return Err(fail(format!(
                "the index names manifest {:?}, not sha256:<64 hex digits>",
                c.digest
            )));
        }
        // One level: a manifest's own `manifests` are not followed.
        layers.extend(manifest(get, r, &c.digest, &mut budget)?.layers);
    }
    let api = r.api();
    let mut out = HashMap::new();
    for l in layers {
        let Some(title) = l.annotations.get(oci::TITLE) else {
            continue;
        };
        if !is_digest(&l.digest) {
            return Err(fail(format!(
                "manifest: layer {title:?} has digest {:?}, not sha256:<64 hex digits>",
                l.digest
            )));
        }
        out.insert(title.clone(), format!("{api}/blobs/{}", l.digest));
    }
    Ok(out)
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
