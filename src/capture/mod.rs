//! Write-set capture: one binlog stream reader per node, following the local backend's binlog
//! and handing each `XA PREPARE` group to the session that prepared it (DESIGN §3 step 3).
//!
//! Owns: the binlog dump connection (service account, REPLICATION SLAVE), its reconnects, the
//! grouping of events into transactions, the bounded buffer of groups nobody has claimed yet,
//! and the replayable form of the events. Must not touch: sessions, XA statements (the caller
//! prepares and rolls back), certification keys (the caller derives them from `RowChange`s and
//! the catalog), or the applier's connection.
//!
//! How it works, and the choices made:
//!
//! * **Position.** The reader streams by GTID: `SET @slave_connect_state = <state>` and a dump
//!   request with an empty file name. At start the state is `@@global.gtid_binlog_pos`, i.e. the
//!   end of the binlog as of start (an empty state streams from the first binlog, which then
//!   holds no GTID groups at all). After every group that ends, captured or skipped, the state's
//!   entry for that group's domain advances to its GTID; a reconnect resumes from there, so a
//!   group cut in half by a disconnect is streamed again from its GTID event. File/offset
//!   positions are never used: the first fake ROTATE arrives before the Format_description event
//!   and mysql_common leaves its CRC in the file name (spike-rust-crates §2.3).
//! * `SET @mariadb_slave_capability=4` is mandatory: without it MariaDB rewrites GTID events and
//!   kills the stream with ERROR 1236 at the first XA PREPARE.
//! * **Groups.** A group starts at a MariaDB GTID event (0xa2, decoded by hand in `event`) and
//!   ends at XID (0x10), XA_PREPARE (0x26), a COMMIT/ROLLBACK query, or after the one query of a
//!   standalone group. Groups in the applier's GTID domain are applied transactions and are
//!   skipped silently; XA COMMIT/ROLLBACK groups are skipped silently; any other non-XA group is
//!   a write that bypassed certus: skipped with a `warn!`.
//! * **Statements.** A prepared XA group is cut into statements at STMT_END_F; a statement is
//!   its Table_map event(s) followed by its rows event(s), ready for one `BINLOG '<base64>'`.
//! * **Checksums (measured against MariaDB 10.11.19; `checksum_handling_fd_must_declare_no_checksum`
//!   in `apply` keeps it measured).** mysql_common strips the 4-byte CRC32 from every streamed
//!   event, while the server decides whether a replayed event ends with a CRC from the checksum
//!   algorithm of the Format_description event replayed before it in the session; it does not
//!   verify the CRC. The two must agree: the stream's own FD (which says CRC32) followed by
//!   events without their CRC makes the server read 4 bytes short, and the replay fails with
//!   `ERROR 1030: Got error 171 "The event was corrupt, leading to illegal data being read"`.
//!   The stream's FD with the events' original CRCs works too (spike-xa-binlog §2 b), but that
//!   ties the replayed bytes to the origin's `binlog_checksum`. We therefore replay events
//!   **without** checksums, re-encoded with a recomputed `event_size`, after the source's FD
//!   re-encoded with `checksum_alg = OFF` (its own checksum field zeroed). Every case of the
//!   replay test passes in that form, the replayed bytes are the same whatever each node's
//!   `binlog_checksum` is, and every event is 4 bytes shorter.
//! * **FD.** [`Capture::format_description`] is this node's source FD in that form; the
//!   applier sends it once per connection. The FD only tells the server how to parse the events
//!   (header and post-header lengths, checksum), which all 10.11 servers share, so a node may
//!   replay other nodes' events after its own FD.
//! * **Claiming.** The session reads `@@last_gtid` after its `XA PREPARE` and calls
//!   [`Capture::take`]; the group may already be buffered (usual: the binlog is written before
//!   PREPARE returns) or arrive later. Unclaimed groups are evicted oldest first beyond
//!   `max_buffered_groups`. When the stream breaks every waiter fails with
//!   [`CaptureError::StreamBroken`], and `take` fails fast with [`CaptureError::Disconnected`]
//!   until the reader has reconnected (with exponential backoff).
//! * **Known limits.** Compressed rows events (`log_bin_compress`) are reported as
//!   `Unsupported` to the waiter. mysql_common's event parser panics on a truncated packet
//!   (`read_exact(..).unwrap()`); each dump connection therefore runs in its own task, and a
//!   panic there is handled as a broken stream (waiters fail, the reader reconnects).

