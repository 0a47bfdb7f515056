//! Deflate patches on the device: the deflate stream is recreated by preflate in a child
//! process (this program, run again with [`CHILD_ARG`]), because preflate can panic on
//! data its reconstruction data does not describe (an index out of bounds, seen with
//! preflate-rs 0.7.6), and a panic must not end `berth` in the middle of an update: the
//! child's failure is one line of error, and the part changes nothing. A child that
//! takes longer than [`CHILD_TIMEOUT`] (a reconstruction that never ends) is stopped, and
//! that is an error too.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long one stream's reconstruction may take. The largest stream a deflate patch
/// makes (8 MiB uncompressed, `format::ops::DEFLATE_PLAIN_MAX`) takes about 1.3 s on the
/// build machine's x86-64 core; this leaves room for devices a hundred times slower.
pub const CHILD_TIMEOUT: Duration = Duration::from_mins(2);

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
    let mut command = Command::new(&exe);
    command.arg(CHILD_ARG);
    run_child(command, CHILD_TIMEOUT, max, |stdin| {
        let wrote = redeflate::write_request(stdin, &plain, &corrections, max);
        drop((plain, corrections));
        wrote
    })
    .map_err(|e| match e {
        ChildError::Start(e) => format!(
            "{}: cannot start it to recreate the stream: {e}",
            exe.display()
        ),
        ChildError::Other(e) => e,
    })
}

/// Why [`run_child`] failed.
enum ChildError {
    /// The program could not be started.
    Start(std::io::Error),
    /// Anything after: one line.
    Other(String),
}

/// Runs `command` with a clean environment, gives it its request through `send` on its
/// stdin, and returns its stdout (at most `max` bytes). It is stopped (killed) once it
/// has run for `timeout`; that, a failure status, or more than `max` bytes is an error.
fn run_child(
    mut command: Command,
    timeout: Duration,
    max: u64,
    send: impl FnOnce(&mut std::process::ChildStdin) -> std::io::Result<()>,
) -> Result<Vec<u8>, ChildError> {
    let mut child: Child = command
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(ChildError::Start)?;
    // The watchdog: kills the child unless told (or dropped) first. The child is
    // reaped only after the watchdog is done, so its pid cannot be another's yet.
    let pid = rustix::process::Pid::from_child(&child);
    let (done, watch) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let expired = watch.recv_timeout(timeout) == Err(mpsc::RecvTimeoutError::Timeout);
        if expired {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        expired
    });
    // The child reads the whole request before it writes anything, so this cannot
    // deadlock; if it dies early, the write fails and its status says why.
    let wrote = child
        .stdin
        .take()
        .map_or(Ok(()), |mut stdin| send(&mut stdin));
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
    drop(done);
    let expired = watchdog.join().unwrap_or(false);
    let status = child
        .wait()
        .map_err(|e| ChildError::Other(format!("waiting for the child: {e}")))?;
    if expired {
        return Err(ChildError::Other(format!(
            "the stream's reconstruction took longer than {} s and was stopped",
            timeout.as_secs()
        )));
    }
    // Before its status: a child that wrote too much was ended by us.
    if stream.len() as u64 > max {
        return Err(ChildError::Other(format!(
            "the reconstruction makes more than {max} bytes of stream"
        )));
    }
    let err = String::from_utf8_lossy(&err);
    let why = err
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("note:"))
        .unwrap_or("");
    if !status.success() {
        return Err(ChildError::Other(format!(
            "the stream's reconstruction failed ({status}): {why}"
        )));
    }
    wrote.map_err(|e| ChildError::Other(format!("sending the reconstruction its data: {e}")))?;
    read.map_err(|e| ChildError::Other(format!("reading the recreated stream: {e}")))?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(script: &str, timeout: Duration, max: u64) -> Result<Vec<u8>, String> {
        let mut c = Command::new("/bin/sh");
        c.arg("-c").arg(script);
        run_child(c, timeout, max, |stdin| {
            std::io::Write::write_all(stdin, b"request")
        })
        .map_err(|e| match e {
            ChildError::Start(e) => e.to_string(),
            ChildError::Other(e) => e,
        })
    }

    #[test]
    fn a_child_is_stopped_at_its_timeout_and_its_output_bounded() {
        assert_eq!(
            run("cat", Duration::from_secs(30), 100).unwrap(),
            b"request"
        );
        let started = std::time::Instant::now();
        let err = run("cat >/dev/null; exec sleep 30", Duration::from_secs(1), 100).unwrap_err();
        assert!(
            err.contains("took longer than 1 s and was stopped"),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(20));
        let err = run("cat; echo more", Duration::from_secs(30), 4).unwrap_err();
        assert!(err.contains("more than 4 bytes"), "{err}");
        let err = run("echo broken >&2; exit 3", Duration::from_secs(30), 4).unwrap_err();
        assert!(err.contains("failed (exit status: 3): broken"), "{err}");
    }
}
