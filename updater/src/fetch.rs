//! Updates from a static repository over HTTP or HTTPS (`berth update URL --channel
//! NAME`, `berth check`); the layout is `docs/FORMAT.md`, "Static repositories", and
//! what an `https://` repository's certificate must chain to is [`crate::tls`].
//!
//! 0. A TLS failure (unknown issuer, another name, expired) stops the run at the first
//!    request, naming the URL and the cause; nothing is written before it.
//! 1. The channel pointer is fetched (at most `channel::FILE_MAX` bytes), its signature
//!    verified over the exact body bytes with the running deployment's keys, and only
//!    then decoded.
//! 2. Freeze and replay protection: a serial lower than the last one accepted is
//!    refused, and so is the same serial with other bytes. A pointer is refused after its
//!    expiry, measured against the later of the clock and the newest issue time seen, so
//!    a device whose clock says 1970 still refuses what it knows to be stale. The state
//!    (`berth/state/channels/NAME`) is written durably before anything is downloaded.
//! 3. The delta from the running commit if the pointer lists one, else the full update,
//!    is downloaded in its split form into `berth/repo/tmp/download-…`: the superblock
//!    bounded by and checked against the length and sha256 the pointer signs, each part
//!    bounded by the length the superblock signs and checked against its sha256. A drop
//!    resumes with a `Range` request from the bytes already on disk, across runs and
//!    reboots too; nothing is downloaded twice. A server that sends more than the signed
//!    length is cut at that length.
//! 4. `berth update DIR` applies it (every check of a file update happens again).

use format::ObjectId;
use format::channel::UpdateRef;
use format::update::{self, Body};
use rustix::fs::AtFlags;
use store::Repo;

use crate::dirs::Dir;
use crate::error::{UpdaterError, bad};
use crate::part::Hashing;
use crate::progress::{self, Event};
use crate::pull::Pulled;
pub use crate::remote::FetchOptions;
use crate::remote::Remote;
use crate::update::{UpdateOptions, UpdateReport};
use crate::{Device, TMP_DIR};
pub use net::http::{RETRY_DELAY_MAX, Rates};

/// How a remote update reaches the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpdateKind {
    /// A delta from the running commit.
    Delta,
    /// The objects the device lacks, pulled one by one.
    Objects,
    /// The full update.
    Full,
    /// Nothing: the device is up to date.
    None,
}

impl UpdateKind {
    /// Its name, as JSON and the download directories say it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Delta => "delta",
            Self::Objects => "objects",
            Self::Full => "full",
            Self::None => "none",
        }
    }
}

impl std::fmt::Display for UpdateKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a channel offers, as `berth check` reports it.
#[derive(Debug, serde::Serialize)]
pub struct Offer {
    /// The channel's name.
    pub channel: String,
    /// The pointer's serial.
    pub serial: u64,
    /// The channel's commit.
    pub commit: String,
    /// Its version.
    pub version: String,
    /// Whether the channel's commit differs from the running one.
    pub available: bool,
    /// `delta` (from the running commit), `objects` (pull the objects the device lacks)
    /// or `full`.
    pub kind: UpdateKind,
    /// Bytes the update would download (before resuming); for `objects`, at most this.
    pub bytes: u64,
    /// When the pointer expires (seconds since the Unix epoch).
    pub expires: u64,
}

/// The result of `berth update URL`.
#[derive(Debug, serde::Serialize)]
pub struct RemoteReport {
    /// Bytes fetched by this run (resumed bytes are not fetched again).
    pub downloaded: u64,
    /// `delta`, `objects`, `full`, or `none` when already up to date.
    pub kind: UpdateKind,
    /// The update, unless there was nothing to do.
    pub update: Option<UpdateReport>,
}

