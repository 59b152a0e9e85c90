use certus_jepsen::checker::list_append::{check, ListAppendOptions};
use certus_jepsen::checker::AnomalyKind::*;
use certus_jepsen::checker::CheckResult;
use certus_jepsen::history::{History, Op, OpType, Process, Value, F};

use crate::common::{a, assert_exactly, assert_valid, r, Builder};

fn run(b: &Builder) -> CheckResult {
    check(&b.history, &ListAppendOptions::default())
}

#[test]
fn g0_write_cycle_is_reported_as_a_chain_with_its_ops() {
    let mut b = Builder::new();
    b.txn(OpType::Ok, &[a(1, 1), a(2, 2)]); // T1
    b.txn(OpType::Ok, &[a(1, 3), a(2, 4)]); // T3
                                            // Key 1 says T1 came first, key 2 says T3 did.
    b.txn(OpType::Ok, &[r(1, &[1, 3]), r(2, &[4, 2])]); // T5
    let result = run(&b);
    assert_exactly(&result, &[G0]);
    let text = &result.first(G0).unwrap().description;
    assert!(
        text.starts_with(
            "T1 -ww[1]-> T3 -ww[2]-> T1\n  T1 = {:type :ok, :f :txn, :value [[:append 1 1] [:append 2 2]], :process 0, :time 1000, :index 1}\n  T3 = "
        ),
        "{text}"
    );
}

#[test]
fn g1a_aborted_read() {
    let mut b = Builder::new();
    b.txn(OpType::Fail, &[a(1, 1)]);
    b.txn(OpType::Ok, &[r(1, &[1])]);
    let result = run(&b);
    assert_exactly(&result, &[G1a]);
    assert!(result
        .first(G1a)
        .unwrap()
        .description
        .contains("which failed"));
}

#[test]
fn info_appends_may_be_seen_and_never_count_as_g1a() {
    let mut b = Builder::new();
    b.txn(OpType::Info, &[a(1, 1)]);
    b.txn(OpType::Ok, &[r(1, &[1]), a(1, 2)]);
    b.txn(OpType::Info, &[a(1, 3)]); // never landed: fine either way
    b.txn(OpType::Ok, &[r(1, &[1, 2])]);
    assert_valid(&run(&b));
}

#[test]
fn g1b_intermediate_read() {
    let mut b = Builder::new();
    let writer = b.begin(&[a(1, 1), a(1, 2)]);
    b.txn(OpType::Ok, &[r(1, &[1])]); // saw the writer half-way
    b.end_txn(writer, OpType::Ok, &[a(1, 1), a(1, 2)]);
    b.txn(OpType::Ok, &[r(1, &[1, 2])]);
    let result = run(&b);
    // Reading the middle of a transaction also puts the reader both after and before it.
    assert_exactly(&result, &[G1b, GSingle]);
    assert!(result
        .first(G1b)
        .unwrap()
        .description
        .starts_with("T2 read key 1 as [1]"));
}

#[test]
fn g1c_circular_information_flow() {
    let mut b = Builder::new();
    let t1 = b.begin(&[a(1, 1), r(2, &[2])]);
    let t2 = b.begin(&[a(2, 2), r(1, &[1])]);
    b.end_txn(t1, OpType::Ok, &[a(1, 1), r(2, &[2])]);
    b.end_txn(t2, OpType::Ok, &[a(2, 2), r(1, &[1])]);
    let result = run(&b);
    assert_exactly(&result, &[G1c]);
    let text = &result.first(G1c).unwrap().description;
    assert!(text.starts_with("T2 -wr[1]-> T3 -wr[2]-> T2\n"), "{text}");
}

#[test]
fn g_single_read_skew() {
    let mut b = Builder::new();
    let reader = b.begin(&[r(1, &[]), r(2, &[2])]);
    b.txn(OpType::Ok, &[a(1, 1), a(2, 2)]); // T2
    b.end_txn(reader, OpType::Ok, &[r(1, &[]), r(2, &[2])]); // T3
    b.txn(OpType::Ok, &[r(1, &[1]), r(2, &[2])]);
    let result = run(&b);
    assert_exactly(&result, &[GSingle]);
    let text = &result.first(GSingle).unwrap().description;
    assert!(text.starts_with("T3 -rw[1]-> T2 -wr[2]-> T3\n"), "{text}");
}

