//! The boot partition of a board whose loader boots the deployments' own kernel sets
//! (`berth/boot/loader.conf`, written by `berth-image disk`): what `berth update`,
//! `mark-good`, `rollback` and `gc` change there, and in which order relative to the
//! boot record, so that a power cut at any write leaves a device that boots
//! (`docs/FORMAT.md`, "Loader entries (systemd-boot)").
//!
//! The partition is FAT. Files are never rewritten in place: a kernel set is copied to
//! a temporary directory, made durable and renamed to `berth/<id16>`; an entry is
//! written under a temporary name, made durable and renamed to its `.conf` name (each
//! rename made durable as FAT needs, [`rename_durably`]; a blessing is a new file, not
//! a rename); the
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

use format::bls::EntryName;
use format::bootconf::{BootConfig, Loader};
use format::kernelset::{self, KernelSet};
use format::record::{DeploymentName, Record};
use rustix::fd::AsFd as _;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use store::Repo;

use crate::dirs::Dir;
use crate::{Device, UpdaterError};

mod sdboot;
mod uboot;

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

    /// After the update's record (`rec`) is written: the loader starts counting the
    /// trial's tries.
    pub(crate) fn activate_pending(
        &self,
        pending: Pending,
        rec: &Record,
    ) -> Result<(), UpdaterError> {
        let bp = self;
        match pending {
            Pending::Entry(e) => bp.activate(&e),
            Pending::UBootTrial(trial, tries) => {
                let default = rec.default.ok_or_else(|| {
                    fail(
                        bp.path(),
                        "the record has no default deployment for the loader",
                    )
                })?;
                let previous = rec
                    .previous
                    .filter(|p| matches!(bp.root.sub(p.as_str(), None), Ok(Some(_))));
                bp.ub_write_state(
                    default,
                    previous,
                    Some(format::loader::Trial {
                        entry: trial,
                        tries_left: tries,
                    }),
                )
            }
        }
    }

    /// The partition's path, for messages.
    pub(crate) fn path(&self) -> &Path {
        self.root.path()
    }
}

/// Renames `from` to `to` (a directory if `is_dir`) in `dir`, on the boot partition's
/// FAT: `dir` is fsynced, then the renamed file or directory.
///
/// Linux's vfat writes a rename's new directory entry with no clusters and size 0
/// (`vfat_rename` adds it with cluster 0 and only marks the inode dirty); they reach the
/// entry when the inode is written back. An fsync of the directory alone left the new
/// name durable, and the old one gone, with the entry still empty, until writeback,
/// seconds after `berth` said it was done: a power cut then left an empty loader entry,
/// or a kernel set directory whose entry points at the root directory. Hence the
/// second fsync, of the renamed inode, which writes its entry whole. The order matters:
/// the other one (the inode first) can make the new entry whole while the old one, in
/// another sector, is still there, two names for one cluster chain, and removing the
/// leftover would free the live file's clusters. This way a cut in between leaves at
/// worst an empty name, which systemd-boot skips and berth treats as missing
/// ([`BootPart::entries`], [`set_complete`]).
fn rename_durably(dir: &Dir, from: &str, to: &str, is_dir: bool) -> Result<(), UpdaterError> {
    fsop::renameat(dir.fd(), from, dir.fd(), to)
        .map_err(|e| fail(&dir.join(from), format!("rename to {to}: {e}")))?;
    dir.sync()?;
    if is_dir {
        dir.sub(to, None)?
            .ok_or_else(|| fail(&dir.join(to), "missing after the rename"))?
            .sync()
    } else {
        let f = dir
            .open_file(to)?
            .ok_or_else(|| fail(&dir.join(to), "missing after the rename"))?;
        fsop::fsync(f.as_fd()).map_err(|e| fail(&dir.join(to), format!("fsync: {e}")))
    }
}

