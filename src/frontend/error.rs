//! The one place where a failure becomes what the client sees. Every error the node itself
//! originates has its code, SQLSTATE and message in [`ClientError::parts`], worded as MariaDB
//! words it. Errors from the backend never pass through here: they are relayed verbatim.

use mysql_common::packets::{ErrPacket, ServerError, SqlState};
use mysql_common::proto::MySerialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClientError {
    /// Wrong password, unknown user, or no account matching the client's host.
    AccessDenied {
        user: String,
        host: String,
        using_password: bool,
    },
    /// The account exists but uses an authentication plugin certus cannot verify.
    UnsupportedAuthPlugin {
        user: String,
        host: String,
        plugin: String,
    },
    /// Logins as the node's own service account are refused: it holds BINLOG REPLAY.
    ServiceAccountLogin {
        user: String,
        host: String,
    },
    /// The client's handshake response could not be parsed.
    BadHandshake,
    /// The client did not negotiate the 4.1 protocol with secure authentication.
    ProtocolTooOld,
    UnknownCommand,
    PacketTooLarge,
    UnknownThread(u64),
    /// A missing global privilege (replicated DDL checks privileges before ordering it).
    SpecificAccessDenied(String),
    DbAccessDenied {
        user: String,
        host: String,
        db: String,
    },
    TableAccessDenied {
        command: String,
        user: String,
        host: String,
        db: String,
        table: String,
    },
    /// `SET var = value` with a value the variable does not take.
    WrongValueForVar(String, String),
    /// A causal read could not catch up within causal_read_timeout (Galera sends 1205 too).
    LockWaitTimeout,
    /// Certification refused the transaction (or it was brute-force aborted).
    Deadlock,
    /// A statement form certus cannot relay faithfully; the text names it.
    NotSupported(&'static str),
    /// The node cannot serve: its backend is down, or (later) it is not Synced/Primary.
    NotReady,
    /// Strict mode: a write to a table whose engine is not transactional (its changes survive
    /// XA ROLLBACK and never replicate). MariaDB Galera's ER_GALERA_REPLICATION_NOT_SUPPORTED.
    NonTransactionalTable {
        table: String,
        engine: String,
    },
    /// `strict_mode = enforcing`: a write to a table without a primary key
    /// (ER_REQUIRES_PRIMARY_KEY, as MariaDB's wsrep_mode=REQUIRED_PRIMARY_KEY and PXC do).
    NoPrimaryKey {
        table: String,
    },
    /// A statement committed on this node's backend outside the XA transaction that should have
    /// captured it (its `XA START` failed): the write is not replicated and the node has made
    /// itself Inconsistent. MariaDB's XAER_RMERR, whose words say what the operator must do.
    WriteEscapedReplication,
}

impl ClientError {
    /// Code, SQLSTATE and message: the single table of node-originated errors.
    pub(crate) fn parts(&self) -> (u16, &'static [u8; 5], String) {
        match self {
            ClientError::AccessDenied { user, host, using_password } => (
                1045,
                b"28000",
                format!(
                    "Access denied for user '{user}'@'{host}' (using password: {})",
                    if *using_password { "YES" } else { "NO" }
                ),
            ),
            ClientError::UnsupportedAuthPlugin { user, host, plugin } => (
                1045,
                b"28000",
                format!(
                    "Access denied for user '{user}'@'{host}': the account uses the {plugin} plugin; certus accepts only mysql_native_password accounts"
                ),
            ),
            ClientError::ServiceAccountLogin { user, host } => (
                1045,
                b"28000",
                format!("Access denied for user '{user}'@'{host}': this is the node's internal service account"),
            ),
            ClientError::BadHandshake => (1043, b"08S01", "Bad handshake".into()),
            ClientError::ProtocolTooOld => (
                1251,
                b"08004",
                "Client does not support authentication protocol requested by server; consider upgrading MariaDB client".into(),
            ),
            ClientError::UnknownCommand => (1047, b"08S01", "Unknown command".into()),
            ClientError::PacketTooLarge => (
                1153,
                b"08S01",
                "Got a packet bigger than 'max_allowed_packet' bytes".into(),
            ),
            ClientError::UnknownThread(id) => (1094, b"HY000", format!("Unknown thread id: {id}")),
            ClientError::SpecificAccessDenied(privilege) => (
                1227,
                b"42000",
                format!("Access denied; you need (at least one of) the {privilege} privilege(s) for this operation"),
            ),
            ClientError::DbAccessDenied { user, host, db } => (
                1044,
                b"42000",
                format!("Access denied for user '{user}'@'{host}' to database '{db}'"),
            ),
            ClientError::TableAccessDenied { command, user, host, db, table } => (
                1142,
                b"42000",
                format!("{command} command denied to user '{user}'@'{host}' for table `{db}`.`{table}`"),
            ),
            ClientError::WrongValueForVar(var, value) => (
                1231,
                b"42000",
                format!("Variable '{var}' can't be set to the value of '{value}'"),
            ),
            ClientError::LockWaitTimeout => (
                1205,
                b"HY000",
                "Lock wait timeout exceeded; try restarting transaction".into(),
            ),
            ClientError::Deadlock => (
                1213,
                b"40001",
                "Deadlock found when trying to get lock; try restarting transaction".into(),
            ),
            ClientError::NotSupported(what) => (
                1235,
                b"42000",
                format!("This version of MariaDB doesn't yet support '{what}'"),
            ),
            ClientError::NotReady => (
                1047,
                b"08S01",
                "WSREP has not yet prepared node for application use".into(),
            ),
            ClientError::NonTransactionalTable { table, engine } => (
                4165,
                b"HY000",
                format!("Galera replication not supported: table {table} uses the {engine} storage engine, which is not transactional; its changes would stay on this node (certus strict_mode)"),
            ),
            ClientError::NoPrimaryKey { table } => (
                1173,
                b"42000",
                format!("This table type requires a primary key: table {table} has none and strict_mode = enforcing refuses writes to it"),
            ),
            ClientError::WriteEscapedReplication => (
                1401,
                b"XAE03",
                "XAER_RMERR: Fatal error occurred in the transaction branch - check your data for consistency (certus: the statement committed on this node without replication; the node is now Inconsistent)".into(),
            ),
        }
    }

    /// The ERR packet payload sent in place of the server greeting: the client has not said
    /// it speaks protocol 4.1 yet, so MariaDB leaves the SQLSTATE out (clients would otherwise
    /// read `#08S01` as part of the message).
    pub(crate) fn to_pre_greeting_packet(&self) -> Vec<u8> {
        let (code, _, msg) = self.parts();
        let mut buf = vec![0xff];
        buf.extend_from_slice(&code.to_le_bytes());
        buf.extend_from_slice(msg.as_bytes());
        buf
    }

    /// The ERR packet payload.
    pub(crate) fn to_packet(&self) -> Vec<u8> {
        let (code, state, msg) = self.parts();
        let err = ErrPacket::Error(ServerError::new(
            code,
            Some(SqlState::new(*state)),
            msg.into_bytes(),
        ));
        let mut buf = Vec::new();
        err.serialize(&mut buf);
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::ClientError;

    #[test]
    fn an_error_instead_of_the_greeting_has_no_sqlstate() {
        let p = ClientError::NotReady.to_pre_greeting_packet();
        assert_eq!(&p[..3], &[0xff, 0x17, 0x04]);
        assert_eq!(
            &p[3..],
            b"WSREP has not yet prepared node for application use"
        );
    }

    #[test]
    fn access_denied_matches_mariadb_byte_for_byte() {
        let e = ClientError::AccessDenied {
            user: "u".into(),
            host: "localhost".into(),
            using_password: true,
        };
        let p = e.to_packet();
        assert_eq!(
            &p[..9],
            &[0xff, 0x15, 0x04, b'#', b'2', b'8', b'0', b'0', b'0']
        );
        assert_eq!(
            &p[9..],
            b"Access denied for user 'u'@'localhost' (using password: YES)"
        );
    }

    #[test]
    fn not_ready_is_1047_08s01() {
        let p = ClientError::NotReady.to_packet();
        assert_eq!(u16::from_le_bytes([p[1], p[2]]), 1047);
        assert_eq!(&p[3..9], b"#08S01");
    }
}
