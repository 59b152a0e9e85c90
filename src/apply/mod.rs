//! The applier: one connection per node to the local backend, as the service account, that
//! replays committed write sets with `BINLOG` statements and runs TOI statements, in log order
//! (DESIGN §7, §8).
//!
//! Owns: that connection, its session settings, and `certus.state.applied_seqno`. Must not
//! touch: certification, the Raft log, client sessions, or the capture reader (it only consumes
//! the Format_description bytes and statement bytes `capture` produced).
//!
//! * **Tagging.** The session runs `SET SESSION gtid_domain_id = <applier domain>` (default
//!   [`crate::capture::APPLIER_GTID_DOMAIN`]), so every transaction it commits is binlogged in
//!   that domain and every node's capture reader skips it. Client transactions stay in the
//!   server's default domain 0. Only BINLOG REPLAY (or SUPER) is needed for this.
//! * **Binlogging** ([`Tagging::binlogged`], the node's `log_replica_updates`). Off (the
//!   default, as Galera's `log_slave_updates`), the session also runs `SET SESSION sql_log_bin
//!   = 0` (BINLOG ADMIN, which the service account holds): replayed write sets, TOI and the
//!   applied-seqno records stay out of the backend's binlog, which then holds this node's own
//!   client transactions only, and the server neither writes nor streams them. The one
//!   exception is `XA COMMIT` of a detached XA ([`Applier::xa_commit`]): its `XA PREPARE` is in
//!   the binlog, so its end goes there too.
//! * **Write sets.** `BEGIN`; the Format_description event as `BINLOG` once per connection; one
//!   `BINLOG '<base64>'` per source statement (smaller Annotate_rows copies on this node's
//!   binlog than one big BINLOG, spike §2 f); `UPDATE certus.state SET applied_seqno = S`;
//!   `COMMIT`. The seqno commits atomically with the data: exactly-once across crashes. These go
//!   as multi-statement queries, each ending at a `BINLOG` ([`write_set_batches`]): the server
//!   stops at the first failing statement, and the caller's `ROLLBACK` ends the open
//!   transaction. That the state row exists is checked once per connection, not per write set.
//! * **TOI.** DDL commits implicitly, so it cannot share a transaction with the seqno update:
//!   the statement runs alone in autocommit with the origin's session context, and
//!   `applied_seqno` is updated right after in its own autocommit statement. A crash between
//!   the two leaves the DDL done and the seqno behind; recovery re-runs that TOI and must treat
//!   "already exists"-style results accordingly (the caller's decision, not made here).
//! * **Errors.** Any failure rolls back and returns [`ApplyError`] with the backend's code and
//!   message. Nothing is retried: the caller marks the node Inconsistent (DESIGN §7). After an
//!   error the connection's state is unknown; make a new `Applier` before applying again.

use crate::ids::Seqno;
use base64::Engine;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use std::sync::Arc;

/// Why a write set or TOI could not be applied.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ApplyError {
    /// The backend refused a statement: its error, verbatim.
    #[error("backend error {code} ({state}) during {during}: {message}")]
    Backend {
        code: u16,
        state: String,
        message: String,
        during: &'static str,
    },
    /// The connection failed (I/O, protocol): the outcome of the last statement is unknown.
    #[error("applier connection failed during {during}: {message}")]
    Connection {
        message: String,
        during: &'static str,
    },
    /// The origin session could not `XA COMMIT` its own prepared transaction.
    #[error("the origin's XA COMMIT failed: {0}")]
    OriginCommit(String),
    /// `certus.state` lacks its row: the internal schema is not installed.
    #[error("certus.state has no row with id = 1")]
    NoStateRow,
}

impl ApplyError {
    /// The backend's error code, when the backend reported one.
    pub fn code(&self) -> Option<u16> {
        match self {
            ApplyError::Backend { code, .. } => Some(*code),
            ApplyError::Connection { .. }
            | ApplyError::OriginCommit(_)
            | ApplyError::NoStateRow => None,
        }
    }

