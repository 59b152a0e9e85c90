//! The EDN writer: a history in Jepsen's `history.edn` format, one op map per line.
//!
//! Owns the text form only, so a history recorded here can be checked by Elle elsewhere. The
//! key order follows Jepsen's printed maps (`:type :f :value :process :time :index`, then the
//! optional `:node`, `:error` and `:wrote`). It must not change or reorder ops; there is no reader,
//! because certus never consumes EDN.

use std::fmt::Write as _;
use std::io;

use crate::history::{History, Mop, Op, Process, Value};

/// The EDN map for one op, without a trailing newline.
pub fn op_to_edn(op: &Op) -> String {
    let mut out = String::with_capacity(96);
    out.push_str("{:type :");
    out.push_str(op.kind.keyword());
    out.push_str(", :f :");
    push_keyword_name(&mut out, op.f.keyword());
    out.push_str(", :value ");
    push_value(&mut out, &op.value);
    out.push_str(", :process ");
    match op.process {
        Process::Client(n) => push_display(&mut out, n),
        Process::Nemesis => out.push_str(":nemesis"),
    }
    out.push_str(", :time ");
    push_display(&mut out, op.time);
    out.push_str(", :index ");
    push_display(&mut out, op.index);
    if let Some(node) = &op.node {
        out.push_str(", :node ");
        push_string(&mut out, node);
    }
    if let Some(error) = &op.error {
        out.push_str(", :error ");
        push_string(&mut out, error);
    }
    if let Some(wrote) = op.wrote {
        out.push_str(", :wrote ");
        push_display(&mut out, wrote);
    }
    out.push('}');
    out
}

/// Writes the whole history, one op per line.
pub fn write_history(history: &History, out: &mut impl io::Write) -> io::Result<()> {
    for op in history.ops() {
        out.write_all(op_to_edn(op).as_bytes())?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// The EDN text of a value, as it appears after `:value`.
pub fn value_to_edn(value: &Value) -> String {
    let mut out = String::new();
    push_value(&mut out, value);
    out
}

fn push_value(out: &mut String, value: &Value) {
    match value {
        Value::Nil => out.push_str("nil"),
        Value::Int(n) => push_display(out, n),
        Value::Txn(mops) => {
            out.push('[');
            for (i, mop) in mops.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                push_mop(out, mop);
            }
            out.push(']');
        }
        Value::Transfer { from, to, amount } => {
            let _ = write!(out, "{{:from {from}, :to {to}, :amount {amount}}}");
        }
        Value::Balances(balances) => {
            out.push('{');
            for (i, (account, balance)) in balances.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let _ = write!(out, "{account} {balance}");
            }
            out.push('}');
        }
        Value::Set(elems) => {
            out.push_str("#{");
            push_joined(out, elems.iter());
            out.push('}');
        }
        Value::Text(text) => push_string(out, text),
    }
}

fn push_mop(out: &mut String, mop: &Mop) {
    match mop {
        Mop::Append { key, value } => {
            let _ = write!(out, "[:append {key} {value}]");
        }
        Mop::Read { key, value } => {
            let _ = write!(out, "[:r {key} ");
            match value {
                None => out.push_str("nil"),
                Some(list) => {
                    out.push('[');
                    push_joined(out, list.iter());
                    out.push(']');
                }
            }
            out.push(']');
        }
    }
}

fn push_joined<T: std::fmt::Display>(out: &mut String, items: impl Iterator<Item = T>) {
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(' ');
        }
        push_display(out, item);
    }
}

fn push_display(out: &mut String, item: impl std::fmt::Display) {
    // Writing into a String cannot fail.
    let _ = write!(out, "{item}");
}

/// Keywords cannot hold spaces, commas or brackets; a bad nemesis name must not corrupt the
/// line, so anything outside the safe set becomes `-`.
fn push_keyword_name(out: &mut String, name: &str) {
    if name.is_empty() {
        out.push('_');
        return;
    }
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '*' | '+' | '!' | '?') {
            out.push(c);
        } else {
            out.push('-');
        }
    }
}

fn push_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::history::{Op, F};

    fn c(n: u64) -> Process {
        Process::Client(n)
    }

    #[test]
    fn txn_invoke_matches_jepsen_text() {
        let op = Op::invoke(
            c(0),
            F::Txn,
            Value::Txn(vec![Mop::append(1, 2), Mop::read(1, None)]),
        )
        .with_time(123);
        assert_eq!(
            op_to_edn(&op),
            "{:type :invoke, :f :txn, :value [[:append 1 2] [:r 1 nil]], :process 0, :time 123, :index 0}"
        );
    }

    #[test]
    fn txn_ok_with_node_and_reads() {
        let mut op = Op::ok(
            c(3),
            F::Txn,
            Value::Txn(vec![
                Mop::append(1, 2),
                Mop::read(1, Some(vec![1, 2])),
                Mop::read(9, Some(vec![])),
            ]),
        )
        .with_time(456)
        .with_node("n2");
        op.index = 7;
        assert_eq!(
            op_to_edn(&op),
            "{:type :ok, :f :txn, :value [[:append 1 2] [:r 1 [1 2]] [:r 9 []]], :process 3, :time 456, :index 7, :node \"n2\"}"
        );
    }

    #[test]
    fn info_with_escaped_error() {
        let op = Op::info(c(1), F::Add, Value::Int(5)).with_error("lost \"conn\"\n");
        assert_eq!(
            op_to_edn(&op),
            "{:type :info, :f :add, :value 5, :process 1, :time 0, :index 0, :error \"lost \\\"conn\\\"\\n\"}"
        );
    }

    #[test]
    fn an_increment_carries_the_value_it_wrote() {
        let op = Op::ok(c(2), F::Add, Value::Int(1))
            .with_node("n1")
            .with_wrote(42);
        assert_eq!(
            op_to_edn(&op),
            "{:type :ok, :f :add, :value 1, :process 2, :time 0, :index 0, :node \"n1\", :wrote 42}"
        );
    }

    #[test]
    fn bank_set_and_nemesis_values() {
        let transfer = Value::Transfer {
            from: 0,
            to: 2,
            amount: 5,
        };
        assert_eq!(value_to_edn(&transfer), "{:from 0, :to 2, :amount 5}");
        let balances: BTreeMap<u64, i64> = [(1, 20), (0, 10)].into_iter().collect();
        assert_eq!(value_to_edn(&Value::Balances(balances)), "{0 10, 1 20}");
        let set: BTreeSet<i64> = [3, 1, 2].into_iter().collect();
        assert_eq!(value_to_edn(&Value::Set(set)), "#{1 2 3}");
        assert_eq!(value_to_edn(&Value::Set(BTreeSet::new())), "#{}");
        let op = Op::info(
            Process::Nemesis,
            F::Other("start partition".into()),
            Value::Text("n1 | n2 n3".into()),
        );
        assert_eq!(
            op_to_edn(&op),
            "{:type :info, :f :start-partition, :value \"n1 | n2 n3\", :process :nemesis, :time 0, :index 0}"
        );
    }

    #[test]
    fn history_is_one_map_per_line() {
        let mut h = History::new();
        h.push(Op::invoke(c(0), F::Read, Value::Nil).with_time(1));
        h.push(Op::ok(c(0), F::Read, Value::Int(4)).with_time(2));
        let mut buf = Vec::new();
        write_history(&h, &mut buf).unwrap();
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "{:type :invoke, :f :read, :value nil, :process 0, :time 1, :index 0}\n\
             {:type :ok, :f :read, :value 4, :process 0, :time 2, :index 1}\n"
        );
    }
}
