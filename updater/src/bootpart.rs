//! The boot partition of a board whose loader boots the deployments' own kernel sets
//! (`berth/boot/loader.conf`, written by `berth-image disk`): what `berth update`,
//! `mark-good`, `rollback` and `gc` change there, and in which order relative to the
//! boot record, so that a power cut at any write leaves a device that boots
//! (`docs/FORMAT.md`, "Loader entries (systemd-boot)").
//!
//! The partition is FAT. Files are never rewritten in place: a kernel set is copied to
//! a temporary directory, made durable and renamed to `berth/<id16>`; an entry is
//! written under a temporary name, made durable and renamed to its `.conf` name; the
//! order systemd-boot boots entries in comes from their generations, so a change of
//! order is a new entry beside the old one, and the old one is removed once the record
//! agrees. Every change happens under the record lock.
//!
//! The rules, for a record (default D, previous P, trial T):
//! - T's own entry exists only when T's kernel set differs from D's (the loader counts
//!   T's tries: `+N`, and `berth/boot/loader-trial` names T). It is written inert
//!   before the record names T, and activated (renamed to `.conf`) after.
//! - A trial whose set is D's has no entry of its own: the loader boots D's entry and
//!   berth-init counts the trial, as on boards without a loader.
//! - Before a record names a new default, the newest entry with tries left is the new
//!   default's (blessed, or written anew), so the loader and berth-init agree on every
//!   boot in between; entries of deployments the record no longer names go after.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use format::bls::{self, EntryName, EntryText};
use format::bootconf::{BootConfig, Loader};
use format::kernelset::{self, KernelSet};
use format::record::{DeploymentName, Record};
use rustix::fd::AsFd as _;
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;
use store::Repo;

use crate::dirs::Dir;
use crate::{Device, UpdaterError};

/// Where `berth` mounts the boot partition while it works on it.
const MOUNT_POINT: &str = "/run/berth/boot-partition";
/// Kernel sets on the partition, one directory each.
const SETS_DIR: &str = "berth";
/// The prefix of a kernel set being copied (`berth/.tmp-<id16>`).
const SET_TMP: &str = ".tmp-";
/// The suffix of an entry not yet active (systemd-boot reads only `*.conf`).
const ENTRY_TMP: &str = ".tmp";

/// One line naming the boot partition's path and what went wrong.
fn fail(path: &Path, what: impl std::fmt::Display) -> UpdaterError {
    UpdaterError::State(format!("{}: {what}", path.display()))
}

/// The boot partition, open (and mounted by `berth` unless it was given a directory).
#[derive(Debug)]
pub(crate) struct BootPart {
    pub(crate) config: BootConfig,
    root: Dir,
    _mount: Option<Mounted>,
}

/// Unmounts the boot partition when dropped.
#[derive(Debug)]
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        // The writes were fsynced one by one; a failed unmount (something else opened
        // the mount meanwhile) leaves a harmless mount behind.
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

/// A kernel set of a deployment checked out in the sysroot.
#[derive(Debug)]
pub(crate) struct DeployedSet {
    pub(crate) set: KernelSet,
    /// The release version, for the entry's title.
    pub(crate) release: String,
}

impl Device {
    /// The loader configuration (`berth/boot/loader.conf`); `None` on a board without a
    /// boot partition (QEMU's direct kernel boot). A file that is there but cannot be
    /// read or parsed is an error: the update would otherwise leave the loader behind.
    pub(crate) fn boot_config(&self) -> Result<Option<BootConfig>, UpdaterError> {
        let Some(boot) = self.own_dir(sysroot::BOOT_DIR, None)? else {
            return Ok(None);
        };
        let Some(bytes) = boot.read("loader.conf", format::bootconf::MAX as u64)? else {
            return Ok(None);
        };
        BootConfig::decode(&bytes)
            .map(Some)
            .map_err(|e| fail(&boot.join("loader.conf"), e))
    }

