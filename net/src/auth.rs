//! Getting into an OCI registry that asks for credentials, as the distribution spec's
//! token authentication has it: `GET /v2/` answers `401` with a `WWW-Authenticate`
//! challenge; for `Bearer`, the client asks the named token service for a token scoped
//! to the repository (pull, or pull and push), sending the user's `Basic` credentials
//! if it has any; for `Basic`, the credentials go with every request.
//!
//! Credentials come from a Docker-style `config.json` (what `docker login` writes):
//! `{"auths": {"REGISTRY": {"auth": "<base64 of user:password>"}}}`. Credential
//! helpers (`credsStore`) are not run.

use std::path::Path;
use std::time::Duration;

use format::oci::{self, Reference};

use crate::NetError;

/// What a token is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reading manifests and blobs (a device).
    Pull,
    /// Reading and writing (a push).
    Push,
}

impl Access {
    /// The token scope for the repository `name`.
    pub fn scope(self, name: &str) -> String {
        match self {
            Self::Pull => format!("repository:{name}:pull"),
            Self::Push => format!("repository:{name}:pull,push"),
        }
    }
}

/// The `auth` (base64 of `user:password`) that a Docker-style `config.json` holds for
/// the registry of `r` (keys `REGISTRY`, `https://REGISTRY` or `http://REGISTRY`).
pub fn credentials(file: &Path, r: &Reference) -> Result<String, NetError> {
    let fail = |why: String| NetError::Access(format!("{}: {why}", file.display()));
    let text = std::fs::read(file).map_err(|e| fail(e.to_string()))?;
    let v: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| fail(format!("not JSON: {e}")))?;
    let auths = &v["auths"];
    [
        r.registry.clone(),
        format!("https://{}", r.registry),
        format!("http://{}", r.registry),
    ]
    .iter()
    .find_map(|k| auths[k]["auth"].as_str())
    .map(str::to_owned)
    .ok_or_else(|| {
        fail(format!(
            "has no auths.{:?}.auth (base64 of user:password) for this registry",
            r.registry
        ))
    })
}

/// The `Authorization` header the registry of `r` wants for `access`, if any: asks
/// `GET /v2/`, and for a Bearer challenge fetches a token for the repository (sending
/// `basic`, the base64 of `user:password`, if given). `None`: the registry is open.
/// `why` says a failed request in one line (the caller knows its TLS settings).
pub fn authorize(
    agent: &ureq::Agent,
    r: &Reference,
    basic: Option<&str>,
    access: Access,
    why: &dyn Fn(&ureq::Error) -> String,
) -> Result<Option<String>, NetError> {
    let fail = |what: String| NetError::Access(format!("{r}: {what}"));
    let timeout = Some(Duration::from_mins(1));
    let resp = agent
        .get(r.root())
        .config()
        .timeout_recv_body(timeout)
        .build()
        .call()
        .map_err(|e| fail(why(&e)))?;
    match resp.status().as_u16() {
        401 => {}
        // Open (or not saying): go on without credentials.
        _ => return Ok(None),
    }
    answer(agent, r, challenge(&resp), basic, access, why).map(Some)
}

/// Credentials again, after a `401`: the answer to its `challenge` if it carries one,
/// else what `GET /v2/` asks for ([`authorize`]).
pub fn reauthorize(
    agent: &ureq::Agent,
    r: &Reference,
    challenge: &str,
    basic: Option<&str>,
    access: Access,
    why: &dyn Fn(&ureq::Error) -> String,
) -> Result<Option<String>, NetError> {
    if challenge.is_empty() {
        authorize(agent, r, basic, access, why)
    } else {
        answer(agent, r, challenge, basic, access, why).map(Some)
    }
}

/// The `WWW-Authenticate` challenge of a response (empty if it has none).
pub fn challenge<B>(resp: &ureq::http::Response<B>) -> &str {
    resp.headers()
        .get("WWW-Authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// The `Authorization` header that answers the challenge `header` (from a `401` of the
/// registry of `r`): a token from the Bearer realm, or the Basic credentials. A
/// registry whose `/v2/` is open may still ask, for a push or a private repository.
pub fn answer(
    agent: &ureq::Agent,
    r: &Reference,
    header: &str,
    basic: Option<&str>,
    access: Access,
    why: &dyn Fn(&ureq::Error) -> String,
) -> Result<String, NetError> {
    let fail = |what: String| NetError::Access(format!("{r}: {what}"));
    let timeout = Some(Duration::from_mins(1));
    let needs = || {
        fail(
            "the registry asks for credentials: pass --registry-auth FILE (a Docker config.json)"
                .into(),
        )
    };
    match oci::Challenge::parse(header) {
        Some(oci::Challenge::Basic) => basic.map(|b| format!("Basic {b}")).ok_or_else(needs),
        Some(c @ oci::Challenge::Bearer { .. }) => {
            let url = c.token_url(&access.scope(&r.name)).unwrap_or_default();
            let mut req = agent.get(&url);
            if let Some(b) = basic {
                req = req.header("Authorization", format!("Basic {b}"));
            }
            let mut resp = req
                .config()
                .timeout_recv_body(timeout)
                .build()
                .call()
                .map_err(|e| fail(format!("token from {url}: {}", why(&e))))?;
            match resp.status().as_u16() {
                200 => {}
                401 | 403 if basic.is_none() => return Err(needs()),
                s => return Err(fail(format!("token from {url}: HTTP {s}"))),
            }
            let body = resp
                .body_mut()
                .with_config()
                .limit(64 << 10)
                .read_to_vec()
                .map_err(|e| fail(format!("token from {url}: {e}")))?;
            let v: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| fail(format!("token from {url}: {e}")))?;
            let token = v["token"]
                .as_str()
                .or_else(|| v["access_token"].as_str())
                .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
                .ok_or_else(|| fail(format!("token from {url}: no token in the answer")))?;
            Ok(format!("Bearer {token}"))
        }
        None => Err(fail(format!(
            "the registry asks for an authentication this tool does not speak: {header:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_found_under_any_of_docker_s_keys() {
        let dir = tempfile::tempdir().unwrap();
        let r = Reference::parse("oci://registry.test:5000/fleet/os:stable").unwrap();
        for key in [
            "registry.test:5000",
            "https://registry.test:5000",
            "http://registry.test:5000",
        ] {
            let f = dir.path().join("config.json");
            std::fs::write(&f, format!(r#"{{"auths":{{"{key}":{{"auth":"dTpw"}}}}}}"#)).unwrap();
            assert_eq!(credentials(&f, &r).unwrap(), "dTpw", "{key}");
        }
        let f = dir.path().join("other.json");
        std::fs::write(&f, r#"{"auths":{"elsewhere:5000":{"auth":"dTpw"}}}"#).unwrap();
        let err = credentials(&f, &r).unwrap_err().to_string();
        assert!(
            err.contains("has no auths.\"registry.test:5000\".auth"),
            "{err}"
        );
        std::fs::write(&f, "{").unwrap();
        assert!(
            credentials(&f, &r)
                .unwrap_err()
                .to_string()
                .contains("not JSON")
        );
        assert_eq!(
            Access::Push.scope("fleet/os"),
            "repository:fleet/os:pull,push"
        );
        assert_eq!(Access::Pull.scope("fleet/os"), "repository:fleet/os:pull");
    }
}
