//! The session's side of the replicated write path (DESIGN §3): every write transaction runs
//! inside an XA transaction on the local backend; at COMMIT it is prepared, its row events are
//! taken from the binlog, and the write set goes through Raft and certification while the XA
//! stays prepared. When this node's applier reaches the write set's seqno it asks the session
//! to `XA COMMIT` (the origin commits its own XA instead of replaying it); when certification
//! refuses it, or the applier needs its locks first, the session rolls the XA back
//! (`crate::node::prepared`). The client hears OK only once its own backend has the write set,
//! 1213 when certification refused it, and nothing (the connection closes) when the outcome is
//! unknown. DDL is replicated as a TOI statement, run by every node's applier at its seqno.

use super::{End, Session};
use crate::frontend::error::ClientError;
use crate::ids::Xid;
use crate::node::latency::{Stage, StageTimer};
use crate::node::prepared::{PreparedXa, XaRequest};
use crate::node::write_path::{Outcome, SubmitError};
use crate::protocol::command as cmd;
use crate::protocol::response::{ok_packet, ResponseTracker, Shape, Step};
use crate::protocol::{read_lenenc_int, Packet};
use crate::statement::{Ddl, DdlKind};
use crate::writeset::{self, Body, Key, SessionContext, TOICommand, WriteSet, WriteSetFlags};
use mysql_common::constants::StatusFlags;
use rand::Rng;

/// Reads the GTID of the session's last binlog group: unchanged across a statement or an XA
/// PREPARE, nothing was written.
const LAST_GTID: &str = "SELECT @@last_gtid";
/// Read after XA PREPARE: the GTID, and the isolation level the session's transactions run at
/// (a one-shot `SET TRANSACTION` is not shown; the session tracks those itself).
const LAST_GTID_AND_ISOLATION: &str = "SELECT @@last_gtid, @@tx_isolation";

/// `ER_QUERY_INTERRUPTED`: what a statement a `KILL QUERY` stopped answers.
const ER_QUERY_INTERRUPTED: u16 = 1317;

/// How often the session sends an XA ROLLBACK that a `KILL QUERY` interrupted.
const ROLLBACK_ATTEMPTS: usize = 5;

/// Whether a `KILL QUERY` stopped the statement that gave `reply` (1317).
fn interrupted(reply: &Internal) -> bool {
    matches!(reply, Internal::Err(e)
        if e.get(1..3).map(|c| u16::from_le_bytes([c[0], c[1]])) == Some(ER_QUERY_INTERRUPTED))
}

/// How long an autocommit statement's retry after a brute-force abort waits for the applier
/// to apply what it had certified (the write set that aborted it among them).
const BF_RETRY_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(2);

/// `XA START`, immune to the session's `max_statement_time`: when pipelined with a client
/// statement, a failed XA START would leave that statement outside any XA.
fn xa_start_sql(xid: &str) -> String {
    format!("SET STATEMENT max_statement_time=0 FOR XA START '{xid}'")
}

fn end_and_prepare_sql(xid: &str) -> [String; 2] {
    [format!("XA END '{xid}'"), format!("XA PREPARE '{xid}'")]
}

/// A COM_QUERY packet of the node's own.
fn query_packet(sql: &str) -> Packet {
    let mut payload = Vec::with_capacity(1 + sql.len());
    payload.push(cmd::QUERY);
    payload.extend_from_slice(sql.as_bytes());
    Packet { seq: 0, payload }
}

/// The replies to XA END, XA PREPARE and `SELECT @@last_gtid`, with the GTID read before.
struct PrepareReplies {
    ended: Internal,
    prepared: Internal,
    gtid: Internal,
    /// `@@last_gtid` before the transaction; None when unknown.
    baseline: Option<Vec<u8>>,
}

/// Whether `@@tx_isolation` names a level at which InnoDB's reads in data-changing statements
/// are locking reads.
fn isolation_locks_reads(level: &[u8]) -> bool {
    level.eq_ignore_ascii_case(b"REPEATABLE-READ") || level.eq_ignore_ascii_case(b"SERIALIZABLE")
}

impl PrepareReplies {
    /// Whether the GTID read's second column names an isolation level with locking reads.
    fn isolation_locks_reads(&self) -> bool {
        match &self.gtid {
            Internal::Rows(rows) => rows
                .first()
                .and_then(|r| r.get(1))
                .and_then(|v| v.as_deref())
                .is_some_and(isolation_locks_reads),
            _ => false,
        }
    }

    /// Whether XA PREPARE wrote no binlog group (so its XA ROLLBACK writes none either).
    fn wrote_nothing(&self) -> bool {
        match (&self.gtid, &self.baseline) {
            (Internal::Rows(rows), Some(before)) => {
                rows.first()
                    .and_then(|r| r.first())
                    .map(|v| v.as_deref().unwrap_or_default())
                    == Some(before.as_slice())
            }
            _ => false,
        }
    }
}

/// What the replies ahead of a pipelined client statement said.
struct Opened {
    /// XA START's error: the statement ran outside any XA.
    start_failed: Option<Vec<u8>>,
    /// The error of the baseline `@@last_gtid` read, when it ran and failed.
    baseline_failed: Option<Vec<u8>>,
}

/// How one try of an autocommit write ended.
enum Attempt {
    /// The statement's own response goes to the client: it failed, or it committed.
    Reply(Vec<(Packet, Option<usize>)>),
    Refused(Refusal),
}

/// What XA PREPARE and the binlog showed a committing transaction wrote.
enum Captured {
    /// No binlog group: nothing changed (already rolled back).
    Nothing,
    /// Its event group; the XA transaction is still prepared.
    Group(crate::capture::CapturedGroup),
}

/// The write set of a row transaction.
fn rows_write_set(
    fe: &crate::frontend::Frontend,
    txn: &Txn,
    statements: Vec<Vec<u8>>,
    keys: Vec<Key>,
) -> WriteSet {
    let mut flags = WriteSetFlags::default();
    if txn.unknown_rows {
        flags.insert(WriteSetFlags::UNKNOWN_ROWS);
    }
    WriteSet {
        origin: fe.write_path.node,
        xid: Xid(txn.xid.clone()),
        last_seen: txn.last_seen,
        flags,
        keys,
        body: Body::Rows(statements),
    }
}

