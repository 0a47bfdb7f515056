//! Logging: one `berth-init: ...` line per write to `/dev/kmsg` (one record each), or to
//! stderr in test modes. No formatting machinery: lines are assembled from byte slices
//! and the number helpers below.

use alloc::vec::Vec;

use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::time::{ClockId, Timespec};

/// Where log lines go.
#[derive(Debug)]
pub struct Log {
    kmsg: Option<OwnedFd>,
    stderr: bool,
}

impl Log {
    /// Logs to stderr (test modes, or before `/dev` exists).
    pub const fn stderr() -> Self {
        Self {
            kmsg: None,
            stderr: true,
        }
    }

    /// Switches to `/dev/kmsg` if it can be opened; stays on stderr otherwise.
    pub fn open_kmsg(&mut self) {
        if let Ok(fd) = rustix::fs::open(
            "/dev/kmsg",
            OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOCTTY,
            Mode::empty(),
        ) {
            self.kmsg = Some(fd);
            self.stderr = false;
        }
    }

    /// Writes `berth-init: ` followed by the parts and a newline, as one write, at
    /// debug level: in the kernel log (`dmesg`), not on the console, because printing
    /// to a serial console costs milliseconds per line.
    pub fn line(&self, parts: &[&[u8]]) {
        self.at(b"<7>", parts);
    }

    /// Like [`Log::line`], at notice level: also printed on the console.
    pub fn notice(&self, parts: &[&[u8]]) {
        self.at(b"<5>", parts);
    }

    fn at(&self, level: &[u8], parts: &[&[u8]]) {
        let mut buf = Vec::with_capacity(128);
        // The level prefix means something to /dev/kmsg only.
        if self.kmsg.is_some() {
            buf.extend_from_slice(level);
        }
        buf.extend_from_slice(b"berth-init: ");
        for p in parts {
            buf.extend_from_slice(p);
        }
        buf.push(b'\n');
        // Logging must never stop the boot: a failed log write is dropped.
        if let Some(fd) = &self.kmsg {
            let _ = rustix::io::write(fd.as_fd(), &buf);
        } else if self.stderr {
            let _ = rustix::io::write(stderr_fd(), &buf);
        }
    }

    /// Logs `berth-init: <step>: <errno>` at error level (on the console too).
    pub fn error(&self, step: &[u8], what: &[u8], errno: Errno) {
        let mut n = [0u8; 20];
        self.at(
            b"<3>",
            &[
                step,
                b": ",
                what,
                if what.is_empty() { b"" } else { b": " },
                errno_name(errno),
                b" (errno ",
                u64_dec(&mut n, u64::from(errno.raw_os_error().unsigned_abs())),
                b")",
            ],
        );
    }
}

fn stderr_fd() -> rustix::fd::BorrowedFd<'static> {
    sys::stderr()
}

pub use format::json::u64_dec;

/// Nanoseconds on `CLOCK_BOOTTIME` (time since boot, including suspend).
pub fn boottime_ns() -> u64 {
    ns(rustix::time::clock_gettime(ClockId::Boottime))
}

fn ns(t: Timespec) -> u64 {
    u64::try_from(t.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(t.tv_nsec).unwrap_or(0))
}

/// `ns` as milliseconds with three decimals, e.g. `7.125`.
pub fn ms3(buf: &mut [u8; 32], ns: u64) -> &[u8] {
    let us = ns / 1000;
    let mut int = [0u8; 20];
    let int = u64_dec(&mut int, us / 1000);
    let frac = us % 1000;
    let mut n = 0;
    for &b in int {
        buf[n] = b;
        n += 1;
    }
    buf[n] = b'.';
    // frac < 1000: three digits, each < 10.
    for d in [frac / 100, (frac / 10) % 10, frac % 10] {
        n += 1;
        buf[n] = b'0' + u8::try_from(d).unwrap_or(0);
    }
    &buf[..=n]
}

/// A short name for the errnos a boot can meet; others print as "error".
pub fn errno_name(e: Errno) -> &'static [u8] {
    const NAMES: &[(Errno, &[u8])] = &[
        (Errno::NOENT, b"ENOENT"),
        (Errno::ACCESS, b"EACCES"),
        (Errno::PERM, b"EPERM"),
        (Errno::INVAL, b"EINVAL"),
        (Errno::BUSY, b"EBUSY"),
        (Errno::NOTDIR, b"ENOTDIR"),
        (Errno::ISDIR, b"EISDIR"),
        (Errno::NODEV, b"ENODEV"),
        (Errno::NXIO, b"ENXIO"),
        (Errno::IO, b"EIO"),
        (Errno::ROFS, b"EROFS"),
        (Errno::NOSPC, b"ENOSPC"),
        (Errno::EXIST, b"EEXIST"),
        (Errno::NOEXEC, b"ENOEXEC"),
        (Errno::NAMETOOLONG, b"ENAMETOOLONG"),
        (Errno::LOOP, b"ELOOP"),
        (Errno::NOMEM, b"ENOMEM"),
        (Errno::XDEV, b"EXDEV"),
        (Errno::OPNOTSUPP, b"EOPNOTSUPP"),
        (Errno::NOSYS, b"ENOSYS"),
    ];
    NAMES
        .iter()
        .find(|(e2, _)| *e2 == e)
        .map_or(b"error", |(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        let mut b = [0u8; 20];
        assert_eq!(u64_dec(&mut b, 0), b"0");
        assert_eq!(u64_dec(&mut b, 1_234_567_890), b"1234567890");
        assert_eq!(u64_dec(&mut b, u64::MAX), b"18446744073709551615");
        let mut m = [0u8; 32];
        assert_eq!(ms3(&mut m, 7_125_999), b"7.125");
        assert_eq!(ms3(&mut m, 0), b"0.000");
        assert_eq!(ms3(&mut m, 2_500_000_000), b"2500.000");
    }
}
