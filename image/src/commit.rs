//! `berth-image commit`: validate every input first, build the tree in one transaction,
//! sign, publish. On any error nothing is published, and a repository this command
//! created is removed again.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use format::sig::Signatures;
use format::{Commit, ObjectId, Version};
use store::build::{self, BuildStats};
use store::{Repo, Txn};

use crate::keys;
use crate::ociimage::{self, ImageInfo, OciSource, Transport};
use image::tarball;

/// Where the root filesystem comes from.
#[derive(Debug)]
pub enum Source {
    /// A directory.
    Dir(PathBuf),
    /// A tarball.
    Tar(PathBuf),
    /// A container image.
    Oci(Box<OciSource>),
}

/// The arguments of `commit`, as given on the command line.
#[derive(Debug)]
pub struct CommitArgs {
    pub repo: PathBuf,
    pub source: Source,
    /// The version; with `Source::Oci`, the image's version label when `None`.
    pub version: Option<String>,
    /// Keys to sign with (none: unsigned).
    pub key: Vec<PathBuf>,
    pub parent: Option<String>,
    pub timestamp: Option<u64>,
    pub meta: Vec<String>,
}

/// What a commit made.
#[derive(Debug)]
pub struct CommitOutput {
    pub commit: ObjectId,
    pub root: ObjectId,
    pub build: BuildStats,
    pub txn: store::TxnStats,
    /// The image committed, for `--oci`.
    pub image: Option<ImageInfo>,
}

pub fn commit(args: &CommitArgs, show_progress: bool) -> Result<CommitOutput> {
    // Everything that can be checked without touching the repository is checked first.
    let version = args.version.as_deref().map(parse_version).transpose()?;
    let keys = args
        .key
        .iter()
        .map(|k| keys::read_secret(k))
        .collect::<Result<Vec<_>>>()?;
    let metadata = parse_meta(&args.meta)?;
    let timestamp = timestamp(args.timestamp)?;
    match &args.source {
        Source::Dir(d) => {
            let m = std::fs::metadata(d)
                .with_context(|| format!("{}: cannot read tree", d.display()))?;
            if !m.is_dir() {
                bail!("{}: not a directory", d.display());
            }
        }
        Source::Tar(t) => {
            std::fs::File::open(t)
                .with_context(|| format!("{}: cannot read tarball", t.display()))?;
        }
        Source::Oci(o) => match &o.transport {
            Transport::Layout { dir, .. } => {
                let m = std::fs::metadata(dir)
                    .with_context(|| format!("{}: cannot read the image layout", o.transport))?;
                if !m.is_dir() {
                    bail!(
                        "{}: not a directory (an OCI image layout is one)",
                        o.transport
                    );
                }
            }
            Transport::OciArchive { file, .. } | Transport::DockerArchive(file) => {
                std::fs::File::open(file)
                    .with_context(|| format!("{}: cannot read the archive", o.transport))?;
            }
            // Reached when the commit begins; nothing is written before the image is read.
            Transport::Registry(_) => {}
        },
    }

    let existed = args.repo.symlink_metadata().is_ok();
    let result = commit_into(args, version, &keys, metadata, timestamp, show_progress);
    if result.is_err() && !existed {
        // We created the repository; leave the file system as we found it.
        let _ignored = std::fs::remove_dir_all(&args.repo);
    }
    result
}

fn parse_version(v: &str) -> Result<Version> {
    Version::new(v).with_context(|| format!("--version {v:?}"))
}

fn commit_into(
    args: &CommitArgs,
    version: Option<Version>,
    keys: &[ed25519_dalek::SigningKey],
    metadata: Vec<(String, String)>,
    timestamp: u64,
    show_progress: bool,
) -> Result<CommitOutput> {
    let repo = Repo::create(&args.repo)?;
    let parent = match &args.parent {
        Some(p) => Some(
            repo.resolve_commit(p)
                .with_context(|| format!("--parent {p}"))?,
        ),
        None => None,
    };
    let mut txn = Txn::begin(&repo)?;
    let mut progress = |s: &BuildStats| {
        if show_progress {
            eprint!(
                "\r{} files, {} directories, {} MiB read",
                s.files,
                s.dirs,
                s.bytes >> 20
            );
        }
    };
    let (root, build, image) = match &args.source {
        Source::Dir(d) => {
            let (root, build) = build::build_root(&mut txn, d, &mut progress)?;
            (root, build, None)
        }
        Source::Tar(t) => {
            let (root, build) = tarball::build_tar(&mut txn, t, &mut progress)?;
            (root, build, None)
        }
        Source::Oci(o) => {
            let (root, build, image) = ociimage::build_oci(&mut txn, o, &mut progress)?;
            (root, build, Some(image))
        }
    };
    let version = match (version, &image) {
        (Some(v), _) => v,
        (None, Some(image)) => {
            let label = image.labels.get(ociimage::VERSION_LABEL).with_context(|| {
                format!(
                    "{}: no --version given, and the image has no {} label",
                    args.source_name(),
                    ociimage::VERSION_LABEL
                )
            })?;
            Version::new(label).with_context(|| {
                format!(
                    "{}: its {} label {label:?} (give --version)",
                    args.source_name(),
                    ociimage::VERSION_LABEL
                )
            })?
        }
        (None, None) => bail!("--version is required"),
    };
    // The image's own metadata, below what --meta gives.
    let mut metadata = metadata;
    if let Some(image) = &image {
        let given: Vec<String> = metadata.iter().map(|(k, _)| k.clone()).collect();
        metadata.extend(
            image
                .metadata()
                .into_iter()
                .filter(|(k, _)| !given.contains(k)),
        );
    }
    if show_progress {
        eprintln!();
    }
    let commit = Commit::new(root, parent, timestamp, version, metadata)
        .with_context(|| format!("{}: commit metadata", args.source_name()))?;
    let bytes = commit.encode();
    let signatures = if keys.is_empty() {
        None
    } else {
        let mut s = Signatures::new();
        for k in keys {
            s.sign(&bytes, k).context("sign commit")?;
        }
        Some(s)
    };
    let id = txn.write_commit(&commit, signatures.as_ref())?;
    let txn_stats = txn.commit()?;
    Ok(CommitOutput {
        commit: id,
        root,
        build,
        txn: txn_stats,
        image,
    })
}

impl CommitArgs {
    /// The input, as messages name it.
    fn source_name(&self) -> String {
        match &self.source {
            Source::Dir(p) | Source::Tar(p) => p.display().to_string(),
            Source::Oci(o) => o.transport.to_string(),
        }
    }
}

fn parse_meta(pairs: &[String]) -> Result<Vec<(String, String)>> {
    pairs
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("--meta {p:?}: expected KEY=VALUE"))
        })
        .collect()
}

fn timestamp(given: Option<u64>) -> Result<u64> {
    if let Some(t) = given {
        return Ok(t);
    }
    if let Ok(s) = std::env::var("SOURCE_DATE_EPOCH") {
        return s
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={s:?}: not a number of seconds"));
    }
    Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()))
}
