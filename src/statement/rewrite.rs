//! Rewriting `CONNECTION_ID()` so that the backend answers with the node-assigned connection id
//! the client was given, not the backend's own thread id (DESIGN §4: `KILL <id>` and
//! `CONNECTION_ID()` must agree with what the client saw).
//!
//! Every call outside strings and comments (case-insensitive, optional spaces or comments before
//! and inside the parentheses) becomes `CAST(<id> AS UNSIGNED)`. When the call is a whole
//! select-list item without an alias, `` AS `<original call text>` `` is appended so the result
//! column keeps the name the client expects (drivers and ORMs read columns by name). This module
//! owns only that text substitution; it must not decide whether a statement is a read or write.

use super::lexer::{tokenize, Token, TokenKind};

/// MariaDB rejects explicit aliases longer than this (ER_TOO_LONG_IDENT); a longer call text
/// (comments inside the parentheses) gets no alias rather than an error.
const MAX_ALIAS_LEN: usize = 256;

/// Select-list modifiers that may sit between SELECT and the first item.
const SELECT_MODIFIERS: [&str; 12] = [
    "SELECT",
    "ALL",
    "DISTINCT",
    "DISTINCTROW",
    "HIGH_PRIORITY",
    "STRAIGHT_JOIN",
    "SQL_SMALL_RESULT",
    "SQL_BIG_RESULT",
    "SQL_BUFFER_RESULT",
    "SQL_CACHE",
    "SQL_NO_CACHE",
    "SQL_CALC_FOUND_ROWS",
];

/// Words that end a select list at its own paren level.
const SELECT_LIST_END: [&str; 14] = [
    "FROM",
    "INTO",
    "WHERE",
    "GROUP",
    "HAVING",
    "ORDER",
    "LIMIT",
    "WINDOW",
    "UNION",
    "EXCEPT",
    "INTERSECT",
    "FOR",
    "LOCK",
    "PROCEDURE",
];

struct Call {
    /// Token index of the `CONNECTION_ID` word; `+1` is `(`, `+2` is `)`.
    at: usize,
    whole_item: bool,
}

/// `stmt` with every `CONNECTION_ID()` call replaced by the node's `id`, or `None` when the
/// statement has no such call.
pub fn rewrite_connection_id(stmt: &[u8], id: u32) -> Option<Vec<u8>> {
    let toks = tokenize(stmt);
    let calls = find_calls(stmt, &toks);
    if calls.is_empty() {
        return None;
    }
    let replacement = format!("CAST({id} AS UNSIGNED)");
    let mut out = Vec::with_capacity(stmt.len() + calls.len() * (replacement.len() + 24));
    let mut copied = 0usize;
    for call in calls {
        let (Some(word), Some(close)) = (toks.get(call.at), toks.get(call.at + 2)) else {
            continue;
        };
        out.extend_from_slice(stmt.get(copied..word.start).unwrap_or(&[]));
        out.extend_from_slice(replacement.as_bytes());
        let call_text = stmt.get(word.start..close.end).unwrap_or(&[]);
        if call.whole_item && call_text.len() <= MAX_ALIAS_LEN {
            out.extend_from_slice(b" AS `");
            for &b in call_text {
                if b == b'`' {
                    out.push(b'`');
                }
                out.push(b);
            }
            out.push(b'`');
        }
        copied = close.end;
    }
    out.extend_from_slice(stmt.get(copied..).unwrap_or(&[]));
    Some(out)
}

