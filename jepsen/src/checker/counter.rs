//! The counter checker: clients increment one register by read-modify-write, then read it.
//!
//! Owns the bounds a counter read must fall in. The final read (the last successful one) must
//! lie between the increments acknowledged before it began and those that could have landed
//! by the time it returned; below is a lost update, above is an increment from nowhere. Earlier
//! reads get only the upper bound: a lagging node may legitimately serve an old value.
//! It must not treat `info` increments as either applied or lost: they widen the bounds.

use crate::checker::{AnomalyKind, CheckResult, Findings};
use crate::edn::op_to_edn;
use crate::history::{History, OpType, Pair, Value, F};

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