/// How many requests a session still serves for its prepared XA once the outcome is known,
/// and how long it waits for each (a claim is followed by its request at once).
const SETTLE_REQUESTS: usize = 4;
const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Keeps a session's prepared XA registered while the session serves it, and forgets it
/// however the session leaves (an error return included).
struct PreparedGuard {
    fe: std::sync::Arc<crate::frontend::Frontend>,
    xid: String,
    xa: std::sync::Arc<PreparedXa>,
}

impl Drop for PreparedGuard {
    fn drop(&mut self) {
        self.fe.write_path.forget_prepared(&self.xid, &self.xa);
    }
}

/// An XA transaction open on the session's backend connection.
pub(super) struct Txn {
    pub(super) xid: String,
    pub(super) last_seen: crate::ids::Seqno,
    /// Every statement in it read only under locks ([`Statement::reads_under_locks`]), so
    /// far: at commit, last_seen may be read again (see [`Session::commit_prepared`]).
    pub(super) locks_all_reads: bool,
    /// Whether a statement that may write ran in it; read-only ones skip XA PREPARE.
    pub(super) wrote: bool,
    /// An UPDATE matched rows it did not change: they have no row events, hence no keys.
    pub(super) unknown_rows: bool,
}

/// Whether an OK packet reports an UPDATE that matched more rows than it changed
/// ("Rows matched: 2  Changed: 1  Warnings: 0").
pub(super) fn matched_more_than_changed(ok: &[u8]) -> bool {
    fn number_after(p: &[u8], label: &[u8]) -> Option<u64> {
        let at = p.windows(label.len()).position(|w| w == label)? + label.len();
        let digits: Vec<u8> = p[at..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .copied()
            .collect();
        std::str::from_utf8(&digits).ok()?.parse().ok()
    }
    match (
        number_after(ok, b"Rows matched: "),
        number_after(ok, b"Changed: "),
    ) {
        (Some(m), Some(c)) => m > c,
        _ => false,
    }
}

/// Why a commit did not succeed, as the client must see it.
pub(super) enum Refusal {
    Client(ClientError),
    /// The backend's own ERR packet (e.g. XA PREPARE failed).
    Backend(Vec<u8>),
}

/// A node-originated statement's reply on the session connection.
pub(super) enum Internal {
    Ok,
    Rows(Vec<Vec<Option<Vec<u8>>>>),
    Err(Vec<u8>),
}

impl Internal {
    /// The first column of the first row, or the statement's error.
    fn first_value(self) -> Result<Option<Vec<u8>>, Vec<u8>> {
        match self {
            Internal::Rows(rows) => Ok(rows
                .into_iter()
                .next()
                .and_then(|r| r.into_iter().next())
                .flatten()),
            Internal::Ok => Ok(None),
            Internal::Err(e) => Err(e),
        }
    }
}

/// Text-protocol row: each column a length-encoded string or 0xFB for NULL.
fn parse_text_row(p: &[u8]) -> Vec<Option<Vec<u8>>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < p.len() {
        if p[pos] == 0xfb {
            out.push(None);
            pos += 1;
            continue;
        }
        let Some((len, w)) = read_lenenc_int(&p[pos..]) else {
            break;
        };
        let start = pos + w;
        let end = start.saturating_add(len as usize).min(p.len());
        out.push(Some(p[start..end].to_vec()));
        pos = end;
    }
    out
}

/// The first column of a text-protocol row.
pub(super) fn row_first_column(p: &[u8]) -> Option<Vec<u8>> {
    parse_text_row(p).into_iter().next().flatten()
}

impl Session {
    /// Records in the open transaction an OK packet's "matched more than changed".
    pub(super) fn note_unchanged_rows(&mut self, payload: &[u8], status_at: Option<usize>) {
        if status_at.is_some() && payload.first() == Some(&0) && matched_more_than_changed(payload)
        {
            if let Some(t) = self.txn.as_mut() {
                t.unknown_rows = true;
            }
        }
    }

    pub(super) fn autocommit(&self) -> bool {
        self.status.contains(StatusFlags::SERVER_STATUS_AUTOCOMMIT)
    }

    fn new_xid(&self) -> String {
        let r: u128 = rand::rng().random();
        format!("certus_{}_{r:032x}", self.fe.write_path.node.0)
    }

    /// Runs a statement of the node's own on the session's backend connection.
    pub(super) async fn internal(&mut self, sql: &str) -> Result<Internal, End> {
        let [reply] = self.internal_pipelined([sql]).await?;
        Ok(reply)
    }

    /// Runs statements of the node's own back to back: all are sent before the first reply is
    /// read, so together they cost one round trip. The server still runs each on its own, in
    /// order, whatever the earlier ones returned; callers pipeline only statements for which
    /// that is right (a failed `XA END` makes the `XA PREPARE` after it fail too).
    pub(super) async fn internal_pipelined<const N: usize>(
        &mut self,
        sqls: [&str; N],
    ) -> Result<[Internal; N], End> {
        let packets = sqls.map(query_packet);
        self.send_all(packets.iter()).await?;
        let mut replies = [(); N].map(|()| Internal::Ok);
        for reply in replies.iter_mut() {
            *reply = self.read_internal().await?;
        }
        Ok(replies)
    }

    /// Writes requests to the backend back to back and flushes once: the server reads and runs
    /// them in order while the first replies travel back.
    async fn send_all(&mut self, packets: impl Iterator<Item = &Packet>) -> Result<(), End> {
        let gone = |e: std::io::Error| End::BackendGone(e.to_string());
        for p in packets {
            self.backend.writer.write_packet(p).await.map_err(gone)?;
        }
        self.backend.writer.flush().await.map_err(gone)
    }

