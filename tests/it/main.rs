//! certus's integration tests: one binary, real MariaDB servers, nodes in-process on port 0.

mod client_edge;
mod failover;
mod galera;
mod harness;
mod inconsistent;
mod membership;
mod multi_statement;
mod pipeline;
mod recovery;
mod replication;
mod sst;
mod status;
mod strict_programs;
