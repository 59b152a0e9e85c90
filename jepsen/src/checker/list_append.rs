//! The list-append checker, after Elle (Kingsbury & Alvaro): transactions append unique
//! elements to per-key lists and read whole lists, so every read reveals the order of every
//! append before it and dependencies between transactions can be inferred, not guessed.
//!
//! Owns version-order inference, the non-cycle anomalies (G1a, G1b, internal, duplicate
//! appends, incompatible orders, lost updates, lost writes, optional stale reads) and turning
//! the dependency graph's cycles into readable reports. The graph search itself lives in
//! `graph`. It must not assume anything about how the runner picks keys, beyond the Elle
//! contract that an element is appended to a key at most once in the whole history.
//!
//! Outcomes: `ok` transactions committed; `fail` ones definitely did not (their appends must
//! never be seen); `info` ones may have committed, so their appends may appear, they are graph
//! nodes for the writes they made, and nothing is inferred from their reads (unknown).

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::checker::graph::{DepGraph, DepKind, FoundCycle};
use crate::checker::{AnomalyKind, CheckResult, Findings};
use crate::edn::op_to_edn;
use crate::history::{Elem, History, Key, Mop, OpType, Pair, Value, F};

/// What the checker should demand beyond serializability.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListAppendOptions {
    /// Flag reads that miss an append acknowledged before the read was invoked. Off by
    /// default: like Galera with `wsrep_sync_wait=0`, a certus node may serve a read before it
    /// has applied a write another node already acknowledged.
    pub stale_reads: bool,
    /// Accept `G2-item` cycles (write skew): snapshot isolation, which certifies only the keys
    /// a transaction wrote (Galera's first-committer-wins, and certus's DESIGN §6), permits
    /// them. Every other cycle class is still reported. A G2-item cycle whose anti-dependencies
    /// are not adjacent is impossible under snapshot isolation, but is accepted here too: the
    /// search reports one cycle per component and does not look for a second witness.
    pub allow_g2_item: bool,
}

struct Txn<'a> {
    pair: Pair<'a>,
    outcome: OpType,
    mops: &'a [Mop],
}

impl Txn<'_> {
    fn name(&self) -> String {
        format!("T{}", self.pair.last().index)
    }
}

#[derive(Clone, Copy)]
struct Writer {
    txn: usize,
    /// Whether this is the transaction's last append to the key: reading any earlier one from
    /// outside the transaction is an intermediate read (G1b).
    is_final: bool,
}

struct Read<'a> {
    txn: usize,
    key: Key,
    list: &'a [Elem],
}

/// Judges a list-append history.
pub fn check(history: &History, options: &ListAppendOptions) -> CheckResult {
    let pairs = match history.pairs() {
        Ok(pairs) => pairs,
        Err(error) => return Findings::invalid_history(&error),
    };
    let mut findings = Findings::default();
    let txns = collect_txns(&pairs, &mut findings);
    let writers = index_writers(&txns, &mut findings);
    let reads = collect_reads(&txns);

    check_read_contents(&txns, &writers, &reads, &mut findings);
    check_internal(&txns, &mut findings);
    let orders = version_orders(&txns, &reads, &mut findings);

    let mut graph = DepGraph::new(txns.len());
    add_ww_edges(&txns, &writers, &orders, &mut graph);
    add_read_edges(&txns, &writers, &reads, &orders, &mut graph, &mut findings);
    check_lost_updates(&txns, &mut findings);
    check_lost_writes(&txns, &reads, &orders, &mut findings);
    if options.stale_reads {
        check_stale_reads(&txns, &writers, &reads, &orders, &mut findings);
    }
    for cycle in graph.cycles() {
        if options.allow_g2_item && cycle.kind == AnomalyKind::G2Item {
            continue;
        }
        findings.report(cycle.kind, render_cycle(&txns, &cycle));
    }
    findings.finish()
}

fn collect_txns<'a>(pairs: &[Pair<'a>], findings: &mut Findings) -> Vec<Txn<'a>> {
    let mut txns = Vec::new();
    for pair in pairs.iter().filter(|p| p.invoke.f == F::Txn) {
        match pair.value() {
            Value::Txn(mops) => txns.push(Txn {
                pair: *pair,
                outcome: pair.outcome(),
                mops,
            }),
            other => findings.report(
                AnomalyKind::InvalidHistory,
                format!(
                    "op {}: a :txn whose value is not a transaction: {other:?}",
                    pair.last().index
                ),
            ),
        }
    }
    txns
}

