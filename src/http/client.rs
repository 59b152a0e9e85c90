//! The client side of `/status`, for `certus status [--json]`: fetch one node's snapshot as
//! JSON and render it for people. The answer is kept as a `serde_json::Value` rather than a
//! `NodeStatus` so that a newer or older node's extra or missing fields still display.
//!
//! It owns the request it sends and the text layout. It must not be used by the server.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::error::HttpError;

/// A status is a few kilobytes; anything far larger is not one of our nodes.
const MAX_RESPONSE_BYTES: u64 = 1 << 20;

/// `GET /status` from the node whose HTTP server listens on `addr` (`host:port`), with the
/// whole exchange bounded by `timeout`. Returns the JSON object the node sent.
pub async fn fetch_status(addr: &str, timeout: Duration) -> Result<Value, HttpError> {
    match tokio::time::timeout(timeout, exchange(addr)).await {
        Ok(result) => result,
        Err(_) => Err(HttpError::Timeout {
            addr: addr.to_string(),
            timeout,
        }),
    }
}

async fn exchange(addr: &str) -> Result<Value, HttpError> {
    let io_error = |source| HttpError::Io {
        addr: addr.to_string(),
        source,
    };
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|source| HttpError::Connect {
            addr: addr.to_string(),
            source,
        })?;
    let request =
        format!("GET /status HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(io_error)?;
    let mut raw = Vec::new();
    // One byte past the limit tells "exactly at the limit" from "too large".
    (&mut stream)
        .take(MAX_RESPONSE_BYTES + 1)
        .read_to_end(&mut raw)
        .await
        .map_err(io_error)?;
    if raw.len() as u64 > MAX_RESPONSE_BYTES {
        return Err(bad_response(addr, "response larger than 1 MiB"));
    }
    parse_status_response(addr, &raw)
}

fn bad_response(addr: &str, reason: impl Into<String>) -> HttpError {
    HttpError::BadResponse {
        addr: addr.to_string(),
        reason: reason.into(),
    }
}

/// Splits a complete `Connection: close` response and decodes its JSON body.
fn parse_status_response(addr: &str, raw: &[u8]) -> Result<Value, HttpError> {
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad_response(addr, "no end of header"))?;
    let head = std::str::from_utf8(&raw[..head_end])
        .map_err(|_| bad_response(addr, "header is not UTF-8"))?;
    let body = &raw[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let code = parse_status_line(status_line)
        .ok_or_else(|| bad_response(addr, format!("bad status line {status_line:?}")))?;
    if code != 200 {
        return Err(HttpError::Status {
            addr: addr.to_string(),
            code,
        });
    }
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(bad_response(addr, format!("bad header line {line:?}")));
        };
        if name.trim().eq_ignore_ascii_case("content-length") {
            let expected: usize = value
                .trim()
                .parse()
                .map_err(|_| bad_response(addr, format!("bad Content-Length {value:?}")))?;
            if expected != body.len() {
                return Err(bad_response(
                    addr,
                    format!(
                        "body is {} bytes, Content-Length says {expected}",
                        body.len()
                    ),
                ));
            }
        }
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| HttpError::Json {
        addr: addr.to_string(),
        reason: e.to_string(),
    })?;
    if !value.is_object() {
        return Err(HttpError::Json {
            addr: addr.to_string(),
            reason: "top level is not an object".to_string(),
        });
    }
    Ok(value)
}

