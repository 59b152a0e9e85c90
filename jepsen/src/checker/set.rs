//! The set checker: clients insert unique elements, then one final read lists them all.
//!
//! Owns the judgement of that final read: every insert acknowledged before it began must be
//! present (else a lost write), and nothing may be present that no insert attempted or that
//! only failed inserts attempted. Indeterminate inserts may go either way. It must not judge
//! earlier reads: a lagging node may serve an older set.

use std::collections::BTreeMap;

use crate::checker::{AnomalyKind, CheckResult, Findings};
use crate::edn::op_to_edn;
use crate::history::{Elem, History, OpType, Pair, Value, F};

#[derive(Default)]
struct Attempts<'a> {
    /// The first insert acknowledged before the final read began.
    acknowledged: Option<Pair<'a>>,
    /// Whether any insert might have taken effect (ok or indeterminate).
    may_exist: bool,
}

/// Judges a set history: `:add` ops carry `Value::Int(element)`, the final `:read` returns
/// `Value::Set`.
pub fn check(history: &History) -> CheckResult {
    let pairs = match history.pairs() {
        Ok(pairs) => pairs,
        Err(error) => return Findings::invalid_history(&error),
    };
    let mut findings = Findings::default();
    let final_read = pairs
        .iter()
        .filter(|p| p.invoke.f == F::Read && p.outcome() == OpType::Ok)
        .max_by_key(|p| p.invoke.index);
    let Some(final_read) = final_read else {
        findings.report(
            AnomalyKind::InvalidHistory,
            "no read succeeded, so the set was never checked",
        );
        return findings.finish();
    };
    let read_op = final_read.last();
    let Value::Set(present) = &read_op.value else {
        findings.report(
            AnomalyKind::InvalidHistory,
            format!(
                "op {}: the final read is not a set\n  {}",
                read_op.index,
                op_to_edn(read_op)
            ),
        );
        return findings.finish();
    };

    let mut attempts: BTreeMap<Elem, Attempts<'_>> = BTreeMap::new();
    for pair in pairs.iter().filter(|p| p.invoke.f == F::Add) {
        let Value::Int(elem) = pair.invoke.value else {
            findings.report(
                AnomalyKind::InvalidHistory,
                format!("op {}: an :add without an integer", pair.invoke.index),
            );
            continue;
        };
        let entry = attempts.entry(elem).or_default();
        match pair.outcome() {
            OpType::Ok => {
                entry.may_exist = true;
                if pair.completed_at() < final_read.invoke.index && entry.acknowledged.is_none() {
                    entry.acknowledged = Some(*pair);
                }
            }
            OpType::Info | OpType::Invoke => entry.may_exist = true,
            OpType::Fail => {}
        }
    }

    for (elem, attempt) in &attempts {
        if let Some(insert) = attempt.acknowledged {
            if !present.contains(elem) {
                findings.report(
                    AnomalyKind::LostWrite,
                    format!(
                        "element {elem} was acknowledged (op {}) before the final read (op {}) \
                         began, but the read does not contain it\n  {}",
                        insert.last().index,
                        read_op.index,
                        op_to_edn(insert.last())
                    ),
                );
            }
        }
    }
    for elem in present {
        match attempts.get(elem) {
            None => findings.report(
                AnomalyKind::UnexpectedValue,
                format!(
                    "the final read (op {}) contains {elem}, which no insert attempted",
                    read_op.index
                ),
            ),
            Some(attempt) if !attempt.may_exist => findings.report(
                AnomalyKind::UnexpectedValue,
                format!(
                    "the final read (op {}) contains {elem}, whose every insert failed",
                    read_op.index
                ),
            ),
            Some(_) => {}
        }
    }
    findings.finish()
}
