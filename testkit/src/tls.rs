//! A TLS front for the test server ([`crate::http::Server`]), as a CDN edge or an nginx
//! in front of a static repository: rustls on 127.0.0.1 terminates TLS and passes each
//! request to the plain server, so the plain server's faults (drops, stalls, replaced
//! files) happen behind TLS as well.
//!
//! Certificates are made at test time by rcgen and never written to the repository: a
//! [`Ca`] (what a fleet's private CA would be) issues [`Leaf`] certificates for the names
//! a test asks for, valid from 1975 to 4096 unless the test says otherwise.
//!
//! One request per connection, as the plain server: the request head is read up to its
//! blank line, and its body if it has a `Content-Length` (a push's upload), sent on, and
//! the answer relayed until the server behind closes; then the TLS session is closed
//! with `close_notify`. [`TlsServer::front`] puts it before any server on 127.0.0.1 (a
//! registry, or the token gate before one).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

use crate::http::Server;

/// A certificate authority made for one test.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    /// A new CA (a fresh P-256 key) named `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    /// The CA's certificate, PEM: what a device is given with `--ca`.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses), valid from 1975 to
    /// 4096.
    pub fn issue(&self, names: &[&str]) -> Leaf {
        self.issue_with(names, |_| {})
    }

    /// A server certificate for `names` that expired in 2001.
    pub fn issue_expired(&self, names: &[&str]) -> Leaf {
        self.issue_with(names, |p| {
            p.not_before = rcgen::date_time_ymd(2000, 1, 1);
            p.not_after = rcgen::date_time_ymd(2001, 1, 1);
        })
    }

    fn issue_with(&self, names: &[&str], edit: impl FnOnce(&mut CertificateParams)) -> Leaf {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        edit(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            chain: vec![cert.der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        }
    }
}

/// A server certificate and its key.
#[derive(Debug)]
pub struct Leaf {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// A running TLS front; it stops with the test process.
#[derive(Debug)]
pub struct TlsServer {
    /// Where it listens (127.0.0.1 only).
    pub addr: SocketAddr,
    connections: Arc<AtomicU64>,
}

impl TlsServer {
    /// Serves `backend` over TLS with `leaf`, on a free port of 127.0.0.1.
    pub fn start(backend: &Server, leaf: &Leaf) -> Self {
        Self::front(backend.addr, leaf)
    }

    /// Serves whatever listens at `backend` (on 127.0.0.1) over TLS with `leaf`, on a
    /// free port of 127.0.0.1.
    pub fn front(backend: SocketAddr, leaf: &Leaf) -> Self {
        assert!(backend.ip().is_loopback(), "tests only reach 127.0.0.1");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = Arc::new(
            ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(leaf.chain.clone(), leaf.key.clone_key())
                .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local address");
        let connections = Arc::new(AtomicU64::new(0));
        let count = connections.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                count.fetch_add(1, Ordering::Relaxed);
                let config = config.clone();
                std::thread::spawn(move || {
                    // A client that refuses the certificate ends the handshake with an
                    // alert: the error is the test's expected outcome, not a failure here.
                    let _ = relay(conn, config, backend);
                });
            }
        });
        Self { addr, connections }
    }

    /// `https://localhost:PORT` (localhost must resolve to 127.0.0.1, as /etc/hosts has it).
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// TCP connections accepted so far (handshakes tried, whether or not they succeeded).
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

fn relay(client: TcpStream, config: Arc<ServerConfig>, backend: SocketAddr) -> std::io::Result<()> {
    let conn = ServerConnection::new(config).map_err(std::io::Error::other)?;
    let mut tls = StreamOwned::new(conn, client);
    let mut head = Vec::new();
    let mut buf = vec![0u8; 16 << 10];
    // The first read drives the handshake.
    let end = loop {
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = tls.read(&mut buf)?;
        if n == 0 || head.len() > 64 << 10 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    };
    // The body, if the head announces one.
    let length = String::from_utf8_lossy(&head[..end])
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    while head.len() < end + length {
        let n = tls.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    // As a TLS-terminating proxy tells the server behind (a registry then answers an
    // upload with an https:// Location); one request per connection, whatever the
    // client asked.
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let mut up = TcpStream::connect(backend)?;
    for (i, line) in text.split_inclusive("\r\n").enumerate() {
        if line == "\r\n" {
            break;
        }
        if line.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        up.write_all(line.as_bytes())?;
        if i == 0 {
            up.write_all(b"X-Forwarded-Proto: https\r\n")?;
        }
    }
    up.write_all(b"Connection: close\r\n\r\n")?;
    up.write_all(&head[end..])?;
    loop {
        let n = up.read(&mut buf)?;
        if n == 0 {
            break;
        }
        tls.write_all(&buf[..n])?;
        // On the wire now: a stall behind must look like a stall in front.
        tls.flush()?;
    }
    tls.conn.send_close_notify();
    tls.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GET through the front with a rustls client that trusts only `ca`.
    fn get(front: &TlsServer, ca: &Ca, name: &str, path: &str) -> std::io::Result<Vec<u8>> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.issuer.der().clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let conn =
            rustls::ClientConnection::new(Arc::new(config), name.to_owned().try_into().unwrap())
                .unwrap();
        let mut tls = StreamOwned::new(conn, TcpStream::connect(front.addr)?);
        tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: {name}\r\n\r\n").as_bytes())?;
        let mut out = Vec::new();
        tls.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn the_front_serves_the_plain_servers_files_and_faults_over_tls() {
        let dir = std::env::temp_dir().join(format!("testkit-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("file"), crate::noise(100_000)).unwrap();
        let plain = Server::start(&dir);
        let ca = Ca::new("testkit CA");
        let front = TlsServer::start(&plain, &ca.issue(&["localhost"]));

        let answer = get(&front, &ca, "localhost", "/file").unwrap();
        let split = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert_eq!(answer[split..], crate::noise(100_000));

        // A drop behind the front ends the TLS session early.
        plain.set(|f| f.drop_every = Some(10_000));
        let answer = get(&front, &ca, "localhost", "/file").unwrap();
        let split = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(answer.len() - split, 10_000);

        // The wrong name: the client refuses, and nothing reaches the plain server.
        let before = plain.requests();
        let err = get(&front, &ca, "elsewhere.invalid", "/file").unwrap_err();
        assert!(err.to_string().contains("not valid for name"), "{err}");
        assert_eq!(plain.requests(), before);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