mod event;
mod group;

pub use event::{Gtid, XaXid};

use group::{Assembler, Fate, Output};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn, Opts};
use mysql_common::binlog::events::Event;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

/// The GTID domain the applier tags its transactions with (`SET SESSION gtid_domain_id`), so
/// that every node's reader can tell applied transactions from client ones. Clients stay in the
/// server's default domain 0. The value is arbitrary but fixed cluster-wide ("CE75", certus).
pub const APPLIER_GTID_DOMAIN: u32 = 0xCE75;

/// Why a group could not be handed over.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CaptureError {
    #[error("malformed binlog data: {0}")]
    Malformed(String),
    #[error("unsupported binlog content: {0}")]
    Unsupported(String),
    #[error("cannot connect the binlog reader: {0}")]
    Connect(String),
    #[error("the binlog stream broke: {0}")]
    StreamBroken(String),
    #[error("the binlog reader is not connected (reconnecting)")]
    Disconnected,
    #[error("binlog group {0} did not arrive within the timeout")]
    Timeout(Gtid),
    #[error("the binlog reader has shut down")]
    Shutdown,
}

/// Settings of one node's reader.
#[derive(Clone, Debug)]
pub struct CaptureConfig {
    /// The local backend, as the service account (needs REPLICATION SLAVE).
    pub opts: Opts,
    /// The server id this reader registers with; unique among the backend's replicas and
    /// different from the backend's own `server_id`.
    pub replica_server_id: u32,
    pub applier_domain: u32,
    pub max_buffered_groups: usize,
    /// Asked of the server as `@master_heartbeat_period`; eight silent periods count as a
    /// broken stream.
    pub heartbeat: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// How long `start` waits for the first connection and its Format_description event.
    pub start_timeout: Duration,
}

impl CaptureConfig {
    pub fn new(opts: Opts, replica_server_id: u32) -> CaptureConfig {
        CaptureConfig {
            opts,
            replica_server_id,
            applier_domain: APPLIER_GTID_DOMAIN,
            max_buffered_groups: 4096,
            heartbeat: Duration::from_secs(1),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            start_timeout: Duration::from_secs(10),
        }
    }
}

/// A prepared XA transaction's row events, as one group of the source binlog.
#[derive(Clone, Debug, PartialEq)]
pub struct CapturedGroup {
    pub gtid: Gtid,
    pub xid: XaXid,
    pub statements: Vec<CapturedStatement>,
}

/// One source statement: replayable bytes and the decoded row images.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CapturedStatement {
    /// Table_map event(s) then rows event(s), without checksums, for one `BINLOG` statement
    /// replayed after [`Capture::format_description`].
    pub events: Vec<u8>,
    pub rows: Vec<RowChange>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RowKind {
    Insert,
    Update,
    Delete,
}

/// One row's change. Inserts have only `after`, deletes only `before`, updates both.
#[derive(Clone, Debug, PartialEq)]
pub struct RowChange {
    pub schema: String,
    pub table: String,
    pub kind: RowKind,
    pub before: Option<Vec<ColumnValue>>,
    pub after: Option<Vec<ColumnValue>>,
}

/// A column of a row image. Names come from the FULL row metadata; integers carry their
/// signedness (`UInt` for UNSIGNED); DECIMAL is its text; strings, BLOB and JSON are raw bytes;
/// DATETIME/TIMESTAMP2 are `Date`.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnValue {
    pub name: String,
    pub value: mysql_async::Value,
}

type GroupResult = Result<CapturedGroup, CaptureError>;

/// Counts of groups by what the reader did with them, since start (for status surfaces).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Prepared XA groups handed to (or buffered for) sessions.
    pub captured: u64,
    /// Groups in the applier's domain: certus's own replays and TOI.
    pub skipped_applied: u64,
    /// Writes that bypassed certus (non-XA groups in a client domain).
    pub skipped_bypassed: u64,
    /// Times a streaming connection broke (failed reconnect attempts are not counted).
    pub disconnects: u64,
}

#[derive(Default)]
struct State {
    /// Where a reconnect resumes: the last ended group per GTID domain. Kept here, not in the
    /// connection task, so that it survives a panic in that task.
    resume: BTreeMap<u32, Gtid>,
    stats: CaptureStats,
    connected: bool,
    shut_down: bool,
    fd: Option<Arc<[u8]>>,
    buffer: HashMap<Gtid, GroupResult>,
    order: VecDeque<Gtid>,
    waiters: HashMap<Gtid, Vec<oneshot::Sender<GroupResult>>>,
}

