//! Raft replication on openraft 0.9 (storage-v2): the durable log, peer RPC, batching and
//! forwarding that order certus's write sets.
//!
//! Owns: everything openraft needs (`types`, `wal` + `log_store`, `state_machine`, `network` +
//! `server`, `batcher`) and the `Replication` handle the node calls. Must not touch: what a
//! proposal means. Proposals are opaque bytes; certification and apply live behind the `Fsm`
//! trait, which the node implements and which openraft reaches only through the thin adapter in
//! `state_machine`.
//!
//! Cluster formation. Membership comes from config (`node id -> peer address`). At start every
//! node opens its log; a pristine node (empty log, no vote) calls `Raft::initialize` with the
//! full configured membership. openraft documents that several nodes initializing with the same
//! membership is safe: they all write the same membership entry at index 0, and the first
//! election decides the rest. So three nodes started at once form a cluster without a
//! designated bootstrap node, and any two of them suffice. A node that restarts finds its log
//! and vote on disk, skips initialization, re-applies committed entries above its last snapshot
//! into its `Fsm`, and rejoins: it is a follower until the leader's heartbeats reach it, or it
//! helps elect a new leader. After a restart, addresses come from the membership stored in the
//! log, not from the config.
//!
//! Online membership (`membership`). A node started with `join` never initializes: it waits,
//! with an empty log, until a leader adds it as a learner and replicates the log to it from the
//! start (the normal catch-up path: its `Fsm` certifies and queues every entry), and is then
//! promoted to voter. Removal is `change_membership` without the node. Peer addresses always
//! come from the Raft membership (`BasicNode::addr`): openraft hands them to the network for
//! replication, and forwarding, read index and admin routing read them from the metrics.
//!
//! Layers: `Replication::propose` -> `batcher` -> `Raft::client_write` (leader) or
//! `network::Peers` -> `server` -> leader's `batcher` (follower). Commit -> `state_machine` ->
//! `Fsm::apply_batch` on every node. On the leader, `log_store` hands each new entry to `eager`,
//! which copies it to up-to-date followers while the leader's own fsync runs.

mod batcher;
mod eager;
mod error;
mod log_store;
mod membership;
mod network;
mod peer_info;
mod server;
mod state_machine;
mod types;
mod wal;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, ServerState};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::ids::NodeId;

pub use error::{ConfigError, FailureClass, ProposeError, ReadIndexError, StartError};
pub use log_store::{
    inspect_log, reset_membership_to, truncate_log_from, LogStoreError, LogSummary,
};
pub use membership::{cluster_admin, AdminError, AdminOp, MembershipView};
pub use peer_info::{ask_peers, AppliedSeqnoSource, PeerIdentity};
pub use state_machine::{Fsm, SnapshotFileError, SnapshotJob};
pub use types::Position;
pub use wal::WalError;

use batcher::{Batcher, BatcherHandle, Limits};
use log_store::{AppendWatch, LogStore};
use network::{Network, PeerRequest, PeerResponse, Peers};
use server::{serve, ServerCtx};
use state_machine::StateMachine;
use types::RaftNode;

/// When openraft builds a snapshot on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotPolicy {
    /// Only when asked (`Replication::trigger_snapshot`).
    Never,
    /// After this many log entries since the last snapshot.
    LogsSinceLast(u64),
}