    /// The reply to one statement of the node's own.
    async fn read_internal(&mut self) -> Result<Internal, End> {
        let (response, ok) = self.read_buffered(Shape::ResultSets).await?;
        let mut packets: Vec<Vec<u8>> = response.into_iter().map(|(p, _)| p.payload).collect();
        if !ok {
            return Ok(Internal::Err(packets.pop().unwrap_or_default()));
        }
        if packets.len() == 1 {
            return Ok(Internal::Ok);
        }
        // Column count, definitions, [EOF], rows..., terminator.
        let ncols = read_lenenc_int(&packets[0])
            .map(|(n, _)| n as usize)
            .unwrap_or(0);
        let skip = 1 + ncols + usize::from(!self.deprecate_eof());
        let rows = packets
            .get(skip..packets.len().saturating_sub(1))
            .unwrap_or_default()
            .iter()
            .map(|p| parse_text_row(p))
            .collect();
        Ok(Internal::Rows(rows))
    }

    /// The first column of the first row of an internal query.
    pub(super) async fn internal_value(
        &mut self,
        sql: &str,
    ) -> Result<Result<Option<Vec<u8>>, Vec<u8>>, End> {
        Ok(self.internal(sql).await?.first_value())
    }

    /// Opens an XA transaction. `last_seen` is read first: the snapshot is at least that new.
    pub(super) async fn start_xa(&mut self) -> Result<Result<(), Vec<u8>>, End> {
        let last_seen = self.fe.write_path.last_applied();
        let xid = self.new_xid();
        let start = xa_start_sql(&xid);
        let started = if self.last_gtid.is_none() {
            // The baseline for "did it write anything" rides along with the XA START.
            let [gtid, started] = self.internal_pipelined([LAST_GTID, &start]).await?;
            match gtid.first_value() {
                Ok(v) => self.last_gtid = Some(v.unwrap_or_default()),
                Err(e) => {
                    if !matches!(started, Internal::Err(_)) {
                        self.end_and_roll_back(&xid).await?;
                    }
                    return Ok(Err(e));
                }
            }
            started
        } else {
            self.internal(&start).await?
        };
        match started {
            Internal::Err(e) => Ok(Err(e)),
            _ => {
                self.txn = Some(super::txn::Txn {
                    xid,
                    last_seen,
                    locks_all_reads: self.reads_locked,
                    wrote: false,
                    unknown_rows: false,
                });
                Ok(Ok(()))
            }
        }
    }

    /// Rolls the open XA transaction back (ROLLBACK, or a session reset).
    pub(super) async fn rollback_xa(&mut self) -> Result<(), End> {
        if let Some(txn) = self.txn.take() {
            self.end_and_roll_back(&txn.xid).await?;
        }
        Ok(())
    }

    /// `XA END` and `XA ROLLBACK` of `xid` in one round trip; the reply to the END.
    async fn end_and_roll_back(&mut self, xid: &str) -> Result<Internal, End> {
        let end = format!("XA END '{xid}'");
        let rollback = format!("XA ROLLBACK '{xid}'");
        let [ended, rolled_back] = self.internal_pipelined([&end, &rollback]).await?;
        if interrupted(&ended) || interrupted(&rolled_back) {
            // A KILL QUERY landed on one of them: the XA may still be open.
            self.roll_back_prepared(xid).await?;
            return Ok(Internal::Ok);
        }
        Ok(ended)
    }

    /// Commits the open XA transaction through the cluster.
    pub(super) async fn commit_xa(&mut self) -> Result<Result<(), Refusal>, End> {
        let Some(mut txn) = self.txn.take() else {
            return Ok(Ok(()));
        };
        let started = StageTimer::start();
        if !txn.wrote {
            // Nothing that could write ran: nothing to replicate.
            return Ok(match self.end_and_roll_back(&txn.xid).await? {
                Internal::Err(e) => Err(Refusal::Backend(e)),
                _ => Ok(()),
            });
        }
        if !self.shared.begin_commit() {
            // A brute-force abort is killing this connection: never prepare now.
            return Err(End::BackendGone(
                "brute-force aborted before XA PREPARE".into(),
            ));
        }
        // From XA PREPARE until the XA is committed or rolled back the session is never
        // killed: a prepared XA would survive its connection, locks and all.
        let result = async {
            let replies = self.end_and_prepare(&txn).await?;
            self.commit_prepared(&mut txn, replies, &started).await
        }
        .await;
        self.shared.end_commit();
        result
    }

    /// XA END, XA PREPARE and the GTID read in one round trip.
    async fn end_and_prepare(&mut self, txn: &Txn) -> Result<PrepareReplies, End> {
        let [end, prepare] = end_and_prepare_sql(&txn.xid);
        // XA COMMIT or ROLLBACK moves @@last_gtid: the next transaction reads its own baseline.
        let baseline = self.last_gtid.take();
        let [ended, prepared, gtid] = self
            .internal_pipelined([&end, &prepare, LAST_GTID_AND_ISOLATION])
            .await?;
        Ok(PrepareReplies {
            ended,
            prepared,
            gtid,
            baseline,
        })
    }

