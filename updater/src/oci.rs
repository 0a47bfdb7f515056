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
}

#[derive(serde::Deserialize)]
struct Layer {
    digest: String,
    #[serde(default)]
    annotations: HashMap<String, String>,
}

/// Whether `d` is `sha256:` and 64 lowercase hex digits (it goes into a URL).
fn is_digest(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')))
}

/// Reads the tag's manifest: the blob URL of each path of the repository.
/// `why` says what went wrong with a request (TLS failures in plain words).
pub(crate) fn blobs(
    agent: &ureq::Agent,
    r: &Reference,
    why: &dyn Fn(&ureq::Error) -> String,
) -> Result<HashMap<String, String>, UpdaterError> {
    let fail = |why: String| UpdaterError::State(format!("{r}: {why}"));
    let api = r.api();
    let mut resp = agent
        .get(format!("{api}/manifests/{}", r.tag))
        .header("Accept", oci::MANIFEST_TYPE)
        .config()
        // A registry that stops sending is cut.
        .timeout_recv_body(Some(std::time::Duration::from_mins(1)))
        .build()
        .call()
        .map_err(|e| fail(why(&e)))?;
    match resp.status().as_u16() {
        200 => {}
        404 => return Err(fail("no such tag in the registry (HTTP 404)".into())),
        s => return Err(fail(format!("manifest: HTTP {s}"))),
    }
    let body = resp
        .body_mut()
        .with_config()
        .limit(oci::MANIFEST_MAX as u64)
        .read_to_vec()
        .map_err(|e| fail(format!("manifest: {e}")))?;
    let m: Manifest = serde_json::from_slice(&body).map_err(|e| fail(format!("manifest: {e}")))?;
    let mut out = HashMap::new();
    for l in m.layers {
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
