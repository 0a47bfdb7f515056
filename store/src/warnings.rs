//! Where the store's warnings go. The store warns through `log` (a stale staging
//! directory it cannot tell the age of, a transaction it could not clean up); a
//! library never prints, so each program that uses the store installs this logger at
//! its start, and the warnings reach its user as its own.

use std::sync::OnceLock;

/// Prints warnings and errors to stderr as `PROGRAM: warning: …`.
#[derive(Debug)]
struct Stderr(&'static str);

impl log::Log for Stderr {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Warn
    }

    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            eprintln!("{}: warning: {}", self.0, r.args());
        }
    }

    fn flush(&self) {}
}

/// Installs the logger for `program` (once; later calls, or another logger set
/// first, leave things as they are).
pub fn to_stderr(program: &'static str) {
    static LOGGER: OnceLock<Stderr> = OnceLock::new();
    if log::set_logger(LOGGER.get_or_init(|| Stderr(program))).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
}
