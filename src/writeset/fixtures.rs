//! Test fixtures shared by the key and certification tests: one parent/child table pair with a
//! primary key, a unique key and two foreign keys, and a case-insensitive text value.

use super::canonical::Collation;
use super::key::KeyKind::{self, Exclusive, Reference, Update};
use super::{CellValue, ForeignKeyMeta, IndexColumn, IndexMeta, TableMeta};

/// `shop.parent(id INT UNSIGNED PRIMARY KEY, code VARCHAR UNIQUE general_ci, v INT)`
pub(crate) fn parent_meta() -> TableMeta {
    TableMeta {
        schema: "shop".into(),
        table: "parent".into(),
        columns: vec!["id".into(), "code".into(), "v".into()],
        primary_key: Some(vec![IndexColumn::full(0)]),
        unique_keys: vec![IndexMeta {
            name: "code".into(),
            columns: vec![IndexColumn::full(1)],
        }],
        referenced_indexes: vec![],
        foreign_keys: vec![],
    }
}

/// `shop.child(id INT PRIMARY KEY, parent_id INT REFERENCES parent(id),
///  parent_code VARCHAR REFERENCES parent(code))`
pub(crate) fn child_meta() -> TableMeta {
    TableMeta {
        schema: "shop".into(),
        table: "child".into(),
        columns: vec!["id".into(), "parent_id".into(), "parent_code".into()],
        primary_key: Some(vec![IndexColumn::full(0)]),
        unique_keys: vec![],
        referenced_indexes: vec![],
        foreign_keys: vec![
            ForeignKeyMeta {
                columns: vec![1],
                parent_schema: "shop".into(),
                parent_table: "parent".into(),
                parent_index: "PRIMARY".into(),
            },
            ForeignKeyMeta {
                columns: vec![2],
                parent_schema: "shop".into(),
                parent_table: "parent".into(),
                parent_index: "code".into(),
            },
        ],
    }
}

pub(crate) fn ci(s: &str) -> CellValue {
    CellValue::Text {
        bytes: s.as_bytes().to_vec(),
        collation: Collation::from_name("utf8mb4_general_ci"),
    }
}

/// Galera's key conflict matrix: (committed key kind, incoming key kind, conflict?).
pub(crate) const GALERA_CONFLICT_CELLS: [(KeyKind, KeyKind, bool); 9] = [
    (Exclusive, Exclusive, true),
    (Exclusive, Update, true),
    (Exclusive, Reference, true),
    (Update, Exclusive, true),
    (Update, Update, true),
    (Update, Reference, false),
    (Reference, Exclusive, true),
    (Reference, Update, false),
    (Reference, Reference, false),
];
