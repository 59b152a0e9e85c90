use certus_jepsen::checker::counter::check;
use certus_jepsen::checker::AnomalyKind::*;
use certus_jepsen::history::{OpType, Value, F};

use crate::common::{assert_exactly, assert_valid, Builder};

fn add(b: &mut Builder, kind: OpType) {
    b.op(kind, F::Add, Value::Int(1), Value::Int(1));
}

fn read(b: &mut Builder, value: i64) {
    b.op(OpType::Ok, F::Read, Value::Nil, Value::Int(value));
}

#[test]
fn final_read_within_acknowledged_plus_indeterminate_is_valid() {
    for final_value in [3, 4, 5] {
        let mut b = Builder::new();
        add(&mut b, OpType::Ok);
        add(&mut b, OpType::Ok);
        add(&mut b, OpType::Info);
        read(&mut b, 1); // an earlier read on a lagging node
        add(&mut b, OpType::Ok);
        add(&mut b, OpType::Fail);
        add(&mut b, OpType::Info);
        read(&mut b, final_value);
        assert_valid(&check(&b.history));
    }
}

#[test]
fn lost_increment_is_a_lost_update() {
    let mut b = Builder::new();
    for _ in 0..3 {
        add(&mut b, OpType::Ok);
    }
    read(&mut b, 2);
    let result = check(&b.history);
    assert_exactly(&result, &[LostUpdate]);
    assert!(result
        .first(LostUpdate)
        .unwrap()
        .description
        .starts_with("op 7: final read 2, but 3 was acknowledged"));
}

#[test]
fn increment_concurrent_with_the_final_read_may_be_missing() {
    let mut b = Builder::new();
    add(&mut b, OpType::Ok);
    let adder = b.invoke(F::Add, Value::Int(1));
    let reader = b.invoke(F::Read, Value::Nil);
    b.complete(adder, OpType::Ok, F::Add, Value::Int(1));
    b.complete(reader, OpType::Ok, F::Read, Value::Int(1));
    assert_valid(&check(&b.history));
}

#[test]
fn value_above_every_possible_increment() {
    let mut b = Builder::new();
    add(&mut b, OpType::Ok);
    add(&mut b, OpType::Fail);
    read(&mut b, 2);
    assert_exactly(&check(&b.history), &[CounterTooHigh]);
}

/// An increment that ran alone and wrote `wrote`.
fn add_wrote(b: &mut Builder, kind: OpType, wrote: i64) {
    let p = b.invoke(F::Add, Value::Int(1));
    b.complete_wrote(p, kind, F::Add, Value::Int(1), wrote);
}

#[test]
fn two_acknowledged_increments_that_wrote_the_same_value_are_a_lost_update() {
    // Four indeterminate increments widen the bounds enough to hide the loss from the final
    // read (3 acknowledged, final 3); the written values still show it.
    let mut b = Builder::new();
    add_wrote(&mut b, OpType::Ok, 1);
    let first = b.invoke(F::Add, Value::Int(1));
    let second = b.invoke(F::Add, Value::Int(1));
    b.complete_wrote(first, OpType::Ok, F::Add, Value::Int(1), 2);
    b.complete_wrote(second, OpType::Ok, F::Add, Value::Int(1), 2);
    for _ in 0..4 {
        add(&mut b, OpType::Info);
    }
    read(&mut b, 3);
    let result = check(&b.history);
    assert_exactly(&result, &[LostUpdate]);
    let description = &result.first(LostUpdate).unwrap().description;
    assert!(
        description.starts_with("2 acknowledged increments all wrote 2"),
        "{description}"
    );
    assert!(description.contains(":index 4") && description.contains(":index 5"));
}

#[test]
fn distinct_written_values_and_failed_duplicates_are_valid() {
    let mut b = Builder::new();
    add_wrote(&mut b, OpType::Ok, 1);
    add_wrote(&mut b, OpType::Ok, 2);
    // A failed or indeterminate attempt that wrote a taken value proves nothing.
    add_wrote(&mut b, OpType::Fail, 2);
    add_wrote(&mut b, OpType::Info, 3);
    add_wrote(&mut b, OpType::Ok, 3);
    read(&mut b, 3);
    assert_valid(&check(&b.history));
}

#[test]
fn no_read_judges_nothing() {
    let mut b = Builder::new();
    add(&mut b, OpType::Ok);
    assert_exactly(&check(&b.history), &[InvalidHistory]);
}
