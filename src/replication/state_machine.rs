//! openraft's `RaftStateMachine` as a thin adapter over certus's `Fsm`, plus the snapshot files.
//!
//! Owns: the last applied log id and membership as openraft sees them, and the snapshot files
//! in the replication dir: `snapshot.meta` (openraft's snapshot meta and the name of the data
//! file, one WAL-framed record, replaced atomically) and `snapshot-<id>.data` (what the `Fsm`
//! wrote; opaque here). Must not touch: what the proposals or the snapshot data mean (that is
//! the `Fsm`), the log, the network.
//!
//! Snapshots are files end to end: the `Fsm` streams a built snapshot into a file, openraft
//! streams that file to a follower in chunks, the follower writes the chunks into a file and
//! hands it to its `Fsm`. Nothing holds a whole snapshot in memory.
//!
//! Nothing here persists applied state: the `Fsm` is rebuilt from the snapshot at open and then
//! openraft re-applies every committed entry above it, in order, exactly once per run.

use std::future::Future;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    BasicNode, EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::types::{decode, encode, Entry, LogId, StorageError, TypeConfig};
use super::wal;

pub(crate) const SNAPSHOT_META: &str = "snapshot.meta";
const DATA_PREFIX: &str = "snapshot-";
const DATA_SUFFIX: &str = ".data";
/// A failed build (backend unreachable, dump refused) is retried after this pause; openraft
/// treats a build error as fatal, so the builder keeps trying until it succeeds or the node
/// stops.
const BUILD_RETRY: Duration = Duration::from_secs(2);

/// The work of writing one snapshot, started by [`Fsm::snapshot`] and run with nothing locked.
pub type SnapshotJob = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// The application state machine: certification plus the apply queue, owned by certus's node.
pub trait Fsm: Send + 'static {
    /// Deterministic; called in log order exactly once per committed entry that carries
    /// proposals, on every node (and again after a restart for entries above the last
    /// snapshot). `index` is the Raft log index. Must not block on I/O.
    fn apply_batch(&mut self, index: u64, proposals: &[Vec<u8>]);
    /// Called with the state machine locked, right after the entry at `index` was applied:
    /// capture the state at that point (quickly: appliers are held meanwhile) and return the
    /// job that writes the snapshot into `out`. The job runs with nothing locked.
    fn snapshot(&self, index: u64, out: tokio::fs::File) -> SnapshotJob;
    /// Replace the state with the snapshot in `data`, taken at Raft log index `index`. Called
    /// at open and when a snapshot from the leader has been received. An error leaves the state
    /// unchanged.
    fn restore(&mut self, index: u64, data: std::fs::File) -> Result<(), String>;
    /// A snapshot from the leader has started to arrive.
    fn receiving(&mut self) {}
}

pub(crate) type SharedFsm = Arc<Mutex<dyn Fsm>>;

type Meta = SnapshotMeta<u64, BasicNode>;

#[derive(Clone, Serialize, Deserialize)]
struct StoredMeta {
    meta: Meta,
    /// File name (in the replication dir) of the snapshot's data.
    data_file: String,
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
    current: Arc<Mutex<Option<StoredMeta>>>,
    /// The file a snapshot from the leader is being written into.
    receiving: Arc<Mutex<Option<PathBuf>>>,
    stop: watch::Receiver<bool>,
}

fn sm_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

fn poisoned() -> StorageError {
    sm_err(io::Error::other("fsm lock poisoned"))
}

fn snap_err(meta: &Meta, what: impl std::fmt::Display) -> StorageError {
    StorageIOError::write_snapshot(Some(meta.signature()), &io::Error::other(what.to_string()))
        .into()
}

/// Writes `bytes` to `dir/name` atomically: tmp file, fsync, rename, fsync dir.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

