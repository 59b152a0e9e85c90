//! Configuration in two stages, as ripgrep does it: raw settings from three sources (a TOML file,
//! `CERTUS_*` environment variables and command-line flags, later ones winning) are merged into
//! [`RawNodeConfig`], then validated once into [`NodeConfig`], which is passed down explicitly.
//! Validation reports every wrong setting in one message, never just the first.

use clap::{Args, ValueEnum};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendMode {
    /// certus installs, starts and supervises its own mariadbd under the data dir.
    Managed,
    /// certus connects to a MariaDB the operator runs, and checks its settings at start.
    External,
}

/// Strict mode (DESIGN §4), named after PXC's pxc_strict_mode. See docs/galera-semantics.md.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StrictMode {
    /// As `on`, and writes to tables without a primary key are refused too.
    Enforcing,
    /// Constructs the cluster cannot replicate are refused; tables without a primary key are
    /// certified by a hash of the whole row.
    #[default]
    On,
    /// The constructs that are safe to run on this node alone run, with a warning.
    Permissive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Half the CPUs this process may use, at least 1 (the backend needs the rest).
pub fn default_worker_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// Every node setting. In the TOML file the `backend_*` keys may also be written inside a
/// `[backend]` table without the prefix (`[backend] mode = "external"`).
#[derive(Debug, Clone, Default, Deserialize, Args)]
#[serde(deny_unknown_fields)]
pub struct RawNodeConfig {
    /// Node name, shown in status output (default: node<node-id>).
    #[arg(long, env = "CERTUS_NODE_NAME")]
    pub node_name: Option<String>,
    /// Node id, 1-based, unique in the cluster; also the backend's server_id base (default 1).
    #[arg(long, env = "CERTUS_NODE_ID")]
    pub node_id: Option<u64>,
    /// Address clients connect to with the MySQL protocol (default 127.0.0.1:3306).
    #[arg(long, env = "CERTUS_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory for the node's state and, in managed mode, its MariaDB (required).
    #[arg(long, env = "CERTUS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log output format: text or json (default text). The filter comes from RUST_LOG.
    #[arg(long, env = "CERTUS_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Seconds a client may stay idle between commands before the node closes it (default 28800,
    /// MariaDB's wait_timeout).
    #[arg(long, env = "CERTUS_IDLE_TIMEOUT")]
    pub idle_timeout: Option<u64>,
    /// Threads that run the node's work (client sessions, Raft, capture, apply). Default: half
    /// the CPUs, at least 1: the backend on the same host needs the rest, and on 2 cores one
    /// thread made more commits per second than two (fewer cross-thread wake-ups;
    /// docs/benchmarks.md, "Runtime threads").
    #[arg(long, env = "CERTUS_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Seconds a client may take to finish sending a packet it has started (default 30, MariaDB's
    /// net_read_timeout).
    #[arg(long, env = "CERTUS_NET_READ_TIMEOUT")]
    pub net_read_timeout: Option<u64>,
    /// Address this node's peer (Raft) listener binds (default 127.0.0.1:4567).
    #[arg(long, env = "CERTUS_PEER_LISTEN")]
    pub peer_listen: Option<SocketAddr>,
    /// Cluster members as `id=host:port` peer addresses, this node included (repeatable or
    /// comma-separated). Default: a one-node cluster of this node alone.
    #[arg(long = "member", env = "CERTUS_MEMBERS", value_delimiter = ',')]
    pub members: Option<Vec<String>>,
    /// Join an existing cluster instead of forming one: the node starts with an empty log and
    /// waits until `certus cluster add-node` on a member adds it (default false). Only for a
    /// node that has never been a member; once it has a log the flag changes nothing.
    #[arg(long, env = "CERTUS_JOIN")]
    pub join: Option<bool>,
    /// Shared secret that authenticates peers (at least 16 bytes); required with more than one member.
    #[arg(long, env = "CERTUS_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// Address of the HTTP server: clustercheck on any path, /metrics, /status (default
    /// 127.0.0.1:9200).
    #[arg(long, env = "CERTUS_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// Clustercheck answers 200 while the node is a donor (default false).
    #[arg(long, env = "CERTUS_AVAILABLE_WHEN_DONOR")]
    pub available_when_donor: Option<bool>,
    /// Clustercheck answers 200 while the backend is read_only (default true).
    #[arg(long, env = "CERTUS_AVAILABLE_WHEN_READONLY")]
    pub available_when_readonly: Option<bool>,
    /// While this file exists clustercheck answers 503 "manually disabled" (default
    /// <data_dir>/clustercheck.disabled).
    #[arg(long, env = "CERTUS_MAINTENANCE_FILE")]
    pub maintenance_file: Option<PathBuf>,
    /// Clustercheck answers 503 when more write sets than this wait to be applied (default 1000).
    #[arg(long, env = "CERTUS_MAX_APPLY_LAG")]
    pub max_apply_lag: Option<u64>,
    /// Default wsrep_sync_wait of new sessions (bit 1: reads wait for causality; default 0).
    #[arg(long, env = "CERTUS_SYNC_WAIT")]
    pub sync_wait: Option<u32>,
    /// Seconds a causal read may wait before it fails with 1205 (default 30, Galera's
    /// causal_read_timeout).
    #[arg(long, env = "CERTUS_CAUSAL_READ_TIMEOUT")]
    pub causal_read_timeout: Option<u64>,
    /// Flow control: writers across the cluster pause while any live node has more than this
    /// many write sets waiting to be applied (Galera's gcs.fc_limit; default 100).
    #[arg(long, env = "CERTUS_FC_LIMIT")]
    pub fc_limit: Option<u64>,
    /// Flow control is released once the queue is back at fc_limit * fc_factor (Galera's
    /// gcs.fc_factor; 0.0 to 1.0, default 0.8).
    #[arg(long, env = "CERTUS_FC_FACTOR")]
    pub fc_factor: Option<f64>,
    /// Write the write sets this node replays, its TOI and its applied-seqno records to the
    /// backend's binlog too (MariaDB's log_slave_updates; default false, as Galera). Off, the
    /// backend's binlog holds this node's own client transactions only.
    #[arg(long, env = "CERTUS_LOG_REPLICA_UPDATES")]
    pub log_replica_updates: Option<bool>,
    /// Strict mode (like pxc_strict_mode): enforcing, on (default) or permissive.
    #[arg(long, env = "CERTUS_STRICT_MODE")]
    pub strict_mode: Option<StrictMode>,
    /// Local IP that outbound peer connections bind to (default: any). Lets a relay in front
    /// of the peers tell the calling node apart (used by the jepsen suite's partitions).
    #[arg(long, env = "CERTUS_PEER_SOURCE_IP")]
    pub peer_source_ip: Option<std::net::IpAddr>,
    /// Build a Raft snapshot (a logical dump of the backend, used for state transfer) after this
    /// many log entries; 0 never builds one on its own (default 50000).
    #[arg(long, env = "CERTUS_SNAPSHOT_LOGS")]
    pub snapshot_logs: Option<u64>,
    /// Log entries kept below the lowest position every live node has applied when the log is
    /// purged (default 1000).
    #[arg(long, env = "CERTUS_LOG_KEEP_MARGIN")]
    pub log_keep_margin: Option<u64>,
    /// Backend mode: managed (default) or external.
    #[arg(long, env = "CERTUS_BACKEND_MODE")]
    pub backend_mode: Option<BackendMode>,
    /// External mode: the backend's unix socket (use this or --backend-address).
    #[arg(long, env = "CERTUS_BACKEND_SOCKET")]
    pub backend_socket: Option<PathBuf>,
    /// External mode: the backend's host:port (use this or --backend-socket).
    #[arg(long, env = "CERTUS_BACKEND_ADDRESS")]
    pub backend_address: Option<String>,
    /// External mode: the node's service account on the backend.
    #[arg(long, env = "CERTUS_BACKEND_USER")]
    pub backend_user: Option<String>,
    /// External mode: the service account's password.
    #[arg(long, env = "CERTUS_BACKEND_PASSWORD", hide_env_values = true)]
    pub backend_password: Option<String>,
    /// Managed mode: also listen on this TCP port on 127.0.0.1 (default: unix socket only).
    #[arg(long, env = "CERTUS_BACKEND_PORT")]
    pub backend_port: Option<u16>,
    /// Managed mode: the mariadbd binary (default: found on PATH or in /usr/sbin).
    #[arg(long, env = "CERTUS_MARIADBD")]
    pub mariadbd: Option<PathBuf>,
    /// Managed mode: the mariadb-install-db binary (default: found on PATH or in /usr/bin).
    #[arg(long, env = "CERTUS_INSTALL_DB")]
    pub install_db: Option<PathBuf>,
    /// Managed mode: extra `key=value` lines for the generated my.cnf (repeatable).
    #[arg(
        long = "backend-option",
        env = "CERTUS_BACKEND_OPTIONS",
        value_delimiter = ','
    )]
    pub backend_options: Option<Vec<String>>,
    #[arg(skip)]
    #[serde(default)]
    backend: Option<RawBackendTable>,
}

