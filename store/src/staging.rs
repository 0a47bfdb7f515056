//! Names of staging directories, and which ones are garbage.
//!
//! A transaction stages its objects in `tmp/txn-<boot>-<pid>-<n>/` (`docs/FORMAT.md`,
//! "Object store layout"): `<boot>` is the first 16 hex digits of the kernel's boot id
//! (`/proc/sys/kernel/random/boot_id`), `<pid>` the process and `<n>` a per-process
//! counter. A PID alone says nothing across a reboot (a `berth update` that runs as PID 1
//! in a container or an early-boot service finds PID 1 alive, always), so a directory is
//! garbage when:
//!
//! - its name is not of this form (the old `txn-<pid>-<n>`, written before the last
//!   reboot, since every process that runs now writes the boot id), or
//! - it is from another boot, or
//! - it is this process's PID but not one of this process's open transactions (the PID
//!   was reused within the boot), or
//! - its process has exited.
//!
//! Whatever is left, a transaction never fails on a name that exists: it takes the next
//! counter.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use rustix::io::Errno;

/// Hex digits of the boot id kept in a staging name: 64 bits, so two boots' names
/// collide with odds of 2^-64. Changing it only makes older names garbage.
const BOOT_DIGITS: usize = 16;

/// The boot tag when the boot id cannot be read (no `/proc`): names still parse, and
/// liveness falls back on the PID alone.
const UNKNOWN_BOOT: &str = "0000000000000000";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Counters of this process's transactions whose staging directory may exist.
static LIVE: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// This boot's tag, read once; `None` if `/proc` cannot tell.
fn boot() -> Option<&'static str> {
    static BOOT: OnceLock<Option<String>> = OnceLock::new();
    BOOT.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map_err(|e| {
                log::warn!("cannot read the boot id, stale staging is told by its PID alone: {e}");
            })
            .ok()?;
        let tag: String = text
            .chars()
            .filter(char::is_ascii_hexdigit)
            .map(|c| c.to_ascii_lowercase())
            .take(BOOT_DIGITS)
            .collect();
        (tag.len() == BOOT_DIGITS).then_some(tag)
    })
    .as_deref()
}

fn live() -> std::sync::MutexGuard<'static, BTreeSet<u32>> {
    // The set is only inserted into and removed from, so a panic while it was held
    // leaves it consistent.
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A staging name reserved for one transaction of this process: while it exists no
/// other transaction takes the directory for garbage.
#[derive(Debug)]
pub(crate) struct Reserved {
    name: String,
    n: u32,
}

impl Reserved {
    /// Reserves the next name (registered before the directory is made, so a
    /// concurrent [`is_stale`] never sees the directory unregistered).
    pub(crate) fn next() -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        live().insert(n);
        let pid = rustix::process::getpid().as_raw_nonzero().get();
        let boot = boot().unwrap_or(UNKNOWN_BOOT);
        Self {
            name: format!("txn-{boot}-{pid}-{n}"),
            n,
        }
    }

    /// The directory's name in `tmp/`.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        live().remove(&self.n);
    }
}

/// `<boot>-<pid>-<n>` of a staging name, if it has the current form.
fn parse(name: &str) -> Option<(&str, i32, u32)> {
    let mut it = name.strip_prefix("txn-")?.split('-');
    let boot = it.next()?;
    let pid = it.next()?;
    let n = it.next()?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if it.next().is_some()
        || boot.len() != BOOT_DIGITS
        || !boot.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        || !digits(pid)
        || !digits(n)
    {
        return None;
    }
    Some((boot, pid.parse().ok()?, n.parse().ok()?))
}

/// Whether the entry `name` of `tmp/` is a staging directory no transaction can be
/// using (the rules above). Names not starting with `txn-` (downloads) are never stale.
pub(crate) fn is_stale(name: &str) -> bool {
    if !name.starts_with("txn-") {
        return false;
    }
    let Some((boot_tag, pid, n)) = parse(name) else {
        return true;
    };
    if let Some(ours) = boot()
        && boot_tag != ours
    {
        return true;
    }
    if pid == rustix::process::getpid().as_raw_nonzero().get() {
        return !live().contains(&n);
    }
    match rustix::process::Pid::from_raw(pid) {
        Some(pid) => rustix::process::test_kill_process(pid) == Err(Errno::SRCH),
        // PID 0 is no process's.
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_only_in_the_current_form() {
        let b = "0123456789abcdef";
        for (name, want) in [
            (format!("txn-{b}-42-7"), Some((b, 42, 7))),
            ("txn-42-7".to_owned(), None),
            ("txn-1-0".to_owned(), None),
            (format!("txn-{b}-42"), None),
            (format!("txn-{b}-42-7-1"), None),
            (format!("txn-{b}-x-7"), None),
            (format!("txn-{b}--7"), None),
            (format!("txn-{b}-+4-7"), None),
            ("txn-0123456789ABCDEF-42-7".to_owned(), None),
            ("txn-0123456789abcde-42-7".to_owned(), None),
            (format!("txn-{b}-99999999999-7"), None),
            (format!("download-{b}-full"), None),
        ] {
            assert_eq!(parse(&name), want, "{name}");
        }
    }

    #[test]
    fn what_is_stale() {
        let known = boot().is_some();
        let boot = boot().unwrap_or(UNKNOWN_BOOT);
        let me = rustix::process::getpid().as_raw_nonzero().get();
        let mine = Reserved::next();
        let other_boot = if boot.starts_with('0') {
            "1".repeat(16)
        } else {
            "0".repeat(16)
        };
        for (name, want) in [
            (mine.name().to_owned(), false),
            (format!("txn-{boot}-{me}-{}", mine.n + 1_000_000), true),
            (format!("txn-{boot}-1-0"), false),
            (format!("txn-{boot}-0-0"), true),
            (format!("txn-{other_boot}-1-0"), known),
            (format!("txn-{me}-0"), true),
            ("txn-1-0".to_owned(), true),
            ("download-0123456789abcdef-full".to_owned(), false),
            ("other".to_owned(), false),
        ] {
            assert_eq!(is_stale(&name), want, "{name}");
        }
        let name = mine.name().to_owned();
        drop(mine);
        assert!(is_stale(&name), "{name}: dropped, still live");
    }
}