/// Validated by `Replication::start`; `new` fills every tuning knob with its default.
#[derive(Clone)]
pub struct ReplicationConfig {
    pub node_id: NodeId,
    /// Every member, this node included: id -> `host:port` of its peer listener.
    pub members: BTreeMap<NodeId, String>,
    /// Holds `raft.wal` and `snapshot.bin`; created if missing.
    pub data_dir: PathBuf,
    /// Shared by every member; at least 16 bytes. Never logged.
    pub cluster_secret: Vec<u8>,
    /// Also openraft's AppendEntries timeout, so it must exceed the worst fsync stall.
    pub heartbeat_interval: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    pub snapshot_policy: SnapshotPolicy,
    /// A batch closes at this many proposals or bytes (overshooting by at most one group).
    pub max_batch_proposals: usize,
    pub max_batch_bytes: usize,
    /// A single proposal above this is rejected (it must fit one peer frame with room to spare).
    pub max_proposal_bytes: usize,
    /// Batches being committed at once per node; further proposals queue into the next batch.
    pub max_inflight_batches: usize,
    /// Upper bound on `propose`; beyond it the outcome is reported indeterminate.
    pub propose_timeout: Duration,
    pub connect_timeout: Duration,
    /// Bind outbound peer connections to this local address (default: any).
    pub peer_source_ip: Option<std::net::IpAddr>,
    /// Join an existing cluster: never initialize; wait for a leader to add this node.
    pub join: bool,
    /// A member that answered from a Primary component at start, if one did. A node with no
    /// Raft state (a new or wiped data dir) then does not initialize: the running cluster's
    /// leader brings it in (a snapshot, then the log), as after `join`.
    pub running_cluster: Option<u64>,
    /// Log entries kept below the purge bound (DESIGN §12's safety margin).
    pub log_keep_margin: u64,
    /// How often the purge bound is evaluated.
    pub purge_interval: Duration,
    /// The lowest Raft log index every live node has applied to its backend, as far as the
    /// node can tell (`None`: unknown, purge nothing). The log is purged only below it (minus
    /// `log_keep_margin`), below the snapshot, and, on the leader, below the index every
    /// follower that answered recently has in its own log.
    pub purge_bound: PurgeBound,
    /// The cluster state UUID this node answers peers with (`peer_info`); the node resolves it.
    pub cluster_uuid: String,
    /// The local applied seqno, reported to peers that ask.
    pub applied_seqno: Option<AppliedSeqnoSource>,
    /// Receives every authenticated peer's gossip (`GossipSender::send`); None drops it.
    pub gossip_sink: Option<GossipSink>,
}

/// Where gossip from peers goes: called on the peer server's task, so it must not block.
pub type GossipSink = Arc<dyn Fn(NodeId, &[u8]) + Send + Sync>;

/// Sends gossip (opaque bytes, e.g. the node's progress report) to one peer over the
/// authenticated peer transport. Cheap to clone; usable from any task.
///
/// Targets and their addresses come from the Raft membership in effect, so nodes added or
/// removed online are included or dropped at once.
#[derive(Clone)]
pub struct GossipSender {
    peers: Arc<Peers>,
    metrics: watch::Receiver<openraft::RaftMetrics<u64, BasicNode>>,
    self_id: NodeId,
}

impl GossipSender {
    /// Every member (voter or learner) but this node.
    pub fn targets(&self) -> Vec<NodeId> {
        let m = self.metrics.borrow();
        m.membership_config
            .membership()
            .nodes()
            .map(|(id, _)| NodeId(*id))
            .filter(|id| *id != self.self_id)
            .collect()
    }

