//! The command line: one subcommand per verb, as the README names them, one module per
//! command (its arguments and its `run`), as tuftool does. This module holds the
//! top-level parser and the dispatch; the modules print, the library modules below them
//! do the work and return values.

mod bmap;
mod boards;
mod checkout;
mod commit;
mod delta;
mod disk;
mod flash;
mod fsck;
mod initramfs;
mod install;
mod keygen;
mod layout;
mod publish;
mod push;
mod qemu;
mod release;
mod show;

use anyhow::Result;
use clap::{Parser, Subcommand};

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

/// The subcommands, in the order `--help` lists them. A variant's doc comment is the
/// command's help text; its arguments are in its module.
#[derive(Debug, Subcommand)]
enum Command {
    /// Generate an ed25519 signing key pair: DIR/berth.key (secret, mode 0600) and
    /// DIR/berth.pub (public, to install on devices). Refuses to overwrite a key.
    Keygen(keygen::Args),
    /// Commit a root filesystem into a repository and print the commit id.
    ///
    /// The repository is created if REPO does not exist or is an empty directory.
    /// Modification times are not recorded (checkouts have them at 1970-01-01), so the
    /// same tree always gives the same root tree id; the commit id also covers the
    /// version, timestamp, parent and metadata. Set `SOURCE_DATE_EPOCH` or --timestamp for
    /// reproducible commit ids. Committing files owned by other users, device nodes or
    /// security.* xattrs needs root.
    #[command(verbatim_doc_comment)]
    Commit(commit::Args),
    /// Check out a commit as a directory tree of hard links into the repository.
    ///
    /// DEST must not exist. The tree is built under a temporary name beside DEST and
    /// renamed into place when complete.
    Checkout(checkout::Args),
    /// Lay out a sysroot directory for a device's first boot: the object store with the
    /// commits, their deployments checked out, /var seeded, and the boot record.
    ///
    /// Deployments are named after the first 16 hex digits of their commit id.
    Install(install::Args),
    /// Build a bootable disk image for a board: a GPT disk whose ext4 sysroot partition
    /// holds the store, the deployments and the boot record; the initramfs (berth-init
    /// plus the board's kernel modules); and the kernel, beside the image.
    ///
    /// The image is sparse, and DISK.IMG.bmap beside it (bmap-tools' format 2.0) lists
    /// the blocks that hold data with their sha256, so `bmaptool copy` or `berth-image
    /// flash` write only those. Nothing is mounted and no loop device is used. Prints
    /// where everything went, how to flash it and the QEMU command that boots it (QEMU
    /// boards).
    Disk(disk::Args),
    /// Write IMAGE.bmap for a sparse image (bmap-tools' format 2.0): the blocks that hold
    /// data, each with its sha256, for `bmaptool copy` and `berth-image flash`.
    ///
    /// `disk` writes one for its images; this is for images made another way. Holes are
    /// found with `SEEK_DATA`/`SEEK_HOLE`, so an image copied without keeping its holes maps
    /// every block (correct, only not faster to flash). Prints the bmap's path.
    Bmap(bmap::Args),
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
    Initramfs(initramfs::Args),
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
    Flash(flash::Args),
    /// Make a signed update file that takes a device from one commit to another.
    ///
    /// It holds every object the target needs that --from does not have (all of them
    /// with --empty): trees as edits of the old ones, a changed file as a bsdiff-style
    /// patch against the old file at the same path (or an alike-named one that went away,
    /// or one of the same name that moved) when that is smaller, zstd-compressed in parts
    /// of about --part-size bytes, and a superblock signed with --key that names each part
    /// by sha256. Diffs run on every core; progress shows on a terminal. Copy the file to a
    /// USB stick or a web server; `berth update FILE` applies it.
    Delta(delta::Args),
    /// Publish a commit to a channel of a static repository (a directory to serve over
    /// HTTP, copy to a bucket or put behind a CDN).
    ///
    /// Writes a full update and deltas (from each --from and from the channel's previous
    /// commit) in split form under DIR/updates/, then the signed channel pointer
    /// DIR/channels/NAME last, so a reader never sees a pointer to something missing. The
    /// pointer's serial grows with each publish and it expires after --expires-in-days:
    /// devices refuse an older serial and an expired pointer, so republish before then.
    /// `berth update http://HOST/PATH --channel NAME` reads it.
    Publish(publish::Args),
    /// Push a commit to an OCI registry (distribution, Harbor, zot, a cloud's registry)
    /// as the tag REGISTRY/NAME:TAG, which is the channel.
    ///
    /// Publishes as `publish` does (full update, deltas from each --from and from the
    /// tag's previous commit, every object and the index, the signed pointer with the
    /// next serial, read from the registry) and uploads each file as a blob (blobs the
    /// registry has are not sent again), then the manifest that names them, last.
    /// `berth update oci://REGISTRY/NAME:TAG` reads it.
    Push(push::Args),
    /// List the boards berth-image knows and where each came from.
    ///
    /// Boards are looked up, first match wins, in: each --boards DIR in the order
    /// given, then /etc/berth/boards (`$BERTH_BOARDS_DIR` instead, if set; none there is
    /// fine), then the boards built into berth-image (the repository's boards/). A
    /// directory of boards holds DIR/<name>/board.toml (docs/BOARDS.md). A board file
    /// of the same name further down is shadowed, whole: files are never merged, and
    /// a broken file is an error, not a fall-back. Every command that takes --board
    /// looks it up the same way.
    #[command(verbatim_doc_comment)]
    Boards(boards::Args),
    /// Boot a disk image from `berth-image disk` under QEMU (TCG, one CPU) with the
    /// board's firmware, its serial console on this terminal.
    ///
    /// Runs the command line `disk` printed: the kernel and initramfs beside the image
    /// for a board QEMU boots directly, else the board's firmware (OVMF for UEFI
    /// boards, U-Boot for u-boot boards) with its variables in DISK.vars, kept from
    /// boot to boot as a machine's would be. Exits when the guest powers off or
    /// reboots (-no-reboot), with QEMU's status.
    ///
    /// Examples:
    ///   berth-image qemu disk.img
    ///   berth-image qemu disk.img --timeout 120 --memory 512
    ///   berth-image qemu disk.img --dry-run -- -device virtio-rng-pci
    #[command(verbatim_doc_comment)]
    Qemu(qemu::Args),
    /// Show a commit: its root tree, parent, version, time, metadata and signers.
    Show(show::Args),
    /// Re-hash every object in a repository and check that every commit is complete.
    Fsck(fsck::Args),
}

/// Runs the command `cli` names.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Keygen(a) => keygen::run(&a),
        Command::Commit(a) => commit::run(a),
        Command::Checkout(a) => checkout::run(&a),
        Command::Install(a) => install::run(a),
        Command::Disk(a) => disk::run(a),
        Command::Bmap(a) => bmap::run(&a),
        Command::Initramfs(a) => initramfs::run(a),
        Command::Flash(a) => flash::run(a),
        Command::Delta(a) => delta::run(a),
        Command::Publish(a) => publish::run(a),
        Command::Push(a) => push::run(a),
        Command::Boards(a) => boards::run(&a),
        Command::Qemu(a) => qemu::run(a),
        Command::Show(a) => show::run(&a),
        Command::Fsck(a) => fsck::run(&a),
    }
}
