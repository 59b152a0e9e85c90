//! A certus node: its backend (managed or external) and its client edge, started together and
//! stopped together. Servers receive listeners that are already bound, so tests can run several
//! nodes in one process on port 0.

pub mod status;
pub(crate) mod write_path;

use crate::backend::{self, Backend, BackendError};
use crate::ids::NodeId;
use write_path::WritePath;

impl From<BackendError> for NodeError {
    fn from(e: BackendError) -> Self {
        NodeError::Backend(e.to_string())
    }
}
use crate::config::{BackendConfig, NodeConfig};
use crate::frontend::{self, EdgeSettings, Frontend};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;

enum BackendOwner {
    Managed(backend::managed::Managed),
    External(tokio::task::JoinHandle<()>),
}

/// A running node. Call [`Node::shutdown`] to stop it; dropping it leaves tasks running.
pub struct Node {
    client_addr: SocketAddr,
    frontend: Arc<Frontend>,
    backend_owner: BackendOwner,
    shutdown_tx: watch::Sender<bool>,
    serve_task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{0}")]
    Backend(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Node {
    /// Starts the backend and the write path, then serves clients on `listener`; peers reach
    /// this node on `peer_listener`.
    pub async fn start(
        config: NodeConfig,
        listener: TcpListener,
        peer_listener: TcpListener,
    ) -> Result<Node, NodeError> {
        std::fs::create_dir_all(&config.data_dir)?;
        let (backend, owner): (Backend, BackendOwner) = match &config.backend {
            BackendConfig::Managed(m) => {
                let (managed, backend) =
                    backend::managed::Managed::start(&config.data_dir, config.node_id, m).await?;
                (backend, BackendOwner::Managed(managed))
            }
            BackendConfig::External(e) => {
                let (backend, probe) = backend::external::connect(e).await?;
                (backend, BackendOwner::External(probe))
            }
        };
        let settings = EdgeSettings {
            retry_autocommit: 1,
            idle_timeout: config.idle_timeout,
            net_read_timeout: config.net_read_timeout,
            connect_timeout: Duration::from_secs(10),
        };
        let registry = Arc::new(frontend::Registry::default());
        let members = config
            .members
            .iter()
            .map(|(id, addr)| (NodeId(*id), addr.clone()))
            .collect();
        let mut repl_cfg = crate::replication::ReplicationConfig::new(
            NodeId(config.node_id),
            members,
            config.data_dir.join("raft"),
            config.cluster_secret.clone(),
        );
        repl_cfg.peer_source_ip = config.peer_source_ip;
        let write_path = match WritePath::start(
            NodeId(config.node_id),
            repl_cfg,
            peer_listener,
            &backend,
            registry.clone(),
        )
        .await
        {
            Ok(w) => Arc::new(w),
            Err(e) => {
                if let BackendOwner::Managed(m) = owner {
                    m.shutdown().await;
                }
                return Err(NodeError::Backend(e));
            }
        };
        let frontend = Frontend::new(backend, settings, registry, write_path);
        let client_addr = listener.local_addr()?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let serve_task = tokio::spawn(frontend::serve(listener, frontend.clone(), shutdown_rx));
        info!(node = %config.node_name, %client_addr, "node is serving");
        Ok(Node {
            client_addr,
            frontend,
            backend_owner: owner,
            shutdown_tx,
            serve_task,
        })
    }

    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// The backend's unix socket or address, for tools and tests that must bypass the node.
    pub fn backend_endpoint(&self) -> String {
        match &self.frontend.backend.endpoint {
            backend::Endpoint::Socket(p) => p.to_string_lossy().into_owned(),
            backend::Endpoint::Tcp(a) => a.clone(),
        }
    }

    /// Creates (or resets the password of) an account with every privilege on this node's
    /// backend. Used by dev-cluster; the statements are not replicated.
    pub async fn ensure_admin_account(&self, user: &str, password: &str) -> Result<(), NodeError> {
        use mysql_async::prelude::Queryable;
        let err = |e: mysql_async::Error| NodeError::Backend(e.to_string());
        let mut c = self.frontend.backend.pool.get_conn().await.map_err(err)?;
        c.query_drop("SET SESSION sql_log_bin = 0")
            .await
            .map_err(err)?;
        // Account names cannot be bound as parameters in account-management statements.
        let (u, p) = (
            backend::quote_literal(user),
            backend::quote_literal(password),
        );
        for stmt in [
            format!("CREATE USER IF NOT EXISTS {u}@'%' IDENTIFIED BY {p}"),
            format!("ALTER USER {u}@'%' IDENTIFIED BY {p}"),
            format!("GRANT ALL PRIVILEGES ON *.* TO {u}@'%' WITH GRANT OPTION"),
        ] {
            c.query_drop(stmt).await.map_err(err)?;
        }
        Ok(())
    }

    /// Whether the node serves clients: backend up, in the Primary component, consistent.
    pub fn is_ready(&self) -> bool {
        !self.frontend.not_ready()
    }

    /// The number of client sessions currently open.
    pub fn session_count(&self) -> usize {
        self.frontend.registry.len()
    }

    /// Stops accepting clients, then stops the backend (managed mode) cleanly.
    pub async fn shutdown(self) {
        let _ = self.shutdown_tx.send(true);
        let _ = self.serve_task.await;
        self.frontend.write_path.shutdown().await;
        self.frontend.backend.pool.clone().disconnect().await.ok();
        match self.backend_owner {
            BackendOwner::Managed(m) => m.shutdown().await,
            BackendOwner::External(probe) => probe.abort(),
        }
    }
}
