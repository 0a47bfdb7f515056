//! `berth-image commit --oci`: an OCI image layout, its layers applied in order with
//! their whiteouts, gives the same root tree as the flattened file system committed as
//! one tarball; an index is resolved by platform and a layout by ref name; a blob that
//! is not the one its descriptor names is refused and the repository is left as it was.
//! The layouts are written here, byte by byte, so each rule is exercised on purpose;
//! `oci_umoci.rs` checks the same against layouts a real tool wrote.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};

use format::ObjectId;
use serde_json::{Value, json};
use testkit::run;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_berth-image"))
}

/// One tar entry of a test layer.
enum E {
    Dir(&'static str, u32),
    File(&'static str, u32, &'static [u8]),
    Link(&'static str, &'static str),
    Sym(&'static str, &'static str),
}

fn tar(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1);
        match e {
            E::Dir(p, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            E::File(p, mode, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, *data).unwrap();
            }
            E::Link(p, target) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
            E::Sym(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", ObjectId::digest(bytes))
}

/// How a test layer is compressed in the layout.
#[derive(Clone, Copy)]
enum Z {
    Plain,
    Gzip,
    Zstd,
}

/// An OCI image layout being written.
struct Layout {
    dir: PathBuf,
}

impl Layout {
    fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Self {
            dir: dir.to_owned(),
        }
    }

    fn blob(&self, media_type: &str, bytes: &[u8]) -> Value {
        let digest = sha(bytes);
        std::fs::write(self.blob_path(&digest), bytes).unwrap();
        json!({"mediaType": media_type, "digest": digest, "size": bytes.len()})
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap())
    }

    /// Writes the layers, config and manifest of an image; returns the manifest's
    /// descriptor.
    fn image(&self, arch: &str, layers: &[(Z, Vec<u8>)]) -> Value {
        let mut descs = Vec::new();
        let mut diff_ids = Vec::new();
        for (z, tar) in layers {
            diff_ids.push(sha(tar));
            let (t, bytes) = match z {
                Z::Plain => ("application/vnd.oci.image.layer.v1.tar", tar.clone()),
                Z::Gzip => {
                    let mut e =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    e.write_all(tar).unwrap();
                    (
                        "application/vnd.oci.image.layer.v1.tar+gzip",
                        e.finish().unwrap(),
                    )
                }
                Z::Zstd => (
                    "application/vnd.oci.image.layer.v1.tar+zstd",
                    zstd::encode_all(&tar[..], 3).unwrap(),
                ),
            };
            descs.push(self.blob(t, &bytes));
        }
        let config = json!({
            "architecture": arch, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "config": {"Cmd": ["/bin/sh"]},
        });
        let config = self.blob(
            "application/vnd.oci.image.config.v1+json",
            &serde_json::to_vec(&config).unwrap(),
        );
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config, "layers": descs,
        });
        self.blob(
            "application/vnd.oci.image.manifest.v1+json",
            &serde_json::to_vec(&manifest).unwrap(),
        )
    }

    fn index(&self, manifests: &[Value]) {
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    }
}

fn with(mut desc: Value, key: &str, value: Value) -> Value {
    desc[key] = value;
    desc
}

/// `berth-image commit` with `source` (`--tar F`, `--oci DIR`, …); its output.
fn commit(repo: &Path, source: &[&OsStr]) -> std::process::Output {
    let mut args: Vec<&OsStr> = vec![
        "commit".as_ref(),
        "--repo".as_ref(),
        repo.as_os_str(),
        "--version".as_ref(),
        "1.0".as_ref(),
        "--timestamp".as_ref(),
        "1000".as_ref(),
    ];
    args.extend_from_slice(source);
    run(bin(), &args)
}