impl StateMachine {
    /// Loads the snapshot if there is one and restores the `Fsm` from it. `stop` turns true
    /// when the node shuts down (a build in progress then gives up).
    pub(crate) fn open(
        dir: &Path,
        fsm: SharedFsm,
        stop: watch::Receiver<bool>,
    ) -> Result<Self, SnapshotFileError> {
        std::fs::create_dir_all(dir).map_err(|source| SnapshotFileError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let sm = StateMachine {
            fsm,
            dir: dir.to_path_buf(),
            applied: Arc::default(),
            current: Arc::default(),
            receiving: Arc::default(),
            stop,
        };
        let path = dir.join(SNAPSHOT_META);
        let bytes = match std::fs::read(&path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(source) => return Err(SnapshotFileError::Io { path, source }),
        };
        if let Some(bytes) = bytes {
            let corrupt = |reason: String| SnapshotFileError::Corrupt {
                path: path.clone(),
                reason,
            };
            // One WAL-framed record: a torn meta file is impossible (rename is atomic), so any
            // framing problem is corruption.
            let (records, good) = wal::scan(&bytes, &path).map_err(|e| corrupt(e.to_string()))?;
            if records.len() != 1 || good != bytes.len() {
                return Err(corrupt("expected exactly one whole record".into()));
            }
            let stored: StoredMeta = decode(&records[0]).map_err(|e| corrupt(e.to_string()))?;
            sm.restore_from(&stored)
                .map_err(|e| corrupt(e.to_string()))?;
        }
        sm.remove_stale_files(true);
        Ok(sm)
    }

    fn data_path(&self, stored: &StoredMeta) -> PathBuf {
        self.dir.join(&stored.data_file)
    }

    /// Hands the snapshot's data file to the `Fsm` and makes it the current snapshot.
    // openraft's own error type, returned so `?` works inside the trait impls that must return it.
    #[allow(clippy::result_large_err)]
    fn restore_from(&self, stored: &StoredMeta) -> Result<(), StorageError> {
        let index = stored.meta.last_log_id.map_or(0, |l| l.index);
        let file = std::fs::File::open(self.data_path(stored))
            .map_err(|e| snap_err(&stored.meta, format!("opening the data file: {e}")))?;
        let mut fsm = self.fsm.lock().map_err(|_| poisoned())?;
        fsm.restore(index, file)
            .map_err(|e| snap_err(&stored.meta, e))?;
        *self.applied.lock().map_err(|_| poisoned())? = Applied {
            last_applied: stored.meta.last_log_id,
            membership: stored.meta.last_membership.clone(),
        };
        *self.current.lock().map_err(|_| poisoned())? = Some(stored.clone());
        Ok(())
    }

    /// Makes the finished data file at `tmp` the current snapshot on disk: fsync it, rename it
    /// to its final name, replace the meta file, and delete the previous data file.
    // openraft's own error type, returned so `?` works inside the trait impls that must return it.
    #[allow(clippy::result_large_err)]
    fn persist(&self, meta: &Meta, tmp: &Path) -> Result<StoredMeta, StorageError> {
        let stored = StoredMeta {
            meta: meta.clone(),
            data_file: format!("{DATA_PREFIX}{}{DATA_SUFFIX}", meta.snapshot_id),
        };
        let payload = encode(&stored).map_err(|e| snap_err(meta, e))?;
        let mut framed = Vec::with_capacity(payload.len() + 12);
        wal::frame(&payload, &mut framed);
        let result = (|| -> io::Result<()> {
            std::fs::OpenOptions::new()
                .read(true)
                .open(tmp)?
                .sync_all()?;
            std::fs::rename(tmp, self.data_path(&stored))?;
            write_atomic(&self.dir, SNAPSHOT_META, &framed)
        })();
        result.map_err(|e| snap_err(meta, e))?;
        Ok(stored)
    }

    /// Deletes data files that are neither the current snapshot nor one being received or
    /// built (leftovers of a crash, or the snapshot just replaced). Builds in progress are
    /// spared except at open, when none can be.
    fn remove_stale_files(&self, at_open: bool) {
        let keep: Vec<String> = {
            let mut keep = Vec::new();
            if let Ok(c) = self.current.lock() {
                if let Some(c) = c.as_ref() {
                    keep.push(c.data_file.clone());
                }
            }
            if let Ok(r) = self.receiving.lock() {
                if let Some(name) = r.as_ref().and_then(|p| p.file_name()) {
                    keep.push(name.to_string_lossy().into_owned());
                }
            }
            keep
        };
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours = name.starts_with(DATA_PREFIX) && name.ends_with(DATA_SUFFIX);
            let building = name.starts_with(&format!("{DATA_PREFIX}building-"));
            if ours && !keep.contains(&name) && (at_open || !building) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// One attempt at building a snapshot of the state as applied right now.
    async fn try_build(&self) -> Result<Snapshot<TypeConfig>, String> {
        let (job, meta, tmp) = {
            let fsm = self
                .fsm
                .lock()
                .map_err(|_| "fsm lock poisoned".to_string())?;
            let applied = self
                .applied
                .lock()
                .map_err(|_| "fsm lock poisoned".to_string())?
                .clone();
            let index = applied.last_applied.map_or(0, |l| l.index);
            let meta = Meta {
                last_log_id: applied.last_applied,
                last_membership: applied.membership,
                // Unique per build: the index alone repeats when nothing was applied in between.
                snapshot_id: format!("{index}-{:016x}", rand::random::<u64>()),
            };
            // Named like a data file so that a crash mid-build leaves nothing behind for long:
            // the next open removes it.
            let tmp = self.dir.join(format!(
                "{DATA_PREFIX}building-{}{DATA_SUFFIX}",
                meta.snapshot_id
            ));
            let out = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
            (
                fsm.snapshot(index, tokio::fs::File::from_std(out)),
                meta,
                tmp,
            )
        };
        let mut stop = self.stop.clone();
        let result = tokio::select! {
            r = job => r,
            _ = stop.wait_for(|s| *s) => Err("the node is shutting down".to_string()),
        };
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let stored = self.persist(&meta, &tmp).map_err(|e| e.to_string())?;
        *self
            .current
            .lock()
            .map_err(|_| "lock poisoned".to_string())? = Some(stored.clone());
        self.remove_stale_files(false);
        let file = tokio::fs::File::open(self.data_path(&stored))
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(snapshot = %meta.snapshot_id, "raft snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        loop {
            match self.try_build().await {
                Ok(snapshot) => return Ok(snapshot),
                Err(e) if *self.stop.borrow() => {
                    return Err(sm_err(io::Error::other(format!(
                        "snapshot build abandoned at shutdown: {e}"
                    ))))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "building a raft snapshot failed; retrying");
                    let mut stop = self.stop.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(BUILD_RETRY) => {}
                        _ = stop.wait_for(|s| *s) => {}
                    }
                }
            }
        }
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

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let path = self.dir.join(format!(
            "{DATA_PREFIX}incoming-{:016x}{DATA_SUFFIX}",
            rand::random::<u64>()
        ));
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let previous = self.receiving.lock().map_err(|_| poisoned())?.replace(path);
        if let Some(p) = previous {
            // An abandoned transfer (the leader started over).
            let _ = std::fs::remove_file(p);
        }
        self.fsm.lock().map_err(|_| poisoned())?.receiving();
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        drop(snapshot);
        let path = self
            .receiving
            .lock()
            .map_err(|_| poisoned())?
            .take()
            .ok_or_else(|| snap_err(meta, "no snapshot transfer in progress"))?;
        let stored = self.persist(meta, &path)?;
        self.restore_from(&stored)?;
        self.remove_stale_files(false);
        tracing::info!(snapshot = %meta.snapshot_id, "raft snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let current = self.current.lock().map_err(|_| poisoned())?.clone();
        let Some(stored) = current else {
            return Ok(None);
        };
        let file = tokio::fs::File::open(self.data_path(&stored))
            .await
            .map_err(|e| snap_err(&stored.meta, e))?;
        Ok(Some(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(file),
        }))
    }
}
