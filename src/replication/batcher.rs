//! Proposal batching and forwarding to the leader.
//!
//! Owns: the queue of pending proposals, how they are grouped into Raft entries, forwarding
//! from followers, and the decision whether a failed proposal is definite or indeterminate.
//! Must not touch: the log or state machine (it only calls `Raft::client_write`), the wire
//! format (it only calls `Peers`).
//!
//! openraft 0.9 keeps about one log write in flight per node, so one proposal per entry caps
//! the cluster at the fsync rate. Proposals that arrive while `max_inflight` entries are being
//! committed wait in the queue and all go into the next entry. A follower batches the same way
//! and forwards the whole batch to the leader in one RPC; the leader's batcher merges forwarded
//! groups with its own proposals, keeping each group contiguous so that one position (the
//! group's first) describes all of it.
//!
//! Definite or indeterminate: `client_write` answers `ForwardToLeader` both when it refused the
//! entry (never appended) and when a new leader truncated it after it was appended. The
//! `AppendWatch` tells the two apart: the log store marks a batch of ours as soon as it reaches
//! our log, so "not marked" proves it never existed anywhere.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout_at, Instant};

use super::error::ProposeError;
use super::log_store::AppendWatch;
use super::network::{CallError, PeerRequest, PeerResponse, Peers};
use super::stopped;
use super::types::{Batch, Position, RaftNode};

/// Pause between attempts while there is no usable leader. Short against the 1–2 s election
/// timeout, long enough not to spin.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

pub(crate) struct Item {
    proposals: Vec<Vec<u8>>,
    /// Forwarded by a follower: never forwarded again (no loops between two stale views).
    forwarded: bool,
    reply: oneshot::Sender<Result<Position, ProposeError>>,
}

impl Item {
    fn bytes(&self) -> usize {
        self.proposals.iter().map(Vec::len).sum()
    }

    fn answer(self, result: Result<Position, ProposeError>) {
        // The proposer may have gone away; the outcome no longer has anyone to tell.
        let _ = self.reply.send(result);
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_batch_proposals: usize,
    pub(crate) max_batch_bytes: usize,
    pub(crate) max_inflight: usize,
    pub(crate) propose_timeout: Duration,
}

#[derive(Clone)]
pub(crate) struct BatcherHandle {
    tx: mpsc::Sender<Item>,
}

impl BatcherHandle {
    /// Queues a group of proposals and waits for the position of its first one.
    pub(crate) async fn submit(
        &self,
        proposals: Vec<Vec<u8>>,
        forwarded: bool,
    ) -> Result<Position, ProposeError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Item {
                proposals,
                forwarded,
                reply,
            })
            .await
            .map_err(|_| ProposeError::ShuttingDown)?;
        match rx.await {
            Ok(result) => result,
            // The batcher task was torn down while holding the item: it may have been submitted.
            Err(_) => Err(ProposeError::Indeterminate(
                "replication stopped while the proposal was in flight".into(),
            )),
        }
    }
}

pub(crate) struct Batcher {
    self_id: u64,
    raft: RaftNode,
    peers: Arc<Peers>,
    watch: AppendWatch,
    limits: Limits,
    next_batch_id: AtomicU64,
}

/// What a submission attempt left to do.
enum Attempt {
    Done,
    Retry(Vec<Item>),
}

impl Batcher {
    pub(crate) fn spawn(
        self_id: u64,
        raft: RaftNode,
        peers: Arc<Peers>,
        watch: AppendWatch,
        limits: Limits,
        shutdown: watch::Receiver<bool>,
    ) -> (BatcherHandle, tokio::task::JoinHandle<()>) {
        // Queue depth: a few full batches; beyond that proposers wait in `submit` (backpressure).
        let (tx, rx) = mpsc::channel(limits.max_batch_proposals.saturating_mul(4).max(64));
        let batcher = Arc::new(Batcher {
            self_id,
            raft,
            peers,
            watch,
            limits,
            // Random start: batch ids must not repeat across restarts while a stale entry of an
            // earlier run could still be re-appended to our log.
            next_batch_id: AtomicU64::new(rand::random::<u64>() >> 1),
        });
        let task = tokio::spawn(batcher.run(rx, shutdown));
        (BatcherHandle { tx }, task)
    }

