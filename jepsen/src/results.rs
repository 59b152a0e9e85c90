//! The run summary: `results.json` for machines and `results.md` for people.
//!
//! Owns the serialised shape of a run's verdicts and their rendering. It must not recompute
//! verdicts: it only reports what the checkers returned, next to op counts from the history.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::checker::{Anomaly, AnomalyKind, CheckResult};
use crate::history::History;

#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("serialising results: {0}")]
    Json(#[from] serde_json::Error),
}

/// One workload's row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadSummary {
    pub workload: String,
    /// Client invocations.
    pub ops: usize,
    pub ok: usize,
    pub fail: usize,
    /// Indeterminate outcomes, including invocations that never completed.
    pub info: usize,
    pub valid: bool,
    pub anomaly_counts: BTreeMap<AnomalyKind, usize>,
    /// The checker's examples, capped per kind.
    pub anomalies: Vec<Anomaly>,
}

impl WorkloadSummary {
    pub fn new(workload: impl Into<String>, history: &History, result: &CheckResult) -> Self {
        let counts = history.counts();
        WorkloadSummary {
            workload: workload.into(),
            ops: counts.ops,
            ok: counts.ok,
            fail: counts.fail,
            info: counts.info,
            valid: result.valid,
            anomaly_counts: result.anomaly_counts.clone(),
            anomalies: result.anomalies.clone(),
        }
    }
}

/// A whole run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Every workload valid. A run with no workloads judged nothing and is not valid.
    pub valid: bool,
    pub workloads: Vec<WorkloadSummary>,
}

impl Summary {
    pub fn new(workloads: Vec<WorkloadSummary>) -> Summary {
        Summary {
            valid: !workloads.is_empty() && workloads.iter().all(|w| w.valid),
            workloads,
        }
    }

    pub fn to_json(&self) -> Result<String, ResultsError> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        md.push_str("# certus Jepsen results\n\n");
        let verdict = if self.valid { "valid" } else { "INVALID" };
        let _ = writeln!(md, "Overall: **{verdict}**\n");
        md.push_str("| workload | ops | ok | fail | info | valid | anomalies |\n");
        md.push_str("|---|---:|---:|---:|---:|---|---|\n");
        for w in &self.workloads {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} |",
                table_cell(&w.workload),
                w.ops,
                w.ok,
                w.fail,
                w.info,
                if w.valid { "yes" } else { "**no**" },
                anomaly_list(&w.anomaly_counts)
            );
        }
        for w in self.workloads.iter().filter(|w| !w.anomalies.is_empty()) {
            let _ = writeln!(md, "\n## {}", table_cell(&w.workload));
            for (kind, count) in &w.anomaly_counts {
                let shown = w.anomalies.iter().filter(|a| a.kind == *kind).count();
                let _ = writeln!(md, "\n### {kind} ({count} found, {shown} shown)\n");
                for anomaly in w.anomalies.iter().filter(|a| a.kind == *kind) {
                    // A stray fence in a description must not end the block early.
                    let text = anomaly.description.replace("```", "'''");
                    let _ = writeln!(md, "```text\n{text}\n```");
                }
            }
        }
        md
    }

    /// Writes `results.json` and `results.md` into `dir`, which must exist.
    pub fn write_to(&self, dir: &Path) -> Result<(), ResultsError> {
        let write = |name: &str, contents: String| {
            let path = dir.join(name);
            std::fs::write(&path, contents).map_err(|source| ResultsError::Io {
                path: path.display().to_string(),
                source,
            })
        };
        write("results.json", self.to_json()?)?;
        write("results.md", self.to_markdown())
    }
}

fn anomaly_list(counts: &BTreeMap<AnomalyKind, usize>) -> String {
    if counts.is_empty() {
        return "none".to_owned();
    }
    counts
        .iter()
        .map(|(kind, count)| format!("{kind} ×{count}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn table_cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Op, Process, Value, F};

    fn sample() -> Summary {
        let mut h = History::new();
        h.push(Op::invoke(Process::Client(0), F::Add, Value::Int(1)));
        h.push(Op::ok(Process::Client(0), F::Add, Value::Int(1)));
        h.push(Op::invoke(Process::Client(1), F::Add, Value::Int(2)));
        let mut counts = BTreeMap::new();
        counts.insert(AnomalyKind::LostWrite, 2);
        let bad = CheckResult {
            valid: false,
            anomalies: vec![Anomaly {
                kind: AnomalyKind::LostWrite,
                description: "element 1 lost".into(),
            }],
            anomaly_counts: counts,
        };
        let good = CheckResult {
            valid: true,
            ..CheckResult::default()
        };
        Summary::new(vec![
            WorkloadSummary::new("set", &h, &bad),
            WorkloadSummary::new("list|append", &h, &good),
        ])
    }

    #[test]
    fn markdown_table_rows() {
        let md = sample().to_markdown();
        assert!(md.contains("Overall: **INVALID**"));
        assert!(md.contains("| set | 2 | 1 | 0 | 1 | **no** | lost-write ×2 |"));
        assert!(md.contains("| list\\|append | 2 | 1 | 0 | 1 | yes | none |"));
        assert!(md.contains("### lost-write (2 found, 1 shown)"));
        assert!(md.contains("```text\nelement 1 lost\n```"));
    }

    #[test]
    fn json_round_trips_with_anomaly_names() {
        let summary = sample();
        let json = summary.to_json().unwrap();
        assert!(json.contains("\"lost-write\": 2"));
        assert!(json.contains("\"kind\": \"lost-write\""));
        let back: Summary = serde_json::from_str(&json).unwrap();
        assert_eq!(back, summary);
    }

    #[test]
    fn empty_run_is_not_valid() {
        assert!(!Summary::new(Vec::new()).valid);
    }

    #[test]
    fn write_to_creates_both_files() {
        let dir =
            std::env::temp_dir().join(format!("certus-jepsen-results-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        sample().write_to(&dir).unwrap();
        let json = std::fs::read_to_string(dir.join("results.json")).unwrap();
        let md = std::fs::read_to_string(dir.join("results.md")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(json.contains("\"valid\": false"));
        assert!(md.starts_with("# certus Jepsen results"));
    }
}
