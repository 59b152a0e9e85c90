//! The peer RPC server: accepts peers on a bound listener, authenticates them, dispatches.
//!
//! Owns: the accept loop and one task per authenticated connection, and routing admin
//! (membership) requests to the leader. Must not touch: outbound connections (`network`),
//! batching decisions (`batcher`), storage.
//!
//! Who may connect is decided per connection from the Raft membership in effect
//! (`membership::admits`), so nodes added or removed online are admitted or refused at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::timeout;

use super::batcher::BatcherHandle;
use super::error::{ProposeError, ReadIndexError};
use super::membership::{self, AdminOp, AdminRequest, MembershipView};
use super::network::{
    accept_handshake, read_frame, write_frame, PeerRequest, PeerResponse, Peers, ADMIN_CLIENT_ID,
    HANDSHAKE_TIMEOUT,
};
use super::peer_info::LocalIdentity;
use super::stopped;
use super::types::RaftNode;

/// A pooled peer connection that stays silent this long is closed; the client side notices at
/// its next checkout and reconnects.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

pub(crate) struct ServerCtx {
    pub(crate) self_id: u64,
    pub(crate) secret: Arc<[u8]>,
    pub(crate) raft: RaftNode,
    /// For forwarding admin requests to the leader.
    pub(crate) peers: Arc<Peers>,
    pub(crate) batcher: BatcherHandle,
    pub(crate) propose_timeout: Duration,
    pub(crate) identity: Arc<LocalIdentity>,
    pub(crate) gossip: Option<super::GossipSink>,
}

/// Runs until `shutdown` turns true; then every connection task is dropped with the JoinSet.
pub(crate) async fn serve(
    listener: TcpListener,
    ctx: Arc<ServerCtx>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let ctx = ctx.clone();
                    conns.spawn(async move {
                        if let Err(e) = handle(stream, ctx).await {
                            tracing::debug!(%peer, error = %e, "peer connection closed");
                        }
                    });
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning on accept.
                    tracing::warn!(error = %e, "peer accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = stopped(&mut shutdown) => break,
        }
        while conns.try_join_next().is_some() {}
    }
}

async fn handle(mut stream: TcpStream, ctx: Arc<ServerCtx>) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    // Any node that proves the secret may ask who we are (a new member learns the cluster uuid
    // before it is added); what else it may send is decided per request from the membership in
    // effect (`admitted`), so nodes added or removed online are admitted or refused at once.
    let peer = match timeout(
        HANDSHAKE_TIMEOUT,
        accept_handshake(&mut stream, &ctx.secret, ctx.self_id, |_| true),
    )
    .await
    {
        Ok(Ok(peer)) => peer,
        // A caller that closed before it said anything gave up on its own (a start-up query
        // that timed out while this node was not yet serving, then accepted from the
        // backlog): not worth a warning. A wrong secret or a bad frame is.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            tracing::debug!(error = %e, "peer closed before authenticating");
            return Ok(());
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "peer rejected during authentication");
            return Err(e);
        }
        Err(_) => {
            tracing::warn!("peer authentication timed out");
            return Ok(());
        }
    };
    loop {
        let req: PeerRequest = match timeout(IDLE_TIMEOUT, read_frame(&mut stream)).await {
            Ok(r) => r?,
            Err(_) => return Ok(()),
        };
        if !admitted(&ctx, peer, &req) {
            tracing::warn!(
                peer,
                "a node that is not a member (or an admin connection) sent a peer request; closing"
            );
            return Ok(());
        }
        let resp = dispatch(&ctx, peer, req).await;
        write_frame(&mut stream, &resp).await?;
    }
}

async fn dispatch(ctx: &ServerCtx, peer: u64, req: PeerRequest) -> PeerResponse {
    match req {
        PeerRequest::AppendEntries(rpc) => {
            ctx.identity.note_append_entries();
            PeerResponse::AppendEntries(ctx.raft.append_entries(rpc).await)
        }
        PeerRequest::Vote(rpc) => PeerResponse::Vote(ctx.raft.vote(rpc).await),
        PeerRequest::InstallSnapshot(rpc) => {
            PeerResponse::InstallSnapshot(ctx.raft.install_snapshot(rpc).await)
        }
        PeerRequest::Forward(proposals) => {
            tracing::trace!(peer, n = proposals.len(), "forwarded proposals");
            // The forwarder waits at most its own propose timeout; do not outlive it.
            let submitted = timeout(ctx.propose_timeout, ctx.batcher.submit(proposals, true)).await;
            PeerResponse::Forward(submitted.unwrap_or_else(|_| {
                Err(ProposeError::Indeterminate(
                    "leader did not commit in time".into(),
                ))
            }))
        }
        PeerRequest::ReadIndex => PeerResponse::ReadIndex(local_read_index(&ctx.raft).await),
        PeerRequest::Identify => {
            ctx.identity.peer_started(peer);
            PeerResponse::Identify(ctx.identity.current(&ctx.raft))
        }
        PeerRequest::Leaving(who) => {
            if who.node_id == peer {
                tracing::info!(peer, position = %who.describe_position(), "peer is stopping cleanly");
                ctx.identity.peer_left(who);
            }
            PeerResponse::Leaving(ctx.identity.current(&ctx.raft))
        }
        PeerRequest::Gossip(bytes) => {
            if let Some(sink) = &ctx.gossip {
                sink(crate::ids::NodeId(peer), &bytes);
            }
            PeerResponse::Gossip
        }
        PeerRequest::Admin(req) => PeerResponse::Admin(admin(ctx, req).await),
    }
}

