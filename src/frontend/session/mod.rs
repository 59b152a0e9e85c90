//! One client session after login: reads commands, relays them to the session's backend
//! connection and relays the response back unchanged. The response tracker only finds where a
//! response ends; nothing is re-encoded. A malformed, oversized or stalled client packet, or a
//! broken backend connection, ends this session alone, and its backend connection is closed with
//! it (never leaked).

use super::error::ClientError;
use super::handshake::{self, Identity, Options, NATIVE};
use super::Frontend;
use crate::backend::session_conn::{Login, LoginReply, SessionConn};
use crate::ids::SessionId;
use crate::protocol::command as cmd;
use crate::protocol::response::{ResponseTracker, Shape, Step};
use crate::protocol::{Packet, PacketError, PacketReader, PacketWriter};
use crate::statement::{self, Statement};
use mysql_common::constants::{CapabilityFlags, StatusFlags};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tracing::debug;

pub(crate) struct ClientIo {
    pub(crate) reader: PacketReader<OwnedReadHalf>,
    pub(crate) writer: PacketWriter<OwnedWriteHalf>,
    pub(crate) peer: std::net::SocketAddr,
    /// While a split multi-statement batch runs: continues its sequence ids across statements
    /// and flags every result but the last (`batch.rs`).
    batch: Option<batch::BatchOut>,
}

impl ClientIo {
    pub(crate) fn new(r: OwnedReadHalf, w: OwnedWriteHalf, peer: std::net::SocketAddr) -> Self {
        ClientIo {
            reader: PacketReader::new(r, 64 * 1024),
            writer: PacketWriter::new(w),
            peer,
            batch: None,
        }
    }

    /// Buffers one packet for the client (shaped for the running batch, if any); returns the
    /// next sequence id.
    pub(crate) async fn write(&mut self, seq: u8, payload: &[u8]) -> std::io::Result<u8> {
        let Some(b) = self.batch.as_mut() else {
            return self.writer.write(seq, payload).await;
        };
        let (seq, payload) = b.shape(payload);
        let next = self.writer.write(seq, &payload).await?;
        b.advance(next);
        Ok(next)
    }

    pub(crate) async fn write_packet(&mut self, p: &Packet) -> std::io::Result<u8> {
        self.write(p.seq, &p.payload).await
    }

    pub(crate) async fn send(&mut self, seq: u8, payload: &[u8]) -> std::io::Result<()> {
        self.write(seq, payload).await?;
        self.writer.flush().await
    }

    /// Sends an error; a client that is already gone is not an error of ours.
    pub(crate) async fn send_error(&mut self, seq: u8, e: &ClientError) {
        let _ = self.send(seq, &e.to_packet()).await;
    }

    /// An error sent instead of the server greeting (no SQLSTATE: see `to_pre_greeting_packet`).
    pub(crate) async fn send_pre_greeting_error(&mut self, e: &ClientError) {
        let _ = self.send(0, &e.to_pre_greeting_packet()).await;
    }
}

/// Why a session ended; only for logging.
#[derive(Debug)]
#[allow(dead_code)] // The payloads are read through Debug when the end is logged.
enum End {
    ClientQuit,
    ClientGone(String),
    Idle,
    Stalled,
    TooLarge,
    BackendGone(String),
    Refused,
    /// A commit whose outcome cannot be known: closing the connection is the only honest
    /// answer (the client sees 2013), never OK and never 1213.
    Indeterminate(String),
}

mod batch;
mod privilege;
mod strict;
mod timers;
mod txn;

pub(crate) struct Session {
    fe: Arc<Frontend>,
    id: SessionId,
    client: ClientIo,
    backend: SessionConn,
    identity: Identity,
    opts: Options,
    /// The greeting's nonce: COM_CHANGE_USER tokens are computed against it.
    nonce: [u8; 20],
    /// The last status flags the backend reported (IN_TRANS, AUTOCOMMIT, ...).
    status: StatusFlags,
    shared: Arc<super::SessionShared>,
    /// The XA transaction open on the backend connection, if any.
    txn: Option<txn::Txn>,
    /// `@@last_gtid` of the backend session as last read; None when it must be read again.
    last_gtid: Option<Vec<u8>>,
    /// The current schema, for re-opening the backend connection after a brute-force abort.
    db: Option<Vec<u8>>,
    /// Prepared statements by backend id, and whether each may write.
    prepared: std::collections::HashMap<u32, Prepared>,
    /// SQL-level prepared statements (`PREPARE name FROM ...`): their text by lower-cased name,
    /// for strict mode to check at every EXECUTE.
    sql_prepared: std::collections::HashMap<Vec<u8>, Vec<u8>>,
    /// The session's own settings (successful `SET` statements of session system variables,
    /// user variables, `NAMES`, `CHARACTER SET`), replayed on a new backend connection after a
    /// brute-force abort, so the client keeps the session it set up.
    settings: SessionSettings,
    /// The session's wsrep_sync_wait (bit 1: reads are causal).
    sync_wait: u32,
    /// Whether every row the statement being run reads, it reads under a lock
    /// ([`Statement::reads_under_locks`]; all of them for a multi-statement query).
    reads_locked: bool,
    /// Set for good once the session ran a statement that may change its isolation level
    /// unseen ([`Statement::may_change_isolation`]): its transactions then keep the last_seen
    /// read when they began.
    isolation_untracked: bool,
    /// Whether COM_QUERY may carry several statements (CLIENT_MULTI_STATEMENTS at login, or
    /// COM_SET_OPTION since).
    multi_statements: bool,
    idle: timers::IdleTimer,
}

/// A prepared statement, by the id the client was given.
#[derive(Clone)]
struct Prepared {
    route: Route,
    /// Shared, so that each execution does not copy the classified statement.
    statement: Arc<Statement>,
    /// The text, to prepare it again on a new backend connection after a brute-force abort.
    text: Vec<u8>,
    /// The id on the current backend connection (differs from the client's after re-preparing).
    backend_id: u32,
}

/// What the session does with one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    /// Relay; it reads (it starts a transaction only when autocommit is off).
    Read,
    /// Relay without touching the transaction state (SET, SHOW, USE, savepoints, ...).
    Pass,
    /// May write: runs inside an XA transaction.
    Write,
    Begin,
    Commit,
    Rollback,
    Toi(crate::statement::Ddl),
    SetAutocommit,
    Reject(&'static str),
}

