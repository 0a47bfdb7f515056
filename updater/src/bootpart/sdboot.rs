//! systemd-boot's ESP (`format::bls`): kernel sets under `berth/<id16>/`, entries in
//! `loader/entries/` ordered by generation, counted by the loader while on trial.

use format::bls::{self, EntryName, EntryText};
use format::kernelset::{self, KernelSet};
use format::record::{DeploymentName, Record};
use rustix::fd::AsFd as _;
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use super::{
    BootPart, DeployedSet, ENTRY_TMP, OnDisk, SET_TMP, SETS_DIR, Source, copy_dir, copy_file, fail,
    lost_long_name, made, rename_durably, set_complete,
};
use crate::UpdaterError;
use crate::dirs::Dir;

impl BootPart {
    fn entries_dir(&self) -> Result<Dir, UpdaterError> {
        made(&self.root, bls::ENTRIES_DIR)
    }

    fn sets_dir(&self) -> Result<Dir, UpdaterError> {
        made(&self.root, SETS_DIR)
    }

    /// Berth's entries, in the order systemd-boot boots them. An empty entry (a rename
    /// cut short, [`super::rename_durably`]) is not one: systemd-boot skips an entry with
    /// no `linux` line, and [`BootPart::remove_entries`] removes it.
    pub(super) fn entries(&self) -> Result<Vec<OnDisk>, UpdaterError> {
        let dir = self.entries_dir()?;
        let names: Vec<String> = dir
            .names()?
            .into_iter()
            .filter_map(|n| String::from_utf8(n).ok())
            .collect();
        let mut out = Vec::new();
        for name in bls::parse_dir(names.iter().map(String::as_str)) {
            let text = dir.read(&name.file_name(), bls::ENTRY_MAX as u64)?;
            if text.as_ref().is_some_and(Vec::is_empty) {
                continue;
            }
            let set_dir =
                text.and_then(|t| bls::set_dir_of(&String::from_utf8_lossy(&t)).map(str::to_owned));
            out.push(OnDisk { name, set_dir });
        }
        Ok(out)
    }

    /// The entry the loader boots first, if any.
    pub(super) fn first(&self) -> Result<Option<OnDisk>, UpdaterError> {
        Ok(self.entries()?.into_iter().next())
    }

    /// The next entry generation: above every active entry's. An inert entry (left by
    /// an interrupted command) does not count: its name is reused, so a retry ends
    /// exactly where an uninterrupted run does.
    fn next_generation(&self) -> Result<u64, UpdaterError> {
        Ok(self
            .entries()?
            .iter()
            .map(|e| e.name.generation)
            .max()
            .unwrap_or(0)
            + 1)
    }

    /// Whether `set` is on the partition already.
    pub(super) fn has_set(&self, set: &KernelSet) -> Result<bool, UpdaterError> {
        Ok(self.sets_dir()?.sub(&set.dir_name(), None)?.is_some())
    }

    /// Copies `set` from `src` (its directory in a checkout) to `berth/<id16>` unless it
    /// is there, complete: into `berth/.tmp-<id16>`, every file fsynced, then renamed.
    pub(super) fn ensure_set(&self, set: &KernelSet, src: &Dir) -> Result<String, UpdaterError> {
        let sets = self.sets_dir()?;
        let name = set.dir_name();
        let dir_path = format!("{SETS_DIR}/{name}");
        if let Some(there) = sets.sub(&name, None)? {
            if set_complete(src, &there, &[kernelset::KERNEL, kernelset::INITRAMFS])? {
                return Ok(dir_path);
            }
            // A rename cut short: no entry can name it yet (entries are written after
            // their set).
            sets.remove(name.as_bytes())?;
            sets.sync()?;
        }
        let tmp = format!("{SET_TMP}{name}");
        sets.remove(tmp.as_bytes())?;
        let t = made(&sets, &tmp)?;
        for f in [kernelset::KERNEL, kernelset::INITRAMFS] {
            copy_file(src, f, &t)?;
        }
        if let Some(dtb) = src.sub(kernelset::DTB_DIR, None)? {
            let to = made(&t, kernelset::DTB_DIR)?;
            copy_dir(&dtb, &to)?;
        }
        t.sync()?;
        rename_durably(&sets, &tmp, &name, true)?;
        Ok(dir_path)
    }