/// Whether `peer` may send `req`. `Identify` is open to anyone who proved the secret (a node
/// not yet added learns the cluster uuid with it); an admin connection may send only membership
/// requests; everything else needs membership in the Raft configuration in effect
/// (`membership::admits`), so a removed node that keeps campaigning cannot disturb the cluster.
fn admitted(ctx: &ServerCtx, peer: u64, req: &PeerRequest) -> bool {
    let member = || {
        let m = ctx.raft.metrics();
        let m = m.borrow();
        let nodes: std::collections::BTreeSet<u64> = m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect();
        membership::admits(&nodes, ctx.self_id, peer)
    };
    match req {
        PeerRequest::Identify => true,
        PeerRequest::Admin(_) => peer == ADMIN_CLIENT_ID || member(),
        _ => peer != ADMIN_CLIENT_ID && member(),
    }
}

/// Runs a membership request on the leader. A removal that demoted the leader itself ends on
/// the next leader: the request is routed again (a bounded number of times) until the node is
/// gone from the membership.
async fn admin(ctx: &ServerCtx, req: AdminRequest) -> Result<MembershipView, String> {
    let mut result = route_admin(ctx, req.clone()).await;
    if req.forwarded {
        return result;
    }
    let mut demoted = false;
    for _ in 0..ADMIN_REROUTES {
        // After a demotion, an error (no leader yet) is worth another try as well.
        let unfinished = match (&req.op, &result) {
            (AdminOp::RemoveNode { id }, Ok(view)) => view.learners.contains_key(id),
            (AdminOp::RemoveNode { .. }, Err(_)) => demoted,
            _ => false,
        };
        if !unfinished {
            break;
        }
        demoted = true;
        tokio::time::sleep(ADMIN_REROUTE_PAUSE).await;
        result = route_admin(ctx, req.clone()).await;
    }
    result
}

/// A new leader is elected within about one election timeout; these bound the wait for it.
const ADMIN_REROUTES: usize = 20;
const ADMIN_REROUTE_PAUSE: Duration = Duration::from_millis(500);

/// Runs a membership request on the leader: here when this node leads, otherwise forwarded
/// once to the leader it knows.
async fn route_admin(ctx: &ServerCtx, req: AdminRequest) -> Result<MembershipView, String> {
    let (leader, leader_addr) = super::leader_and_addr(&ctx.raft);
    match (leader, leader_addr) {
        _ if req.op == AdminOp::Show => Ok(membership::view(&ctx.raft)),
        (Some(l), _) if l == ctx.self_id => {
            membership::run_on_leader(&ctx.raft, &ctx.peers, req.op).await
        }
        _ if req.forwarded => Err(format!(
            "node {} is not the leader (it sees {leader:?}); retry",
            ctx.self_id
        )),
        (Some(l), Some(addr)) => {
            let ttl = req.op.time_bound();
            let forwarded = PeerRequest::Admin(AdminRequest {
                op: req.op,
                forwarded: true,
            });
            match ctx.peers.call(l, &addr, &forwarded, ttl).await {
                Ok(PeerResponse::Admin(r)) => r,
                Ok(_) => Err(format!("leader {l} answered out of protocol")),
                Err(e) => Err(format!("forwarding to leader {l}: {e}")),
            }
        }
        _ => Err(format!(
            "node {} knows no leader (no quorum?); retry",
            ctx.self_id
        )),
    }
}

/// The leader's linearizable read index: its committed index once it has confirmed with a
/// quorum that it is still the leader.
pub(crate) async fn local_read_index(raft: &RaftNode) -> Result<u64, ReadIndexError> {
    use openraft::error::{CheckIsLeaderError, RaftError};
    match raft.ensure_linearizable().await {
        Ok(log_id) => Ok(log_id.map_or(0, |l| l.index)),
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_))) => {
            Err(ReadIndexError::NoLeader)
        }
        Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e))) => {
            Err(ReadIndexError::Failed(e.to_string()))
        }
        Err(RaftError::Fatal(f)) => Err(ReadIndexError::Failed(f.to_string())),
    }
}