    /// The boot partition, when the board has one: the directory given with
    /// `--boot-dir`, else the partition named by `loader.conf`, mounted at
    /// `/run/berth/boot-partition` until the returned value is dropped.
    pub(crate) fn boot_part(&self) -> Result<Option<BootPart>, UpdaterError> {
        let Some(config) = self.boot_config()? else {
            return Ok(None);
        };
        if config.loader != Loader::SystemdBoot {
            return Err(UpdaterError::State(format!(
                "{}: loader {}: berth does not write its boot partition yet",
                self.path.join(format::bootconf::PATH).display(),
                config.loader.as_str()
            )));
        }
        let (root, mount) = if let Some(dir) = &self.boot_dir {
            (Dir::open_root(dir)?, None)
        } else {
            let at = mount_boot_partition(&config.partuuid)?;
            (Dir::open_root(&at.0)?, Some(at))
        };
        Ok(Some(BootPart {
            config,
            root,
            _mount: mount,
        }))
    }

    /// The directory of `name`'s kernel set in its checkout.
    fn set_source(&self, name: &DeploymentName, set: &KernelSet) -> Result<Dir, UpdaterError> {
        let rel = format!(
            "{}/{}/{}/{}",
            sysroot::DEPLOY_DIR,
            name.as_str(),
            kernelset::MODULES_DIR,
            set.version
        );
        self.own_dir(&rel, None)?.ok_or_else(|| {
            UpdaterError::State(format!(
                "{}: missing: the deployment's kernel set is not checked out",
                self.path.join(&rel).display()
            ))
        })
    }
}

/// The kernel set deployment `name` carries, from its commit in the store.
pub(crate) fn deployed_set(
    repo: &Repo,
    name: &DeploymentName,
) -> Result<Option<DeployedSet>, UpdaterError> {
    let id = repo.resolve_commit(name.as_str())?;
    let (commit, _) = repo.read_commit(&id)?;
    Ok(
        store::kernelset::find(repo, &commit.root)?.map(|set| DeployedSet {
            set,
            release: commit.version.to_string(),
        }),
    )
}

/// Finds the partition whose GPT PARTUUID is `partuuid` and mounts it (vfat).
fn mount_boot_partition(partuuid: &str) -> Result<Mounted, UpdaterError> {
    let dev = find_partition(partuuid)?;
    let at = PathBuf::from(MOUNT_POINT);
    std::fs::create_dir_all(&at).map_err(|e| fail(&at, format!("create: {e}")))?;
    rustix::mount::mount(
        dev.as_path(),
        at.as_path(),
        "vfat",
        rustix::mount::MountFlags::NOSUID
            | rustix::mount::MountFlags::NODEV
            | rustix::mount::MountFlags::NOEXEC,
        c"",
    )
    .map_err(|e| {
        let hint = if e == Errno::NODEV {
            " (the kernel has no vfat: the board's initramfs must load vfat, nls_cp437 and nls_ascii)"
        } else {
            ""
        };
        fail(&dev, format!("mount the boot partition on {MOUNT_POINT}: {e}{hint}"))
    })?;
    Ok(Mounted(at))
}

/// `/dev/<name>` of the partition with GPT PARTUUID `partuuid`, from `/sys/class/block`.
fn find_partition(partuuid: &str) -> Result<PathBuf, UpdaterError> {
    let class = Path::new("/sys/class/block");
    let entries = std::fs::read_dir(class).map_err(|e| fail(class, format!("read: {e}")))?;
    for e in entries.flatten() {
        let sys = e.path();
        if partuuid_of(&sys).is_some_and(|u| u.eq_ignore_ascii_case(partuuid)) {
            return Ok(Path::new("/dev").join(e.file_name()));
        }
    }
    Err(UpdaterError::State(format!(
        "no partition with PARTUUID {partuuid} (the boot partition named by {})",
        format::bootconf::PATH
    )))
}

/// The GPT PARTUUID of the partition whose sysfs directory is `sys`.
fn partuuid_of(sys: &Path) -> Option<String> {
    let read = |p: PathBuf| std::fs::read_to_string(p).ok();
    let index: u64 = read(sys.join("partition"))?.trim().parse().ok()?;
    let disk_sys = sys.join("..");
    let uevent = read(disk_sys.join("uevent"))?;
    let devname = uevent.lines().find_map(|l| l.strip_prefix("DEVNAME="))?;
    let lbs: u64 = read(disk_sys.join("queue/logical_block_size"))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(512);
    let disk = std::fs::File::open(Path::new("/dev").join(devname)).ok()?;
    let pread =
        |off: u64, buf: &mut [u8]| std::os::unix::fs::FileExt::read_exact_at(&disk, buf, off).ok();
    let mut h = [0u8; 92];
    pread(lbs, &mut h)?;
    let header = format::probe::gpt_header(&h)?;
    let i = index.checked_sub(1)?;
    if i >= u64::from(header.count) {
        return None;
    }
    let mut entry = [0u8; 128];
    pread(
        header.entries_lba.checked_mul(lbs)? + i * u64::from(header.entry_size),
        &mut entry,
    )?;
    let u = format::probe::gpt_entry_partuuid(&entry)?;
    Some(String::from_utf8_lossy(&u).into_owned())
}

