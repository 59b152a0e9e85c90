//! An Inconsistent node stays Inconsistent across restarts: grastate.dat says `seqno: -1`,
//! `safe_to_bootstrap: 0`, the `inconsistent` marker holds the reason, and the node refuses
//! clients at every start until an operator re-provisions its backend and removes the marker.
//! Three nodes, real MariaDB backends.

use crate::harness::{self, require_mariadb, server_code, TestCluster, TestNode};
use mysql_async::prelude::*;
use std::time::Duration;

fn grastate(n: &TestNode) -> String {
    std::fs::read_to_string(n.data_dir().join("grastate.dat")).unwrap_or_default()
}

fn marker(n: &TestNode) -> std::path::PathBuf {
    n.data_dir().join(certus::recovery::INCONSISTENT_FILE)
}

/// A login and one statement through `n` as `user`: the server error code, or None on success.
async fn query_code(n: &TestNode, user: &str, password: &str, sql: &str) -> Option<u16> {
    match n.connect(user, password).await {
        Ok(mut c) => c.query_drop(sql).await.err().and_then(|e| server_code(&e)),
        Err(e) => server_code(&e),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inconsistent_node_stays_out_after_a_restart_until_its_backend_is_reprovisioned() {
    require_mariadb!();
    let mut c = TestCluster::start(3).await;
    let mut a = c
        .node(0)
        .admin_with(&[
            "CREATE DATABASE d",
            // An account made through the cluster: it exists on every backend, a re-provisioned
            // one included (the harness's admin account is local to each template copy).
            "CREATE USER app@'%' IDENTIFIED BY 'app-pw'",
            "GRANT ALL PRIVILEGES ON d.* TO app@'%'",
        ])
        .await;
    harness::wait_backend_count(
        c.node(2),
        "SELECT COUNT(*) FROM mysql.user WHERE user = 'app'",
        Duration::from_secs(10),
        |v| v == 1,
    )
    .await;
    // Node 3's backend gets a table and a row behind the cluster's back (stale data), and the
    // cluster's CREATE of that table then fails on node 3 alone (1050).
    let flagged = harness::diverge_node3_by_toi(&c, &mut a, &["INSERT INTO d.x VALUES (1)"]).await;
    assert!(flagged, "node 3 never became Inconsistent");
    a.query_drop("INSERT INTO d.x VALUES (10), (11)")
        .await
        .unwrap();
    // Recorded durably, the way Galera marks a node that needs a state transfer.
    let recorded =
        TestNode::eventually(Duration::from_secs(5), || marker(c.node(2)).exists()).await;
    assert!(recorded, "no marker written");
    let why = std::fs::read_to_string(marker(c.node(2))).unwrap();
    assert!(why.contains("1050"), "{why}");
    assert!(
        grastate(c.node(2)).contains("seqno:   -1"),
        "{}",
        grastate(c.node(2))
    );

    // A clean stop keeps seqno -1 and safe_to_bootstrap 0; the restart does not bring it back.
    c.nodes[2].halt().await;
    let g = grastate(c.node(2));
    assert!(
        g.contains("seqno:   -1") && g.contains("safe_to_bootstrap: 0"),
        "{g}"
    );
    // `certus recover` prints the backend's position but leaves -1; bootstrap refuses, even
    // with --force.
    let cfg = c.node(2).config().clone();
    let position = certus::recovery::recover(&cfg).await.unwrap();
    assert!(position.seqno.0 > 0, "{position}");
    let g = grastate(c.node(2));
    assert!(
        g.contains("seqno:   -1") && g.contains("safe_to_bootstrap: 0"),
        "{g}"
    );
    let refused =
        certus::recovery::bootstrap(&cfg, certus::recovery::BootstrapOptions { force: true })
            .await
            .unwrap_err()
            .to_string();
    assert!(refused.contains("Inconsistent"), "{refused}");
    c.nodes[2].resume().await;
    let reason = c.node(2).running().status().inconsistent;
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.contains("before the restart") && r.contains("1050")),
        "{reason:?}"
    );
    // It stays out (never ready) and never serves its stale row, whoever asks.
    let ready =
        TestNode::eventually(Duration::from_secs(5), || c.node(2).running().is_ready()).await;
    assert!(
        !ready,
        "an Inconsistent node came back ready after a restart"
    );
    assert_eq!(
        query_code(c.node(2), "app", "app-pw", "SELECT * FROM d.x").await,
        Some(1047)
    );
    assert_eq!(
        query_code(
            c.node(2),
            harness::ADMIN_USER,
            harness::ADMIN_PASSWORD,
            "SELECT * FROM d.x"
        )
        .await,
        Some(1047)
    );
    // The others serve on.
    a.query_drop("INSERT INTO d.x VALUES (12)").await.unwrap();

    // The runbook: stop the node, give it an empty backend, remove the marker, start it. It
    // rebuilds its backend from the cluster's log and comes back Synced, without the stray row.
    c.nodes[2].halt().await;
    std::fs::remove_dir_all(c.node(2).data_dir().join("mariadb")).unwrap();
    std::fs::remove_file(marker(c.node(2))).unwrap();
    c.nodes[2].resume().await;
    let back =
        TestNode::eventually(Duration::from_secs(60), || c.node(2).running().is_ready()).await;
    assert!(
        back,
        "node 3 not Synced after re-provisioning: {:?}",
        c.node(2).running().status()
    );
    assert!(c.node(2).running().status().inconsistent.is_none());
    let mut app = c.node(2).connect("app", "app-pw").await.unwrap();
    let ids: Vec<u32> = app.query("SELECT id FROM d.x ORDER BY id").await.unwrap();
    assert_eq!(ids, vec![10, 11, 12]);
    drop(app);
    c.converged("d.x").await;
    for n in &c.nodes {
        assert!(n.running().status().inconsistent.is_none());
    }
    c.stop().await;
}
