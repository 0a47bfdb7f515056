//! The same tree gives the same root tree id whatever order it was created or listed in.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use format::{DirMeta, FileHeader, FileKind, ObjectId, Xattrs};
use proptest::prelude::*;
use store::build::{MemDir, build_dir};
use store::{Repo, Txn};

/// One entry of a generated tree: a path of 1 to 3 components, and a file's content and
/// mode (directories are implied by the paths).
#[derive(Debug, Clone)]
struct Spec {
    path: Vec<String>,
    content: Vec<u8>,
    mode: u32,
}

fn spec() -> impl Strategy<Value = Vec<Spec>> {
    let comp = "[a-e]{1,3}";
    let entry = (
        prop::collection::vec(comp, 1..4),
        prop::collection::vec(any::<u8>(), 0..64),
        prop::sample::select(vec![0o644u32, 0o755, 0o600, 0o4755]),
    )
        .prop_map(|(path, content, mode)| Spec {
            path,
            content,
            mode,
        });
    prop::collection::vec(entry, 1..24).prop_map(|mut v| {
        // Keep only entries whose path is not a prefix of (or equal to) another's, so the
        // spec describes a valid tree: a name is a file or a directory, never both.
        v.sort_by(|a, b| a.path.cmp(&b.path));
        let mut kept: Vec<Spec> = Vec::new();
        for s in v {
            let clash = kept
                .iter()
                .any(|k| k.path.starts_with(&s.path) || s.path.starts_with(&k.path));
            if !clash {
                kept.push(s);
            }
        }
        kept
    })
}