    /// Captures the transaction XA PREPARE prepared, then orders its write set through the
    /// cluster.
    ///
    /// A transaction that read only under locks, at an isolation level where InnoDB's reads
    /// in data-changing statements lock, takes its last_seen now, while its prepared XA still
    /// holds every lock and metadata lock it took. Any write set at or below that seqno was
    /// committed here before the transaction locked the rows it shares with it (the applier
    /// cannot commit over a held lock, and a prepared XA is released to it only once
    /// registered, below), so the transaction read and wrote over that write set's result:
    /// certifying it against that write set would refuse a transaction that lost no update.
    /// The proof is in docs/certification.md.
    async fn commit_prepared(
        &mut self,
        txn: &mut Txn,
        replies: PrepareReplies,
        started: &StageTimer,
    ) -> Result<Result<(), Refusal>, End> {
        if txn.locks_all_reads && !self.isolation_untracked && replies.isolation_locks_reads() {
            txn.last_seen = txn
                .last_seen
                .max(self.fe.write_path.last_seen_under_locks());
        }
        let group = match self.prepare_and_capture(txn, replies, started).await? {
            Err(refusal) => return Ok(Err(refusal)),
            Ok(Captured::Group(group)) => group,
            Ok(Captured::Nothing) => {
                // No row changed (the XA is rolled back). If rows were matched but left
                // unchanged, the transaction still read them for update: certify it, or its
                // stale read would be a lost update.
                if !txn.unknown_rows {
                    return Ok(Ok(()));
                }
                let ws = rows_write_set(&self.fe, txn, Vec::new(), Vec::new());
                let submitted = self.fe.write_path.submit(ws).await;
                return self.outcome(submitted, started);
            }
        };
        let latency = self.fe.write_path.shared.latency.clone();
        let timer = StageTimer::start();
        let keys = match self.fe.write_path.keys_for(&group).await {
            Ok(k) => k,
            Err(e) => {
                self.roll_back_prepared(&txn.xid).await?;
                return Ok(Err(Refusal::Client(match e {
                    crate::node::write_path::KeysError::SchemaChanged(why) => {
                        // Galera's TOI would have brute-force aborted it: the client retries.
                        tracing::debug!("transaction written under a schema a TOI changed: {why}");
                        ClientError::Deadlock
                    }
                    crate::node::write_path::KeysError::Other(e) => {
                        tracing::error!("certification keys for a committing transaction: {e}");
                        ClientError::NotReady
                    }
                })));
            }
        };
        timer.stop(&latency, Stage::Keys);
        let statements = group.statements.into_iter().map(|s| s.events).collect();
        self.submit_prepared(txn, statements, keys, started).await
    }

    /// Submits the write set of the prepared XA and, until the outcome is known, serves what
    /// the applier asks of the XA: `XA COMMIT` at its seqno, or `XA ROLLBACK` when the applier
    /// needs its locks first. Then makes sure the XA ends either way.
    async fn submit_prepared(
        &mut self,
        txn: &Txn,
        statements: Vec<Vec<u8>>,
        keys: Vec<Key>,
        started: &StageTimer,
    ) -> Result<Result<(), Refusal>, End> {
        let thread = self.shared.backend_thread();
        let (xa, mut requests) = self
            .fe
            .write_path
            .prepared()
            .register(&txn.xid, thread, &keys);
        let _guard = PreparedGuard {
            fe: self.fe.clone(),
            xid: txn.xid.clone(),
            xa: xa.clone(),
        };
        let fe = self.fe.clone();
        let ws = rows_write_set(&fe, txn, statements, keys);
        let submit = async move { fe.write_path.submit(ws).await };
        tokio::pin!(submit);
        let submitted = loop {
            tokio::select! {
                Some(request) = requests.recv() => self.serve_xa(&txn.xid, &xa, request).await?,
                submitted = &mut submit => break submitted,
            }
        };
        for _ in 0..SETTLE_REQUESTS {
            if xa.is_resolved() {
                break;
            }
            if xa.claim_rollback() {
                // Aborted, refused or unknown: if certification commits it after all, the
                // applier replays it.
                self.roll_back_registered(&txn.xid, &xa).await?;
                break;
            }
            // Claimed by the applier or its watchdog: the request follows the claim.
            match tokio::time::timeout(SETTLE_WAIT, requests.recv()).await {
                Ok(Some(request)) => self.serve_xa(&txn.xid, &xa, request).await?,
                _ => break,
            }
        }
        if xa.is_committed() && matches!(submitted, Err(SubmitError::Indeterminate(_))) {
            // The session committed it at its seqno itself: the outcome is known after all.
            started.stop(&self.fe.write_path.shared.latency, Stage::Commit);
            return Ok(Ok(()));
        }
        self.outcome(submitted, started)
    }

    /// Does what the applier asks of the session's prepared XA.
    async fn serve_xa(
        &mut self,
        xid: &str,
        xa: &PreparedXa,
        request: XaRequest,
    ) -> Result<(), End> {
        match request {
            XaRequest::Commit { done } => {
                // Decided by the cluster: no KILL QUERY through the node may interrupt it.
                let shared = self.shared.clone();
                let gate = shared.kill_gate().await;
                let committed = self.internal(&format!("XA COMMIT '{xid}'")).await?;
                drop(gate);
                let result = match committed {
                    Internal::Err(e) => Err(String::from_utf8_lossy(&e).into_owned()),
                    _ => {
                        xa.set_committed();
                        Ok(())
                    }
                };
                let _ = done.send(result);
            }
            XaRequest::RollBack { done } => {
                self.roll_back_registered(xid, xa).await?;
                let _ = done.send(());
            }
        }
        Ok(())
    }

    /// Rolls back a prepared XA the session registered, once it holds the rollback claim.
    async fn roll_back_registered(&mut self, xid: &str, xa: &PreparedXa) -> Result<(), End> {
        self.roll_back_prepared(xid).await?;
        xa.set_rolled_back();
        Ok(())
    }

    /// `XA ROLLBACK` of the session's prepared XA. The next transaction reads its own baseline
    /// GTID (the rollback of a written XA writes a binlog group).
    ///
    /// `XA END` goes first in the same write: a `KILL QUERY` may have interrupted the XA END
    /// before (1317), leaving the XA ACTIVE, which XA ROLLBACK alone refuses (1399); on an
    /// IDLE or PREPARED XA it fails and changes nothing. One interrupted by a `KILL QUERY`
    /// itself is sent again: an XA left behind would refuse the session's next XA START.
    async fn roll_back_prepared(&mut self, xid: &str) -> Result<(), End> {
        self.last_gtid = None;
        let end = format!("XA END '{xid}'");
        let rollback = format!("XA ROLLBACK '{xid}'");
        for _ in 0..ROLLBACK_ATTEMPTS {
            let [ended, rolled_back] = self.internal_pipelined([&end, &rollback]).await?;
            if interrupted(&ended) || interrupted(&rolled_back) {
                continue;
            }
            match rolled_back {
                Internal::Err(e) => {
                    tracing::warn!(%xid, "XA ROLLBACK refused: {}", String::from_utf8_lossy(&e));
                    return Ok(());
                }
                Internal::Ok | Internal::Rows(_) => return Ok(()),
            }
        }
        tracing::warn!(%xid, "XA ROLLBACK interrupted {ROLLBACK_ATTEMPTS} times");
        Ok(())
    }

