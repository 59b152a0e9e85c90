//! Who a node is, as its peers ask it: the cluster state UUID it belongs to, its position, and
//! whether it is stopping. Used by the start-up identity check (a data dir from another cluster),
//! by `certus bootstrap` (which node is the most advanced) and by the last-to-leave rule of
//! `grastate.dat` (`safe_to_bootstrap: 1` only on the node that stopped last).
//!
//! Owns: the `Identify` and `Leaving` peer requests, the record of peers that left cleanly, and
//! the last-to-leave decision. Must not touch: the Raft log, grastate.dat (the node writes it
//! from the answer given here), or what the cluster UUID is (the node passes it in).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::network::{PeerRequest, PeerResponse, Peers};
use super::types::RaftNode;
use crate::ids::NodeId;

/// The local applied seqno, read live (the node owns it; replication only reports it).
pub type AppliedSeqnoSource = Arc<dyn Fn() -> u64 + Send + Sync>;

/// A node's answer to "who are you".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerIdentity {
    pub node_id: u64,
    /// The cluster state UUID, hyphenated.
    pub cluster_uuid: String,
    /// The seqno its backend has applied.
    pub applied_seqno: u64,
    /// `(term, index)` of the last entry in its Raft log. Ordered as Raft's "at least as
    /// up-to-date" rule orders logs: the larger one holds every entry the cluster committed
    /// whenever the smaller one does.
    pub last_log: Option<(u64, u64)>,
    /// In the Primary component (it has a leader) when it answered.
    pub primary: bool,
    /// It is stopping cleanly (it announced `Leaving`).
    pub leaving: bool,
}

impl PeerIdentity {
    /// `seqno S, raft log T:I` for messages.
    pub fn describe_position(&self) -> String {
        match self.last_log {
            Some((t, i)) => format!("seqno {}, raft log {t}:{i}", self.applied_seqno),
            None => format!("seqno {}, empty raft log", self.applied_seqno),
        }
    }
}

/// This node's side: what it answers, and which peers told it they left.
pub(crate) struct LocalIdentity {
    node_id: u64,
    cluster_uuid: String,
    applied_seqno: Option<AppliedSeqnoSource>,
    /// Galera's Primary, as `Replication::metrics` computes it (a leader that restarted alone
    /// still believes it leads; only a recent quorum acknowledgement counts).
    primary: Box<dyn Fn() -> bool + Send + Sync>,
    /// When a leader's AppendEntries last reached this node. A follower that restarted alone
    /// still names the leader of its saved vote, so for followers only a recent heartbeat
    /// counts as being in the Primary component.
    last_append_entries: Mutex<Option<Instant>>,
    heartbeat_window: Duration,
    leaving: AtomicBool,
    departures: Mutex<BTreeMap<u64, PeerIdentity>>,
}

impl LocalIdentity {
    pub(crate) fn new(
        node_id: u64,
        cluster_uuid: String,
        applied_seqno: Option<AppliedSeqnoSource>,
        primary: Box<dyn Fn() -> bool + Send + Sync>,
        heartbeat_window: Duration,
    ) -> Self {
        LocalIdentity {
            node_id,
            cluster_uuid,
            applied_seqno,
            primary,
            last_append_entries: Mutex::new(None),
            heartbeat_window,
            leaving: AtomicBool::new(false),
            departures: Mutex::new(BTreeMap::new()),
        }
    }

    pub(crate) fn current(&self, raft: &RaftNode) -> PeerIdentity {
        let last_log = raft
            .data_metrics()
            .borrow()
            .last_log
            .map(|l| (l.leader_id.term, l.index));
        let primary = self.in_primary(raft);
        PeerIdentity {
            node_id: self.node_id,
            cluster_uuid: self.cluster_uuid.clone(),
            applied_seqno: self.applied_seqno.as_ref().map_or(0, |f| f()),
            last_log,
            primary,
            leaving: self.leaving.load(Ordering::SeqCst),
        }
    }

    /// Whether this node is in the Primary component: Raft says so and, for a follower, its
    /// leader's AppendEntries keep arriving (a follower restarted alone still names the leader
    /// of its saved vote until an election timeout passes).
    pub(crate) fn in_primary(&self, raft: &RaftNode) -> bool {
        let leader = raft.metrics().borrow().state == openraft::ServerState::Leader;
        let heard_recently = self
            .last_append_entries
            .lock()
            .ok()
            .and_then(|t| *t)
            .is_some_and(|t| t.elapsed() < self.heartbeat_window);
        (self.primary)() && (leader || heard_recently)
    }

    /// The server calls this for every AppendEntries it receives.
    pub(crate) fn note_append_entries(&self) {
        if let Ok(mut t) = self.last_append_entries.lock() {
            *t = Some(Instant::now());
        }
    }

    pub(crate) fn set_leaving(&self) {
        self.leaving.store(true, Ordering::SeqCst);
    }

    /// A peer that asks who we are is starting: any earlier clean departure of it is over.
    pub(crate) fn peer_started(&self, peer: u64) {
        if let Ok(mut d) = self.departures.lock() {
            d.remove(&peer);
        }
    }

    pub(crate) fn peer_left(&self, who: PeerIdentity) {
        if let Ok(mut d) = self.departures.lock() {
            d.insert(who.node_id, who);
        }
    }

    pub(crate) fn departures(&self) -> BTreeMap<u64, PeerIdentity> {
        self.departures
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default()
    }
}