    fn from_driver(e: mysql_async::Error, during: &'static str) -> ApplyError {
        match e {
            mysql_async::Error::Server(s) => ApplyError::Backend {
                code: s.code,
                state: s.state,
                message: s.message,
                during,
            },
            other => ApplyError::Connection {
                message: other.to_string(),
                during,
            },
        }
    }
}

/// The session context a TOI statement runs with on every node (DESIGN §8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TOIContext {
    /// The origin session's current schema; `None` runs with no schema selected.
    pub db: Option<String>,
    pub sql_mode: String,
    pub character_set_client: String,
    pub collation_connection: String,
    pub character_set_results: Option<String>,
    pub foreign_key_checks: bool,
    pub time_zone: String,
}

/// How the applier's transactions appear in the backend's binlog (module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tagging {
    /// The `gtid_domain_id` every applier transaction is binlogged in.
    pub domain: u32,
    /// Whether they are binlogged at all (`log_replica_updates`).
    pub binlogged: bool,
}

/// One applier connection.
pub struct Applier {
    conn: Conn,
    opts: Opts,
    tagging: Tagging,
    fd: Arc<[u8]>,
    fd_sent: bool,
    current_db: Option<String>,
    /// The session defaults as the server set them at connect, restored after every TOI so
    /// that one TOI's context never leaks into the next write set.
    defaults: SessionDefaults,
}

#[derive(Clone, Debug)]
struct SessionDefaults {
    sql_mode: String,
    time_zone: String,
    character_set_client: String,
    collation_connection: String,
    character_set_results: Option<String>,
}

/// One write set as few multi-statement queries: `BEGIN`, the Format_description event when
/// the connection has not seen it yet, one `BINLOG` per source statement, the applied seqno,
/// `COMMIT`. A `BINLOG` statement only ever ends a query: MariaDB 10.11 answers it without the
/// more-results flag, so whatever followed it in the same query would reach the driver as
/// packets it did not expect. One source statement costs two round trips, not four.
fn write_set_batches<S: AsRef<[u8]>>(
    seqno: Seqno,
    fd: Option<&[u8]>,
    statements: &[S],
) -> Vec<String> {
    let mut queries = Vec::with_capacity(statements.len() + 2);
    let mut pending = String::from("BEGIN");
    for events in fd.into_iter().chain(statements.iter().map(AsRef::as_ref)) {
        let binlog = binlog_statement(events);
        let mut sql = std::mem::take(&mut pending);
        if !sql.is_empty() {
            sql.push(';');
        }
        sql.push_str(&binlog);
        queries.push(sql);
    }
    let finish = format!(
        "UPDATE certus.state SET applied_seqno = {} WHERE id = 1;COMMIT",
        seqno.0
    );
    if pending.is_empty() {
        queries.push(finish);
    } else {
        queries.push(format!("{pending};{finish}"));
    }
    queries
}

/// The global transaction ids of the XA transactions prepared on the backend (`XA RECOVER`),
/// attached to a session or not.
pub async fn prepared_gtrids(conn: &mut Conn) -> Result<Vec<Vec<u8>>, mysql_async::Error> {
    let rows: Vec<(i64, i64, i64, Vec<u8>)> = conn.query("XA RECOVER").await?;
    Ok(rows
        .into_iter()
        .map(|(_, gtrid_len, _, mut data)| {
            data.truncate(gtrid_len.max(0) as usize);
            data
        })
        .collect())
}

/// The xids `certus.state.origin_xid` records as claimed for commit: the last run of the node's
/// own XAs, whose `XA COMMIT`s follow that record.
pub async fn recorded_xids(conn: &mut Conn) -> Result<Vec<String>, mysql_async::Error> {
    let recorded: Option<String> = conn
        .query_first("SELECT origin_xid FROM certus.state WHERE id = 1")
        .await?;
    Ok(recorded
        .unwrap_or_default()
        .split_ascii_whitespace()
        .map(str::to_owned)
        .collect())
}