fn parse_status_line(line: &str) -> Option<u16> {
    let mut parts = line.splitn(3, ' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// A status as `certus status` prints it: one aligned `label: value` line per fact, Galera's
/// names where operators know them. Missing fields print as `?`.
pub fn render_status(status: &Value) -> String {
    let text = |key: &str| match status.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "?".to_string(),
        Some(other) => other.to_string(),
    };
    let yes_no = |key: &str, yes: &str, no: &str| match status.get(key).and_then(Value::as_bool) {
        Some(true) => yes.to_string(),
        Some(false) => no.to_string(),
        None => "?".to_string(),
    };
    // `local_state` is serialized as its variant name; the number is what wsrep reports.
    let state = match status.get("local_state").and_then(Value::as_str) {
        Some(name) => match state_number(name) {
            Some(n) => format!("{} ({n})", state_comment(name)),
            None => name.to_string(),
        },
        None => "?".to_string(),
    };
    let inconsistent = match status.get("inconsistent") {
        Some(Value::Null) => "no".to_string(),
        Some(Value::String(why)) => format!("YES: {why}"),
        Some(other) => other.to_string(),
        None => "?".to_string(),
    };
    let leader = match status.get("leader") {
        Some(Value::Null) => "none".to_string(),
        Some(v) => v.to_string(),
        None => "?".to_string(),
    };
    // As `wsrep_cluster_status` reports it: an inconsistent node is not Primary either.
    let cluster_status = match (
        status.get("primary").and_then(Value::as_bool),
        status.get("inconsistent"),
    ) {
        (Some(true), None | Some(Value::Null)) => "Primary".to_string(),
        (Some(_), _) => "non-Primary".to_string(),
        (None, _) => "?".to_string(),
    };
    let paused = match status.get("flow_control_paused").and_then(Value::as_f64) {
        Some(f) => format!("{f:.3}"),
        None => "?".to_string(),
    };
    let rows: Vec<(&str, String)> = vec![
        (
            "node",
            format!("{} (id {})", text("node_name"), text("node_id")),
        ),
        ("ready", yes_no("ready", "yes", "NO")),
        ("state", state),
        ("cluster status", cluster_status),
        ("backend", yes_no("backend_up", "up", "DOWN")),
        ("inconsistent", inconsistent),
        ("cluster size", text("cluster_size")),
        ("leader", leader),
        ("conf id", text("cluster_conf_id")),
        ("local index", text("local_index")),
        ("state uuid", text("cluster_state_uuid")),
        ("incoming addresses", text("incoming_addresses")),
        ("last committed", text("last_committed")),
        ("recv queue", text("recv_queue")),
        ("local commits", text("local_commits")),
        ("cert failures", text("local_cert_failures")),
        ("bf aborts", text("local_bf_aborts")),
        ("replays", text("local_replays")),
        ("replicated", text("replicated")),
        ("received", text("received")),
        ("flow control paused", paused),
        ("provider version", text("provider_version")),
    ];
    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (label, value) in rows {
        out.push_str(&format!("{:<width$} {value}\n", format!("{label}:")));
    }
    out
}

fn state_number(variant: &str) -> Option<u8> {
    match variant {
        "Initialized" => Some(0),
        "Joining" => Some(1),
        "Donor" => Some(2),
        "Joined" => Some(3),
        "Synced" => Some(4),
        _ => None,
    }
}

fn state_comment(variant: &str) -> &str {
    match variant {
        "Donor" => "Donor/Desynced",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::clustercheck::tests::synced_status;

    #[test]
    fn renders_every_field_of_a_real_snapshot() {
        let value = serde_json::to_value(synced_status()).unwrap();
        let text = render_status(&value);
        for expected in [
            "node:                db1 (id 1)\n",
            "ready:               yes\n",
            "state:               Synced (4)\n",
            "cluster status:      Primary\n",
            "backend:             up\n",
            "inconsistent:        no\n",
            "leader:              1\n",
            "recv queue:          0\n",
            "flow control paused: 0.250\n",
            "provider version:    certus 0.1.0\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert!(!text.contains('?'), "{text}");
    }

    #[test]
    fn renders_unhealthy_and_partial_snapshots() {
        let mut status = synced_status();
        status.local_state = crate::node::status::LocalState::Donor;
        // Still primary: inconsistency alone must show as non-Primary, as the SQL row does.
        status.leader = None;
        status.inconsistent = Some("apply failed".to_string());
        let mut value = serde_json::to_value(status).unwrap();
        value.as_object_mut().unwrap().remove("recv_queue");
        let text = render_status(&value);
        assert!(
            text.contains("state:               Donor/Desynced (2)\n"),
            "{text}"
        );
        assert!(
            text.contains("cluster status:      non-Primary\n"),
            "{text}"
        );
        assert!(text.contains("leader:              none\n"), "{text}");
        assert!(
            text.contains("inconsistent:        YES: apply failed\n"),
            "{text}"
        );
        assert!(text.contains("recv queue:          ?\n"), "{text}");
    }

    #[test]
    fn response_parsing_checks_status_length_and_shape() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n{\"a\":1}\n";
        assert_eq!(parse_status_response("x", ok).unwrap()["a"], 1);
        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{\"a\":1}\n";
        assert!(matches!(
            parse_status_response("x", short),
            Err(HttpError::BadResponse { .. })
        ));
        let unavailable = b"HTTP/1.1 503 Service Unavailable\r\n\r\n";
        assert!(matches!(
            parse_status_response("x", unavailable),
            Err(HttpError::Status { code: 503, .. })
        ));
        let array = b"HTTP/1.1 200 OK\r\n\r\n[1]";
        assert!(matches!(
            parse_status_response("x", array),
            Err(HttpError::Json { .. })
        ));
        assert!(matches!(
            parse_status_response("x", b"SSH-2.0-OpenSSH\r\n\r\n"),
            Err(HttpError::BadResponse { .. })
        ));
    }
}
