//! Clients: the recorder every operation goes through, and the rule that turns a MySQL error
//! into `fail` or `info`.
//!
//! Owns the real-time order of a workload's history (one lock, one clock) and the error
//! classification. It must not know what a workload's SQL means: workloads say only whether an
//! error happened before COMMIT was sent or while its outcome was pending.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql_async::{Conn, Opts, OptsBuilder};

use crate::history::{History, Op};

/// Appends ops to one workload's history as they happen.
#[derive(Clone)]
pub(crate) struct Recorder {
    history: Arc<Mutex<History>>,
    start: Instant,
}

impl Recorder {
    pub(crate) fn new(start: Instant) -> Recorder {
        Recorder {
            history: Arc::new(Mutex::new(History::new())),
            start,
        }
    }

    /// Stamps `op` with the time since the start of the run and appends it. The lock is held
    /// across both, so index order is time order.
    pub(crate) fn record(&self, op: Op) {
        if let Ok(mut h) = self.history.lock() {
            let time = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            h.push(op.with_time(time));
        }
    }

    pub(crate) fn snapshot(&self) -> History {
        self.history
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }
}

/// Where in an operation an error struck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Before COMMIT (or the autocommit write) was sent: nothing can have been committed.
    Before,
    /// COMMIT or an autocommit write was sent and has not answered.
    Commit,
    /// A read-only operation: it has no effect either way.
    Read,
}

/// A simplified view of what went wrong, so the rule below is a pure function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The server (certus or MariaDB) answered with an error packet.
    Server { code: u16, message: String },
    /// The connection broke, or the driver gave up on it.
    Connection(String),
    /// The op ran past its deadline; the connection is abandoned.
    Timeout,
    /// The answer was not what the workload's SQL can return (a runner or server bug).
    Unexpected(String),
}

impl Failure {
    pub(crate) fn from_mysql(e: &mysql_async::Error) -> Failure {
        match e {
            mysql_async::Error::Server(s) => Failure::Server {
                code: s.code,
                message: s.message.clone(),
            },
            other => Failure::Connection(other.to_string()),
        }
    }

    /// Whether the connection may still be used after this failure.
    pub(crate) fn connection_usable(&self) -> bool {
        matches!(self, Failure::Server { .. })
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Failure::Server { code, message } => format!("{code}: {message}"),
            Failure::Connection(m) => format!("connection: {m}"),
            Failure::Timeout => "timeout".to_owned(),
            Failure::Unexpected(m) => format!("unexpected: {m}"),
        }
    }
}

/// MariaDB's deadlock error; certus sends it for a certification conflict.
pub(crate) const ER_LOCK_DEADLOCK: u16 = 1213;
/// `WSREP has not yet prepared node for application use`: the node did nothing.
pub(crate) const ER_UNKNOWN_COM_ERROR: u16 = 1047;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Definitely no effect.
    Fail,
    /// May or may not have taken effect.
    Info,
}

/// The rule of the whole suite: `fail` only when the operation certainly had no effect.
pub(crate) fn classify(phase: Phase, failure: &Failure) -> Verdict {
    match (phase, failure) {
        (Phase::Read, _) | (Phase::Before, _) => Verdict::Fail,
        (Phase::Commit, Failure::Server { code, .. }) => match *code {
            // A certification conflict and a node that is not ready are definite answers.
            ER_LOCK_DEADLOCK | ER_UNKNOWN_COM_ERROR => Verdict::Fail,
            // Key collisions on an autocommit insert are refused before anything is written.
            1062 => Verdict::Fail,
            // Any other error at COMMIT: we cannot prove it had no effect.
            _ => Verdict::Info,
        },
        (Phase::Commit, Failure::Connection(_))
        | (Phase::Commit, Failure::Timeout)
        | (Phase::Commit, Failure::Unexpected(_)) => Verdict::Info,
    }
}

/// How to reach one endpoint as the workload account.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// The node name recorded in each op (`n1`, or `host:port` in endpoints mode).
    pub(crate) name: String,
    pub(crate) host: String,
    pub(crate) port: u16,
}

#[derive(Debug, Clone)]
pub(crate) struct Account {
    pub(crate) user: String,
    pub(crate) password: String,
}

pub(crate) fn tcp_opts(endpoint: &Endpoint, account: &Account) -> Opts {
    OptsBuilder::default()
        .ip_or_hostname(endpoint.host.clone())
        .tcp_port(endpoint.port)
        .user(Some(account.user.clone()))
        .pass(Some(account.password.clone()))
        .prefer_socket(false)
        .into()
}

/// [`tcp_opts`] plus statements the driver runs once on every new connection.
pub(crate) fn session_opts(endpoint: &Endpoint, account: &Account, init: Vec<String>) -> Opts {
    OptsBuilder::from_opts(tcp_opts(endpoint, account))
        .init(init)
        .into()
}

pub(crate) fn socket_opts(socket: &str, account: &Account) -> Opts {
    OptsBuilder::default()
        .socket(Some(socket.to_owned()))
        .user(Some(account.user.clone()))
        .pass(Some(account.password.clone()))
        .into()
}

/// Connects with a deadline: a paused or partitioned node must not stall a client forever.
pub(crate) async fn connect(opts: Opts, within: Duration) -> Result<Conn, Failure> {
    match tokio::time::timeout(within, Conn::new(opts)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(Failure::from_mysql(&e)),
        Err(_) => Err(Failure::Timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: u16) -> Failure {
        Failure::Server {
            code,
            message: "x".into(),
        }
    }

    #[test]
    fn a_lost_connection_during_commit_is_info_never_fail() {
        let lost = Failure::Connection("broken pipe".into());
        assert_eq!(classify(Phase::Commit, &lost), Verdict::Info);
        assert_eq!(classify(Phase::Commit, &Failure::Timeout), Verdict::Info);
        assert_eq!(
            classify(Phase::Commit, &Failure::Unexpected("?".into())),
            Verdict::Info
        );
        assert_eq!(classify(Phase::Commit, &server(1180)), Verdict::Info);
    }

    #[test]
    fn conflicts_and_not_ready_are_definite_failures() {
        assert_eq!(classify(Phase::Commit, &server(1213)), Verdict::Fail);
        assert_eq!(classify(Phase::Commit, &server(1047)), Verdict::Fail);
        assert_eq!(classify(Phase::Commit, &server(1062)), Verdict::Fail);
    }

    #[test]
    fn nothing_before_commit_can_have_taken_effect() {
        let lost = Failure::Connection("reset".into());
        assert_eq!(classify(Phase::Before, &lost), Verdict::Fail);
        assert_eq!(classify(Phase::Before, &Failure::Timeout), Verdict::Fail);
        assert_eq!(classify(Phase::Read, &Failure::Timeout), Verdict::Fail);
    }

    #[test]
    fn only_server_errors_leave_the_connection_usable() {
        assert!(server(1213).connection_usable());
        assert!(!Failure::Timeout.connection_usable());
        assert!(!Failure::Connection("eof".into()).connection_usable());
    }
}
