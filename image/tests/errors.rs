//! Bad input gets a one-line error that names the input and the cause, and leaves the
//! repository exactly as it was.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use testkit::{run, run_ok};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_berth-image"))
}

/// What must not change: every entry's type, mode, owner, content and xattrs.
type Snapshot = BTreeMap<Vec<u8>, (u32, u32, u32, Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>)>;

fn snapshot(repo: &Path) -> Snapshot {
    testkit::scan(repo)
        .into_iter()
        .map(|(p, e)| (p, (e.mode, e.uid, e.gid, e.content, e.xattrs)))
        .collect()
}

struct Setup {
    tmp: tempfile::TempDir,
    repo: PathBuf,
    key: PathBuf,
    public: PathBuf,
    /// The good commit's id.
    commit: String,
}

/// A repository holding one good commit, and a key pair.
fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("good");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/hostname"), b"good\n").unwrap();
    let repo = tmp.path().join("repo");
    let keys = tmp.path().join("keys");
    run_ok(
        bin(),
        &["keygen".as_ref(), "--out".as_ref(), keys.as_os_str()],
    );
    let commit = run_ok(
        bin(),
        &[
            "commit".as_ref(),
            "--repo".as_ref(),
            repo.as_os_str(),
            "--tree".as_ref(),
            src.as_os_str(),
            "--version".as_ref(),
            "1".as_ref(),
        ],
    )
    .trim()
    .to_owned();
    Setup {
        commit,
        repo,
        key: keys.join("berth.key"),
        public: keys.join("berth.pub"),
        tmp,
    }
}

/// Runs `berth-image ARGS`, expecting exit 1 with one line on stderr that contains each
/// of `needles`; returns that line.
fn fails(args: &[&OsStr], needles: &[&str]) -> String {
    let out = run(bin(), args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit 1 for {args:?}, got {:?}: {err}",
        out.status
    );
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout on error: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(err.lines().count(), 1, "one-line error, got: {err:?}");
    assert!(err.starts_with("berth-image: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "error {err:?} does not mention {n:?}");
    }
    err
}

fn commit_args<'a>(repo: &'a Path, flag: &'a str, input: &'a Path) -> Vec<&'a OsStr> {
    vec![
        "commit".as_ref(),
        "--repo".as_ref(),
        repo.as_os_str(),
        flag.as_ref(),
        input.as_os_str(),
        "--version".as_ref(),
        "2".as_ref(),
    ]
}

/// A ustar header block plus the content blocks of one entry.
fn ustar(name: &[u8], typeflag: u8, data: &[u8], link: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn tar_of(entries: &[Vec<u8>], end_marker: bool) -> Vec<u8> {
    let mut out: Vec<u8> = entries.concat();
    if end_marker {
        out.extend_from_slice(&[0u8; 1024]);
    }
    out
}

#[test]
fn hostile_and_broken_tarballs() {
    let s = setup();
    let before = snapshot(&s.repo);
    let good = ustar(b"etc/ok", b'0', b"fine", b"");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot.tar",
            tar_of(
                &[good.clone(), ustar(b"etc/../../escape", b'0', b"x", b"")],
                true,
            ),
            "'..'",
        ),
        (
            "absolute.tar",
            tar_of(&[ustar(b"/etc/passwd", b'0', b"x", b"")], true),
            "absolute path",
        ),
        (
            "hardlink-out.tar",
            tar_of(&[ustar(b"etc/link", b'1', b"", b"../../etc/shadow")], true),
            "'..'",
        ),
        (
            "hardlink-missing.tar",
            tar_of(&[ustar(b"etc/link", b'1', b"", b"etc/nothing")], true),
            "not a file earlier",
        ),
        (
            "file-under-file.tar",
            tar_of(
                &[good.clone(), ustar(b"etc/ok/inner", b'0', b"x", b"")],
                true,
            ),
            "not a directory",
        ),
        (
            "no-end-marker.tar",
            tar_of(std::slice::from_ref(&good), false),
            "truncated",
        ),
        (
            "mid-content.tar",
            {
                let mut t = tar_of(&[ustar(b"big", b'0', &[7u8; 3000], b"")], true);
                t.truncate(512 + 1000);
                t
            },
            "etc",
        ),
        ("garbage.tar", vec![0x55u8; 1500], "entry 1"),
    ];
    for (name, bytes, needle) in cases {
        let path = s.tmp.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let needle = if name == "mid-content.tar" {
            "mid-content.tar"
        } else {
            needle
        };
        fails(&commit_args(&s.repo, "--tar", &path), &[name, needle]);
        assert_eq!(snapshot(&s.repo), before, "{name}: repository changed");
        // Into a repository that does not exist yet: none is left behind.
        let fresh = s.tmp.path().join(format!("fresh-{name}"));
        fails(&commit_args(&fresh, "--tar", &path), &[name]);
        assert!(
            !fresh.exists(),
            "{name}: a failed commit left a new repository behind"
        );
    }
    // The good prefix alone (with its end marker) is accepted: the failures above are
    // about the damage, not the format.
    let ok = s.tmp.path().join("ok.tar");
    std::fs::write(&ok, tar_of(&[good], true)).unwrap();
    run_ok(bin(), &commit_args(&s.repo, "--tar", &ok));
}