    /// Writes entry `name` for `text`: under a temporary name, fsynced, then (if
    /// `active`) renamed to its `.conf` name and the directory fsynced.
    pub(super) fn write_entry(
        &self,
        name: &EntryName,
        text: &str,
        active: bool,
    ) -> Result<(), UpdaterError> {
        let dir = self.entries_dir()?;
        let file = name.file_name();
        let tmp = format!("{file}{ENTRY_TMP}");
        let fd = fsop::create(
            dir.fd(),
            tmp.as_str(),
            OFlags::WRONLY | OFlags::TRUNC,
            Mode::from_raw_mode(0o644),
        )
        .map_err(|e| fail(&dir.join(&tmp), format!("create: {e}")))?;
        fsop::write_all(fd.as_fd(), text.as_bytes())
            .and_then(|()| fsop::fsync(fd.as_fd()))
            .map_err(|e| fail(&dir.join(&tmp), format!("write: {e}")))?;
        drop(fd);
        dir.sync()?;
        if active {
            self.activate(name)?;
        }
        Ok(())
    }

    /// Renames the inert entry `name` (written by [`BootPart::write_entry`]) to its
    /// `.conf` name: from now on the loader sees it.
    pub(super) fn activate(&self, name: &EntryName) -> Result<(), UpdaterError> {
        let dir = self.entries_dir()?;
        let file = name.file_name();
        rename_durably(&dir, &format!("{file}{ENTRY_TMP}"), &file, false)
    }

    /// Blesses the counted entry `counted`: its text under the uncounted name (written
    /// as every entry is, [`BootPart::write_entry`]), then the counted one removed. Not
    /// a rename: on FAT a rename cut short leaves the new name empty and the old one
    /// gone ([`super::rename_durably`]), and the loader would have no entry for the
    /// trial; this way it boots the counted one or the blessed one, both the trial's.
    pub(super) fn bless(&self, counted: &EntryName) -> Result<(), UpdaterError> {
        let dir = self.entries_dir()?;
        let file = counted.file_name();
        let text = dir
            .read(&file, bls::ENTRY_MAX as u64)?
            .ok_or_else(|| fail(&dir.join(&file), "missing"))?;
        let text = String::from_utf8(text).map_err(|_| fail(&dir.join(&file), "is not UTF-8"))?;
        self.write_entry(&counted.blessed(), &text, true)?;
        self.remove_entries(&[*counted])?;
        Ok(())
    }

    /// Removes the entries `remove` (and every inert or empty one, and the short name of
    /// one whose long name a cut lost, [`super::lost_long_name`]), durably; returns
    /// their names.
    pub(super) fn remove_entries(&self, remove: &[EntryName]) -> Result<Vec<String>, UpdaterError> {
        let dir = self.entries_dir()?;
        let mut gone: Vec<String> = remove.iter().map(EntryName::file_name).collect();
        for n in dir.names()? {
            let n = String::from_utf8_lossy(&n).into_owned();
            let empty = || {
                EntryName::parse(&n).is_some()
                    && dir
                        .read(&n, 0)
                        .is_ok_and(|t| t.is_some_and(|t| t.is_empty()))
            };
            let alias = n.to_ascii_lowercase().starts_with(bls::PREFIX) && lost_long_name(&n);
            if (alias || n.starts_with(bls::PREFIX) && (n.ends_with(ENTRY_TMP) || empty()))
                && !gone.contains(&n)
            {
                gone.push(n);
            }
        }
        if gone.is_empty() {
            return Ok(gone);
        }
        for n in &gone {
            match fsop::unlinkat(dir.fd(), n.as_str(), AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(fail(&dir.join(n), format!("remove: {e}"))),
            }
        }
        dir.sync()?;
        Ok(gone)
    }

    /// Writes a new active entry for deployment `name` booting `set` (copied first if
    /// missing), newer than every other entry.
    pub(super) fn add_entry(
        &self,
        name: &DeploymentName,
        deployed: &DeployedSet,
        src: &Dir,
        counter: Option<(u32, Option<u32>)>,
        active: bool,
    ) -> Result<EntryName, UpdaterError> {
        let set_dir = self.ensure_set(&deployed.set, src)?;
        let entry = EntryName {
            generation: self.next_generation()?,
            deployment: *name,
            counter,
        };
        let options = self.config.kernel_cmdline(&deployed.set.kargs);
        let text = EntryText {
            release: &deployed.release,
            deployment: name.as_str(),
            generation: entry.generation,
            set_dir: &set_dir,
            devicetree: self.config.devicetree.as_deref(),
            options: &options,
        }
        .render();
        self.write_entry(&entry, &text, active)?;
        Ok(entry)
    }

