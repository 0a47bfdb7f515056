//! `berth-image commit --oci REF`: a container image as the root file system. REF names
//! the image as skopeo does:
//! - `oci:DIR[:REF]`, an OCI image layout directory (`skopeo copy … oci:DIR:TAG`,
//!   `umoci`, `podman save --format oci-dir`); REF is the image's
//!   `org.opencontainers.image.ref.name` annotation or its manifest digest, and may be
//!   left out when the layout holds one image;
//! - `oci-archive:FILE[:REF]`, the same as a tar archive;
//! - `docker-archive:FILE`, what `docker save` writes (one image);
//! - `docker://REGISTRY/NAME:TAG`, an image in a registry, through the client, the
//!   credentials and the trusted CAs that `push` uses.
//!
//! An archive is unpacked into a scratch directory first (`archive.rs`); a registry's
//! blobs are fetched into one as they are needed (`crate::oci::Puller`). From there it
//! is one path (`layout.rs`): an image index is resolved to the image for `--arch`
//! (default: the build host's), and every blob read (index, manifest, config, layer)
//! is checked against the size and sha256 its descriptor gives before it is parsed or
//! applied, and every layer's uncompressed stream against the config's `diff_ids`, so
//! the tree committed is exactly the image named. The layers are then applied in order
//! by `image::layers` (whiteouts, opaque directories), within `--max-unpacked` bytes
//! and `--max-entries` entries.
//!
//! Accepted: OCI and Docker schema 2 manifests, lists and indexes; layers plain, gzip or
//! zstd (the OCI, the non-distributable and the Docker media types). Refused, naming the
//! descriptor: other media types (an artifact that is not a container image, such as
//! Berth's own repository artifacts), digests other than sha256, blobs missing from the
//! layout (a foreign layer never downloaded), and configs whose `diff_ids` do not match
//! the layers.

mod archive;
mod layout;

use std::collections::BTreeMap;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use format::ObjectId;
use format::oci::Reference;
use image::layers::{Layers, Limits};
use store::Txn;
use store::build::{BuildStats, Progress};

use layout::{Descriptor, Hashing, Layout, hex};

/// The `Accept` header of a registry manifest request: image manifests and indexes,
/// OCI and Docker.
pub const IMAGE_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// The label whose value is the image's version, `--version` when none is given.
pub const VERSION_LABEL: &str = "org.opencontainers.image.version";

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

/// Where an image comes from: `--oci REF` (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// `oci:DIR[:REF]`.
    Layout {
        dir: PathBuf,
        reference: Option<String>,
    },
    /// `oci-archive:FILE[:REF]`.
    OciArchive {
        file: PathBuf,
        reference: Option<String>,
    },
    /// `docker-archive:FILE`.
    DockerArchive(PathBuf),
    /// `docker://REGISTRY/NAME:TAG`.
    Registry(Reference),
}

const TRANSPORTS: &str =
    "oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE or docker://REGISTRY/NAME:TAG";

impl std::str::FromStr for Transport {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if let Some(rest) = text.strip_prefix("oci:") {
            let (dir, reference) = path_and_reference(rest);
            Ok(Self::Layout { dir, reference })
        } else if let Some(rest) = text.strip_prefix("oci-archive:") {
            let (file, reference) = path_and_reference(rest);
            Ok(Self::OciArchive { file, reference })
        } else if let Some(rest) = text.strip_prefix("docker-archive:") {
            if rest.is_empty() {
                return Err(format!("{text:?}: docker-archive: needs a FILE"));
            }
            Ok(Self::DockerArchive(PathBuf::from(rest)))
        } else if let Some(rest) = text.strip_prefix("docker://") {
            Reference::parse(rest)
                .map(Self::Registry)
                .map_err(|e| format!("{text:?}: {e}"))
        } else {
            Err(format!("{text:?}: expected {TRANSPORTS}"))
        }
    }
}

/// `PATH` or `PATH:REF`: a path that exists as given is the path (so a name holding a
/// colon still works); else the part after the last colon is the reference, or after
/// `:sha256:` the digest.
fn path_and_reference(text: &str) -> (PathBuf, Option<String>) {
    if Path::new(text).exists() {
        return (PathBuf::from(text), None);
    }
    let split = text
        .rfind(":sha256:")
        .map(|i| (&text[..i], &text[i + 1..]))
        .or_else(|| text.rsplit_once(':'));
    match split {
        Some((path, reference)) if !path.is_empty() && !reference.is_empty() => {
            (PathBuf::from(path), Some(reference.to_owned()))
        }
        _ => (PathBuf::from(text), None),
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let with = |f: &mut std::fmt::Formatter<'_>, kind, p: &Path, r: &Option<String>| {
            write!(f, "{kind}:{}", p.display())?;
            r.as_ref().map_or(Ok(()), |r| write!(f, ":{r}"))
        };
        match self {
            Self::Layout { dir, reference } => with(f, "oci", dir, reference),
            Self::OciArchive { file, reference } => with(f, "oci-archive", file, reference),
            Self::DockerArchive(file) => write!(f, "docker-archive:{}", file.display()),
            Self::Registry(r) => write!(f, "docker://{}/{}:{}", r.registry, r.name, r.tag),
        }
    }
}

/// `--oci` and the options that go with it.
#[derive(Debug, Clone)]
pub struct OciSource {
    pub transport: Transport,
    /// The platform to take from an index, and that the image must be for.
    pub platform: Platform,
    /// How to reach a registry.
    pub access: crate::oci::Access,
    pub limits: Limits,
}