struct Shared {
    state: Mutex<State>,
    max_buffered: usize,
    /// Bumped whenever `connected` or `fd` changes, for `start` to wait on.
    changed: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than losing the reader, so a poisoned lock is still used.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn notify(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Hands the group to the first waiter still listening, or buffers it.
    fn deliver(&self, gtid: Gtid, result: GroupResult) {
        let mut st = self.lock();
        let mut result = Some(result);
        for tx in st.waiters.remove(&gtid).unwrap_or_default() {
            if let Some(r) = result.take() {
                if let Err(back) = tx.send(r) {
                    result = Some(back);
                }
            }
        }
        if let Some(r) = result {
            buffer_insert(&mut st, self.max_buffered, gtid, r);
        }
    }

    fn set_connected(&self, connected: bool, broken: Option<&str>) {
        let mut st = self.lock();
        if st.connected && !connected {
            st.stats.disconnects += 1;
        }
        st.connected = connected;
        if let Some(why) = broken {
            for (_, list) in st.waiters.drain() {
                for tx in list {
                    let _ = tx.send(Err(CaptureError::StreamBroken(why.to_owned())));
                }
            }
        }
        drop(st);
        self.notify();
    }
}

fn buffer_insert(st: &mut State, max: usize, gtid: Gtid, r: GroupResult) {
    // A group streamed again after a reconnect replaces its earlier copy.
    if st.buffer.insert(gtid, r).is_none() {
        st.order.push_back(gtid);
    }
    while st.buffer.len() > max {
        match st.order.pop_front() {
            Some(old) => {
                if st.buffer.remove(&old).is_some() {
                    warn!(gtid = %old, "unclaimed binlog group evicted");
                }
            }
            None => break,
        }
    }
    // `order` may hold GTIDs already taken; keep it from growing without bound.
    if st.order.len() > max.saturating_mul(2) {
        let buffer = &st.buffer;
        st.order.retain(|g| buffer.contains_key(g));
    }
}

/// The running reader. Dropping it stops the reader task.
pub struct Capture {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Capture {
    /// Reads the current binlog end, starts the reader and returns once it is streaming and
    /// has seen the Format_description event.
    pub async fn start(cfg: CaptureConfig) -> Result<Capture, CaptureError> {
        let mut conn = Conn::new(cfg.opts.clone())
            .await
            .map_err(|e| CaptureError::Connect(e.to_string()))?;
        let pos: Option<String> = conn
            .query_first("SELECT @@global.gtid_binlog_pos")
            .await
            .map_err(|e| CaptureError::Connect(e.to_string()))?;
        let _ = conn.disconnect().await;
        let resume = parse_gtid_state(pos.as_deref().unwrap_or(""))?;
        let state = State {
            resume,
            ..State::default()
        };

        let (changed, mut changes) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            max_buffered: cfg.max_buffered_groups.max(1),
            changed,
        });
        let (stop, stop_rx) = watch::channel(false);
        let start_timeout = cfg.start_timeout;
        let task = tokio::spawn(reader_loop(cfg, Arc::clone(&shared), stop_rx));
        let capture = Capture {
            shared,
            stop,
            task: Some(task),
        };

        let ready = tokio::time::timeout(start_timeout, async {
            loop {
                {
                    let st = capture.shared.lock();
                    if st.connected && st.fd.is_some() {
                        return true;
                    }
                }
                if changes.changed().await.is_err() {
                    return false;
                }
            }
        })
        .await;
        match ready {
            Ok(true) => Ok(capture),
            _ => Err(CaptureError::Connect(
                "the binlog stream did not start in time".into(),
            )),
        }
    }

    /// The Format_description event to replay (as `BINLOG`) once per applier connection before
    /// any captured statement.
    pub fn format_description(&self) -> Result<Arc<[u8]>, CaptureError> {
        self.shared
            .lock()
            .fd
            .clone()
            .ok_or(CaptureError::Disconnected)
    }