/// `BINLOG '<base64>'` for one event sequence. Base64's alphabet needs no escaping in a
/// single-quoted literal.
pub fn binlog_statement(events: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(events);
    let mut sql = String::with_capacity(b64.len() + 9);
    sql.push_str("BINLOG '");
    sql.push_str(&b64);
    sql.push('\'');
    sql
}

/// A string literal for a `SET`: single-quoted with backslashes and quotes escaped.
fn quote(s: &str) -> String {
    crate::backend::quote_literal(s)
}

/// An identifier in backquotes, with backquotes doubled.
fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

impl Applier {
    /// Connects, tags the session as `tagging` says and reads the session defaults. `fd` is
    /// the Format_description event from [`crate::capture::Capture::format_description`].
    pub async fn connect(
        opts: Opts,
        tagging: Tagging,
        fd: Arc<[u8]>,
    ) -> Result<Applier, ApplyError> {
        // No schema at connect: TOI selects its own, and "none" must be reachable again.
        let opts: Opts = mysql_async::OptsBuilder::from_opts(opts)
            .db_name(None::<String>)
            .into();
        let conn = Conn::new(opts.clone())
            .await
            .map_err(|e| ApplyError::from_driver(e, "connect"))?;
        let mut applier = Applier {
            conn,
            opts,
            tagging,
            fd,
            fd_sent: false,
            current_db: None,
            defaults: SessionDefaults {
                sql_mode: String::new(),
                time_zone: String::new(),
                character_set_client: String::new(),
                collation_connection: String::new(),
                character_set_results: None,
            },
        };
        applier.setup_session().await?;
        // Write sets record their seqno with an UPDATE whose match count they do not read.
        applier.applied_seqno().await?;
        type Defaults = (String, String, String, String, Option<String>);
        let row: Option<Defaults> = applier
            .conn
            .query_first(
                "SELECT @@session.sql_mode, @@session.time_zone, @@session.character_set_client, \
                 @@session.collation_connection, @@session.character_set_results",
            )
            .await
            .map_err(|e| ApplyError::from_driver(e, "reading session defaults"))?;
        if let Some((
            sql_mode,
            time_zone,
            character_set_client,
            collation_connection,
            character_set_results,
        )) = row
        {
            applier.defaults = SessionDefaults {
                sql_mode,
                time_zone,
                character_set_client,
                collation_connection,
                character_set_results,
            };
        }
        Ok(applier)
    }

    async fn setup_session(&mut self) -> Result<(), ApplyError> {
        let sql = format!("SET SESSION gtid_domain_id = {}", self.tagging.domain);
        self.run(&sql, "tagging the session").await?;
        if !self.tagging.binlogged {
            self.run("SET SESSION sql_log_bin = 0", "tagging the session")
                .await?;
        }
        Ok(())
    }

    async fn run(&mut self, sql: &str, during: &'static str) -> Result<(), ApplyError> {
        self.conn
            .query_drop(sql)
            .await
            .map_err(|e| ApplyError::from_driver(e, during))
    }

    /// Applies one committed write set at `seqno`: its statements' event bytes, in order, and
    /// the applied seqno, in one transaction.
    pub async fn apply<S: AsRef<[u8]>>(
        &mut self,
        seqno: Seqno,
        statements: &[S],
    ) -> Result<(), ApplyError> {
        match self.apply_in_trx(seqno, statements).await {
            Ok(()) => Ok(()),
            Err(e) => {
                // The original error is what the caller needs; a failed rollback means the
                // connection is gone, and the server then rolls back by itself.
                let _ = self.conn.query_drop("ROLLBACK").await;
                Err(e)
            }
        }
    }

    async fn apply_in_trx<S: AsRef<[u8]>>(
        &mut self,
        seqno: Seqno,
        statements: &[S],
    ) -> Result<(), ApplyError> {
        let fd = (!self.fd_sent).then_some(self.fd.clone());
        for sql in write_set_batches(seqno, fd.as_deref(), statements) {
            self.run(&sql, "replaying a write set").await?;
        }
        self.fd_sent = true;
        Ok(())
    }

