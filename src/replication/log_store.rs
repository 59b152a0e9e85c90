//! The durable Raft log: openraft's `RaftLogStorage` as a thin adapter over `wal`.
//!
//! Owns: the meaning of WAL records (entries, vote, committed, truncate, purge), the in-memory
//! index of live entries rebuilt from the WAL at open, and the durability promises openraft
//! relies on. Must not touch: the state machine, the network, or the WAL framing.
//!
//! Durability (openraft 0.9 storage-v2 contract):
//! - `append`: entries are readable when it returns; `LogFlushed` fires only after the
//!   fdatasync that covers them.
//! - `save_vote`, `truncate`, `purge`: durable before they return.
//! - `save_committed`: queued, durable with the next fsync. It is a lower-bound hint used to
//!   re-apply after a restart; it is always written after the entries it covers, so it can
//!   never be durable without them.
//!
//! Every write goes through one queue, so the disk order is openraft's order. Each write is
//! submitted while the in-memory index is locked, so the queue order is also the order of the
//! in-memory changes; a compaction image built under that lock therefore contains exactly the
//! writes queued before it.
//!
//! Memory and disk after a purge: purged entries leave the in-memory index at once; the WAL is
//! rewritten with only the live records once the dead bytes in it exceed both the live bytes and
//! `COMPACT_MIN_DEAD`, so neither memory nor the file (nor the replay at open) grows with the
//! history the snapshot already covers.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{EntryPayload, StorageIOError};
use serde::{Deserialize, Serialize};

use super::eager::EagerReplication;
use super::types::{decode, encode, Entry, LogId, StorageError, TypeConfig, Vote};
use super::wal::{self, Done, WalClosed, WalError, WalWriter};

#[derive(Serialize, Deserialize)]
enum Record {
    Entry(Entry),
    Vote(Vote),
    Committed(Option<LogId>),
    /// Delete `[since, ..)`.
    Truncate(u64),
    /// Delete `(.., upto]`.
    Purge(LogId),
}

#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("raft log record {record}: cannot decode: {reason}")]
    Decode { record: usize, reason: String },
    #[error("raft log has a hole: index {expected} expected, {found} found")]
    Hole { expected: u64, found: u64 },
    #[error("the raft log is empty: this node holds no cluster state to bootstrap from")]
    Empty,
    #[error("raft log: {0}")]
    Write(String),
}

/// Dead bytes the WAL may carry before it is compacted (and only when they exceed the live ones).
const COMPACT_MIN_DEAD: u64 = 8 * 1024 * 1024;

#[derive(Default)]
struct Mem {
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
    entries: BTreeMap<u64, Entry>,
    /// Framed size of each live entry's record in the WAL.
    sizes: BTreeMap<u64, u64>,
    live_bytes: u64,
    /// Bytes of superseded records (purged or truncated entries, old votes and commit marks).
    dead_bytes: u64,
}

impl Mem {
    fn replay(&mut self, rec: Record, size: u64) {
        match rec {
            Record::Entry(e) => self.insert(e, size),
            Record::Vote(v) => {
                self.vote = Some(v);
                self.dead_bytes += size;
            }
            Record::Committed(c) => {
                self.committed = c;
                self.dead_bytes += size;
            }
            Record::Truncate(since) => {
                self.dead_bytes += size;
                self.drop_from(since);
            }
            Record::Purge(upto) => {
                self.dead_bytes += size;
                self.drop_upto(upto);
            }
        }
    }

    fn insert(&mut self, e: Entry, size: u64) {
        let index = e.log_id.index;
        if let Some(old) = self.sizes.insert(index, size) {
            self.live_bytes -= old;
            self.dead_bytes += old;
        }
        self.live_bytes += size;
        self.entries.insert(index, e);
    }

    fn drop_from(&mut self, since: u64) {
        self.entries.split_off(&since);
        let gone = self.sizes.split_off(&since);
        self.forget(gone.values().sum());
    }

    fn drop_upto(&mut self, upto: LogId) {
        self.entries = self.entries.split_off(&(upto.index + 1));
        let kept = self.sizes.split_off(&(upto.index + 1));
        let gone = std::mem::replace(&mut self.sizes, kept);
        self.forget(gone.values().sum());
        self.purged = Some(upto);
    }

