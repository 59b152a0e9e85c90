//! Eager replication: the leader sends the entries it appends to its up-to-date followers while
//! its own fsync of them is still running.
//!
//! Owns: the decision to send such a copy, and sending it. Must not touch: openraft's own
//! replication or the commit decision; a copy's answer is read (so the connection can be pooled
//! again) and dropped.
//!
//! Why: openraft 0.9 runs the leader's `append` inside its core task and waits for the fsync
//! before it hands the entries to its replication streams, so a commit paid the leader's fsync
//! and then the follower's, one after the other (docs/benchmarks.md, "Raft propose latency").
//! With the copy, the follower's append and fsync overlap the leader's; when openraft's own
//! AppendEntries arrives, the follower finds the entries in its log and answers at once.
//!
//! Why this is safe. A leader may send entries before they are durable in its own log (Raft
//! thesis §10.2.1); what counts toward a commit is unchanged: the leader counts itself after its
//! fsync, and each follower through openraft's own AppendEntries, which the follower answers only
//! after its core has made everything it holds durable (openraft 0.9 waits for the follower's
//! fsync inside the core before it handles the next message, so a follower cannot acknowledge
//! entries a copy brought in before their fsync completes). The copy is exactly the request
//! openraft would send: the leader's own committed vote, the entries, the log id before them
//! and a commit index the leader has already committed. It goes only to a follower whose matched
//! log id is the entry just before the new ones, so it never makes a follower truncate anything;
//! a copy that arrives late (after another leader was elected, after openraft's own request)
//! is refused or finds nothing to do, as any delayed AppendEntries would.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use openraft::{BasicNode, RaftMetrics, ServerState};
use tokio::sync::watch;

use super::network::{encode_frame, PeerRequest, Peers};
use super::types::{Entry, LogId};

/// Batches above this are left to openraft alone: under a load that builds such batches the
/// follower is rarely idle with nothing in flight, and the copy would double the bytes sent.
const MAX_COPY_BYTES: usize = 1024 * 1024;

struct Sender {
    self_id: u64,
    peers: Arc<Peers>,
    metrics: watch::Receiver<RaftMetrics<u64, BasicNode>>,
    /// openraft's AppendEntries timeout (the heartbeat interval).
    ttl: Duration,
}

/// Set once Raft has started (the log store exists before the metrics it needs). Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct EagerReplication {
    sender: Arc<OnceLock<Sender>>,
    /// Copies sent (one per follower), for tests: a change that made the conditions never hold
    /// would cost latency silently.
    sent: Arc<AtomicU64>,
}

impl EagerReplication {
    pub(crate) fn enable(
        &self,
        self_id: u64,
        peers: Arc<Peers>,
        metrics: watch::Receiver<RaftMetrics<u64, BasicNode>>,
        ttl: Duration,
    ) {
        let _ = self.sender.set(Sender {
            self_id,
            peers,
            metrics,
            ttl,
        });
    }

    /// How many copies were sent so far.
    #[cfg(test)]
    pub(crate) fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Whether entries starting with `first` may be copied: eager replication is on and this
    /// node created the entry as a leader. A cheap first test; `offer` checks the rest.
    pub(crate) fn wants(&self, first: &Entry) -> bool {
        self.sender
            .get()
            .is_some_and(|s| first.log_id.leader_id.node_id == s.self_id)
    }

    /// Called by the log store as `entries` enter this node's log after `prev`, before their
    /// fsync. Sends a copy when this node leads in the entries' term and a follower is up to
    /// `prev`. Never waits: the sends run on their own tasks.
    pub(crate) fn offer(&self, entries: Vec<Entry>, prev: Option<LogId>, committed: Option<LogId>) {
        let Some(s) = self.sender.get() else {
            return;
        };
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return;
        };
        let term = first.log_id.leader_id.term;
        let last_index = last.log_id.index;
        if first.log_id.leader_id.node_id != s.self_id
            || last.log_id.leader_id != first.log_id.leader_id
        {
            return;
        }
        // A membership change is left to openraft: a follower that took a config without this
        // leader from a copy refuses the leader's own request for it as a non-member's, and
        // the change would never commit (membership::grow_from_three_to_five_..., removing the
        // leader).
        if entries
            .iter()
            .any(|e| matches!(e.payload, openraft::EntryPayload::Membership(_)))
        {
            return;
        }
        let (vote, targets) = {
            let m = s.metrics.borrow();
            let vote = m.vote;
            let leads = m.state == ServerState::Leader
                && vote.is_committed()
                && vote.leader_id().term == term
                && vote.leader_id().voted_for() == Some(s.self_id);
            let Some(replication) = m.replication.as_ref().filter(|_| leads) else {
                return;
            };
            let membership = m.membership_config.membership();
            let targets: Vec<(u64, String)> = replication
                .iter()
                .filter(|(id, matched)| **id != s.self_id && **matched == prev)
                .filter_map(|(id, _)| membership.get_node(id).map(|n| (*id, n.addr.clone())))
                .collect();
            (vote, targets)
        };
        if targets.is_empty() {
            return;
        }
        let req = PeerRequest::AppendEntries(openraft::raft::AppendEntriesRequest {
            vote,
            prev_log_id: prev,
            entries,
            // What the leader has committed; never above the entries this request carries.
            leader_commit: committed.filter(|c| c.index <= last_index),
        });
        let frame = match encode_frame(&req) {
            Ok(f) if f.len() <= MAX_COPY_BYTES => Arc::new(f),
            _ => return,
        };
        for (target, addr) in targets {
            self.sent.fetch_add(1, Ordering::Relaxed);
            let peers = s.peers.clone();
            let frame = frame.clone();
            let ttl = s.ttl;
            tokio::spawn(async move {
                if let Err(e) = peers.call_frame(target, &addr, &frame, ttl).await {
                    tracing::debug!(target, error = %e, "eager copy of new entries not delivered");
                }
            });
        }
    }
}
