//! The write-ahead file under the Raft log: framing, scanning at open, and group commit.
//!
//! Owns: the file `raft.wal` in the node's replication dir, its record framing, torn-tail
//! recovery and the single writer thread that orders and fsyncs every write. Must not touch:
//! what the records mean (that is `log_store`), or anything outside its own file.
//!
//! Why a hand-rolled append-only file rather than an embedded database (redb, sled): openraft
//! 0.9 keeps about one log write in flight per node, so the only cost that matters is one
//! `fdatasync` per group of writes, and an append-only file pays exactly that. Measured on this
//! VM: a 128-byte synchronous append costs about 1.0 ms (`dd oflag=dsync`, 2000 writes; the
//! crate spike measured 1.6 ms for append + fdatasync on a busier disk). A redb durable commit
//! pays at least two syncs (data pages, then the commit slot), roughly doubling the per-entry
//! latency that bounds throughput. The Raft log is already an ordered append-only structure, so a
//! B-tree buys nothing but a second copy of the ordering. The cost is ours to carry: framing,
//! checksums and torn-tail handling below, and compaction: after enough of the log was purged,
//! `log_store` submits a full image of the live records and the writer thread replaces the file
//! with it (written to `raft.wal.compact`, fsynced, locked, renamed over `raft.wal`, dir
//! fsynced), in queue order, so the file never outgrows the live log for long.
//!
//! Record framing (little-endian):
//! `len: u32 | crc32(len bytes): u32 | crc32(payload): u32 | payload: len bytes`.
//! The header has its own checksum so that a corrupt length in the middle of the file is never
//! mistaken for a torn tail (which would silently drop everything after it).
//!
//! At open, a torn tail is dropped and the file is cut back to the last whole record:
//! - fewer than 12 bytes after the last whole record;
//! - a header whose checksum fails, when every byte from there to the end is zero (the
//!   filesystem extended the file but the data never reached the disk);
//! - a valid header whose payload runs past the end of the file;
//! - a payload checksum failure in the last record of the file.
//!
//! Anything else that fails a checksum is `WalError::Corrupt` with its offset: the node refuses
//! to start rather than replay or drop acknowledged entries.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::thread;

use tokio::sync::{mpsc, oneshot};

use super::types::TypeConfig;

pub(crate) const WAL_FILE: &str = "raft.wal";
const HEADER_LEN: usize = 12;
/// Far above any batch the batcher builds; a length beyond it cannot be a real record.
pub(crate) const MAX_RECORD: usize = 256 * 1024 * 1024;
/// How many queued requests one fsync may cover. Bounded so one group cannot grow without end.
const MAX_GROUP: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("raft log {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("raft log {path} is in use by another process (or a node that has not stopped yet)")]
    Locked { path: PathBuf },
    #[error("raft log {path} is corrupt at byte {offset}: {reason}; refusing to start")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
}

/// What a scan at open found.
#[derive(Debug)]
pub(crate) struct Scanned {
    pub(crate) records: Vec<Vec<u8>>,
    /// Bytes cut from a torn tail (0 when the file ended cleanly).
    pub(crate) dropped_tail: u64,
}

pub(crate) fn frame(payload: &[u8], out: &mut Vec<u8>) {
    // The batcher bounds batch sizes far below u32::MAX; saturate rather than wrap so an
    // impossible size fails the reader's length check instead of aliasing a small record.
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let len_bytes = len.to_le_bytes();
    out.extend_from_slice(&len_bytes);
    out.extend_from_slice(&crc32fast::hash(&len_bytes).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

/// Splits a file image into records, classifying damage as described in the module header.
/// Pure, so the classification is unit-tested without files.
pub(crate) fn scan(buf: &[u8], path: &Path) -> Result<(Vec<Vec<u8>>, usize), WalError> {
    let corrupt = |offset: usize, reason: &str| WalError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason: reason.to_string(),
    };
    let mut records = Vec::new();
    let mut pos = 0usize;
    while pos < buf.len() {
        let rest = &buf[pos..];
        if rest.len() < HEADER_LEN {
            break;
        }
        let len_bytes = &rest[0..4];
        if le_u32(&rest[4..8]) != crc32fast::hash(len_bytes) {
            if rest.iter().all(|b| *b == 0) {
                break;
            }
            return Err(corrupt(pos, "record header checksum mismatch"));
        }
        let len = le_u32(len_bytes) as usize;
        if len > MAX_RECORD {
            return Err(corrupt(pos, "record length above the maximum"));
        }
        if rest.len() < HEADER_LEN + len {
            break;
        }
        let payload = &rest[HEADER_LEN..HEADER_LEN + len];
        if le_u32(&rest[8..12]) != crc32fast::hash(payload) {
            if rest.len() == HEADER_LEN + len {
                break;
            }
            return Err(corrupt(pos, "record payload checksum mismatch"));
        }
        records.push(payload.to_vec());
        pos += HEADER_LEN + len;
    }
    Ok((records, pos))
}

/// Opens (creating if needed) the WAL, returns its records and the writer handle. A torn tail
/// is cut off and the cut is fsynced before anything new is appended after it.
pub(crate) fn open(dir: &Path) -> Result<(Scanned, WalWriter, WalClosed), WalError> {
    let path = dir.join(WAL_FILE);
    let io_err = |source| WalError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io_err)?;
    let created = !path.exists();
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err)?;
    // One writer per log: a second node on the same dir would interleave records.
    file.try_lock().map_err(|e| match e {
        std::fs::TryLockError::WouldBlock => WalError::Locked { path: path.clone() },
        std::fs::TryLockError::Error(source) => WalError::Io {
            path: path.clone(),
            source,
        },
    })?;
    if created {
        // The new directory entry must survive a crash too.
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_err)?;
    }
    let mut buf = Vec::new();
    file.read_to_end(&mut buf).map_err(io_err)?;
    let (records, good) = scan(&buf, &path)?;
    let dropped_tail = (buf.len() - good) as u64;
    if dropped_tail > 0 {
        tracing::warn!(path = %path.display(), dropped_tail, "raft log: dropping torn tail");
        file.set_len(good as u64).map_err(io_err)?;
        file.sync_all().map_err(io_err)?;
    }
    file.seek(SeekFrom::End(0)).map_err(io_err)?;
    let (writer, closed) = WalWriter::spawn(file, path.clone()).map_err(io_err)?;
    Ok((
        Scanned {
            records,
            dropped_tail,
        },
        writer,
        closed,
    ))
}

