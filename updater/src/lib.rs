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

pub mod agent;
mod apply;
mod bootpart;
mod channel;
mod checks;
pub mod deadline;
pub mod deflate;
mod dirs;
mod error;
pub mod fetch;
pub mod gc;
pub mod health;
mod install;
mod keys;
pub mod lock;
pub mod oci;
mod part;
pub mod policy;
pub mod progress;
mod pull;
mod record;
mod remote;
pub mod repair;
mod source;
mod status;
pub use net::tls;
pub mod update;

pub(crate) use error::sys_err;
pub use error::{Refusal, UpdaterError};
pub use status::{CopyStatus, DeploymentStatus, RollbackStatus, Status};

use format::record::{DeploymentName, Record, RecordCopy};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use sysroot::Sysroot;

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

    /// The running deployment: the booted one (berth-init's report), else the default.
    /// Its version is the floor and its /etc is carried forward; the keys are the
    /// default's ([`Device::trusted_keys`]).
    pub(crate) fn running(&self, rec: &Record) -> Result<DeploymentName, UpdaterError> {
        let booted = self
            .booted()?
            .and_then(|b| DeploymentName::new(b.0.as_bytes()).ok());
        booted.or(rec.default).ok_or_else(|| {
            UpdaterError::State(
                "the boot record has no default deployment and nothing is booted".into(),
            )
        })
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
}
