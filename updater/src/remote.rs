//! The transport of a remote update: one HTTP(S) client for a static repository or an
//! OCI registry (whose manifest maps each path to a blob), bounded and resumable
//! downloads into a [`Sink`] (a file of the download directory, kept across runs and
//! reboots, or memory), with a floor on the rate and a ceiling on the time.

use std::io::Read as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rustix::fd::AsFd;
use rustix::fs::{AtFlags, Mode, OFlags};

use crate::dirs::Dir;
use crate::error::{UpdaterError, bad};
use crate::tls::{self, Trust};
use net::auth::Access;

/// How a download may go.
#[derive(Debug, Clone)]
pub struct FetchOptions {
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
    /// What an `https://` repository's certificate must chain to.
    pub trust: Trust,
    /// For an `oci://` registry that wants credentials: a Docker-style `config.json`.
    pub registry_auth: Option<PathBuf>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            min_rate: 1024,
            stall: Duration::from_secs(30),
            retries: 5,
            retry_delay: Duration::from_secs(1),
            trust: Trust::System,
            registry_auth: None,
        }
    }
}

/// The longest wait between two retries.
pub const RETRY_DELAY_MAX: Duration = Duration::from_mins(1);

impl FetchOptions {
    /// The window over which a request's average rate must reach `min_rate`: twice the
    /// stall timeout (a minute by default).
    fn window(&self) -> Duration {
        (self.stall * 2).max(Duration::from_secs(1))
    }

    /// The longest one file of `len` bytes may take in all, retries and waits included:
    /// twice its time at `min_rate`, plus a window and the longest wait per retry. A
    /// mirror that alternates good windows and slow ones still ends within it.
    fn ceiling(&self, len: u64) -> Duration {
        let at_rate = Duration::from_secs(len / self.min_rate.max(1)).saturating_mul(2);
        let per_try = self
            .window()
            .saturating_add(RETRY_DELAY_MAX.min(self.retry_delay.saturating_mul(64)));
        at_rate.saturating_add(per_try.saturating_mul(self.retries.saturating_add(1)))
    }

    /// The wait before the retry that follows `failed` fruitless requests in a row.
    fn backoff(&self, failed: u32) -> Duration {
        let factor = 1u32 << failed.saturating_sub(1).min(16);
        self.retry_delay
            .checked_mul(factor)
            .map_or(RETRY_DELAY_MAX, |d| d.min(RETRY_DELAY_MAX))
    }
}

pub(crate) struct Remote {
    /// How errors name the repository: its URL, or `oci://REGISTRY/NAME:TAG`.
    base: String,
    /// What is requested: the URL, or a registry's API root (`https://…/v2/NAME`).
    api: String,
    agent: ureq::Agent,
    opts: FetchOptions,
    /// For a registry: the blob URL of each path, from the tag's manifest.
    blobs: Option<crate::oci::Blobs>,
    /// For a registry: its reference and the credentials (`--registry-auth`), to ask
    /// for a new token when one expires.
    registry: Option<(format::oci::Reference, Option<String>)>,
    /// The `Authorization` header a registry wants (a token, or Basic credentials).
    auth: std::cell::RefCell<Option<String>>,
}

