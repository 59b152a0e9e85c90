//! certus-jepsen: the judging half of certus's Jepsen-style safety suite.
//!
//! A runner (not here yet) starts a cluster, drives clients and nemeses, and records every
//! operation into a [`history::History`]. This crate then:
//!
//! 1. pairs invocations with completions per process ([`history`]), treating an unknown outcome
//!    as `info`, never `fail`;
//! 2. writes the history as Jepsen EDN ([`edn`]) so Elle can re-check it elsewhere;
//! 3. judges it with one checker per workload ([`checker`]): `bank`, `list_append` (Elle-style
//!    dependency cycles), `counter` and `set`;
//! 4. summarises verdicts into `results.json` and `results.md` ([`results`]).
//!
//! Everything here is pure: no I/O except writing the results and EDN the caller asks for, no
//! clock, no randomness. It must not know how a cluster is started or faulted.

pub mod checker;
pub mod edn;
pub mod history;
pub mod results;