    /// Claims the prepared XA group with this GTID (from `@@last_gtid` after `XA PREPARE`),
    /// waiting up to `timeout` for it to arrive.
    pub async fn take(&self, gtid: Gtid, timeout: Duration) -> GroupResult {
        let rx = {
            let mut st = self.shared.lock();
            if let Some(r) = st.buffer.remove(&gtid) {
                return r;
            }
            if st.shut_down {
                return Err(CaptureError::Shutdown);
            }
            if !st.connected {
                return Err(CaptureError::Disconnected);
            }
            let (tx, rx) = oneshot::channel();
            st.waiters.entry(gtid).or_default().push(tx);
            rx
        };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(CaptureError::Shutdown),
            Err(_) => {
                let mut st = self.shared.lock();
                if let Some(list) = st.waiters.get_mut(&gtid) {
                    list.retain(|tx| !tx.is_closed());
                    if list.is_empty() {
                        st.waiters.remove(&gtid);
                    }
                }
                // It may have been delivered between the timeout and the lock.
                match st.buffer.remove(&gtid) {
                    Some(r) => r,
                    None => Err(CaptureError::Timeout(gtid)),
                }
            }
        }
    }

    /// How many groups wait unclaimed (tests prove what the reader skipped).
    #[cfg(test)]
    pub(crate) fn buffered_len(&self) -> usize {
        self.shared.lock().buffer.len()
    }

    pub fn stats(&self) -> CaptureStats {
        self.shared.lock().stats
    }

    /// Whether the reader is currently streaming.
    pub fn is_connected(&self) -> bool {
        self.shared.lock().connected
    }

    /// Stops the reader and waits for it; waiters fail with `Shutdown`.
    /// Signals the reader to stop without waiting for it (for owners that share the handle).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // Not `abort()`: the reader loop must see the stop to abort its connection task, which
        // would otherwise keep streaming, detached, until the runtime ends.
        let _ = self.stop.send(true);
        drop(self.task.take());
        let mut st = self.shared.lock();
        st.shut_down = true;
        st.connected = false;
        st.waiters.clear();
    }
}

/// `gtid_binlog_pos` / `@slave_connect_state` text: comma-separated GTIDs, one per domain.
fn parse_gtid_state(s: &str) -> Result<BTreeMap<u32, Gtid>, CaptureError> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let g: Gtid = part.parse()?;
        out.insert(g.domain, g);
    }
    Ok(out)
}

