//! U-Boot's boot partition (`docs/FORMAT.md`, "Loader state"): `boot.scr`, two state
//! copies (`berth/a/state`, `berth/b/state`, 4096 bytes each, overwritten whole in
//! place, the one that did not win) and one entry directory per deployment
//! (`<name>/vmlinuz`, `initramfs.img`, `cmdline`, `dtb`, and `set`, the kernel set's
//! directory name, which the script ignores).

use format::kernelset;
use format::loader::{LoaderState, STATE_LEN, StateCopy, Trial};
use format::record::{DeploymentName, Record};
use rustix::fd::AsFd as _;
use rustix::fs::{Mode, OFlags};

use super::{
    BootPart, DeployedSet, SET_TMP, Source, copy_file, fail, lost_long_name, made, rename_durably,
    set_complete,
};
use crate::UpdaterError;
use crate::dirs::Dir;

/// The directory holding the state copies: not an entry.
const STATE_DIR: &str = "berth";
/// The file in an entry directory naming its kernel set.
const SET_FILE: &str = "set";
/// The longest `cmdline` the script reads (0xfff bytes into a zeroed 4 KiB buffer).
const CMDLINE_MAX: usize = 0xfff;

impl BootPart {
    /// The state copy that wins (the valid one with the higher generation, A on a tie).
    /// Neither valid is an error naming both: the loader would boot nothing.
    pub(super) fn ub_state(&self) -> Result<(StateCopy, LoaderState), UpdaterError> {
        let read = |c: StateCopy| -> Result<Option<LoaderState>, UpdaterError> {
            let (dir, file) = c.path().rsplit_once('/').unwrap_or(("", c.path()));
            let Some(d) = self.root.sub(dir, None)? else {
                return Ok(None);
            };
            Ok(d.read(file, STATE_LEN as u64 + 1)
                .ok()
                .flatten()
                .and_then(|b| LoaderState::decode(&b).ok()))
        };
        let (a, b) = (read(StateCopy::A)?, read(StateCopy::B)?);
        format::loader::winner(a.as_ref(), b.as_ref()).ok_or_else(|| {
            fail(
                self.path(),
                "no valid loader state (berth/a/state and berth/b/state are missing or damaged)",
            )
        })
    }

    /// Writes the state (`default`, `previous`, `trial`) with the next generation over
    /// the copy that did not win: the whole 4096 bytes in place, then fsync. Nothing is
    /// written when the winner says the same already.
    pub(super) fn ub_write_state(
        &self,
        default: DeploymentName,
        previous: Option<DeploymentName>,
        trial: Option<Trial>,
    ) -> Result<(), UpdaterError> {
        let (won, current) = self.ub_state()?;
        let previous = previous.filter(|p| *p != default);
        if (current.default, current.previous, current.trial) == (default, previous, trial) {
            return Ok(());
        }
        let next = LoaderState {
            generation: current.generation.saturating_add(1),
            default,
            previous,
            trial,
        };
        let bytes = next
            .encode()
            .map_err(|e| fail(self.path(), format!("encode the loader state: {e}")))?;
        let copy = won.other();
        let (dir, file) = copy.path().rsplit_once('/').unwrap_or(("", copy.path()));
        let d = made(&self.root, dir)?;
        // Over the pre-allocated file, whole: no new file, no new cluster for U-Boot to
        // trip on. A copy that is missing or the wrong size is made again (a repair).
        let whole = d.file_len(file)? == STATE_LEN as u64;
        let flags = if whole {
            OFlags::WRONLY
        } else {
            OFlags::WRONLY | OFlags::TRUNC
        };
        let fd = fsop::create(d.fd(), file, flags, Mode::from_raw_mode(0o644))
            .map_err(|e| fail(&d.join(file), format!("open: {e}")))?;
        fsop::write_all(fd.as_fd(), &bytes)
            .and_then(|()| fsop::fsync(fd.as_fd()))
            .map_err(|e| fail(&d.join(file), format!("write: {e}")))?;
        drop(fd);
        if !whole {
            d.sync()?;
        }
        Ok(())
    }

    /// The kernel set directory name recorded in `name`'s entry, if it has one.
    pub(super) fn ub_entry_set(
        &self,
        name: &DeploymentName,
    ) -> Result<Option<String>, UpdaterError> {
        let Some(d) = self.root.sub(name.as_str(), None)? else {
            return Ok(None);
        };
        Ok(d.read(SET_FILE, 64)?
            .map(|b| String::from_utf8_lossy(&b).trim().to_owned()))
    }

