//! External backend: a MariaDB the operator runs. The node checks at start that it has every
//! setting replication depends on (DESIGN §12) and refuses to start with one message listing
//! each wrong setting. Afterwards a light probe keeps the backend's health current.

use super::managed::install_schema;
use super::{Backend, BackendError, Endpoint, Health, ServiceAccount};
use crate::config::ExternalBackend;
use mysql_async::prelude::Queryable;
use std::time::Duration;
use tokio::sync::watch;

const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// One required setting: the variable, what it must be, and a check on the value it has.
struct Requirement {
    variable: &'static str,
    expected: &'static str,
    ok: fn(&str) -> bool,
}

const REQUIREMENTS: &[Requirement] = &[
    Requirement {
        variable: "log_bin",
        expected: "ON",
        ok: |v| v == "1" || v.eq_ignore_ascii_case("on"),
    },
    Requirement {
        variable: "binlog_format",
        expected: "ROW",
        ok: |v| v.eq_ignore_ascii_case("row"),
    },
    Requirement {
        variable: "binlog_row_image",
        expected: "FULL",
        ok: |v| v.eq_ignore_ascii_case("full"),
    },
    Requirement {
        variable: "binlog_row_metadata",
        expected: "FULL",
        ok: |v| v.eq_ignore_ascii_case("full"),
    },
    Requirement {
        variable: "default_storage_engine",
        expected: "InnoDB",
        ok: |v| v.eq_ignore_ascii_case("innodb"),
    },
    Requirement {
        variable: "log_bin_trust_function_creators",
        expected: "ON",
        ok: |v| v == "1" || v.eq_ignore_ascii_case("on"),
    },
    Requirement {
        variable: "server_id",
        expected: "a non-zero id distinct on every node",
        ok: |v| v != "0",
    },
];

/// Lists every requirement the observed values violate.
fn violations(values: &[(String, String)]) -> Vec<String> {
    REQUIREMENTS
        .iter()
        .filter_map(|r| {
            let found = values
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(r.variable))
                .map(|(_, v)| v.as_str());
            match found {
                Some(v) if (r.ok)(v) => None,
                Some(v) => Some(format!("{} is {v}, must be {}", r.variable, r.expected)),
                None => Some(format!(
                    "{} is not reported by the server, must be {}",
                    r.variable, r.expected
                )),
            }
        })
        .collect()
}

pub(crate) async fn connect(
    cfg: &ExternalBackend,
    auto_inc: super::managed::AutoIncrement,
) -> Result<(Backend, tokio::task::JoinHandle<()>), BackendError> {
    let endpoint = Endpoint::from(&cfg.endpoint);
    let service = ServiceAccount {
        user: cfg.user.clone(),
        password: cfg.password.clone(),
    };
    let mut conn = mysql_async::Conn::new(endpoint.opts(&service.user, &service.password))
        .await
        .map_err(|e| {
            BackendError::Setup(format!(
                "cannot connect to the external backend as {}: {e}",
                service.user
            ))
        })?;
    let names: Vec<&str> = REQUIREMENTS.iter().map(|r| r.variable).collect();
    let query = format!(
        "SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_VARIABLES WHERE VARIABLE_NAME IN ({})",
        names.iter().map(|n| format!("'{}'", n.to_uppercase())).collect::<Vec<_>>().join(",")
    );
    let values: Vec<(String, String)> = conn.query(query).await?;
    let mut problems = violations(&values);
    let grants: Vec<String> = conn.query("SHOW GRANTS FOR CURRENT_USER()").await?;
    if !grants
        .iter()
        .any(|g| g.contains("ALL PRIVILEGES ON *.*") && g.contains("WITH GRANT OPTION"))
    {
        problems.push(format!(
            "the service account {} needs ALL PRIVILEGES ON *.* WITH GRANT OPTION (see sql/service_account.sql)",
            service.user
        ));
    }
    if !problems.is_empty() {
        return Err(BackendError::Setup(format!(
            "the external backend is not configured for certus:\n  - {}",
            problems.join("\n  - ")
        )));
    }
    install_schema(&mut conn).await?;
    // wsrep_auto_increment_control: new sessions inherit these.
    conn.query_drop(format!(
        "SET GLOBAL auto_increment_increment = {}, GLOBAL auto_increment_offset = {}",
        auto_inc.increment, auto_inc.offset
    ))
    .await?;
    conn.disconnect().await?;
    let (health_tx, health_rx) = watch::channel(Health::Down);
    let backend = Backend::new(endpoint, service, health_rx);
    backend.refresh_info().await?;
    let _ = health_tx.send(Health::Up);
    let probe = tokio::spawn(probe(backend.clone(), health_tx));
    Ok((backend, probe))
}

async fn probe(backend: Backend, health: watch::Sender<Health>) {
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        let up = match tokio::time::timeout(PROBE_INTERVAL, backend.pool.get_conn()).await {
            Ok(Ok(mut c)) => c.ping().await.is_ok(),
            _ => false,
        };
        let now = if up { Health::Up } else { Health::Down };
        if now == Health::Up && backend.health() == Health::Down {
            let _ = backend.refresh_info().await;
        }
        health.send_if_modified(|h| std::mem::replace(h, now) != now);
    }
}

#[cfg(test)]
mod tests {
    use super::violations;

    #[test]
    fn every_violation_is_listed() {
        let values = vec![
            ("LOG_BIN".to_string(), "OFF".to_string()),
            ("BINLOG_FORMAT".to_string(), "MIXED".to_string()),
            ("BINLOG_ROW_IMAGE".to_string(), "FULL".to_string()),
            ("SERVER_ID".to_string(), "0".to_string()),
        ];
        let v = violations(&values);
        assert!(v.iter().any(|p| p.starts_with("log_bin is OFF")));
        assert!(v.iter().any(|p| p.starts_with("binlog_format is MIXED")));
        assert!(v.iter().any(|p| p.starts_with("server_id is 0")));
        assert!(v
            .iter()
            .any(|p| p.starts_with("binlog_row_metadata is not reported")));
        assert!(!v.iter().any(|p| p.starts_with("binlog_row_image")));
        // default_storage_engine and log_bin_trust_function_creators are missing too.
        assert_eq!(v.len(), 6, "{v:?}");
    }
}
