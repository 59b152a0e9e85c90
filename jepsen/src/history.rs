//! The history model: what the runner records and what every checker reads.
//!
//! Owns `Op`, its type/function/value vocabulary (Jepsen's, so histories can be written as EDN
//! and fed to Elle unchanged), and the pairing of invocations with completions. It must not
//! judge anything: checkers live in `checker/`, and this module never decides validity.
//!
//! An operation whose outcome is unknown (the connection dropped during COMMIT, a timeout) is
//! `Info`, never `Fail`: `Fail` is a promise that the operation had no effect, and a checker
//! that trusts a false `Fail` reports phantom anomalies (G1a) instead of real ones.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

/// A list-append key.
pub type Key = u64;
/// An element appended to a list, a set member, or a counter value.
pub type Elem = i64;
/// A bank account id.
pub type Account = u64;

/// Jepsen's `:type`: an invocation, or one of the three ways it can complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    Invoke,
    /// The operation took effect.
    Ok,
    /// The operation definitely did not take effect.
    Fail,
    /// The outcome is unknown: it may or may not have taken effect.
    Info,
}

impl OpType {
    pub fn keyword(self) -> &'static str {
        match self {
            OpType::Invoke => "invoke",
            OpType::Ok => "ok",
            OpType::Fail => "fail",
            OpType::Info => "info",
        }
    }
}

/// Jepsen's `:process`: a logical client, or the nemesis.
///
/// A client process that receives an `Info` completion is retired (its operation may still be
/// in flight) and the runner must continue on a fresh process id; pairing enforces this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Process {
    Client(u64),
    Nemesis,
}

/// Jepsen's `:f`: which operation was attempted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum F {
    /// A list-append transaction of micro-operations.
    Txn,
    /// A bank transfer.
    Transfer,
    /// A read: bank balances, counter value or set contents.
    Read,
    /// A counter increment or a set insert.
    Add,
    /// Anything else, typically a nemesis action such as `start-partition`. Written as a
    /// keyword, so the runner should use keyword-safe names (letters, digits, `-`).
    Other(String),
}

impl F {
    pub fn keyword(&self) -> &str {
        match self {
            F::Txn => "txn",
            F::Transfer => "transfer",
            F::Read => "read",
            F::Add => "add",
            F::Other(name) => name,
        }
    }
}

/// One micro-operation of a list-append transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mop {
    /// `[:append k v]`
    Append { key: Key, value: Elem },
    /// `[:r k list]`; `None` in an invocation (not yet known) and for a key that has no row.
    Read { key: Key, value: Option<Vec<Elem>> },
}

impl Mop {
    pub fn append(key: Key, value: Elem) -> Mop {
        Mop::Append { key, value }
    }

    pub fn read(key: Key, value: Option<Vec<Elem>>) -> Mop {
        Mop::Read { key, value }
    }

    pub fn key(&self) -> Key {
        match self {
            Mop::Append { key, .. } | Mop::Read { key, .. } => *key,
        }
    }
}

/// Jepsen's `:value`, typed per workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    Nil,
    Int(i64),
    Txn(Vec<Mop>),
    Transfer {
        from: Account,
        to: Account,
        amount: i64,
    },
    Balances(BTreeMap<Account, i64>),
    Set(BTreeSet<Elem>),
    Text(String),
}

/// One line of a history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Position in the history; assigned by [`History::push`]. Index order is real-time order,
    /// because one recorder appends every op as it happens.
    pub index: u64,
    /// Nanoseconds since the start of the test.
    pub time: u64,
    pub process: Process,
    #[serde(rename = "type")]
    pub kind: OpType,
    pub f: F,
    pub value: Value,
    /// The certus node the client talked to.
    pub node: Option<String>,
    /// Why the operation failed or is indeterminate.
    pub error: Option<String>,
    /// The value a read-modify-write increment wrote (`SET v = <read + delta>`), recorded on
    /// its completion by the counter workloads: two acknowledged increments that wrote the
    /// same value built on the same read, so one of them was lost.
    #[serde(default)]
    pub wrote: Option<i64>,
}

impl Op {
    pub fn new(kind: OpType, process: Process, f: F, value: Value) -> Op {
        Op {
            index: 0,
            time: 0,
            process,
            kind,
            f,
            value,
            node: None,
            error: None,
            wrote: None,
        }
    }

    pub fn invoke(process: Process, f: F, value: Value) -> Op {
        Op::new(OpType::Invoke, process, f, value)
    }

    pub fn ok(process: Process, f: F, value: Value) -> Op {
        Op::new(OpType::Ok, process, f, value)
    }

    pub fn fail(process: Process, f: F, value: Value) -> Op {
        Op::new(OpType::Fail, process, f, value)
    }

