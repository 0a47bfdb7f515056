//! `berth-image commit --oci`: a container image in an OCI image layout directory (what
//! `skopeo copy … oci:DIR`, `podman save --format oci-dir`, `buildah push … oci:DIR` and
//! `umoci` write) as the root filesystem.
//!
//! The image is found from the layout's `index.json`: by its
//! `org.opencontainers.image.ref.name` annotation (`DIR:NAME`), by its digest
//! (`DIR:sha256:…`), or as the only image there. An image index (several platforms)
//! is resolved with `--platform`. Every blob read (index, manifest, config, layer) is
//! checked against the size and sha256 its descriptor gives before it is parsed or
//! applied, and every layer's uncompressed stream against the config's `diff_ids`, so
//! the tree committed is exactly the image named. The layers are then applied in order
//! by `image::layers` (whiteouts, opaque directories).
//!
//! Accepted: OCI and Docker schema 2 manifests, lists and indexes; layers plain, gzip or
//! zstd (the OCI, the non-distributable and the Docker media types). Refused, naming the
//! descriptor: other media types (an artifact that is not a container image, such as
//! Berth's own repository artifacts), digests other than sha256, blobs missing from the
//! layout (a foreign layer never downloaded), and configs whose `diff_ids` do not match
//! the layers.

mod layout;

use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use format::ObjectId;
use image::layers::Layers;
use store::Txn;
use store::build::{BuildStats, Progress};

use layout::{Descriptor, Hashing, Layout, hex};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

fn compression(media_type: &str) -> Option<Compression> {
    Some(match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Compression::None,
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Compression::Gzip,
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
        | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Compression::Zstd,
        _ => return None,
    })
}

/// `--oci DIR[:REF]`, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciSource {
    /// The layout directory.
    pub layout: PathBuf,
    /// The image's ref name or digest in the layout's `index.json`.
    pub reference: Option<String>,
    /// `OS/ARCH[/VARIANT]`, to pick one image of an index.
    pub platform: Option<Platform>,
}

impl OciSource {
    /// `DIR` or `DIR:REF`: a path that exists as given is the directory (so a
    /// directory whose name holds a colon still works); else the part after the last
    /// colon is the reference, or after `:sha256:` the digest.
    pub fn parse(arg: &Path, platform: Option<Platform>) -> Self {
        let whole = || Self {
            layout: arg.to_owned(),
            reference: None,
            platform: platform.clone(),
        };
        if arg.exists() {
            return whole();
        }
        let Some(text) = arg.to_str() else {
            return whole();
        };
        let split = text
            .rfind(":sha256:")
            .map(|i| (&text[..i], &text[i + 1..]))
            .or_else(|| text.rsplit_once(':'));
        match split {
            Some((dir, reference)) if !dir.is_empty() && !reference.is_empty() => Self {
                layout: PathBuf::from(dir),
                reference: Some(reference.to_owned()),
                platform,
            },
            _ => whole(),
        }
    }

    /// How the image is named in messages: `DIR` or `DIR:REF`.
    pub fn shown(&self) -> String {
        match &self.reference {
            Some(r) => format!("{}:{r}", self.layout.display()),
            None => self.layout.display().to_string(),
        }
    }
}

/// `OS/ARCH[/VARIANT]`, as in `linux/arm64/v8`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