    /// One gossip message to `target`, bounded by `ttl` once written.
    pub async fn send(&self, target: NodeId, bytes: Vec<u8>, ttl: Duration) -> Result<(), String> {
        let addr = {
            let m = self.metrics.borrow();
            m.membership_config
                .membership()
                .get_node(&target.0)
                .map(|n| n.addr.clone())
        }
        .ok_or_else(|| format!("node {} is not a member", target.0))?;
        match self
            .peers
            .call(target.0, &addr, &PeerRequest::Gossip(bytes), ttl)
            .await
        {
            Ok(PeerResponse::Gossip) => Ok(()),
            Ok(_) => Err("out-of-protocol answer to gossip".into()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// See `ReplicationConfig::purge_bound`.
pub type PurgeBound = Arc<dyn Fn() -> Option<u64> + Send + Sync>;

impl std::fmt::Debug for ReplicationConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationConfig")
            .field("node_id", &self.node_id)
            .field("members", &self.members)
            .field("data_dir", &self.data_dir)
            .field("cluster_secret", &"<redacted>")
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("election_timeout_min", &self.election_timeout_min)
            .field("election_timeout_max", &self.election_timeout_max)
            .field("snapshot_policy", &self.snapshot_policy)
            .field("cluster_uuid", &self.cluster_uuid)
            .field("join", &self.join)
            .field("running_cluster", &self.running_cluster)
            .field("log_keep_margin", &self.log_keep_margin)
            .finish_non_exhaustive()
    }
}

const MIN_HEARTBEAT: Duration = Duration::from_millis(250);
const WAL_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

impl ReplicationConfig {
    pub fn new(
        node_id: NodeId,
        members: BTreeMap<NodeId, String>,
        data_dir: PathBuf,
        cluster_secret: Vec<u8>,
    ) -> Self {
        ReplicationConfig {
            node_id,
            members,
            data_dir,
            cluster_secret,
            heartbeat_interval: MIN_HEARTBEAT,
            election_timeout_min: Duration::from_millis(1000),
            election_timeout_max: Duration::from_millis(2000),
            snapshot_policy: SnapshotPolicy::Never,
            max_batch_proposals: 1024,
            max_batch_bytes: 4 * 1024 * 1024,
            max_proposal_bytes: 200 * 1024 * 1024,
            max_inflight_batches: 2,
            propose_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(1),
            peer_source_ip: None,
            join: false,
            running_cluster: None,
            cluster_uuid: String::new(),
            applied_seqno: None,
            gossip_sink: None,
            log_keep_margin: 1000,
            purge_interval: Duration::from_secs(1),
            // Without a bound from the node nothing is purged.
            purge_bound: Arc::new(|| None),
        }
    }

    fn validate(&self) -> Result<openraft::Config, ConfigError> {
        if !self.members.contains_key(&self.node_id) {
            return Err(ConfigError::NotAMember(self.node_id.0));
        }
        if self.cluster_secret.len() < 16 {
            return Err(ConfigError::WeakSecret);
        }
        if self.heartbeat_interval < MIN_HEARTBEAT {
            return Err(ConfigError::Timing(format!(
                "heartbeat_interval {:?} is below {MIN_HEARTBEAT:?}: openraft uses it as the \
                 AppendEntries timeout and fsync stalls would cause spurious elections",
                self.heartbeat_interval
            )));
        }
        if self.election_timeout_min < self.heartbeat_interval * 3
            || self.election_timeout_max <= self.election_timeout_min
        {
            return Err(ConfigError::Timing(
                "election timeout must be at least 3 heartbeats and min < max".into(),
            ));
        }
        if self.max_batch_proposals == 0
            || self.max_batch_bytes == 0
            || self.max_inflight_batches == 0
            || self.max_proposal_bytes == 0
            || self.max_proposal_bytes + self.max_batch_bytes > network::MAX_FRAME / 2
        {
            return Err(ConfigError::BatchLimits);
        }
        let config = openraft::Config {
            cluster_name: "certus".into(),
            heartbeat_interval: self.heartbeat_interval.as_millis() as u64,
            election_timeout_min: self.election_timeout_min.as_millis() as u64,
            election_timeout_max: self.election_timeout_max.as_millis() as u64,
            snapshot_policy: match self.snapshot_policy {
                SnapshotPolicy::Never => openraft::SnapshotPolicy::Never,
                SnapshotPolicy::LogsSinceLast(n) => openraft::SnapshotPolicy::LogsSinceLast(n),
            },
            // openraft never purges on its own: `purge_loop` decides, from the live nodes'
            // applied positions (DESIGN §12).
            max_in_snapshot_log_to_keep: u64::MAX,
            // The last chunk of a snapshot is answered after the follower has made it durable
            // and handed it to its state machine: seconds, not openraft's 200 ms default.
            install_snapshot_timeout: 30_000,
            snapshot_max_chunk_size: 1024 * 1024,
            ..Default::default()
        };
        config
            .validate()
            .map_err(|e| ConfigError::Timing(e.to_string()))
    }
}

/// A snapshot of the node's Raft view, for status surfaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicationMetrics {
    pub node_id: NodeId,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub last_applied_index: Option<u64>,
    /// The index the node knows to be committed. openraft 0.9 does not publish it directly;
    /// this is the applied index, which trails the committed index only by the apply queue.
    pub committed_index: Option<u64>,
    pub members: BTreeMap<NodeId, String>,
    /// The voting members (`members` minus learners): Galera's cluster size.
    pub voters: Vec<NodeId>,
    /// Log index of the membership entry in effect; changes with every membership change.
    pub membership_index: u64,
    /// Galera's "Primary": a leader exists and, on the leader, a quorum acknowledged it within
    /// the election timeout.
    pub is_primary: bool,
    /// The last log index covered by this node's snapshot.
    pub snapshot_index: Option<u64>,
    /// The last purged log index: the log starts right after it.
    pub purged_index: Option<u64>,
}

/// This node's place in the membership, sampled cheaply for readiness and status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MembershipProbe {
    pub primary: bool,
    /// A voting member of the membership in effect.
    pub voter: bool,
    /// Listed as a learner: being added, still catching up.
    pub learner: bool,
    /// The membership is known and does not list this node at all: it was removed.
    pub removed: bool,
    /// Entries in this node's log not yet applied to its state machine.
    pub unapplied: u64,
}

