//! A program's man pages and shell completions, generated from its clap definition.
//!
//! The generated files live in the repository under `packaging/` (`man/` and
//! `completions/`), where the Debian packages take them from. Each program's tests call
//! [`check`]: it renders every file again and fails, naming the stale files, when one
//! differs from the committed copy, so a changed flag or help text cannot reach a
//! package without its documentation. `BERTH_REGENERATE=1 cargo test` writes them
//! instead.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use clap_complete::Shell;

/// Pages in `packaging/man/` written by hand, not generated (berth-init has no clap
/// definition: its command line is the kernel's).
const WRITTEN_BY_HAND: &[&str] = &["berth-init.8"];

/// The repository's `packaging/` directory.
#[must_use]
pub fn packaging_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging")
}

/// Every file generated for `cmd`, by path under `packaging/`: a man page in `section`
/// for the program and one for each of its commands (`berth-update.8`, as git names
/// its pages), and completions for bash, zsh and fish.
///
/// # Panics
/// When clap cannot render a page (an invalid definition, which its own debug asserts
/// catch first).
#[must_use]
pub fn render(cmd: clap::Command, section: &str) -> BTreeMap<String, Vec<u8>> {
    let mut cmd = cmd;
    cmd.build();
    let name = cmd.get_name().to_string();
    let mut files = BTreeMap::new();
    let mut pages = vec![(name.clone(), cmd.clone())];
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let page = format!("{name}-{}", sub.get_name());
        pages.push((page.clone(), sub.clone().name(page)));
    }
    for (page, c) in pages {
        let mut out = Vec::new();
        clap_mangen::Man::new(c)
            .section(section)
            .manual("Berth")
            .render(&mut out)
            .expect("a man page renders into memory");
        files.insert(format!("man/{page}.{section}"), out);
    }
    for (shell, file) in [
        (Shell::Bash, format!("{name}.bash")),
        (Shell::Zsh, format!("_{name}")),
        (Shell::Fish, format!("{name}.fish")),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cmd, name.clone(), &mut out);
        files.insert(format!("completions/{file}"), out);
    }
    files
}

/// Checks that `packaging/` holds exactly the files [`render`] makes for `cmd` (and no
/// stale page of a command that is gone), or writes them when `BERTH_REGENERATE` is set.
///
/// # Panics
/// When a file differs, is missing or is stale: the message names each one and says
/// how to regenerate them.
pub fn check(cmd: clap::Command, section: &str) {
    let name = cmd.get_name().to_string();
    let files = render(cmd, section);
    let dir = packaging_dir();
    // The committed files of this program: its pages and its completions.
    let mut committed = BTreeMap::new();
    for sub in ["man", "completions"] {
        let Ok(entries) = fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for e in entries {
            let e = e.expect("packaging/ lists");
            let file = e.file_name().to_string_lossy().into_owned();
            let ours = !WRITTEN_BY_HAND.contains(&file.as_str())
                && (file == format!("{name}.{section}")
                    || file.starts_with(&format!("{name}-"))
                        && file.ends_with(&format!(".{section}"))
                    || [
                        format!("{name}.bash"),
                        format!("_{name}"),
                        format!("{name}.fish"),
                    ]
                    .contains(&file));
            if ours {
                committed.insert(format!("{sub}/{file}"), fs::read(e.path()).expect("reads"));
            }
        }
    }
    if std::env::var_os("BERTH_REGENERATE").is_some() {
        for stale in committed.keys().filter(|k| !files.contains_key(*k)) {
            fs::remove_file(dir.join(stale)).expect("removes a stale page");
        }
        for (path, bytes) in &files {
            let path = dir.join(path);
            fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
            fs::write(path, bytes).expect("writes");
        }
        return;
    }
    let mut wrong: Vec<String> = files
        .iter()
        .filter(|(p, b)| committed.get(*p) != Some(*b))
        .map(|(p, _)| format!("packaging/{p}"))
        .collect();
    wrong.extend(
        committed
            .keys()
            .filter(|k| !files.contains_key(*k))
            .map(|p| format!("packaging/{p} (stale)")),
    );
    assert!(
        wrong.is_empty(),
        "{name}'s man pages or completions are not current: {}; \
         regenerate them with `BERTH_REGENERATE=1 cargo test -p <crate> --bins` and commit them",
        wrong.join(", ")
    );
}
