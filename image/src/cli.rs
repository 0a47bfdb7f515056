//! The command line: one subcommand per verb, as DESIGN.md names them.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use store::Repo;
use store::checkout::CheckoutOptions;

use crate::commit::{CommitArgs, Source};
use crate::keys;

/// Build-host tool for Berth: keys, signed commits of root filesystems, checkouts.
///
/// A typical session:
///
///   berth-image keygen --out keys/
///   berth-image commit --repo repo --tree rootfs/ --version 1.0 --key keys/berth.key
///   berth-image checkout --repo repo <COMMIT> /tmp/rootfs-copy
#[derive(Debug, Parser)]
#[command(name = "berth-image", version, about, long_about, verbatim_doc_comment)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate an ed25519 signing key pair: DIR/berth.key (secret, mode 0600) and
    /// DIR/berth.pub (public, to install on devices). Refuses to overwrite a key.
    Keygen {
        /// Directory to write the keys into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Commit a root filesystem into a repository and print the commit id.
    ///
    /// The repository is created if REPO does not exist or is an empty directory.
    /// Modification times are not recorded (checkouts have them at 1970-01-01), so the
    /// same tree always gives the same root tree id; the commit id also covers the
    /// version, timestamp, parent and metadata. Set `SOURCE_DATE_EPOCH` or --timestamp for
    /// reproducible commit ids. Committing files owned by other users, device nodes or
    /// security.* xattrs needs root.
    #[command(verbatim_doc_comment)]
    Commit {
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
    },
    /// Check out a commit as a directory tree of hard links into the repository.
    ///
    /// DEST must not exist. The tree is built under a temporary name beside DEST and
    /// renamed into place when complete.
    Checkout {
        /// The repository.
        #[arg(long, value_name = "REPO")]
        repo: PathBuf,
        /// The commit (full id or a unique prefix of at least 8 digits).
        commit: String,
        /// Where to create the tree.
        dest: PathBuf,
        /// Copy files instead of hard-linking them to the repository.
        #[arg(long)]
        copy: bool,
        /// Refuse the commit unless it is signed by this public key (repeatable).
        #[arg(long, value_name = "PUB")]
        verify: Vec<PathBuf>,
    },
    /// Lay out a sysroot directory for a device's first boot: the object store with the
    /// commits, their deployments checked out, /var seeded, and the boot record.
    ///
    /// Deployments are named after the first 16 hex digits of their commit id.
    Install {
        /// The repository holding the commits.
        #[arg(long, value_name = "REPO")]
        repo: PathBuf,
        #[command(flatten)]
        layout: LayoutArgs,
        /// The sysroot directory to fill (new or empty).
        #[arg(long, value_name = "DIR")]
        sysroot: PathBuf,
    },
    /// Build a bootable disk image for a board: a GPT disk whose ext4 sysroot partition
    /// holds the store, the deployments and the boot record; the initramfs (berth-init
    /// plus the board's kernel modules); and the kernel, beside the image.
    ///
    /// The image is sparse, and DISK.IMG.bmap beside it (bmap-tools' format 2.0) lists
    /// the blocks that hold data with their sha256, so `bmaptool copy` or `berth-image
    /// flash` write only those. Nothing is mounted and no loop device is used. Prints
    /// where everything went, how to flash it and the QEMU command that boots it (QEMU
    /// boards).
    Disk {
        /// The board: a directory under --boards holding board.toml.
        #[arg(long, value_name = "NAME")]
        board: String,
        /// The repository holding the commits.
        #[arg(long, value_name = "REPO")]
        repo: PathBuf,
        #[command(flatten)]
        layout: LayoutArgs,
        /// The disk image to write; the kernel and initramfs go beside it
        /// (NAME.kernel, NAME.initrd).
        #[arg(short = 'o', long = "output", value_name = "DISK.IMG")]
        output: PathBuf,
        /// Where the board files are.
        #[arg(long, value_name = "DIR", default_value = "boards")]
        boards: PathBuf,
        /// The unpacked Debian kernel package (default: what ci/fetch-kernels.sh made
        /// under /var/cache/berth/debian/<arch>/kernel).
        #[arg(long, value_name = "DIR")]
        kernel_dir: Option<PathBuf>,
        /// berth-init for the board's architecture (default: the one ci/check-init.sh built).
        #[arg(long, value_name = "PATH")]
        init: Option<PathBuf>,
        /// The unpacked firmware and loaders of boards that boot through them (default:
        /// what ci/fetch-loaders.sh made: the board's bootloader.loader-dir under
        /// /var/cache/berth, else /var/cache/berth/debian/<arch>/loaders).
        #[arg(long, value_name = "DIR")]
        loader_dir: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write IMAGE.bmap for a sparse image (bmap-tools' format 2.0): the blocks that hold
    /// data, each with its sha256, for `bmaptool copy` and `berth-image flash`.
    ///
    /// `disk` writes one for its images; this is for images made another way. Holes are
    /// found with `SEEK_DATA`/`SEEK_HOLE`, so an image copied without keeping its holes maps
    /// every block (correct, only not faster to flash). Prints the bmap's path.
    Bmap {
        /// The image file.
        image: PathBuf,
    },
    /// Complete a root filesystem's kernel set before it is committed: write
    /// DIR/usr/lib/modules/<kver>/initramfs.img (berth-init for the board's architecture
    /// and the board's kernel modules with their dependencies, resolved from DIR's own
    /// modules), so that the committed tree is exactly what boots and an update carries
    /// the kernel, its modules and berth-init together.
    ///
    /// The kernel goes to usr/lib/modules/<kver>/vmlinuz (taken from DIR/boot/vmlinuz-<kver>
    /// when missing) and device trees to its dtb/ (from DIR/usr/lib/linux-image-<kver>/).
    /// usr/lib/berth/kargs, one line, is appended to the board's kernel command line.
    /// With --kernel-dir, the kernel and the board's module closure are first copied from
    /// an unpacked Debian kernel package (for a root filesystem without its own kernel).
    ///
    /// Example: berth-image initramfs --board qemu-aarch64 --root rootfs/
    Initramfs(InitramfsCli),
    /// Write a disk image to a USB stick, SD card or file with its bmap, and verify it.
    ///
    /// Only the blocks the bmap (IMAGE.bmap, from `berth-image disk`, or any bmap-tools
    /// 2.0 bmap with sha256) lists are written, each checked against the bmap's sha256
    /// before anything is written; then TARGET is synced and every written block read
    /// back (bypassing the page cache) and checked. A file TARGET is created or
    /// truncated to the image's size, with holes where the image has them.
    ///
    /// Refused before anything is written: a device that is mounted, swap or held by
    /// device-mapper (it or any partition on it; --force does not change this), a disk
    /// that is not removable (a fixed disk, a loop device) without --force, a device
    /// smaller than the image, a bmap that fails its own checksum or does not fit the
    /// image.
    #[command(verbatim_doc_comment)]
    Flash(FlashCli),
    /// Make a signed update file that takes a device from one commit to another.
    ///
    /// It holds every object the target needs that --from does not have (all of them
    /// with --empty): trees as edits of the old ones, a changed file as a bsdiff-style
    /// patch against the old file at the same path (or an alike-named one that went away,
    /// or one of the same name that moved) when that is smaller, zstd-compressed in parts
    /// of about --part-size bytes, and a superblock signed with --key that names each part
    /// by sha256. Diffs run on every core; progress shows on a terminal. Copy the file to a
    /// USB stick or a web server; `berth update FILE` applies it.
    Delta {
        /// The repository holding the commits.
        #[arg(long, value_name = "REPO")]
        repo: PathBuf,
        /// The commit the device runs now.
        #[arg(
            long,
            value_name = "COMMIT",
            conflicts_with = "empty",
            required_unless_present = "empty"
        )]
        from: Option<String>,
        /// A full update, for a device that may have nothing.
        #[arg(long)]
        empty: bool,
        /// The commit to update to.
        #[arg(long, value_name = "COMMIT")]
        to: String,
        /// The secret key to sign the update with; repeat it to sign with several (a
        /// device accepts the update if it trusts any of them; docs/KEYS.md).
        #[arg(long, value_name = "K", required = true)]
        key: Vec<PathBuf>,
        /// The update file to write.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
        /// Uncompressed bytes per part (a part is the unit of resuming).
        #[arg(long, value_name = "BYTES", default_value_t = 8 << 20)]
        part_size: u64,
        /// zstd compression level (1 to 22).
        #[arg(long, value_name = "N", default_value_t = 19, value_parser = clap::value_parser!(i32).range(1..=22))]
        level: i32,
        /// Output bytes per patch window: files larger than twice this are diffed window
        /// by window, which bounds the build host's memory (about 10x the window).
        #[arg(long, value_name = "BYTES", default_value_t = crate::delta::WINDOW)]
        window: u64,
        /// Write a directory instead (superblock, part-00000, …), to serve over HTTP;
        /// `berth update DIR` reads it too.
        #[arg(long)]
        split: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Publish a commit to a channel of a static repository (a directory to serve over
    /// HTTP, copy to a bucket or put behind a CDN).
    ///
    /// Writes a full update and deltas (from each --from and from the channel's previous
    /// commit) in split form under DIR/updates/, then the signed channel pointer
    /// DIR/channels/NAME last, so a reader never sees a pointer to something missing. The
    /// pointer's serial grows with each publish and it expires after --expires-in-days:
    /// devices refuse an older serial and an expired pointer, so republish before then.
    /// `berth update http://HOST/PATH --channel NAME` reads it.
    Publish(PublishCli),
    /// Push a commit to an OCI registry (distribution, Harbor, zot, a cloud's registry)
    /// as the tag REGISTRY/NAME:TAG, which is the channel.
    ///
    /// Publishes as `publish` does (full update, deltas from each --from and from the
    /// tag's previous commit, every object and the index, the signed pointer with the
    /// next serial, read from the registry) and uploads each file as a blob (blobs the
    /// registry has are not sent again), then the manifest that names them, last.
    /// `berth update oci://REGISTRY/NAME:TAG` reads it.
    Push(PushCli),
    /// List the boards berth-image knows, from their board.toml files.
    Boards {
        /// Where the board files are.
        #[arg(long, value_name = "DIR", default_value = "boards")]
        boards: PathBuf,
    },
    /// Show a commit: its root tree, parent, version, time, metadata and signers.
    Show {
        /// The repository.
        #[arg(long, value_name = "REPO")]
        repo: PathBuf,
        /// The commit (full id or a unique prefix of at least 8 digits).
        commit: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Re-hash every object in a repository and check that every commit is complete.
    Fsck {
        /// The repository.
        #[arg(long, value_name = "REPO")]
        repo: PathBuf,
    },
}

/// What a release is made of, for `publish` and `push`.
#[derive(Debug, clap::Args)]
pub struct ReleaseArgs {
    /// The repository holding the commits.
    #[arg(long, value_name = "REPO")]
    pub repo: PathBuf,
    /// The commit the channel points at.
    #[arg(long, value_name = "COMMIT")]
    pub commit: String,
    /// The secret key to sign the updates and the pointer with; repeat it to sign with
    /// several while devices move from one key to the next (docs/KEYS.md).
    #[arg(long, value_name = "K", required = true)]
    pub key: Vec<PathBuf>,
    /// Also make a delta from this commit (repeatable).
    #[arg(long, value_name = "COMMIT")]
    pub from: Vec<String>,
    /// Days until devices refuse the pointer (1 to 3650: republish well before then).
    #[arg(long, value_name = "DAYS", default_value_t = 30)]
    pub expires_in_days: u64,
    /// Uncompressed bytes per part (the unit of resuming a download).
    #[arg(long, value_name = "BYTES", default_value_t = 8 << 20)]
    pub part_size: u64,
    /// zstd compression level (1 to 22).
    #[arg(long, value_name = "N", default_value_t = 19, value_parser = clap::value_parser!(i32).range(1..=22))]
    pub level: i32,
}

impl ReleaseArgs {
    pub fn publish_to(self, to: PathBuf, channel: String) -> crate::publish::PublishArgs {
        crate::publish::PublishArgs {
            repo: self.repo,
            to,
            channel,
            commit: self.commit,
            key: self.key,
            from: self.from,
            expires_days: self.expires_in_days,
            part_size: self.part_size,
            level: self.level,
            serial_floor: 0,
        }
    }
}

/// The arguments of `publish`.
#[derive(Debug, clap::Args)]
pub struct PublishCli {
    #[command(flatten)]
    pub release: ReleaseArgs,
    /// The static repository directory (created if missing).
    #[arg(long = "to", value_name = "DIR")]
    pub to: PathBuf,
    /// The channel (a-z, 0-9, . _ -).
    #[arg(long, value_name = "NAME")]
    pub channel: String,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The arguments of `flash`.
#[derive(Debug, clap::Args)]
pub struct FlashCli {
    /// The disk image.
    pub image: PathBuf,
    /// A block device (/dev/sdX, /dev/mmcblkN, /dev/disk/by-id/…) or a file.
    pub target: PathBuf,
    /// The bmap (default: IMAGE.bmap).
    #[arg(long, value_name = "FILE", conflicts_with = "no_bmap")]
    pub bmap: Option<PathBuf>,
    /// Write every block of the image, without a bmap (and without checking the
    /// image; the read-back still checks the target).
    #[arg(long)]
    pub no_bmap: bool,
    /// Write a disk that is not removable (a fixed disk or a loop device). Never
    /// writes a device that is in use.
    #[arg(long)]
    pub force: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The arguments of `push`.
#[derive(Debug, clap::Args)]
pub struct PushCli {
    #[command(flatten)]
    pub release: ReleaseArgs,
    /// Where to push: REGISTRY/NAME:TAG, the tag being the channel (a-z, 0-9, . _ -).
    /// A registry on localhost, 127.0.0.1 or `[::1]` is reached over plain HTTP, any
    /// other over HTTPS.
    #[arg(value_name = "REGISTRY/NAME:TAG")]
    pub reference: String,
    /// Trust only the certificate authorities in this PEM file for the registry's
    /// HTTPS, instead of the system's roots (`SSL_CERT_FILE`, `SSL_CERT_DIR`, else
    /// /etc/ssl/certs). Repeatable.
    #[arg(long, value_name = "FILE")]
    pub ca: Vec<PathBuf>,
    /// Credentials for a registry that asks for them: a Docker-style config.json
    /// (`{"auths": {"REGISTRY": {"auth": "<base64 of user:password>"}}}`, as
    /// `docker login` writes). They go to the registry's token service, which issues a
    /// push token for NAME (or, for a registry that asks for Basic authentication,
    /// with every request).
    #[arg(long, value_name = "FILE")]
    pub registry_auth: Option<PathBuf>,
    /// Layers per manifest (about 270 bytes each). Past it, the tag names an image index
    /// of several manifests: registries limit a manifest's size (4 MiB is common), and a
    /// rootfs has a layer per object.
    #[arg(long, value_name = "N", default_value_t = 4000, value_parser = clap::value_parser!(u32).range(1..))]
    pub manifest_layers: u32,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Which commits a device starts with.
#[derive(Debug, clap::Args)]
struct LayoutArgs {
    /// The default deployment's commit.
    #[arg(long, value_name = "COMMIT")]
    commit: String,
    /// A previous deployment, booted when the default cannot be.
    #[arg(long, value_name = "COMMIT")]
    previous: Option<String>,
    /// A deployment to try first, with --tries boots before falling back.
    #[arg(long, value_name = "COMMIT", requires = "tries")]
    trial: Option<String>,
    /// How many boots the trial gets (1 to 255).
    #[arg(long, value_name = "N", requires = "trial")]
    tries: Option<u8>,
}

impl LayoutArgs {
    fn layout(self) -> crate::install::Layout {
        crate::install::Layout {
            default: self.commit,
            previous: self.previous,
            trial: self.trial.zip(self.tries),
        }
    }
}

/// `berth-image initramfs`'s arguments.
#[derive(Debug, clap::Args)]
pub struct InitramfsCli {
    /// The board (a directory under --boards holding board.toml).
    #[arg(long, value_name = "NAME")]
    board: String,
    /// The root filesystem to complete (modified in place).
    #[arg(long, value_name = "DIR")]
    root: PathBuf,
    /// The kernel version, when DIR/usr/lib/modules holds several.
    #[arg(long, value_name = "KVER")]
    kver: Option<String>,
    /// Take the kernel and the board's modules from this unpacked kernel package.
    #[arg(long, value_name = "KDIR")]
    kernel_dir: Option<PathBuf>,
    /// berth-init for the board's architecture (default: the one ci/check-init.sh built).
    #[arg(long, value_name = "PATH")]
    init: Option<PathBuf>,
    /// Where the board files are.
    #[arg(long, value_name = "DIR", default_value = "boards")]
    boards: PathBuf,
    /// Print JSON for programs.
    #[arg(long)]
    json: bool,
}

#[allow(clippy::too_many_lines)] // the dispatch table: one arm per subcommand
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Keygen { out } => {
            let (secret, public) = keys::keygen(&out)?;
            println!("{}", secret.display());
            println!("{}", public.display());
            Ok(())
        }
        Command::Commit {
            repo,
            tree,
            tar,
            version,
            key,
            parent,
            timestamp,
            meta,
        } => {
            let source = match (tree, tar) {
                (Some(dir), None) => Source::Dir(dir),
                (None, Some(file)) => Source::Tar(file),
                // clap enforces exactly one of the two.
                _ => anyhow::bail!("give exactly one of --tree and --tar"),
            };
            commit(&CommitArgs {
                repo,
                source,
                version,
                key,
                parent,
                timestamp,
                meta,
            })
        }
        Command::Checkout {
            repo,
            commit,
            dest,
            copy,
            verify,
        } => checkout(&repo, &commit, &dest, copy, &verify),
        Command::Install {
            repo,
            layout,
            sysroot,
        } => install(&repo, layout, &sysroot),
        Command::Disk {
            board,
            repo,
            layout,
            output,
            boards,
            kernel_dir,
            init,
            loader_dir,
            json,
        } => disk(
            &crate::disk::DiskArgs {
                board,
                boards_dir: boards,
                repo,
                layout: layout.layout(),
                output,
                kernel_dir,
                init,
                loader_dir,
            },
            json,
        ),
        Command::Boards { boards } => list_boards(&boards),
        Command::Flash(a) => flash(a),
        Command::Bmap { image } => bmap(&image),
        Command::Initramfs(a) => initramfs(a),
        Command::Delta {
            repo,
            from,
            empty: _,
            to,
            key,
            output,
            part_size,
            level,
            window,
            split,
            json,
        } => delta(
            &crate::delta::DeltaArgs {
                repo,
                from,
                to,
                key,
                output,
                part_size,
                level,
                split,
                progress: !json && std::io::stderr().is_terminal(),
                window,
            },
            json,
        ),
        Command::Publish(a) => publish(a),
        Command::Push(a) => push(a),
        Command::Show { repo, commit, json } => show(&repo, &commit, json),
        Command::Fsck { repo } => fsck(&repo),
    }
}

fn initramfs(a: InitramfsCli) -> Result<()> {
    let out = crate::kernelset::initramfs(&crate::kernelset::InitramfsArgs {
        board: a.board,
        boards_dir: a.boards,
        root: a.root,
        kver: a.kver,
        kernel_dir: a.kernel_dir,
        init: a.init,
    })?;
    if a.json {
        println!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    for a in &out.added {
        eprintln!("berth-image initramfs: added {a}");
    }
    println!(
        "{}: kernel {}, berth-init and {} modules, {} bytes",
        out.initramfs.display(),
        out.version,
        out.modules,
        out.bytes
    );
    Ok(())
}

fn show(repo: &Path, commit: &str, json: bool) -> Result<()> {
    let r = Repo::open(repo)?;
    let id = r.resolve_commit(commit)?;
    let (c, _) = r.read_commit(&id)?;
    let kset = crate::kernelset::find(&r, &c.root)?;
    let signers: Vec<String> = r
        .read_signatures(&id)?
        .entries()
        .iter()
        .map(|e| {
            ed25519_dalek::VerifyingKey::from_bytes(&e.key).map_or_else(
                |_| "invalid-key".to_owned(),
                |k| format::key::fingerprint(&k),
            )
        })
        .collect();
    if json {
        let meta: serde_json::Map<String, serde_json::Value> = c
            .metadata()
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let v = serde_json::json!({
            "id": id.to_string(),
            "root": c.root.to_string(),
            "parent": c.parent.map(|p| p.to_string()),
            "version": c.version.as_str(),
            "timestamp": c.timestamp,
            "metadata": meta,
            "signed_by": signers,
            "kernel_set": kset.as_ref().map(|k| serde_json::json!({
                "id": k.id().to_string(),
                "version": k.version,
                "kernel": k.kernel.to_string(),
                "initramfs": k.initramfs.to_string(),
                "dtb": k.dtb.map(|d| d.to_string()),
                "kargs": k.kargs,
            })),
        });
        println!("{v}");
    } else {
        println!("commit    {id}");
        println!("root      {}", c.root);
        println!(
            "parent    {}",
            c.parent
                .map_or_else(|| "(none)".to_owned(), |p| p.to_string())
        );
        println!("version   {}", c.version);
        println!("timestamp {}", c.timestamp);
        for (k, v) in c.metadata() {
            println!("meta      {k}={v}");
        }
        match &kset {
            Some(k) => println!(
                "kernel    {} (set {}{}{})",
                k.version,
                k.dir_name(),
                if k.dtb.is_some() {
                    ", device trees"
                } else {
                    ""
                },
                if k.kargs.is_empty() {
                    String::new()
                } else {
                    format!(", kargs {:?}", k.kargs)
                }
            ),
            None => println!("kernel    (none in the tree)"),
        }
        if signers.is_empty() {
            println!("signed    (unsigned)");
        }
        for s in signers {
            println!("signed    key {s}");
        }
    }
    Ok(())
}

fn checkout(repo: &Path, commit: &str, dest: &Path, copy: bool, verify: &[PathBuf]) -> Result<()> {
    let r = Repo::open(repo)?;
    let id = r.resolve_commit(commit)?;
    let (c, bytes) = r.read_commit(&id)?;
    if !verify.is_empty() {
        let trusted = verify
            .iter()
            .map(|p| keys::read_public(p))
            .collect::<Result<Vec<_>>>()?;
        let who = r
            .read_signatures(&id)?
            .verify(&bytes, &trusted)
            .with_context(|| format!("commit {id}"))?;
        eprintln!(
            "commit {id}: good signature from key {}",
            format::key::fingerprint(&who)
        );
    }
    let start = Instant::now();
    let stats =
        store::checkout::checkout(&r, &c.root, dest, CheckoutOptions { copy, sync: false })?;
    eprintln!(
        "checked out {} (version {}) at {}: {} directories, {} files linked, {} copied in {:.2}s",
        id,
        c.version,
        dest.display(),
        stats.dirs,
        stats.linked,
        stats.copied,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn fsck(repo: &Path) -> Result<()> {
    let r = Repo::open(repo)?;
    let report = r.fsck()?;
    for e in report.corrupt.iter().chain(&report.missing) {
        eprintln!("{e}");
    }
    if report.is_ok() {
        println!("{} objects checked, all sound", report.checked);
        Ok(())
    } else {
        anyhow::bail!(
            "{}: {} corrupt and {} missing objects ({} checked)",
            repo.display(),
            report.corrupt.len(),
            report.missing.len(),
            report.checked
        )
    }
}

fn install(repo: &Path, layout: LayoutArgs, sysroot: &Path) -> Result<()> {
    let r = Repo::open(repo)?;
    let done = crate::install::install(&r, &layout.layout(), sysroot)?;
    for (name, commit) in &done.deployments {
        println!(
            "{}/berth/deploy/{} {commit}",
            sysroot.display(),
            name.as_str()
        );
    }
    Ok(())
}

fn disk(args: &crate::disk::DiskArgs, json: bool) -> Result<()> {
    let out = crate::disk::disk(args)?;
    if json {
        println!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    println!("disk:       {}", out.disk.display());
    println!("bmap:       {}", out.bmap.display());
    println!("kernel:     {}", out.kernel.display());
    println!("initramfs:  {}", out.initramfs.display());
    println!("sysroot:    PARTUUID={}", out.partuuid);
    for (name, commit) in &out.deployments {
        println!("deployment: {name} (commit {commit})");
    }
    if let Some(q) = &out.qemu {
        let quoted: Vec<String> = q
            .iter()
            .map(|a| {
                if a.contains(' ') {
                    format!("'{a}'")
                } else {
                    a.clone()
                }
            })
            .collect();
        println!("boot it with:\n  {}", quoted.join(" "));
    }
    println!(
        "flash it to a USB stick or SD card (/dev/sdX) with either of:\n  bmaptool copy --bmap {bmap} {disk} /dev/sdX\n  berth-image flash {disk} /dev/sdX",
        bmap = out.bmap.display(),
        disk = out.disk.display()
    );
    Ok(())
}

fn bmap(image: &Path) -> Result<()> {
    let started = Instant::now();
    let map = crate::bmap::create(image)?;
    let path = crate::bmap::write_beside(image, &map)?;
    println!("{}", path.display());
    eprintln!(
        "{}: {} mapped in {} ranges, of {} ({:.2} s)",
        image.display(),
        crate::bmap::human(map.mapped_bytes()),
        map.ranges.len(),
        crate::bmap::human(map.image_size),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn flash(a: FlashCli) -> Result<()> {
    let args = crate::flash::FlashArgs {
        image: a.image,
        target: a.target,
        bmap: a.bmap,
        no_bmap: a.no_bmap,
        force: a.force,
    };
    let out = crate::flash::flash(&args, &crate::device::Host::real())?;
    if a.json {
        println!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    let secs = out.write_seconds.max(1e-3);
    let kind = match &out.device {
        Some(d) => format!("{} {d}", out.target_kind),
        None => out.target_kind.to_owned(),
    };
    println!(
        "wrote {} ({} bytes) in {} ranges of {} to {} ({kind}) in {:.2} s ({:.1} MiB/s); read back and verified in {:.2} s",
        crate::bmap::human(out.bytes_written),
        out.bytes_written,
        out.ranges,
        out.image.display(),
        out.target.display(),
        out.write_seconds,
        mib(out.bytes_written) / secs,
        out.verify_seconds
    );
    Ok(())
}

/// Bytes as MiB, for display (a rate); precision past 2^52 bytes does not matter there.
#[allow(clippy::cast_precision_loss)]
fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}

fn list_boards(boards: &Path) -> Result<()> {
    for b in crate::board::all(boards)? {
        println!(
            "{:<18} {:<8} kernel {:<18} bootloader {:<12} {}",
            b.name,
            b.arch.musl_triple().split('-').next().unwrap_or_default(),
            b.kernel.debian_package,
            format!("{:?}", b.bootloader.kind),
            b.description
        );
    }
    Ok(())
}

fn delta(args: &crate::delta::DeltaArgs, json: bool) -> Result<()> {
    let out = crate::delta::delta(args)?;
    if json {
        println!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    println!("{}", out.output.display());
    eprintln!(
        "update {} -> {}: {} objects ({} as patches, {} of them against a renamed or moved file), {} parts, {} bytes ({} uncompressed)",
        out.from.as_deref().map_or("(empty)", |f| &f[..16]),
        &out.to[..16],
        out.objects,
        out.patched,
        out.patched_elsewhere,
        out.parts,
        out.bytes,
        out.uncompressed
    );
    Ok(())
}

fn commit(args: &CommitArgs) -> Result<()> {
    let start = Instant::now();
    let out = crate::commit::commit(args, std::io::stderr().is_terminal())?;
    println!("{}", out.commit);
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

fn publish(a: PublishCli) -> Result<()> {
    let out = crate::publish::publish(&a.release.publish_to(a.to, a.channel))?;
    if a.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!(
            "channel {} serial {} -> {} (full update {} bytes; {} deltas: {})",
            out.channel,
            out.serial,
            &out.commit[..16],
            out.full_bytes,
            out.deltas.len(),
            out.deltas
                .iter()
                .map(|(f, b)| format!("from {} {b} bytes", &f[..16]))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

fn push(a: PushCli) -> Result<()> {
    let trust = if a.ca.is_empty() {
        net::tls::Trust::System
    } else {
        net::tls::Trust::Only(a.ca)
    };
    let out = crate::oci::push(
        a.release,
        &a.reference,
        &crate::oci::Access {
            trust,
            registry_auth: a.registry_auth,
        },
        usize::try_from(a.manifest_layers).unwrap_or(usize::MAX),
    )?;
    if a.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!(
            "{} serial {} -> {} ({} blobs, {} uploaded: {} bytes; manifest {})",
            out.reference,
            out.serial,
            &out.commit[..16],
            out.blobs,
            out.uploaded,
            out.uploaded_bytes,
            out.manifest_digest
        );
    }
    Ok(())
}