    async fn run(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<Item>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let inflight = Arc::new(Semaphore::new(self.limits.max_inflight));
        let mut tasks = JoinSet::new();
        loop {
            let permit = tokio::select! {
                p = inflight.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
                _ = stopped(&mut shutdown) => break,
            };
            let first = tokio::select! {
                item = rx.recv() => match item {
                    Some(item) => item,
                    None => break,
                },
                _ = stopped(&mut shutdown) => break,
            };
            let mut count = first.proposals.len();
            let mut bytes = first.bytes();
            let mut items = vec![first];
            while count < self.limits.max_batch_proposals && bytes < self.limits.max_batch_bytes {
                match rx.try_recv() {
                    Ok(item) => {
                        count += item.proposals.len();
                        bytes += item.bytes();
                        items.push(item);
                    }
                    Err(_) => break,
                }
            }
            let me = self.clone();
            tasks.spawn(async move {
                me.submit(items).await;
                drop(permit);
            });
            while tasks.try_join_next().is_some() {}
        }
        rx.close();
        while let Ok(item) = rx.try_recv() {
            item.answer(Err(ProposeError::ShuttingDown));
        }
        // In-flight submissions finish on their own deadline; wait for them, bounded.
        let drain = async { while tasks.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(self.limits.propose_timeout, drain).await;
    }

    fn leader(&self) -> Option<(u64, Option<String>)> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let leader = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone());
        Some((leader, addr))
    }

    async fn submit(&self, mut items: Vec<Item>) {
        let deadline = Instant::now() + self.limits.propose_timeout;
        loop {
            let attempt = match self.leader() {
                Some((leader, _)) if leader == self.self_id => {
                    self.write_local(items, deadline).await
                }
                Some((leader, Some(addr))) => {
                    let (forwarded, local): (Vec<Item>, Vec<Item>) =
                        items.into_iter().partition(|i| i.forwarded);
                    for item in forwarded {
                        item.answer(Err(ProposeError::NotLeader { node: self.self_id }));
                    }
                    if local.is_empty() {
                        Attempt::Done
                    } else {
                        self.forward(leader, &addr, local, deadline).await
                    }
                }
                Some((_, None)) | None => Attempt::Retry(items),
            };
            items = match attempt {
                Attempt::Done => return,
                Attempt::Retry(items) => items,
            };
            if items.is_empty() {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                for item in items {
                    item.answer(Err(ProposeError::NoLeader));
                }
                return;
            }
            sleep(RETRY_PAUSE.min(deadline - now)).await;
        }
    }

    fn flatten(items: &[Item]) -> Vec<Vec<u8>> {
        items
            .iter()
            .flat_map(|i| i.proposals.iter().cloned())
            .collect()
    }

    fn answer_positions(items: Vec<Item>, first: Position) {
        let mut offset = first.offset;
        for item in items {
            let n = u32::try_from(item.proposals.len()).unwrap_or(u32::MAX);
            item.answer(Ok(Position {
                index: first.index,
                offset,
            }));
            offset = offset.saturating_add(n);
        }
    }

    fn answer_all(items: Vec<Item>, err: ProposeError) {
        for item in items {
            item.answer(Err(err.clone()));
        }
    }

    async fn write_local(&self, items: Vec<Item>, deadline: Instant) -> Attempt {
        let batch_id = self.next_batch_id.fetch_add(1, Ordering::Relaxed);
        let batch = Batch {
            origin: self.self_id,
            batch_id,
            proposals: Self::flatten(&items),
        };
        self.watch.register(batch_id);
        let result = timeout_at(deadline, self.raft.client_write(batch)).await;
        let appended = self.watch.take(batch_id);
        match result {
            Ok(Ok(resp)) => {
                Self::answer_positions(
                    items,
                    Position {
                        index: resp.log_id.index,
                        offset: 0,
                    },
                );
                Attempt::Done
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) if !appended => {
                // Refused before it was appended: our own proposals go round again; a group a
                // follower forwarded goes back to that follower, which knows where to send it.
                let (forwarded, local): (Vec<Item>, Vec<Item>) =
                    items.into_iter().partition(|i| i.forwarded);
                Self::answer_all(forwarded, ProposeError::NotLeader { node: self.self_id });
                Attempt::Retry(local)
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                Self::answer_all(
                    items,
                    ProposeError::Indeterminate(
                        "leadership lost after the entry was appended".into(),
                    ),
                );
                Attempt::Done
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                Self::answer_all(items, ProposeError::Rejected(e.to_string()));
                Attempt::Done
            }
            Ok(Err(RaftError::Fatal(fatal))) => {
                let err = if appended {
                    ProposeError::Indeterminate(format!("raft stopped: {fatal}"))
                } else {
                    ProposeError::ShuttingDown
                };
                Self::answer_all(items, err);
                Attempt::Done
            }
            Err(_elapsed) => {
                // The write was handed to openraft; it may still commit after we give up.
                Self::answer_all(
                    items,
                    ProposeError::Indeterminate("not committed within the propose timeout".into()),
                );
                Attempt::Done
            }
        }
    }

    async fn forward(
        &self,
        leader: u64,
        addr: &str,
        items: Vec<Item>,
        deadline: Instant,
    ) -> Attempt {
        let req = PeerRequest::Forward(Self::flatten(&items));
        let ttl = deadline.saturating_duration_since(Instant::now());
        match self.peers.call(leader, addr, &req, ttl).await {
            Ok(PeerResponse::Forward(Ok(first))) => {
                Self::answer_positions(items, first);
                Attempt::Done
            }
            Ok(PeerResponse::Forward(Err(err))) => match err {
                // Nothing was appended there; a leader change is under way.
                ProposeError::NoLeader
                | ProposeError::NotLeader { .. }
                | ProposeError::ShuttingDown => Attempt::Retry(items),
                ProposeError::Rejected(_) | ProposeError::Indeterminate(_) => {
                    Self::answer_all(items, err);
                    Attempt::Done
                }
            },
            Ok(_) => {
                Self::answer_all(
                    items,
                    ProposeError::Indeterminate(format!("node {leader} answered out of protocol")),
                );
                Attempt::Done
            }
            Err(CallError::NotSent { .. }) => Attempt::Retry(items),
            Err(CallError::TooLarge { reason }) => {
                Self::answer_all(items, ProposeError::Rejected(reason));
                Attempt::Done
            }
            Err(e @ CallError::Lost { .. }) => {
                Self::answer_all(items, ProposeError::Indeterminate(e.to_string()));
                Attempt::Done
            }
        }
    }
}
