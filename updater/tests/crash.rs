//! Crash injection at every mutating step (the crash-test build, feature `crash-points`).
//!
//! For `update` (from a file, and over HTTP pulling objects from a static repository
//! served on 127.0.0.1), `mark-good`, `rollback` and `gc`, and for every N, a fresh copy of the
//! device runs the command with `BERTH_CRASH_AT=N`: the process is killed just before its
//! Nth filesystem mutation. Half the runs also drop the file data that was never
//! fsynced (`BERTH_CRASH_DROP=1`). After each crash:
//! - berth-init's dry run picks a deployment the command may leave behind (the old one
//!   or the new one), and every deployment the record names is complete: its files are
//!   byte for byte those of an uninterrupted run;
//! - `berth fsck` finds every object's sha256 equal to its name, both record copies
//!   valid and every named deployment bootable;
//! - running the command again succeeds, and the device ends exactly where an
//!   uninterrupted run ends.
//!
//! `berth agent` gets the same cuts (dropping unsynced data) while it installs a hawkBit
//! action and while it reports the outcome: the server must end with exactly one
//! `closed+success`, never one before the trial is committed.
//!
//! Run: `cargo test -p updater --features crash-points --test crash -- --nocapture`
//! (ci/test.sh does). The totals are printed and reported in BENCHMARKS.md.

#![allow(clippy::tests_outside_test_module)] // integration tests are a test module of their own

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::Lab;
use common::esp::Esp;

/// Copies a sysroot with `cp -a`, which keeps the hard links between the store and the
/// deployments.
fn copy_tree(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success(), "cp -a {} {}", from.display(), to.display());
}

/// What a run leaves on the device, as far as booting goes: the record's roles, what
/// berth-init boots next, and each named deployment's files.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    default: Option<String>,
    trial: Option<String>,
    previous: Option<String>,
    next_boot: String,
    deployments: Vec<String>,
}