impl std::str::FromStr for Platform {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(format!(
                "{s:?}: expected OS/ARCH or OS/ARCH/VARIANT, as linux/arm64"
            ));
        }
        match parts.as_slice() {
            [os, arch] => Ok(Self {
                os: (*os).to_owned(),
                architecture: (*arch).to_owned(),
                variant: None,
            }),
            [os, arch, variant] => Ok(Self {
                os: (*os).to_owned(),
                architecture: (*arch).to_owned(),
                variant: Some((*variant).to_owned()),
            }),
            _ => Err(format!(
                "{s:?}: expected OS/ARCH or OS/ARCH/VARIANT, as linux/arm64"
            )),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct ImageInfo {
    pub manifest: String,
    pub platform: String,
    pub layers: usize,
}

/// An OCI image layout directory.
/// Commits the image `src` names into `txn`; returns the root tree id.
pub fn build_oci(
    txn: &mut Txn<'_>,
    src: &OciSource,
    progress: Progress<'_>,
) -> Result<(ObjectId, BuildStats, ImageInfo)> {
    let layout = Layout {
        dir: &src.layout,
        shown: src.shown(),
    };
    let (d, manifest, config) = layout::image(&layout, src)?;
    let mut layers = Layers::new();
    for (n, (l, diff_id)) in manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .enumerate()
    {
        let shown = PathBuf::from(format!("{}: layer {} ({})", layout.shown, n + 1, l.digest));
        apply(
            txn,
            &mut layers,
            &layout,
            l,
            diff_id,
            &shown,
            &mut *progress,
        )?;
    }
    let root = layers.write(txn)?;
    Ok((
        root,
        layers.stats(),
        ImageInfo {
            manifest: d.digest,
            platform: config.platform().to_string(),
            layers: manifest.layers.len(),
        },
    ))
}

/// Applies the layer `l`, shown as `shown`, whose uncompressed digest must be `diff_id`.
fn apply(
    txn: &mut Txn<'_>,
    layers: &mut Layers,
    layout: &Layout<'_>,
    l: &Descriptor,
    diff_id: &str,
    shown: &Path,
    progress: Progress<'_>,
) -> Result<()> {
    let compression = compression(&l.media_type).ok_or_else(|| {
        anyhow!(
            "{}: unsupported layer media type {:?}",
            shown.display(),
            l.media_type
        )
    })?;
    // Verify before parse: the whole blob is the one the manifest names.
    layout.verify(l)?;
    let file = BufReader::new(layout.open_blob(l)?);
    let decompressed: Box<dyn Read> = match compression {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(file)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(file)
                .with_context(|| format!("{}: zstd", shown.display()))?,
        ),
    };
    let mut rest = layers.apply(txn, Hashing::new(decompressed), shown, progress)?;
    io::copy(&mut rest, &mut io::sink()).with_context(|| format!("{}: read", shown.display()))?;
    let (_, sum) = rest.finish();
    let got = format!("sha256:{}", hex(&sum));
    if got != diff_id {
        bail!(
            "{}: uncompressed, it has digest {got}, but the image config lists {diff_id}",
            shown.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_argument() {
        let tmp = tempfile::tempdir().unwrap();
        let colon = tmp.path().join("a:b");
        std::fs::create_dir(&colon).unwrap();
        let digest = format!("sha256:{}", "ab".repeat(32));
        let cases: Vec<(PathBuf, PathBuf, Option<String>)> = vec![
            ("img".into(), "img".into(), None),
            ("img:latest".into(), "img".into(), Some("latest".into())),
            ("a/b:c:v1".into(), "a/b:c".into(), Some("v1".into())),
            (
                format!("img:{digest}").into(),
                "img".into(),
                Some(digest.clone()),
            ),
            (colon.clone(), colon.clone(), None),
            ("img:".into(), "img:".into(), None),
            (":x".into(), ":x".into(), None),
        ];
        for (arg, dir, reference) in cases {
            let s = OciSource::parse(&arg, None);
            assert_eq!(
                (s.layout, s.reference),
                (dir, reference),
                "{}",
                arg.display()
            );
        }
    }

    #[test]
    fn platforms() {
        for ok in ["linux/amd64", "linux/arm64/v8"] {
            assert_eq!(ok.parse::<Platform>().unwrap().to_string(), ok);
        }
        for bad in ["linux", "linux/", "/amd64", "linux/arm/v7/x", ""] {
            assert!(bad.parse::<Platform>().is_err(), "{bad}");
        }
    }

    #[test]
    fn layer_media_types() {
        let cases = [
            (
                "application/vnd.oci.image.layer.v1.tar",
                Some(Compression::None),
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+gzip",
                Some(Compression::Gzip),
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+zstd",
                Some(Compression::Zstd),
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Some(Compression::Gzip),
            ),
            ("application/vnd.berth.file.v1", None),
            ("application/vnd.oci.image.layer.v1.tar+xz", None),
        ];
        for (t, want) in cases {
            assert_eq!(compression(t), want, "{t}");
        }
    }
}
