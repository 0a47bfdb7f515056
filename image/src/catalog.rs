//! Where boards come from. `berth-image` carries the repository's boards built in
//! (`build.rs` embeds `boards/*/board.toml`), so it knows them wherever it runs; more
//! come from directories laid out as `boards/` is (`DIR/<name>/board.toml`):
//!
//! 1. each `--boards DIR`, in the order given;
//! 2. the system's directory, `/etc/berth/boards` (`$BERTH_BOARDS_DIR` instead, for
//!    tests and unusual installs); a missing system directory is simply empty;
//! 3. the built-in boards.
//!
//! The first place that has a board's name wins, whole: a board file is never merged
//! with another of the same name, and a broken one is an error, never a reason to fall
//! back to the next place (a typo must not silently boot another board's layout).
//! `berth-image boards` shows which place each board came from and what it shadows.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::board::{Board, check_name};

include!(concat!(env!("OUT_DIR"), "/builtin_boards.rs"));

/// The system's board directory.
pub const SYSTEM_DIR: &str = "/etc/berth/boards";
/// The environment variable that replaces [`SYSTEM_DIR`].
pub const SYSTEM_DIR_ENV: &str = "BERTH_BOARDS_DIR";

/// Where a board file was found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// A `--boards DIR`.
    BoardsDir,
    /// The system's directory ([`SYSTEM_DIR`] or `$BERTH_BOARDS_DIR`).
    System,
    /// Built into berth-image.
    BuiltIn,
}

/// One place a board's file is: where, and its path (none for a built-in board).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Found {
    /// Which kind of place.
    pub source: Origin,
    /// The board file (`DIR/<name>/board.toml`); `None` for a built-in board.
    pub path: Option<PathBuf>,
}

/// A board with where it came from and the files of the same name it shadows.
#[derive(Debug)]
pub struct Listed {
    /// The board.
    pub board: Board,
    /// Where the winning file is.
    pub found: Found,
    /// The places further down that have a board of the same name, unused.
    pub shadowed: Vec<Found>,
}

/// The places boards are looked up in, in order of precedence.
#[derive(Debug, Clone)]
pub struct Catalog {
    dirs: Vec<(Origin, PathBuf)>,
}

impl Catalog {
    /// The `--boards` directories (each must be a directory), then the system's
    /// directory (if it exists), then the built-in boards.
    pub fn new(boards: &[PathBuf]) -> Result<Self> {
        let system = std::env::var_os(SYSTEM_DIR_ENV)
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from(SYSTEM_DIR), PathBuf::from);
        Self::with_system(boards, &system)
    }

    /// As [`Catalog::new`], with `system` as the system's directory.
    fn with_system(boards: &[PathBuf], system: &Path) -> Result<Self> {
        let mut dirs = Vec::new();
        for d in boards {
            if !d.is_dir() {
                bail!(
                    "--boards {}: not a directory (a directory of <name>/board.toml)",
                    d.display()
                );
            }
            dirs.push((Origin::BoardsDir, d.clone()));
        }
        match std::fs::metadata(system) {
            Ok(m) if m.is_dir() => dirs.push((Origin::System, system.to_path_buf())),
            Ok(_) => bail!(
                "{}: the system's board directory is not a directory",
                system.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // Unreadable: fail closed rather than boot a built-in board it may override.
            Err(e) => bail!("{}: the system's board directory: {e}", system.display()),
        }
        Ok(Self { dirs })
    }

    /// Every place that has board `name`, in order of precedence.
    fn find(&self, name: &str) -> Vec<Found> {
        let mut found: Vec<Found> = self
            .dirs
            .iter()
            .map(|(source, dir)| (source, dir.join(name).join("board.toml")))
            .filter(|(_, path)| is_there(path))
            .map(|(source, path)| Found {
                source: source.clone(),
                path: Some(path),
            })
            .collect();
        if BUILTIN.iter().any(|(n, _)| *n == name) {
            found.push(Found {
                source: Origin::BuiltIn,
                path: None,
            });
        }
        found
    }

    /// Loads board `name` from the first place that has it.
    pub fn load(&self, name: &str) -> Result<Board> {
        check_name(name).map_err(|e| anyhow::anyhow!("--board {e}"))?;
        let Some(first) = self.find(name).into_iter().next() else {
            bail!(
                "--board {name}: no such board (berth-image boards lists them; {})",
                self.searched()
            );
        };
        read(name, &first)
    }

    /// Every board, by name, each from the first place that has it.
    pub fn list(&self) -> Result<Vec<Listed>> {
        let mut names: Vec<String> = BUILTIN.iter().map(|(n, _)| (*n).to_owned()).collect();
        for (_, dir) in &self.dirs {
            let entries = std::fs::read_dir(dir)
                .with_context(|| format!("{}: cannot list boards", dir.display()))?;
            for e in entries {
                let e = e.with_context(|| format!("{}: cannot list boards", dir.display()))?;
                if is_there(&e.path().join("board.toml")) {
                    names.push(e.file_name().to_string_lossy().into_owned());
                }
            }
        }
        names.sort();
        names.dedup();
        names
            .iter()
            .map(|name| {
                let mut found = self.find(name).into_iter();
                let first = found.next().context("listed, so found")?;
                Ok(Listed {
                    board: read(name, &first)?,
                    found: first,
                    shadowed: found.collect(),
                })
            })
            .collect()
    }

    /// The places looked in, for an error message.
    fn searched(&self) -> String {
        let mut s = String::from("looked in ");
        for (_, d) in &self.dirs {
            s.push_str(&d.display().to_string());
            s.push_str(", ");
        }
        s.push_str("the built-in boards");
        s
    }
}