    pub fn info(process: Process, f: F, value: Value) -> Op {
        Op::new(OpType::Info, process, f, value)
    }

    pub fn with_time(mut self, time: u64) -> Op {
        self.time = time;
        self
    }

    pub fn with_node(mut self, node: impl Into<String>) -> Op {
        self.node = Some(node.into());
        self
    }

    pub fn with_error(mut self, error: impl Into<String>) -> Op {
        self.error = Some(error.into());
        self
    }

    pub fn with_wrote(mut self, wrote: i64) -> Op {
        self.wrote = Some(wrote);
        self
    }
}

/// Why a history cannot be paired. These are runner bugs, not database anomalies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    #[error("op {index}: {process:?} completed without an outstanding invocation")]
    CompletionWithoutInvoke { index: u64, process: Process },
    #[error("op {index}: {process:?} invoked while op {outstanding} was still outstanding")]
    DoubleInvoke {
        index: u64,
        process: Process,
        outstanding: u64,
    },
    #[error("op {index}: completion :f {completion} does not match invocation :f {invoke}")]
    FunctionMismatch {
        index: u64,
        invoke: String,
        completion: String,
    },
    #[error("op {index}: {process:?} invoked again after an :info completion (op {info})")]
    ProcessReusedAfterInfo {
        index: u64,
        process: Process,
        info: u64,
    },
}

/// An invocation and its completion, if the history recorded one.
#[derive(Debug, Clone, Copy)]
pub struct Pair<'a> {
    pub invoke: &'a Op,
    pub completion: Option<&'a Op>,
}

impl<'a> Pair<'a> {
    /// `Ok`, `Fail` or `Info`. An invocation that never completed is `Info`: the client may
    /// have been cut off after the database acted.
    pub fn outcome(&self) -> OpType {
        self.completion.map_or(OpType::Info, |c| c.kind)
    }

    /// The value the checker should believe: the completion's for `Ok` (reads are filled in),
    /// the invocation's otherwise (what was attempted).
    pub fn value(&self) -> &'a Value {
        match self.completion {
            Some(c) if c.kind == OpType::Ok => &c.value,
            _ => &self.invoke.value,
        }
    }

    /// The op that stands for this operation in reports: the completion when there is one.
    pub fn last(&self) -> &'a Op {
        self.completion.unwrap_or(self.invoke)
    }

    /// Real-time position of the completion; an uncompleted op never completes.
    pub fn completed_at(&self) -> u64 {
        self.completion.map_or(u64::MAX, |c| c.index)
    }
}

/// Counts of client operations by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpCounts {
    /// Client invocations.
    pub ops: usize,
    pub ok: usize,
    pub fail: usize,
    /// Indeterminate, including invocations that never completed.
    pub info: usize,
}

