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

use std::path::Path;

use format::Commit;
use format::ObjectId;
use format::record::DeploymentName;
use format::update::Body;
use rustix::fd::AsFd as _;
use rustix::fs::{AtFlags, Mode, OFlags};
use store::Repo;

use crate::Device;
use crate::apply;
use crate::checks::TreeChecks;
use crate::deadline::{Armed, Deadline};
use crate::dirs::Dir;
use crate::error::{UpdaterError, bad};
use crate::part::PartRun;
use crate::policy::{self, Forbidden};
use crate::progress::{self, Event, Progress};
use crate::source::{self, Source};

/// Options of [`Device::update`].
#[derive(Debug, Clone, Copy)]
pub struct UpdateOptions {
    /// Accept a target that is not newer than the default deployment.
    pub allow_downgrade: bool,
    /// Boots the new deployment gets as a trial.
    pub tries: u8,
    /// Where progress goes.
    pub progress: Progress,
    /// Test hook: stop with an error after applying this many parts.
    #[cfg(feature = "test-hooks")]
    pub abort_after_parts: Option<usize>,
    /// Files the update may not make, checked before each is written.
    pub forbid: Forbidden,
    /// Give up unless the update is ready to switch to within this time.
    pub deadline: Option<Deadline>,
    /// Fetch, verify and store the update's objects, and stop there: the deployments
    /// and the record are left alone, and a later update from the same source installs
    /// it without fetching or applying again.
    pub download_only: bool,
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
    /// Whether the deployment was installed as the trial (not with `download_only`).
    pub installed: bool,
}

/// Arms `opts.deadline`, if any, for an update from `source`.
pub(crate) fn arm_deadline(source: &str, opts: UpdateOptions) -> Option<Armed> {
    opts.deadline.map(|d| {
        d.arm(format!(
            "{source}: the update was not applied within the {} s deadline (a stalled or slow source); stopped before switching, the device is unchanged",
            d.limit.as_secs()
        ))
    })
}

impl Device {
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
        deadline: Option<&Armed>,
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
        let commit_sigs = source::commit_signatures(file, &body)?;
        let id = ObjectId::digest(&body.commit);
        let name = DeploymentName::for_commit(&id);
        let repo = Repo::open(&self.path.join("berth/repo"))?;
        self.preflight(&repo, file, &body, &commit, &default, opts)?;
        #[cfg(feature = "test-hooks")]
        pause_after_checks();

        let resume = Resume::open(self, &id)?;
        let done = resume.done.borrow().clone();
        // Every part is checked against its signed hash before the first is applied, so a
        // damaged file changes nothing at all (applying re-checks each part as it goes).
        source::check_all_parts(file, &mut f, split, parts_start, &body, &done)?;
        let base = apply::base_order(&repo, body.from.as_ref())?;
        let mut checks = TreeChecks::new(&repo, commit.root);
        // Parts that did not make the commit must not be skipped next time: the next
        // try (of this update or a repaired one) starts from the first part.
        let forget_progress = |e: &UpdaterError| {
            if matches!(e, UpdaterError::Incomplete(_)) {
                resume.forget();
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
            let (mut pf, at, shown) = source::open_part(file, &mut f, split, i, start, part)?;
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
            resume.applied(i)?;
            progress::report(
                opts.progress,
                Event::Part {
                    part: i + 1,
                    parts: body.parts.len(),
                    bytes: part.size,
                },
            );
            #[cfg(feature = "test-hooks")]
            if opts.abort_after_parts.is_some_and(|n| applied >= n) {
                return Err(UpdaterError::State(format!(
                    "stopped after {applied} parts (test hook)"
                )));
            }
        }

        let mut report = UpdateReport {
            commit: id.to_string(),
            version: commit.version.to_string(),
            deployment: name.as_str().to_owned(),
            parts_applied: applied,
            parts_skipped: done.len(),
            objects,
            etc_skipped: Vec::new(),
            installed: false,
        };
        // Every part is in the store and recorded as applied: the next run from the
        // same source skips them all and installs.
        if opts.download_only {
            return Ok(report);
        }
        let skipped = self
            .finish_update(
                &repo,
                file,
                &mut checks,
                (&commit, commit_sigs.as_ref()),
                &default,
                opts.tries,
                deadline,
            )
            .inspect_err(forget_progress)?;
        // Left behind, it would only be garbage: the update is complete.
        resume.forget();
        report.etc_skipped = skipped.iter().map(|p| p.display().to_string()).collect();
        report.installed = true;
        Ok(report)
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
        policy::check_newer(repo, file, commit, default, opts.allow_downgrade)?;
        // A damaged loader configuration fails the update before anything is written.
        self.boot_config()?;
        policy::check_base(repo, file, body.from)?;
        self.check_space(body.parts.iter().map(|p| p.size).sum())
    }
}

