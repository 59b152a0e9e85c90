//! certus-jepsen: certus's Jepsen-style safety suite.
//!
//! The judging half is pure:
//!
//! 1. pairs invocations with completions per process ([`history`]), treating an unknown outcome
//!    as `info`, never `fail`;
//! 2. writes the history as Jepsen EDN ([`edn`]) so Elle can re-check it elsewhere;
//! 3. judges it with one checker per workload ([`checker`]): `bank`, `list_append` (Elle-style
//!    dependency cycles), `counter` and `set`;
//! 4. summarises verdicts into `results.json` and `results.md` ([`results`]).
//!
//! Those modules do no I/O except writing the results and EDN the caller asks for, read no
//! clock and draw no random numbers; they must not know how a cluster is started or faulted.
//!
//! The acting half is [`runner`]: it starts `certus` node processes (or uses existing MySQL
//! endpoints), drives the workloads, injects faults through a seeded nemesis and a partition
//! relay, checks that the backends converge, and feeds the histories to the checkers.

pub mod checker;
pub mod edn;
pub mod history;
pub mod results;
pub mod runner;
