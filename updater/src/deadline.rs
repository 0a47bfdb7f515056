//! `berth update --deadline`: a bound on how long an update may take.
//!
//! A stalled source (a dying USB stick, a pipe whose writer hangs, a network mount)
//! blocks `read(2)` in the kernel, where no timeout reaches it. So a watchdog thread
//! lets the program end the process instead. That is safe at any instant before the record is
//! switched: every earlier step is crash-safe (`tests/crash.rs` kills the process at
//! each one), and the next update resumes or cleans up. The update disarms the
//! watchdog just before it writes the record, under the same lock, so the deadline
//! can never cut the switch itself or report a failure after it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// A bound on an update's time, and what happens when it passes: `expire`, the
/// program's, is given the one-line reason and must end the process (nothing less
/// stops a read blocked in the kernel; see the module docs for why no state is lost).
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    /// How long the update may take, downloads included.
    pub limit: Duration,
    /// Called from the watchdog thread when the limit passes, unless disarmed first.
    pub expire: fn(&str) -> !,
}

/// An armed deadline; [`Armed::disarm`] before the point of no return.
#[derive(Debug)]
pub(crate) struct Armed {
    armed: Arc<Mutex<bool>>,
}

impl Deadline {
    /// Starts the watchdog: after the limit, unless disarmed, it calls `expire` with
    /// `message`.
    pub(crate) fn arm(self, message: String) -> Armed {
        let armed = Arc::new(Mutex::new(true));
        let watch = Arc::clone(&armed);
        std::thread::spawn(move || {
            std::thread::sleep(self.limit);
            let still = watch.lock().unwrap_or_else(PoisonError::into_inner);
            if *still {
                (self.expire)(&message);
            }
        });
        Armed { armed }
    }
}

impl Armed {
    /// Disarms the watchdog; once this returns, it will never fire.
    pub(crate) fn disarm(&self) {
        *self.armed.lock().unwrap_or_else(PoisonError::into_inner) = false;
    }
}

/// An update that ends, whichever way, ends its watchdog: a long-running caller (an
/// agent) must not be stopped later by a deadline of an update long done.
impl Drop for Armed {
    fn drop(&mut self) {
        self.disarm();
    }
}
