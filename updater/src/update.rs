//! `berth update FILE`: verify, apply, check out, start a trial.
//!
//! Order of checks (nothing is written before all of them pass):
//! 1. the superblock's signature, over its exact body bytes, against the keys the
//!    committed default deployment trusts, never a trial's (`/usr/lib/berth/keys/*.pub`
//!    and its merged `/etc/berth/keys/*.pub`; docs/KEYS.md), before the body is parsed;
//! 2. the file's length against the parts the body lists;
//! 3. rollback protection: the target version must be newer than the running one's;
//! 4. a delta's base commit must be on the device;
//! 5. free space for every part's decompressed size.
//!
//! Then each part is checked against its signed sha256, decompressed with its signed
//! size as a hard cap, and its objects written in one store transaction (each object
//! re-hashed and compared with its name). A part that was applied is recorded in a
//! progress file, so an interrupted update resumes with the next part.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use format::record::{DeploymentName, Record};
use format::sig::Signatures;
use format::update::{self, Body};
use format::{Commit, EntryKind, ObjectId, ObjectKind};
use rustix::fd::AsFd as _;
use rustix::fs::{AtFlags, Mode, OFlags};
use store::checkout::{CheckoutOptions, checkout};
use store::{Repo, StoreError, Txn};

use crate::apply::{self, Applier};
use crate::checks::TreeChecks;
use crate::dirs::Dir;
use crate::{Device, UpdaterError};

/// How an update reports progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Nothing.
    Quiet,
    /// One line per part, for people.
    Text,
    /// One JSON object per line, for programs.
    Json,
}

/// A kind of file an update may not make (`berth update --forbid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forbid {
    /// Character and block device nodes.
    Device,
    /// Regular files with the setuid or setgid bit.
    Setuid,
}

/// The kinds of file an update may not make; none by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forbidden {
    device: bool,
    setuid: bool,
}

impl Forbidden {
    /// This set and `kind`.
    #[must_use]
    pub fn with(self, kind: Forbid) -> Self {
        match kind {
            Forbid::Device => Self {
                device: true,
                ..self
            },
            Forbid::Setuid => Self {
                setuid: true,
                ..self
            },
        }
    }

    /// What is wrong with a file `header` describes, if the policy refuses it.
    pub(crate) fn refuses(self, header: &format::FileHeader) -> Option<String> {
        use format::FileKind;
        let what = match header.kind {
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            _ => "",
        };
        if self.device && header.kind.is_device() {
            return Some(format!(
                "{what} {}:{}, which --forbid device refuses",
                header.rdev_major, header.rdev_minor
            ));
        }
        if self.setuid && header.kind == FileKind::Regular && header.mode & 0o6000 != 0 {
            return Some(format!(
                "a setuid or setgid regular file (mode 0{:o}), which --forbid setuid refuses",
                header.mode
            ));
        }
        None
    }
}

