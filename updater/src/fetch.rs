//! Updates from a static repository over HTTP or HTTPS (`berth update URL --channel
//! NAME`, `berth check`); the layout is `docs/FORMAT.md`, "Static repositories", and
//! what an `https://` repository's certificate must chain to is [`crate::tls`].
//!
//! 0. A TLS failure (unknown issuer, another name, expired) stops the run at the first
//!    request, naming the URL and the cause; nothing is written before it.
//! 1. The channel pointer is fetched (at most `channel::FILE_MAX` bytes), its signature
//!    verified over the exact body bytes with the running deployment's keys, and only
//!    then decoded.
//! 2. Freeze and replay protection: a serial lower than the last one accepted is
//!    refused, and so is the same serial with other bytes. A pointer is refused after its
//!    expiry, measured against the later of the clock and the newest issue time seen, so
//!    a device whose clock says 1970 still refuses what it knows to be stale. The state
//!    (`berth/state/channels/NAME`) is written durably before anything is downloaded.
//! 3. The delta from the running commit if the pointer lists one, else the full update,
//!    is downloaded in its split form into `berth/repo/tmp/download-…`: the superblock
//!    bounded by and checked against the length and sha256 the pointer signs, each part
//!    bounded by the length the superblock signs and checked against its sha256. A drop
//!    resumes with a `Range` request from the bytes already on disk, across runs and
//!    reboots too; nothing is downloaded twice. A server that sends more than the signed
//!    length is cut at that length.
//! 4. `berth update DIR` applies it (every check of a file update happens again).

use std::io::Read as _;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use format::ObjectId;
use format::channel::{self, Pointer, Seen, UpdateRef};
use format::sig::Signatures;
use format::update::{self, Body};
use rustix::fd::AsFd;
use rustix::fs::{AtFlags, Mode, OFlags};
use store::Repo;

use crate::dirs::Dir;
use crate::pull::Pulled;
use crate::tls::{self, Trust};
use crate::update::{UpdateOptions, UpdateReport, bad};
use crate::{CHANNELS_DIR, Device, TMP_DIR, UpdaterError};
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

/// What a channel offers, as `berth check` reports it.
#[derive(Debug, serde::Serialize)]
pub struct Offer {
    /// The channel's name.
    pub channel: String,
    /// The pointer's serial.
    pub serial: u64,
    /// The channel's commit.
    pub commit: String,
    /// Its version.
    pub version: String,
    /// Whether the channel's commit differs from the running one.
    pub available: bool,
    /// `delta` (from the running commit), `objects` (pull the objects the device lacks)
    /// or `full`.
    pub kind: &'static str,
    /// Bytes the update would download (before resuming); for `objects`, at most this.
    pub bytes: u64,
    /// When the pointer expires (seconds since the Unix epoch).
    pub expires: u64,
}

