//! Key derivation from row images and table metadata (DESIGN §5).
//!
//! Owns which keys a row change produces and with which kind. Pure: it reads the metadata and
//! row images it is given and never asks the catalog or the backend anything. Must not decide
//! conflicts (that is `certification`) nor canonicalise values (that is `canonical`).
//!
//! | row change | keys |
//! |---|---|
//! | insert | PK, unique keys and FK-referenced indexes without NULLs: Exclusive; FK parent keys (non-NULL): Reference |
//! | update | PK before and after: Exclusive; each unique / FK-referenced index: Exclusive before and after when its value changes, Update when it does not; FK parent keys of the after image: Reference |
//! | delete | PK, unique keys and FK-referenced indexes: Exclusive |
//! | every row | table key and schema key: Reference |
//! | image with no PK and no NULL-free unique key | hash of the whole image: Exclusive |
//!
//! A child's FK parent key is hashed from the parent's schema, table and index *name* and the
//! child's values, exactly as the parent hashes its own index, so a child insert and a
//! concurrent delete of its parent collide on one hash.

use super::canonical::CellValue;
use super::key::{schema_key, table_key, Domain, Key, KeyHash, KeyHasher};

/// MariaDB's name for the primary key index, also what `information_schema` reports as the
/// referenced index of a foreign key that points at a primary key.
pub const PRIMARY_INDEX_NAME: &str = "PRIMARY";

/// The catalog's facts about one table, as needed for keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableMeta {
    pub schema: String,
    pub table: String,
    /// Column names in table order; a row image has one value per column
    /// (`binlog_row_image=FULL`).
    pub columns: Vec<String>,
    /// The primary key's columns, hashed under [`PRIMARY_INDEX_NAME`].
    pub primary_key: Option<Vec<IndexColumn>>,
    /// Every UNIQUE index other than the primary key.
    pub unique_keys: Vec<IndexMeta>,
    /// Non-unique indexes of this table that a foreign key elsewhere refers to, truncated to
    /// the referenced columns. InnoDB lets a foreign key reference any index whose leading
    /// columns match; without these, deleting the last parent row with a value would not
    /// conflict with a concurrent child insert referencing it.
    pub referenced_indexes: Vec<IndexMeta>,
    /// Foreign keys of this table (this table is the child).
    pub foreign_keys: Vec<ForeignKeyMeta>,
}

/// One column of an index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexColumn {
    /// Position of the column in the table (0-based).
    pub position: usize,
    /// Index prefix length (`name(10)`): characters for text, bytes for binary strings.
    pub prefix: Option<u32>,
}

