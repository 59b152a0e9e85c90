//! openraft's `RaftStateMachine` as a thin adapter over certus's `Fsm`, plus the snapshot file.
//!
//! Owns: the last applied log id and membership as openraft sees them, and `snapshot.bin` in
//! the replication dir (the last built or installed snapshot, written atomically). Must not
//! touch: what the proposals mean (that is the `Fsm`), the log, the network.
//!
//! Nothing here persists applied state: the `Fsm` is rebuilt from the snapshot at open and then
//! openraft re-applies every committed entry above it, in order, exactly once per run.

use std::io::{self, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    BasicNode, EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::types::{decode, encode, Entry, LogId, StorageError, TypeConfig};
use super::wal;

pub(crate) const SNAPSHOT_FILE: &str = "snapshot.bin";

/// The application state machine: certification plus the apply queue, owned by certus's node.
pub trait Fsm: Send + 'static {
    /// Deterministic; called in log order exactly once per committed entry that carries
    /// proposals, on every node (and again after a restart for entries above the last
    /// snapshot). `index` is the Raft log index. Must not block on I/O.
    fn apply_batch(&mut self, index: u64, proposals: &[Vec<u8>]);
    /// The state to ship in a Raft snapshot.
    fn snapshot(&self) -> Vec<u8>;
    /// Replace the state with a snapshot taken at Raft log index `index`.
    fn restore(&mut self, index: u64, data: &[u8]);
}

pub(crate) type SharedFsm = Arc<Mutex<dyn Fsm>>;

type Meta = SnapshotMeta<u64, BasicNode>;

#[derive(Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: Meta,
    data: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("snapshot {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("snapshot {path} is unreadable: {reason}; refusing to start")]
    Corrupt { path: PathBuf, reason: String },
}

/// What has been applied, as openraft sees it. Written only while the `Fsm` lock is held, so
/// a snapshot builder that holds the `Fsm` lock reads a `last_applied` that matches the state.
#[derive(Clone, Default)]
struct Applied {
    last_applied: Option<LogId>,
    membership: StoredMembership<u64, BasicNode>,
}

/// Cloned for the snapshot builder; every clone shares the same state.
#[derive(Clone)]
pub(crate) struct StateMachine {
    fsm: SharedFsm,
    dir: PathBuf,
    applied: Arc<Mutex<Applied>>,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
}

fn sm_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

fn poisoned() -> StorageError {
    sm_err(io::Error::other("fsm lock poisoned"))
}

impl StateMachine {
    /// Loads the snapshot file if there is one and restores the `Fsm` from it.
    pub(crate) fn open(dir: &Path, fsm: SharedFsm) -> Result<Self, SnapshotFileError> {
        let path = dir.join(SNAPSHOT_FILE);
        let sm = StateMachine {
            fsm,
            dir: dir.to_path_buf(),
            applied: Arc::default(),
            current: Arc::default(),
        };
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(sm),
            Err(source) => return Err(SnapshotFileError::Io { path, source }),
        };
        let corrupt = |reason: String| SnapshotFileError::Corrupt {
            path: path.clone(),
            reason,
        };
        // The file is one WAL-framed record: a torn snapshot file is impossible (rename is
        // atomic), so any framing problem is corruption.
        let (records, good) = wal::scan(&bytes, &path).map_err(|e| corrupt(e.to_string()))?;
        if records.len() != 1 || good != bytes.len() {
            return Err(corrupt("expected exactly one whole record".into()));
        }
        let stored: StoredSnapshot = decode(&records[0]).map_err(|e| corrupt(e.to_string()))?;
        sm.restore_from(stored)
            .map_err(|_| corrupt("fsm lock poisoned".into()))?;
        Ok(sm)
    }

    // openraft's own error type, returned so `?` works inside the trait impls that must return it.
    #[allow(clippy::result_large_err)]
    fn restore_from(&self, stored: StoredSnapshot) -> Result<(), StorageError> {
        let index = stored.meta.last_log_id.map_or(0, |l| l.index);
        let mut fsm = self.fsm.lock().map_err(|_| poisoned())?;
        fsm.restore(index, &stored.data);
        *self.applied.lock().map_err(|_| poisoned())? = Applied {
            last_applied: stored.meta.last_log_id,
            membership: stored.meta.last_membership.clone(),
        };
        *self.current.lock().map_err(|_| poisoned())? = Some(stored);
        Ok(())
    }

    /// tmp file, fsync, rename, fsync dir: the old snapshot stays whole until the new one is.
    // openraft's own error type, returned so `?` works inside the trait impls that must return it.
    #[allow(clippy::result_large_err)]
    fn persist(&self, stored: &StoredSnapshot) -> Result<(), StorageError> {
        let sig = Some(stored.meta.signature());
        let werr = |e: &dyn std::error::Error| -> StorageError {
            StorageIOError::write_snapshot(sig.clone(), &io::Error::other(e.to_string())).into()
        };
        let payload = encode(stored).map_err(|e| werr(&e))?;
        let mut framed = Vec::with_capacity(payload.len() + 12);
        wal::frame(&payload, &mut framed);
        let tmp = self.dir.join(format!("{SNAPSHOT_FILE}.tmp"));
        let result = (|| -> io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&framed)?;
            f.sync_all()?;
            std::fs::rename(&tmp, self.dir.join(SNAPSHOT_FILE))?;
            std::fs::File::open(&self.dir)?.sync_all()
        })();
        result.map_err(|e| werr(&e))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (data, applied) = {
            let fsm = self.fsm.lock().map_err(|_| poisoned())?;
            let applied = self.applied.lock().map_err(|_| poisoned())?.clone();
            (fsm.snapshot(), applied)
        };
        let index = applied.last_applied.map_or(0, |l| l.index);
        let meta = Meta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership,
            // Unique per build: the index alone repeats when nothing was applied in between.
            snapshot_id: format!("{index}-{}", rand::random::<u64>()),
        };
        let stored = StoredSnapshot { meta, data };
        self.persist(&stored)?;
        let snapshot = Snapshot {
            meta: stored.meta.clone(),
            snapshot: Box::new(Cursor::new(stored.data.clone())),
        };
        *self.current.lock().map_err(|_| poisoned())? = Some(stored);
        Ok(snapshot)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<u64, BasicNode>), StorageError> {
        let applied = self.applied.lock().map_err(|_| poisoned())?;
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        let mut fsm = self.fsm.lock().map_err(|_| poisoned())?;
        let mut applied = self.applied.lock().map_err(|_| poisoned())?;
        for entry in entries {
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(batch) => {
                    fsm.apply_batch(entry.log_id.index, &batch.proposals)
                }
                EntryPayload::Membership(m) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), m);
                }
            }
            applied.last_applied = Some(entry.log_id);
            out.push(());
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: snapshot.into_inner(),
        };
        self.persist(&stored)?;
        self.restore_from(stored)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let current = self.current.lock().map_err(|_| poisoned())?;
        Ok(current.as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone())),
        }))
    }
}
