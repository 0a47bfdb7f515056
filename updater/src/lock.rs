//! One writer at a time: advisory locks (`flock`) on two files of the sysroot.
//!
//! - `berth/store.lock`: held for the whole run of every command that writes the store
//!   or removes from it (`update`, `gc`, `fsck --repair`), and by `fsck`, which must
//!   see the store whole. Without it, `gc` beside an
//!   update removes the objects the update has stored but not yet referenced, or the
//!   new deployment itself once its checkout is done.
//! - `berth/record.lock`: held around every read-modify-write of the boot record
//!   (`mark-good`, `rollback`, the end of an update), so that two writers never both
//!   start from the same generation and one's change is lost. It is short: a
//!   `mark-good` from a health check never waits for an update's download.
//!
//! Readers (`status`, `check`) take no lock and never block.
//! A waiter polls for at most the wait it was given, then refuses with one line naming
//! the holder (its pid and command line, found through `/proc/locks`; nothing is
//! written to the lock file, which `berth-image install` makes empty). The kernel drops a lock when its holder exits, however it exits, so a crash
//! or a power cut never leaves a stale lock behind. berth-init takes neither: nothing
//! else runs while it does its work.

use std::time::{Duration, Instant};

use rustix::fd::OwnedFd;
use rustix::fs::{FlockOperation, Mode, OFlags};
use rustix::io::Errno;

use crate::{Device, UpdaterError};

/// Which lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// Writers of the store (update, gc, repair).
    Store,
    /// Writers of the boot record.
    Record,
}

impl LockKind {
    /// The lock file's name under `berth/`.
    pub const fn file_name(self) -> &'static str {
        match self {
            Self::Store => "store.lock",
            Self::Record => "record.lock",
        }
    }
}

/// A held lock; dropped, it is released.
#[derive(Debug)]
pub struct Lock {
    _fd: OwnedFd,
}

/// How often a waiter tries again.
const POLL: Duration = Duration::from_millis(50);

impl Device {
    /// Takes the lock `kind` for `command` (named to whoever waits for it), waiting for
    /// the device's lock wait at most.
    pub(crate) fn lock(&self, kind: LockKind, command: &str) -> Result<Lock, UpdaterError> {
        let berth = self.own_dir("berth", None)?.ok_or_else(|| {
            UpdaterError::State(format!("{}: not a sysroot: no berth/", self.path.display()))
        })?;
        let name = kind.file_name();
        let path = berth.join(name);
        let fail =
            |what: &str, e: Errno| UpdaterError::State(format!("{}: {what}: {e}", path.display()));
        // Not through fsop: the lock file holds no state (it is made empty once, and
        // never written), so no crash point is needed here.
        let fd = rustix::fs::openat(
            berth.fd(),
            name,
            OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| fail("open", e))?;
        let start = Instant::now();
        loop {
            match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(Errno::WOULDBLOCK | Errno::INTR) => {}
                Err(e) => return Err(fail("lock", e)),
            }
            if start.elapsed() >= self.lock_wait {
                return Err(UpdaterError::Busy(format!(
                    "{}: another berth command holds the lock ({}); waited {} ms, so `{command}` did not start (try again when it is done, or pass --wait SECONDS)",
                    path.display(),
                    holder(&fd).unwrap_or_else(|| "holder unknown".into()),
                    self.lock_wait.as_millis(),
                )));
            }
            std::thread::sleep(POLL);
        }
        Ok(Lock { _fd: fd })
    }
}

/// Who holds the lock on `fd`'s file: the pid and command line of the process that
/// `/proc/locks` lists for its inode (`N: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE …`).
fn holder(fd: &OwnedFd) -> Option<String> {
    let st = rustix::fs::fstat(fd).ok()?;
    let inode = format!(":{}", st.st_ino);
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let pid: u32 = locks.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (kind, pid, id) = (f.get(1)?, f.get(4)?, f.get(5)?);
        (*kind == "FLOCK" && id.ends_with(&inode)).then(|| pid.parse().ok())?
    })?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let words: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|w| !w.is_empty())
        .take(6)
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    Some(format!("pid {pid}: {}", words.join(" ")))
}
