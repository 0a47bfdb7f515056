//! Deflate patches on the device: the deflate stream is recreated by preflate in a child
//! process (this program, run again with [`CHILD_ARG`]), because preflate can panic on
//! data its reconstruction data does not describe (an index out of bounds, seen with
//! preflate-rs 0.7.6), and a panic must not end `berth` in the middle of an update: the
//! child's failure is one line of error, and the part changes nothing. One child serves
//! many streams ([`Recreator`]; starting one per stream cost about 2 ms each, a fifth of
//! the minbase update's apply), on a thread of berth's, so berth applies the part's next
//! operations meanwhile; a part has up to [`WORKERS_MAX`], one per core
//! ([`Background`]). A stream that takes longer than [`CHILD_TIMEOUT`] (a
//! reconstruction that never ends) has its child stopped, and that is an error too.

use std::io::Read;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How long one stream's reconstruction may take. The largest stream a deflate patch
/// makes (8 MiB uncompressed, `format::ops::DEFLATE_PLAIN_MAX`) takes about 1.3 s on the
/// build machine's x86-64 core; this leaves room for devices a hundred times slower.
pub const CHILD_TIMEOUT: Duration = Duration::from_mins(2);

/// The most children that recreate a part's streams at once (one per core, up to
/// this): each holds a stream's data, so they share apply's memory.
pub const WORKERS_MAX: usize = 2;

/// The argument that makes `berth` the child: it answers requests
/// (`redeflate::write_request`) on stdin with replies (`redeflate::read_reply`) on
/// stdout until stdin ends.
pub const CHILD_ARG: &str = "--internal-recreate-deflate";

/// The child's work (the program calls it when its first argument is [`CHILD_ARG`]):
/// the error is for its stderr, one line.
pub fn serve_child() -> Result<(), String> {
    redeflate::serve(&mut std::io::stdin().lock(), &mut std::io::stdout().lock())
}

/// Recreates deflate streams in a child process, started for the first stream and kept
/// for the next ones; it ends (its stdin closed, then reaped) when this is dropped. A
/// child that failed (died, broke the protocol or was stopped) is not used again.
pub(crate) struct Recreator {
    command: Box<dyn Fn() -> std::io::Result<Command> + Send>,
    timeout: Duration,
    child: Option<Running>,
}

/// A started child.
struct Running {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    /// Reads the child's stderr until it ends and keeps its first 4 KiB (so a chatty
    /// child cannot block on a full pipe).
    stderr: Option<JoinHandle<Vec<u8>>>,
    /// What was started, for errors.
    program: String,
}

impl Recreator {
    /// Children of this very program, with [`CHILD_ARG`].
    pub(crate) fn new() -> Self {
        Self::with(
            || {
                let exe = std::env::current_exe()?;
                let mut c = Command::new(exe);
                c.arg(CHILD_ARG);
                Ok(c)
            },
            CHILD_TIMEOUT,
        )
    }

    fn with(
        command: impl Fn() -> std::io::Result<Command> + Send + 'static,
        timeout: Duration,
    ) -> Self {
        Self {
            command: Box::new(command),
            timeout,
            child: None,
        }
    }

    /// The deflate stream that `plain` and `corrections` describe, at most `max` bytes.
    /// Both are freed once the child has them, before its reply.
    pub(crate) fn recreate(
        &mut self,
        plain: Vec<u8>,
        corrections: Vec<u8>,
        max: u64,
    ) -> Result<Vec<u8>, String> {
        let mut running = match self.child.take() {
            Some(r) => r,
            None => self.start()?,
        };
        match ask(&mut running, self.timeout, plain, corrections, max) {
            Ok(reply) => {
                self.child = Some(running);
                reply
            }
            // The child cannot be trusted with another request: end it, and say what
            // it said if it died.
            Err(broken) => Err(running.end(Some(broken))),
        }
    }

