//! berth-init's man page (`packaging/man/berth-init.8`) is written by hand; this keeps it
//! current with the code: every kernel parameter the shim reads, every boot reason and
//! every fallback event of `/run/berth/boot.json` is documented in it.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

use std::path::Path;

use format::bootreport::{Bootable, EventKind, Reason};
use format::cmdline::PARAMETERS;

/// The page, with roff's escaped hyphens (`\-`) read as hyphens.
fn page() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/man/berth-init.8");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .replace("\\-", "-")
}

/// Each term is a paragraph tag of its own (`.TP` then `.B term` / `.BI term= ARG`).
fn tagged(page: &str, term: &str) -> bool {
    let lines: Vec<&str> = page.lines().collect();
    lines.windows(2).any(|w| {
        w[0] == ".TP"
            && (w[1] == format!(".B {term}") || w[1].starts_with(&format!(".BI {term}= ")))
    })
}

#[test]
fn every_kernel_parameter_is_documented() {
    let page = page();
    let missing: Vec<&str> = PARAMETERS
        .into_iter()
        .filter(|p| !tagged(&page, p))
        .collect();
    assert!(missing.is_empty(), "berth-init.8 lacks {missing:?}");
}

#[test]
fn every_reason_and_fallback_is_documented() {
    let page = page();
    let mut missing: Vec<&str> = Reason::ALL
        .iter()
        .map(|r| r.as_str())
        .chain(EventKind::ALL.iter().map(|e| e.as_str()))
        .filter(|t| !tagged(&page, t))
        .collect();
    // A fallback's state is named in the text.
    missing.extend(
        Bootable::ALL
            .iter()
            .map(|b| b.as_str())
            .filter(|&s| s != "bootable" && !page.contains(&format!(".B {s}\n"))),
    );
    assert!(missing.is_empty(), "berth-init.8 lacks {missing:?}");
}

/// The page is valid roff as man renders it: groff finds nothing to warn about.
#[test]
fn renders_without_warnings() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/man/berth-init.8");
    let out = match std::process::Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .arg(&path)
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            testkit::missing("berth-init.8 renders", &format!("groff: {e}"));
            return;
        }
    };
    assert!(out.status.success(), "groff failed");
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(warnings.is_empty(), "groff: {warnings}");
}
