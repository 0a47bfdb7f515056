//! The device's half of hawkBit's Direct Device Integration API over [`net::http`]:
//! the controller's resources under `/{tenant}/controller/v1/{controllerId}`, with the
//! target's (or gateway's) token on every request to the server and to no other host.
//! Bodies are read with a bound and decoded by [`format::ddi`]; every link the server
//! returns must stay on the server.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use format::ddi::{Base, Cancel, Deployment, Feedback};
use net::NetError;
use net::http::{Client, Timeouts, origin, with_auth};

use crate::error::{Refusal, UpdaterError, refused};
use crate::fetch::FetchOptions;

/// The most a controller resource may be (the base, a deployment, a cancel).
const RESOURCE_MAX: usize = 256 << 10;

/// How the device proves who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// `TargetToken`: the device's own security token.
    Target(String),
    /// `GatewayToken`: the tenant's gateway token.
    Gateway(String),
}

impl Token {
    fn header(&self) -> String {
        match self {
            Self::Target(t) => format!("TargetToken {t}"),
            Self::Gateway(t) => format!("GatewayToken {t}"),
        }
    }
}

/// What became of a feedback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Posted {
    /// The server took it.
    Taken,
    /// The action had already ended (`410 Gone`): nothing more to say about it.
    Gone,
}

/// A controller on a hawkBit server.
#[derive(Debug)]
pub(crate) struct Ddi {
    client: Client,
    /// `{server}/{tenant}/controller/v1/{controllerId}`.
    root: String,
}

impl Ddi {
    pub(crate) fn new(
        server: &str,
        tenant: &str,
        controller: &str,
        token: Option<&Token>,
        fetch: &FetchOptions,
    ) -> Result<Self, UpdaterError> {
        let server = server.trim_end_matches('/');
        if !server.starts_with("https://") && !server.starts_with("http://") {
            return Err(UpdaterError::State(format!(
                "{server}: a hawkBit server's URL starts with https:// or http://"
            )));
        }
        for (what, v) in [("tenant", tenant), ("controller id", controller)] {
            if v.is_empty()
                || !v
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
            {
                return Err(UpdaterError::State(format!(
                    "{what} {v:?}: use letters, digits and - _ . : only"
                )));
            }
        }
        let timeouts = Timeouts {
            response: Duration::from_secs(30),
            per_read: Some(fetch.rates.stall),
        };
        let mut client = Client::new(server, &fetch.trust, timeouts)?;
        if let Some(t) = token {
            client = client.with_authorization(t.header());
        }
        Ok(Self {
            client,
            root: format!("{server}/{tenant}/controller/v1/{controller}"),
        })
    }