fn is_primary(
    state: ServerState,
    millis_since_quorum_ack: Option<u64>,
    has_leader: bool,
    election_ms: u64,
) -> bool {
    match state {
        ServerState::Leader => millis_since_quorum_ack.is_some_and(|ms| ms < election_ms),
        ServerState::Follower => has_leader,
        ServerState::Candidate | ServerState::Learner | ServerState::Shutdown => false,
    }
}

/// The leader this node knows of and its peer address, from the Raft membership.
pub(crate) fn leader_and_addr(raft: &RaftNode) -> (Option<u64>, Option<String>) {
    let m = raft.metrics();
    let m = m.borrow();
    let leader = m.current_leader;
    let addr = leader.and_then(|l| {
        m.membership_config
            .membership()
            .get_node(&l)
            .map(|n| n.addr.clone())
    });
    (leader, addr)
}

fn primary_probe(
    raft: &RaftNode,
    cfg: &ReplicationConfig,
) -> impl Fn() -> bool + Send + Sync + 'static {
    let metrics = raft.metrics();
    let election = cfg.election_timeout_max.as_millis() as u64;
    move || {
        let m = metrics.borrow();
        is_primary(
            m.state,
            m.millis_since_quorum_ack,
            m.current_leader.is_some(),
            election,
        )
    }
}

pub struct Replication {
    node_id: NodeId,
    raft: RaftNode,
    /// Read only by tests (`eager_copies_sent`).
    #[cfg(test)]
    eager: eager::EagerReplication,
    batcher: BatcherHandle,
    peers: Arc<Peers>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    wal_closed: Option<wal::WalClosed>,
    cfg: ReplicationConfig,
    identity: Arc<peer_info::LocalIdentity>,
}