/// A recorded history, in real-time order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    ops: Vec<Op>,
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    /// Appends `op`, overwriting its index with its position; returns that index.
    pub fn push(&mut self, mut op: Op) -> u64 {
        let index = self.ops.len() as u64;
        op.index = index;
        self.ops.push(op);
        index
    }

    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Pairs every client invocation with the completion that follows it on the same process,
    /// in invocation order. Nemesis ops are not client operations and are skipped.
    pub fn pairs(&self) -> Result<Vec<Pair<'_>>, HistoryError> {
        let mut pairs: Vec<Pair<'_>> = Vec::new();
        // process -> position in `pairs` of its outstanding invocation
        let mut outstanding: HashMap<Process, usize> = HashMap::new();
        let mut retired: HashMap<Process, u64> = HashMap::new();
        for op in &self.ops {
            if op.process == Process::Nemesis {
                continue;
            }
            match op.kind {
                OpType::Invoke => {
                    if let Some(&info) = retired.get(&op.process) {
                        return Err(HistoryError::ProcessReusedAfterInfo {
                            index: op.index,
                            process: op.process,
                            info,
                        });
                    }
                    if let Some(&slot) = outstanding.get(&op.process) {
                        return Err(HistoryError::DoubleInvoke {
                            index: op.index,
                            process: op.process,
                            outstanding: pairs[slot].invoke.index,
                        });
                    }
                    outstanding.insert(op.process, pairs.len());
                    pairs.push(Pair {
                        invoke: op,
                        completion: None,
                    });
                }
                OpType::Ok | OpType::Fail | OpType::Info => {
                    let Some(slot) = outstanding.remove(&op.process) else {
                        return Err(HistoryError::CompletionWithoutInvoke {
                            index: op.index,
                            process: op.process,
                        });
                    };
                    let pair = &mut pairs[slot];
                    if pair.invoke.f != op.f {
                        return Err(HistoryError::FunctionMismatch {
                            index: op.index,
                            invoke: pair.invoke.f.keyword().to_owned(),
                            completion: op.f.keyword().to_owned(),
                        });
                    }
                    pair.completion = Some(op);
                    if op.kind == OpType::Info {
                        retired.insert(op.process, op.index);
                    }
                }
            }
        }
        Ok(pairs)
    }

    /// Counts client operations by outcome; an unpairable history counts what it can.
    pub fn counts(&self) -> OpCounts {
        let mut counts = OpCounts::default();
        for op in &self.ops {
            if op.process == Process::Nemesis {
                continue;
            }
            match op.kind {
                OpType::Invoke => counts.ops += 1,
                OpType::Ok => counts.ok += 1,
                OpType::Fail => counts.fail += 1,
                OpType::Info => counts.info += 1,
            }
        }
        // Invocations cut off by the end of the test are indeterminate too.
        counts.info += counts
            .ops
            .saturating_sub(counts.ok + counts.fail + counts.info);
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: u64) -> Process {
        Process::Client(n)
    }

    #[test]
    fn pairs_interleaved_processes_and_skips_nemesis() {
        let mut h = History::new();
        h.push(Op::invoke(p(0), F::Add, Value::Int(1)));
        h.push(Op::invoke(p(1), F::Add, Value::Int(2)));
        h.push(Op::info(
            Process::Nemesis,
            F::Other("start-partition".into()),
            Value::Nil,
        ));
        h.push(Op::ok(p(1), F::Add, Value::Int(2)));
        h.push(Op::fail(p(0), F::Add, Value::Int(1)));
        h.push(Op::invoke(p(0), F::Read, Value::Nil));
        let pairs = h.pairs().unwrap();
        assert_eq!(pairs.len(), 3);
        assert_eq!(pairs[0].invoke.index, 0);
        assert_eq!(pairs[0].outcome(), OpType::Fail);
        assert_eq!(pairs[1].completion.map(|c| c.index), Some(3));
        assert_eq!(pairs[1].outcome(), OpType::Ok);
        assert!(pairs[2].completion.is_none());
        assert_eq!(pairs[2].outcome(), OpType::Info);
        let counts = h.counts();
        assert_eq!(
            counts,
            OpCounts {
                ops: 3,
                ok: 1,
                fail: 1,
                info: 1
            }
        );
    }

    #[test]
    fn ok_pair_value_is_the_completion_value() {
        let mut h = History::new();
        h.push(Op::invoke(p(0), F::Read, Value::Nil));
        h.push(Op::ok(p(0), F::Read, Value::Int(7)));
        let pairs = h.pairs().unwrap();
        assert_eq!(pairs[0].value(), &Value::Int(7));
    }

    #[test]
    fn rejects_completion_without_invoke() {
        let mut h = History::new();
        h.push(Op::ok(p(3), F::Add, Value::Int(1)));
        assert_eq!(
            h.pairs().unwrap_err(),
            HistoryError::CompletionWithoutInvoke {
                index: 0,
                process: p(3)
            }
        );
    }

    #[test]
    fn rejects_double_invoke_and_function_mismatch() {
        let mut h = History::new();
        h.push(Op::invoke(p(0), F::Add, Value::Int(1)));
        h.push(Op::invoke(p(0), F::Add, Value::Int(2)));
        assert!(matches!(
            h.pairs(),
            Err(HistoryError::DoubleInvoke { index: 1, .. })
        ));

        let mut h = History::new();
        h.push(Op::invoke(p(0), F::Add, Value::Int(1)));
        h.push(Op::ok(p(0), F::Read, Value::Int(1)));
        assert!(matches!(
            h.pairs(),
            Err(HistoryError::FunctionMismatch { index: 1, .. })
        ));
    }

    #[test]
    fn a_process_is_retired_after_info() {
        let mut h = History::new();
        h.push(Op::invoke(p(0), F::Add, Value::Int(1)));
        h.push(Op::info(p(0), F::Add, Value::Int(1)));
        h.push(Op::invoke(p(0), F::Add, Value::Int(2)));
        assert_eq!(
            h.pairs().unwrap_err(),
            HistoryError::ProcessReusedAfterInfo {
                index: 2,
                process: p(0),
                info: 1
            }
        );
    }

    #[test]
    fn push_assigns_indices() {
        let mut h = History::new();
        let mut op = Op::invoke(p(0), F::Add, Value::Int(1));
        op.index = 99;
        assert_eq!(h.push(op.clone()), 0);
        assert_eq!(h.push(op), 1);
        assert_eq!(h.ops()[1].index, 1);
    }
}