/// Whether `name` is a FAT short name left on its own (`BERTH-~3.CON`, `1FA6FF~1`): a
/// long name lives in slots before its short entry, sometimes in the sector before, so
/// a rename cut short can leave the new short entry without them, and every program
/// (Linux, mtools, the firmware, U-Boot) then shows the short name. No name berth gives
/// on the partition has a `~` (entry names, deployment names, set ids), so in a place
/// berth writes to, such a name is berth's own leftover: nothing boots it (systemd-boot
/// reads only `*.conf`; the state names U-Boot's entries by their long names), and it
/// is removed with the other leftovers.
fn lost_long_name(name: &str) -> bool {
    name.contains('~')
}

/// Whether the copy `to` of a kernel set holds `names` with the sizes they have in
/// `src` (its checkout): a rename cut short leaves a directory with nothing in it
/// ([`rename_durably`]).
fn set_complete(src: &Dir, to: &Dir, names: &[&str]) -> Result<bool, UpdaterError> {
    for n in names {
        let want = src.file_len(n)?;
        if want == 0 || to.file_len(n)? != want {
            return Ok(false);
        }
    }
    Ok(true)
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

/// How a loader module gets a deployment's kernel set and its checkout's directory
/// (`None`: its commit carries no set).
pub(super) type Source<'a> =
    &'a dyn Fn(&DeploymentName) -> Result<Option<(DeployedSet, Dir)>, UpdaterError>;

/// What an update's staging leaves to do once the record names the trial.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Pending {
    /// systemd-boot: rename the inert entry to its `.conf` name.
    Entry(EntryName),
    /// U-Boot: write the state naming the trial, with its tries.
    UBootTrial(DeploymentName, u8),
}

/// The loader side of the record changes (see the module's rules).
impl Device {
    /// The kernel set of deployment `name` and its directory in the checkout, if its
    /// commit carries one.
    fn set_and_source(
        &self,
        repo: &Repo,
        name: &DeploymentName,
    ) -> Result<Option<(DeployedSet, Dir)>, UpdaterError> {
        let Some(deployed) = deployed_set(repo, name)? else {
            return Ok(None);
        };
        let src = self.set_source(name, &deployed.set)?;
        Ok(Some((deployed, src)))
    }

    /// Before an update's record (`new`) names `trial`: the loader's side is made ready
    /// (docs/FORMAT.md, "Loader entries" and "Loader state"). If `trial`'s kernel set is
    /// not the default's, its files are on the partition and `berth/boot/loader-trial`
    /// names it; the returned step, done after the record is written, makes the loader
    /// count its tries. Otherwise berth-init counts them and `None` is returned.
    pub(crate) fn boot_stage_trial(
        &self,
        bp: &BootPart,
        repo: &Repo,
        trial: &DeploymentName,
        new: &Record,
        tries: u8,
    ) -> Result<Option<Pending>, UpdaterError> {
        let (deployed, src) = self.set_and_source(repo, trial)?.ok_or_else(|| {
            UpdaterError::State(format!(
                "deployment {}: its commit carries no kernel set, and this board's loader ({}) boots each deployment's own kernel (complete the root filesystem with berth-image initramfs)",
                trial.as_str(),
                bp.config.loader.as_str()
            ))
        })?;
        let pending = match bp.config.loader {
            Loader::SystemdBoot => bp
                .sd_stage_trial(trial, &deployed, &src, new, tries)?
                .map(Pending::Entry),
            Loader::UBoot => bp
                .ub_stage_trial(trial, &deployed, &src, new)?
                .then_some(Pending::UBootTrial(*trial, tries)),
        };
        if pending.is_some() {
            self.sysroot
                .write_loader_trial(trial)
                .map_err(crate::sys_err(&self.path))?;
        } else {
            self.sysroot
                .clear_loader_trial()
                .map_err(crate::sys_err(&self.path))?;
        }
        Ok(pending)
    }

    /// Before a record with no trial (`new`, from mark-good or rollback) is written: the
    /// loader boots `new.default` first, uncounted, and nothing the record drops.
    /// Idempotent.
    pub(crate) fn boot_prepare(&self, bp: &BootPart, new: &Record) -> Result<(), UpdaterError> {
        let repo = Repo::open(&self.path.join("berth/repo"))?;
        let source = |n: &DeploymentName| self.set_and_source(&repo, n);
        match bp.config.loader {
            Loader::SystemdBoot => bp.sd_prepare(new, &source),
            Loader::UBoot => bp.ub_prepare(new, &source),
        }
    }