    /// Removes what no deployment of `rec` boots: entries of other deployments, every
    /// entry of a deployment but its first in boot order, inert entries, kernel sets no
    /// remaining entry names, and interrupted copies and renames (a `berth/` directory
    /// whose long name a cut lost, [`super::lost_long_name`]). Returns (entries, sets)
    /// removed.
    pub(super) fn tidy(
        &self,
        rec: &Record,
        sets_too: bool,
    ) -> Result<(Vec<String>, Vec<String>), UpdaterError> {
        let keep: Vec<DeploymentName> = [rec.default, rec.previous, rec.trial]
            .into_iter()
            .flatten()
            .collect();
        let mut seen: Vec<DeploymentName> = Vec::new();
        let mut remove = Vec::new();
        let mut kept_sets: Vec<String> = Vec::new();
        // A kept entry whose kernel set cannot be told: no set is removed (fail closed).
        let mut unknown_set = None;
        for e in self.entries()? {
            let d = e.name.deployment;
            if keep.contains(&d) && !seen.contains(&d) {
                seen.push(d);
                match &e.set_dir {
                    Some(dir) => kept_sets.push(dir.clone()),
                    None => unknown_set = Some(e.name.file_name()),
                }
            } else {
                remove.push(e.name);
            }
        }
        let entries = self.remove_entries(&remove)?;
        let mut sets = Vec::new();
        if sets_too && let Some(file) = unknown_set {
            return Err(fail(
                &self.entries_dir()?.join(&file),
                "names no kernel set (berth/<id16>/vmlinuz); no kernel set is removed until it is repaired",
            ));
        }
        if sets_too {
            let dir = self.sets_dir()?;
            for n in dir.names()? {
                let n = String::from_utf8_lossy(&n).into_owned();
                let path = format!("{SETS_DIR}/{n}");
                let is_set = n.len() == 16 && n.bytes().all(|b| b.is_ascii_hexdigit());
                if (is_set && !kept_sets.contains(&path))
                    || n.starts_with(SET_TMP)
                    || lost_long_name(&n)
                {
                    dir.remove(n.as_bytes())?;
                    sets.push(path);
                }
            }
            if !sets.is_empty() {
                dir.sync()?;
            }
        }
        Ok((entries, sets))
    }
}

impl BootPart {
    /// Before an update's record names `trial`: removes every entry of a deployment the
    /// new record does not name, and every old entry of `trial`; then, if `trial`'s
    /// kernel set is not the default's, copies it and writes its counted entry, inert.
    /// Returns that entry, to be activated once the record is written.
    pub(super) fn sd_stage_trial(
        &self,
        trial: &DeploymentName,
        deployed: &DeployedSet,
        src: &Dir,
        new: &Record,
        tries: u8,
    ) -> Result<Option<EntryName>, UpdaterError> {
        let entries = self.entries()?;
        let stale: Vec<EntryName> = entries
            .iter()
            .filter(|e| {
                e.name.deployment == *trial
                    || ![new.default, new.previous].contains(&Some(e.name.deployment))
            })
            .map(|e| e.name)
            .collect();
        self.remove_entries(&stale)?;
        let default_set = new.default.and_then(|d| {
            entries
                .iter()
                .find(|e| e.name.deployment == d)
                .and_then(|e| e.set_dir.clone())
        });
        let set_dir = format!("{SETS_DIR}/{}", deployed.set.dir_name());
        if default_set.as_deref() == Some(set_dir.as_str()) {
            // Only the root filesystem changes: the default's entry boots it, and
            // berth-init counts its tries.
            return Ok(None);
        }
        let entry = self.add_entry(trial, deployed, src, Some((u32::from(tries), None)), false)?;
        Ok(Some(entry))
    }

    /// Before a record with no trial (`new`): removes the entries of deployments it does
    /// not name, then makes `new.default`'s entry the one the loader boots first,
    /// uncounted: blesses its counted entry if that is first, else writes a new one.
    pub(super) fn sd_prepare(&self, new: &Record, source: Source<'_>) -> Result<(), UpdaterError> {
        self.tidy(new, false)?;
        let Some(name) = new.default else {
            return Ok(());
        };
        if let Some(first) = self.first()?
            && first.name.deployment == name
            && first.name.tries_left() != Some(0)
        {
            if first.name.counter.is_some() {
                self.bless(&first.name)?;
            }
            return Ok(());
        }
        let (deployed, src) = source(&name)?.ok_or_else(|| {
            UpdaterError::State(format!(
                "deployment {}: its commit carries no kernel set, so the loader cannot boot it",
                name.as_str()
            ))
        })?;
        self.add_entry(&name, &deployed, &src, None, true)?;
        Ok(())
    }
}
