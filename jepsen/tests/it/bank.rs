use std::collections::BTreeMap;

use certus_jepsen::checker::bank::{check, BankOptions};
use certus_jepsen::checker::AnomalyKind::*;
use certus_jepsen::history::{OpType, Value, F};

use crate::common::{assert_exactly, assert_valid, Builder};

fn options() -> BankOptions {
    BankOptions {
        accounts: vec![0, 1, 2],
        total: 30,
        allow_negative: false,
    }
}

fn balances(values: &[i64]) -> Value {
    Value::Balances(
        values
            .iter()
            .enumerate()
            .map(|(i, &b)| (i as u64, b))
            .collect(),
    )
}

fn transfer(b: &mut Builder, kind: OpType, from: u64, to: u64, amount: i64) {
    let value = Value::Transfer { from, to, amount };
    b.op(kind, F::Transfer, value.clone(), value);
}

fn read(b: &mut Builder, values: &[i64]) {
    b.op(OpType::Ok, F::Read, Value::Nil, balances(values));
}

#[test]
fn conserved_total_is_valid() {
    let mut b = Builder::new();
    read(&mut b, &[10, 10, 10]);
    transfer(&mut b, OpType::Ok, 0, 1, 5);
    transfer(&mut b, OpType::Fail, 1, 2, 50);
    transfer(&mut b, OpType::Info, 2, 0, 3);
    read(&mut b, &[5, 15, 10]);
    read(&mut b, &[8, 15, 7]);
    b.op(OpType::Fail, F::Read, Value::Nil, Value::Nil);
    assert_valid(&check(&b.history, &options()));
}

#[test]
fn money_created_is_a_wrong_total() {
    let mut b = Builder::new();
    read(&mut b, &[10, 10, 10]);
    transfer(&mut b, OpType::Ok, 0, 1, 5);
    read(&mut b, &[10, 15, 10]); // the debit was lost
    let result = check(&b.history, &options());
    assert_exactly(&result, &[WrongTotal]);
    assert!(result
        .first(WrongTotal)
        .unwrap()
        .description
        .starts_with("op 5: balances sum to 35, expected 30"));
}

#[test]
fn negative_balance_is_flagged_unless_allowed() {
    let mut b = Builder::new();
    read(&mut b, &[-5, 25, 10]);
    assert_exactly(&check(&b.history, &options()), &[NegativeBalance]);
    let lenient = BankOptions {
        allow_negative: true,
        ..options()
    };
    assert_valid(&check(&b.history, &lenient));
}

#[test]
fn missing_account_is_reported() {
    let mut b = Builder::new();
    let partial: BTreeMap<u64, i64> = [(0, 10), (1, 20)].into_iter().collect();
    b.op(OpType::Ok, F::Read, Value::Nil, Value::Balances(partial));
    assert_exactly(&check(&b.history, &options()), &[UnexpectedValue]);
}

#[test]
fn no_successful_read_judges_nothing() {
    let mut b = Builder::new();
    transfer(&mut b, OpType::Ok, 0, 1, 5);
    assert_exactly(&check(&b.history, &options()), &[InvalidHistory]);
}
