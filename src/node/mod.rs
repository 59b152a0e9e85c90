//! A certus node: its backend (managed or external) and its client edge, started together and
//! stopped together. Servers receive listeners that are already bound, so tests can run several
//! nodes in one process on port 0.

pub mod flow_control;
pub mod latency;
pub(crate) mod members;
pub(crate) mod prepared;
pub mod progress;
mod sst;
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

/// The sockets a node serves on, bound by the caller.
pub struct Listeners {
    pub client: TcpListener,
    pub peer: TcpListener,
    pub http: Option<TcpListener>,
}

/// A service-account connection to the backend that a periodic task keeps between rounds.
///
/// Why not the pool: it closes every connection handed back to it (its lower bound is 0 and
/// idle connections have no time to live), so a probe through it opened and authenticated a
/// new backend connection every round, about two a second for the `@@read_only` sampler alone.
/// And `Pool::disconnect` at shutdown waits for every connection taken from the pool, which a
/// connection kept for the life of a task would never return.
struct KeptConn {
    backend: Backend,
    conn: Option<mysql_async::Conn>,
}

impl KeptConn {
    fn new(backend: Backend) -> Self {
        KeptConn {
            backend,
            conn: None,
        }
    }

    /// The kept connection, opened if there is none (`None` while the backend is unreachable).
    async fn get(&mut self) -> Option<&mut mysql_async::Conn> {
        if self.conn.is_none() {
            let opts = self
                .backend
                .endpoint
                .opts(&self.backend.service.user, &self.backend.service.password);
            self.conn = mysql_async::Conn::new(opts).await.ok();
        }
        self.conn.as_mut()
    }

    /// After a failed query (the backend restarted, or the connection broke): the next round
    /// opens a new one.
    fn reset(&mut self) {
        self.conn = None;
    }
}