fn format_gtid_state(state: &BTreeMap<u32, Gtid>) -> String {
    state
        .values()
        .map(Gtid::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

async fn reader_loop(cfg: CaptureConfig, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut backoff = cfg.backoff_min;
    loop {
        let streamed = Arc::new(AtomicBool::new(false));
        // Each connection runs in its own task: a panic inside the binlog parser (mysql_common
        // unwraps on truncated packets) then counts as a broken stream, not a dead reader.
        let mut conn_task = tokio::spawn(stream_once(
            cfg.clone(),
            Arc::clone(&shared),
            Arc::clone(&streamed),
        ));
        let outcome = tokio::select! {
            r = &mut conn_task => match r {
                Ok(r) => r,
                Err(e) => Err(CaptureError::StreamBroken(format!("binlog reader task failed: {e}"))),
            },
            _ = stop.wait_for(|s| *s) => {
                conn_task.abort();
                Ok(())
            }
        };
        let why = match outcome {
            Ok(()) if *stop.borrow() => {
                let mut st = shared.lock();
                st.shut_down = true;
                st.connected = false;
                for (_, list) in st.waiters.drain() {
                    for tx in list {
                        let _ = tx.send(Err(CaptureError::Shutdown));
                    }
                }
                drop(st);
                shared.notify();
                return;
            }
            Ok(()) => "the server ended the binlog stream".to_owned(),
            Err(e) => e.to_string(),
        };
        warn!(error = %why, "binlog stream broken; reconnecting");
        shared.set_connected(false, Some(&why));
        if streamed.load(Ordering::Relaxed) {
            backoff = cfg.backoff_min;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
        backoff = (backoff * 2).min(cfg.backoff_max);
    }
}

/// One dump connection, until it breaks. `streamed` is set once events flowed, so the caller
/// can reset its backoff.
async fn stream_once(
    cfg: CaptureConfig,
    shared: Arc<Shared>,
    streamed: Arc<AtomicBool>,
) -> Result<(), CaptureError> {
    let connect = |e: mysql_async::Error| CaptureError::Connect(e.to_string());
    let mut conn = Conn::new(cfg.opts.clone()).await.map_err(connect)?;
    let state = format_gtid_state(&shared.lock().resume);
    let heartbeat_ns = u64::try_from(cfg.heartbeat.as_nanos()).unwrap_or(u64::MAX);
    conn.query_drop("SET @mariadb_slave_capability=4")
        .await
        .map_err(connect)?;
    conn.exec_drop("SET @slave_connect_state=?", (state.clone(),))
        .await
        .map_err(connect)?;
    conn.query_drop(format!("SET @master_heartbeat_period={heartbeat_ns}"))
        .await
        .map_err(connect)?;
    let request = BinlogStreamRequest::new(cfg.replica_server_id)
        .with_filename(b"")
        .with_pos(4);
    let mut stream = conn.get_binlog_stream(request).await.map_err(connect)?;
    info!(from = %state, "binlog stream requested");

    // Generous: a loaded machine delays heartbeats, and a false alarm fails every waiter.
    let silence = cfg.heartbeat * 8;
    let mut assembler = Assembler::new(cfg.applier_domain);
    loop {
        let ev = match tokio::time::timeout(silence, next_event(&mut stream)).await {
            Err(_) => {
                return Err(CaptureError::StreamBroken(format!(
                    "no event or heartbeat for {silence:?}"
                )))
            }
            Ok(None) => return Ok(()),
            Ok(Some(Err(e))) => return Err(CaptureError::StreamBroken(e.to_string())),
            Ok(Some(Ok(ev))) => ev,
        };
        if !streamed.swap(true, Ordering::Relaxed) {
            shared.set_connected(true, None);
        }
        for out in assembler.push(&ev) {
            match out {
                Output::Nothing => {}
                Output::FormatDescription(fd) => {
                    let mut st = shared.lock();
                    if st.fd.as_deref() != Some(fd.as_slice()) {
                        st.fd = Some(fd.into());
                        drop(st);
                        shared.notify();
                    }
                }
                Output::Captured(gtid, result) => shared.deliver(gtid, result),
                Output::GroupEnded(gtid, fate) => {
                    let mut st = shared.lock();
                    st.resume.insert(gtid.domain, gtid);
                    match fate {
                        Fate::Captured => st.stats.captured += 1,
                        Fate::Applied => st.stats.skipped_applied += 1,
                        Fate::Bypassed => st.stats.skipped_bypassed += 1,
                        Fate::XaCompletion => {}
                    }
                }
            }
        }
    }
}

async fn next_event(stream: &mut BinlogStream) -> Option<mysql_async::Result<Event>> {
    std::future::poll_fn(|cx| futures_core::Stream::poll_next(Pin::new(&mut *stream), cx)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(seq: u64) -> Gtid {
        Gtid {
            domain: 0,
            server_id: 1,
            seq_no: seq,
        }
    }

    fn group(seq: u64) -> GroupResult {
        Ok(CapturedGroup {
            gtid: g(seq),
            xid: XaXid {
                format_id: 1,
                gtrid: b"x".to_vec(),
                bqual: vec![],
            },
            statements: vec![],
        })
    }

    #[test]
    fn buffer_evicts_oldest_unclaimed_group_first() {
        let mut st = State::default();
        for s in 1..=4 {
            buffer_insert(&mut st, 3, g(s), group(s));
        }
        assert!(!st.buffer.contains_key(&g(1)));
        assert!(st.buffer.contains_key(&g(2)) && st.buffer.contains_key(&g(4)));
        // Re-streamed after a reconnect: replaced, not duplicated in the eviction order.
        buffer_insert(&mut st, 3, g(4), group(4));
        assert_eq!(st.order.iter().filter(|x| **x == g(4)).count(), 1);
    }

    #[test]
    fn buffer_order_stays_bounded_when_groups_are_taken() {
        let mut st = State::default();
        for s in 1..=100 {
            buffer_insert(&mut st, 4, g(s), group(s));
            st.buffer.remove(&g(s));
        }
        assert!(st.order.len() <= 8, "order grew to {}", st.order.len());
    }

    #[test]
    fn gtid_state_round_trips_one_entry_per_domain() {
        let st = parse_gtid_state("0-1-5, 52853-2-9").unwrap();
        assert_eq!(st.len(), 2);
        assert_eq!(format_gtid_state(&st), "0-1-5,52853-2-9");
        assert!(parse_gtid_state("").unwrap().is_empty());
        assert!(parse_gtid_state("0-1").is_err());
    }
}