    fn forget(&mut self, bytes: u64) {
        self.live_bytes -= bytes;
        self.dead_bytes += bytes;
    }

    /// A node that led when it stopped comes back as a follower: its own committed vote is
    /// read back as uncommitted. openraft 0.9 restores a node whose saved vote is its own
    /// committed one as the leader of that same term at once, which is only sound if every
    /// entry the leader ever sent is in its own log. Ours sends each new entry to followers
    /// while its own write is still in flight (`eager.rs`), so a leader killed at that moment
    /// can come back without an entry a follower holds, append a different entry at that
    /// index in the same term, and the follower (whose entry has the same log id) keeps its
    /// own: two nodes certify different write sets at one seqno (docs/jepsen.md, finding 6).
    /// Uncommitted, the vote makes the node wait for an election, whose new term tells the two
    /// entries apart; the follower's is then committed or truncated like any unacknowledged
    /// entry.
    fn restart_as_follower(&mut self, node_id: u64) {
        if let Some(vote) = self.vote.as_mut() {
            if vote.committed && vote.leader_id.node_id == node_id {
                vote.committed = false;
            }
        }
    }

    fn wants_compaction(&self) -> bool {
        self.dead_bytes > COMPACT_MIN_DEAD && self.dead_bytes > self.live_bytes
    }

    /// Every live record, framed: what a compacted WAL holds.
    // openraft's own error type, returned so `?` works inside the trait impls that must return it.
    #[allow(clippy::result_large_err)]
    fn image(&self) -> Result<Vec<u8>, StorageError> {
        let mut out = Vec::with_capacity(self.live_bytes as usize + 256);
        if let Some(v) = self.vote {
            out.extend_from_slice(&LogStore::framed(&Record::Vote(v))?);
        }
        if let Some(p) = self.purged {
            out.extend_from_slice(&LogStore::framed(&Record::Purge(p))?);
        }
        for e in self.entries.values() {
            out.extend_from_slice(&LogStore::framed(&Record::Entry(e.clone()))?);
        }
        out.extend_from_slice(&LogStore::framed(&Record::Committed(self.committed))?);
        Ok(out)
    }

    /// After a compaction the file holds only what `image` wrote.
    fn compacted(&mut self) {
        self.dead_bytes = 0;
    }

    fn check_contiguous(&self) -> Result<(), LogStoreError> {
        let mut expected = self.purged.map(|p| p.index + 1);
        for &index in self.entries.keys() {
            if let Some(exp) = expected {
                if index != exp {
                    return Err(LogStoreError::Hole {
                        expected: exp,
                        found: index,
                    });
                }
            }
            expected = Some(index + 1);
        }
        Ok(())
    }

    /// The log id of the entry just before `index`: `Some(None)` when `index` is the first
    /// index of an empty log, `None` when that entry is not known here.
    fn log_id_before(&self, index: u64) -> Option<Option<LogId>> {
        let Some(before) = index.checked_sub(1) else {
            return Some(None);
        };
        match self.entries.get(&before) {
            Some(e) => Some(Some(e.log_id)),
            None => self.purged.filter(|p| p.index == before).map(Some),
        }
    }

    fn last_log_id(&self) -> Option<LogId> {
        self.entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(self.purged)
    }
}

/// Batch ids of this node's own batches whose entries reached this node's log (the call to
/// `append`, not the fsync). The batcher registers a batch before `client_write` and reads the
/// flag after a failure: appended means the outcome is indeterminate, not appended means the
/// entry never existed and the failure is definite.
#[derive(Clone, Default)]
pub(crate) struct AppendWatch {
    inner: Arc<Mutex<HashMap<u64, bool>>>,
}

impl AppendWatch {
    pub(crate) fn register(&self, batch_id: u64) {
        if let Ok(mut m) = self.inner.lock() {
            m.insert(batch_id, false);
        }
    }

    /// Removes the registration and says whether the batch was appended. A poisoned lock
    /// answers "appended", the conservative answer.
    pub(crate) fn take(&self, batch_id: u64) -> bool {
        match self.inner.lock() {
            Ok(mut m) => m.remove(&batch_id).unwrap_or(true),
            Err(_) => true,
        }
    }