impl Progress {
    /// Reports that part `i` (of `parts`, `size` bytes) was applied.
    fn part(self, i: usize, parts: usize, size: u64) {
        match self {
            Self::Quiet => {}
            Self::Text => eprintln!("part {}/{parts} applied ({size} bytes)", i + 1),
            Self::Json => eprintln!(r#"{{"part":{},"parts":{parts},"bytes":{size}}}"#, i + 1),
        }
    }

    /// Reports that an object pull gives way to the full update, which costs less.
    pub(crate) fn fallback(self, missing: u64, full: u64) {
        match self {
            Self::Quiet => {}
            Self::Text => eprintln!(
                "the missing objects ({missing} bytes) cost more than the full update ({full} bytes): taking the full update"
            ),
            Self::Json => {
                eprintln!(r#"{{"fallback":"full","objects_bytes":{missing},"full_bytes":{full}}}"#);
            }
        }
    }

    /// Reports a download: `got` of `total` bytes of the update are on the device.
    pub(crate) fn downloaded(self, got: u64, total: u64) {
        match self {
            Self::Quiet => {}
            Self::Text => eprintln!("downloaded {got}/{total} bytes"),
            Self::Json => eprintln!(r#"{{"downloaded":{got},"total":{total}}}"#),
        }
    }
}

/// Options of [`Device::update`].
#[derive(Debug, Clone, Copy)]
pub struct UpdateOptions {
    /// Accept a target that is not newer than the default deployment.
    pub allow_downgrade: bool,
    /// Boots the new deployment gets as a trial.
    pub tries: u8,
    /// Progress reporting.
    pub progress: Progress,
    /// Test hook: stop with an error after applying this many parts.
    pub abort_after_parts: Option<usize>,
    /// Files the update may not make, checked before each is written.
    pub forbid: Forbidden,
    /// Give up unless the update is ready to switch to within this time.
    pub deadline: Option<std::time::Duration>,
}

/// What an update did.
#[derive(Debug, serde::Serialize)]
pub struct UpdateReport {
    /// The new commit.
    pub commit: String,
    /// Its version.
    pub version: String,
    /// Its deployment name.
    pub deployment: String,
    /// Parts applied by this run.
    pub parts_applied: usize,
    /// Parts an earlier, interrupted run had applied.
    pub parts_skipped: usize,
    /// Objects written.
    pub objects: u64,
    /// Paths in the old `/etc` layer that were not carried forward (Unix sockets).
    pub etc_skipped: Vec<String>,
}

/// Arms `opts.deadline`, if any, for an update from `source`.
pub(crate) fn arm_deadline(source: &str, opts: UpdateOptions) -> Option<crate::deadline::Deadline> {
    opts.deadline.map(|limit| {
        crate::deadline::Deadline::arm(
            limit,
            format!(
                "{source}: the update was not applied within the {} s deadline (a stalled or slow source); stopped before switching, the device is unchanged",
                limit.as_secs()
            ),
        )
    })
}

/// An update whose superblock is verified: the file, the signed body, where the parts
/// start, and whether it is the split form.
pub(crate) struct Source {
    pub(crate) f: File,
    pub(crate) body: Body,
    pub(crate) parts_start: u64,
    pub(crate) split: bool,
}

/// An error about `file` (an update, a part of one): one line naming it and the cause.
pub(crate) fn bad(file: &Path, what: impl Into<String>) -> UpdaterError {
    UpdaterError::State(format!("{}: {}", file.display(), what.into()))
}

fn read_exact(f: &mut File, n: usize, file: &Path, what: &str) -> Result<Vec<u8>, UpdaterError> {
    let mut buf = vec![0u8; n];
    f.read_exact(&mut buf)
        .map_err(|_| bad(file, format!("truncated ({what})")))?;
    Ok(buf)
}

/// Counts what a reader hands out.
struct Counting<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n += k as u64;
        Ok(k)
    }
}

/// Hashes what a reader hands out (the compressed bytes of a part, as they are decoded).
struct Hashing<R> {
    inner: R,
    hasher: sha2::Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        sha2::Digest::update(&mut self.hasher, &buf[..k]);
        Ok(k)
    }
}

