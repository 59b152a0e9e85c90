//! Where a commit spends its time: one latency histogram per write-path stage, plus how many
//! write sets each Raft entry carries (batching) and how many entries the log commits.
//!
//! Owns the stage names, the histogram buckets and the live histograms, which `/metrics`
//! exports as `certus_commit_stage_seconds{stage=...}`, `certus_raft_entry_write_sets` and
//! `certus_raft_entries_total`. It must not decide anything: the write path and the sessions
//! only call [`WritePathMetrics::observe`]; nothing reads these numbers back to act on them (the
//! state machine stays deterministic whatever the clock says).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The stages of a commit, in the order a write set goes through them (DESIGN §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// XA END, XA PREPARE and `@@last_gtid` (one pipelined round trip; for an autocommit write
    /// sent with the statement, only the wait for their replies after the statement's), and
    /// matching the event group on the binlog stream.
    Capture,
    /// Certification keys from the captured rows and the catalog.
    Keys,
    /// `propose`: batching, forwarding to the leader, the fsynced Raft append on a quorum, commit.
    Propose,
    /// Decoding and certifying one write set in the state machine.
    Certify,
    /// From certification to the applier picking the write set up (the local apply queue).
    ApplyQueue,
    /// Applying one write set (or TOI) on the local backend.
    Apply,
    /// From `propose` returning to the origin learning its outcome (this node's state machine
    /// reaching the entry, the apply queue and the apply).
    Outcome,
    /// The whole commit as the client waits for it: from XA END (for an autocommit write sent
    /// with its statement, from the statement's reply) to the outcome.
    Commit,
}

impl Stage {
    pub const ALL: [Stage; 8] = [
        Stage::Capture,
        Stage::Keys,
        Stage::Propose,
        Stage::Certify,
        Stage::ApplyQueue,
        Stage::Apply,
        Stage::Outcome,
        Stage::Commit,
    ];

    /// The `stage` label value.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Capture => "capture",
            Stage::Keys => "keys",
            Stage::Propose => "propose",
            Stage::Certify => "certify",
            Stage::ApplyQueue => "apply_queue",
            Stage::Apply => "apply",
            Stage::Outcome => "outcome",
            Stage::Commit => "commit",
        }
    }

    fn index(self) -> usize {
        Stage::ALL.iter().position(|s| *s == self).unwrap_or(0)
    }
}

/// Label set of the stage histograms.
pub type StageLabels = Vec<(String, String)>;

/// 10 µs to about 10 s, 1.5x apart: fine enough to read a p50 of a fraction of a millisecond.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_01, 1.5, 35))
}

/// 1, 2, 4 ... 1024 write sets per Raft entry (the batcher's default cap is 1024).
fn batch_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 11))
}

/// The live latency and batching metrics of one node.
#[derive(Debug)]
pub struct WritePathMetrics {
    stages: Family<StageLabels, Histogram, fn() -> Histogram>,
    /// One handle per stage into `stages`, in `Stage::ALL` order (no label lookup per observe).
    by_stage: Vec<Histogram>,
    /// (observations, nanoseconds) per stage: the histogram keeps its own, but does not expose
    /// them outside its text encoding.
    totals: Vec<(AtomicU64, AtomicU64)>,
    entry_write_sets: Histogram,
    raft_entries: Counter,
}

impl Default for WritePathMetrics {
    fn default() -> Self {
        let stages: Family<StageLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        let by_stage = Stage::ALL
            .iter()
            .map(|s| {
                stages
                    .get_or_create(&vec![("stage".to_string(), s.name().to_string())])
                    .clone()
            })
            .collect();
        WritePathMetrics {
            stages,
            by_stage,
            totals: Stage::ALL
                .iter()
                .map(|_| (AtomicU64::new(0), AtomicU64::new(0)))
                .collect(),
            entry_write_sets: batch_histogram(),
            raft_entries: Counter::default(),
        }
    }
}

impl WritePathMetrics {
    pub fn observe(&self, stage: Stage, took: Duration) {
        if let Some(h) = self.by_stage.get(stage.index()) {
            h.observe(took.as_secs_f64());
        }
        if let Some((count, nanos)) = self.totals.get(stage.index()) {
            count.fetch_add(1, Ordering::Relaxed);
            let n = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
            nanos.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// A Raft entry carrying `write_sets` proposals reached this node's state machine.
    pub fn observe_entry(&self, write_sets: usize) {
        self.raft_entries.inc();
        self.entry_write_sets.observe(write_sets as f64);
    }

    /// (observations, sum of seconds) of one stage, for tests and `/status`.
    pub fn stage_totals(&self, stage: Stage) -> (u64, f64) {
        self.totals
            .get(stage.index())
            .map(|(c, n)| {
                (
                    c.load(Ordering::Relaxed),
                    n.load(Ordering::Relaxed) as f64 / 1e9,
                )
            })
            .unwrap_or((0, 0.0))
    }

    /// Registers the live metrics in a scrape's registry (shared handles, not copies).
    pub(crate) fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register_with_unit(
            "commit_stage",
            "Latency of each write-path stage (capture, keys, release, propose, certify, \
             apply_queue, apply, outcome, commit = the whole commit as the client waits)",
            prometheus_client::registry::Unit::Seconds,
            self.stages.clone(),
        );
        registry.register(
            "raft_entry_write_sets",
            "Write sets carried by each Raft entry this node's state machine applied (batching)",
            self.entry_write_sets.clone(),
        );
        registry.register(
            "raft_entries",
            "Raft entries carrying write sets applied by this node's state machine",
            self.raft_entries.clone(),
        );
    }
}

/// Measures one stage from its creation to [`StageTimer::stop`].
pub(crate) struct StageTimer {
    started: std::time::Instant,
}

impl StageTimer {
    pub(crate) fn start() -> Self {
        StageTimer {
            started: std::time::Instant::now(),
        }
    }

    pub(crate) fn stop(&self, metrics: &WritePathMetrics, stage: Stage) {
        metrics.observe(stage, self.started.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_has_its_own_histogram() {
        let m = WritePathMetrics::default();
        for (i, s) in Stage::ALL.iter().enumerate() {
            for _ in 0..=i {
                m.observe(*s, Duration::from_millis(2));
            }
        }
        for (i, s) in Stage::ALL.iter().enumerate() {
            let (count, sum) = m.stage_totals(*s);
            assert_eq!(count, i as u64 + 1, "{}", s.name());
            assert!(
                (sum - 0.002 * (i as f64 + 1.0)).abs() < 1e-9,
                "{}",
                s.name()
            );
        }
    }
}
