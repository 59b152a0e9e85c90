//! The origin's own prepared XA transactions (DESIGN §7, "the origin commits its own XA").
//!
//! A session that commits a row transaction leaves its XA prepared on the local backend while
//! the write set goes through Raft and certification. When the applier reaches the write set's
//! seqno it asks the session to `XA COMMIT` it, instead of replaying the row events: one
//! execution and one commit fewer per write on the origin. A prepared XA holds its row locks,
//! so anything the applier must apply first may need them: the applier (or its brute-force
//! watchdog) then asks the session to roll the XA back, and if certification commits the write
//! set after all, the applier replays it from the log like any other.
//!
//! This module owns the registry of such XAs and the claim protocol that makes "commit" and
//! "roll back" exclusive: exactly one of them is ever asked of a session, decided by one
//! compare-and-swap. It does not run SQL; the session runs the statements on its own
//! connection (only the owning connection may resolve an attached XA: 1397 otherwise).

use crate::writeset::{Key, KeyHash, KeyKind};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// Prepared, waiting for its seqno.
const WAITING: u8 = 0;
/// The applier claimed it for commit (its seqno came, certified Commit).
const COMMIT_CLAIMED: u8 = 1;
const COMMITTED: u8 = 2;
/// Someone claimed it for rollback (a lock conflict with the applier, or the session's own
/// outcome was not a commit).
const ROLLBACK_CLAIMED: u8 = 3;
const ROLLED_BACK: u8 = 4;

/// What a session is asked to do with its prepared XA.
pub(crate) enum XaRequest {
    /// `XA COMMIT`; the answer is the backend's error text when it refused.
    Commit {
        done: oneshot::Sender<Result<(), String>>,
    },
    /// `XA ROLLBACK`.
    RollBack { done: oneshot::Sender<()> },
}

/// One session's prepared XA.
pub(crate) struct PreparedXa {
    state: AtomicU8,
    /// The backend thread of the session's connection (the watchdog finds blockers by thread).
    thread: u32,
    keys: HashMap<KeyHash, KeyKind>,
    requests: mpsc::UnboundedSender<XaRequest>,
}