/// Who to tell once a write is durable.
pub(crate) enum Done {
    /// openraft's append callback: called only after the fdatasync that covers the entries.
    Flushed(openraft::storage::LogFlushed<TypeConfig>),
    /// An awaiting caller (vote, truncate, purge).
    Notify(oneshot::Sender<io::Result<()>>),
    /// Nobody waits; the write becomes durable with the next fsync (used for `committed`,
    /// which is only a lower-bound hint, see `log_store`). A group made only of these is
    /// written without an fsync of its own.
    Nobody,
}

impl Done {
    fn needs_sync(&self) -> bool {
        match self {
            Done::Flushed(_) | Done::Notify(_) => true,
            Done::Nobody => false,
        }
    }

    fn complete(self, result: &io::Result<()>) {
        let result = match result {
            Ok(()) => Ok(()),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        };
        match self {
            Done::Flushed(cb) => cb.log_io_completed(result),
            Done::Notify(tx) => {
                // The waiter may have been cancelled; the write is durable regardless.
                let _ = tx.send(result);
            }
            Done::Nobody => {}
        }
    }
}

struct WalRequest {
    bytes: Vec<u8>,
    done: Done,
    /// `bytes` is a full image of every live record: it replaces the file.
    rewrite: bool,
}

/// Resolves once the writer thread has written everything queued and closed the file. The
/// thread stops when the last `WalWriter` handle is dropped.
pub(crate) struct WalClosed(oneshot::Receiver<()>);

impl WalClosed {
    pub(crate) async fn wait(self) {
        let _ = self.0.await;
    }
}

/// Handle to the writer thread. Every write goes through one queue, so vote, append, truncate
/// and purge reach the disk in the order openraft issued them, with no holes.
pub(crate) struct WalWriter {
    tx: mpsc::UnboundedSender<WalRequest>,
}

impl WalWriter {
    fn spawn(file: File, path: PathBuf) -> io::Result<(Self, WalClosed)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (closed_tx, closed_rx) = oneshot::channel();
        thread::Builder::new()
            .name("certus-raft-wal".into())
            .spawn(move || {
                writer_loop(file, path, rx);
                // The file (and its lock) is closed by now.
                let _ = closed_tx.send(());
            })?;
        Ok((WalWriter { tx }, WalClosed(closed_rx)))
    }

    /// Queues already-framed bytes. Fails only when the writer thread has stopped.
    pub(crate) fn submit(&self, bytes: Vec<u8>, done: Done) -> Result<(), io::Error> {
        self.tx
            .send(WalRequest {
                bytes,
                done,
                rewrite: false,
            })
            .map_err(|_| io::Error::other("raft log writer has stopped"))
    }

    /// Queues a full image of the live log that replaces the file. The image must contain the
    /// effect of every request queued before it (the caller builds it under the same lock it
    /// submits under).
    pub(crate) fn submit_rewrite(&self, image: Vec<u8>) -> Result<(), io::Error> {
        self.tx
            .send(WalRequest {
                bytes: image,
                done: Done::Nobody,
                rewrite: true,
            })
            .map_err(|_| io::Error::other("raft log writer has stopped"))
    }

    /// Queues bytes and waits until they are on disk.
    pub(crate) async fn write_durable(&self, bytes: Vec<u8>) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.submit(bytes, Done::Notify(tx))?;
        rx.await
            .map_err(|_| io::Error::other("raft log writer has stopped"))?
    }
}