fn create(root: &Path, entries: &[Spec]) {
    fs::create_dir_all(root).unwrap();
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();
    for e in entries {
        let path = e.path.iter().fold(root.to_path_buf(), |p, c| p.join(c));
        let parent = path.parent().unwrap();
        fs::create_dir_all(parent).unwrap();
        fs::write(&path, &e.content).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(e.mode)).unwrap();
    }
    // Directories made by create_dir_all get the umask's mode; pin them.
    for e in entries {
        let mut p = root.to_path_buf();
        for c in &e.path[..e.path.len() - 1] {
            p.push(c);
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
}

fn root_id(repo: &Repo, dir: &Path) -> ObjectId {
    let mut txn = Txn::begin(repo).unwrap();
    let (id, _) = build_dir(&mut txn, dir, &mut |_| {}).unwrap();
    // Dropped without commit: nothing is published, the id is all we want.
    id
}

fn mem_id(repo: &Repo, entries: &[Spec]) -> ObjectId {
    let mut txn = Txn::begin(repo).unwrap();
    let (uid, gid) = (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    );
    let meta = DirMeta {
        mode: 0o755,
        uid,
        gid,
        xattrs: Xattrs::new(),
    };
    let mut root = MemDir::new(meta.clone());
    for e in entries {
        let header = FileHeader {
            kind: FileKind::Regular,
            mode: e.mode,
            uid,
            gid,
            rdev_major: 0,
            rdev_minor: 0,
            size: e.content.len() as u64,
            xattrs: Xattrs::new(),
        };
        let id = txn
            .write_file(&header, &mut e.content.as_slice(), Path::new("mem"))
            .unwrap();
        let comps: Vec<&[u8]> = e.path.iter().map(std::string::String::as_bytes).collect();
        for depth in 1..comps.len() {
            root.add_dir(&comps[..depth], meta.clone()).unwrap();
        }
        root.add_file(&comps, id).unwrap();
    }
    root.write(&mut txn).unwrap()
}

fn listing_dir() -> tempfile::TempDir {
    if Path::new("/dev/shm").is_dir()
        && let Ok(d) = tempfile::tempdir_in("/dev/shm")
    {
        return d;
    }
    tempfile::tempdir().unwrap()
}

#[test]
fn tmpfs_really_lists_in_creation_dependent_order() {
    // Guards the property test's premise: if the listing order did not depend on the
    // creation order, the test would prove less than it claims.
    let d = listing_dir();
    for order in [["x", "y", "z"], ["z", "y", "x"]] {
        let dir = d.path().join(order.concat());
        fs::create_dir(&dir).unwrap();
        for n in order {
            fs::write(dir.join(n), b"").unwrap();
        }
    }
    let list = |n: &str| {
        fs::read_dir(d.path().join(n))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>()
    };
    if d.path().starts_with("/dev/shm") {
        assert_ne!(list("xyz"), list("zyx"));
    } else {
        eprintln!("no /dev/shm: listing order may not vary here");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn creation_and_insertion_order_do_not_change_the_id(entries in spec(), seed in any::<u64>()) {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repo::create(&tmp.path().join("repo")).unwrap();
        // tmpfs lists a directory in reverse creation order (ext4 in hash order), so
        // creating the trees there in different orders makes their listings differ.
        let lists = listing_dir();
        let mut shuffled = entries.clone();
        // A deterministic shuffle driven by the generated seed.
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            let j = usize::try_from(state % (i as u64 + 1)).unwrap();
            shuffled.swap(i, j);
        }
        create(&lists.path().join("a"), &entries);
        create(&lists.path().join("b"), &shuffled);
        let a = root_id(&repo, &lists.path().join("a"));
        let b = root_id(&repo, &lists.path().join("b"));
        prop_assert_eq!(a, b);
        // The same tree assembled in memory, in the shuffled order, has the same id too.
        prop_assert_eq!(mem_id(&repo, &shuffled), a);
    }
}

#[test]
fn any_change_changes_the_id() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::create(&tmp.path().join("repo")).unwrap();
    let base = vec![Spec {
        path: vec!["etc".into(), "f".into()],
        content: b"x".to_vec(),
        mode: 0o644,
    }];
    create(&tmp.path().join("base"), &base);
    let id = root_id(&repo, &tmp.path().join("base"));
    let variants: Vec<(&str, Vec<Spec>)> = vec![
        (
            "content",
            vec![Spec {
                content: b"y".to_vec(),
                ..base[0].clone()
            }],
        ),
        (
            "mode",
            vec![Spec {
                mode: 0o600,
                ..base[0].clone()
            }],
        ),
        (
            "name",
            vec![Spec {
                path: vec!["etc".into(), "g".into()],
                ..base[0].clone()
            }],
        ),
        (
            "dir name",
            vec![Spec {
                path: vec!["usr".into(), "f".into()],
                ..base[0].clone()
            }],
        ),
    ];
    for (what, v) in variants {
        let dir = tmp.path().join(what);
        create(&dir, &v);
        assert_ne!(root_id(&repo, &dir), id, "{what}");
    }
    // Modification time does not count.
    let touched = tmp.path().join("touched");
    create(&touched, &base);
    let f = fs::File::options()
        .write(true)
        .open(touched.join("etc/f"))
        .unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(12_345))
        .unwrap();
    assert_eq!(root_id(&repo, &touched), id, "mtime is not part of the id");
}

#[test]
fn an_aborted_transaction_publishes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::create(&tmp.path().join("repo")).unwrap();
    let dir = tmp.path().join("t");
    create(
        &dir,
        &[Spec {
            path: vec!["a".into()],
            content: b"data".to_vec(),
            mode: 0o644,
        }],
    );
    let id = root_id(&repo, &dir);
    assert!(!repo.has(&id, format::ObjectKind::Tree).unwrap());
    let leftovers: Vec<_> = fs::read_dir(tmp.path().join("repo/tmp")).unwrap().collect();
    assert!(leftovers.is_empty(), "staging removed: {leftovers:?}");
    let objects: Vec<_> = fs::read_dir(tmp.path().join("repo/objects"))
        .unwrap()
        .collect();
    assert!(objects.is_empty(), "no object published: {objects:?}");
}
