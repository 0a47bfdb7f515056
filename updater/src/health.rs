//! `berth health`: the health-gated commit of a trial. Booted into the trial, run the
//! checks (every executable file of a directory such as `/etc/berth/health.d`, in name
//! order, and any commands given), each within a time limit; all pass: mark the trial
//! good; one fails: roll it back (the program then reboots into the default). Booted
//! into anything else, there is nothing to decide.
//!
//! `berth-health.service` runs it before `boot-complete.target`, as greenboot and
//! systemd's boot counting do; systems without systemd run it from their init.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Device, UpdaterError};

/// What `berth health` runs.
#[derive(Debug, Clone, Default)]
pub struct HealthOptions {
    /// A directory of checks: every executable regular file in it, in name order
    /// (names starting with `.` are skipped).
    pub dir: Option<PathBuf>,
    /// Whether a missing `dir` means no checks (the default directory, which a device
    /// without checks does not have) rather than an error (a directory someone named:
    /// a typo in it must not commit a trial nobody checked).
    pub dir_may_be_missing: bool,
    /// Shell commands, run with `/bin/sh -c` after the directory's checks.
    pub commands: Vec<String>,
    /// The most one check may take; past it, it is killed and counts as failed.
    pub timeout: Duration,
}

/// What `berth health` decided.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum HealthOutcome {
    /// The booted deployment is not a trial: nothing to decide.
    NotATrial {
        /// The booted deployment, if berth-init's report names one.
        booted: Option<String>,
    },
    /// Every check passed: the trial is the default now.
    Committed {
        /// The trial, now the default.
        deployment: String,
        /// Checks run.
        checks: usize,
    },
    /// A check failed: the trial is rolled back; the next boot runs the default.
    RolledBack {
        /// The trial given up.
        deployment: String,
        /// The failed check, and how it failed.
        failed: String,
    },
}

impl Device {
    /// Runs the checks if the booted deployment is the trial, then commits it or rolls
    /// it back.
    pub fn health(&self, opts: &HealthOptions) -> Result<HealthOutcome, UpdaterError> {
        let status = self.status()?;
        let booted = status.deployments.iter().find(|d| d.booted);
        let Some(trial) = booted.filter(|d| d.trial) else {
            return Ok(HealthOutcome::NotATrial {
                booted: booted.map(|d| d.name.clone()),
            });
        };
        let name = trial.name.clone();
        let checks = checks(opts)?;
        for (shown, mut cmd) in checks.iter().map(|(s, c)| (s, c())) {
            if let Err(why) = run(&mut cmd, opts.timeout) {
                let failed = format!("{shown}: {why}");
                let from = format::record::DeploymentName::new(name.as_bytes())
                    .map_err(|e| UpdaterError::State(format!("{name}: {e}")))?;
                self.rollback(Some(&from))?;
                return Ok(HealthOutcome::RolledBack {
                    deployment: name,
                    failed,
                });
            }
        }
        self.mark_good()?;
        Ok(HealthOutcome::Committed {
            deployment: name,
            checks: checks.len(),
        })
    }
}

type MakeCommand = Box<dyn Fn() -> Command>;

/// The checks to run, named for messages, each as a command to build.
fn checks(opts: &HealthOptions) -> Result<Vec<(String, MakeCommand)>, UpdaterError> {
    let mut out: Vec<(String, MakeCommand)> = Vec::new();
    if let Some(dir) = &opts.dir {
        for path in executables(dir, opts.dir_may_be_missing)? {
            let p = path.clone();
            out.push((
                path.display().to_string(),
                Box::new(move || Command::new(&p)),
            ));
        }
    }
    for c in &opts.commands {
        let c2 = c.clone();
        out.push((
            c.clone(),
            Box::new(move || {
                let mut cmd = Command::new("/bin/sh");
                cmd.arg("-c").arg(&c2);
                cmd
            }),
        ));
    }
    Ok(out)
}

/// The executable regular files of `dir`, in name order; none if it does not exist and
/// `may_be_missing`. A directory that cannot be read is an error: a check skipped by
/// accident would commit a trial nobody checked.
fn executables(dir: &Path, may_be_missing: bool) -> Result<Vec<PathBuf>, UpdaterError> {
    use std::os::unix::fs::PermissionsExt as _;
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if may_be_missing && e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Vec::new());
        }
        Err(e) => {
            return Err(UpdaterError::State(format!(
                "{}: {e}; no check can be skipped, so the trial is left as it is",
                dir.display()
            )));
        }
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|e| UpdaterError::State(format!("{}: {e}", dir.display())))?;
        let path = e.path();
        if e.file_name().as_encoded_bytes().starts_with(b".") {
            continue;
        }
        let meta = std::fs::metadata(&path)
            .map_err(|err| UpdaterError::State(format!("{}: {err}", path.display())))?;
        if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Runs `cmd` (output to berth's stderr, for the journal) within `timeout`.
fn run(cmd: &mut Command, timeout: Duration) -> Result<(), String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    let began = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(s)) if s.success() => return Ok(()),
            Ok(Some(s)) => return Err(format!("failed ({s})")),
            Ok(None) if began.elapsed() > timeout => {
                kill(&mut child);
                return Err(format!(
                    "did not finish within {} s; killed",
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("cannot wait for it: {e}")),
        }
    }
}

fn kill(child: &mut Child) {
    // Deliberately ignored: it may have ended by itself in between.
    let _ = child.kill();
    let _ = child.wait();
}
