//! Online membership changes: adding a node (learner, catch-up, voter) and removing one, run on
//! the leader; the operator's admin client that asks any node for them; and the rule that
//! decides which authenticated peers a node talks to.
//!
//! Owns: `AdminOp`/`AdminRequest`/`MembershipView` (they cross the wire), the leader-side
//! procedures over openraft's `add_learner`/`change_membership`, and the admin client. Must not
//! touch: the log, the state machine, what proposals mean. Peer addresses live in the Raft
//! membership (`BasicNode::addr`); nothing here keeps a second copy.
//!
//! Why the peer transport and not the HTTP server: the HTTP server is a health-check responder
//! that reads no bodies and has no authentication, while the peer transport already proves the
//! cluster secret on both sides (HMAC challenge-response) before any frame is parsed. An admin
//! connection is a peer connection with the reserved client id 0.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::{BasicNode, ChangeMembers};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use super::network::{
    connect_handshake, read_frame, write_frame, PeerRequest, PeerResponse, Peers, ADMIN_CLIENT_ID,
    HANDSHAKE_TIMEOUT,
};
use super::types::RaftNode;

/// A learner is caught up when the leader has replicated the log to within this many entries
/// of its own last entry (and at least up to the entry that added it).
const CATCH_UP_LAG: u64 = 64;
/// How often the leader re-reads replication progress while waiting for a learner.
const POLL: Duration = Duration::from_millis(100);
/// Upper bound on one `change_membership` (joint and uniform entries committed).
const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// What an operator asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminOp {
    /// Add node `id` (its peer listener at `addr`) as a learner, wait up to `catch_up_ms` until
    /// its log has caught up, then make it a voter.
    AddNode {
        id: u64,
        addr: String,
        catch_up_ms: u64,
    },
    /// Remove node `id` (voter or learner) from the membership.
    RemoveNode { id: u64 },
    /// Report the membership as the node asked sees it (answered by any node, not forwarded).
    Show,
}

impl AdminOp {
    /// The longest the leader may take to run this operation; bounds a forwarded request.
    pub(crate) fn time_bound(&self) -> Duration {
        let margin = Duration::from_secs(30);
        match self {
            AdminOp::AddNode { catch_up_ms, .. } => {
                Duration::from_millis(*catch_up_ms) + CHANGE_TIMEOUT * 2 + margin
            }
            AdminOp::RemoveNode { .. } => CHANGE_TIMEOUT * 2 + DEMOTION_NOTICE + margin,
            AdminOp::Show => margin,
        }
    }
}

/// An admin request on the wire. `forwarded` is set when a follower passes it to the leader, so
/// that a request never travels more than one hop (a stale leader view fails, it does not loop).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct AdminRequest {
    pub(crate) op: AdminOp,
    pub(crate) forwarded: bool,
}

/// The membership as one node sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipView {
    pub leader: Option<u64>,
    /// Voters: id -> peer address.
    pub voters: BTreeMap<u64, String>,
    /// Learners (nodes being added): id -> peer address.
    pub learners: BTreeMap<u64, String>,
    /// Log index of the membership entry in effect (changes with every membership change).
    pub config_index: Option<u64>,
}

impl std::fmt::Display for MembershipView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let leader = self.leader.map_or("none".to_string(), |l| l.to_string());
        writeln!(f, "leader: {leader}")?;
        for (id, addr) in &self.voters {
            writeln!(f, "voter   {id}  {addr}")?;
        }
        for (id, addr) in &self.learners {
            writeln!(f, "learner {id}  {addr}")?;
        }
        Ok(())
    }
}

/// Why an admin call failed on the operator's side.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot reach {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("{addr} did not accept the cluster secret: {source}")]
    Auth {
        addr: String,
        source: std::io::Error,
    },
    #[error("no answer from {addr} within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("talking to {addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("{addr} answered out of protocol")]
    Protocol { addr: String },
    /// The cluster refused or could not complete the change.
    #[error("{0}")]
    Refused(String),
}