impl Device {
    /// The keys the device trusts, and the deployment they come from: the committed
    /// default's (the record's), never a trial's, so a release that was never committed
    /// cannot change who may sign updates and channel pointers (docs/KEYS.md). Only
    /// without a valid record (a repair) are the running deployment's keys used.
    pub(crate) fn trusted_keys(
        &self,
        running: &DeploymentName,
    ) -> Result<(DeploymentName, Vec<ed25519_dalek::VerifyingKey>), UpdaterError> {
        let who = self
            .sysroot
            .read_record()
            .0
            .and_then(|(r, _)| r.default)
            .unwrap_or(*running);
        Ok((who, crate::keys::trusted(&self.path, &who)?))
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

    /// Opens the update `file` (or the split form's directory) and verifies its
    /// superblock against the keys `running` trusts.
    pub(crate) fn open_source(
        &self,
        file: &Path,
        running: &DeploymentName,
    ) -> Result<Source, UpdaterError> {
        let (signer_of, keys) = self.trusted_keys(running)?;
        // A directory is the split form: DIR/superblock and DIR/part-NNNNN.
        let split = file.is_dir();
        let head_path = if split {
            file.join("superblock")
        } else {
            file.to_path_buf()
        };
        let mut f = File::open(&head_path).map_err(|e| bad(&head_path, e.to_string()))?;
        let (body, parts_start) = verified_body(&mut f, &head_path, &keys, &signer_of, split)?;
        Ok(Source {
            f,
            body,
            parts_start,
            split,
        })
    }

    /// Applies the update file `file`; the new deployment becomes the trial.
    pub fn update(&self, file: &Path, opts: UpdateOptions) -> Result<UpdateReport, UpdaterError> {
        let _lock = self.lock(crate::lock::LockKind::Store, "update")?;
        let deadline = arm_deadline(&file.display().to_string(), opts);
        self.apply_update(file, opts, deadline.as_ref())
    }

    /// [`Device::update`] under a deadline armed by the caller (which may have spent
    /// some of it downloading `file`); disarmed before the record is written.
    pub(crate) fn apply_update(
        &self,
        file: &Path,
        opts: UpdateOptions,
        deadline: Option<&crate::deadline::Deadline>,
    ) -> Result<UpdateReport, UpdaterError> {
        let (rec, _) = self.record()?;
        let default = self.running(&rec)?;
        let Source {
            mut f,
            body,
            parts_start,
            split,
        } = self.open_source(file, &default)?;
        let commit = Commit::decode(&body.commit).map_err(|e| bad(file, e.to_string()))?;
        let commit_sigs = commit_signatures(file, &body)?;
        let id = ObjectId::digest(&body.commit);
        let name = DeploymentName::for_commit(&id);
        let repo = Repo::open(&self.path.join("berth/repo"))?;
        self.preflight(&repo, file, &body, &commit, &default, opts)?;

        let tmp = self
            .own_dir(crate::TMP_DIR, Some(0o755))?
            .ok_or_else(|| UpdaterError::State(format!("{}: not made", crate::TMP_DIR)))?;
        let progress = format!("update-{}.done", &id.to_string()[..16]);
        let progress_path = tmp.join(&progress);
        // The parts applied by an interrupted run. Damaged, it only costs applying
        // parts again: every part is checked before it is applied either way.
        let done: Vec<usize> = tmp
            .read(&progress, 1 << 20)
            .ok()
            .flatten()
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .lines()
                    .filter_map(|l| l.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        // Every part is checked against its signed hash before the first is applied, so a
        // damaged file changes nothing at all (applying re-checks each part as it goes).
        check_all_parts(file, &mut f, split, parts_start, &body, &done)?;
        let base = apply::base_order(&repo, body.from.as_ref())?;
        let mut checks = TreeChecks::new(&repo, commit.root);
        // Parts that did not make the commit must not be skipped next time: the next
        // try (of this update or a repaired one) starts from the first part.
        let forget_progress = |e: &UpdaterError| {
            if matches!(e, UpdaterError::Incomplete(_)) {
                let _ignored = fsop::unlinkat(tmp.fd(), progress.as_str(), AtFlags::empty());
            }
        };
        let run = PartRun {
            repo: &repo,
            base: &base,
            forbid: opts.forbid,
            parts: body.parts.len(),
            only: None,
        };
        let (mut applied, mut objects) = (0, 0u64);
        let mut offset = parts_start;
        for (i, part) in body.parts.iter().enumerate() {
            let start = offset;
            offset += part.len;
            if done.contains(&i) {
                continue;
            }
            let (mut pf, at, shown) = open_part(file, &mut f, split, i, start, part)?;
            match run.apply(&mut checks, &mut pf, &shown, i, at, part) {
                Ok(n) => objects += n,
                // Resumed, but what the skipped parts stored is gone (removed by an
                // older gc): start over from the first part, once.
                Err(e @ UpdaterError::Incomplete(_)) if !done.is_empty() => {
                    forget_progress(&e);
                    return self.apply_update(file, opts, deadline);
                }
                Err(e) => {
                    forget_progress(&e);
                    return Err(e);
                }
            }
            applied += 1;
            let finished: Vec<usize> = (0..body.parts.len())
                .filter(|k| done.contains(k) || *k <= i)
                .collect();
            write_progress(&tmp, &progress, &finished)
                .map_err(|e| bad(&progress_path, e.to_string()))?;
            opts.progress.part(i, body.parts.len(), part.size);
            if opts.abort_after_parts.is_some_and(|n| applied >= n) {
                return Err(UpdaterError::State(format!(
                    "stopped after {applied} parts (test hook)"
                )));
            }
        }

        let skipped = self
            .finish_update(
                &repo,
                file,
                &mut checks,
                (&commit, commit_sigs.as_ref()),
                &default,
                opts,
                deadline,
            )
            .inspect_err(forget_progress)?;
        // Left behind, it would only be garbage: the update is complete.
        let _ignored = fsop::unlinkat(tmp.fd(), progress.as_str(), AtFlags::empty());
        Ok(UpdateReport {
            commit: id.to_string(),
            version: commit.version.to_string(),
            deployment: name.as_str().to_owned(),
            parts_applied: applied,
            parts_skipped: done.len(),
            objects,
            etc_skipped: skipped.iter().map(|p| p.display().to_string()).collect(),
        })
    }

    /// The steps every update ends with, once its objects are in the store: checks the
    /// commit's tree and writes the commit, checks out its deployment, carries `/etc`
    /// forward, disarms the deadline and makes the deployment the trial.
    #[allow(clippy::too_many_arguments)] // each is a different part of the update's state
    pub(crate) fn finish_update(
        &self,
        repo: &Repo,
        file: &Path,
        checks: &mut TreeChecks<'_>,
        (commit, sigs): (&Commit, Option<&Signatures>),
        default: &DeploymentName,
        opts: UpdateOptions,
        deadline: Option<&crate::deadline::Deadline>,
    ) -> Result<Vec<PathBuf>, UpdaterError> {
        let name = DeploymentName::for_commit(&ObjectId::digest(&commit.encode()));
        // On a loader board the commit must carry a kernel set, and a new one must fit on
        // the boot partition: checked before the deployment is checked out or the record
        // touched (the objects fetched stay in the store until gc).
        let boot = self.boot_part()?;
        if let Some(bp) = &boot {
            crate::bootpart::check_space(bp, repo, &commit.root)?;
        }
        install_commit(
            repo,
            file,
            checks,
            commit,
            sigs,
            &self.path.join("berth/deploy").join(name.as_str()),
        )?;
        let skipped = self.carry_etc(repo, default, &name)?;
        if let Some(d) = deadline {
            d.disarm();
        }
        // Read now, not when the update started: a long download must not undo what
        // happened meanwhile (a mark-good, a rollback); under the record lock, so none
        // happens between this read and the write.
        let _lock = self.lock(crate::lock::LockKind::Record, "update")?;
        let (rec, copy) = self.record()?;
        let new = Record {
            trial: Some(name),
            tries_left: opts.tries,
            ..rec
        };
        // A trial with its own kernel set: its entry is written inert before the record
        // names it, and activated after (docs/FORMAT.md, "Loader entries").
        let pending = match &boot {
            Some(bp) => self.boot_stage_trial(bp, repo, &name, &new, opts.tries)?,
            None => None,
        };
        self.write(&(rec, copy), &new)?;
        if let (Some(bp), Some(p)) = (&boot, pending) {
            bp.activate_pending(p, &new)?;
        }
        Ok(skipped)
    }

    /// Rollback protection, the delta's base, free space: everything checked before the
    /// first write.
    fn preflight(
        &self,
        repo: &Repo,
        file: &Path,
        body: &Body,
        commit: &Commit,
        default: &DeploymentName,
        opts: UpdateOptions,
    ) -> Result<(), UpdaterError> {
        check_newer(repo, file, commit, default, opts)?;
        // A damaged loader configuration fails the update before anything is written.
        self.boot_config()?;
        if let Some(from) = body
            .from
            .filter(|f| !repo.has(f, ObjectKind::Commit).unwrap_or(false))
        {
            return Err(bad(
                file,
                format!(
                    "is a delta from commit {from}, which this device does not have; use a full update (berth-image delta --empty)"
                ),
            ));
        }
        self.check_space(body.parts.iter().map(|p| p.size).sum())
    }

    /// Refuses an update that needs more than the free space (with 1 MiB to spare).
    pub(crate) fn check_space(&self, bytes: u64) -> Result<(), UpdaterError> {
        let need = bytes.saturating_add(1 << 20);
        let vfs = rustix::fs::statvfs(&self.path).map_err(|e| UpdaterError::Sysroot {
            path: self.path.clone(),
            step: "statvfs",
            errno: e,
        })?;
        let free = vfs.f_bavail.saturating_mul(vfs.f_frsize);
        if free < need {
            return Err(UpdaterError::State(format!(
                "{}: not enough free space: the update needs {need} bytes, {free} are free",
                self.path.display()
            )));
        }
        Ok(())
    }

    /// Starts the new deployment's persistent `/etc` layer as a copy of the old one's,
    /// so local configuration carries forward. Copied through the store (build, then a
    /// copy checkout), which keeps owners, modes, xattrs and overlay whiteouts. Unix
    /// sockets (a service's, left in `/etc`) cannot be stored: they are skipped, and
    /// their paths returned for a warning. Every directory on the way is opened without
    /// following a symlink ([`crate::dirs`]).
    fn carry_etc(
        &self,
        repo: &Repo,
        from: &DeploymentName,
        to: &DeploymentName,
    ) -> Result<Vec<PathBuf>, UpdaterError> {
        let etc = crate::ETC_DIR;
        let Some(old) = self.own_dir(&format!("{etc}/{}/upper", from.as_str()), None)? else {
            return Ok(Vec::new());
        };
        let new_dir = self
            .own_dir(&format!("{etc}/{}", to.as_str()), Some(0o755))?
            .ok_or_else(|| UpdaterError::State(format!("{etc}/{}: not made", to.as_str())))?;
        // Carried already (a retry after the checkout); a symlink there is refused.
        if new_dir.sub("upper", None)?.is_some() {
            return Ok(Vec::new());
        }
        let mut txn = Txn::begin(repo)?;
        let (tree, _, skipped) =
            store::build::build_layer(&mut txn, old.fd(), old.path(), &mut |_| {})?;
        txn.commit()?;
        checkout(
            repo,
            &tree,
            &new_dir.join("upper"),
            CheckoutOptions {
                copy: true,
                sync: true,
            },
        )?;
        Ok(skipped)
    }
}

/// Rollback protection: the target must be newer than the running deployment's
/// commit, unless `--allow-downgrade`.
pub(crate) fn check_newer(
    repo: &Repo,
    file: &Path,
    commit: &Commit,
    default: &DeploymentName,
    opts: UpdateOptions,
) -> Result<(), UpdaterError> {
    if opts.allow_downgrade {
        return Ok(());
    }
    // Fail closed: without the running commit's version there is no floor, and an
    // update is refused rather than let an older release in.
    let unknown = |e: StoreError| {
        bad(
            file,
            format!(
                "the running deployment {}'s commit cannot be read ({e}), so rollback protection cannot check the version; refusing (repair the store with berth fsck --repair, or pass --allow-downgrade)",
                default.as_str()
            ),
        )
    };
    let id = repo.resolve_commit(default.as_str()).map_err(unknown)?;
    let (current, _) = repo.read_commit(&id).map_err(unknown)?;
    let cur = current.version;
    match (commit.version.cmp_release(&cur) != std::cmp::Ordering::Greater).then_some(cur) {
        Some(cur) => Err(bad(
            file,
            format!(
                "version {} is not newer than the installed {cur}; refusing (pass --allow-downgrade to install it anyway)",
                commit.version
            ),
        )),
        None => Ok(()),
    }
}

/// The target commit's signature file, carried in the body and stored beside the
/// commit at the end: decoded now, before anything is written.
fn commit_signatures(file: &Path, body: &Body) -> Result<Option<Signatures>, UpdaterError> {
    if body.commit_signatures.is_empty() {
        return Ok(None);
    }
    Signatures::decode(&body.commit_signatures)
        .map(Some)
        .map_err(|e| bad(file, format!("commit signatures: {e}")))
}

/// Reads the head, the signed body and the signatures; verifies the signatures over the
/// exact body bytes against `keys` before decoding the body; checks the file's length
/// against the parts the body lists. Returns the body and where the parts start.
fn verified_body(
    f: &mut File,
    file: &Path,
    keys: &[ed25519_dalek::VerifyingKey],
    default: &DeploymentName,
    split: bool,
) -> Result<(Body, u64), UpdaterError> {
    let file_len = f.metadata().map_err(|e| bad(file, e.to_string()))?.len();
    let head = read_exact(f, update::HEAD_LEN, file, "head")?;
    let body_len = update::decode_head(&head).map_err(|e| bad(file, e.to_string()))?;
    let body_bytes = read_exact(f, body_len, file, "superblock")?;
    let mut len = [0u8; 4];
    len.copy_from_slice(&read_exact(f, 4, file, "signature length")?);
    let sig_len = usize::try_from(u32::from_le_bytes(len)).unwrap_or(usize::MAX);
    if sig_len > update::SIGNATURES_BYTES_MAX {
        return Err(bad(
            file,
            format!("signature block of {sig_len} bytes is over the limit"),
        ));
    }
    let sig_bytes = read_exact(f, sig_len, file, "signatures")?;
    let sigs = Signatures::decode(&sig_bytes).map_err(|e| bad(file, e.to_string()))?;
    sigs.verify(&body_bytes, keys).map_err(|e| {
        bad(
            file,
            format!("{e} (keys trusted by deployment {})", default.as_str()),
        )
    })?;
    let body = Body::decode(&body_bytes).map_err(|e| bad(file, e.to_string()))?;
    let parts_start = (update::HEAD_LEN + body_len + 4 + sig_len) as u64;
    // The parts are contiguous (the body's decoder checked it), so they end where the
    // last one does; with the superblock before them, that may pass 2^64 in a lying body.
    let parts_len = body.parts.last().map_or(0, |p| p.offset + p.len);
    let describes =
        |n: Option<u64>| n.map_or_else(|| "more than 2^64".to_owned(), |n| n.to_string());
    // The split form's superblock file ends where the parts would start.
    let expected = if split {
        Some(parts_start)
    } else {
        parts_start.checked_add(parts_len)
    };
    if expected != Some(file_len) {
        let expected = describes(expected);
        return Err(bad(
            file,
            format!(
                "is {file_len} bytes, but its superblock describes {expected} (truncated or not this update's parts)"
            ),
        ));
    }
    Ok((body, parts_start))
}

/// Where a part is applied, and what for.
pub(crate) struct PartRun<'a> {
    pub(crate) repo: &'a Repo,
    pub(crate) base: &'a [(ObjectId, EntryKind)],
    pub(crate) forbid: Forbidden,
    /// How many parts the update has: the last must leave the commit's root tree made.
    pub(crate) parts: usize,
    /// Repair (`berth fsck --repair`): write only these objects (`Txn::repair_only`).
    pub(crate) only: Option<&'a HashSet<(ObjectId, ObjectKind)>>,
}

impl PartRun<'_> {
    /// Checks one part against its signed hash, then applies its objects in one
    /// transaction. Returns how many objects it held.
    pub(crate) fn apply(
        &self,
        checks: &mut TreeChecks<'_>,
        f: &mut File,
        file: &Path,
        i: usize,
        start: u64,
        part: &update::PartInfo,
    ) -> Result<u64, UpdaterError> {
        let shown = PathBuf::from(format!("{} part {}", file.display(), i + 1));
        let io = |e: std::io::Error| bad(&shown, e.to_string());
        f.seek(SeekFrom::Start(start)).map_err(io)?;
        // The compressed bytes are hashed as they are decoded: the part was checked before
        // anything was applied, and this catches a file that changed since, before commit.
        let hashing = Hashing {
            inner: (&mut *f).take(part.len),
            hasher: <sha2::Sha256 as sha2::Digest>::new(),
        };
        // The decoder keeps a window of output in memory: bounded, whatever the frame
        // asks for.
        let decoder = ruzstd::decoding::StreamingDecoder::new_with_max_window_size(
            hashing,
            update::PART_WINDOW_MAX,
        )
        .map_err(|e| bad(&shown, format!("zstd frame refused: {e}")))?;
        // The signed size caps decompression: one byte more is a refusal, not an OOM.
        let mut r = Counting {
            inner: decoder.take(part.size + 1),
            n: 0,
        };
        let more = || {
            bad(
                &shown,
                format!("decompresses to more than its signed {} bytes", part.size),
            )
        };
        let mut txn = Txn::begin(self.repo)?;
        if let Some(only) = self.only {
            txn.repair_only(only.clone());
        }
        let mut applier = Applier::new(self.repo, self.base, &shown, self.forbid, checks);
        loop {
            let mut kind = [0u8; 1];
            if r.read(&mut kind).map_err(io)? == 0 {
                break;
            }
            if r.n > part.size {
                return Err(more());
            }
            let left = part.size - r.n;
            applier.apply(&mut txn, &mut r, kind[0], left)?;
            if r.n > part.size {
                return Err(more());
            }
        }
        if r.n != part.size {
            return Err(bad(
                &shown,
                format!(
                    "decompresses to {} bytes, not its signed {}",
                    r.n, part.size
                ),
            ));
        }
        let mut hashing = r.inner.into_inner().into_inner();
        std::io::copy(&mut hashing, &mut std::io::sink()).map_err(io)?;
        let digest: [u8; 32] = sha2::Digest::finalize(hashing.hasher).into();
        if ObjectId::from_bytes(digest) != part.sha256 {
            return Err(bad(
                &shown,
                "changed while being applied: its sha256 no longer matches the signed superblock",
            ));
        }
        let objects = applier.made();
        // Operations do not name what they make, so a part whose bytes lie (signed by a
        // trusted key, yet wrong) shows here: its trees hash to something else and the
        // signed root is not made. Refused before this part is published.
        let last = i + 1 == self.parts;
        if last && !checks.root_made && !self.repo.has(&checks.root(), ObjectKind::Tree)? {
            return Err(UpdaterError::Incomplete(format!(
                "{}: update is incomplete: its operations do not make the commit's root tree {}",
                file.display(),
                checks.root()
            )));
        }
        txn.commit()?;
        Ok(objects)
    }
}