    async fn set_applied_seqno(&mut self, seqno: Seqno) -> Result<(), ApplyError> {
        self.conn
            .exec_drop(
                "UPDATE certus.state SET applied_seqno = ? WHERE id = 1",
                (seqno.0,),
            )
            .await
            .map_err(|e| ApplyError::from_driver(e, "updating applied_seqno"))?;
        // Matched rows, not changed rows: a TOI's seqno is written once even if re-run.
        if self.conn.affected_rows() == 0 {
            let present: Option<u8> = self
                .conn
                .query_first("SELECT 1 FROM certus.state WHERE id = 1")
                .await
                .map_err(|e| ApplyError::from_driver(e, "checking certus.state"))?;
            if present.is_none() {
                return Err(ApplyError::NoStateRow);
            }
        }
        Ok(())
    }

    /// The backend's applied seqno.
    pub async fn applied_seqno(&mut self) -> Result<Seqno, ApplyError> {
        let v: Option<u64> = self
            .conn
            .query_first("SELECT applied_seqno FROM certus.state WHERE id = 1")
            .await
            .map_err(|e| ApplyError::from_driver(e, "reading applied_seqno"))?;
        v.map(Seqno).ok_or(ApplyError::NoStateRow)
    }

    /// Runs one TOI statement at `seqno` with the origin's session context, in its own
    /// autocommit, then records `seqno` as applied (see the module header for why these are two
    /// transactions).
    pub async fn apply_toi(
        &mut self,
        seqno: Seqno,
        ctx: &TOIContext,
        sql: &str,
    ) -> Result<(), ApplyError> {
        self.select_db(ctx.db.as_deref()).await?;
        let results = match &ctx.character_set_results {
            Some(c) => quote(c),
            None => "NULL".to_owned(),
        };
        let set = format!(
            "SET SESSION sql_mode = {}, SESSION character_set_client = {}, \
             SESSION collation_connection = {}, SESSION character_set_results = {}, \
             SESSION foreign_key_checks = {}, SESSION time_zone = {}",
            quote(&ctx.sql_mode),
            quote(&ctx.character_set_client),
            quote(&ctx.collation_connection),
            results,
            u8::from(ctx.foreign_key_checks),
            quote(&ctx.time_zone),
        );
        self.run(&set, "setting the TOI session context").await?;
        let outcome = self.run(sql, "the TOI statement").await;
        let restored = self.restore_defaults().await;
        outcome?;
        restored?;
        self.set_applied_seqno(seqno).await
    }

    async fn restore_defaults(&mut self) -> Result<(), ApplyError> {
        let d = self.defaults.clone();
        let results = match &d.character_set_results {
            Some(c) => quote(c),
            None => "NULL".to_owned(),
        };
        let set = format!(
            "SET SESSION sql_mode = {}, SESSION character_set_client = {}, \
             SESSION collation_connection = {}, SESSION character_set_results = {}, \
             SESSION foreign_key_checks = 1, SESSION time_zone = {}",
            quote(&d.sql_mode),
            quote(&d.character_set_client),
            quote(&d.collation_connection),
            results,
            quote(&d.time_zone),
        );
        self.run(&set, "restoring the session defaults").await
    }

    async fn select_db(&mut self, db: Option<&str>) -> Result<(), ApplyError> {
        if self.current_db.as_deref() == db {
            return Ok(());
        }
        match db {
            Some(name) => {
                let sql = format!("USE {}", quote_ident(name));
                self.run(&sql, "USE").await?;
            }
            None => {
                // MariaDB cannot deselect a schema with a statement; a fresh connection has
                // none. It loses the session setup, so redo it and resend the FD.
                let fresh = Conn::new(self.opts.clone())
                    .await
                    .map_err(|e| ApplyError::from_driver(e, "reconnecting without a schema"))?;
                let old = std::mem::replace(&mut self.conn, fresh);
                let _ = old.disconnect().await;
                self.fd_sent = false;
                self.setup_session().await?;
            }
        }
        self.current_db = db.map(str::to_owned);
        Ok(())
    }