/// Whether a board file is there, as anything: a dangling link or an unreadable file
/// is found, and then fails to read with its path, rather than be passed over for a
/// board of the same name further down.
fn is_there(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

/// Parses board `name` from where it was found.
fn read(name: &str, found: &Found) -> Result<Board> {
    if let Some(path) = &found.path {
        check_name(name).with_context(|| format!("{}: in a board directory", path.display()))?;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        return Board::parse(&text, name, &path.display().to_string());
    }
    let text = BUILTIN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .context("found built in, so built in")?;
    Board::parse(text, name, &format!("built-in board {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A board file for `name` made from the built-in `from` with its description
    /// changed to `description`.
    fn write_board(dir: &Path, name: &str, from: &str, description: &str) {
        let text = BUILTIN.iter().find(|(n, _)| *n == from).unwrap().1;
        let board = Board::parse(text, from, from).unwrap();
        let text = text
            .replace(&format!("name = \"{from}\""), &format!("name = \"{name}\""))
            .replace(
                &format!("description = {:?}", board.description),
                &format!("description = {description:?}"),
            );
        std::fs::create_dir_all(dir.join(name)).unwrap();
        std::fs::write(dir.join(name).join("board.toml"), text).unwrap();
    }

    #[test]
    fn the_built_in_boards_are_the_repositorys() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../boards");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| dir.join(n).join("board.toml").is_file())
            .collect();
        names.sort();
        let built_in: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, built_in);
        for (name, text) in BUILTIN {
            assert_eq!(
                *text,
                std::fs::read_to_string(dir.join(name).join("board.toml")).unwrap()
            );
            Board::parse(text, name, name).unwrap();
        }
    }

    #[test]
    fn boards_dirs_then_the_system_then_built_in() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b, system) = (
            tmp.path().join("a"),
            tmp.path().join("b"),
            tmp.path().join("system"),
        );
        write_board(&a, "qemu-x86_64", "qemu-x86_64", "from a");
        write_board(&b, "qemu-x86_64", "qemu-x86_64", "from b");
        write_board(&b, "my-pc", "qemu-x86_64", "b's own");
        write_board(&system, "qemu-x86_64", "qemu-x86_64", "from the system");
        write_board(&system, "qemu-aarch64", "qemu-aarch64", "system arm");
        let c = Catalog::with_system(&[a.clone(), b.clone()], &system).unwrap();
        let cases = [
            ("qemu-x86_64", "from a"),
            ("my-pc", "b's own"),
            ("qemu-aarch64", "system arm"),
        ];
        for (name, description) in cases {
            assert_eq!(c.load(name).unwrap().description, description, "{name}");
        }
        let listed = c.list().unwrap();
        let x86 = listed
            .iter()
            .find(|l| l.board.name == "qemu-x86_64")
            .unwrap();
        assert_eq!(x86.found.source, Origin::BoardsDir);
        assert_eq!(
            x86.shadowed
                .iter()
                .map(|f| f.source.clone())
                .collect::<Vec<_>>(),
            [Origin::BoardsDir, Origin::System, Origin::BuiltIn]
        );
        let uefi = listed
            .iter()
            .find(|l| l.board.name == "uefi-x86_64")
            .unwrap();
        assert_eq!(uefi.found.source, Origin::BuiltIn);
        assert!(uefi.shadowed.is_empty());
        assert!(listed.iter().any(|l| l.board.name == "my-pc"));

        // A missing system directory is empty; a missing --boards is an error.
        let c = Catalog::with_system(&[], &tmp.path().join("none")).unwrap();
        let text = BUILTIN.iter().find(|(n, _)| *n == "qemu-x86_64").unwrap().1;
        assert_eq!(
            c.load("qemu-x86_64").unwrap().description,
            Board::parse(text, "qemu-x86_64", "").unwrap().description
        );
        let err = Catalog::with_system(&[tmp.path().join("none")], &system).unwrap_err();
        assert!(
            format!("{err:#}").contains("none: not a directory"),
            "{err:#}"
        );
        let err = c.load("no-such-board").unwrap_err();
        assert!(format!("{err:#}").contains("no such board"), "{err:#}");
    }

    #[test]
    fn a_broken_board_file_is_an_error_not_a_fall_back() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("qemu-x86_64")).unwrap();
        let file = tmp.path().join("qemu-x86_64/board.toml");
        std::fs::write(&file, "name = \"qemu-x86_64\"\n").unwrap();
        let c =
            Catalog::with_system(&[tmp.path().to_path_buf()], &tmp.path().join("none")).unwrap();
        for err in [c.load("qemu-x86_64").unwrap_err(), c.list().unwrap_err()] {
            assert!(
                format!("{err:#}").starts_with(&format!("{}: invalid board file", file.display())),
                "{err:#}"
            );
        }
        // Another board still loads: only the broken one's users fail.
        c.load("qemu-aarch64").unwrap();
        // A dangling link is not passed over either.
        std::fs::remove_file(&file).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("gone.toml"), &file).unwrap();
        let err = c.load("qemu-x86_64").unwrap_err();
        assert!(
            format!("{err:#}").starts_with(&format!("{}: cannot read", file.display())),
            "{err:#}"
        );
    }
}