fn index_writers(txns: &[Txn<'_>], findings: &mut Findings) -> HashMap<(Key, Elem), Writer> {
    let mut writers: HashMap<(Key, Elem), Writer> = HashMap::new();
    for (t, txn) in txns.iter().enumerate() {
        let mut last_append: HashMap<Key, usize> = HashMap::new();
        for (pos, mop) in txn.mops.iter().enumerate() {
            if let Mop::Append { key, .. } = mop {
                last_append.insert(*key, pos);
            }
        }
        for (pos, mop) in txn.mops.iter().enumerate() {
            let Mop::Append { key, value } = mop else {
                continue;
            };
            let writer = Writer {
                txn: t,
                is_final: last_append.get(key) == Some(&pos),
            };
            if let Some(previous) = writers.insert((*key, *value), writer) {
                findings.report(
                    AnomalyKind::InvalidHistory,
                    format!(
                        "element {value} was appended to key {key} by both {} and {}; \
                         the generator must use each element once",
                        txns[previous.txn].name(),
                        txn.name()
                    ),
                );
                // Keep the first writer: the report above already voids the verdict.
                writers.insert((*key, *value), previous);
            }
        }
    }
    writers
}

/// Every list read by a committed transaction. A committed `[:r k nil]` means the key had no
/// row, which is the empty list.
fn collect_reads<'a>(txns: &[Txn<'a>]) -> Vec<Read<'a>> {
    let mut reads = Vec::new();
    for (t, txn) in txns.iter().enumerate() {
        if txn.outcome != OpType::Ok {
            continue;
        }
        for mop in txn.mops {
            if let Mop::Read { key, value } = mop {
                reads.push(Read {
                    txn: t,
                    key: *key,
                    list: value.as_deref().unwrap_or(&[]),
                });
            }
        }
    }
    reads
}

