//! The crash-test build's counter (feature `crash-points`; never in a shipped binary).
//!
//! `BERTH_CRASH_AT=N` sends SIGKILL to the process just before its Nth mutation, so
//! mutations 1..N-1 happened and nothing after. `BERTH_CRASH_DROP=1` also models the
//! page cache lost in a power cut: before stopping, every file written since its last
//! `fsync` (or the last `syncfs`) is truncated to zero, which is what ext4 with delayed
//! allocation leaves of a file whose data never reached the disk. Every file Berth
//! writes is new, so "empty" is the only state its data can fall back to.
//!
//! `BERTH_FAULT_AT=N` with `BERTH_FAULT=nospc|io|rofs` instead fails the Nth mutation
//! and every one after it with `ENOSPC`, `EIO` or `EROFS` (a disk that filled up, started
//! failing, or was remounted read-only stays that way for the rest of the run).

use std::sync::{Mutex, PoisonError};

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::io::Errno;

use crate::Op;

struct State {
    count: u64,
    at: Option<u64>,
    /// From which mutation on, and with which error, every mutation fails.
    fault: Option<(u64, Errno)>,
    drop_unsynced: bool,
    /// Written since their last sync: (device, inode) and a descriptor to truncate.
    dirty: Vec<(u64, u64, OwnedFd)>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn inode(fd: BorrowedFd<'_>) -> Option<(u64, u64)> {
    rustix::fs::fstat(fd).ok().map(|st| (st.st_dev, st.st_ino))
}

/// `BERTH_FAULT_AT` and `BERTH_FAULT`, if both are set and valid.
fn fault_from_env() -> Option<(u64, Errno)> {
    let at = std::env::var("BERTH_FAULT_AT").ok()?.parse().ok()?;
    let errno = match std::env::var("BERTH_FAULT").ok()?.as_str() {
        "nospc" => Errno::NOSPC,
        "io" => Errno::IO,
        "rofs" => Errno::ROFS,
        _ => return None,
    };
    Some((at, errno))
}

pub(crate) fn point(op: Op, fd: Option<BorrowedFd<'_>>) -> Result<(), Errno> {
    let mut guard = STATE.lock().unwrap_or_else(PoisonError::into_inner);
    let s = guard.get_or_insert_with(|| State {
        count: 0,
        at: std::env::var("BERTH_CRASH_AT")
            .ok()
            .and_then(|v| v.parse().ok()),
        drop_unsynced: std::env::var_os("BERTH_CRASH_DROP").is_some_and(|v| v == "1"),
        dirty: Vec::new(),
        fault: fault_from_env(),
    });
    s.count += 1;
    if let Some((from, errno)) = s.fault
        && s.count >= from
    {
        return Err(errno);
    }
    if s.at == Some(s.count) {
        if s.drop_unsynced {
            for (_, _, f) in &s.dirty {
                let _lost = rustix::fs::ftruncate(f, 0);
            }
        }
        eprintln!("berth: crash point {}: killed before {op:?}", s.count);
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        loop {
            std::thread::park();
        }
    }
    match (op, fd) {
        (Op::Write, Some(fd)) if s.drop_unsynced => {
            if let Some((dev, ino)) = inode(fd)
                && !s.dirty.iter().any(|d| d.0 == dev && d.1 == ino)
                && let Ok(dup) = fd.try_clone_to_owned()
            {
                s.dirty.push((dev, ino, dup));
            }
        }
        (Op::Fsync, Some(fd)) => {
            if let Some((dev, ino)) = inode(fd.as_fd()) {
                s.dirty.retain(|d| d.0 != dev || d.1 != ino);
            }
        }
        (Op::Syncfs, _) => s.dirty.clear(),
        _ => {}
    }
    Ok(())
}
