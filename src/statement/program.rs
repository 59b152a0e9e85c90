//! What a stored program may write, for strict mode (DESIGN §4): the body of a procedure, a
//! trigger or an anonymous `BEGIN NOT ATOMIC ... END` block, the procedure a `CALL` names, and the
//! text behind SQL-level `PREPARE ... FROM` / `EXECUTE IMMEDIATE`.
//!
//! Bodies are scanned, not parsed: every INSERT/REPLACE/UPDATE/DELETE/LOAD statement in them is
//! read with `write_targets` (whatever block it sits in), every `CALL` names a procedure to look
//! into, and any `PREPARE`/`EXECUTE` means dynamic SQL, whose tables cannot be known before it
//! runs. A keyword that only looks like a write (`ON DUPLICATE KEY UPDATE`, `FOR UPDATE`,
//! `ON DELETE CASCADE`, the `INSERT()`/`REPLACE()` functions) is skipped. The scan errs on the
//! side of naming too much: a name that is no table is simply not found by the caller.
//! Owns no policy and does no I/O; must not classify statements (that is `classify`).

use super::classify::ObjectName;
use super::lexer::{tokenize, Token, TokenKind};
use super::targets::{object_name, write_targets};

/// The effects of one stored-program body.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ProgramEffects {
    /// Tables its write statements name (unqualified names are in the program's schema).
    pub writes: Vec<ObjectName>,
    /// Procedures it calls.
    pub calls: Vec<ObjectName>,
    /// It runs `PREPARE`/`EXECUTE`: what that writes is known only when it runs.
    pub dynamic_sql: bool,
}

const WRITE_VERBS: [&str; 5] = ["INSERT", "REPLACE", "UPDATE", "DELETE", "LOAD"];

/// Scans a stored-program body (see the module header).
pub fn program_effects(body: &[u8]) -> ProgramEffects {
    let toks = tokenize(body);
    let mut out = ProgramEffects::default();
    for (i, t) in toks.iter().enumerate() {
        let prev_is = |kw: &str| i > 0 && toks[i - 1].is_kw(body, kw);
        if t.is_kw(body, "PREPARE") || t.is_kw(body, "EXECUTE") {
            out.dynamic_sql = true;
        } else if t.is_kw(body, "CALL") {
            if let Some(n) = object_name(body, &toks[i + 1..]) {
                out.calls.push(n);
            }
        } else if WRITE_VERBS.iter().any(|v| t.is_kw(body, v))
            && !toks.get(i + 1).is_some_and(|n| n.is_punct(b'('))
            && !(prev_is("KEY") || prev_is("FOR") || prev_is("ON"))
            && !(i > 0 && toks[i - 1].is_punct(b'.'))
        {
            let end = statement_end(&toks[i..]).map_or(body.len(), |t| t.start);
            out.writes
                .extend(write_targets(body.get(t.start..end).unwrap_or_default()));
        }
    }
    out
}

/// The procedure `CALL [db.]p[(...)]` names.
pub fn call_target(stmt: &[u8]) -> Option<ObjectName> {
    let toks = tokenize(stmt);
    let at = toks.iter().position(|t| t.is_kw(stmt, "CALL"))?;
    object_name(stmt, &toks[at + 1..])
}

/// Where the text of `PREPARE s FROM <source>` or `EXECUTE IMMEDIATE <source>` comes from.
#[derive(Debug, PartialEq, Eq)]
pub enum DynamicSource {
    /// A user variable (`@q`), as written: its value is the text.
    UserVar(Vec<u8>),
    /// Any other expression: known only to the server.
    Expression,
}

/// The source of a `PREPARE`/`EXECUTE IMMEDIATE` whose text is not a lone literal; None when
/// `stmt` is neither.
pub fn dynamic_source(stmt: &[u8]) -> Option<DynamicSource> {
    let toks = tokenize(stmt);
    let first = toks.first()?;
    let rest = if first.is_kw(stmt, "PREPARE") {
        let from = toks.iter().position(|t| t.is_kw(stmt, "FROM"))?;
        &toks[from + 1..]
    } else if first.is_kw(stmt, "EXECUTE") && toks.get(1)?.is_kw(stmt, "IMMEDIATE") {
        let end = toks
            .iter()
            .position(|t| t.is_kw(stmt, "USING"))
            .unwrap_or(toks.len());
        toks.get(2..end)?
    } else {
        return None;
    };
    Some(match rest {
        [t] if t.kind == TokenKind::UserVar => DynamicSource::UserVar(t.text(stmt).to_vec()),
        _ => DynamicSource::Expression,
    })
}

