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
    /// Serves clients: backend up, Primary, Synced (or Donor when allowed), consistent.
    pub ready: bool,
    pub cluster_size: usize,
    pub cluster_state_uuid: String,
    /// Raft term (Galera's configuration id counts membership changes; the term is ours).
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
    pub provider_version: String,
}
