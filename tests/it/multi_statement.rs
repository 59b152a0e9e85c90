//! Multi-statement COM_QUERY batches (CLIENT_MULTI_STATEMENTS) through certus, compared with a
//! plain MariaDB: the same batches run on a database of node 1's backend reached directly (binlog
//! off, so nothing of it replicates) and through node 1, and the client must see the same results,
//! in the same order, stopping at the same error. The cluster's effects must then be on every
//! node and equal the plain server's.

use crate::harness::{self, *};
use mysql_async::prelude::*;
use std::time::Duration;

/// What a client sees of one result of a batch.
#[derive(Debug, PartialEq, Eq)]
enum Res {
    Set {
        columns: Vec<String>,
        rows: Vec<Vec<Option<String>>>,
    },
    Ok {
        affected: u64,
    },
    Err(u16),
}

fn text(v: &mysql_async::Value) -> Option<String> {
    match v {
        mysql_async::Value::NULL => None,
        mysql_async::Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        other => Some(format!("{other:?}")),
    }
}

/// Every result of `sql` as mysql_async reads a multi-result response. An error ends it.
async fn transcript(conn: &mut mysql_async::Conn, sql: &str) -> Vec<Res> {
    let mut out = Vec::new();
    let mut result = match conn.query_iter(sql).await {
        Ok(r) => r,
        Err(e) => {
            out.push(Res::Err(server_code(&e).unwrap_or(0)));
            return out;
        }
    };
    for _ in 0..64 {
        let columns: Vec<String> = result
            .columns_ref()
            .iter()
            .map(|c| c.name_str().into_owned())
            .collect();
        // An OK result's counts are known now; reading on moves to the next result.
        let ok = columns.is_empty().then(|| Res::Ok {
            affected: result.affected_rows(),
        });
        match result.collect::<mysql_async::Row>().await {
            Ok(rows) => out.push(ok.unwrap_or_else(|| {
                Res::Set {
                    columns,
                    rows: rows
                        .into_iter()
                        .map(|r| r.unwrap().iter().map(text).collect())
                        .collect(),
                }
            })),
            Err(e) => {
                out.extend(ok);
                out.push(Res::Err(server_code(&e).unwrap_or(0)));
                break;
            }
        }
        if result.is_empty() {
            // mysql_async reports the error of a statement after an OK result when the rest of
            // the response is read.
            if let Err(e) = result.drop_result().await {
                out.push(Res::Err(server_code(&e).unwrap_or(0)));
            }
            return out;
        }
    }
    out
}

