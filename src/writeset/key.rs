//! Certification keys: the 128-bit key hash, the key kinds and their conflict matrix.
//!
//! Owns the hash encoding (domain byte, then length-prefixed parts, hashed with xxh3-128) and
//! the rule for merging duplicate keys. Must not know about tables or row images: that is
//! `rows`, which builds the parts this module hashes.
//!
//! ## Key kinds and the conflict matrix
//!
//! Galera 4 (`certification.cpp`, RESEARCH §1.3) has four kinds; certus uses three of them,
//! with the same conflict cells:
//!
//! | committed ↓ / incoming → | Exclusive | Update   | Reference |
//! |--------------------------|-----------|----------|-----------|
//! | Exclusive                | conflict  | conflict | conflict  |
//! | Update                   | conflict  | conflict | —         |
//! | Reference                | conflict  | —        | —         |
//!
//! The matrix is symmetric, so the order in which two write sets reach certification never
//! changes whether they conflict. Galera's SHARED kind is not used: certus's table and schema
//! keys are Reference keys (DESIGN §5), which conflict with a TOI's Exclusive table key exactly
//! as SHARED would, and Reference never conflicts with Reference.
//!
//! Update is the kind of a unique key whose value an UPDATE leaves unchanged: a child row that
//! references that value stays valid, so it must not conflict with the child's Reference key,
//! but two writers of the same value still conflict. Nothing is weaker than that (DESIGN §5).

use serde::{Deserialize, Serialize};
use std::fmt;
use xxhash_rust::xxh3::xxh3_128;

/// The 128-bit hash that identifies one certification resource (a row identity, a table or a
/// schema). Stored as big-endian bytes so that the encoding does not depend on the platform.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KeyHash(pub [u8; 16]);

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({self})")
    }
}

impl fmt::Display for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// How a write set touches a key; see the module header for the conflict matrix.
///
/// The declaration order is the strength order (`Reference < Update < Exclusive`), which
/// [`normalize_keys`] relies on to keep the strongest kind of a duplicated key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum KeyKind {
    /// Read but not modified: a foreign key's parent row, a table or schema a row lives in.
    Reference,
    /// Modified without changing the value the key stands for (an unchanged unique key).
    Update,
    /// Created, deleted or changed: a row identity, a changed unique key, a TOI's table.
    Exclusive,
}

impl KeyKind {
    /// Whether a committed key of kind `self` and an incoming key of kind `incoming` on the
    /// same hash conflict. Symmetric by construction.
    pub fn conflicts_with(self, incoming: KeyKind) -> bool {
        use KeyKind::*;
        match (self, incoming) {
            (Exclusive, _) | (_, Exclusive) => true,
            (Update, Update) => true,
            (Update, Reference) | (Reference, Update) | (Reference, Reference) => false,
        }
    }
}

/// One certification key of a write set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Key {
    pub hash: KeyHash,
    pub kind: KeyKind,
}

impl Key {
    pub fn exclusive(hash: KeyHash) -> Key {
        Key {
            hash,
            kind: KeyKind::Exclusive,
        }
    }

    pub fn update(hash: KeyHash) -> Key {
        Key {
            hash,
            kind: KeyKind::Update,
        }
    }

    pub fn reference(hash: KeyHash) -> Key {
        Key {
            hash,
            kind: KeyKind::Reference,
        }
    }
}

/// Sorts keys by hash and keeps one key per hash, with the strongest kind. A write set that
/// both references and deletes a row must certify as a delete, and a deterministic order
/// keeps the encoded write set independent of the order rows were captured in.
pub fn normalize_keys(keys: &mut Vec<Key>) {
    // Strongest kind first within a hash, so dedup (which keeps the first) keeps it.
    keys.sort_unstable_by(|a, b| a.hash.cmp(&b.hash).then(b.kind.cmp(&a.kind)));
    keys.dedup_by(|later, first| later.hash == first.hash);
}

/// The domains keep the hashes of different resource types apart even when their parts
/// happen to encode the same bytes.
#[derive(Clone, Copy)]
#[repr(u8)]
pub(crate) enum Domain {
    Schema = 1,
    Table = 2,
    Index = 3,
    WholeRow = 4,
}

