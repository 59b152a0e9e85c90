//! The tables a DML statement names, for strict mode (DESIGN §4): INSERT/REPLACE and LOAD DATA
//! targets, and every table in the table references of UPDATE and DELETE (multi-table forms
//! included: a table only read there is named too, which errs on the side of refusing).
//!
//! It reads keywords and names only, like `classify`; it owns no policy. A statement it cannot
//! read yields no names (strict mode then does not refuse it: the write still replicates through
//! row capture). What CALL, triggers and dynamic SQL reach is followed by `program` and strict
//! mode (docs/galera-semantics.md).

use super::classify::ObjectName;
use super::lexer::{ident_text, tokenize, Token, TokenKind};

/// The tables `stmt` may write (see the module header).
pub fn write_targets(stmt: &[u8]) -> Vec<ObjectName> {
    let toks = tokenize(stmt);
    let mut depth = 0usize;
    let start = toks.iter().position(|t| {
        match t.kind {
            TokenKind::Punct(b'(') => depth += 1,
            TokenKind::Punct(b')') => depth = depth.saturating_sub(1),
            _ => {}
        }
        depth == 0
            && ["INSERT", "REPLACE", "UPDATE", "DELETE", "LOAD"]
                .iter()
                .any(|k| t.is_kw(stmt, k))
    });
    let Some(start) = start else {
        return Vec::new();
    };
    let mut c = Names {
        sql: stmt,
        toks: &toks,
        i: start + 1,
    };
    let verb = toks[start].text(stmt).to_ascii_uppercase();
    match verb.as_slice() {
        b"INSERT" | b"REPLACE" => {
            c.skip_kws(&["LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "IGNORE", "INTO"]);
            c.name().into_iter().collect()
        }
        b"LOAD" => {
            while !(c.at_end() || (c.is_kw("INTO") && c.is_kw_at(1, "TABLE"))) {
                c.i += 1;
            }
            c.i += 2;
            c.name().into_iter().collect()
        }
        b"UPDATE" => {
            c.skip_kws(&["LOW_PRIORITY", "IGNORE"]);
            c.table_references(&["SET"])
        }
        b"DELETE" => {
            c.skip_kws(&["LOW_PRIORITY", "QUICK", "IGNORE"]);
            if c.is_kw("FROM") {
                c.i += 1;
            } else {
                // `DELETE t1, t2 FROM refs`: the list names aliases; the references name tables.
                while !c.at_end() && !c.is_kw("FROM") {
                    c.i += 1;
                }
                c.i += 1;
            }
            c.table_references(&["WHERE", "ORDER", "LIMIT", "RETURNING", "USING"])
                .into_iter()
                .chain(if c.is_kw("USING") {
                    c.i += 1;
                    c.table_references(&["WHERE", "ORDER", "LIMIT", "RETURNING"])
                } else {
                    Vec::new()
                })
                .collect()
        }
        _ => Vec::new(),
    }
}

/// `name` or `schema.name` at the start of `toks`.
pub(super) fn object_name(sql: &[u8], toks: &[Token]) -> Option<ObjectName> {
    Names { sql, toks, i: 0 }.name()
}

struct Names<'a> {
    sql: &'a [u8],
    toks: &'a [Token],
    i: usize,
}

impl Names<'_> {
    fn at_end(&self) -> bool {
        self.i >= self.toks.len()
    }

    fn is_kw_at(&self, n: usize, kw: &str) -> bool {
        self.toks
            .get(self.i + n)
            .is_some_and(|t| t.is_kw(self.sql, kw))
    }

    fn is_kw(&self, kw: &str) -> bool {
        self.is_kw_at(0, kw)
    }

    fn is_punct(&self, p: u8) -> bool {
        self.toks.get(self.i).is_some_and(|t| t.is_punct(p))
    }

    fn skip_kws(&mut self, kws: &[&str]) {
        while kws.iter().any(|k| self.is_kw(k)) {
            self.i += 1;
        }
    }

    fn ident(&mut self) -> Option<Vec<u8>> {
        let t = self.toks.get(self.i)?;
        if !matches!(t.kind, TokenKind::Word | TokenKind::QuotedIdent) {
            return None;
        }
        self.i += 1;
        ident_text(self.sql, t)
    }

    fn name(&mut self) -> Option<ObjectName> {
        let first = self.ident()?;
        if self.is_punct(b'.') {
            self.i += 1;
            let name = self.ident()?;
            return Some(ObjectName {
                schema: Some(first),
                name,
            });
        }
        Some(ObjectName {
            schema: None,
            name: first,
        })
    }

    /// Table names in a table-references clause, up to one of `stop` at depth 0: the first
    /// name, and the name after every `,` and `JOIN` at depth 0 (derived tables skipped).
    fn table_references(&mut self, stop: &[&str]) -> Vec<ObjectName> {
        let mut out = Vec::new();
        let mut expect_table = true;
        let mut depth = 0usize;
        while !self.at_end() {
            if depth == 0 && stop.iter().any(|k| self.is_kw(k)) {
                break;
            }
            if depth == 0 && expect_table {
                expect_table = false;
                // `(SELECT ...) alias` is a derived table: nothing to name.
                if self.is_punct(b'(') {
                    continue;
                }
                if let Some(n) = self.name() {
                    out.push(n);
                    continue;
                }
            }
            let t = self.toks[self.i];
            match t.kind {
                TokenKind::Punct(b'(') => depth += 1,
                TokenKind::Punct(b')') => depth = depth.saturating_sub(1),
                TokenKind::Punct(b',') if depth == 0 => expect_table = true,
                _ if depth == 0 && t.is_kw(self.sql, "JOIN") => expect_table = true,
                _ => {}
            }
            self.i += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(sql: &str) -> Vec<String> {
        write_targets(sql.as_bytes())
            .into_iter()
            .map(|n| match n.schema {
                Some(s) => format!(
                    "{}.{}",
                    String::from_utf8_lossy(&s),
                    String::from_utf8_lossy(&n.name)
                ),
                None => String::from_utf8_lossy(&n.name).into_owned(),
            })
            .collect()
    }

    #[test]
    fn finds_the_tables_each_dml_form_names() {
        let cases: &[(&str, &[&str])] = &[
            ("INSERT INTO t VALUES (1)", &["t"]),
            (
                "insert low_priority ignore into `d`.`t` (a) values (1)",
                &["d.t"],
            ),
            ("INSERT d.t SELECT * FROM u", &["d.t"]),
            ("REPLACE INTO t SET a = 1", &["t"]),
            ("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", &["t"]),
            ("UPDATE t SET a = 1 WHERE b = 2", &["t"]),
            ("UPDATE IGNORE d.t AS x SET a = 1", &["d.t"]),
            ("UPDATE t1, d.t2 SET t1.a = t2.a", &["t1", "d.t2"]),
            (
                "UPDATE t1 JOIN t2 ON t1.id = t2.id LEFT JOIN (SELECT 1 AS id) s ON 1 SET t1.a = 1",
                &["t1", "t2"],
            ),
            ("DELETE FROM t WHERE a = 1", &["t"]),
            ("DELETE QUICK FROM d.t ORDER BY a LIMIT 1", &["d.t"]),
            (
                "DELETE t1 FROM t1 JOIN t2 ON t1.a = t2.a WHERE 1",
                &["t1", "t2"],
            ),
            (
                "DELETE FROM t1 USING t1, t2 WHERE t1.a = t2.a",
                &["t1", "t1", "t2"],
            ),
            (
                "LOAD DATA INFILE '/x' INTO TABLE d.t FIELDS TERMINATED BY ','",
                &["d.t"],
            ),
            ("SELECT 1", &[]),
            ("CALL p()", &[]),
        ];
        for (sql, want) in cases {
            assert_eq!(names(sql), *want, "{sql}");
        }
    }
}