fn commit_ok(repo: &Path, source: &[impl AsRef<OsStr>]) -> String {
    let source: Vec<&OsStr> = source.iter().map(AsRef::as_ref).collect();
    let out = commit(repo, &source);
    assert!(
        out.status.success(),
        "commit {source:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The refusal of a commit that must fail, checked to be one line.
fn refusal(repo: &Path, source: &[impl AsRef<OsStr>]) -> String {
    let source: Vec<&OsStr> = source.iter().map(AsRef::as_ref).collect();
    let out = commit(repo, &source);
    assert_eq!(out.status.code(), Some(1), "commit {source:?} must fail");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err
}

/// Three layers exercising every rule of applying a changeset; the flattened tree,
/// written by hand.
fn layers() -> (Vec<(Z, Vec<u8>)>, Vec<u8>) {
    let l1 = tar(&[
        E::Dir("./", 0o755),
        E::Dir("etc/", 0o755),
        E::File("etc/a", 0o644, b"a1"),
        E::File("etc/b", 0o644, b"b1"),
        E::Dir("usr/", 0o755),
        E::Dir("usr/bin/", 0o755),
        E::File("usr/bin/tool", 0o755, b"tool v1"),
        E::Link("usr/bin/tool-alias", "usr/bin/tool"),
        E::Sym("bin", "usr/bin"),
        E::Dir("opt/", 0o750),
        E::Dir("opt/x/", 0o755),
        E::File("opt/x/old", 0o644, b"old"),
        E::Dir("gone/", 0o755),
        E::File("gone/f", 0o644, b"f"),
        E::Dir("srv/", 0o700),
        E::File("srv/old", 0o644, b"old"),
        E::File("was-file", 0o644, b"file"),
        E::Dir("keep/", 0o755),
        E::File("keep/deep", 0o644, b"deep"),
    ]);
    let l2 = tar(&[
        // Metadata of a lower directory replaced; its children kept.
        E::Dir("etc/", 0o700),
        E::File("etc/.wh.a", 0o644, b""),
        // A new file, written before the opaque whiteout of its own directory: it stays.
        E::Dir("opt/", 0o755),
        E::Dir("opt/y/", 0o755),
        E::File("opt/y/new", 0o644, b"new"),
        E::File("opt/.wh..wh..opq", 0o644, b""),
        // Content replaced.
        E::File("usr/bin/tool", 0o755, b"tool v2"),
        // A hard link to a lower layer's file.
        E::Link("usr/bin/b-link", "etc/b"),
        // A file over a lower directory, a directory over a lower file.
        E::File("gone", 0o644, b"now a file"),
        E::Dir("was-file/", 0o755),
        E::File("was-file/inside", 0o644, b"inside"),
        // Whited out and made again in the same layer: only this layer's children.
        E::File(".wh.srv", 0o644, b""),
        E::Dir("srv/", 0o755),
        E::File("srv/new", 0o644, b"new"),
        // aufs bookkeeping: ignored.
        E::Dir(".wh..wh.plnk/", 0o700),
    ]);
    let l3 = tar(&[
        // Whiteouts of what is not there change nothing.
        E::File(".wh.nothing", 0o644, b""),
        E::File("keep/.wh.nothing", 0o644, b""),
        E::File("etc/b", 0o600, b"b3"),
    ]);
    let flat = tar(&[
        E::Dir("./", 0o755),
        E::Dir("etc/", 0o700),
        E::File("etc/b", 0o600, b"b3"),
        E::Dir("usr/", 0o755),
        E::Dir("usr/bin/", 0o755),
        E::File("usr/bin/tool", 0o755, b"tool v2"),
        E::File("usr/bin/tool-alias", 0o755, b"tool v1"),
        E::File("usr/bin/b-link", 0o644, b"b1"),
        E::Sym("bin", "usr/bin"),
        E::Dir("opt/", 0o755),
        E::Dir("opt/y/", 0o755),
        E::File("opt/y/new", 0o644, b"new"),
        E::File("gone", 0o644, b"now a file"),
        E::Dir("srv/", 0o755),
        E::File("srv/new", 0o644, b"new"),
        E::Dir("was-file/", 0o755),
        E::File("was-file/inside", 0o644, b"inside"),
        E::Dir("keep/", 0o755),
        E::File("keep/deep", 0o644, b"deep"),
    ]);
    (vec![(Z::Gzip, l1), (Z::Zstd, l2), (Z::Plain, l3)], flat)
}

#[test]
fn layers_give_the_flattened_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let (layers, flat) = layers();
    let layout = Layout::new(&tmp.path().join("layout"));
    let m = layout.image("amd64", &layers);
    layout.index(&[m]);
    let flat_tar = tmp.path().join("flat.tar");
    std::fs::write(&flat_tar, &flat).unwrap();

    let repo = tmp.path().join("repo");
    let (from_oci, oci_root) = commit_root(&repo, &oci_dir(&layout.dir));
    let (_, tar_root) = commit_root(&repo, &["--tar".as_ref(), flat_tar.as_os_str()]);
    assert_eq!(
        oci_root, tar_root,
        "the layers applied are not the flat tree"
    );

    // And what a checkout shows, for the reader of this test.
    let out = tmp.path().join("out");
    testkit::run_ok(
        bin(),
        &[
            "checkout".as_ref(),
            "--repo".as_ref(),
            repo.as_os_str(),
            from_oci.as_ref(),
            out.as_os_str(),
        ],
    );
    let names: Vec<String> = testkit::scan(&out)
        .into_keys()
        .map(|k| String::from_utf8(k).unwrap())
        .collect();
    assert!(!names.iter().any(|n| n.contains(".wh.")), "{names:?}");
    assert_eq!(std::fs::read(out.join("usr/bin/tool")).unwrap(), b"tool v2");
    assert!(!out.join("etc/a").exists() && !out.join("opt/x").exists());
    testkit::make_writable(tmp.path());
}

#[test]
fn images_are_chosen_by_ref_name_and_platform() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = Layout::new(&tmp.path().join("layout"));
    let amd = layout.image(
        "amd64",
        &[(Z::Gzip, tar(&[E::File("arch", 0o644, b"amd64")]))],
    );
    let arm = layout.image(
        "arm64",
        &[(Z::Gzip, tar(&[E::File("arch", 0o644, b"arm64")]))],
    );
    let other = layout.image("amd64", &[(Z::Plain, tar(&[E::File("other", 0o644, b"")]))]);
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            with(amd, "platform", json!({"os": "linux", "architecture": "amd64"})),
            with(arm, "platform", json!({"os": "linux", "architecture": "arm64", "variant": "v8"})),
            // BuildKit's attestation manifests: never a choice.
            with(other.clone(), "platform", json!({"os": "unknown", "architecture": "unknown"})),
        ],
    });
    let index = layout.blob(
        "application/vnd.oci.image.index.v1+json",
        &serde_json::to_vec(&index).unwrap(),
    );
    let name = |d: Value, n: &str| {
        with(
            d,
            "annotations",
            json!({"org.opencontainers.image.ref.name": n}),
        )
    };
    layout.index(&[name(index, "multi"), name(other.clone(), "other")]);
    let dir = layout.dir.to_str().unwrap();
    let repo = tmp.path().join("repo");
    let oci = |arg: &str| vec!["--oci".into(), format!("oci:{arg}")];

    let err = refusal(&repo, &os(&oci(dir)));
    assert!(
        err.contains("holds 2 images") && err.contains("multi, other"),
        "{err}"
    );
    let err = refusal(&repo, &os(&oci(&format!("{dir}:nope"))));
    assert!(err.contains("no single image named \"nope\""), "{err}");
    let mut args = oci(&format!("{dir}:multi"));
    args.extend(["--arch".into(), "riscv64".into()]);
    let err = refusal(&repo, &os(&args));
    assert!(
        err.contains("no image for linux/riscv64")
            && err.contains("linux/amd64, linux/arm64/v8")
            && err.contains("--arch"),
        "{err}"
    );
    assert!(!repo.exists(), "a refused commit leaves no repository");

    let mut commits = BTreeMap::new();
    for (arg, arch) in [
        (format!("{dir}:multi"), "arm64"),
        (format!("{dir}:multi"), "arm64/v8"),
        (format!("{dir}:multi"), "amd64"),
        (format!("{dir}:other"), "amd64"),
        (
            format!("{dir}:{}", other["digest"].as_str().unwrap()),
            "amd64",
        ),
    ] {
        let mut args = oci(&arg);
        args.extend(["--arch".into(), arch.into()]);
        commits.insert((arg, arch), commit_ok(&repo, &os(&args)));
    }
    let ids: std::collections::BTreeSet<&String> = commits.values().collect();
    assert_eq!(
        ids.len(),
        3,
        "arm64 (twice), amd64, other (twice): {commits:?}"
    );
    // Without --arch, the build host's.
    let host = match std::env::consts::ARCH {
        "x86_64" => Some("amd64"),
        "aarch64" => Some("arm64"),
        _ => None,
    };
    if let Some(host) = host {
        let implied = commit_ok(&repo, &os(&oci(&format!("{dir}:multi"))));
        assert_eq!(implied, commits[&(format!("{dir}:multi"), host)]);
    }

    // The image's own platform must be the one asked for, index or not.
    let mut args = oci(&format!("{dir}:other"));
    args.extend(["--arch".into(), "arm64".into()]);
    let err = refusal(&repo, &os(&args));
    assert!(
        err.contains("the image is for linux/amd64, not linux/arm64"),
        "{err}"
    );
}