/// Checks that everything the commit names is in the store, writes the commit object
/// (and its signatures) and checks out the deployment at `dest` (synced).
fn install_commit(
    repo: &Repo,
    file: &Path,
    checks: &mut TreeChecks<'_>,
    commit: &Commit,
    commit_sigs: Option<&Signatures>,
    dest: &Path,
) -> Result<(), UpdaterError> {
    // Everything the commit names must be here now (a root tree made by an earlier,
    // interrupted run was checked then; checked again, it costs a walk).
    let incomplete = |why: String| {
        UpdaterError::Incomplete(format!("{}: update is incomplete: {why}", file.display()))
    };
    if !repo.has(&commit.root, ObjectKind::Tree)? {
        return Err(incomplete(format!(
            "its operations do not make the commit's root tree {}",
            commit.root
        )));
    }
    checks.check_root(file)?;
    check_closure(repo, &commit.root, 0).map_err(incomplete)?;
    let mut txn = Txn::begin(repo)?;
    txn.write_commit(commit, commit_sigs)?;
    txn.commit()?;
    if !dest.exists() {
        checkout(
            repo,
            &commit.root,
            dest,
            CheckoutOptions {
                copy: false,
                sync: true,
            },
        )?;
    }
    Ok(())
}

/// Checks every part not yet applied against its signed hash.
pub(crate) fn check_all_parts(
    file: &Path,
    f: &mut File,
    split: bool,
    parts_start: u64,
    body: &Body,
    done: &[usize],
) -> Result<(), UpdaterError> {
    let mut offset = parts_start;
    for (i, part) in body.parts.iter().enumerate() {
        let start = offset;
        offset += part.len;
        if !done.contains(&i) {
            let (mut pf, at, shown) = open_part(file, f, split, i, start, part)?;
            check_part_hash(&mut pf, &shown, at, part)?;
        }
    }
    Ok(())
}

