//! Checker validation: hand-built anomalous histories must be caught under the right name,
//! and valid ones (with indeterminate ops and overlapping transactions) must pass.
//! One integration-test binary, one module per workload, plus `ci_run`: the CI-sized Jepsen
//! run against a real certus cluster.

mod bank;
mod ci_run;
mod common;
mod counter;
mod list_append;
mod scale;
mod set;
