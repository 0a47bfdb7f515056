//! `berth-image commit --oci` on images real tools wrote: umoci (Debian's) builds a
//! two-layer image from a fixture of every kind of file, then changes it the way a
//! container build does (removes files and a directory tree, replaces a directory by a
//! file and a file by a directory, empties a directory and fills it again, changes
//! modes and content), which makes it write real whiteouts; skopeo moves the image to
//! an OCI archive, a docker archive and a registry (docker-registry on 127.0.0.1).
//! From each, the committed tree must equal umoci's own unpacked root file system, file
//! by file and by metadata, and the tree `commit --tree` makes of it.
//! Root only (umoci keeps owners and devices as root), as CI runs it.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use testkit::registry::Registry;
use testkit::{compare_trees, make_fixture, run, run_ok};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_berth-image"))
}

fn tool(name: &str, args: &[&OsStr]) {
    let out = Command::new(name)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(
        out.status.success(),
        "{name} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn have(name: &str) -> bool {
    Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Commits `source` (`--oci REF` or `--tree DIR`); returns the commit and the root tree
/// reported.
fn commit(repo: &Path, source: &[&OsStr], version: Option<&str>) -> (String, String) {
    let mut args: Vec<&OsStr> = vec![
        "commit".as_ref(),
        "--repo".as_ref(),
        repo.as_os_str(),
        "--timestamp".as_ref(),
        "1000".as_ref(),
    ];
    if let Some(v) = version {
        args.extend([OsStr::new("--version"), OsStr::new(v)]);
    }
    args.extend_from_slice(source);
    let out = run(bin(), &args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "commit {source:?}: {err}");
    let root = err
        .rsplit_once("root tree ")
        .map(|(_, r)| r.trim().to_owned())
        .expect("the root tree is reported");
    (
        String::from_utf8(out.stdout).unwrap().trim().to_owned(),
        root,
    )
}

/// The changes of the image's second layer, made in umoci's unpacked root file system.
fn change(rootfs: &Path) {
    let p = |s: &str| rootfs.join(s);
    // Removed: a file, a directory tree.
    fs::remove_file(p("etc/shadow")).unwrap();
    fs::remove_dir_all(p("usr/share/doc")).unwrap();
    // A directory becomes a file, a file a directory.
    fs::remove_dir_all(p("usr/lib/x")).unwrap();
    fs::write(p("usr/lib/x"), b"now a file\n").unwrap();
    fs::remove_file(p("etc/hostname")).unwrap();
    fs::create_dir(p("etc/hostname")).unwrap();
    fs::write(p("etc/hostname/inside"), b"inside\n").unwrap();
    // Emptied and filled again (umoci writes an opaque whiteout or one per child).
    fs::remove_dir_all(p("opt")).unwrap();
    fs::create_dir(p("opt")).unwrap();
    fs::write(p("opt/new"), b"new\n").unwrap();
    // Modes and content.
    fs::set_permissions(p("usr/bin"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(p("usr/bin/tool"), b"#!/bin/sh\necho tool v2\n").unwrap();
    fs::write(p("var/added"), b"added\n").unwrap();
    // A new name for a file of the lower layer.
    fs::hard_link(p("usr/lib/libx.so.1.2.3"), p("var/libx-link")).unwrap();
}

/// The whiteout entries of every gzip layer in the layout.
fn whiteouts(layout: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for blob in fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let bytes = fs::read(blob.unwrap().path()).unwrap();
        if !bytes.starts_with(&[0x1f, 0x8b]) {
            continue;
        }
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
        for entry in archive.entries().unwrap() {
            let name = String::from_utf8_lossy(&entry.unwrap().path_bytes()).into_owned();
            if name.contains(".wh.") {
                found.push(name);
            }
        }
    }
    found
}

/// Builds the image with umoci: `LAYOUT:base` from the fixture, `LAYOUT:v2` with the
/// second layer's changes and a version label; returns the layout and the root file
/// system umoci unpacked and changed for v2.
fn umoci_image(tmp: &Path) -> (PathBuf, PathBuf) {
    let layout = tmp.join("layout");
    let o = |s: &str| -> std::ffi::OsString { s.into() };
    let at = |tag: &str| {
        let mut s = layout.clone().into_os_string();
        s.push(format!(":{tag}"));
        s
    };
    tool("umoci", &[&o("init"), &o("--layout"), layout.as_os_str()]);
    tool("umoci", &[&o("new"), &o("--image"), &at("base")]);
    let b1 = tmp.join("b1");
    tool(
        "umoci",
        &[&o("unpack"), &o("--image"), &at("base"), b1.as_os_str()],
    );
    let rootfs1 = b1.join("rootfs");
    make_fixture(&rootfs1);
    // umoci's repack cannot lstat a path longer than PATH_MAX (the tarball tests cover
    // those).
    fs::remove_dir_all(rootfs1.join("deep")).unwrap();
    for d in ["usr/share/doc/pkg", "usr/lib/x", "opt/old", "var"] {
        fs::create_dir_all(rootfs1.join(d)).unwrap();
    }
    fs::write(rootfs1.join("usr/share/doc/pkg/README"), b"doc\n").unwrap();
    fs::write(rootfs1.join("usr/lib/x/lib.so"), b"lib\n").unwrap();
    fs::write(rootfs1.join("opt/old/file"), b"old\n").unwrap();
    tool(
        "umoci",
        &[&o("repack"), &o("--image"), &at("base"), b1.as_os_str()],
    );

    let b2 = tmp.join("b2");
    tool(
        "umoci",
        &[&o("unpack"), &o("--image"), &at("base"), b2.as_os_str()],
    );
    let rootfs2 = b2.join("rootfs");
    change(&rootfs2);
    tool(
        "umoci",
        &[&o("repack"), &o("--image"), &at("v2"), b2.as_os_str()],
    );
    tool(
        "umoci",
        &[
            &o("config"),
            &o("--image"),
            &at("v2"),
            &o("--config.label"),
            &o("org.opencontainers.image.version=2.0.1"),
        ],
    );

    (layout, rootfs2)
}

/// Copies the image `oci` with skopeo to an OCI archive, a docker archive and the
/// registry; returns how `--oci` names each copy.
fn skopeo_copies(oci: &OsStr, tmp: &Path, registry: &Registry) -> Vec<String> {
    let o = |s: &str| -> std::ffi::OsString { s.into() };
    let oci_archive = tmp.join("image.oci.tar");
    let docker_archive = tmp.join("image.docker.tar");
    let remote = format!("{}/test/image:v2", registry.host());
    let mut copies = Vec::new();
    for (dest, source) in [
        (
            format!("oci-archive:{}:v2", oci_archive.display()),
            format!("oci-archive:{}", oci_archive.display()),
        ),
        (
            format!("docker-archive:{}:test/image:v2", docker_archive.display()),
            format!("docker-archive:{}", docker_archive.display()),
        ),
        (format!("docker://{remote}"), format!("docker://{remote}")),
    ] {
        tool(
            "skopeo",
            &[&o("copy"), &o("--dest-tls-verify=false"), oci, &o(&dest)],
        );
        copies.push(source);
    }
    // An index naming the image for this host's platform, so that the registry's tag
    // names an index and the image is a manifest fetched by digest.
    let multi = format!("{}/test/multi:v2", registry.host());
    tool(
        "skopeo",
        &[
            &o("copy"),
            &o("--all"),
            &o("--dest-tls-verify=false"),
            &index_of(oci),
            &o(&format!("docker://{multi}")),
        ],
    );
    copies.push(format!("docker://{multi}"));
    copies
}

/// Adds to the layout of `oci` (`oci:DIR:TAG`) an index naming that image for this
/// host's platform, tagged `multi`; returns `oci:DIR:multi`.
fn index_of(oci: &OsStr) -> std::ffi::OsString {
    let text = oci.to_str().unwrap();
    let (dir, tag) = text["oci:".len()..].rsplit_once(':').unwrap();
    let dir = Path::new(dir);
    let mut index: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let ref_name = "org.opencontainers.image.ref.name";
    let manifests = index["manifests"].as_array_mut().unwrap();
    let mut image = manifests
        .iter()
        .find(|m| m["annotations"][ref_name] == tag)
        .unwrap()
        .clone();
    image.as_object_mut().unwrap().remove("annotations");
    let arch = match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    };
    image["platform"] = serde_json::json!({"os": "linux", "architecture": arch});
    let body = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [image],
    }))
    .unwrap();
    let digest = format::ObjectId::digest(&body).to_string();
    fs::write(dir.join("blobs/sha256").join(&digest), &body).unwrap();
    manifests.push(serde_json::json!({
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": format!("sha256:{digest}"), "size": body.len(),
        "annotations": {ref_name: "multi"},
    }));
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    format!("oci:{}:multi", dir.display()).into()
}

