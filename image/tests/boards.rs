//! Boards come with berth-image: `boards` lists the built-in ones from any directory;
//! a `--boards DIR` board overrides a built-in one of the same name and adds new ones,
//! the system's directory (`$BERTH_BOARDS_DIR` here) comes between, and `--json` says
//! where each came from. A broken board file is a one-line error that names the file.
#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BUILT_IN: [&str; 5] = [
    "qemu-aarch64",
    "qemu-aarch64-uboot",
    "qemu-x86_64",
    "rpi4",
    "uefi-x86_64",
];

/// berth-image, run in `cwd` (never the repository) with `system` as the system's
/// board directory.
fn berth_image(cwd: &Path, system: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth-image"))
        .current_dir(cwd)
        .env("BERTH_BOARDS_DIR", system)
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The one-line error of a command that must fail with status 1.
fn fails(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err
}

/// `DIR/<name>/board.toml`: the repository's board `from`, renamed to `name`, with
/// `memory-mib` set to `mib`.
fn board(dir: &Path, name: &str, from: &str, mib: u32) -> PathBuf {
    let text = std::fs::read_to_string(
        testkit::workspace()
            .join("boards")
            .join(from)
            .join("board.toml"),
    )
    .unwrap();
    let memory = text
        .lines()
        .find(|l| l.starts_with("memory-mib"))
        .unwrap()
        .to_owned();
    let text = text
        .replace(&format!("name = \"{from}\""), &format!("name = \"{name}\""))
        .replace(&memory, &format!("memory-mib = {mib}"));
    std::fs::create_dir_all(dir.join(name)).unwrap();
    let path = dir.join(name).join("board.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn by_name<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed: {list}"))
}

#[test]
fn boards_run_anywhere_lists_the_built_in_boards() {
    let tmp = tempfile::tempdir().unwrap();
    let none = tmp.path().join("no-system-boards");
    let list: Value =
        serde_json::from_str(&ok(&berth_image(tmp.path(), &none, &["boards", "--json"]))).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, BUILT_IN);
    for b in list.as_array().unwrap() {
        assert_eq!(b["source"], "built-in", "{b}");
        assert!(b["path"].is_null(), "{b}");
    }
    let uefi = by_name(&list, "uefi-x86_64");
    assert_eq!(
        (&uefi["arch"], &uefi["bootloader"], &uefi["qemu"]),
        (&"x86_64".into(), &"systemd-boot".into(), &true.into())
    );
    assert_eq!(by_name(&list, "rpi4")["qemu"], false);
    let text = ok(&berth_image(tmp.path(), &none, &["boards"]));
    for name in BUILT_IN {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{name} ")) && l.ends_with("[built-in]")),
            "{name}: {text}"
        );
    }
}

