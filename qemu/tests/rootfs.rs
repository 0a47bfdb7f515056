//! A real Debian root filesystem survives commit and checkout unchanged.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

use std::path::PathBuf;
use std::process::Command;

use testkit::{bin, compare_trees, run_ok, skip_unless_root};

/// The debootstrap tree built by `ci/fetch-rootfs.sh`, if present.
fn rootfs() -> Option<PathBuf> {
    let path = std::env::var_os("BERTH_ROOTFS").map_or_else(
        || PathBuf::from("/var/cache/berth/rootfs-bookworm-minbase"),
        PathBuf::from,
    );
    if path.join("etc/os-release").exists() {
        return Some(path);
    }
    testkit::missing(
        "debootstrap_minbase_round_trips",
        &format!("{} is missing (run ci/fetch-rootfs.sh)", path.display()),
    );
    None
}

#[test]
fn debootstrap_minbase_round_trips() {
    if skip_unless_root("debootstrap_minbase_round_trips") {
        return;
    }
    let Some(src) = rootfs() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let image = bin("berth-image");
    let id = run_ok(
        &image,
        &[
            "commit".as_ref(),
            "--repo".as_ref(),
            repo.as_os_str(),
            "--tree".as_ref(),
            src.as_os_str(),
            "--version".as_ref(),
            "12.0".as_ref(),
            "--meta".as_ref(),
            "source=debootstrap-minbase-bookworm".as_ref(),
        ],
    );
    let id = id.trim();
    let out = tmp.path().join("checkout");
    run_ok(
        &image,
        &[
            "checkout".as_ref(),
            "--repo".as_ref(),
            repo.as_os_str(),
            id.as_ref(),
            out.as_os_str(),
        ],
    );

    // Content, with GNU diff. /dev holds only device nodes, which diff would try to open;
    // the entry-by-entry comparison below covers it.
    let diff = Command::new("diff")
        .args(["-r", "--no-dereference", "--exclude=dev"])
        .arg(&src)
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        diff.status.success(),
        "diff -r found differences:\n{}{}",
        String::from_utf8_lossy(&diff.stdout),
        String::from_utf8_lossy(&diff.stderr)
    );
    // Metadata: type, mode, owner, device numbers, xattrs, hard-link groups, mtime 0.
    let compared = compare_trees(&src, &out, true)
        .unwrap_or_else(|d| panic!("checkout differs:\n{}", d.join("\n")));
    assert!(
        compared.entries > 5000,
        "a minbase rootfs has thousands of entries: {compared:?}"
    );
    eprintln!(
        "compared {} entries, {} hard-link groups",
        compared.entries, compared.link_groups
    );

    let fsck = run_ok(
        &image,
        &["fsck".as_ref(), "--repo".as_ref(), repo.as_os_str()],
    );
    assert!(fsck.contains("all sound"), "{fsck}");
}