#[test]
fn g2_item_write_skew() {
    let mut b = Builder::new();
    let t1 = b.begin(&[r(1, &[]), r(2, &[]), a(1, 1)]);
    let t2 = b.begin(&[r(1, &[]), r(2, &[]), a(2, 2)]);
    b.end_txn(t1, OpType::Ok, &[r(1, &[]), r(2, &[]), a(1, 1)]);
    b.end_txn(t2, OpType::Ok, &[r(1, &[]), r(2, &[]), a(2, 2)]);
    b.txn(OpType::Ok, &[r(1, &[1]), r(2, &[2])]);
    let result = run(&b);
    assert_exactly(&result, &[G2Item]);
    let text = &result.first(G2Item).unwrap().description;
    assert!(text.starts_with("T2 -rw[2]-> T3 -rw[1]-> T2\n"), "{text}");

    // Snapshot isolation permits write skew, and only write skew.
    let si = ListAppendOptions {
        allow_g2_item: true,
        ..ListAppendOptions::default()
    };
    assert_valid(&check(&b.history, &si));
}

#[test]
fn snapshot_isolation_still_reports_read_skew() {
    let mut b = Builder::new();
    let reader = b.begin(&[r(1, &[]), r(2, &[2])]);
    b.txn(OpType::Ok, &[a(1, 1), a(2, 2)]);
    b.end_txn(reader, OpType::Ok, &[r(1, &[]), r(2, &[2])]);
    b.txn(OpType::Ok, &[r(1, &[1]), r(2, &[2])]);
    let si = ListAppendOptions {
        allow_g2_item: true,
        ..ListAppendOptions::default()
    };
    assert_exactly(&check(&b.history, &si), &[GSingle]);
}

#[test]
fn lost_update_p4() {
    let mut b = Builder::new();
    let t1 = b.begin(&[r(1, &[]), a(1, 1)]);
    let t2 = b.begin(&[r(1, &[]), a(1, 2)]);
    b.end_txn(t1, OpType::Ok, &[r(1, &[]), a(1, 1)]);
    b.end_txn(t2, OpType::Ok, &[r(1, &[]), a(1, 2)]);
    b.txn(OpType::Ok, &[r(1, &[1, 2])]);
    let result = run(&b);
    // The same fact seen as a dependency cycle: T3 read before T2 but wrote after it.
    assert_exactly(&result, &[LostUpdate, GSingle]);
    let text = &result.first(LostUpdate).unwrap().description;
    assert!(
        text.starts_with("T2, T3 both read key 1 as [] and both appended to it"),
        "{text}"
    );
}

#[test]
fn one_writer_that_retried_after_abort_is_not_a_lost_update() {
    let mut b = Builder::new();
    b.txn(OpType::Ok, &[r(1, &[]), a(1, 1)]);
    b.txn(OpType::Fail, &[r(1, &[]), a(1, 2)]); // certification conflict, 1213
    b.txn(OpType::Ok, &[r(1, &[1]), a(1, 3)]); // the retry
    b.txn(OpType::Ok, &[r(1, &[1, 3])]);
    assert_valid(&run(&b));
}

#[test]
fn lost_acknowledged_append() {
    let mut b = Builder::new();
    b.txn(OpType::Ok, &[a(1, 1)]);
    b.txn(OpType::Ok, &[a(1, 2)]);
    b.txn(OpType::Ok, &[r(1, &[2])]);
    let result = run(&b);
    assert_exactly(&result, &[LostWrite]);
    assert!(result
        .first(LostWrite)
        .unwrap()
        .description
        .starts_with("T1 appended 1 to key 1 and was acknowledged"));
}

#[test]
fn acknowledged_append_not_yet_read_is_not_lost() {
    let mut b = Builder::new();
    let reader = b.begin(&[r(1, &[])]);
    b.txn(OpType::Ok, &[a(1, 1)]);
    b.end_txn(reader, OpType::Ok, &[r(1, &[])]); // began before the ack
    assert_valid(&run(&b));
}

