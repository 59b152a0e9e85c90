//! The replication layer's errors, and the one place a failure is classified.
//!
//! Owns: `ProposeError` and its definite / retryable / indeterminate classification, and the
//! start-up errors. Must not touch: how an error is shown to a MySQL client (the frontend does
//! that, from `FailureClass`).

use serde::{Deserialize, Serialize};

use super::log_store::LogStoreError;
use super::state_machine::SnapshotFileError;

/// How a caller must treat a failed proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureClass {
    /// The proposal is not and never will be in the log. Do not retry.
    Definite,
    /// The proposal is not and never will be in the log; the same proposal may be submitted
    /// again (typically after a leader election).
    Retryable,
    /// The proposal may or may not be committed. The client must not be told either way.
    Indeterminate,
}

/// Why `Replication::propose` failed. Serializable because the leader returns it to a follower
/// that forwarded the proposal.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ProposeError {
    /// No leader was reachable before the propose timeout; nothing was appended.
    #[error("no reachable Raft leader (not Primary)")]
    NoLeader,
    /// The node that received a forwarded proposal is not the leader; nothing was appended.
    #[error("node {node} is not the Raft leader")]
    NotLeader { node: u64 },
    /// Refused before submission (too large for one entry).
    #[error("proposal rejected: {0}")]
    Rejected(String),
    /// The node is shutting down and the proposal was never submitted.
    #[error("replication is shutting down")]
    ShuttingDown,
    /// The proposal may have been appended, and its fate is unknown (leader lost, timeout,
    /// connection to the leader lost after sending).
    #[error("outcome unknown: {0}")]
    Indeterminate(String),
}

impl ProposeError {
    pub fn class(&self) -> FailureClass {
        match self {
            ProposeError::NoLeader => FailureClass::Retryable,
            ProposeError::NotLeader { .. } => FailureClass::Retryable,
            ProposeError::Rejected(_) => FailureClass::Definite,
            ProposeError::ShuttingDown => FailureClass::Definite,
            ProposeError::Indeterminate(_) => FailureClass::Indeterminate,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ReadIndexError {
    #[error("no reachable Raft leader (not Primary)")]
    NoLeader,
    #[error("read index failed: {0}")]
    Failed(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("node {0} is not in the member list")]
    NotAMember(u64),
    #[error("cluster secret must be at least 16 bytes")]
    WeakSecret,
    #[error("{0}")]
    Timing(String),
    #[error("batch limits must be at least 1")]
    BatchLimits,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid replication config: {0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Log(#[from] LogStoreError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotFileError),
    #[error("raft: {0}")]
    Raft(String),
}