/// Group commit: take everything queued, write it, one fdatasync, then complete in order.
/// After the first I/O error every later write fails too: a log with a hole must not grow.
///
/// A group in which nobody waits (only commit marks) is written without an fsync: every node
/// saves a commit mark after every commit, so at low load that was one fdatasync in two, on a
/// disk the backends share, and an append arriving meanwhile queued behind it
/// (docs/benchmarks.md, "Raft propose latency"). Everything written reaches the disk with the
/// next fsync, and at the latest when the writer stops.
fn writer_loop(mut file: File, path: PathBuf, mut rx: mpsc::UnboundedReceiver<WalRequest>) {
    let mut failed: Option<io::ErrorKind> = None;
    let mut unsynced = false;
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(req) => group.push(req),
                Err(_) => break,
            }
        }
        let sync = group.iter().any(|r| r.done.needs_sync() || r.rewrite);
        let result = match failed {
            Some(kind) => Err(io::Error::new(kind, "raft log writer failed earlier")),
            None => write_group(&mut file, &path, &group, sync),
        };
        unsynced = !sync;
        if let Err(e) = &result {
            tracing::error!(path = %path.display(), error = %e, "raft log write failed");
            failed = Some(e.kind());
        }
        for req in group {
            req.done.complete(&result);
        }
    }
    if unsynced && failed.is_none() {
        if let Err(e) = file.sync_data() {
            tracing::warn!(path = %path.display(), error = %e, "raft log: final fsync failed");
        }
    }
}

/// Writes one group: appended to the file (and fdatasynced when `sync`), or, when the group
/// holds a rewrite, the last rewrite's image plus everything after it into a new file that
/// replaces the old one (requests before the image are contained in it).
fn write_group(file: &mut File, path: &Path, group: &[WalRequest], sync: bool) -> io::Result<()> {
    let start = group.iter().rposition(|r| r.rewrite);
    let from = start.unwrap_or(0);
    let mut bytes = Vec::with_capacity(group[from..].iter().map(|r| r.bytes.len()).sum());
    for req in &group[from..] {
        bytes.extend_from_slice(&req.bytes);
    }
    if start.is_none() {
        file.write_all(&bytes)?;
        return if sync { file.sync_data() } else { Ok(()) };
    }
    let tmp = path.with_extension("wal.compact");
    let mut fresh = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    fresh.write_all(&bytes)?;
    fresh.sync_all()?;
    // Locked before it becomes `raft.wal`: no other process may open it unlocked in between.
    fresh.try_lock().map_err(|e| match e {
        std::fs::TryLockError::WouldBlock => io::Error::other("compacted raft log is locked"),
        std::fs::TryLockError::Error(e) => e,
    })?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    fresh.seek(SeekFrom::End(0))?;
    *file = fresh;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            frame(p, &mut out);
        }
        out
    }

    #[test]
    fn frame_layout_is_stable() {
        // Golden bytes: changing the framing breaks every existing log on disk.
        let out = framed(&[b"ab"]);
        assert_eq!(&out[0..4], &[2, 0, 0, 0]);
        assert_eq!(&out[4..8], &crc32fast::hash(&[2, 0, 0, 0]).to_le_bytes());
        assert_eq!(&out[8..12], &crc32fast::hash(b"ab").to_le_bytes());
        assert_eq!(&out[12..], b"ab");
    }

    #[test]
    fn scan_reads_whole_records() {
        let buf = framed(&[b"one", b"two", b"three"]);
        let (recs, good) = scan(&buf, Path::new("x")).unwrap();
        assert_eq!(
            recs,
            vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
        assert_eq!(good, buf.len());
    }

    #[test]
    fn torn_tail_is_dropped() {
        let full = framed(&[b"one", b"two", b"three"]);
        let whole_two = framed(&[b"one", b"two"]).len();
        for cut in 1..(full.len() - whole_two) {
            let buf = &full[..full.len() - cut];
            let (recs, good) = scan(buf, Path::new("x")).unwrap();
            assert_eq!(recs.len(), 2, "cut {cut}");
            assert_eq!(good, whole_two);
        }
    }

    #[test]
    fn zero_filled_tail_is_dropped() {
        let mut buf = framed(&[b"one"]);
        let good_len = buf.len();
        buf.extend_from_slice(&[0u8; 40]);
        let (recs, good) = scan(&buf, Path::new("x")).unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(good, good_len);
    }

    #[test]
    fn bad_checksum_in_last_record_is_a_torn_tail() {
        let mut buf = framed(&[b"one", b"two"]);
        let last = buf.len() - 1;
        buf[last] ^= 0xff;
        let (recs, _) = scan(&buf, Path::new("x")).unwrap();
        assert_eq!(recs, vec![b"one".to_vec()]);
    }

    #[test]
    fn corrupt_middle_payload_is_refused() {
        let mut buf = framed(&[b"one", b"two", b"three"]);
        buf[HEADER_LEN] ^= 0x01;
        match scan(&buf, Path::new("x")) {
            Err(WalError::Corrupt { offset, .. }) => assert_eq!(offset, 0),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn corrupt_middle_length_is_refused_not_taken_for_a_torn_tail() {
        let mut buf = framed(&[b"one", b"two", b"three"]);
        let second = framed(&[b"one"]).len();
        buf[second + 1] = 0x7f; // length now points far past the end of the file
        match scan(&buf, Path::new("x")) {
            Err(WalError::Corrupt { offset, .. }) => assert_eq!(offset, second as u64),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
}