    fn mark(&self, batch_id: u64) {
        if let Ok(mut m) = self.inner.lock() {
            if let Some(flag) = m.get_mut(&batch_id) {
                *flag = true;
            }
        }
    }
}

#[derive(Clone)]
pub(crate) struct LogStore {
    node_id: u64,
    mem: Arc<Mutex<Mem>>,
    wal: Arc<WalWriter>,
    watch: AppendWatch,
    eager: EagerReplication,
}

/// What `open` recovered, for logging and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Recovered {
    pub(crate) records: usize,
    pub(crate) dropped_tail: u64,
}

fn poisoned() -> StorageError {
    StorageIOError::write_logs(&io::Error::other("raft log lock poisoned")).into()
}

impl LogStore {
    pub(crate) fn open(
        dir: &Path,
        node_id: u64,
        watch: AppendWatch,
    ) -> Result<(Self, Recovered, WalClosed), LogStoreError> {
        let (scanned, writer, closed) = wal::open(dir)?;
        let mut mem = Mem::default();
        for (i, bytes) in scanned.records.iter().enumerate() {
            let rec: Record = decode(bytes).map_err(|e| LogStoreError::Decode {
                record: i,
                reason: e.to_string(),
            })?;
            mem.replay(rec, bytes.len() as u64 + 12);
        }
        mem.check_contiguous()?;
        mem.restart_as_follower(node_id);
        let recovered = Recovered {
            records: scanned.records.len(),
            dropped_tail: scanned.dropped_tail,
        };
        Ok((
            LogStore {
                node_id,
                mem: Arc::new(Mutex::new(mem)),
                wal: Arc::new(writer),
                watch,
                eager: EagerReplication::default(),
            },
            recovered,
            closed,
        ))
    }

    /// The handle through which this log, once Raft has started, sends the leader's new
    /// entries to its followers while they are being fsynced here (`eager`).
    pub(crate) fn eager(&self) -> EagerReplication {
        self.eager.clone()
    }

    // openraft's own error type, returned so `?` works inside the trait impls that must return it.
    #[allow(clippy::result_large_err)]
    fn framed(rec: &Record) -> Result<Vec<u8>, StorageError> {
        let payload = encode(rec).map_err(|e| StorageIOError::write_logs(&e))?;
        let mut out = Vec::with_capacity(payload.len() + 12);
        wal::frame(&payload, &mut out);
        Ok(out)
    }

