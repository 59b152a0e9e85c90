//! The peer RPC server: accepts peers on a bound listener, authenticates them, dispatches.
//!
//! Owns: the accept loop and one task per authenticated connection. Must not touch: outbound
//! connections (`network`), batching decisions (`batcher`), storage.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::timeout;

use super::batcher::BatcherHandle;
use super::error::{ProposeError, ReadIndexError};
use super::network::{
    accept_handshake, read_frame, write_frame, PeerRequest, PeerResponse, HANDSHAKE_TIMEOUT,
};
use super::stopped;
use super::types::RaftNode;

/// A pooled peer connection that stays silent this long is closed; the client side notices at
/// its next checkout and reconnects.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

pub(crate) struct ServerCtx {
    pub(crate) self_id: u64,
    pub(crate) secret: Arc<[u8]>,
    pub(crate) members: Vec<u64>,
    pub(crate) raft: RaftNode,
    pub(crate) batcher: BatcherHandle,
    pub(crate) propose_timeout: Duration,
    pub(crate) gossip: Option<super::GossipHandler>,
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
    let members = ctx.members.clone();
    let peer = match timeout(
        HANDSHAKE_TIMEOUT,
        accept_handshake(&mut stream, &ctx.secret, ctx.self_id, |id| {
            members.contains(&id)
        }),
    )
    .await
    {
        Ok(Ok(peer)) => peer,
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
        let resp = dispatch(&ctx, peer, req).await;
        write_frame(&mut stream, &resp).await?;
    }
}

async fn dispatch(ctx: &ServerCtx, peer: u64, req: PeerRequest) -> PeerResponse {
    match req {
        PeerRequest::AppendEntries(rpc) => {
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
        PeerRequest::Gossip(bytes) => PeerResponse::Gossip(
            ctx.gossip
                .as_ref()
                .map(|answer| answer(crate::ids::NodeId(peer), bytes))
                .unwrap_or_default(),
        ),
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
