//! Deflate patches on the device: the deflate stream is recreated by preflate in a child
//! process (this program, run again with [`CHILD_ARG`]), because preflate can panic on
//! data its reconstruction data does not describe (an index out of bounds, seen with
//! preflate-rs 0.7.6), and a panic must not end `berth` in the middle of an update: the
//! child's failure is one line of error, and the part changes nothing.

use std::io::Read;
use std::process::{Command, Stdio};

/// The argument that makes `berth` the child: it reads one request on stdin
/// (`redeflate::write_request`) and writes the recreated stream on stdout.
pub const CHILD_ARG: &str = "--internal-recreate-deflate";

/// The child's work (the program calls it when its first argument is [`CHILD_ARG`]):
/// the error is for its stderr, one line.
pub fn serve_child() -> Result<(), String> {
    redeflate::serve(&mut std::io::stdin().lock(), &mut std::io::stdout().lock())
}

/// The deflate stream that `plain` and `corrections` describe, at most `max` bytes,
/// recreated by a child process.
#[allow(clippy::needless_pass_by_value)] // taken to be freed while the child works
pub(crate) fn recreate_in_child(
    plain: Vec<u8>,
    corrections: Vec<u8>,
    max: u64,
) -> Result<Vec<u8>, String> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find berth's own program to recreate the stream: {e}"))?;
    let mut child = Command::new(&exe)
        .arg(CHILD_ARG)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!(
                "{}: cannot start it to recreate the stream: {e}",
                exe.display()
            )
        })?;
    // The child reads the whole request before it writes anything, so this cannot
    // deadlock; if it dies early, the write fails and its status says why.
    let wrote = child.stdin.take().map_or(Ok(()), |mut stdin| {
        redeflate::write_request(&mut stdin, &plain, &corrections, max)
    });
    drop((plain, corrections));
    let mut stream = Vec::new();
    let read = child.stdout.take().map_or(Ok(0), |out| {
        out.take(max.saturating_add(1)).read_to_end(&mut stream)
    });
    let mut err = Vec::new();
    if let Some(e) = child.stderr.take() {
        let _ = e.take(4096).read_to_end(&mut err);
    }
    // Whatever happened, reap it (a child that writes too much is ended first).
    if stream.len() as u64 > max {
        let _ = child.kill();
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for the child: {e}"))?;
    let err = String::from_utf8_lossy(&err);
    let why = err
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("note:"))
        .unwrap_or("");
    if !status.success() {
        return Err(format!(
            "the stream's reconstruction failed ({status}): {why}"
        ));
    }
    wrote.map_err(|e| format!("sending the reconstruction its data: {e}"))?;
    read.map_err(|e| format!("reading the recreated stream: {e}"))?;
    if stream.len() as u64 > max {
        return Err(format!(
            "the reconstruction makes more than {max} bytes of stream"
        ));
    }
    Ok(stream)
}
