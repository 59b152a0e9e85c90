//! Peer RPC: length-prefixed bincode frames over TCP, authenticated by the cluster secret.
//!
//! Owns: the wire messages, framing, the HMAC-SHA256 challenge-response, the pool of reusable
//! outbound connections, and openraft's `RaftNetwork` adapter over them. Must not touch: what
//! the server does with a request (that is `server`), the log, the state machine.
//!
//! Handshake (both sides prove the secret; no frame is parsed before it succeeds):
//! 1. server -> client: `MAGIC` (8 bytes) | server nonce (32)
//! 2. client -> server: client node id (u64 LE) | client nonce (32) |
//!    HMAC(secret, "certus-peer-v1 client" | server nonce | client nonce | client id)
//! 3. server -> client: server node id (u64 LE) |
//!    HMAC(secret, "certus-peer-v1 server" | server nonce | client nonce | client id | server id)
//!
//! A server that cannot verify step 2 closes the connection without a reply. Fresh nonces on
//! both sides keep a recorded handshake from being replayed in either direction. The secret
//! authenticates the peer; it does not encrypt the stream (TLS is a later, separate layer).
//!
//! The operator's `certus cluster` commands use the same handshake with the reserved client id
//! `ADMIN_CLIENT_ID` (0; node ids start at 1): they prove the secret like a peer, and the
//! server then accepts only membership requests from them.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::error::{ProposeError, ReadIndexError};
use super::membership::{AdminRequest, MembershipView};
use super::peer_info::PeerIdentity;
use super::types::{decode, encode, Position, TypeConfig};

pub(crate) const MAGIC: &[u8; 8] = b"CERTUSP1";
const NONCE_LEN: usize = 32;
const MAC_LEN: usize = 32;
/// Above the largest batch plus openraft's framing; a bigger length is a protocol violation.
pub(crate) const MAX_FRAME: usize = 512 * 1024 * 1024;
const MAX_IDLE_PER_PEER: usize = 8;
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// The client id of an operator's admin connection (`certus cluster ...`); never a node id.
pub(crate) const ADMIN_CLIENT_ID: u64 = 0;

type HmacSha256 = Hmac<Sha256>;

#[derive(Serialize, Deserialize)]
pub(crate) enum PeerRequest {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<u64>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// Proposals a follower forwards to the leader; answered with the first one's position.
    Forward(Vec<Vec<u8>>),
    ReadIndex,
    /// Who are you (`peer_info`); sent by a node that is starting.
    Identify,
    /// The caller is stopping cleanly at this position (`peer_info::last_to_leave`).
    Leaving(PeerIdentity),
    /// A node's status gossip (applied seqno, apply queue, ...): opaque to this layer, handed to
    /// the node's gossip sink (`ReplicationConfig::gossip_sink`).
    Gossip(Vec<u8>),
    /// A membership change or query, from an operator or forwarded by a peer to the leader.
    Admin(AdminRequest),
}

#[derive(Serialize, Deserialize)]
pub(crate) enum PeerResponse {
    AppendEntries(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    InstallSnapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    Forward(Result<Position, ProposeError>),
    ReadIndex(Result<u64, ReadIndexError>),
    Identify(PeerIdentity),
    /// The receiver's own identity, after recording the caller's departure.
    Leaving(PeerIdentity),
    Gossip,
    Admin(Result<MembershipView, String>),
}

/// Why a call failed, split by whether the request may have reached the peer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// Connect, handshake or write of the request failed: the peer never acted on it.
    #[error("not sent to node {target}: {reason}")]
    NotSent { target: u64, reason: String },
    /// The request was written; the answer never came (timeout, reset, bad frame).
    #[error("no answer from node {target}: {reason}")]
    Lost { target: u64, reason: String },
    /// The encoded request is above `MAX_FRAME`; nothing was sent.
    #[error("{reason}")]
    TooLarge { reason: String },
}

fn mac(secret: &[u8], parts: &[&[u8]]) -> io::Result<HmacSha256> {
    // HMAC takes keys of any length; the error exists only for fixed-key MACs.
    let mut m = HmacSha256::new_from_slice(secret)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    for p in parts {
        m.update(p);
    }
    Ok(m)
}

