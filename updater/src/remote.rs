//! The transport of a remote update, over [`net::http`]: a static repository, or an OCI
//! registry whose manifest maps each path to a blob; downloads into a file of the
//! download directory (kept across runs and reboots, resumed) or into memory.

use std::path::PathBuf;
use std::time::Duration;

use net::NetError;
use net::auth::Access;
use net::http::{Client, Rates, Response, Sink, Timeouts, with_auth};
use rustix::fd::AsFd;
use rustix::fs::{AtFlags, Mode, OFlags};

use crate::dirs::Dir;
use crate::error::{UpdaterError, bad};
use crate::tls::Trust;

/// How a remote update is fetched.
#[derive(Debug, Clone, Default)]
pub struct FetchOptions {
    /// The floor on the rate, the stall timeout, the retries and their waits.
    pub rates: Rates,
    /// What an `https://` repository's certificate must chain to.
    pub trust: Trust,
    /// For an `oci://` registry that wants credentials: a Docker-style `config.json`.
    pub registry_auth: Option<PathBuf>,
}

/// A repository or registry to fetch from.
pub(crate) struct Remote {
    /// How errors name the repository: its URL, or `oci://REGISTRY/NAME:TAG`.
    base: String,
    client: Client,
    rates: Rates,
    /// For a registry: the blob URL of each path, from the tag's manifest.
    blobs: Option<crate::oci::Blobs>,
}

impl Remote {
    pub(crate) fn new(url: &str, opts: &FetchOptions) -> Result<Self, UpdaterError> {
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
        if !api.starts_with("https://") && !api.starts_with("http://") {
            return Err(UpdaterError::State(format!(
                "{url}: a repository URL starts with https://, http:// or oci://"
            )));
        }
        let timeouts = Timeouts {
            response: Duration::from_secs(30),
            per_read: Some(opts.rates.stall),
        };
        let mut client = Client::new(&api, &opts.trust, timeouts)?;
        if let Some(r) = &oci {
            let basic = opts
                .registry_auth
                .as_deref()
                .map(|f| net::auth::credentials(f, r))
                .transpose()?;
            client = client.authorize(r, basic, Access::Pull)?;
        } else if opts.registry_auth.is_some() {
            return Err(UpdaterError::State(format!(
                "{url}: --registry-auth is for oci:// registries"
            )));
        }
        let mut remote = Self {
            base: oci
                .as_ref()
                .map_or_else(|| url.trim_end_matches('/').to_owned(), ToString::to_string),
            client,
            rates: opts.rates,
            blobs: None,
        };
        if let Some(r) = &oci {
            remote.blobs = Some(crate::oci::blobs(&|u: &str| remote.get_manifest(u), r)?);
        }
        Ok(remote)
    }

    /// A GET of a registry's manifest (or index) at `url`, answering a `401` once.
    fn get_manifest(&self, url: &str) -> Result<Response, UpdaterError> {
        Ok(self.client.send(url, &self.base, |agent, auth| {
            with_auth(agent.get(url), auth)
                .header("Accept", format::oci::MANIFEST_ACCEPT)
                .config()
                // A registry that stops sending is cut.
                .timeout_recv_body(Some(Duration::from_mins(1)))
                .build()
                .call()
        })?)
    }

    /// How errors name `rel`: its URL, or for a registry `oci://REGISTRY/NAME:TAG/rel`.
    pub(crate) fn url(&self, rel: &str) -> String {
        format!("{}/{rel}", self.base)
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

    /// The whole of `rel`, refused past `max` bytes.
    pub(crate) fn get_small(&self, rel: &str, max: usize) -> Result<Vec<u8>, UpdaterError> {
        Ok(self
            .client
            .get_small(&self.locate(rel)?, &self.url(rel), max)?)
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
        download_file(
            &self.client,
            &self.locate(rel)?,
            &self.url(rel),
            &DownloadTo {
                dir,
                name,
                len,
                rates: &self.rates,
            },
            &mut |_, _| {},
        )
    }

    /// Fetches the whole of `rel`, exactly `len` bytes, into memory (small objects).
    pub(crate) fn fetch_bytes(&self, rel: &str, len: u64) -> Result<(Vec<u8>, u64), UpdaterError> {
        let mut sink = Vec::new();
        let got = self.client.fetch(
            &self.locate(rel)?,
            &self.url(rel),
            len,
            &self.rates,
            &mut sink,
        )?;
        Ok((sink, got))
    }
}

/// Where a download goes: the file `name` of `dir`, until it holds `len` bytes.
pub(crate) struct DownloadTo<'a> {
    pub(crate) dir: &'a Dir,
    pub(crate) name: &'a str,
    pub(crate) len: u64,
    pub(crate) rates: &'a Rates,
}

/// Fetches `url` (named `shown` in errors) with `client` into a file, resuming from
/// what it already holds (fsynced after each request, so a reboot keeps it; a file
/// longer than `len` is not this download and starts over). `progress` is told the
/// bytes held of `len` as they come. Returns the bytes fetched.
pub(crate) fn download_file(
    client: &Client,
    url: &str,
    shown: &str,
    to: &DownloadTo<'_>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64, UpdaterError> {
    let DownloadTo {
        dir,
        name,
        len,
        rates,
    } = *to;
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
        progress,
    };
    Ok(client.fetch(url, shown, len, rates, &mut sink)?)
}

/// A file of the download directory: kept across runs and reboots.
struct FileSink<'a> {
    progress: &'a mut dyn FnMut(u64, u64),
    dir: &'a Dir,
    name: &'a str,
    have: u64,
    fd: Option<rustix::fd::OwnedFd>,
}

impl FileSink<'_> {
    fn fail(&self, step: &str, e: rustix::io::Errno) -> NetError {
        NetError::Sink(format!(
            "{}: {step}: {e}",
            self.dir.join(self.name).display()
        ))
    }

    fn open(&mut self, flags: OFlags) -> Result<(), NetError> {
        // fsop::create adds O_NOFOLLOW: a symlink planted at the name is refused.
        let fd = fsop::create(self.dir.fd(), self.name, flags, Mode::from_raw_mode(0o600))
            .map_err(|e| self.fail("create", e))?;
        self.fd = Some(fd);
        Ok(())
    }
}

impl Sink for FileSink<'_> {
    fn have(&self) -> u64 {
        self.have
    }

    fn restart(&mut self) -> Result<(), NetError> {
        self.open(OFlags::WRONLY | OFlags::TRUNC)?;
        self.have = 0;
        Ok(())
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), NetError> {
        if self.fd.is_none() {
            self.open(OFlags::WRONLY | OFlags::APPEND)?;
        }
        let fd = self.fd.as_ref().map(AsFd::as_fd);
        fd.map_or(Ok(()), |fd| fsop::write_all(fd, bytes))
            .map_err(|e| self.fail("write", e))?;
        self.have += bytes.len() as u64;
        Ok(())
    }

    fn progress(&mut self, have: u64, len: u64) {
        (self.progress)(have, len);
    }

    fn settle(&mut self) -> Result<(), NetError> {
        if let Some(fd) = self.fd.take() {
            fsop::fsync(fd.as_fd()).map_err(|e| self.fail("fsync", e))?;
        }
        Ok(())
    }
}
