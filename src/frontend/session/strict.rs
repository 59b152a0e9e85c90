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
use crate::catalog::Table;
use crate::config::StrictMode;
use crate::protocol::response::Shape;
use crate::protocol::Packet;
use crate::statement::{self, Rejection, Statement};

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

/// The strict-mode refusal for the write statements in `texts` (unqualified names are in
/// `db`), if any. A table the catalog cannot describe (a temporary table, a typo the backend
/// will report) is not judged. Takes no `Session`: the future must stay `Send`.
pub(super) async fn strict_refusal(
    fe: &super::Frontend,
    db: Option<&[u8]>,
    texts: &[&[u8]],
) -> Option<ClientError> {
    let mode = fe.settings.strict_mode;
    for text in texts {
        for name in statement::write_targets(text) {
            let schema = match (&name.schema, db) {
                (Some(s), _) => s.clone(),
                (None, Some(db)) => db.to_vec(),
                (None, None) => continue,
            };
            let schema = String::from_utf8_lossy(&schema).into_owned();
            let table = String::from_utf8_lossy(&name.name).into_owned();
            match fe.write_path.table_facts(&schema, &table).await {
                Ok(Some(t)) => {
                    if let Some(e) = violation(mode, &t) {
                        return Some(e);
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(%schema, %table, "strict mode cannot check: {e}"),
            }
        }
    }
    None
}

impl Session {
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
