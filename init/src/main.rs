//! `berth-init`, the PID 1 boot shim: placeholder.
//!
//! Not built yet; see docs/ARCHITECTURE.md. This binary says so and fails.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("berth-init: not built yet (see docs/ARCHITECTURE.md)");
    ExitCode::FAILURE
}
