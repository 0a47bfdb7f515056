//! The Debian packages and the rootfs recipe, as a user meets them.
//!
//! `packaging/build-debs.sh` builds `berth` (amd64, arm64) and `berth-image` and runs
//! lintian on each (an error fails it); the packages must hold what they promise. Then
//! `examples/debian-bookworm/build.sh` runs with the packaged `berth-image` (unpacked
//! into a scratch prefix, run from a scratch directory: nothing of the source tree is
//! found by accident) and the packaged `berth`: mmdebstrap builds the root filesystem
//! from Debian's mirror (the .debs are cached in $BERTH_CACHE/recipe-debs), berth-image
//! completes its kernel set, commits and publishes it. Needs root (mmdebstrap's root
//! mode), lintian, mmdebstrap and Debian's mirror; missing is a skip, or a failure under
//! `BERTH_STRICT=1`. About 5 minutes for the packages from cold (berth-image's release
//! build) and 2 for the recipe.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cache() -> PathBuf {
    std::env::var_os("BERTH_CACHE").map_or_else(|| PathBuf::from("/var/cache/berth"), PathBuf::from)
}

/// Runs `cmd`, fails with its output's tail unless it succeeds, returns stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let tail = |b: &[u8]| {
        let s = String::from_utf8_lossy(b);
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}\n{}",
        out.status,
        tail(&out.stdout),
        tail(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// What stops these tests here, if anything.
fn missing_prerequisite() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("needs root (mmdebstrap's root mode, dpkg-deb's owners)".into());
    }
    ["lintian", "mmdebstrap", "dpkg-deb", "dpkg-shlibdeps"]
        .into_iter()
        .find(|t| {
            Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .is_ok_and(|o| !o.status.success())
        })
        .map(|t| format!("{t} is not installed (ci/setup.sh --test-tools)"))
}

/// The packages, built once for all tests of this file.
fn debs() -> &'static Path {
    static DEBS: OnceLock<tempfile::TempDir> = OnceLock::new();
    DEBS.get_or_init(|| {
        let out = tempfile::tempdir().unwrap();
        let printed = run(Command::new("bash")
            .arg(repo_root().join("packaging/build-debs.sh"))
            .arg(out.path()));
        assert_eq!(printed.lines().count(), 3, "three packages: {printed}");
        out
    })
    .path()
}

fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// `dpkg-deb --contents` of a package: its paths, without the leading `.`.
fn contents(deb: &Path) -> Vec<String> {
    run(Command::new("dpkg-deb").arg("--contents").arg(deb))
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.').to_string())
        .collect()
}

/// `dpkg-deb --field DEB FIELD`.
fn field(deb: &Path, name: &str) -> String {
    run(Command::new("dpkg-deb").arg("--field").arg(deb).arg(name))
        .trim()
        .to_string()
}

#[test]
fn the_packages_hold_the_programs_their_units_and_documentation() {
    if let Some(why) = missing_prerequisite() {
        testkit::missing("packages", &why);
        return;
    }
    let dir = debs();
    for arch in ["amd64", "arm64"] {
        let deb = dir.join(format!("berth_{}_{arch}.deb", version()));
        assert_eq!(field(&deb, "Architecture"), arch);
        let paths = contents(&deb);
        for want in [
            "/usr/bin/berth",
            "/lib/systemd/system/berth-health.service",
            "/lib/systemd/system/berth-agent.service",
            "/usr/lib/berth/keys/",
            "/usr/share/man/man8/berth.8.gz",
            "/usr/share/man/man8/berth-update.8.gz",
            "/usr/share/man/man8/berth-init.8.gz",
            "/usr/share/bash-completion/completions/berth",
            "/usr/share/zsh/vendor-completions/_berth",
            "/usr/share/fish/vendor_completions.d/berth.fish",
            "/usr/share/doc/berth/copyright",
            "/usr/share/doc/berth/FLEET.md",
            "/usr/share/doc/berth/examples/agent.toml",
        ] {
            assert!(
                paths.iter().any(|p| p == want),
                "{}: no {want}",
                deb.display()
            );
        }
    }
    let deb = dir.join(format!("berth-image_{}_amd64.deb", version()));
    let paths = contents(&deb);
    for want in [
        "/usr/bin/berth-image",
        "/usr/lib/berth/init/x86_64-unknown-linux-musl/berth-init",
        "/usr/lib/berth/init/aarch64-unknown-linux-musl/berth-init",
        "/usr/share/man/man1/berth-image.1.gz",
        "/usr/share/man/man1/berth-image-commit.1.gz",
        "/usr/share/bash-completion/completions/berth-image",
    ] {
        assert!(
            paths.iter().any(|p| p == want),
            "{}: no {want}",
            deb.display()
        );
    }
    assert!(field(&deb, "Depends").contains("libc6"), "shlibs computed");

    // Unpacked, both programs run; the agent is static (no interpreter).
    let prefix = tempfile::tempdir().unwrap();
    for deb in [
        deb.clone(),
        dir.join(format!("berth_{}_amd64.deb", version())),
    ] {
        run(Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(prefix.path()));
    }
    let berth = prefix.path().join("usr/bin/berth");
    assert!(run(Command::new(&berth).arg("--version")).contains(version()));
    let headers = run(Command::new("readelf").arg("-lW").arg(&berth));
    assert!(!headers.contains("INTERP"), "berth is dynamically linked");
    let bi = prefix.path().join("usr/bin/berth-image");
    assert!(run(Command::new(&bi).arg("--version")).contains(version()));
}

