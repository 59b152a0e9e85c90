//! A node's state as every status surface reports it: the SQL `wsrep_%` rows, the HTTP
//! clustercheck, `/metrics`, `/status` and `certus status`. One snapshot type, computed live on
//! request, so that no surface can disagree with another or report a stale "synced".

use serde::Serialize;

/// Galera's local state machine, numbered as `wsrep_local_state` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LocalState {
    /// 0: not part of a primary component yet (or after an error).
    Initialized,
    /// 1: catching up or receiving a state transfer.
    Joining,
    /// 2: serving a state transfer, or desynced by the operator.
    Donor,
    /// 3: caught up to the commit index it saw, not yet declared synced.
    Joined,
    /// 4: in sync and serving.
    Synced,
}

impl LocalState {
    pub fn number(self) -> u8 {
        match self {
            LocalState::Initialized => 0,
            LocalState::Joining => 1,
            LocalState::Donor => 2,
            LocalState::Joined => 3,
            LocalState::Synced => 4,
        }
    }

    /// `wsrep_local_state_comment`.
    pub fn comment(self) -> &'static str {
        match self {
            LocalState::Initialized => "Initialized",
            LocalState::Joining => "Joining",
            LocalState::Donor => "Donor/Desynced",
            LocalState::Joined => "Joined",
            LocalState::Synced => "Synced",
        }
    }
}

/// One snapshot of a node's state.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub node_name: String,
    pub node_id: u64,
    pub local_state: LocalState,
    /// In the Primary component: a Raft leader with a quorum is known.
    pub primary: bool,
    /// Why the node stopped applying, when it did (it then serves nothing).
    pub inconsistent: Option<String>,
    /// The backend answers.
    pub backend_up: bool,
    /// This node was removed from the cluster's membership (`certus cluster remove-node`).
    pub removed: bool,
    /// Serves clients: backend up, Primary, Synced (or Donor when allowed), consistent.
    pub ready: bool,
    pub cluster_size: usize,
    pub cluster_state_uuid: String,
    /// Raft term plus the log index of the membership in effect: it grows with every new leader
    /// and every membership change, as Galera's configuration id grows with every view.
    pub cluster_conf_id: u64,
    /// 0-based index of this node among the members, ordered by node id.
    pub local_index: usize,
    /// Client addresses of the members, comma separated (Galera's format).
    pub incoming_addresses: String,
    /// The highest seqno this backend reflects (`wsrep_last_committed`).
    pub last_committed: u64,
    /// Write sets ordered but not yet applied here (`wsrep_local_recv_queue`).
    pub recv_queue: u64,
    pub leader: Option<u64>,
    pub local_commits: u64,
    pub local_cert_failures: u64,
    pub local_bf_aborts: u64,
    pub local_replays: u64,
    pub replicated: u64,
    pub received: u64,
    pub flow_control_paused: f64,
    pub flow_control_paused_ns: u64,
    pub flow_control_sent: u64,
    pub flow_control_recv: u64,
    pub flow_control_active: bool,
    pub provider_version: String,
    /// Live per-stage latency and batching histograms (`/metrics` only).
    #[serde(skip)]
    pub latency: Option<std::sync::Arc<super::latency::WritePathMetrics>>,
}