/// Builds the unambiguous byte string a key hash is computed over: a version tag, the
/// domain, then every part as a u32 little-endian length followed by its bytes, so that
/// ("ab", "c") and ("a", "bc") differ.
pub(crate) struct KeyHasher {
    buf: Vec<u8>,
}

/// Bumping this changes every key hash; it must only change together with the write-set
/// format version, because nodes must agree on hashes during a rolling upgrade.
const KEY_ENCODING_TAG: &[u8] = b"certus-key-v1";

impl KeyHasher {
    pub(crate) fn new(domain: Domain) -> KeyHasher {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(KEY_ENCODING_TAG);
        buf.push(domain as u8);
        KeyHasher { buf }
    }

    /// A schema, table or index name. MariaDB compares index names case-insensitively and,
    /// with `lower_case_table_names`, table names too; folding ASCII case here can only make
    /// two distinct tables share keys (an extra abort), never split one table's keys.
    pub(crate) fn name(&mut self, name: &str) -> &mut Self {
        let folded = name.to_ascii_lowercase();
        self.part(folded.as_bytes())
    }

    pub(crate) fn part(&mut self, bytes: &[u8]) -> &mut Self {
        // Names and values longer than 4 GiB do not exist in MariaDB; saturating keeps the
        // encoding total instead of panicking, and the bytes still follow.
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(bytes);
        self
    }

    pub(crate) fn tagged_part(&mut self, tag: u8, bytes: &[u8]) -> &mut Self {
        self.buf.push(tag);
        self.part(bytes)
    }

    pub(crate) fn finish(&self) -> KeyHash {
        KeyHash(xxh3_128(&self.buf).to_be_bytes())
    }
}

/// The key every row of `schema`.`table` references and every TOI on that table takes
/// exclusively, so that write sets captured under an old table definition abort.
pub fn table_key(schema: &str, table: &str) -> KeyHash {
    KeyHasher::new(Domain::Table)
        .name(schema)
        .name(table)
        .finish()
}

/// The key every row in `schema` references, so that `DROP DATABASE` (which takes it
/// exclusively) conflicts with concurrent writes to any table of the schema.
pub fn schema_key(schema: &str) -> KeyHash {
    KeyHasher::new(Domain::Schema).name(schema).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_matrix_matches_galera_cells() {
        for (committed, incoming, conflict) in crate::writeset::fixtures::GALERA_CONFLICT_CELLS {
            assert_eq!(
                committed.conflicts_with(incoming),
                conflict,
                "{committed:?} vs {incoming:?}"
            );
        }
    }

    #[test]
    fn length_prefix_keeps_part_boundaries() {
        assert_ne!(table_key("ab", "c"), table_key("a", "bc"));
        assert_ne!(table_key("", "abc"), table_key("abc", ""));
    }

    #[test]
    fn domains_keep_schema_and_table_keys_apart() {
        let mut h = KeyHasher::new(Domain::Table);
        h.name("db");
        // Same parts as schema_key("db") but in the table domain.
        assert_ne!(h.finish(), schema_key("db"));
    }

    #[test]
    fn names_fold_ascii_case() {
        assert_eq!(table_key("Shop", "Orders"), table_key("shop", "orders"));
        assert_ne!(table_key("shop", "orders"), table_key("shop", "order"));
    }

    #[test]
    fn table_key_hash_is_frozen() {
        // A fixed value: if this changes, every node in a mixed-version cluster would
        // disagree on keys, so the change needs a new write-set format version.
        assert_eq!(table_key("test", "t1").to_string(), GOLDEN_TABLE_KEY);
    }

    const GOLDEN_TABLE_KEY: &str = "a6a41de6a0266a0ac45c6870b7bd5557";

    #[test]
    fn normalize_keeps_strongest_kind_and_sorts() {
        let a = KeyHash([1; 16]);
        let b = KeyHash([2; 16]);
        let mut keys = vec![
            Key::reference(b),
            Key::reference(a),
            Key::exclusive(a),
            Key::update(a),
            Key::update(b),
        ];
        normalize_keys(&mut keys);
        assert_eq!(keys, vec![Key::exclusive(a), Key::update(b)]);
    }
}
