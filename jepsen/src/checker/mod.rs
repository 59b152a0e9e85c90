//! The checkers: each turns a history into a verdict with named, human-readable anomalies.
//!
//! Owns the verdict types shared by every workload (`CheckResult`, `Anomaly`, `AnomalyKind`).
//! Checkers are pure functions of a `History` plus workload options: no I/O, no clock, and
//! deterministic output (ordered maps only), so the same history always yields the same report.
//! They must not mutate or re-record the history.

pub mod bank;
pub mod counter;
pub mod list_append;
pub mod set;

mod graph;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::history::HistoryError;

/// The names follow Elle and Jepsen's reports, so a reader can look them up there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AnomalyKind {
    /// A cycle of write-write dependencies only.
    #[serde(rename = "G0")]
    G0,
    /// Aborted read: a read observed a write of a failed transaction.
    #[serde(rename = "G1a")]
    G1a,
    /// Intermediate read: a read observed a non-final write of another transaction.
    #[serde(rename = "G1b")]
    G1b,
    /// A cycle of write-write and write-read dependencies.
    #[serde(rename = "G1c")]
    G1c,
    /// A cycle with exactly one read-write anti-dependency (read skew).
    #[serde(rename = "G-single")]
    GSingle,
    /// A cycle with two or more read-write anti-dependencies (write skew).
    #[serde(rename = "G2-item")]
    G2Item,
    /// Two committed transactions built on the same version (P4), or an increment that vanished.
    #[serde(rename = "lost-update")]
    LostUpdate,
    /// An acknowledged write that later reads never show.
    #[serde(rename = "lost-write")]
    LostWrite,
    /// A read that missed a write acknowledged before the read began (only when asked for).
    #[serde(rename = "stale-read")]
    StaleRead,
    /// The same appended element appears more than once in a read.
    #[serde(rename = "duplicate-append")]
    DuplicateAppend,
    /// A read inside a transaction that does not reflect that transaction's own earlier writes.
    #[serde(rename = "internal")]
    Internal,
    /// Two reads of a key that are not prefixes of one another: no single version order.
    #[serde(rename = "incompatible-order")]
    IncompatibleOrder,
    /// A read observed a value no operation ever wrote, or one a failed operation wrote where
    /// the workload has no finer name for it.
    #[serde(rename = "unexpected-value")]
    UnexpectedValue,
    /// A bank read whose balances do not sum to the expected total.
    #[serde(rename = "wrong-total")]
    WrongTotal,
    #[serde(rename = "negative-balance")]
    NegativeBalance,
    /// A counter read above the number of increments that could have happened.
    #[serde(rename = "counter-too-high")]
    CounterTooHigh,
    /// Backends that should hold identical data after healing and catch-up do not.
    #[serde(rename = "divergence")]
    Divergence,
    /// The history itself cannot be judged (unpaired ops, no final read, reused values).
    #[serde(rename = "invalid-history")]
    InvalidHistory,
}

impl AnomalyKind {
    pub fn name(self) -> &'static str {
        match self {
            AnomalyKind::G0 => "G0",
            AnomalyKind::G1a => "G1a",
            AnomalyKind::G1b => "G1b",
            AnomalyKind::G1c => "G1c",
            AnomalyKind::GSingle => "G-single",
            AnomalyKind::G2Item => "G2-item",
            AnomalyKind::LostUpdate => "lost-update",
            AnomalyKind::LostWrite => "lost-write",
            AnomalyKind::StaleRead => "stale-read",
            AnomalyKind::DuplicateAppend => "duplicate-append",
            AnomalyKind::Internal => "internal",
            AnomalyKind::IncompatibleOrder => "incompatible-order",
            AnomalyKind::UnexpectedValue => "unexpected-value",
            AnomalyKind::WrongTotal => "wrong-total",
            AnomalyKind::NegativeBalance => "negative-balance",
            AnomalyKind::CounterTooHigh => "counter-too-high",
            AnomalyKind::Divergence => "divergence",
            AnomalyKind::InvalidHistory => "invalid-history",
        }
    }
}