/// One layout per way of lying about a blob; each refusal names the cause, and the
/// repository is the same after it as before.
#[test]
fn blobs_that_are_not_what_their_descriptors_say_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, before) = repo_with_a_commit(tmp.path());
    let cases: Vec<(&str, Spoil, &str)> = vec![
        (
            "layer changed",
            Box::new(|l: &Layout, m: &Value| {
                let manifest = read_json(l, m);
                let path = l.blob_path(manifest["layers"][0]["digest"].as_str().unwrap());
                let mut bytes = std::fs::read(&path).unwrap();
                let last = bytes.len() - 1;
                bytes[last] ^= 1;
                std::fs::write(path, bytes).unwrap();
            }),
            "it is not the blob its descriptor names",
        ),
        (
            "layer missing",
            Box::new(|l: &Layout, m: &Value| {
                let manifest = read_json(l, m);
                std::fs::remove_file(
                    l.blob_path(manifest["layers"][0]["digest"].as_str().unwrap()),
                )
                .unwrap();
            }),
            "is not in the layout",
        ),
        (
            "manifest truncated",
            Box::new(|l: &Layout, m: &Value| {
                let path = l.blob_path(m["digest"].as_str().unwrap());
                let bytes = std::fs::read(&path).unwrap();
                std::fs::write(path, &bytes[..bytes.len() - 1]).unwrap();
            }),
            "bytes, its descriptor says",
        ),
    ];
    for (what, spoil, want) in cases {
        let dir = tmp.path().join(what.replace(' ', "-"));
        let l = Layout::new(&dir);
        let m = l.image("amd64", &[(Z::Gzip, layer())]);
        l.index(std::slice::from_ref(&m));
        spoil(&l, &m);
        let err = refusal(&repo, &oci_dir(&dir));
        assert!(err.contains(want), "{what}: {err}");
        assert_eq!(snapshot(&repo), before, "{what}: the repository changed");
    }
    testkit::make_writable(tmp.path());
}