    /// Queues `bytes` (call it with the mem lock held) and returns the wait for their fsync.
    fn submit_durable(&self, bytes: Vec<u8>) -> impl std::future::Future<Output = io::Result<()>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let queued = self.wal.submit(bytes, Done::Notify(tx));
        async move {
            queued?;
            rx.await
                .map_err(|_| io::Error::other("raft log writer has stopped"))?
        }
    }

    // openraft's own error type, returned so `?` works inside the trait impls that must return it.
    #[allow(clippy::result_large_err)]
    fn mem(&self) -> Result<std::sync::MutexGuard<'_, Mem>, StorageError> {
        self.mem.lock().map_err(|_| poisoned())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let mem = self.mem()?;
        Ok(mem.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let mem = self.mem()?;
        Ok(LogState {
            last_purged_log_id: mem.purged,
            last_log_id: mem.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let bytes = Self::framed(&Record::Vote(*vote))?;
        let durable = {
            let mut mem = self.mem()?;
            mem.vote = Some(*vote);
            mem.dead_bytes += bytes.len() as u64;
            self.submit_durable(bytes)
        };
        durable
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.mem()?.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let bytes = Self::framed(&Record::Committed(committed))?;
        let mut mem = self.mem()?;
        mem.committed = committed;
        mem.dead_bytes += bytes.len() as u64;
        self.wal
            .submit(bytes, Done::Nobody)
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.mem()?.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut bytes = Vec::new();
        // Copies for the followers (`eager`), when this node appends its own new entries as
        // leader: `prev`, the log id before them, tells a follower where they go.
        let mut copies = Vec::new();
        let mut prev: Option<Option<LogId>> = None;
        let mut mem = self.mem()?;
        for (i, entry) in entries.into_iter().enumerate() {
            if i == 0 && self.eager.wants(&entry) {
                prev = mem.log_id_before(entry.log_id.index);
            }
            if prev.is_some() {
                copies.push(entry.clone());
            }
            let framed = Self::framed(&Record::Entry(entry.clone()))?;
            if let EntryPayload::Normal(batch) = &entry.payload {
                if batch.origin == self.node_id {
                    self.watch.mark(batch.batch_id);
                }
            }
            mem.insert(entry, framed.len() as u64);
            bytes.extend_from_slice(&framed);
        }
        self.wal
            .submit(bytes, Done::Flushed(callback))
            .map_err(|e| StorageIOError::write_logs(&e))?;
        let committed = mem.committed;
        drop(mem);
        if let Some(prev) = prev {
            self.eager.offer(copies, prev, committed);
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let bytes = Self::framed(&Record::Truncate(log_id.index))?;
        // Memory first: openraft must not read a truncated entry even while the disk catches up;
        // the write is durable before we return, and replay at open repeats the truncation.
        let durable = {
            let mut mem = self.mem()?;
            mem.dead_bytes += bytes.len() as u64;
            mem.drop_from(log_id.index);
            self.submit_durable(bytes)
        };
        durable
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let bytes = Self::framed(&Record::Purge(log_id))?;
        let durable = {
            let mut mem = self.mem()?;
            mem.dead_bytes += bytes.len() as u64;
            mem.drop_upto(log_id);
            let durable = self.submit_durable(bytes);
            if mem.wants_compaction() {
                let image = mem.image()?;
                tracing::info!(
                    live = image.len(),
                    dead = mem.dead_bytes,
                    "compacting the raft log file"
                );
                self.wal
                    .submit_rewrite(image)
                    .map_err(|e| StorageIOError::write_logs(&e))?;
                mem.compacted();
            }
            durable
        };
        durable
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

/// What a Raft log holds, read without changing it (start-up checks, `certus recover`,
/// `certus bootstrap`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogSummary {
    /// No record at all: the node has never joined a cluster.
    pub pristine: bool,
    /// `(term, index)` of the last entry.
    pub last_log: Option<(u64, u64)>,
    /// The last committed index this node recorded (a lower bound).
    pub committed: Option<u64>,
    /// The term of the saved vote.
    pub vote_term: u64,
    /// Bytes of a torn final record that the next open will cut (never acknowledged).
    pub torn_tail_bytes: u64,
    /// Voters and their addresses in the last membership entry still in the log.
    pub members: Option<BTreeMap<u64, String>>,
}

impl Mem {
    fn summary(&self, records: usize, torn_tail_bytes: u64) -> LogSummary {
        let members = self.entries.values().rev().find_map(|e| match &e.payload {
            EntryPayload::Membership(m) => Some(
                m.voter_ids()
                    .filter_map(|id| m.get_node(&id).map(|n| (id, n.addr.clone())))
                    .collect(),
            ),
            _ => None,
        });
        LogSummary {
            pristine: records == 0,
            last_log: self.last_log_id().map(|l| (l.leader_id.term, l.index)),
            committed: self.committed.map(|c| c.index),
            vote_term: self.vote.map_or(0, |v| v.leader_id.term),
            torn_tail_bytes,
            members,
        }
    }
}

/// Reads and validates the log in `dir` without writing anything: every record must decode and
/// the entries must be contiguous; a torn final record is reported, not cut. Refuses a log that
/// a running node holds open.
pub fn inspect_log(dir: &Path) -> Result<LogSummary, LogStoreError> {
    use std::io::Read;
    let path = dir.join(wal::WAL_FILE);
    let io_err = |source| {
        LogStoreError::Wal(WalError::Io {
            path: path.clone(),
            source,
        })
    };
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Mem::default().summary(0, 0));
        }
        Err(e) => return Err(io_err(e)),
    };
    if let Err(e) = file.try_lock_shared() {
        return Err(match e {
            std::fs::TryLockError::WouldBlock => {
                LogStoreError::Wal(WalError::Locked { path: path.clone() })
            }
            std::fs::TryLockError::Error(source) => io_err(source),
        });
    }
    let mut buf = Vec::new();
    file.read_to_end(&mut buf).map_err(io_err)?;
    let (records, good) = wal::scan(&buf, &path)?;
    let mut mem = Mem::default();
    for (i, bytes) in records.iter().enumerate() {
        let rec: Record = decode(bytes).map_err(|e| LogStoreError::Decode {
            record: i,
            reason: e.to_string(),
        })?;
        mem.replay(rec, bytes.len() as u64);
    }
    mem.check_contiguous()?;
    Ok(mem.summary(records.len(), (buf.len() - good) as u64))
}

