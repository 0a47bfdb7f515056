//! `berth agent`: a device of an Eclipse hawkBit server (its Direct Device Integration
//! API, [`ddi`]), polled one cycle at a time ([`Agent::cycle`]; the program sleeps and
//! backs off between cycles).
//!
//! A cycle: judge a pending trial by the record (`berth/state/agent`,
//! [`format::ddi::Pending`]); read the controller's base; send a pending report (unless
//! the base's `installedBase` names its action: taken already); send the device's
//! attributes if the server asks; then act on the open action, if any:
//! - a **deployment**: pick the artifact to take (the delta whose base the device runs,
//!   else a full update; each artifact's signed head is read with `Range` and verified
//!   before anything is downloaded), download it (resumed, capped, progress throttled),
//!   check the server's size and sha256 as transport checks, and apply it as `berth
//!   update` would, every check included. A download-only action, or one whose
//!   maintenance window is closed, stops once the update is in the store
//!   (`--download-only`); otherwise the trial is written, the server told `proceeding`,
//!   and the device rebooted by the configured command.
//! - a **cancel**: accepted (`closed`) while nothing is installed, the downloads
//!   removed; `rejected` once the trial is written.
//!
//! The final feedback of an installed action is sent only from the record: `success`
//! once the trial is the committed default (by `berth health` or `mark-good`),
//! `failure` with the reason once it was rolled back. It is written to
//! `berth/state/agent` before it is sent, and sent again each cycle until the server
//! takes it (or answers `410`: the action ended some other way).

mod ddi;

use std::io::Read as _;
use std::time::{Duration, Instant};

use format::ObjectId;
use format::ddi::{Deployment, Execution, Feedback, Finished, Handling, Pending, Phase, Window};
use format::record::{DeploymentName, RollbackReason};
use sha2::Digest as _;

pub use ddi::Token;

use crate::Device;
use crate::dirs::Dir;
use crate::error::{Refusal, UpdaterError, refused};
use crate::fetch::{FetchOptions, UpdateKind};
use crate::lock::LockKind;
use crate::policy::Forbidden;
use crate::progress::Progress;
use crate::remote::{DownloadTo, download_file};
use crate::update::UpdateOptions;
use ddi::{Ddi, Posted, now_ms};

/// The agent's file under `berth/state`.
const STATE_FILE: &str = "agent";

/// How the agent reaches its server and installs what it is given.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The server's URL (`https://hawkbit.example:8443`).
    pub server: String,
    /// The tenant (`DEFAULT` on a stock hawkBit).
    pub tenant: String,
    /// The device's controller id.
    pub controller_id: String,
    /// How it authenticates (none: the server allows anonymous devices).
    pub token: Option<Token>,
    /// TLS trust, rates and the bandwidth cap.
    pub fetch: FetchOptions,
    /// Boots a new deployment gets as a trial.
    pub tries: u8,
    /// Files an update may not make.
    pub forbid: Forbidden,
    /// The board's name, sent as an attribute.
    pub board: Option<String>,
    /// Where progress of an apply goes.
    pub progress: Progress,
}

/// What one cycle did.
#[derive(Debug, Clone, Default)]
pub struct Cycle {
    /// How long the server asks the device to sleep before the next poll.
    pub sleep: Duration,
    /// What happened, one line each, for the log.
    pub did: Vec<String>,
    /// A trial was written: the device should reboot into it.
    pub reboot: bool,
}

/// A device polling one hawkBit server.
#[derive(Debug)]
pub struct Agent<'a> {
    device: &'a Device,
    opts: AgentOptions,
    ddi: Ddi,
}

/// How an installed commit stands in the boot record.
enum Standing {
    /// Still the trial: the outcome comes with a boot.
    Waiting,
    /// The committed default.
    Committed,
    /// Rolled back from, for this reason.
    RolledBack(RollbackReason),
}

/// The artifact the device takes: its link, name, size and server hash, and its
/// verified head.
struct Chosen {
    link: String,
    filename: String,
    size: u64,
    sha256: Option<String>,
    commit: ObjectId,
    kind: UpdateKind,
}