impl Device {
    /// The running deployment's commit.
    pub(crate) fn running_commit(
        &self,
    ) -> Result<(format::record::DeploymentName, ObjectId), UpdaterError> {
        let (rec, _) = self.record()?;
        let running = self.running(&rec)?;
        let repo = Repo::open(&self.path.join("berth/repo"))?;
        let id = repo.resolve_commit(running.as_str())?;
        Ok((running, id))
    }

    /// `berth check`: what the channel offers, without downloading an update or
    /// writing anything.
    pub fn check(&self, url: &str, name: &str, opts: &FetchOptions) -> Result<Offer, UpdaterError> {
        let remote = Remote::new(url, opts)?;
        let (running, current) = self.running_commit()?;
        let (p, _) = self.pointer(&remote, name, &running)?;
        // What `update` would take first; an object pull fetches only the objects the
        // device lacks, so its bytes are an upper bound (the full update's bound it too).
        let (kind, bytes) = match (p.delta_from(&current), &p.objects) {
            (Some(d), _) => (UpdateKind::Delta, d.total_len),
            (None, Some(o)) => (
                UpdateKind::Objects,
                o.total_len
                    .min(o.superblock_len.saturating_add(p.full.total_len)),
            ),
            (None, None) => (UpdateKind::Full, p.full.total_len),
        };
        Ok(Offer {
            channel: p.channel.clone(),
            serial: p.serial,
            commit: p.commit.to_string(),
            version: p.version.clone(),
            available: self.offers_new(&p.commit, &current)?,
            kind,
            bytes,
            expires: p.expires,
        })
    }

    /// `berth update URL --channel NAME`.
    pub fn update_remote(
        &self,
        url: &str,
        name: &str,
        fetch: &FetchOptions,
        opts: UpdateOptions,
    ) -> Result<RemoteReport, UpdaterError> {
        let _lock = self.lock(crate::lock::LockKind::Store, "update")?;
        // The deadline covers the downloads as well as the apply.
        let deadline = crate::update::arm_deadline(url, opts);
        let remote = Remote::new(url, fetch)?;
        let (running, current) = self.running_commit()?;
        let (p, seen) = self.pointer(&remote, name, &running)?;
        self.remember(name, &seen)?;
        if !self.offers_new(&p.commit, &current)? {
            return Ok(RemoteReport {
                downloaded: 0,
                kind: UpdateKind::None,
                update: None,
            });
        }
        self.forget_downloads(&p.commit)?;
        let mut downloaded = 0;
        if p.delta_from(&current).is_none()
            && let Some(objects) = p.objects
        {
            let dir = self.download_dir(&p.commit, UpdateKind::Objects)?;
            match self.pull(&remote, &p, &objects, &dir, opts, deadline.as_ref())? {
                Pulled::Done {
                    report,
                    downloaded: got,
                } => {
                    drop(dir);
                    // Downloaded only: the index stays, so gc keeps what it names.
                    if report.installed {
                        self.remove_downloads_of(&p.commit);
                    }
                    return Ok(RemoteReport {
                        downloaded: got,
                        kind: UpdateKind::Objects,
                        update: Some(report),
                    });
                }
                Pulled::Costlier {
                    downloaded: got,
                    missing,
                } => {
                    // The index stays until the full update is in: a rerun need not
                    // fetch it again to come to the same choice.
                    progress::report(
                        opts.progress,
                        Event::Fallback {
                            objects_bytes: missing,
                            full_bytes: p.full.total_len,
                        },
                    );
                    downloaded = got;
                }
            }
        }
        let (kind, r, rel) = match p.delta_from(&current) {
            Some(r) => (
                UpdateKind::Delta,
                *r,
                format!("updates/{current}-{}", p.commit),
            ),
            None => (
                UpdateKind::Full,
                p.full,
                format!("updates/full-{}", p.commit),
            ),
        };
        let dir = self.download_dir(&p.commit, kind)?;
        downloaded += download_update(&remote, &rel, &r, &dir, opts)?;
        let report = self.apply_update(dir.path(), opts, deadline.as_ref())?;
        drop(dir);
        // Downloaded only: the files stay for the run that installs.
        if report.installed {
            self.remove_downloads_of(&p.commit);
        }
        Ok(RemoteReport {
            downloaded,
            kind,
            update: Some(report),
        })
    }