    /// What the client hears about a submitted write set.
    fn outcome(
        &self,
        submitted: Result<Outcome, SubmitError>,
        started: &StageTimer,
    ) -> Result<Result<(), Refusal>, End> {
        match submitted {
            Ok(Outcome::Committed { .. }) => {
                started.stop(&self.fe.write_path.shared.latency, Stage::Commit);
                Ok(Ok(()))
            }
            Ok(Outcome::Aborted { .. }) => Ok(Err(Refusal::Client(ClientError::Deadlock))),
            Ok(Outcome::ToiRefused { .. }) => Ok(Err(Refusal::Client(ClientError::Deadlock))),
            Ok(Outcome::NodeFailed(why)) => Err(End::Indeterminate(why)),
            Err(SubmitError::Definite(why)) => {
                tracing::warn!("write set not submitted: {why}");
                Ok(Err(Refusal::Client(ClientError::NotReady)))
            }
            Err(SubmitError::Indeterminate(why)) => Err(End::Indeterminate(why)),
        }
    }

    /// The group XA PREPARE wrote, from the binlog. With a group the XA stays prepared (its
    /// locks held) until its seqno: the caller must commit or roll it back. Without one
    /// (nothing written, or any failure) it is rolled back here.
    async fn prepare_and_capture(
        &mut self,
        txn: &Txn,
        replies: PrepareReplies,
        started: &StageTimer,
    ) -> Result<Result<Captured, Refusal>, End> {
        let captured = self.take_prepared_group(replies, started).await;
        if !matches!(captured, Ok(Captured::Group(_))) {
            // A failed END fails the PREPARE after it and a failed PREPARE has rolled the
            // transaction back already: the rollback makes sure.
            self.roll_back_prepared(&txn.xid).await?;
        }
        Ok(captured)
    }

    async fn take_prepared_group(
        &mut self,
        replies: PrepareReplies,
        started: &StageTimer,
    ) -> Result<Captured, Refusal> {
        let latency = self.fe.write_path.shared.latency.clone();
        let PrepareReplies {
            ended,
            prepared,
            gtid,
            baseline,
        } = replies;
        for reply in [ended, prepared] {
            if let Internal::Err(e) = reply {
                return Err(Refusal::Backend(e));
            }
        }
        let gtid = match gtid.first_value() {
            Ok(v) => v.unwrap_or_default(),
            Err(e) => return Err(Refusal::Backend(e)),
        };
        if baseline.as_deref() == Some(gtid.as_slice()) {
            // Nothing was written: no binlog group at PREPARE.
            return Ok(Captured::Nothing);
        }
        let parsed = std::str::from_utf8(&gtid).ok().and_then(|g| g.parse().ok());
        let captured = match parsed {
            Some(g) => self.fe.write_path.take_group(g).await,
            None => Err(crate::capture::CaptureError::Malformed(format!(
                "unparseable @@last_gtid {:?}",
                String::from_utf8_lossy(&gtid)
            ))),
        };
        started.stop(&latency, Stage::Capture);
        match captured {
            Ok(group) => Ok(Captured::Group(group)),
            Err(e) => {
                tracing::error!("capture of a committing transaction failed: {e}");
                Err(Refusal::Client(ClientError::NotReady))
            }
        }
    }

    pub(super) async fn send_refusal(&mut self, seq: u8, r: Refusal) -> Result<(), End> {
        let payload = match r {
            Refusal::Client(e) => e.to_packet(),
            Refusal::Backend(p) => p,
        };
        self.client
            .send(seq, &payload)
            .await
            .map_err(|e| End::ClientGone(e.to_string()))
    }

    /// An OK for a statement the node completed itself.
    pub(super) async fn send_ok(&mut self, seq: u8) -> Result<(), End> {
        let mut status = self.status;
        status.set(StatusFlags::SERVER_STATUS_IN_TRANS, self.txn.is_some());
        let p = ok_packet(0, status, 0);
        self.client
            .send(seq, &p)
            .await
            .map_err(|e| End::ClientGone(e.to_string()))
    }

    /// Sends `request` to the backend and keeps the response instead of relaying it.
    pub(super) async fn relay_buffered(
        &mut self,
        request: &Packet,
        shape: Shape,
    ) -> Result<(Vec<(Packet, Option<usize>)>, bool), End> {
        self.forward_only(request).await?;
        self.read_buffered(shape).await
    }

    /// Reads one whole response from the backend and keeps it.
    async fn read_buffered(
        &mut self,
        shape: Shape,
    ) -> Result<(Vec<(Packet, Option<usize>)>, bool), End> {
        let mut tracker = ResponseTracker::new(shape, self.deprecate_eof());
        let mut packets = Vec::new();
        loop {
            let p = self
                .backend
                .reader
                .read()
                .await
                .map_err(|e| End::BackendGone(e.to_string()))?;
            let step = tracker
                .feed(&p.payload)
                .map_err(|e| End::BackendGone(e.to_string()))?;
            packets.push((p, tracker.status_offset()));
            if let Step::Done { status } = step {
                if let Some(s) = status {
                    self.status = s;
                }
                return Ok((packets, !tracker.failed()));
            }
        }
    }

    /// Relays a kept response, clearing the in-transaction flag of its status packets: the
    /// client ran an autocommit statement, which the node wrapped in XA.
    pub(super) async fn send_buffered(
        &mut self,
        packets: Vec<(Packet, Option<usize>)>,
    ) -> Result<(), End> {
        for (mut p, status_at) in packets {
            if let Some(at) = status_at {
                if let Some(b) = p.payload.get_mut(at) {
                    *b &= !(StatusFlags::SERVER_STATUS_IN_TRANS.bits() as u8);
                }
            }
            self.client
                .write_packet(&p)
                .await
                .map_err(|e| End::ClientGone(e.to_string()))?;
        }
        self.status.remove(StatusFlags::SERVER_STATUS_IN_TRANS);
        self.client
            .writer
            .flush()
            .await
            .map_err(|e| End::ClientGone(e.to_string()))
    }