fn route(stmt: &Statement) -> Route {
    use crate::statement::Rejection;
    if let Some(r) = stmt.rejection() {
        return Route::Reject(match r {
            Rejection::LockTables => "LOCK TABLES through certus (use transactions)",
            Rejection::UnlockTables => "UNLOCK TABLES through certus",
            Rejection::FlushTablesWithReadLock => "FLUSH TABLES WITH READ LOCK through certus",
            Rejection::FlushTablesForExport => "FLUSH TABLES ... FOR EXPORT through certus",
            Rejection::UserLock(_) => "user-level locks (GET_LOCK and friends) through certus",
            Rejection::Binlog => "BINLOG statements from clients",
            Rejection::Xa => "client XA transactions through certus",
            Rejection::SqlLogBin => "SET sql_log_bin through certus",
        });
    }
    match stmt {
        Statement::Read(_) => Route::Read,
        Statement::Write(_) | Statement::Other | Statement::Compound => Route::Write,
        Statement::Execute { .. } | Statement::ExecuteImmediate { .. } => Route::Write,
        Statement::Begin {
            read_only: true, ..
        } => Route::Pass,
        Statement::Begin { .. } => Route::Begin,
        Statement::Commit(_) => Route::Commit,
        Statement::Rollback(_) => Route::Rollback,
        Statement::Ddl(d) => Route::Toi(d.clone()),
        Statement::SetStatementFor { inner, .. } => route(inner),
        Statement::Set(_) if stmt.autocommit().is_some() => Route::SetAutocommit,
        _ => Route::Pass,
    }
}

impl Session {
    pub(crate) fn new(
        fe: Arc<Frontend>,
        id: SessionId,
        shared: Arc<super::SessionShared>,
        io: (ClientIo, SessionConn),
        login: handshake::Established,
    ) -> Session {
        let (client, backend) = io;
        let handshake::Established {
            identity,
            opts,
            nonce,
            db,
        } = login;
        Session {
            id,
            client,
            backend,
            identity,
            opts,
            nonce,
            status: StatusFlags::SERVER_STATUS_AUTOCOMMIT,
            shared,
            txn: None,
            // A fresh backend session has written no GTID yet.
            last_gtid: Some(Vec::new()),
            db,
            prepared: std::collections::HashMap::new(),
            sql_prepared: std::collections::HashMap::new(),
            settings: SessionSettings::default(),
            sync_wait: fe.default_sync_wait.load(Ordering::Relaxed),
            reads_locked: false,
            isolation_untracked: false,
            multi_statements: opts
                .capabilities
                .contains(CapabilityFlags::CLIENT_MULTI_STATEMENTS),
            idle: timers::IdleTimer::new(fe.settings.idle_timeout),
            fe,
        }
    }

    fn deprecate_eof(&self) -> bool {
        self.opts
            .capabilities
            .contains(CapabilityFlags::CLIENT_DEPRECATE_EOF)
    }

    pub(crate) async fn run(mut self) {
        let end = loop {
            let packet = match self.read_command().await {
                Ok(p) => p,
                Err(end) => break end,
            };
            let seq = packet.next_seq();
            match self.dispatch(packet).await {
                Ok(()) => {}
                Err(End::BackendGone(why)) if self.shared.is_victim() => {
                    if let Err(end) = self.recover_from_bf_abort(seq, &why).await {
                        break end;
                    }
                }
                Err(end) => break end,
            }
        };
        debug!(session = self.id.0, ?end, "session ended");
        if !matches!(end, End::BackendGone(_)) {
            // Tell the backend we are leaving so it logs no aborted connection; best effort.
            let _ = self.backend.writer.write(0, &[cmd::QUIT]).await;
            let _ = self.backend.writer.flush().await;
        }
        let _ = self.client.writer.shutdown().await;
    }

    /// Waits for the next command: up to the idle timeout for its first byte, then up to the net
    /// read timeout for the rest of the packet.
    async fn read_command(&mut self) -> Result<Packet, End> {
        if !self.client.reader.has_buffered() {
            self.idle.start_waiting();
            tokio::select! {
                biased;
                r = self.client.reader.fill_buf() => match r {
                    Ok(b) if !b.is_empty() => {}
                    _ => return Err(End::ClientGone("closed".into())),
                },
                () = self.idle.expired() => return Err(End::Idle),
            }
        }
        let stall = self.fe.settings.net_read_timeout;
        match timers::unless_stalled(self.client.reader.read(), stall).await {
            Err(()) => Err(End::Stalled),
            Ok(Ok(p)) => Ok(p),
            Ok(Err(PacketError::TooLarge { .. })) => {
                self.client
                    .send_error(1, &ClientError::PacketTooLarge)
                    .await;
                Err(End::TooLarge)
            }
            Ok(Err(e)) => Err(End::ClientGone(e.to_string())),
        }
    }

    async fn dispatch(&mut self, packet: Packet) -> Result<(), End> {
        let Some(command) = packet.first_byte() else {
            // An empty packet carries no command; MariaDB answers it as an unknown command.
            return self
                .reply_error(&packet, &ClientError::UnknownCommand)
                .await;
        };
        let mut packet = packet;
        if matches!(
            command,
            cmd::STMT_EXECUTE
                | cmd::STMT_FETCH
                | cmd::STMT_SEND_LONG_DATA
                | cmd::STMT_CLOSE
                | cmd::STMT_RESET
        ) {
            self.to_backend_stmt_id(&mut packet);
        }
        match command {
            cmd::QUIT => Err(End::ClientQuit),
            cmd::QUERY => self.query(packet).await,
            cmd::STMT_PREPARE => self.prepare(packet).await,
            cmd::STMT_EXECUTE => self.execute(packet).await,
            cmd::STMT_FETCH => self.relay(&packet, Shape::Rows).await.map(drop),
            cmd::FIELD_LIST => self.relay(&packet, Shape::FieldList).await.map(drop),
            cmd::STMT_SEND_LONG_DATA => self.forward_only(&packet).await,
            cmd::STMT_CLOSE => {
                if let Some(id) = stmt_id(&packet) {
                    self.prepared.retain(|_, p| p.backend_id != id);
                }
                self.forward_only(&packet).await
            }
            cmd::INIT_DB => {
                if self.relay(&packet, Shape::Single).await? {
                    self.db = packet.payload.get(1..).map(<[u8]>::to_vec);
                }
                Ok(())
            }
            cmd::RESET_CONNECTION => {
                // Like a disconnect: the open transaction is rolled back.
                self.forget_session().await?;
                self.relay(&packet, Shape::Single).await.map(drop)
            }
            cmd::SET_OPTION => {
                if self.relay(&packet, Shape::Single).await? {
                    // MYSQL_OPTION_MULTI_STATEMENTS_ON is 0, _OFF is 1.
                    match packet.payload.get(1..3) {
                        Some([0, 0]) => self.multi_statements = true,
                        Some([1, 0]) => self.multi_statements = false,
                        _ => {}
                    }
                }
                Ok(())
            }
            cmd::PING | cmd::STATISTICS | cmd::DEBUG | cmd::STMT_RESET => {
                self.relay(&packet, Shape::Single).await.map(drop)
            }
            cmd::PROCESS_KILL => self.process_kill(packet).await,
            cmd::CHANGE_USER => self.change_user(packet).await,
            _ => {
                self.reply_error(&packet, &ClientError::UnknownCommand)
                    .await
            }
        }
    }

    async fn reply_error(&mut self, request: &Packet, e: &ClientError) -> Result<(), End> {
        self.client
            .send(request.next_seq(), &e.to_packet())
            .await
            .map_err(|e| End::ClientGone(e.to_string()))
    }

    async fn forward_only(&mut self, request: &Packet) -> Result<(), End> {
        let gone = |e: std::io::Error| End::BackendGone(e.to_string());
        self.backend
            .writer
            .write_packet(request)
            .await
            .map_err(gone)?;
        self.backend.writer.flush().await.map_err(gone)
    }

