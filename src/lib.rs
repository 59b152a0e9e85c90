//! certus: a Galera-style synchronous multi-master replication proxy for MariaDB.
//!
//! The write path, as DESIGN.md describes it (the parts marked † are being built):
//!
//! 1. `frontend` accepts a MySQL client, authenticates it against the backend's own accounts and
//!    relays its statements to `backend`, byte for byte, as the client's own account.
//! 2. † A write transaction runs inside `XA START`; at COMMIT the session prepares it, and
//!    `capture` takes its row events from the backend's binlog, then rolls the XA back.
//! 3. † `writeset` turns the row images into certification keys using `catalog`'s schema facts.
//! 4. † `replication` orders the write set through Raft (batched, forwarded to the leader).
//! 5. † `certification` decides Commit or Abort identically on every node, in log order.
//! 6. † `apply` replays committed row events on every backend, the origin included, with the
//!    applied seqno in the same transaction.
//! 7. † The origin answers the client: OK after its own backend applied, 1213 on Abort.
//!
//! `node` wires the pieces; `config` validates settings; `protocol` holds wire-format pieces
//! shared by both edges.

pub mod certification;
pub mod config;
pub mod devcluster;
pub mod http;
pub mod ids;
pub mod node;
pub mod recovery;
pub mod statement;
pub mod writeset;

pub mod apply;
pub mod capture;

pub mod replication;

pub(crate) mod backend;
pub(crate) mod catalog;
pub(crate) mod frontend;
pub(crate) mod protocol;
#[cfg(test)]
mod test_rng;
