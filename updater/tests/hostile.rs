//! The hostile-input corpus: every case in `tests/data/hostile/` is an update file (most
//! of them validly signed by the device's trusted key), a tarball for
//! `berth-image commit --tar` or a container image for `commit --oci` that must be
//! refused with exit status 1 and one line of
//! error that says what is wrong, and change nothing at all: not the device's sysroot
//! (byte for byte, owners, modes and xattrs included), not the build host's repository.
//! `tests/data/hostile/README.md` describes the case files and their recipe language.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own
#![allow(clippy::cast_possible_truncation)] // test fixtures: every size here is small

mod common;
mod recipe;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::Lab;
use format::{EntryKind, ObjectId};
use recipe::update::Ctx;

/// The classes of issue #7; every one must have cases.
const CLASSES: [&str; 7] = [
    "paths", "links", "files", "sizes", "bombs", "delta", "damage",
];

/// What a case makes: an update for the device, or an input of `berth-image commit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input {
    Update,
    Tar,
    Oci,
}

#[derive(Debug)]
struct Case {
    name: String,
    class: String,
    input: Input,
    args: Vec<String>,
    expect: String,
    statements: Vec<Vec<String>>,
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/hostile")
}

fn load() -> Vec<Case> {
    let mut files: Vec<PathBuf> = fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "case"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            let text = fs::read_to_string(p).unwrap();
            let mut case = Case {
                name: name.clone(),
                class: String::new(),
                input: Input::Update,
                args: Vec::new(),
                expect: String::new(),
                statements: Vec::new(),
            };
            let mut commented = false;
            for line in text.lines() {
                if line.starts_with('#') {
                    commented = true;
                }
                let toks = recipe::tokens(line);
                let Some(first) = toks.first() else { continue };
                match first.as_str() {
                    "class" => case.class.clone_from(&toks[1]),
                    "input" => {
                        case.input = match toks[1].as_str() {
                            "tar" => Input::Tar,
                            "oci" => Input::Oci,
                            other => panic!("{name}: unknown input {other:?}"),
                        }
                    }
                    "args" => case.args = toks[1..].to_vec(),
                    // The rest of the line, as written: error text has spaces.
                    "expect" => line["expect".len()..].trim().clone_into(&mut case.expect),
                    _ => case.statements.push(toks),
                }
            }
            assert!(commented, "{name}: say what the attack is, in a comment");
            assert!(
                CLASSES.contains(&case.class.as_str()),
                "{name}: class {:?} is not one of {CLASSES:?}",
                case.class
            );
            assert!(!case.expect.is_empty(), "{name}: no expect line");
            case
        })
        .collect()
}

/// A device running v1; v2 (on the build host) adds three files of 100 kB that compress
/// poorly, so the real update from v1 to v2 has several parts.
fn lab() -> (Lab, Ctx) {
    let lab = Lab::new();
    let big: Vec<u8> = (0..50_000u32).flat_map(u32::to_le_bytes).collect();
    let v1 = lab.commit(
        "1.0",
        &[
            ("usr/share/doc/readme", b"version one\n"),
            ("usr/lib/big.bin", &big),
        ],
    );
    let noise = testkit::noise(300_000);
    let v2 = lab.commit(
        "1.1",
        &[
            ("usr/share/doc/readme", b"version two\n"),
            ("usr/lib/big.bin", &big),
            ("usr/lib/noise-a.bin", &noise[..100_000]),
            ("usr/lib/noise-b.bin", &noise[100_000..200_000]),
            ("usr/lib/noise-c.bin", &noise[200_000..]),
        ],
    );
    lab.install(&v1, &[]);
    lab.booted(&v1[..16], "default");
    let lab_update =
        fs::read(lab.delta(Some(&v1), &v2, "v1-v2.berth", &["--part-size", "100000"])).unwrap();
    let repo = store::Repo::open(&lab.repo).unwrap();
    let v1: ObjectId = v1.parse().unwrap();
    let v2: ObjectId = v2.parse().unwrap();
    let root = repo.read_commit(&v1).unwrap().0.root;
    let mut base = Vec::new();
    format::ops::base_order(&root, &mut |id| repo.read_tree(id), &mut base).unwrap();
    let mut paths = vec![String::new()];
    walk_paths(&repo, &root, "", &mut paths);
    assert_eq!(paths.len(), base.len(), "one path per base walk entry");
    let key = format::key::parse_secret(&fs::read(lab.keys.join("berth.key")).unwrap()).unwrap();
    let v2_root = repo.read_commit(&v2).unwrap().0.root;
    let ctx = Ctx {
        repo,
        v1,
        v2_root,
        base,
        paths,
        key,
        lab_update,
    };
    (lab, ctx)
}