    /// A write in autocommit mode: one XA transaction around the statement, committed through
    /// the cluster before the client sees the statement's own response. A certification abort
    /// is retried `retry_autocommit` times (Galera's wsrep_retry_autocommit).
    pub(super) async fn autocommit_write(
        &mut self,
        request: &Packet,
        shape: Shape,
    ) -> Result<(), End> {
        let mut retries = self.fe.settings.retry_autocommit;
        loop {
            let in_transaction = self.backend_in_transaction();
            let attempt = if in_transaction {
                self.autocommit_stepwise(request, shape).await
            } else {
                self.autocommit_pipelined(request, shape).await
            };
            let attempt = match attempt {
                // Brute-force aborted before its commit (nothing of it committed or was
                // submitted): retried on a new backend connection like a certification
                // conflict, as Galera retries a BF-aborted autocommit statement. Not inside a
                // transaction the client opened: that is gone, and the client must hear so.
                Err(End::BackendGone(why))
                    if self.shared.is_victim() && retries > 0 && !in_transaction =>
                {
                    retries -= 1;
                    self.reconnect_after_bf_abort(&why).await?;
                    // The write set that aborted it is certified; once it is applied the
                    // retry's snapshot includes it, and certification cannot refuse the retry
                    // for a write it saw.
                    let caught_up = self.fe.write_path.applied_certified();
                    let _ = tokio::time::timeout(BF_RETRY_CATCH_UP, caught_up).await;
                    continue;
                }
                attempt => attempt?,
            };
            match attempt {
                Attempt::Reply(packets) => return self.send_buffered(packets).await,
                Attempt::Refused(Refusal::Client(ClientError::Deadlock)) if retries > 0 => {
                    retries -= 1;
                }
                Attempt::Refused(r) => return self.send_refusal(request.next_seq(), r).await,
            }
        }
    }

    /// One autocommit write in one backend round trip before the commit: `[SELECT
    /// @@last_gtid], XA START, <the client's request as it is>, XA END, XA PREPARE, SELECT
    /// @@last_gtid` are written back to back, then every reply is read in order. The server
    /// runs each whatever the earlier ones returned, hence the care when XA START failed
    /// ([`Session::settle_failed_start`]) or the statement did.
    async fn autocommit_pipelined(
        &mut self,
        request: &Packet,
        shape: Shape,
    ) -> Result<Attempt, End> {
        let xid = self.new_xid();
        let [end, prepare] = end_and_prepare_sql(&xid);
        let opened = self
            .open_around(&xid, request, &[&end, &prepare, LAST_GTID_AND_ISOLATION])
            .await?;
        let (packets, ok) = self.read_buffered(shape).await?;
        let started = StageTimer::start();
        let [ended, prepared, gtid] = [
            self.read_internal().await?,
            self.read_internal().await?,
            self.read_internal().await?,
        ];
        let Some(mut txn) = self.txn.take() else {
            let start_error = opened.start_failed.unwrap_or_default();
            return Ok(Attempt::Refused(
                self.settle_failed_start(start_error).await?,
            ));
        };
        let replies = PrepareReplies {
            ended,
            prepared,
            gtid,
            baseline: self.last_gtid.take(),
        };
        if let Some(e) = opened.baseline_failed {
            // Nothing tells whether it wrote: the XA goes, as when the read ran alone.
            self.roll_back_prepared(&txn.xid).await?;
            return Ok(Attempt::Refused(Refusal::Backend(e)));
        }
        if !ok {
            // The client gets the statement's own error; its XA (prepared empty, or rolled
            // back by the failure) goes.
            let unchanged = replies.wrote_nothing();
            self.roll_back_prepared(&txn.xid).await?;
            if unchanged {
                self.last_gtid = replies.baseline;
            }
            return Ok(Attempt::Reply(packets));
        }
        txn.wrote = true;
        // One autocommit statement reads what it updates with locking reads of the latest
        // versions: rows it left unchanged need no certification.
        txn.unknown_rows = false;
        if !self.shared.begin_commit() {
            // A brute-force abort chose the session while its statement ran and is killing its
            // connection; the XA may be prepared already. Roll it back while the connection
            // lasts; if the kill lands first, the XA is an orphan that blocks the applier, which
            // rolls such orphans back itself.
            self.roll_back_prepared(&txn.xid).await?;
            return Err(End::BackendGone(
                "brute-force aborted before its write set was submitted".into(),
            ));
        }
        let result = self.commit_prepared(&mut txn, replies, &started).await;
        self.shared.end_commit();
        Ok(match result? {
            Ok(()) => Attempt::Reply(packets),
            Err(r) => Attempt::Refused(r),
        })
    }

    /// One autocommit write a round trip at a time, when the backend is in a transaction the
    /// node did not open: XA START fails there, and the statement must then not run at all.
    async fn autocommit_stepwise(
        &mut self,
        request: &Packet,
        shape: Shape,
    ) -> Result<Attempt, End> {
        if let Err(e) = self.start_xa().await? {
            return Ok(Attempt::Refused(Refusal::Backend(e)));
        }
        if let Some(t) = self.txn.as_mut() {
            t.wrote = true;
        }
        let (packets, ok) = self.relay_buffered(request, shape).await?;
        if !ok {
            self.rollback_xa().await?;
            return Ok(Attempt::Reply(packets));
        }
        if let Some(t) = self.txn.as_mut() {
            t.unknown_rows = false;
        }
        Ok(match self.commit_xa().await? {
            Ok(()) => Attempt::Reply(packets),
            Err(r) => Attempt::Refused(r),
        })
    }