impl fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One finding, explained with the ops involved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    pub description: String,
}

/// A checker's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CheckResult {
    /// True only when the history was judged and nothing was found.
    pub valid: bool,
    /// At most [`MAX_REPORTED_PER_KIND`] examples of each kind, in discovery order.
    pub anomalies: Vec<Anomaly>,
    /// The full count of each kind, including examples not kept in `anomalies`.
    pub anomaly_counts: BTreeMap<AnomalyKind, usize>,
}

/// A broken cluster can produce thousands of anomalies of one kind; a report keeps enough
/// examples to debug from and counts the rest.
pub const MAX_REPORTED_PER_KIND: usize = 20;

impl CheckResult {
    pub fn has(&self, kind: AnomalyKind) -> bool {
        self.anomaly_counts.contains_key(&kind)
    }

    pub fn count(&self, kind: AnomalyKind) -> usize {
        self.anomaly_counts.get(&kind).copied().unwrap_or(0)
    }

    /// The first reported anomaly of `kind`.
    pub fn first(&self, kind: AnomalyKind) -> Option<&Anomaly> {
        self.anomalies.iter().find(|a| a.kind == kind)
    }
}

/// Collects anomalies while a checker runs.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    result: CheckResult,
}

impl Findings {
    pub(crate) fn report(&mut self, kind: AnomalyKind, description: impl Into<String>) {
        let count = self.result.anomaly_counts.entry(kind).or_insert(0);
        *count += 1;
        if *count <= MAX_REPORTED_PER_KIND {
            self.result.anomalies.push(Anomaly {
                kind,
                description: description.into(),
            });
        }
    }

    pub(crate) fn invalid_history(error: &HistoryError) -> CheckResult {
        let mut findings = Findings::default();
        findings.report(AnomalyKind::InvalidHistory, error.to_string());
        findings.finish()
    }

    pub(crate) fn finish(mut self) -> CheckResult {
        self.result.valid = self.result.anomaly_counts.is_empty();
        self.result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_cap_examples_but_count_all() {
        let mut findings = Findings::default();
        for i in 0..(MAX_REPORTED_PER_KIND + 5) {
            findings.report(AnomalyKind::WrongTotal, format!("read {i}"));
        }
        findings.report(AnomalyKind::G0, "cycle");
        let result = findings.finish();
        assert!(!result.valid);
        assert_eq!(
            result.count(AnomalyKind::WrongTotal),
            MAX_REPORTED_PER_KIND + 5
        );
        assert_eq!(result.anomalies.len(), MAX_REPORTED_PER_KIND + 1);
        assert_eq!(result.first(AnomalyKind::G0).unwrap().description, "cycle");
    }

    #[test]
    fn no_findings_is_valid() {
        let result = Findings::default().finish();
        assert!(result.valid);
        assert!(result.anomalies.is_empty());
    }

    #[test]
    fn kind_names_match_serde_names() {
        let kinds = [
            AnomalyKind::G0,
            AnomalyKind::G1a,
            AnomalyKind::G1b,
            AnomalyKind::G1c,
            AnomalyKind::GSingle,
            AnomalyKind::G2Item,
            AnomalyKind::LostUpdate,
            AnomalyKind::LostWrite,
            AnomalyKind::StaleRead,
            AnomalyKind::DuplicateAppend,
            AnomalyKind::Internal,
            AnomalyKind::IncompatibleOrder,
            AnomalyKind::UnexpectedValue,
            AnomalyKind::WrongTotal,
            AnomalyKind::NegativeBalance,
            AnomalyKind::CounterTooHigh,
            AnomalyKind::Divergence,
            AnomalyKind::InvalidHistory,
        ];
        for kind in kinds {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.name()));
        }
    }
}