/// The paths of the base walk, in its order (a tree before its entries, name order).
fn walk_paths(repo: &store::Repo, tree: &ObjectId, at: &str, out: &mut Vec<String>) {
    for e in repo.read_tree(tree).unwrap().entries() {
        let p = if at.is_empty() {
            e.name.to_string()
        } else {
            format!("{at}/{}", e.name)
        };
        out.push(p.clone());
        if e.kind == EntryKind::Tree {
            walk_paths(repo, &e.id, &p, out);
        }
    }
}

/// An entry as [`snapshot`] compares it: mode, owner, group, device, content, xattrs.
type Seen = (u32, u32, u32, u64, Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>);

/// Every entry of a directory tree, without times (a refused command may touch a
/// directory's mtime by creating and removing its staging directory).
fn snapshot(dir: &Path) -> BTreeMap<Vec<u8>, Seen> {
    testkit::scan(dir)
        .into_iter()
        .map(|(p, e)| (p, (e.mode, e.uid, e.gid, e.rdev, e.content, e.xattrs)))
        .collect()
}

/// Checks one refusal: exit status 1, one line on stderr holding `expect` and naming
/// the input.
fn refused(case: &Case, run: &str, out: &std::process::Output, names: Option<&str>) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{run}: must be refused with exit status 1; stderr: {err}"
    );
    assert_eq!(err.lines().count(), 1, "{run}: one line of error: {err}");
    assert!(
        err.contains(&case.expect),
        "{run}: {:?} does not say {:?}",
        err.trim_end(),
        case.expect
    );
    if let Some(n) = names {
        assert!(
            err.contains(n),
            "{run}: {:?} does not name {n}",
            err.trim_end()
        );
    }
    // Shown with --nocapture: every refusal, to read them as a user would.
    println!("{run}: {}", err.trim_end());
}

fn run_update_case(lab: &Lab, ctx: &Ctx, case: &Case) -> usize {
    let files = recipe::update::build(ctx, &case.statements);
    let store_tmp = lab.sysroot.join("berth/repo/tmp");
    for (i, bytes) in files.iter().enumerate() {
        let run = if files.len() > 1 {
            format!("{} (run {} of {})", case.name, i + 1, files.len())
        } else {
            case.name.clone()
        };
        let path = lab.tmp.path().join(format!("{}-{i}.berth", case.name));
        fs::write(&path, bytes).unwrap();
        clear_progress(&store_tmp, &run);
        let before = lab.manifest();
        let mut args = vec!["update", path.to_str().unwrap(), "--progress", "none"];
        args.extend(case.args.iter().map(String::as_str));
        let out = lab.berth(&args);
        refused(case, &run, &out, Some(path.to_str().unwrap()));
        assert!(lab.manifest() == before, "{run}: the sysroot changed");
        clear_progress(&store_tmp, &run);
        fs::remove_file(&path).unwrap();
    }
    files.len()
}

/// Progress files of parts applied before a refusal may stay in the store's scratch
/// directory (a rerun skips those parts), and would make the next case with the same
/// target skip them too: they go between runs. Staging directories must not be left.
fn clear_progress(store_tmp: &Path, run: &str) {
    for e in fs::read_dir(store_tmp).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(
            name.starts_with("update-"),
            "{run}: left {name} in berth/repo/tmp"
        );
        fs::remove_file(e.path()).unwrap();
    }
}

fn run_tar_case(lab: &Lab, case: &Case) -> usize {
    let bytes = recipe::tar::build(&case.statements);
    let path = lab.tmp.path().join(format!("{}.tar", case.name));
    fs::write(&path, bytes).unwrap();
    let before = snapshot(&lab.repo);
    let out = testkit::run(
        &testkit::bin("berth-image"),
        &[
            "commit".as_ref(),
            "--repo".as_ref(),
            lab.repo.as_os_str(),
            "--tar".as_ref(),
            path.as_os_str(),
            "--version".as_ref(),
            "9.9".as_ref(),
        ],
    );
    refused(case, &case.name, &out, Some(path.to_str().unwrap()));
    assert!(
        snapshot(&lab.repo) == before,
        "{}: the repository changed",
        case.name
    );
    1
}

