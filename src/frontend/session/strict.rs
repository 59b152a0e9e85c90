//! Strict mode (DESIGN §4, like PXC's pxc_strict_mode): refuses writes the cluster cannot
//! replicate before they run, and, under `strict_mode = permissive`, turns the safe refusals
//! into warnings.
//!
//! Owns: which tables a write statement may not touch (non-transactional engines always; tables
//! without a primary key under `enforcing`), and the permissive no-op with a warning. Must not
//! touch: statement classification (`statement`), the catalog's loading (`catalog`, reached
//! through the write path), transaction state.
//!
//! Why non-transactional writes are refused in every mode: their changes survive the session's
//! XA ROLLBACK and are never captured, so they would stay on this node alone. PXC's permissive
//! mode lets them run with a warning; certus does not, because the divergence is silent.

use super::{ClientError, End, Session};
use crate::catalog::{Programs, Table};
use crate::config::StrictMode;
use crate::protocol::response::Shape;
use crate::protocol::Packet;
use crate::statement::{self, Rejection, Statement, WriteKind};

/// Storage engines whose changes roll back with the session's XA transaction.
fn is_transactional(engine: &str) -> bool {
    engine.eq_ignore_ascii_case("InnoDB")
}

fn quoted(t: &Table) -> String {
    format!("`{}`.`{}`", t.schema, t.name)
}

/// Why `mode` refuses a write to `t`, if it does. Views and unknown engines are not judged.
pub(super) fn violation(mode: StrictMode, t: &Table) -> Option<ClientError> {
    let engine = t.engine.as_deref()?;
    if !is_transactional(engine) {
        return Some(ClientError::NonTransactionalTable {
            table: quoted(t),
            engine: engine.to_owned(),
        });
    }
    if mode == StrictMode::Enforcing && t.primary_key.is_none() {
        return Some(ClientError::NoPrimaryKey { table: quoted(t) });
    }
    None
}

/// The warning a permissive node gives instead of refusing `r`; None when `r` is refused in
/// every mode. LOCK TABLES and UNLOCK TABLES are safe to ignore: the session's writes are still
/// certified, only a lock that was never cluster-wide (not in Galera either) is missing.
pub(super) fn permissive_warning(r: Rejection) -> Option<&'static str> {
    match r {
        Rejection::LockTables => Some(
            "LOCK TABLES is ignored by certus (strict_mode = permissive): table locks are not cluster-wide; transactions are certified instead",
        ),
        Rejection::UnlockTables => {
            Some("UNLOCK TABLES is ignored by certus (strict_mode = permissive)")
        }
        Rejection::FlushTablesWithReadLock
        | Rejection::FlushTablesForExport
        | Rejection::UserLock(_)
        | Rejection::Binlog
        | Rejection::Xa
        | Rejection::SqlLogBin => None,
    }
}

/// One thing strict mode looks at before a write runs.
enum Check {
    /// A write statement; unqualified names are in `db`.
    Statement { text: Vec<u8>, db: Option<Vec<u8>> },
    /// A stored-program body (procedure, trigger, anonymous block); unqualified names in `db`.
    Program { body: Vec<u8>, db: Option<Vec<u8>> },
    /// A table written: its engine and key, then its triggers.
    Table { schema: String, table: String },
    /// A procedure called: its body.
    Procedure { schema: String, name: String },
}

/// How many tables, procedures and bodies one statement may lead strict mode to; past it the
/// statement is refused rather than run unchecked.
const MAX_CHECKS: usize = 256;

/// The refusal of a stored program that runs dynamic SQL: what it writes cannot be known
/// before it runs.
const DYNAMIC_IN_PROGRAM: &str =
    "dynamic SQL (PREPARE/EXECUTE) inside a stored procedure or trigger through certus (the tables it writes cannot be checked)";