#[test]
fn not_a_repository() {
    let s = setup();
    let src = s.tmp.path().join("good");
    let other = s.tmp.path().join("not-a-repo");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), b"mine").unwrap();
    fails(
        &commit_args(&other, "--tree", &src),
        &["not-a-repo", "not a berth repository"],
    );
    assert_eq!(
        std::fs::read_dir(&other).unwrap().count(),
        1,
        "nothing added"
    );

    let future = s.tmp.path().join("future");
    std::fs::create_dir_all(future.join("objects")).unwrap();
    std::fs::write(future.join("config"), b"berth-store\nversion=9\n").unwrap();
    fails(
        &commit_args(&future, "--tree", &src),
        &["future", "version 9"],
    );
    fails(
        &[
            "checkout".as_ref(),
            "--repo".as_ref(),
            future.as_os_str(),
            "abcdef01".as_ref(),
            s.tmp.path().join("x").as_os_str(),
        ],
        &["future"],
    );

    let a_file = s.tmp.path().join("a-file");
    std::fs::write(&a_file, b"").unwrap();
    fails(&commit_args(&a_file, "--tree", &src), &["a-file"]);
}

#[test]
fn wrong_keys_and_bad_arguments() {
    let s = setup();
    let src = s.tmp.path().join("good");
    let before = snapshot(&s.repo);
    let mut args = commit_args(&s.repo, "--tree", &src);
    args.extend(["--key".as_ref(), s.public.as_os_str()]);
    fails(&args, &["berth.pub", "public key"]);
    let garbage = s.tmp.path().join("garbage.key");
    std::fs::write(&garbage, b"-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
    let mut args = commit_args(&s.repo, "--tree", &src);
    args.extend(["--key".as_ref(), garbage.as_os_str()]);
    fails(&args, &["garbage.key", "not a berth key file"]);
    let corrupt = s.tmp.path().join("corrupt.key");
    std::fs::write(&corrupt, b"berth-ed25519-secret-v1 1234\n").unwrap();
    let mut args = commit_args(&s.repo, "--tree", &src);
    args.extend(["--key".as_ref(), corrupt.as_os_str()]);
    fails(&args, &["corrupt.key", "hexadecimal"]);
    let missing = s.tmp.path().join("missing.key");
    let mut args = commit_args(&s.repo, "--tree", &src);
    args.extend(["--key".as_ref(), missing.as_os_str()]);
    fails(&args, &["missing.key"]);
    let mut args = commit_args(&s.repo, "--tree", &src);
    args[6] = "1/2".as_ref();
    fails(&args, &["--version", "1/2"]);
    assert_eq!(snapshot(&s.repo), before, "repository changed");
    // The secret key given where a public one belongs.
    fails(
        &[
            "checkout".as_ref(),
            "--repo".as_ref(),
            s.repo.as_os_str(),
            "0000000000".as_ref(),
            s.tmp.path().join("x").as_os_str(),
        ],
        &["0000000000", "no commit"],
    );
    let _ = &s.key;
}

#[test]
fn unreadable_trees() {
    let s = setup();
    let before = snapshot(&s.repo);
    fails(
        &commit_args(&s.repo, "--tree", &s.tmp.path().join("no-such-dir")),
        &["no-such-dir"],
    );

    // A socket cannot be committed; the error names it.
    let with_socket = s.tmp.path().join("with-socket");
    std::fs::create_dir_all(&with_socket).unwrap();
    let _listener =
        std::os::unix::net::UnixListener::bind(with_socket.join("control.sock")).unwrap();
    fails(
        &commit_args(&s.repo, "--tree", &with_socket),
        &["control.sock", "socket"],
    );
    assert_eq!(snapshot(&s.repo), before, "repository changed");

    // A directory the committer may not read.
    let tree = s.tmp.path().join("locked-tree");
    std::fs::create_dir_all(tree.join("secret")).unwrap();
    std::fs::write(tree.join("secret/key"), b"k").unwrap();
    std::fs::set_permissions(tree.join("secret"), std::fs::Permissions::from_mode(0o700)).unwrap();
    if testkit::is_root() {
        // Root reads everything, so commit as `nobody` into a repository nobody owns.
        let repo = s.tmp.path().join("nobody-repo");
        run_ok(
            bin(),
            &commit_args(&repo, "--tree", &s.tmp.path().join("good")),
        );
        let st = std::process::Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(&repo)
            .status()
            .unwrap();
        assert!(st.success());
        for p in [s.tmp.path(), tree.as_path()] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let nobody_before = snapshot(&repo);
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin())
            .args(commit_args(&repo, "--tree", &tree))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("locked-tree/secret") && err.contains("Permission denied"),
            "{err}"
        );
        assert_eq!(snapshot(&repo), nobody_before, "repository changed");
    } else {
        std::fs::set_permissions(tree.join("secret"), std::fs::Permissions::from_mode(0o000))
            .unwrap();
        fails(
            &commit_args(&s.repo, "--tree", &tree),
            &["locked-tree/secret", "Permission denied"],
        );
        std::fs::set_permissions(tree.join("secret"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        assert_eq!(snapshot(&s.repo), before, "repository changed");
    }
}

#[test]
fn a_tree_whose_symlink_climbs_out_is_refused() {
    let s = setup();
    let before = snapshot(&s.repo);
    let src = s.tmp.path().join("escaping");
    std::fs::create_dir_all(src.join("usr/bin")).unwrap();
    // Fine: absolute, and relative within the tree.
    std::os::unix::fs::symlink("/etc/shadow", src.join("usr/bin/abs")).unwrap();
    std::os::unix::fs::symlink("../../etc", src.join("usr/bin/etc")).unwrap();
    std::os::unix::fs::symlink("../../../etc/shadow", src.join("usr/bin/out")).unwrap();
    fails(
        &commit_args(&s.repo, "--tree", &src),
        &["usr/bin/out", "symlink target climbs 3 up from depth 2"],
    );
    std::fs::remove_file(src.join("usr/bin/out")).unwrap();
    // A chain: a '..' after a name is refused wherever it is.
    std::os::unix::fs::symlink("bin/../..", src.join("usr/up")).unwrap();
    fails(
        &commit_args(&s.repo, "--tree", &src),
        &["usr/up", "has '..' after a name"],
    );
    assert_eq!(snapshot(&s.repo), before, "the repository changed");
    std::fs::remove_file(src.join("usr/up")).unwrap();
    run_ok(bin(), &commit_args(&s.repo, "--tree", &src));
}

/// An expiry past the documented maximum (or one whose seconds would overflow) is refused
/// before anything is written: an overflowed pointer is refused by every device ("expiry
/// before its issue time") and made every later publish fail.
#[test]
fn publish_refuses_an_expiry_past_the_maximum() {
    let s = setup();
    let www = s.tmp.path().join("www");
    let publish = |days: &str| -> Vec<std::ffi::OsString> {
        let args: [&OsStr; 13] = [
            "publish".as_ref(),
            "--repo".as_ref(),
            s.repo.as_os_str(),
            "--to".as_ref(),
            www.as_os_str(),
            "--channel".as_ref(),
            "stable".as_ref(),
            "--commit".as_ref(),
            s.commit.as_ref(),
            "--key".as_ref(),
            s.key.as_os_str(),
            "--expires-in-days".as_ref(),
            days.as_ref(),
        ];
        args.iter().map(|a| a.to_os_string()).collect()
    };
    let before = snapshot(&s.repo);
    // u64::MAX days overflows the multiplication by 86,400; 2^64 / 86,400 - 1 days the
    // addition of the issue time; 3651 is one past the maximum.
    for days in ["18446744073709551615", "213503982334600", "3651"] {
        let args = publish(days);
        let args: Vec<&OsStr> = args.iter().map(std::ffi::OsString::as_os_str).collect();
        fails(&args, &["--expires-in-days", days, "3650"]);
        assert!(!www.exists(), "{days}: the static repository was created");
        assert_eq!(snapshot(&s.repo), before, "{days}: repository changed");
    }
    // The maximum itself is accepted, and a later publish still works.
    for days in ["3650", "30"] {
        let args = publish(days);
        let args: Vec<&OsStr> = args.iter().map(std::ffi::OsString::as_os_str).collect();
        run_ok(bin(), &args);
        assert!(www.join("channels/stable").is_file());
    }
}
