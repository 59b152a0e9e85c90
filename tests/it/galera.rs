//! Galera session semantics on three nodes with real MariaDB backends: the peer progress
//! exchange, flow control, TOI result comparison, failing and concurrent DDL, strict mode,
//! and the Python migrations/oslo.db programs.

use crate::harness::{
    self, backend_count, require_mariadb, run_all, server_code, wait_backend_count, TestCluster,
    TestNode,
};
use mysql_async::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn assert_all_consistent(c: &TestCluster) {
    for (i, n) in c.nodes.iter().enumerate() {
        let s = n.running().status();
        assert!(
            s.inconsistent.is_none(),
            "node {} became Inconsistent: {:?}",
            i + 1,
            s.inconsistent
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_exchange_reports_every_node_and_the_lowest_applied() {
    require_mariadb!();
    let c = TestCluster::start(3).await;
    let mut a = c
        .node(0)
        .admin_with(&["CREATE DATABASE p", "CREATE TABLE p.t (id INT PRIMARY KEY)"])
        .await;
    for i in 0..5 {
        a.query_drop(format!("INSERT INTO p.t VALUES ({i})"))
            .await
            .unwrap();
    }
    let applied = c.node(0).running().status().last_committed;
    assert!(applied >= 7, "two TOIs and five inserts: {applied}");
    // Every node learns every member's applied seqno within a few report intervals.
    for n in &c.nodes {
        let ok = TestNode::eventually(Duration::from_secs(10), || {
            let p = n.running().peer_progress();
            p.len() == 3 && p.iter().all(|x| x.live && x.applied.0 >= applied)
        })
        .await;
        assert!(ok, "progress on a node: {:?}", n.running().peer_progress());
        assert!(n
            .running()
            .lowest_live_applied()
            .is_some_and(|s| s.0 >= applied));
    }
    // A stopped node stops being live; the others' lowest applied no longer waits for it.
    let mut it = c.nodes.into_iter();
    let (n1, n2, n3) = (
        it.next().expect("n1"),
        it.next().expect("n2"),
        it.next().expect("n3"),
    );
    n3.stop().await;
    let gone = TestNode::eventually(Duration::from_secs(10), || {
        n1.running()
            .peer_progress()
            .iter()
            .any(|x| x.node.0 == 3 && !x.live && x.age > Duration::from_secs(1))
    })
    .await;
    assert!(gone, "{:?}", n1.running().peer_progress());
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_control_pauses_writers_while_a_backend_is_stopped_and_releases_after() {
    require_mariadb!();
    let c = TestCluster::start_with(3, |cfg| {
        cfg.fc_limit = 5;
        cfg.fc_factor = 0.5;
    })
    .await;
    c.setup(
        &[
            "CREATE DATABASE fc",
            "CREATE TABLE fc.t (id INT AUTO_INCREMENT PRIMARY KEY, w INT, i INT)",
        ],
        "fc.t",
    )
    .await;
    c.node(2).signal_backend("STOP");
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3u64 {
        let port = c.node(w as usize % 2).port();
        let (acked, stop) = (acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut conn = harness::admin_at(port).await;
            for i in 0..200u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                conn.query_drop(format!("INSERT INTO fc.t (w, i) VALUES ({w}, {i})"))
                    .await
                    .expect("insert");
                acked.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Node 3's queue passes fc_limit: it asks, and the writers of nodes 1 and 2 pause (each
    // node hears the request on its own; counting starts once both have).
    let engaged = TestNode::eventually(Duration::from_secs(20), || {
        (0..2).all(|i| c.node(i).running().status().flow_control_active)
    })
    .await;
    let during = acked.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_pause = acked.load(Ordering::Relaxed);
    let s1 = c.node(0).running().status();
    let s3 = c.node(2).running().status();
    c.node(2).signal_backend("CONT");
    assert!(engaged, "flow control never engaged: {s1:?}");
    assert!(
        after_pause - during <= 6,
        "writers kept committing while paused: {during} -> {after_pause}"
    );
    assert!(s1.flow_control_paused_ns > 0 && s1.flow_control_paused > 0.0);
    assert!(s1.flow_control_recv >= 1, "{s1:?}");
    assert!(s3.flow_control_sent >= 1, "{s3:?}");
    assert!(s3.recv_queue > 5, "{s3:?}");
    // Released once node 3 catches up; the writers finish.
    let released = TestNode::eventually(Duration::from_secs(30), || {
        c.nodes
            .iter()
            .all(|n| !n.running().status().flow_control_active)
    })
    .await;
    assert!(released, "flow control not released");
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .expect("writers finish")
            .expect("writer task");
    }
    c.converged("fc.t").await;
    let acked = acked.load(Ordering::Relaxed) as i64;
    for n in &c.nodes {
        assert_eq!(backend_count(n, "SELECT COUNT(*) FROM fc.t").await, acked);
    }
    let rows = harness::admin_at(c.node(0).port())
        .await
        .query::<(String, String), _>("SHOW STATUS LIKE 'wsrep_flow_control%'")
        .await
        .unwrap();
    let get = |k: &str| rows.iter().find(|r| r.0 == k).map(|r| r.1.clone());
    assert_eq!(get("wsrep_flow_control_active").as_deref(), Some("false"));
    assert!(
        get("wsrep_flow_control_recv").is_some_and(|v| v != "0"),
        "{rows:?}"
    );
    assert_all_consistent(&c);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_ddl_returns_mariadbs_error_and_no_node_becomes_inconsistent() {
    require_mariadb!();
    let c = TestCluster::start(3).await;
    let mut a = c
        .node(0)
        .admin_with(&["CREATE DATABASE f", "CREATE TABLE f.t (id INT PRIMARY KEY)"])
        .await;
    let e = a
        .query_drop("CREATE TABLE f.t (id INT PRIMARY KEY)")
        .await
        .unwrap_err();
    match &e {
        mysql_async::Error::Server(s) => {
            assert_eq!((s.code, s.state.as_str()), (1050, "42S01"));
            assert_eq!(s.message, "Table 't' already exists");
        }
        other => panic!("{other:?}"),
    }
    let mut b = c.node(1).admin().await;
    let e = b
        .query_drop("ALTER TABLE f.t ADD COLUMN x INT,, ADD COLUMN y INT")
        .await
        .unwrap_err();
    assert_eq!(server_code(&e), Some(1064), "{e:?}");
    let e = b.query_drop("DROP TABLE f.nope").await.unwrap_err();
    assert_eq!(server_code(&e), Some(1051), "{e:?}");
    // Every node refused alike: the results agree, nobody is Inconsistent, all still serve.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_all_consistent(&c);
    for (i, n) in c.nodes.iter().enumerate() {
        let mut conn = n.admin().await;
        conn.query_drop(format!("INSERT INTO f.t VALUES ({i})"))
            .await
            .unwrap();
    }
    c.converged("f.t").await;
    assert_eq!(
        backend_count(c.node(2), "SELECT COUNT(*) FROM f.t").await,
        3
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_toi_result_differs_from_the_majority_becomes_inconsistent() {
    require_mariadb!();
    let c = TestCluster::start(3).await;
    let mut a = c.node(0).admin().await;
    a.query_drop("CREATE DATABASE d").await.unwrap();
    converged_db(&c, "d").await;
    // Node 3's backend already has the table (made behind the cluster's back); nodes 1 and 2
    // create it, node 3 refuses with 1050: it is the odd one out.
    let flagged = harness::diverge_node3_by_toi(&c, &mut a, &[]).await;
    let s3 = c.node(2).running().status();
    assert!(flagged, "node 3 not flagged: {s3:?}");
    let reason = s3.inconsistent.unwrap_or_default();
    assert!(
        reason.contains("TOI") && reason.contains("1050"),
        "{reason}"
    );
    assert!(!c.node(2).running().is_ready());
    for n in &c.nodes[..2] {
        assert!(n.running().status().inconsistent.is_none());
    }
    // The node refuses clients with 1047.
    let e = match c
        .node(2)
        .connect(harness::ADMIN_USER, harness::ADMIN_PASSWORD)
        .await
    {
        Ok(mut conn) => conn.query_drop("SELECT * FROM d.x").await.unwrap_err(),
        Err(e) => e,
    };
    assert_eq!(server_code(&e), Some(1047), "{e:?}");
    c.stop().await;
}

/// Waits until every backend has database `db`.
async fn converged_db(c: &TestCluster, db: &str) {
    let sql =
        format!("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{db}'");
    for n in &c.nodes {
        let found = wait_backend_count(n, &sql, Duration::from_secs(10), |v| v == 1).await;
        assert_eq!(found, 1, "database {db} missing on a node");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alter_table_concurrent_with_writes_aborts_writers_never_the_appliers() {
    require_mariadb!();
    let c = TestCluster::start(3).await;
    let mut a = c
        .setup(
            &[
                "CREATE DATABASE al",
                "CREATE TABLE al.t (id INT PRIMARY KEY, v INT NOT NULL DEFAULT 0)",
                "INSERT INTO al.t (id) VALUES (1), (2), (3), (4), (5), (6)",
            ],
            "al.t",
        )
        .await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let deadlocks = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let port = c.node(1 + w as usize % 2).port();
        let (stop, committed, deadlocks) = (stop.clone(), committed.clone(), deadlocks.clone());
        writers.push(tokio::spawn(async move {
            let mut conn = harness::admin_at(port).await;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) && i < 2000 {
                i += 1;
                let id = 1 + (w + i) % 6;
                // A transaction (not retried by the node): 1213 reaches the client.
                let r = async {
                    conn.query_drop("BEGIN").await?;
                    conn.query_drop(format!("UPDATE al.t SET v = v + 1 WHERE id = {id}"))
                        .await?;
                    conn.query_drop(format!(
                        "INSERT INTO al.t (id, v) VALUES ({}, 1)",
                        1000 + w * 10_000 + i
                    ))
                    .await?;
                    conn.query_drop("COMMIT").await
                }
                .await;
                match r {
                    Ok(()) => {
                        committed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if server_code(&e) == Some(1213) => {
                        deadlocks.fetch_add(1, Ordering::Relaxed);
                        let _ = conn.query_drop("ROLLBACK").await;
                    }
                    Err(e) => panic!("writer on port {port}: {e:?}"),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let alters = [
        "ALTER TABLE al.t ADD COLUMN note VARCHAR(20) NULL",
        "ALTER TABLE al.t ADD INDEX (v)",
        "ALTER TABLE al.t MODIFY COLUMN v BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE al.t DROP COLUMN note",
    ];
    for alter in alters {
        a.query_drop(alter).await.expect(alter);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .expect("writers finish")
            .expect("writer task");
    }
    assert!(committed.load(Ordering::Relaxed) > 0);
    eprintln!(
        "alter under load: {} committed, {} got 1213",
        committed.load(Ordering::Relaxed),
        deadlocks.load(Ordering::Relaxed)
    );
    c.converged("al.t").await;
    assert_all_consistent(&c);
    let inserted = backend_count(c.node(0), "SELECT COUNT(*) FROM al.t WHERE id >= 1000").await;
    assert_eq!(inserted as u64, committed.load(Ordering::Relaxed));
    c.stop().await;
}

fn assert_refused(r: Result<(), mysql_async::Error>, code: u16, needle: &str) {
    match r {
        Err(mysql_async::Error::Server(s)) => {
            assert_eq!(s.code, code, "{}", s.message);
            assert!(
                s.message.contains(needle),
                "{needle:?} not in {:?}",
                s.message
            );
        }
        other => panic!("expected error {code}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_refuses_each_construct_and_permissive_gives_warnings() {
    require_mariadb!();
    use certus::config::StrictMode;
    // Strict mode is a per-node setting, as pxc_strict_mode is.
    let c = TestCluster::start_with(3, |cfg| {
        cfg.strict_mode = match cfg.node_id {
            1 => StrictMode::On,
            2 => StrictMode::Enforcing,
            _ => StrictMode::Permissive,
        }
    })
    .await;
    let mut on = c.node(0).admin().await;
    let mut enforcing = c.node(1).admin().await;
    let mut permissive = c.node(2).admin().await;
    run_all(
        &mut on,
        &[
            "CREATE DATABASE s",
            "CREATE TABLE s.i (id INT PRIMARY KEY)",
            "CREATE TABLE s.m (id INT PRIMARY KEY) ENGINE=MyISAM",
            "CREATE TABLE s.nopk (a INT) ENGINE=InnoDB",
        ],
    )
    .await;
    c.converged("s.nopk").await;

    // Non-transactional tables: refused in every mode, before anything runs.
    for conn in [&mut on, &mut enforcing, &mut permissive] {
        assert_refused(
            conn.query_drop("INSERT INTO s.m VALUES (1)").await,
            4165,
            "`s`.`m` uses the MyISAM storage engine",
        );
        assert_refused(
            conn.query_drop("UPDATE s.i JOIN s.m ON s.i.id = s.m.id SET s.i.id = 5")
                .await,
            4165,
            "MyISAM",
        );
    }
    on.query_drop("USE s").await.unwrap();
    assert_refused(on.query_drop("DELETE FROM m").await, 4165, "`s`.`m`");
    assert_refused(
        on.exec_drop("INSERT INTO s.m VALUES (?)", (2,)).await,
        4165,
        "MyISAM",
    );
    // A prepared INSERT into a table a TOI then turns into MyISAM is refused at execution.
    on.query_drop("CREATE TABLE s.later (id INT PRIMARY KEY)")
        .await
        .unwrap();
    let later = on.prep("INSERT INTO s.later VALUES (?)").await.unwrap();
    on.exec_drop(&later, (1,)).await.unwrap();
    on.query_drop("ALTER TABLE s.later ENGINE=MyISAM")
        .await
        .unwrap();
    assert_refused(on.exec_drop(&later, (2,)).await, 4165, "`s`.`later`");
    // A batch with one such write runs none of its statements.
    assert_refused(
        on.query_drop("INSERT INTO s.i VALUES (11); INSERT INTO s.m VALUES (3)")
            .await,
        4165,
        "MyISAM",
    );

    // Tables without a primary key: refused only by enforcing.
    on.query_drop("INSERT INTO s.nopk VALUES (1)")
        .await
        .unwrap();
    permissive
        .query_drop("INSERT INTO s.nopk VALUES (2)")
        .await
        .unwrap();
    assert_refused(
        enforcing.query_drop("INSERT INTO s.nopk VALUES (3)").await,
        1173,
        "`s`.`nopk` has none",
    );
    enforcing
        .query_drop("INSERT INTO s.i VALUES (1)")
        .await
        .unwrap();

    // Constructs refused in on and enforcing; permissive ignores table locks with a warning.
    for conn in [&mut on, &mut enforcing] {
        assert_refused(
            conn.query_drop("LOCK TABLES s.i WRITE").await,
            1235,
            "LOCK TABLES",
        );
        assert_refused(
            conn.query_drop("UNLOCK TABLES").await,
            1235,
            "UNLOCK TABLES",
        );
    }
    permissive
        .query_drop("LOCK TABLES s.i WRITE")
        .await
        .unwrap();
    let warnings: Vec<(String, u16, String)> = permissive.query("SHOW WARNINGS").await.unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].1, 4165);
    assert!(
        warnings[0].2.contains("LOCK TABLES is ignored"),
        "{warnings:?}"
    );
    // The lock was not taken: another node's session writes the table meanwhile.
    enforcing
        .query_drop("INSERT INTO s.i VALUES (2)")
        .await
        .unwrap();
    permissive
        .query_drop("INSERT INTO s.i VALUES (3)")
        .await
        .unwrap();
    permissive.query_drop("UNLOCK TABLES").await.unwrap();
    let warnings: Vec<(String, u16, String)> = permissive.query("SHOW WARNINGS").await.unwrap();
    assert!(warnings
        .iter()
        .any(|w| w.2.contains("UNLOCK TABLES is ignored")));
    for conn in [&mut on, &mut enforcing, &mut permissive] {
        for (sql, needle) in [
            ("FLUSH TABLES WITH READ LOCK", "FLUSH TABLES WITH READ LOCK"),
            ("SELECT GET_LOCK('x', 1)", "GET_LOCK"),
            ("XA START 'x'", "XA"),
            ("SET sql_log_bin = 0", "sql_log_bin"),
            ("BINLOG 'AAAA'", "BINLOG"),
        ] {
            assert_refused(conn.query_drop(sql).await, 1235, needle);
        }
    }
    c.converged("s.i").await;
    c.converged("s.nopk").await;
    for n in &c.nodes {
        assert_eq!(backend_count(n, "SELECT COUNT(*) FROM s.m").await, 0);
        assert_eq!(backend_count(n, "SELECT COUNT(*) FROM s.i").await, 3);
        assert_eq!(backend_count(n, "SELECT COUNT(*) FROM s.nopk").await, 2);
    }
    assert_all_consistent(&c);
    c.stop().await;
}

/// The venv's Python when it has alembic and oslo.db (scripts/test.sh installs them); None
/// (skipped loudly) otherwise, unless CI is set.
fn python_with(modules: &str) -> Option<std::path::PathBuf> {
    let python = harness::python()?;
    let has = std::process::Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .status()
        .is_ok_and(|s| s.success());
    if !has {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but the venv lacks {modules} (pip install -r tests/requirements.txt)"
        );
        eprintln!("SKIPPED: the venv lacks {modules} (pip install -r tests/requirements.txt)");
        return None;
    }
    Some(python)
}

async fn run_py_against(
    c: &TestCluster,
    python: std::path::PathBuf,
    script: &'static str,
) -> String {
    let mut args = vec![
        harness::ADMIN_USER.to_string(),
        harness::ADMIN_PASSWORD.to_string(),
    ];
    args.extend(c.nodes.iter().map(|n| n.port().to_string()));
    let run = tokio::time::timeout(
        Duration::from_secs(240),
        tokio::task::spawn_blocking(move || harness::run_python(&python, script, &args)),
    )
    .await
    .expect("the python program finishes in time");
    if run.is_err() {
        for (i, n) in c.nodes.iter().enumerate() {
            let s = n.running().status();
            eprintln!(
                "node {}: primary {} inconsistent {:?} leader {:?}",
                i + 1,
                s.primary,
                s.inconsistent,
                s.leader
            );
        }
    }
    run.expect("python task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alembic_migration_through_one_node_while_dml_runs_through_the_others() {
    require_mariadb!();
    let Some(python) = python_with("alembic, pymysql") else {
        return;
    };
    let c = TestCluster::start(3).await;
    let out = run_py_against(&c, python, "alembic_migration.py").await;
    eprintln!("{out}");
    for case in [
        "ok upgrade to head under load",
        "ok schemas and data identical",
        "ok every acknowledged insert is there",
    ] {
        assert!(out.contains(case), "missing {case:?} in:\n{out}");
    }
    assert_all_consistent(&c);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oslo_db_deadlock_retry_increments_through_all_nodes_lose_nothing() {
    require_mariadb!();
    let Some(python) = python_with("oslo_db, pymysql") else {
        return;
    };
    let c = TestCluster::start(3).await;
    let out = run_py_against(&c, python, "oslo_counter.py").await;
    eprintln!("{out}");
    assert!(
        out.contains("ok counters equal the acknowledged increments on every node"),
        "{out}"
    );
    assert_all_consistent(&c);
    c.stop().await;
}
