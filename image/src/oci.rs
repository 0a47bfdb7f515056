//! `berth-image push`: a static repository as an OCI artifact (`docs/FORMAT.md`, "OCI
//! registries").
//!
//! The release is published into a scratch static repository exactly as `publish` does;
//! the tag's previous channel pointer is read from the registry first, so the serial
//! goes on growing and the previous commit gets a delta. Every file of the scratch
//! repository is then uploaded as a blob (those the registry has already are skipped),
//! and the manifest naming them, each layer titled with its path, is put last: a device
//! never sees a tag that names a missing blob.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use format::ObjectId;
use format::oci::{self, Reference};
use net::http::{Client, Response, Timeouts, with_auth};
use net::tls::Trust;

use crate::publish::{self, Release};

/// What `push` did.
#[derive(Debug, serde::Serialize)]
pub struct PushOutput {
    pub reference: String,
    pub serial: u64,
    pub commit: String,
    /// Blobs the manifest names (the config and every file).
    pub blobs: usize,
    /// Of those, the ones uploaded (the registry lacked them).
    pub uploaded: usize,
    pub uploaded_bytes: u64,
    pub manifest_digest: String,
}

/// How `push` reaches the registry: whose certificates it trusts for HTTPS, and the
/// credentials file, if the registry wants credentials.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub trust: Trust,
    pub registry_auth: Option<PathBuf>,
}

/// A registry's API for one repository name.
struct Registry {
    r: Reference,
    api: String,
    client: Client,
}

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", ObjectId::digest(bytes))
}

impl Registry {
    /// Connects to the registry of `r` and, if it asks for credentials, gets a token
    /// for `kind` (or takes the Basic credentials).
    fn new(r: Reference, access: &Access, kind: net::auth::Access) -> Result<Self> {
        let api = r.api();
        let timeouts = Timeouts {
            response: Duration::from_mins(2),
            per_read: None,
        };
        let basic = access
            .registry_auth
            .as_deref()
            .map(|f| net::auth::credentials(f, &r))
            .transpose()?;
        let client = Client::new(&api, &access.trust, timeouts)?.authorize(&r, basic, kind)?;
        Ok(Self { r, api, client })
    }

    fn fail(&self, what: &str, why: impl std::fmt::Display) -> anyhow::Error {
        anyhow::anyhow!("{}: {what}: {why}", self.r)
    }

    /// Sends the request that `make` builds for `url` through the client (credentials
    /// to the registry's own origin only, renewed once on a `401`); a `401` after that
    /// is the registry refusing the credentials.
    fn send(
        &self,
        url: &str,
        what: &str,
        make: impl Fn(&ureq::Agent, Option<&str>) -> Result<Response, ureq::Error>,
    ) -> Result<Response> {
        let resp = self
            .client
            .send(url, &format!("{}: {what}", self.r), make)?;
        if resp.status().as_u16() == 401 {
            return Err(self.fail(
                what,
                "HTTP 401: the registry refuses these credentials (see --registry-auth)",
            ));
        }
        Ok(resp)
    }

    /// The manifest (or index) at `reference` (the tag, or a digest), if there is one.
    fn manifest(&self, reference: &str) -> Result<Option<serde_json::Value>> {
        let url = format!("{}/manifests/{reference}", self.api);
        let mut resp = self.send(&url, "get the manifest", |agent, auth| {
            with_auth(agent.get(&url), auth)
                .header("Accept", oci::MANIFEST_ACCEPT)
                .call()
        })?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            s => return Err(self.fail("get the manifest", format!("HTTP {s}"))),
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(oci::MANIFEST_MAX as u64)
            .read_to_vec()
            .map_err(|e| self.fail("read the manifest", e))?;
        Ok(Some(
            serde_json::from_slice(&body).map_err(|e| self.fail("the manifest", e))?,
        ))
    }

    fn blob(&self, digest: &str, max: u64) -> Result<Vec<u8>> {
        let url = format!("{}/blobs/{digest}", self.api);
        let mut resp = self.send(&url, digest, |agent, auth| {
            with_auth(agent.get(&url), auth).call()
        })?;
        if resp.status().as_u16() != 200 {
            return Err(self.fail(digest, format!("HTTP {}", resp.status().as_u16())));
        }
        resp.body_mut()
            .with_config()
            .limit(max)
            .read_to_vec()
            .map_err(|e| self.fail(digest, e))
    }