/// `@@read_only` of the backend, sampled in the background so the HTTP check never waits on it.
fn read_only_probe(
    backend: Backend,
    mut shutdown: watch::Receiver<bool>,
) -> crate::http::ReadOnlyProbe {
    use std::sync::atomic::{AtomicBool, Ordering};
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    tokio::spawn(async move {
        use mysql_async::prelude::Queryable;
        let mut kept = KeptConn::new(backend);
        loop {
            if let Some(c) = kept.get().await {
                match c.query_first::<u8, _>("SELECT @@global.read_only").await {
                    Ok(Some(v)) => f.store(v != 0, Ordering::Relaxed),
                    Ok(None) => {}
                    Err(_) => kept.reset(),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.changed() => return,
            }
        }
    });
    Arc::new(move || flag.load(Ordering::Relaxed))
}

enum BackendOwner {
    Managed(backend::managed::Managed),
    External(tokio::task::JoinHandle<()>),
}

/// A running node. Call [`Node::shutdown`] to stop it; dropping it leaves tasks running.
pub struct Node {
    client_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    frontend: Arc<Frontend>,
    backend_owner: BackendOwner,
    shutdown_tx: watch::Sender<bool>,
    serve_task: tokio::task::JoinHandle<()>,
    data_dir: std::path::PathBuf,
    cluster_uuid: uuid::Uuid,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{0}")]
    Backend(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Recovery(#[from] crate::recovery::RecoveryError),
}

impl Node {
    /// Starts the backend and the write path, then serves clients on `listener`; peers reach
    /// this node on `peer_listener`.
    pub async fn start(config: NodeConfig, listeners: Listeners) -> Result<Node, NodeError> {
        let Listeners {
            client: listener,
            peer: peer_listener,
            http: http_listener,
        } = listeners;
        std::fs::create_dir_all(&config.data_dir)?;
        // Nothing is changed before these checks pass: grastate.dat, the Raft log, the cluster
        // uuid and what the reachable members say.
        let preflight = crate::recovery::preflight(&config).await?;
        let inconsistent_before = crate::recovery::read_inconsistent(&config.data_dir)?;
        let (backend, owner): (Backend, BackendOwner) = match &config.backend {
            BackendConfig::Managed(m) => {
                let (managed, backend) = backend::managed::Managed::start(
                    &config.data_dir,
                    config.node_id,
                    auto_increment(&config),
                    m,
                )
                .await?;
                (backend, BackendOwner::Managed(managed))
            }
            BackendConfig::External(e) => {
                let (backend, probe) =
                    backend::external::connect(e, auto_increment(&config)).await?;
                (backend, BackendOwner::External(probe))
            }
        };
        let cluster_uuid = match adopt_identity(&config, &preflight, &backend).await {
            Ok(u) => u,
            Err(e) => {
                backend.pool.clone().disconnect().await.ok();
                match owner {
                    BackendOwner::Managed(m) => m.shutdown().await,
                    BackendOwner::External(probe) => probe.abort(),
                }
                return Err(e.into());
            }
        };
        let settings = EdgeSettings {
            causal_read_timeout: config.causal_read_timeout,
            cluster_address: format!(
                "gcomm://{}",
                config
                    .members
                    .values()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            node_address: config.peer_listen.to_string(),
            retry_autocommit: 1,
            idle_timeout: config.idle_timeout,
            net_read_timeout: config.net_read_timeout,
            connect_timeout: Duration::from_secs(10),
            strict_mode: config.strict_mode,
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
        repl_cfg.join = config.join;
        repl_cfg.running_cluster = preflight.primary_members.first().copied();
        repl_cfg.cluster_uuid = cluster_uuid.hyphenated().to_string();
        repl_cfg.snapshot_policy = match config.snapshot_logs {
            0 => crate::replication::SnapshotPolicy::Never,
            n => crate::replication::SnapshotPolicy::LogsSinceLast(n),
        };
        repl_cfg.log_keep_margin = config.log_keep_margin;
        let write_path = match WritePath::start(
            NodeId(config.node_id),
            repl_cfg,
            peer_listener,
            &backend,
            registry.clone(),
            flow_control::FlowControl::new(config.fc_limit, config.fc_factor),
            write_path::ApplierStart {
                inconsistent: inconsistent_before.map(|reason| {
                    tracing::error!(
                        "this node was Inconsistent before it stopped ({reason}); it refuses \
                         clients until an operator repairs its backend and removes the marker {}",
                        config
                            .data_dir
                            .join(crate::recovery::INCONSISTENT_FILE)
                            .display()
                    );
                    format!("Inconsistent since before the restart: {reason}")
                }),
                tagging: crate::apply::Tagging {
                    domain: crate::capture::APPLIER_GTID_DOMAIN,
                    binlogged: config.log_replica_updates,
                },
            },
        )
        .await
        {
            Ok(w) => {
                // Peers learn this node's client address from its progress reports.
                w.progress
                    .set_client_address(listener.local_addr()?.to_string());
                Arc::new(w)
            }
            Err(e) => {
                if let BackendOwner::Managed(m) = owner {
                    m.shutdown().await;
                }
                return Err(NodeError::Backend(e));
            }
        };
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        tokio::spawn(persist_inconsistent(
            write_path.watch_inconsistent(),
            config.data_dir.clone(),
            cluster_uuid,
        ));
        let status_source = status_source(
            &config,
            cluster_uuid,
            listener.local_addr()?,
            backend.clone(),
            write_path.clone(),
        );
        tokio::spawn(follow_auto_increment(
            backend.clone(),
            write_path.clone(),
            config.node_id,
            shutdown_rx.clone(),
        ));
        let frontend = Frontend::new(backend, settings, registry, write_path, status_source);
        frontend
            .default_sync_wait
            .store(config.sync_wait, std::sync::atomic::Ordering::Relaxed);
        let client_addr = listener.local_addr()?;
        let http_addr = match http_listener {
            Some(l) => {
                let addr = l.local_addr()?;
                let opts = crate::http::HttpOptions {
                    available_when_donor: config.available_when_donor,
                    available_when_readonly: config.available_when_readonly,
                    maintenance_file: Some(config.maintenance_file.clone()),
                    max_apply_lag: Some(config.max_apply_lag),
                    read_only: Some(read_only_probe(
                        frontend.backend.clone(),
                        shutdown_rx.clone(),
                    )),
                    ..Default::default()
                };
                tokio::spawn(crate::http::serve(
                    l,
                    frontend.status.clone(),
                    opts,
                    shutdown_rx.clone(),
                ));
                Some(addr)
            }
            None => None,
        };
        let serve_task = tokio::spawn(frontend::serve(listener, frontend.clone(), shutdown_rx));
        info!(node = %config.node_name, %client_addr, "node is serving");
        Ok(Node {
            http_addr,
            client_addr,
            frontend,
            backend_owner: owner,
            shutdown_tx,
            serve_task,
            data_dir: config.data_dir.clone(),
            cluster_uuid,
        })
    }

    /// The cluster state UUID this node belongs to (`wsrep_cluster_state_uuid`).
    pub fn cluster_uuid(&self) -> uuid::Uuid {
        self.cluster_uuid
    }

    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// The HTTP server's address (clustercheck, /metrics, /status), when it was started.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
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

    /// The node's state, as the status surfaces report it.
    pub fn status(&self) -> status::NodeStatus {
        (self.frontend.status)()
    }

    /// Every member's latest progress (applied seqno, apply queue, age) as this node knows it
    /// from the peer progress exchange, this node included.
    pub fn peer_progress(&self) -> Vec<progress::NodeProgress> {
        self.frontend.write_path.progress.nodes()
    }

    /// The lowest applied seqno among live members: the Raft log must not be purged above it.
    pub fn lowest_live_applied(&self) -> Option<crate::ids::Seqno> {
        self.frontend.write_path.progress.lowest_live_applied()
    }

    /// Snapshots (SSTs) loaded into the backend since the node started.
    pub fn sst_loads(&self) -> u64 {
        self.frontend.write_path.sst_loads()
    }

    /// Every joiner state (Joining, Joined, Synced) this node went through since start, in order.
    pub fn transfer_history(&self) -> Vec<&'static str> {
        self.frontend.write_path.transfer_history()
    }

    /// This node's Raft positions (last log, snapshot, purged), when readable without waiting.
    pub fn replication_metrics(&self) -> Option<crate::replication::ReplicationMetrics> {
        self.frontend.write_path.replication_metrics()
    }

    /// Asks Raft to build a snapshot (an SST dump) now; it is built in the background.
    pub async fn trigger_snapshot(&self) -> Result<(), String> {
        self.frontend.write_path.trigger_snapshot().await
    }

    /// The number of client sessions currently open.
    pub fn session_count(&self) -> usize {
        self.frontend.registry.len()
    }

    /// Stops accepting clients, tells the other members it is leaving, stops Raft, then the
    /// backend (managed mode), and records the clean stop in grastate.dat: the applied seqno, and
    /// `safe_to_bootstrap: 1` only when this node left last.
    pub async fn shutdown(self) {
        let _ = self.shutdown_tx.send(true);
        let _ = self.serve_task.await;
        let last_to_leave = self.frontend.write_path.announce_leaving().await;
        self.frontend.write_path.shutdown().await;
        let pool = self.frontend.backend.pool.clone();
        let seqno = match tokio::time::timeout(
            Duration::from_secs(5),
            crate::recovery::backend_state(&pool),
        )
        .await
        {
            Ok(Ok((_, seqno))) => Some(seqno),
            Ok(Err(e)) => {
                tracing::warn!("at shutdown: {e}; grastate.dat keeps seqno -1");
                None
            }
            Err(_) => None,
        };
        pool.disconnect().await.ok();
        match self.backend_owner {
            BackendOwner::Managed(m) => m.shutdown().await,
            BackendOwner::External(probe) => probe.abort(),
        }
        // Inconsistent a moment before the stop: record it now if its watcher had no time to.
        if let Some(reason) = self.frontend.write_path.inconsistent() {
            if matches!(crate::recovery::read_inconsistent(&self.data_dir), Ok(None)) {
                if let Err(e) =
                    crate::recovery::mark_inconsistent(&self.data_dir, self.cluster_uuid, &reason)
                {
                    tracing::error!("recording the Inconsistent state: {e}");
                }
            }
        }
        match crate::recovery::mark_stopped(&self.data_dir, self.cluster_uuid, seqno, last_to_leave)
        {
            Ok(()) => info!(
                seqno = ?seqno.map(|s| s.0),
                safe_to_bootstrap = last_to_leave && seqno.is_some(),
                "clean stop recorded in grastate.dat"
            ),
            Err(e) => tracing::error!("recording the clean stop: {e}"),
        }
    }
}

/// Makes the Inconsistent state durable the moment it is reached (grastate.dat and the marker,
/// `recovery::mark_inconsistent`), so that a restart does not bring the node back Synced.
async fn persist_inconsistent(
    mut watch: watch::Receiver<Option<String>>,
    data_dir: std::path::PathBuf,
    uuid: uuid::Uuid,
) {
    loop {
        let reason = watch.borrow_and_update().clone();
        if let Some(reason) = reason {
            // A node that came up Inconsistent already has its marker: keep the first reason.
            if matches!(crate::recovery::read_inconsistent(&data_dir), Ok(Some(_))) {
                return;
            }
            match crate::recovery::mark_inconsistent(&data_dir, uuid, &reason) {
                Ok(()) => info!("Inconsistent state recorded in grastate.dat and its marker"),
                Err(e) => tracing::error!("recording the Inconsistent state: {e}"),
            }
            return;
        }
        if watch.changed().await.is_err() {
            return;
        }
    }
}

/// Start-up checks that need the backend: its `certus.state` agrees with the other witnesses;
/// then the uuid is recorded everywhere and grastate.dat says the node is running.
async fn adopt_identity(
    config: &NodeConfig,
    preflight: &crate::recovery::Preflight,
    backend: &Backend,
) -> Result<uuid::Uuid, crate::recovery::RecoveryError> {
    let state = crate::recovery::backend_state(&backend.pool).await?;
    let uuid = crate::recovery::resolve_uuid(preflight, state, config)?;
    crate::recovery::mark_running(&config.data_dir, uuid, &backend.pool).await?;
    info!(%uuid, applied = %state.1, "cluster identity checked");
    Ok(uuid)
}

pub(crate) fn auto_increment(config: &NodeConfig) -> backend::managed::AutoIncrement {
    backend::managed::AutoIncrement {
        increment: config.members.len().max(1) as u64,
        offset: config
            .members
            .keys()
            .position(|id| *id == config.node_id)
            .unwrap_or(0) as u64
            + 1,
    }
}

/// How often the backend's auto-increment settings are compared with the membership.
const AUTO_INCREMENT_CHECK: Duration = Duration::from_secs(2);

/// Galera's `wsrep_auto_increment_control`, following online membership changes: the backend's
/// global `auto_increment_increment` is the number of voters and `auto_increment_offset` this
/// node's 1-based position among them, so nodes hand out ids in distinct residue classes. New
/// sessions inherit the globals; sessions opened before a change keep the old values until they
/// reconnect, and a collision in that window is a certification conflict, never a divergence.
/// Compared with the backend's actual values each time, so a restarted backend (whose my.cnf
/// holds the configured values) is corrected too.
async fn follow_auto_increment(
    backend: Backend,
    wp: Arc<WritePath>,
    node_id: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    use mysql_async::prelude::Queryable;
    let mut kept = KeptConn::new(backend);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(AUTO_INCREMENT_CHECK) => {}
            _ = shutdown.changed() => return,
        }
        let Some(summary) = wp.raft_summary() else {
            continue;
        };
        let Some(position) = summary.voters.iter().position(|v| *v == node_id) else {
            continue;
        };
        let wanted = (summary.voters.len() as u64, position as u64 + 1);
        let Some(conn) = kept.get().await else {
            continue;
        };
        let actual: Option<(u64, u64)> = match conn
            .query_first("SELECT @@global.auto_increment_increment, @@global.auto_increment_offset")
            .await
        {
            Ok(a) => a,
            Err(_) => {
                kept.reset();
                continue;
            }
        };
        if actual == Some(wanted) {
            continue;
        }
        let set = format!(
            "SET GLOBAL auto_increment_increment = {}, GLOBAL auto_increment_offset = {}",
            wanted.0, wanted.1
        );
        match conn.query_drop(set).await {
            Ok(()) => info!(
                increment = wanted.0,
                offset = wanted.1,
                "auto-increment control follows the membership"
            ),
            Err(e) => {
                tracing::warn!("cannot set auto_increment_increment/offset: {e}");
                kept.reset();
            }
        }
    }
}

/// Galera's local state from this node's place: removed nodes and nodes outside the Primary
/// component are Initialized, learners and voters still catching up are Joining.
fn local_state(
    primary: bool,
    learner: bool,
    removed: bool,
    synced: bool,
    healthy: bool,
) -> status::LocalState {
    if removed {
        status::LocalState::Initialized
    } else if learner || (primary && !synced) {
        status::LocalState::Joining
    } else if primary && healthy {
        status::LocalState::Synced
    } else {
        status::LocalState::Initialized
    }
}

/// Builds the closure that computes a live [`status::NodeStatus`] on every call.
fn status_source(
    config: &NodeConfig,
    cluster_uuid: uuid::Uuid,
    client_addr: std::net::SocketAddr,
    backend: Backend,
    wp: Arc<WritePath>,
) -> frontend::StatusSource {
    use std::sync::atomic::Ordering;
    let node_name = config.node_name.clone();
    let node_id = config.node_id;
    let config_index = config
        .members
        .keys()
        .position(|id| *id == node_id)
        .unwrap_or(0);
    let uuid = cluster_uuid.hyphenated().to_string();
    let client_addr = client_addr.to_string();
    Arc::new(move || {
        let summary = wp.raft_summary();
        let place = wp.place();
        let primary = wp.is_primary();
        let removed = place.removed;
        let (term, leader, voters, membership_index) = match summary {
            Some(s) => (s.term, s.leader, s.voters, s.membership_index),
            None => (0, None, Vec::new(), 0),
        };
        let size = voters.len().max(1);
        let component = members::component(&wp.progress, NodeId(node_id), &client_addr);
        // Galera's size is the component's. Gossip may lag a node that just joined, but a
        // Primary component always holds a majority of the voters. A removed node is alone.
        let cluster_size = if removed {
            0
        } else if primary {
            component.len().max(size / 2 + 1)
        } else {
            component.len()
        };
        let incoming_addresses = component
            .iter()
            .map(|m| m.client_address.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let inconsistent = wp.inconsistent();
        let backend_up = backend.health() == backend::Health::Up;
        // After a backend restart the binlog reader reconnects a moment later; until then no
        // write can be captured, so the node is not Synced yet.
        let capture_up = wp.capture_connected();
        let local_state = match local_state(
            primary,
            place.probe.is_some_and(|p| p.learner),
            removed,
            place.synced,
            inconsistent.is_none() && backend_up && capture_up,
        ) {
            status::LocalState::Synced => wp.transfer_state().unwrap_or(status::LocalState::Synced),
            other => other,
        };
        let ready = local_state == status::LocalState::Synced;
        // Galera's wsrep_local_index: this node's position among the members, by id.
        let local_index = voters
            .iter()
            .position(|v| *v == node_id)
            .unwrap_or(config_index);
        let sh = &wp.shared;
        let fc = wp.flow.status();
        status::NodeStatus {
            node_name: node_name.clone(),
            node_id,
            local_state,
            primary,
            inconsistent,
            backend_up,
            ready,
            removed,
            cluster_size,
            cluster_state_uuid: uuid.clone(),
            // Changes with every new leader (term) and every membership change (the index of
            // the membership entry); both only grow, so the sum does too, alike on every node.
            cluster_conf_id: term + membership_index,
            local_index,
            incoming_addresses,
            last_committed: wp.last_applied().0,
            recv_queue: sh.queued.load(Ordering::Relaxed),
            leader,
            local_commits: sh.local_commits.load(Ordering::Relaxed),
            local_cert_failures: sh.cert_failures.load(Ordering::Relaxed),
            local_bf_aborts: sh.bf_aborts.load(Ordering::Relaxed),
            local_replays: 0,
            replicated: sh.replicated.load(Ordering::Relaxed),
            received: sh.received.load(Ordering::Relaxed),
            flow_control_paused: fc.paused,
            flow_control_paused_ns: fc.paused_ns,
            flow_control_sent: fc.sent,
            flow_control_recv: fc.recv,
            flow_control_active: fc.active,
            provider_version: format!("certus {}", env!("CARGO_PKG_VERSION")),
            latency: Some(sh.latency.clone()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::local_state;
    use crate::node::status::LocalState;

    #[test]
    fn local_state_follows_the_membership_place() {
        // (primary, learner, removed, synced, healthy)
        assert_eq!(
            local_state(true, false, false, true, true),
            LocalState::Synced
        );
        assert_eq!(
            local_state(false, true, false, false, true),
            LocalState::Joining
        );
        assert_eq!(
            local_state(true, false, false, false, true),
            LocalState::Joining
        );
        assert_eq!(
            local_state(false, true, true, true, true),
            LocalState::Initialized
        );
        assert_eq!(
            local_state(false, false, false, true, true),
            LocalState::Initialized
        );
        assert_eq!(
            local_state(true, false, false, true, false),
            LocalState::Initialized
        );
    }
}
