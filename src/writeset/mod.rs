//! The write set: what one transaction or TOI puts into the Raft log, and its keys.
//!
//! Owns the `WriteSet` type, key derivation from row images (`rows`, `canonical`, `key`) and
//! the versioned binary encoding (`codec`). Pure data and pure functions: no I/O, no catalog
//! lookups, no knowledge of how row events are captured or applied (the row events are
//! opaque bytes here) nor of how keys are certified (that is `crate::certification`).

mod canonical;
mod codec;
#[cfg(test)]
pub(crate) mod fixtures;
mod key;
mod rows;

pub use canonical::{CellValue, Collation};
pub use codec::{CodecError, FORMAT_VERSION, MAX_ENCODED_LEN};
pub use key::{normalize_keys, schema_key, table_key, Key, KeyHash, KeyKind};
pub use rows::{
    row_keys, ForeignKeyMeta, IndexColumn, IndexMeta, KeyError, RowChange, TableMeta,
    PRIMARY_INDEX_NAME,
};

use crate::ids::{NodeId, Seqno, Xid};
use serde::{Deserialize, Serialize};

/// One entry of the replicated history (DESIGN §2): a transaction's row events or a TOI
/// statement, with the keys certification compares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteSet {
    pub origin: NodeId,
    pub xid: Xid,
    /// The origin's applied seqno read before the transaction's snapshot was opened.
    pub last_seen: Seqno,
    pub flags: WriteSetFlags,
    /// Certification keys; [`normalize_keys`] them before submitting so that the encoding
    /// does not depend on capture order.
    pub keys: Vec<Key>,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// The captured ROW events, one payload per source statement (split at STMT_END_F), each
    /// replayed with one `BINLOG` statement. Opaque here: the capture layer fills them and the
    /// applier consumes them.
    Rows(Vec<Vec<u8>>),
    /// A DDL statement run by every node at its seqno, alone.
    Toi(TOICommand),
}

/// A TOI statement with the session context it needs to mean the same thing on every node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TOICommand {
    /// The statement exactly as the client sent it, in `character_set_client`: bytes, not a
    /// `String`, because a DDL may carry literals that are not UTF-8.
    pub statement: Vec<u8>,
    pub context: SessionContext,
}

/// The session variables a replayed statement depends on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionContext {
    /// `DATABASE()`; `None` when no schema is selected.
    pub current_schema: Option<String>,
    pub sql_mode: String,
    pub character_set_client: String,
    pub character_set_connection: String,
    /// `None` when the session set it to NULL.
    pub character_set_results: Option<String>,
    pub collation_connection: String,
    pub foreign_key_checks: bool,
    pub unique_checks: bool,
    pub time_zone: String,
}

/// Write-set flags. Unknown bits are rejected when decoding, so a flag added later needs a
/// new format version rather than being silently ignored by an older node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteSetFlags(u32);

impl WriteSetFlags {
    /// Must not be applied in parallel with neighbouring write sets even when their keys are
    /// disjoint (Galera's `F_PA_UNSAFE`): rows of tables without a primary key, cascading
    /// foreign keys. Only matters once parallel apply exists (DESIGN §7).
    pub const PA_UNSAFE: WriteSetFlags = WriteSetFlags(1);

    /// The transaction also read-for-update rows that it left unchanged (an UPDATE whose rows
    /// matched but did not change writes no row event, so those rows have no keys). The write
    /// set then conflicts with every write set committed after its last_seen: stricter than
    /// needed, never a lost update.
    pub const UNKNOWN_ROWS: WriteSetFlags = WriteSetFlags(2);

    const KNOWN: u32 = Self::PA_UNSAFE.0 | Self::UNKNOWN_ROWS.0;

    pub const fn empty() -> WriteSetFlags {
        WriteSetFlags(0)
    }

    pub fn contains(self, other: WriteSetFlags) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn insert(&mut self, other: WriteSetFlags) {
        self.0 |= other.0;
    }

    pub fn bits(self) -> u32 {
        self.0
    }

    fn is_known(self) -> bool {
        self.0 & !Self::KNOWN == 0
    }
}

impl WriteSet {
    pub fn is_toi(&self) -> bool {
        matches!(self.body, Body::Toi(_))
    }

    /// The versioned binary form stored in the Raft log.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(self)
    }

    /// Decodes [`WriteSet::encode`]'s output; any other input is a typed error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<WriteSet, CodecError> {
        codec::decode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_contain_and_insert() {
        let mut f = WriteSetFlags::empty();
        assert!(!f.contains(WriteSetFlags::PA_UNSAFE));
        f.insert(WriteSetFlags::PA_UNSAFE);
        assert!(f.contains(WriteSetFlags::PA_UNSAFE));
        assert_eq!(f.bits(), 1);
        assert!(f.is_known());
        f.insert(WriteSetFlags::UNKNOWN_ROWS);
        assert!(f.contains(WriteSetFlags::UNKNOWN_ROWS));
        assert!(f.is_known());
        assert!(!WriteSetFlags(4).is_known());
    }
}