/// The operator's side: asks the node whose peer listener is `addr` to run `op` (it forwards to
/// the leader when it is not the leader), authenticating with the cluster secret.
pub async fn cluster_admin(
    addr: &str,
    secret: &[u8],
    op: AdminOp,
    wait: Duration,
) -> Result<MembershipView, AdminError> {
    let connect = timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| AdminError::Timeout {
            addr: addr.into(),
            timeout: HANDSHAKE_TIMEOUT,
        })?;
    let mut stream = connect.map_err(|source| AdminError::Connect {
        addr: addr.into(),
        source,
    })?;
    timeout(
        HANDSHAKE_TIMEOUT,
        connect_handshake(&mut stream, secret, ADMIN_CLIENT_ID, None),
    )
    .await
    .map_err(|_| AdminError::Timeout {
        addr: addr.into(),
        timeout: HANDSHAKE_TIMEOUT,
    })?
    .map_err(|source| AdminError::Auth {
        addr: addr.into(),
        source,
    })?;
    let io = |source| AdminError::Io {
        addr: addr.into(),
        source,
    };
    let req = PeerRequest::Admin(AdminRequest {
        op,
        forwarded: false,
    });
    write_frame(&mut stream, &req).await.map_err(io)?;
    let resp: PeerResponse = timeout(wait, read_frame(&mut stream))
        .await
        .map_err(|_| AdminError::Timeout {
            addr: addr.into(),
            timeout: wait,
        })?
        .map_err(io)?;
    match resp {
        PeerResponse::Admin(r) => r.map_err(AdminError::Refused),
        _ => Err(AdminError::Protocol { addr: addr.into() }),
    }
}

/// Whether this node accepts an authenticated connection from `client`. `nodes` is the Raft
/// membership this node knows (voters and learners). A node that knows no membership yet (a
/// joiner before the leader's first AppendEntries) accepts every authenticated peer: the
/// secret is what admits it. Afterwards only members are peers, so a removed node that keeps
/// campaigning cannot disturb the cluster. The admin id is always accepted; what it may ask is
/// limited by the server.
pub(crate) fn admits(nodes: &BTreeSet<u64>, self_id: u64, client: u64) -> bool {
    client != self_id && (client == ADMIN_CLIENT_ID || nodes.is_empty() || nodes.contains(&client))
}

/// The membership as `raft`'s metrics report it.
pub(crate) fn view(raft: &RaftNode) -> MembershipView {
    let m = raft.metrics();
    let m = m.borrow();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let mut view = MembershipView {
        leader: m.current_leader,
        config_index: m.membership_config.log_id().map(|l| l.index),
        ..Default::default()
    };
    for (id, node) in membership.nodes() {
        let side = if voters.contains(id) {
            &mut view.voters
        } else {
            &mut view.learners
        };
        side.insert(*id, node.addr.clone());
    }
    view
}

/// Runs `op` on this node, which must be the leader (the server checks). `peers` reaches a
/// node being added, to check that it is waiting to join.
pub(crate) async fn run_on_leader(
    raft: &RaftNode,
    peers: &Peers,
    op: AdminOp,
) -> Result<MembershipView, String> {
    match op {
        AdminOp::Show => Ok(view(raft)),
        AdminOp::AddNode {
            id,
            addr,
            catch_up_ms,
        } => add_node(raft, peers, id, addr, Duration::from_millis(catch_up_ms)).await,
        AdminOp::RemoveNode { id } => remove_node(raft, id).await,
    }
}

/// How long the leader waits for a node being added to say what it knows.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks node `id` at `addr` for its membership view and refuses to add it unless it is waiting
/// to join (it knows no membership) or already belongs to this cluster (it lists `leader`). A
/// node started without `join = true` has formed a cluster of its own, and its log and backend
/// must not be mixed into this one; an address that does not answer is most likely a typo.
async fn check_joiner(peers: &Peers, leader: u64, id: u64, addr: &str) -> Result<(), String> {
    let req = PeerRequest::Admin(AdminRequest {
        op: AdminOp::Show,
        forwarded: true,
    });
    let theirs = match peers.call(id, addr, &req, PROBE_TIMEOUT).await {
        Ok(PeerResponse::Admin(Ok(v))) => v,
        Ok(PeerResponse::Admin(Err(e))) => return Err(format!("node {id} at {addr}: {e}")),
        Ok(_) => return Err(format!("node {id} at {addr} answered out of protocol")),
        Err(e) => {
            return Err(format!(
                "cannot reach node {id} at {addr} ({e}); start it with join = true first"
            ))
        }
    };
    joinable(&theirs, leader).map_err(|why| format!("node {id} at {addr} {why}"))
}