    /// Autocommit off and no transaction open: the statement opens one, so `XA START` goes
    /// ahead of it in the same write (one round trip), and the response is relayed as usual.
    pub(super) async fn open_with(&mut self, request: &Packet, write: bool) -> Result<(), End> {
        let seq = request.next_seq();
        let xid = self.new_xid();
        let opened = self.open_around(&xid, request, &[]).await?;
        if let Some(e) = opened.start_failed {
            // The statement ran in an ordinary transaction of its own: it goes.
            self.read_buffered(Shape::ResultSets).await?;
            let refusal = self.settle_failed_start(e).await?;
            return self.send_refusal(seq, refusal).await;
        }
        if let Some(e) = opened.baseline_failed {
            self.read_buffered(Shape::ResultSets).await?;
            self.rollback_xa().await?;
            return self.send_refusal(seq, Refusal::Backend(e)).await;
        }
        if let Some(t) = self.txn.as_mut() {
            t.wrote |= write;
        }
        self.relay_in_transaction().await
    }

    /// Writes `[SELECT @@last_gtid] (when the baseline is unknown), XA START, request, then
    /// `after` in one go and reads the replies up to XA START's; the rest are the
    /// caller's to read. Opens the session's transaction when XA START succeeded.
    ///
    /// XA START runs with `max_statement_time=0`, and a `KILL QUERY` through the node waits
    /// on the session's gate until XA START has answered: with autocommit on and nothing open,
    /// nothing else makes it fail (a duplicate of a random 128-bit xid, or out of memory).
    async fn open_around(
        &mut self,
        xid: &str,
        request: &Packet,
        after: &[&str],
    ) -> Result<Opened, End> {
        let last_seen = self.fe.write_path.last_applied();
        let read_baseline = self.last_gtid.is_none();
        let mut head = Vec::with_capacity(2);
        if read_baseline {
            head.push(query_packet(LAST_GTID));
        }
        head.push(query_packet(&xa_start_sql(xid)));
        let after: Vec<Packet> = after.iter().map(|s| query_packet(s)).collect();
        let shared = self.shared.clone();
        let gate = shared.kill_gate().await;
        self.send_all(head.iter().chain([request]).chain(after.iter()))
            .await?;
        let baseline_failed = if read_baseline {
            match self.read_internal().await?.first_value() {
                Ok(v) => {
                    self.last_gtid = Some(v.unwrap_or_default());
                    None
                }
                Err(e) => Some(e),
            }
        } else {
            None
        };
        let started = self.read_internal().await?;
        drop(gate);
        let start_failed = match started {
            Internal::Err(e) => Some(e),
            Internal::Ok | Internal::Rows(_) => {
                self.txn = Some(Txn {
                    xid: xid.to_owned(),
                    last_seen,
                    locks_all_reads: self.reads_locked,
                    wrote: false,
                    unknown_rows: false,
                });
                None
            }
        };
        Ok(Opened {
            start_failed,
            baseline_failed,
        })
    }

    /// After a pipelined `XA START` failed, the client's statement ran outside any XA (and
    /// committed itself, with autocommit on). Whatever it left open is rolled back; if
    /// `@@last_gtid` moved since the baseline (or either read is unknown), a write escaped
    /// replication: the node makes itself Inconsistent and the client gets an error, never OK.
    /// Otherwise the client gets XA START's own error, as if the statement had never run.
    async fn settle_failed_start(&mut self, start_error: Vec<u8>) -> Result<Refusal, End> {
        let baseline = self.last_gtid.take();
        let [rolled_back, gtid] = self.internal_pipelined(["ROLLBACK", LAST_GTID]).await?;
        if let Internal::Err(e) = rolled_back {
            tracing::warn!(
                "ROLLBACK after a failed XA START refused: {}",
                String::from_utf8_lossy(e.get(3..).unwrap_or_default())
            );
        }
        let now = gtid.first_value().ok().map(Option::unwrap_or_default);
        let why = String::from_utf8_lossy(start_error.get(3..).unwrap_or_default()).into_owned();
        match (&baseline, &now) {
            (Some(before), Some(after)) if before == after => {
                self.last_gtid = now;
                Ok(Refusal::Backend(start_error))
            }
            _ => {
                let show = |g: &Option<Vec<u8>>| match g {
                    Some(g) => String::from_utf8_lossy(g).into_owned(),
                    None => "unknown".into(),
                };
                self.fe.write_path.mark_inconsistent(format!(
                    "session {}: XA START failed ({why}) and the client statement behind it may \
                     have committed unreplicated (@@last_gtid {} before, {} after)",
                    self.id.0,
                    show(&baseline),
                    show(&now),
                ));
                Ok(Refusal::Client(ClientError::WriteEscapedReplication))
            }
        }
    }

    /// The session context a TOI statement runs with on every node.
    async fn toi_context(&mut self) -> Result<Result<SessionContext, Vec<u8>>, End> {
        let rows = match self
            .internal(
                "SELECT DATABASE(), @@sql_mode, @@character_set_client, @@character_set_connection, \
                 @@character_set_results, @@collation_connection, @@foreign_key_checks, @@unique_checks, @@time_zone",
            )
            .await?
        {
            Internal::Rows(rows) => rows,
            Internal::Err(e) => return Ok(Err(e)),
            Internal::Ok => Vec::new(),
        };
        let row = rows.into_iter().next().unwrap_or_default();
        let text = |i: usize| -> Option<String> {
            row.get(i)
                .cloned()
                .flatten()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        };
        Ok(Ok(SessionContext {
            current_schema: text(0),
            sql_mode: text(1).unwrap_or_default(),
            character_set_client: text(2).unwrap_or_else(|| "utf8mb4".into()),
            character_set_connection: text(3).unwrap_or_else(|| "utf8mb4".into()),
            character_set_results: text(4),
            collation_connection: text(5).unwrap_or_else(|| "utf8mb4_general_ci".into()),
            foreign_key_checks: text(6).as_deref() != Some("0"),
            unique_checks: text(7).as_deref() != Some("0"),
            time_zone: text(8).unwrap_or_else(|| "SYSTEM".into()),
        }))
    }

