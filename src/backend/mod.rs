//! The local MariaDB backend: how to reach it, whether it is up, and what it told us about
//! itself. Managed mode (`managed`) installs, starts and supervises a private `mariadbd`;
//! external mode (`external`) checks an operator-run server. Both end in a [`Backend`] handle
//! that the rest of the node uses: service-account connections (`service_pool`), raw session
//! connections as a client's own account (`session_conn`), and a watch on the backend's health.
//! This module never talks to peers and never interprets client statements.

pub(crate) mod external;
pub(crate) mod managed;
pub(crate) mod session_conn;

use crate::config::BackendEndpoint;
use mysql_common::constants::{CapabilityFlags, MariadbCapabilities};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

/// What the backend's greeting told us; the node's own greeting mirrors it.
#[derive(Debug, Clone)]
pub(crate) struct ServerInfo {
    pub(crate) version: Vec<u8>,
    pub(crate) capabilities: CapabilityFlags,
    pub(crate) mariadb_capabilities: MariadbCapabilities,
    pub(crate) default_collation: u8,
    /// `@@max_allowed_packet`: the node refuses larger client packets exactly as MariaDB does.
    pub(crate) max_allowed_packet: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Health {
    /// Not started yet, restarting, or unreachable.
    Down,
    Up,
}

/// The service account the node uses for its own connections.
#[derive(Clone)]
pub(crate) struct ServiceAccount {
    pub(crate) user: String,
    pub(crate) password: String,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServiceAccount({})", self.user)
    }
}

/// A cheap, cloneable handle on the local backend.
#[derive(Clone)]
pub(crate) struct Backend {
    pub(crate) endpoint: Endpoint,
    pub(crate) service: ServiceAccount,
    pub(crate) pool: mysql_async::Pool,
    info: Arc<RwLock<Option<ServerInfo>>>,
    health: watch::Receiver<Health>,
}

#[derive(Debug, Clone)]
pub(crate) enum Endpoint {
    Socket(PathBuf),
    Tcp(String),
}

impl From<&BackendEndpoint> for Endpoint {
    fn from(e: &BackendEndpoint) -> Self {
        match e {
            BackendEndpoint::Socket(p) => Endpoint::Socket(p.clone()),
            BackendEndpoint::Tcp(a) => Endpoint::Tcp(a.clone()),
        }
    }
}

impl Endpoint {
    pub(crate) fn opts(&self, user: &str, password: &str) -> mysql_async::Opts {
        let b = mysql_async::OptsBuilder::default()
            .user(Some(user))
            .pass(Some(password))
            .stmt_cache_size(Some(0))
            .wait_timeout(None);
        let b = match self {
            Endpoint::Socket(p) => b
                .socket(Some(p.to_string_lossy().into_owned()))
                .prefer_socket(true),
            Endpoint::Tcp(addr) => {
                let (host, port) = addr.rsplit_once(':').unwrap_or((addr.as_str(), "3306"));
                b.ip_or_hostname(host.trim_start_matches('[').trim_end_matches(']'))
                    .tcp_port(port.parse().unwrap_or(3306))
                    .prefer_socket(false)
            }
        };
        let constraints = mysql_async::PoolConstraints::new(0, 16).unwrap_or_default();
        b.pool_opts(mysql_async::PoolOpts::default().with_constraints(constraints))
            .into()
    }
}

impl Backend {
    pub(crate) fn new(
        endpoint: Endpoint,
        service: ServiceAccount,
        health: watch::Receiver<Health>,
    ) -> Self {
        let pool = mysql_async::Pool::new(endpoint.opts(&service.user, &service.password));
        Backend {
            endpoint,
            service,
            pool,
            info: Arc::new(RwLock::new(None)),
            health,
        }
    }

    pub(crate) fn health(&self) -> Health {
        *self.health.borrow()
    }

    pub(crate) fn health_watch(&self) -> watch::Receiver<Health> {
        self.health.clone()
    }

    pub(crate) fn info(&self) -> Option<ServerInfo> {
        self.info.read().ok().and_then(|g| g.clone())
    }

    /// Reads the backend's greeting and variables; called whenever the backend (re)starts.
    pub(crate) async fn refresh_info(&self) -> Result<ServerInfo, BackendError> {
        use mysql_async::prelude::Queryable;
        let greeting = session_conn::read_greeting(&self.endpoint).await?;
        let mut conn = self.pool.get_conn().await?;
        let max: Option<u64> = conn.query_first("SELECT @@max_allowed_packet").await?;
        drop(conn);
        let info = ServerInfo {
            version: greeting.version,
            capabilities: greeting.capabilities,
            mariadb_capabilities: greeting.mariadb_capabilities,
            default_collation: greeting.default_collation,
            max_allowed_packet: max.unwrap_or(16 << 20) as usize,
        };
        if let Ok(mut g) = self.info.write() {
            *g = Some(info.clone());
        }
        Ok(info)
    }
}

/// A MariaDB string literal for `s`, quoted and escaped (backslash and quote), for the few
/// statements where parameters cannot be bound.
pub(crate) fn quote_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum BackendError {
    #[error("backend I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("backend: {0}")]
    Mysql(#[from] mysql_async::Error),
    #[error("backend protocol: {0}")]
    Protocol(String),
    #[error("{0}")]
    Setup(String),
}

#[cfg(test)]
mod tests {
    #[test]
    fn literals_are_quoted_and_escaped() {
        assert_eq!(super::quote_literal("plain"), "'plain'");
        assert_eq!(super::quote_literal("o'k\\x\0"), "'o\\'k\\\\x\\0'");
    }
}