    /// Removes the download directories of commits other than `keep`: what an update
    /// the channel has moved past left behind would otherwise stay for good.
    fn forget_downloads(&self, keep: &ObjectId) -> Result<(), UpdaterError> {
        let ours = format!("download-{}-", &keep.to_string()[..16]);
        let Some(tmp) = self.own_dir(TMP_DIR, None)? else {
            return Ok(());
        };
        for name in self.download_dirs()? {
            if !name.starts_with(&ours) {
                tmp.remove(name.as_bytes())?;
            }
        }
        Ok(())
    }

    /// The names of the download directories (`berth/repo/tmp/download-…`).
    pub(crate) fn download_dirs(&self) -> Result<Vec<String>, UpdaterError> {
        let Some(tmp) = self.own_dir(TMP_DIR, None)? else {
            return Ok(Vec::new());
        };
        Ok(tmp
            .names()?
            .into_iter()
            .filter_map(|n| String::from_utf8(n).ok())
            .filter(|n| n.starts_with("download-"))
            .collect())
    }

    /// `berth/repo/tmp/download-<commit id16>-<kind>/`, made if missing.
    pub(crate) fn download_dir(
        &self,
        commit: &ObjectId,
        kind: UpdateKind,
    ) -> Result<Dir, UpdaterError> {
        let rel = format!(
            "{TMP_DIR}/download-{}-{}",
            &commit.to_string()[..16],
            kind.as_str()
        );
        self.own_dir(&rel, Some(0o700))?
            .ok_or_else(|| UpdaterError::State(format!("{rel}: not made")))
    }

    /// Removes the download directories of `commit`, installed now (best effort: left
    /// behind, they are only garbage that the next update removes). An update taken
    /// one way may have been downloaded another way before (a `--download-only` that
    /// fell back to the full update, installed later from the objects it stored).
    pub(crate) fn remove_downloads_of(&self, commit: &ObjectId) {
        let Ok(Some(tmp)) = self.own_dir(TMP_DIR, None) else {
            return;
        };
        for kind in [UpdateKind::Delta, UpdateKind::Objects, UpdateKind::Full] {
            let name = format!("download-{}-{}", &commit.to_string()[..16], kind.as_str());
            // Deliberately ignored: garbage at worst, removed by the next update.
            let _ = tmp.remove(name.as_bytes());
        }
    }

    /// Whether the channel's `commit` is something to install: not the running one, and
    /// not one the boot record knows (a trial that waits for its boot, the default or
    /// the previous deployment) or rolled back from last (it must not come back by
    /// itself). A deployment directory the record does not name is the leftover of an
    /// update cut short before its record write: offered again, so the update
    /// completes. `check` and `update` agree on it.
    fn offers_new(&self, commit: &ObjectId, running: &ObjectId) -> Result<bool, UpdaterError> {
        if commit == running {
            return Ok(false);
        }
        let name = format::record::DeploymentName::for_commit(commit);
        let (rec, _) = self.record()?;
        // A deployment the record names but that is gone from disk (a gc that ran
        // beside the update that made it, before commands took locks) is installed
        // again: otherwise the device would say "up to date" while it cannot boot it.
        let named = [rec.default, rec.trial, rec.previous].contains(&Some(name))
            && self.sysroot.probe(&name, b"/sbin/init") != sysroot::Bootable::Missing;
        // Rolled back from: not offered again by itself, unless this boot dropped it
        // because its deployment was gone (removed by a gc beside its update), which
        // says nothing about the release.
        let rolled_back =
            rec.last_rollback.is_some_and(|r| r.from == name) && !self.dropped_as_missing(&name)?;
        Ok(!(named || rolled_back))
    }

