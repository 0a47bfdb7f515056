//! Shared by the updater's integration tests: a device sysroot laid out by
//! `berth-image install`, and helpers to run `berth` and `berth-init --dry-run` on it.
#![allow(dead_code)] // each test file uses a different subset

pub mod esp;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use testkit::{bin, run_ok};

pub fn berth() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_berth"))
}

/// A build host (repo and keys) and a device (sysroot) in one scratch directory.
pub struct Lab {
    pub tmp: tempfile::TempDir,
    pub repo: PathBuf,
    pub keys: PathBuf,
    pub sysroot: PathBuf,
    pub boot_json: PathBuf,
}

impl Lab {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        let keys = tmp.path().join("keys");
        run_ok(
            &bin("berth-image"),
            &["keygen".as_ref(), "--out".as_ref(), keys.as_os_str()],
        );
        let sysroot = tmp.path().join("sysroot");
        let boot_json = tmp.path().join("boot.json");
        Self {
            tmp,
            repo,
            keys,
            sysroot,
            boot_json,
        }
    }

    /// Commits a root filesystem with an init, the lab's public key as trusted, and
    /// `etc/release` = `version`; `extra` adds (path, content) files.
    pub fn commit(&self, version: &str, extra: &[(&str, &[u8])]) -> String {
        let tree = self.tmp.path().join(format!("tree-{version}"));
        let _ = fs::remove_dir_all(&tree);
        for d in [
            "etc",
            "var",
            "run",
            "dev",
            "proc",
            "sys",
            "sysroot",
            "sbin",
            "usr/lib/berth/keys",
        ] {
            fs::create_dir_all(tree.join(d)).unwrap();
        }
        fs::write(tree.join("etc/release"), version).unwrap();
        fs::write(tree.join("sbin/init"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(tree.join("sbin/init"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::copy(
            self.keys.join("berth.pub"),
            tree.join("usr/lib/berth/keys/berth.pub"),
        )
        .unwrap();
        for (p, content) in extra {
            let path = tree.join(p);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        }
        run_ok(
            &bin("berth-image"),
            &[
                "commit".as_ref(),
                "--repo".as_ref(),
                self.repo.as_os_str(),
                "--tree".as_ref(),
                tree.as_os_str(),
                "--version".as_ref(),
                version.as_ref(),
            ],
        )
        .trim()
        .to_owned()
    }

    /// Installs `commit` as the default (and what `more` says) on the device.
    pub fn install(&self, commit: &str, more: &[&str]) {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "install".as_ref(),
            "--repo".as_ref(),
            self.repo.as_os_str(),
            "--commit".as_ref(),
            commit.as_ref(),
            "--sysroot".as_ref(),
            self.sysroot.as_os_str(),
        ];
        args.extend(more.iter().map(std::ffi::OsStr::new));
        run_ok(&bin("berth-image"), &args);
    }

    /// Writes berth-init's boot report naming `name` as booted.
    pub fn booted(&self, name: &str, reason: &str) {
        fs::write(
            &self.boot_json,
            format!(
                r#"{{"choice":{{"kind":"deployment","deployment":"{name}"}},"reason":"{reason}"}}"#
            ),
        )
        .unwrap();
    }

    pub fn berth(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    /// `berth --sysroot … --boot-json …` on this device, to add arguments, an
    /// environment or pipes to.
    pub fn command(&self) -> Command {
        let mut c = Command::new(berth());
        c.arg("--sysroot")
            .arg(&self.sysroot)
            .arg("--boot-json")
            .arg(&self.boot_json);
        c
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.berth(args);
        assert!(
            out.status.success(),
            "berth {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs berth, expecting exit 1 with one line containing `needle`, and checks that
    /// the sysroot did not change at all.
    pub fn fails(&self, args: &[&str], needle: &str) {
        let before = self.manifest();
        let out = self.berth(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "berth {args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(
            err.contains(needle),
            "berth {args:?}: {err:?} lacks {needle:?}"
        );
        assert_eq!(
            self.manifest(),
            before,
            "berth {args:?} changed the sysroot"
        );
    }

    /// Every entry of the sysroot: type, mode, owner, content, xattrs (not times, not
    /// the store's scratch directory).
    pub fn manifest(&self) -> Vec<(Vec<u8>, u32, u32, Vec<u8>)> {
        testkit::scan(&self.sysroot)
            .into_iter()
            .filter(|(p, _)| !p.starts_with(b"berth/repo/tmp/"))
            .map(|(p, e)| (p, e.mode, e.uid, e.content))
            .collect()
    }

    pub fn status(&self) -> Value {
        serde_json::from_str(&self.ok(&["status", "--json"])).unwrap()
    }

    pub fn role(status: &Value, role: &str) -> Option<String> {
        status["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d[role] == true)
            .map(|d| d["name"].as_str().unwrap().to_owned())
    }

    pub fn record_bytes(&self) -> Vec<Vec<u8>> {
        ["record.a", "record.b"]
            .iter()
            .map(|f| fs::read(self.sysroot.join("berth/boot").join(f)).unwrap_or_default())
            .collect()
    }

    /// What berth-init would boot next, from its dry run on this sysroot.
    pub fn next_boot(&self) -> (String, String) {
        let v: Value = serde_json::from_str(&run_ok(
            &bin("berth-init"),
            &[
                "--dry-run".as_ref(),
                "--sysroot".as_ref(),
                self.sysroot.as_os_str(),
            ],
        ))
        .unwrap();
        (
            v["choice"]["deployment"]
                .as_str()
                .unwrap_or("none")
                .to_owned(),
            v["reason"].as_str().unwrap().to_owned(),
        )
    }

    /// What `berth-image publish` and `push` of `commit` share: the repository, the
    /// lab's key, parts of 50,000 bytes, and a delta from each of `from`.
    pub fn release_args(&self, verb: &str, commit: &str, from: &[&str]) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec![
            verb.into(),
            "--repo".into(),
            self.repo.clone().into(),
            "--commit".into(),
            commit.into(),
            "--key".into(),
            self.keys.join("berth.key").into(),
            "--part-size".into(),
            "50000".into(),
        ];
        for f in from {
            args.extend(["--from".into(), (*f).into()]);
        }
        args
    }

    /// `berth-image publish` of `commit` to channel `stable` (parts of 50,000 bytes),
    /// with deltas from the commits `from`, into `www/`; returns that directory.
    pub fn publish(&self, commit: &str, from: &[&str]) -> PathBuf {
        let dir = self.tmp.path().join("www");
        let mut args = self.release_args("publish", commit, from);
        args.extend([
            "--to".into(),
            dir.clone().into(),
            "--channel".into(),
            "stable".into(),
        ]);
        let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsString::as_os_str).collect();
        run_ok(&bin("berth-image"), &args);
        dir
    }

    /// `berth-image delta`; `from` None means `--empty`.
    pub fn delta(&self, from: Option<&str>, to: &str, out: &str, extra: &[&str]) -> PathBuf {
        self.delta_signed(from, to, out, extra, &self.keys.join("berth.key"))
    }

    /// A secret key the device does not trust (made once per lab).
    pub fn untrusted_key(&self) -> PathBuf {
        let other = self.tmp.path().join("untrusted-keys");
        if !other.exists() {
            run_ok(
                &bin("berth-image"),
                &["keygen".as_ref(), "--out".as_ref(), other.as_os_str()],
            );
        }
        other.join("berth.key")
    }

    /// `berth-image delta` signed with `key`.
    pub fn delta_signed(
        &self,
        from: Option<&str>,
        to: &str,
        out: &str,
        extra: &[&str],
        key: &Path,
    ) -> PathBuf {
        let file = self.tmp.path().join(out);
        let mut args: Vec<&std::ffi::OsStr> =
            vec!["delta".as_ref(), "--repo".as_ref(), self.repo.as_os_str()];
        match from {
            Some(f) => args.extend([std::ffi::OsStr::new("--from"), std::ffi::OsStr::new(f)]),
            None => args.push("--empty".as_ref()),
        }
        args.extend([
            std::ffi::OsStr::new("--to"),
            std::ffi::OsStr::new(to),
            std::ffi::OsStr::new("--key"),
            key.as_os_str(),
            std::ffi::OsStr::new("-o"),
            file.as_os_str(),
        ]);
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        run_ok(&bin("berth-image"), &args);
        file
    }
}

/// The big file of the two-release fixture: release 1's, and release 2's with 100
/// bytes changed.
pub fn big_files() -> (Vec<u8>, Vec<u8>) {
    let big: Vec<u8> = (0..120_000u32).flat_map(u32::to_le_bytes).collect();
    let mut big2 = big.clone();
    big2[1000..1100].fill(9);
    (big, big2)
}

/// A lab with v1 installed and booted and v2 committed (a changed big file and a new
/// one): returns it with both commit ids.
pub fn two_releases() -> (Lab, String, String) {
    let lab = Lab::new();
    let (big, big2) = big_files();
    let noise: Vec<u8> = (0..60_000u32)
        .map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes()[1])
        .collect();
    let v1 = lab.commit("1.0", &[("usr/lib/big.bin", &big)]);
    let v2 = lab.commit(
        "2.0",
        &[("usr/lib/big.bin", &big2), ("usr/share/noise", &noise)],
    );
    lab.install(&v1, &[]);
    lab.booted(&v1[..16], "default");
    (lab, v1, v2)
}

/// An update file taken apart: the signed body (decoded and as bytes), the signature
/// block and the parts, so a test can forge one piece and put it back together.
pub struct Parsed {
    pub body: format::update::Body,
    pub body_bytes: Vec<u8>,
    pub sigs: Vec<u8>,
    pub parts: Vec<Vec<u8>>,
}

#[allow(clippy::cast_possible_truncation)] // test fixtures: every size here is small
impl Parsed {
    pub fn parse(update: &[u8]) -> Self {
        let body_len = u32::from_le_bytes(update[8..12].try_into().unwrap()) as usize;
        let body_bytes = update[12..12 + body_len].to_vec();
        let body = format::update::Body::decode(&body_bytes).unwrap();
        let sig_len =
            u32::from_le_bytes(update[12 + body_len..16 + body_len].try_into().unwrap()) as usize;
        let parts_at = 16 + body_len + sig_len;
        let parts = body
            .parts
            .iter()
            .map(|p| {
                update[parts_at + p.offset as usize..parts_at + (p.offset + p.len) as usize]
                    .to_vec()
            })
            .collect();
        Self {
            body,
            sigs: update[16 + body_len..parts_at].to_vec(),
            body_bytes,
            parts,
        }
    }

    /// The file, from `body_bytes`, `sigs` and `parts` exactly as they are.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = format::update::encode_head(self.body_bytes.len());
        out.extend_from_slice(&self.body_bytes);
        out.extend_from_slice(&(self.sigs.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.sigs);
        for p in &self.parts {
            out.extend_from_slice(p);
        }
        out
    }

    /// Replaces part `i` with `plain` compressed, declaring `plain.len() + declare_delta`
    /// decompressed bytes; fixes offsets and hashes, re-encodes the body and signs it with
    /// the lab's trusted key.
    pub fn replace_part(&mut self, lab: &Lab, i: usize, plain: &[u8], declare_delta: i64) {
        self.parts[i] = zstd::encode_all(plain, 3).unwrap();
        let mut offset = 0;
        for (info, bytes) in self.body.parts.iter_mut().zip(&self.parts) {
            info.offset = offset;
            info.len = bytes.len() as u64;
            offset += info.len;
        }
        self.body.parts[i].size = plain
            .len()
            .checked_add_signed(declare_delta as isize)
            .unwrap() as u64;
        self.body.parts[i].sha256 = format::ObjectId::digest(&self.parts[i]);
        self.sign(lab);
    }

    /// Re-encodes the body and signs it with the lab's trusted key.
    pub fn sign(&mut self, lab: &Lab) {
        self.body_bytes = self.body.encode();
        let key =
            format::key::parse_secret(&fs::read(lab.keys.join("berth.key")).unwrap()).unwrap();
        let mut sigs = format::sig::Signatures::new();
        sigs.sign(&self.body_bytes, &key).unwrap();
        self.sigs = sigs.encode();
    }
}

/// Re-signs `update` after `edit` changed its first part's decompressed bytes: the
/// result is a validly signed update whose content lies.
pub fn resign(lab: &Lab, update: &[u8], edit: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
    let mut p = Parsed::parse(update);
    let mut plain = zstd::decode_all(&p.parts[0][..]).unwrap();
    edit(&mut plain);
    p.replace_part(lab, 0, &plain, 0);
    p.encode()
}

/// `berth check` said an update is available (exit 100); the error output otherwise.
pub fn offers_an_update(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(100),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