/// The first `;` at parenthesis depth 0.
fn statement_end(toks: &[Token]) -> Option<&Token> {
    let mut depth = 0usize;
    toks.iter().find(|t| {
        match t.kind {
            TokenKind::Punct(b'(') => depth += 1,
            TokenKind::Punct(b')') => depth = depth.saturating_sub(1),
            _ => {}
        }
        depth == 0 && t.is_punct(b';')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: &ObjectName) -> String {
        match &n.schema {
            Some(s) => format!(
                "{}.{}",
                String::from_utf8_lossy(s),
                String::from_utf8_lossy(&n.name)
            ),
            None => String::from_utf8_lossy(&n.name).into_owned(),
        }
    }

    fn effects(body: &str) -> (Vec<String>, Vec<String>, bool) {
        let e = program_effects(body.as_bytes());
        (
            e.writes.iter().map(text).collect(),
            e.calls.iter().map(text).collect(),
            e.dynamic_sql,
        )
    }

    #[test]
    fn writes_in_every_block_are_found_and_lookalikes_are_not() {
        let body = "BEGIN\n\
            DECLARE CONTINUE HANDLER FOR SQLEXCEPTION INSERT INTO log VALUES ('fail;');\n\
            IF n > 0 THEN UPDATE d.t SET v = REPLACE(v, 'a', 'b') WHERE id = n; \n\
            ELSE INSERT INTO u (id) VALUES (1) ON DUPLICATE KEY UPDATE id = id + 1; END IF;\n\
            SELECT * FROM t FOR UPDATE;\n\
            lbl: LOOP DELETE FROM `q` WHERE id = 1; LEAVE lbl; END LOOP;\n\
            -- INSERT INTO commented VALUES (1);\n\
            SET @s = 'DELETE FROM quoted';\n\
            CALL other.p2(1); CALL p3;\n\
            END";
        let (writes, calls, dynamic) = effects(body);
        assert_eq!(writes, ["log", "d.t", "u", "q"]);
        assert_eq!(calls, ["other.p2", "p3"]);
        assert!(!dynamic);
    }

    #[test]
    fn dynamic_sql_is_noticed() {
        assert!(effects("BEGIN PREPARE s FROM @q; EXECUTE s; END").2);
        assert!(effects("BEGIN EXECUTE IMMEDIATE CONCAT('INSERT INTO ', t); END").2);
        assert!(!effects("BEGIN SELECT 'EXECUTE'; END").2);
    }

    #[test]
    fn trigger_bodies_and_calls() {
        let (writes, _, _) = effects("INSERT INTO audit SET id = NEW.id");
        assert_eq!(writes, ["audit"]);
        let (writes, _, _) =
            effects("BEGIN IF NEW.v < 0 THEN SET NEW.v = 0; END IF; UPDATE s.c SET n = n + 1; END");
        assert_eq!(writes, ["s.c"]);
        assert_eq!(
            call_target(b"CALL `d`.`p`(1, 'x')").map(|n| text(&n)),
            Some("d.p".into())
        );
        assert_eq!(call_target(b"call p").map(|n| text(&n)), Some("p".into()));
        assert_eq!(call_target(b"CALL"), None);
    }

    #[test]
    fn sources_of_dynamic_statements() {
        assert_eq!(
            dynamic_source(b"PREPARE s FROM @q"),
            Some(DynamicSource::UserVar(b"@q".to_vec()))
        );
        assert_eq!(
            dynamic_source(b"EXECUTE IMMEDIATE @q USING 1"),
            Some(DynamicSource::UserVar(b"@q".to_vec()))
        );
        assert_eq!(
            dynamic_source(b"PREPARE s FROM CONCAT('a', 'b')"),
            Some(DynamicSource::Expression)
        );
        assert_eq!(dynamic_source(b"EXECUTE s"), None);
        assert_eq!(dynamic_source(b"SELECT 1"), None);
    }

    #[test]
    fn hostile_input_never_panics() {
        for s in [
            "",
            "CALL",
            "CALL .",
            "INSERT",
            "UPDATE (",
            "PREPARE",
            "EXECUTE IMMEDIATE",
            "DELETE ;;;",
            "x.UPDATE t",
            "\u{0}\u{ff}",
        ] {
            let _ = program_effects(s.as_bytes());
            let _ = call_target(s.as_bytes());
            let _ = dynamic_source(s.as_bytes());
        }
    }
}
