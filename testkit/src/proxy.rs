//! A TCP proxy on 127.0.0.1 in front of a test server (a registry), which cuts each
//! connection after a number of bytes towards the client: a link that drops.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// A running proxy; it stops with the test process.
#[derive(Debug)]
pub struct Proxy {
    /// Where it listens (127.0.0.1 only).
    pub addr: SocketAddr,
    cut: Arc<Mutex<Option<u64>>>,
    sent: Arc<AtomicU64>,
}

impl Proxy {
    /// Forwards connections on a free port of 127.0.0.1 to `upstream` (on 127.0.0.1).
    pub fn start(upstream: SocketAddr) -> Self {
        assert!(upstream.ip().is_loopback(), "tests only reach 127.0.0.1");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(Mutex::new(None));
        let sent = Arc::new(AtomicU64::new(0));
        let (c, s) = (cut.clone(), sent.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let limit = *c.lock().unwrap_or_else(PoisonError::into_inner);
                let s = s.clone();
                std::thread::spawn(move || forward(client, upstream, limit, &s));
            }
        });
        Self { addr, cut, sent }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Cuts each new connection after this many bytes towards the client (`None`: never).
    pub fn cut_every(&self, bytes: Option<u64>) {
        *self.cut.lock().unwrap_or_else(PoisonError::into_inner) = bytes;
    }

    /// Bytes sent towards clients so far (headers and bodies).
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

fn forward(client: TcpStream, upstream: SocketAddr, limit: Option<u64>, sent: &AtomicU64) {
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    let (Ok(mut to_server), Ok(mut from_client)) = (server.try_clone(), client.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_client, &mut to_server);
        let _ = to_server.shutdown(Shutdown::Write);
    });
    let (mut from_server, mut to_client) = (server, client);
    let mut buf = [0u8; 16 << 10];
    let mut total = 0u64;
    loop {
        let n = match from_server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let n = limit.map_or(n, |l| n.min(usize::try_from(l - total).unwrap_or(n)));
        if to_client.write_all(&buf[..n]).is_err() {
            break;
        }
        total += n as u64;
        sent.fetch_add(n as u64, Ordering::Relaxed);
        if limit.is_some_and(|l| total >= l) {
            break;
        }
    }
    let _ = to_client.shutdown(Shutdown::Both);
    let _ = from_server.shutdown(Shutdown::Both);
}