fn run_oci_case(lab: &Lab, case: &Case) -> usize {
    let dir = lab.tmp.path().join(format!("{}.oci", case.name));
    recipe::oci::build(&case.statements, &dir);
    let reference = format!("oci:{}", dir.display());
    let before = snapshot(&lab.repo);
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "commit".as_ref(),
        "--repo".as_ref(),
        lab.repo.as_os_str(),
        "--oci".as_ref(),
        reference.as_ref(),
        "--version".as_ref(),
        "9.9".as_ref(),
    ];
    args.extend(case.args.iter().map(std::ffi::OsStr::new));
    let out = testkit::run(&testkit::bin("berth-image"), &args);
    refused(case, &case.name, &out, Some(&reference));
    assert!(
        snapshot(&lab.repo) == before,
        "{}: the repository changed",
        case.name
    );
    fs::remove_dir_all(&dir).unwrap();
    1
}

#[test]
fn every_hostile_case_is_refused_and_changes_nothing() {
    let started = Instant::now();
    let cases = load();
    assert!(
        cases.len() >= 50,
        "the corpus must hold at least 50 cases, not {}",
        cases.len()
    );
    let (lab, ctx) = lab();
    let setup = started.elapsed();
    let mut per_class: BTreeMap<&str, (usize, usize)> =
        CLASSES.iter().map(|c| (*c, (0, 0))).collect();
    // Every case runs, and every failure is reported, not only the first.
    let mut failures = Vec::new();
    for case in &cases {
        let t = Instant::now();
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match case.input {
            Input::Tar => run_tar_case(&lab, case),
            Input::Oci => run_oci_case(&lab, case),
            Input::Update => run_update_case(&lab, &ctx, case),
        }));
        if t.elapsed().as_secs_f64() > 1.0 {
            println!("  ({} took {:.1} s)", case.name, t.elapsed().as_secs_f64());
        }
        match run {
            Ok(runs) => {
                let e = per_class.get_mut(case.class.as_str()).unwrap();
                e.0 += 1;
                e.1 += runs;
            }
            Err(e) => failures.push(format!(
                "{}: {}",
                case.name,
                e.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default()
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    println!(
        "{} hostile cases refused ({} runs), lab set up in {:.1} s, {:.1} s in all:",
        cases.len(),
        per_class.values().map(|v| v.1).sum::<usize>(),
        setup.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    for (class, (n, runs)) in &per_class {
        println!("  {class:<7} {n:>3} cases, {runs:>3} runs");
        assert!(*n > 0, "no case of class {class}");
    }
    // The device is still sound and still boots what it booted.
    assert!(lab.ok(&["fsck"]).contains("sound"));
    assert_eq!(lab.next_boot().1, "default");
}

/// The recipe language is honest: the same statements the corpus uses, without the
/// hostile part, make updates the device accepts. Otherwise every case could be failing
/// for a reason of the harness's own (a bad signature, say).
#[test]
fn the_recipe_language_makes_updates_the_device_accepts() {
    let (lab, ctx) = lab();
    let recipes = [
        // A full update: a directory holding a file and a relative symlink that stays
        // inside, an absolute symlink, and the directories a deployment must have.
        r##"
        op file regular mode=0o755 content="#!/bin/sh\n"
        op tree new file "init" local 1
        op file symlink target="../sbin/init"
        op file symlink target="/sbin/init"
        op tree new file "abs" local 1 new file "rel" local 2
        op tree
        op file regular content="9.0"
        op tree new file "release" local 1
        op tree new tree "etc" local 1 new tree "bin" local 4 new tree "sbin" local 7 new tree "dev" local 3 new tree "proc" local 3 new tree "run" local 3 new tree "sys" local 3 new tree "sysroot" local 3 new tree "var" local 3 new tree "usr" id v1:usr
        commit version=9.0
        "##,
        // A delta: v1's root with one file replaced by a patch of itself.
        r"
        from v1
        op patch base=v1:usr/share/doc/readme window=0,12,12,23 payload=bipatch+var:12+hex:000000000000000000000000+var:0+zz:0
        op tree base=v1:usr/share/doc replace local 1
        op tree base=v1:usr/share replace local 1
        op tree base=v1:usr copy 1 replace local 1
        op tree base=v1: copy 7 replace local 1
        commit version=9.1 root=v1:
        ",
    ];
    for (i, text) in recipes.iter().enumerate() {
        let statements: Vec<Vec<String>> = text
            .lines()
            .map(recipe::tokens)
            .filter(|t| !t.is_empty())
            .collect();
        let files = recipe::update::build(&ctx, &statements);
        let path = lab.tmp.path().join(format!("control-{i}.berth"));
        fs::write(&path, &files[0]).unwrap();
        let out = lab.ok(&["update", path.to_str().unwrap(), "--allow-downgrade"]);
        assert!(out.contains("installed"), "{out}");
    }
    assert!(lab.ok(&["fsck"]).contains("sound"));
}
