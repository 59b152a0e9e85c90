//! The session sends a statement together with the XA statements around it (one backend round
//! trip before the commit): `XA START`, the client's request, `XA END`, `XA PREPARE` and the
//! GTID read go in one write. Whatever the statement returns, the client must see what MariaDB
//! would have answered, nothing may stay prepared, and nothing may escape replication.

use crate::harness::{backend_count, require_mariadb, TestCluster, TestNode};
use mysql_async::prelude::*;

/// The prepared XA transactions on a node's backend, read directly (not through the node).
async fn prepared_xas(n: &TestNode) -> Vec<Vec<u8>> {
    let mut svc = n.service_conn().await;
    let rows: Vec<(i64, i64, i64, Vec<u8>)> = svc.query("XA RECOVER").await.unwrap();
    rows.into_iter().map(|(_, _, _, data)| data).collect()
}

/// The server error of a failed statement.
fn server_error(e: mysql_async::Error) -> mysql_async::ServerError {
    match e {
        mysql_async::Error::Server(s) => s,
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_autocommit_writes_answer_mariadbs_own_error_and_leave_nothing_behind() {
    require_mariadb!();
    let c = TestCluster::start(3).await;
    let mut a = c
        .setup(
            &[
                "CREATE DATABASE pl",
                "CREATE TABLE pl.t (id INT PRIMARY KEY, v INT)",
                "INSERT INTO pl.t VALUES (1, 10)",
            ],
            "pl.t",
        )
        .await;
    // The same failing statement straight on a backend: what the client must see, exactly.
    let mut direct = c.node(0).service_conn().await;
    let expected = server_error(
        direct
            .query_drop("INSERT INTO pl.t VALUES (1, 11)")
            .await
            .unwrap_err(),
    );
    assert_eq!(expected.code, 1062, "{expected:?}");
    drop(direct);
    // Text protocol: a duplicate, and a multi-row insert whose second row is the duplicate.
    for sql in [
        "INSERT INTO pl.t VALUES (1, 11)",
        "INSERT INTO pl.t VALUES (5, 50), (1, 11)",
    ] {
        let got = server_error(a.query_drop(sql).await.unwrap_err());
        assert_eq!(
            (got.code, got.state.as_str(), got.message.as_str()),
            (
                expected.code,
                expected.state.as_str(),
                expected.message.as_str()
            ),
            "{sql}"
        );
    }
    // Binary protocol: the same error through COM_STMT_EXECUTE.
    let got = server_error(
        a.exec_drop("INSERT INTO pl.t VALUES (?, ?)", (1, 12))
            .await
            .unwrap_err(),
    );
    assert_eq!((got.code, got.message), (1062, expected.message.clone()));
    assert!(
        prepared_xas(c.node(0)).await.is_empty(),
        "a failed statement left a prepared XA"
    );
    // The next autocommit writes work, in both protocols, and replicate.
    a.query_drop("INSERT INTO pl.t VALUES (2, 20)")
        .await
        .unwrap();
    a.exec_drop("INSERT INTO pl.t VALUES (?, ?)", (3, 30))
        .await
        .unwrap();
    a.exec_drop("UPDATE pl.t SET v = v + ? WHERE id = ?", (1, 1))
        .await
        .unwrap();
    a.query_drop("UPDATE pl.t SET v = v + 1 WHERE id = 2")
        .await
        .unwrap();
    // Read-your-writes on the origin, at once.
    let v: Option<i32> = a
        .query_first("SELECT v FROM pl.t WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(v, Some(11));
    c.converged("pl.t").await;
    for n in &c.nodes {
        assert_eq!(
            backend_count(n, "SELECT COUNT(*) FROM pl.t").await,
            3,
            "rows 1, 2, 3 and nothing of the failed statements (row 5)"
        );
        assert_eq!(
            backend_count(n, "SELECT SUM(v) FROM pl.t").await,
            11 + 21 + 30
        );
        assert!(prepared_xas(n).await.is_empty());
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_autocommit_writes_replicate_all_or_nothing() {
    // A session with a tiny max_statement_time: its statements are interrupted (1969) at random
    // points, yet the XA START sent ahead of each never is (it runs with max_statement_time=0).
    // Every write either succeeds and replicates, or fails and leaves nothing, anywhere.
    require_mariadb!();
    let c = TestCluster::start(3).await;
    c.setup(
        &[
            "CREATE DATABASE mt",
            "CREATE TABLE mt.t (id INT PRIMARY KEY, v INT)",
        ],
        "mt.t",
    )
    .await;
    let mut s = c.node(0).admin().await;
    s.query_drop("SET SESSION max_statement_time = 0.000001")
        .await
        .unwrap();
    let (mut ok, mut interrupted) = (0i64, 0);
    for i in 0..150 {
        match s
            .query_drop(format!("INSERT INTO mt.t VALUES ({i}, {i})"))
            .await
        {
            Ok(()) => ok += 1,
            Err(mysql_async::Error::Server(e)) if e.code == 1969 => interrupted += 1,
            Err(e) => panic!("insert {i}: {e:?}"),
        }
    }
    s.query_drop("SET SESSION max_statement_time = 0")
        .await
        .unwrap();
    assert!(ok > 0, "no write got through ({interrupted} interrupted)");
    c.converged("mt.t").await;
    for n in &c.nodes {
        assert_eq!(
            backend_count(n, "SELECT COUNT(*) FROM mt.t").await,
            ok,
            "{interrupted} interrupted"
        );
        assert!(prepared_xas(n).await.is_empty());
    }
    assert!(c.node(0).running().status().inconsistent.is_none());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autocommit_off_transactions_commit_everywhere_or_roll_back_everywhere() {
    require_mariadb!();
    let c = TestCluster::start(3).await;
    let mut a = c
        .setup(
            &[
                "CREATE DATABASE ao",
                "CREATE TABLE ao.t (id INT PRIMARY KEY, v INT)",
                "INSERT INTO ao.t VALUES (1, 1)",
            ],
            "ao.t",
        )
        .await;
    a.query_drop("SET autocommit = 0").await.unwrap();
    // The first statement opens the transaction (its XA START rides along with it).
    a.query_drop("INSERT INTO ao.t VALUES (2, 2)")
        .await
        .unwrap();
    a.query_drop("UPDATE ao.t SET v = 10 WHERE id = 1")
        .await
        .unwrap();
    a.query_drop("COMMIT").await.unwrap();
    // A read opens it too; the write after it belongs to the same transaction.
    let v: Option<i32> = a
        .query_first("SELECT v FROM ao.t WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(v, Some(10));
    a.exec_drop("INSERT INTO ao.t VALUES (?, ?)", (3, 3))
        .await
        .unwrap();
    a.query_drop("COMMIT").await.unwrap();
    // Rolled back: nothing anywhere.
    a.query_drop("INSERT INTO ao.t VALUES (4, 4)")
        .await
        .unwrap();
    a.query_drop("UPDATE ao.t SET v = 99 WHERE id = 2")
        .await
        .unwrap();
    a.query_drop("ROLLBACK").await.unwrap();
    // A failing first statement: MariaDB's own error; the transaction it opened is still
    // there and empty, and COMMIT commits nothing.
    let e = server_error(
        a.query_drop("INSERT INTO ao.t VALUES (1, 5)")
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 1062, "{e:?}");
    a.query_drop("COMMIT").await.unwrap();
    // A marker through another node: once it is everywhere, so is everything before it.
    let mut b = c.node(1).admin().await;
    b.query_drop("INSERT INTO ao.t VALUES (100, 100)")
        .await
        .unwrap();
    c.converged("ao.t").await;
    for n in &c.nodes {
        assert_eq!(
            backend_count(n, "SELECT COUNT(*) FROM ao.t").await,
            4,
            "rows 1, 2, 3 and the marker"
        );
        assert_eq!(
            backend_count(n, "SELECT SUM(v) FROM ao.t").await,
            10 + 2 + 3 + 100
        );
        assert!(prepared_xas(n).await.is_empty());
    }
    // Autocommit on again: a plain autocommit write still replicates.
    a.query_drop("SET autocommit = 1").await.unwrap();
    a.query_drop("DELETE FROM ao.t WHERE id = 100")
        .await
        .unwrap();
    c.converged("ao.t").await;
    assert_eq!(
        backend_count(c.node(2), "SELECT COUNT(*) FROM ao.t").await,
        3
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_query_user_never_lets_an_autocommit_write_escape_replication() {
    // KILL QUERY USER names no session the node could wait for: it must still never interrupt
    // the XA START sent ahead of a client's statement (the statement would then run outside
    // any XA: an unreplicated write) nor the XA COMMIT at a write set's seqno.
    require_mariadb!();
    let n = TestNode::start().await;
    let mut admin = n
        .admin_with(&[
            "CREATE DATABASE kq",
            "CREATE TABLE kq.t (id INT PRIMARY KEY)",
            "CREATE USER 'kw'@'%' IDENTIFIED BY 'kwpw'",
            "GRANT INSERT, SELECT ON kq.* TO 'kw'@'%'",
        ])
        .await;
    let mut writer = n.connect("kw", "kwpw").await.unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writes = {
        let done = done.clone();
        tokio::spawn(async move {
            let (mut ok, mut interrupted) = (0i64, 0u32);
            for i in 0..400 {
                match writer
                    .query_drop(format!("INSERT INTO kq.t VALUES ({i})"))
                    .await
                {
                    Ok(()) => ok += 1,
                    Err(mysql_async::Error::Server(e)) if e.code == 1317 => interrupted += 1,
                    Err(e) => panic!("insert {i}: {e:?}"),
                }
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            (ok, interrupted)
        })
    };
    let mut kills = 0;
    while !done.load(std::sync::atomic::Ordering::SeqCst) && kills < 5000 {
        admin.query_drop("KILL QUERY USER 'kw'").await.unwrap();
        kills += 1;
    }
    // Kills that find the writer between statements do nothing; which ones interrupt an
    // INSERT, an XA END or an XA ROLLBACK is up to timing (before the fix, 400 inserts under
    // this load made the node Inconsistent, or left an XA that refused the next XA START).
    let (ok, interrupted) = writes.await.unwrap();
    assert!(kills > 0);
    assert!(
        n.running().status().inconsistent.is_none(),
        "{kills} kills, {interrupted} inserts interrupted"
    );
    assert_eq!(backend_count(&n, "SELECT COUNT(*) FROM kq.t").await, ok);
    assert!(prepared_xas(&n).await.is_empty());
    n.stop().await;
}
