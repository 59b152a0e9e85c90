//! The counter checker: clients increment one register by read-modify-write, then read it.
//!
//! Owns the bounds a counter read must fall in. The final read (the last successful one) must
//! lie between the increments acknowledged before it began and those that could have landed
//! by the time it returned; below is a lost update, above is an increment from nowhere. Earlier
//! reads get only the upper bound: a lagging node may legitimately serve an old value.
//! It must not treat `info` increments as either applied or lost: they widen the bounds.
//!
//! When increments record the value they wrote (`Op::wrote`, a read-modify-write
//! `SET v = <read + delta>`) and every delta is positive, two acknowledged increments that
//! wrote the same value read the same version: one overwrote the other. That is reported as a
//! lost update with both ops, even when indeterminate increments make the bounds too wide to
//! show it (a faulted run has many).

use std::collections::BTreeMap;

use crate::checker::{AnomalyKind, CheckResult, Findings};
use crate::edn::op_to_edn;
use crate::history::{History, Op, OpType, Pair, Value, F};

struct Bounds {
    lower: i128,
    upper: i128,
    acknowledged: usize,
    indeterminate: usize,
}

/// What a read spanning `[invoked, completed]` may return, from the increments around it.
fn bounds(adds: &[(Pair<'_>, i64)], invoked: u64, completed: u64) -> Bounds {
    let mut b = Bounds {
        lower: 0,
        upper: 0,
        acknowledged: 0,
        indeterminate: 0,
    };
    for (pair, delta) in adds {
        let delta = i128::from(*delta);
        let certain = pair.outcome() == OpType::Ok && pair.completed_at() < invoked;
        if certain {
            b.lower += delta;
            b.upper += delta;
            b.acknowledged += 1;
        } else if pair.outcome() != OpType::Fail && pair.invoke.index < completed {
            b.lower += delta.min(0);
            b.upper += delta.max(0);
            b.indeterminate += 1;
        }
    }
    b
}

/// Judges a counter history: `:add` ops carry `Value::Int(delta)`, `:read` ops return
/// `Value::Int`.
pub fn check(history: &History) -> CheckResult {
    let pairs = match history.pairs() {
        Ok(pairs) => pairs,
        Err(error) => return Findings::invalid_history(&error),
    };
    let mut findings = Findings::default();
    let mut adds: Vec<(Pair<'_>, i64)> = Vec::new();
    for pair in pairs.iter().filter(|p| p.invoke.f == F::Add) {
        match pair.invoke.value {
            Value::Int(delta) => adds.push((*pair, delta)),
            ref other => findings.report(
                AnomalyKind::InvalidHistory,
                format!(
                    "op {}: an :add without an integer: {other:?}",
                    pair.invoke.index
                ),
            ),
        }
    }
    same_value_written(&adds, &mut findings);
    let mut reads: Vec<(Pair<'_>, i64)> = Vec::new();
    for pair in pairs
        .iter()
        .filter(|p| p.invoke.f == F::Read && p.outcome() == OpType::Ok)
    {
        match pair.last().value {
            Value::Int(value) => reads.push((*pair, value)),
            ref other => findings.report(
                AnomalyKind::InvalidHistory,
                format!(
                    "op {}: a counter read without an integer: {other:?}",
                    pair.last().index
                ),
            ),
        }
    }
    let Some(final_at) = reads.iter().map(|(p, _)| p.invoke.index).max() else {
        findings.report(
            AnomalyKind::InvalidHistory,
            "no read succeeded, so the counter was never checked",
        );
        return findings.finish();
    };
    for (pair, value) in &reads {
        let op = pair.last();
        let b = bounds(&adds, pair.invoke.index, pair.completed_at());
        let value128 = i128::from(*value);
        if value128 > b.upper {
            findings.report(
                AnomalyKind::CounterTooHigh,
                format!(
                    "op {}: read {value}, but at most {} could have been added \
                     ({} acknowledged, {} indeterminate or concurrent)\n  {}",
                    op.index,
                    b.upper,
                    b.acknowledged,
                    b.indeterminate,
                    op_to_edn(op)
                ),
            );
        }
        if pair.invoke.index == final_at && value128 < b.lower {
            findings.report(
                AnomalyKind::LostUpdate,
                format!(
                    "op {}: final read {value}, but {} was acknowledged before it began \
                     ({} acknowledged increments): acknowledged increments were lost\n  {}",
                    op.index,
                    b.lower,
                    b.acknowledged,
                    op_to_edn(op)
                ),
            );
        }
    }
    findings.finish()
}

/// Acknowledged increments of a monotone counter that wrote the same value (see the module
/// header). Increments that did not record what they wrote are skipped.
fn same_value_written(adds: &[(Pair<'_>, i64)], findings: &mut Findings) {
    if adds.iter().any(|(_, delta)| *delta <= 0) {
        return;
    }
    let mut by_value: BTreeMap<i64, Vec<&Op>> = BTreeMap::new();
    for (pair, _) in adds.iter().filter(|(p, _)| p.outcome() == OpType::Ok) {
        if let Some(wrote) = pair.last().wrote {
            by_value.entry(wrote).or_default().push(pair.last());
        }
    }
    for (value, ops) in by_value.iter().filter(|(_, ops)| ops.len() > 1) {
        let listed: Vec<String> = ops
            .iter()
            .map(|op| format!("  {}", op_to_edn(op)))
            .collect();
        findings.report(
            AnomalyKind::LostUpdate,
            format!(
                "{} acknowledged increments all wrote {value}: they read the same value, \
                 so all but one were overwritten\n{}",
                ops.len(),
                listed.join("\n")
            ),
        );
    }
}