/// A record framed for an offline write (`certus bootstrap`, fault injection).
fn framed_offline(rec: &Record) -> Result<Vec<u8>, LogStoreError> {
    LogStore::framed(rec).map_err(|e| LogStoreError::Write(e.to_string()))
}

/// Appends the records `build` frames from the log's current state to a stopped node's log,
/// fsynced, and reports the log as it then is. The log is closed (its lock released) on every
/// path before reporting.
async fn append_offline(
    dir: &Path,
    node_id: u64,
    build: impl FnOnce(&Mem) -> Result<Vec<u8>, LogStoreError>,
) -> Result<LogSummary, LogStoreError> {
    let (store, _, closed) = LogStore::open(dir, node_id, AppendWatch::default())?;
    let bytes = store
        .mem()
        .map_err(|e| LogStoreError::Write(e.to_string()))
        .and_then(|mem| build(&mem));
    let written = match bytes {
        Ok(bytes) => store
            .wal
            .write_durable(bytes)
            .await
            .map_err(|e| LogStoreError::Write(e.to_string())),
        Err(e) => Err(e),
    };
    drop(store);
    closed.wait().await;
    written?;
    inspect_log(dir)
}

/// A membership entry `{node_id: addr}` as the leader of a new term, and this node's vote in
/// that term.
fn single_voter_records(mem: &Mem, node_id: u64, addr: String) -> Result<Vec<u8>, LogStoreError> {
    let last = mem.last_log_id().ok_or(LogStoreError::Empty)?;
    let term = mem
        .vote
        .map_or(0, |v| v.leader_id.term)
        .max(last.leader_id.term)
        + 1;
    let membership = openraft::Membership::new(
        vec![[node_id].into()],
        BTreeMap::from([(node_id, openraft::BasicNode::new(addr))]),
    );
    let entry = Entry {
        log_id: openraft::LogId::new(
            openraft::CommittedLeaderId::new(term, node_id),
            last.index + 1,
        ),
        payload: EntryPayload::Membership(membership),
    };
    let mut bytes = framed_offline(&Record::Entry(entry))?;
    bytes.extend(framed_offline(&Record::Vote(Vote::new(term, node_id)))?);
    Ok(bytes)
}

/// Fault injection for tests: removes the entries from `index` on from a stopped node's log
/// (one fsynced truncation record), as if the node had never written them: what a leader
/// killed while its own append was in flight comes back with.
pub async fn truncate_log_from(
    dir: &Path,
    node_id: u64,
    index: u64,
) -> Result<LogSummary, LogStoreError> {
    append_offline(dir, node_id, |mem| {
        let mut bytes = framed_offline(&Record::Truncate(index))?;
        // A node that never wrote an entry cannot have recorded it as committed.
        if mem.committed.is_some_and(|c| c.index >= index) {
            let kept = mem
                .entries
                .range(..index)
                .next_back()
                .map(|(_, e)| e.log_id);
            bytes.extend(framed_offline(&Record::Committed(kept))?);
        }
        Ok(bytes)
    })
    .await
}

