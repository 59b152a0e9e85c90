//! The client edge: accepts MySQL-protocol connections, authenticates them against the backend's
//! own accounts, opens each session's backend connection as the client's account, and relays
//! commands and responses byte for byte. Statements the node must act on (KILL, and later
//! COMMIT, DDL and status queries) are intercepted here; everything else passes through.
//! Errors become client packets only in `error.rs`.

mod accounts;
pub(crate) mod error;
mod handshake;
mod session;

use crate::backend::Backend;
use crate::ids::SessionId;
use crate::node::write_path::WritePath;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// Settings of the client edge.
#[derive(Debug, Clone)]
pub(crate) struct EdgeSettings {
    /// How long a causal read (wsrep_sync_wait) may wait.
    pub(crate) causal_read_timeout: Duration,
    /// `wsrep_cluster_address` and `wsrep_node_address`, as SHOW VARIABLES reports them.
    pub(crate) cluster_address: String,
    pub(crate) node_address: String,
    /// How often a certification abort of an autocommit statement is retried (Galera's
    /// wsrep_retry_autocommit).
    pub(crate) retry_autocommit: u32,
    pub(crate) idle_timeout: Duration,
    pub(crate) net_read_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    /// DESIGN §4's strict mode (non-transactional tables, tables without a primary key, and
    /// what `permissive` downgrades to warnings).
    pub(crate) strict_mode: crate::config::StrictMode,
}

/// What the node knows about a live session outside its task: which backend thread serves it
/// (for KILL and for brute-force aborts) and whether it may be aborted right now.
#[derive(Default)]
pub(crate) struct SessionShared {
    backend_thread: AtomicU32,
    /// ACTIVE, COMMITTING or VICTIM. One atomic, changed only by compare-and-swap, so that a
    /// session never prepares an XA transaction whose connection a brute-force abort is about
    /// to kill: a prepared XA survives its connection and would hold its locks for ever.
    state: AtomicU8,
    /// Held by the session while a statement of its own must not be interrupted, and by a
    /// `KILL QUERY` aimed at the session while it sends the kill: from sending an `XA START`
    /// pipelined with a client statement until its reply (a kill that interrupted that XA START
    /// would let the statement after it run outside any XA, unreplicated: `session::txn`), and
    /// around the `XA COMMIT` the applier asks for at the write set's seqno (an interrupted one
    /// would make the node Inconsistent).
    kill_gate: Arc<tokio::sync::Mutex<()>>,
}

const ACTIVE: u8 = 0;
/// Between XA PREPARE and XA ROLLBACK: brute-force abort must wait (the locks go soon).
const COMMITTING: u8 = 1;
/// Chosen by a brute-force abort: its connection is being killed; the session's next backend
/// failure becomes a 1213.
const VICTIM: u8 = 2;

impl SessionShared {
    pub(crate) fn backend_thread(&self) -> u32 {
        self.backend_thread.load(Ordering::Relaxed)
    }

