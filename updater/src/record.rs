//! The commands that change the boot record by hand or from a health check:
//! `berth mark-good`, `berth rollback`, and `berth fsck --repair`'s fresh record.
//! Each writes the copy that did not win (through `sysroot`), with the boot
//! partition's entries made ready before and tidied after, on a loader board.

use format::record::{DeploymentName, Record, RecordCopy, Rollback, RollbackReason};
use sysroot::Bootable;

use crate::{Device, UpdaterError, lock, sys_err};

impl Device {
    /// Writes `new` over `current` with the boot partition kept in step: what the
    /// loader must boot first is made ready before the record (`boot_prepare`), what
    /// the record no longer names is tidied after (`boot_settle`).
    fn flip(&self, current: &(Record, RecordCopy), new: &Record) -> Result<(), UpdaterError> {
        let boot = self.boot_part()?;
        if let Some(bp) = &boot {
            self.boot_prepare(bp, new)?;
        }
        self.write(current, new)?;
        self.boot_settle(boot.as_ref(), new, false)?;
        Ok(())
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
        self.flip(&(rec, copy), &new)?;
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
            self.flip(&(rec, copy), &new)?;
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
        self.flip(&(rec, copy), &new)?;
        self.last_good_is(&prev)?;
        Ok(format!(
            "the next boot uses {} (was {})",
            prev.as_str(),
            default.as_str()
        ))
    }
}