/// Layouts whose blobs are sound but that are not a sound image; refused the same way.
#[test]
fn images_that_are_not_sound_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, before) = repo_with_a_commit(tmp.path());

    // A config whose diff_id is not the layer's uncompressed digest (every blob
    // otherwise sound, so only the diff_id check can catch it).
    let dir = tmp.path().join("diff-id");
    let l = Layout::new(&dir);
    let good = l.image("amd64", &[(Z::Gzip, layer())]);
    let mut manifest = read_json(&l, &good);
    let mut config = read_json(&l, &manifest["config"]);
    config["rootfs"]["diff_ids"][0] = json!(sha(b"something else"));
    manifest["config"] = l.blob(
        "application/vnd.oci.image.config.v1+json",
        &serde_json::to_vec(&config).unwrap(),
    );
    let m = l.blob(
        "application/vnd.oci.image.manifest.v1+json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    l.index(&[m]);
    let err = refusal(&repo, &oci_dir(&dir));
    assert!(
        err.contains("uncompressed, it has digest") && err.contains("layer 1"),
        "{err}"
    );
    assert_eq!(snapshot(&repo), before, "diff_id: the repository changed");

    // An artifact that is not a container image (a Berth repository pushed to a
    // registry and copied to a layout, say).
    let dir = tmp.path().join("artifact");
    let l = Layout::new(&dir);
    let config = l.blob("application/vnd.berth.repository.config.v1", b"{}");
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.berth.repository.v1",
        "config": config, "layers": [],
    });
    let m = l.blob(
        "application/vnd.oci.image.manifest.v1+json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    l.index(&[m]);
    let err = refusal(&repo, &oci_dir(&dir));
    assert!(err.contains("is not a container image"), "{err}");

    // A layer whose path climbs out.
    let dir = tmp.path().join("climb");
    let l = Layout::new(&dir);
    let m = l.image("amd64", &[(Z::Plain, raw_tar_entry(b"../evil", b"x"))]);
    l.index(&[m]);
    let err = refusal(&repo, &oci_dir(&dir));
    assert!(err.contains("layer 1") && err.contains("'..'"), "{err}");
    assert_eq!(snapshot(&repo), before, "climb: the repository changed");
    testkit::make_writable(tmp.path());
}

