//! The errors of the HTTP layer's client side (`certus status`). The server side has no error
//! type: every failure there ends one connection and is never surfaced to a caller.

use std::time::Duration;

/// Why `fetch_status` could not return a node's status.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("no complete answer from {addr} within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("i/o error talking to {addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("malformed HTTP response from {addr}: {reason}")]
    BadResponse { addr: String, reason: String },
    #[error("{addr} answered HTTP {code}")]
    Status { addr: String, code: u16 },
    #[error("{addr} sent a status that is not a JSON object: {reason}")]
    Json { addr: String, reason: String },
}
