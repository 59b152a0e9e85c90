//! Node states and the status surfaces: SQL wsrep rows, clustercheck, /metrics, /status.

use crate::harness::{self, TestCluster, TestNode, ADMIN_PASSWORD, ADMIN_USER};
use mysql_async::prelude::*;
use std::io::{Read, Write};
use std::time::Duration;

macro_rules! require_mariadb {
    () => {
        if !harness::mariadb_available() {
            return;
        }
    };
}

/// One HTTP GET over a raw socket: (status code, body).
fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the HTTP server");
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (code, body)
}

async fn clustercheck(n: &TestNode) -> (u16, String) {
    let addr = n
        .node
        .as_ref()
        .and_then(|n| n.http_addr())
        .expect("http server");
    tokio::task::spawn_blocking(move || http_get(addr, "/"))
        .await
        .unwrap()
}

async fn wait_for_check(n: &TestNode, code: u16, within: Duration) -> Duration {
    let started = tokio::time::Instant::now();
    loop {
        let (c, body) = clustercheck(n).await;
        if c == code {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "clustercheck stayed {c} ({body:?}), expected {code}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_status_surfaces_report_galera_names_and_values() {
    require_mariadb!();
    let c = TestCluster::start(3).await;
    let n = c.node(1);
    let mut s = n.admin().await;
    let rows: Vec<(String, String)> = s.query("SHOW GLOBAL STATUS LIKE 'wsrep%'").await.unwrap();
    let get = |k: &str| rows.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("wsrep_cluster_size").as_deref(), Some("3"));
    assert_eq!(get("wsrep_cluster_status").as_deref(), Some("Primary"));
    assert_eq!(get("wsrep_local_state").as_deref(), Some("4"));
    assert_eq!(get("wsrep_local_state_comment").as_deref(), Some("Synced"));
    assert_eq!(get("wsrep_ready").as_deref(), Some("ON"));
    assert_eq!(get("wsrep_connected").as_deref(), Some("ON"));
    assert_eq!(get("wsrep_local_index").as_deref(), Some("1"));
    assert_eq!(get("wsrep_evs_state").as_deref(), Some("OPERATIONAL"));
    for k in [
        "wsrep_cluster_state_uuid",
        "wsrep_cluster_conf_id",
        "wsrep_last_committed",
        "wsrep_incoming_addresses",
        "wsrep_local_cert_failures",
        "wsrep_local_bf_aborts",
        "wsrep_local_replays",
        "wsrep_local_commits",
        "wsrep_replicated",
        "wsrep_received",
        "wsrep_local_recv_queue",
        "wsrep_local_recv_queue_avg",
        "wsrep_local_send_queue",
        "wsrep_flow_control_paused",
        "wsrep_flow_control_paused_ns",
        "wsrep_cert_deps_distance",
        "wsrep_gcomm_uuid",
        "wsrep_provider_name",
        "wsrep_provider_version",
    ] {
        assert!(get(k).is_some(), "{k} missing from SHOW STATUS");
    }
    // Every node reports the same cluster state UUID.
    let uuid = get("wsrep_cluster_state_uuid");
    for other in &c.nodes {
        let mut o = other.admin().await;
        let r: Option<(String, String)> = o
            .query_first("SHOW STATUS LIKE 'wsrep_cluster_state_uuid'")
            .await
            .unwrap();
        assert_eq!(r.map(|r| r.1), uuid);
    }
    // The backend's own status rows are still there, filtered like MariaDB filters them.
    let rows: Vec<(String, String)> = s
        .query("SHOW STATUS WHERE Variable_name IN ('Uptime', 'wsrep_ready')")
        .await
        .unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(names, vec!["Uptime", "wsrep_ready"]);
    // Variables and @@.
    let v: Vec<(String, String)> = s.query("SHOW VARIABLES LIKE 'wsrep_on'").await.unwrap();
    assert_eq!(v, vec![("wsrep_on".to_string(), "ON".to_string())]);
    let (on, name): (i64, String) = s
        .query_first("SELECT @@wsrep_on, @@wsrep_node_name")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((on, name.as_str()), (1, "node2"));
    // The monitor queries of ProxySQL, MaxScale and healthcheck.sh.
    let v: Option<String> = s
        .query_first("SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'wsrep_local_state'")
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some("4"));
    let v: Option<i64> = s
        .query_first("select 1 from information_schema.global_status where variable_name='wsrep_ready' and variable_value='ON'")
        .await
        .unwrap();
    assert_eq!(v, Some(1));
    let v: Option<(i64, String)> = s
        .query_first(
            "SELECT @@read_only, (SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE variable_name='wsrep_cluster_status') AS cs",
        )
        .await
        .unwrap();
    assert_eq!(v, Some((0, "Primary".to_string())));
    let v: Option<String> = s
        .query_first("SELECT variable_value FROM performance_schema.global_status WHERE variable_name = 'wsrep_local_state_comment'")
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some("Synced"));
    // The mariadb CLI sees the same rows.
    let o = n.cli(
        ADMIN_USER,
        ADMIN_PASSWORD,
        &["-N", "-e", "SHOW STATUS LIKE 'wsrep_local_state_comment'"],
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "wsrep_local_state_comment\tSynced\n"
    );
    // /metrics parses as Prometheus text; /status is JSON.
    let addr = n.node.as_ref().and_then(|n| n.http_addr()).unwrap();
    let (code, metrics) = tokio::task::spawn_blocking(move || http_get(addr, "/metrics"))
        .await
        .unwrap();
    assert_eq!(code, 200);
    let mut samples = 0;
    for line in metrics
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad metrics line {line:?}"));
        assert!(name.starts_with("certus_"), "{line}");
        assert!(value.parse::<f64>().is_ok(), "{line}");
        samples += 1;
    }
    assert!(samples >= 10, "{metrics}");
    let (code, status) = tokio::task::spawn_blocking(move || http_get(addr, "/status"))
        .await
        .unwrap();
    assert_eq!(code, 200);
    let json: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(json["cluster_size"], 3);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_follow_the_backend_and_the_quorum() {
    require_mariadb!();
    let mut c = TestCluster::start(3).await;
    let (code, body) = clustercheck(c.node(0)).await;
    assert_eq!(
        (code, body.as_str()),
        (200, "Galera Cluster Node is synced.\r\n")
    );
    // Kill node 1's backend: 503 and 1047 until the supervisor has it back.
    let pid = std::fs::read_to_string(c.node(0).data_dir().join("mariadb/mysqld.pid")).unwrap();
    let status = std::process::Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap();
    assert!(status.success());
    let took = wait_for_check(c.node(0), 503, Duration::from_secs(2)).await;
    assert!(took < Duration::from_secs(2));
    let refused = c.node(0).connect(ADMIN_USER, ADMIN_PASSWORD).await;
    if let Err(e) = refused {
        assert!(
            matches!(e, mysql_async::Error::Server(ref s) if s.code == 1047),
            "{e:?}"
        );
    }
    wait_for_check(c.node(0), 200, Duration::from_secs(30)).await;
    c.node(0)
        .admin()
        .await
        .query_drop("SELECT 1")
        .await
        .unwrap();
    // Stop two nodes: the survivor loses the quorum and says so.
    let survivor = c.nodes.remove(0);
    for n in c.nodes.drain(..) {
        n.stop().await;
    }
    wait_for_check(&survivor, 503, Duration::from_secs(5)).await;
    let mut s = match survivor.connect(ADMIN_USER, ADMIN_PASSWORD).await {
        Ok(s) => s,
        Err(e) => {
            assert!(
                matches!(e, mysql_async::Error::Server(ref s) if s.code == 1047),
                "{e:?}"
            );
            survivor.stop().await;
            return;
        }
    };
    let e = s.query_drop("SELECT 1 FROM DUAL").await.unwrap_err();
    assert!(
        matches!(e, mysql_async::Error::Server(ref s) if s.code == 1047),
        "{e:?}"
    );
    survivor.stop().await;
}