impl Remote {
    pub(crate) fn new(url: &str, opts: FetchOptions) -> Result<Self, UpdaterError> {
        let oci = url
            .starts_with("oci://")
            .then(|| {
                format::oci::Reference::parse(url)
                    .map_err(|e| UpdaterError::State(format!("{url}: {e}")))
            })
            .transpose()?;
        // What is requested: the URL, or the registry's API root.
        let api = oci
            .as_ref()
            .map_or_else(|| url.to_owned(), format::oci::Reference::api);
        let https = api.starts_with("https://");
        if !https && !api.starts_with("http://") {
            return Err(UpdaterError::State(format!(
                "{url}: a repository URL starts with https://, http:// or oci://"
            )));
        }
        let config = ureq::Agent::config_builder()
            .tls_config(tls::config(&api, &opts.trust)?)
            // An https repository is not followed to a plain-http redirect.
            .https_only(https)
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(Duration::from_secs(30)))
            .timeout_per_read(Some(opts.stall))
            .build();
        let agent = ureq::Agent::new_with_config(config);
        let why =
            |e: &ureq::Error| tls::explain(e, &api, &opts.trust).unwrap_or_else(|| e.to_string());
        let (mut auth, mut registry) = (None, None);
        if let Some(r) = &oci {
            let basic = opts
                .registry_auth
                .as_deref()
                .map(|f| net::auth::credentials(f, r))
                .transpose()?;
            auth = net::auth::authorize(&agent, r, basic.as_deref(), Access::Pull, &why)?;
            registry = Some((r.clone(), basic));
        } else if opts.registry_auth.is_some() {
            return Err(UpdaterError::State(format!(
                "{url}: --registry-auth is for oci:// registries"
            )));
        }
        let mut remote = Self {
            base: oci
                .as_ref()
                .map_or_else(|| url.trim_end_matches('/').to_owned(), ToString::to_string),
            api,
            agent,
            opts,
            blobs: None,
            registry,
            auth: std::cell::RefCell::new(auth),
        };
        if let Some(r) = &oci {
            remote.blobs = Some(crate::oci::blobs(&|u: &str| remote.get_manifest(u), r)?);
        }
        Ok(remote)
    }

    /// A GET of a registry's manifest (or index) at `url`, answering a `401` once.
    fn get_manifest(&self, url: &str) -> Result<ureq::http::Response<ureq::Body>, UpdaterError> {
        let call = || {
            self.get(url)
                .header("Accept", format::oci::MANIFEST_ACCEPT)
                .config()
                // A registry that stops sending is cut.
                .timeout_recv_body(Some(Duration::from_mins(1)))
                .build()
                .call()
                .map_err(|e| UpdaterError::State(format!("{}: {}", self.base, self.why(&e))))
        };
        let mut resp = call()?;
        if resp.status().as_u16() == 401 && self.refresh(net::auth::challenge(&resp))? {
            resp = call()?;
        }
        Ok(resp)
    }

    /// How errors name `rel`: its URL, or for a registry `oci://REGISTRY/NAME:TAG/rel`.
    pub(crate) fn url(&self, rel: &str) -> String {
        format!("{}/{rel}", self.base)
    }

    /// The `Authorization` header to send, if the registry wants one.
    fn auth(&self) -> Option<String> {
        self.auth.borrow().clone()
    }

    /// Answers a registry's `401` (a token expired, or `/v2/` was open but this
    /// repository is not) from its `challenge`, or else by asking `/v2/` again.
    /// Whether there are credentials to try again with.
    fn refresh(&self, challenge: &str) -> Result<bool, UpdaterError> {
        let Some((r, basic)) = &self.registry else {
            return Ok(false);
        };
        let why = |e: &ureq::Error| self.why(e);
        let new = net::auth::reauthorize(
            &self.agent,
            r,
            challenge,
            basic.as_deref(),
            Access::Pull,
            &why,
        )?;
        let got = new.is_some();
        *self.auth.borrow_mut() = new;
        Ok(got)
    }

    /// A GET of `from` with the registry's `Authorization`, if any.
    fn get(&self, from: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        let req = self.agent.get(from);
        match self.auth() {
            Some(a) => req.header("Authorization", a),
            None => req,
        }
    }

    /// Where `rel` is fetched from: the URL, or the blob a registry's manifest names.
    fn locate(&self, rel: &str) -> Result<String, UpdaterError> {
        match &self.blobs {
            None => Ok(self.url(rel)),
            Some(blobs) => blobs.url(rel).ok_or_else(|| {
                UpdaterError::State(format!(
                    "{}: the registry's manifest lists no {rel}",
                    self.base
                ))
            }),
        }
    }

    /// A failed request, said in one line (TLS failures in plain words).
    fn why(&self, e: &ureq::Error) -> String {
        tls::explain(e, &self.api, &self.opts.trust).unwrap_or_else(|| e.to_string())
    }

    /// The whole of `rel`, refused past `max` bytes.
    pub(crate) fn get_small(&self, rel: &str, max: usize) -> Result<Vec<u8>, UpdaterError> {
        let url = self.url(rel);
        let fail = |why: String| UpdaterError::State(format!("{url}: {why}"));
        let from = self.locate(rel)?;
        let call = || {
            self.get(&from)
                .config()
                // Small files: a server that stops sending is cut.
                .timeout_recv_body(Some(Duration::from_mins(1)))
                .build()
                .call()
                .map_err(|e| fail(self.why(&e)))
        };
        let mut resp = call()?;
        // A registry token expired: one new token, one more try.
        if resp.status().as_u16() == 401 && self.refresh(net::auth::challenge(&resp))? {
            resp = call()?;
        }
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(fail(format!("HTTP {status}")));
        }
        let mut out = Vec::new();
        resp.body_mut()
            .as_reader()
            .take(max as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| fail(e.to_string()))?;
        if out.len() > max {
            return Err(fail(format!("is larger than the {max} bytes allowed")));
        }
        Ok(out)
    }

    /// Fetches `rel` into the file `name` of `dir` until it holds `len` bytes, resuming
    /// from what the file already holds (fsynced after each request, so a reboot keeps
    /// it). Returns the bytes fetched.
    pub(crate) fn download(
        &self,
        rel: &str,
        dir: &Dir,
        name: &str,
        len: u64,
    ) -> Result<u64, UpdaterError> {
        let mut have = dir.file_len(name)?;
        if have > len {
            fsop::unlinkat(dir.fd(), name, AtFlags::empty())
                .map_err(|e| bad(&dir.join(name), format!("remove: {e}")))?;
            have = 0;
        }
        let mut sink = FileSink {
            dir,
            name,
            have,
            fd: None,
        };
        self.fetch(rel, len, &mut sink)
    }

    /// Fetches the whole of `rel`, exactly `len` bytes, into memory (small objects).
    pub(crate) fn fetch_bytes(&self, rel: &str, len: u64) -> Result<(Vec<u8>, u64), UpdaterError> {
        let mut sink = MemSink(Vec::new());
        let got = self.fetch(rel, len, &mut sink)?;
        Ok((sink.0, got))
    }

    /// Fetches `rel` into `sink` until it holds `len` bytes, resuming with `Range` after
    /// a drop. Returns the bytes fetched.
    fn fetch(&self, rel: &str, len: u64, sink: &mut dyn Sink) -> Result<u64, UpdaterError> {
        let url = self.url(rel);
        let from = self.locate(rel)?;
        let fail = |why: String| UpdaterError::State(format!("{url}: {why}"));
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
        let ceiling = self.opts.ceiling(len);
        loop {
            let have = sink.have();
            if have == len {
                return Ok(fetched);
            }
            if began.elapsed() > ceiling {
                return Err(fail(format!(
                    "too slow: {have} of {len} bytes in {} s, past the {} s this file may take at --min-rate {} B/s; refused (a slow-retrieval attack, or a link too slow for --min-rate)",
                    began.elapsed().as_secs(),
                    ceiling.as_secs(),
                    self.opts.min_rate
                )));
            }
            if idle > self.opts.retries {
                return Err(fail(format!(
                    "no progress after {} attempts ({have} of {len} bytes)",
                    self.opts.retries + 1
                )));
            }
            if !pause.is_zero() {
                std::thread::sleep(std::mem::take(&mut pause));
            }
            let left = len - have;
            // The slowest rate we accept bounds how long this request may take.
            let budget = Duration::from_secs(30 + left / self.opts.min_rate.max(1));
            let mut req = self.get(&from);
            if have > 0 {
                req = req.header("Range", format!("bytes={have}-"));
            }
            let req = req.config().timeout_recv_body(Some(budget)).build();
            let mut resp = match req.call() {
                Ok(resp) => resp,
                Err(e) => {
                    // A certificate that does not verify will not verify on a retry.
                    if let Some(why) = tls::explain(&e, &self.api, &self.opts.trust) {
                        return Err(fail(why));
                    }
                    idle += 1;
                    fruitless += 1;
                    pause = self.opts.backoff(fruitless);
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
                401 if self.refresh(net::auth::challenge(&resp))? => {
                    idle += 1;
                    continue;
                }
                s => return Err(fail(format!("HTTP {s}"))),
            }
            let (got, slow) = self.body(&mut resp, len, sink, &fail)?;
            // Durable before the next step trusts its length (a power cut keeps it too).
            sink.settle()?;
            fetched += got;
            if sink.have() > best && !slow {
                best = sink.have();
                idle = 0;
                fruitless = 0;
            } else {
                idle += 1;
                fruitless += 1;
                pause = self.opts.backoff(fruitless);
            }
        }
    }

    /// Reads a response's body into `sink`, up to `len` bytes in all. Returns the bytes
    /// read and whether the request was cut for being slow: the average rate over each
    /// window must reach --min-rate, or the request counts as fruitless. A mirror that
    /// sends a byte now and then never stalls long enough to be cut, and must not hold
    /// an update (or reset the retry count) forever.
    fn body(
        &self,
        resp: &mut ureq::http::Response<ureq::Body>,
        len: u64,
        sink: &mut dyn Sink,
        fail: &dyn Fn(String) -> UpdaterError,
    ) -> Result<(u64, bool), UpdaterError> {
        let mut r = resp.body_mut().as_reader();
        let mut buf = vec![0u8; 64 << 10];
        let mut got = 0u64;
        let window = self.opts.window();
        let (mut window_start, mut window_bytes) = (Instant::now(), 0u64);
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) | Err(_) => return Ok((got, false)),
                Ok(n) => n,
            };
            window_bytes += n as u64;
            let mut slow = false;
            if window_start.elapsed() >= window {
                let floor = self.opts.min_rate.saturating_mul(window.as_secs().max(1));
                slow = window_bytes < floor;
                (window_start, window_bytes) = (Instant::now(), 0);
            }
            let room = usize::try_from(len - sink.have()).unwrap_or(usize::MAX);
            if n > room {
                sink.append(&buf[..room])?;
                sink.settle()?;
                return Err(fail(format!(
                    "sends more than the {len} bytes its signed metadata declares; cut there"
                )));
            }
            sink.append(&buf[..n])?;
            got += n as u64;
            if sink.have() == len || slow {
                return Ok((got, slow));
            }
        }
    }
}