/// The file a part is in and where it starts: the update file at `start`, or in the
/// split form `DIR/part-NNNNN` at 0 (whose length must be the signed one).
pub(crate) fn open_part(
    file: &Path,
    f: &mut File,
    split: bool,
    i: usize,
    start: u64,
    part: &update::PartInfo,
) -> Result<(File, u64, PathBuf), UpdaterError> {
    if !split {
        let dup = f.try_clone().map_err(|e| bad(file, e.to_string()))?;
        return Ok((dup, start, file.to_path_buf()));
    }
    let path = file.join(format!("part-{i:05}"));
    let pf = File::open(&path).map_err(|e| bad(&path, e.to_string()))?;
    let len = pf.metadata().map_err(|e| bad(&path, e.to_string()))?.len();
    if len != part.len {
        return Err(bad(
            &path,
            format!("is {len} bytes, but the superblock says {}", part.len),
        ));
    }
    Ok((pf, 0, path))
}

/// Checks a part's compressed bytes against the signed sha256.
fn check_part_hash(
    f: &mut File,
    shown: &Path,
    start: u64,
    part: &update::PartInfo,
) -> Result<(), UpdaterError> {
    let io = |e: std::io::Error| bad(shown, e.to_string());
    f.seek(SeekFrom::Start(start)).map_err(io)?;
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    let mut left = part.len;
    let mut buf = vec![0u8; 1 << 16];
    while left > 0 {
        let n = f
            .read(&mut buf[..usize::try_from(left.min(1 << 16)).unwrap_or(1 << 16)])
            .map_err(io)?;
        if n == 0 {
            return Err(bad(shown, "truncated"));
        }
        sha2::Digest::update(&mut hasher, &buf[..n]);
        left -= n as u64;
    }
    let digest: [u8; 32] = sha2::Digest::finalize(hasher).into();
    if ObjectId::from_bytes(digest) != part.sha256 {
        return Err(bad(
            shown,
            "damaged: a part's sha256 does not match the signed superblock",
        ));
    }
    Ok(())
}

