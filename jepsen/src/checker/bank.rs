//! The bank checker (Jepsen's 2015 Galera test): transfers move money between a fixed set of
//! accounts, so every committed read of all balances must sum to the same total.
//!
//! Owns the judgement of bank reads only. Transfers are not checked one by one: a transfer
//! that lost or created money shows up in the totals every later read sees. It must not
//! assume reads are recent; a stale but consistent snapshot is still a correct total.

use std::collections::BTreeSet;

use crate::checker::{AnomalyKind, CheckResult, Findings};
use crate::edn::op_to_edn;
use crate::history::{Account, History, OpType, Value, F};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankOptions {
    /// Every account; a read must show exactly these.
    pub accounts: Vec<Account>,
    /// The sum every read must see.
    pub total: i64,
    /// Whether the workload lets balances go below zero (the usual bank test does not).
    pub allow_negative: bool,
}

/// Judges a bank history: `:read` ops return `Value::Balances`.
pub fn check(history: &History, options: &BankOptions) -> CheckResult {
    let pairs = match history.pairs() {
        Ok(pairs) => pairs,
        Err(error) => return Findings::invalid_history(&error),
    };
    let mut findings = Findings::default();
    let expected: BTreeSet<Account> = options.accounts.iter().copied().collect();
    let mut reads_checked = 0usize;
    for pair in pairs
        .iter()
        .filter(|p| p.invoke.f == F::Read && p.outcome() == OpType::Ok)
    {
        let op = pair.last();
        let Value::Balances(balances) = &op.value else {
            findings.report(
                AnomalyKind::InvalidHistory,
                format!(
                    "op {}: a bank read without balances\n  {}",
                    op.index,
                    op_to_edn(op)
                ),
            );
            continue;
        };
        reads_checked += 1;
        let seen: BTreeSet<Account> = balances.keys().copied().collect();
        if seen != expected {
            findings.report(
                AnomalyKind::UnexpectedValue,
                format!(
                    "op {}: read accounts {seen:?}, expected {expected:?}\n  {}",
                    op.index,
                    op_to_edn(op)
                ),
            );
        }
        // i128: a corrupted balance near i64::MAX must be reported, not overflow.
        let sum: i128 = balances.values().map(|&b| i128::from(b)).sum();
        if sum != i128::from(options.total) {
            findings.report(
                AnomalyKind::WrongTotal,
                format!(
                    "op {}: balances sum to {sum}, expected {}\n  {}",
                    op.index,
                    options.total,
                    op_to_edn(op)
                ),
            );
        }
        if !options.allow_negative {
            for (account, balance) in balances.iter().filter(|(_, &b)| b < 0) {
                findings.report(
                    AnomalyKind::NegativeBalance,
                    format!(
                        "op {}: account {account} has balance {balance}\n  {}",
                        op.index,
                        op_to_edn(op)
                    ),
                );
            }
        }
    }
    if reads_checked == 0 {
        findings.report(
            AnomalyKind::InvalidHistory,
            "no read succeeded, so no total was checked",
        );
    }
    findings.finish()
}
