//! The device agent's library: what `berth` does, apart from parsing its command line.
//!
//! Built so far: reading the device's state ([`Device::status`]), applying an update
//! file ([`Device::update`], see [`update`]), fetching one from a static repository over
//! http or https ([`Device::update_remote`], [`Device::check`], see [`fetch`] and
//! [`tls`]), the record changes a person or a health check makes ([`Device::mark_good`],
//! [`Device::rollback`]), checking and repairing the store ([`Device::fsck`],
//! [`repair`]) and [`gc`].
//!
//! Every record change goes through the `sysroot` crate, which writes the copy that did
//! not win (temp file, fsync, rename, fsync the directory): a power cut leaves either
//! the old record or the new one.
//!
//! # Testing
//! `cargo test -p updater` runs the host tests against sysroot directories that
//! `berth-image install` lays out (build the workspace first).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::path::{Path, PathBuf};

mod apply;
mod bootpart;
mod checks;
mod deadline;
mod dirs;
pub mod fetch;
pub mod gc;
mod keys;
pub mod lock;
pub mod oci;
mod pull;
pub mod repair;
pub use net::tls;
pub mod update;

use format::record::{DeploymentName, Record, RecordCopy, Rollback, RollbackReason};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use store::{Repo, StoreError};
use sysroot::{Bootable, CopyState, Sysroot};

/// The most of `boot.json` read: berth-init writes well under 4 KiB (a choice, a reason,
/// fallbacks, timings), so more is not its file.
const BOOT_JSON_MAX: u64 = 64 << 10;

/// The default sysroot: where berth-init leaves the physical sysroot in the booted system.
pub const DEFAULT_SYSROOT: &str = "/sysroot";