fn check_closure(repo: &Repo, root: &ObjectId, depth: usize) -> Result<(), String> {
    if depth > format::limits::TREE_DEPTH_MAX {
        return Err(format!(
            "tree {root} is nested deeper than the limit of {}",
            format::limits::TREE_DEPTH_MAX
        ));
    }
    let tree = repo.read_tree(root).map_err(|e| e.to_string())?;
    for e in tree.entries() {
        match e.kind {
            EntryKind::Tree => check_closure(repo, &e.id, depth + 1)?,
            EntryKind::File => {
                if !repo
                    .has(&e.id, ObjectKind::File)
                    .map_err(|x| x.to_string())?
                {
                    return Err(format!("object {} is missing", e.id));
                }
            }
        }
    }
    Ok(())
}

/// Records the applied parts in `dir`/`name`: temp file, fsync, rename (the directory
/// is synced with the next transaction's syncfs).
fn write_progress(dir: &Dir, name: &str, parts: &[usize]) -> Result<(), rustix::io::Errno> {
    let tmp = format!("{name}.tmp");
    let mut text = String::new();
    for p in parts {
        text.push_str(&p.to_string());
        text.push('\n');
    }
    let f = fsop::create(
        dir.fd(),
        tmp.as_str(),
        OFlags::WRONLY | OFlags::TRUNC,
        Mode::from_raw_mode(0o644),
    )?;
    fsop::write_all(f.as_fd(), text.as_bytes())?;
    fsop::fsync(f.as_fd())?;
    fsop::renameat(dir.fd(), tmp.as_str(), dir.fd(), name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use format::{FileHeader, FileKind, Xattrs};

    fn header(kind: FileKind, mode: u32) -> FileHeader {
        let device = kind.is_device();
        FileHeader {
            kind,
            mode,
            uid: 0,
            gid: 0,
            rdev_major: u32::from(device),
            rdev_minor: if device { 3 } else { 0 },
            size: 0,
            xattrs: Xattrs::new(),
        }
    }

    #[test]
    fn forbidden_kinds() {
        let none = Forbidden::default();
        let dev = none.with(Forbid::Device);
        let suid = none.with(Forbid::Setuid);
        let both = dev.with(Forbid::Setuid);
        // (header, refused by: nothing, device, setuid, both)
        let (n, y) = (false, true);
        let table = [
            (header(FileKind::Regular, 0o755), [n, n, n, n]),
            (header(FileKind::Regular, 0o4755), [n, n, y, y]),
            (header(FileKind::Regular, 0o2711), [n, n, y, y]),
            (header(FileKind::Regular, 0o1777), [n, n, n, n]),
            (header(FileKind::CharDevice, 0o666), [n, y, n, y]),
            (header(FileKind::BlockDevice, 0o660), [n, y, n, y]),
            (header(FileKind::Fifo, 0o644), [n, n, n, n]),
            // A symlink's mode bits mean nothing; only regular files are setuid.
            (header(FileKind::Symlink, 0o4777), [n, n, n, n]),
        ];
        for (h, want) in &table {
            let got = [none, dev, suid, both].map(|f| f.refuses(h).is_some());
            assert_eq!(&got, want, "{h:?}");
        }
        let why = dev.refuses(&header(FileKind::CharDevice, 0o666)).unwrap();
        assert_eq!(why, "a character device 1:3, which --forbid device refuses");
    }
}