impl Replication {
    /// Opens the log and snapshot under `cfg.data_dir`, starts Raft, serves peers on
    /// `listener` (already bound), and initializes the cluster if this node is pristine.
    pub async fn start<F: Fsm>(
        cfg: ReplicationConfig,
        fsm: Arc<std::sync::Mutex<F>>,
        listener: TcpListener,
    ) -> Result<Self, StartError> {
        let raft_config = Arc::new(cfg.validate()?);
        let id = cfg.node_id.0;
        let watch_appends = AppendWatch::default();
        let (log_store, recovered, wal_closed) =
            LogStore::open(&cfg.data_dir, id, watch_appends.clone())?;
        if recovered.dropped_tail > 0 {
            tracing::warn!(
                bytes = recovered.dropped_tail,
                "raft log: torn tail dropped at open"
            );
        }
        let fsm: state_machine::SharedFsm = fsm;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let state_machine = StateMachine::open(&cfg.data_dir, fsm, shutdown_rx.clone())?;
        let secret: Arc<[u8]> = cfg.cluster_secret.clone().into();
        let peers = Arc::new(Peers::new(
            id,
            secret.clone(),
            cfg.connect_timeout,
            cfg.peer_source_ip,
        ));
        let network = Network {
            peers: peers.clone(),
        };
        let eager = log_store.eager();
        let raft = openraft::Raft::new(id, raft_config, network, log_store, state_machine)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        eager.enable(id, peers.clone(), raft.metrics(), cfg.heartbeat_interval);

        let limits = Limits {
            max_batch_proposals: cfg.max_batch_proposals,
            max_batch_bytes: cfg.max_batch_bytes,
            max_inflight: cfg.max_inflight_batches,
            propose_timeout: cfg.propose_timeout,
        };
        let (batcher, batcher_task) = Batcher::spawn(
            id,
            raft.clone(),
            peers.clone(),
            watch_appends,
            limits,
            shutdown_rx.clone(),
        );
        let identity = Arc::new(peer_info::LocalIdentity::new(
            id,
            cfg.cluster_uuid.clone(),
            cfg.applied_seqno.clone(),
            Box::new(primary_probe(&raft, &cfg)),
            cfg.election_timeout_max,
        ));
        let ctx = Arc::new(ServerCtx {
            identity: identity.clone(),
            self_id: id,
            secret,
            raft: raft.clone(),
            peers: peers.clone(),
            batcher: batcher.clone(),
            propose_timeout: cfg.propose_timeout,
            gossip: cfg.gossip_sink.clone(),
        });
        let server_task = tokio::spawn(serve(listener, ctx, shutdown_rx.clone()));
        let purge_task = tokio::spawn(purge_loop(
            raft.clone(),
            peers.clone(),
            PurgeSettings {
                self_id: id,
                bound: cfg.purge_bound.clone(),
                margin: cfg.log_keep_margin,
                interval: cfg.purge_interval,
                live_window: cfg.election_timeout_max * 5,
            },
            shutdown_rx,
        ));

        let replication = Replication {
            node_id: cfg.node_id,
            raft,
            #[cfg(test)]
            eager,
            batcher,
            peers,
            shutdown,
            tasks: vec![batcher_task, server_task, purge_task],
            wal_closed: Some(wal_closed),
            cfg,
            identity,
        };
        replication.initialize_if_pristine().await?;
        Ok(replication)
    }