/// What an entry on the partition is: its parsed name and the set directory it boots.
#[derive(Debug, Clone)]
pub(crate) struct OnDisk {
    pub(crate) name: EntryName,
    pub(crate) set_dir: Option<String>,
}

impl BootPart {
    fn entries_dir(&self) -> Result<Dir, UpdaterError> {
        made(&self.root, bls::ENTRIES_DIR)
    }

    fn sets_dir(&self) -> Result<Dir, UpdaterError> {
        made(&self.root, SETS_DIR)
    }

    /// Berth's entries, in the order systemd-boot boots them.
    pub(crate) fn entries(&self) -> Result<Vec<OnDisk>, UpdaterError> {
        let dir = self.entries_dir()?;
        let names: Vec<String> = dir
            .names()?
            .into_iter()
            .filter_map(|n| String::from_utf8(n).ok())
            .collect();
        bls::parse_dir(names.iter().map(String::as_str))
            .into_iter()
            .map(|name| {
                let text = dir.read(&name.file_name(), bls::ENTRY_MAX as u64)?;
                let set_dir = text
                    .and_then(|t| bls::set_dir_of(&String::from_utf8_lossy(&t)).map(str::to_owned));
                Ok(OnDisk { name, set_dir })
            })
            .collect()
    }

    /// The entry the loader boots first, if any.
    pub(crate) fn first(&self) -> Result<Option<OnDisk>, UpdaterError> {
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

    /// The bytes a kernel set of files `sizes` needs on the partition (each file rounded
    /// up to the cluster), and the bytes free there.
    pub(crate) fn space(&self, sizes: &[u64]) -> Result<(u64, u64), UpdaterError> {
        let vfs = rustix::fs::fstatvfs(self.root.fd())
            .map_err(|e| fail(self.root.path(), format!("statvfs: {e}")))?;
        let cluster = vfs.f_bsize.max(512);
        let need = sizes
            .iter()
            .map(|s| s.div_ceil(cluster) * cluster)
            .sum::<u64>()
            // The set's directories and an entry.
            + 4 * cluster;
        Ok((need, vfs.f_bavail.saturating_mul(vfs.f_frsize)))
    }

    /// Whether `set` is on the partition already.
    pub(crate) fn has_set(&self, set: &KernelSet) -> Result<bool, UpdaterError> {
        Ok(self.sets_dir()?.sub(&set.dir_name(), None)?.is_some())
    }

    /// Copies `set` from `src` (its directory in a checkout) to `berth/<id16>` unless it
    /// is there: into `berth/.tmp-<id16>`, every file fsynced, then renamed.
    pub(crate) fn ensure_set(&self, set: &KernelSet, src: &Dir) -> Result<String, UpdaterError> {
        let sets = self.sets_dir()?;
        let name = set.dir_name();
        let dir_path = format!("{SETS_DIR}/{name}");
        if sets.sub(&name, None)?.is_some() {
            return Ok(dir_path);
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
        fsop::renameat(sets.fd(), tmp.as_str(), sets.fd(), name.as_str())
            .map_err(|e| fail(&sets.join(&tmp), format!("rename to {name}: {e}")))?;
        sets.sync()?;
        Ok(dir_path)
    }

    /// Writes entry `name` for `text`: under a temporary name, fsynced, then (if
    /// `active`) renamed to its `.conf` name and the directory fsynced.
    pub(crate) fn write_entry(
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
    pub(crate) fn activate(&self, name: &EntryName) -> Result<(), UpdaterError> {
        let dir = self.entries_dir()?;
        let file = name.file_name();
        let tmp = format!("{file}{ENTRY_TMP}");
        fsop::renameat(dir.fd(), tmp.as_str(), dir.fd(), file.as_str())
            .map_err(|e| fail(&dir.join(&tmp), format!("rename to {file}: {e}")))?;
        dir.sync()
    }

    /// Renames entry `from` to `to` (blessing a counted entry), durably.
    pub(crate) fn rename_entry(
        &self,
        from: &EntryName,
        to: &EntryName,
    ) -> Result<(), UpdaterError> {
        let dir = self.entries_dir()?;
        let (a, b) = (from.file_name(), to.file_name());
        fsop::renameat(dir.fd(), a.as_str(), dir.fd(), b.as_str())
            .map_err(|e| fail(&dir.join(&a), format!("rename to {b}: {e}")))?;
        dir.sync()
    }

    /// Removes the entries `remove` (and every inert one), durably; returns their names.
    pub(crate) fn remove_entries(&self, remove: &[EntryName]) -> Result<Vec<String>, UpdaterError> {
        let dir = self.entries_dir()?;
        let mut gone: Vec<String> = remove.iter().map(EntryName::file_name).collect();
        for n in dir.names()? {
            let n = String::from_utf8_lossy(&n).into_owned();
            if n.starts_with(bls::PREFIX) && n.ends_with(ENTRY_TMP) {
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
    pub(crate) fn add_entry(
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
    /// remaining entry names, and interrupted copies. Returns (entries, sets) removed.
    pub(crate) fn tidy(
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
        for e in self.entries()? {
            let d = e.name.deployment;
            if keep.contains(&d) && !seen.contains(&d) {
                seen.push(d);
                kept_sets.extend(e.set_dir.clone());
            } else {
                remove.push(e.name);
            }
        }
        let entries = self.remove_entries(&remove)?;
        let mut sets = Vec::new();
        if sets_too {
            let dir = self.sets_dir()?;
            for n in dir.names()? {
                let n = String::from_utf8_lossy(&n).into_owned();
                let path = format!("{SETS_DIR}/{n}");
                let is_set = n.len() == 16 && n.bytes().all(|b| b.is_ascii_hexdigit());
                if (is_set && !kept_sets.contains(&path)) || n.starts_with(SET_TMP) {
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

    /// The partition's path, for messages.
    pub(crate) fn path(&self) -> &Path {
        self.root.path()
    }
}

/// Copies the regular file `name` from `src` to `to`, fsynced.
fn copy_file(src: &Dir, name: &str, to: &Dir) -> Result<(), UpdaterError> {
    let mut input = src
        .open_file(name)?
        .ok_or_else(|| fail(&src.join(name), "missing from the kernel set"))?;
    let fd = fsop::create(
        to.fd(),
        name,
        OFlags::WRONLY | OFlags::TRUNC,
        Mode::from_raw_mode(0o644),
    )
    .map_err(|e| fail(&to.join(name), format!("create: {e}")))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input
            .read(&mut buf)
            .map_err(|e| fail(&src.join(name), format!("read: {e}")))?;
        if n == 0 {
            break;
        }
        fsop::write_all(fd.as_fd(), &buf[..n]).map_err(|e| {
            let hint = if e == Errno::NOSPC {
                " (the boot partition is full)"
            } else {
                ""
            };
            fail(&to.join(name), format!("write: {e}{hint}"))
        })?;
    }
    fsop::fsync(fd.as_fd()).map_err(|e| fail(&to.join(name), format!("fsync: {e}")))
}

/// Copies the tree `src` into `to` (regular files and directories; a device tree
/// directory holds nothing else).
fn copy_dir(src: &Dir, to: &Dir) -> Result<(), UpdaterError> {
    for n in src.names()? {
        let name = String::from_utf8_lossy(&n).into_owned();
        if let Ok(Some(sub)) = src.sub(&name, None) {
            let dest = made(to, &name)?;
            copy_dir(&sub, &dest)?;
            dest.sync()?;
        } else {
            copy_file(src, &name, to)?;
        }
    }
    Ok(())
}

/// The directory `rel` below `dir`, created if missing.
fn made(dir: &Dir, rel: &str) -> Result<Dir, UpdaterError> {
    dir.sub(rel, Some(0o755))?
        .ok_or_else(|| fail(&dir.join(rel), "cannot be created"))
}

/// The loader side of the record changes (see the module's rules).
impl Device {
    /// Before an update's record names `trial`: removes every entry of a deployment the
    /// new record does not name, and every old entry of `trial`; then, if `trial`'s kernel
    /// set is not the default's, copies it and writes its counted entry, inert, and
    /// names it in `berth/boot/loader-trial`. Returns that entry, to be activated once
    /// the record is written ([`BootPart::activate`]).
    pub(crate) fn boot_stage_trial(
        &self,
        bp: &BootPart,
        repo: &Repo,
        trial: &DeploymentName,
        new: &Record,
        tries: u8,
    ) -> Result<Option<EntryName>, UpdaterError> {
        let deployed = deployed_set(repo, trial)?.ok_or_else(|| {
            UpdaterError::State(format!(
                "deployment {}: its commit carries no kernel set, and this board's loader ({}) boots each deployment's own kernel (complete the root filesystem with berth-image initramfs)",
                trial.as_str(),
                bp.config.loader.as_str()
            ))
        })?;
        let entries = bp.entries()?;
        let stale: Vec<EntryName> = entries
            .iter()
            .filter(|e| {
                e.name.deployment == *trial
                    || ![new.default, new.previous].contains(&Some(e.name.deployment))
            })
            .map(|e| e.name)
            .collect();
        bp.remove_entries(&stale)?;
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
            self.sysroot
                .clear_loader_trial()
                .map_err(crate::sys_err(&self.path))?;
            return Ok(None);
        }
        let src = self.set_source(trial, &deployed.set)?;
        let entry = bp.add_entry(
            trial,
            &deployed,
            &src,
            Some((u32::from(tries), None)),
            false,
        )?;
        self.sysroot
            .write_loader_trial(trial)
            .map_err(crate::sys_err(&self.path))?;
        Ok(Some(entry))
    }

    /// Makes deployment `name`'s entry the one the loader boots first, uncounted:
    /// blesses its counted entry if that is first, else writes a new entry for it (its
    /// kernel set copied from its checkout if the partition lacks it). Idempotent.
    pub(crate) fn boot_make_first(
        &self,
        bp: &BootPart,
        name: &DeploymentName,
    ) -> Result<(), UpdaterError> {
        if let Some(first) = bp.first()?
            && first.name.deployment == *name
            && first.name.tries_left() != Some(0)
        {
            if first.name.counter.is_some() {
                bp.rename_entry(&first.name, &first.name.blessed())?;
            }
            return Ok(());
        }
        let repo = Repo::open(&self.path.join("berth/repo"))?;
        let deployed = deployed_set(&repo, name)?.ok_or_else(|| {
            UpdaterError::State(format!(
                "deployment {}: its commit carries no kernel set, so the loader cannot boot it",
                name.as_str()
            ))
        })?;
        let src = self.set_source(name, &deployed.set)?;
        bp.add_entry(name, &deployed, &src, None, true)?;
        Ok(())
    }

    /// After a record write: removes the entries it no longer needs, and the loader-trial
    /// marker unless it names the record's trial.
    pub(crate) fn boot_settle(
        &self,
        bp: Option<&BootPart>,
        rec: &Record,
    ) -> Result<(), UpdaterError> {
        let Some(bp) = bp else {
            return Ok(());
        };
        bp.tidy(rec, false)?;
        if rec.trial.is_none() || self.sysroot.loader_trial() != rec.trial {
            self.sysroot
                .clear_loader_trial()
                .map_err(crate::sys_err(&self.path))?;
        }
        Ok(())
    }
}

/// Refuses an update whose commit carries no kernel set, or whose kernel set does not
/// fit on the boot partition (with the numbers), before the deployment is checked out.
pub(crate) fn check_space(
    bp: &BootPart,
    repo: &Repo,
    root: &format::ObjectId,
) -> Result<(), UpdaterError> {
    let Some(set) = store::kernelset::find(repo, root)? else {
        return Err(UpdaterError::State(format!(
            "the update's commit carries no kernel set, and this board's loader ({}) boots each deployment's own kernel (complete the root filesystem with berth-image initramfs)",
            bp.config.loader.as_str()
        )));
    };
    if bp.has_set(&set)? {
        return Ok(());
    }
    let sizes = store::kernelset::file_sizes(repo, &set)?;
    let (need, free) = bp.space(&sizes)?;
    if need > free {
        return Err(fail(
            bp.path(),
            format!(
                "not enough room on the boot partition for kernel set {} ({}): it needs {need} bytes, {free} are free (berth gc removes the sets no deployment uses)",
                set.dir_name(),
                set.version
            ),
        ));
    }
    Ok(())
}
