//! Builders for hand-written histories.

use std::collections::BTreeSet;

use certus_jepsen::checker::{AnomalyKind, CheckResult};
use certus_jepsen::history::{Elem, History, Key, Mop, Op, OpType, Process, Value, F};

pub fn a(key: Key, value: Elem) -> Mop {
    Mop::append(key, value)
}

pub fn r(key: Key, list: &[Elem]) -> Mop {
    Mop::read(key, Some(list.to_vec()))
}

/// What a client sends: reads are not known yet.
pub fn as_invoked(mops: &[Mop]) -> Vec<Mop> {
    mops.iter()
        .map(|m| match m {
            Mop::Read { key, .. } => Mop::read(*key, None),
            other => other.clone(),
        })
        .collect()
}

/// Records ops with increasing times; every sequential helper uses a fresh process, so info
/// completions never force process bookkeeping on the test.
#[derive(Default)]
pub struct Builder {
    pub history: History,
    next_process: u64,
}

impl Builder {
    pub fn new() -> Builder {
        Builder::default()
    }

    fn push(&mut self, op: Op) -> u64 {
        let time = self.history.len() as u64 * 1_000;
        self.history.push(op.with_time(time))
    }

    /// Invokes on a fresh process and returns it.
    pub fn invoke(&mut self, f: F, value: Value) -> Process {
        let p = Process::Client(self.next_process);
        self.next_process += 1;
        self.push(Op::invoke(p, f, value));
        p
    }

    pub fn complete(&mut self, p: Process, kind: OpType, f: F, value: Value) {
        self.push(Op::new(kind, p, f, value));
    }

    /// Starts a list-append transaction; complete it with `end_txn`.
    pub fn begin(&mut self, mops: &[Mop]) -> Process {
        self.invoke(F::Txn, Value::Txn(as_invoked(mops)))
    }

    /// Completes a transaction: `ok` carries the observed reads, the others what was sent.
    pub fn end_txn(&mut self, p: Process, kind: OpType, mops: &[Mop]) {
        let value = if kind == OpType::Ok {
            mops.to_vec()
        } else {
            as_invoked(mops)
        };
        self.complete(p, kind, F::Txn, Value::Txn(value));
    }

    /// A transaction that runs alone: invoked and completed back to back.
    pub fn txn(&mut self, kind: OpType, mops: &[Mop]) {
        let p = self.begin(mops);
        self.end_txn(p, kind, mops);
    }

    /// Completes with the value a read-modify-write increment wrote.
    pub fn complete_wrote(&mut self, p: Process, kind: OpType, f: F, value: Value, wrote: i64) {
        let time = self.history.len() as u64 * 1_000;
        self.history
            .push(Op::new(kind, p, f, value).with_wrote(wrote).with_time(time));
    }

    pub fn op(&mut self, kind: OpType, f: F, invoke: Value, complete: Value) {
        let p = self.invoke(f.clone(), invoke);
        self.complete(p, kind, f, complete);
    }
}

pub fn kinds(result: &CheckResult) -> BTreeSet<AnomalyKind> {
    result.anomaly_counts.keys().copied().collect()
}

/// Asserts the verdict is invalid with exactly these anomaly kinds, and that the
/// human-readable list agrees with the counts.
pub fn assert_exactly(result: &CheckResult, expected: &[AnomalyKind]) {
    let expected: BTreeSet<AnomalyKind> = expected.iter().copied().collect();
    assert_eq!(
        kinds(result),
        expected,
        "anomalies: {:#?}",
        result.anomalies
    );
    assert!(!result.valid);
    for kind in expected {
        assert!(result.first(kind).is_some(), "{kind} has no description");
    }
}

pub fn assert_valid(result: &CheckResult) {
    assert!(
        result.valid && result.anomalies.is_empty(),
        "expected a valid history, got {:#?}",
        result.anomalies
    );
}