impl NodeStatus {
    /// `wsrep_cluster_status`.
    pub fn cluster_status(&self) -> &'static str {
        if self.removed {
            "Disconnected"
        } else if self.primary && self.inconsistent.is_none() {
            "Primary"
        } else {
            "non-Primary"
        }
    }

    /// The `wsrep_%` rows of `SHOW STATUS`, with Galera's names and value formats.
    pub fn wsrep_status_rows(&self) -> Vec<(String, String)> {
        let on_off = |b: bool| if b { "ON" } else { "OFF" }.to_string();
        let rows: Vec<(&str, String)> = vec![
            ("wsrep_local_state_uuid", self.cluster_state_uuid.clone()),
            ("wsrep_protocol_version", "10".into()),
            ("wsrep_last_committed", self.last_committed.to_string()),
            ("wsrep_replicated", self.replicated.to_string()),
            ("wsrep_received", self.received.to_string()),
            ("wsrep_local_commits", self.local_commits.to_string()),
            (
                "wsrep_local_cert_failures",
                self.local_cert_failures.to_string(),
            ),
            ("wsrep_local_replays", self.local_replays.to_string()),
            ("wsrep_local_send_queue", "0".into()),
            ("wsrep_local_send_queue_avg", "0".into()),
            ("wsrep_local_recv_queue", self.recv_queue.to_string()),
            (
                "wsrep_local_recv_queue_avg",
                format!("{:.6}", self.recv_queue as f64),
            ),
            (
                "wsrep_flow_control_paused_ns",
                self.flow_control_paused_ns.to_string(),
            ),
            (
                "wsrep_flow_control_paused",
                format!("{:.6}", self.flow_control_paused),
            ),
            (
                "wsrep_flow_control_sent",
                self.flow_control_sent.to_string(),
            ),
            (
                "wsrep_flow_control_recv",
                self.flow_control_recv.to_string(),
            ),
            (
                "wsrep_flow_control_active",
                self.flow_control_active.to_string(),
            ),
            ("wsrep_cert_deps_distance", "1.000000".into()),
            ("wsrep_local_bf_aborts", self.local_bf_aborts.to_string()),
            ("wsrep_local_index", self.local_index.to_string()),
            (
                "wsrep_evs_state",
                if self.primary {
                    "OPERATIONAL"
                } else {
                    "GATHER"
                }
                .into(),
            ),
            (
                "wsrep_gcomm_uuid",
                format!("{:08x}-0000-0000-0000-{:012x}", self.node_id, self.node_id),
            ),
            ("wsrep_cluster_conf_id", self.cluster_conf_id.to_string()),
            ("wsrep_cluster_size", self.cluster_size.to_string()),
            ("wsrep_cluster_state_uuid", self.cluster_state_uuid.clone()),
            ("wsrep_cluster_status", self.cluster_status().into()),
            ("wsrep_connected", on_off(self.cluster_size > 0)),
            ("wsrep_local_state", self.local_state.number().to_string()),
            (
                "wsrep_local_state_comment",
                self.local_state.comment().into(),
            ),
            ("wsrep_incoming_addresses", self.incoming_addresses.clone()),
            ("wsrep_provider_name", "certus".into()),
            ("wsrep_provider_vendor", "certus".into()),
            ("wsrep_provider_version", self.provider_version.clone()),
            ("wsrep_ready", on_off(self.ready)),
        ];
        rows.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }
}

/// One `wsrep_%` server variable: its SHOW VARIABLES text and its `@@` value as SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsrepVariable {
    pub name: &'static str,
    pub show: String,
    /// A SQL literal: booleans are 1/0 under `@@`, as MariaDB returns them.
    pub literal: String,
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The `wsrep_%` variables a node reports (SHOW VARIABLES, `@@wsrep_*`, GLOBAL_VARIABLES).
pub fn wsrep_variables(
    s: &NodeStatus,
    cluster_address: &str,
    node_address: &str,
    sync_wait: u32,
) -> Vec<WsrepVariable> {
    let b = |name, v: bool| WsrepVariable {
        name,
        show: if v { "ON" } else { "OFF" }.into(),
        literal: if v { "1" } else { "0" }.into(),
    };
    let t = |name, v: &str| WsrepVariable {
        name,
        show: v.to_string(),
        literal: quote(v),
    };
    let n = |name, v: i64| WsrepVariable {
        name,
        show: v.to_string(),
        literal: v.to_string(),
    };
    vec![
        b("wsrep_on", true),
        t("wsrep_provider", "certus"),
        t("wsrep_cluster_name", "certus"),
        t("wsrep_cluster_address", cluster_address),
        t("wsrep_node_name", &s.node_name),
        t("wsrep_node_address", node_address),
        t("wsrep_node_incoming_address", "AUTO"),
        n("wsrep_sync_wait", i64::from(sync_wait)),
        b("wsrep_causal_reads", sync_wait & 1 == 1),
        n("wsrep_retry_autocommit", 1),
        b("wsrep_auto_increment_control", true),
        b("wsrep_desync", false),
        t("wsrep_reject_queries", "NONE"),
        b("wsrep_sst_donor_rejects_queries", false),
        t("wsrep_osu_method", "TOI"),
        b("wsrep_certify_nonPK", true),
        n("wsrep_slave_threads", 1),
        n("wsrep_max_ws_size", 2_147_483_647),
        t("wsrep_sst_method", "certus"),
        b("wsrep_log_conflicts", false),
    ]
}
