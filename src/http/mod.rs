//! The node's HTTP status server (DESIGN §11): the clustercheck that load balancers poll (any
//! path), Prometheus metrics (`/metrics`) and the JSON status (`/status`), all answered from one
//! `NodeStatus` snapshot taken live per request; plus the `certus status` client.
//!
//! Why a hand-written HTTP/1.1 responder and not hyper/axum: the clustercheck answers must be
//! byte-identical to the legacy script (checks in the field match on them), and hyper adds a
//! `Date` header and keep-alive handling we would have to fight; the server answers exactly
//! one request per connection, reads no bodies and needs about a hundred lines of framing.
//!
//! It owns the listener loop, per-connection limits and routing. It must not compute node
//! state (the caller's closure does) nor touch the backend: a health check that waits on
//! MariaDB is exactly what makes the legacy script pile up processes when mysqld hangs.

mod client;
mod clustercheck;
mod error;
mod metrics;
mod request;
mod response;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::node::status::NodeStatus;

pub use client::{fetch_status, render_status};
pub use clustercheck::DEFAULT_PRODUCT;
pub use error::HttpError;

use clustercheck::{Policy, Verdict};
use request::{HeadError, Route};

/// Produces the current snapshot; called once per request, on the request's task.
pub type StatusSource = Arc<dyn Fn() -> NodeStatus + Send + Sync>;

/// Says whether the backend is read-only (`@@read_only`); must answer from memory.
pub type ReadOnlyProbe = Arc<dyn Fn() -> bool + Send + Sync>;

/// How the server answers. `Default` gives the script's defaults and conservative limits.
#[derive(Clone)]
pub struct HttpOptions {
    /// First words of the clustercheck body: `Galera Cluster` by default,
    /// `Percona XtraDB Cluster` to match the Percona script byte for byte.
    pub product: String,
    /// A Donor/Desynced node passes the check (script's `AVAILABLE_WHEN_DONOR`, default off).
    pub available_when_donor: bool,
    /// A read-only backend passes the check (script's `AVAILABLE_WHEN_READONLY`, default on).
    pub available_when_readonly: bool,
    /// Consulted only when `available_when_readonly` is off; without it the node is never
    /// considered read-only.
    pub read_only: Option<ReadOnlyProbe>,
    /// While this file exists the check answers "manually disabled" (the script's
    /// `/var/tmp/clustercheck.disabled`); `None` disables the switch.
    pub maintenance_file: Option<PathBuf>,
    /// More write sets than this waiting to be applied fails the check; `None` means no limit.
    pub max_apply_lag: Option<u64>,
    /// A client must finish its request head within this time.
    pub header_timeout: Duration,
    /// Writing the answer must finish within this time.
    pub write_timeout: Duration,
    /// Longest request head accepted.
    pub max_header_bytes: usize,
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            product: DEFAULT_PRODUCT.to_string(),
            available_when_donor: false,
            available_when_readonly: true,
            read_only: None,
            maintenance_file: None,
            max_apply_lag: None,
            header_timeout: Duration::from_secs(2),
            write_timeout: Duration::from_secs(2),
            max_header_bytes: 8 * 1024,
            max_connections: 128,
        }
    }
}

