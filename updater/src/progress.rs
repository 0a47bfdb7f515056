//! What a long command reports as it goes. The library says what happened; the program
//! decides how to show it (`berth update --progress text|json`).

/// A step of an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Part `part` (counted from 1) of `parts`, `bytes` decompressed, was applied.
    Part {
        /// Which part.
        part: usize,
        /// How many the update has.
        parts: usize,
        /// Its decompressed size.
        bytes: u64,
    },
    /// The objects the device lacks cost more than the full update, which is taken
    /// instead.
    Fallback {
        /// What the missing objects would cost.
        objects_bytes: u64,
        /// What the full update costs.
        full_bytes: u64,
    },
    /// `downloaded` of the update's `total` bytes are on the device.
    Downloaded {
        /// Bytes on the device.
        downloaded: u64,
        /// Bytes in all.
        total: u64,
    },
}

/// Where progress goes: a function of the program's, or nowhere.
pub type Progress = Option<fn(Event)>;

/// Reports `event` to `to`, if anything listens.
pub(crate) fn report(to: Progress, event: Event) {
    if let Some(f) = to {
        f(event);
    }
}