/// The rule of `check_joiner`, pure.
pub(crate) fn joinable(theirs: &MembershipView, leader: u64) -> Result<(), String> {
    let knows_none = theirs.voters.is_empty() && theirs.learners.is_empty();
    let ours = theirs.voters.contains_key(&leader) || theirs.learners.contains_key(&leader);
    if knows_none || ours {
        Ok(())
    } else {
        Err(format!(
            "already belongs to another cluster (voters {:?}); it was not started with \
             join = true: wipe its data dir and start it with join = true",
            theirs.voters.keys().collect::<Vec<_>>()
        ))
    }
}

fn check_node_id(id: u64) -> Result<(), String> {
    if id == 0 || id > 1000 {
        return Err(format!("node id must be between 1 and 1000, got {id}"));
    }
    Ok(())
}

async fn add_node(
    raft: &RaftNode,
    peers: &Peers,
    id: u64,
    addr: String,
    catch_up: Duration,
) -> Result<MembershipView, String> {
    check_node_id(id)?;
    if addr.trim().is_empty() {
        return Err("the new node's peer address is empty".into());
    }
    let current = view(raft);
    if let Some(known) = current.voters.get(&id).or(current.learners.get(&id)) {
        if *known != addr {
            return Err(format!(
                "node {id} is already a member at {known}; remove it first to change its address"
            ));
        }
        if current.voters.contains_key(&id) {
            return Ok(current);
        }
    }
    let leader = raft.metrics().borrow().id;
    check_joiner(peers, leader, id, &addr).await?;
    tracing::info!(node = id, %addr, "membership: adding a learner");
    let added = timeout(
        CHANGE_TIMEOUT,
        raft.add_learner(id, BasicNode::new(addr), false),
    )
    .await
    .map_err(|_| format!("adding node {id} as a learner did not commit within {CHANGE_TIMEOUT:?}"))?
    .map_err(|e| format!("adding node {id} as a learner: {e}"))?;
    wait_caught_up(raft, id, added.log_id.index, catch_up).await?;
    tracing::info!(
        node = id,
        "membership: learner caught up; promoting it to voter"
    );
    change(raft, ChangeMembers::AddVoterIds([id].into()), false, id).await
}