/// The batches, each with what must be true of its transcript (besides equality with MariaDB's).
fn batches() -> Vec<(&'static str, usize, Option<u16>)> {
    vec![
        // DDL (TOI through certus), then a write and a read of the new table.
        (
            "CREATE TABLE t (id INT PRIMARY KEY, v INT); INSERT INTO t VALUES (1, 10); SELECT * FROM t",
            3,
            None,
        ),
        // Transaction control inside the batch.
        (
            "BEGIN; INSERT INTO t VALUES (2, 20); COMMIT; SELECT id, v FROM t ORDER BY id",
            4,
            None,
        ),
        // An error stops the batch; the autocommit write before it stays committed.
        (
            "INSERT INTO t VALUES (3, 30); INSERT INTO t VALUES (3, 31); INSERT INTO t VALUES (4, 40)",
            2,
            Some(1062),
        ),
        ("SELECT COUNT(*) FROM t", 1, None),
        // An error inside an explicit transaction: COMMIT never runs, the transaction stays open.
        (
            "BEGIN; INSERT INTO t VALUES (5, 50); INSERT INTO t VALUES (5, 51); COMMIT",
            3,
            Some(1062),
        ),
        ("SELECT @@in_transaction, COUNT(*) FROM t", 1, None),
        ("ROLLBACK; SELECT @@in_transaction, COUNT(*) FROM t", 2, None),
        // autocommit off and on again inside one batch.
        (
            "SET autocommit = 0; INSERT INTO t VALUES (6, 60); COMMIT; SET autocommit = 1; SELECT @@autocommit",
            5,
            None,
        ),
        // DDL in the middle implicitly commits the open transaction first.
        (
            "BEGIN; UPDATE t SET v = v + 1 WHERE id = 1; ALTER TABLE t ADD COLUMN w INT; SELECT @@in_transaction, v, w FROM t WHERE id = 1",
            4,
            None,
        ),
        // Quotes, backticks and comments that hold semicolons.
        (
            "INSERT INTO t (id, v) VALUES (7, 70) /* ; */; SELECT 'a;b' AS `x;y`, \"c;d\" -- e;f\n; /*!40101 SET @m = 'g;h' */; SELECT @m",
            4,
            None,
        ),
        // A failing DDL stops the batch: the write before it stays, the one after never runs.
        (
            "INSERT INTO t (id, v) VALUES (8, 80); DROP TABLE nosuch; INSERT INTO t (id, v) VALUES (9, 90)",
            2,
            Some(1051),
        ),
        ("CREATE TABLE t (id INT); SELECT 1", 1, Some(1050)),
        ("SELECT id, v, w FROM t ORDER BY id", 1, None),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_statement_batches_run_statement_by_statement_like_mariadb() {
    require_mariadb!();
    let c = TestCluster::start(3).await;
    let mut a = c
        .node(0)
        .admin_with(&["CREATE DATABASE ms", "USE ms"])
        .await;
    // The same server, reached directly: a plain MariaDB as far as the client can tell.
    let mut plain = c.node(0).service_conn().await;
    run_all(
        &mut plain,
        &[
            "SET SESSION sql_log_bin = 0",
            "CREATE DATABASE plain",
            "USE plain",
        ],
    )
    .await;
    for (sql, results, error) in batches() {
        let want = transcript(&mut plain, sql).await;
        let got = transcript(&mut a, sql).await;
        assert_eq!(got, want, "batch {sql:?}");
        assert_eq!(got.len(), results, "batch {sql:?}: {got:?}");
        let last_error = match got.last() {
            Some(Res::Err(code)) => Some(*code),
            _ => None,
        };
        assert_eq!(last_error, error, "batch {sql:?}: {got:?}");
    }
    // Certus's own refusals. A construct refused in every mode refuses the whole batch before
    // any of it runs; a write to a table a DDL of the same batch made non-transactional is judged
    // at its turn.
    let got = transcript(
        &mut a,
        "INSERT INTO t (id, v) VALUES (50, 1); SELECT GET_LOCK('x', 1)",
    )
    .await;
    assert_eq!(got, vec![Res::Err(1235)]);
    let got = transcript(
        &mut a,
        "CREATE TABLE m (id INT PRIMARY KEY) ENGINE=MyISAM; INSERT INTO m VALUES (1); SELECT 1",
    )
    .await;
    assert_eq!(got, vec![Res::Ok { affected: 0 }, Res::Err(4165)]);
    // The cluster's table is on every node, equal to the plain server's.
    c.converged("ms.t").await;
    let rows = "SELECT GROUP_CONCAT(CONCAT_WS(':', id, v, IFNULL(w, '-')) ORDER BY id) FROM";
    let mut direct = c.node(0).service_conn().await;
    let expected: Option<String> = direct.query_first(format!("{rows} plain.t")).await.unwrap();
    assert_eq!(
        expected.as_deref(),
        Some("1:11:-,2:20:-,3:30:-,6:60:-,7:70:-,8:80:-")
    );
    for n in &c.nodes {
        let mut conn = n.service_conn().await;
        let got: Option<String> = conn.query_first(format!("{rows} ms.t")).await.unwrap();
        assert_eq!(got, expected, "node {}", n.node_id());
        let myisam = wait_backend_count(
            n,
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'ms' AND TABLE_NAME = 'm'",
            Duration::from_secs(10),
            |v| v == 1,
        )
        .await;
        assert_eq!(
            myisam,
            1,
            "node {}: the CREATE before the refusal ran",
            n.node_id()
        );
        assert_eq!(backend_count(n, "SELECT COUNT(*) FROM ms.m").await, 0);
    }
    drop(direct);
    drop(plain);
    assert_all_consistent(&c);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_statement_batches_through_pymysql_and_the_cli_match_mariadb() {
    require_mariadb!();
    let Some(python) = harness::python() else {
        return;
    };
    let c = TestCluster::start(3).await;
    let _ = c
        .node(0)
        .admin_with(&[
            "CREATE DATABASE ms",
            "CREATE TABLE ms.t (id INT PRIMARY KEY)",
        ])
        .await;
    let mut plain = c.node(0).service_conn().await;
    run_all(
        &mut plain,
        &[
            "SET SESSION sql_log_bin = 0",
            "CREATE DATABASE plain",
            "CREATE TABLE plain.t (id INT PRIMARY KEY)",
        ],
    )
    .await;
    drop(plain);
    let socket = c.node(0).data_dir().join("mariadb/mysqld.sock");
    let cnf = std::fs::read_to_string(c.node(0).data_dir().join("service.cnf")).unwrap();
    let field = |k: &str| {
        cnf.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")).map(str::to_owned))
            .unwrap()
    };
    let args = vec![
        socket.to_string_lossy().into_owned(),
        field("user"),
        field("password"),
        c.node(0).port().to_string(),
        harness::ADMIN_USER.to_string(),
        harness::ADMIN_PASSWORD.to_string(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        harness::run_python(&python, "multi_statement.py", &args)
    })
    .await
    .unwrap();
    eprintln!("{out}");
    assert!(out.contains("ok pymysql transcripts equal"), "{out}");

    // The mariadb CLI sends one batch per delimiter: `//` makes the whole line one COM_QUERY.
    let cli = c.node(0).cli(
        harness::ADMIN_USER,
        harness::ADMIN_PASSWORD,
        &[
            "-N",
            "-e",
            "DELIMITER //\nBEGIN; INSERT INTO ms.t VALUES (100); COMMIT; SELECT COUNT(*) FROM ms.t WHERE id = 100//",
        ],
    );
    assert!(cli.status.success(), "{}", stderr(&cli));
    assert_eq!(stdout(&cli).trim(), "1");
    let cli = c.node(0).cli(
        harness::ADMIN_USER,
        harness::ADMIN_PASSWORD,
        &[
            "-e",
            "DELIMITER //\nINSERT INTO ms.t VALUES (101); INSERT INTO ms.t VALUES (101); INSERT INTO ms.t VALUES (102)//",
        ],
    );
    assert!(!cli.status.success());
    assert!(stderr(&cli).contains("ERROR 1062"), "{}", stderr(&cli));
    for n in &c.nodes {
        let ids = wait_backend_count(
            n,
            "SELECT COUNT(*) FROM ms.t WHERE id >= 100",
            Duration::from_secs(10),
            |v| v == 2,
        )
        .await;
        assert_eq!(
            ids,
            2,
            "node {}: 100 and 101 committed, 102 never ran",
            n.node_id()
        );
    }
    assert_all_consistent(&c);
    c.stop().await;
}

fn assert_all_consistent(c: &TestCluster) {
    for n in &c.nodes {
        let s = n.running().status();
        assert!(
            s.inconsistent.is_none(),
            "node {} Inconsistent: {:?}",
            n.node_id(),
            s.inconsistent
        );
    }
}