    /// Enters the commit step; false when the session has already been chosen as a victim.
    pub(crate) fn begin_commit(&self) -> bool {
        self.state
            .compare_exchange(ACTIVE, COMMITTING, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    pub(crate) fn end_commit(&self) {
        let _ = self
            .state
            .compare_exchange(COMMITTING, ACTIVE, Ordering::SeqCst, Ordering::SeqCst);
    }

    pub(crate) fn is_victim(&self) -> bool {
        self.state.load(Ordering::SeqCst) == VICTIM
    }

    /// After the session re-opened its backend connection.
    pub(crate) fn recovered(&self) {
        self.state.store(ACTIVE, Ordering::SeqCst);
    }

    /// Waits until no uninterruptible statement of the session's is in flight, and keeps the
    /// next one from being sent until the guard is dropped.
    pub(crate) async fn kill_gate(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.kill_gate.lock().await
    }

    /// [`SessionShared::kill_gate`] as a guard that owns its lock.
    pub(crate) async fn kill_gate_owned(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.kill_gate.clone().lock_owned().await
    }
}

/// Live sessions, by the id clients see.
#[derive(Default)]
pub(crate) struct Registry {
    next: AtomicU32,
    sessions: Mutex<HashMap<SessionId, Arc<SessionShared>>>,
}

impl Registry {
    fn allocate(&self) -> SessionId {
        loop {
            let id = self.next.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
            if id != 0 {
                return SessionId(id);
            }
        }
    }

    fn register(&self, id: SessionId, thread: u32) -> Arc<SessionShared> {
        let shared = Arc::new(SessionShared::default());
        shared.backend_thread.store(thread, Ordering::Relaxed);
        if let Ok(mut m) = self.sessions.lock() {
            m.insert(id, shared.clone());
        }
        shared
    }

    pub(crate) fn set_thread(&self, shared: &SessionShared, thread: u32) {
        shared.backend_thread.store(thread, Ordering::Relaxed);
    }

    fn remove(&self, id: SessionId) {
        if let Ok(mut m) = self.sessions.lock() {
            m.remove(&id);
        }
    }

    pub(crate) fn backend_thread(&self, id: SessionId) -> Option<u32> {
        self.session(id).map(|s| s.backend_thread())
    }

    /// The shared state of a live session.
    pub(crate) fn session(&self, id: SessionId) -> Option<Arc<SessionShared>> {
        self.sessions.lock().ok().and_then(|m| m.get(&id).cloned())
    }

    /// Marks the session served by backend `thread` as a brute-force victim. None when no session
    /// uses that thread; Some(false) when the session is committing and must be waited for.
    pub(crate) fn mark_bf_victim(&self, thread: u32) -> Option<bool> {
        let m = self.sessions.lock().ok()?;
        let s = m.values().find(|s| s.backend_thread() == thread)?;
        Some(
            s.state
                .compare_exchange(ACTIVE, VICTIM, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok(),
        )
    }

    pub(crate) fn len(&self) -> usize {
        self.sessions.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Every live session, by id.
    pub(crate) fn all(&self) -> Vec<(SessionId, Arc<SessionShared>)> {
        let mut all: Vec<_> = self
            .sessions
            .lock()
            .map(|m| m.iter().map(|(id, s)| (*id, s.clone())).collect())
            .unwrap_or_default();
        all.sort_by_key(|(id, _)| *id);
        all
    }
}

/// Computes the node's live status on every call.
pub(crate) type StatusSource = Arc<dyn Fn() -> crate::node::status::NodeStatus + Send + Sync>;

pub(crate) struct Frontend {
    pub(crate) status: StatusSource,
    /// `SET GLOBAL wsrep_sync_wait`: the default of new sessions.
    pub(crate) default_sync_wait: AtomicU32,
    pub(crate) backend: Backend,
    pub(crate) settings: EdgeSettings,
    pub(crate) registry: Arc<Registry>,
    pub(crate) write_path: Arc<WritePath>,
}

impl Frontend {
    pub(crate) fn new(
        backend: Backend,
        settings: EdgeSettings,
        registry: Arc<Registry>,
        write_path: Arc<WritePath>,
        status: StatusSource,
    ) -> Arc<Frontend> {
        Arc::new(Frontend {
            default_sync_wait: AtomicU32::new(0),
            status,
            backend,
            settings,
            registry,
            write_path,
        })
    }

    /// Why the node cannot serve right now, if it cannot.
    pub(crate) fn not_ready(&self) -> bool {
        self.backend.health() != crate::backend::Health::Up
            || self.write_path.inconsistent().is_some()
            || !self.write_path.is_primary()
            || !self.write_path.is_synced()
            || self.write_path.joining()
    }
}

/// Accepts clients on an already-bound listener until `shutdown` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    fe: Arc<Frontend>,
    mut shutdown: watch::Receiver<bool>,
) {
    let local = listener.local_addr().ok();
    info!(?local, "accepting MySQL clients");
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let fe = fe.clone();
                    tokio::spawn(async move { handle(fe, stream, peer).await });
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}

async fn handle(fe: Arc<Frontend>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let id = fe.registry.allocate();
    let span = tracing::debug_span!("session", id = id.0, %peer);
    let _enter = span.enter();
    drop(_enter);
    let result = async {
        let (r, w) = stream.into_split();
        let client = session::ClientIo::new(r, w, peer);
        let connect_timeout = fe.settings.connect_timeout;
        let login =
            tokio::time::timeout(connect_timeout, handshake::run(&fe, client, id, peer)).await;
        match login {
            Ok(Some(session)) => session.run().await,
            Ok(None) => {}
            Err(_) => debug!("handshake timed out"),
        }
    };
    tracing::Instrument::instrument(result, span).await;
    fe.registry.remove(id);
}