#[test]
fn images_from_umoci_and_skopeo_commit_as_their_root_file_system() {
    let test = "images_from_umoci_and_skopeo_commit_as_their_root_file_system";
    if testkit::skip_unless_root(test) {
        return;
    }
    for t in ["umoci", "skopeo", "docker-registry"] {
        if !have(t)
            && testkit::missing(
                test,
                &format!("{t} (Debian's {t}; ci/setup.sh --test-tools)"),
            )
        {
            return;
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let (layout, rootfs2) = umoci_image(tmp.path());
    let o = |s: &str| -> std::ffi::OsString { s.into() };
    let at = |tag: &str| {
        let mut s = layout.clone().into_os_string();
        s.push(format!(":{tag}"));
        s
    };
    // umoci wrote real whiteouts for what the second layer removed.
    let whiteouts = whiteouts(&layout);
    assert!(
        whiteouts.iter().any(|w| w.ends_with("etc/.wh.shadow"))
            && whiteouts.iter().any(|w| w.ends_with("usr/share/.wh.doc"))
            && whiteouts
                .iter()
                .any(|w| w.starts_with("opt/") || w.starts_with("./opt/")),
        "{whiteouts:?}"
    );

    let repo = tmp.path().join("repo");
    let (_, want) = commit(
        &repo,
        &["--tree".as_ref(), rootfs2.as_os_str()],
        Some("2.0.1"),
    );
    let mut oci = o("oci:");
    oci.push(at("v2"));
    let (id, got) = commit(&repo, &["--oci".as_ref(), &oci], None);
    assert_eq!(
        got, want,
        "the image's tree is not umoci's root file system"
    );

    // File by file, by metadata, as a checkout shows it.
    let out = tmp.path().join("out");
    run_ok(
        bin(),
        &[
            "checkout".as_ref(),
            "--repo".as_ref(),
            repo.as_os_str(),
            id.as_ref(),
            out.as_os_str(),
        ],
    );
    let compared = compare_trees(&rootfs2, &out, true)
        .unwrap_or_else(|d| panic!("checkout differs:\n{}", d.join("\n")));
    assert!(
        compared.entries > 40 && compared.link_groups == 1,
        "{compared:?}"
    );
    let show = run_ok(
        bin(),
        &[
            "show".as_ref(),
            "--repo".as_ref(),
            repo.as_os_str(),
            id.as_ref(),
        ],
    );
    assert!(
        show.contains("2.0.1") && show.contains("oci.label.org.opencontainers.image.version"),
        "the version label is the version and a label: {show}"
    );

    // The same image through skopeo's archives and a registry.
    let registry = Registry::start();
    let copies = skopeo_copies(&oci, tmp.path(), &registry);
    for source in copies {
        let (_, root) = commit(&repo, &["--oci".as_ref(), source.as_ref()], None);
        assert_eq!(root, want, "{source}: not umoci's root file system");
    }
    testkit::make_writable(tmp.path());
}
