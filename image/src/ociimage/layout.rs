//! Reading an OCI image layout: `index.json`, descriptors, and blobs checked against
//! their descriptors' sizes and digests before they are parsed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use format::ObjectId;
use format::oci::MANIFEST_MAX;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::Platform;

/// The annotation that names an image in a layout's `index.json`.
const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Indexes within indexes followed at most (a layout's `index.json` naming a
/// multi-platform index is two levels).
const NESTING_MAX: usize = 4;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const CONFIG_TYPES: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Descriptor {
    #[serde(default)]
    pub(super) media_type: String,
    pub(super) digest: String,
    size: u64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    platform: Option<DescPlatform>,
}

#[derive(Debug, Deserialize)]
struct DescPlatform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    variant: Option<String>,
}

impl DescPlatform {
    fn to_platform(&self) -> Platform {
        Platform {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: self.variant.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    #[serde(default)]
    media_type: Option<String>,
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Manifest {
    #[serde(default)]
    media_type: Option<String>,
    config: Descriptor,
    #[serde(default)]
    pub(super) layers: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Config {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    variant: Option<String>,
    pub(super) rootfs: RootFs,
    /// The run-time configuration: only its labels are kept.
    #[serde(default, rename = "config")]
    run: Option<RunConfig>,
}

#[derive(Debug, Deserialize)]
struct RunConfig {
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, String>>,
}

impl Config {
    /// The image's labels (none when it has none).
    pub(super) fn labels(&self) -> BTreeMap<String, String> {
        self.run
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default()
    }

    /// The platform the image is for.
    pub(super) fn platform(&self) -> Platform {
        Platform {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: self.variant.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct RootFs {
    #[serde(rename = "type")]
    kind: String,
    pub(super) diff_ids: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LayoutFile {
    image_layout_version: String,
}

/// What was committed: the image's manifest digest and platform, for the report.
/// Fetches the blob (its media type, digest and size) to the path given.
pub(super) type Fetch<'a> = &'a dyn Fn(&str, &str, u64, &Path) -> Result<()>;

pub(super) struct Layout<'a> {
    pub(super) dir: &'a Path,
    pub(super) shown: String,
    /// Fetches a blob that is not in the directory yet (digest, size, where to put it):
    /// a registry's layout is filled as it is read.
    pub(super) fetch: Option<Fetch<'a>>,
}

impl Layout<'_> {
    /// The path of the blob `digest` names, which must be a sha256 digest.
    fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        let hex = digest.strip_prefix("sha256:").ok_or_else(|| {
            anyhow!(
                "{}: blob {digest:?}: only sha256 digests are supported",
                self.shown
            )
        })?;
        // A canonical digest is also a safe file name.
        let id = ObjectId::parse_hex(hex.as_bytes())
            .ok()
            .filter(|id| id.to_string() == hex)
            .ok_or_else(|| anyhow!("{}: blob {digest:?}: not a sha256 digest", self.shown))?;
        Ok(self.dir.join("blobs/sha256").join(id.to_string()))
    }

    pub(super) fn open_blob(&self, d: &Descriptor) -> Result<File> {
        let path = self.blob_path(&d.digest)?;
        if let Some(fetch) = self.fetch
            && !path.exists()
        {
            fetch(&d.media_type, &d.digest, d.size, &path)?;
        }
        File::open(&path).with_context(|| {
            format!(
                "{}: blob {} ({}) is not in the layout",
                self.shown, d.digest, d.media_type
            )
        })
    }

    /// Reads the whole blob, checking its size and digest before returning it.
    fn read_small(&self, d: &Descriptor) -> Result<Vec<u8>> {
        if d.size > MANIFEST_MAX as u64 {
            bail!(
                "{}: blob {} ({}) is {} bytes, more than the {MANIFEST_MAX} a manifest or config may have",
                self.shown,
                d.digest,
                d.media_type,
                d.size
            );
        }
        let mut bytes = Vec::new();
        self.open_blob(d)?
            .take(MANIFEST_MAX as u64 + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("{}: read blob {}", self.shown, d.digest))?;
        self.check(d, bytes.len() as u64, &Sha256::digest(&bytes).into())?;
        Ok(bytes)
    }

    /// Hashes the whole blob, checking its size and digest (before a layer is parsed).
    pub(super) fn verify(&self, d: &Descriptor) -> Result<()> {
        let mut hashing = Hashing::new(BufReader::new(self.open_blob(d)?));
        io::copy(&mut hashing, &mut io::sink())
            .with_context(|| format!("{}: read blob {}", self.shown, d.digest))?;
        let (n, sum) = hashing.finish();
        self.check(d, n, &sum)
    }

    fn check(&self, d: &Descriptor, size: u64, sum: &[u8; 32]) -> Result<()> {
        if size != d.size {
            bail!(
                "{}: blob {} is {size} bytes, its descriptor says {}",
                self.shown,
                d.digest,
                d.size
            );
        }
        let got = format!("sha256:{}", hex(sum));
        if got != d.digest {
            bail!(
                "{}: blob {} has digest {got}: it is not the blob its descriptor names",
                self.shown,
                d.digest
            );
        }
        Ok(())
    }
}

pub(super) fn hex(sum: &[u8; 32]) -> String {
    use std::fmt::Write;
    sum.iter().fold(String::with_capacity(64), |mut s, b| {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A reader that hashes and counts what passes through it.
pub(super) struct Hashing<R> {
    inner: R,
    hash: Sha256,
    count: u64,
}

impl<R: Read> Hashing<R> {
    pub(super) fn new(inner: R) -> Self {
        Self {
            inner,
            hash: Sha256::new(),
            count: 0,
        }
    }

    pub(super) fn finish(self) -> (u64, [u8; 32]) {
        (self.count, self.hash.finalize().into())
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let read = buf.get(..n).unwrap_or_default();
        self.hash.update(read);
        self.count += read.len() as u64;
        Ok(n)
    }
}

fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

/// The manifest descriptor `src` names in its layout.
fn select(layout: &Layout<'_>, reference: Option<&str>) -> Result<Descriptor> {
    let index_path = layout.dir.join("index.json");
    let version = std::fs::read(layout.dir.join("oci-layout")).with_context(|| {
        format!(
            "{}: not an OCI image layout (no readable oci-layout file)",
            layout.dir.display()
        )
    })?;
    let version: LayoutFile = serde_json::from_slice(&version)
        .with_context(|| format!("{}: oci-layout", layout.dir.display()))?;
    if version.image_layout_version != "1.0.0" {
        bail!(
            "{}: image layout version {:?}; this tool reads 1.0.0",
            layout.dir.display(),
            version.image_layout_version
        );
    }
    let mut bytes = Vec::new();
    File::open(&index_path)
        .and_then(|f| f.take(MANIFEST_MAX as u64 + 1).read_to_end(&mut bytes))
        .with_context(|| format!("{}: cannot read", index_path.display()))?;
    if bytes.len() > MANIFEST_MAX {
        bail!("{}: more than {MANIFEST_MAX} bytes", index_path.display());
    }
    let index: Index = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not an image index", index_path.display()))?;
    let names = || {
        let n: Vec<String> = index
            .manifests
            .iter()
            .map(|d| {
                d.annotations
                    .get(REF_NAME)
                    .cloned()
                    .unwrap_or_else(|| d.digest.clone())
            })
            .collect();
        n.join(", ")
    };
    let chosen: Vec<usize> = (0..index.manifests.len())
        .filter(|&i| {
            reference.is_none_or(|r| {
                let d = &index.manifests[i];
                d.annotations.get(REF_NAME).map(String::as_str) == Some(r) || d.digest == r
            })
        })
        .collect();
    let [at] = chosen.as_slice() else {
        return Err(match (reference, index.manifests.len()) {
            (_, 0) => anyhow!("{}: the layout holds no image", layout.shown),
            (Some(r), _) => anyhow!(
                "{}: no single image named {r:?} in the layout (it has: {})",
                layout.shown,
                names()
            ),
            (None, n) => anyhow!(
                "{}: the layout holds {n} images; name one as {}:NAME (it has: {})",
                layout.shown,
                layout.dir.display(),
                names()
            ),
        });
    };
    let at = *at;
    let mut manifests = index.manifests;
    Ok(manifests.swap_remove(at))
}

/// Follows indexes from `d` down to one image manifest, by platform.
fn resolve(layout: &Layout<'_>, mut d: Descriptor, want: &Platform) -> Result<Descriptor> {
    for _ in 0..NESTING_MAX {
        if !is_index(&d.media_type) {
            return Ok(d);
        }
        let bytes = layout.read_small(&d)?;
        let index: Index = serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: index {}", layout.shown, d.digest))?;
        if index.media_type.as_deref().is_some_and(|t| !is_index(t)) {
            bail!(
                "{}: blob {} is not the index its descriptor says",
                layout.shown,
                d.digest
            );
        }
        // BuildKit's attestations stand in indexes as platform unknown/unknown.
        let images: Vec<Descriptor> = index
            .manifests
            .into_iter()
            .filter(|m| m.platform.as_ref().is_none_or(|p| p.os != "unknown"))
            .collect();
        let listed = images
            .iter()
            .filter_map(|m| m.platform.as_ref().map(|p| p.to_platform().to_string()))
            .collect::<Vec<_>>()
            .join(", ");
        let mut fitting: Vec<Descriptor> = images
            .into_iter()
            .filter(|m| m.platform.as_ref().is_some_and(|p| fits(p, want)))
            .collect();
        d = match fitting.len() {
            1 => fitting.swap_remove(0),
            0 => bail!(
                "{}: no image for {want} (the index has: {listed}); choose one with --arch",
                layout.shown
            ),
            _ => bail!(
                "{}: several images for {want}; give the variant too, as --arch arm/v7 (the index has: {listed})",
                layout.shown
            ),
        };
    }
    bail!(
        "{}: indexes nested more than {NESTING_MAX} deep",
        layout.shown
    )
}

/// Whether an index entry's platform is the one asked for (without a variant asked for,
/// any variant).
fn fits(p: &DescPlatform, want: &Platform) -> bool {
    p.os == want.os
        && p.architecture == want.architecture
        && want
            .variant
            .as_ref()
            .is_none_or(|v| p.variant.as_ref() == Some(v))
}

/// The image manifest `src` names (through indexes, by platform), and its config, each
/// checked against its descriptor; the config's platform must be the one asked for.
pub(super) fn image(
    layout: &Layout<'_>,
    reference: Option<&str>,
    want: &Platform,
) -> Result<(Descriptor, Manifest, Config)> {
    let top = select(layout, reference)?;
    let d = resolve(layout, top, want)?;
    if d.media_type != OCI_MANIFEST && d.media_type != DOCKER_MANIFEST {
        bail!(
            "{}: {} is a {:?}, not an image manifest",
            layout.shown,
            d.digest,
            d.media_type
        );
    }
    let manifest: Manifest = serde_json::from_slice(&layout.read_small(&d)?)
        .with_context(|| format!("{}: manifest {}", layout.shown, d.digest))?;
    if manifest
        .media_type
        .as_deref()
        .is_some_and(|t| t != d.media_type)
    {
        bail!(
            "{}: manifest {} says it is a {:?}, its descriptor a {:?}",
            layout.shown,
            d.digest,
            manifest.media_type.unwrap_or_default(),
            d.media_type
        );
    }
    if !CONFIG_TYPES.contains(&manifest.config.media_type.as_str()) {
        bail!(
            "{}: manifest {} is not a container image (its config is a {:?})",
            layout.shown,
            d.digest,
            manifest.config.media_type
        );
    }
    let config: Config = serde_json::from_slice(&layout.read_small(&manifest.config)?)
        .with_context(|| format!("{}: image config {}", layout.shown, manifest.config.digest))?;
    let platform = config.platform();
    // A config often leaves the variant out (arm64's v8, say): then any variant fits.
    if platform.os != want.os
        || platform.architecture != want.architecture
        || platform
            .variant
            .as_ref()
            .zip(want.variant.as_ref())
            .is_some_and(|(have, want)| have != want)
    {
        bail!(
            "{}: the image is for {platform}, not {want} (choose with --arch)",
            layout.shown
        );
    }
    if config.rootfs.kind != "layers" || config.rootfs.diff_ids.len() != manifest.layers.len() {
        bail!(
            "{}: image config {} lists {} layer digests (rootfs type {:?}) for the manifest's {} layers",
            layout.shown,
            manifest.config.digest,
            config.rootfs.diff_ids.len(),
            config.rootfs.kind,
            manifest.layers.len()
        );
    }
    Ok((d, manifest, config))
}
