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

#[test]
fn no_read_judges_nothing() {
    let mut b = Builder::new();
    add(&mut b, OpType::Ok);
    assert_exactly(&check(&b.history), &[InvalidHistory]);
}
