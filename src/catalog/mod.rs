//! Schema facts certification needs and the binlog does not carry: every table's primary key,
//! unique keys (with prefix lengths) and foreign keys, read from information_schema through the
//! service account. Cached per table and reloaded after every schema change (TOI) or when a
//! row event names a table the cache does not know. The binlog's own FULL metadata gives column
//! names and the primary key only, and nothing about unique keys or foreign keys.
//!
//! Also cached the same way, for strict mode: the bodies of stored procedures (by name) and of
//! the triggers on each table, each with the schema its unqualified names resolve in. CREATE and
//! DROP of procedures and triggers are TOI, so the reload after every TOI keeps them current.

use mysql_async::prelude::Queryable;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Column {
    pub(crate) name: String,
    /// The collation of a character column; None for numbers, dates and binary strings.
    pub(crate) collation: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UniqueIndex {
    pub(crate) name: String,
    /// Column positions (0-based, in table order) and, for prefix indexes, the prefix length.
    pub(crate) columns: Vec<(usize, Option<usize>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ForeignKey {
    pub(crate) name: String,
    pub(crate) columns: Vec<usize>,
    pub(crate) parent_schema: String,
    pub(crate) parent_table: String,
    pub(crate) parent_columns: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Table {
    pub(crate) schema: String,
    pub(crate) name: String,
    pub(crate) columns: Vec<Column>,
    pub(crate) primary_key: Option<UniqueIndex>,
    pub(crate) unique_keys: Vec<UniqueIndex>,
    pub(crate) foreign_keys: Vec<ForeignKey>,
    pub(crate) engine: Option<String>,
}

impl Table {
    /// The name of the parent's unique index (PRIMARY first) whose columns are exactly
    /// `columns`, in order. InnoDB also allows a foreign key to reference a non-unique index;
    /// then there is none, and the caller must key on the column set itself.
    pub(crate) fn unique_index_on(&self, columns: &[String]) -> Option<&str> {
        let matches = |ix: &UniqueIndex| {
            ix.columns.len() == columns.len()
                && ix.columns.iter().zip(columns).all(|((pos, prefix), name)| {
                    prefix.is_none()
                        && self
                            .columns
                            .get(*pos)
                            .is_some_and(|c| c.name.eq_ignore_ascii_case(name))
                })
        };
        self.primary_key
            .iter()
            .chain(self.unique_keys.iter())
            .find(|ix| matches(ix))
            .map(|ix| ix.name.as_str())
    }
}

type TableKey = (String, String);

/// Which stored-program bodies to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Programs {
    /// The procedure of that name (none or one body).
    Procedure,
    /// Every trigger on that table.
    TriggersOn,
}

/// Stored-program bodies: (schema their unqualified names resolve in, body text).
pub(crate) type Bodies = Arc<Vec<(String, String)>>;

/// A program cache key: what kind, in which schema, named (or on the table named) what.
type ProgramKey = (Programs, String, String);

/// The per-node cache of table facts.
#[derive(Clone, Default)]
pub(crate) struct Catalog {
    tables: Arc<RwLock<HashMap<TableKey, Arc<Table>>>>,
    programs: Arc<RwLock<HashMap<ProgramKey, Bodies>>>,
}

impl Catalog {
    pub(crate) fn get(&self, schema: &str, table: &str) -> Option<Arc<Table>> {
        let key = (schema.to_owned(), table.to_owned());
        self.tables.read().ok()?.get(&key).cloned()
    }

    /// Forgets everything: the next lookup of any table reloads it.
    pub(crate) fn invalidate_all(&self) {
        if let Ok(mut t) = self.tables.write() {
            t.clear();
        }
        if let Ok(mut p) = self.programs.write() {
            p.clear();
        }
    }

    /// The cached bodies of `kind` named by (`schema`, `name`), if loaded since the last TOI.
    pub(crate) fn cached_programs(
        &self,
        kind: Programs,
        schema: &str,
        name: &str,
    ) -> Option<Bodies> {
        let key = (kind, schema.to_owned(), name.to_owned());
        self.programs.read().ok()?.get(&key).cloned()
    }

    /// The bodies of `kind` named by (`schema`, `name`), from the cache or loaded.
    pub(crate) async fn programs(
        &self,
        conn: &mut mysql_async::Conn,
        kind: Programs,
        schema: &str,
        name: &str,
    ) -> Result<Bodies, mysql_async::Error> {
        if let Some(b) = self.cached_programs(kind, schema, name) {
            return Ok(b);
        }
        let key = (kind, schema.to_owned(), name.to_owned());
        let sql = match kind {
            Programs::Procedure => {
                "SELECT ROUTINE_SCHEMA, ROUTINE_DEFINITION FROM information_schema.ROUTINES \
                 WHERE ROUTINE_SCHEMA = ? AND ROUTINE_NAME = ? AND ROUTINE_TYPE = 'PROCEDURE'"
            }
            Programs::TriggersOn => {
                "SELECT TRIGGER_SCHEMA, ACTION_STATEMENT FROM information_schema.TRIGGERS \
                 WHERE EVENT_OBJECT_SCHEMA = ? AND EVENT_OBJECT_TABLE = ?"
            }
        };
        let rows: Vec<(String, Option<String>)> = conn.exec(sql, (schema, name)).await?;
        let bodies: Bodies = Arc::new(
            rows.into_iter()
                .map(|(s, b)| (s, b.unwrap_or_default()))
                .collect(),
        );
        if let Ok(mut p) = self.programs.write() {
            p.insert(key, bodies.clone());
        }
        Ok(bodies)
    }

    /// Returns the table's facts, loading them if they are not cached.
    pub(crate) async fn table(
        &self,
        conn: &mut mysql_async::Conn,
        schema: &str,
        table: &str,
    ) -> Result<Option<Arc<Table>>, mysql_async::Error> {
        if let Some(t) = self.get(schema, table) {
            return Ok(Some(t));
        }
        let loaded = load_table(conn, schema, table).await?;
        if let (Some(t), Ok(mut cache)) = (&loaded, self.tables.write()) {
            cache.insert((schema.to_owned(), table.to_owned()), t.clone());
        }
        Ok(loaded)
    }
}

/// Loads one table's facts; None when the table does not exist.
pub(crate) async fn load_table(
    conn: &mut mysql_async::Conn,
    schema: &str,
    table: &str,
) -> Result<Option<Arc<Table>>, mysql_async::Error> {
    let cols: Vec<(String, Option<String>)> = conn
        .exec(
            "SELECT COLUMN_NAME, COLLATION_NAME FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (schema, table),
        )
        .await?;
    if cols.is_empty() {
        return Ok(None);
    }
    let columns: Vec<Column> = cols
        .into_iter()
        .map(|(name, collation)| Column { name, collation })
        .collect();
    let position = |name: &str| {
        columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
    };
    let engine: Option<String> = conn
        .exec_first(
            "SELECT ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (schema, table),
        )
        .await?
        .flatten();
    let stats: Vec<(String, String, Option<u64>)> = conn
        .exec(
            "SELECT INDEX_NAME, COLUMN_NAME, SUB_PART FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND NON_UNIQUE = 0 ORDER BY INDEX_NAME, SEQ_IN_INDEX",
            (schema, table),
        )
        .await?;
    let mut primary_key = None;
    let mut unique_keys: Vec<UniqueIndex> = Vec::new();
    for (index, column, sub_part) in stats {
        let Some(pos) = position(&column) else {
            continue;
        };
        let part = (pos, sub_part.map(|n| n as usize));
        let target = if index == "PRIMARY" {
            primary_key.get_or_insert_with(|| UniqueIndex {
                name: index.clone(),
                columns: Vec::new(),
            })
        } else {
            match unique_keys.iter().position(|u| u.name == index) {
                Some(i) => &mut unique_keys[i],
                None => {
                    unique_keys.push(UniqueIndex {
                        name: index.clone(),
                        columns: Vec::new(),
                    });
                    let last = unique_keys.len() - 1;
                    &mut unique_keys[last]
                }
            }
        };
        target.columns.push(part);
    }
    let fk_rows: Vec<(String, String, String, String, String)> = conn
        .exec(
            "SELECT CONSTRAINT_NAME, COLUMN_NAME, REFERENCED_TABLE_SCHEMA, REFERENCED_TABLE_NAME, REFERENCED_COLUMN_NAME \
             FROM information_schema.KEY_COLUMN_USAGE \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND REFERENCED_TABLE_NAME IS NOT NULL \
             ORDER BY CONSTRAINT_NAME, ORDINAL_POSITION",
            (schema, table),
        )
        .await?;
    let mut foreign_keys: Vec<ForeignKey> = Vec::new();
    for (name, column, pschema, ptable, pcolumn) in fk_rows {
        let Some(pos) = position(&column) else {
            continue;
        };
        match foreign_keys.iter_mut().find(|f| f.name == name) {
            Some(fk) => {
                fk.columns.push(pos);
                fk.parent_columns.push(pcolumn);
            }
            None => foreign_keys.push(ForeignKey {
                name,
                columns: vec![pos],
                parent_schema: pschema,
                parent_table: ptable,
                parent_columns: vec![pcolumn],
            }),
        }
    }
    Ok(Some(Arc::new(Table {
        schema: schema.to_owned(),
        name: table.to_owned(),
        columns,
        primary_key,
        unique_keys,
        foreign_keys,
        engine,
    })))
}