/// Test hook: `BERTH_TEST_PAUSE_AFTER_CHECKS=FIFO` waits, once every check has passed
/// and before the first write, until a writer has opened the FIFO and closed it again,
/// so a test can change the device (fill its filesystem) in between, as another
/// program could.
#[cfg(feature = "test-hooks")]
fn pause_after_checks() {
    if let Some(fifo) = std::env::var_os("BERTH_TEST_PAUSE_AFTER_CHECKS") {
        // Ignored on purpose: a FIFO that cannot be read only skips the pause, and the
        // test waiting on it then fails (its open for writing never returns).
        let _ = std::fs::read(fifo);
    }
}

/// Forgets what an earlier run of the update to `commit` applied: it is installed now
/// (by another way, an object pull, after a `--download-only` that took the full
/// update). Best effort: left behind, the file is only garbage.
pub(crate) fn forget_progress(device: &Device, commit: &ObjectId) {
    if let Ok(r) = Resume::open(device, commit) {
        r.forget();
    }
}

/// The parts of an update applied so far, in `berth/repo/tmp/update-<commit id16>.done`
/// (a part number per line), so an interrupted update resumes with the next part.
struct Resume {
    tmp: Dir,
    name: String,
    /// The parts applied by an interrupted run, and by this one.
    done: std::cell::RefCell<Vec<usize>>,
}

impl Resume {
    /// Reads what an interrupted run of the update to `commit` applied. Damaged, it
    /// only costs applying parts again: every part is checked before it is applied.
    fn open(device: &Device, commit: &ObjectId) -> Result<Self, UpdaterError> {
        let tmp = device
            .own_dir(crate::TMP_DIR, Some(0o755))?
            .ok_or_else(|| UpdaterError::State(format!("{}: not made", crate::TMP_DIR)))?;
        let name = format!("update-{}.done", &commit.to_string()[..16]);
        let done = tmp
            .read(&name, 1 << 20)
            .ok()
            .flatten()
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .lines()
                    .filter_map(|l| l.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            tmp,
            name,
            done: std::cell::RefCell::new(done),
        })
    }

    /// Records that part `i` was applied: temp file, fsync, rename (the directory is
    /// synced with the next transaction's syncfs).
    fn applied(&self, i: usize) -> Result<(), UpdaterError> {
        let mut done = self.done.borrow_mut();
        done.push(i);
        done.sort_unstable();
        done.dedup();
        let tmp = format!("{}.tmp", self.name);
        let mut text = String::new();
        for p in done.iter() {
            text.push_str(&p.to_string());
            text.push('\n');
        }
        let write = || {
            let f = fsop::create(
                self.tmp.fd(),
                tmp.as_str(),
                OFlags::WRONLY | OFlags::TRUNC,
                Mode::from_raw_mode(0o644),
            )?;
            fsop::write_all(f.as_fd(), text.as_bytes())?;
            fsop::fsync(f.as_fd())?;
            fsop::renameat(
                self.tmp.fd(),
                tmp.as_str(),
                self.tmp.fd(),
                self.name.as_str(),
            )
        };
        write().map_err(|e| bad(&self.tmp.join(&self.name), e.to_string()))
    }

    /// Forgets the progress: the update is complete, or its parts did not make the
    /// commit and the next try must start from the first part. Left behind, the file
    /// is only garbage, so a failure is ignored.
    fn forget(&self) {
        let _ignored = fsop::unlinkat(self.tmp.fd(), self.name.as_str(), AtFlags::empty());
    }
}