    fn start(&self) -> Result<Running, String> {
        let mut command = (self.command)()
            .map_err(|e| format!("cannot find berth's own program to recreate the stream: {e}"))?;
        let program = command.get_program().to_string_lossy().into_owned();
        let mut child = command
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{program}: cannot start it to recreate the stream: {e}"))?;
        let (Some(stdin), Some(stdout), Some(mut err)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            unreachable!("the three are piped above");
        };
        let stderr = std::thread::spawn(move || {
            let mut kept = Vec::new();
            let _ = err.by_ref().take(4096).read_to_end(&mut kept);
            let _ = std::io::copy(&mut err, &mut std::io::sink());
            kept
        });
        Ok(Running {
            child,
            stdin,
            stdout,
            stderr: Some(stderr),
            program,
        })
    }
}

/// [`Recreator`]s on threads of their own, so that berth goes on applying the part's
/// next operations while children recreate streams, and a device with two cores
/// recreates two streams at once: requests go to the workers in turn, and their
/// replies are taken in the order the requests were sent. Dropped, it waits for the
/// threads, whose recreators end their children.
pub(crate) struct Background {
    make: Box<dyn Fn() -> Recreator>,
    /// At most this many workers.
    most: usize,
    workers: Vec<Worker>,
    /// Requests sent, and replies taken, so far.
    sent: usize,
    taken: usize,
}

/// A thread and its child, started when a request first needs it.
struct Worker {
    requests: mpsc::Sender<redeflate::Request>,
    replies: mpsc::Receiver<Result<Vec<u8>, String>>,
    thread: JoinHandle<()>,
}

impl Background {
    /// Workers made by `make`, one per core up to `most`.
    pub(crate) fn new(make: impl Fn() -> Recreator + 'static, most: usize) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Self {
            make: Box::new(make),
            most: cores.clamp(1, most.max(1)),
            workers: Vec::new(),
            sent: 0,
            taken: 0,
        }
    }

    /// Hands `request` to the next worker; its reply is taken, in order, by
    /// [`Self::take`].
    pub(crate) fn send(&mut self, request: redeflate::Request) {
        let at = self.sent % self.most;
        if at == self.workers.len() {
            let mut recreator = (self.make)();
            let (requests, to_do) = mpsc::channel::<redeflate::Request>();
            let (done, replies) = mpsc::channel();
            let thread = std::thread::spawn(move || {
                for r in to_do {
                    let reply = recreator.recreate(r.plain, r.corrections, r.max);
                    if done.send(reply).is_err() {
                        break;
                    }
                }
            });
            self.workers.push(Worker {
                requests,
                replies,
                thread,
            });
        }
        // A thread that is gone has dropped its receiver: its reply says so.
        let _ = self.workers[at].requests.send(request);
        self.sent += 1;
    }

    /// The reply to the oldest request whose reply is not taken yet.
    pub(crate) fn take(&mut self) -> Result<Vec<u8>, String> {
        if self.taken == self.sent {
            return Err("no stream is being recreated".to_owned());
        }
        let worker = &self.workers[self.taken % self.most];
        self.taken += 1;
        worker
            .replies
            .recv()
            .unwrap_or_else(|_| Err("the thread recreating streams ended".to_owned()))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // Each thread ends once its requests are answered; its recreator, dropped, ends
        // the child.
        for w in self.workers.drain(..) {
            drop(w.requests);
            drop(w.replies);
            let _ = w.thread.join();
        }
    }
}

impl Drop for Recreator {
    fn drop(&mut self) {
        if let Some(running) = self.child.take() {
            running.end(None);
        }
    }
}

/// Why a child can no longer be used.
enum Broken {
    /// Berth ended the exchange (a reply that breaks the protocol, a timeout): the reason.
    Ours(String),
    /// The child went away (a failed write or read): the I/O error; its exit status and
    /// stderr say more.
    Theirs(String),
}