    async fn initialize_if_pristine(&self) -> Result<(), StartError> {
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        if initialized {
            return Ok(());
        }
        if self.cfg.join {
            tracing::info!(
                node = self.node_id.0,
                "joining an existing cluster: waiting for a leader to add this node"
            );
            return Ok(());
        }
        // Initializing would make this node a candidate at once, in the first term, with an
        // empty log. It cannot win, but its vote for itself outranks the running leader's in
        // the leader's own term (openraft orders votes of one term by node id), and the leader
        // steps down when it hears of it: a needless election, the whole cluster refusing
        // clients meanwhile.
        if let Some(member) = self.cfg.running_cluster {
            tracing::info!(
                node = self.node_id.0,
                member,
                "a cluster is running (member {member} is Primary) and this node has no Raft \
                 state: waiting for its leader to send a snapshot; if the membership no longer \
                 lists this node, start it with join = true and add it"
            );
            return Ok(());
        }
        let members: BTreeMap<u64, BasicNode> = self
            .cfg
            .members
            .iter()
            .map(|(id, addr)| (id.0, BasicNode::new(addr.clone())))
            .collect();
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            // Another path got there first (a leader's AppendEntries already reached us).
            Err(openraft::error::RaftError::APIError(
                openraft::error::InitializeError::NotAllowed(_),
            )) => Ok(()),
            Err(e) => Err(StartError::Raft(e.to_string())),
        }
    }

    /// Eager copies of new entries this node sent to followers as leader (`eager`).
    #[cfg(test)]
    pub(crate) fn eager_copies_sent(&self) -> u64 {
        self.eager.sent()
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// A handle that sends gossip to the configured members (addresses from the config:
    /// membership changes are not implemented).
    pub fn gossip_sender(&self) -> GossipSender {
        GossipSender {
            peers: self.peers.clone(),
            metrics: self.raft.metrics(),
            self_id: self.node_id,
        }
    }

    /// Submits one proposal from any node (followers forward to the leader) and resolves once
    /// the entry carrying it is committed (and applied on the leader; this node's `Fsm` may
    /// still be applying it). See `ProposeError::class` for what each failure means.
    pub async fn propose(&self, proposal: Vec<u8>) -> Result<Position, ProposeError> {
        if proposal.len() > self.cfg.max_proposal_bytes {
            return Err(ProposeError::Rejected(format!(
                "proposal of {} bytes is above max_proposal_bytes {}",
                proposal.len(),
                self.cfg.max_proposal_bytes
            )));
        }
        self.batcher.submit(vec![proposal], false).await
    }

    /// The leader's committed index, confirmed by a quorum (Raft read index). A causal read
    /// waits until the local `Fsm` has applied it.
    pub async fn read_index(&self) -> Result<u64, ReadIndexError> {
        let deadline = tokio::time::Instant::now() + self.cfg.propose_timeout;
        loop {
            let (leader, addr) = leader_and_addr(&self.raft);
            let result = match (leader, addr) {
                (Some(l), _) if l == self.node_id.0 => server::local_read_index(&self.raft).await,
                (Some(l), Some(addr)) => {
                    let ttl = deadline.saturating_duration_since(tokio::time::Instant::now());
                    match self
                        .peers
                        .call(l, &addr, &PeerRequest::ReadIndex, ttl)
                        .await
                    {
                        Ok(PeerResponse::ReadIndex(r)) => r,
                        Ok(_) => Err(ReadIndexError::Failed("out-of-protocol answer".into())),
                        Err(e) => Err(ReadIndexError::Failed(e.to_string())),
                    }
                }
                _ => Err(ReadIndexError::NoLeader),
            };
            match result {
                Err(ReadIndexError::NoLeader) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
    }

    /// Waits until this node's state machine has applied the log up to `index`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> bool {
        self.raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "causal read")
            .await
            .is_ok()
    }

    /// A cheap probe of this node's place in the membership, usable from another task.
    pub fn membership_probe(&self) -> impl Fn() -> MembershipProbe + Send + Sync + 'static {
        let identity = self.identity.clone();
        let raft = self.raft.clone();
        let id = self.node_id.0;
        move || {
            // The one Primary rule (`peer_info::LocalIdentity::in_primary`).
            let primary = identity.in_primary(&raft);
            let metrics = raft.metrics();
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            let known = membership.nodes().next().is_some();
            let voter = membership.voter_ids().any(|v| v == id);
            let listed = membership.get_node(&id).is_some();
            let applied = m.last_applied.map_or(0, |l| l.index);
            MembershipProbe {
                primary,
                voter,
                learner: listed && !voter,
                removed: known && !listed,
                unapplied: m.last_log_index.unwrap_or(0).saturating_sub(applied),
            }
        }
    }

    /// A cheap probe of "is this node in the Primary component", usable from another task.
    /// Whether this node is in the Primary component (`peer_info::LocalIdentity::in_primary`):
    /// the one rule for status surfaces, clients and peers alike.
    pub fn primary_probe(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let identity = self.identity.clone();
        let raft = self.raft.clone();
        move || identity.in_primary(&raft)
    }

    /// The membership as this node sees it.
    pub fn membership(&self) -> MembershipView {
        membership::view(&self.raft)
    }

    pub fn metrics(&self) -> ReplicationMetrics {
        let m = self.raft.metrics().borrow().clone();
        let is_primary = self.identity.in_primary(&self.raft);
        let applied = m.last_applied.map(|l| l.index);
        ReplicationMetrics {
            node_id: self.node_id,
            leader: m.current_leader.map(NodeId),
            term: m.current_term,
            last_log_index: m.last_log_index,
            last_applied_index: applied,
            committed_index: applied,
            members: m
                .membership_config
                .membership()
                .nodes()
                .map(|(id, n)| (NodeId(*id), n.addr.clone()))
                .collect(),
            voters: m
                .membership_config
                .membership()
                .voter_ids()
                .map(NodeId)
                .collect(),
            membership_index: m.membership_config.log_id().map_or(0, |l| l.index),
            is_primary,
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
        }
    }

    /// Tells every other member that this node is stopping cleanly, and says whether it is the
    /// last member to leave (`peer_info::last_to_leave`): grastate.dat's `safe_to_bootstrap`.
    /// Call before `shutdown`, while this node still answers its peers.
    pub async fn announce_leaving(&self, within: Duration) -> bool {
        self.identity.set_leaving();
        let me = self.identity.current(&self.raft);
        let others: BTreeMap<NodeId, String> = self
            .metrics()
            .members
            .into_iter()
            .filter(|(id, _)| *id != self.node_id)
            .collect();
        let answers = peer_info::call_all(
            self.peers.clone(),
            &others,
            PeerRequest::Leaving(me.clone()),
            within,
        )
        .await;
        let ids: Vec<u64> = others.keys().map(|n| n.0).collect();
        let last = peer_info::last_to_leave(&me, &ids, &answers, &self.identity.departures());
        tracing::info!(last, position = %me.describe_position(), "announced a clean stop to peers");
        last
    }

    /// Asks openraft to build a snapshot now (it returns at once; the build runs in the
    /// background).
    pub async fn trigger_snapshot(&self) -> Result<(), String> {
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| e.to_string())
    }

    /// A cheap probe of "is this node streaming a snapshot to a peer" (Galera's Donor state).
    pub fn donor_probe(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let peers = self.peers.clone();
        move || peers.is_donor()
    }

    /// Stops serving peers, answers queued proposals with `ShuttingDown`, lets in-flight ones
    /// finish (bounded by the propose timeout), and stops Raft.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        self.peers.clear();
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        // The log is closed (and its lock released) only when openraft has dropped every log
        // handle; wait for it so the same dir can be reopened right away.
        if let Some(closed) = self.wal_closed.take() {
            if tokio::time::timeout(WAL_CLOSE_TIMEOUT, closed.wait())
                .await
                .is_err()
            {
                tracing::warn!("raft log still open {WAL_CLOSE_TIMEOUT:?} after shutdown");
            }
        }
    }
}