/// Where a `206` response's `Content-Range: bytes START-END/TOTAL` starts.
fn range_start(resp: &ureq::http::Response<ureq::Body>) -> Option<u64> {
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

/// Where a download goes.
trait Sink {
    /// Bytes held.
    fn have(&self) -> u64;
    /// Drops what is held: the next bytes are the start of the file.
    fn restart(&mut self) -> Result<(), UpdaterError>;
    fn append(&mut self, bytes: &[u8]) -> Result<(), UpdaterError>;
    /// Makes what is held durable, if the sink is a file.
    fn settle(&mut self) -> Result<(), UpdaterError>;
}

/// A file of the download directory: kept across runs and reboots.
struct FileSink<'a> {
    dir: &'a Dir,
    name: &'a str,
    have: u64,
    fd: Option<rustix::fd::OwnedFd>,
}

impl FileSink<'_> {
    fn path(&self) -> PathBuf {
        self.dir.join(self.name)
    }

    fn open(&mut self, flags: OFlags) -> Result<(), UpdaterError> {
        // fsop::create adds O_NOFOLLOW: a symlink planted at the name is refused.
        let fd = fsop::create(self.dir.fd(), self.name, flags, Mode::from_raw_mode(0o600))
            .map_err(|e| bad(&self.path(), format!("create: {e}")))?;
        self.fd = Some(fd);
        Ok(())
    }
}

