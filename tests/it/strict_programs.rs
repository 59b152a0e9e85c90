//! Strict mode for writes that statements do not name themselves (DESIGN §4): through `CALL` of
//! a stored procedure (nested calls included), through triggers, through anonymous compound
//! blocks and through SQL-level `PREPARE`/`EXECUTE`/`EXECUTE IMMEDIATE`. Each is judged like a
//! direct statement (non-InnoDB target 4165 in every mode, no primary key 1173 under
//! `enforcing`), and what cannot be checked (dynamic SQL inside a procedure) is refused with 1235.
//! Three nodes with real MariaDB backends: node 1 runs `on`, node 2 `enforcing`.

use crate::harness::{backend_count, require_mariadb, run_all, TestCluster};
use mysql_async::prelude::*;

fn refused<T: std::fmt::Debug>(r: Result<T, mysql_async::Error>, code: u16, needle: &str) {
    match r {
        Err(mysql_async::Error::Server(s)) => {
            assert_eq!(s.code, code, "{}", s.message);
            assert!(
                s.message.contains(needle),
                "{:?} lacks {needle:?}",
                s.message
            );
        }
        other => panic!("expected error {code} ({needle}), got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_checks_writes_through_call_triggers_and_sql_prepare() {
    require_mariadb!();
    use certus::config::StrictMode;
    let c = TestCluster::start_with(3, |cfg| {
        cfg.strict_mode = match cfg.node_id {
            2 => StrictMode::Enforcing,
            _ => StrictMode::On,
        }
    })
    .await;
    let mut on = c.node(0).admin().await;
    let mut enforcing = c.node(1).admin().await;
    run_all(
        &mut on,
        &[
            "CREATE DATABASE sp",
            "CREATE TABLE sp.i (id INT PRIMARY KEY)",
            "CREATE TABLE sp.m (id INT PRIMARY KEY) ENGINE=MyISAM",
            "CREATE TABLE sp.nopk (a INT) ENGINE=InnoDB",
            "CREATE TABLE sp.later (id INT PRIMARY KEY)",
            "CREATE TABLE sp.to_myisam (id INT PRIMARY KEY)",
            "CREATE TABLE sp.to_nopk (id INT PRIMARY KEY)",
            "CREATE TABLE sp.good (id INT PRIMARY KEY)",
            "CREATE TRIGGER sp.t1 AFTER INSERT ON sp.to_myisam FOR EACH ROW INSERT INTO m VALUES (NEW.id)",
            "CREATE TRIGGER sp.t2 AFTER INSERT ON sp.to_nopk FOR EACH ROW INSERT INTO sp.nopk VALUES (NEW.id)",
            "CREATE TRIGGER sp.t3 AFTER INSERT ON sp.good FOR EACH ROW INSERT INTO sp.i VALUES (NEW.id + 1000)",
            "CREATE PROCEDURE sp.put_m(x INT) BEGIN INSERT INTO m VALUES (x); END",
            "CREATE PROCEDURE sp.outer_p(x INT) BEGIN IF x > 0 THEN CALL put_m(x); END IF; END",
            "CREATE PROCEDURE sp.put_i(x INT) BEGIN INSERT INTO sp.i VALUES (x); END",
            "CREATE PROCEDURE sp.put_nopk(x INT) BEGIN INSERT INTO nopk VALUES (x); END",
            "CREATE PROCEDURE sp.dyn(x INT) BEGIN SET @q = CONCAT('INSERT INTO sp.i VALUES (', x, ')'); \
             PREPARE s FROM @q; EXECUTE s; DEALLOCATE PREPARE s; END",
        ],
    )
    .await;
    c.converged("sp.good").await;

    // CALL: the procedure's body, and the procedures it calls, are judged.
    refused(on.query_drop("CALL sp.put_m(1)").await, 4165, "`sp`.`m`");
    on.query_drop("USE sp").await.unwrap();
    refused(on.query_drop("CALL outer_p(2)").await, 4165, "MyISAM");
    on.query_drop("CALL sp.put_i(3)").await.unwrap();
    refused(
        on.exec_drop("CALL sp.put_m(?)", (4,)).await,
        4165,
        "`sp`.`m`",
    );
    // Dynamic SQL inside a procedure cannot be checked before it runs: refused.
    refused(on.query_drop("CALL sp.dyn(5)").await, 1235, "dynamic SQL");
    // An anonymous compound block is a body too.
    refused(
        on.query_drop("BEGIN NOT ATOMIC INSERT INTO sp.m VALUES (6); END")
            .await,
        4165,
        "`sp`.`m`",
    );

    // Triggers: what a trigger of a written table writes is judged; a safe one replicates.
    refused(
        on.query_drop("INSERT INTO sp.to_myisam VALUES (7)").await,
        4165,
        "`sp`.`m`",
    );
    on.query_drop("INSERT INTO sp.good VALUES (8)")
        .await
        .unwrap();

    // SQL-level prepared statements: judged at PREPARE (literal or user variable) and again at
    // every EXECUTE; EXECUTE IMMEDIATE likewise.
    refused(
        on.query_drop("PREPARE s1 FROM 'INSERT INTO sp.m VALUES (9)'")
            .await,
        4165,
        "`sp`.`m`",
    );
    on.query_drop("SET @q = 'INSERT INTO sp.m VALUES (10)'")
        .await
        .unwrap();
    refused(on.query_drop("PREPARE s2 FROM @q").await, 4165, "MyISAM");
    refused(on.query_drop("EXECUTE IMMEDIATE @q").await, 4165, "MyISAM");
    refused(
        on.query_drop("EXECUTE IMMEDIATE 'INSERT INTO sp.m VALUES (11)'")
            .await,
        4165,
        "MyISAM",
    );
    refused(
        on.query_drop("PREPARE s3 FROM CONCAT('INSERT INTO sp.m', ' VALUES (12)')")
            .await,
        1235,
        "expression",
    );
    refused(
        on.query_drop("PREPARE s4 FROM 'SET sql_log_bin = 0'").await,
        1235,
        "sql_log_bin",
    );
    refused(
        on.query_drop("PREPARE s5 FROM 'CREATE TABLE sp.zz (id INT PRIMARY KEY)'")
            .await,
        1235,
        "DDL",
    );
    run_all(
        &mut on,
        &[
            "PREPARE lp FROM 'INSERT INTO sp.later VALUES (?)'",
            "SET @v = 13",
            "EXECUTE lp USING @v",
            "SET @q = 'INSERT INTO sp.i VALUES (14)'",
            "EXECUTE IMMEDIATE @q",
            "ALTER TABLE sp.later ENGINE=MyISAM",
            "SET @v = 15",
        ],
    )
    .await;
    refused(
        on.query_drop("EXECUTE lp USING @v").await,
        4165,
        "`sp`.`later`",
    );
    on.query_drop("DEALLOCATE PREPARE lp").await.unwrap();

    // Tables without a primary key, reached through a procedure, a trigger or PREPARE: refused
    // by enforcing only.
    refused(
        enforcing.query_drop("CALL sp.put_nopk(1)").await,
        1173,
        "`sp`.`nopk`",
    );
    refused(
        enforcing
            .query_drop("INSERT INTO sp.to_nopk VALUES (2)")
            .await,
        1173,
        "`sp`.`nopk`",
    );
    refused(
        enforcing
            .query_drop("PREPARE n FROM 'INSERT INTO sp.nopk VALUES (3)'")
            .await,
        1173,
        "`sp`.`nopk`",
    );
    on.query_drop("CALL sp.put_nopk(4)").await.unwrap();
    on.query_drop("INSERT INTO sp.to_nopk VALUES (5)")
        .await
        .unwrap();

    // What ran replicated everywhere; nothing reached the MyISAM table on any node.
    c.converged("sp.i").await;
    c.converged("sp.nopk").await;
    for n in &c.nodes {
        assert_eq!(backend_count(n, "SELECT COUNT(*) FROM sp.m").await, 0);
        // put_i(3), the good trigger's 1008, EXECUTE IMMEDIATE's 14.
        assert_eq!(
            backend_count(n, "SELECT COUNT(*) FROM sp.i WHERE id IN (3, 1008, 14)").await,
            3
        );
        assert_eq!(backend_count(n, "SELECT COUNT(*) FROM sp.i").await, 3);
        assert_eq!(backend_count(n, "SELECT COUNT(*) FROM sp.later").await, 1);
        assert_eq!(backend_count(n, "SELECT COUNT(*) FROM sp.nopk").await, 2);
        let s = n.running().status();
        assert!(s.inconsistent.is_none(), "{:?}", s.inconsistent);
    }
    c.stop().await;
}