    /// The backend thread id of the applier connection (to find who blocks it).
    pub fn thread_id(&self) -> u32 {
        self.conn.id()
    }

    /// Records `seqno` as applied by the origin's own XAs `xids` (space-separated in
    /// `origin_xid`), before those XAs are committed: a crash before their commits leaves them
    /// prepared and named here, and start-up commits them.
    pub async fn record_origin_commits(
        &mut self,
        seqno: Seqno,
        xids: &[&str],
    ) -> Result<(), ApplyError> {
        self.run(
            &format!(
                "UPDATE certus.state SET applied_seqno = {}, origin_xid = {} WHERE id = 1",
                seqno.0,
                quote(&xids.join(" "))
            ),
            "recording the origin's commit",
        )
        .await
    }

    /// Whether `xid` is a prepared XA on the backend (attached to a session or not).
    pub async fn xa_prepared(&mut self, xid: &str) -> Result<bool, ApplyError> {
        let gtrids = prepared_gtrids(&mut self.conn)
            .await
            .map_err(|e| ApplyError::from_driver(e, "XA RECOVER"))?;
        Ok(gtrids.iter().any(|g| g == xid.as_bytes()))
    }

    /// `XA COMMIT` of a prepared XA from the applier's connection: only possible once no
    /// session owns it (1397 XAER_NOTA while one does).
    ///
    /// Binlogged even when the applier's own transactions are not: the session that prepared
    /// the XA logged its `XA PREPARE`, and a prepared XA whose end never reaches the binlog would
    /// stay open there for every reader of it.
    pub async fn xa_commit(&mut self, xid: &str) -> Result<(), ApplyError> {
        let commit = format!("XA COMMIT {}", quote(xid));
        if self.tagging.binlogged {
            return self.run(&commit, "XA COMMIT").await;
        }
        self.run("SET SESSION sql_log_bin = 1", "XA COMMIT").await?;
        let committed = self.run(&commit, "XA COMMIT").await;
        let restored = self.run("SET SESSION sql_log_bin = 0", "XA COMMIT").await;
        committed.and(restored)
    }

    /// Records `seqno` as applied without applying anything: a TOI that every backend refuses
    /// alike (the statement's error is its result) still consumes its seqno.
    pub async fn record_applied(&mut self, seqno: Seqno) -> Result<(), ApplyError> {
        self.set_applied_seqno(seqno).await
    }

    /// Closes the connection politely.
    pub async fn disconnect(self) {
        let _ = self.conn.disconnect().await;
    }
}

#[cfg(test)]
mod harness;
#[cfg(test)]
mod tests;

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn a_write_set_is_one_transaction_in_few_queries() {
        let sql = super::write_set_batches(crate::ids::Seqno(7), Some(&[1][..]), &[[2u8], [3u8]]);
        assert_eq!(
            sql,
            [
                "BEGIN;BINLOG 'AQ=='",
                "BINLOG 'Ag=='",
                "BINLOG 'Aw=='",
                "UPDATE certus.state SET applied_seqno = 7 WHERE id = 1;COMMIT"
            ]
        );
        let sql = super::write_set_batches::<[u8; 1]>(crate::ids::Seqno(8), None, &[]);
        assert_eq!(
            sql,
            ["BEGIN;UPDATE certus.state SET applied_seqno = 8 WHERE id = 1;COMMIT"]
        );
    }

    #[test]
    fn binlog_statement_is_single_quoted_standard_base64() {
        assert_eq!(binlog_statement(&[0xff, 0x00, 0x10]), "BINLOG '/wAQ'");
    }

    #[test]
    fn set_literals_escape_quotes_and_backslashes() {
        assert_eq!(quote(r"a'b\c"), r"'a\'b\\c'");
        assert_eq!(quote_ident("we`ird"), "`we``ird`");
    }
}
