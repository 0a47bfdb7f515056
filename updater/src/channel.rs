//! What the device knows of a channel: its signed pointer, fetched, verified and
//! checked against replay, freeze and expiry, and the state that makes those checks
//! (`berth/state/channels/NAME`, written durably before anything is downloaded).

use std::time::{SystemTime, UNIX_EPOCH};

use format::ObjectId;
use format::channel::{self, Pointer, Seen};
use format::record::DeploymentName;
use format::sig::Signatures;

use crate::dirs::Dir;
use crate::error::{Refusal, UpdaterError, refused};
use crate::remote::Remote;
use crate::{CHANNELS_DIR, Device};

/// The clock, in seconds since the Unix epoch. Test hook: `BERTH_TEST_CLOCK=SECONDS`
/// plays a device whose clock is wrong (whoever sets berth's environment is root on
/// the device already).
fn now() -> u64 {
    #[cfg(feature = "test-hooks")]
    if let Some(t) = std::env::var("BERTH_TEST_CLOCK")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return t;
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Device {
    /// Where channel states are kept (`berth/state/channels`), made if missing with
    /// `create`.
    pub(crate) fn channels_dir(&self, create: bool) -> Result<Option<Dir>, UpdaterError> {
        self.own_dir(CHANNELS_DIR, create.then_some(0o755))
    }

    /// What the device accepted last from channel `name`: nothing if the file does
    /// not exist; anything unreadable or damaged is an error that names the file
    /// (never "nothing seen", which would open the device to replayed pointers).
    pub(crate) fn seen(&self, name: &str) -> Result<Seen, UpdaterError> {
        let Some(dir) = self.channels_dir(false)? else {
            return Ok(Seen::default());
        };
        let Some(bytes) = dir.read(name, channel::SEEN_MAX as u64)? else {
            return Ok(Seen::default());
        };
        Seen::decode(&bytes).map_err(|e| {
            UpdaterError::State(format!(
                "{}: {e}; the replay check cannot be made (remove the file only if the device has accepted no newer pointer)",
                dir.join(name).display()
            ))
        })
    }

    /// Fetches and verifies the pointer of `channel`; refuses a stale, replayed or
    /// expired one. Returns it with the state to remember.
    pub(crate) fn pointer(
        &self,
        remote: &Remote,
        name: &str,
        running: &DeploymentName,
    ) -> Result<(Pointer, Seen), UpdaterError> {
        channel::check_name(name)
            .map_err(|e| UpdaterError::State(format!("--channel {name}: {e}")))?;
        let rel = format!("channels/{name}");
        let url = remote.url(&rel);
        let bytes = remote.get_small(&rel, channel::FILE_MAX)?;
        let invalid = |why: String| refused(&url, Refusal::Invalid(why));
        let stale = |why: String| refused(&url, Refusal::Stale(why));
        let (body, sigs) = channel::split_file(&bytes).map_err(|e| invalid(e.to_string()))?;
        let (signer_of, keys) = self.trusted_keys(running)?;
        Signatures::decode(sigs)
            .and_then(|s| s.verify(body, &keys))
            .map_err(|e| {
                refused(
                    &url,
                    Refusal::BadSignature {
                        cause: e.to_string(),
                        trusted_by: signer_of.as_str().to_owned(),
                    },
                )
            })?;
        let p = Pointer::decode(body).map_err(|e| invalid(e.to_string()))?;
        if p.channel != name {
            return Err(invalid(format!(
                "is the pointer of channel {:?}, not {name:?}",
                p.channel
            )));
        }
        let seen = self.seen(name)?;
        let digest = ObjectId::digest(body);
        if p.serial < seen.serial {
            return Err(stale(format!(
                "serial {} is older than serial {} that this device already accepted (a replayed or stale pointer); refused",
                p.serial, seen.serial
            )));
        }
        if p.serial == seen.serial && seen.body.is_some_and(|b| b != digest) {
            return Err(stale(format!(
                "serial {} was accepted before with other content; refused",
                p.serial
            )));
        }
        let floor = now().max(seen.issued);
        if p.expires < floor {
            return Err(stale(format!(
                "expired at {} (now is at least {floor}, from the clock or the newest pointer seen); refused",
                p.expires
            )));
        }
        let next = Seen {
            serial: p.serial,
            issued: p.issued.max(seen.issued),
            body: Some(digest),
        };
        Ok((p, next))
    }

    /// Writes what the device remembers of a channel: temp file, fsync, rename, fsync.
    pub(crate) fn remember(&self, name: &str, seen: &Seen) -> Result<(), UpdaterError> {
        let dir = self
            .channels_dir(true)?
            .ok_or_else(|| UpdaterError::State(format!("{CHANNELS_DIR}: not made")))?;
        dir.replace(name, seen.encode().as_bytes(), 0o644)
    }
}
