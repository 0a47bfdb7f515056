//! The one HTTP client of both tools: an agent for one server (a static repository or
//! a registry's API root), TLS as [`crate::tls`] sets it up, a registry's credentials
//! sent to its own origin only and renewed once on a `401`, small bodies read with a
//! bound, and large ones fetched into a [`Sink`], resumed with `Range` after a drop,
//! with a floor on the rate and a ceiling on the time ([`Rates`]).

use std::cell::RefCell;
use std::io::Read as _;
use std::time::{Duration, Instant};

use format::oci::Reference;

use crate::NetError;
use crate::auth::{self, Access};
use crate::tls::{self, Trust};

/// The longest wait between two retries.
pub const RETRY_DELAY_MAX: Duration = Duration::from_mins(1);

/// How a download may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rates {
    /// Slowest acceptable average rate of one request, bytes per second: a request that
    /// cannot finish at this rate is cut and resumed.
    pub min_rate: u64,
    /// The longest a connection may go without delivering a byte before it is cut (and
    /// the download resumed): a stalled link is noticed in this time, not when the
    /// request's whole budget at `min_rate` runs out.
    pub stall: Duration,
    /// Requests in a row that may fail without delivering a byte before giving up.
    pub retries: u32,
    /// The wait before retrying after a request that delivered nothing new; doubled
    /// after each such request in a row, at most [`RETRY_DELAY_MAX`]. A request that
    /// made progress (a dropped connection) is resumed at once.
    pub retry_delay: Duration,
    /// The most bytes per second a download may take (a cap an operator sets so that
    /// updates leave room on a shared or metered link); `None`: as fast as it comes.
    pub max_rate: Option<u64>,
}

impl Default for Rates {
    fn default() -> Self {
        Self {
            min_rate: 1024,
            stall: Duration::from_secs(30),
            retries: 5,
            retry_delay: Duration::from_secs(1),
            max_rate: None,
        }
    }
}

impl Rates {
    /// The floor a request is held to: `min_rate`, or the cap if that is lower (a link
    /// capped below the floor is slow by choice, not under attack).
    fn floor(&self) -> u64 {
        self.max_rate
            .map_or(self.min_rate, |cap| self.min_rate.min(cap))
            .max(1)
    }

    /// The window over which a request's average rate must reach `min_rate`: twice the
    /// stall timeout (a minute by default).
    fn window(&self) -> Duration {
        (self.stall * 2).max(Duration::from_secs(1))
    }

    /// The longest one file of `len` bytes may take in all, retries and waits included:
    /// twice its time at `min_rate`, plus a window and the longest wait per retry. A
    /// mirror that alternates good windows and slow ones still ends within it.
    fn ceiling(&self, len: u64) -> Duration {
        let at_rate = Duration::from_secs(len / self.floor()).saturating_mul(2);
        let per_try = self
            .window()
            .saturating_add(RETRY_DELAY_MAX.min(self.retry_delay.saturating_mul(64)));
        at_rate.saturating_add(per_try.saturating_mul(self.retries.saturating_add(1)))
    }

    /// The wait before the retry that follows `failed` fruitless requests in a row.
    pub fn backoff(&self, failed: u32) -> Duration {
        let factor = 1u32 << failed.saturating_sub(1).min(16);
        self.retry_delay
            .checked_mul(factor)
            .map_or(RETRY_DELAY_MAX, |d| d.min(RETRY_DELAY_MAX))
    }
}

/// How long the client waits for a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// For the response's head.
    pub response: Duration,
    /// Between two reads of a body (`None`: bounded per request instead).
    pub per_read: Option<Duration>,
}

/// Where a download goes.
pub trait Sink {
    /// Bytes held.
    fn have(&self) -> u64;
    /// Drops what is held: the next bytes are the start of the file.
    fn restart(&mut self) -> Result<(), NetError>;
    /// Adds `bytes` at the end.
    fn append(&mut self, bytes: &[u8]) -> Result<(), NetError>;
    /// Makes what is held durable, if the sink is a file.
    fn settle(&mut self) -> Result<(), NetError>;
    /// Told after each read how many bytes it holds of how many (progress reports).
    fn progress(&mut self, _have: u64, _len: u64) {}
}

/// Memory, for what is small enough to hold whole.
impl Sink for Vec<u8> {
    fn have(&self) -> u64 {
        self.len() as u64
    }

    fn restart(&mut self) -> Result<(), NetError> {
        self.clear();
        Ok(())
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), NetError> {
        self.extend_from_slice(bytes);
        Ok(())
    }