    /// The HTTP client, for artifact downloads.
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// `href` if it is on the server (scheme, host and port); a link elsewhere is
    /// refused: the token goes to the server only, and so do the device's requests.
    pub(crate) fn on_server<'a>(&self, href: &'a str) -> Result<&'a str, UpdaterError> {
        if origin(href) == origin(&self.root) {
            Ok(href)
        } else {
            Err(refused(
                href,
                Refusal::Invalid(format!(
                    "a link off the server {}; refused",
                    origin(&self.root)
                )),
            ))
        }
    }

    /// `GET` of a controller resource, decoded as `T`.
    fn get<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, UpdaterError> {
        let url = self.on_server(url)?;
        let bytes = self
            .client
            .get_small(url, url, RESOURCE_MAX)
            .map_err(explain)?;
        serde_json::from_slice(&bytes).map_err(|e| refused(url, Refusal::Invalid(e.to_string())))
    }

    /// The controller's base resource: what to do, and how long to sleep.
    pub(crate) fn base(&self) -> Result<Base, UpdaterError> {
        self.get(&self.root)
    }

    /// A deployment action.
    pub(crate) fn deployment(&self, href: &str) -> Result<Deployment, UpdaterError> {
        self.get(href)
    }

    /// A cancel action.
    pub(crate) fn cancel(&self, href: &str) -> Result<Cancel, UpdaterError> {
        self.get(href)
    }

    /// Sends `body` with `method` (`PUT` or `POST`) to `url`; the status.
    fn send(&self, method: &str, url: &str, body: &[u8]) -> Result<u16, UpdaterError> {
        let url = self.on_server(url)?;
        let resp = self
            .client
            .send(url, url, |agent, auth| {
                let req = match method {
                    "PUT" => agent.put(url),
                    _ => agent.post(url),
                };
                with_auth(req, auth)
                    .header("Content-Type", "application/json")
                    .send(body)
            })
            .map_err(explain)?;
        Ok(resp.status().as_u16())
    }

    /// Puts the device's attributes (`configData`, merged with what the server has).
    pub(crate) fn put_attributes(
        &self,
        href: &str,
        attrs: &[(String, String)],
    ) -> Result<(), UpdaterError> {
        let mut j = format::json::Json::default();
        j.open();
        j.key("mode").str(b"merge");
        j.key("data").open();
        for (k, v) in attrs {
            j.key(k).str(v.as_bytes());
        }
        j.close();
        j.close();
        match self.send("PUT", href, &j.out)? {
            200..=299 => Ok(()),
            status => Err(status_error(href, status)),
        }
    }

    /// Posts a feedback on the action `id` (a deployment's, or with `cancel` a cancel
    /// action's).
    pub(crate) fn feedback(
        &self,
        id: &str,
        cancel: bool,
        f: &Feedback<'_>,
    ) -> Result<Posted, UpdaterError> {
        let kind = if cancel {
            "cancelAction"
        } else {
            "deploymentBase"
        };
        let url = format!("{}/{kind}/{id}/feedback", self.root);
        match self.send("POST", &url, &f.encode())? {
            200..=299 => Ok(Posted::Taken),
            410 => Ok(Posted::Gone),
            status => Err(status_error(&url, status)),
        }
    }

    /// Bytes `from..to` of an artifact (fewer if it is shorter, or the connection
    /// drops), asked for with `Range`; a server that ignores it is read from the start.
    pub(crate) fn range(&self, href: &str, from: u64, to: u64) -> Result<Vec<u8>, UpdaterError> {
        use std::io::Read as _;
        let url = self.on_server(href)?;
        let mut resp = self
            .client
            .send(url, url, |agent, auth| {
                with_auth(agent.get(url), auth)
                    .header("Range", format!("bytes={from}-{}", to.saturating_sub(1)))
                    .config()
                    .timeout_recv_body(Some(Duration::from_mins(1)))
                    .build()
                    .call()
            })
            .map_err(explain)?;
        let skip = match resp.status().as_u16() {
            206 => 0,
            200 => from,
            status => return Err(status_error(url, status)),
        };
        let mut out = Vec::new();
        // A dropped connection ends the read early; the caller asks again from there.
        let _ = resp
            .body_mut()
            .as_reader()
            .take(to.saturating_sub(from) + skip)
            .read_to_end(&mut out);
        Ok(out.split_off(usize::try_from(skip).unwrap_or(usize::MAX).min(out.len())))
    }
}

/// A refusal by status, in words an operator acts on.
fn status_error(url: &str, status: u16) -> UpdaterError {
    let why = match status {
        401 | 403 => {
            "the server refused the device's token (check token_file and the target's security token)"
        }
        404 => "not found (the action, or its artifact, is gone from the server)",
        429 => "too many requests: the server's quota is spent; backing off",
        _ => "",
    };
    if why.is_empty() {
        UpdaterError::Net(NetError::Status {
            url: url.to_owned(),
            status,
        })
    } else {
        UpdaterError::State(format!("{url}: HTTP {status}: {why}"))
    }
}

/// A net error, with the statuses the protocol gives meaning said in words.
fn explain(e: NetError) -> UpdaterError {
    match e {
        NetError::Status { url, status } => status_error(&url, status),
        e => UpdaterError::Net(e),
    }
}

/// Milliseconds since the Unix epoch, for a feedback's timestamp.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
