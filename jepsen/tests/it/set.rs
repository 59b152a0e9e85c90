use std::collections::BTreeSet;

use certus_jepsen::checker::set::check;
use certus_jepsen::checker::AnomalyKind::*;
use certus_jepsen::history::{OpType, Value, F};

use crate::common::{assert_exactly, assert_valid, Builder};

fn insert(b: &mut Builder, kind: OpType, elem: i64) {
    b.op(kind, F::Add, Value::Int(elem), Value::Int(elem));
}

fn final_read(b: &mut Builder, elems: &[i64]) {
    let set: BTreeSet<i64> = elems.iter().copied().collect();
    b.op(OpType::Ok, F::Read, Value::Nil, Value::Set(set));
}

#[test]
fn indeterminate_inserts_may_go_either_way() {
    let mut b = Builder::new();
    insert(&mut b, OpType::Ok, 1);
    insert(&mut b, OpType::Info, 2);
    insert(&mut b, OpType::Info, 3);
    insert(&mut b, OpType::Fail, 4);
    insert(&mut b, OpType::Ok, 5);
    final_read(&mut b, &[1, 3, 5]);
    assert_valid(&check(&b.history));
}

#[test]
fn lost_acknowledged_insert() {
    let mut b = Builder::new();
    insert(&mut b, OpType::Ok, 1);
    insert(&mut b, OpType::Ok, 2);
    final_read(&mut b, &[2]);
    let result = check(&b.history);
    assert_exactly(&result, &[LostWrite]);
    assert!(result
        .first(LostWrite)
        .unwrap()
        .description
        .starts_with("element 1 was acknowledged (op 1)"));
}

#[test]
fn never_attempted_and_failed_elements_are_unexpected() {
    let mut b = Builder::new();
    insert(&mut b, OpType::Fail, 1);
    final_read(&mut b, &[1, 7]);
    let result = check(&b.history);
    assert_exactly(&result, &[UnexpectedValue]);
    assert_eq!(result.count(UnexpectedValue), 2);
}

#[test]
fn insert_acknowledged_after_the_final_read_began_is_not_required() {
    let mut b = Builder::new();
    insert(&mut b, OpType::Ok, 1);
    let inserter = b.invoke(F::Add, Value::Int(2));
    let reader = b.invoke(F::Read, Value::Nil);
    b.complete(inserter, OpType::Ok, F::Add, Value::Int(2));
    b.complete(
        reader,
        OpType::Ok,
        F::Read,
        Value::Set([1].into_iter().collect()),
    );
    assert_valid(&check(&b.history));
}

#[test]
fn no_final_read_judges_nothing() {
    let mut b = Builder::new();
    insert(&mut b, OpType::Ok, 1);
    assert_exactly(&check(&b.history), &[InvalidHistory]);
}
