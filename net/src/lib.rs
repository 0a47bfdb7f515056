//! The HTTP client side that `berth` (the device agent) and `berth-image` (the build
//! host's tool) share: which certificate authorities an `https://` server must chain to
//! ([`tls`]), and how a client gets into an OCI registry that asks for credentials
//! ([`auth`]). Both speak HTTP through ureq; this crate only configures and authorizes.

pub mod auth;
pub mod tls;

/// A failure, said in one line that names the input (the URL, the registry, the file)
/// and the cause. Each tool wraps it in its own error type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NetError(pub String);
