//! `berth-image delta`: a signed update file from one commit to another.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Result;

use crate::keys::SigningKeys;

/// The arguments of `delta`.
#[allow(clippy::struct_excessive_bools)] // one flag each: clap's switches
#[derive(Debug, clap::Args)]
pub struct Args {
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
    /// Send compressed files as plain patches only: an update that a berth without
    /// deflate or zip patches (before issue 18) can apply. By default a gzip or zlib
    /// file whose base is one too travels through its uncompressed data, and a zip
    /// archive (jar, wheel, apk) through its members', when that is smaller, and the
    /// update is then refused by such a berth.
    #[arg(long)]
    no_deflate: bool,
    /// Send ELF files as plain patches only: an update that a berth without ELF
    /// patches can apply. By default an ELF file whose base is ELF travels with its
    /// code's references rewritten into the base's addresses when that is smaller, and
    /// the update is then refused by such a berth.
    #[arg(long)]
    no_elf: bool,
    /// Also count the update's bytes by kind of file (gzip, ELF, other, trees), each
    /// kind's operations compressed on their own (compresses everything twice); in
    /// the JSON output as `by_kind`.
    #[arg(long)]
    by_kind: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let Args {
        repo,
        from,
        // No --from means the same; clap keeps the two apart.
        empty: _,
        to,
        key,
        output,
        part_size,
        level,
        window,
        split,
        no_deflate,
        no_elf,
        by_kind,
        json,
    } = a;
    let keys = SigningKeys::read(&key)?;
    let out = crate::delta::delta(&crate::delta::DeltaArgs {
        repo,
        from,
        to,
        keys: &keys,
        output,
        part_size,
        level,
        split,
        progress: !json && std::io::stderr().is_terminal(),
        window,
        deflate: !no_deflate,
        elf: !no_elf,
        by_kind,
    })?;
    if json {
        println!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    println!("{}", out.output.display());
    eprintln!(
        "update {} -> {}: {} objects ({} as patches, {} of them against a renamed or moved file, {} through their uncompressed data, {} zip archives through their members', {} with their code's references rewritten), {} parts, {} bytes ({} uncompressed)",
        out.from.as_deref().map_or("(empty)", |f| &f[..16]),
        &out.to[..16],
        out.objects,
        out.patched,
        out.patched_elsewhere,
        out.deflated,
        out.zip_patched,
        out.elf_patched,
        out.parts,
        out.bytes,
        out.uncompressed
    );
    Ok(())
}
