//! `berth update --deadline`: a bound on how long an update may take.
//!
//! A stalled source (a dying USB stick, a pipe whose writer hangs, a network mount)
//! blocks `read(2)` in the kernel, where no timeout reaches it. So a watchdog thread
//! ends the process instead. That is safe at any instant before the record is
//! switched: every earlier step is crash-safe (`tests/crash.rs` kills the process at
//! each one), and the next update resumes or cleans up. The update disarms the
//! watchdog just before it writes the record, under the same lock, so the deadline
//! can never cut the switch itself or report a failure after it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// An armed deadline; [`Deadline::disarm`] before the point of no return.
#[derive(Debug)]
pub(crate) struct Deadline {
    armed: Arc<Mutex<bool>>,
}

impl Deadline {
    /// Starts the watchdog: after `limit`, unless disarmed, it prints `message` as
    /// berth's one-line error and exits with status 1.
    pub(crate) fn arm(limit: Duration, message: String) -> Self {
        let armed = Arc::new(Mutex::new(true));
        let watch = Arc::clone(&armed);
        std::thread::spawn(move || {
            std::thread::sleep(limit);
            let still = watch.lock().unwrap_or_else(PoisonError::into_inner);
            if *still {
                eprintln!("berth: {message}");
                // The only way to stop a read blocked in the kernel; see the module docs
                // for why no state is lost.
                #[allow(clippy::exit)]
                std::process::exit(1);
            }
        });
        Self { armed }
    }

    /// Disarms the watchdog; once this returns, it will never fire.
    pub(crate) fn disarm(&self) {
        *self.armed.lock().unwrap_or_else(PoisonError::into_inner) = false;
    }
}
