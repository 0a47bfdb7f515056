//! `berth status` and `berth fsck`: what the device holds, and whether it is sound.

use std::path::PathBuf;

use format::record::{DeploymentName, RollbackReason};
use store::Repo;
use sysroot::{Bootable, CopyState};

use crate::{Device, UpdaterError, lock};

/// One deployment, as `status` reports it.
#[derive(Debug, Clone, serde::Serialize)]
#[allow(clippy::struct_excessive_bools)] // the `status --json` contract (README.md) has these keys
pub struct DeploymentStatus {
    /// Its name (the first 16 hex digits of its commit id).
    pub name: String,
    /// Its commit id, if the store has it.
    pub commit: Option<String>,
    /// Its release version, if the store has the commit.
    pub version: Option<String>,
    /// Whether it is running now.
    pub booted: bool,
    /// Whether it is the default.
    pub default: bool,
    /// Whether it is the trial.
    pub trial: bool,
    /// Whether it is the previous (fallback) deployment.
    pub previous: bool,
    /// Boots the trial has left (trial only).
    pub tries_left: Option<u8>,
    /// Whether it can boot.
    pub state: Bootable,
}

/// The last rollback.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RollbackStatus {
    /// The deployment given up.
    pub from: String,
    /// Why.
    pub reason: RollbackReason,
}

/// What `berth status` shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    /// The sysroot.
    pub sysroot: PathBuf,
    /// The record's generation (None without a valid record).
    pub record_generation: Option<u64>,
    /// What each copy of the record holds.
    pub record_copies: [CopyStatus; 2],
    /// Deployments: default, trial, previous first, then others on disk.
    pub deployments: Vec<DeploymentStatus>,
    /// The last rollback recorded.
    pub last_rollback: Option<RollbackStatus>,
    /// Why this boot's deployment was chosen, from `/run/berth/boot.json` (with the
    /// trial the boot loader gave up, when it fell back).
    pub boot_reason: Option<String>,
}

/// What a copy of the boot record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CopyStatus {
    /// A record that decodes and checks.
    Valid,
    /// Something that does not.
    Invalid,
    /// Nothing.
    Missing,
}

impl CopyStatus {
    /// Its token, as `berth status` and its JSON (serde's kebab-case) say it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Invalid => "invalid",
            Self::Missing => "missing",
        }
    }
}

impl Device {
    /// The device's state.
    pub fn status(&self) -> Result<Status, UpdaterError> {
        let (current, copies) = self.sysroot.read_record();
        let record = current.map(|c| c.0);
        let booted = self.booted()?;
        let repo = Repo::open(&self.path.join("berth/repo")).ok();
        let mut names: Vec<DeploymentName> = Vec::new();
        if let Some(r) = &record {
            names.extend([r.default, r.trial, r.previous].into_iter().flatten());
        }
        for d in self.sysroot.deployments(4096) {
            if !names.contains(&d) {
                names.push(d);
            }
        }
        let deployments = names
            .iter()
            .map(|n| {
                let commit = repo.as_ref().and_then(|r| {
                    let id = r.resolve_commit(n.as_str()).ok()?;
                    let (c, _) = r.read_commit(&id).ok()?;
                    Some((id.to_string(), c.version.to_string()))
                });
                let is = |x: Option<DeploymentName>| x.as_ref() == Some(n);
                DeploymentStatus {
                    name: n.as_str().to_owned(),
                    commit: commit.as_ref().map(|c| c.0.clone()),
                    version: commit.map(|c| c.1),
                    booted: booted.as_ref().is_some_and(|b| b.0 == n.as_str()),
                    default: record.is_some_and(|r| is(r.default)),
                    trial: record.is_some_and(|r| is(r.trial)),
                    previous: record.is_some_and(|r| is(r.previous)),
                    tries_left: record.filter(|r| is(r.trial)).map(|r| r.tries_left),
                    state: self.sysroot.probe(n, b"/sbin/init"),
                }
            })
            .collect();
        let copy = |c: CopyState| match c {
            CopyState::Missing => CopyStatus::Missing,
            CopyState::Invalid => CopyStatus::Invalid,
            CopyState::Valid(_) => CopyStatus::Valid,
        };
        Ok(Status {
            sysroot: self.path.clone(),
            record_generation: record.map(|r| r.generation),
            record_copies: [copy(copies[0]), copy(copies[1])],
            deployments,
            last_rollback: record
                .and_then(|r| r.last_rollback)
                .map(|rb| RollbackStatus {
                    from: rb.from.as_str().to_owned(),
                    reason: rb.reason,
                }),
            boot_reason: booted.map(|b| b.1),
        })
    }

    /// Re-hashes the store and checks the record's deployments; returns the problems.
    pub fn fsck(&self) -> Result<(u64, Vec<String>), UpdaterError> {
        // A reader, but one that must see the store whole: gc or an update beside it
        // would show as objects gone missing mid-check.
        let _lock = self.lock(lock::LockKind::Store, "fsck")?;
        let mut problems = Vec::new();
        let repo = Repo::open(&self.path.join("berth/repo"))?;
        let report = repo.fsck()?;
        problems.extend(
            report
                .corrupt
                .iter()
                .chain(&report.missing)
                .map(ToString::to_string),
        );
        let status = self.status()?;
        for (i, c) in status.record_copies.iter().enumerate() {
            if *c != CopyStatus::Valid {
                problems.push(format!(
                    "boot record copy {}: {}",
                    if i == 0 { "a" } else { "b" },
                    c.as_str()
                ));
            }
        }
        for d in &status.deployments {
            if (d.default || d.trial || d.previous) && d.state != Bootable::Yes {
                problems.push(format!(
                    "deployment {} named by the record is {}",
                    d.name,
                    d.state.as_str()
                ));
            }
        }
        Ok((report.checked, problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON token of `v`, and its text token (`text`, from its `as_str`), quoted.
    fn tokens<T: serde::Serialize>(v: T, text: &str) -> (String, String) {
        (serde_json::to_string(&v).unwrap(), format!("{text:?}"))
    }

    /// `status --json` and `berth status` say the same token, and the JSON keeps the
    /// words README.md's contract names.
    #[test]
    fn json_tokens_are_the_text_tokens() {
        let all = [
            (tokens(Bootable::Yes, Bootable::Yes.as_str()), "bootable"),
            (
                tokens(Bootable::Missing, Bootable::Missing.as_str()),
                "missing",
            ),
            (
                tokens(Bootable::NoInit, Bootable::NoInit.as_str()),
                "no-init",
            ),
            (
                tokens(CopyStatus::Valid, CopyStatus::Valid.as_str()),
                "valid",
            ),
            (
                tokens(CopyStatus::Invalid, CopyStatus::Invalid.as_str()),
                "invalid",
            ),
            (
                tokens(CopyStatus::Missing, CopyStatus::Missing.as_str()),
                "missing",
            ),
            (
                tokens(
                    RollbackReason::TriesExhausted,
                    RollbackReason::TriesExhausted.as_str(),
                ),
                "tries-exhausted",
            ),
            (
                tokens(
                    RollbackReason::TrialUnbootable,
                    RollbackReason::TrialUnbootable.as_str(),
                ),
                "trial-unbootable",
            ),
            (
                tokens(RollbackReason::Manual, RollbackReason::Manual.as_str()),
                "manual",
            ),
        ];
        for ((json, text), want) in all {
            assert_eq!(json, format!("{want:?}"));
            assert_eq!(text, json);
        }
    }
}
