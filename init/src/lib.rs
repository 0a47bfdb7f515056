//! `berth-init`: the static PID 1 boot shim.
//!
//! The kernel runs it as init, either from an initramfs (it then loads the board's
//! modules, waits for the sysroot device and mounts it at `/sysroot`) or directly from
//! the sysroot partition. It reads the boot record, decides which deployment to boot
//! (counting trial boots durably and falling back to the default, then the previous
//! deployment, then a rescue shell), assembles that deployment's root (read-only bind,
//! `/var` from persistent state, `/etc` overlay, `/run` tmpfs, the sysroot at
//! `/sysroot`), switches root and execs the real init.
//!
//! # Guarantees
//! - It never exits and never panics as PID 1: every failure is logged to `/dev/kmsg` as
//!   `berth-init: <step>: <errno>` and leads to the next candidate; with none left it
//!   execs the rescue shell, or reboots after a delay. Images should put `panic=N` on
//!   the kernel command line so that a crashing real init reboots too, and the trial
//!   counter then does the rest.
//! - A trial deployment is booted only after its remaining tries were decremented
//!   durably; if the record cannot be written, the trial is not booted at all.
//! - It only ever chooses a deployment whose directory exists and holds an executable
//!   init (resolved inside the deployment).
//!
//! # Structure
//! [`plan`] decides (pure), [`steps`] lists the mount sequence (pure), [`exec`] carries it
//! out, the `sysroot` crate reads and writes the record, [`initramfs`] handles modules and the
//! device, [`boot`] ties them together, [`report`] writes `/run/berth/boot.json` and
//! [`dryrun`] is the test mode. The crate is `no_std` with `alloc`; the binary
//! is `no_std` on musl (see `src/main.rs`), which keeps it near 80 KB (budget 128 KiB;
//! `ci/check-init.sh` measures it).
//!
//! # Testing
//! `cargo test -p init` runs the plan tables, the step sequences, and (through the
//! binary's `--dry-run` test mode) the record handling against directories on disk.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

extern crate alloc;

pub mod boot;
pub mod disk;
pub mod dryrun;
pub mod exec;
pub mod initramfs;
pub mod log;
pub mod plan;
pub mod report;
pub mod steps;

use rustix::io::Errno;

/// A failed step: what was being done, and the errno. `Copy`, no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitError {
    /// The step, as logged (`"mount sysroot"`, `"pivot_root"`, …).
    pub step: &'static str,
    /// The error.
    pub errno: Errno,
}

impl InitError {
    /// An error of `step`.
    pub const fn new(step: &'static str, errno: Errno) -> Self {
        Self { step, errno }
    }
}
