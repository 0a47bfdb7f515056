//! `berth`, the device agent: placeholder.
//!
//! The agent (`status`, `update`, `mark-good`, `rollback`, `gc`, `fsck`) is not built
//! yet; see docs/ARCHITECTURE.md. This binary says so and fails, so nothing mistakes it
//! for a working agent.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("berth: the device agent is not built yet (see docs/ARCHITECTURE.md)");
    ExitCode::FAILURE
}