/// One request to a running child and its reply, watched: the child is killed if the
/// reply has not come after `timeout`. The reply itself may be a refusal, which leaves
/// the child fine.
#[allow(clippy::needless_pass_by_value)] // taken to be freed while the child works
fn ask(
    running: &mut Running,
    timeout: Duration,
    plain: Vec<u8>,
    corrections: Vec<u8>,
    max: u64,
) -> Result<Result<Vec<u8>, String>, Broken> {
    // The watchdog: kills the child unless told (or dropped) first. The child is
    // reaped only in `Running::end`, after this, so its pid cannot be another's yet.
    let pid = rustix::process::Pid::from_child(&running.child);
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
    let wrote = redeflate::write_request(&mut running.stdin, &plain, &corrections, max);
    // Freed while the child works: the child holds them now.
    drop((plain, corrections));
    let reply = wrote.and_then(|()| redeflate::read_reply(&mut running.stdout, max));
    drop(done);
    if watchdog.join().unwrap_or(false) {
        return Err(Broken::Ours(format!(
            "the stream's reconstruction took longer than {} s and was stopped",
            timeout.as_secs()
        )));
    }
    reply.map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData => Broken::Ours(e.to_string()),
        _ => Broken::Theirs(format!("talking to {}: {e}", running.program)),
    })
}

impl Running {
    /// Ends the child: its stdin closed (a healthy child ends at that), killed first if
    /// berth broke off with it, then reaped. Returns the error to give.
    fn end(mut self, broken: Option<Broken>) -> String {
        drop(self.stdin);
        if matches!(broken, Some(Broken::Ours(_))) {
            // Not reaped yet, so the pid is still this child's.
            let _ = self.child.kill();
        }
        let status = self.child.wait();
        let err = self
            .stderr
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        let err = String::from_utf8_lossy(&err);
        let said = err
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with("note:"))
            .unwrap_or("");
        match (broken, status) {
            (None, _) => String::new(),
            (Some(Broken::Theirs(_)), Ok(s)) if !s.success() => {
                format!("the stream's reconstruction failed ({s}): {said}")
            }
            (Some(Broken::Ours(why) | Broken::Theirs(why)), _) => why,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

    /// A request of two bytes of data and one of reconstruction data: 27 bytes.
    const REQUEST: usize = 27;

    /// A reply with `status` and `body`, as `printf` arguments.
    fn reply(status: u8, body: &str) -> String {
        let mut head = vec![status];
        head.extend((body.len() as u64).to_le_bytes());
        let mut out = String::new();
        for b in head {
            write!(out, "\\{b:03o}").unwrap();
        }
        out + body
    }

    /// A recreator whose children run `script` (`$D`: a directory of the test's own),
    /// each adding a line to `$D/starts`. (`D` is set in the script: children start with
    /// an empty environment.)
    fn recreator(dir: &std::path::Path, script: &str, timeout: Duration) -> Recreator {
        let (dir, script) = (dir.to_owned(), script.to_owned());
        Recreator::with(
            move || {
                let mut c = Command::new("/bin/sh");
                c.arg("-c").arg(format!(
                    "D='{}'; echo >>\"$D/starts\"; {script}",
                    dir.display()
                ));
                Ok(c)
            },
            timeout,
        )
    }

    fn ask(r: &mut Recreator, max: u64) -> Result<Vec<u8>, String> {
        r.recreate(b"xy".to_vec(), b"z".to_vec(), max)
    }

    fn starts(dir: &std::path::Path) -> usize {
        std::fs::read_to_string(dir.join("starts")).map_or(0, |s| s.lines().count())
    }

    #[test]
    fn one_child_serves_every_stream_until_it_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        // `head -c` reads no more than it is asked for, so each reads one request.
        let script = format!(
            "head -c {REQUEST} >/dev/null; printf '{}'; head -c {REQUEST} >/dev/null; printf '{}'; \
             head -c {REQUEST} >/dev/null; printf '{}'; cat >/dev/null; echo >\"$D/ended\"",
            reply(0, "abc"),
            reply(1, "no such stream"),
            reply(0, "defg"),
        );
        let mut r = recreator(dir.path(), &script, Duration::from_secs(30));
        assert_eq!(ask(&mut r, 100).unwrap(), b"abc");
        // A refusal is the stream's error; the child goes on serving.
        assert_eq!(ask(&mut r, 100).unwrap_err(), "no such stream");
        assert_eq!(ask(&mut r, 100).unwrap(), b"defg");
        assert_eq!(starts(dir.path()), 1);
        assert!(!dir.path().join("ended").exists());
        // Dropped, the child sees its input end, and is reaped.
        drop(r);
        assert!(dir.path().join("ended").exists());
    }