    /// Replicates a DDL statement in total order and answers with this node's applier result.
    pub(super) async fn toi(&mut self, request: &Packet, ddl: &Ddl) -> Result<(), End> {
        let seq = request.next_seq();
        let context = match self.toi_context().await? {
            Ok(c) => c,
            Err(e) => return self.send_refusal(seq, Refusal::Backend(e)).await,
        };
        let default_schema = context.current_schema.clone();
        let (privilege, scope) = super::privilege::required(ddl, default_schema.as_deref());
        match self
            .internal(&super::privilege::check_query(privilege, &scope))
            .await?
        {
            Internal::Rows(rows) if !rows.is_empty() => {}
            // A failing check query (no privilege to read the privilege tables) refuses too.
            _ => {
                let user = String::from_utf8_lossy(&self.identity.user).into_owned();
                let e = super::privilege::denied(privilege, &scope, &user, &self.identity.host);
                return self.send_refusal(seq, Refusal::Client(e)).await;
            }
        }
        let mut keys = Vec::new();
        let name = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match ddl.kind {
            DdlKind::CreateDatabase | DdlKind::AlterDatabase | DdlKind::DropDatabase => {
                for o in &ddl.objects {
                    keys.push(Key::exclusive(writeset::schema_key(&name(&o.name))));
                }
            }
            _ => {
                for o in ddl.objects.iter().chain(ddl.on_table.iter()) {
                    let schema = o
                        .schema
                        .as_deref()
                        .map(name)
                        .or_else(|| default_schema.clone())
                        .unwrap_or_default();
                    keys.push(Key::exclusive(writeset::table_key(&schema, &name(&o.name))));
                }
            }
        }
        if keys.is_empty() {
            // Accounts, grants and other objects without table names: one cluster-wide key.
            keys.push(Key::exclusive(writeset::table_key("mysql", "global_priv")));
        }
        writeset::normalize_keys(&mut keys);
        let ws = WriteSet {
            origin: self.fe.write_path.node,
            xid: Xid(self.new_xid()),
            last_seen: self.fe.write_path.last_applied(),
            flags: WriteSetFlags::default(),
            keys,
            body: Body::Toi(TOICommand {
                statement: request.payload.get(1..).unwrap_or_default().to_vec(),
                context,
            }),
        };
        match self.fe.write_path.submit(ws).await {
            Ok(Outcome::Committed { .. }) => self.send_ok(seq).await,
            Ok(Outcome::ToiRefused {
                code,
                state,
                message,
            }) => {
                let err = mysql_common::packets::ErrPacket::Error(
                    mysql_common::packets::ServerError::new(
                        code,
                        Some(mysql_common::packets::SqlState::new(
                            state.as_bytes().try_into().unwrap_or(*b"HY000"),
                        )),
                        message.into_bytes(),
                    ),
                );
                let mut p = Vec::new();
                mysql_common::proto::MySerialize::serialize(&err, &mut p);
                self.send_refusal(seq, Refusal::Backend(p)).await
            }
            Ok(Outcome::Aborted { .. }) => {
                self.send_refusal(seq, Refusal::Client(ClientError::Deadlock))
                    .await
            }
            Ok(Outcome::NodeFailed(why)) => Err(End::Indeterminate(why)),
            Err(SubmitError::Definite(why)) => {
                tracing::warn!("TOI not submitted: {why}");
                self.send_refusal(seq, Refusal::Client(ClientError::NotReady))
                    .await
            }
            Err(SubmitError::Indeterminate(why)) => Err(End::Indeterminate(why)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_text_row;

    #[test]
    fn unchanged_matched_rows_are_recognised_in_ok_packets() {
        let mut ok = vec![0, 0, 0, 2, 0, 0, 0];
        ok.extend_from_slice(b"(Rows matched: 1  Changed: 0  Warnings: 0");
        assert!(super::matched_more_than_changed(&ok));
        let mut ok = vec![0, 1, 0, 2, 0, 0, 0];
        ok.extend_from_slice(b"(Rows matched: 3  Changed: 3  Warnings: 0");
        assert!(!super::matched_more_than_changed(&ok));
        assert!(!super::matched_more_than_changed(&[0, 1, 0, 2, 0, 0, 0]));
    }

    #[test]
    fn a_prepare_wrote_nothing_only_when_the_gtid_is_the_known_baseline() {
        use super::{Internal, PrepareReplies};
        let replies = |gtid: Internal, baseline: Option<&str>| PrepareReplies {
            ended: Internal::Ok,
            prepared: Internal::Ok,
            gtid,
            baseline: baseline.map(|b| b.as_bytes().to_vec()),
        };
        let row = |g: &str| Internal::Rows(vec![vec![Some(g.as_bytes().to_vec())]]);
        assert!(replies(row("0-1-7"), Some("0-1-7")).wrote_nothing());
        assert!(!replies(row("0-1-8"), Some("0-1-7")).wrote_nothing());
        // A fresh session's empty baseline and an empty @@last_gtid.
        assert!(replies(row(""), Some("")).wrote_nothing());
        // Unknown baseline, failed read: never "nothing".
        assert!(!replies(row("0-1-7"), None).wrote_nothing());
        assert!(!replies(Internal::Err(vec![0xff]), Some("0-1-7")).wrote_nothing());
    }

    #[test]
    fn pipelined_xa_start_ignores_the_sessions_statement_timeout() {
        assert_eq!(
            super::xa_start_sql("certus_1_ab"),
            "SET STATEMENT max_statement_time=0 FOR XA START 'certus_1_ab'"
        );
    }

    #[test]
    fn text_rows_parse_nulls_and_strings() {
        assert_eq!(
            parse_text_row(&[3, b'a', b'b', b'c', 0xfb, 0]),
            vec![Some(b"abc".to_vec()), None, Some(Vec::new())]
        );
        // A truncated length never reads past the packet.
        assert_eq!(parse_text_row(&[5, b'a']), vec![Some(b"a".to_vec())]);
    }
}