    fn has_blob(&self, digest: &str) -> Result<bool> {
        let url = format!("{}/blobs/{digest}", self.api);
        let resp = self.send(&url, digest, |agent, auth| {
            with_auth(agent.head(&url), auth).call()
        })?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            s => Err(self.fail(digest, format!("HTTP {s}"))),
        }
    }

    /// Uploads `bytes` as the blob `digest`: a monolithic upload (POST, then PUT).
    fn upload(&self, digest: &str, bytes: &[u8]) -> Result<()> {
        let url = format!("{}/blobs/uploads/", self.api);
        let resp = self.send(&url, "start an upload", |agent, auth| {
            with_auth(agent.post(&url), auth).send_empty()
        })?;
        if resp.status().as_u16() != 202 {
            return Err(self.fail(
                "start an upload",
                format!("HTTP {}", resp.status().as_u16()),
            ));
        }
        let location = resp
            .headers()
            .get("Location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| self.fail("start an upload", "no Location header"))?;
        let mut put = resolve(&url, location);
        put.push(if put.contains('?') { '&' } else { '?' });
        put.push_str("digest=");
        put.push_str(digest);
        // Without this content type, the registry's form parsing swallows the body.
        let resp = self.send(&put, digest, |agent, auth| {
            with_auth(agent.put(&put), auth)
                .header("Content-Type", "application/octet-stream")
                .send(bytes)
        })?;
        if resp.status().as_u16() != 201 {
            return Err(self.fail(digest, format!("upload: HTTP {}", resp.status().as_u16())));
        }
        Ok(())
    }

    /// Puts a manifest (or an index, `media_type`) at `reference` (a tag or a digest).
    fn put_manifest(&self, reference: &str, media_type: &str, body: &[u8]) -> Result<()> {
        let url = format!("{}/manifests/{reference}", self.api);
        let resp = self.send(&url, "put the manifest", |agent, auth| {
            with_auth(agent.put(&url), auth)
                .header("Content-Type", media_type)
                .send(body)
        })?;
        if resp.status().as_u16() != 201 {
            return Err(self.fail(
                "put the manifest",
                format!("HTTP {}", resp.status().as_u16()),
            ));
        }
        Ok(())
    }
}

/// A registry read for `commit --oci docker://…`: the tag's manifest, then blobs as the
/// image layout reader asks for them (it checks every digest).
pub struct Puller {
    reg: Registry,
}

impl std::fmt::Debug for Puller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Puller({})", self.reg.r)
    }
}

impl Puller {
    /// Connects to the registry of `r`, with pull credentials if it wants them.
    pub fn new(r: Reference, access: &Access) -> Result<Self> {
        Ok(Self {
            reg: Registry::new(r, access, net::auth::Access::Pull)?,
        })
    }

    /// Makes `dir` an OCI image layout whose `index.json` names the tag's manifest (or
    /// index), as the registry sent it.
    pub fn stage(&self, dir: &Path) -> Result<()> {
        let reg = &self.reg;
        let url = format!("{}/manifests/{}", reg.api, reg.r.tag);
        let mut resp = reg.send(&url, "get the manifest", |agent, auth| {
            with_auth(agent.get(&url), auth)
                .header("Accept", crate::ociimage::IMAGE_ACCEPT)
                .call()
        })?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Err(reg.fail("get the manifest", "HTTP 404: no such tag")),
            s => return Err(reg.fail("get the manifest", format!("HTTP {s}"))),
        }
        let content_type = resp
            .headers()
            .get("Content-Type")
            .and_then(|v| v.to_str().ok())
            .map(|t| t.split(';').next().unwrap_or_default().trim().to_owned());
        let body = resp
            .body_mut()
            .with_config()
            .limit(oci::MANIFEST_MAX as u64)
            .read_to_vec()
            .map_err(|e| reg.fail("read the manifest", e))?;
        let declared: Option<String> = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["mediaType"].as_str().map(str::to_owned));
        let media_type = declared
            .or(content_type)
            .ok_or_else(|| reg.fail("the manifest", "no media type"))?;
        let digest = digest_of(&body);
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs).with_context(|| blobs.display().to_string())?;
        let write = |path: PathBuf, bytes: &[u8]| {
            fs::write(&path, bytes).with_context(|| path.display().to_string())
        };
        write(blobs.join(&digest["sha256:".len()..]), &body)?;
        write(
            dir.join("index.json"),
            &serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "manifests": [{"mediaType": media_type, "digest": digest, "size": body.len()}],
            }))?,
        )?;
        write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
    }

    /// Downloads the blob `digest` of type `media_type`, at most `size` bytes, to `to`
    /// (through a temporary name, so that `to` is whole or absent); the reader checks its
    /// digest. Manifests and indexes come from the manifest endpoint (registries need
    /// not serve them as blobs), the rest from the blob endpoint.
    pub fn blob_to(&self, media_type: &str, digest: &str, size: u64, to: &Path) -> Result<()> {
        let reg = &self.reg;
        let manifest = crate::ociimage::IMAGE_ACCEPT.contains(media_type) && !media_type.is_empty();
        let url = if manifest {
            format!("{}/manifests/{digest}", reg.api)
        } else {
            format!("{}/blobs/{digest}", reg.api)
        };
        let mut resp = reg.send(&url, digest, |agent, auth| {
            let get = with_auth(agent.get(&url), auth);
            if manifest {
                get.header("Accept", crate::ociimage::IMAGE_ACCEPT).call()
            } else {
                get.call()
            }
        })?;
        if resp.status().as_u16() != 200 {
            return Err(reg.fail(digest, format!("HTTP {}", resp.status().as_u16())));
        }
        let part = to.with_extension("part");
        let mut out = fs::File::create(&part).with_context(|| format!("{}", part.display()))?;
        let mut body = resp.body_mut().with_config().limit(size).reader();
        std::io::copy(&mut body, &mut out).map_err(|e| reg.fail(digest, e))?;
        fs::rename(&part, to).with_context(|| format!("{}", to.display()))
    }
}