impl fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpOptions")
            .field("product", &self.product)
            .field("available_when_donor", &self.available_when_donor)
            .field("available_when_readonly", &self.available_when_readonly)
            .field("read_only", &self.read_only.as_ref().map(|_| "<probe>"))
            .field("maintenance_file", &self.maintenance_file)
            .field("max_apply_lag", &self.max_apply_lag)
            .field("header_timeout", &self.header_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("max_header_bytes", &self.max_header_bytes)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl HttpOptions {
    fn policy(&self) -> Policy {
        Policy {
            available_when_donor: self.available_when_donor,
            available_when_readonly: self.available_when_readonly,
            max_apply_lag: self.max_apply_lag,
        }
    }
}

/// After answering, how long and how much unread input is drained before closing, so the
/// close is a FIN rather than a reset that could destroy the answer in flight.
const LINGER_TIME: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 64 * 1024;

/// Pause after a failed `accept` (typically out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

struct Shared {
    source: StatusSource,
    opts: HttpOptions,
}

/// Serves on `listener` until `shutdown` turns true or its sender is dropped. Connections in
/// flight at shutdown are dropped: a checker then sees the node as down, which it is about
/// to be.
pub async fn serve(
    listener: TcpListener,
    source: StatusSource,
    opts: HttpOptions,
    mut shutdown: watch::Receiver<bool>,
) {
    if !opts.available_when_readonly && opts.read_only.is_none() {
        tracing::warn!(
            "clustercheck refuses read-only nodes but has no read-only probe; read-only is never reported"
        );
    }
    let limit = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let shared = Arc::new(Shared { source, opts });
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        if *shutdown.borrow_and_update() {
            break;
        }
        // Taking the permit before accepting leaves excess clients in the kernel backlog
        // instead of holding an unbounded number of sockets here.
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => permit,
            changed = shutdown.changed() => {
                if changed.is_err() { break; }
                continue;
            }
        };
        let Ok(permit) = permit else {
            // The semaphore is never closed; treat it as the end of serving if it is.
            break;
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            changed = shutdown.changed() => {
                if changed.is_err() { break; }
                continue;
            }
        };
        match accepted {
            Ok((stream, _peer)) => {
                let shared = shared.clone();
                connections.spawn(async move {
                    handle_connection(stream, &shared).await;
                    drop(permit);
                });
            }
            Err(error) => {
                tracing::warn!(%error, "http accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    connections.shutdown().await;
}

async fn handle_connection(mut stream: TcpStream, shared: &Shared) {
    let opts = &shared.opts;
    let head = tokio::time::timeout(
        opts.header_timeout,
        request::read_head(&mut stream, opts.max_header_bytes),
    )
    .await;
    let answer = match head {
        Ok(Ok(route)) => answer_route(route, shared).await,
        Ok(Err(HeadError::Malformed)) => response::bad_request(),
        Ok(Err(HeadError::TooLarge)) => response::header_too_large(),
        Ok(Err(HeadError::Io(error))) => {
            tracing::debug!(%error, "http request read failed");
            return;
        }
        // Nobody left to answer, or a client too slow to be a health checker.
        Ok(Err(HeadError::Closed)) | Err(_) => return,
    };
    let written = tokio::time::timeout(opts.write_timeout, async {
        stream.write_all(&answer).await?;
        stream.shutdown().await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        return;
    }
    linger(&mut stream).await;
}

/// Reads and discards what the client still sends until it closes, within bounds.
async fn linger(stream: &mut TcpStream) {
    let drain = async {
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < LINGER_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

async fn answer_route(route: Route, shared: &Shared) -> Vec<u8> {
    match route {
        Route::Clustercheck => clustercheck_answer(shared).await,
        Route::Metrics => match metrics::encode_status(&(shared.source)()) {
            Ok(text) => response::response(200, metrics::CONTENT_TYPE, text.as_bytes()),
            Err(_) => response::internal_error(),
        },
        Route::Status => match serde_json::to_vec(&(shared.source)()) {
            Ok(mut json) => {
                json.push(b'\n');
                response::response(200, "application/json", &json)
            }
            Err(_) => response::internal_error(),
        },
    }
}

async fn clustercheck_answer(shared: &Shared) -> Vec<u8> {
    let opts = &shared.opts;
    let disabled = match &opts.maintenance_file {
        // Like the script's `[ -e file ]`: only a file we can see counts.
        Some(path) => tokio::fs::metadata(path).await.is_ok(),
        None => false,
    };
    let verdict = if disabled {
        Verdict::ManuallyDisabled
    } else {
        let status = (shared.source)();
        clustercheck::verdict(&status, opts.policy(), || {
            opts.read_only.as_ref().is_some_and(|probe| probe())
        })
    };
    clustercheck::answer(verdict, &opts.product)
}
