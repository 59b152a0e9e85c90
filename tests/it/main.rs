//! certus's integration tests: one binary, real MariaDB servers, nodes in-process on port 0.

mod client_edge;
mod harness;
mod replication;
mod sst;
mod status;