impl IndexColumn {
    pub fn full(position: usize) -> IndexColumn {
        IndexColumn {
            position,
            prefix: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexMeta {
    pub name: String,
    pub columns: Vec<IndexColumn>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeignKeyMeta {
    /// Child column positions, in the order of the parent index's columns.
    pub columns: Vec<usize>,
    pub parent_schema: String,
    pub parent_table: String,
    /// The parent index's name as `information_schema` reports it (`PRIMARY` for the PK).
    pub parent_index: String,
}

/// One row change, with full row images.
#[derive(Clone, Debug, PartialEq)]
pub enum RowChange {
    Insert {
        after: Vec<CellValue>,
    },
    Update {
        before: Vec<CellValue>,
        after: Vec<CellValue>,
    },
    Delete {
        before: Vec<CellValue>,
    },
}

/// The catalog and the captured rows disagree: the write set cannot be keyed safely, so the
/// caller must not submit it (a missing key is a missed conflict).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("row image of {schema}.{table} has {got} columns, the catalog knows {expected}")]
    ImageWidth {
        schema: String,
        table: String,
        expected: usize,
        got: usize,
    },
    #[error("index {index} of {schema}.{table} names column {position}, the table has {width}")]
    ColumnOutOfRange {
        schema: String,
        table: String,
        index: String,
        position: usize,
        width: usize,
    },
}

/// Appends the certification keys of one row change to `out` (unsorted, possibly with
/// duplicates; see [`super::normalize_keys`]).
pub fn row_keys(meta: &TableMeta, change: &RowChange, out: &mut Vec<Key>) -> Result<(), KeyError> {
    meta.validate()?;
    let images: &[&Vec<CellValue>] = match change {
        RowChange::Insert { after } => &[after],
        RowChange::Update { before, after } => &[before, after],
        RowChange::Delete { before } => &[before],
    };
    for image in images {
        if image.len() != meta.columns.len() {
            return Err(KeyError::ImageWidth {
                schema: meta.schema.clone(),
                table: meta.table.clone(),
                expected: meta.columns.len(),
                got: image.len(),
            });
        }
    }

    out.push(Key::reference(table_key(&meta.schema, &meta.table)));
    out.push(Key::reference(schema_key(&meta.schema)));

    match change {
        RowChange::Insert { after } => {
            meta.identity_keys(after, out);
            meta.foreign_key_references(after, out);
        }
        RowChange::Delete { before } => meta.identity_keys(before, out),
        RowChange::Update { before, after } => {
            if let Some(pk) = &meta.primary_key {
                for image in [before, after] {
                    if let Some(h) = meta.index_hash(PRIMARY_INDEX_NAME, pk, image) {
                        out.push(Key::exclusive(h));
                    }
                }
            }
            for index in meta.unique_keys.iter().chain(&meta.referenced_indexes) {
                let old = meta.index_hash(&index.name, &index.columns, before);
                let new = meta.index_hash(&index.name, &index.columns, after);
                if old == new {
                    if let Some(h) = old {
                        out.push(Key::update(h));
                    }
                } else {
                    out.extend(old.into_iter().chain(new).map(Key::exclusive));
                }
            }
            for image in [before, after] {
                if !meta.has_identity(image) {
                    out.push(Key::exclusive(meta.whole_row_hash(image)));
                }
            }
            meta.foreign_key_references(after, out);
        }
    }
    Ok(())
}

impl TableMeta {
    fn validate(&self) -> Result<(), KeyError> {
        let width = self.columns.len();
        let out_of_range = |index: &str, position: usize| KeyError::ColumnOutOfRange {
            schema: self.schema.clone(),
            table: self.table.clone(),
            index: index.to_owned(),
            position,
            width,
        };
        let pk = self.primary_key.iter().map(|cols| {
            (
                PRIMARY_INDEX_NAME,
                cols.iter().map(|c| c.position).collect::<Vec<_>>(),
            )
        });
        let indexes = self
            .unique_keys
            .iter()
            .chain(&self.referenced_indexes)
            .map(|i| {
                (
                    i.name.as_str(),
                    i.columns.iter().map(|c| c.position).collect(),
                )
            });
        let fks = self
            .foreign_keys
            .iter()
            .map(|fk| (fk.parent_index.as_str(), fk.columns.clone()));
        for (name, positions) in pk.chain(indexes).chain(fks) {
            if let Some(&p) = positions.iter().find(|&&p| p >= width) {
                return Err(out_of_range(name, p));
            }
        }
        Ok(())
    }

    /// Insert and delete: every identity of the row is created or destroyed.
    fn identity_keys(&self, image: &[CellValue], out: &mut Vec<Key>) {
        if let Some(pk) = &self.primary_key {
            out.extend(
                self.index_hash(PRIMARY_INDEX_NAME, pk, image)
                    .map(Key::exclusive),
            );
        }
        for index in self.unique_keys.iter().chain(&self.referenced_indexes) {
            out.extend(
                self.index_hash(&index.name, &index.columns, image)
                    .map(Key::exclusive),
            );
        }
        if !self.has_identity(image) {
            out.push(Key::exclusive(self.whole_row_hash(image)));
        }
    }

    /// Whether some PK or NULL-free unique key identifies this row image; if not, only the
    /// whole-row hash does (Galera's `wsrep_certify_nonPK`).
    fn has_identity(&self, image: &[CellValue]) -> bool {
        self.primary_key.is_some()
            || self.unique_keys.iter().any(|u| {
                u.columns
                    .iter()
                    .all(|c| image.get(c.position).is_some_and(|v| !v.is_null()))
            })
    }

    fn foreign_key_references(&self, image: &[CellValue], out: &mut Vec<Key>) {
        for fk in &self.foreign_keys {
            let columns: Vec<IndexColumn> =
                fk.columns.iter().map(|&p| IndexColumn::full(p)).collect();
            if let Some(h) = index_hash(
                &fk.parent_schema,
                &fk.parent_table,
                &fk.parent_index,
                &columns,
                image,
            ) {
                out.push(Key::reference(h));
            }
        }
    }

    fn index_hash(
        &self,
        index: &str,
        columns: &[IndexColumn],
        image: &[CellValue],
    ) -> Option<KeyHash> {
        index_hash(&self.schema, &self.table, index, columns, image)
    }

    fn whole_row_hash(&self, image: &[CellValue]) -> KeyHash {
        let mut h = KeyHasher::new(Domain::WholeRow);
        h.name(&self.schema).name(&self.table);
        for value in image {
            let (tag, bytes) = value.canonical(None);
            h.tagged_part(tag, &bytes);
        }
        h.finish()
    }
}

/// The key of one index entry; `None` when a value is NULL (a NULL never collides in a
/// unique index, and a foreign key with a NULL is not checked) or a position is missing.
fn index_hash(
    schema: &str,
    table: &str,
    index: &str,
    columns: &[IndexColumn],
    image: &[CellValue],
) -> Option<KeyHash> {
    let mut h = KeyHasher::new(Domain::Index);
    h.name(schema).name(table).name(index);
    for column in columns {
        let value = image.get(column.position)?;
        if value.is_null() {
            return None;
        }
        let (tag, bytes) = value.canonical(column.prefix);
        h.tagged_part(tag, &bytes);
    }
    Some(h.finish())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{child_meta, ci, parent_meta};
    use super::super::key::{normalize_keys, KeyKind};
    use super::*;

    fn keys_of(meta: &TableMeta, change: &RowChange) -> Vec<Key> {
        let mut out = Vec::new();
        row_keys(meta, change, &mut out).unwrap();
        normalize_keys(&mut out);
        out
    }

    fn kinds_of(keys: &[Key], kind: KeyKind) -> usize {
        keys.iter().filter(|k| k.kind == kind).count()
    }

    #[test]
    fn insert_takes_pk_and_unique_exclusive_and_fk_references() {
        let parent = keys_of(
            &parent_meta(),
            &RowChange::Insert {
                after: vec![CellValue::Int(1), ci("a"), CellValue::Int(0)],
            },
        );
        // PK + unique exclusive; table + schema reference.
        assert_eq!(kinds_of(&parent, KeyKind::Exclusive), 2);
        assert_eq!(kinds_of(&parent, KeyKind::Reference), 2);

        let child = keys_of(
            &child_meta(),
            &RowChange::Insert {
                after: vec![CellValue::Int(10), CellValue::Int(1), ci("A ")],
            },
        );
        assert_eq!(kinds_of(&child, KeyKind::Exclusive), 1);
        assert_eq!(kinds_of(&child, KeyKind::Reference), 4);
        // The child's references are exactly the parent's PK and unique-key hashes.
        for k in parent.iter().filter(|k| k.kind == KeyKind::Exclusive) {
            assert!(
                child.contains(&Key::reference(k.hash)),
                "{k:?} not referenced"
            );
        }
    }

    #[test]
    fn null_unique_and_null_fk_are_skipped() {
        let parent = keys_of(
            &parent_meta(),
            &RowChange::Insert {
                after: vec![CellValue::Int(1), CellValue::Null, CellValue::Int(0)],
            },
        );
        assert_eq!(kinds_of(&parent, KeyKind::Exclusive), 1);
        let child = keys_of(
            &child_meta(),
            &RowChange::Insert {
                after: vec![CellValue::Int(10), CellValue::Null, CellValue::Null],
            },
        );
        assert_eq!(kinds_of(&child, KeyKind::Reference), 2);
    }

    #[test]
    fn update_with_unchanged_unique_uses_update_kind() {
        let before = vec![CellValue::Int(1), ci("a"), CellValue::Int(0)];
        let after = vec![CellValue::Int(1), ci("a"), CellValue::Int(5)];
        let keys = keys_of(&parent_meta(), &RowChange::Update { before, after });
        assert_eq!(kinds_of(&keys, KeyKind::Exclusive), 1, "PK once: unchanged");
        assert_eq!(kinds_of(&keys, KeyKind::Update), 1);
    }

    #[test]
    fn update_changing_unique_and_pk_takes_both_images_exclusive() {
        let before = vec![CellValue::Int(1), ci("a"), CellValue::Int(0)];
        let after = vec![CellValue::Int(2), ci("b"), CellValue::Int(0)];
        let keys = keys_of(&parent_meta(), &RowChange::Update { before, after });
        assert_eq!(kinds_of(&keys, KeyKind::Exclusive), 4);
        assert_eq!(kinds_of(&keys, KeyKind::Update), 0);
    }

    #[test]
    fn update_references_fk_parents_of_the_after_image_only() {
        let before = vec![CellValue::Int(10), CellValue::Int(1), CellValue::Null];
        let after = vec![CellValue::Int(10), CellValue::Int(2), CellValue::Null];
        let keys = keys_of(&child_meta(), &RowChange::Update { before, after });
        let parent_pk = |id| {
            let mut out = Vec::new();
            row_keys(
                &parent_meta(),
                &RowChange::Delete {
                    before: vec![CellValue::Int(id), CellValue::Null, CellValue::Int(0)],
                },
                &mut out,
            )
            .unwrap();
            out.into_iter()
                .find(|k| k.kind == KeyKind::Exclusive)
                .unwrap()
                .hash
        };
        assert!(keys.contains(&Key::reference(parent_pk(2))));
        assert!(!keys.iter().any(|k| k.hash == parent_pk(1)));
    }

    #[test]
    fn delete_takes_pk_and_unique_exclusive_no_fk_references() {
        let keys = keys_of(
            &child_meta(),
            &RowChange::Delete {
                before: vec![CellValue::Int(10), CellValue::Int(1), ci("a")],
            },
        );
        assert_eq!(kinds_of(&keys, KeyKind::Exclusive), 1);
        assert_eq!(
            kinds_of(&keys, KeyKind::Reference),
            2,
            "table + schema only"
        );
    }

    #[test]
    fn table_without_identity_uses_whole_row_hash() {
        let meta = TableMeta {
            schema: "s".into(),
            table: "nopk".into(),
            columns: vec!["a".into(), "b".into()],
            primary_key: None,
            unique_keys: vec![IndexMeta {
                name: "ub".into(),
                columns: vec![IndexColumn::full(1)],
            }],
            referenced_indexes: vec![],
            foreign_keys: vec![],
        };
        let row = |a, b: CellValue| vec![CellValue::Int(a), b];
        let k1 = keys_of(
            &meta,
            &RowChange::Delete {
                before: row(1, CellValue::Null),
            },
        );
        let k2 = keys_of(
            &meta,
            &RowChange::Delete {
                before: row(2, CellValue::Null),
            },
        );
        let k1_again = keys_of(
            &meta,
            &RowChange::Insert {
                after: row(1, CellValue::Null),
            },
        );
        assert_eq!(kinds_of(&k1, KeyKind::Exclusive), 1);
        assert_ne!(k1, k2);
        assert_eq!(k1, k1_again, "same row image, same whole-row key");
        // A NULL-free unique key identifies the row: no whole-row hash.
        let with_uk = keys_of(
            &meta,
            &RowChange::Insert {
                after: row(1, CellValue::Int(7)),
            },
        );
        assert_eq!(kinds_of(&with_uk, KeyKind::Exclusive), 1);
        let update = keys_of(
            &meta,
            &RowChange::Update {
                before: row(1, CellValue::Null),
                after: row(3, CellValue::Null),
            },
        );
        assert_eq!(
            kinds_of(&update, KeyKind::Exclusive),
            2,
            "before and after rows"
        );
    }

    #[test]
    fn referenced_non_unique_index_is_keyed_for_the_parent() {
        let mut parent = parent_meta();
        parent.referenced_indexes.push(IndexMeta {
            name: "v_idx".into(),
            columns: vec![IndexColumn::full(2)],
        });
        let child = TableMeta {
            foreign_keys: vec![ForeignKeyMeta {
                columns: vec![1],
                parent_schema: "shop".into(),
                parent_table: "parent".into(),
                parent_index: "v_idx".into(),
            }],
            ..child_meta()
        };
        let del = keys_of(
            &parent,
            &RowChange::Delete {
                before: vec![CellValue::Int(1), CellValue::Null, CellValue::Int(77)],
            },
        );
        let ins = keys_of(
            &child,
            &RowChange::Insert {
                after: vec![CellValue::Int(10), CellValue::Int(77), CellValue::Null],
            },
        );
        let shared: Vec<_> = ins
            .iter()
            .filter(|c| c.kind == KeyKind::Reference && del.contains(&Key::exclusive(c.hash)))
            .collect();
        assert_eq!(shared.len(), 1);
    }

    #[test]
    fn unsigned_and_signed_parent_values_hash_equal() {
        // The parent id column is INT UNSIGNED, the child's parent_id INT: both are Int(1).
        let parent = keys_of(
            &parent_meta(),
            &RowChange::Delete {
                before: vec![
                    CellValue::Int(u32::MAX as i128),
                    CellValue::Null,
                    CellValue::Int(0),
                ],
            },
        );
        let child = keys_of(
            &child_meta(),
            &RowChange::Insert {
                after: vec![
                    CellValue::Int(1),
                    CellValue::Int(4_294_967_295),
                    CellValue::Null,
                ],
            },
        );
        assert!(parent
            .iter()
            .any(|p| p.kind == KeyKind::Exclusive && child.contains(&Key::reference(p.hash))));
    }

    #[test]
    fn row_key_hash_is_frozen() {
        // Pins the value encoding (tags, canonical forms): a change needs a new format version.
        let keys = keys_of(
            &parent_meta(),
            &RowChange::Insert {
                after: vec![CellValue::Int(1), ci("Ab "), CellValue::Int(0)],
            },
        );
        let exclusive: Vec<String> = keys
            .iter()
            .filter(|k| k.kind == KeyKind::Exclusive)
            .map(|k| k.hash.to_string())
            .collect();
        assert_eq!(exclusive, GOLDEN_PARENT_KEYS);
    }

    const GOLDEN_PARENT_KEYS: [&str; 2] = [
        "23620243ad7866c44919f99302139e03",
        "5bf9b5d2e2ce85ad6d7653c436ba2ee2",
    ];

    #[test]
    fn mismatched_image_or_metadata_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        let err = row_keys(
            &parent_meta(),
            &RowChange::Insert {
                after: vec![CellValue::Int(1)],
            },
            &mut out,
        );
        assert!(matches!(
            err,
            Err(KeyError::ImageWidth {
                expected: 3,
                got: 1,
                ..
            })
        ));
        let mut bad = parent_meta();
        bad.unique_keys[0].columns[0].position = 9;
        let err = row_keys(
            &bad,
            &RowChange::Insert {
                after: vec![CellValue::Int(1), ci("a"), CellValue::Int(0)],
            },
            &mut out,
        );
        assert!(matches!(
            err,
            Err(KeyError::ColumnOutOfRange { position: 9, .. })
        ));
        assert!(out.is_empty(), "no partial keys on error");
    }
}