fn client_mac(secret: &[u8], ns: &[u8], nc: &[u8], client: u64) -> io::Result<HmacSha256> {
    mac(
        secret,
        &[b"certus-peer-v1 client", ns, nc, &client.to_le_bytes()],
    )
}

fn server_mac(
    secret: &[u8],
    ns: &[u8],
    nc: &[u8],
    client: u64,
    server: u64,
) -> io::Result<HmacSha256> {
    mac(
        secret,
        &[
            b"certus-peer-v1 server",
            ns,
            nc,
            &client.to_le_bytes(),
            &server.to_le_bytes(),
        ],
    )
}

/// Server side of the handshake. Returns the authenticated client's node id.
pub(crate) async fn accept_handshake(
    stream: &mut TcpStream,
    secret: &[u8],
    self_id: u64,
    is_member: impl Fn(u64) -> bool,
) -> io::Result<u64> {
    let ns: [u8; NONCE_LEN] = rand::random();
    let mut hello = Vec::with_capacity(MAGIC.len() + NONCE_LEN);
    hello.extend_from_slice(MAGIC);
    hello.extend_from_slice(&ns);
    stream.write_all(&hello).await?;
    let mut buf = [0u8; 8 + NONCE_LEN + MAC_LEN];
    stream.read_exact(&mut buf).await?;
    let mut id = [0u8; 8];
    id.copy_from_slice(&buf[..8]);
    let client = u64::from_le_bytes(id);
    let nc = &buf[8..8 + NONCE_LEN];
    let their_mac = &buf[8 + NONCE_LEN..];
    client_mac(secret, &ns, nc, client)?
        .verify_slice(their_mac)
        .map_err(|_| io::Error::new(io::ErrorKind::PermissionDenied, "bad peer credentials"))?;
    if !is_member(client) || client == self_id {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("node {client} is not a peer of this cluster"),
        ));
    }
    let mut reply = Vec::with_capacity(8 + MAC_LEN);
    reply.extend_from_slice(&self_id.to_le_bytes());
    reply.extend_from_slice(
        &server_mac(secret, &ns, nc, client, self_id)?
            .finalize()
            .into_bytes(),
    );
    stream.write_all(&reply).await?;
    Ok(client)
}

/// Client side of the handshake; fails unless the server proves the secret and, when `target`
/// is given, is that node. Returns the server's node id.
pub(crate) async fn connect_handshake(
    stream: &mut TcpStream,
    secret: &[u8],
    self_id: u64,
    target: Option<u64>,
) -> io::Result<u64> {
    let mut hello = [0u8; MAGIC.len() + NONCE_LEN];
    stream.read_exact(&mut hello).await?;
    if &hello[..MAGIC.len()] != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a certus peer",
        ));
    }
    let ns = &hello[MAGIC.len()..];
    let nc: [u8; NONCE_LEN] = rand::random();
    let mut msg = Vec::with_capacity(8 + NONCE_LEN + MAC_LEN);
    msg.extend_from_slice(&self_id.to_le_bytes());
    msg.extend_from_slice(&nc);
    msg.extend_from_slice(
        &client_mac(secret, ns, &nc, self_id)?
            .finalize()
            .into_bytes(),
    );
    stream.write_all(&msg).await?;
    let mut reply = [0u8; 8 + MAC_LEN];
    stream.read_exact(&mut reply).await?;
    let mut id = [0u8; 8];
    id.copy_from_slice(&reply[..8]);
    let server = u64::from_le_bytes(id);
    server_mac(secret, ns, &nc, self_id, server)?
        .verify_slice(&reply[8..])
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                "peer failed to prove the cluster secret",
            )
        })?;
    match target {
        Some(target) if server != target => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("expected node {target}, reached node {server}"),
        )),
        _ => Ok(server),
    }
}

/// Encodes one frame (length prefix included). Fails on encode errors and oversize frames.
pub(crate) fn encode_frame<T: Serialize>(msg: &T) -> io::Result<Vec<u8>> {
    let payload = encode(msg).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    if payload.len() > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("frame of {} bytes above the maximum", payload.len()),
        ));
    }
    let mut buf = Vec::with_capacity(4 + payload.len());
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&payload);
    Ok(buf)
}