type Spoil = Box<dyn Fn(&Layout, &Value)>;

fn layer() -> Vec<u8> {
    tar(&[
        E::File("a", 0o644, b"some content"),
        E::File("b", 0o644, b"more"),
    ])
}

/// What a repository holds: each path's mode and content (not times: the store's
/// scratch directory's changes when a refused commit cleans up after itself).
type Snapshot = BTreeMap<Vec<u8>, (u32, Vec<u8>)>;

fn snapshot(repo: &Path) -> Snapshot {
    testkit::scan(repo)
        .into_iter()
        .map(|(k, e)| (k, (e.mode, e.content)))
        .collect()
}

/// A repository holding one commit, and a snapshot of its files.
fn repo_with_a_commit(tmp: &Path) -> (PathBuf, Snapshot) {
    let repo = tmp.join("repo");
    let first = tmp.join("first");
    let l = Layout::new(&first);
    let m = l.image("amd64", &[(Z::Plain, tar(&[E::File("x", 0o644, b"x")]))]);
    l.index(&[m]);
    commit_ok(&repo, &oci_dir(&first));
    let before = snapshot(&repo);
    (repo, before)
}

/// `--oci oci:DIR`.
fn oci_dir(dir: &Path) -> [std::ffi::OsString; 2] {
    let mut arg = std::ffi::OsString::from("oci:");
    arg.push(dir);
    ["--oci".into(), arg]
}

/// A commit, and the root tree it reports.
fn commit_root(repo: &Path, source: &[impl AsRef<OsStr>]) -> (String, String) {
    let source: Vec<&OsStr> = source.iter().map(AsRef::as_ref).collect();
    let out = commit(repo, &source);
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

fn os(v: &[String]) -> Vec<&OsStr> {
    v.iter().map(OsStr::new).collect()
}

fn read_json(l: &Layout, desc: &Value) -> Value {
    serde_json::from_slice(&std::fs::read(l.blob_path(desc["digest"].as_str().unwrap())).unwrap())
        .unwrap()
}

/// A tar with one file whose name the `tar` crate's builder would refuse.
fn raw_tar_entry(name: &[u8], data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
    out
}
