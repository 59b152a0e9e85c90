//! The replicated write path on three nodes with three managed MariaDB backends.

use crate::harness::{
    self, backend_count, is_deadlock, require_mariadb, retry_not_ready, run_all, TestCluster,
};
use mysql_async::prelude::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_every_node_converge_on_all_backends() {
    require_mariadb!();
    let c = TestCluster::start(3).await;
    let mut a = c.node(0).admin_with(&[
        "CREATE DATABASE r",
        "CREATE TABLE r.t (id INT PRIMARY KEY, b BLOB, dt DATETIME(6), d DECIMAL(12,3), j JSON, n INT NULL, note VARCHAR(20))",
    ]).await;
    for (i, n) in c.nodes.iter().enumerate() {
        let mut s = n.admin().await;
        let base = (i as i32 + 1) * 100;
        // Multi-row autocommit insert with every type.
        s.exec_drop(
            "INSERT INTO r.t VALUES (?, ?, '2024-02-29 12:34:56.123456', -123.456, '{\"k\": [1, 2]}', NULL, 'a'), (?, ?, NOW(6), 1.5, '[]', 7, 'b')",
            (base, vec![0u8, 0xff, 0x80, i as u8], base + 1, vec![0xfeu8; 1000]),
        )
        .await
        .unwrap();
        s.query_drop(format!(
            "UPDATE r.t SET note = 'upd', n = n + 1 WHERE id = {}",
            base + 1
        ))
        .await
        .unwrap();
        // A multi-statement transaction.
        s.query_drop("BEGIN").await.unwrap();
        s.query_drop(format!(
            "INSERT INTO r.t (id, note) VALUES ({}, 'tx')",
            base + 2
        ))
        .await
        .unwrap();
        s.query_drop(format!("DELETE FROM r.t WHERE id = {base}"))
            .await
            .unwrap();
        s.query_drop(format!("UPDATE r.t SET d = d * 2 WHERE id = {}", base + 1))
            .await
            .unwrap();
        s.query_drop("COMMIT").await.unwrap();
        // Read-your-writes on the origin, right after COMMIT.
        let seen: Option<String> = s
            .query_first(format!("SELECT note FROM r.t WHERE id = {}", base + 2))
            .await
            .unwrap();
        assert_eq!(seen.as_deref(), Some("tx"));
    }
    c.converged("r.t").await;
    for n in &c.nodes {
        assert_eq!(backend_count(n, "SELECT COUNT(*) FROM r.t").await, 6);
    }
    // A read-only transaction commits without entering the log.
    let before = backend_count(c.node(0), "SELECT applied_seqno FROM certus.state").await;
    a.query_drop("BEGIN").await.unwrap();
    let _: Vec<i32> = a.query("SELECT id FROM r.t").await.unwrap();
    a.query_drop("COMMIT").await.unwrap();
    a.query_drop("UPDATE r.t SET note = note WHERE id = 101")
        .await
        .unwrap();
    assert_eq!(
        backend_count(c.node(0), "SELECT applied_seqno FROM certus.state").await,
        before
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_updates_on_two_nodes_abort_the_later_committer() {
    require_mariadb!();
    let c = TestCluster::start(3).await;
    let mut a = c
        .setup(
            &[
                "CREATE DATABASE cf",
                "CREATE TABLE cf.t (id INT PRIMARY KEY, v INT, u INT, UNIQUE KEY uk (u))",
                "INSERT INTO cf.t VALUES (1, 0, 1)",
            ],
            "cf.t",
        )
        .await;
    let mut b = c.node(1).admin().await;
    // Cross-node conflict on one row.
    a.query_drop("BEGIN").await.unwrap();
    b.query_drop("BEGIN").await.unwrap();
    a.query_drop("UPDATE cf.t SET v = 10 WHERE id = 1")
        .await
        .unwrap();
    b.query_drop("UPDATE cf.t SET v = 20 WHERE id = 1")
        .await
        .unwrap();
    a.query_drop("COMMIT").await.unwrap();
    let e = b.query_drop("COMMIT").await.unwrap_err();
    assert!(is_deadlock(&e), "{e:?}");
    c.converged("cf.t").await;
    for n in &c.nodes {
        assert_eq!(
            backend_count(n, "SELECT v FROM cf.t WHERE id = 1").await,
            10
        );
    }
    // Unique-key conflict across nodes: different primary keys, the same UNIQUE value.
    let mut b = c.node(1).admin().await;
    a.query_drop("BEGIN").await.unwrap();
    b.query_drop("BEGIN").await.unwrap();
    a.query_drop("INSERT INTO cf.t VALUES (2, 0, 42)")
        .await
        .unwrap();
    b.query_drop("INSERT INTO cf.t VALUES (3, 0, 42)")
        .await
        .unwrap();
    a.query_drop("COMMIT").await.unwrap();
    let e = b.query_drop("COMMIT").await.unwrap_err();
    assert!(is_deadlock(&e), "{e:?}");
    c.converged("cf.t").await;
    for n in &c.nodes {
        assert_eq!(
            backend_count(n, "SELECT COUNT(*) FROM cf.t WHERE u = 42").await,
            1
        );
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_node_lost_update_is_refused() {
    require_mariadb!();
    let c = TestCluster::start(3).await;
    let n = c.node(0);
    n.admin_with(&[
        "CREATE DATABASE lu",
        "CREATE TABLE lu.counter (id INT PRIMARY KEY, v INT)",
        "INSERT INTO lu.counter VALUES (1, 0)",
    ])
    .await;
    let mut s1 = n.admin().await;
    let mut s2 = n.admin().await;
    s1.query_drop("BEGIN").await.unwrap();
    s2.query_drop("BEGIN").await.unwrap();
    let v1: i32 = s1
        .query_first("SELECT v FROM lu.counter WHERE id = 1")
        .await
        .unwrap()
        .unwrap();
    let v2: i32 = s2
        .query_first("SELECT v FROM lu.counter WHERE id = 1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((v1, v2), (0, 0));
    s1.query_drop(format!("UPDATE lu.counter SET v = {} WHERE id = 1", v1 + 1))
        .await
        .unwrap();
    // s2's write waits for s1's row lock; run it concurrently with s1's COMMIT.
    let t2 = tokio::spawn(async move {
        let w = s2
            .query_drop(format!("UPDATE lu.counter SET v = {} WHERE id = 1", v2 + 1))
            .await;
        let c = match &w {
            Ok(()) => s2.query_drop("COMMIT").await,
            Err(_) => Ok(()),
        };
        (w, c)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r1 = s1.query_drop("COMMIT").await;
    let (w2, c2) = t2.await.unwrap();
    let r2 = w2.and(c2);
    let aborted = [&r1, &r2]
        .iter()
        .filter(|r| matches!(r, Err(e) if is_deadlock(e)))
        .count();
    let committed = [&r1, &r2].iter().filter(|r| r.is_ok()).count();
    assert_eq!((committed, aborted), (1, 1), "s1: {r1:?}, s2: {r2:?}");
    c.converged("lu.counter").await;
    for n in &c.nodes {
        assert_eq!(
            backend_count(n, "SELECT v FROM lu.counter WHERE id = 1").await,
            1
        );
    }
    c.stop().await;
}

/// `wsrep_local_cert_failures` of a node, through SQL.
async fn cert_failures(n: &harness::TestNode) -> u64 {
    let mut s = n.admin().await;
    let row: Option<(String, String)> = s
        .query_first("SHOW STATUS LIKE 'wsrep_local_cert_failures'")
        .await
        .unwrap();
    row.and_then(|(_, v)| v.parse().ok())
        .expect("wsrep_local_cert_failures")
}

/// `first` runs on one session and keeps its transaction open; `second` then runs on another
/// session of the same node, waits for `first`'s row lock, and commits once `first` has
/// committed. Returns how each COMMIT went.
async fn race_for_a_row_lock(
    n: &harness::TestNode,
    first: &'static [&'static str],
    second_setup: &'static [&'static str],
    second: &'static [&'static str],
) -> (
    Result<(), mysql_async::Error>,
    Result<(), mysql_async::Error>,
) {
    let mut s1 = n.admin().await;
    let mut s2 = n.admin().await;
    for sql in second_setup {
        s2.query_drop(*sql).await.unwrap();
    }
    s1.query_drop("BEGIN").await.unwrap();
    for sql in first {
        s1.query_drop(*sql).await.unwrap();
    }
    let t2 = tokio::spawn(async move {
        s2.query_drop("BEGIN").await?;
        for sql in second {
            s2.query_drop(*sql).await?;
        }
        // The lock came free, so `first` committed on the backend; give the node a moment to
        // count that commit as applied, as it does right after.
        tokio::time::sleep(Duration::from_millis(100)).await;
        s2.query_drop("COMMIT").await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r1 = s1.query_drop("COMMIT").await;
    (r1, t2.await.unwrap())
}

/// Transactions that read only under locks wait for a same-node transaction's row locks and
/// then commit over its result, as on one MariaDB: certification counts them as having seen
/// every write set committed before they locked its rows (docs/certification.md, "last_seen
/// of a transaction that only read under locks"). A plain read still makes the write a lost
/// update that aborts (`same_node_lost_update_is_refused`), and so does any transaction whose
/// session runs below REPEATABLE READ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_node_writes_that_read_under_locks_wait_instead_of_aborting() {
    require_mariadb!();
    let c = TestCluster::start(3).await;
    let n = c.node(0);
    n.admin_with(&[
        "CREATE DATABASE lk",
        "CREATE TABLE lk.counter (id INT PRIMARY KEY, v INT)",
        "INSERT INTO lk.counter VALUES (1, 0)",
    ])
    .await;
    async fn value(n: &harness::TestNode) -> i64 {
        backend_count(n, "SELECT v FROM lk.counter WHERE id = 1").await
    }
    let failures = cert_failures(n).await;

    // Two increments, the second waiting on the first's row lock.
    const INCREMENT: &[&str] = &["UPDATE lk.counter SET v = v + 1 WHERE id = 1"];
    let (r1, r2) = race_for_a_row_lock(n, INCREMENT, &[], INCREMENT).await;
    assert!(r1.is_ok() && r2.is_ok(), "increments: {r1:?}, {r2:?}");
    assert_eq!(value(n).await, 2);

    // Read with FOR UPDATE, then write what was read plus one: the oslo.db quota pattern.
    const READ_FOR_UPDATE: &[&str] = &[
        "SELECT v FROM lk.counter WHERE id = 1 FOR UPDATE",
        "UPDATE lk.counter SET v = 10 WHERE id = 1",
    ];
    const THEN_ADD: &[&str] = &[
        "SELECT v FROM lk.counter WHERE id = 1 FOR UPDATE",
        "UPDATE lk.counter SET v = v + 5 WHERE id = 1",
    ];
    let (r1, r2) = race_for_a_row_lock(n, READ_FOR_UPDATE, &[], THEN_ADD).await;
    assert!(r1.is_ok() && r2.is_ok(), "FOR UPDATE: {r1:?}, {r2:?}");
    assert_eq!(value(n).await, 15);
    assert_eq!(
        cert_failures(n).await,
        failures,
        "a lock wait ended in an abort"
    );

    // The same race with the waiting session at READ COMMITTED, where InnoDB may read without
    // locks inside a write: the waiter keeps the last_seen it began with, and aborts.
    let (r1, r2) = race_for_a_row_lock(
        n,
        INCREMENT,
        &["SET SESSION tx_isolation = 'READ-COMMITTED'"],
        INCREMENT,
    )
    .await;
    assert!(r1.is_ok(), "{r1:?}");
    assert!(
        matches!(&r2, Err(e) if is_deadlock(e)),
        "READ COMMITTED: {r2:?}"
    );
    assert_eq!(value(n).await, 16);

    // Autocommit increments of one row from several clients of one node: none is refused.
    const CLIENTS: usize = 6;
    const EACH: usize = 25;
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let mut s = n.admin().await;
        tasks.push(tokio::spawn(async move {
            let mut refused = Vec::new();
            for _ in 0..EACH {
                if let Err(e) = s
                    .query_drop("UPDATE lk.counter SET v = v + 1 WHERE id = 1")
                    .await
                {
                    refused.push(e.to_string());
                }
            }
            refused
        }));
    }
    let mut refused = Vec::new();
    for t in tasks {
        refused.extend(t.await.unwrap());
    }
    assert!(refused.is_empty(), "refused increments: {refused:?}");
    assert_eq!(value(n).await, 16 + (CLIENTS * EACH) as i64);
    c.converged("lk.counter").await;
    for other in &c.nodes {
        assert_eq!(value(other).await, 16 + (CLIENTS * EACH) as i64);
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_keys_conflict_and_cascade_everywhere() {
    require_mariadb!();
    let c = TestCluster::start(3).await;
    let mut a = c.setup(&[
        "CREATE DATABASE fk",
        "CREATE TABLE fk.parent (id INT PRIMARY KEY)",
        "CREATE TABLE fk.child (id INT PRIMARY KEY, pid INT, FOREIGN KEY (pid) REFERENCES fk.parent (id) ON DELETE CASCADE)",
        "INSERT INTO fk.parent VALUES (1), (2)",
        "INSERT INTO fk.child VALUES (20, 2), (21, 2)",
    ], "fk.child").await;
    // A child insert on A races a parent delete on B.
    let mut b = c.node(1).admin().await;
    a.query_drop("BEGIN").await.unwrap();
    b.query_drop("BEGIN").await.unwrap();
    a.query_drop("INSERT INTO fk.child VALUES (10, 1)")
        .await
        .unwrap();
    b.query_drop("DELETE FROM fk.parent WHERE id = 1")
        .await
        .unwrap();
    let ra = a.query_drop("COMMIT").await;
    let rb = b.query_drop("COMMIT").await;
    assert!(
        ra.is_ok() != rb.is_ok(),
        "exactly one must commit: {ra:?} {rb:?}"
    );
    let loser = if ra.is_ok() { &rb } else { &ra };
    assert!(matches!(loser, Err(e) if is_deadlock(e)), "{loser:?}");
    c.converged("fk.child").await;
    c.converged("fk.parent").await;
    for n in &c.nodes {
        let orphans = backend_count(n, "SELECT COUNT(*) FROM fk.child c LEFT JOIN fk.parent p ON p.id = c.pid WHERE p.id IS NULL").await;
        assert_eq!(orphans, 0, "orphan children on a backend");
    }
    // ON DELETE CASCADE replicates: the children of parent 2 are gone everywhere.
    let mut cn = c.node(2).admin().await;
    cn.query_drop("DELETE FROM fk.parent WHERE id = 2")
        .await
        .unwrap();
    c.converged("fk.child").await;
    for n in &c.nodes {
        assert_eq!(
            backend_count(n, "SELECT COUNT(*) FROM fk.child WHERE pid = 2").await,
            0
        );
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_failure_makes_the_node_inconsistent_not_divergent() {
    require_mariadb!();
    let c = TestCluster::start(3).await;
    let mut a = c
        .setup(
            &[
                "CREATE DATABASE af",
                "CREATE TABLE af.t (id INT PRIMARY KEY, v INT)",
                "INSERT INTO af.t VALUES (1, 1), (2, 2)",
            ],
            "af.t",
        )
        .await;
    // Remove a row behind certus's back on node 3's backend.
    let mut direct = c.node(2).service_conn().await;
    direct
        .query_drop("SET SESSION sql_log_bin = 0")
        .await
        .unwrap();
    direct
        .query_drop("DELETE FROM af.t WHERE id = 2")
        .await
        .unwrap();
    let mut c3 = c.node(2).admin().await;
    retry_not_ready(&mut a, "UPDATE af.t SET v = 20 WHERE id = 2").await;
    // Node 3 cannot replay the update (1032): it must stop serving instead of diverging.
    let node3 = c.node(2).node.as_ref().unwrap();
    let inconsistent =
        harness::TestNode::eventually(Duration::from_secs(10), || !node3.is_ready()).await;
    assert!(inconsistent, "node 3 kept serving after an apply failure");
    let e = c3.query_drop("SELECT * FROM af.t").await.unwrap_err();
    assert!(
        matches!(e, mysql_async::Error::Server(ref s) if s.code == 1047),
        "{e:?}"
    );
    let e = c
        .node(2)
        .connect(harness::ADMIN_USER, harness::ADMIN_PASSWORD)
        .await
        .unwrap_err();
    assert!(
        matches!(e, mysql_async::Error::Server(ref s) if s.code == 1047),
        "{e:?}"
    );
    // The other two keep serving and agree.
    let mut b = c.node(1).admin().await;
    b.query_drop("UPDATE af.t SET v = 30 WHERE id = 1")
        .await
        .unwrap();
    let v: Option<i32> = a
        .query_first("SELECT v FROM af.t WHERE id = 2")
        .await
        .unwrap();
    assert_eq!(v, Some(20));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_under_write_load_catches_up_and_loses_nothing() {
    require_mariadb!();
    let c = TestCluster::start(3).await;
    c.node(1)
        .admin_with(&[
            "CREATE DATABASE bk",
            "CREATE TABLE bk.t (id INT PRIMARY KEY, v INT)",
        ])
        .await;
    let writer_addr = c.node(1).port();
    let writer = tokio::spawn(async move {
        // Deliberately the driver's defaults (prefer_socket): the node must not reveal the
        // backend's socket, or the writes would bypass replication.
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(writer_addr)
            .user(Some(harness::ADMIN_USER))
            .pass(Some(harness::ADMIN_PASSWORD));
        let mut conn = mysql_async::Conn::new(opts).await.unwrap();
        let mut acked = Vec::new();
        for i in 0..300 {
            if conn
                .exec_drop("INSERT INTO bk.t VALUES (?, ?)", (i, i))
                .await
                .is_ok()
            {
                acked.push(i);
            }
        }
        acked
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // kill -9 node 1's MariaDB while writes stream in through node 2.
    c.node(0).signal_backend("9");
    let acked = writer.await.unwrap();
    // On a loaded machine some writes may be refused (1047 while a leader is re-elected);
    // what matters is that every acknowledged one survives.
    assert!(
        acked.len() > 30,
        "too few acknowledged writes: {}",
        acked.len()
    );
    // Node 1's supervisor restarts its backend; its applier reconnects and catches up.
    c.converged("bk.t").await;
    for n in &c.nodes {
        assert_eq!(
            backend_count(n, "SELECT COUNT(*) FROM bk.t").await,
            acked.len() as i64
        );
        assert!(n.node.as_ref().unwrap().is_ready() || TestCluster::wait_node_ready(n).await);
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_increment_ids_never_collide_across_nodes() {
    require_mariadb!();
    let c = TestCluster::start(3).await;
    c.node(0)
        .admin_with(&[
            "CREATE DATABASE ai",
            "CREATE TABLE ai.t (id INT AUTO_INCREMENT PRIMARY KEY, who VARCHAR(32))",
        ])
        .await;
    let mut tasks = Vec::new();
    for (ni, n) in c.nodes.iter().enumerate() {
        for si in 0..8 {
            let port = n.port();
            tasks.push(tokio::spawn(async move {
                let mut conn = harness::admin_at(port).await;
                let mut errors = Vec::new();
                for k in 0..5 {
                    let who = format!("{ni}-{si}-{k}");
                    match conn
                        .exec_drop("INSERT INTO ai.t (who) VALUES (?)", (&who,))
                        .await
                    {
                        Ok(()) => {
                            let id: u64 = conn
                                .query_first("SELECT LAST_INSERT_ID()")
                                .await
                                .unwrap()
                                .unwrap();
                            let got: Option<String> = conn
                                .exec_first("SELECT who FROM ai.t WHERE id = ?", (id,))
                                .await
                                .unwrap();
                            assert_eq!(
                                got.as_deref(),
                                Some(who.as_str()),
                                "LAST_INSERT_ID() is not this client's row"
                            );
                        }
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                errors
            }));
        }
    }
    for t in tasks {
        let errors = t.await.unwrap();
        assert!(errors.is_empty(), "inserts failed: {errors:?}");
    }
    c.converged("ai.t").await;
    for n in &c.nodes {
        assert_eq!(
            backend_count(n, "SELECT COUNT(*) FROM ai.t").await,
            3 * 8 * 5
        );
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_ddl_needs_the_clients_own_privileges() {
    require_mariadb!();
    let n = harness::TestNode::start().await;
    let mut admin = n
        .admin_with(&[
            "CREATE DATABASE owned",
            "CREATE DATABASE other",
            "CREATE USER 'dev'@'%' IDENTIFIED BY 'devpw'",
            "GRANT CREATE, DROP, SELECT, INSERT ON owned.* TO 'dev'@'%'",
        ])
        .await;
    let mut dev = n.connect("dev", "devpw").await.unwrap();
    let code = |e: mysql_async::Error| match e {
        mysql_async::Error::Server(s) => (s.code, s.message),
        other => panic!("{other:?}"),
    };
    let (c, m) = code(
        dev.query_drop("CREATE TABLE other.t (id INT PRIMARY KEY)")
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (c, m.as_str()),
        (
            1142,
            "CREATE command denied to user 'dev'@'localhost' for table `other`.`t`"
        )
    );
    let (c, _) = code(dev.query_drop("CREATE DATABASE mine").await.unwrap_err());
    assert_eq!(c, 1044);
    let (c, m) = code(dev.query_drop("CREATE USER 'evil'@'%'").await.unwrap_err());
    assert_eq!((c, m.as_str()), (1227, "Access denied; you need (at least one of) the CREATE USER privilege(s) for this operation"));
    let (c, _) = code(
        dev.query_drop("GRANT ALL ON *.* TO 'dev'@'%'")
            .await
            .unwrap_err(),
    );
    assert_eq!(c, 1227);
    // What the account may do, it does.
    run_all(
        &mut dev,
        &[
            "CREATE TABLE owned.t (id INT PRIMARY KEY)",
            "INSERT INTO owned.t VALUES (1)",
            "DROP TABLE owned.t",
        ],
    )
    .await;
    // Nothing was created behind the refusals.
    let users: Vec<String> = admin
        .query("SELECT User FROM mysql.user WHERE User = 'evil'")
        .await
        .unwrap();
    assert!(users.is_empty());
    let t: Vec<String> = admin.query("SHOW TABLES FROM other").await.unwrap();
    assert!(t.is_empty());
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn causal_reads_see_what_another_node_just_committed() {
    require_mariadb!();
    let c = TestCluster::start(3).await;
    let mut a = c
        .node(0)
        .admin_with(&[
            "CREATE DATABASE cr",
            "CREATE TABLE cr.t (id INT PRIMARY KEY, v INT)",
        ])
        .await;
    let mut reader = c.node(2).admin().await;
    reader
        .query_drop("SET SESSION wsrep_sync_wait = 1")
        .await
        .unwrap();
    let sw: Option<i64> = reader
        .query_first("SELECT @@wsrep_sync_wait")
        .await
        .unwrap();
    assert_eq!(sw, Some(1));
    for i in 0..30 {
        a.exec_drop("INSERT INTO cr.t VALUES (?, ?)", (i, i))
            .await
            .unwrap();
        let seen: Option<i32> = reader
            .exec_first("SELECT v FROM cr.t WHERE id = ?", (i,))
            .await
            .unwrap();
        assert_eq!(seen, Some(i), "causal read {i} missed a committed row");
    }
    // A bad value is refused as MariaDB refuses it.
    let e = reader
        .query_drop("SET SESSION wsrep_sync_wait = 99")
        .await
        .unwrap_err();
    assert!(
        matches!(e, mysql_async::Error::Server(ref s) if s.code == 1231),
        "{e:?}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brute_force_abort_frees_the_applier_and_the_victim_gets_1213() {
    require_mariadb!();
    let c = TestCluster::start(3).await;
    let mut a = c
        .setup(
            &[
                "CREATE DATABASE bf",
                "CREATE TABLE bf.t (id INT PRIMARY KEY, v INT)",
                "INSERT INTO bf.t VALUES (1, 0), (2, 0)",
            ],
            "bf.t",
        )
        .await;
    let mut b = c.node(1).admin().await;
    let before: (String, String) = b
        .query_first("SHOW STATUS LIKE 'wsrep_local_bf_aborts'")
        .await
        .unwrap()
        .unwrap();
    let kept = b.prep("UPDATE bf.t SET v = ? WHERE id = 2").await.unwrap();
    // B's session settings, which must survive the abort (oslo.db sessions turn autocommit off
    // once and never send BEGIN).
    b.query_drop("SET @marker = 42").await.unwrap();
    b.query_drop("SET SESSION sql_mode = 'ANSI_QUOTES'")
        .await
        .unwrap();
    b.query_drop("SET autocommit = 0").await.unwrap();
    // B holds the row lock in a long transaction that has not reached COMMIT.
    b.query_drop("BEGIN").await.unwrap();
    b.query_drop("UPDATE bf.t SET v = 2 WHERE id = 1")
        .await
        .unwrap();
    // A commits the same row: B's backend must not block A's write set.
    let started = std::time::Instant::now();
    a.query_drop("UPDATE bf.t SET v = 1 WHERE id = 1")
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the applier stayed blocked"
    );
    c.converged("bf.t").await;
    for n in &c.nodes {
        assert_eq!(backend_count(n, "SELECT v FROM bf.t WHERE id = 1").await, 1);
    }
    // B learns at its next statement.
    let e = b
        .query_drop("UPDATE bf.t SET v = 3 WHERE id = 2")
        .await
        .unwrap_err();
    assert!(is_deadlock(&e), "{e:?}");
    // The session goes on with the settings it made, its prepared statements too, and the
    // counter moved.
    let kept_settings: Option<(u8, Option<i64>, String)> = b
        .query_first("SELECT @@autocommit, @marker, @@sql_mode")
        .await
        .unwrap();
    assert_eq!(kept_settings, Some((0, Some(42), "ANSI_QUOTES".into())));
    b.query_drop("SELECT 1").await.unwrap();
    b.exec_drop(&kept, (5,)).await.unwrap();
    let after: (String, String) = b
        .query_first("SHOW STATUS LIKE 'wsrep_local_bf_aborts'")
        .await
        .unwrap()
        .unwrap();
    assert!(
        after.1.parse::<u64>().unwrap() > before.1.parse::<u64>().unwrap(),
        "{before:?} -> {after:?}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_write_set_blocked_by_two_open_local_transactions_aborts_both() {
    // The applier meets C's lock, the watchdog aborts C, and 25 ms later the same apply meets
    // B's lock. InnoDB's lock tables are a cache that refreshes only after 100 ms without a
    // reader: a watchdog polling every 25 ms saw C's wait for ever and never B's, and the
    // applier stayed blocked until B's client ended its transaction.
    require_mariadb!();
    let c = TestCluster::start(3).await;
    let mut a = c
        .setup(
            &[
                "CREATE DATABASE b2",
                "CREATE TABLE b2.t (id INT PRIMARY KEY, v INT)",
                "INSERT INTO b2.t VALUES (1, 0), (2, 0)",
            ],
            "b2.t",
        )
        .await;
    let mut holders = Vec::new();
    for id in [1, 2] {
        let mut h = c.node(1).admin().await;
        h.query_drop("BEGIN").await.unwrap();
        h.query_drop(format!("UPDATE b2.t SET v = 5 WHERE id = {id}"))
            .await
            .unwrap();
        holders.push(h);
    }
    // One write set that needs row 2's lock, then row 1's.
    a.query_drop("BEGIN").await.unwrap();
    a.query_drop("UPDATE b2.t SET v = 7 WHERE id = 2")
        .await
        .unwrap();
    a.query_drop("UPDATE b2.t SET v = 7 WHERE id = 1")
        .await
        .unwrap();
    a.query_drop("COMMIT").await.unwrap();
    let applied = harness::wait_backend_count(
        c.node(1),
        "SELECT SUM(v) FROM b2.t",
        Duration::from_secs(10),
        |v| v == 14,
    )
    .await;
    assert_eq!(applied, 14, "node 2's applier stayed blocked");
    for mut h in holders {
        let e = h.query_drop("SELECT 1").await.unwrap_err();
        assert!(is_deadlock(&e), "{e:?}");
    }
    c.converged("b2.t").await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autocommit_conflicts_are_retried_once_and_applied_exactly_once() {
    require_mariadb!();
    let c = TestCluster::start(3).await;
    c.setup(
        &[
            "CREATE DATABASE ar",
            "CREATE TABLE ar.c (id INT PRIMARY KEY, n INT)",
            "INSERT INTO ar.c VALUES (1, 0)",
        ],
        "ar.c",
    )
    .await;
    // Many concurrent autocommit increments of one row from every node: each acknowledged
    // increment is applied exactly once (n equals the acknowledged count), and the retry turns
    // most certification conflicts into successes.
    let mut tasks = Vec::new();
    for n in &c.nodes {
        for _ in 0..3 {
            let port = n.port();
            tasks.push(tokio::spawn(async move {
                let mut conn = harness::admin_at(port).await;
                let (mut ok, mut deadlocks) = (0u64, 0u64);
                for _ in 0..15 {
                    match conn
                        .query_drop("UPDATE ar.c SET n = n + 1 WHERE id = 1")
                        .await
                    {
                        Ok(()) => ok += 1,
                        Err(e) if is_deadlock(&e) => deadlocks += 1,
                        Err(e) => panic!("{e:?}"),
                    }
                }
                (ok, deadlocks)
            }));
        }
    }
    let (mut ok, mut deadlocks) = (0, 0);
    for t in tasks {
        let (o, d) = t.await.unwrap();
        ok += o;
        deadlocks += d;
    }
    c.converged("ar.c").await;
    for n in &c.nodes {
        assert_eq!(
            backend_count(n, "SELECT n FROM ar.c WHERE id = 1").await,
            ok as i64,
            "deadlocks: {deadlocks}"
        );
    }
    assert!(ok > 0);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_that_changes_nothing_after_a_stale_read_is_not_a_lost_update() {
    // Found by the jepsen counter workload: A reads 7000, B writes 7001, A writes the 7001 it
    // computed. A's UPDATE changes nothing, so no row event exists to certify; it must still
    // abort, because its read was stale.
    require_mariadb!();
    let c = TestCluster::start(3).await;
    c.setup(
        &[
            "CREATE DATABASE nc",
            "CREATE TABLE nc.counter (id INT PRIMARY KEY, val INT)",
            "INSERT INTO nc.counter VALUES (1, 7000)",
        ],
        "nc.counter",
    )
    .await;
    for (a_node, b_node) in [(0, 1), (0, 0)] {
        let mut a = c.node(a_node).admin().await;
        let mut b = c.node(b_node).admin().await;
        a.query_drop("BEGIN").await.unwrap();
        let v: i32 = a
            .query_first("SELECT val FROM nc.counter WHERE id = 1")
            .await
            .unwrap()
            .unwrap();
        b.query_drop(format!(
            "UPDATE nc.counter SET val = {} WHERE id = 1",
            v + 1
        ))
        .await
        .unwrap();
        c.converged("nc.counter").await;
        a.query_drop(format!(
            "UPDATE nc.counter SET val = {} WHERE id = 1",
            v + 1
        ))
        .await
        .unwrap();
        let e = a.query_drop("COMMIT").await.unwrap_err();
        assert!(
            is_deadlock(&e),
            "A's stale read-modify-write committed (nodes {a_node}/{b_node}): {e:?}"
        );
    }
    c.stop().await;
}

/// Runs `write` in XA transaction `xid` on the node's backend, prepares it and disconnects: a
/// prepared XA with no connection, as a crash leaves it.
async fn leave_prepared(n: &harness::TestNode, xid: &str, write: &str) {
    let mut direct = n.service_conn().await;
    for stmt in [
        format!("XA START '{xid}'"),
        write.to_owned(),
        format!("XA END '{xid}'"),
        format!("XA PREPARE '{xid}'"),
    ] {
        direct.query_drop(stmt).await.unwrap();
    }
    drop(direct);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_xa_left_by_a_crash_is_rolled_back_at_start() {
    require_mariadb!();
    let n = harness::TestNode::start().await;
    let a = n
        .admin_with(&[
            "CREATE DATABASE xr",
            "CREATE TABLE xr.t (id INT PRIMARY KEY, v INT)",
            "INSERT INTO xr.t VALUES (1, 1)",
        ])
        .await;
    drop(a);
    // What a crash between XA PREPARE and XA ROLLBACK leaves: a prepared XA with this node's
    // prefix, holding a row lock, with no connection.
    leave_prepared(
        &n,
        "certus_1_0123abcd",
        "UPDATE xr.t SET v = 99 WHERE id = 1",
    )
    .await;
    let n = n.restart().await;
    let mut svc = n.service_conn().await;
    let left: Vec<(i64, i64, i64, Vec<u8>)> = svc.query("XA RECOVER").await.unwrap();
    assert!(
        left.is_empty(),
        "prepared XA survived the restart: {left:?}"
    );
    // The row is free and unchanged.
    let mut a = n.admin().await;
    a.query_drop("UPDATE xr.t SET v = 2 WHERE id = 1")
        .await
        .unwrap();
    let v: Option<i32> = a
        .query_first("SELECT v FROM xr.t WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(v, Some(2));
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphaned_prepared_xa_that_blocks_a_client_is_rolled_back() {
    // What a brute-force abort leaves when its kill lands just after a pipelined XA PREPARE: a
    // prepared XA of this node with no connection, holding a row lock, its write set never
    // submitted. Nothing replicated needs the row, so the applier never meets it; a client that
    // does must not wait out innodb_lock_wait_timeout (CI saw 1205 after 50 s).
    require_mariadb!();
    let n = harness::TestNode::start().await;
    let mut a = n
        .admin_with(&[
            "CREATE DATABASE xo",
            "CREATE TABLE xo.t (id INT PRIMARY KEY, v INT)",
            "INSERT INTO xo.t VALUES (1, 1)",
        ])
        .await;
    leave_prepared(
        &n,
        "certus_1_0badc0de",
        "UPDATE xo.t SET v = 99 WHERE id = 1",
    )
    .await;
    a.query_drop("SET SESSION innodb_lock_wait_timeout = 20")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    a.query_drop("UPDATE xo.t SET v = v + 1 WHERE id = 1")
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the client waited {:?} for the orphan's lock",
        started.elapsed()
    );
    // The orphan was rolled back, not committed.
    let v: Option<i32> = a
        .query_first("SELECT v FROM xo.t WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(v, Some(2));
    let mut svc = n.service_conn().await;
    let left: Vec<(i64, i64, i64, Vec<u8>)> = svc.query("XA RECOVER").await.unwrap();
    assert!(left.is_empty(), "the orphan is still prepared: {left:?}");
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brute_force_aborted_autocommit_statement_is_retried() {
    // Galera retries an autocommit statement a replicated write set brute-force aborted, as it
    // retries one that failed certification (wsrep_retry_autocommit).
    require_mariadb!();
    let c = TestCluster::start(3).await;
    let mut a = c
        .setup(
            &[
                "CREATE DATABASE br",
                "CREATE TABLE br.t (id INT PRIMARY KEY, v INT)",
                "INSERT INTO br.t VALUES (1, 0)",
            ],
            "br.t",
        )
        .await;
    let mut b = c.node(1).admin().await;
    let bf_aborts = |s: Option<(String, String)>| -> u64 {
        s.and_then(|(_, v)| v.parse().ok())
            .expect("wsrep_local_bf_aborts")
    };
    let before = bf_aborts(
        b.query_first("SHOW STATUS LIKE 'wsrep_local_bf_aborts'")
            .await
            .unwrap(),
    );
    // B's statement holds the row's lock for 2 s before it can commit.
    let slow = tokio::spawn(async move {
        let r = b
            .query_drop("UPDATE br.t SET v = v + 1 WHERE id = 1 AND SLEEP(2) = 0")
            .await;
        (b, r)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A commits the same row first; applying it on B's node aborts B's statement.
    a.query_drop("UPDATE br.t SET v = v + 10 WHERE id = 1")
        .await
        .unwrap();
    let (mut b, r) = slow.await.unwrap();
    r.expect("the aborted autocommit statement is retried");
    let after = bf_aborts(
        b.query_first("SHOW STATUS LIKE 'wsrep_local_bf_aborts'")
            .await
            .unwrap(),
    );
    assert!(
        after > before,
        "no brute-force abort happened: {before} -> {after}"
    );
    c.converged("br.t").await;
    // Both increments, B's on top of A's: the retry ran after A's write set was applied.
    for n in &c.nodes {
        assert_eq!(
            backend_count(n, "SELECT v FROM br.t WHERE id = 1").await,
            11
        );
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_commits_its_own_prepared_xa_and_a_crash_before_that_commit_is_resolved() {
    require_mariadb!();
    let n = harness::TestNode::start().await;
    let mut a = n
        .admin_with(&[
            "CREATE DATABASE xc",
            "CREATE TABLE xc.t (id INT PRIMARY KEY, v INT)",
            "INSERT INTO xc.t VALUES (1, 1), (2, 2), (3, 3)",
        ])
        .await;
    // A write through the node is committed by its own session's XA at its seqno: the applier
    // records that XA's xid with the seqno, which a replay would not.
    a.query_drop("UPDATE xc.t SET v = 10 WHERE id = 1")
        .await
        .unwrap();
    let mut svc = n.service_conn().await;
    let (seqno, xid): (u64, String) = svc
        .query_first("SELECT applied_seqno, origin_xid FROM certus.state WHERE id = 1")
        .await
        .unwrap()
        .unwrap();
    assert!(
        xid.starts_with("certus_1_"),
        "origin_xid {xid:?} at seqno {seqno}"
    );
    drop(a);
    // What a crash between recording a run's claim and its XA COMMITs leaves: the run's XAs
    // named in certus.state, prepared, without a connection; and another prepared XA of this
    // node whose write set never committed.
    drop(svc);
    leave_prepared(
        &n,
        "certus_1_claimed",
        "UPDATE xc.t SET v = 42 WHERE id = 1",
    )
    .await;
    leave_prepared(&n, "certus_1_other", "UPDATE xc.t SET v = 99 WHERE id = 2").await;
    leave_prepared(&n, "certus_1_run", "UPDATE xc.t SET v = 43 WHERE id = 3").await;
    let mut svc = n.service_conn().await;
    svc.query_drop("SET SESSION sql_log_bin = 0").await.unwrap();
    svc.query_drop(
        "UPDATE certus.state SET origin_xid = 'certus_1_claimed certus_1_run' WHERE id = 1",
    )
    .await
    .unwrap();
    drop(svc);
    let n = n.restart().await;
    let mut svc = n.service_conn().await;
    let left: Vec<(i64, i64, i64, Vec<u8>)> = svc.query("XA RECOVER").await.unwrap();
    assert!(
        left.is_empty(),
        "prepared XA survived the restart: {left:?}"
    );
    let rows: Vec<(i32, i32)> = svc
        .query("SELECT id, v FROM xc.t ORDER BY id")
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![(1, 42), (2, 2), (3, 43)],
        "claimed XAs committed, the other rolled back"
    );
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_transaction_control_works_like_text() {
    // sysbench prepares BEGIN and COMMIT: they must open and commit the replicated transaction.
    require_mariadb!();
    let c = TestCluster::start(3).await;
    let mut a = c
        .node(0)
        .admin_with(&[
            "CREATE DATABASE pt",
            "CREATE TABLE pt.t (id INT PRIMARY KEY, v INT)",
        ])
        .await;
    a.exec_drop("BEGIN", ()).await.unwrap();
    a.exec_drop("INSERT INTO pt.t VALUES (?, ?)", (1, 1))
        .await
        .unwrap();
    a.exec_drop("INSERT INTO pt.t VALUES (?, ?)", (2, 2))
        .await
        .unwrap();
    a.exec_drop("COMMIT", ()).await.unwrap();
    a.exec_drop("START TRANSACTION", ()).await.unwrap();
    a.exec_drop("INSERT INTO pt.t VALUES (?, ?)", (3, 3))
        .await
        .unwrap();
    a.exec_drop("ROLLBACK", ()).await.unwrap();
    c.converged("pt.t").await;
    for n in &c.nodes {
        assert_eq!(backend_count(n, "SELECT COUNT(*) FROM pt.t").await, 2);
    }
    // A prepared COMMIT reports a certification conflict like the text one.
    let mut b = c.node(1).admin().await;
    a.exec_drop("BEGIN", ()).await.unwrap();
    b.exec_drop("BEGIN", ()).await.unwrap();
    a.exec_drop("UPDATE pt.t SET v = 10 WHERE id = 1", ())
        .await
        .unwrap();
    b.exec_drop("UPDATE pt.t SET v = 20 WHERE id = 1", ())
        .await
        .unwrap();
    a.exec_drop("COMMIT", ()).await.unwrap();
    let e = b.exec_drop("COMMIT", ()).await.unwrap_err();
    assert!(is_deadlock(&e), "{e:?}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_innodb_deadlock_between_local_sessions_ends_the_transaction_like_mariadb() {
    require_mariadb!();
    let c = TestCluster::start(3).await;
    let mut a = c
        .setup(
            &[
                "CREATE DATABASE dl",
                "CREATE TABLE dl.t (id INT PRIMARY KEY, v INT)",
                "INSERT INTO dl.t VALUES (1, 0), (2, 0)",
            ],
            "dl.t",
        )
        .await;
    let mut b = c.node(0).admin().await;
    a.query_drop("BEGIN").await.unwrap();
    b.query_drop("BEGIN").await.unwrap();
    a.query_drop("UPDATE dl.t SET v = 1 WHERE id = 1")
        .await
        .unwrap();
    b.query_drop("UPDATE dl.t SET v = 2 WHERE id = 2")
        .await
        .unwrap();
    // A waits for B's row; B then waits for A's: InnoDB picks a victim on the one backend.
    let waiting = tokio::spawn(async move {
        let r = a.query_drop("UPDATE dl.t SET v = 1 WHERE id = 2").await;
        (a, r)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rb = b.query_drop("UPDATE dl.t SET v = 2 WHERE id = 1").await;
    let (a, ra) = waiting.await.unwrap();
    let (mut victim, mut survivor) = match (&ra, &rb) {
        (Err(e), Ok(())) if is_deadlock(e) => (a, b),
        (Ok(()), Err(e)) if is_deadlock(e) => (b, a),
        other => panic!("expected exactly one 1213: {other:?}"),
    };
    // As on MariaDB, the victim is no longer in a transaction: BEGIN (sysbench restarts with
    // BEGIN, no ROLLBACK) and COMMIT both work, and what it writes next is replicated.
    victim.query_drop("BEGIN").await.unwrap();
    victim.query_drop("COMMIT").await.unwrap();
    survivor.query_drop("COMMIT").await.unwrap();
    victim
        .query_drop("BEGIN; UPDATE dl.t SET v = 9 WHERE id = 1; COMMIT")
        .await
        .unwrap();
    c.converged("dl.t").await;
    for n in &c.nodes {
        assert_eq!(backend_count(n, "SELECT v FROM dl.t WHERE id = 1").await, 9);
    }
    c.stop().await;
}