/// The files of a static repository, by path relative to it, sorted (temporary files,
/// whose names start with `.`, left out).
fn files(root: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let dir = root.join(&rel);
        for e in fs::read_dir(&dir).with_context(|| format!("{}: read", dir.display()))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let path = rel.join(&name);
            if e.file_type()?.is_dir() {
                todo.push(path);
            } else {
                out.push(path.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Every layer of a manifest, or of the manifests an index names.
fn layers(reg: &Registry, m: &serde_json::Value) -> Result<Vec<serde_json::Value>> {
    let Some(children) = m["manifests"].as_array() else {
        return Ok(m["layers"].as_array().cloned().unwrap_or_default());
    };
    let mut out = Vec::new();
    for c in children {
        let digest = c["digest"].as_str().unwrap_or_default();
        if let Some(child) = reg.manifest(digest)? {
            out.extend(child["layers"].as_array().cloned().unwrap_or_default());
        }
    }
    Ok(out)
}

/// The digest of the layer titled `title`.
fn layer<'a>(layers: &'a [serde_json::Value], title: &str) -> Option<&'a str> {
    layers.iter().find_map(|l| {
        (l["annotations"][oci::TITLE].as_str() == Some(title))
            .then(|| l["digest"].as_str())
            .flatten()
    })
}

/// Puts the manifest of `layers` at the tag, or, past `per_manifest` layers, one
/// manifest per group of that many (by digest) and an index naming them at the tag.
/// Returns the digest of what the tag names.
fn put_manifests(
    reg: &Registry,
    config: &serde_json::Value,
    layers: &[serde_json::Value],
    per_manifest: usize,
) -> Result<String> {
    let manifest = |layers: &[serde_json::Value]| -> Result<Vec<u8>> {
        let body = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": oci::MANIFEST_TYPE,
            "artifactType": oci::ARTIFACT_TYPE,
            "config": config,
            "layers": layers,
        }))?;
        Ok(body)
    };
    let groups: Vec<&[serde_json::Value]> = layers.chunks(per_manifest.max(1)).collect();
    if groups.len() <= 1 {
        let body = manifest(layers)?;
        check_size(reg, body.len())?;
        reg.put_manifest(&reg.r.tag, oci::MANIFEST_TYPE, &body)?;
        return Ok(digest_of(&body));
    }
    if groups.len() > oci::MANIFESTS_MAX {
        bail!(
            "{}: {} layers make {} manifests of {per_manifest}, over the {} an index may name (raise --manifest-layers)",
            reg.r,
            layers.len(),
            groups.len(),
            oci::MANIFESTS_MAX
        );
    }
    let mut children = Vec::new();
    let mut total = 0;
    for g in groups {
        let body = manifest(g)?;
        total += body.len();
        let digest = digest_of(&body);
        reg.put_manifest(&digest, oci::MANIFEST_TYPE, &body)?;
        children.push(serde_json::json!({
            "mediaType": oci::MANIFEST_TYPE,
            "artifactType": oci::ARTIFACT_TYPE,
            "digest": digest,
            "size": body.len(),
        }));
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": oci::INDEX_TYPE,
        "artifactType": oci::ARTIFACT_TYPE,
        "manifests": children,
    }))?;
    check_size(reg, total + index.len())?;
    reg.put_manifest(&reg.r.tag, oci::INDEX_TYPE, &index)?;
    Ok(digest_of(&index))
}

/// Refuses manifests larger in all than a device reads.
fn check_size(reg: &Registry, bytes: usize) -> Result<()> {
    if bytes > oci::MANIFEST_MAX {
        bail!(
            "{}: the manifests would be {bytes} bytes, over the {} devices read",
            reg.r,
            oci::MANIFEST_MAX
        );
    }
    Ok(())
}

