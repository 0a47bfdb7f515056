//! `berth-image commit`: a root filesystem into a repository, as a signed commit.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;

use crate::commit::{CommitArgs, Source};

/// The arguments of `commit`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The repository.
    #[arg(long, value_name = "REPO")]
    repo: PathBuf,
    /// A directory holding the root filesystem.
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with = "tar",
        required_unless_present = "tar"
    )]
    tree: Option<PathBuf>,
    /// A tarball of the root filesystem (plain, gzip or zstd); xattrs are read from
    /// PAX SCHILY.xattr records (GNU tar --xattrs, bsdtar).
    #[arg(long, value_name = "FILE")]
    tar: Option<PathBuf>,
    /// The release version: letters, digits and . + ~ _ - (at most 64 bytes).
    #[arg(long, value_name = "V")]
    version: String,
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
    let source = match (a.tree, a.tar) {
        (Some(dir), None) => Source::Dir(dir),
        (None, Some(file)) => Source::Tar(file),
        // clap enforces exactly one of the two.
        _ => anyhow::bail!("give exactly one of --tree and --tar"),
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
