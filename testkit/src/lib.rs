//! Test support shared by the crates' integration tests: a fixture tree holding every
//! kind of file Berth must preserve, a tree comparison that reports every difference,
//! helpers to run the built binaries, and a static file server on 127.0.0.1 with faults
//! ([`http`]) and a TLS front for it ([`tls`]).
//!
//! Test code: panics here are test failures, by design.
#![forbid(unsafe_code)]
#![allow(clippy::missing_panics_doc, clippy::unwrap_used, clippy::expect_used)]

pub mod clidocs;
pub mod ddi;
pub mod gate;
pub mod goosebit;
pub mod hosts;
pub mod http;
pub mod proxy;
pub mod registry;
pub mod tls;
pub mod zip;

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rustix::fs::{FileType, Mode};

/// Whether the tests run as root (CI does); root-only parts of fixtures and tests
/// depend on it.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Prints why a root-only test is skipped; returns whether to skip.
pub fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("SKIPPED {test}: needs root (CI runs the suite as root)");
    true
}

/// A prerequisite of `test` is missing (`why` names it and what makes it): the test
/// fails under `BERTH_STRICT=1` (as `ci/test.sh` runs the suite, so CI never passes by
/// skipping), and otherwise says `SKIPPED` and is skipped. Returns `true`, to skip.
pub fn missing(test: &str, why: &str) -> bool {
    assert!(
        std::env::var_os("BERTH_STRICT").is_none(),
        "{test}: {why} (BERTH_STRICT=1 makes a missing prerequisite a failure)"
    );
    eprintln!("SKIPPED {test}: {why}");
    true
}