    /// Sends `request` to the backend and relays its whole response to the client. Returns
    /// whether it succeeded (did not end in an ERR packet).
    async fn relay(&mut self, request: &Packet, shape: Shape) -> Result<bool, End> {
        Ok(self.relay_for_error(request, shape).await?.is_none())
    }

    /// [`Session::relay`], answering with the error code the response ended in, if it did.
    async fn relay_for_error(
        &mut self,
        request: &Packet,
        shape: Shape,
    ) -> Result<Option<u16>, End> {
        self.forward_only(request).await?;
        self.relay_response(shape).await
    }

    /// Relays the whole response to a request already sent, answering with the error code it
    /// ended in, if it did.
    async fn relay_response(&mut self, shape: Shape) -> Result<Option<u16>, End> {
        let mut tracker = ResponseTracker::new(shape, self.deprecate_eof());
        // While the backend works, notice a client that hangs up, so its query does not run on
        // for nobody. Bytes the client sends meanwhile stay buffered for the next command.
        let mut watch_client = !self.client.reader.has_buffered();
        loop {
            let read = if watch_client {
                tokio::select! {
                    biased;
                    r = self.backend.reader.read() => r,
                    c = self.client.reader.fill_buf() => {
                        if matches!(c, Ok(b) if !b.is_empty()) {
                            watch_client = false;
                            continue;
                        }
                        self.kill_backend_connection();
                        return Err(End::ClientGone("closed during a response".into()));
                    }
                }
            } else {
                self.backend.reader.read().await
            };
            let p = match read {
                Ok(p) => p,
                Err(e) => {
                    // The client learns the connection is gone the way MariaDB would show it:
                    // the connection closes (2013 on its side).
                    return Err(End::BackendGone(e.to_string()));
                }
            };
            let step = tracker.feed(&p.payload);
            self.note_unchanged_rows(&p.payload, tracker.status_offset());
            self.client
                .write_packet(&p)
                .await
                .map_err(|e| End::ClientGone(e.to_string()))?;
            match step {
                Ok(Step::More) => {}
                Ok(Step::Done { status }) => {
                    if let Some(s) = status {
                        self.status = s;
                    }
                    self.client
                        .writer
                        .flush()
                        .await
                        .map_err(|e| End::ClientGone(e.to_string()))?;
                    return Ok(tracker.error_code());
                }
                Err(e) => return Err(End::BackendGone(e.to_string())),
            }
        }
    }

    /// Ends the backend connection from outside (the session stops reading it): its running
    /// statement stops and its transaction rolls back, as if the client had reached MariaDB.
    fn kill_backend_connection(&self) {
        let pool = self.fe.backend.pool.clone();
        let thread = self.backend.thread_id;
        tokio::spawn(async move {
            use mysql_async::prelude::Queryable;
            if let Ok(mut c) = pool.get_conn().await {
                let _ = c.query_drop(format!("KILL CONNECTION {thread}")).await;
            }
        });
    }

    /// COM_QUERY. A batch of several statements (CLIENT_MULTI_STATEMENTS) runs statement by
    /// statement, as MariaDB runs it (`batch.rs`); one statement goes to `query_one`.
    async fn query(&mut self, packet: Packet) -> Result<(), End> {
        let sql = packet.payload.get(1..).unwrap_or_default();
        // Cheap filter first: without a `;` there is one statement.
        if self.multi_statements && sql.contains(&b';') {
            let pieces = statement::pieces(sql);
            if pieces.len() > 1 {
                return self.batch(packet, pieces).await;
            }
        }
        self.query_one(packet).await
    }

    /// One statement of COM_QUERY: statements that name connection ids are mapped; the rest is
    /// routed and relayed.
    async fn query_one(&mut self, packet: Packet) -> Result<(), End> {
        let sql = packet.payload.get(1..).unwrap_or_default();
        if contains_ascii_ci(sql, b"kill") {
            let ranges = statement::split(sql);
            let kills = ranges
                .iter()
                .filter(|r| is_kill(&sql[(*r).clone()]))
                .count();
            if kills > 0 {
                if ranges.len() > 1 {
                    let e = ClientError::NotSupported(
                        "KILL inside a multi-statement query through certus",
                    );
                    return self.reply_error(&packet, &e).await;
                }
                return self.kill_statement(packet).await;
            }
        }
        let packet = self.with_connection_id(packet);
        let text = packet.payload.get(1..).unwrap_or_default();
        if contains_ascii_ci(text, b"show") {
            if let Some(show) = statement::wsrep::parse_show(text) {
                return self.show_status(packet, show).await;
            }
        }
        let packet = self.with_wsrep_values(packet);
        let sql = packet.payload.get(1..).unwrap_or_default();
        let ranges = statement::split(sql);
        let routes: Vec<(Route, Statement)> = ranges
            .iter()
            .map(|r| {
                let st = statement::classify(&sql[r.clone()]);
                (route(&st), st)
            })
            .collect();
        // Strict mode: refuse writes to tables the cluster cannot replicate, before any runs.
        let writes: Vec<&[u8]> = ranges
            .iter()
            .zip(&routes)
            .filter(|(_, (r, _))| *r == Route::Write)
            .map(|(range, _)| &sql[range.clone()])
            .collect();
        if !writes.is_empty() {
            let fe = self.fe.clone();
            let db = self.db.clone();
            if let Some(e) = strict::strict_refusal(&fe, db.as_deref(), &writes).await {
                return self.reply_error(&packet, &e).await;
            }
        }
        // SQL-level PREPARE / EXECUTE / EXECUTE IMMEDIATE: the statement behind them is checked.
        if let ([range], [(_, st)]) = (ranges.as_slice(), routes.as_slice()) {
            if let Some(e) = self.dynamic_sql_refusal(st, &sql[range.clone()]).await? {
                return self.reply_error(&packet, &e).await;
            }
        }
        self.note_reads(routes.iter().map(|(_, st)| st));
        if routes.len() > 1 {
            return self.multi_statement(packet, &routes).await;
        }
        let (r, st) = routes
            .into_iter()
            .next()
            .unwrap_or((Route::Pass, Statement::Empty));
        self.run_routed(packet, r, &st).await
    }