pub(crate) async fn write_frame<T: Serialize>(stream: &mut TcpStream, msg: &T) -> io::Result<()> {
    let buf = encode_frame(msg)?;
    stream.write_all(&buf).await
}

pub(crate) async fn read_frame<T: serde::de::DeserializeOwned>(
    stream: &mut TcpStream,
) -> io::Result<T> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame above the maximum size",
        ));
    }
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await?;
    decode(&payload).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Outbound connections to peers, shared by the Raft network and forwarding. A connection is
/// returned to the pool only after a complete request/response, so a pooled connection never
/// has a half-read answer in it.
pub(crate) struct Peers {
    self_id: u64,
    secret: Arc<[u8]>,
    connect_timeout: Duration,
    /// Local address outbound peer connections bind to, so that a relay in front of a peer can
    /// tell which node is calling (the jepsen suite partitions links that way).
    source_ip: Option<std::net::IpAddr>,
    idle: Mutex<HashMap<u64, Vec<TcpStream>>>,
    /// When each peer last answered a request: the leader counts a follower as live for the log
    /// purge bound only while it answers.
    last_answer: Mutex<HashMap<u64, std::time::Instant>>,
    /// While a snapshot is being streamed to a peer this node is a donor (until this instant).
    donor_until: Mutex<Option<std::time::Instant>>,
}

/// How long after its last chunk a snapshot transfer still counts as running (the leader may
/// pause between chunks while the follower writes them).
const DONOR_LINGER: Duration = Duration::from_secs(5);

impl Peers {
    /// Whether `target` answered a request within `window`.
    pub(crate) fn answered_within(&self, target: u64, window: Duration) -> bool {
        self.last_answer
            .lock()
            .ok()
            .and_then(|m| m.get(&target).map(|t| t.elapsed() < window))
            .unwrap_or(false)
    }

    /// Whether this node is streaming a snapshot to a peer (Galera's Donor state).
    pub(crate) fn is_donor(&self) -> bool {
        self.donor_until
            .lock()
            .ok()
            .and_then(|d| d.map(|until| std::time::Instant::now() < until))
            .unwrap_or(false)
    }

    fn note_snapshot_chunk(&self, done: bool) {
        if let Ok(mut d) = self.donor_until.lock() {
            *d = if done {
                None
            } else {
                Some(std::time::Instant::now() + DONOR_LINGER)
            };
        }
    }

    pub(crate) fn new(
        self_id: u64,
        secret: Arc<[u8]>,
        connect_timeout: Duration,
        source_ip: Option<std::net::IpAddr>,
    ) -> Self {
        Peers {
            self_id,
            secret,
            connect_timeout,
            source_ip,
            idle: Mutex::new(HashMap::new()),
            last_answer: Mutex::new(HashMap::new()),
            donor_until: Mutex::new(None),
        }
    }