/// The workspace's root directory.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A built binary of the workspace: `$BERTH_BIN_DIR/NAME`, else `target/debug/NAME`.
pub fn bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("BERTH_BIN_DIR")
        .map_or_else(|| workspace().join("target/debug"), PathBuf::from);
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace` first",
        path.display()
    );
    path
}

/// Runs a command and returns its output (never panics on a non-zero exit).
pub fn run(program: &Path, args: &[&OsStr]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()))
}

/// Stdout of a command that must succeed.
pub fn run_ok(program: &Path, args: &[&OsStr]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{} {:?} failed: {}\n{}",
        program.display(),
        args,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty())
        .unwrap_or_else(|e| panic!("setxattr {name} on {}: {e}", path.display()));
}

/// Which optional parts a fixture holds.
#[derive(Debug, Clone, Copy)]
pub struct FixtureInfo {
    /// Device nodes, other owners and `security.*`/`trusted.*` xattrs (root only).
    pub privileged: bool,
}

/// Fills `dir` (which must exist) with a tree holding every kind of entry a checkout must
/// reproduce: regular files (empty, small, larger than the 4 MiB in-memory limit),
/// setuid/setgid/sticky modes, symlinks (relative, absolute, dangling), a hard-link group,
/// empty directories, a read-only directory, FIFOs, names that are not UTF-8, 255-byte
/// names, a path deeper than `PATH_MAX`, and xattrs. As root also character and block
/// devices, files owned by other users, `security.capability` and `trusted.*` xattrs.
#[allow(clippy::too_many_lines)] // one flat list of entries reads best
pub fn make_fixture(dir: &Path) -> FixtureInfo {
    let privileged = is_root();
    let w = |p: &str, data: &[u8], mode: u32| {
        let path = dir.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, data).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    };
    w("etc/hostname", b"berth\n", 0o644);
    w("etc/shadow", b"root:*:19000:0:99999:7:::\n", 0o640);
    w("etc/empty", b"", 0o600);
    w("usr/bin/tool", b"#!/bin/sh\necho tool\n", 0o755);
    w("usr/bin/suid", b"\x7fELF pretend", 0o4755);
    w("usr/bin/sgid", b"\x7fELF pretend too", 0o2711);
    w("usr/share/same-a", b"identical content\n", 0o644);
    w("usr/share/same-b", b"identical content\n", 0o644);
    w("usr/share/same-but-exec", b"identical content\n", 0o755);
    let big: Vec<u8> = (0..5u32 * 1024 * 1024 + 17)
        .map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes()[1])
        .collect();
    w("usr/lib/big.bin", &big, 0o644);
    // Hard-link group of three.
    w("usr/lib/libx.so.1.2.3", b"library bytes", 0o755);
    fs::hard_link(
        dir.join("usr/lib/libx.so.1.2.3"),
        dir.join("usr/lib/libx-hard"),
    )
    .unwrap();
    fs::hard_link(
        dir.join("usr/lib/libx.so.1.2.3"),
        dir.join("usr/bin/libx-hard2"),
    )
    .unwrap();
    symlink("libx.so.1.2.3", dir.join("usr/lib/libx.so.1")).unwrap();
    symlink("/usr/bin/tool", dir.join("usr/bin/abs-link")).unwrap();
    symlink("../../does/not/exist", dir.join("usr/lib/dangling")).unwrap();
    fs::create_dir_all(dir.join("var/empty")).unwrap();
    fs::create_dir_all(dir.join("tmp")).unwrap();
    fs::set_permissions(dir.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::create_dir_all(dir.join("srv/shared")).unwrap();
    fs::set_permissions(dir.join("srv/shared"), fs::Permissions::from_mode(0o2775)).unwrap();
    fs::create_dir_all(dir.join("ro/inner")).unwrap();
    fs::write(dir.join("ro/inner/file"), b"in a read-only dir").unwrap();
    fs::set_permissions(dir.join("ro/inner"), fs::Permissions::from_mode(0o555)).unwrap();
    fs::set_permissions(dir.join("ro"), fs::Permissions::from_mode(0o500)).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        dir.join("run-fifo"),
        FileType::Fifo,
        Mode::from_raw_mode(0o620),
        0,
    )
    .unwrap();
    // Names: not UTF-8, and 255 bytes long.
    let odd = dir.join(OsStr::from_bytes(b"names/latin1-\xe9t\xe9"));
    fs::create_dir_all(odd.parent().unwrap()).unwrap();
    fs::write(&odd, b"latin-1 name").unwrap();
    fs::write(dir.join("names").join("x".repeat(255)), b"long name").unwrap();
    fs::create_dir(dir.join("names").join("d".repeat(255))).unwrap();
    // A path longer than PATH_MAX (4096): 20 levels of 250-byte names.
    let mut deep = dir.join("deep");
    for i in 0..20 {
        deep.push(format!("{i:02}{}", "n".repeat(248)));
    }
    fs::create_dir_all(&deep).unwrap_or_else(|_| mkdir_deep(&dir.join("deep"), 20));
    set_xattr(
        &dir.join("etc/hostname"),
        "user.berth.test",
        b"value\0with nul",
    );
    set_xattr(&dir.join("srv/shared"), "user.dir-attr", b"on a directory");
    if privileged {
        let dev = |name: &str, ft: FileType, major: u32, minor: u32, mode: u32| {
            fs::create_dir_all(dir.join("dev")).unwrap();
            rustix::fs::mknodat(
                rustix::fs::CWD,
                dir.join(name),
                ft,
                Mode::from_raw_mode(mode),
                rustix::fs::makedev(major, minor),
            )
            .unwrap();
        };
        dev("dev/null", FileType::CharacterDevice, 1, 3, 0o666);
        dev("dev/sda1", FileType::BlockDevice, 8, 1, 0o660);
        dev(
            "dev/big-numbers",
            FileType::CharacterDevice,
            4095,
            1_048_575,
            0o600,
        );
        let own = |p: &str, uid: u32, gid: u32| {
            rustix::fs::chownat(
                rustix::fs::CWD,
                dir.join(p),
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .unwrap();
        };
        own("etc/shadow", 0, 42);
        own("srv/shared", 1000, 1000);
        own("usr/lib/dangling", 123, 456);
        // chown clears setgid; put it back.
        fs::set_permissions(dir.join("srv/shared"), fs::Permissions::from_mode(0o2775)).unwrap();
        // A file capability (cap_net_raw+ep, VFS_CAP_REVISION_2), set after chown.
        let cap = [
            0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        set_xattr(&dir.join("usr/bin/tool"), "security.capability", &cap);
        set_xattr(&dir.join("usr/lib/libx.so.1"), "trusted.on-a-symlink", b"t");
        set_xattr(&dir.join("dev/null"), "trusted.on-a-device", b"d");
    }
    FixtureInfo { privileged }
}

/// `create_dir_all` goes through paths longer than `PATH_MAX`; this walks with
/// `chdir`-free `*at` calls instead.
fn mkdir_deep(base: &Path, levels: usize) {
    fs::create_dir_all(base).unwrap();
    let mut fd = rustix::fs::open(
        base,
        rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::RDONLY,
        Mode::empty(),
    )
    .unwrap();
    for i in 0..levels {
        let name = format!("{i:02}{}", "n".repeat(248));
        rustix::fs::mkdirat(&fd, name.as_str(), Mode::from_raw_mode(0o755)).unwrap();
        fd = rustix::fs::openat(
            &fd,
            name.as_str(),
            rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::RDONLY,
            Mode::empty(),
        )
        .unwrap();
    }
}

/// One entry's preserved attributes, as read for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    /// File type and permission bits (`st_mode`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number (devices only).
    pub rdev: u64,
    /// Content (regular files) or target (symlinks).
    pub content: Vec<u8>,
    /// Extended attributes, sorted.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Modification time, seconds.
    pub mtime: i64,
    /// (device, inode), to find hard-link groups.
    pub ino: (u64, u64),
}

/// Reads every entry under `root` (including `root` itself as ""), keyed by relative
/// path bytes. Works at any depth: it walks with directory fds.
pub fn scan(root: &Path) -> BTreeMap<Vec<u8>, EntryInfo> {
    let mut out = BTreeMap::new();
    let fd = rustix::fs::open(
        root,
        rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::RDONLY,
        Mode::empty(),
    )
    .unwrap();
    let st = rustix::fs::fstat(&fd).unwrap();
    out.insert(Vec::new(), info_at(&fd, None, &st));
    scan_dir(&fd, &mut Vec::new(), &mut out);
    out
}

fn xattrs_of(path: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut names = vec![0u8; 65_536];
    let n = match rustix::fs::llistxattr(path, &mut names[..]) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => 0,
        Err(e) => panic!("llistxattr {}: {e}", path.display()),
    };
    let mut out = BTreeMap::new();
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let mut value = vec![0u8; 65_536];
        let len = rustix::fs::lgetxattr(path, name, &mut value[..]).unwrap();
        value.truncate(len);
        out.insert(name.to_vec(), value);
    }
    out
}

fn proc_path(dirfd: &rustix::fd::OwnedFd, name: Option<&[u8]>) -> PathBuf {
    let mut p = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(dirfd)).into_bytes();
    if let Some(n) = name {
        p.push(b'/');
        p.extend_from_slice(n);
    }
    PathBuf::from(OsString::from_vec(p))
}

fn info_at(dirfd: &rustix::fd::OwnedFd, name: Option<&[u8]>, st: &rustix::fs::Stat) -> EntryInfo {
    let path = proc_path(dirfd, name);
    let ft = FileType::from_raw_mode(st.st_mode);
    let content = match ft {
        FileType::RegularFile => fs::read(&path).unwrap(),
        FileType::Symlink => rustix::fs::readlinkat(dirfd, name.unwrap(), Vec::new())
            .unwrap()
            .into_bytes(),
        _ => Vec::new(),
    };
    // /proc/self/fd/N itself is a magic link: for the root, read xattrs of the fd's target.
    let xattrs = if name.is_none() {
        xattrs_of(&rustix_fd_path(dirfd))
    } else {
        xattrs_of(&path)
    };
    EntryInfo {
        mode: st.st_mode,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: if matches!(ft, FileType::CharacterDevice | FileType::BlockDevice) {
            st.st_rdev
        } else {
            0
        },
        content,
        xattrs,
        mtime: st.st_mtime,
        ino: (st.st_dev, st.st_ino),
    }
}

fn rustix_fd_path(dirfd: &rustix::fd::OwnedFd) -> PathBuf {
    let mut p = proc_path(dirfd, None).into_os_string();
    p.push("/.");
    PathBuf::from(p)
}

fn scan_dir(
    dirfd: &rustix::fd::OwnedFd,
    prefix: &mut Vec<u8>,
    out: &mut BTreeMap<Vec<u8>, EntryInfo>,
) {
    let mut names = Vec::new();
    let mut dir = rustix::fs::Dir::read_from(dirfd).unwrap();
    while let Some(e) = dir.read() {
        let n = e.unwrap().file_name().to_bytes().to_vec();
        if n != b"." && n != b".." {
            names.push(n);
        }
    }
    for name in names {
        let st = rustix::fs::statat(
            dirfd,
            name.as_slice(),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
        let len = prefix.len();
        if !prefix.is_empty() {
            prefix.push(b'/');
        }
        prefix.extend_from_slice(&name);
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            let child = rustix::fs::openat(
                dirfd,
                name.as_slice(),
                rustix::fs::OFlags::DIRECTORY
                    | rustix::fs::OFlags::RDONLY
                    | rustix::fs::OFlags::NOFOLLOW,
                Mode::empty(),
            )
            .unwrap();
            let mut info = info_at(&child, None, &st);
            info.xattrs = xattrs_of(&proc_path(dirfd, Some(&name)));
            out.insert(prefix.clone(), info);
            scan_dir(&child, prefix, out);
        } else {
            out.insert(prefix.clone(), info_at(dirfd, Some(&name), &st));
        }
        prefix.truncate(len);
    }
}

/// What [`compare_trees`] checked.
#[derive(Debug, Default, Clone, Copy)]
pub struct Compared {
    /// Entries compared.
    pub entries: usize,
    /// Hard-link groups (2 or more names) whose members were checked to share an inode.
    pub link_groups: usize,
}

/// Compares a source tree with its checkout, entry by entry: the same names; the same
/// type, mode, owner, device numbers, content or target and xattrs; every hard-link
/// group of the source is one inode in the checkout; and (if `zero_mtime`) every
/// checkout entry has mtime 0. Returns every difference found.
pub fn compare_trees(src: &Path, dst: &Path, zero_mtime: bool) -> Result<Compared, Vec<String>> {
    let a = scan(src);
    let b = scan(dst);
    let mut diffs = Vec::new();
    let show = |p: &[u8]| p.escape_ascii().to_string();
    for (path, ea) in &a {
        let Some(eb) = b.get(path) else {
            diffs.push(format!("{}: missing in checkout", show(path)));
            continue;
        };
        for (what, x, y) in [
            ("mode", u64::from(ea.mode), u64::from(eb.mode)),
            ("uid", u64::from(ea.uid), u64::from(eb.uid)),
            ("gid", u64::from(ea.gid), u64::from(eb.gid)),
            ("rdev", ea.rdev, eb.rdev),
        ] {
            if x != y {
                diffs.push(format!("{}: {what} {x:o} != {y:o}", show(path)));
            }
        }
        if ea.content != eb.content {
            diffs.push(format!(
                "{}: content differs ({} vs {} bytes)",
                show(path),
                ea.content.len(),
                eb.content.len()
            ));
        }
        if ea.xattrs != eb.xattrs {
            diffs.push(format!(
                "{}: xattrs differ: {:?} vs {:?}",
                show(path),
                ea.xattrs.keys().map(|k| show(k)).collect::<Vec<_>>(),
                eb.xattrs.keys().map(|k| show(k)).collect::<Vec<_>>()
            ));
        }
        if zero_mtime && eb.mtime != 0 {
            diffs.push(format!(
                "{}: checkout mtime is {} (expected 0)",
                show(path),
                eb.mtime
            ));
        }
    }
    for path in b.keys() {
        if !a.contains_key(path) {
            diffs.push(format!("{}: extra in checkout", show(path)));
        }
    }
    let mut groups: HashMap<(u64, u64), Vec<&Vec<u8>>> = HashMap::new();
    for (path, e) in &a {
        if FileType::from_raw_mode(e.mode) != FileType::Directory {
            groups.entry(e.ino).or_default().push(path);
        }
    }
    let mut link_groups = 0;
    for members in groups.values().filter(|m| m.len() > 1) {
        link_groups += 1;
        let inos: Vec<_> = members
            .iter()
            .filter_map(|p| b.get(*p))
            .map(|e| e.ino)
            .collect();
        if inos.windows(2).any(|w| w[0] != w[1]) {
            diffs.push(format!(
                "hard-link group {:?} is not one inode in the checkout",
                members.iter().map(|p| show(p)).collect::<Vec<_>>()
            ));
        }
    }
    if diffs.is_empty() {
        Ok(Compared {
            entries: a.len(),
            link_groups,
        })
    } else {
        Err(diffs)
    }
}

/// Gives the owner write access to every directory under `root`, so a fixture with
/// read-only directories can be deleted by a non-root test.
pub fn make_writable(root: &Path) {
    if let Ok(meta) = fs::symlink_metadata(root)
        && meta.is_dir()
    {
        let _ = fs::set_permissions(root, fs::Permissions::from_mode(0o755));
        if let Ok(entries) = fs::read_dir(root) {
            for e in entries.flatten() {
                make_writable(&e.path());
            }
        }
    }
}

/// `n` bytes that compress poorly (xorshift64), the same every run.
pub fn noise(n: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

/// Asserts two files hold the same bytes, naming the first difference (rather than
/// printing megabytes of both, as `assert_eq!` on their contents would).
pub fn assert_same_bytes(a: &Path, b: &Path) {
    let (x, y) = (fs::read(a).unwrap(), fs::read(b).unwrap());
    if let Some(i) = x.iter().zip(&y).position(|(p, q)| p != q) {
        panic!(
            "{} and {} differ first at byte {i} ({:#04x} and {:#04x})",
            a.display(),
            b.display(),
            x[i],
            y[i]
        );
    }
    assert_eq!(
        x.len(),
        y.len(),
        "{} and {} differ in length",
        a.display(),
        b.display()
    );
}