/// The strict-mode refusal for the write statements in `texts` (unqualified names are in
/// `db`), if any. Follows what the statements can reach: the procedure a CALL names (and the
/// ones it calls), the triggers of every table written (and what they write), the text of an
/// `EXECUTE IMMEDIATE` literal, an anonymous `BEGIN NOT ATOMIC` block. A table the catalog
/// cannot describe (a temporary table, a typo the backend will report) is not judged. Takes no
/// `Session`: the future must stay `Send`.
pub(super) async fn strict_refusal(
    fe: &super::Frontend,
    db: Option<&[u8]>,
    texts: &[&[u8]],
) -> Option<ClientError> {
    let mode = fe.settings.strict_mode;
    let mut work: Vec<Check> = texts
        .iter()
        .rev()
        .map(|t| Check::Statement {
            text: t.to_vec(),
            db: db.map(<[u8]>::to_vec),
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    let mut steps = 0usize;
    while let Some(check) = work.pop() {
        steps += 1;
        if steps > MAX_CHECKS {
            return Some(ClientError::NotSupported(
                "stored programs that reach this many tables and procedures through certus (strict mode cannot check them all)",
            ));
        }
        match check {
            Check::Statement { text, db } => expand_statement(&text, db, &mut work),
            Check::Program { body, db } => {
                let effects = statement::program_effects(&body);
                if effects.dynamic_sql {
                    return Some(ClientError::NotSupported(DYNAMIC_IN_PROGRAM));
                }
                push_tables(&mut work, effects.writes, db.as_deref());
                for call in effects.calls {
                    if let Some((schema, name)) = qualify(&call, db.as_deref()) {
                        work.push(Check::Procedure { schema, name });
                    }
                }
            }
            Check::Table { schema, table } => {
                if !seen.insert((Programs::TriggersOn, schema.clone(), table.clone())) {
                    continue;
                }
                match fe.write_path.table_facts(&schema, &table).await {
                    Ok(Some(t)) => {
                        if let Some(e) = violation(mode, &t) {
                            return Some(e);
                        }
                    }
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::debug!(%schema, %table, "strict mode cannot check: {e}");
                        continue;
                    }
                }
                push_bodies(fe, &mut work, Programs::TriggersOn, &schema, &table).await;
            }
            Check::Procedure { schema, name } => {
                if seen.insert((Programs::Procedure, schema.clone(), name.clone())) {
                    push_bodies(fe, &mut work, Programs::Procedure, &schema, &name).await;
                }
            }
        }
    }
    None
}

/// What one write statement leads to: its tables, the procedure it calls, the statement an
/// `EXECUTE IMMEDIATE` literal holds, an anonymous block's body. Some(refusal) for an
/// `EXECUTE IMMEDIATE` whose text is not known here (the session resolves user variables first).
fn expand_statement(text: &[u8], db: Option<Vec<u8>>, work: &mut Vec<Check>) {
    match statement::classify(text) {
        Statement::Write(WriteKind::Call) => {
            let call = statement::call_target(text);
            if let Some((schema, name)) = call.and_then(|c| qualify(&c, db.as_deref())) {
                work.push(Check::Procedure { schema, name });
            }
        }
        Statement::ExecuteImmediate { text: Some(inner) } => {
            work.push(Check::Statement { text: inner, db });
        }
        // Its text is resolved by the session (`dynamic_sql_refusal`), which judges it then.
        Statement::ExecuteImmediate { text: None } => {}
        Statement::Compound => work.push(Check::Program {
            body: text.to_vec(),
            db,
        }),
        _ => push_tables(work, statement::write_targets(text), db.as_deref()),
    }
}

/// The refusal of `PREPARE ... FROM` / `EXECUTE IMMEDIATE` with a text certus cannot see.
pub(super) const DYNAMIC_TEXT: &str =
    "PREPARE or EXECUTE IMMEDIATE from an expression other than a string literal or a user variable through certus";

fn qualify(n: &statement::ObjectName, db: Option<&[u8]>) -> Option<(String, String)> {
    let schema = n.schema.as_deref().or(db)?;
    Some((
        String::from_utf8_lossy(schema).into_owned(),
        String::from_utf8_lossy(&n.name).into_owned(),
    ))
}

fn push_tables(work: &mut Vec<Check>, names: Vec<statement::ObjectName>, db: Option<&[u8]>) {
    for n in names.iter().rev() {
        if let Some((schema, table)) = qualify(n, db) {
            work.push(Check::Table { schema, table });
        }
    }
}

async fn push_bodies(
    fe: &super::Frontend,
    work: &mut Vec<Check>,
    kind: Programs,
    schema: &str,
    name: &str,
) {
    match fe.write_path.program_bodies(kind, schema, name).await {
        Ok(bodies) => {
            for (in_schema, body) in bodies.iter() {
                work.push(Check::Program {
                    body: body.as_bytes().to_vec(),
                    db: Some(in_schema.as_bytes().to_vec()),
                });
            }
        }
        Err(e) => {
            tracing::debug!(%schema, %name, ?kind, "strict mode cannot read stored programs: {e}")
        }
    }
}

impl Session {
    /// Strict mode for SQL-level prepared statements: `PREPARE name FROM <text>` and `EXECUTE
    /// IMMEDIATE <text>` are judged by the statement their text holds (read from a user
    /// variable when needed), as COM_STMT_PREPARE is; the text of a PREPARE is kept and judged
    /// again at every `EXECUTE name` (a TOI may have changed the table meanwhile).
    pub(super) async fn dynamic_sql_refusal(
        &mut self,
        st: &Statement,
        text: &[u8],
    ) -> Result<Option<ClientError>, End> {
        let (name, literal) = match st {
            Statement::Prepare { name, text } => (Some(name.to_ascii_lowercase()), text.clone()),
            Statement::ExecuteImmediate { text } => (None, text.clone()),
            Statement::Execute { name } => {
                let Some(inner) = self.sql_prepared.get(&name.to_ascii_lowercase()).cloned() else {
                    // Unknown here: the backend reports it (1243) without running anything.
                    return Ok(None);
                };
                let (fe, db) = (self.fe.clone(), self.db.clone());
                return Ok(strict_refusal(&fe, db.as_deref(), &[&inner]).await);
            }
            Statement::Deallocate { name } => {
                self.sql_prepared.remove(&name.to_ascii_lowercase());
                return Ok(None);
            }
            _ => return Ok(None),
        };
        let inner = match literal {
            Some(t) => t,
            None => match statement::dynamic_source(text) {
                Some(statement::DynamicSource::UserVar(var)) => {
                    let sql = format!("SELECT {}", String::from_utf8_lossy(&var));
                    match self.internal_value(&sql).await? {
                        Ok(Some(v)) => v,
                        // NULL or unreadable: the backend refuses the statement itself.
                        _ => return Ok(None),
                    }
                }
                _ => return Ok(Some(ClientError::NotSupported(DYNAMIC_TEXT))),
            },
        };
        let inner_st = statement::classify(&inner);
        match super::route(&inner_st) {
            super::Route::Reject(what) => return Ok(Some(ClientError::NotSupported(what))),
            super::Route::Toi(_) => {
                return Ok(Some(ClientError::NotSupported(
                    "DDL as a prepared statement through certus",
                )))
            }
            super::Route::Write => {
                let (fe, db) = (self.fe.clone(), self.db.clone());
                if let Some(e) = strict_refusal(&fe, db.as_deref(), &[&inner]).await {
                    return Ok(Some(e));
                }
            }
            _ => {}
        }
        if let Some(name) = name {
            self.sql_prepared.insert(name, inner);
        }
        Ok(None)
    }

    /// Permissive mode: answers a safely ignorable statement with OK and one warning (the
    /// backend raises it, so SHOW WARNINGS shows it as MariaDB would). Returns false when `st`
    /// is not such a statement and must be refused.
    pub(super) async fn ignore_with_warning(
        &mut self,
        packet: &Packet,
        st: &Statement,
    ) -> Result<bool, End> {
        if self.fe.settings.strict_mode != StrictMode::Permissive {
            return Ok(false);
        }
        let Some(message) = st.rejection().and_then(permissive_warning) else {
            return Ok(false);
        };
        // LOCK TABLES and UNLOCK TABLES commit the open transaction first in MariaDB.
        if self.txn.is_some() {
            if let Err(refusal) = self.commit_xa().await? {
                self.send_refusal(packet.next_seq(), refusal).await?;
                return Ok(true);
            }
        }
        let mut payload = vec![crate::protocol::command::QUERY];
        payload.extend_from_slice(
            format!(
                "SIGNAL SQLSTATE '01000' SET MYSQL_ERRNO = 4165, MESSAGE_TEXT = '{}'",
                message.replace('\'', "''")
            )
            .as_bytes(),
        );
        let warn = Packet {
            seq: packet.seq,
            payload,
        };
        self.relay(&warn, Shape::ResultSets).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::UniqueIndex;

    fn table(engine: Option<&str>, pk: bool) -> Table {
        Table {
            schema: "d".into(),
            name: "t".into(),
            columns: Vec::new(),
            primary_key: pk.then(|| UniqueIndex {
                name: "PRIMARY".into(),
                columns: vec![(0, None)],
            }),
            unique_keys: Vec::new(),
            foreign_keys: Vec::new(),
            engine: engine.map(str::to_owned),
        }
    }

    #[test]
    fn each_mode_judges_engines_and_primary_keys() {
        use StrictMode::*;
        for mode in [Enforcing, On, Permissive] {
            let e = violation(mode, &table(Some("MyISAM"), true));
            assert!(
                matches!(e, Some(ClientError::NonTransactionalTable { .. })),
                "{mode:?}"
            );
            assert_eq!(violation(mode, &table(Some("InnoDB"), true)), None);
            assert_eq!(
                violation(mode, &table(None, false)),
                None,
                "views are not judged"
            );
        }
        assert!(matches!(
            violation(Enforcing, &table(Some("InnoDB"), false)),
            Some(ClientError::NoPrimaryKey { .. })
        ));
        assert_eq!(violation(On, &table(Some("innodb"), false)), None);
        assert_eq!(violation(Permissive, &table(Some("InnoDB"), false)), None);
        let (code, _, msg) = violation(On, &table(Some("Aria"), true)).unwrap().parts();
        assert_eq!(code, 4165);
        assert!(msg.contains("`d`.`t`") && msg.contains("Aria"), "{msg}");
    }

    #[test]
    fn only_table_locks_are_downgraded() {
        assert!(permissive_warning(Rejection::LockTables).is_some());
        assert!(permissive_warning(Rejection::UnlockTables).is_some());
        assert!(permissive_warning(Rejection::Xa).is_none());
        assert!(permissive_warning(Rejection::SqlLogBin).is_none());
        assert!(permissive_warning(Rejection::FlushTablesWithReadLock).is_none());
    }
}
