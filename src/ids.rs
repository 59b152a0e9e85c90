//! Newtypes for identifiers and positions. `Seqno`, `NodeId`, `SessionId` and `Xid` never mix.
//! `-1` (Galera's "undefined seqno") exists only in the grastate and status encoders.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Galera's seqno: dense, +1 for every write set or TOI in log order, assigned when the state
/// machine applies the Raft entry that carries it. `Seqno(0)` means "nothing yet".
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Seqno(pub u64);

impl Seqno {
    pub const ZERO: Seqno = Seqno(0);

    pub fn next(self) -> Seqno {
        Seqno(self.0 + 1)
    }
}

impl fmt::Display for Seqno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A cluster member, as numbered in the config (1-based, also the Raft node id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The connection id a client sees in the greeting, in `CONNECTION_ID()` and in `KILL <id>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionId(pub u32);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An XA transaction id: `<node prefix>-<random>`, unguessable, unique across the cluster.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Xid(pub String);

impl fmt::Display for Xid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
