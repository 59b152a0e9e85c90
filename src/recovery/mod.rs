//! Offline operations on a node's data dir: for now, Galera's `grastate.dat`.
//!
//! Owns the on-disk state files a node reads before it joins. Must not touch the backend, the
//! Raft log or the network.

pub mod grastate;