    /// Whether berth-init dropped the trial `name` this boot because its deployment
    /// directory was missing (`boot.json`: a `trial-unbootable` fallback, `missing`).
    fn dropped_as_missing(
        &self,
        name: &format::record::DeploymentName,
    ) -> Result<bool, UpdaterError> {
        let Some(report) = self.boot_report()? else {
            return Ok(false);
        };
        Ok(report.fallbacks.iter().any(|e| {
            e.event == Some(format::bootreport::EventKind::TrialUnbootable)
                && e.deployment.as_deref() == Some(name.as_str())
                && e.state == Some(sysroot::Bootable::Missing)
        }) && self.sysroot.probe(name, b"/sbin/init") == sysroot::Bootable::Missing)
    }
}

/// Downloads the split-form update `rel` (referenced by `r`) from `remote` into `dir`;
/// returns the bytes fetched.
fn download_update(
    remote: &Remote,
    rel: &str,
    r: &UpdateRef,
    dir: &Dir,
    opts: UpdateOptions,
) -> Result<u64, UpdaterError> {
    let sb_path = dir.join("superblock");
    let mut downloaded = remote.download(
        &format!("{rel}/superblock"),
        dir,
        "superblock",
        r.superblock_len,
    )?;
    let sb = dir
        .read("superblock", r.superblock_len)?
        .ok_or_else(|| bad(&sb_path, "vanished after its download"))?;
    if ObjectId::digest(&sb) != r.superblock_sha256 {
        let _ = fsop::unlinkat(dir.fd(), "superblock", AtFlags::empty());
        return Err(bad(
            &sb_path,
            format!(
                "{} does not match the sha256 its channel pointer signs; removed",
                remote.url(&format!("{rel}/superblock"))
            ),
        ));
    }
    // Its bytes are signed through the pointer; `update` verifies its own signature too.
    let body = update::decode_envelope(&sb)
        .and_then(|e| Body::decode(e.body))
        .map_err(|e| bad(&sb_path, e.to_string()))?;
    let on_disk = |dir: &Dir| -> u64 {
        dir.names().map_or(0, |names| {
            names
                .iter()
                .filter_map(|n| std::str::from_utf8(n).ok())
                .map(|n| dir.file_len(n).unwrap_or(0))
                .sum()
        })
    };
    progress::report(
        opts.progress,
        Event::Downloaded {
            downloaded: on_disk(dir),
            total: r.total_len,
        },
    );
    for (i, part) in body.parts.iter().enumerate() {
        let file = format!("part-{i:05}");
        let url = format!("{rel}/{file}");
        // Damaged in transit or on disk: fetched again once. A second mismatch is the
        // server's doing (a wrong file, or a lying Content-Range): said with its URL.
        for attempt in 0..2 {
            downloaded += remote.download(&url, dir, &file, part.len)?;
            let on_disk = dir
                .open_file(&file)?
                .ok_or_else(|| bad(&dir.join(&file), "vanished after its download"))?;
            let digest = Hashing::new(std::io::Read::take(on_disk, part.len))
                .finish()
                .map_err(|e| bad(&dir.join(&file), e.to_string()))?;
            if digest == part.sha256 {
                break;
            }
            fsop::unlinkat(dir.fd(), file.as_str(), AtFlags::empty())
                .map_err(|e| bad(&dir.join(&file), e.to_string()))?;
            if attempt == 1 {
                return Err(UpdaterError::State(format!(
                    "{}: does not match the sha256 its superblock signs, twice (a damaged file on the server, or wrong Content-Range answers); removed",
                    remote.url(&url)
                )));
            }
        }
        progress::report(
            opts.progress,
            Event::Downloaded {
                downloaded: on_disk(dir),
                total: r.total_len,
            },
        );
    }
    Ok(downloaded)
}