    fn settle(&mut self) -> Result<(), NetError> {
        Ok(())
    }
}

/// A registry's credentials: what to ask for them again with.
#[derive(Debug)]
struct Registry {
    r: Reference,
    /// The base64 of `user:password`, if given.
    basic: Option<String>,
    access: Access,
}

/// An HTTP client for one server.
#[derive(Debug)]
pub struct Client {
    agent: ureq::Agent,
    /// The server's root (a repository URL, or a registry's `https://…/v2/NAME`): its
    /// origin, and no other, is sent the registry's credentials.
    api: String,
    trust: Trust,
    registry: Option<Registry>,
    /// The `Authorization` header the registry wants (a token, or Basic credentials).
    auth: RefCell<Option<String>>,
}

/// A response.
pub type Response = ureq::http::Response<ureq::Body>;

/// `scheme://authority` of a URL (the whole URL if it has no path).
pub fn origin(url: &str) -> &str {
    let after = url.find("://").map_or(0, |i| i + 3);
    url[after..]
        .find('/')
        .map_or(url, |end| &url[..after + end])
}

impl Client {
    /// A client for the server at `api` (`https://` or `http://`), trusting `trust`.
    /// An `https://` server is never followed to a plain `http://` redirect.
    pub fn new(api: &str, trust: &Trust, timeouts: Timeouts) -> Result<Self, NetError> {
        let https = api.starts_with("https://");
        let config = ureq::Agent::config_builder()
            .tls_config(tls::config(api, trust)?)
            .https_only(https)
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(timeouts.response))
            .timeout_per_read(timeouts.per_read)
            .build();
        Ok(Self {
            agent: ureq::Agent::new_with_config(config),
            api: api.to_owned(),
            trust: trust.clone(),
            registry: None,
            auth: RefCell::new(None),
        })
    }

    /// Sends `authorization` (the whole header value, such as hawkBit's
    /// `TargetToken …`) with every request to the server's own origin, and to no other.
    #[must_use]
    pub fn with_authorization(self, authorization: String) -> Self {
        *self.auth.borrow_mut() = Some(authorization);
        self
    }

    /// Gets into the registry of `r` for `access`, if it asks for credentials
    /// ([`auth::authorize`]); `basic` is the base64 of `user:password`, if given.
    pub fn authorize(
        mut self,
        r: &Reference,
        basic: Option<String>,
        access: Access,
    ) -> Result<Self, NetError> {
        let why = |e: &ureq::Error| self.why(e);
        let auth = auth::authorize(&self.agent, r, basic.as_deref(), access, &why)?;
        *self.auth.borrow_mut() = auth;
        self.registry = Some(Registry {
            r: r.clone(),
            basic,
            access,
        });
        Ok(self)
    }

    /// The agent, for requests [`Client::send`] builds.
    pub fn agent(&self) -> &ureq::Agent {
        &self.agent
    }

    /// A failed request, said in one line (TLS failures in plain words).
    pub fn why(&self, e: &ureq::Error) -> String {
        tls::explain(e, &self.api, &self.trust).unwrap_or_else(|| e.to_string())
    }

    /// A failed request to `url` as an error: TLS failures apart, since they will not
    /// go away on a retry.
    fn failed(&self, url: &str, e: &ureq::Error) -> NetError {
        match tls::explain(e, &self.api, &self.trust) {
            Some(cause) => NetError::Tls {
                url: url.to_owned(),
                cause,
            },
            None => NetError::Request {
                url: url.to_owned(),
                cause: e.to_string(),
            },
        }
    }

    /// The `Authorization` header for `url`: the registry's, for its own origin only
    /// (never for a storage backend an upload or a download is sent on to).
    fn auth_for(&self, url: &str) -> Option<String> {
        (origin(url) == origin(&self.api))
            .then(|| self.auth.borrow().clone())
            .flatten()
    }

    /// Answers a registry's `401` (a token expired, or `/v2/` was open but this
    /// repository is not) from its `challenge`, or else by asking `/v2/` again.
    /// Whether there are credentials to try again with.
    fn refresh(&self, resp: &Response) -> Result<bool, NetError> {
        let Some(reg) = &self.registry else {
            return Ok(false);
        };
        let why = |e: &ureq::Error| self.why(e);
        let new = auth::reauthorize(
            &self.agent,
            &reg.r,
            auth::challenge(resp),
            reg.basic.as_deref(),
            reg.access,
            &why,
        )?;
        let got = new.is_some();
        *self.auth.borrow_mut() = new;
        Ok(got)
    }

    /// Sends the request that `make` builds for `url` (given the agent and the
    /// `Authorization` header, if `url` is the server's); once more with fresh
    /// credentials if the server answers `401`. `shown` names the request in errors.
    pub fn send(
        &self,
        url: &str,
        shown: &str,
        make: impl Fn(&ureq::Agent, Option<&str>) -> Result<Response, ureq::Error>,
    ) -> Result<Response, NetError> {
        let run = || {
            let auth = self.auth_for(url);
            make(&self.agent, auth.as_deref()).map_err(|e| self.failed(shown, &e))
        };
        let resp = run()?;
        // Credentials are the server's to renew; a storage backend's 401 is its own.
        if resp.status().as_u16() == 401
            && origin(url) == origin(&self.api)
            && self.refresh(&resp)?
        {
            return run();
        }
        Ok(resp)
    }

    /// A GET of `url`, with the registry's `Authorization` if it is the server's.
    pub fn get(&self, url: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        with_auth(self.agent.get(url), self.auth_for(url).as_deref())
    }

    /// The whole body of `url` (named `shown` in errors), refused past `max` bytes;
    /// the server must answer `200` within a minute of sending.
    pub fn get_small(&self, url: &str, shown: &str, max: usize) -> Result<Vec<u8>, NetError> {
        let mut resp = self.send(url, shown, |agent, auth| {
            with_auth(agent.get(url), auth)
                .config()
                // Small files: a server that stops sending is cut.
                .timeout_recv_body(Some(Duration::from_mins(1)))
                .build()
                .call()
        })?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(NetError::Status {
                url: shown.to_owned(),
                status,
            });
        }
        let mut out = Vec::new();
        resp.body_mut()
            .as_reader()
            .take(max as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| NetError::Request {
                url: shown.to_owned(),
                cause: e.to_string(),
            })?;
        if out.len() > max {
            return Err(NetError::TooLarge {
                url: shown.to_owned(),
                max: max as u64,
            });
        }
        Ok(out)
    }

    /// Fetches `url` (named `shown` in errors) into `sink` until it holds `len` bytes,
    /// resuming with `Range` after a drop, within `rates`. Returns the bytes fetched.
    pub fn fetch(
        &self,
        url: &str,
        shown: &str,
        len: u64,
        rates: &Rates,
        sink: &mut dyn Sink,
    ) -> Result<u64, NetError> {
        let slow = |cause: String| NetError::Slow {
            url: shown.to_owned(),
            cause,
        };
        let mut fetched = 0u64;
        let mut idle = 0u32;
        // Fruitless requests in a row (refused, failed, or no new byte): each waits
        // longer before the next. A token renewal or a restart does not wait.
        let mut fruitless = 0u32;
        let mut pause = Duration::ZERO;
        // The most the sink ever held: a request that does not get past it made no
        // progress (a server that ignores Range and drops restarts from zero each time).
        let mut best = 0u64;
        let began = Instant::now();
        let ceiling = rates.ceiling(len);
        loop {
            let have = sink.have();
            if have == len {
                return Ok(fetched);
            }
            if began.elapsed() > ceiling {
                return Err(slow(format!(
                    "too slow: {have} of {len} bytes in {} s, past the {} s this file may take at --min-rate {} B/s; refused (a slow-retrieval attack, or a link too slow for --min-rate)",
                    began.elapsed().as_secs(),
                    ceiling.as_secs(),
                    rates.floor()
                )));
            }
            if idle > rates.retries {
                return Err(slow(format!(
                    "no progress after {} attempts ({have} of {len} bytes)",
                    rates.retries + 1
                )));
            }
            if !pause.is_zero() {
                std::thread::sleep(std::mem::take(&mut pause));
            }
            let left = len - have;
            // The slowest rate we accept bounds how long this request may take.
            let budget = Duration::from_secs(30 + left / rates.floor());
            let mut req = self.get(url);
            if have > 0 {
                req = req.header("Range", format!("bytes={have}-"));
            }
            let req = req.config().timeout_recv_body(Some(budget)).build();
            let mut resp = match req.call() {
                Ok(resp) => resp,
                Err(e) => {
                    // A certificate that does not verify will not verify on a retry.
                    if let e @ NetError::Tls { .. } = self.failed(shown, &e) {
                        return Err(e);
                    }
                    idle += 1;
                    fruitless += 1;
                    pause = rates.backoff(fruitless);
                    continue;
                }
            };
            match resp.status().as_u16() {
                // Only the bytes from where the sink stops: anything else would join two
                // pieces that do not follow each other. Start over instead.
                206 if have > 0 && range_start(&resp) == Some(have) => {}
                206 if have > 0 => {
                    sink.restart()?;
                    idle += 1;
                    continue;
                }
                // The server ignores Range (or none was asked for): from the start.
                200 => sink.restart()?,
                // A registry token expired: a new one, and try again.
                401 if self.refresh(&resp)? => {
                    idle += 1;
                    continue;
                }
                status => {
                    return Err(NetError::Status {
                        url: shown.to_owned(),
                        status,
                    });
                }
            }
            let (got, cut) = body(&mut resp, len, rates, sink, shown)?;
            // Durable before the next step trusts its length (a power cut keeps it too).
            sink.settle()?;
            fetched += got;
            if sink.have() > best && !cut {
                best = sink.have();
                idle = 0;
                fruitless = 0;
            } else {
                idle += 1;
                fruitless += 1;
                pause = rates.backoff(fruitless);
            }
        }
    }
}

