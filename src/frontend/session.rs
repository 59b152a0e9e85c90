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
use std::sync::Arc;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tracing::debug;

pub(crate) struct ClientIo {
    pub(crate) reader: PacketReader<OwnedReadHalf>,
    pub(crate) writer: PacketWriter<OwnedWriteHalf>,
    pub(crate) peer: std::net::SocketAddr,
}

impl ClientIo {
    pub(crate) fn new(r: OwnedReadHalf, w: OwnedWriteHalf, peer: std::net::SocketAddr) -> Self {
        ClientIo {
            reader: PacketReader::new(r, 64 * 1024),
            writer: PacketWriter::new(w),
            peer,
        }
    }

    pub(crate) async fn send(&mut self, seq: u8, payload: &[u8]) -> std::io::Result<()> {
        self.writer.write(seq, payload).await?;
        self.writer.flush().await
    }

    /// Sends an error; a client that is already gone is not an error of ours.
    pub(crate) async fn send_error(&mut self, seq: u8, e: &ClientError) {
        let _ = self.send(seq, &e.to_packet()).await;
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
}

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
}

impl Session {
    pub(crate) fn new(
        fe: Arc<Frontend>,
        id: SessionId,
        client: ClientIo,
        backend: SessionConn,
        identity: Identity,
        opts: Options,
        nonce: [u8; 20],
    ) -> Session {
        Session {
            fe,
            id,
            client,
            backend,
            identity,
            opts,
            nonce,
            status: StatusFlags::SERVER_STATUS_AUTOCOMMIT,
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
            if let Err(end) = self.dispatch(packet).await {
                break end;
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
        let s = &self.fe.settings;
        if !self.client.reader.has_buffered() {
            let wait = self.client.reader_inner_fill(s.idle_timeout).await;
            match wait {
                Ok(true) => {}
                Ok(false) => return Err(End::ClientGone("closed".into())),
                Err(()) => return Err(End::Idle),
            }
        }
        match tokio::time::timeout(s.net_read_timeout, self.client.reader.read()).await {
            Err(_) => Err(End::Stalled),
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
        match command {
            cmd::QUIT => Err(End::ClientQuit),
            cmd::QUERY => self.query(packet).await,
            cmd::STMT_PREPARE => {
                let packet = self.with_connection_id(packet);
                self.relay(&packet, Shape::Prepare).await
            }
            cmd::STMT_EXECUTE => self.relay(&packet, Shape::ResultSets).await,
            cmd::STMT_FETCH => self.relay(&packet, Shape::Rows).await,
            cmd::FIELD_LIST => self.relay(&packet, Shape::FieldList).await,
            cmd::STMT_SEND_LONG_DATA | cmd::STMT_CLOSE => self.forward_only(&packet).await,
            cmd::INIT_DB
            | cmd::PING
            | cmd::STATISTICS
            | cmd::DEBUG
            | cmd::SET_OPTION
            | cmd::STMT_RESET
            | cmd::RESET_CONNECTION => self.relay(&packet, Shape::Single).await,
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

    /// Sends `request` to the backend and relays its whole response to the client.
    async fn relay(&mut self, request: &Packet, shape: Shape) -> Result<(), End> {
        self.forward_only(request).await?;
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
            self.client
                .writer
                .write_packet(&p)
                .await
                .map_err(|e| End::ClientGone(e.to_string()))?;
            match step {
                Ok(Step::More) => {}
                Ok(Step::Done { status }) => {
                    if let Some(s) = status {
                        self.status = s;
                    }
                    return self
                        .client
                        .writer
                        .flush()
                        .await
                        .map_err(|e| End::ClientGone(e.to_string()));
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

    /// COM_QUERY: statements that name connection ids are mapped; the rest is relayed.
    async fn query(&mut self, packet: Packet) -> Result<(), End> {
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
        self.relay(&packet, Shape::ResultSets).await
    }

    /// Rewrites `CONNECTION_ID()` in a COM_QUERY or COM_STMT_PREPARE text so that it returns the
    /// id this client was given, not the backend's thread id.
    fn with_connection_id(&self, packet: Packet) -> Packet {
        let sql = packet.payload.get(1..).unwrap_or_default();
        if !contains_ascii_ci(sql, b"connection_id") {
            return packet;
        }
        match statement::rewrite_connection_id(sql, self.id.0) {
            Some(text) => {
                let mut payload = Vec::with_capacity(text.len() + 1);
                payload.push(packet.payload[0]);
                payload.extend_from_slice(&text);
                Packet {
                    seq: packet.seq,
                    payload,
                }
            }
            None => packet,
        }
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
                let Some(thread) = u32::try_from(id)
                    .ok()
                    .and_then(|id| self.fe.registry.backend_thread(SessionId(id)))
                else {
                    return self
                        .reply_error(&packet, &ClientError::UnknownThread(id))
                        .await;
                };
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
            }
            // Query ids and user names mean the same on the backend.
            Statement::Kill {
                by_query_id: true, ..
            }
            | Statement::KillUser { .. } => self.relay(&packet, Shape::ResultSets).await,
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
                self.relay(&packet, Shape::Single).await
            }
            None => {
                self.reply_error(&packet, &ClientError::UnknownThread(u64::from(id)))
                    .await
            }
        }
    }

    /// COM_CHANGE_USER: a full re-authentication, then the same on the backend connection.
    async fn change_user(&mut self, packet: Packet) -> Result<(), End> {
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

impl ClientIo {
    /// Waits until the client sends something. Ok(false) on a clean close, Err on timeout.
    async fn reader_inner_fill(&mut self, timeout: std::time::Duration) -> Result<bool, ()> {
        match tokio::time::timeout(timeout, self.reader.fill_buf()).await {
            Err(_) => Err(()),
            Ok(Ok(buf)) => Ok(!buf.is_empty()),
            Ok(Err(_)) => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
