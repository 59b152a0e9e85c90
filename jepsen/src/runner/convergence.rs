//! The convergence check: after healing and catch-up, every backend must hold the same rows.
//!
//! Owns the comparison of `CHECKSUM TABLE` results across backends, read directly over each
//! backend's socket as the node's service account (bypassing certus, so a node that serves
//! stale data cannot vouch for itself). In endpoints mode there are no sockets and the
//! endpoints are asked instead. It must not modify any data.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

use crate::checker::{AnomalyKind, CheckResult, Findings};
use crate::runner::client::{self, Account, Endpoint};
use crate::runner::cluster::Cluster;
use crate::runner::workload::SCHEMA;

/// Table -> checksum (`None` when the server has none, e.g. a missing table).
pub(crate) type Checksums = BTreeMap<String, Option<u64>>;

pub(crate) struct Convergence {
    pub(crate) result: CheckResult,
    /// The last snapshot taken, per backend.
    pub(crate) checksums: BTreeMap<String, Result<Checksums, String>>,
    pub(crate) waited: Duration,
}

/// Polls until two successive snapshots agree on every backend, or `deadline`. `started` is
/// when recovery began (healing), so `waited` covers the readiness wait too.
pub(crate) async fn wait(
    started: Instant,
    cluster: Option<&Cluster>,
    endpoints: &[Endpoint],
    account: &Account,
    tables: &[&str],
    deadline: Instant,
    readiness_error: Option<String>,
) -> Convergence {
    let sql = format!(
        "CHECKSUM TABLE {}",
        tables
            .iter()
            .map(|t| format!("{SCHEMA}.{t}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut previous: Option<BTreeMap<String, Result<Checksums, String>>> = None;
    let mut last_diff;
    loop {
        let snapshot = take(cluster, endpoints, account, &sql).await;
        last_diff = compare(&snapshot);
        let stable = previous.as_ref() == Some(&snapshot);
        if last_diff.is_none() && stable {
            let mut findings = Findings::default();
            if let Some(e) = &readiness_error {
                // Identical data, but a node never came back: still a failed recovery.
                findings.report(
                    AnomalyKind::Divergence,
                    format!("a node did not recover: {e}"),
                );
            }
            return Convergence {
                result: findings.finish(),
                checksums: snapshot,
                waited: started.elapsed(),
            };
        }
        previous = Some(snapshot);
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut findings = Findings::default();
    let diff = last_diff.unwrap_or_else(|| "checksums kept changing".to_owned());
    findings.report(
        AnomalyKind::Divergence,
        format!(
            "backends still differ after {:.0} s of waiting: {diff}{}",
            started.elapsed().as_secs_f64(),
            readiness_error
                .map(|e| format!("; a node did not recover: {e}"))
                .unwrap_or_default()
        ),
    );
    Convergence {
        result: findings.finish(),
        checksums: previous.unwrap_or_default(),
        waited: started.elapsed(),
    }
}

async fn take(
    cluster: Option<&Cluster>,
    endpoints: &[Endpoint],
    account: &Account,
    sql: &str,
) -> BTreeMap<String, Result<Checksums, String>> {
    let mut out = BTreeMap::new();
    match cluster {
        Some(cluster) => {
            for (name, conn) in cluster.backend_conns().await {
                let sums = match conn {
                    Ok(mut c) => {
                        let r = checksum(&mut c, sql).await;
                        let _ = c.disconnect().await;
                        r
                    }
                    Err(e) => Err(e),
                };
                out.insert(name, sums);
            }
        }
        None => {
            for e in endpoints {
                let sums =
                    match client::connect(client::tcp_opts(e, account), Duration::from_secs(5))
                        .await
                    {
                        Ok(mut c) => {
                            let r = checksum(&mut c, sql).await;
                            let _ = c.disconnect().await;
                            r
                        }
                        Err(f) => Err(f.describe()),
                    };
                out.insert(e.name.clone(), sums);
            }
        }
    }
    out
}

async fn checksum(conn: &mut mysql_async::Conn, sql: &str) -> Result<Checksums, String> {
    let rows: Vec<(String, Option<u64>)> =
        tokio::time::timeout(Duration::from_secs(30), conn.query(sql))
            .await
            .map_err(|_| "CHECKSUM TABLE timed out".to_owned())?
            .map_err(|e| e.to_string())?;
    Ok(rows.into_iter().collect())
}

/// `None` when every backend answered with the same checksums; otherwise what differs.
pub(crate) fn compare(snapshot: &BTreeMap<String, Result<Checksums, String>>) -> Option<String> {
    let mut problems = Vec::new();
    let mut reference: Option<(&String, &Checksums)> = None;
    for (name, sums) in snapshot {
        match sums {
            Err(e) => problems.push(format!("{name} unreadable: {e}")),
            Ok(sums) => {
                if sums.values().any(Option::is_none) {
                    problems.push(format!("{name} has no checksum for some table: {sums:?}"));
                }
                match reference {
                    None => reference = Some((name, sums)),
                    Some((ref_name, ref_sums)) if ref_sums != sums => problems.push(format!(
                        "{name} {sums:?} differs from {ref_name} {ref_sums:?}"
                    )),
                    Some(_) => {}
                }
            }
        }
    }
    if snapshot.is_empty() {
        problems.push("no backend to compare".to_owned());
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sums(pairs: &[(&str, Option<u64>)]) -> Result<Checksums, String> {
        Ok(pairs.iter().map(|(t, c)| (t.to_string(), *c)).collect())
    }

    #[test]
    fn identical_checksums_converge() {
        let s: BTreeMap<String, _> = [
            ("n1".to_string(), sums(&[("jepsen.bank", Some(5))])),
            ("n2".to_string(), sums(&[("jepsen.bank", Some(5))])),
        ]
        .into_iter()
        .collect();
        assert_eq!(compare(&s), None);
    }

    #[test]
    fn a_differing_missing_or_unreadable_backend_is_reported() {
        let differing: BTreeMap<String, _> = [
            ("n1".to_string(), sums(&[("jepsen.bank", Some(5))])),
            ("n2".to_string(), sums(&[("jepsen.bank", Some(6))])),
        ]
        .into_iter()
        .collect();
        assert!(compare(&differing).unwrap().contains("n2"));

        let missing: BTreeMap<String, _> = [("n1".to_string(), sums(&[("jepsen.bank", None)]))]
            .into_iter()
            .collect();
        assert!(compare(&missing).is_some());

        let unreadable: BTreeMap<String, _> = [
            ("n1".to_string(), sums(&[("jepsen.bank", Some(5))])),
            ("n2".to_string(), Err("socket gone".to_string())),
        ]
        .into_iter()
        .collect();
        assert!(compare(&unreadable).unwrap().contains("socket gone"));
        assert!(compare(&BTreeMap::new()).is_some());
    }
}