/// Reads a response's body into `sink`, up to `len` bytes in all. Returns the bytes
/// read and whether the request was cut for being slow: the average rate over each
/// window must reach `min_rate`, or the request counts as fruitless. A mirror that
/// sends a byte now and then never stalls long enough to be cut, and must not hold a
/// download (or reset the retry count) forever.
fn body(
    resp: &mut Response,
    len: u64,
    rates: &Rates,
    sink: &mut dyn Sink,
    shown: &str,
) -> Result<(u64, bool), NetError> {
    let mut r = resp.body_mut().as_reader();
    let mut buf = vec![0u8; 64 << 10];
    let mut got = 0u64;
    let window = rates.window();
    let (mut window_start, mut window_bytes) = (Instant::now(), 0u64);
    let began = Instant::now();
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) | Err(_) => return Ok((got, false)),
            Ok(n) => n,
        };
        window_bytes += n as u64;
        let mut slow = false;
        if window_start.elapsed() >= window {
            let floor = rates.floor().saturating_mul(window.as_secs().max(1));
            slow = window_bytes < floor;
            (window_start, window_bytes) = (Instant::now(), 0);
        }
        let room = usize::try_from(len - sink.have()).unwrap_or(usize::MAX);
        if n > room {
            sink.append(&buf[..room])?;
            sink.settle()?;
            return Err(NetError::Oversent {
                url: shown.to_owned(),
                len,
            });
        }
        sink.append(&buf[..n])?;
        got += n as u64;
        sink.progress(sink.have(), len);
        if let Some(cap) = rates.max_rate {
            // Held to the cap on average since the request began: wait until the bytes
            // read so far are due.
            let due = Duration::from_millis(got.saturating_mul(1000) / cap.max(1));
            if let Some(wait) = due.checked_sub(began.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        if sink.have() == len || slow {
            return Ok((got, slow));
        }
    }
}

