//! The openraft type configuration and the few data types that cross the wire or the disk.
//!
//! Owns: `TypeConfig`, the Raft entry payload (`Batch`), proposal positions and the bincode
//! configuration. Must not touch: what a proposal means; proposals are opaque bytes here.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One Raft entry's application payload: the proposals batched into it, in order.
///
/// `origin` and `batch_id` name the batch so that the proposing node can tell whether an entry
/// it submitted reached its own log before a failure; that decides between a definite failure
/// and an indeterminate outcome (see `batcher`). They never influence the state machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Batch {
    pub(crate) origin: u64,
    pub(crate) batch_id: u64,
    pub(crate) proposals: Vec<Vec<u8>>,
}

impl fmt::Display for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "batch {}/{} ({} proposals)",
            self.origin,
            self.batch_id,
            self.proposals.len()
        )
    }
}

openraft::declare_raft_types!(
    /// certus's Raft types: `u64` node ids (the numeric value of `NodeId`), `BasicNode` carrying
    /// the peer address, snapshots as files (streamed in chunks, never held in memory).
    pub(crate) TypeConfig:
        D = Batch,
        R = (),
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

pub(crate) type RaftNode = openraft::Raft<TypeConfig>;
pub(crate) type Entry = openraft::Entry<TypeConfig>;
pub(crate) type LogId = openraft::LogId<u64>;
pub(crate) type Vote = openraft::Vote<u64>;
pub(crate) type StorageError = openraft::StorageError<u64>;

/// Where a proposal landed: the Raft log index of the entry that carries it and its position in
/// that entry's batch. Every node's `Fsm::apply_batch(index, proposals)` sees it at
/// `proposals[offset]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position {
    pub index: u64,
    pub offset: u32,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.index, self.offset)
    }
}

/// The one bincode configuration used for every disk record and wire frame. `standard()` is
/// varint-encoded; changing it changes the on-disk format (see the golden test in `wal`).
pub(crate) fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, bincode::error::EncodeError> {
    bincode::serde::encode_to_vec(value, bincode_config())
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, bincode::error::DecodeError> {
    let (value, used): (T, usize) = bincode::serde::decode_from_slice(bytes, bincode_config())?;
    if used != bytes.len() {
        return Err(bincode::error::DecodeError::OtherString(format!(
            "{} trailing bytes",
            bytes.len() - used
        )));
    }
    Ok(value)
}