impl<'a> Agent<'a> {
    /// An agent for `device`; nothing is sent yet.
    pub fn new(device: &'a Device, opts: AgentOptions) -> Result<Self, UpdaterError> {
        let ddi = Ddi::new(
            &opts.server,
            &opts.tenant,
            &opts.controller_id,
            opts.token.as_ref(),
            &opts.fetch,
        )?;
        Ok(Self { device, opts, ddi })
    }

    /// One poll cycle, and the action it starts.
    pub fn cycle(&self) -> Result<Cycle, UpdaterError> {
        let mut c = Cycle::default();
        self.judge()?;
        let mut base = self.ddi.base()?;
        if self.report(base.installed.as_deref(), &mut c)? {
            // The report ended an action the base still showed as open.
            base = self.ddi.base()?;
        }
        c.sleep = Duration::from_secs(base.sleep_s.into());
        if let Some(href) = &base.config_data {
            let attrs = self.attributes()?;
            self.ddi.put_attributes(href, &attrs)?;
            c.did.push(format!("sent {} attributes", attrs.len()));
        }
        if let Some(href) = &base.cancel {
            self.cancel(href, &mut c)?;
        } else if let Some(href) = &base.deployment {
            let d = match self.ddi.deployment(href) {
                Ok(d) => d,
                Err(e @ UpdaterError::Refused { .. }) => {
                    // A deployment the device cannot read: the server hears why, on the
                    // action its link names, and nothing changes on the device.
                    if let Some(id) = action_of(href) {
                        self.say(id, Execution::Closed, Finished::Failure, &e.to_string())?;
                    }
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            self.deploy(&d, &mut c)?;
        } else if base.confirmation.is_some() {
            c.did.push(
                "the server waits for a confirmation, which Berth does not give (turn user consent off for Berth devices)".into(),
            );
        }
        Ok(c)
    }

    /// The device's attributes: Berth's version, the booted commit and release, the
    /// board and the architecture.
    fn attributes(&self) -> Result<Vec<(String, String)>, UpdaterError> {
        let status = self.device.status()?;
        let mut a = vec![
            (
                "berth_version".to_owned(),
                env!("CARGO_PKG_VERSION").to_owned(),
            ),
            ("architecture".to_owned(), std::env::consts::ARCH.to_owned()),
        ];
        if let Some(d) = status.deployments.iter().find(|d| d.booted) {
            a.push(("deployment".to_owned(), d.name.clone()));
            a.extend(d.commit.clone().map(|c| ("commit".to_owned(), c)));
            a.extend(d.version.clone().map(|v| ("version".to_owned(), v)));
        }
        a.extend(self.opts.board.clone().map(|b| ("board".to_owned(), b)));
        Ok(a)
    }

    /// `berth/state`, made if missing with `create`.
    fn state_dir(&self, create: bool) -> Result<Option<Dir>, UpdaterError> {
        self.device.own_dir("berth/state", create.then_some(0o755))
    }

    /// What is pending; a damaged file is an error that names it (a final feedback
    /// must not be forgotten, nor a trial reported as a success it was not).
    fn pending(&self) -> Result<Option<Pending>, UpdaterError> {
        let Some(dir) = self.state_dir(false)? else {
            return Ok(None);
        };
        let Some(bytes) = dir.read(STATE_FILE, format::ddi::PENDING_MAX as u64)? else {
            return Ok(None);
        };
        Pending::decode(&bytes).map(Some).map_err(|e| {
            UpdaterError::State(format!(
                "{}: {e}; the agent cannot tell what it owes the server",
                dir.join(STATE_FILE).display()
            ))
        })
    }

    fn remember(&self, p: &Pending) -> Result<(), UpdaterError> {
        let dir = self
            .state_dir(true)?
            .ok_or_else(|| UpdaterError::State("berth/state: not made".into()))?;
        dir.replace(STATE_FILE, p.encode().as_bytes(), 0o644)
    }

    fn forget(&self) -> Result<(), UpdaterError> {
        if let Some(dir) = self.state_dir(false)? {
            dir.remove(STATE_FILE.as_bytes())?;
            dir.sync()?;
        }
        Ok(())
    }

    /// Turns a pending trial that has an outcome in the record into its final
    /// feedback, written down before anything is sent: the verdict is the record's at
    /// the first look after the boot, whatever a later command does to the record.
    fn judge(&self) -> Result<(), UpdaterError> {
        let Some(p) = self.pending()? else {
            return Ok(());
        };
        let Phase::Trial(commit) = &p.phase else {
            return Ok(());
        };
        match self.standing(commit)? {
            None | Some(Standing::Waiting) => Ok(()),
            Some(s) => {
                let (finished, detail) = self.verdict(commit, &s)?;
                self.remember(&Pending {
                    action: p.action.clone(),
                    phase: Phase::Report { finished, detail },
                })
            }
        }
    }

    /// Sends a pending final feedback until the server takes it. `installed` is the
    /// base's `installedBase` link: a report on the action it names was taken already
    /// (a power cut came between the server's answer and the state file's removal), so
    /// it is not sent again. Whether a report was sent.
    fn report(&self, installed: Option<&str>, c: &mut Cycle) -> Result<bool, UpdaterError> {
        let Some(p) = self.pending()? else {
            return Ok(false);
        };
        let Phase::Report { finished, detail } = &p.phase else {
            return Ok(false);
        };
        let taken = installed.is_some_and(|l| {
            l.split('?')
                .next()
                .unwrap_or(l)
                .ends_with(&format!("/installedBase/{}", p.action))
        });
        if taken {
            self.forget()?;
            c.did.push(format!(
                "action {}: the server has it as installed already",
                p.action
            ));
            return Ok(false);
        }
        let posted = self.ddi.feedback(
            &p.action,
            false,
            &Feedback {
                timestamp_ms: now_ms(),
                execution: Execution::Closed,
                finished: *finished,
                progress: None,
                details: &[detail],
            },
        )?;
        self.forget()?;
        c.did.push(match posted {
            Posted::Taken => format!(
                "action {}: reported {}: {detail}",
                p.action,
                finished.as_str()
            ),
            Posted::Gone => format!(
                "action {}: had ended on the server (410); not reported",
                p.action
            ),
        });
        Ok(true)
    }

    /// The final word on an installed commit that has an outcome.
    fn verdict(&self, commit: &ObjectId, s: &Standing) -> Result<(Finished, String), UpdaterError> {
        let name = DeploymentName::for_commit(commit);
        let name = name.as_str();
        Ok(match s {
            Standing::Committed => (
                Finished::Success,
                format!("{name} is the committed default"),
            ),
            Standing::RolledBack(reason) => {
                let boot = self.device.status()?.boot_reason.unwrap_or_default();
                (
                    Finished::Failure,
                    format!(
                        "rolled back from {name} ({}){}",
                        reason.as_str(),
                        if boot.is_empty() {
                            String::new()
                        } else {
                            format!("; this boot: {boot}")
                        }
                    ),
                )
            }
            Standing::Waiting => (Finished::None, String::new()),
        })
    }

    /// How `commit` stands in the record, if the record knows it.
    fn standing(&self, commit: &ObjectId) -> Result<Option<Standing>, UpdaterError> {
        let name = DeploymentName::for_commit(commit);
        let (rec, _) = self.device.record()?;
        Ok(if rec.trial == Some(name) {
            Some(Standing::Waiting)
        } else if rec.default == Some(name) {
            Some(Standing::Committed)
        } else {
            rec.last_rollback
                .filter(|r| r.from == name)
                .map(|r| Standing::RolledBack(r.reason))
        })
    }

    /// Posts a feedback on a deployment action; a `410` is fine (it ended).
    fn say(
        &self,
        action: &str,
        execution: Execution,
        finished: Finished,
        detail: &str,
    ) -> Result<Posted, UpdaterError> {
        self.ddi.feedback(
            action,
            false,
            &Feedback {
                timestamp_ms: now_ms(),
                execution,
                finished,
                progress: None,
                details: &[detail],
            },
        )
    }

    /// Acts on a deployment action.
    fn deploy(&self, d: &Deployment, c: &mut Cycle) -> Result<(), UpdaterError> {
        let pending = self.pending()?.filter(|p| p.action == d.id);
        let waits = d.update == Handling::Skip || d.window == Some(Window::Unavailable);
        match pending.as_ref().map(|p| &p.phase) {
            // Already installed, or the outcome is being reported: nothing new to do.
            Some(Phase::Trial(_) | Phase::Report { .. }) => return Ok(()),
            Some(Phase::Downloaded(_)) if waits => return Ok(()),
            _ => {}
        }
        match self.take(d, waits, c) {
            Ok(()) => Ok(()),
            // Another berth command holds the store (a person's gc, a timer's update):
            // not the action's fault; the cycle fails and a later one tries again.
            Err(e @ UpdaterError::Busy(_)) => Err(e),
            Err(e) => {
                // A download cut by a cancel (hawkBit answers 404 for the artifacts of an
                // action being canceled): answer the cancel instead.
                if let Ok(base) = self.ddi.base()
                    && let Some(href) = base.cancel
                {
                    c.did.push(format!("action {}: stopped: {e}", d.id));
                    return self.cancel(&href, c);
                }
                let line = e.to_string();
                c.did.push(format!("action {}: failed: {line}", d.id));
                // The server hears why; if it will not listen, the cycle fails.
                self.say(&d.id, Execution::Closed, Finished::Failure, &line)?;
                if self.pending()?.is_some_and(|p| p.action == d.id) {
                    self.forget()?;
                }
                Ok(())
            }
        }
    }

    /// Downloads, verifies and installs (or only stores) the deployment's update.
    fn take(&self, d: &Deployment, waits: bool, c: &mut Cycle) -> Result<(), UpdaterError> {
        let _lock = self.device.lock(LockKind::Store, "agent")?;
        let chosen = self.choose(d)?;
        let name = DeploymentName::for_commit(&chosen.commit);
        let name = name.as_str();
        if let Some(s) = self.standing(&chosen.commit)? {
            // Installed before (a power cut between the trial and this state, or the
            // device already runs it): no second install.
            let phase = match s {
                Standing::Waiting => Phase::Trial(chosen.commit),
                s => {
                    let (finished, detail) = self.verdict(&chosen.commit, &s)?;
                    Phase::Report { finished, detail }
                }
            };
            self.remember(&Pending {
                action: d.id.clone(),
                phase,
            })?;
            c.did
                .push(format!("action {}: {name} is known to the record", d.id));
            return Ok(());
        }
        let dir = self.device.download_dir(&chosen.commit, chosen.kind)?;
        let file = "update.berth";
        let stored = self.store(d, &chosen, waits, &dir, file, c);
        if stored.is_err() {
            drop(dir);
            self.device.remove_downloads_of(&chosen.commit);
        }
        let report = stored?;
        if waits {
            return Ok(());
        }
        self.device.remove_downloads_of(&chosen.commit);
        self.remember(&Pending {
            action: d.id.clone(),
            phase: Phase::Trial(chosen.commit),
        })?;
        self.say(
            &d.id,
            Execution::Proceeding,
            Finished::None,
            &format!("trial {} ({}) written, rebooting", name, report.version),
        )?;
        c.did.push(format!("action {}: trial {name} written", d.id));
        c.reboot = true;
        Ok(())
    }

    /// Downloads the chosen artifact and applies it: into the store only if the action
    /// `waits`, else as the trial.
    fn store(
        &self,
        d: &Deployment,
        chosen: &Chosen,
        waits: bool,
        dir: &Dir,
        file: &str,
        c: &mut Cycle,
    ) -> Result<crate::update::UpdateReport, UpdaterError> {
        let name = DeploymentName::for_commit(&chosen.commit);
        let name = name.as_str();
        let got = self.download(&d.id, chosen, dir, file)?;
        c.did.push(format!(
            "action {}: downloaded {} ({got} bytes fetched)",
            d.id, chosen.filename
        ));
        let opts = UpdateOptions {
            allow_downgrade: false,
            tries: self.opts.tries,
            progress: self.opts.progress,
            #[cfg(feature = "test-hooks")]
            abort_after_parts: None,
            forbid: self.opts.forbid,
            deadline: None,
            download_only: waits,
        };
        let report = self.device.apply_update(&dir.join(file), opts, None)?;
        if waits {
            self.remember(&Pending {
                action: d.id.clone(),
                phase: Phase::Downloaded(chosen.commit),
            })?;
            if d.update == Handling::Skip {
                self.say(
                    &d.id,
                    Execution::Downloaded,
                    Finished::None,
                    &format!("{} {} is in the store", report.version, name),
                )?;
                self.forget()?;
            } else {
                self.say(
                    &d.id,
                    Execution::Proceeding,
                    Finished::None,
                    &format!(
                        "{} {} is in the store; installing when the maintenance window opens",
                        report.version, name
                    ),
                )?;
            }
            c.did.push(format!(
                "action {}: stored {}, not installed",
                d.id, report.version
            ));
        }
        Ok(report)
    }

    /// The artifact to take: the delta from the running commit, else a full update.
    /// Each artifact's head is read and its signature verified first, so a forged or
    /// foreign file is refused before it is downloaded.
    fn choose(&self, d: &Deployment) -> Result<Chosen, UpdaterError> {
        let (running, current) = self.device.running_commit()?;
        let (signer, keys) = self.device.trusted_keys(&running)?;
        let mut full = None;
        let mut refusal = None;
        for a in &d.artifacts {
            let link = self.ddi.on_server(&a.link)?.to_owned();
            let shown = format!("artifact {}", a.filename);
            let body = match self.head(&link, &shown).and_then(|head| {
                crate::source::verify_envelope(&head, &shown, &keys, &signer).map(|(b, _)| b)
            }) {
                Ok(b) => b,
                Err(e) => {
                    refusal.get_or_insert(e);
                    continue;
                }
            };
            let chosen = |kind| Chosen {
                link: link.clone(),
                filename: a.filename.clone(),
                size: a.size,
                sha256: a.sha256.clone(),
                commit: ObjectId::digest(&body.commit),
                kind,
            };
            match body.from {
                Some(from) if from == current => return Ok(chosen(UpdateKind::Delta)),
                None if full.is_none() => full = Some(chosen(UpdateKind::Full)),
                _ => {}
            }
        }
        full.ok_or_else(|| {
            refusal.unwrap_or_else(|| {
                UpdaterError::State(format!(
                    "action {}: none of its {} artifacts is a full update or a delta from the running commit {}",
                    d.id,
                    d.artifacts.len(),
                    running.as_str()
                ))
            })
        })
    }

    /// An artifact's envelope (head, body, signatures), read with `Range` (resumed
    /// where a dropped connection stopped it).
    fn head(&self, link: &str, shown: &str) -> Result<Vec<u8>, UpdaterError> {
        let mut head = Vec::new();
        let mut fruitless = 0;
        loop {
            let need = format::update::envelope_len(&head)
                .map_err(|e| refused(shown, Refusal::Invalid(e.to_string())))?;
            if head.len() >= need {
                return Ok(head);
            }
            let from = head.len() as u64;
            let more = self.ddi.range(link, from, (need as u64).max(4096))?;
            if more.is_empty() {
                fruitless += 1;
                if fruitless > 3 {
                    return Err(refused(
                        shown,
                        Refusal::Invalid(format!(
                            "truncated: {from} bytes, its superblock needs {need}"
                        )),
                    ));
                }
            }
            head.extend_from_slice(&more);
        }
    }

    /// Downloads the chosen artifact into `dir/file` (resumed, capped), with throttled
    /// progress feedback, and checks the server's size and sha256.
    fn download(
        &self,
        action: &str,
        chosen: &Chosen,
        dir: &Dir,
        file: &str,
    ) -> Result<u64, UpdaterError> {
        let mut last: Option<(Instant, u64)> = None;
        let mut progress = |have: u64, len: u64| {
            let pct = have.saturating_mul(100) / len.max(1);
            // At most one a second, and only per 5% step.
            if last.is_some_and(|(t, p)| t.elapsed() < Duration::from_secs(1) || pct < p + 5) {
                return;
            }
            last = Some((Instant::now(), pct));
            // Progress is a courtesy: a lost one changes nothing.
            let _ = self.ddi.feedback(
                action,
                false,
                &Feedback {
                    timestamp_ms: now_ms(),
                    execution: Execution::Proceeding,
                    finished: Finished::None,
                    progress: Some((pct, 100)),
                    details: &["downloading"],
                },
            );
        };
        let got = download_file(
            self.ddi.client(),
            &chosen.link,
            &format!("artifact {}", chosen.filename),
            &DownloadTo {
                dir,
                name: file,
                len: chosen.size,
                rates: &self.opts.fetch.rates,
            },
            &mut progress,
        )?;
        if let Some(want) = &chosen.sha256 {
            let mut f = dir.open_file(file)?.ok_or_else(|| {
                UpdaterError::State(format!("{}: gone", dir.join(file).display()))
            })?;
            let mut h = sha2::Sha256::new();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = f.read(&mut buf).map_err(|e| {
                    UpdaterError::State(format!("{}: {e}", dir.join(file).display()))
                })?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            let have = format::ObjectId::from_bytes(h.finalize().into()).to_string();
            if !have.eq_ignore_ascii_case(want) {
                dir.remove(file.as_bytes())?;
                return Err(refused(
                    format!("artifact {}", chosen.filename),
                    Refusal::Invalid(format!(
                        "its sha256 is {have}, not the {want} the server lists (a transport fault); removed"
                    )),
                ));
            }
        }
        Ok(got)
    }

    /// Acts on a cancel action: accepted while nothing is installed, rejected once the
    /// trial is written.
    fn cancel(&self, href: &str, c: &mut Cycle) -> Result<(), UpdaterError> {
        let cancel = self.ddi.cancel(href)?;
        let pending = self.pending()?.filter(|p| p.action == cancel.stop_id);
        let (execution, finished, detail) = match pending.as_ref().map(|p| &p.phase) {
            Some(Phase::Trial(_) | Phase::Report { .. }) => (
                Execution::Rejected,
                Finished::Success,
                "too late to cancel: the trial is written",
            ),
            other => {
                let _lock = self.device.lock(LockKind::Store, "agent")?;
                if let Some(Phase::Downloaded(commit)) = other {
                    self.device.remove_downloads_of(commit);
                }
                if pending.is_some() {
                    self.forget()?;
                }
                (
                    Execution::Closed,
                    Finished::Success,
                    "canceled; nothing was installed",
                )
            }
        };
        self.ddi.feedback(
            &cancel.id,
            true,
            &Feedback {
                timestamp_ms: now_ms(),
                execution,
                finished,
                progress: None,
                details: &[detail],
            },
        )?;
        c.did.push(format!(
            "cancel of action {}: {}",
            cancel.stop_id,
            execution.as_str()
        ));
        Ok(())
    }
}

/// The action id in a `…/deploymentBase/{id}[?c=…]` link.
fn action_of(href: &str) -> Option<&str> {
    let path = href.split('?').next()?;
    let (_, id) = path.rsplit_once("/deploymentBase/")?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

#[cfg(test)]
mod tests {
    #[test]
    fn action_ids_come_from_deployment_links() {
        let a = super::action_of;
        assert_eq!(
            a("http://h/T/controller/v1/d/deploymentBase/17?c=-2129"),
            Some("17")
        );
        assert_eq!(
            a("http://h/T/controller/v1/d/deploymentBase/17"),
            Some("17")
        );
        assert_eq!(a("http://h/T/controller/v1/d/deploymentBase/"), None);
        assert_eq!(a("http://h/T/controller/v1/d/cancelAction/17"), None);
        assert_eq!(a("http://h/T/controller/v1/d/deploymentBase/1/x"), None);
    }
}
