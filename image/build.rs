//! Embeds the repository's boards (`boards/<name>/board.toml`) in `berth-image`, so the
//! installed program knows them wherever it runs: `$OUT_DIR/builtin_boards.rs` holds
//! one `(name, include_str!(…))` per board directory, sorted by name. Adding a board is
//! still adding a file; the build picks it up.

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let boards = manifest.join("../boards");
    println!("cargo:rerun-if-changed={}", boards.display());
    let mut names: Vec<String> = std::fs::read_dir(&boards)
        .unwrap_or_else(|e| panic!("{}: cannot list the boards: {e}", boards.display()))
        .map(|e| e.unwrap_or_else(|e| panic!("{}: {e}", boards.display())))
        .filter(|e| e.path().join("board.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut out = String::from("/// The repository's boards: (name, board.toml).\n");
    out.push_str("pub(crate) const BUILTIN: &[(&str, &str)] = &[\n");
    for name in &names {
        let file = boards.join(name).join("board.toml");
        println!("cargo:rerun-if-changed={}", file.display());
        let file = file
            .canonicalize()
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "    ({name:?}, include_str!({:?})),",
            file.display().to_string()
        );
    }
    out.push_str("];\n");
    let dest =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo")).join("builtin_boards.rs");
    std::fs::write(&dest, out).unwrap_or_else(|e| panic!("{}: {e}", dest.display()));
}