fn find_calls(sql: &[u8], toks: &[Token]) -> Vec<Call> {
    // One entry per open parenthesis level: is that level currently inside a select list?
    let mut levels: Vec<bool> = vec![false];
    let mut calls = Vec::new();
    let kw_in = |t: &Token, set: &[&str]| set.iter().any(|k| t.is_kw(sql, k));
    let mut i = 0usize;
    while let Some(tok) = toks.get(i) {
        let is_call = tok.is_kw(sql, "CONNECTION_ID")
            && toks.get(i + 1).is_some_and(|t| t.is_punct(b'('))
            && toks.get(i + 2).is_some_and(|t| t.is_punct(b')'))
            && !(i > 0 && toks.get(i - 1).is_some_and(|p| p.is_punct(b'.')));
        if is_call {
            let in_list = levels.last().copied().unwrap_or(false);
            let prev = i.checked_sub(1).and_then(|p| toks.get(p));
            let starts_item = prev.is_some_and(|p| p.is_punct(b',') || kw_in(p, &SELECT_MODIFIERS));
            let ends_item = match toks.get(i + 3) {
                None => true,
                Some(n) => match n.kind {
                    TokenKind::Punct(b',' | b';' | b')') => true,
                    TokenKind::Word => kw_in(n, &SELECT_LIST_END),
                    _ => false,
                },
            };
            calls.push(Call {
                at: i,
                whole_item: in_list && starts_item && ends_item,
            });
            i += 3;
            continue;
        }
        match tok.kind {
            TokenKind::Punct(b'(') => levels.push(false),
            // The outermost level is never popped: a stray `)` must not lose it.
            TokenKind::Punct(b')') if levels.len() > 1 => {
                levels.pop();
            }
            TokenKind::Punct(b';') => levels = vec![false],
            TokenKind::Word => {
                if let Some(level) = levels.last_mut() {
                    if tok.is_kw(sql, "SELECT") {
                        *level = true;
                    } else if kw_in(tok, &SELECT_LIST_END) {
                        *level = false;
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(sql: &str) -> Option<String> {
        rewrite_connection_id(sql.as_bytes(), 7).map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn rewrites() {
        let cases: &[(&str, &str)] = &[
            (
                "SELECT CONNECTION_ID()",
                "SELECT CAST(7 AS UNSIGNED) AS `CONNECTION_ID()`",
            ),
            (
                "select connection_id()",
                "select CAST(7 AS UNSIGNED) AS `connection_id()`",
            ),
            (
                "SELECT Connection_Id ( )",
                "SELECT CAST(7 AS UNSIGNED) AS `Connection_Id ( )`",
            ),
            (
                "SELECT CONNECTION_ID();",
                "SELECT CAST(7 AS UNSIGNED) AS `CONNECTION_ID()`;",
            ),
            (
                "SELECT 1, CONNECTION_ID(), 2 FROM dual",
                "SELECT 1, CAST(7 AS UNSIGNED) AS `CONNECTION_ID()`, 2 FROM dual",
            ),
            (
                "SELECT DISTINCT CONNECTION_ID() FROM t",
                "SELECT DISTINCT CAST(7 AS UNSIGNED) AS `CONNECTION_ID()` FROM t",
            ),
            (
                "SELECT CONNECTION_ID() INTO @c",
                "SELECT CAST(7 AS UNSIGNED) AS `CONNECTION_ID()` INTO @c",
            ),
            (
                "SELECT * FROM (SELECT CONNECTION_ID()) x",
                "SELECT * FROM (SELECT CAST(7 AS UNSIGNED) AS `CONNECTION_ID()`) x",
            ),
            // Aliased: the client chose the name.
            (
                "SELECT CONNECTION_ID() AS cid",
                "SELECT CAST(7 AS UNSIGNED) AS cid",
            ),
            ("SELECT CONNECTION_ID() cid", "SELECT CAST(7 AS UNSIGNED) cid"),
            (
                "SELECT CONNECTION_ID() 'cid'",
                "SELECT CAST(7 AS UNSIGNED) 'cid'",
            ),
            // Nested in expressions: never a whole item.
            (
                "SELECT CONNECTION_ID() + 1",
                "SELECT CAST(7 AS UNSIGNED) + 1",
            ),
            (
                "SELECT CONCAT('id=', CONNECTION_ID(), '!')",
                "SELECT CONCAT('id=', CAST(7 AS UNSIGNED), '!')",
            ),
            (
                "SELECT IF(CONNECTION_ID() = 7, 1, 0)",
                "SELECT IF(CAST(7 AS UNSIGNED) = 7, 1, 0)",
            ),
            // In WHERE and in other statements.
            (
                "SELECT * FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()",
                "SELECT * FROM information_schema.PROCESSLIST WHERE ID = CAST(7 AS UNSIGNED)",
            ),
            (
                "INSERT INTO t VALUES (CONNECTION_ID())",
                "INSERT INTO t VALUES (CAST(7 AS UNSIGNED))",
            ),
            (
                "SET @c = CONNECTION_ID()",
                "SET @c = CAST(7 AS UNSIGNED)",
            ),
            (
                "DO CONNECTION_ID()",
                "DO CAST(7 AS UNSIGNED)",
            ),
            // Strings and comments untouched, executable comments rewritten.
            (
                "SELECT 'CONNECTION_ID()', CONNECTION_ID() /* CONNECTION_ID() */",
                "SELECT 'CONNECTION_ID()', CAST(7 AS UNSIGNED) AS `CONNECTION_ID()` /* CONNECTION_ID() */",
            ),
            (
                "SELECT /*!50000 CONNECTION_ID() */",
                "SELECT /*!50000 CAST(7 AS UNSIGNED) AS `CONNECTION_ID()` */",
            ),
            (
                "SELECT CONNECTION_ID(/*`*/)",
                "SELECT CAST(7 AS UNSIGNED) AS `CONNECTION_ID(/*``*/)`",
            ),
            (
                "SELECT CONNECTION_ID(), CONNECTION_ID() FROM t",
                "SELECT CAST(7 AS UNSIGNED) AS `CONNECTION_ID()`, CAST(7 AS UNSIGNED) AS `CONNECTION_ID()` FROM t",
            ),
        ];
        for (sql, want) in cases {
            assert_eq!(rw(sql).as_deref(), Some(*want), "{sql}");
        }
    }

    #[test]
    fn unchanged_statements_give_none() {
        for sql in [
            "SELECT 1",
            "SELECT 'CONNECTION_ID()'",
            "SELECT `CONNECTION_ID`()",
            "SELECT 1 -- CONNECTION_ID()",
            "SELECT db.CONNECTION_ID()",
            "SELECT CONNECTION_ID",
            "SELECT CONNECTION_ID(1)",
            "SELECT @CONNECTION_ID",
        ] {
            assert_eq!(rw(sql), None, "{sql}");
        }
    }

    #[test]
    fn non_utf8_bytes_around_a_call_are_kept() {
        let sql = b"SELECT _latin1'\xe9', CONNECTION_ID() FROM caf\xe9";
        let got = rewrite_connection_id(sql, 4_000_000_000).unwrap();
        assert_eq!(
            got,
            b"SELECT _latin1'\xe9', CAST(4000000000 AS UNSIGNED) AS `CONNECTION_ID()` FROM caf\xe9"
                .to_vec()
        );
    }

    #[test]
    fn long_call_text_gets_no_alias() {
        let sql = format!("SELECT CONNECTION_ID(/*{}*/)", "x".repeat(300));
        assert_eq!(rw(&sql).as_deref(), Some("SELECT CAST(7 AS UNSIGNED)"));
    }
}