impl Sink for FileSink<'_> {
    fn have(&self) -> u64 {
        self.have
    }

    fn restart(&mut self) -> Result<(), UpdaterError> {
        self.open(OFlags::WRONLY | OFlags::TRUNC)?;
        self.have = 0;
        Ok(())
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), UpdaterError> {
        if self.fd.is_none() {
            self.open(OFlags::WRONLY | OFlags::APPEND)?;
        }
        let fd = self.fd.as_ref().map(AsFd::as_fd);
        fd.map_or(Ok(()), |fd| fsop::write_all(fd, bytes))
            .map_err(|e| bad(&self.path(), format!("write: {e}")))?;
        self.have += bytes.len() as u64;
        Ok(())
    }

    fn settle(&mut self) -> Result<(), UpdaterError> {
        if let Some(fd) = self.fd.take() {
            fsop::fsync(fd.as_fd()).map_err(|e| bad(&self.path(), format!("fsync: {e}")))?;
        }
        Ok(())
    }
}

/// Memory, for objects small enough to hold whole.
struct MemSink(Vec<u8>);

impl Sink for MemSink {
    fn have(&self) -> u64 {
        self.0.len() as u64
    }

    fn restart(&mut self) -> Result<(), UpdaterError> {
        self.0.clear();
        Ok(())
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), UpdaterError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }

    fn settle(&mut self) -> Result<(), UpdaterError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_wait_longer_each_time_up_to_a_minute() {
        let o = FetchOptions::default();
        let waits: Vec<u64> = (1..=8).map(|n| o.backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(o.backoff(u32::MAX), RETRY_DELAY_MAX);
        let none = FetchOptions {
            retry_delay: Duration::ZERO,
            ..FetchOptions::default()
        };
        assert_eq!(none.backoff(5), Duration::ZERO);
    }
}