#[test]
fn boards_dirs_override_and_extend_the_system_and_built_in_boards() {
    let tmp = tempfile::tempdir().unwrap();
    let (mine, more, system) = (
        tmp.path().join("mine"),
        tmp.path().join("more"),
        tmp.path().join("system"),
    );
    let my_x86 = board(&mine, "qemu-x86_64", "qemu-x86_64", 320);
    let more_x86 = board(&more, "qemu-x86_64", "qemu-x86_64", 330);
    let lab = board(&more, "lab-pc", "uefi-x86_64", 1024);
    let system_arm = board(&system, "qemu-aarch64", "qemu-aarch64", 300);
    let list: Value = serde_json::from_str(&ok(&berth_image(
        tmp.path(),
        &system,
        &[
            "boards",
            "--json",
            "--boards",
            mine.to_str().unwrap(),
            "--boards",
            more.to_str().unwrap(),
        ],
    )))
    .unwrap();
    assert_eq!(list.as_array().unwrap().len(), BUILT_IN.len() + 1, "{list}");
    let x86 = by_name(&list, "qemu-x86_64");
    assert_eq!(x86["source"], "boards-dir");
    assert_eq!(x86["path"], my_x86.to_str().unwrap());
    assert_eq!(
        x86["shadowed"],
        serde_json::json!([
            {"source": "boards-dir", "path": more_x86},
            {"source": "built-in", "path": null},
        ])
    );
    let arm = by_name(&list, "qemu-aarch64");
    assert_eq!(
        (&arm["source"], &arm["path"]),
        (&"system".into(), &system_arm.to_str().unwrap().into())
    );
    assert_eq!(
        arm["shadowed"],
        serde_json::json!([{"source": "built-in", "path": null}])
    );
    let lab_pc = by_name(&list, "lab-pc");
    assert_eq!(
        (&lab_pc["source"], &lab_pc["path"], &lab_pc["bootloader"]),
        (
            &"boards-dir".into(),
            &lab.to_str().unwrap().into(),
            &"systemd-boot".into()
        )
    );
    assert_eq!(by_name(&list, "rpi4")["source"], "built-in");

    // Other commands look boards up the same way: qemu's command line takes the
    // winning board's memory (the image and its kernel are stand-ins, never booted).
    let img = tmp.path().join("disk.img");
    for f in ["disk.img", "disk.kernel", "disk.initrd"] {
        std::fs::write(tmp.path().join(f), b"").unwrap();
    }
    let memory = |boards: &[&Path], name: &str| {
        let mut args = vec!["qemu", img.to_str().unwrap(), "--json", "--board", name];
        args.extend(["--append", "console=ttyS0"]);
        for b in boards {
            args.extend(["--boards", b.to_str().unwrap()]);
        }
        let j: Value = serde_json::from_str(&ok(&berth_image(tmp.path(), &system, &args))).unwrap();
        let argv: Vec<&str> = j["argv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let m = argv.iter().position(|a| *a == "-m").unwrap();
        argv[m + 1].parse::<u32>().unwrap()
    };
    assert_eq!(memory(&[&mine, &more], "qemu-x86_64"), 320);
    assert_eq!(memory(&[&more, &mine], "qemu-x86_64"), 330);
    assert_eq!(memory(&[], "qemu-x86_64"), 256, "built in");
    assert_eq!(memory(&[&mine], "qemu-aarch64"), 300, "the system's");
}

#[test]
fn a_bad_board_file_is_one_line_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("boards");
    let none = tmp.path().join("no-system-boards");
    let path = board(&dir, "qemu-x86_64", "qemu-x86_64", 256);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("cpu = \"max\"", "cpu = \"max\"\ncpus = 2"),
    )
    .unwrap();
    let d = dir.to_str().unwrap();
    let prefix = format!("berth-image: {}: invalid board file: ", path.display());
    let cases: [&[&str]; 3] = [
        &["boards", "--boards", d],
        &["boards", "--json", "--boards", d],
        &["qemu", "x.img", "--boards", d, "--board", "qemu-x86_64"],
    ];
    std::fs::write(tmp.path().join("x.img"), b"").unwrap();
    for args in cases {
        let err = fails(&berth_image(tmp.path(), &none, args));
        assert!(err.starts_with(&prefix), "{args:?}: {err}");
        assert!(err.contains("cpus"), "names the cause: {err}");
    }
    // Another board still loads; a wrong name, a missing directory and an unknown
    // board are one line each, naming what was given.
    let err = fails(&berth_image(
        tmp.path(),
        &none,
        &["qemu", "x.img", "--boards", d, "--board", "rpi4"],
    ));
    assert!(err.contains("board rpi4: no [qemu] section"), "{err}");
    for (args, says) in [
        (
            &["boards", "--boards", "nowhere"][..],
            "--boards nowhere: not a directory",
        ),
        (
            &["qemu", "x.img", "--board", "../etc"][..],
            "--board \"../etc\": not a board name",
        ),
        (
            &["qemu", "x.img", "--board", "no-such"][..],
            "--board no-such: no such board",
        ),
    ] {
        let err = fails(&berth_image(tmp.path(), &none, args));
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // A file where the system's directory should be fails closed.
    let err = fails(&berth_image(tmp.path(), &path, &["boards"]));
    assert!(err.contains("not a directory"), "{err}");
}