fn outcome(lab: &Lab) -> Outcome {
    let s = lab.status();
    let mut deployments: Vec<String> = s["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_owned())
        .collect();
    deployments.sort();
    Outcome {
        default: Lab::role(&s, "default"),
        trial: Lab::role(&s, "trial"),
        previous: Lab::role(&s, "previous"),
        next_boot: lab.next_boot().0,
        deployments,
    }
}

/// Each entry's path, type, mode, owner, content and xattrs (not its inode number,
/// which a copy of the device changes).
type Scan = BTreeMap<Vec<u8>, (u32, u32, u32, u64, Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>)>;

fn scan_deployment(lab: &Lab, name: &str) -> Scan {
    testkit::scan(&lab.sysroot.join("berth/deploy").join(name))
        .into_iter()
        .map(|(p, e)| (p, (e.mode, e.uid, e.gid, e.rdev, e.content, e.xattrs)))
        .collect()
}

/// One command run to every crash point from the same starting device.
struct Scenario {
    name: String,
    args: Vec<String>,
    /// The deployment running the command.
    booted: String,
    /// What berth-init may boot after a crash.
    may_boot: Vec<String>,
}

#[derive(Debug, Default)]
struct Totals {
    crash_points: u64,
    checked: u64,
    violations: Vec<String>,
}

fn berth_crashing(lab: &Lab, args: &[String], at: u64, drop: bool) -> std::process::Output {
    Command::new(common::berth())
        .arg("--sysroot")
        .arg(&lab.sysroot)
        .arg("--boot-json")
        .arg(&lab.boot_json)
        .args(args)
        .env("BERTH_CRASH_AT", at.to_string())
        .env("BERTH_CRASH_DROP", if drop { "1" } else { "0" })
        .output()
        .unwrap()
}

/// Runs `sc` from the device state in `base` to every crash point, in both modes.
fn run_scenario(
    lab: &Lab,
    base: &Path,
    sc: &Scenario,
    files: &BTreeMap<String, Scan>,
    totals: &mut Totals,
) {
    lab.booted(&sc.booted, "test");
    // The uninterrupted run: where every interrupted one must end.
    copy_tree(base, &lab.sysroot);
    let args: Vec<&str> = sc.args.iter().map(String::as_str).collect();
    lab.ok(&args);
    let want = outcome(lab);

    for drop in [false, true] {
        let mut n = 1u64;
        loop {
            copy_tree(base, &lab.sysroot);
            let out = berth_crashing(lab, &sc.args, n, drop);
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.success() {
                // No Nth mutation: every point of this command has been tried.
                assert!(n > 1, "{}: the command made no mutation at all", sc.name);
                break;
            }
            assert_eq!(
                out.status.signal(),
                Some(9),
                "{} at {n}: failed instead of crashing: {stderr}",
                sc.name
            );
            totals.crash_points += 1;
            let at = format!("{} crash {n}{}", sc.name, if drop { " (drop)" } else { "" });
            check(lab, &at, sc, files, &want, totals);
            n += 1;
        }
    }
}

/// The invariants after a crash, then the retry.
fn check(
    lab: &Lab,
    at: &str,
    sc: &Scenario,
    files: &BTreeMap<String, Scan>,
    want: &Outcome,
    totals: &mut Totals,
) {
    let mut bad = |what: String| totals.violations.push(format!("{at}: {what}"));
    let fsck = lab.berth(&["fsck"]);
    if !fsck.status.success() {
        bad(format!(
            "fsck: {}",
            String::from_utf8_lossy(&fsck.stderr).trim()
        ));
    }
    let now = outcome(lab);
    if !sc.may_boot.contains(&now.next_boot) {
        bad(format!("berth-init would boot {}", now.next_boot));
    }
    for name in [&now.default, &now.trial, &now.previous]
        .into_iter()
        .flatten()
    {
        if files
            .get(name)
            .is_some_and(|f| *f != scan_deployment(lab, name))
        {
            bad(format!("deployment {name} is not complete"));
        }
    }
    let args: Vec<&str> = sc.args.iter().map(String::as_str).collect();
    let retry = lab.berth(&args);
    if retry.status.success() {
        let end = outcome(lab);
        if end != *want {
            bad(format!("the retry ended at {end:?}, not {want:?}"));
        }
        if !lab.berth(&["fsck"]).status.success() {
            bad("fsck fails after the retry".into());
        }
    } else {
        bad(format!(
            "the retry failed: {}",
            String::from_utf8_lossy(&retry.stderr).trim()
        ));
    }
    totals.checked += 1;
}

/// The commits of the scenarios: v1 to v3, and what v1 pulls from the static
/// repository (v1's large file, other small ones).
fn commits(lab: &Lab) -> [String; 4] {
    let blob: Vec<u8> = (0..200_000u32).flat_map(u32::to_le_bytes).collect();
    let mut blob2 = blob.clone();
    blob2[300_000..300_100].fill(7);
    let v1 = lab.commit(
        "1.0",
        &[("usr/lib/big.bin", &blob), ("etc/app.conf", b"one")],
    );
    let v2 = lab.commit(
        "2.0",
        &[
            ("usr/lib/big.bin", &blob2),
            ("etc/app.conf", b"two"),
            ("usr/share/new.txt", b"new in 2"),
        ],
    );
    let v3 = lab.commit(
        "3.0",
        &[("usr/lib/big.bin", &blob2), ("etc/app.conf", b"3")],
    );
    let pulled = lab.commit(
        "1.5",
        &[
            ("usr/lib/big.bin", &blob),
            ("etc/app.conf", b"pulled"),
            ("usr/share/pulled.txt", b"fetched as an object"),
        ],
    );
    [v1, v2, v3, pulled]
}

/// Builds the five starting devices (saved under the lab) and the command each one
/// runs; also returns every deployment's files. `www` is served at `url`.
fn scenarios(
    lab: &Lab,
    www: &Path,
    url: &str,
) -> (Vec<(PathBuf, Scenario)>, BTreeMap<String, Scan>) {
    let [v1, v2, v3, pulled] = commits(lab);
    assert_eq!(lab.publish(&pulled, &[]), www);
    let pull_args: Vec<String> = ["update", url, "--channel", "stable"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    lab.install(&v1, &[]);
    let u12 = lab.delta(Some(&v1), &v2, "v1-v2.berth", &["--part-size", "100000"]);
    let u23 = lab.delta(Some(&v2), &v3, "v2-v3.berth", &[]);
    let name_of = |status: &serde_json::Value, role| Lab::role(status, role).unwrap();
    let stage = lab.tmp.path().join("stages");
    std::fs::create_dir(&stage).unwrap();
    let save = |what: &str| {
        let to = stage.join(what);
        copy_tree(&lab.sysroot, &to);
        to
    };

    // Stage 1: v1 installed, booted. Stage 2: v2 is the booted trial. Stage 3: v2 is
    // the default, v1 previous. Stage 4: v3 good too, so v1 is garbage.
    lab.booted(&name_of(&lab.status(), "default"), "default");
    let s1 = save("1");
    let mut files = BTreeMap::new();
    let d1 = name_of(&lab.status(), "default");
    files.insert(d1.clone(), scan_deployment(lab, &d1));
    let args: Vec<&str> = pull_args.iter().map(String::as_str).collect();
    assert!(lab.ok(&args).contains("for the objects update"));
    let dp = name_of(&lab.status(), "trial");
    files.insert(dp.clone(), scan_deployment(lab, &dp));
    copy_tree(&s1, &lab.sysroot);
    lab.ok(&["update", u12.to_str().unwrap()]);
    let d2 = name_of(&lab.status(), "trial");
    files.insert(d2.clone(), scan_deployment(lab, &d2));
    lab.booted(&d2, "trial");
    let s2 = save("2");
    lab.ok(&["mark-good"]);
    let s3 = save("3");
    lab.ok(&["update", u23.to_str().unwrap()]);
    let d3 = name_of(&lab.status(), "trial");
    files.insert(d3.clone(), scan_deployment(lab, &d3));
    lab.booted(&d3, "trial");
    lab.ok(&["mark-good"]);
    let s4 = save("4");

    let sc = |name: &str, booted: &str, args: &[&str], may: &[&str]| Scenario {
        name: name.to_owned(),
        booted: booted.to_owned(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        may_boot: may.iter().map(|a| (*a).to_owned()).collect(),
    };
    let u12 = u12.to_str().unwrap();
    let scenarios = vec![
        (
            s1.clone(),
            sc("update URL (object pull)", &d1, &args, &[&d1, &dp]),
        ),
        (
            s1.clone(),
            sc(
                "update --download-only",
                &d1,
                &["update", u12, "--download-only"],
                &[&d1],
            ),
        ),
        (s1, sc("update", &d1, &["update", u12], &[&d1, &d2])),
        (s2, sc("mark-good", &d2, &["mark-good"], &[&d2])),
        (
            s3,
            sc("rollback", &d2, &["rollback", "--from", &d2], &[&d1, &d2]),
        ),
        (s4, sc("gc", &d3, &["gc"], &[&d3])),
    ];
    (scenarios, files)
}

fn berth_faulting(lab: &Lab, args: &[String], at: u64, fault: &str) -> std::process::Output {
    Command::new(common::berth())
        .arg("--sysroot")
        .arg(&lab.sysroot)
        .arg("--boot-json")
        .arg(&lab.boot_json)
        .args(args)
        .env("BERTH_FAULT_AT", at.to_string())
        .env("BERTH_FAULT", fault)
        .output()
        .unwrap()
}

/// The injected faults: the crash-test build's name, and words of the message the
/// command must end with.
const FAULTS: [(&str, &str); 3] = [
    ("nospc", "No space left on device"),
    ("io", "Input/output error"),
    ("rofs", "Read-only file system"),
];

/// Runs `sc` from `base` with its Nth mutation and every later one failing with each of
/// [`FAULTS`], for every N: the command exits 1 with one line naming the cause (or, when
/// every failing step was one it may skip, succeeds and ends where an uninterrupted run
/// ends), then the crash test's invariants hold and a rerun without the fault converges.
fn run_fault_scenario(
    lab: &Lab,
    base: &Path,
    sc: &Scenario,
    files: &BTreeMap<String, Scan>,
    totals: &mut Totals,
) {
    lab.booted(&sc.booted, "test");
    copy_tree(base, &lab.sysroot);
    let args: Vec<&str> = sc.args.iter().map(String::as_str).collect();
    lab.ok(&args);
    let want = outcome(lab);
    for (fault, words) in FAULTS {
        let mut n = 1u64;
        loop {
            copy_tree(base, &lab.sysroot);
            let out = berth_faulting(lab, &sc.args, n, fault);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let at = format!("{} {fault} from mutation {n}", sc.name);
            if out.status.success() {
                // Every step from here on may fail harmlessly (or there is none): the
                // result must be the uninterrupted one's.
                if outcome(lab) != want {
                    totals
                        .violations
                        .push(format!("{at}: succeeded but ended at {:?}", outcome(lab)));
                }
                break;
            }
            totals.crash_points += 1;
            if out.status.code() != Some(1) || !one_error_line(&stderr, words) {
                totals.violations.push(format!(
                    "{at}: exit {:?}, not one line naming the cause: {stderr}",
                    out.status.code()
                ));
            }
            check(lab, &at, sc, files, &want, totals);
            n += 1;
        }
    }
}

#[test]
fn a_failing_disk_at_any_boot_partition_write_leaves_loader_and_berth_init_agreeing() {
    let cuts = FAULTS.map(|(f, w)| Cut::Fault(f, w));
    let mut all = Totals::default();
    for (d, kind) in [(Esp::new(), "systemd-boot"), (Esp::uboot(), "u-boot")] {
        let t = boot_partition_scenarios(&d, kind, &cuts);
        all.crash_points += t.crash_points;
        all.violations.extend(t.violations);
    }
    println!(
        "fault-test boot partition total: {} faults injected, {} violations",
        all.crash_points,
        all.violations.len()
    );
    assert!(
        all.violations.is_empty(),
        "{} violations:\n{}",
        all.violations.len(),
        all.violations.join("\n")
    );
}

#[test]
fn a_failing_disk_at_any_mutation_leaves_a_bootable_device_and_a_clear_error() {
    let lab = Lab::new();
    let www = lab.tmp.path().join("www");
    std::fs::create_dir(&www).unwrap();
    let server = testkit::http::Server::start(&www);
    let (scenarios, files) = scenarios(&lab, &www, &server.url());
    let mut all = Totals::default();
    for (base, sc) in &scenarios {
        let mut t = Totals::default();
        run_fault_scenario(&lab, base, sc, &files, &mut t);
        println!(
            "fault-test {}: {} faults injected (ENOSPC, EIO, EROFS), {} states checked, {} violations",
            sc.name,
            t.crash_points,
            t.checked,
            t.violations.len()
        );
        all.crash_points += t.crash_points;
        all.checked += t.checked;
        all.violations.extend(t.violations);
    }
    println!(
        "fault-test total: {} faults injected, {} violations",
        all.crash_points,
        all.violations.len()
    );
    assert!(
        all.violations.is_empty(),
        "{} violations:\n{}",
        all.violations.len(),
        all.violations.join("\n")
    );
}

#[test]
fn a_crash_at_any_mutation_leaves_a_bootable_device_and_a_retry_converges() {
    let lab = Lab::new();
    let www = lab.tmp.path().join("www");
    std::fs::create_dir(&www).unwrap();
    let server = testkit::http::Server::start(&www);
    let (scenarios, files) = scenarios(&lab, &www, &server.url());
    let mut report = Vec::new();
    let mut all = Totals::default();
    for (base, sc) in &scenarios {
        let mut t = Totals::default();
        run_scenario(&lab, base, sc, &files, &mut t);
        report.push(format!(
            "{}: {} crash points, {} states checked, {} violations",
            sc.name,
            t.crash_points,
            t.checked,
            t.violations.len()
        ));
        all.crash_points += t.crash_points;
        all.checked += t.checked;
        all.violations.extend(t.violations);
    }
    for line in &report {
        println!("crash-test {line}");
    }
    println!(
        "crash-test total: {} crash points, {} violations",
        all.crash_points,
        all.violations.len()
    );
    assert!(
        all.violations.is_empty(),
        "{} violations:\n{}",
        all.violations.len(),
        all.violations.join("\n")
    );
}

/// What a device on a loader board boots next, as the loader and berth-init decide
/// together: (the entry the loader starts, the directory holding its files, its kernel
/// set, berth-init's choice under its `berth.entry=`); or what is wrong.
fn esp_next_boot(d: &Esp) -> Result<(String, String, String, String), String> {
    let (entry, files, set) = d.loader_choice()?;
    let out = Command::new(testkit::bin("berth-init"))
        .args(["--dry-run", "--sysroot"])
        .arg(&d.lab.sysroot)
        .args(["--cmdline", &format!("berth.entry={entry}")])
        .output()
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("berth-init --dry-run: {e}"))?;
    let booted = v["choice"]["deployment"]
        .as_str()
        .ok_or_else(|| format!("berth-init boots no deployment: {v}"))?
        .to_owned();
    Ok((entry, files, set, booted))
}

/// The boot partition's entries, set directories with every set file's content, and
/// (U-Boot) the loader state without its generation.
type EspState = (Vec<String>, BTreeMap<String, Vec<u8>>, String);

fn esp_state(d: &Esp) -> EspState {
    let mut files = BTreeMap::new();
    for set in d.sets() {
        for f in ["vmlinuz", "initramfs.img"] {
            let p = d.part.join(&set).join(f);
            files.insert(format!("{set}/{f}"), std::fs::read(&p).unwrap_or_default());
        }
    }
    let st = d
        .uboot_state()
        .map(|s| format!("{:?} {:?} {:?}", s.default, s.previous, s.trial))
        .unwrap_or_default();
    (d.entries(), files, st)
}

/// One command on a loader board's device, from `base` (`sysroot/` and `esp/`), to every
/// crash point: the loader and berth-init agree on a deployment the command may leave
/// behind, that deployment runs under its own kernel set, whose files are complete; the
/// retry converges to the uninterrupted run's device and boot partition.
fn run_esp_scenario(
    d: &Esp,
    base: &Path,
    sc: &Scenario,
    sets: &BTreeMap<String, String>,
    cuts: &[Cut],
    totals: &mut Totals,
) {
    let restore = || {
        copy_tree(&base.join("sysroot"), &d.lab.sysroot);
        copy_tree(&base.join("esp"), &d.part);
    };
    let mut args = vec!["--boot-dir".to_owned(), d.part.to_str().unwrap().to_owned()];
    args.extend(sc.args.iter().cloned());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    d.lab.booted(&sc.booted, "test");
    restore();
    d.lab.ok(&argv);
    let want = (outcome(&d.lab), esp_state(d));
    for cut in cuts {
        let mut n = 1u64;
        loop {
            restore();
            let out = match cut {
                Cut::Kill(drop) => berth_crashing(&d.lab, &args, n, *drop),
                Cut::Fault(fault, _) => berth_faulting(&d.lab, &args, n, fault),
            };
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            let at = format!("{} {cut:?} at {n}", sc.name);
            if out.status.success() {
                assert!(n > 1, "{}: the command made no mutation at all", sc.name);
                if matches!(cut, Cut::Fault(..)) && (outcome(&d.lab), esp_state(d)) != want {
                    totals
                        .violations
                        .push(format!("{at}: succeeded but did not end where it should"));
                }
                break;
            }
            match cut {
                Cut::Kill(_) => assert_eq!(
                    out.status.signal(),
                    Some(9),
                    "{at}: failed instead of crashing: {stderr}"
                ),
                Cut::Fault(_, words) => {
                    if out.status.code() != Some(1) || !one_error_line(&stderr, words) {
                        totals.violations.push(format!(
                            "{at}: exit {:?}, not one line naming the cause: {stderr}",
                            out.status.code()
                        ));
                    }
                }
            }
            totals.crash_points += 1;
            let mut bad = |what: String| totals.violations.push(format!("{at}: {what}"));
            if !d.lab.berth(&["fsck"]).status.success() {
                bad("fsck fails".into());
            }
            match esp_next_boot(d) {
                Err(e) => bad(e),
                Ok((entry, files, set, booted)) => {
                    if !sc.may_boot.contains(&booted) {
                        bad(format!(
                            "the loader starts {entry} and berth-init boots {booted}"
                        ));
                    }
                    if sets.get(&booted) != Some(&set) {
                        bad(format!(
                            "{booted} would run under {entry}'s kernel (set {set})"
                        ));
                    }
                    for f in ["vmlinuz", "initramfs.img"] {
                        let on_esp = std::fs::read(d.part.join(&files).join(f)).unwrap_or_default();
                        let set = d
                            .lab
                            .sysroot
                            .join("berth/deploy")
                            .join(&booted)
                            .join("usr/lib/modules/6.1.0-test")
                            .join(f);
                        if std::fs::read(&set).ok() != Some(on_esp) {
                            bad(format!("{files}/{f} is not {booted}'s"));
                        }
                    }
                }
            }
            let retry = d.lab.berth(&argv);
            if !retry.status.success() {
                bad(format!(
                    "the retry failed: {}",
                    String::from_utf8_lossy(&retry.stderr).trim()
                ));
            } else if (outcome(&d.lab), esp_state(d)) != want {
                bad(format!(
                    "the retry ended at {:?} {:?}, not {:?} {:?}",
                    outcome(&d.lab),
                    esp_state(d).0,
                    want.0,
                    want.1.0
                ));
            }
            totals.checked += 1;
            n += 1;
        }
    }
}

/// How a boot-partition scenario's command is interrupted at its Nth mutation: killed
/// (dropping unsynced data or not), or failed from there on with a fault of
/// [`FAULTS`] (its name and the words of its message).
#[derive(Debug, Clone, Copy)]
enum Cut {
    Kill(bool),
    Fault(&'static str, &'static str),
}

/// The boot-partition scenarios on `d` (systemd-boot or U-Boot), named with `kind`, each
/// interrupted in every way of `cuts`.
fn boot_partition_scenarios(d: &Esp, kind: &str, cuts: &[Cut]) -> Totals {
    let v1 = d.commit("1.0", "one", None);
    let v2 = d.commit("2.0", "two", None);
    let v3 = d.commit("3.0", "two", Some("quiet"));
    let v4 = d.commit("4.0", "two", Some("quiet"));
    let mut sets = BTreeMap::new();
    for c in [&v1, &v2, &v3, &v4] {
        sets.insert(c[..16].to_owned(), d.set_id(c));
    }
    let (d1, d2, d3, d4) = (&v1[..16], &v2[..16], &v3[..16], &v4[..16]);
    d.install(&v1);
    let stages = d.lab.tmp.path().join(format!("{kind}-stages"));
    let save = |what: &str| {
        let to = stages.join(what);
        std::fs::create_dir_all(&to).unwrap();
        copy_tree(&d.lab.sysroot, &to.join("sysroot"));
        copy_tree(&d.part, &to.join("esp"));
        to
    };
    let boot_dir = d.part.to_str().unwrap().to_owned();
    let ok = |args: &[&str]| {
        let mut all = vec!["--boot-dir", boot_dir.as_str()];
        all.extend_from_slice(args);
        d.lab.ok(&all)
    };
    let update = |from: &str, to: &str| d.update(from, to).to_str().unwrap().to_owned();
    let (u12, u23, u34) = (update(&v1, &v2), update(&v2, &v3), update(&v3, &v4));
    // 1: v1 alone. 2: v2 a booted loader trial. 3: v2 the default. 4: v3 the default,
    // v1 garbage. 5: v4 (v3's kernel set) a booted trial berth-init counts.
    d.lab.booted(d1, "default");
    let s1 = save("1");
    ok(&["update", &u12]);
    d.lab.booted(d2, "loader-trial");
    let s2 = save("2");
    ok(&["mark-good"]);
    let s3 = save("3");
    ok(&["update", &u23]);
    d.lab.booted(d3, "loader-trial");
    ok(&["mark-good"]);
    let s4 = save("4");
    ok(&["update", &u34]);
    d.lab.booted(d4, "trial");
    let s5 = save("5");
    let sc = |name: &str, booted: &str, args: &[&str], may: &[&str]| Scenario {
        name: format!("{kind} {name}"),
        booted: booted.to_owned(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        may_boot: may.iter().map(|a| (*a).to_owned()).collect(),
    };
    let scenarios = [
        (s1, sc("update", d1, &["update", &u12], &[d1, d2])),
        (s2.clone(), sc("mark-good", d2, &["mark-good"], &[d2])),
        (
            s2,
            sc("rollback trial", d2, &["rollback", "--from", d2], &[d1, d2]),
        ),
        (
            s3,
            sc("rollback", d2, &["rollback", "--from", d2], &[d1, d2]),
        ),
        (s4, sc("gc", d3, &["gc"], &[d3])),
        (s5, sc("mark-good rootfs", d4, &["mark-good"], &[d4])),
    ];
    let mut all = Totals::default();
    for (base, sc) in &scenarios {
        let mut t = Totals::default();
        run_esp_scenario(d, base, sc, &sets, cuts, &mut t);
        if matches!(cuts.first(), Some(Cut::Fault(..))) {
            println!(
                "fault-test {}: {} faults injected (ENOSPC, EIO, EROFS), {} states checked, {} violations",
                sc.name,
                t.crash_points,
                t.checked,
                t.violations.len()
            );
        } else {
            println!(
                "crash-test {}: {} crash points, {} states checked, {} violations",
                sc.name,
                t.crash_points,
                t.checked,
                t.violations.len()
            );
        }
        all.crash_points += t.crash_points;
        all.checked += t.checked;
        all.violations.extend(t.violations);
    }
    all
}

#[test]
fn a_crash_at_any_boot_partition_write_leaves_loader_and_berth_init_agreeing() {
    let mut all = Totals::default();
    for (d, kind) in [(Esp::new(), "systemd-boot"), (Esp::uboot(), "u-boot")] {
        let t = boot_partition_scenarios(&d, kind, &[Cut::Kill(false), Cut::Kill(true)]);
        all.crash_points += t.crash_points;
        all.checked += t.checked;
        all.violations.extend(t.violations);
    }
    println!(
        "crash-test boot partition total: {} crash points, {} violations",
        all.crash_points,
        all.violations.len()
    );
    assert!(
        all.violations.is_empty(),
        "{} violations:\n{}",
        all.violations.len(),
        all.violations.join("\n")
    );
}

/// A failing disk's error: one line naming the cause (`words`). Lines before it may be
/// berth's warnings (the store's, that it could not clean up a staging directory on a
/// disk that fails every write), never more errors.
fn one_error_line(stderr: &str, words: &str) -> bool {
    let mut lines: Vec<&str> = stderr.trim().lines().collect();
    let Some(error) = lines.pop() else {
        return false;
    };
    error.starts_with("berth: ")
        && !error.starts_with("berth: warning: ")
        && error.contains(words)
        && lines.iter().all(|l| l.starts_with("berth: warning: "))
}

/// `berth agent --once` against `hb`, crashing at mutation `at` (0: never).
fn agent_crashing(lab: &Lab, hb: &testkit::ddi::Hawkbit, at: u64) -> std::process::Output {
    let token = lab.tmp.path().join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    let config = lab.tmp.path().join("agent.toml");
    std::fs::write(&config, "reboot_command = \"none\"\n").unwrap();
    let mut c = Command::new(common::berth());
    c.arg("--sysroot")
        .arg(&lab.sysroot)
        .arg("--boot-json")
        .arg(&lab.boot_json)
        .args(["agent", "--once", "--server", &hb.url(), "--tenant", "T"])
        .args(["--controller-id", "dev", "--token-file"])
        .arg(&token)
        .arg("--config")
        .arg(&config);
    if at > 0 {
        c.env("BERTH_CRASH_AT", at.to_string())
            .env("BERTH_CRASH_DROP", "1");
    }
    c.output().unwrap()
}

/// The closing entries of an action's history (`closed+success`, …).
fn closings(hb: &testkit::ddi::Hawkbit, id: u64) -> Vec<String> {
    hb.history(id)
        .iter()
        .filter(|e| e.execution == "closed")
        .map(|e| format!("closed+{}", e.finished))
        .collect()
}

/// The rest of a rollout from any state: the agent again, the reboot into the trial
/// `d2`, the health check's commit, the agent: the server must end with exactly one
/// `closed+success`.
fn finish_rollout(lab: &Lab, hb: &testkit::ddi::Hawkbit, id: u64, d2: &str) -> Result<(), String> {
    let out = agent_crashing(lab, hb, 0);
    if !out.status.success() {
        return Err(format!(
            "the retry failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    if Lab::role(&lab.status(), "trial").as_deref() == Some(d2) {
        lab.booted(d2, "trial");
        lab.ok(&["mark-good"]);
    }
    let out = agent_crashing(lab, hb, 0);
    if !out.status.success() {
        return Err(format!(
            "the report failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    match (closings(hb, id).as_slice(), hb.state(id)) {
        ([one], testkit::ddi::ActionState::Finished) if one == "closed+success" => Ok(()),
        (c, s) => Err(format!("the server ended with {c:?}, {s:?}")),
    }
}

/// Records a violation found at `at`.
fn push(totals: &mut Totals, at: &str, what: impl std::fmt::Display) {
    totals.violations.push(format!("{at}: {what}"));
}

/// A power cut at every mutation of the agent: while it installs an action (download,
/// apply, trial, its state file), and while it reports the outcome after the reboot.
/// After each cut the device boots v1 or v2 and passes fsck; the server has heard no
/// final word yet; and the agent, run again, carries the action to exactly one
/// `closed+success` once the trial is committed: never lost, never sent early.
#[test]
fn a_power_cut_in_the_agent_never_loses_or_forges_the_final_feedback() {
    use testkit::ddi::{Assign, Hawkbit};
    let lab = Lab::new();
    let v1 = lab.commit("1.0", &[("usr/share/big", &testkit::noise(200_000))]);
    let mut big = testkit::noise(200_000);
    big[5000..9000].fill(1);
    let v2 = lab.commit("2.0", &[("usr/share/big", &big)]);
    lab.install(&v1, &[]);
    let (d1, d2) = (v1[..16].to_owned(), v2[..16].to_owned());
    lab.booted(&d1, "default");
    let delta = std::fs::read(lab.delta(Some(&v1), &v2, "v1-v2.berth", &[])).unwrap();
    let base = lab.tmp.path().join("agent-base");
    copy_tree(&lab.sysroot, &base);
    let server = || {
        let hb = Hawkbit::start("T");
        hb.add_target("dev", "t0ken");
        let id = hb.assign(
            "dev",
            Assign::soft(vec![("v1-v2.berth".into(), delta.clone())]),
        );
        (hb, id)
    };
    let mut totals = Totals::default();
    let mut phases = Vec::new();
    // Phase 1: installing. Phase 2: reporting, from the committed trial.
    for phase in ["install", "report"] {
        let start = lab.tmp.path().join(format!("agent-{phase}"));
        copy_tree(&base, &start);
        let prepare = |hb: &Hawkbit| {
            copy_tree(&start, &lab.sysroot);
            if phase == "report" {
                lab.booted(&d1, "default");
                assert!(agent_crashing(&lab, hb, 0).status.success());
                lab.booted(&d2, "trial");
                lab.ok(&["mark-good"]);
            } else {
                lab.booted(&d1, "default");
            }
        };
        let mut points = 0u64;
        let bad_before = totals.violations.len();
        let mut n = 1u64;
        loop {
            let (hb, id) = server();
            prepare(&hb);
            let out = agent_crashing(&lab, &hb, n);
            if out.status.success() {
                assert!(n > 1, "the agent's {phase} made no mutation");
                break;
            }
            let at = format!("agent {phase} crash {n}");
            if out.status.signal() != Some(9) {
                push(
                    &mut totals,
                    &at,
                    format!(
                        "failed instead of crashing: {}",
                        String::from_utf8_lossy(&out.stderr)
                    ),
                );
            }
            points += 1;
            if !lab.berth(&["fsck"]).status.success() {
                push(&mut totals, &at, "fsck fails");
            }
            let next = lab.next_boot().0;
            if next != d1 && next != d2 {
                push(&mut totals, &at, format!("berth-init would boot {next}"));
            }
            if !closings(&hb, id).is_empty() && phase == "install" {
                push(
                    &mut totals,
                    &at,
                    format!("a final word before the commit: {:?}", closings(&hb, id)),
                );
            }
            if let Err(e) = finish_rollout(&lab, &hb, id, &d2) {
                push(&mut totals, &at, e);
            }
            totals.checked += 1;
            n += 1;
        }
        totals.crash_points += points;
        let bad_here = totals.violations.len() - bad_before;
        phases.push(format!(
            "agent {phase}: {points} crash points, {points} states checked, {bad_here} violations"
        ));
    }
    for p in &phases {
        println!("crash-test {p}");
    }
    println!(
        "crash-test agent total: {} crash points, {} violations",
        totals.crash_points,
        totals.violations.len()
    );
    assert!(
        totals.violations.is_empty(),
        "{} violations:\n{}",
        totals.violations.len(),
        totals.violations.join("\n")
    );
}