#[test]
fn internal_inconsistency() {
    let mut b = Builder::new();
    b.txn(OpType::Ok, &[a(1, 1), r(1, &[])]);
    b.txn(OpType::Ok, &[r(2, &[]), a(2, 5), r(2, &[])]);
    let result = run(&b);
    assert_exactly(&result, &[Internal]);
    assert_eq!(result.count(Internal), 2);
}

#[test]
fn duplicate_append_in_a_read() {
    let mut b = Builder::new();
    b.txn(OpType::Ok, &[a(1, 1)]);
    b.txn(OpType::Ok, &[r(1, &[1, 1])]);
    assert_exactly(&run(&b), &[DuplicateAppend]);
}

#[test]
fn incompatible_orders() {
    let mut b = Builder::new();
    b.txn(OpType::Ok, &[a(1, 1)]);
    b.txn(OpType::Ok, &[a(1, 2)]);
    b.txn(OpType::Ok, &[r(1, &[1, 2])]);
    b.txn(OpType::Ok, &[r(1, &[2])]);
    let result = run(&b);
    assert!(result.has(IncompatibleOrder), "{:#?}", result.anomalies);
    assert!(!result.valid);
}

#[test]
fn element_nobody_appended() {
    let mut b = Builder::new();
    b.txn(OpType::Ok, &[r(1, &[99])]);
    assert_exactly(&run(&b), &[UnexpectedValue]);
}

#[test]
fn serial_history_with_info_and_fail_is_valid() {
    let mut b = Builder::new();
    b.txn(OpType::Ok, &[r(1, &[]), a(1, 1), r(1, &[1])]);
    b.txn(OpType::Info, &[a(1, 2), a(2, 20)]); // landed, as later reads show
    b.txn(OpType::Fail, &[a(1, 3)]);
    b.txn(OpType::Info, &[a(2, 21)]); // did not land
    b.txn(OpType::Ok, &[r(1, &[1, 2]), a(2, 22), r(2, &[20, 22])]);
    b.txn(OpType::Ok, &[a(1, 4), a(1, 5), r(1, &[1, 2, 4, 5])]);
    b.txn(
        OpType::Ok,
        &[r(1, &[1, 2, 4, 5]), r(2, &[20, 22]), r(3, &[])],
    );
    assert_valid(&run(&b));
}

#[test]
fn overlapping_serializable_transactions_are_valid() {
    let mut b = Builder::new();
    let t1 = b.begin(&[a(1, 1)]);
    let t2 = b.begin(&[r(1, &[]), a(2, 2)]);
    let t3 = b.begin(&[r(2, &[2]), a(1, 3)]);
    // Serial order T2, T1, T3 although T1 was invoked first.
    b.end_txn(t2, OpType::Ok, &[r(1, &[]), a(2, 2)]);
    b.end_txn(t1, OpType::Ok, &[a(1, 1)]);
    b.end_txn(t3, OpType::Ok, &[r(2, &[2]), a(1, 3)]);
    b.txn(OpType::Ok, &[r(1, &[1, 3]), r(2, &[2])]);
    assert_valid(&run(&b));
}

#[test]
fn stale_reads_only_when_asked_for() {
    let mut b = Builder::new();
    b.txn(OpType::Ok, &[a(1, 1)]);
    b.txn(OpType::Ok, &[r(1, &[])]); // a lagging node
    b.txn(OpType::Ok, &[r(1, &[1])]);
    assert_valid(&run(&b));
    let strict = check(
        &b.history,
        &ListAppendOptions {
            stale_reads: true,
            ..ListAppendOptions::default()
        },
    );
    assert_exactly(&strict, &[StaleRead]);
}

#[test]
fn unpairable_history_is_invalid_not_valid() {
    let mut h = History::new();
    h.push(Op::ok(
        Process::Client(0),
        F::Txn,
        Value::Txn(vec![r(1, &[])]),
    ));
    let result = check(&h, &ListAppendOptions::default());
    assert_exactly(&result, &[InvalidHistory]);
}

#[test]
fn reused_element_is_invalid_history() {
    let mut b = Builder::new();
    b.txn(OpType::Ok, &[a(1, 1)]);
    b.txn(OpType::Ok, &[a(1, 1)]);
    let result = run(&b);
    assert!(result.has(InvalidHistory));
    assert!(!result.valid);
}