/// The result of `berth update URL`.
#[derive(Debug, serde::Serialize)]
pub struct RemoteReport {
    /// Bytes fetched by this run (resumed bytes are not fetched again).
    pub downloaded: u64,
    /// `delta`, `objects`, `full`, or `none` when already up to date.
    pub kind: &'static str,
    /// The update, unless there was nothing to do.
    pub update: Option<UpdateReport>,
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

/// The clock, in seconds since the Unix epoch. Test hook: `BERTH_TEST_CLOCK=SECONDS`
/// plays a device whose clock is wrong (whoever sets berth's environment is root on
/// the device already).
fn now() -> u64 {
    if let Some(t) = std::env::var("BERTH_TEST_CLOCK")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return t;
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Remote {
    fn new(url: &str, opts: FetchOptions) -> Result<Self, UpdaterError> {
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
    fn get_small(&self, rel: &str, max: usize) -> Result<Vec<u8>, UpdaterError> {
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

impl Remote {
    /// Downloads the split-form update `rel` (referenced by `r`) into `dir`; returns
    /// the bytes fetched.
    fn download_update(
        &self,
        rel: &str,
        r: &UpdateRef,
        dir: &Dir,
        opts: UpdateOptions,
    ) -> Result<u64, UpdaterError> {
        let sb_path = dir.join("superblock");
        let mut downloaded = self.download(
            &format!("{rel}/superblock"),
            dir,
            "superblock",
            r.superblock_len,
        )?;
        let sb = dir
            .read("superblock", r.superblock_len)?
            .ok_or_else(|| bad(&sb_path, "vanished after its download"))?;
        if ObjectId::digest(&sb) != r.superblock_sha256 {
            let _ = fsop::unlinkat(dir.fd(), "superblock", AtFlags::empty());
            return Err(bad(
                &sb_path,
                format!(
                    "{}/{rel}/superblock does not match the sha256 its channel pointer signs; removed",
                    self.base
                ),
            ));
        }
        // Its bytes are signed through the pointer; `update` verifies its own signature too.
        let body_len = update::decode_head(&sb[..update::HEAD_LEN.min(sb.len())])
            .map_err(|e| bad(&sb_path, e.to_string()))?;
        let body = sb
            .get(update::HEAD_LEN..update::HEAD_LEN + body_len)
            .ok_or_else(|| bad(&sb_path, "truncated"))
            .and_then(|b| Body::decode(b).map_err(|e| bad(&sb_path, e.to_string())))?;
        let on_disk = |dir: &Dir| -> u64 {
            dir.names().map_or(0, |names| {
                names
                    .iter()
                    .filter_map(|n| std::str::from_utf8(n).ok())
                    .map(|n| dir.file_len(n).unwrap_or(0))
                    .sum()
            })
        };
        opts.progress.downloaded(on_disk(dir), r.total_len);
        for (i, part) in body.parts.iter().enumerate() {
            let file = format!("part-{i:05}");
            let url = format!("{rel}/{file}");
            // Damaged in transit or on disk: fetched again once. A second mismatch is the
            // server's doing (a wrong file, or a lying Content-Range): said with its URL.
            for attempt in 0..2 {
                downloaded += self.download(&url, dir, &file, part.len)?;
                let bytes = dir
                    .read(&file, part.len)?
                    .ok_or_else(|| bad(&dir.join(&file), "vanished after its download"))?;
                if ObjectId::digest(&bytes) == part.sha256 {
                    break;
                }
                fsop::unlinkat(dir.fd(), file.as_str(), AtFlags::empty())
                    .map_err(|e| bad(&dir.join(&file), e.to_string()))?;
                if attempt == 1 {
                    return Err(UpdaterError::State(format!(
                        "{}: does not match the sha256 its superblock signs, twice (a damaged file on the server, or wrong Content-Range answers); removed",
                        self.url(&url)
                    )));
                }
            }
            opts.progress.downloaded(on_disk(dir), r.total_len);
        }
        Ok(downloaded)
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

impl Device {
    /// Where channel states are kept (`berth/state/channels`), made if missing with
    /// `create`.
    fn channels_dir(&self, create: bool) -> Result<Option<Dir>, UpdaterError> {
        self.own_dir(CHANNELS_DIR, create.then_some(0o755))
    }

    /// What the device accepted last from channel `name`: nothing if the file does
    /// not exist; anything unreadable or damaged is an error that names the file
    /// (never "nothing seen", which would open the device to replayed pointers).
    fn seen(&self, name: &str) -> Result<Seen, UpdaterError> {
        let Some(dir) = self.channels_dir(false)? else {
            return Ok(Seen::default());
        };
        let Some(bytes) = dir.read(name, channel::SEEN_MAX as u64)? else {
            return Ok(Seen::default());
        };
        Seen::decode(&bytes).map_err(|e| {
            UpdaterError::State(format!(
                "{}: {e}; the replay check cannot be made (remove the file only if the device has accepted no newer pointer)",
                dir.join(name).display()
            ))
        })
    }

    /// Fetches and verifies the pointer of `channel`; refuses a stale, replayed or
    /// expired one. Returns it with the state to remember.
    fn pointer(
        &self,
        remote: &Remote,
        name: &str,
        running: &format::record::DeploymentName,
    ) -> Result<(Pointer, Seen), UpdaterError> {
        channel::check_name(name)
            .map_err(|e| UpdaterError::State(format!("--channel {name}: {e}")))?;
        let rel = format!("channels/{name}");
        let url = remote.url(&rel);
        let bytes = remote.get_small(&rel, channel::FILE_MAX)?;
        let stale = |why: String| UpdaterError::State(format!("{url}: {why}"));
        let (body, sigs) = channel::split_file(&bytes).map_err(|e| stale(e.to_string()))?;
        let (signer_of, keys) = self.trusted_keys(running)?;
        Signatures::decode(sigs)
            .and_then(|s| s.verify(body, &keys))
            .map_err(|e| {
                stale(format!(
                    "{e} (keys trusted by deployment {})",
                    signer_of.as_str()
                ))
            })?;
        let p = Pointer::decode(body).map_err(|e| stale(e.to_string()))?;
        if p.channel != name {
            return Err(stale(format!(
                "is the pointer of channel {:?}, not {name:?}",
                p.channel
            )));
        }
        let seen = self.seen(name)?;
        let digest = ObjectId::digest(body);
        if p.serial < seen.serial {
            return Err(stale(format!(
                "serial {} is older than serial {} that this device already accepted (a replayed or stale pointer); refused",
                p.serial, seen.serial
            )));
        }
        if p.serial == seen.serial && seen.body.is_some_and(|b| b != digest) {
            return Err(stale(format!(
                "serial {} was accepted before with other content; refused",
                p.serial
            )));
        }
        let floor = now().max(seen.issued);
        if p.expires < floor {
            return Err(stale(format!(
                "expired at {} (now is at least {floor}, from the clock or the newest pointer seen); refused",
                p.expires
            )));
        }
        let next = Seen {
            serial: p.serial,
            issued: p.issued.max(seen.issued),
            body: Some(digest),
        };
        Ok((p, next))
    }

    /// Writes what the device remembers of a channel: temp file, fsync, rename, fsync.
    fn remember(&self, name: &str, seen: &Seen) -> Result<(), UpdaterError> {
        let dir = self
            .channels_dir(true)?
            .ok_or_else(|| UpdaterError::State(format!("{CHANNELS_DIR}: not made")))?;
        let path = dir.join(name);
        let tmp = format!(".{name}.tmp");
        let io = |e: rustix::io::Errno| bad(&path, format!("write: {e}"));
        let f = fsop::create(
            dir.fd(),
            tmp.as_str(),
            OFlags::WRONLY | OFlags::TRUNC,
            Mode::from_raw_mode(0o644),
        )
        .map_err(io)?;
        fsop::write_all(f.as_fd(), seen.encode().as_bytes()).map_err(io)?;
        fsop::fsync(f.as_fd()).map_err(io)?;
        fsop::renameat(dir.fd(), tmp.as_str(), dir.fd(), name).map_err(io)?;
        dir.sync()
    }

    /// The running deployment's commit.
    fn running_commit(&self) -> Result<(format::record::DeploymentName, ObjectId), UpdaterError> {
        let (rec, _) = self.record()?;
        let running = self.running(&rec)?;
        let repo = Repo::open(&self.path.join("berth/repo"))?;
        let id = repo.resolve_commit(running.as_str())?;
        Ok((running, id))
    }

    /// `berth check`: what the channel offers, without downloading an update or
    /// writing anything.
    pub fn check(&self, url: &str, name: &str, opts: FetchOptions) -> Result<Offer, UpdaterError> {
        let remote = Remote::new(url, opts)?;
        let (running, current) = self.running_commit()?;
        let (p, _) = self.pointer(&remote, name, &running)?;
        // What `update` would take first; an object pull fetches only the objects the
        // device lacks, so its bytes are an upper bound (the full update's bound it too).
        let (kind, bytes) = match (p.delta_from(&current), &p.objects) {
            (Some(d), _) => ("delta", d.total_len),
            (None, Some(o)) => (
                "objects",
                o.total_len
                    .min(o.superblock_len.saturating_add(p.full.total_len)),
            ),
            (None, None) => ("full", p.full.total_len),
        };
        Ok(Offer {
            channel: p.channel.clone(),
            serial: p.serial,
            commit: p.commit.to_string(),
            version: p.version.clone(),
            available: self.offers_new(&p.commit, &current)?,
            kind,
            bytes,
            expires: p.expires,
        })
    }

    /// `berth update URL --channel NAME`.
    pub fn update_remote(
        &self,
        url: &str,
        name: &str,
        fetch: FetchOptions,
        opts: UpdateOptions,
    ) -> Result<RemoteReport, UpdaterError> {
        let _lock = self.lock(crate::lock::LockKind::Store, "update")?;
        // The deadline covers the downloads as well as the apply.
        let deadline = crate::update::arm_deadline(url, opts);
        let remote = Remote::new(url, fetch)?;
        let (running, current) = self.running_commit()?;
        let (p, seen) = self.pointer(&remote, name, &running)?;
        self.remember(name, &seen)?;
        if !self.offers_new(&p.commit, &current)? {
            return Ok(RemoteReport {
                downloaded: 0,
                kind: "none",
                update: None,
            });
        }
        self.forget_downloads(&p.commit)?;
        let mut downloaded = 0;
        if p.delta_from(&current).is_none()
            && let Some(objects) = p.objects
        {
            let dir = self.download_dir(&p.commit, "objects")?;
            match self.pull(&remote, &p, &objects, &dir, opts, deadline.as_ref())? {
                Pulled::Done {
                    report,
                    downloaded: got,
                } => {
                    drop(dir);
                    self.remove_download(&p.commit, "objects");
                    return Ok(RemoteReport {
                        downloaded: got,
                        kind: "objects",
                        update: Some(report),
                    });
                }
                Pulled::Costlier {
                    downloaded: got,
                    missing,
                } => {
                    // The index stays until the full update is in: a rerun need not
                    // fetch it again to come to the same choice.
                    opts.progress.fallback(missing, p.full.total_len);
                    downloaded = got;
                }
            }
        }
        let (kind, r, rel) = match p.delta_from(&current) {
            Some(r) => ("delta", *r, format!("updates/{current}-{}", p.commit)),
            None => ("full", p.full, format!("updates/full-{}", p.commit)),
        };
        let dir = self.download_dir(&p.commit, kind)?;
        downloaded += remote.download_update(&rel, &r, &dir, opts)?;
        let report = self.apply_update(dir.path(), opts, deadline.as_ref())?;
        drop(dir);
        self.remove_download(&p.commit, kind);
        self.remove_download(&p.commit, "objects");
        Ok(RemoteReport {
            downloaded,
            kind,
            update: Some(report),
        })
    }

    /// Removes the download directories of commits other than `keep`: what an update
    /// the channel has moved past left behind would otherwise stay for good.
    fn forget_downloads(&self, keep: &ObjectId) -> Result<(), UpdaterError> {
        let ours = format!("download-{}-", &keep.to_string()[..16]);
        let Some(tmp) = self.own_dir(TMP_DIR, None)? else {
            return Ok(());
        };
        for name in self.download_dirs()? {
            if !name.starts_with(&ours) {
                tmp.remove(name.as_bytes())?;
            }
        }
        Ok(())
    }

    /// The names of the download directories (`berth/repo/tmp/download-…`).
    pub(crate) fn download_dirs(&self) -> Result<Vec<String>, UpdaterError> {
        let Some(tmp) = self.own_dir(TMP_DIR, None)? else {
            return Ok(Vec::new());
        };
        Ok(tmp
            .names()?
            .into_iter()
            .filter_map(|n| String::from_utf8(n).ok())
            .filter(|n| n.starts_with("download-"))
            .collect())
    }

    /// `berth/repo/tmp/download-<commit id16>-<kind>/`, made if missing.
    pub(crate) fn download_dir(&self, commit: &ObjectId, kind: &str) -> Result<Dir, UpdaterError> {
        let rel = format!("{TMP_DIR}/download-{}-{kind}", &commit.to_string()[..16]);
        self.own_dir(&rel, Some(0o700))?
            .ok_or_else(|| UpdaterError::State(format!("{rel}: not made")))
    }

    /// Removes a finished download directory (best effort: left behind, it is only
    /// garbage that the next update removes or reuses).
    fn remove_download(&self, commit: &ObjectId, kind: &str) {
        let name = format!("download-{}-{kind}", &commit.to_string()[..16]);
        if let Ok(Some(tmp)) = self.own_dir(TMP_DIR, None) {
            // Deliberately ignored: garbage at worst, removed by the next update.
            let _ = tmp.remove(name.as_bytes());
        }
    }

    /// Whether the channel's `commit` is something to install: not the running one, and
    /// not one the boot record knows (a trial that waits for its boot, the default or
    /// the previous deployment) or rolled back from last (it must not come back by
    /// itself). A deployment directory the record does not name is the leftover of an
    /// update cut short before its record write: offered again, so the update
    /// completes. `check` and `update` agree on it.
    fn offers_new(&self, commit: &ObjectId, running: &ObjectId) -> Result<bool, UpdaterError> {
        if commit == running {
            return Ok(false);
        }
        let name = format::record::DeploymentName::for_commit(commit);
        let (rec, _) = self.record()?;
        // A deployment the record names but that is gone from disk (a gc that ran
        // beside the update that made it, before commands took locks) is installed
        // again: otherwise the device would say "up to date" while it cannot boot it.
        let named = [rec.default, rec.trial, rec.previous].contains(&Some(name))
            && self.sysroot.probe(&name, b"/sbin/init") != sysroot::Bootable::Missing;
        // Rolled back from: not offered again by itself, unless this boot dropped it
        // because its deployment was gone (removed by a gc beside its update), which
        // says nothing about the release.
        let rolled_back =
            rec.last_rollback.is_some_and(|r| r.from == name) && !self.dropped_as_missing(&name)?;
        Ok(!(named || rolled_back))
    }

    /// Whether berth-init dropped the trial `name` this boot because its deployment
    /// directory was missing (`boot.json`: a `trial-unbootable` fallback, `missing`).
    fn dropped_as_missing(
        &self,
        name: &format::record::DeploymentName,
    ) -> Result<bool, UpdaterError> {
        let Some(report) = self.boot_report()? else {
            return Ok(false);
        };
        Ok(report.fallbacks.iter().any(|e| {
            e.event == Some(format::bootreport::EventKind::TrialUnbootable)
                && e.deployment.as_deref() == Some(name.as_str())
                && e.state == Some(sysroot::Bootable::Missing)
        }) && self.sysroot.probe(name, b"/sbin/init") == sysroot::Bootable::Missing)
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