    fn take_idle(&self, target: u64) -> Option<TcpStream> {
        let mut idle = self.idle.lock().ok()?;
        let conns = idle.get_mut(&target)?;
        while let Some(conn) = conns.pop() {
            // A peer that restarted or timed us out has closed its end: readable-with-EOF (or an
            // error) means dead; WouldBlock means alive and idle, as it should be.
            let mut probe = [0u8; 1];
            match conn.try_read(&mut probe) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(conn),
                _ => continue,
            }
        }
        None
    }

    fn put_idle(&self, target: u64, conn: TcpStream) {
        if let Ok(mut idle) = self.idle.lock() {
            let conns = idle.entry(target).or_default();
            if conns.len() < MAX_IDLE_PER_PEER {
                conns.push(conn);
            }
        }
    }

    /// Drops every pooled connection (at shutdown, and to simulate a crash in tests).
    pub(crate) fn clear(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    async fn connect(&self, target: u64, addr: &str) -> io::Result<TcpStream> {
        let fut = async {
            let mut stream = match self.source_ip {
                None => TcpStream::connect(addr).await?,
                Some(ip) => {
                    let target = tokio::net::lookup_host(addr).await?.next().ok_or_else(|| {
                        io::Error::new(io::ErrorKind::NotFound, "peer address resolves to nothing")
                    })?;
                    let socket = if target.is_ipv4() {
                        tokio::net::TcpSocket::new_v4()?
                    } else {
                        tokio::net::TcpSocket::new_v6()?
                    };
                    socket.bind(std::net::SocketAddr::new(ip, 0))?;
                    socket.connect(target).await?
                }
            };
            stream.set_nodelay(true)?;
            timeout(
                HANDSHAKE_TIMEOUT,
                connect_handshake(&mut stream, &self.secret, self.self_id, Some(target)),
            )
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "handshake timed out"))??;
            Ok(stream)
        };
        timeout(self.connect_timeout + HANDSHAKE_TIMEOUT, fut)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
    }

    /// One request/response to `target`, bounded by `ttl` once the request is written.
    pub(crate) async fn call(
        &self,
        target: u64,
        addr: &str,
        req: &PeerRequest,
        ttl: Duration,
    ) -> Result<PeerResponse, CallError> {
        // Encode before connecting: an oversized or unencodable request never touches a socket.
        let frame = encode_frame(req).map_err(|e| frame_error(target, e))?;
        self.call_frame(target, addr, &frame, ttl).await
    }

    /// `call` with the request already encoded by `encode_frame`.
    pub(crate) async fn call_frame(
        &self,
        target: u64,
        addr: &str,
        frame: &[u8],
        ttl: Duration,
    ) -> Result<PeerResponse, CallError> {
        let not_sent = |e: io::Error| CallError::NotSent {
            target,
            reason: e.to_string(),
        };
        let mut conn = match self.take_idle(target) {
            Some(c) => c,
            None => self.connect(target, addr).await.map_err(not_sent)?,
        };
        timeout(ttl, conn.write_all(frame))
            .await
            .map_err(|_| CallError::Lost {
                target,
                reason: "timed out writing the request".into(),
            })?
            .map_err(|e| CallError::Lost {
                target,
                reason: e.to_string(),
            })?;
        let resp = timeout(ttl, read_frame::<PeerResponse>(&mut conn))
            .await
            .map_err(|_| CallError::Lost {
                target,
                reason: format!("no answer within {ttl:?}"),
            })?
            .map_err(|e| CallError::Lost {
                target,
                reason: e.to_string(),
            })?;
        self.put_idle(target, conn);
        if let Ok(mut m) = self.last_answer.lock() {
            m.insert(target, std::time::Instant::now());
        }
        Ok(resp)
    }
}

fn frame_error(target: u64, e: io::Error) -> CallError {
    match e.kind() {
        io::ErrorKind::FileTooLarge => CallError::TooLarge {
            reason: e.to_string(),
        },
        _ => CallError::NotSent {
            target,
            reason: e.to_string(),
        },
    }
}

/// openraft's network factory: one `PeerClient` per target, all sharing the pool.
#[derive(Clone)]
pub(crate) struct Network {
    pub(crate) peers: Arc<Peers>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        PeerClient {
            target,
            addr: node.addr.clone(),
            peers: self.peers.clone(),
        }
    }
}

pub(crate) struct PeerClient {
    target: u64,
    addr: String,
    peers: Arc<Peers>,
}

#[derive(Debug, thiserror::Error)]
#[error("unexpected response type from node {0}")]
struct UnexpectedResponse(u64);

impl PeerClient {
    async fn call<E: std::error::Error>(
        &self,
        req: PeerRequest,
        option: &RPCOption,
    ) -> Result<PeerResponse, RPCError<u64, BasicNode, E>> {
        let frame = encode_frame(&req)
            .map_err(|e| RPCError::Network(NetworkError::new(&frame_error(self.target, e))))?;
        self.call_frame(&frame, option).await
    }