/// The store's scratch directory, relative to the sysroot: downloads and the progress
/// of updates.
pub(crate) const TMP_DIR: &str = "berth/repo/tmp";
/// What the device accepted from each channel, relative to the sysroot.
pub(crate) const CHANNELS_DIR: &str = "berth/state/channels";
/// The persistent `/etc` layers, one directory per deployment, relative to the sysroot.
pub(crate) const ETC_DIR: &str = "berth/state/etc";

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum UpdaterError {
    /// A sysroot operation failed.
    #[error("{path}: {step}: {errno}", path = path.display(), errno = std::io::Error::from(*errno))]
    Sysroot {
        /// The sysroot.
        path: PathBuf,
        /// What was being done.
        step: &'static str,
        /// The OS error.
        errno: rustix::io::Errno,
    },
    /// The object store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Neither copy of the boot record is valid.
    #[error("{}: no valid boot record (berth/boot/record.a and record.b are missing or damaged)", path.display())]
    NoRecord {
        /// The sysroot.
        path: PathBuf,
    },
    /// The command does not apply to the device's state.
    #[error("{0}")]
    State(String),
    /// A repository or registry could not be reached, trusted or entered.
    #[error(transparent)]
    Net(#[from] net::NetError),
    /// An update's parts were all applied but did not make its commit.
    #[error("{0}")]
    Incomplete(String),
    /// Another berth command holds a lock this one needs ([`lock`]).
    #[error("{0}")]
    Busy(String),
    /// `/run/berth/boot.json` could not be read.
    #[error("{}: {reason}", path.display())]
    BootJson {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// One deployment, as `status` reports it.
#[derive(Debug, Clone, serde::Serialize)]
#[allow(clippy::struct_excessive_bools)] // the `status --json` contract (DESIGN.md) has these keys
pub struct DeploymentStatus {
    /// Its name (the first 16 hex digits of its commit id).
    pub name: String,
    /// Its commit id, if the store has it.
    pub commit: Option<String>,
    /// Its release version, if the store has the commit.
    pub version: Option<String>,
    /// Whether it is running now.
    pub booted: bool,
    /// Whether it is the default.
    pub default: bool,
    /// Whether it is the trial.
    pub trial: bool,
    /// Whether it is the previous (fallback) deployment.
    pub previous: bool,
    /// Boots the trial has left (trial only).
    pub tries_left: Option<u8>,
    /// `bootable`, `missing` or `no-init`.
    pub state: &'static str,
}

/// The last rollback.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RollbackStatus {
    /// The deployment given up.
    pub from: String,
    /// `tries-exhausted`, `trial-unbootable` or `manual`.
    pub reason: &'static str,
}

/// What `berth status` shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    /// The sysroot.
    pub sysroot: PathBuf,
    /// The record's generation (None without a valid record).
    pub record_generation: Option<u64>,
    /// What each copy of the record holds: `valid`, `invalid`, `missing`.
    pub record_copies: [&'static str; 2],
    /// Deployments: default, trial, previous first, then others on disk.
    pub deployments: Vec<DeploymentStatus>,
    /// The last rollback recorded.
    pub last_rollback: Option<RollbackStatus>,
    /// Why this boot's deployment was chosen, from `/run/berth/boot.json` (with the
    /// trial the boot loader gave up, when it fell back).
    pub boot_reason: Option<String>,
}

/// A device: its sysroot and where berth-init's `boot.json` is.
#[derive(Debug)]
pub struct Device {
    pub(crate) path: PathBuf,
    sysroot: Sysroot,
    boot_json: PathBuf,
    /// How long a command waits for a lock another one holds ([`lock`]).
    lock_wait: std::time::Duration,
    /// The boot partition's directory, when given instead of mounting the partition
    /// that `berth/boot/loader.conf` names.
    boot_dir: Option<PathBuf>,
}

/// How long a command waits for a lock by default.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) fn sys_err(path: &Path) -> impl Fn(sysroot::SysrootError) -> UpdaterError + '_ {
    move |e| UpdaterError::Sysroot {
        path: path.to_path_buf(),
        step: e.step,
        errno: e.errno,
    }
}

impl Device {
    /// Opens the sysroot at `path`; `boot_json` is where berth-init wrote this boot's
    /// report (normally `/run/berth/boot.json`).
    pub fn open(path: &Path, boot_json: &Path) -> Result<Self, UpdaterError> {
        let sysroot = Sysroot::open(path.as_os_str().as_encoded_bytes()).map_err(sys_err(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            sysroot,
            boot_json: boot_json.to_path_buf(),
            lock_wait: LOCK_WAIT,
            boot_dir: None,
        })
    }

    /// How long commands wait for a lock another command holds (default [`LOCK_WAIT`]).
    #[must_use]
    pub fn with_lock_wait(self, wait: std::time::Duration) -> Self {
        Self {
            lock_wait: wait,
            ..self
        }
    }

    /// Works on the boot partition mounted at `dir` instead of mounting the partition
    /// `berth/boot/loader.conf` names.
    #[must_use]
    pub fn with_boot_dir(self, dir: Option<PathBuf>) -> Self {
        Self {
            boot_dir: dir,
            ..self
        }
    }

    /// The sysroot's directory `rel`, opened without following a symlink at any step
    /// ([`dirs`]); `None` if missing, unless `create` gives the mode to make it with.
    pub(crate) fn own_dir(
        &self,
        rel: &str,
        create: Option<u32>,
    ) -> Result<Option<dirs::Dir>, UpdaterError> {
        dirs::Dir::open_root(&self.path)?.sub(rel, create)
    }

    pub(crate) fn record(&self) -> Result<(Record, RecordCopy), UpdaterError> {
        self.sysroot
            .read_record()
            .0
            .ok_or_else(|| UpdaterError::NoRecord {
                path: self.path.clone(),
            })
    }

    /// This boot's report (`boot.json`), if berth-init wrote one.
    pub(crate) fn boot_report(
        &self,
    ) -> Result<Option<format::bootreport::BootReport>, UpdaterError> {
        let bad = |reason: String| UpdaterError::BootJson {
            path: self.boot_json.clone(),
            reason,
        };
        // O_NONBLOCK and a type check: a FIFO or a device in its place is an error, never
        // a read that blocks `berth status` (or a health check) forever.
        let fd = match rustix::fs::open(
            &self.boot_json,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(bad(std::io::Error::from(e).to_string())),
        };
        let file = std::fs::File::from(fd);
        match file.metadata() {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(bad("not a regular file".into())),
            Err(e) => return Err(bad(e.to_string())),
        }
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::Read::take(file, BOOT_JSON_MAX + 1), &mut text)
            .map_err(|e| bad(e.to_string()))?;
        if text.len() as u64 > BOOT_JSON_MAX {
            return Err(bad(format!("longer than {BOOT_JSON_MAX} bytes")));
        }
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
        // The decoder reads every key leniently (format::bootreport), so only a document
        // that is not an object fails it: such a report names nothing.
        if !v.is_object() {
            return Ok(Some(format::bootreport::BootReport::default()));
        }
        <format::bootreport::BootReport as serde::Deserialize>::deserialize(v)
            .map(Some)
            .map_err(|e| bad(format!("not a boot report: {e}")))
    }

    /// The booted deployment and why berth-init chose it, from `boot.json`.
    fn booted(&self) -> Result<Option<(String, String)>, UpdaterError> {
        let Some(report) = self.boot_report()? else {
            return Ok(None);
        };
        // berth-init lists a trial the boot loader gave up among its fallbacks.
        let loader_gave_up = report
            .fallbacks
            .iter()
            .find(|e| e.event == Some(format::bootreport::EventKind::LoaderFellBack))
            .and_then(|e| e.deployment.as_deref());
        Ok(report.deployment().map(|d| {
            let reason = report.reason.as_deref().unwrap_or_default();
            (
                d.to_owned(),
                match loader_gave_up {
                    Some(t) => format!(
                        "{reason}: the boot loader gave up the trial {t} and started this entry"
                    ),
                    None => reason.to_owned(),
                },
            )
        }))
    }

    /// The device's state.
    pub fn status(&self) -> Result<Status, UpdaterError> {
        let (current, copies) = self.sysroot.read_record();
        let record = current.map(|c| c.0);
        let booted = self.booted()?;
        let repo = Repo::open(&self.path.join("berth/repo")).ok();
        let mut names: Vec<DeploymentName> = Vec::new();
        if let Some(r) = &record {
            names.extend([r.default, r.trial, r.previous].into_iter().flatten());
        }
        for d in self.sysroot.deployments(4096) {
            if !names.contains(&d) {
                names.push(d);
            }
        }
        let deployments = names
            .iter()
            .map(|n| {
                let commit = repo.as_ref().and_then(|r| {
                    let id = r.resolve_commit(n.as_str()).ok()?;
                    let (c, _) = r.read_commit(&id).ok()?;
                    Some((id.to_string(), c.version.to_string()))
                });
                let is = |x: Option<DeploymentName>| x.as_ref() == Some(n);
                DeploymentStatus {
                    name: n.as_str().to_owned(),
                    commit: commit.as_ref().map(|c| c.0.clone()),
                    version: commit.map(|c| c.1),
                    booted: booted.as_ref().is_some_and(|b| b.0 == n.as_str()),
                    default: record.is_some_and(|r| is(r.default)),
                    trial: record.is_some_and(|r| is(r.trial)),
                    previous: record.is_some_and(|r| is(r.previous)),
                    tries_left: record.filter(|r| is(r.trial)).map(|r| r.tries_left),
                    state: self.sysroot.probe(n, b"/sbin/init").as_str(),
                }
            })
            .collect();
        let copy = |c: CopyState| match c {
            CopyState::Missing => "missing",
            CopyState::Invalid => "invalid",
            CopyState::Valid(_) => "valid",
        };
        Ok(Status {
            sysroot: self.path.clone(),
            record_generation: record.map(|r| r.generation),
            record_copies: [copy(copies[0]), copy(copies[1])],
            deployments,
            last_rollback: record
                .and_then(|r| r.last_rollback)
                .map(|rb| RollbackStatus {
                    from: rb.from.as_str().to_owned(),
                    reason: rb.reason.as_str(),
                }),
            boot_reason: booted.map(|b| b.1),
        })
    }

    /// Makes `berth/boot/last-good` name `name` (what berth-init boots if both record
    /// copies are ever damaged), unless it does already.
    fn last_good_is(&self, name: &DeploymentName) -> Result<(), UpdaterError> {
        if self.sysroot.last_good().as_ref() == Some(name) {
            return Ok(());
        }
        self.sysroot
            .write_last_good(name)
            .map_err(sys_err(&self.path))
    }

    /// Writes a fresh boot record when neither copy is valid: the booted deployment
    /// (berth-init's report) as the default, else the last good one. Returns what it
    /// did, or `None` if the record was sound.
    pub fn repair_record(&self) -> Result<Option<String>, UpdaterError> {
        let _lock = self.lock(lock::LockKind::Record, "fsck --repair")?;
        if self.sysroot.read_record().0.is_some() {
            return Ok(None);
        }
        let booted = self
            .booted()?
            .and_then(|b| DeploymentName::new(b.0.as_bytes()).ok());
        let Some(default) = booted
            .or_else(|| self.sysroot.last_good())
            .filter(|d| self.sysroot.probe(d, b"/sbin/init") == Bootable::Yes)
        else {
            return Err(UpdaterError::State(format!(
                "{}: no valid boot record, and neither a booted nor a last good deployment to write one for",
                self.path.display()
            )));
        };
        let fresh = Record {
            generation: 0,
            default: Some(default),
            previous: None,
            trial: None,
            tries_left: 0,
            last_rollback: None,
        };
        // Both copies, so the record is redundant again (the second write goes to the
        // other copy, with the next generation).
        let first = self
            .sysroot
            .write_record(None, &fresh)
            .map_err(sys_err(&self.path))?;
        self.sysroot
            .write_record(Some((first, format::record::RecordCopy::A)), &fresh)
            .map_err(sys_err(&self.path))?;
        Ok(Some(format!(
            "wrote a fresh boot record: default {}",
            default.as_str()
        )))
    }

    pub(crate) fn write(
        &self,
        current: &(Record, RecordCopy),
        new: &Record,
    ) -> Result<Record, UpdaterError> {
        self.sysroot
            .write_record(Some(*current), new)
            .map_err(sys_err(&self.path))
    }

    /// Makes the booted trial the default, and the old default the previous deployment.
    pub fn mark_good(&self) -> Result<String, UpdaterError> {
        let _lock = self.lock(lock::LockKind::Record, "mark-good")?;
        let (rec, copy) = self.record()?;
        let booted = self.booted()?.map(|b| b.0);
        let Some(trial) = rec.trial else {
            return match (&booted, rec.default) {
                (Some(b), Some(d)) if b == d.as_str() => {
                    // A retry after a cut between the record and the boot partition's
                    // tidying or the last-good write.
                    self.boot_settle(self.boot_part()?.as_ref(), &rec, false)?;
                    self.last_good_is(&d)?;
                    Ok(format!("{b} is already the default; nothing to do"))
                }
                _ => Err(UpdaterError::State(
                    "there is no trial deployment to mark good".into(),
                )),
            };
        };
        match &booted {
            Some(b) if b == trial.as_str() => {}
            Some(b) => {
                return Err(UpdaterError::State(format!(
                    "the booted deployment {b} is not the trial {}; boot the trial before marking it good",
                    trial.as_str()
                )));
            }
            None => {
                return Err(UpdaterError::State(format!(
                    "{}: cannot tell which deployment is booted, so the trial {} cannot be marked good",
                    self.boot_json.display(),
                    trial.as_str()
                )));
            }
        }
        let new = Record {
            default: Some(trial),
            previous: rec.default,
            trial: None,
            tries_left: 0,
            ..rec
        };
        // The loader boots the new default first before the record says so: a cut in
        // between boots it as the trial it still is.
        let boot = self.boot_part()?;
        if let Some(bp) = &boot {
            self.boot_prepare(bp, &new)?;
        }
        self.write(&(rec, copy), &new)?;
        self.boot_settle(boot.as_ref(), &new, false)?;
        self.last_good_is(&trial)?;
        Ok(format!(
            "{} is now the default; previous: {}",
            trial.as_str(),
            rec.default.as_ref().map_or("none", DeploymentName::as_str)
        ))
    }

    /// Makes the next boot use the previous state: drops a pending trial, or else swaps
    /// the default and the previous deployment.
    ///
    /// With `from`, only a rollback away from that deployment is done: if it is neither
    /// the trial nor the default any more, the rollback already happened and nothing is
    /// written. That makes a retry after a power cut harmless; a plain rollback run
    /// twice rolls back twice.
    pub fn rollback(&self, from: Option<&DeploymentName>) -> Result<String, UpdaterError> {
        let _lock = self.lock(lock::LockKind::Record, "rollback")?;
        let (rec, copy) = self.record()?;
        if let Some(from) = from {
            let current = rec.trial.or(rec.default);
            if current.as_ref() != Some(from) {
                // A retry after a cut between the record and the boot partition's
                // tidying or the last-good write.
                self.boot_settle(self.boot_part()?.as_ref(), &rec, false)?;
                if let Some(d) = rec.default {
                    self.last_good_is(&d)?;
                }
                return Ok(format!(
                    "{} is neither the trial nor the default; nothing to roll back (the next boot uses {})",
                    from.as_str(),
                    current
                        .as_ref()
                        .map_or("no deployment", DeploymentName::as_str)
                ));
            }
        }
        if let Some(trial) = rec.trial {
            let new = Record {
                trial: None,
                tries_left: 0,
                last_rollback: Some(Rollback {
                    from: trial,
                    reason: RollbackReason::Manual,
                }),
                ..rec
            };
            // The trial's entry goes first: a cut before the record is written leaves
            // a trial the loader gave up, which berth-init drops.
            let boot = self.boot_part()?;
            if let Some(bp) = &boot {
                self.boot_prepare(bp, &new)?;
            }
            self.write(&(rec, copy), &new)?;
            self.boot_settle(boot.as_ref(), &new, false)?;
            return Ok(format!(
                "trial {} dropped; the next boot uses {}",
                trial.as_str(),
                rec.default
                    .as_ref()
                    .map_or("no default", DeploymentName::as_str)
            ));
        }
        let (Some(prev), Some(default)) = (rec.previous, rec.default) else {
            return Err(UpdaterError::State(
                "nothing to roll back to: no trial and no previous deployment".into(),
            ));
        };
        let new = Record {
            default: Some(prev),
            previous: Some(default),
            last_rollback: Some(Rollback {
                from: default,
                reason: RollbackReason::Manual,
            }),
            ..rec
        };
        let boot = self.boot_part()?;
        if let Some(bp) = &boot {
            self.boot_prepare(bp, &new)?;
        }
        self.write(&(rec, copy), &new)?;
        self.boot_settle(boot.as_ref(), &new, false)?;
        self.last_good_is(&prev)?;
        Ok(format!(
            "the next boot uses {} (was {})",
            prev.as_str(),
            default.as_str()
        ))
    }

    /// Re-hashes the store and checks the record's deployments; returns the problems.
    pub fn fsck(&self) -> Result<(u64, Vec<String>), UpdaterError> {
        // A reader, but one that must see the store whole: gc or an update beside it
        // would show as objects gone missing mid-check.
        let _lock = self.lock(lock::LockKind::Store, "fsck")?;
        let mut problems = Vec::new();
        let repo = Repo::open(&self.path.join("berth/repo"))?;
        let report = repo.fsck()?;
        problems.extend(
            report
                .corrupt
                .iter()
                .chain(&report.missing)
                .map(ToString::to_string),
        );
        let status = self.status()?;
        for (i, c) in status.record_copies.iter().enumerate() {
            if *c != "valid" {
                problems.push(format!(
                    "boot record copy {}: {c}",
                    if i == 0 { "a" } else { "b" }
                ));
            }
        }
        for d in &status.deployments {
            if (d.default || d.trial || d.previous) && d.state != Bootable::Yes.as_str() {
                problems.push(format!(
                    "deployment {} named by the record is {}",
                    d.name, d.state
                ));
            }
        }
        Ok((report.checked, problems))
    }
}