pub fn push(
    release: &Release,
    reference: &str,
    access: &Access,
    per_manifest: usize,
) -> Result<PushOutput> {
    let r = Reference::parse(reference).with_context(|| reference.to_owned())?;
    let reg = Registry::new(r.clone(), access, net::auth::Access::Push)?;
    let stage = tempfile::Builder::new()
        .prefix("berth-push-")
        .tempdir()
        .context("make a scratch directory")?;
    let pointer_path = format!("channels/{}", r.tag);
    // The tag's previous pointer (the publisher's own, as a static repository keeps it):
    // the serial carries on and its commit gets a delta.
    if let Some(m) = reg.manifest(&r.tag)? {
        let all = layers(&reg, &m)?;
        let Some(digest) = layer(&all, &pointer_path) else {
            bail!("{r}: the tag exists but is not a berth repository (no {pointer_path} layer)");
        };
        let bytes = reg.blob(digest, format::channel::FILE_MAX as u64)?;
        // The registry is storage anyone with push access can write: carry on only a
        // pointer this key signed (its serial and commit decide the next release's).
        let publics = release.keys.verifying();
        let (body, sigs) = format::channel::split_file(&bytes)
            .with_context(|| format!("{r}: the tag's {pointer_path}"))?;
        format::sig::Signatures::decode(sigs)
            .and_then(|s| s.verify(body, &publics))
            .map_err(|e| {
                anyhow::anyhow!(
                    "{r}: the tag's {pointer_path} is not signed by any of {} ({e}): another \
                     publisher's key, or tampered with; refusing to carry on its serial",
                    release.keys.files()
                )
            })?;
        let previous = format::channel::Pointer::decode(body)
            .with_context(|| format!("{r}: the tag's {pointer_path}"))?;
        if previous.channel != r.tag {
            bail!(
                "{r}: the tag holds the pointer of channel {:?}, not {:?} (copied from \
                 another tag?); refusing to carry on its serial",
                previous.channel,
                r.tag
            );
        }
        fs::create_dir_all(stage.path().join("channels"))?;
        fs::write(stage.path().join("config"), publish::CONFIG)?;
        fs::write(stage.path().join(&pointer_path), bytes)?;
    }
    // The registry is not the publisher's own disk: a tag moved back to an older
    // manifest, or deleted, would hand back a lower serial than devices have seen. The
    // serial is at least the time in milliseconds, so it still goes up.
    let serial_floor = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let out = publish::publish(release, stage.path(), &r.tag, serial_floor)?;

    let (mut uploaded, mut uploaded_bytes) = (0, 0u64);
    let mut config = None;
    let mut layers = Vec::new();
    for rel in files(stage.path())? {
        let bytes = fs::read(stage.path().join(&rel))?;
        let digest = digest_of(&bytes);
        if !reg.has_blob(&digest)? {
            reg.upload(&digest, &bytes)?;
            uploaded += 1;
            uploaded_bytes += bytes.len() as u64;
        }
        if rel == "config" {
            config = Some(serde_json::json!({
                "mediaType": oci::CONFIG_TYPE,
                "digest": digest,
                "size": bytes.len(),
            }));
        } else {
            layers.push(serde_json::json!({
                "mediaType": oci::FILE_TYPE,
                "digest": digest,
                "size": bytes.len(),
                "annotations": { oci::TITLE: rel },
            }));
        }
    }
    let blobs = layers.len() + 1;
    let config = config.context("the scratch repository has no config")?;
    let manifest_digest = put_manifests(&reg, &config, &layers, per_manifest)?;
    Ok(PushOutput {
        reference: r.to_string(),
        serial: out.serial,
        commit: out.commit,
        blobs,
        uploaded,
        uploaded_bytes,
        manifest_digest,
    })
}

/// `location` (a `Location` header) resolved against the URL it answered (RFC 3986:
/// absolute, scheme-relative, absolute-path or relative-path).
fn resolve(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_owned();
    }
    let (scheme, rest) = base.split_once("://").unwrap_or(("http", base));
    if let Some(l) = location.strip_prefix("//") {
        return format!("{scheme}://{l}");
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if location.starts_with('/') {
        return format!("{scheme}://{authority}{location}");
    }
    let dir = base.rsplit_once('/').map_or(base, |(d, _)| d);
    format!("{dir}/{location}")
}

#[cfg(test)]
mod tests {
    use super::resolve;

    #[test]
    fn locations() {
        let base = "http://127.0.0.1:5000/v2/fleet/os/blobs/uploads/";
        for (loc, want) in [
            ("http://other:1/u/1?x=y", "http://other:1/u/1?x=y"),
            ("//other:1/u/1", "http://other:1/u/1"),
            (
                "/v2/fleet/os/blobs/uploads/abc?_state=s",
                "http://127.0.0.1:5000/v2/fleet/os/blobs/uploads/abc?_state=s",
            ),
            ("abc", "http://127.0.0.1:5000/v2/fleet/os/blobs/uploads/abc"),
        ] {
            assert_eq!(resolve(base, loc), want, "{loc}");
        }
    }
}