#[test]
fn the_bookworm_recipe_builds_commits_and_publishes() {
    if let Some(why) = missing_prerequisite() {
        testkit::missing("the bookworm recipe", &why);
        return;
    }
    let dir = debs();
    let prefix = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(dir.join(format!("berth-image_{}_amd64.deb", version())))
        .arg(prefix.path()));
    let bin = prefix.path().join("usr/bin");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // A user's working directory: not the source tree.
    let work = tempfile::tempdir().unwrap();
    let keys = work.path().join("keys");
    run(Command::new(bin.join("berth-image"))
        .arg("keygen")
        .arg("--out")
        .arg(&keys));
    let out = work.path().join("build");
    let printed = run(Command::new("bash")
        .arg(repo_root().join("examples/debian-bookworm/build.sh"))
        .arg("--berth-deb")
        .arg(dir.join(format!("berth_{}_amd64.deb", version())))
        .arg("--key")
        .arg(keys.join("berth.key"))
        .arg("--out")
        .arg(&out)
        .arg("--version")
        .arg("recipe-1")
        .arg("--cache")
        .arg(cache().join("recipe-debs"))
        // The test does not need the smallest update, only a published one.
        .args(["--level", "3"])
        .current_dir(work.path())
        .env("PATH", &path));
    let commit = printed.lines().last().unwrap().trim().to_string();
    assert_eq!(commit.len(), 64, "the commit id comes last: {printed}");

    // The tree: the packaged agent, its units enabled, the key, the mount point, and
    // the kernel set berth-image completed.
    let root = out.join("rootfs");
    assert_eq!(
        fs::read(root.join("usr/bin/berth")).unwrap(),
        fs::read(repo_root().join("target/x86_64-unknown-linux-musl/device/berth")).unwrap(),
        "the rootfs holds the packaged berth"
    );
    for link in [
        "etc/systemd/system/boot-complete.target.requires/berth-health.service",
        "etc/systemd/system/multi-user.target.wants/berth-agent.service",
    ] {
        assert!(
            root.join(link).symlink_metadata().is_ok(),
            "{link} is not enabled"
        );
    }
    assert_eq!(
        fs::read(root.join("usr/lib/berth/keys/release.pub")).unwrap(),
        fs::read(keys.join("berth.pub")).unwrap()
    );
    assert!(root.join("sysroot").is_dir());
    let kver = fs::read_dir(root.join("usr/lib/modules"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("initramfs.img").is_file())
        .expect("a kernel set with an initramfs");
    assert!(kver.join("vmlinuz").is_file());
    assert!(
        !root.join("etc/dpkg/dpkg.cfg.d/99mmdebstrap").exists(),
        "the build's dpkg options are not shipped"
    );

    // The commit is signed, carries the version and the kernel set; the channel names it.
    let shown = run(Command::new(bin.join("berth-image"))
        .args(["show", "--repo"])
        .arg(out.join("repo"))
        .arg(&commit)
        .current_dir(work.path()));
    assert!(shown.contains("recipe-1"), "{shown}");
    assert!(shown.contains("kernel"), "{shown}");
    run(Command::new(bin.join("berth-image"))
        .args(["fsck", "--repo"])
        .arg(out.join("repo"))
        .current_dir(work.path()));
    assert!(
        out.join("site/channels/stable").exists(),
        "the channel is published"
    );
}
