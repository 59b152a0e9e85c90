//! Flow control (DESIGN §10, Galera's gcs.fc_limit / gcs.fc_factor): when a node's apply queue
//! grows past `fc_limit`, that node asks the cluster to pause, and writers on every node wait
//! before they propose until no live node asks any more. The asking node keeps asking until its
//! queue is back at or below `fc_limit * fc_factor` (hysteresis, so the cluster does not flap).
//!
//! Owns: the node's own "over the limit" decision, the cluster-wide "paused" state derived from
//! the live members' reports, the pause of writers, and the `wsrep_flow_control_*` counters.
//! Must not touch: the transport and liveness (`progress`), the queue itself (the write path).
//!
//! The pause is bounded by liveness: a node whose reports stop arriving (crashed, partitioned,
//! paused) is no longer live after `progress::LIVE_AGE` and no longer pauses anyone. A node
//! whose backend is down or that is Inconsistent does not ask (Galera's desynced nodes do not
//! send flow control either).

use super::progress::Progress;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Galera's defaults are fc_limit 16 and fc_factor 1.0 (no hysteresis); a write set here is
/// cheaper to queue than Galera's, and one Raft entry carries many.
pub const DEFAULT_FC_LIMIT: u64 = 100;
pub const DEFAULT_FC_FACTOR: f64 = 0.8;

pub(crate) struct FlowControl {
    limit: u64,
    resume_at: u64,
    /// This node's own request (hysteresis state).
    over: AtomicBool,
    /// Writers on this node are paused (some live node asks).
    active: watch::Sender<bool>,
    /// Times this node started asking (`wsrep_flow_control_sent`).
    sent: AtomicU64,
    /// Times this node saw the cluster start pausing (`wsrep_flow_control_recv`).
    recv: AtomicU64,
    /// Completed pause time; the running pause is added when read.
    paused_ns: AtomicU64,
    active_since: Mutex<Option<Instant>>,
    started: Instant,
}

/// The `wsrep_flow_control_*` values of one status snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FlowControlStatus {
    pub paused: f64,
    pub paused_ns: u64,
    pub sent: u64,
    pub recv: u64,
    pub active: bool,
}

impl FlowControl {
    pub(crate) fn new(limit: u64, factor: f64) -> FlowControl {
        let limit = limit.max(1);
        let resume_at = ((limit as f64) * factor.clamp(0.0, 1.0)).floor() as u64;
        FlowControl {
            limit,
            resume_at: resume_at.min(limit),
            over: AtomicBool::new(false),
            active: watch::channel(false).0,
            sent: AtomicU64::new(0),
            recv: AtomicU64::new(0),
            paused_ns: AtomicU64::new(0),
            active_since: Mutex::new(None),
            started: Instant::now(),
        }
    }

    /// Updates this node's own request from its apply queue; `can_ask` is false while the node
    /// is desynced (backend down, Inconsistent). Returns whether it asks the cluster to pause.
    pub(crate) fn own_request(&self, queue: u64, can_ask: bool) -> bool {
        let was = self.over.load(Ordering::Relaxed);
        let now = can_ask
            && if was {
                queue > self.resume_at
            } else {
                queue > self.limit
            };
        if now && !was {
            self.sent.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                queue,
                limit = self.limit,
                "apply queue over fc_limit: asking the cluster to pause"
            );
        } else if was && !now {
            tracing::info!(queue, "apply queue drained: flow control released");
        }
        self.over.store(now, Ordering::Relaxed);
        now
    }

    /// Re-derives the cluster-wide pause from the live members' latest reports.
    pub(crate) fn evaluate(&self, progress: &Progress) {
        self.set_active(progress.any_live_fc_over());
    }

    fn set_active(&self, active: bool) {
        let was = *self.active.borrow();
        if was == active {
            return;
        }
        let Ok(mut since) = self.active_since.lock() else {
            return;
        };
        if active {
            self.recv.fetch_add(1, Ordering::Relaxed);
            *since = Some(Instant::now());
        } else if let Some(start) = since.take() {
            self.paused_ns
                .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        self.active.send_replace(active);
    }

    /// Waits while flow control is active; returns how long this writer waited. Bounded by
    /// liveness (see the module header): the reporter re-evaluates every report interval.
    pub(crate) async fn wait(&self) -> Duration {
        let mut rx = self.active.subscribe();
        if !*rx.borrow_and_update() {
            return Duration::ZERO;
        }
        let start = Instant::now();
        let _ = rx.wait_for(|active| !*active).await;
        start.elapsed()
    }

    pub(crate) fn status(&self) -> FlowControlStatus {
        let running = self
            .active_since
            .lock()
            .ok()
            .and_then(|s| s.map(|t| t.elapsed().as_nanos() as u64))
            .unwrap_or(0);
        let paused_ns = self.paused_ns.load(Ordering::Relaxed) + running;
        let elapsed = self.started.elapsed().as_nanos().max(1) as f64;
        FlowControlStatus {
            paused: (paused_ns as f64 / elapsed).min(1.0),
            paused_ns,
            sent: self.sent.load(Ordering::Relaxed),
            recv: self.recv.load(Ordering::Relaxed),
            active: *self.active.borrow(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_request_has_hysteresis_and_counts_what_it_sends() {
        let fc = FlowControl::new(10, 0.5);
        assert!(!fc.own_request(10, true), "at the limit is not over it");
        assert!(fc.own_request(11, true));
        assert!(fc.own_request(6, true), "still above fc_limit * fc_factor");
        assert!(!fc.own_request(5, true));
        assert!(fc.own_request(50, true));
        assert!(!fc.own_request(50, false), "a desynced node does not ask");
        assert_eq!(fc.status().sent, 2);
    }

    #[test]
    fn active_time_is_counted_and_recv_counts_pauses() {
        let fc = FlowControl::new(10, 1.0);
        fc.set_active(true);
        std::thread::sleep(Duration::from_millis(5));
        let s = fc.status();
        assert!(
            s.active && s.paused_ns >= 5_000_000 && s.paused > 0.0,
            "{s:?}"
        );
        fc.set_active(false);
        fc.set_active(false);
        let s = fc.status();
        assert!(
            !s.active && s.recv == 1 && s.paused_ns >= 5_000_000,
            "{s:?}"
        );
    }

    #[tokio::test]
    async fn writers_wait_until_released() {
        let fc = std::sync::Arc::new(FlowControl::new(10, 1.0));
        assert_eq!(fc.wait().await, Duration::ZERO);
        fc.set_active(true);
        let f = fc.clone();
        let waiter = tokio::spawn(async move { f.wait().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        fc.set_active(false);
        let waited = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("released")
            .expect("task");
        assert!(waited >= Duration::from_millis(15));
    }
}