    /// After a record write: removes what the loader no longer needs (entries; kernel
    /// sets too with `sets`), and the loader-trial marker unless it names the record's
    /// trial. Returns (entries, sets) removed.
    pub(crate) fn boot_settle(
        &self,
        bp: Option<&BootPart>,
        rec: &Record,
        sets: bool,
    ) -> Result<(Vec<String>, Vec<String>), UpdaterError> {
        let Some(bp) = bp else {
            return Ok((Vec::new(), Vec::new()));
        };
        let removed = match bp.config.loader {
            Loader::SystemdBoot => bp.tidy(rec, sets)?,
            Loader::UBoot => {
                // A trial the record no longer has (berth-init dropped it, its tries
                // spent) leaves the state.
                let (_, st) = bp.ub_state()?;
                if st.trial.is_some() && st.trial.map(|t| t.entry) != rec.trial {
                    bp.ub_write_state(st.default, st.previous, None)?;
                }
                (bp.ub_tidy(&bp.ub_keep(rec)?)?, Vec::new())
            }
        };
        if rec.trial.is_none() || self.sysroot.loader_trial() != rec.trial {
            self.sysroot
                .clear_loader_trial()
                .map_err(crate::sys_err(&self.path))?;
        }
        Ok(removed)
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
    check_kernel(bp.config.loader, repo, &set)?;
    match bp.config.loader {
        Loader::SystemdBoot if bp.has_set(&set)? => return Ok(()),
        Loader::SystemdBoot => {}
        // The state must be readable before anything is checked out.
        Loader::UBoot => drop(bp.ub_state()?),
    }
    let sizes = store::kernelset::file_sizes(repo, &set)?;
    let (need, free) = bp.space(&sizes)?;
    if need > free {
        return Err(crate::error::refused(
            bp.path().display(),
            crate::Refusal::NoBootSpace {
                set: set.dir_name(),
                version: set.version.clone(),
                need,
                free,
            },
        ));
    }
    Ok(())
}

/// Refuses a kernel the board's loader cannot start, before the deployment is checked
/// out:
/// systemd-boot starts an EFI executable (a PE image: `MZ`, and `PE\0\0` where the
/// DOS header points), boot.scr an arm64 `Image` (`ARM\x64` at offset 56). A kernel
/// built for another boot path (x86's ELF `vmlinux`, a compressed `vmlinuz.gz`) would
/// otherwise cost the trial's tries and, with systemd-boot, stop the machine in its
/// firmware until a watchdog or a person restarts it.
fn check_kernel(loader: Loader, repo: &Repo, set: &KernelSet) -> Result<(), UpdaterError> {
    let (_, content) = repo.file_object(&set.kernel)?;
    let mut head = Vec::with_capacity(4096);
    content.take(4096).read_to_end(&mut head).map_err(|e| {
        UpdaterError::State(format!("kernel set {}: read vmlinuz: {e}", set.dir_name()))
    })?;
    let at = |off: usize, len: usize| head.get(off..off + len);
    let ok = match loader {
        Loader::SystemdBoot => {
            at(0, 2) == Some(b"MZ")
                && at(0x3c, 4)
                    .and_then(|b| b.try_into().ok())
                    .map(|b: [u8; 4]| u32::from_le_bytes(b) as usize)
                    .and_then(|pe| at(pe, 4))
                    == Some(b"PE\0\0")
        }
        Loader::UBoot => at(56, 4) == Some(b"ARM\x64"),
    };
    if ok {
        return Ok(());
    }
    Err(UpdaterError::State(format!(
        "kernel set {} ({}): usr/lib/modules/{}/vmlinuz is not {}; the update is refused",
        set.dir_name(),
        set.version,
        set.version,
        match loader {
            Loader::SystemdBoot => "an EFI executable (PE image), which systemd-boot starts",
            Loader::UBoot => "an arm64 Image, which boot.scr starts with booti",
        }
    )))
}
