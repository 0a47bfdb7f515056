//! `berth-image boards`: the boards berth-image knows, and where each came from; and
//! `--boards DIR`, which every command that takes `--board` shares.

use std::path::PathBuf;

use anyhow::Result;

use crate::catalog::{Catalog, Found, Origin};

/// `--boards DIR`: more board directories, searched before the system's and the
/// built-in boards.
#[derive(Debug, Clone, clap::Args)]
pub struct BoardsArg {
    /// A directory of more boards (DIR/<name>/board.toml), searched before
    /// /etc/berth/boards (`$BERTH_BOARDS_DIR` instead, if set) and the built-in boards;
    /// repeat it to search several, the first given first. The first place that has a
    /// board's name wins (see `berth-image boards --help`).
    #[arg(long = "boards", value_name = "DIR")]
    dirs: Vec<PathBuf>,
}

impl BoardsArg {
    /// The places to look boards up in.
    pub fn catalog(&self) -> Result<Catalog> {
        Catalog::new(&self.dirs)
    }

    /// The same options, for a command line to print.
    pub fn args(&self) -> Vec<String> {
        self.dirs
            .iter()
            .flat_map(|d| ["--boards".to_owned(), d.display().to_string()])
            .collect()
    }
}

/// The arguments of `boards`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    boards: BoardsArg,
    /// Print a JSON array, one object per board: `name`, `arch`, `description`,
    /// `debian_arch`, `kernel_package`, `bootloader`, `qemu` (whether `berth-image qemu`
    /// can boot it), `source` ("boards-dir", "system" or "built-in"), `path` (its
    /// board.toml; null when built in) and `shadowed` (the places further down with
    /// the same name, unused: `source` and `path` each).
    #[arg(long)]
    json: bool,
}

pub fn run(a: &Args) -> Result<()> {
    let listed = a.boards.catalog()?.list()?;
    if a.json {
        let v: Vec<serde_json::Value> = listed
            .iter()
            .map(|l| {
                serde_json::json!({
                    "name": l.board.name,
                    "arch": l.board.arch,
                    "description": l.board.description,
                    "debian_arch": l.board.kernel.debian_arch,
                    "kernel_package": l.board.kernel.debian_package,
                    "bootloader": l.board.bootloader.kind,
                    "qemu": l.board.qemu.is_some(),
                    "source": l.found.source,
                    "path": l.found.path,
                    "shadowed": l.shadowed,
                })
            })
            .collect();
        println!("{}", serde_json::to_string(&v)?);
        return Ok(());
    }
    for l in &listed {
        println!(
            "{:<18} {:<8} kernel {:<18} bootloader {:<12} {} [{}]",
            l.board.name,
            l.board
                .arch
                .musl_triple()
                .split('-')
                .next()
                .unwrap_or_default(),
            l.board.kernel.debian_package,
            kebab(&l.board.bootloader.kind),
            l.board.description,
            where_from(&l.found)
        );
        for s in &l.shadowed {
            println!("{:<18} shadows [{}]", "", where_from(s));
        }
    }
    Ok(())
}

/// A serde enum's kebab-case name.
fn kebab<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// "built-in", or the board file's path.
fn where_from(f: &Found) -> String {
    match (&f.source, &f.path) {
        (Origin::BuiltIn, _) | (_, None) => "built-in".to_owned(),
        (_, Some(p)) => p.display().to_string(),
    }
}
