//! Node states and the status surfaces: SQL wsrep rows, clustercheck, /metrics, /status.

use crate::harness::{
    self, http_get, require_mariadb, retry_not_ready, wait_backend_count, TestCluster, TestNode,
    ADMIN_PASSWORD, ADMIN_USER,
};
use mysql_async::prelude::*;
use std::time::Duration;

async fn clustercheck(n: &TestNode) -> (u16, String) {
    let addr = n
        .node
        .as_ref()
        .and_then(|n| n.http_addr())
        .expect("http server");
    tokio::task::spawn_blocking(move || http_get(addr, "/"))
        .await
        .unwrap()
        .unwrap_or((0, String::new()))
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
    // Every member's client address, learned by gossip (a few hundred ms after start).
    let incoming = c
        .nodes
        .iter()
        .map(|n| n.addr.to_string())
        .collect::<Vec<_>>()
        .join(",");
    for node in &c.nodes {
        let running = node.node.as_ref().unwrap();
        let learned = TestNode::eventually(Duration::from_secs(10), || {
            running.status().incoming_addresses == incoming
        })
        .await;
        assert!(learned, "{:?} != {incoming}", running.status());
    }
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
    assert_eq!(get("wsrep_incoming_addresses"), Some(incoming.clone()));
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
        .unwrap()
        .expect("GET /metrics");
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
        .unwrap()
        .expect("GET /status");
    assert_eq!(code, 200);
    let json: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(json["cluster_size"], 3);
    // PyMySQL reads the same names and values.
    if let Some(python) = harness::python() {
        let args = vec![
            "127.0.0.1".to_string(),
            n.port().to_string(),
            ADMIN_USER.into(),
            ADMIN_PASSWORD.into(),
            "node2".into(),
            incoming.clone(),
        ];
        let out = tokio::task::spawn_blocking(move || {
            harness::run_python(&python, "status_surfaces.py", &args)
        })
        .await
        .expect("python task");
        for case in [
            "show_status",
            "show_global_status_like",
            "show_variables",
            "select_variables",
            "monitor_queries",
        ] {
            assert!(
                out.lines().any(|l| l == format!("ok {case}")),
                "case {case} did not pass:\n{out}"
            );
        }
    }
    // A stopped member leaves the component: the size and the addresses shrink.
    let mut c = c;
    let gone = c.nodes.remove(2);
    gone.stop().await;
    let shrunk = TestNode::eventually(Duration::from_secs(15), || {
        let st = c.node(0).node.as_ref().unwrap().status();
        st.cluster_size == 2 && st.incoming_addresses.split(',').count() == 2
    })
    .await;
    assert!(shrunk, "{:?}", c.node(0).node.as_ref().unwrap().status());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_follow_the_backend_and_the_quorum_and_the_cluster_heals() {
    require_mariadb!();
    let mut c = TestCluster::start(3).await;
    let (code, body) = clustercheck(c.node(0)).await;
    assert_eq!(
        (code, body.as_str()),
        (200, "Galera Cluster Node is synced.\r\n")
    );
    // Kill node 1's backend: 503 and 1047 until the supervisor has it back.
    c.node(0).signal_backend("9");
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
    // Rows written while all three are up must survive the quorum loss and the heal.
    let mut w = c.node(0).admin().await;
    retry_not_ready(&mut w, "CREATE DATABASE heal").await;
    retry_not_ready(&mut w, "CREATE TABLE heal.t (id INT PRIMARY KEY, v INT)").await;
    for id in 1..=5 {
        retry_not_ready(&mut w, &format!("INSERT INTO heal.t VALUES ({id}, {id})")).await;
    }
    drop(w);
    // Stop two nodes: the survivor loses the quorum and says so.
    c.nodes[1].halt().await;
    c.nodes[2].halt().await;
    wait_for_check(c.node(0), 503, Duration::from_secs(10)).await;
    let st = c.node(0).node.as_ref().unwrap().status();
    assert_eq!(
        (st.cluster_status(), st.ready),
        ("non-Primary", false),
        "{st:?}"
    );
    // The component shrinks once the gossip window (3 s) has passed without news.
    let survivor = c.node(0).node.as_ref().unwrap();
    let alone = TestNode::eventually(Duration::from_secs(15), || {
        survivor.status().cluster_size == 1
    })
    .await;
    assert!(alone, "{:?}", survivor.status());
    let not_ready = |e: &mysql_async::Error| matches!(e, mysql_async::Error::Server(s) if s.code == 1047 && s.state == "08S01" && s.message == "WSREP has not yet prepared node for application use");
    match c.node(0).connect(ADMIN_USER, ADMIN_PASSWORD).await {
        // Refused instead of the greeting: MariaDB sends no SQLSTATE before the handshake.
        Err(e) => assert!(
            matches!(&e, mysql_async::Error::Server(s) if s.code == 1047 && s.message == "WSREP has not yet prepared node for application use"),
            "{e:?}"
        ),
        Ok(mut s) => {
            let e = s.query_drop("SELECT 1 FROM DUAL").await.unwrap_err();
            assert!(not_ready(&e), "{e:?}");
            let e = s
                .query_drop("INSERT INTO heal.t VALUES (100, 100)")
                .await
                .unwrap_err();
            assert!(not_ready(&e), "{e:?}");
            // SHOW still answers, and says why.
            let r: Option<(String, String)> = s
                .query_first("SHOW STATUS LIKE 'wsrep_cluster_status'")
                .await
                .unwrap();
            assert_eq!(r.map(|r| r.1).as_deref(), Some("non-Primary"));
        }
    }
    // Heal: the two come back on their data dirs and ports; the survivor is Primary and
    // Synced again and takes writes, and nothing written before is lost.
    c.nodes[1].resume().await;
    c.nodes[2].resume().await;
    wait_for_check(c.node(0), 200, Duration::from_secs(60)).await;
    c.wait_ready(Duration::from_secs(60)).await;
    for n in &c.nodes {
        let st = n.node.as_ref().unwrap().status();
        assert_eq!(
            (st.cluster_status(), st.local_state.comment()),
            ("Primary", "Synced"),
            "{st:?}"
        );
    }
    let mut w = c.node(0).admin().await;
    for id in 6..=10 {
        retry_not_ready(&mut w, &format!("INSERT INTO heal.t VALUES ({id}, {id})")).await;
    }
    for n in &c.nodes {
        let rows = wait_backend_count(
            n,
            "SELECT COUNT(*) FROM heal.t WHERE id = v",
            Duration::from_secs(20),
            |rows| rows == 10,
        )
        .await;
        assert_eq!(rows, 10, "node at {} lost or missed writes", n.addr);
    }
    c.stop().await;
}
