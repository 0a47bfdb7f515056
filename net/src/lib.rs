//! The HTTP client that `berth` (the device agent) and `berth-image` (the build host's
//! tool) share ([`http`]): which certificate authorities an `https://` server must chain
//! to ([`tls`]), how a client gets into an OCI registry that asks for credentials
//! ([`auth`]), and bounded, resumable downloads with typed errors that name the URL.

pub mod auth;
pub mod http;
pub mod tls;

/// A failure, said in one line that names the input (the URL, the registry, the file)
/// and the cause. Each tool wraps it in its own error type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The request failed: the connection, the name, a read.
    #[error("{url}: {cause}")]
    Request {
        /// What was asked for.
        url: String,
        /// Why it failed.
        cause: String,
    },
    /// The server's certificate does not verify against what is trusted (a retry will
    /// not change that).
    #[error("{url}: {cause}")]
    Tls {
        /// What was asked for.
        url: String,
        /// Why, in plain words.
        cause: String,
    },
    /// The server answered with a status that is not the one asked for.
    #[error("{url}: HTTP {status}")]
    Status {
        /// What was asked for.
        url: String,
        /// The status.
        status: u16,
    },
    /// A body over its bound.
    #[error("{url}: is larger than the {max} bytes allowed")]
    TooLarge {
        /// What was asked for.
        url: String,
        /// The bound.
        max: u64,
    },
    /// A download that sent more than its known length; cut at that length.
    #[error("{url}: sends more than the {len} bytes its signed metadata declares; cut there")]
    Oversent {
        /// What was asked for.
        url: String,
        /// Its length.
        len: u64,
    },
    /// A download too slow to finish, or that made no progress.
    #[error("{url}: {cause}")]
    Slow {
        /// What was asked for.
        url: String,
        /// How slow.
        cause: String,
    },
    /// Where a download goes failed (the sink names its file).
    #[error("{0}")]
    Sink(String),
    /// Getting into a registry, or reading the settings to: credentials, tokens, `--ca`
    /// files.
    #[error("{0}")]
    Access(String),
}
