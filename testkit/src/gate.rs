//! A token-authentication front for a test registry on 127.0.0.1, as the distribution
//! spec's token authentication looks to a client: a request without a valid token gets
//! `401` with `WWW-Authenticate: Bearer realm=…/token,service=…,scope=…`; `GET /token`
//! issues a token (only with the expected `Authorization: Basic …`, if one is set);
//! each token is good for a number of requests, then the client must get a new one.
//! Valid requests go to the registry, one per connection.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// The gate's counters and rules, shared with its threads.
#[derive(Debug, Default)]
struct State {
    /// Tokens still valid, with the requests left on each.
    tokens: Mutex<HashMap<String, u64>>,
    issued: AtomicU64,
    refused: AtomicU64,
    /// The `Authorization` the token service wants (`Basic …`), if any.
    basic: Option<String>,
    uses: u64,
    /// Where the challenge sends clients for a token, if not to the gate itself.
    realm: Mutex<Option<String>>,
    /// Whether `GET /v2/` passes without a token (as on a registry with public
    /// repositories), so clients meet the challenge only on the repository.
    open_root: std::sync::atomic::AtomicBool,
}

/// A running gate; it stops with the test process.
#[derive(Debug)]
pub struct TokenGate {
    /// Where it listens (127.0.0.1 only).
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl TokenGate {
    /// A gate before `upstream` whose tokens are good for `uses` requests each, and
    /// whose token service wants `basic` (the base64 of `user:password`), if given.
    pub fn start(upstream: SocketAddr, uses: u64, basic: Option<&str>) -> Self {
        assert!(upstream.ip().is_loopback(), "tests only reach 127.0.0.1");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            basic: basic.map(|b| format!("Basic {b}")),
            uses,
            ..State::default()
        });
        let s = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, addr, upstream, &s);
                });
            }
        });
        Self { addr, state }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Sends clients to `url` for tokens (say, the gate's `/token` through a TLS front)
    /// instead of to the gate's own plain-HTTP address.
    pub fn set_realm(&self, url: &str) {
        *self
            .state
            .realm
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(url.to_owned());
    }

    /// Lets `GET /v2/` through without a token: a client learns that credentials are
    /// needed only from the repository's own `401`.
    pub fn open_root(&self) {
        self.state.open_root.store(true, Ordering::Relaxed);
    }

    /// Tokens issued so far.
    pub fn issued(&self) -> u64 {
        self.state.issued.load(Ordering::Relaxed)
    }

    /// Requests answered `401` so far.
    pub fn refused(&self) -> u64 {
        self.state.refused.load(Ordering::Relaxed)
    }
}

/// Answers and closes as an HTTP server does: the write side first, then whatever the
/// client still sends (the body of a refused upload) is read and dropped. Closing with
/// that body unread would make the kernel reset the connection, and a reset can
/// overtake the answer (the TLS front then ends its session without `close_notify`).
fn reply(
    conn: &mut TcpStream,
    unread: &mut impl Read,
    status: &str,
    headers: &str,
    body: &str,
) -> std::io::Result<()> {
    write!(
        conn,
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.shutdown(Shutdown::Write)?;
    conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    let _ = std::io::copy(unread, &mut std::io::sink());
    Ok(())
}

fn serve(
    mut conn: TcpStream,
    me: SocketAddr,
    upstream: SocketAddr,
    state: &State,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut head = Vec::new();
    let mut auth = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("authorization")
        {
            auth = Some(v.trim().to_owned());
        }
        // The registry answers one request per connection.
        if !line.to_ascii_lowercase().starts_with("connection:") {
            head.push(line);
        }
    }
    let path = head
        .first()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or_default()
        .to_owned();
    if path.starts_with("/token") {
        if state.basic.is_some() && auth != state.basic {
            state.refused.fetch_add(1, Ordering::Relaxed);
            return reply(&mut conn, &mut reader, "401 Unauthorized", "", "");
        }
        let n = state.issued.fetch_add(1, Ordering::Relaxed);
        let token = format!("token-{n}");
        state
            .tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(token.clone(), state.uses);
        return reply(
            &mut conn,
            &mut reader,
            "200 OK",
            "Content-Type: application/json\r\n",
            &format!(r#"{{"token":"{token}","expires_in":300}}"#),
        );
    }
    let open = path == "/v2/" && state.open_root.load(Ordering::Relaxed);
    let valid = open
        || auth
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
            .is_some_and(|t| {
                let mut tokens = state.tokens.lock().unwrap_or_else(PoisonError::into_inner);
                match tokens.get_mut(t) {
                    Some(left) if *left > 0 => {
                        *left -= 1;
                        true
                    }
                    _ => false,
                }
            });
    if !valid {
        state.refused.fetch_add(1, Ordering::Relaxed);
        let realm = state
            .realm
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| format!("http://{me}/token"));
        let challenge =
            format!("WWW-Authenticate: Bearer realm=\"{realm}\",service=\"test-registry\"\r\n");
        return reply(&mut conn, &mut reader, "401 Unauthorized", &challenge, "");
    }
    let mut up = TcpStream::connect(upstream)?;
    for line in &head {
        up.write_all(line.as_bytes())?;
    }
    up.write_all(b"Connection: close\r\n\r\n")?;
    // A body (a push) follows the head as it is.
    let mut down = up.try_clone()?;
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut reader, &mut down);
    });
    let mut buf = Vec::new();
    up.read_to_end(&mut buf)?;
    conn.write_all(&buf)?;
    let _ = conn.shutdown(Shutdown::Both);
    Ok(())
}
