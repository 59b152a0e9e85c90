//! The wsrep status surfaces, as text substitutions the backend then evaluates (DESIGN §11):
//!
//! * `SHOW [GLOBAL|SESSION|LOCAL] STATUS|VARIABLES [LIKE 'p' | WHERE ...]` is recognised, so the
//!   session can merge the node's `wsrep_%` rows into the backend's own result;
//! * `@@wsrep_*` (any scope) in any statement becomes the node's value as a literal, aliased to
//!   its original text when it is a whole select item, so the column keeps its name;
//! * `information_schema.{GLOBAL,SESSION}_{STATUS,VARIABLES}` and the `performance_schema`
//!   tables of the same names become derived tables: the backend's rows plus the node's, so
//!   monitor queries (ProxySQL, MaxScale, healthcheck.sh) run unchanged with real SQL semantics.
//!
//! Nothing here evaluates SQL: filtering and joins stay the backend's.

use super::lexer::{ident_text, tokenize, Token, TokenKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShowKind {
    Status,
    Variables,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShowFilter {
    None,
    /// The LIKE pattern, unquoted.
    Like(Vec<u8>),
    /// The WHERE expression text.
    Where(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Show {
    pub kind: ShowKind,
    pub filter: ShowFilter,
}

/// Recognises `SHOW [GLOBAL|SESSION|LOCAL] STATUS|VARIABLES [LIKE 'p' | WHERE expr]`.
pub fn parse_show(stmt: &[u8]) -> Option<Show> {
    let toks: Vec<Token> = tokenize(stmt)
        .into_iter()
        .filter(|t| !t.is_punct(b';'))
        .collect();
    let mut i = 0;
    if !toks.get(i)?.is_kw(stmt, "SHOW") {
        return None;
    }
    i += 1;
    if ["GLOBAL", "SESSION", "LOCAL"]
        .iter()
        .any(|k| toks.get(i).is_some_and(|t| t.is_kw(stmt, k)))
    {
        i += 1;
    }
    let kind = match toks.get(i) {
        Some(t) if t.is_kw(stmt, "STATUS") => ShowKind::Status,
        Some(t) if t.is_kw(stmt, "VARIABLES") => ShowKind::Variables,
        _ => return None,
    };
    i += 1;
    let filter = match toks.get(i) {
        None => ShowFilter::None,
        Some(t) if t.is_kw(stmt, "LIKE") => {
            let p = toks.get(i + 1)?;
            if !matches!(p.kind, TokenKind::String | TokenKind::DoubleQuoted) || toks.len() != i + 2
            {
                return None;
            }
            ShowFilter::Like(ident_text(stmt, p)?)
        }
        Some(t) if t.is_kw(stmt, "WHERE") => {
            let first = toks.get(i + 1)?;
            let last = toks.last()?;
            ShowFilter::Where(stmt.get(first.start..last.end)?.to_vec())
        }
        _ => return None,
    };
    Some(Show { kind, filter })
}

/// SQL LIKE with `%`, `_` and `\\` escapes, ASCII case-insensitive (MariaDB's default collation
/// for these names).
pub fn like_matches(pattern: &[u8], text: &[u8]) -> bool {
    // Dynamic programming over (pattern, text) positions: bounded by their product.
    let p: Vec<(u8, bool)> = {
        let mut out = Vec::new();
        let mut i = 0;
        while i < pattern.len() {
            if pattern[i] == b'\\' && i + 1 < pattern.len() {
                out.push((pattern[i + 1], true));
                i += 2;
            } else {
                out.push((pattern[i], false));
                i += 1;
            }
        }
        out
    };
    let mut reach = vec![false; text.len() + 1];
    reach[0] = true;
    for &(c, escaped) in &p {
        let mut next = vec![false; text.len() + 1];
        if c == b'%' && !escaped {
            let mut any = false;
            for j in 0..=text.len() {
                any |= reach[j];
                next[j] = any;
            }
        } else {
            for j in 0..text.len() {
                if reach[j] && ((c == b'_' && !escaped) || c.eq_ignore_ascii_case(&text[j])) {
                    next[j + 1] = true;
                }
            }
        }
        reach = next;
    }
    reach[text.len()]
}

/// The node's values, for the rewrites.
pub struct WsrepValues<'a> {
    /// `wsrep_%` status rows (lowercase names, display values).
    pub status: &'a [(String, String)],
    /// `wsrep_%` variables: (lowercase name, display value, SQL literal for `@@`).
    pub variables: &'a [(String, String, String)],
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn derived_table(schema: &str, table: &str, rows: &[(String, String)], upper: bool) -> String {
    // A MariaDB built with wsrep support has its own (idle) rows of these names: drop them.
    let names: Vec<String> = rows.iter().map(|(n, _)| quote(&n.to_uppercase())).collect();
    let mut s = format!("(SELECT VARIABLE_NAME, VARIABLE_VALUE FROM {schema}.{table}");
    if !names.is_empty() {
        s.push_str(&format!(
            " WHERE UPPER(VARIABLE_NAME) NOT IN ({})",
            names.join(",")
        ));
    }
    for (name, value) in rows {
        let name = if upper {
            name.to_uppercase()
        } else {
            name.clone()
        };
        s.push_str(&format!(
            " UNION ALL SELECT {}, {}",
            quote(&name),
            quote(value)
        ));
    }
    s.push(')');
    s
}

/// Keywords after a table reference that mean "no alias follows".
const NOT_AN_ALIAS: [&str; 22] = [
    "WHERE",
    "JOIN",
    "INNER",
    "LEFT",
    "RIGHT",
    "CROSS",
    "NATURAL",
    "STRAIGHT_JOIN",
    "ON",
    "USING",
    "GROUP",
    "ORDER",
    "LIMIT",
    "HAVING",
    "UNION",
    "EXCEPT",
    "INTERSECT",
    "FOR",
    "LOCK",
    "WINDOW",
    "INTO",
    "PROCEDURE",
];

/// Rewrites `@@wsrep_*` and the status/variable tables; None when nothing changed.
pub fn rewrite_wsrep(stmt: &[u8], values: &WsrepValues<'_>) -> Option<Vec<u8>> {
    let toks = tokenize(stmt);
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let t = toks[i];
        if t.kind == TokenKind::SysVar {
            let text = t.text(stmt);
            let name = text.rsplit(|b| *b == b'.').next().unwrap_or(text);
            let name = name
                .strip_prefix(b"@@")
                .unwrap_or(name)
                .to_ascii_lowercase();
            if let Some((_, _, literal)) = values
                .variables
                .iter()
                .find(|(n, _, _)| n.as_bytes() == name.as_slice())
            {
                let prev_is_item_start = i == 0
                    || toks[i - 1].is_punct(b',')
                    || toks[i - 1].is_kw(stmt, "SELECT")
                    || toks[i - 1].is_kw(stmt, "DISTINCT");
                let next_is_item_end = toks.get(i + 1).is_none_or(|n| {
                    n.is_punct(b',')
                        || n.is_punct(b';')
                        || n.is_kw(stmt, "FROM")
                        || n.is_kw(stmt, "INTO")
                        || n.is_kw(stmt, "LIMIT")
                });
                let alias = if prev_is_item_start && next_is_item_end && text.len() < 250 {
                    format!(" AS `{}`", String::from_utf8_lossy(text).replace('`', "``"))
                } else {
                    String::new()
                };
                edits.push((t.start, t.end, format!("{literal}{alias}")));
            }
            i += 1;
            continue;
        }
        // schema . table
        if let (Some(dot), Some(tbl)) = (toks.get(i + 1), toks.get(i + 2)) {
            let word = |t: &Token| matches!(t.kind, TokenKind::Word | TokenKind::QuotedIdent);
            if word(&t) && dot.is_punct(b'.') && word(tbl) {
                let schema = ident_text(stmt, &t)
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                let table = ident_text(stmt, tbl)
                    .unwrap_or_default()
                    .to_ascii_uppercase();
                let schema_name = match schema.as_slice() {
                    b"information_schema" => Some("information_schema"),
                    b"performance_schema" => Some("performance_schema"),
                    _ => None,
                };
                let rows: Option<Vec<(String, String)>> = match table.as_slice() {
                    b"GLOBAL_STATUS" | b"SESSION_STATUS" => Some(values.status.to_vec()),
                    b"GLOBAL_VARIABLES" | b"SESSION_VARIABLES" => Some(
                        values
                            .variables
                            .iter()
                            .map(|(n, v, _)| (n.clone(), v.clone()))
                            .collect(),
                    ),
                    _ => None,
                };
                if let (Some(schema_name), Some(rows)) = (schema_name, rows) {
                    let table_name = String::from_utf8_lossy(&table).into_owned();
                    let upper = schema_name == "information_schema";
                    let table_ref = if upper {
                        table_name.clone()
                    } else {
                        table_name.to_lowercase()
                    };
                    let mut replacement = derived_table(schema_name, &table_ref, &rows, upper);
                    let alias_follows = toks.get(i + 3).is_some_and(|n| {
                        n.is_kw(stmt, "AS")
                            || (matches!(n.kind, TokenKind::Word | TokenKind::QuotedIdent)
                                && !NOT_AN_ALIAS.iter().any(|k| n.is_kw(stmt, k)))
                    });
                    if !alias_follows {
                        replacement.push_str(&format!(" AS {table_ref}"));
                    }
                    edits.push((t.start, tbl.end, replacement));
                    i += 3;
                    continue;
                }
            }
        }
        i += 1;
    }
    if edits.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(stmt.len() + 256);
    let mut pos = 0;
    for (start, end, text) in edits {
        out.extend_from_slice(&stmt[pos..start]);
        out.extend_from_slice(text.as_bytes());
        pos = end;
    }
    out.extend_from_slice(&stmt[pos..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Rows = Vec<(String, String)>;
    type Vars = Vec<(String, String, String)>;

    fn values() -> (Rows, Vars) {
        (
            vec![
                ("wsrep_local_state".into(), "4".into()),
                ("wsrep_ready".into(), "ON".into()),
            ],
            vec![
                ("wsrep_on".into(), "ON".into(), "1".into()),
                ("wsrep_node_name".into(), "n1".into(), "'n1'".into()),
            ],
        )
    }

    fn rw(sql: &str) -> Option<String> {
        let (status, variables) = values();
        let v = WsrepValues {
            status: &status,
            variables: &variables,
        };
        rewrite_wsrep(sql.as_bytes(), &v).map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn show_statements_parse() {
        assert_eq!(
            parse_show(b"SHOW GLOBAL STATUS LIKE 'wsrep%'"),
            Some(Show {
                kind: ShowKind::Status,
                filter: ShowFilter::Like(b"wsrep%".to_vec())
            })
        );
        assert_eq!(
            parse_show(b"show variables").map(|s| s.kind),
            Some(ShowKind::Variables)
        );
        assert_eq!(
            parse_show(b"SHOW STATUS WHERE Variable_name = 'x'").map(|s| s.filter),
            Some(ShowFilter::Where(b"Variable_name = 'x'".to_vec()))
        );
        assert_eq!(parse_show(b"SHOW TABLES"), None);
        assert_eq!(parse_show(b"SHOW SLAVE STATUS"), None);
    }

    #[test]
    fn like_follows_sql_rules() {
        assert!(like_matches(b"wsrep%", b"wsrep_ready"));
        assert!(like_matches(b"WSREP_LOCAL_STATE", b"wsrep_local_state"));
        assert!(like_matches(b"wsrep\\_ready", b"wsrep_ready"));
        assert!(!like_matches(b"wsrep\\_ready", b"wsrepXready"));
        assert!(like_matches(b"wsrep_ready", b"wsrepXready"));
        assert!(!like_matches(b"wsrep%x", b"wsrep_ready"));
        assert!(like_matches(b"%", b""));
    }

    #[test]
    fn system_variables_become_literals_with_their_names() {
        assert_eq!(rw("SELECT @@wsrep_on").unwrap(), "SELECT 1 AS `@@wsrep_on`");
        assert_eq!(
            rw("select @@global.wsrep_on, @@wsrep_node_name as n").unwrap(),
            "select 1 AS `@@global.wsrep_on`, 'n1' as n"
        );
        assert_eq!(rw("SELECT @@wsrep_on + 1").unwrap(), "SELECT 1 + 1");
        assert_eq!(rw("SELECT @@version"), None);
        assert_eq!(rw("SELECT '@@wsrep_on'"), None);
    }

    #[test]
    fn status_tables_become_derived_tables() {
        let out = rw("SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'WSREP_LOCAL_STATE'").unwrap();
        assert!(out.starts_with("SELECT VARIABLE_VALUE FROM (SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE UPPER(VARIABLE_NAME) NOT IN ('WSREP_LOCAL_STATE','WSREP_READY') UNION ALL SELECT 'WSREP_LOCAL_STATE', '4'"), "{out}");
        assert!(
            out.ends_with(") AS GLOBAL_STATUS WHERE VARIABLE_NAME = 'WSREP_LOCAL_STATE'"),
            "{out}"
        );
        let out = rw("select * from `performance_schema`.`global_status` gs").unwrap();
        assert!(out.contains("SELECT 'wsrep_ready', 'ON') gs"), "{out}");
        let out = rw(
            "SELECT 1 FROM information_schema.GLOBAL_VARIABLES v WHERE v.VARIABLE_NAME='WSREP_ON'",
        )
        .unwrap();
        assert!(out.contains("SELECT 'WSREP_ON', 'ON' UNION ALL"), "{out}");
        assert!(
            out.ends_with("'n1') v WHERE v.VARIABLE_NAME='WSREP_ON'"),
            "{out}"
        );
        assert_eq!(rw("SELECT * FROM information_schema.TABLES"), None);
    }
}
