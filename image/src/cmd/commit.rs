//! `berth-image commit`: a root filesystem into a repository, as a signed commit.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;

use crate::commit::{CommitArgs, Source};
use crate::ociimage::{OciSource, Platform, Transport};

/// The arguments of `commit`.
#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("source").required(true).multiple(false))]
pub struct Args {
    /// The repository.
    #[arg(long, value_name = "REPO")]
    repo: PathBuf,
    /// A directory holding the root filesystem.
    #[arg(long, value_name = "DIR", group = "source")]
    tree: Option<PathBuf>,
    /// A tarball of the root filesystem (plain, gzip or zstd); xattrs are read from
    /// PAX SCHILY.xattr records (GNU tar --xattrs, bsdtar).
    #[arg(long, value_name = "FILE", group = "source")]
    tar: Option<PathBuf>,
    /// A container image, named as skopeo names images: oci:DIR[:REF] (an OCI image
    /// layout, as `skopeo copy IMAGE oci:DIR:TAG` or umoci write it; REF is the image's
    /// ref name or manifest digest, needed only when the layout holds several),
    /// oci-archive:FILE[:REF] (the same as a tar archive), docker-archive:FILE (what
    /// `docker save` writes) or `docker://REGISTRY/NAME:TAG` (--ca and --registry-auth as
    /// for `push`). Its layers are applied in order, whiteouts honoured, every blob and
    /// every layer checked against its digest; the image's platform and labels become
    /// commit metadata (oci.architecture, oci.label.KEY, …), and its
    /// org.opencontainers.image.version label the default --version.
    #[arg(long, value_name = "REF", group = "source")]
    oci: Option<Transport>,
    /// With --oci: the architecture to take from a multi-platform image, which the image
    /// must be for, as OCI names them: amd64, arm64, arm/v7, riscv64 (default: this
    /// host's).
    #[arg(long, value_name = "ARCH[/VARIANT]", requires = "oci", value_parser = Platform::linux)]
    arch: Option<Platform>,
    /// With --oci: refuse an image whose layers unpack to more than this many bytes,
    /// all together (a decompression bomb).
    #[arg(long, value_name = "BYTES", requires = "oci", default_value_t = format::limits::OCI_UNPACKED_MAX)]
    max_unpacked: u64,
    /// With --oci: refuse an image whose layers hold more than this many entries, all
    /// together.
    #[arg(long, value_name = "N", requires = "oci", default_value_t = format::limits::OCI_ENTRIES_MAX)]
    max_entries: u64,
    /// With --oci `docker://…`: trust only the certificate authorities in this PEM file
    /// for the registry's HTTPS, instead of the system's roots. Repeatable.
    #[arg(long, value_name = "FILE", requires = "oci")]
    ca: Vec<PathBuf>,
    /// With --oci `docker://…`: credentials for a registry that asks for them, a
    /// Docker-style config.json (as `docker login` writes); a pull token is asked for.
    #[arg(long, value_name = "FILE", requires = "oci")]
    registry_auth: Option<PathBuf>,
    /// The release version: letters, digits and . + ~ _ - (at most 64 bytes). With
    /// --oci, the image's org.opencontainers.image.version label when not given.
    #[arg(long, value_name = "V", required_unless_present = "oci")]
    version: Option<String>,
    /// Secret key to sign the commit with (from `keygen`); repeat it to sign with
    /// several, as a key rotation needs (docs/KEYS.md).
    #[arg(long, value_name = "K")]
    key: Vec<PathBuf>,
    /// The commit this one follows (full id or a unique prefix).
    #[arg(long, value_name = "COMMIT")]
    parent: Option<String>,
    /// Commit time in seconds since the epoch (default: `SOURCE_DATE_EPOCH`, else now).
    #[arg(long, value_name = "SECONDS")]
    timestamp: Option<u64>,
    /// Free-form metadata, repeatable: --meta board=qemu-x86_64.
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    meta: Vec<String>,
}

pub fn run(a: Args) -> Result<()> {
    let source = match (a.tree, a.tar, a.oci) {
        (Some(dir), None, None) => Source::Dir(dir),
        (None, Some(file), None) => Source::Tar(file),
        (None, None, Some(transport)) => Source::Oci(Box::new(OciSource {
            transport,
            platform: a.arch.unwrap_or_else(Platform::host),
            access: crate::oci::Access {
                trust: if a.ca.is_empty() {
                    net::tls::Trust::System
                } else {
                    net::tls::Trust::Only(a.ca)
                },
                registry_auth: a.registry_auth,
            },
            limits: image::layers::Limits {
                bytes: a.max_unpacked,
                entries: a.max_entries,
            },
        })),
        // clap enforces exactly one of the three.
        _ => anyhow::bail!("give exactly one of --tree, --tar and --oci"),
    };
    let args = CommitArgs {
        repo: a.repo,
        source,
        version: a.version,
        key: a.key,
        parent: a.parent,
        timestamp: a.timestamp,
        meta: a.meta,
    };
    let start = Instant::now();
    let out = crate::commit::commit(&args, std::io::stderr().is_terminal())?;
    println!("{}", out.commit);
    let repo = store::Repo::open(&args.repo)?;
    let missing = missing_mount_points(&repo.read_tree(&out.root)?);
    if !missing.is_empty() {
        eprintln!(
            "berth-image: warning: the tree looks like a root filesystem (it has /sbin) but lacks /{}: berth-init mounts on these when it boots a deployment, so this commit will not boot (create them, empty, in the tree; debootstrap's trees lack /sysroot)",
            missing.join(", /")
        );
    }
    if let Some(image) = &out.image {
        eprintln!(
            "image {} ({}, {} layers)",
            image.manifest, image.platform, image.layers
        );
    }
    eprintln!(
        "committed {} files, {} directories, {} bytes in {:.2}s: {} new objects ({} bytes), {} already present; root tree {}",
        out.build.files,
        out.build.dirs,
        out.build.bytes,
        start.elapsed().as_secs_f64(),
        out.txn.written,
        out.txn.bytes_written,
        out.txn.reused,
        out.root,
    );
    Ok(())
}

/// The directories berth-init mounts on in a deployment that a tree with `sbin` lacks
/// (none for a tree without one: not meant to boot).
fn missing_mount_points(root: &format::tree::Tree) -> Vec<&'static str> {
    use format::tree::EntryKind;
    let has = |name: &str, kind| {
        root.entries()
            .iter()
            .any(|e| e.name.as_bytes() == name.as_bytes() && e.kind == kind)
    };
    // `sbin` may be a link to usr/sbin (merged /usr): a file entry then.
    if !has("sbin", EntryKind::Tree) && !has("sbin", EntryKind::File) {
        return Vec::new();
    }
    ["sysroot", "dev", "proc", "sys", "run", "var", "etc"]
        .into_iter()
        .filter(|d| !has(d, EntryKind::Tree))
        .collect()
}