    /// Writes `name`'s entry directory unless it is there, complete: into
    /// `.tmp-<name>`, every file fsynced, then renamed.
    pub(super) fn ub_ensure_entry(
        &self,
        name: &DeploymentName,
        deployed: &DeployedSet,
        src: &Dir,
    ) -> Result<(), UpdaterError> {
        if let Some(there) = self.root.sub(name.as_str(), None)? {
            if set_complete(src, &there, &[kernelset::KERNEL, kernelset::INITRAMFS])?
                && there.file_len(SET_FILE)? > 0
            {
                return Ok(());
            }
            // A rename cut short ([`super::rename_durably`]): the state names no entry
            // before it is complete.
            self.root.remove(name.as_str().as_bytes())?;
            self.root.sync()?;
        }
        let cmdline = self.config.kernel_cmdline(&deployed.set.kargs);
        if cmdline.len() > CMDLINE_MAX {
            return Err(fail(
                self.path(),
                format!(
                    "deployment {}: the kernel command line is {} bytes, over the boot script's {CMDLINE_MAX}",
                    name.as_str(),
                    cmdline.len()
                ),
            ));
        }
        let tmp = format!("{SET_TMP}{}", name.as_str());
        self.root.remove(tmp.as_bytes())?;
        let t = made(&self.root, &tmp)?;
        for f in [kernelset::KERNEL, kernelset::INITRAMFS] {
            copy_file(src, f, &t)?;
        }
        if let Some(dt) = &self.config.devicetree {
            let (sub, file) = dt.rsplit_once('/').unwrap_or(("", dt));
            let dir = src
                .sub(&format!("{}/{sub}", kernelset::DTB_DIR), None)?
                .ok_or_else(|| fail(&src.join(kernelset::DTB_DIR), "missing"))?;
            copy_file(&dir, file, &t)?;
            rename_durably(&t, file, "dtb", false)?;
        }
        for (file, text) in [
            ("cmdline", cmdline.as_str()),
            (SET_FILE, deployed.set.dir_name().as_str()),
        ] {
            let fd = fsop::create(
                t.fd(),
                file,
                OFlags::WRONLY | OFlags::TRUNC,
                Mode::from_raw_mode(0o644),
            )
            .map_err(|e| fail(&t.join(file), format!("create: {e}")))?;
            fsop::write_all(fd.as_fd(), text.as_bytes())
                .and_then(|()| fsop::fsync(fd.as_fd()))
                .map_err(|e| fail(&t.join(file), format!("write: {e}")))?;
        }
        t.sync()?;
        rename_durably(&self.root, &tmp, name.as_str(), true)
    }

    /// Removes the entry directories of deployments not in `keep`, interrupted copies,
    /// and an entry directory's short name whose long name a cut lost
    /// ([`super::lost_long_name`]: a directory that is empty, as a rename's new name
    /// before its clusters, or holds an entry's `set`; the partition's root is shared
    /// with the firmware's files, which are left alone). Returns what it removed.
    pub(super) fn ub_tidy(&self, keep: &[DeploymentName]) -> Result<Vec<String>, UpdaterError> {
        let mut gone = Vec::new();
        for n in self.root.names()? {
            let name = String::from_utf8_lossy(&n).into_owned();
            let entry = DeploymentName::new(&n)
                .ok()
                .filter(|d| name != STATE_DIR && !keep.contains(d))
                .is_some_and(|d| matches!(self.root.sub(d.as_str(), None), Ok(Some(_))));
            let alias = lost_long_name(&name)
                && match self.root.sub(&name, None) {
                    Ok(Some(d)) => d.names()?.is_empty() || d.file_len(SET_FILE)? > 0,
                    _ => false,
                };
            if entry || alias || name.starts_with(SET_TMP) {
                self.root.remove(&n)?;
                gone.push(name);
            }
        }
        if !gone.is_empty() {
            self.root.sync()?;
        }
        Ok(gone)
    }

    /// The deployments a tidy keeps: the record's and the state's.
    pub(super) fn ub_keep(&self, rec: &Record) -> Result<Vec<DeploymentName>, UpdaterError> {
        let (_, st) = self.ub_state()?;
        Ok([
            rec.default,
            rec.previous,
            rec.trial,
            Some(st.default),
            st.previous,
            st.trial.map(|t| t.entry),
        ]
        .into_iter()
        .flatten()
        .collect())
    }

    /// Before an update's record names `trial`: ends a trial the state still holds,
    /// removes entries of deployments neither record names, and, if `trial`'s kernel set
    /// is not the default's, writes its entry directory (inert until the state names
    /// it). Returns whether the loader counts the trial.
    pub(super) fn ub_stage_trial(
        &self,
        trial: &DeploymentName,
        deployed: &DeployedSet,
        src: &Dir,
        new: &Record,
    ) -> Result<bool, UpdaterError> {
        let (_, st) = self.ub_state()?;
        if st.trial.is_some() {
            self.ub_write_state(st.default, st.previous, None)?;
        }
        let mut keep: Vec<DeploymentName> = [new.default, new.previous, Some(*trial)]
            .into_iter()
            .flatten()
            .collect();
        keep.extend([Some(st.default), st.previous].into_iter().flatten());
        self.ub_tidy(&keep)?;
        let default_set = match new.default {
            Some(d) => self.ub_entry_set(&d)?,
            None => None,
        };
        if default_set.as_deref() == Some(deployed.set.dir_name().as_str()) {
            return Ok(false);
        }
        self.ub_ensure_entry(trial, deployed, src)?;
        Ok(true)
    }

    /// Before a record with no trial (`new`): the entries of its default and previous
    /// deployments are there, and the state names them, without a trial.
    pub(super) fn ub_prepare(&self, new: &Record, source: Source<'_>) -> Result<(), UpdaterError> {
        let Some(default) = new.default else {
            return Ok(());
        };
        let mut previous = None;
        for (name, required) in [(default, true), (new.previous.unwrap_or(default), false)] {
            // Made, or checked complete (a rename cut short leaves it empty).
            let present = self.root.sub(name.as_str(), None)?.is_some();
            match source(&name)? {
                Some((deployed, src)) => self.ub_ensure_entry(&name, &deployed, &src)?,
                None if present => {}
                None if required => {
                    return Err(UpdaterError::State(format!(
                        "deployment {}: its commit carries no kernel set, so the loader cannot boot it",
                        name.as_str()
                    )));
                }
                None => continue,
            }
            if !required {
                previous = Some(name);
            }
        }
        self.ub_write_state(default, previous, None)
    }
}