    async fn call_frame<E: std::error::Error>(
        &self,
        frame: &[u8],
        option: &RPCOption,
    ) -> Result<PeerResponse, RPCError<u64, BasicNode, E>> {
        // openraft uses the heartbeat interval as the AppendEntries timeout (hard_ttl); a
        // follower answers only after its fsync, hence the heartbeat floor in the config.
        self.peers
            .call_frame(self.target, &self.addr, frame, option.hard_ttl())
            .await
            .map_err(|e| match e {
                // Unreachable makes openraft back off before retrying: right for a peer that is
                // down, wrong for one that was merely slow, which is a NetworkError.
                CallError::NotSent { .. } => RPCError::Unreachable(Unreachable::new(&e)),
                CallError::Lost { .. } | CallError::TooLarge { .. } => {
                    RPCError::Network(NetworkError::new(&e))
                }
            })
    }

    fn unexpected<E: std::error::Error>(&self) -> RPCError<u64, BasicNode, E> {
        RPCError::Network(NetworkError::new(&UnexpectedResponse(self.target)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let entries = rpc.entries.len() as u64;
        let frame = match encode_frame(&PeerRequest::AppendEntries(rpc)) {
            Ok(f) => f,
            // Too large for one frame: openraft retries with fewer entries. Without this a
            // burst of big batches would stall replication to that peer forever.
            Err(e) if e.kind() == io::ErrorKind::FileTooLarge && entries > 1 => {
                let hint = (entries / 2).max(1);
                return Err(RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint(hint),
                ));
            }
            Err(e) => {
                return Err(RPCError::Network(NetworkError::new(&frame_error(
                    self.target,
                    e,
                ))))
            }
        };
        match self.call_frame(&frame, &option).await? {
            PeerResponse::AppendEntries(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(self.unexpected()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        let done = rpc.done;
        self.peers.note_snapshot_chunk(false);
        let answer = self.call(PeerRequest::InstallSnapshot(rpc), &option).await;
        if done || answer.is_err() {
            // Finished, or failed: openraft starts over with a fresh transfer if it must.
            self.peers.note_snapshot_chunk(true);
        }
        match answer? {
            PeerResponse::InstallSnapshot(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(self.unexpected()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        match self.call(PeerRequest::Vote(rpc), &option).await? {
            PeerResponse::Vote(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(self.unexpected()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
        (c.unwrap(), s.unwrap().0)
    }

    #[tokio::test]
    async fn handshake_succeeds_with_the_same_secret() {
        let (mut c, mut s) = pair().await;
        let secret = b"0123456789abcdef-secret";
        let (cr, sr) = tokio::join!(
            connect_handshake(&mut c, secret, 2, Some(1)),
            accept_handshake(&mut s, secret, 1, |id| id == 2 || id == 3)
        );
        assert_eq!(cr.unwrap(), 1);
        assert_eq!(sr.unwrap(), 2);
    }

    #[tokio::test]
    async fn handshake_rejects_a_wrong_secret_and_the_client_learns_nothing() {
        let (mut c, mut s) = pair().await;
        let (cr, sr) = tokio::join!(
            connect_handshake(&mut c, b"wrong-secret-wrong-secret", 2, Some(1)),
            async {
                let r = accept_handshake(&mut s, b"0123456789abcdef-secret", 1, |_| true).await;
                drop(s); // the server drops the connection without a reply
                r
            }
        );
        assert_eq!(sr.unwrap_err().kind(), io::ErrorKind::PermissionDenied);
        assert!(cr.is_err());
    }

    #[tokio::test]
    async fn handshake_rejects_a_server_that_is_not_the_target() {
        let (mut c, mut s) = pair().await;
        let secret = b"0123456789abcdef-secret";
        let (cr, _) = tokio::join!(
            connect_handshake(&mut c, secret, 2, Some(3)),
            accept_handshake(&mut s, secret, 1, |_| true)
        );
        assert_eq!(cr.unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn oversized_frame_is_refused_before_allocation() {
        let (mut c, mut s) = pair().await;
        c.write_all(&((MAX_FRAME as u32) + 1).to_le_bytes())
            .await
            .unwrap();
        let r = read_frame::<PeerRequest>(&mut s).await;
        assert_eq!(r.err().map(|e| e.kind()), Some(io::ErrorKind::InvalidData));
    }
}
