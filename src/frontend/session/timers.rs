//! A session's idle and stall timeouts, kept off the per-command path. Owns: when a session
//! counts as idle or stalled. Must not: read or write packets itself (it only wraps the reader's
//! futures).
//!
//! Why not `tokio::time::timeout` around every read: each call registers a timer, and a timer
//! registered while the runtime has no earlier one wakes the runtime's driver (an eventfd write,
//! then an extra epoll round): one more syscall and wake-up for every relayed command. Here the
//! idle timer stays registered for the life of the session and is re-armed only when it fires
//! early (at most once per `idle_timeout`), and the stall timer is started only for a command that
//! did not arrive whole.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;
use tokio::time::{Instant, Sleep};

pub(super) struct IdleTimer {
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    last_active: Instant,
}

impl IdleTimer {
    pub(super) fn new(timeout: Duration) -> Self {
        IdleTimer {
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            last_active: Instant::now(),
        }
    }

    /// The session starts waiting for a command: idleness is counted from now.
    pub(super) fn start_waiting(&mut self) {
        self.last_active = Instant::now();
    }

    /// Resolves once the session has waited `timeout` since `start_waiting`. Cancel-safe.
    pub(super) async fn expired(&mut self) {
        loop {
            (&mut self.sleep).await;
            // A timeout too large to add to a clock reading never expires.
            let Some(due) = self.last_active.checked_add(self.timeout) else {
                return std::future::pending().await;
            };
            if Instant::now() >= due {
                return;
            }
            self.sleep.as_mut().reset(due);
        }
    }
}

/// Runs `read` to completion, failing with `Err(())` if it is still pending `stall` after its
/// first poll. A read that completes on its first poll (the usual case: the whole packet is
/// already buffered) never touches the timer wheel.
pub(super) async fn unless_stalled<F: Future>(read: F, stall: Duration) -> Result<F::Output, ()> {
    let mut read = std::pin::pin!(read);
    let first = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
    match first {
        Poll::Ready(out) => Ok(out),
        Poll::Pending => tokio::time::timeout(stall, read).await.map_err(drop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_timer_counts_from_the_last_wait_not_from_creation() {
        let mut idle = IdleTimer::new(Duration::from_millis(300));
        // Registered now, due at 300 ms; the wait below starts at 200 ms.
        let early = tokio::time::timeout(Duration::from_millis(200), idle.expired()).await;
        assert!(early.is_err());
        idle.start_waiting();
        let started = Instant::now();
        idle.expired().await;
        let waited = started.elapsed();
        // Generous upper bound: the machine may be loaded.
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
            "waited {waited:?}"
        );
    }

    #[tokio::test]
    async fn an_idle_timeout_beyond_the_clock_never_expires() {
        let mut idle = IdleTimer::new(Duration::from_secs(u64::MAX));
        idle.start_waiting();
        let expired = tokio::time::timeout(Duration::from_millis(50), idle.expired()).await;
        assert!(expired.is_err());
    }

    #[tokio::test]
    async fn a_ready_read_needs_no_timer_and_a_stalled_one_fails() {
        let ready = unless_stalled(async { 7 }, Duration::from_millis(1)).await;
        assert_eq!(ready, Ok(7));
        let stalled = unless_stalled(std::future::pending::<()>(), Duration::from_millis(50)).await;
        assert_eq!(stalled, Err(()));
        let slow = unless_stalled(
            async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                3
            },
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(slow, Ok(3));
    }
}