    #[test]
    fn background_workers_reply_in_the_order_of_the_requests() {
        let dir = tempfile::tempdir().unwrap();
        // Each child echoes a request's two bytes of data; the first request's reply
        // is slow, so the second's comes first when two children serve them.
        let script = format!(
            "while req=$(head -c {REQUEST} | tail -c 3 | head -c 2); [ -n \"$req\" ]; do \
             [ \"$req\" = r1 ] && sleep 0.3; \
             printf '\\000\\002\\000\\000\\000\\000\\000\\000\\000%s' \"$req\"; done"
        );
        let (d, s) = (dir.path().to_owned(), script.clone());
        let mut b = Background::new(move || recreator(&d, &s, Duration::from_secs(30)), 2);
        let request = |plain: &[u8]| redeflate::Request {
            plain: plain.to_vec(),
            corrections: b"z".to_vec(),
            max: 100,
        };
        assert_eq!(b.take().unwrap_err(), "no stream is being recreated");
        for r in [b"r1", b"r2", b"r3"] {
            b.send(request(r));
        }
        let replies: Vec<_> = (0..3).map(|_| b.take().unwrap()).collect();
        assert_eq!(replies, [b"r1", b"r2", b"r3"]);
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(starts(dir.path()), cores.min(2));
        assert_eq!(b.take().unwrap_err(), "no stream is being recreated");
        // A refusal is that stream's reply; the next ones are answered.
        drop(b);
        let mut b = Background::new(
            move || {
                recreator(
                    dir.path(),
                    &format!("head -c {REQUEST} >/dev/null; printf '{}'", reply(1, "no")),
                    Duration::from_secs(30),
                )
            },
            1,
        );
        b.send(request(b"xy"));
        assert_eq!(b.take().unwrap_err(), "no");
    }

    #[test]
    fn a_child_is_stopped_at_its_timeout_and_its_output_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let started = std::time::Instant::now();
        let mut r = recreator(
            dir.path(),
            &format!("head -c {REQUEST} >/dev/null; exec sleep 30"),
            Duration::from_secs(1),
        );
        let err = ask(&mut r, 100).unwrap_err();
        assert!(
            err.contains("took longer than 1 s and was stopped"),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(20));
        // A failed child is not asked again: the next stream starts another.
        let _ = ask(&mut r, 100);
        assert_eq!(starts(dir.path()), 2);

        let mut r = recreator(
            dir.path(),
            &format!(
                "head -c {REQUEST} >/dev/null; printf '{}'",
                reply(0, "abcdef")
            ),
            Duration::from_secs(30),
        );
        let err = ask(&mut r, 4).unwrap_err();
        assert!(err.contains("more than 4 bytes of stream"), "{err}");

        let mut r = recreator(
            dir.path(),
            &format!("head -c {REQUEST} >/dev/null; printf '{}'", reply(7, "")),
            Duration::from_secs(30),
        );
        let err = ask(&mut r, 4).unwrap_err();
        assert!(err.contains("a reply with status 7"), "{err}");
    }

    #[test]
    fn a_child_that_dies_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = recreator(
            dir.path(),
            "head -c 5 >/dev/null; echo broken >&2; exit 3",
            Duration::from_secs(30),
        );
        let err = ask(&mut r, 4).unwrap_err();
        assert!(err.contains("failed (exit status: 3): broken"), "{err}");
        // Dying halfway through its reply is the same.
        let mut r = recreator(
            dir.path(),
            &format!("head -c {REQUEST} >/dev/null; printf '\\000\\003'; echo cut >&2; exit 4"),
            Duration::from_secs(30),
        );
        let err = ask(&mut r, 4).unwrap_err();
        assert!(err.contains("failed (exit status: 4): cut"), "{err}");
    }
}