/// `OS/ARCH[/VARIANT]`, as in `linux/arm64/v8`; `--arch` gives ARCH[/VARIANT] (the OS
/// is Linux).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

impl Platform {
    /// `--arch ARCH[/VARIANT]` (an OCI architecture name: amd64, arm64, arm/v7, riscv64, …).
    pub fn linux(arch: &str) -> Result<Self, String> {
        format!("linux/{arch}").parse()
    }

    /// The build host's platform, in OCI's names.
    pub fn host() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            other => other,
        };
        Self {
            os: "linux".to_owned(),
            architecture: architecture.to_owned(),
            variant: None,
        }
    }
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

/// What was committed, for the report and the commit's metadata.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    /// The image's manifest digest.
    pub manifest: String,
    pub platform: Platform,
    pub layers: usize,
    pub labels: BTreeMap<String, String>,
}

impl ImageInfo {
    /// The commit metadata the image gives: `oci.manifest`, `oci.os`,
    /// `oci.architecture`, `oci.variant` and `oci.label.KEY` for each label.
    pub fn metadata(&self) -> Vec<(String, String)> {
        let p = &self.platform;
        let mut m = vec![
            ("oci.manifest".to_owned(), self.manifest.clone()),
            ("oci.os".to_owned(), p.os.clone()),
            ("oci.architecture".to_owned(), p.architecture.clone()),
        ];
        if let Some(v) = &p.variant {
            m.push(("oci.variant".to_owned(), v.clone()));
        }
        for (k, v) in &self.labels {
            m.push((format!("oci.label.{k}"), v.clone()));
        }
        m
    }
}

/// Commits the image `src` names into `txn`; returns the root tree id.
pub fn build_oci(
    txn: &mut Txn<'_>,
    src: &OciSource,
    progress: Progress<'_>,
) -> Result<(ObjectId, BuildStats, ImageInfo)> {
    let shown = src.transport.to_string();
    let scratch = || {
        tempfile::Builder::new()
            .prefix("berth-oci-")
            .tempdir()
            .context("make a scratch directory")
    };
    // Kept until the image is committed: the layout may live in it.
    let stage;
    let puller;
    let fetcher;
    let (dir, reference, fetch) = match &src.transport {
        Transport::Layout { dir, reference } => (dir.clone(), reference.clone(), None),
        Transport::OciArchive { file, reference } => {
            stage = scratch()?;
            archive::unpack(file, stage.path(), src.limits.bytes)?;
            (stage.path().to_owned(), reference.clone(), None)
        }
        Transport::DockerArchive(file) => {
            stage = scratch()?;
            archive::unpack(file, stage.path(), src.limits.bytes)?;
            archive::docker_to_layout(file, stage.path())?;
            (stage.path().to_owned(), None, None)
        }
        Transport::Registry(r) => {
            stage = scratch()?;
            puller = crate::oci::Puller::new(r.clone(), &src.access)?;
            puller.stage(stage.path())?;
            fetcher = |media_type: &str, digest: &str, size: u64, to: &Path| {
                puller.blob_to(media_type, digest, size, to)
            };
            (
                stage.path().to_owned(),
                None,
                Some(&fetcher as layout::Fetch<'_>),
            )
        }
    };
    let layout = Layout {
        dir: &dir,
        shown,
        fetch,
    };
    let (d, manifest, config) = layout::image(&layout, reference.as_deref(), &src.platform)?;
    let mut layers = Layers::new(src.limits);
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
            platform: config.platform(),
            layers: manifest.layers.len(),
            labels: config.labels(),
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
    let rest = layers.apply(txn, Hashing::new(decompressed), shown, progress)?;
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
    fn references() {
        let tmp = tempfile::tempdir().unwrap();
        let colon = tmp.path().join("a:b");
        std::fs::create_dir(&colon).unwrap();
        let colon = colon.to_str().unwrap();
        let digest = format!("sha256:{}", "ab".repeat(32));
        let layout = |d: &str, r: Option<&str>| Transport::Layout {
            dir: d.into(),
            reference: r.map(str::to_owned),
        };
        let cases = [
            ("oci:img".to_owned(), layout("img", None)),
            ("oci:img:latest".to_owned(), layout("img", Some("latest"))),
            ("oci:a/b:c:v1".to_owned(), layout("a/b:c", Some("v1"))),
            (format!("oci:img:{digest}"), layout("img", Some(&digest))),
            (format!("oci:{colon}"), layout(colon, None)),
            ("oci:img:".to_owned(), layout("img:", None)),
            (
                "oci-archive:x.tar:v2".to_owned(),
                Transport::OciArchive {
                    file: "x.tar".into(),
                    reference: Some("v2".into()),
                },
            ),
            (
                "docker-archive:x.tar".to_owned(),
                Transport::DockerArchive("x.tar".into()),
            ),
            (
                "docker://127.0.0.1:5000/base/debian:12".to_owned(),
                Transport::Registry(Reference::parse("127.0.0.1:5000/base/debian:12").unwrap()),
            ),
        ];
        for (text, want) in cases {
            let got: Transport = text.parse().unwrap();
            assert_eq!(got, want, "{text}");
            assert_eq!(got.to_string(), text, "shown as given");
        }
        for bad in ["img", "docker-archive:", "docker://debian", "oci-layout:x"] {
            assert!(bad.parse::<Transport>().is_err(), "{bad}");
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
        assert_eq!(
            Platform::linux("arm/v7").unwrap().to_string(),
            "linux/arm/v7"
        );
        assert!(Platform::linux("").is_err());
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