    /// One statement, by its route.
    async fn run_routed(&mut self, packet: Packet, r: Route, st: &Statement) -> Result<(), End> {
        let seq = packet.next_seq();
        if let Route::Reject(what) = r {
            if !self.fe.not_ready() && self.ignore_with_warning(&packet, st).await? {
                return Ok(());
            }
            return self
                .reply_error(&packet, &ClientError::NotSupported(what))
                .await;
        }
        // A node that is not Primary, or that failed to apply, answers only SHOW and SET.
        if !matches!(r, Route::Pass | Route::SetAutocommit) && self.fe.not_ready() {
            return self.reply_error(&packet, &ClientError::NotReady).await;
        }
        // Statements that commit implicitly in MariaDB commit the open transaction first.
        if self.txn.is_some() && (st.implicit_commit() || matches!(r, Route::Begin | Route::Toi(_)))
        {
            if let Err(refusal) = self.commit_xa().await? {
                return self.send_refusal(seq, refusal).await;
            }
        }
        if let Some(t) = self.txn.as_mut() {
            t.locks_all_reads &= self.reads_locked;
        }
        if let Statement::Set(assignments) = st {
            if assignments.iter().any(|a| is_sync_wait(&a.target)) {
                return self.set_sync_wait(&packet, assignments).await;
            }
        }
        // Causal read: first catch up with everything the cluster had committed.
        if r == Route::Read && self.sync_wait & 1 == 1 && !causal_wait(self.fe.clone()).await {
            return self
                .reply_error(&packet, &ClientError::LockWaitTimeout)
                .await;
        }
        match r {
            Route::Reject(_) => Ok(()),
            Route::Pass | Route::SetAutocommit => {
                let ok = self.relay(&packet, Shape::ResultSets).await?;
                if ok {
                    match st {
                        Statement::Use { db } => self.db = Some(db.clone()),
                        Statement::Set(assignments) => self
                            .settings
                            .remember(assignments, packet.payload.get(1..).unwrap_or_default()),
                        _ => {}
                    }
                }
                Ok(())
            }
            Route::Read | Route::Write => self.data_statement(&packet, r == Route::Write).await,
            Route::Begin => match self.start_xa().await? {
                Ok(()) => self.send_ok(seq).await,
                Err(e) => self.send_refusal(seq, txn::Refusal::Backend(e)).await,
            },
            Route::Commit => {
                if self.txn.is_none() {
                    return self.relay(&packet, Shape::ResultSets).await.map(drop);
                }
                match self.commit_xa().await? {
                    Ok(()) => self.send_ok(seq).await,
                    Err(refusal) => self.send_refusal(seq, refusal).await,
                }
            }
            Route::Rollback => {
                if self.txn.is_none() {
                    return self.relay(&packet, Shape::ResultSets).await.map(drop);
                }
                self.rollback_xa().await?;
                self.send_ok(seq).await
            }
            Route::Toi(ddl) => self.toi(&packet, &ddl).await,
        }
    }

    /// `SET [SESSION|GLOBAL] wsrep_sync_wait = N`: the node's own variable, kept here.
    async fn set_sync_wait(
        &mut self,
        packet: &Packet,
        assignments: &[statement::Assignment],
    ) -> Result<(), End> {
        if !assignments.iter().all(|a| is_sync_wait(&a.target)) {
            let e = ClientError::NotSupported(
                "wsrep_sync_wait together with other variables in one SET through certus",
            );
            return self.reply_error(packet, &e).await;
        }
        for a in assignments {
            let text = String::from_utf8_lossy(&a.value);
            let value = text
                .trim()
                .trim_matches('\'')
                .parse::<u32>()
                .ok()
                .filter(|v| *v <= 15);
            let Some(value) = value else {
                // MariaDB's words for a bad value of an integer variable.
                let e = ClientError::WrongValueForVar("wsrep_sync_wait".into(), text.into_owned());
                return self.reply_error(packet, &e).await;
            };
            match &a.target {
                statement::SetTarget::Global(_) => {
                    self.fe.default_sync_wait.store(value, Ordering::Relaxed)
                }
                _ => self.sync_wait = value,
            }
        }
        self.send_ok(packet.next_seq()).await
    }

    /// Several statements in one COM_QUERY from a client without CLIENT_MULTI_STATEMENTS: the
    /// backend refuses the text with a syntax error. Reads and writes are relayed as one unit
    /// (so nothing escapes capture should the backend disagree with the splitter); transaction
    /// control and DDL are refused here with a clear error.
    async fn multi_statement(
        &mut self,
        packet: Packet,
        routes: &[(Route, Statement)],
    ) -> Result<(), End> {
        if let Some((Route::Reject(what), _)) =
            routes.iter().find(|(r, _)| matches!(r, Route::Reject(_)))
        {
            return self
                .reply_error(&packet, &ClientError::NotSupported(what))
                .await;
        }
        let plain = routes
            .iter()
            .all(|(r, _)| matches!(r, Route::Read | Route::Write | Route::Pass));
        if !plain {
            let e = ClientError::NotSupported(
                "transaction control or DDL inside a multi-statement query through certus",
            );
            return self.reply_error(&packet, &e).await;
        }
        let writes = routes.iter().any(|(r, _)| *r == Route::Write);
        let reads = routes.iter().any(|(r, _)| *r == Route::Read);
        let route = if writes {
            Route::Write
        } else if reads {
            Route::Read
        } else {
            Route::Pass
        };
        self.run_routed(packet, route, &Statement::Empty).await
    }

    /// COM_STMT_PREPARE: classified by its text now, so COM_STMT_EXECUTE knows its route.
    async fn prepare(&mut self, packet: Packet) -> Result<(), End> {
        let packet = self.with_connection_id(packet);
        let st = statement::classify(packet.payload.get(1..).unwrap_or_default());
        let r = route(&st);
        if let Route::Reject(what) = r {
            return self
                .reply_error(&packet, &ClientError::NotSupported(what))
                .await;
        }
        if matches!(r, Route::Toi(_)) {
            let e = ClientError::NotSupported("DDL as a prepared statement through certus");
            return self.reply_error(&packet, &e).await;
        }
        if r == Route::Write {
            let text = packet.payload.get(1..).unwrap_or_default();
            let fe = self.fe.clone();
            let db = self.db.clone();
            if let Some(e) = strict::strict_refusal(&fe, db.as_deref(), &[text]).await {
                return self.reply_error(&packet, &e).await;
            }
        }
        let (packets, ok) = self.relay_buffered(&packet, Shape::Prepare).await?;
        if ok {
            if let Some(id) = packets.first().and_then(|(p, _)| p.payload.get(1..5)) {
                let id = u32::from_le_bytes([id[0], id[1], id[2], id[3]]);
                // Executions take the same route as the text would (BEGIN and COMMIT included:
                // sysbench prepares them).
                let text = packet.payload.get(1..).unwrap_or_default().to_vec();
                self.prepared.insert(
                    id,
                    Prepared {
                        route: r,
                        statement: Arc::new(st),
                        text,
                        backend_id: id,
                    },
                );
            }
        }
        for (p, _) in &packets {
            self.client
                .write_packet(p)
                .await
                .map_err(|e| End::ClientGone(e.to_string()))?;
        }
        self.client
            .writer
            .flush()
            .await
            .map_err(|e| End::ClientGone(e.to_string()))
    }

    async fn execute(&mut self, packet: Packet) -> Result<(), End> {
        // An id the node did not see prepared is treated as a possible write.
        let (r, st) = stmt_id(&packet)
            .and_then(|id| self.prepared.get(&id))
            .map(|p| (p.route.clone(), p.statement.clone()))
            .unwrap_or_else(|| (Route::Write, Arc::new(Statement::Other)));
        if r == Route::Write {
            // Checked again at each execution: a TOI may have changed the table's engine.
            let text = stmt_id(&packet)
                .and_then(|id| self.prepared.get(&id))
                .map(|p| p.text.clone());
            if let Some(text) = text {
                let fe = self.fe.clone();
                let db = self.db.clone();
                if let Some(e) = strict::strict_refusal(&fe, db.as_deref(), &[&text]).await {
                    return self.reply_error(&packet, &e).await;
                }
            }
        }
        self.note_reads([st.as_ref()]);
        self.run_routed(packet, r, &st).await
    }

