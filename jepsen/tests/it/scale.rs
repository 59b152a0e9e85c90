//! 10k-op list-append histories from a simulated database: a correct one must pass, and the
//! classic Galera flaws injected into the same simulation must be caught. Bounded in size, so
//! the checkers' speed shows up as test time without a timing assertion.

use std::collections::{BTreeMap, HashMap};

use certus_jepsen::checker::list_append::{check, ListAppendOptions};
use certus_jepsen::checker::AnomalyKind;
use certus_jepsen::history::{Elem, History, Key, Mop, Op, OpType, Process, Value, F};

const OPS: usize = 10_000;
const CLIENTS: usize = 5;
const KEYS: u64 = 20;

/// xorshift64*: a fixed-seed generator so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Flaw {
    None,
    /// Reads come from the snapshot taken at invocation and writes never conflict: snapshot
    /// isolation without first-committer-wins, what Jepsen found in Galera in 2015.
    NoFirstCommitterWins,
    /// One acknowledged transaction's appends never reach the database.
    DropOneCommit,
}

type Db = BTreeMap<Key, Vec<Elem>>;

struct Client {
    process: u64,
    /// The transaction in flight and the database as it was when it was invoked.
    pending: Option<(Vec<Mop>, Db)>,
}

fn simulate(flaw: Flaw, seed: u64) -> History {
    let mut rng = Rng(seed);
    let mut db: Db = BTreeMap::new();
    let mut history = History::new();
    let mut next_elem: Elem = 1;
    let mut next_process = CLIENTS as u64;
    let mut dropped = false;
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|i| Client {
            process: i as u64,
            pending: None,
        })
        .collect();
    let mut time = 0u64;
    let mut push = |history: &mut History, op: Op| {
        time += 1_000;
        history.push(op.with_time(time));
    };

    while history.len() < OPS {
        let c = rng.below(CLIENTS as u64) as usize;
        let process = Process::Client(clients[c].process);
        match clients[c].pending.take() {
            None => {
                let mops: Vec<Mop> = (0..1 + rng.below(4))
                    .map(|_| {
                        let key = rng.below(KEYS);
                        if rng.below(2) == 0 {
                            Mop::read(key, None)
                        } else {
                            next_elem += 1;
                            Mop::append(key, next_elem)
                        }
                    })
                    .collect();
                push(
                    &mut history,
                    Op::invoke(process, F::Txn, Value::Txn(mops.clone())),
                );
                clients[c].pending = Some((mops, db.clone()));
            }
            Some((mops, snapshot)) => {
                let roll = rng.below(20);
                if roll == 0 {
                    push(&mut history, Op::fail(process, F::Txn, Value::Txn(mops)));
                    continue;
                }
                // The commit point is now, between invocation and completion.
                let mut view = if flaw == Flaw::NoFirstCommitterWins {
                    snapshot
                } else {
                    db.clone()
                };
                let mut done = Vec::with_capacity(mops.len());
                let mut writes: Vec<(Key, Elem)> = Vec::new();
                for mop in &mops {
                    match mop {
                        Mop::Read { key, .. } => done.push(Mop::read(
                            *key,
                            Some(view.get(key).cloned().unwrap_or_default()),
                        )),
                        Mop::Append { key, value } => {
                            view.entry(*key).or_default().push(*value);
                            writes.push((*key, *value));
                            done.push(mop.clone());
                        }
                    }
                }
                let info = roll == 1;
                let lands = !info || rng.below(2) == 0;
                let drop_this =
                    flaw == Flaw::DropOneCommit && !dropped && !writes.is_empty() && !info;
                if drop_this {
                    dropped = true;
                } else if lands {
                    for (key, value) in writes {
                        db.entry(key).or_default().push(value);
                    }
                }
                if info {
                    push(&mut history, Op::info(process, F::Txn, Value::Txn(mops)));
                    clients[c].process = next_process;
                    next_process += 1;
                } else {
                    push(&mut history, Op::ok(process, F::Txn, Value::Txn(done)));
                }
            }
        }
    }
    // Drain, then a final read of every key, as the runner will.
    for client in &mut clients {
        if let Some((mops, _)) = client.pending.take() {
            let process = Process::Client(client.process);
            push(&mut history, Op::fail(process, F::Txn, Value::Txn(mops)));
        }
    }
    let final_mops: Vec<Mop> = (0..KEYS)
        .map(|k| Mop::read(k, Some(db.get(&k).cloned().unwrap_or_default())))
        .collect();
    let reader = Process::Client(next_process);
    let invoked: Vec<Mop> = (0..KEYS).map(|k| Mop::read(k, None)).collect();
    push(
        &mut history,
        Op::invoke(reader, F::Txn, Value::Txn(invoked)),
    );
    push(&mut history, Op::ok(reader, F::Txn, Value::Txn(final_mops)));
    history
}

fn outcomes(history: &History) -> HashMap<OpType, usize> {
    let mut counts = HashMap::new();
    for op in history.ops() {
        *counts.entry(op.kind).or_insert(0) += 1;
    }
    counts
}

#[test]
fn ten_thousand_op_serializable_history_is_valid() {
    let history = simulate(Flaw::None, 0x9E37_79B9_7F4A_7C15);
    assert!(history.len() >= OPS);
    let counts = outcomes(&history);
    // The simulation must really exercise failures and indeterminate commits.
    assert!(
        counts[&OpType::Fail] > 50 && counts[&OpType::Info] > 50,
        "{counts:?}"
    );
    let result = check(
        &history,
        &ListAppendOptions {
            stale_reads: true,
            ..ListAppendOptions::default()
        },
    );
    assert!(result.valid, "{:#?}", result.anomalies);
}

#[test]
fn ten_thousand_op_history_without_first_committer_wins_loses_updates() {
    let history = simulate(Flaw::NoFirstCommitterWins, 42);
    let result = check(&history, &ListAppendOptions::default());
    assert!(!result.valid);
    assert!(
        result.has(AnomalyKind::LostUpdate),
        "{:?}",
        result.anomaly_counts
    );
    assert!(result.has(AnomalyKind::GSingle) || result.has(AnomalyKind::G2Item));
    // Every write still lands, so nothing may be reported as lost or invented.
    assert!(!result.has(AnomalyKind::LostWrite));
    assert!(!result.has(AnomalyKind::G1a));
}

#[test]
fn ten_thousand_op_history_with_one_dropped_commit_reports_a_lost_write() {
    let history = simulate(Flaw::DropOneCommit, 7);
    let result = check(&history, &ListAppendOptions::default());
    assert!(
        result.has(AnomalyKind::LostWrite),
        "{:?}",
        result.anomaly_counts
    );
    // One transaction's appends; it appended to at most four keys.
    assert!((1..=4).contains(&result.count(AnomalyKind::LostWrite)));
}