fn check_read_contents(
    txns: &[Txn<'_>],
    writers: &HashMap<(Key, Elem), Writer>,
    reads: &[Read<'_>],
    findings: &mut Findings,
) {
    for read in reads {
        let reader = &txns[read.txn];
        let mut seen: HashSet<Elem> = HashSet::with_capacity(read.list.len());
        for &elem in read.list {
            if !seen.insert(elem) {
                findings.report(
                    AnomalyKind::DuplicateAppend,
                    format!(
                        "{} read key {} as {}: element {elem} appears more than once\n  {}",
                        reader.name(),
                        read.key,
                        show_list(read.list),
                        op_to_edn(reader.pair.last())
                    ),
                );
            }
            match writers.get(&(read.key, elem)) {
                None => findings.report(
                    AnomalyKind::UnexpectedValue,
                    format!(
                        "{} read element {elem} of key {}, which no transaction appended\n  {}",
                        reader.name(),
                        read.key,
                        op_to_edn(reader.pair.last())
                    ),
                ),
                Some(w) if txns[w.txn].outcome == OpType::Fail => {
                    let writer = &txns[w.txn];
                    findings.report(
                        AnomalyKind::G1a,
                        format!(
                            "{} read element {elem} of key {}, appended by {} which failed\n  {}\n  {}",
                            reader.name(),
                            read.key,
                            writer.name(),
                            op_to_edn(reader.pair.last()),
                            op_to_edn(writer.pair.last())
                        ),
                    );
                }
                Some(_) => {}
            }
        }
    }
}

/// A transaction must see its own writes: after reading a key and appending to it, the next
/// read must be that list plus the appends; with no earlier read, it must end with them.
fn check_internal(txns: &[Txn<'_>], findings: &mut Findings) {
    for txn in txns.iter().filter(|t| t.outcome == OpType::Ok) {
        // key -> (whole list known from a read?, expected list or expected suffix)
        let mut state: HashMap<Key, (bool, Vec<Elem>)> = HashMap::new();
        for mop in txn.mops {
            match mop {
                Mop::Append { key, value } => state.entry(*key).or_default().1.push(*value),
                Mop::Read { key, value } => {
                    let list = value.as_deref().unwrap_or(&[]);
                    let entry = state.entry(*key).or_default();
                    let (known, expected) = &*entry;
                    let consistent = if *known {
                        list == expected.as_slice()
                    } else {
                        list.ends_with(expected)
                    };
                    if !consistent {
                        let wanted = if *known {
                            show_list(expected)
                        } else {
                            format!("a list ending in {}", show_list(expected))
                        };
                        findings.report(
                            AnomalyKind::Internal,
                            format!(
                                "{} read key {key} as {} but its own earlier operations imply {wanted}\n  {}",
                                txn.name(),
                                show_list(list),
                                op_to_edn(txn.pair.last())
                            ),
                        );
                    }
                    // Continue from what was actually read, so one slip is reported once.
                    *entry = (true, list.to_vec());
                }
            }
        }
    }
}

/// The longest committed read of each key is its version order; every other read must be a
/// prefix of it.
fn version_orders<'a>(
    txns: &[Txn<'_>],
    reads: &[Read<'a>],
    findings: &mut Findings,
) -> BTreeMap<Key, (usize, &'a [Elem])> {
    let mut orders: BTreeMap<Key, (usize, &'a [Elem])> = BTreeMap::new();
    for read in reads {
        let entry = orders.entry(read.key).or_insert((read.txn, read.list));
        if read.list.len() > entry.1.len() {
            *entry = (read.txn, read.list);
        }
    }
    for read in reads {
        let Some(&(longest_txn, order)) = orders.get(&read.key) else {
            continue;
        };
        if !order.starts_with(read.list) {
            findings.report(
                AnomalyKind::IncompatibleOrder,
                format!(
                    "key {}: {} read {} but {} read {}, and neither is a prefix of the other\n  {}\n  {}",
                    read.key,
                    txns[read.txn].name(),
                    show_list(read.list),
                    txns[longest_txn].name(),
                    show_list(order),
                    op_to_edn(txns[read.txn].pair.last()),
                    op_to_edn(txns[longest_txn].pair.last())
                ),
            );
        }
    }
    orders
}

/// The writer of `elem`, if it is a transaction that may have committed.
fn live_writer(
    txns: &[Txn<'_>],
    writers: &HashMap<(Key, Elem), Writer>,
    key: Key,
    elem: Elem,
) -> Option<Writer> {
    writers
        .get(&(key, elem))
        .copied()
        .filter(|w| txns[w.txn].outcome != OpType::Fail)
}

/// Consecutive elements of a version order were installed in that order: the first's writer
/// precedes the second's. Elements from failed or unknown writers are already reported and
/// are skipped so they do not hide the order of the real ones around them.
fn add_ww_edges(
    txns: &[Txn<'_>],
    writers: &HashMap<(Key, Elem), Writer>,
    orders: &BTreeMap<Key, (usize, &[Elem])>,
    graph: &mut DepGraph,
) {
    for (&key, &(_, order)) in orders {
        let mut previous: Option<usize> = None;
        for &elem in order {
            let Some(w) = live_writer(txns, writers, key, elem) else {
                continue;
            };
            if let Some(prev) = previous {
                graph.add(prev, w.txn, DepKind::Ww, key);
            }
            previous = Some(w.txn);
        }
    }
}

/// The part of a read that came from other transactions: the list minus the reader's own
/// appends at its end.
fn external_prefix<'a>(writers: &HashMap<(Key, Elem), Writer>, read: &Read<'a>) -> &'a [Elem] {
    let mut end = read.list.len();
    while end > 0 {
        let own = writers
            .get(&(read.key, read.list[end - 1]))
            .is_some_and(|w| w.txn == read.txn);
        if !own {
            break;
        }
        end -= 1;
    }
    &read.list[..end]
}

/// wr: the writer of the last element a read saw precedes the reader. rw: the reader precedes
/// the writer of the next element in the version order, which it did not see. Also G1b, which
/// is decided by the same last element.
fn add_read_edges(
    txns: &[Txn<'_>],
    writers: &HashMap<(Key, Elem), Writer>,
    reads: &[Read<'_>],
    orders: &BTreeMap<Key, (usize, &[Elem])>,
    graph: &mut DepGraph,
    findings: &mut Findings,
) {
    for read in reads {
        let Some(&(_, order)) = orders.get(&read.key) else {
            continue;
        };
        if !order.starts_with(read.list) {
            continue;
        }
        let seen = external_prefix(writers, read);
        if let Some(&last) = seen.last() {
            if let Some(w) = live_writer(txns, writers, read.key, last) {
                graph.add(w.txn, read.txn, DepKind::Wr, read.key);
                if !w.is_final && w.txn != read.txn {
                    let (reader, writer) = (&txns[read.txn], &txns[w.txn]);
                    findings.report(
                        AnomalyKind::G1b,
                        format!(
                            "{} read key {} as {}, ending in {last}, which {} appended before \
                             appending again to that key\n  {}\n  {}",
                            reader.name(),
                            read.key,
                            show_list(read.list),
                            writer.name(),
                            op_to_edn(reader.pair.last()),
                            op_to_edn(writer.pair.last())
                        ),
                    );
                }
            }
        }
        let next = order[seen.len()..]
            .iter()
            .find_map(|&elem| live_writer(txns, writers, read.key, elem));
        if let Some(w) = next {
            graph.add(read.txn, w.txn, DepKind::Rw, read.key);
        }
    }
}

/// P4: two committed transactions read the same version of a key and both appended to it, so
/// one of them overwrote a state the other never saw.
fn check_lost_updates(txns: &[Txn<'_>], findings: &mut Findings) {
    let mut read_then_append: BTreeMap<(Key, &[Elem]), Vec<usize>> = BTreeMap::new();
    for (t, txn) in txns.iter().enumerate() {
        if txn.outcome != OpType::Ok {
            continue;
        }
        let mut first_mop: HashMap<Key, &Mop> = HashMap::new();
        let mut appended: HashSet<Key> = HashSet::new();
        for mop in txn.mops {
            first_mop.entry(mop.key()).or_insert(mop);
            if let Mop::Append { key, .. } = mop {
                appended.insert(*key);
            }
        }
        for (key, mop) in first_mop {
            if let Mop::Read { value, .. } = mop {
                if appended.contains(&key) {
                    let list = value.as_deref().unwrap_or(&[]);
                    read_then_append.entry((key, list)).or_default().push(t);
                }
            }
        }
    }
    for ((key, list), group) in read_then_append {
        if group.len() < 2 {
            continue;
        }
        let names: Vec<String> = group.iter().map(|&t| txns[t].name()).collect();
        let all = if group.len() == 2 { "both" } else { "all" };
        let ops: Vec<String> = group
            .iter()
            .map(|&t| format!("  {}", op_to_edn(txns[t].pair.last())))
            .collect();
        findings.report(
            AnomalyKind::LostUpdate,
            format!(
                "{} {all} read key {key} as {} and {all} appended to it, and all committed\n{}",
                names.join(", "),
                show_list(list),
                ops.join("\n")
            ),
        );
    }
}

/// An acknowledged append that no read shows, although a read of its key began after the
/// acknowledgement. The runner ends each test with reads after the cluster has healed and
/// caught up, so by then every acknowledged append must be visible.
fn check_lost_writes(
    txns: &[Txn<'_>],
    reads: &[Read<'_>],
    orders: &BTreeMap<Key, (usize, &[Elem])>,
    findings: &mut Findings,
) {
    // key -> (invoke index, txn) of the read of it that started last
    let mut latest_read: HashMap<Key, (u64, usize)> = HashMap::new();
    for read in reads {
        let invoked = txns[read.txn].pair.invoke.index;
        let entry = latest_read.entry(read.key).or_insert((invoked, read.txn));
        if invoked > entry.0 {
            *entry = (invoked, read.txn);
        }
    }
    let visible: HashMap<Key, HashSet<Elem>> = orders
        .iter()
        .map(|(&key, &(_, order))| (key, order.iter().copied().collect()))
        .collect();
    for txn in txns.iter().filter(|t| t.outcome == OpType::Ok) {
        for mop in txn.mops {
            let Mop::Append { key, value } = mop else {
                continue;
            };
            let Some(&(invoked, reader)) = latest_read.get(key) else {
                continue;
            };
            if invoked <= txn.pair.completed_at() {
                continue;
            }
            if visible.get(key).is_some_and(|v| v.contains(value)) {
                continue;
            }
            let reader = &txns[reader];
            findings.report(
                AnomalyKind::LostWrite,
                format!(
                    "{} appended {value} to key {key} and was acknowledged, but no read shows \
                     it; {} began later and read key {key} without it\n  {}\n  {}",
                    txn.name(),
                    reader.name(),
                    op_to_edn(txn.pair.last()),
                    op_to_edn(reader.pair.last())
                ),
            );
        }
    }
}

/// A read that misses an append acknowledged before the read was invoked.
fn check_stale_reads(
    txns: &[Txn<'_>],
    writers: &HashMap<(Key, Elem), Writer>,
    reads: &[Read<'_>],
    orders: &BTreeMap<Key, (usize, &[Elem])>,
    findings: &mut Findings,
) {
    // key -> for each position, the earliest-acknowledged append at or after it
    let mut earliest_after: HashMap<Key, Vec<(u64, Elem, usize)>> = HashMap::new();
    for (&key, &(_, order)) in orders {
        let mut suffix = vec![(u64::MAX, 0, 0); order.len() + 1];
        for i in (0..order.len()).rev() {
            let here = live_writer(txns, writers, key, order[i])
                .filter(|w| txns[w.txn].outcome == OpType::Ok)
                .map_or((u64::MAX, order[i], 0), |w| {
                    (txns[w.txn].pair.completed_at(), order[i], w.txn)
                });
            suffix[i] = if here.0 < suffix[i + 1].0 {
                here
            } else {
                suffix[i + 1]
            };
        }
        earliest_after.insert(key, suffix);
    }
    for read in reads {
        let Some(suffix) = earliest_after.get(&read.key) else {
            continue;
        };
        let Some(&(_, order)) = orders.get(&read.key) else {
            continue;
        };
        if !order.starts_with(read.list) {
            continue;
        }
        let seen = external_prefix(writers, read).len();
        let (acked, elem, writer) = suffix[seen];
        let reader = &txns[read.txn];
        if acked < reader.pair.invoke.index {
            findings.report(
                AnomalyKind::StaleRead,
                format!(
                    "{} began after {} was acknowledged, yet read key {} as {} without its \
                     element {elem}\n  {}\n  {}",
                    reader.name(),
                    txns[writer].name(),
                    read.key,
                    show_list(read.list),
                    op_to_edn(reader.pair.last()),
                    op_to_edn(txns[writer].pair.last())
                ),
            );
        }
    }
}

/// `T1 -ww[k]-> T2 -rw[k]-> T1`, then each transaction's op.
fn render_cycle(txns: &[Txn<'_>], cycle: &FoundCycle) -> String {
    let mut chain = String::new();
    let mut members = Vec::new();
    for step in &cycle.steps {
        chain.push_str(&txns[step.from].name());
        chain.push_str(&format!(" -{}[{}]-> ", step.kind.name(), step.key));
        members.push(step.from);
    }
    if let Some(first) = cycle.steps.first() {
        chain.push_str(&txns[first.from].name());
    }
    if cycle.component_size > cycle.steps.len() {
        chain.push_str(&format!(
            " (one cycle among {} transactions that depend on each other)",
            cycle.component_size
        ));
    }
    for t in members {
        chain.push_str(&format!(
            "\n  {} = {}",
            txns[t].name(),
            op_to_edn(txns[t].pair.last())
        ));
    }
    chain
}

/// A list for a report; long lists keep both ends, which is where anomalies show.
fn show_list(list: &[Elem]) -> String {
    const EDGE: usize = 6;
    let join = |items: &[Elem]| {
        items
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    if list.len() <= 2 * EDGE + 2 {
        format!("[{}]", join(list))
    } else {
        format!(
            "[{} ... {}] ({} elements)",
            join(&list[..EDGE]),
            join(&list[list.len() - EDGE..]),
            list.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_list_abbreviates_long_lists() {
        assert_eq!(show_list(&[]), "[]");
        assert_eq!(show_list(&[1, 2, 3]), "[1 2 3]");
        let long: Vec<Elem> = (0..100).collect();
        assert_eq!(
            show_list(&long),
            "[0 1 2 3 4 5 ... 94 95 96 97 98 99] (100 elements)"
        );
    }
}