impl Drop for Replication {
    /// Dropping without `shutdown` is a crash as far as peers can tell: the server and batcher
    /// stop at once and Raft is stopped in the background.
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for task in &self.tasks {
            task.abort();
        }
        self.peers.clear();
        if !self.tasks.is_empty() {
            let raft = self.raft.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = raft.shutdown().await;
                });
            }
        }
    }
}

struct PurgeSettings {
    self_id: u64,
    bound: PurgeBound,
    margin: u64,
    interval: Duration,
    /// A follower that has not answered for this long is not live: it does not hold the purge
    /// back (it will receive a snapshot when it returns).
    live_window: Duration,
}

/// The highest index that may be purged now, or `None`. Pure, so the rule is unit-tested.
///
/// `followers`: on the leader, each other member's matched index and whether it is live.
pub(crate) fn purge_upto(
    snapshot: Option<u64>,
    purged: Option<u64>,
    lowest_applied: Option<u64>,
    followers: &[(Option<u64>, bool)],
    margin: u64,
) -> Option<u64> {
    let mut upto = snapshot?.min(lowest_applied?);
    for (matched, live) in followers {
        if *live {
            upto = upto.min((*matched)?);
        }
    }
    let upto = upto.checked_sub(margin)?;
    (purged.is_none_or(|p| upto > p)).then_some(upto)
}

/// Purges the log below the bound `purge_upto` computes, every `interval`.
async fn purge_loop(
    raft: RaftNode,
    peers: Arc<Peers>,
    s: PurgeSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(s.interval) => {}
            _ = stopped(&mut shutdown) => return,
        }
        let m = raft.metrics().borrow().clone();
        let followers: Vec<(Option<u64>, bool)> = m
            .replication
            .iter()
            .flatten()
            .filter(|(id, _)| **id != s.self_id)
            .map(|(id, matched)| {
                (
                    matched.map(|l| l.index),
                    peers.answered_within(*id, s.live_window),
                )
            })
            .collect();
        let upto = purge_upto(
            m.snapshot.map(|l| l.index),
            m.purged.map(|l| l.index),
            (s.bound)(),
            &followers,
            s.margin,
        );
        if let Some(upto) = upto {
            tracing::debug!(upto, "purging the raft log");
            if raft.trigger().purge_log(upto).await.is_err() {
                return;
            }
        }
    }
}

/// Resolves once `shutdown` is true (or its sender is gone). The guard `wait_for` returns is
/// not `Send`, so it must not live in a spawned task's select.
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests;