/// Waits until the leader has replicated its log to learner `id`, up to at least the entry
/// that added it and to within `CATCH_UP_LAG` entries of the leader's last one.
async fn wait_caught_up(
    raft: &RaftNode,
    id: u64,
    added_at: u64,
    limit: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        let progress = {
            let m = raft.metrics();
            let m = m.borrow();
            let Some(replication) = m.replication.as_ref() else {
                return Err(format!(
                    "this node lost leadership while node {id} was catching up; it stays a \
                     learner: run add-node again or remove-node"
                ));
            };
            let matched = replication.get(&id).copied().flatten().map(|l| l.index);
            (matched, m.last_log_index.unwrap_or(0))
        };
        if let (Some(matched), last) = progress {
            if caught_up(matched, added_at, last) {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "node {id} did not catch up within {limit:?} (replicated up to {:?} of {}); it \
                 stays a learner: check that it runs with join = true and reaches the leader, \
                 then run add-node again, or remove-node",
                progress.0, progress.1
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The catch-up rule, pure: replicated past the entry that added the learner, and close to the
/// leader's last entry.
pub(crate) fn caught_up(matched: u64, added_at: u64, leader_last: u64) -> bool {
    matched >= added_at && leader_last.saturating_sub(matched) <= CATCH_UP_LAG
}

/// Removes node `id`. A voter is first demoted to learner, so that it receives, through the
/// log, the membership that no longer counts it (a node cut off at once would keep the joint
/// configuration, still believe it votes, and campaign for ever); then it is dropped from the
/// learners. Dropping a learner waits (bounded) until it has the membership entry in effect.
///
/// A leader that removes itself steps down once the demotion commits; the second step then
/// runs on the next leader (the server retries it there) and this returns the demoted view.
async fn remove_node(raft: &RaftNode, id: u64) -> Result<MembershipView, String> {
    check_node_id(id)?;
    let current = view(raft);
    if current.voters.contains_key(&id) {
        if current.voters.len() == 1 {
            return Err(format!("node {id} is the last voter; it cannot be removed"));
        }
        tracing::info!(node = id, "membership: demoting a voter to learner");
        change(raft, ChangeMembers::RemoveVoters([id].into()), true, id).await?;
    } else if !current.learners.contains_key(&id) {
        return Ok(current);
    }
    let Some(config_index) = leader_config_index(raft) else {
        // This node removed itself and stepped down: the next leader finishes.
        return Ok(view(raft));
    };
    if let Err(e) = wait_replicated(raft, id, config_index, DEMOTION_NOTICE).await {
        tracing::warn!(node = id, "removing a node that may not know it: {e}");
    }
    tracing::info!(node = id, "membership: removing a learner");
    change(raft, ChangeMembers::RemoveNodes([id].into()), false, id).await
}

/// How long the leader tries to tell a node being removed that it no longer votes.
const DEMOTION_NOTICE: Duration = Duration::from_secs(10);

/// The log index of the membership in effect, when this node leads.
fn leader_config_index(raft: &RaftNode) -> Option<u64> {
    let m = raft.metrics();
    let m = m.borrow();
    m.replication.as_ref()?;
    Some(m.membership_config.log_id().map_or(0, |l| l.index))
}

/// Waits until the leader has replicated its log to `id` up to `index`.
async fn wait_replicated(
    raft: &RaftNode,
    id: u64,
    index: u64,
    limit: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        let matched = {
            let m = raft.metrics();
            let m = m.borrow();
            let Some(replication) = m.replication.as_ref() else {
                return Err("this node is no longer the leader".into());
            };
            replication.get(&id).copied().flatten().map(|l| l.index)
        };
        if matched.is_some_and(|m| m >= index) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "node {id} has not received entry {index} within {limit:?} (it has {matched:?})"
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn change(
    raft: &RaftNode,
    changes: ChangeMembers<u64, BasicNode>,
    retain: bool,
    id: u64,
) -> Result<MembershipView, String> {
    let changed: Result<_, _> = timeout(CHANGE_TIMEOUT, raft.change_membership(changes, retain))
        .await
        .map_err(|_| {
            format!(
                "the membership change for node {id} did not commit within {CHANGE_TIMEOUT:?}; \
                 its outcome is unknown: check with `certus cluster members`"
            )
        })?;
    changed.map_err(|e| format!("membership change for node {id}: {e}"))?;
    Ok(view(raft))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pristine_joiner_admits_any_authenticated_peer_and_members_only_members() {
        let none = BTreeSet::new();
        assert!(admits(&none, 4, 1));
        assert!(!admits(&none, 4, 4), "never itself");
        let members: BTreeSet<u64> = [1, 2, 3, 4].into();
        assert!(admits(&members, 1, 4));
        assert!(
            !admits(&members, 1, 5),
            "a removed or unknown node is refused"
        );
        assert!(admits(&members, 1, ADMIN_CLIENT_ID));
    }

    #[test]
    fn a_learner_is_caught_up_past_its_entry_and_near_the_leader() {
        assert!(!caught_up(10, 20, 20), "not yet at the entry that added it");
        assert!(caught_up(20, 20, 20));
        assert!(caught_up(100, 20, 100 + CATCH_UP_LAG));
        assert!(!caught_up(100, 20, 101 + CATCH_UP_LAG));
    }

    #[test]
    fn only_a_waiting_joiner_or_one_of_ours_may_be_added() {
        let waiting = MembershipView::default();
        assert!(joinable(&waiting, 1).is_ok());
        let ours = MembershipView {
            voters: [(1, "a".into()), (2, "b".into())].into(),
            learners: [(4, "d".into())].into(),
            ..Default::default()
        };
        assert!(
            joinable(&ours, 1).is_ok(),
            "re-running add-node for our learner"
        );
        let own_cluster = MembershipView {
            voters: [(4, "d".into())].into(),
            ..Default::default()
        };
        let err = joinable(&own_cluster, 1).unwrap_err();
        assert!(err.contains("join = true"), "{err}");
    }

    #[test]
    fn admin_ops_round_trip_through_the_wire_codec() {
        let req = PeerRequest::Admin(AdminRequest {
            op: AdminOp::AddNode {
                id: 4,
                addr: "127.0.0.1:1".into(),
                catch_up_ms: 5,
            },
            forwarded: true,
        });
        let bytes = super::super::types::encode(&req).unwrap();
        match super::super::types::decode::<PeerRequest>(&bytes).unwrap() {
            PeerRequest::Admin(r) => {
                assert!(r.forwarded);
                assert!(matches!(r.op, AdminOp::AddNode { id: 4, .. }));
            }
            _ => panic!("wrong variant"),
        }
    }
}
