//! `/metrics`: one `NodeStatus` snapshot in the OpenMetrics text format that Prometheus
//! scrapes. A fresh registry of constant metrics is built per scrape from the snapshot instead
//! of keeping live counters here, so that `/metrics`, `/status`, clustercheck and the SQL
//! `wsrep_%` rows can never disagree (they all read the same snapshot type).
//!
//! It owns metric names, types and help texts. It must not compute state.

use std::borrow::Cow;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::node::status::NodeStatus;

/// The content type of what [`encode_status`] produces.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every numeric field of `status` as a `certus_` metric labelled with the node name.
pub(crate) fn encode_status(status: &NodeStatus) -> Result<String, std::fmt::Error> {
    let node_label = (Cow::Borrowed("node"), Cow::Owned(status.node_name.clone()));
    let mut registry = Registry::with_prefix_and_labels("certus", std::iter::once(node_label));

    let flag = |b: bool| ConstGauge::new(i64::from(b));
    registry.register(
        "local_state",
        "Galera local state number (wsrep_local_state): 0 Initialized, 1 Joining, 2 Donor/Desynced, 3 Joined, 4 Synced",
        ConstGauge::new(i64::from(status.local_state.number())),
    );
    registry.register(
        "primary",
        "1 when in the primary component (a Raft leader with a quorum is known)",
        flag(status.primary),
    );
    registry.register(
        "backend_up",
        "1 when the MariaDB backend answers",
        flag(status.backend_up),
    );
    registry.register(
        "ready",
        "1 when the node serves clients (wsrep_ready)",
        flag(status.ready),
    );
    registry.register(
        "inconsistent",
        "1 when the node stopped applying after a failed apply",
        flag(status.inconsistent.is_some()),
    );
    registry.register("node_id", "This node's id", ConstGauge::new(status.node_id));
    registry.register(
        "cluster_size",
        "Members of the cluster (wsrep_cluster_size)",
        ConstGauge::new(status.cluster_size),
    );
    registry.register(
        "cluster_conf_id",
        "Configuration id: Raft term plus membership log index (wsrep_cluster_conf_id)",
        ConstGauge::new(status.cluster_conf_id),
    );
    registry.register(
        "local_index",
        "0-based index of this node among the members (wsrep_local_index)",
        ConstGauge::new(status.local_index),
    );
    // Omitted rather than given a sentinel when no leader is known: `certus_primary` already
    // says so, and a fake id would look like a real node.
    if let Some(leader) = status.leader {
        registry.register(
            "leader",
            "Node id of the current Raft leader",
            ConstGauge::new(leader),
        );
    }
    registry.register(
        "last_committed",
        "Highest seqno this backend reflects (wsrep_last_committed)",
        ConstGauge::new(status.last_committed),
    );
    registry.register(
        "recv_queue",
        "Write sets ordered but not yet applied here (wsrep_local_recv_queue)",
        ConstGauge::new(status.recv_queue),
    );
    registry.register(
        "flow_control_paused",
        "Fraction of time writers were paused by flow control (wsrep_flow_control_paused)",
        ConstGauge::new(status.flow_control_paused),
    );
    registry.register_with_unit(
        "flow_control_paused",
        "Time writers were paused by flow control",
        Unit::Seconds,
        ConstCounter::new(status.flow_control_paused_ns as f64 / 1e9),
    );
    registry.register(
        "flow_control_active",
        "1 while writers are paused by flow control (wsrep_flow_control_active)",
        ConstGauge::new(i64::from(status.flow_control_active)),
    );
    let counters = [
        (
            "flow_control_sent",
            "Times this node asked the cluster to pause (wsrep_flow_control_sent)",
            status.flow_control_sent,
        ),
        (
            "flow_control_recv",
            "Times this node saw a flow-control pause start (wsrep_flow_control_recv)",
            status.flow_control_recv,
        ),
        (
            "local_commits",
            "Local transactions committed (wsrep_local_commits)",
            status.local_commits,
        ),
        (
            "local_cert_failures",
            "Local transactions that failed certification (wsrep_local_cert_failures)",
            status.local_cert_failures,
        ),
        (
            "local_bf_aborts",
            "Local transactions aborted by an applier (wsrep_local_bf_aborts)",
            status.local_bf_aborts,
        ),
        (
            "local_replays",
            "Local transactions replayed (wsrep_local_replays)",
            status.local_replays,
        ),
        (
            "replicated",
            "Write sets this node replicated (wsrep_replicated)",
            status.replicated,
        ),
        (
            "received",
            "Write sets this node received (wsrep_received)",
            status.received,
        ),
    ];
    for (name, help, value) in counters {
        registry.register(name, help, ConstCounter::new(value));
    }
    registry.register(
        "node",
        "Textual node state",
        Info::new(vec![
            (
                "local_state_comment".to_string(),
                status.local_state.comment().to_string(),
            ),
            (
                "cluster_state_uuid".to_string(),
                status.cluster_state_uuid.clone(),
            ),
            (
                "provider_version".to_string(),
                status.provider_version.clone(),
            ),
        ]),
    );

    if let Some(latency) = &status.latency {
        latency.register(&mut registry);
    }

    let mut out = String::new();
    encode(&mut out, &registry)?;
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::http::clustercheck::tests::synced_status;

    /// One parsed sample line: metric name, labels, value.
    pub(crate) type Sample = (String, BTreeMap<String, String>, f64);

    /// A strict reader for the subset of the OpenMetrics text format the crate emits: every
    /// sample belongs to a family declared by `# TYPE` and `# HELP`, label values are quoted,
    /// values are numbers, and the exposition ends with `# EOF`. It fails loudly instead of
    /// skipping what it does not understand.
    pub(crate) fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
        let mut typed: BTreeMap<String, String> = BTreeMap::new();
        let mut helped: Vec<String> = Vec::new();
        let mut samples = Vec::new();
        let mut saw_eof = false;
        for line in text.lines() {
            if saw_eof {
                return Err(format!("content after # EOF: {line:?}"));
            }
            if line == "# EOF" {
                saw_eof = true;
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').ok_or(format!("bad TYPE: {line}"))?;
                let known = ["gauge", "counter", "info", "histogram"];
                if !known.contains(&kind) {
                    return Err(format!("unexpected type {kind}"));
                }
                typed.insert(name.to_string(), kind.to_string());
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, _) = rest.split_once(' ').ok_or(format!("bad HELP: {line}"))?;
                helped.push(name.to_string());
                continue;
            }
            if line.starts_with("# UNIT ") {
                continue;
            }
            if line.starts_with('#') {
                return Err(format!("unknown comment line {line:?}"));
            }
            let (name, labels, value) = parse_sample(line)?;
            let family = typed
                .iter()
                .find(|(family, kind)| match kind.as_str() {
                    "counter" => name == format!("{family}_total"),
                    "info" => name == format!("{family}_info"),
                    "histogram" => ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|suffix| name == format!("{family}{suffix}")),
                    _ => name == **family,
                })
                .map(|(family, _)| family.clone())
                .ok_or(format!("sample {name} has no # TYPE"))?;
            if !helped.contains(&family) {
                return Err(format!("family {family} has no # HELP"));
            }
            samples.push((name, labels, value));
        }
        if !saw_eof {
            return Err("missing # EOF".to_string());
        }
        Ok(samples)
    }

    fn parse_sample(line: &str) -> Result<Sample, String> {
        let (series, value) = line.rsplit_once(' ').ok_or(format!("no value: {line:?}"))?;
        let value: f64 = value
            .parse()
            .map_err(|e| format!("bad value in {line:?}: {e}"))?;
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .ok_or(format!("unclosed labels: {line:?}"))?;
                (name, parse_labels(body)?)
            }
        };
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':');
        if !name_ok {
            return Err(format!("bad metric name {name:?}"));
        }
        Ok((name.to_string(), labels, value))
    }

    fn parse_labels(body: &str) -> Result<BTreeMap<String, String>, String> {
        let mut labels = BTreeMap::new();
        let mut rest = body;
        while !rest.is_empty() {
            let (key, after) = rest
                .split_once("=\"")
                .ok_or(format!("bad label in {body:?}"))?;
            let mut value = String::new();
            let mut chars = after.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, escaped)) => value.push(escaped),
                        None => return Err("dangling escape".to_string()),
                    },
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c => value.push(c),
                }
            }
            let end = end.ok_or(format!("unterminated label value in {body:?}"))?;
            labels.insert(key.to_string(), value);
            rest = &after[end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
        Ok(labels)
    }

    pub(crate) fn value_of(samples: &[Sample], name: &str) -> Option<f64> {
        samples.iter().find(|(n, _, _)| n == name).map(|s| s.2)
    }

    #[test]
    fn exposition_parses_and_carries_every_numeric_field() {
        let status = synced_status();
        let text = encode_status(&status).unwrap();
        let samples = parse_exposition(&text).unwrap();
        let expected = [
            ("certus_local_state", 4.0),
            ("certus_primary", 1.0),
            ("certus_backend_up", 1.0),
            ("certus_ready", 1.0),
            ("certus_inconsistent", 0.0),
            ("certus_node_id", 1.0),
            ("certus_cluster_size", 3.0),
            ("certus_cluster_conf_id", 7.0),
            ("certus_local_index", 0.0),
            ("certus_leader", 1.0),
            ("certus_last_committed", 1234.0),
            ("certus_recv_queue", 0.0),
            ("certus_flow_control_paused", 0.25),
            ("certus_flow_control_paused_seconds_total", 1.5),
            ("certus_flow_control_active", 0.0),
            ("certus_flow_control_sent_total", 0.0),
            ("certus_flow_control_recv_total", 1.0),
            ("certus_local_commits_total", 100.0),
            ("certus_local_cert_failures_total", 3.0),
            ("certus_local_bf_aborts_total", 2.0),
            ("certus_local_replays_total", 0.0),
            ("certus_replicated_total", 100.0),
            ("certus_received_total", 250.0),
            ("certus_node_info", 1.0),
        ];
        for (name, value) in expected {
            assert_eq!(value_of(&samples, name), Some(value), "{name}\n{text}");
        }
        assert_eq!(samples.len(), expected.len(), "{text}");
        for (name, labels, _) in &samples {
            assert_eq!(
                labels.get("node").map(String::as_str),
                Some("db1"),
                "{name}"
            );
        }
        let info = samples.iter().find(|s| s.0 == "certus_node_info").unwrap();
        assert_eq!(info.1["local_state_comment"], "Synced");
        assert_eq!(info.1["provider_version"], "certus 0.1.0");
    }

    #[test]
    fn unknown_leader_is_omitted_and_awkward_names_are_escaped() {
        let mut status = synced_status();
        status.leader = None;
        status.primary = false;
        status.node_name = "db\"1\\x".to_string();
        let text = encode_status(&status).unwrap();
        let samples = parse_exposition(&text).unwrap();
        assert_eq!(value_of(&samples, "certus_leader"), None);
        assert_eq!(value_of(&samples, "certus_primary"), Some(0.0));
        assert_eq!(samples[0].1["node"], "db\"1\\x");
    }

    #[test]
    fn stage_latencies_and_batching_are_histograms() {
        use crate::node::latency::{Stage, WritePathMetrics};
        let latency = std::sync::Arc::new(WritePathMetrics::default());
        latency.observe(Stage::Propose, std::time::Duration::from_micros(1500));
        latency.observe(Stage::Commit, std::time::Duration::from_millis(4));
        latency.observe_entry(3);
        let mut status = synced_status();
        status.latency = Some(latency);
        let text = encode_status(&status).unwrap();
        let samples = parse_exposition(&text).unwrap();
        let find = |name: &str, stage: Option<&str>, le: Option<&str>| {
            samples
                .iter()
                .find(|(n, l, _)| {
                    n == name
                        && stage.is_none_or(|s| l.get("stage").map(String::as_str) == Some(s))
                        && le.is_none_or(|x| l.get("le").map(String::as_str) == Some(x))
                })
                .map(|s| s.2)
        };
        let count = "certus_commit_stage_seconds_count";
        assert_eq!(find(count, Some("propose"), None), Some(1.0), "{text}");
        assert_eq!(find(count, Some("commit"), None), Some(1.0), "{text}");
        assert_eq!(find(count, Some("apply"), None), Some(0.0), "{text}");
        let sum = find("certus_commit_stage_seconds_sum", Some("commit"), None);
        assert!(sum.is_some_and(|s| (s - 0.004).abs() < 1e-9), "{text}");
        assert_eq!(find("certus_raft_entries_total", None, None), Some(1.0));
        assert_eq!(
            find("certus_raft_entry_write_sets_sum", None, None),
            Some(3.0)
        );
        assert_eq!(
            find("certus_raft_entry_write_sets_bucket", None, Some("2.0")),
            Some(0.0),
            "{text}"
        );
        assert_eq!(
            find("certus_raft_entry_write_sets_bucket", None, Some("4.0")),
            Some(1.0),
            "{text}"
        );
    }

    #[test]
    fn parser_rejects_what_prometheus_would() {
        assert!(parse_exposition("certus_x 1\n# EOF\n").is_err());
        assert!(parse_exposition("# HELP a h\n# TYPE a gauge\na one\n# EOF\n").is_err());
        assert!(parse_exposition("# HELP a h\n# TYPE a gauge\na 1\n").is_err());
        assert!(parse_exposition("# HELP a h\n# TYPE a gauge\na 1\n# EOF\n").is_ok());
    }
}