/// The `[backend]` table form of the `backend_*` keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackendTable {
    mode: Option<BackendMode>,
    socket: Option<PathBuf>,
    address: Option<String>,
    user: Option<String>,
    password: Option<String>,
    port: Option<u16>,
    mariadbd: Option<PathBuf>,
    install_db: Option<PathBuf>,
    options: Option<Vec<String>>,
}

macro_rules! overlay {
    ($dst:ident, $src:ident; $($field:ident),*) => {
        $( if $src.$field.is_some() { $dst.$field = $src.$field; } )*
    };
}

impl RawNodeConfig {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_owned(),
            source: e,
        })?;
        let mut raw: RawNodeConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        if let Some(b) = raw.backend.take() {
            let table = RawNodeConfig {
                backend_mode: b.mode,
                backend_socket: b.socket,
                backend_address: b.address,
                backend_user: b.user,
                backend_password: b.password,
                backend_port: b.port,
                mariadbd: b.mariadbd,
                install_db: b.install_db,
                backend_options: b.options,
                ..Default::default()
            };
            raw.overlay(table);
        }
        Ok(raw)
    }

    /// Settings in `top` win over settings in `self`.
    pub fn overlay(&mut self, top: RawNodeConfig) {
        overlay!(self, top; node_name, node_id, listen, data_dir, log_format, idle_timeout,
            worker_threads,
            peer_listen, members, join, cluster_secret, peer_source_ip, http_listen,
            available_when_donor, available_when_readonly, maintenance_file, max_apply_lag,
            sync_wait, causal_read_timeout, fc_limit, fc_factor, strict_mode,
            log_replica_updates, snapshot_logs, log_keep_margin,
            net_read_timeout, backend_mode, backend_socket, backend_address, backend_user,
            backend_password, backend_port, mariadbd, install_db, backend_options);
    }

    /// Validates every setting and reports all problems at once.
    pub fn validate(self) -> Result<NodeConfig, ConfigError> {
        let mut problems = Vec::new();
        let node_id = self.node_id.unwrap_or(1);
        if node_id == 0 || node_id > 1000 {
            problems.push(format!("node_id must be between 1 and 1000, got {node_id}"));
        }
        let worker_threads = self.worker_threads.unwrap_or_else(default_worker_threads);
        if worker_threads == 0 || worker_threads > 1024 {
            problems.push(format!(
                "worker_threads must be between 1 and 1024, got {worker_threads}"
            ));
        }
        let data_dir = match self.data_dir {
            Some(d) => d,
            None => {
                problems.push("data_dir is required (--data-dir, CERTUS_DATA_DIR or data_dir in the config file)".into());
                PathBuf::new()
            }
        };
        let mode = self.backend_mode.unwrap_or(BackendMode::Managed);
        let backend = match mode {
            BackendMode::Managed => {
                for (set, name) in [
                    (self.backend_socket.is_some(), "backend socket"),
                    (self.backend_address.is_some(), "backend address"),
                    (self.backend_user.is_some(), "backend user"),
                    (self.backend_password.is_some(), "backend password"),
                ] {
                    if set {
                        problems.push(format!(
                            "{name} is for external mode; managed mode generates its own"
                        ));
                    }
                }
                let mut options = Vec::new();
                for opt in self.backend_options.unwrap_or_default() {
                    match opt.split_once('=') {
                        Some((k, v))
                            if !k.trim().is_empty()
                                && !k.contains(['\n', '['])
                                && !v.contains('\n') =>
                        {
                            options.push((k.trim().to_owned(), v.trim().to_owned()))
                        }
                        _ => {
                            problems.push(format!("backend option {opt:?} is not a key=value line"))
                        }
                    }
                }
                BackendConfig::Managed(ManagedBackend {
                    mariadbd: self.mariadbd.unwrap_or_else(|| {
                        find_binary("mariadbd", &["/usr/sbin", "/usr/bin", "/usr/local/bin"])
                    }),
                    install_db: self.install_db.unwrap_or_else(|| {
                        find_binary(
                            "mariadb-install-db",
                            &["/usr/bin", "/usr/local/bin", "/usr/sbin"],
                        )
                    }),
                    tcp_port: self.backend_port,
                    options,
                })
            }
            BackendMode::External => {
                let endpoint = match (self.backend_socket, self.backend_address) {
                    (Some(s), None) => Some(BackendEndpoint::Socket(s)),
                    (None, Some(a)) => Some(BackendEndpoint::Tcp(a)),
                    (Some(_), Some(_)) => {
                        problems.push("set only one of backend socket and backend address".into());
                        None
                    }
                    (None, None) => {
                        problems.push(
                            "external mode needs a backend socket or a backend address".into(),
                        );
                        None
                    }
                };
                if self.backend_user.as_deref().unwrap_or("").is_empty() {
                    problems.push(
                        "external mode needs a backend user (the node's service account)".into(),
                    );
                }
                if self.backend_password.is_none() {
                    problems.push(
                        "external mode needs a backend password for the service account".into(),
                    );
                }
                for (set, name) in [
                    (self.backend_port.is_some(), "backend port"),
                    (self.mariadbd.is_some(), "mariadbd"),
                    (self.install_db.is_some(), "install_db"),
                    (self.backend_options.is_some(), "backend options"),
                ] {
                    if set {
                        problems.push(format!("{name} is for managed mode only"));
                    }
                }
                BackendConfig::External(ExternalBackend {
                    endpoint: endpoint.unwrap_or(BackendEndpoint::Socket(PathBuf::new())),
                    user: self.backend_user.unwrap_or_default(),
                    password: self.backend_password.unwrap_or_default(),
                })
            }
        };
        let peer_listen = self
            .peer_listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 4567)));
        let mut members = std::collections::BTreeMap::new();
        for m in self.members.unwrap_or_default() {
            match m
                .split_once('=')
                .map(|(id, addr)| (id.trim().parse::<u64>(), addr.trim()))
            {
                Some((Ok(id), addr)) if id > 0 && !addr.is_empty() => {
                    if members.insert(id, addr.to_owned()).is_some() {
                        problems.push(format!("member {id} is listed twice"));
                    }
                }
                _ => problems.push(format!("member {m:?} is not id=host:port")),
            }
        }
        if members.is_empty() {
            members.insert(node_id, peer_listen.to_string());
        } else if !members.contains_key(&node_id) {
            problems.push(format!(
                "the members list does not include this node (node_id {node_id})"
            ));
        }
        let cluster_secret = match self.cluster_secret {
            Some(s) if s.len() >= 16 => s.into_bytes(),
            Some(_) => {
                problems.push("cluster_secret must be at least 16 bytes".into());
                Vec::new()
            }
            None if members.len() > 1 || self.join == Some(true) => {
                problems.push(
                    "cluster_secret is required for a cluster of more than one node (and to join one)"
                        .into(),
                );
                Vec::new()
            }
            // A one-node cluster has no peers to authenticate; the secret guards nothing.
            None => b"single-node-cluster-no-peers".to_vec(),
        };
        let fc_factor = self
            .fc_factor
            .unwrap_or(crate::node::flow_control::DEFAULT_FC_FACTOR);
        if !(0.0..=1.0).contains(&fc_factor) {
            problems.push(format!(
                "fc_factor must be between 0.0 and 1.0, got {fc_factor}"
            ));
        }
        if self.fc_limit == Some(0) {
            problems.push("fc_limit must be at least 1".into());
        }
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        Ok(NodeConfig {
            fc_limit: self
                .fc_limit
                .unwrap_or(crate::node::flow_control::DEFAULT_FC_LIMIT),
            fc_factor,
            strict_mode: self.strict_mode.unwrap_or_default(),
            log_replica_updates: self.log_replica_updates.unwrap_or(false),
            snapshot_logs: self.snapshot_logs.unwrap_or(50_000),
            log_keep_margin: self.log_keep_margin.unwrap_or(1000),
            sync_wait: self.sync_wait.unwrap_or(0),
            causal_read_timeout: Duration::from_secs(self.causal_read_timeout.unwrap_or(30).max(1)),
            http_listen: self
                .http_listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9200))),
            available_when_donor: self.available_when_donor.unwrap_or(false),
            available_when_readonly: self.available_when_readonly.unwrap_or(true),
            maintenance_file: self
                .maintenance_file
                .unwrap_or_else(|| data_dir.join("clustercheck.disabled")),
            max_apply_lag: self.max_apply_lag.unwrap_or(1000),
            peer_source_ip: self.peer_source_ip,
            peer_listen,
            members,
            join: self.join.unwrap_or(false),
            cluster_secret,
            node_name: self.node_name.unwrap_or_else(|| format!("node{node_id}")),
            node_id,
            listen: self
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 3306))),
            data_dir,
            log_format: self.log_format.unwrap_or(LogFormat::Text),
            idle_timeout: Duration::from_secs(self.idle_timeout.unwrap_or(28800).max(1)),
            worker_threads,
            net_read_timeout: Duration::from_secs(self.net_read_timeout.unwrap_or(30).max(1)),
            backend,
        })
    }
}

