//! A static HTTP/1.1 file server on 127.0.0.1 for tests, with the faults a device meets
//! in the field: connections that drop every N bytes, a stall, endless data, a server
//! that ignores `Range`, and files replaced by other bytes (a stale pointer).
//!
//! One request per connection (`Connection: close`); `GET` only; `Range: bytes=N-`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// What the server does wrong; change it while the server runs.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// Close every response after this many body bytes.
    pub drop_every: Option<u64>,
    /// After this many body bytes of a response, send nothing more for a minute.
    pub stall_after: Option<u64>,
    /// For paths starting with this, keep sending zeros after the file's bytes (no
    /// length announced); `""` for every path.
    pub endless: Option<String>,
    /// Answer `200` with the whole file even when asked for a range.
    pub ignore_range: bool,
    /// Paths served with these bytes instead of the file's.
    pub replace: HashMap<String, Vec<u8>>,
    /// Drops and stalls hit only paths starting with this (`""`: every path).
    pub faulty: String,
    /// Send the body one byte at a time, this long apart (a slow mirror that never
    /// stalls long enough to be cut); only on `faulty` paths.
    pub trickle: Option<Duration>,
    /// Answer a range request with a `Content-Range` that names the bytes asked for,
    /// but send the file from its start (a mirror that lies).
    pub lying_range: bool,
}

/// A running server; it stops with the test process.
#[derive(Debug)]
pub struct Server {
    /// Where it listens (127.0.0.1 only).
    pub addr: SocketAddr,
    /// The faults, shared with the serving threads.
    pub faults: Arc<Mutex<Faults>>,
    sent: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
}

impl Server {
    /// Serves the directory `root` on a free port of 127.0.0.1.
    pub fn start(root: &Path) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local address");
        let faults = Arc::new(Mutex::new(Faults::default()));
        let sent = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let root = root.to_path_buf();
        let (f, s, r) = (faults.clone(), sent.clone(), requests.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (root, f, s, r) = (root.clone(), f.clone(), s.clone(), r.clone());
                std::thread::spawn(move || {
                    r.fetch_add(1, Ordering::Relaxed);
                    let _ = serve(conn, &root, &f, &s);
                });
            }
        });
        Self {
            addr,
            faults,
            sent,
            requests,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes the faults.
    pub fn set(&self, change: impl FnOnce(&mut Faults)) {
        change(&mut self.faults.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Body bytes sent so far, over every request.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

#[allow(clippy::too_many_lines)] // one request's whole life: head, faults, body, in order
fn serve(
    conn: TcpStream,
    root: &Path,
    faults: &Mutex<Faults>,
    sent: &AtomicU64,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let mut from = 0u64;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("range: bytes=") {
            from = v.trim().trim_end_matches('-').parse().unwrap_or(0);
        }
    }
    let f = faults
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let mut out = conn;
    let rel = path.trim_start_matches('/');
    let body = if let Some(b) = f.replace.get(rel) {
        Some(b.clone())
    } else if rel.split('/').any(|c| c == "..") {
        None
    } else {
        std::fs::read(root.join(PathBuf::from(rel))).ok()
    };
    let Some(body) = body else {
        out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
        return Ok(());
    };
    let len = body.len() as u64;
    let (status, start) = if from > 0 && !f.ignore_range {
        if from >= len {
            let head = format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            out.write_all(head.as_bytes())?;
            return Ok(());
        }
        (206, from)
    } else {
        (200, 0)
    };
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nConnection: close\r\n",
        if status == 206 {
            "Partial Content"
        } else {
            "OK"
        }
    );
    if status == 206 {
        let _ = write!(head, "Content-Range: bytes {start}-{}/{len}\r\n", len - 1);
    }
    let endless = f.endless.as_deref().is_some_and(|p| rel.starts_with(p));
    if !endless {
        let _ = write!(head, "Content-Length: {}\r\n", len - start);
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    // A lying mirror names the range asked for but sends the file from its start.
    let mut data = body[usize::try_from(if f.lying_range { 0 } else { start }).unwrap_or(0)..]
        [..usize::try_from(len - start).unwrap_or(0)]
        .to_vec();
    if endless {
        data.resize(data.len() + (64 << 20), 0);
    }
    let mut done = 0u64;
    let faulty = rel.starts_with(&f.faulty);
    let (drop_every, stall_after) = (
        f.drop_every.filter(|_| faulty),
        f.stall_after.filter(|_| faulty),
    );
    if let Some(gap) = f.trickle.filter(|_| faulty) {
        return trickle(&mut out, &data, gap, sent);
    }
    for chunk in data.chunks(4096) {
        let mut n = chunk.len() as u64;
        if let Some(d) = drop_every {
            n = n.min(d.saturating_sub(done));
        }
        if let Some(s) = stall_after {
            n = n.min(s.saturating_sub(done));
        }
        let n_usize = usize::try_from(n).unwrap_or(0);
        if n_usize > 0 {
            out.write_all(&chunk[..n_usize])?;
            sent.fetch_add(n, Ordering::Relaxed);
            done += n;
        }
        if drop_every.is_some_and(|d| done >= d) {
            return Ok(());
        }
        if stall_after.is_some_and(|s| done >= s) {
            out.flush()?;
            std::thread::sleep(Duration::from_mins(1));
            return Ok(());
        }
    }
    Ok(())
}

/// Sends `data` one byte at a time, `gap` apart.
fn trickle(
    out: &mut TcpStream,
    data: &[u8],
    gap: Duration,
    sent: &AtomicU64,
) -> std::io::Result<()> {
    for b in data {
        out.write_all(std::slice::from_ref(b))?;
        out.flush()?;
        sent.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(gap);
    }
    Ok(())
}