/// Galera's last-to-leave rule, in Raft terms: this node may record `safe_to_bootstrap: 1`
/// only when every other member has stopped cleanly (it told us, or it answers that it is
/// stopping right now) at a position no more advanced than ours. A member that crashed never
/// told us, so after any crash nobody is safe to bootstrap. Because our log is then at least as
/// up-to-date as every other member's, it holds every committed entry (Raft's election rule).
pub(crate) fn last_to_leave(
    me: &PeerIdentity,
    others: &[u64],
    answers: &BTreeMap<u64, Result<PeerIdentity, String>>,
    departed: &BTreeMap<u64, PeerIdentity>,
) -> bool {
    others.iter().all(|m| {
        let seen = match answers.get(m) {
            Some(Ok(id)) if !id.leaving => return false,
            Some(Ok(id)) => Some(id),
            Some(Err(_)) | None => departed.get(m),
        };
        seen.is_some_and(|id| id.last_log <= me.last_log)
    })
}

/// Sends `req` to every peer in parallel; each answer within `within` or an error string.
pub(crate) async fn call_all(
    peers: Arc<Peers>,
    targets: &BTreeMap<NodeId, String>,
    req: PeerRequest,
    within: Duration,
) -> BTreeMap<u64, Result<PeerIdentity, String>> {
    let req = Arc::new(req);
    let mut set = tokio::task::JoinSet::new();
    for (id, addr) in targets {
        let (peers, req, id, addr) = (peers.clone(), req.clone(), id.0, addr.clone());
        set.spawn(async move {
            let answer = tokio::time::timeout(within, peers.call(id, &addr, &req, within)).await;
            let result = match answer {
                Err(_) => Err(format!("no answer within {within:?}")),
                Ok(Err(e)) => Err(e.to_string()),
                Ok(Ok(PeerResponse::Identify(who) | PeerResponse::Leaving(who))) => {
                    if who.node_id == id {
                        Ok(who)
                    } else {
                        Err(format!("answered as node {}", who.node_id))
                    }
                }
                Ok(Ok(_)) => Err("out-of-protocol answer".into()),
            };
            (id, result)
        });
    }
    let mut out = BTreeMap::new();
    while let Some(joined) = set.join_next().await {
        if let Ok((id, r)) = joined {
            out.insert(id, r);
        }
    }
    for id in targets.keys() {
        out.entry(id.0)
            .or_insert_with(|| Err("the query task failed".into()));
    }
    out
}

/// Asks every peer in `targets` who it is, without running Raft (node start-up checks and the
/// offline `certus bootstrap`). Unreachable peers answer with the reason.
pub async fn ask_peers(
    self_id: NodeId,
    secret: &[u8],
    source_ip: Option<std::net::IpAddr>,
    targets: &BTreeMap<NodeId, String>,
    within: Duration,
) -> BTreeMap<u64, Result<PeerIdentity, String>> {
    let peers = Arc::new(Peers::new(self_id.0, secret.into(), within, source_ip));
    call_all(peers, targets, PeerRequest::Identify, within).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(node_id: u64, last_log: Option<(u64, u64)>, leaving: bool) -> PeerIdentity {
        PeerIdentity {
            node_id,
            cluster_uuid: "u".into(),
            applied_seqno: 0,
            last_log,
            primary: false,
            leaving,
        }
    }

    #[test]
    fn a_single_node_cluster_is_always_last() {
        assert!(last_to_leave(
            &at(1, Some((1, 5)), true),
            &[],
            &BTreeMap::new(),
            &BTreeMap::new()
        ));
    }

    #[test]
    fn last_only_when_every_other_member_left_cleanly_behind_us() {
        let me = at(1, Some((2, 50)), true);
        let unreachable: BTreeMap<u64, Result<PeerIdentity, String>> =
            [(2, Err("refused".into())), (3, Err("refused".into()))].into();
        let both_left: BTreeMap<u64, PeerIdentity> = [
            (2, at(2, Some((2, 40)), true)),
            (3, at(3, Some((2, 50)), true)),
        ]
        .into();
        assert!(last_to_leave(&me, &[2, 3], &unreachable, &both_left));
        // Node 3 crashed (never said it left): nobody is safe.
        let one_left: BTreeMap<u64, PeerIdentity> = [(2, at(2, Some((2, 40)), true))].into();
        assert!(!last_to_leave(&me, &[2, 3], &unreachable, &one_left));
        // Node 3 left further ahead than us: it, not us, holds the newest entries.
        let ahead: BTreeMap<u64, PeerIdentity> = [
            (2, at(2, Some((2, 40)), true)),
            (3, at(3, Some((3, 1)), true)),
        ]
        .into();
        assert!(!last_to_leave(&me, &[2, 3], &unreachable, &ahead));
    }

    #[test]
    fn a_running_peer_means_not_last_and_a_stopping_one_is_compared() {
        let me = at(1, Some((2, 50)), true);
        let running: BTreeMap<u64, Result<PeerIdentity, String>> =
            [(2, Ok(at(2, Some((2, 10)), false)))].into();
        assert!(!last_to_leave(&me, &[2], &running, &BTreeMap::new()));
        let stopping: BTreeMap<u64, Result<PeerIdentity, String>> =
            [(2, Ok(at(2, Some((2, 50)), true)))].into();
        assert!(last_to_leave(&me, &[2], &stopping, &BTreeMap::new()));
        let stopping_ahead: BTreeMap<u64, Result<PeerIdentity, String>> =
            [(2, Ok(at(2, Some((2, 51)), true)))].into();
        assert!(!last_to_leave(&me, &[2], &stopping_ahead, &BTreeMap::new()));
    }
}