fn find_binary(name: &str, fallbacks: &[&str]) -> PathBuf {
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    for dir in fallbacks {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    PathBuf::from(name)
}

/// The validated configuration of one node.
#[derive(Clone)]
pub struct NodeConfig {
    pub node_name: String,
    pub peer_listen: SocketAddr,
    /// Node id -> peer address, this node included.
    pub members: std::collections::BTreeMap<u64, String>,
    /// Join an existing cluster (never initialize one); see `RawNodeConfig::join`.
    pub join: bool,
    pub cluster_secret: Vec<u8>,
    pub peer_source_ip: Option<std::net::IpAddr>,
    pub http_listen: SocketAddr,
    pub sync_wait: u32,
    pub causal_read_timeout: Duration,
    pub available_when_donor: bool,
    pub available_when_readonly: bool,
    pub maintenance_file: PathBuf,
    pub max_apply_lag: u64,
    pub fc_limit: u64,
    pub fc_factor: f64,
    pub strict_mode: StrictMode,
    /// Binlog what the applier commits (module docs of `crate::apply`).
    pub log_replica_updates: bool,
    /// Log entries between Raft snapshots (state-transfer dumps); 0: never on its own.
    pub snapshot_logs: u64,
    /// Log entries kept below the purge bound.
    pub log_keep_margin: u64,
    pub node_id: u64,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub log_format: LogFormat,
    pub idle_timeout: Duration,
    /// Threads of the node's runtime.
    pub worker_threads: usize,
    pub net_read_timeout: Duration,
    pub backend: BackendConfig,
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("node_name", &self.node_name)
            .field("node_id", &self.node_id)
            .field("listen", &self.listen)
            .field("peer_listen", &self.peer_listen)
            .field("members", &self.members)
            .field("data_dir", &self.data_dir)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub enum BackendConfig {
    Managed(ManagedBackend),
    External(ExternalBackend),
}

#[derive(Debug, Clone)]
pub struct ManagedBackend {
    pub mariadbd: PathBuf,
    pub install_db: PathBuf,
    pub tcp_port: Option<u16>,
    pub options: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub enum BackendEndpoint {
    Socket(PathBuf),
    Tcp(String),
}

#[derive(Clone)]
pub struct ExternalBackend {
    pub endpoint: BackendEndpoint,
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for ExternalBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalBackend")
            .field("endpoint", &self.endpoint)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_table_keys_and_overlays_merge_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.toml");
        std::fs::write(
            &path,
            "node_id = 2\ndata_dir = \"/d\"\nlisten = \"127.0.0.1:4000\"\n[backend]\nmode = \"external\"\nsocket = \"/s\"\nuser = \"svc\"\npassword = \"pw\"\n",
        )
        .unwrap();
        let mut raw = RawNodeConfig::from_file(&path).unwrap();
        raw.overlay(RawNodeConfig {
            listen: Some("127.0.0.1:5000".parse().unwrap()),
            ..Default::default()
        });
        let cfg = raw.validate().unwrap();
        assert_eq!(cfg.node_id, 2);
        assert_eq!(cfg.node_name, "node2");
        assert_eq!(cfg.listen.port(), 5000);
        match cfg.backend {
            BackendConfig::External(e) => {
                assert_eq!(e.user, "svc");
                assert!(
                    matches!(e.endpoint, BackendEndpoint::Socket(ref p) if p == Path::new("/s"))
                );
                assert!(!format!("{e:?}").contains("pw"));
            }
            BackendConfig::Managed(_) => panic!("expected external"),
        }
    }

    #[test]
    fn external_mode_lists_every_wrong_setting_at_once() {
        let raw = RawNodeConfig {
            backend_mode: Some(BackendMode::External),
            backend_port: Some(1),
            ..Default::default()
        };
        let err = raw.validate().unwrap_err().to_string();
        for needle in [
            "data_dir is required",
            "socket or a backend address",
            "backend user",
            "backend password",
            "backend port is for managed",
        ] {
            assert!(err.contains(needle), "{needle:?} missing from: {err}");
        }
    }

    #[test]
    fn members_and_secret_are_validated() {
        let mut raw = RawNodeConfig {
            data_dir: Some("/d".into()),
            node_id: Some(2),
            members: Some(vec![
                "1=127.0.0.1:1".into(),
                "2=127.0.0.1:2".into(),
                "x".into(),
            ]),
            cluster_secret: Some("short".into()),
            ..Default::default()
        };
        let err = raw.clone().validate().unwrap_err().to_string();
        assert!(err.contains("\"x\" is not id=host:port"), "{err}");
        assert!(err.contains("at least 16 bytes"), "{err}");
        raw.members = Some(vec!["1=127.0.0.1:1".into(), "3=127.0.0.1:3".into()]);
        raw.cluster_secret = None;
        let err = raw.clone().validate().unwrap_err().to_string();
        assert!(err.contains("does not include this node"), "{err}");
        assert!(err.contains("cluster_secret is required"), "{err}");
        raw.members = Some(vec!["1=127.0.0.1:1".into(), "2=127.0.0.1:2".into()]);
        raw.cluster_secret = Some("0123456789abcdef".into());
        let cfg = raw.validate().unwrap();
        assert_eq!(cfg.members.len(), 2);
        assert!(!format!("{cfg:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn joining_needs_the_cluster_secret() {
        let raw = RawNodeConfig {
            data_dir: Some("/d".into()),
            join: Some(true),
            ..Default::default()
        };
        let err = raw.clone().validate().unwrap_err().to_string();
        assert!(err.contains("cluster_secret is required"), "{err}");
        let cfg = RawNodeConfig {
            cluster_secret: Some("0123456789abcdef".into()),
            ..raw
        }
        .validate()
        .unwrap();
        assert!(cfg.join);
    }

    #[test]
    fn unknown_keys_and_bad_options_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.toml");
        std::fs::write(&path, "data_dir = \"/d\"\nlisten_port = 3\n").unwrap();
        assert!(matches!(
            RawNodeConfig::from_file(&path),
            Err(ConfigError::Parse { .. })
        ));
        let raw = RawNodeConfig {
            data_dir: Some("/d".into()),
            backend_options: Some(vec!["novalue".into()]),
            ..Default::default()
        };
        assert!(raw.validate().unwrap_err().to_string().contains("novalue"));
    }
}