/// `certus bootstrap`: makes this node the only voter of its cluster, keeping its log. Appends a
/// membership entry `{node_id: addr}` as the leader of a new term and votes for itself in that
/// term, both fsynced. At the next start openraft takes the newest membership in the log, so the
/// node elects itself and commits everything its log holds. The node must be stopped (the log is
/// locked while a node runs).
pub async fn reset_membership_to(
    dir: &Path,
    node_id: u64,
    addr: String,
) -> Result<LogSummary, LogStoreError> {
    append_offline(dir, node_id, |mem| single_voter_records(mem, node_id, addr)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::types::Batch;
    use openraft::{CommittedLeaderId, LogId as RaftLogId};

    fn entry(term: u64, index: u64, payload: &[u8]) -> Entry {
        Entry {
            log_id: RaftLogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(Batch {
                origin: 1,
                batch_id: index,
                proposals: vec![payload.to_vec()],
            }),
        }
    }

    /// Appends through the real WAL and waits for durability the way openraft would.
    async fn append_durable(store: &mut LogStore, entries: Vec<Entry>) {
        let mut bytes = Vec::new();
        {
            let mut mem = store.mem().unwrap();
            for e in entries {
                let framed = LogStore::framed(&Record::Entry(e.clone())).unwrap();
                mem.insert(e, framed.len() as u64);
                bytes.extend_from_slice(&framed);
            }
        }
        store.wal.write_durable(bytes).await.unwrap();
    }

    /// Writes `entries` into the log in `dir` and closes it (releasing its lock).
    async fn write_and_close(dir: &Path, entries: Vec<Entry>) {
        let (mut s, _, closed) = LogStore::open(dir, 1, AppendWatch::default()).unwrap();
        append_durable(&mut s, entries).await;
        drop(s);
        closed.wait().await;
    }

    async fn indexes(store: &mut LogStore) -> Vec<u64> {
        store
            .try_get_log_entries(..)
            .await
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect()
    }

    #[tokio::test]
    async fn reopen_restores_entries_vote_truncate_and_purge() {
        let dir = tempfile::tempdir().unwrap();
        let closed = {
            let (mut s, _, closed) = LogStore::open(dir.path(), 1, AppendWatch::default()).unwrap();
            append_durable(&mut s, (1..=6).map(|i| entry(1, i, b"x")).collect()).await;
            s.save_vote(&Vote::new(3, 2)).await.unwrap();
            s.truncate(RaftLogId::new(CommittedLeaderId::new(1, 1), 5))
                .await
                .unwrap();
            s.purge(RaftLogId::new(CommittedLeaderId::new(1, 1), 2))
                .await
                .unwrap();
            append_durable(&mut s, vec![entry(3, 5, b"y")]).await;
            closed
        };
        closed.wait().await;
        let (mut s, rec, _) = LogStore::open(dir.path(), 1, AppendWatch::default()).unwrap();
        assert_eq!(rec.dropped_tail, 0);
        assert_eq!(indexes(&mut s).await, vec![3, 4, 5]);
        assert_eq!(s.read_vote().await.unwrap(), Some(Vote::new(3, 2)));
        let state = s.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(2));
        assert_eq!(
            state.last_log_id.map(|l| (l.leader_id.term, l.index)),
            Some((3, 5))
        );
    }

    #[tokio::test]
    async fn a_leader_reads_its_own_committed_vote_back_uncommitted() {
        let dir = tempfile::tempdir().unwrap();
        let mut committed = Vote::new(4, 1);
        committed.commit();
        {
            let (mut s, _, closed) = LogStore::open(dir.path(), 1, AppendWatch::default()).unwrap();
            s.save_vote(&committed).await.unwrap();
            drop(s);
            closed.wait().await;
        }
        // Node 1 led term 4: it restarts as a candidate of that term, never as its leader.
        let (mut s, _, closed) = LogStore::open(dir.path(), 1, AppendWatch::default()).unwrap();
        assert_eq!(s.read_vote().await.unwrap(), Some(Vote::new(4, 1)));
        drop(s);
        closed.wait().await;
        // The same vote seen by a follower (node 2) stays committed: node 1 led, not node 2.
        let (mut s, _, _) = LogStore::open(dir.path(), 2, AppendWatch::default()).unwrap();
        assert_eq!(s.read_vote().await.unwrap(), Some(committed));
    }

    #[tokio::test]
    async fn torn_last_record_is_recovered_on_open() {
        let dir = tempfile::tempdir().unwrap();
        write_and_close(
            dir.path(),
            (1..=4).map(|i| entry(1, i, b"payload")).collect(),
        )
        .await;
        let path = dir.path().join(wal::WAL_FILE);
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 3).unwrap();
        drop(f);
        let (mut s, rec, closed) = LogStore::open(dir.path(), 1, AppendWatch::default()).unwrap();
        assert!(rec.dropped_tail > 0);
        assert_eq!(indexes(&mut s).await, vec![1, 2, 3]);
        // The cut is permanent and appending after it works and survives another reopen.
        append_durable(&mut s, vec![entry(1, 4, b"again")]).await;
        drop(s);
        closed.wait().await;
        let (mut s, rec, _) = LogStore::open(dir.path(), 1, AppendWatch::default()).unwrap();
        assert_eq!(rec.dropped_tail, 0);
        assert_eq!(indexes(&mut s).await, vec![1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn corrupt_middle_record_is_refused_with_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        write_and_close(
            dir.path(),
            (1..=4).map(|i| entry(1, i, b"payload")).collect(),
        )
        .await;
        let path = dir.path().join(wal::WAL_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 0x55; // inside the first record's payload
        std::fs::write(&path, &bytes).unwrap();
        match LogStore::open(dir.path(), 1, AppendWatch::default()) {
            Err(LogStoreError::Wal(WalError::Corrupt { offset: 0, .. })) => {}
            Err(other) => panic!("expected Corrupt at 0, got {other}"),
            Ok(_) => panic!("a corrupt log was opened"),
        }
    }

    #[tokio::test]
    async fn a_second_open_of_a_live_log_is_refused_until_the_first_closes() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _, closed) = LogStore::open(dir.path(), 1, AppendWatch::default()).unwrap();
        assert!(matches!(
            LogStore::open(dir.path(), 1, AppendWatch::default()),
            Err(LogStoreError::Wal(WalError::Locked { .. }))
        ));
        drop(s);
        closed.wait().await;
        assert!(LogStore::open(dir.path(), 1, AppendWatch::default()).is_ok());
    }

    #[tokio::test]
    async fn inspect_reports_without_changing_anything() {
        let dir = tempfile::tempdir().unwrap();
        assert!(inspect_log(dir.path()).unwrap().pristine);
        let (mut s, _, closed) = LogStore::open(dir.path(), 1, AppendWatch::default()).unwrap();
        append_durable(&mut s, (1..=3).map(|i| entry(2, i, b"payload")).collect()).await;
        s.save_vote(&Vote::new(4, 1)).await.unwrap();
        // A running node holds the log: inspecting it is refused.
        assert!(matches!(
            inspect_log(dir.path()),
            Err(LogStoreError::Wal(WalError::Locked { .. }))
        ));
        drop(s);
        closed.wait().await;
        let path = dir.path().join(wal::WAL_FILE);
        let whole = std::fs::read(&path).unwrap();
        std::fs::write(&path, &whole[..whole.len() - 2]).unwrap();
        let torn = std::fs::read(&path).unwrap();
        let summary = inspect_log(dir.path()).unwrap();
        assert!(!summary.pristine);
        // The torn record was the vote: the last entry is intact.
        assert_eq!(summary.last_log, Some((2, 3)));
        assert!(summary.torn_tail_bytes > 0);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            torn,
            "inspect must not cut the tail"
        );
        let mut bad = whole.clone();
        bad[20] ^= 0x55;
        std::fs::write(&path, &bad).unwrap();
        assert!(matches!(
            inspect_log(dir.path()),
            Err(LogStoreError::Wal(WalError::Corrupt { offset: 0, .. }))
        ));
        assert_eq!(std::fs::read(&path).unwrap(), bad);
    }

    #[tokio::test]
    async fn reset_membership_appends_a_single_voter_config_in_a_new_term() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            reset_membership_to(dir.path(), 1, "a:1".into()).await,
            Err(LogStoreError::Empty)
        ));
        let closed = {
            let (mut s, _, closed) = LogStore::open(dir.path(), 1, AppendWatch::default()).unwrap();
            append_durable(&mut s, (1..=5).map(|i| entry(3, i, b"x")).collect()).await;
            s.save_vote(&Vote::new(4, 2)).await.unwrap();
            closed
        };
        closed.wait().await;
        let after = reset_membership_to(dir.path(), 1, "127.0.0.1:9".into())
            .await
            .unwrap();
        assert_eq!(after.last_log, Some((5, 6)));
        assert_eq!(after.vote_term, 5);
        assert_eq!(after.members, Some([(1, "127.0.0.1:9".to_owned())].into()));
        // The entries before it are kept.
        let (mut s, _, _) = LogStore::open(dir.path(), 1, AppendWatch::default()).unwrap();
        assert_eq!(indexes(&mut s).await, vec![1, 2, 3, 4, 5, 6]);
    }

    #[tokio::test]
    async fn purging_most_of_the_log_compacts_the_file_and_reopen_sees_the_same_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(wal::WAL_FILE);
        let big = vec![7u8; 256 * 1024];
        let closed = {
            let (mut s, _, closed) = LogStore::open(dir.path(), 1, AppendWatch::default()).unwrap();
            append_durable(&mut s, (1..=60).map(|i| entry(2, i, &big)).collect()).await;
            s.save_vote(&Vote::new(2, 1)).await.unwrap();
            let before = std::fs::metadata(&path).unwrap().len();
            assert!(before > 15 * 1024 * 1024);
            s.purge(RaftLogId::new(CommittedLeaderId::new(2, 1), 55))
                .await
                .unwrap();
            // Appends after the compaction land in the new file.
            append_durable(&mut s, vec![entry(2, 61, b"after")]).await;
            let after = std::fs::metadata(&path).unwrap().len();
            assert!(
                after < 2 * 1024 * 1024,
                "file not compacted: {before} -> {after} bytes"
            );
            assert_eq!(indexes(&mut s).await, (56..=61).collect::<Vec<_>>());
            closed
        };
        closed.wait().await;
        let (mut s, rec, _) = LogStore::open(dir.path(), 1, AppendWatch::default()).unwrap();
        assert_eq!(rec.dropped_tail, 0);
        assert_eq!(indexes(&mut s).await, (56..=61).collect::<Vec<_>>());
        assert_eq!(s.read_vote().await.unwrap(), Some(Vote::new(2, 1)));
        let state = s.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(55));
        assert!(!dir.path().join("raft.wal.compact").exists());
    }

    #[tokio::test]
    async fn a_commit_mark_written_without_its_own_fsync_is_in_the_log_after_close() {
        let dir = tempfile::tempdir().unwrap();
        let closed = {
            let (mut s, _, closed) = LogStore::open(dir.path(), 1, AppendWatch::default()).unwrap();
            append_durable(&mut s, (1..=3).map(|i| entry(1, i, b"x")).collect()).await;
            s.save_committed(Some(RaftLogId::new(CommittedLeaderId::new(1, 1), 3)))
                .await
                .unwrap();
            closed
        };
        closed.wait().await;
        let (mut s, rec, _) = LogStore::open(dir.path(), 1, AppendWatch::default()).unwrap();
        assert_eq!(rec.dropped_tail, 0);
        assert_eq!(s.read_committed().await.unwrap().map(|c| c.index), Some(3));
    }

    #[test]
    fn the_log_id_before_an_index_is_known_only_for_the_first_index_and_live_or_purged_entries() {
        let mut mem = Mem::default();
        assert_eq!(mem.log_id_before(0), Some(None));
        assert_eq!(mem.log_id_before(5), None);
        for i in 1..=4 {
            mem.replay(Record::Entry(entry(1, i, b"a")), 10);
        }
        assert_eq!(mem.log_id_before(5).flatten().map(|l| l.index), Some(4));
        assert_eq!(mem.log_id_before(2).flatten().map(|l| l.index), Some(1));
        mem.drop_upto(RaftLogId::new(CommittedLeaderId::new(1, 1), 4));
        assert_eq!(mem.log_id_before(5).flatten().map(|l| l.index), Some(4));
        assert_eq!(mem.log_id_before(3), None);
    }

    #[test]
    fn hole_is_detected() {
        let mut mem = Mem::default();
        mem.replay(Record::Entry(entry(1, 1, b"a")), 10);
        mem.replay(Record::Entry(entry(1, 3, b"c")), 10);
        assert!(matches!(
            mem.check_contiguous(),
            Err(LogStoreError::Hole {
                expected: 2,
                found: 3
            })
        ));
    }

    #[test]
    fn append_watch_reports_only_registered_own_batches() {
        let w = AppendWatch::default();
        w.register(7);
        w.register(8);
        w.mark(7);
        w.mark(9);
        assert!(w.take(7));
        assert!(!w.take(8));
    }
}