impl PreparedXa {
    fn claim(&self, to: u8) -> bool {
        self.state
            .compare_exchange(WAITING, to, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Claims the XA for commit; false when a rollback was claimed first.
    pub(crate) fn claim_commit(&self) -> bool {
        self.claim(COMMIT_CLAIMED)
    }

    /// Claims the XA for rollback; false when it was claimed already (either way).
    pub(crate) fn claim_rollback(&self) -> bool {
        self.claim(ROLLBACK_CLAIMED)
    }

    /// Sends a request to the session; false when the session is gone.
    pub(crate) fn ask(&self, request: XaRequest) -> bool {
        self.requests.send(request).is_ok()
    }

    pub(crate) fn set_committed(&self) {
        self.state.store(COMMITTED, Ordering::SeqCst);
    }

    pub(crate) fn set_rolled_back(&self) {
        self.state.store(ROLLED_BACK, Ordering::SeqCst);
    }

    /// Resolved: committed or rolled back on the backend.
    pub(crate) fn is_resolved(&self) -> bool {
        matches!(self.state.load(Ordering::SeqCst), COMMITTED | ROLLED_BACK)
    }

    /// Claimed for commit by the applier (committed or about to be).
    pub(crate) fn commit_claimed(&self) -> bool {
        matches!(
            self.state.load(Ordering::SeqCst),
            COMMIT_CLAIMED | COMMITTED
        )
    }

    pub(crate) fn is_committed(&self) -> bool {
        self.state.load(Ordering::SeqCst) == COMMITTED
    }

    /// Whether applying a write set with `keys` could wait for this XA's row locks.
    fn conflicts_with(&self, keys: &[Key]) -> bool {
        keys.iter().any(|k| {
            self.keys
                .get(&k.hash)
                .is_some_and(|mine| mine.conflicts_with(k.kind))
        })
    }
}

/// The prepared XAs of this node's sessions, by xid.
#[derive(Default)]
pub(crate) struct PreparedRegistry {
    by_xid: Mutex<HashMap<String, Arc<PreparedXa>>>,
    /// Wakes an applier that waits on a lock whenever an XA registers: its statement may have
    /// been granted the lock ahead of the applier, and now it can be asked to let go.
    registered: tokio::sync::Notify,
}

impl PreparedRegistry {
    /// Registers a session's prepared XA before its write set is proposed; the session serves
    /// the requests that arrive on the returned receiver until the XA is resolved.
    pub(crate) fn register(
        &self,
        xid: &str,
        thread: u32,
        keys: &[Key],
    ) -> (Arc<PreparedXa>, mpsc::UnboundedReceiver<XaRequest>) {
        let (requests, rx) = mpsc::unbounded_channel();
        let xa = Arc::new(PreparedXa {
            state: AtomicU8::new(WAITING),
            thread,
            keys: keys.iter().map(|k| (k.hash, k.kind)).collect(),
            requests,
        });
        if let Ok(mut m) = self.by_xid.lock() {
            m.insert(xid.to_owned(), xa.clone());
        }
        self.registered.notify_waiters();
        (xa, rx)
    }

    /// Resolves at the next registration after this call.
    pub(crate) fn next_registration(&self) -> tokio::sync::futures::Notified<'_> {
        self.registered.notified()
    }

    pub(crate) fn remove(&self, xid: &str) {
        if let Ok(mut m) = self.by_xid.lock() {
            m.remove(xid);
        }
    }

    pub(crate) fn get(&self, xid: &str) -> Option<Arc<PreparedXa>> {
        self.by_xid.lock().ok()?.get(xid).cloned()
    }

    /// Whether `xid` is a prepared XA of a live session here (its write set is then committed
    /// by that session, not replayed).
    pub(crate) fn holds(&self, xid: Option<&str>) -> bool {
        xid.is_some_and(|x| self.by_xid.lock().is_ok_and(|m| m.contains_key(x)))
    }

    /// The prepared XAs whose locks a write set with `keys` could wait for (`None`: every one,
    /// for a TOI or a snapshot load, which take metadata locks).
    fn conflicting(&self, keys: Option<&[Key]>) -> Vec<Arc<PreparedXa>> {
        let Ok(m) = self.by_xid.lock() else {
            return Vec::new();
        };
        m.values()
            .filter(|xa| keys.is_none_or(|k| xa.conflicts_with(k)))
            .cloned()
            .collect()
    }

    /// The prepared XA held by backend `thread`, if any.
    pub(crate) fn by_thread(&self, thread: u32) -> Option<Arc<PreparedXa>> {
        let m = self.by_xid.lock().ok()?;
        m.values().find(|xa| xa.thread == thread).cloned()
    }

    /// Asks the sessions whose prepared XAs conflict with `keys` to roll them back, and
    /// returns the answers to wait for. Such an XA's write set comes later in the log than
    /// the one about to be applied and did not see it, so certification aborts it anyway
    /// (and if not, the applier replays it). An XA already claimed (the applier's own write set's, whose claim for commit failed) is
    /// not asked again.
    pub(crate) fn release_conflicting(&self, keys: Option<&[Key]>) -> Vec<oneshot::Receiver<()>> {
        self.conflicting(keys)
            .into_iter()
            .filter_map(|xa| match ask_rollback(&xa) {
                Release::Asked(rx) => Some(rx),
                // A gone session's XA is detached; the watchdog resolves it if it blocks.
                Release::NotClaimed | Release::SessionGone => None,
            })
            .collect()
    }
}

/// What came of claiming a prepared XA for rollback.
pub(crate) enum Release {
    /// Already claimed (for commit or rollback): nothing asked.
    NotClaimed,
    /// Claimed; its session was asked and answers on this channel.
    Asked(oneshot::Receiver<()>),
    /// Claimed, but its session is gone: the XA is detached (or going), and whoever claimed it
    /// rolls it back from any connection.
    SessionGone,
}

/// Claims `xa` for rollback and asks its session.
pub(crate) fn ask_rollback(xa: &PreparedXa) -> Release {
    if !xa.claim_rollback() {
        return Release::NotClaimed;
    }
    let (done, rx) = oneshot::channel();
    if xa.ask(XaRequest::RollBack { done }) {
        Release::Asked(rx)
    } else {
        Release::SessionGone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writeset::Key;

    fn key(b: u8, kind: KeyKind) -> Key {
        Key {
            hash: KeyHash([b; 16]),
            kind,
        }
    }

    #[test]
    fn commit_and_rollback_claims_exclude_each_other() {
        let reg = PreparedRegistry::default();
        let (xa, _rx) = reg.register("x1", 7, &[]);
        assert!(xa.claim_commit());
        assert!(!xa.claim_rollback());
        assert!(!xa.claim_commit());
        let (xa, _rx) = reg.register("x2", 8, &[]);
        assert!(xa.claim_rollback());
        assert!(!xa.claim_commit());
        assert!(!xa.is_resolved());
        xa.set_rolled_back();
        assert!(xa.is_resolved() && !xa.is_committed());
    }

    #[test]
    fn only_conflicting_keys_release_a_prepared_xa() {
        let reg = PreparedRegistry::default();
        let (_a, mut rx_a) = reg.register("a", 1, &[key(1, KeyKind::Exclusive)]);
        let (_b, mut rx_b) = reg.register("b", 2, &[key(2, KeyKind::Reference)]);
        // A shared reference on the table does not conflict with another reference.
        assert!(reg
            .release_conflicting(Some(&[key(2, KeyKind::Reference)]))
            .is_empty());
        let asked = reg.release_conflicting(Some(&[key(1, KeyKind::Update)]));
        assert_eq!(asked.len(), 1);
        assert!(matches!(rx_a.try_recv(), Ok(XaRequest::RollBack { .. })));
        assert!(rx_b.try_recv().is_err());
        // Claimed once: asking again asks nobody.
        assert!(reg
            .release_conflicting(Some(&[key(1, KeyKind::Exclusive)]))
            .is_empty());
        // A TOI releases every one not claimed yet.
        assert_eq!(reg.release_conflicting(None).len(), 1);
        assert!(matches!(rx_b.try_recv(), Ok(XaRequest::RollBack { .. })));
    }

    #[test]
    fn blockers_are_found_by_backend_thread() {
        let reg = PreparedRegistry::default();
        let (_a, _rx) = reg.register("a", 41, &[]);
        assert!(reg.by_thread(41).is_some());
        assert!(reg.by_thread(42).is_none());
        assert!(reg.holds(Some("a")) && !reg.holds(Some("b")) && !reg.holds(None));
        reg.remove("a");
        assert!(reg.get("a").is_none());
    }
}