    /// Notes what the statements about to run read (the open transaction's `locks_all_reads`
    /// is updated once they are past any implicit commit) and whether they may change the
    /// session's isolation level.
    fn note_reads<'s>(&mut self, statements: impl IntoIterator<Item = &'s Statement>) {
        let mut locked = true;
        for st in statements {
            locked &= st.reads_under_locks();
            self.isolation_untracked |= st.may_change_isolation();
        }
        self.reads_locked = locked;
    }

    /// A statement that reads or may write data (COM_QUERY or COM_STMT_EXECUTE): inside the
    /// open transaction; as one autocommit XA unit when it may write; and opening the
    /// transaction first when autocommit is off, as InnoDB would.
    async fn data_statement(&mut self, packet: &Packet, write: bool) -> Result<(), End> {
        let autocommit = self.autocommit();
        let foreign_transaction = self.backend_in_transaction();
        match (&mut self.txn, autocommit) {
            (Some(t), _) => {
                t.wrote |= write;
                self.forward_only(packet).await?;
                self.relay_in_transaction().await
            }
            (None, true) if write => self.autocommit_write(packet, Shape::ResultSets).await,
            (None, true) => self.relay(packet, Shape::ResultSets).await.map(drop),
            (None, false) if foreign_transaction => {
                // XA START fails in a transaction the node did not open: never send the
                // statement behind it (`txn::Session::open_with`).
                if let Err(e) = self.start_xa().await? {
                    return self
                        .send_refusal(packet.next_seq(), txn::Refusal::Backend(e))
                        .await;
                }
                if let Some(t) = self.txn.as_mut() {
                    t.wrote |= write;
                }
                self.forward_only(packet).await?;
                self.relay_in_transaction().await
            }
            (None, false) => self.open_with(packet, write).await,
        }
    }

    /// Relays the response to a statement sent inside the open transaction.
    async fn relay_in_transaction(&mut self) -> Result<(), End> {
        let error = self.relay_response(Shape::ResultSets).await?;
        if error == Some(ER_LOCK_DEADLOCK) {
            // InnoDB rolled the whole transaction back; the client is no longer in one,
            // as with MariaDB. The XA is left ROLLBACK ONLY: end it now, or the next
            // BEGIN (sysbench restarts with BEGIN, no ROLLBACK) would get 1399.
            self.rollback_xa().await?;
            self.status.remove(StatusFlags::SERVER_STATUS_IN_TRANS);
        }
        Ok(())
    }

    /// Whether the backend reports a transaction the node did not open as an XA (e.g. `START
    /// TRANSACTION READ ONLY`, relayed as it is).
    fn backend_in_transaction(&self) -> bool {
        self.txn.is_none() && self.status.contains(StatusFlags::SERVER_STATUS_IN_TRANS)
    }

    /// The client names prepared statements by the ids it was given; after a re-prepare the
    /// backend knows them by others.
    fn to_backend_stmt_id(&self, packet: &mut Packet) {
        let Some(id) = stmt_id(packet) else { return };
        if let Some(p) = self.prepared.get(&id) {
            if p.backend_id != id {
                packet.payload[1..5].copy_from_slice(&p.backend_id.to_le_bytes());
            }
        }
    }

    /// Prepares the session's statements again on a new backend connection, so that a
    /// brute-force abort costs the client its transaction, not its prepared statements.
    async fn prepare_again(&mut self) -> Result<(), End> {
        let ids: Vec<u32> = self.prepared.keys().copied().collect();
        for id in ids {
            let Some(text) = self.prepared.get(&id).map(|p| p.text.clone()) else {
                continue;
            };
            let mut payload = vec![cmd::STMT_PREPARE];
            payload.extend_from_slice(&text);
            let (packets, ok) = self
                .relay_buffered(&Packet { seq: 0, payload }, Shape::Prepare)
                .await?;
            let new_id = packets
                .first()
                .and_then(|(p, _)| p.payload.get(1..5))
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            match (ok, new_id) {
                (true, Some(new_id)) => {
                    if let Some(p) = self.prepared.get_mut(&id) {
                        p.backend_id = new_id;
                    }
                }
                _ => {
                    self.prepared.remove(&id);
                }
            }
        }
        Ok(())
    }

    /// The session's backend connection was killed by a brute-force abort: the client gets
    /// 1213 for the statement it sent, and the session continues on a new backend connection.
    async fn recover_from_bf_abort(&mut self, seq: u8, why: &str) -> Result<(), End> {
        self.reconnect_after_bf_abort(why).await?;
        self.client
            .send(seq, &ClientError::Deadlock.to_packet())
            .await
            .map_err(|e| End::ClientGone(e.to_string()))
    }

    /// Replaces the backend connection a brute-force abort killed with a new one that has the
    /// session's settings, autocommit mode and prepared statements; the open transaction is
    /// gone.
    async fn reconnect_after_bf_abort(&mut self, why: &str) -> Result<(), End> {
        debug!(
            session = self.id.0,
            "brute-force aborted ({why}); reconnecting to the backend"
        );
        self.txn = None;
        self.last_gtid = Some(Vec::new());
        let login = Login {
            user: &self.identity.user,
            stage1: self.identity.stage1.as_ref(),
            db: self.db.as_deref(),
            collation: self.opts.collation,
            capabilities: self.opts.capabilities,
            mariadb_capabilities: self.opts.mariadb_capabilities,
            connect_attrs: None,
            max_packet_size: self.opts.max_packet_size,
        };
        let (conn, _) = SessionConn::connect(&self.fe.backend.endpoint, &login)
            .await
            .map_err(|e| End::BackendGone(e.to_string()))?;
        let conn = conn.ok_or_else(|| End::BackendGone("re-login refused".into()))?;
        self.fe.registry.set_thread(&self.shared, conn.thread_id);
        self.backend = conn;
        self.shared.recovered();
        self.restore_settings().await?;
        self.prepare_again().await?;
        // SQL-level prepared statements died with the old connection.
        self.sql_prepared.clear();
        self.status.remove(StatusFlags::SERVER_STATUS_IN_TRANS);
        Ok(())
    }

    /// Replays the session's settings on a new backend connection, then the autocommit mode
    /// the client last had. Without this an oslo.db session (autocommit off once, no BEGIN)
    /// silently became an autocommit session after its first 1213: its SELECT ran outside any
    /// transaction and its UPDATE as an autocommit write whose snapshot came after that read,
    /// so certification could not see the conflict (lost updates; docs/jepsen.md, finding 5).
    async fn restore_settings(&mut self) -> Result<(), End> {
        let autocommit = self.status.contains(StatusFlags::SERVER_STATUS_AUTOCOMMIT);
        for sql in self.settings.statements() {
            let text = String::from_utf8_lossy(&sql).into_owned();
            if let txn::Internal::Err(e) = self.internal(&text).await? {
                // The same statement succeeded on the old connection; say so, keep going.
                tracing::warn!(
                    session = self.id.0,
                    error = %String::from_utf8_lossy(e.get(3..).unwrap_or_default()),
                    "a session setting could not be restored after a brute-force abort"
                );
            }
        }
        let mode = if autocommit { 1 } else { 0 };
        if let txn::Internal::Err(e) = self.internal(&format!("SET autocommit = {mode}")).await? {
            return Err(End::BackendGone(format!(
                "restoring autocommit after a brute-force abort: {}",
                String::from_utf8_lossy(e.get(3..).unwrap_or_default())
            )));
        }
        Ok(())
    }

    /// The node's wsrep variables as (name, SHOW text, SQL literal).
    ///
    /// `socket` is included: the node has no unix socket, and reporting the backend's would
    /// invite clients (mysql_async with prefer_socket) to reconnect to the backend directly,
    /// bypassing replication.
    fn wsrep_variables(
        &self,
        status: &crate::node::status::NodeStatus,
    ) -> Vec<(String, String, String)> {
        let s = &self.fe.settings;
        let mut vars: Vec<(String, String, String)> = crate::node::status::wsrep_variables(
            status,
            &s.cluster_address,
            &s.node_address,
            self.sync_wait,
        )
        .into_iter()
        .map(|v| (v.name.to_string(), v.show, v.literal))
        .collect();
        vars.push(("socket".into(), String::new(), "''".into()));
        vars
    }

    /// Substitutes the node's values for `@@wsrep_*` and in the status and variable tables.
    fn with_wsrep_values(&self, packet: Packet) -> Packet {
        let sql = packet.payload.get(1..).unwrap_or_default();
        if !(contains_ascii_ci(sql, b"wsrep")
            || contains_ascii_ci(sql, b"_status")
            || contains_ascii_ci(sql, b"_variables")
            || contains_ascii_ci(sql, b"@@socket"))
        {
            return packet;
        }
        let status = (self.fe.status)();
        let rows = status.wsrep_status_rows();
        let vars = self.wsrep_variables(&status);
        let values = statement::wsrep::WsrepValues {
            status: &rows,
            variables: &vars,
        };
        let text = statement::wsrep::rewrite_wsrep(sql, &values);
        with_text(packet, text)
    }

    /// `SHOW STATUS` / `SHOW VARIABLES`: the backend's rows merged with the node's `wsrep_%`
    /// rows, filtered the same way and sorted by name as MariaDB sorts them.
    async fn show_status(
        &mut self,
        packet: Packet,
        show: statement::wsrep::Show,
    ) -> Result<(), End> {
        use statement::wsrep::{like_matches, ShowFilter, ShowKind};
        let status = (self.fe.status)();
        let ours: Vec<(String, String)> = match show.kind {
            ShowKind::Status => status.wsrep_status_rows(),
            ShowKind::Variables => self
                .wsrep_variables(&status)
                .into_iter()
                .map(|(n, v, _)| (n, v))
                .collect(),
        };
        let ours_all_names: Vec<String> = ours.iter().map(|(n, _)| n.clone()).collect();
        let ours: Vec<(String, String)> = match &show.filter {
            ShowFilter::None => ours,
            ShowFilter::Like(p) => ours
                .into_iter()
                .filter(|(n, _)| like_matches(p, n.as_bytes()))
                .collect(),
            ShowFilter::Where(expr) => {
                let quote = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"));
                let union = ours
                    .iter()
                    .map(|(n, v)| {
                        format!(
                            "SELECT {} AS Variable_name, {} AS Value",
                            quote(n),
                            quote(v)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" UNION ALL ");
                let sql = format!(
                    "SELECT Variable_name, Value FROM ({union}) AS t WHERE {}",
                    String::from_utf8_lossy(expr)
                );
                match self.internal(&sql).await? {
                    txn::Internal::Rows(rows) => rows
                        .into_iter()
                        .filter_map(|r| {
                            let mut it = r.into_iter();
                            let n = it.next().flatten()?;
                            let v = it.next().flatten().unwrap_or_default();
                            Some((
                                String::from_utf8_lossy(&n).into_owned(),
                                String::from_utf8_lossy(&v).into_owned(),
                            ))
                        })
                        .collect(),
                    // The backend's own SHOW reports the expression's error.
                    _ => Vec::new(),
                }
            }
        };
        let (packets, ok) = self.relay_buffered(&packet, Shape::ResultSets).await?;
        let header = 3 + usize::from(!self.deprecate_eof());
        if !ok || packets.len() < header + 1 {
            for (p, _) in &packets {
                self.client
                    .write_packet(p)
                    .await
                    .map_err(|e| End::ClientGone(e.to_string()))?;
            }
            return self
                .client
                .writer
                .flush()
                .await
                .map_err(|e| End::ClientGone(e.to_string()));
        }
        // A MariaDB built with wsrep support reports its own (idle) wsrep rows: the node's
        // values replace them.
        let ours_names: Vec<String> = ours_all_names;
        let mut rows: Vec<Vec<u8>> = packets[header..packets.len() - 1]
            .iter()
            .map(|(p, _)| p.payload.clone())
            .filter(|r| {
                txn::row_first_column(r).is_none_or(|c| {
                    !ours_names
                        .iter()
                        .any(|n| c.eq_ignore_ascii_case(n.as_bytes()))
                })
            })
            .collect();
        for (n, v) in &ours {
            let mut r = Vec::new();
            crate::backend::session_conn::put_lenenc_bytes(&mut r, n.as_bytes());
            crate::backend::session_conn::put_lenenc_bytes(&mut r, v.as_bytes());
            rows.push(r);
        }
        rows.sort_by_key(|r| {
            txn::row_first_column(r)
                .map(|c| c.to_ascii_lowercase())
                .unwrap_or_default()
        });
        let mut seq = packets[0].0.seq;
        let gone = |e: std::io::Error| End::ClientGone(e.to_string());
        for (p, _) in &packets[..header] {
            seq = self.client.write(seq, &p.payload).await.map_err(gone)?;
        }
        for r in &rows {
            seq = self.client.write(seq, r).await.map_err(gone)?;
        }
        if let Some((last, _)) = packets.last() {
            self.client.write(seq, &last.payload).await.map_err(gone)?;
        }
        self.client.writer.flush().await.map_err(gone)
    }

    /// Rewrites `CONNECTION_ID()` in a COM_QUERY or COM_STMT_PREPARE text so that it returns the
    /// id this client was given, not the backend's thread id.
    fn with_connection_id(&self, packet: Packet) -> Packet {
        let sql = packet.payload.get(1..).unwrap_or_default();
        if !contains_ascii_ci(sql, b"connection_id") {
            return packet;
        }
        let text = statement::rewrite_connection_id(sql, self.id.0);
        with_text(packet, text)
    }

    /// `KILL [CONNECTION|QUERY] <id>`: the id is the client-visible one; the backend gets its
    /// own thread id, and decides (by the client's privileges) whether the kill is allowed.
    async fn kill_statement(&mut self, packet: Packet) -> Result<(), End> {
        let sql = packet.payload.get(1..).unwrap_or_default();
        match statement::classify(sql) {
            Statement::Kill {
                query_only,
                id,
                by_query_id: false,
            } => {
                let Some(target) = u32::try_from(id)
                    .ok()
                    .and_then(|id| self.fe.registry.session(SessionId(id)))
                else {
                    return self
                        .reply_error(&packet, &ClientError::UnknownThread(id))
                        .await;
                };
                // A KILL QUERY that interrupted the target's pipelined XA START would let the
                // client statement behind it run outside any XA, and one that interrupted its
                // XA COMMIT at the seqno would make the node Inconsistent: wait until neither
                // runs, and hold the next one back until the kill is done. (KILL CONNECTION
                // needs no wait: the statements behind the one it kills never run, and a
                // prepared XA survives its connection.)
                let _gate = if query_only {
                    match tokio::time::timeout(KILL_GATE_WAIT, target.kill_gate()).await {
                        Ok(gate) => Some(gate),
                        Err(_) => {
                            tracing::warn!(
                                session = id,
                                "KILL QUERY sent while the session's XA START or XA COMMIT may still run"
                            );
                            None
                        }
                    }
                } else {
                    None
                };
                let thread = target.backend_thread();
                let what = if query_only { "QUERY" } else { "CONNECTION" };
                let mut payload = vec![cmd::QUERY];
                payload.extend_from_slice(format!("KILL {what} {thread}").as_bytes());
                self.relay(
                    &Packet {
                        seq: packet.seq,
                        payload,
                    },
                    Shape::ResultSets,
                )
                .await
                .map(drop)
            }
            // Query ids and user names mean the same on the backend. They name no session
            // the node could wait for: a KILL QUERY waits on every other session's gate.
            Statement::Kill {
                query_only,
                by_query_id: true,
                ..
            }
            | Statement::KillUser { query_only, .. } => {
                let _gates = if query_only {
                    every_kill_gate(&self.fe.registry, self.id).await
                } else {
                    Vec::new()
                };
                self.relay(&packet, Shape::ResultSets).await.map(drop)
            }
            _ => {
                let e = ClientError::NotSupported(
                    "KILL with an id that is not a literal number through certus",
                );
                self.reply_error(&packet, &e).await
            }
        }
    }

    /// COM_PROCESS_KILL names a client-visible id; the backend knows its own thread ids.
    async fn process_kill(&mut self, mut packet: Packet) -> Result<(), End> {
        let Some(id) = packet
            .payload
            .get(1..5)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        else {
            return self
                .reply_error(&packet, &ClientError::UnknownCommand)
                .await;
        };
        match self.fe.registry.backend_thread(SessionId(id)) {
            Some(thread) => {
                packet.payload[1..5].copy_from_slice(&thread.to_le_bytes());
                self.relay(&packet, Shape::Single).await.map(drop)
            }
            None => {
                self.reply_error(&packet, &ClientError::UnknownThread(u64::from(id)))
                    .await
            }
        }
    }

    /// What COM_RESET_CONNECTION and COM_CHANGE_USER end on the node's side, as they end it on
    /// the backend: the open transaction (rolled back), prepared statements, settings.
    async fn forget_session(&mut self) -> Result<(), End> {
        self.rollback_xa().await?;
        self.prepared.clear();
        self.sql_prepared.clear();
        self.settings.clear();
        self.last_gtid = None;
        Ok(())
    }

    /// COM_CHANGE_USER: a full re-authentication, then the same on the backend connection.
    async fn change_user(&mut self, packet: Packet) -> Result<(), End> {
        self.forget_session().await?;
        let Some(req) = parse_change_user(&packet.payload, self.opts.capabilities) else {
            self.reply_error(&packet, &ClientError::BadHandshake)
                .await?;
            return Err(End::Refused);
        };
        let mut seq = packet.next_seq();
        let mut nonce = self.nonce;
        let mut token = req.token.clone();
        if req.plugin.as_deref().is_some_and(|p| p != NATIVE) {
            nonce = handshake::scramble();
            let mut switch = vec![0xfe];
            switch.extend_from_slice(NATIVE);
            switch.push(0);
            switch.extend_from_slice(&nonce);
            switch.push(0);
            self.client
                .send(seq, &switch)
                .await
                .map_err(|e| End::ClientGone(e.to_string()))?;
            let p = self
                .client
                .reader
                .read()
                .await
                .map_err(|e| End::ClientGone(e.to_string()))?;
            seq = p.next_seq();
            token = p.payload;
        }
        let peer = self.client.peer;
        let identity = match handshake::authenticate(
            &self.fe,
            &req.user,
            &self.identity.host,
            peer,
            &nonce,
            &token,
        )
        .await
        {
            Ok(i) => i,
            Err(e) => {
                self.client.send_error(seq, &e).await;
                return Err(End::Refused);
            }
        };
        let collation = req.collation.unwrap_or(self.opts.collation);
        let login = Login {
            user: &identity.user,
            stage1: identity.stage1.as_ref(),
            db: req.db.as_deref(),
            collation,
            capabilities: self.opts.capabilities,
            mariadb_capabilities: self.opts.mariadb_capabilities,
            connect_attrs: None,
            max_packet_size: self.opts.max_packet_size,
        };
        match self.backend.change_user(&login).await {
            Ok(LoginReply::Ok(ok)) => {
                self.identity = identity;
                self.opts.collation = collation;
                self.status = StatusFlags::SERVER_STATUS_AUTOCOMMIT;
                self.client
                    .send(seq, &ok)
                    .await
                    .map_err(|e| End::ClientGone(e.to_string()))
            }
            Ok(LoginReply::Refused(err)) => {
                let _ = self.client.send(seq, &err).await;
                Err(End::Refused)
            }
            Err(e) => Err(End::BackendGone(e.to_string())),
        }
    }
}

/// Waits for causality (wsrep_sync_wait); false when causal_read_timeout passed first.
async fn causal_wait(fe: Arc<Frontend>) -> bool {
    let timeout = fe.settings.causal_read_timeout;
    fe.write_path.causal_wait(timeout).await.is_ok()
}

fn is_sync_wait(t: &statement::SetTarget) -> bool {
    matches!(t, statement::SetTarget::Session(n) | statement::SetTarget::Global(n) if n == "wsrep_sync_wait")
}

/// `packet` (a COM_QUERY or COM_STMT_PREPARE) with its statement text replaced, when rewritten.
fn with_text(packet: Packet, text: Option<Vec<u8>>) -> Packet {
    let Some(text) = text else { return packet };
    let mut payload = Vec::with_capacity(text.len() + 1);
    payload.push(packet.payload[0]);
    payload.extend_from_slice(&text);
    Packet {
        seq: packet.seq,
        payload,
    }
}

fn stmt_id(packet: &Packet) -> Option<u32> {
    let b = packet.payload.get(1..5)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Case-insensitive substring test on raw bytes (a cheap filter before any parsing).
fn contains_ascii_ci(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// A statement that begins with the KILL keyword, whether or not it parses as a known form.
fn is_kill(stmt: &[u8]) -> bool {
    match statement::classify(stmt) {
        Statement::Kill { .. } | Statement::KillUser { .. } => true,
        Statement::Other => {
            let t = stmt.trim_ascii_start();
            t.len() >= 4
                && t[..4].eq_ignore_ascii_case(b"kill")
                && t.get(4)
                    .is_none_or(|b| !b.is_ascii_alphanumeric() && *b != b'_')
        }
        _ => false,
    }
}

struct ChangeUser {
    user: Vec<u8>,
    token: Vec<u8>,
    db: Option<Vec<u8>>,
    collation: Option<u8>,
    plugin: Option<Vec<u8>>,
}

fn take_nul(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let n = buf.iter().position(|b| *b == 0)?;
    Some((&buf[..n], &buf[n + 1..]))
}

/// COM_CHANGE_USER: user NUL, auth (length-prefixed), db NUL, [charset(2)], [plugin NUL], [attrs].
fn parse_change_user(payload: &[u8], caps: CapabilityFlags) -> Option<ChangeUser> {
    let rest = payload.get(1..)?;
    let (user, rest) = take_nul(rest)?;
    let (token, rest) = if caps.contains(CapabilityFlags::CLIENT_SECURE_CONNECTION) {
        let len = usize::from(*rest.first()?);
        (rest.get(1..1 + len)?, rest.get(1 + len..)?)
    } else {
        take_nul(rest)?
    };
    let (db, rest) = take_nul(rest).unwrap_or((rest, &[]));
    let (collation, rest) = match rest.get(..2) {
        Some(b) => (Some(b[0]), &rest[2..]),
        None => (None, rest),
    };
    let plugin = if caps.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH) {
        take_nul(rest).map(|(p, _)| p.to_vec())
    } else {
        None
    };
    Some(ChangeUser {
        user: user.to_vec(),
        token: token.to_vec(),
        db: (!db.is_empty()).then(|| db.to_vec()),
        collation,
        plugin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(sql: &str) -> Vec<crate::statement::Assignment> {
        match crate::statement::classify(sql.as_bytes()) {
            Statement::Set(a) => a,
            other => panic!("{sql}: {other:?}"),
        }
    }

    #[test]
    fn session_settings_keep_session_assignments_in_order_once_each() {
        let mut s = SessionSettings::default();
        for sql in [
            "SET autocommit = 0",
            "SET @x = 1",
            "SET GLOBAL max_connections = 10",
            "SET NAMES utf8mb4",
            "SET autocommit = 0",
        ] {
            s.remember(&set(sql), sql.as_bytes());
        }
        let kept: Vec<String> = s
            .statements()
            .into_iter()
            .map(|b| String::from_utf8(b).unwrap())
            .collect();
        assert_eq!(
            kept,
            ["SET @x = 1", "SET NAMES utf8mb4", "SET autocommit = 0"]
        );
        for i in 0..SessionSettings::MAX + 5 {
            let sql = format!("SET @v{i} = {i}");
            s.remember(&set(&sql), sql.as_bytes());
        }
        assert_eq!(s.statements().len(), SessionSettings::MAX);
        assert_eq!(s.statements()[0], b"SET @v5 = 5");
        s.clear();
        assert!(s.statements().is_empty());
    }

    #[test]
    fn kill_statements_are_recognised_even_when_unparseable() {
        assert!(is_kill(b"KILL 5"));
        assert!(is_kill(b"  kill query 5"));
        assert!(is_kill(b"KILL @x"));
        assert!(is_kill(b"KILL USER bob"));
        assert!(!is_kill(b"SELECT 'kill 5'"));
        assert!(!is_kill(b"killjoy"));
        assert!(contains_ascii_ci(
            b"select Connection_Id()",
            b"connection_id"
        ));
        assert!(!contains_ascii_ci(b"select 1", b"connection_id"));
    }

    #[test]
    fn change_user_packets_parse_and_truncation_is_rejected() {
        let caps = CapabilityFlags::CLIENT_SECURE_CONNECTION | CapabilityFlags::CLIENT_PLUGIN_AUTH;
        let mut p = vec![cmd::CHANGE_USER];
        p.extend_from_slice(b"bob\0");
        p.push(3);
        p.extend_from_slice(b"abc");
        p.extend_from_slice(b"db1\0");
        p.extend_from_slice(&[45, 0]);
        p.extend_from_slice(b"mysql_native_password\0");
        let c = parse_change_user(&p, caps).unwrap();
        assert_eq!(c.user, b"bob");
        assert_eq!(c.token, b"abc");
        assert_eq!(c.db.as_deref(), Some(&b"db1"[..]));
        assert_eq!(c.collation, Some(45));
        assert_eq!(c.plugin.as_deref(), Some(NATIVE));
        for cut in 1..9 {
            assert!(parse_change_user(&p[..cut], caps).is_none(), "cut at {cut}");
        }
    }
}

/// MariaDB's ER_LOCK_DEADLOCK: after it InnoDB has rolled back the whole transaction.
const ER_LOCK_DEADLOCK: u16 = 1213;

/// The kill gates of every session but `me`, taken in session-id order (two such kills never
/// wait for each other in a cycle), for a `KILL QUERY` whose target the node cannot tell.
/// Bounded by [`KILL_GATE_WAIT`] in all.
async fn every_kill_gate(
    registry: &super::Registry,
    me: SessionId,
) -> Vec<tokio::sync::OwnedMutexGuard<()>> {
    let deadline = tokio::time::Instant::now() + KILL_GATE_WAIT;
    let mut gates = Vec::new();
    for (id, target) in registry.all() {
        if id == me {
            continue;
        }
        match tokio::time::timeout_at(deadline, target.kill_gate_owned()).await {
            Ok(gate) => gates.push(gate),
            Err(_) => {
                tracing::warn!(
                    session = id.0,
                    "KILL QUERY sent while a session's XA START or XA COMMIT may still run"
                );
                break;
            }
        }
    }
    gates
}

/// How long a `KILL QUERY` waits for its target's in-flight `XA START` or `XA COMMIT` to answer
/// (it normally does within one round trip).
const KILL_GATE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The `SET` statements a session ran successfully, to replay on a new backend connection.
/// Global assignments are not the session's and are left out; a statement repeated verbatim
/// keeps only its latest position. Bounded: a session that sets more than [`Self::MAX`]
/// distinct statements loses its oldest ones on a brute-force abort.
#[derive(Default)]
struct SessionSettings {
    statements: std::collections::VecDeque<Vec<u8>>,
}

impl SessionSettings {
    const MAX: usize = 256;

    fn remember(&mut self, assignments: &[crate::statement::Assignment], text: &[u8]) {
        use crate::statement::SetTarget;
        if assignments
            .iter()
            .all(|a| matches!(a.target, SetTarget::Global(_)))
        {
            return;
        }
        self.statements.retain(|s| s.as_slice() != text);
        if self.statements.len() == Self::MAX {
            self.statements.pop_front();
        }
        self.statements.push_back(text.to_vec());
    }

    fn statements(&self) -> Vec<Vec<u8>> {
        self.statements.iter().cloned().collect()
    }

    fn clear(&mut self) {
        self.statements.clear();
    }
}