/// `req` with the `Authorization` header, if there is one.
pub fn with_auth<B>(req: ureq::RequestBuilder<B>, auth: Option<&str>) -> ureq::RequestBuilder<B> {
    match auth {
        Some(a) => req.header("Authorization", a),
        None => req,
    }
}

/// Where a `206` response's `Content-Range: bytes START-END/TOTAL` starts.
fn range_start(resp: &Response) -> Option<u64> {
    resp.headers()
        .get("Content-Range")?
        .to_str()
        .ok()?
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_wait_longer_each_time_up_to_a_minute() {
        let o = Rates::default();
        let waits: Vec<u64> = (1..=8).map(|n| o.backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(o.backoff(u32::MAX), RETRY_DELAY_MAX);
        let none = Rates {
            retry_delay: Duration::ZERO,
            ..Rates::default()
        };
        assert_eq!(none.backoff(5), Duration::ZERO);
    }

    /// Credentials go to the server's origin: scheme, host and port.
    #[test]
    fn origins() {
        assert_eq!(
            origin("https://r.example:5000/v2/x/blobs/uploads/"),
            "https://r.example:5000"
        );
        assert_eq!(origin("https://r.example:5000"), "https://r.example:5000");
        assert_eq!(origin("https://s3.test/bucket?x=1"), "https://s3.test");
        assert_ne!(
            origin("https://storage.example/v2/x"),
            origin("https://r.example/v2/x")
        );
        assert_ne!(
            origin("http://r.example/v2/x"),
            origin("https://r.example/v2/x")
        );
        assert_ne!(
            origin("https://r.example:5001/v2/x"),
            origin("https://r.example:5000/v2/x")
        );
    }
}
