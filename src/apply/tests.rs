//! Capture on server A, replay on server B, compare with server C where the same statements ran
//! plainly (real MariaDB, started by `harness`).

use super::harness::Server;
use super::*;
use crate::capture::{
    Capture, CaptureConfig, CaptureError, CapturedGroup, Gtid, RowKind, APPLIER_GTID_DOMAIN,
};
use mysql_async::Value;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

const TAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The applier as `log_replica_updates = true` runs it: binlogged, in its own domain.
const LOGGED: Tagging = Tagging {
    domain: APPLIER_GTID_DOMAIN,
    binlogged: true,
};
/// The default applier (`log_replica_updates = false`): not binlogged.
const UNLOGGED: Tagging = Tagging {
    domain: APPLIER_GTID_DOMAIN,
    binlogged: false,
};

/// An applier on `server` that replays what `capture` captured.
async fn applier_on(server: &Server, tagging: Tagging, capture: &Capture) -> Applier {
    Applier::connect(
        server.opts(),
        tagging,
        capture.format_description().unwrap(),
    )
    .await
    .unwrap()
}

fn reader_config(server: &Server) -> CaptureConfig {
    let mut cfg = CaptureConfig::new(server.opts(), 1000 + server.server_id);
    cfg.heartbeat = Duration::from_millis(500);
    cfg
}

async fn last_gtid(conn: &mut Conn) -> String {
    let v: Option<String> = conn.query_first("SELECT @@last_gtid").await.unwrap();
    v.unwrap_or_default()
}

static XID: AtomicU32 = AtomicU32::new(0);

/// Runs `stmts` inside an XA on `conn`, prepares it, takes its group (None when `@@last_gtid`
/// did not move: nothing was written), then rolls the XA back.
async fn capture_xa(conn: &mut Conn, capture: &Capture, stmts: &[&str]) -> Option<CapturedGroup> {
    let xid = format!("t-{}", XID.fetch_add(1, Ordering::Relaxed));
    let before = last_gtid(conn).await;
    conn.query_drop(format!("XA START '{xid}'")).await.unwrap();
    for s in stmts {
        conn.query_drop(*s)
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    conn.query_drop(format!("XA END '{xid}'")).await.unwrap();
    conn.query_drop(format!("XA PREPARE '{xid}'"))
        .await
        .unwrap();
    let after = last_gtid(conn).await;
    let group = if after == before {
        None
    } else {
        let gtid: Gtid = after.parse().unwrap();
        Some(capture.take(gtid, TAKE_TIMEOUT).await.unwrap())
    };
    conn.query_drop(format!("XA ROLLBACK '{xid}'"))
        .await
        .unwrap();
    if let Some(g) = &group {
        assert_eq!(g.xid.gtrid, xid.as_bytes());
    }
    group
}

async fn run_all(conn: &mut Conn, stmts: &[&str]) {
    for s in stmts {
        conn.query_drop(*s)
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    }
}

/// The same setup on two servers.
async fn run_on_both(a: &mut Conn, b: &mut Conn, stmts: &[&str]) {
    run_all(a, stmts).await;
    run_all(b, stmts).await;
}

/// Two servers with schema `s` holding table `t` (made by `setup`, run on both as plain
/// statements after `USE s`), a capture reader on A and a connection to each. Bind every
/// server (`a: _a`): a server is stopped when dropped.
struct Pair {
    a: Server,
    b: Server,
    capture_a: Capture,
    ca: Conn,
    cb: Conn,
}

impl Pair {
    async fn start(ids: (u32, u32), setup: &[&str]) -> Option<Pair> {
        let a = Server::start(ids.0)?;
        let b = Server::start(ids.1)?;
        let capture_a = Capture::start(reader_config(&a)).await.unwrap();
        let (mut ca, mut cb) = (a.conn().await, b.conn().await);
        run_on_both(&mut ca, &mut cb, &["CREATE DATABASE s", "USE s"]).await;
        run_on_both(&mut ca, &mut cb, setup).await;
        Some(Pair {
            a,
            b,
            capture_a,
            ca,
            cb,
        })
    }
}

async fn checksum(conn: &mut Conn, table: &str) -> Option<u64> {
    let row: Option<(String, Option<u64>)> = conn
        .query_first(format!("CHECKSUM TABLE {table}"))
        .await
        .unwrap();
    row.and_then(|(_, c)| c)
}

async fn applied(conn: &mut Conn) -> u64 {
    let v: Option<u64> = conn
        .query_first("SELECT applied_seqno FROM certus.state WHERE id = 1")
        .await
        .unwrap();
    v.unwrap()
}

fn statements(g: &CapturedGroup) -> Vec<Vec<u8>> {
    g.statements.iter().map(|s| s.events.clone()).collect()
}

fn col<'a>(img: &'a Option<Vec<crate::capture::ColumnValue>>, name: &str) -> &'a Value {
    let img = img.as_ref().expect("image present");
    &img.iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .value
}

struct Case {
    name: &'static str,
    setup: &'static [&'static str],
    trx: &'static [&'static str],
    tables: &'static [&'static str],
    /// Checks on the decoded row images.
    check: fn(&CapturedGroup),
}

const CASES: &[Case] = &[
    Case {
        name: "insert",
        setup: &["CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))"],
        trx: &["INSERT INTO t VALUES (1, 'a')"],
        tables: &["t"],
        check: |g| {
            let r = &g.statements[0].rows[0];
            assert_eq!((r.kind, r.table.as_str()), (RowKind::Insert, "t"));
            assert!(r.before.is_none());
            assert_eq!(col(&r.after, "id"), &Value::Int(1));
            assert_eq!(col(&r.after, "v"), &Value::Bytes(b"a".to_vec()));
        },
    },
    Case {
        name: "update",
        setup: &[
            "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))",
            "INSERT INTO t VALUES (1, 'a'), (2, 'b')",
        ],
        trx: &["UPDATE t SET v = 'z' WHERE id = 2"],
        tables: &["t"],
        check: |g| {
            let r = &g.statements[0].rows[0];
            assert_eq!(r.kind, RowKind::Update);
            assert_eq!(col(&r.before, "v"), &Value::Bytes(b"b".to_vec()));
            assert_eq!(col(&r.after, "v"), &Value::Bytes(b"z".to_vec()));
        },
    },
    Case {
        name: "delete",
        setup: &[
            "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))",
            "INSERT INTO t VALUES (1, 'a'), (2, 'b')",
        ],
        trx: &["DELETE FROM t WHERE id = 1"],
        tables: &["t"],
        check: |g| {
            let r = &g.statements[0].rows[0];
            assert_eq!(r.kind, RowKind::Delete);
            assert!(r.after.is_none());
            assert_eq!(col(&r.before, "id"), &Value::Int(1));
        },
    },
    Case {
        name: "multi_row",
        setup: &[
            "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))",
            "INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd')",
        ],
        trx: &["UPDATE t SET v = CONCAT(v, '!') WHERE id BETWEEN 2 AND 4"],
        tables: &["t"],
        check: |g| {
            assert_eq!(g.statements.len(), 1);
            assert_eq!(g.statements[0].rows.len(), 3);
        },
    },
    Case {
        name: "multi_statement",
        setup: &[
            "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))",
            "CREATE TABLE u (id INT PRIMARY KEY, n INT)",
            "INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')",
            "INSERT INTO u VALUES (1, 10)",
        ],
        trx: &[
            "INSERT INTO t VALUES (4, 'd'), (5, 'e')",
            "UPDATE u SET n = n + 1",
            "DELETE FROM t WHERE id IN (1, 3)",
            "INSERT INTO u VALUES (2, 20)",
        ],
        tables: &["t", "u"],
        check: |g| {
            assert_eq!(g.statements.len(), 4, "one replay unit per source statement");
            let kinds: Vec<_> = g.statements.iter().map(|s| (s.rows.len(), s.rows[0].kind)).collect();
            assert_eq!(
                kinds,
                [(2, RowKind::Insert), (1, RowKind::Update), (2, RowKind::Delete), (1, RowKind::Insert)]
            );
        },
    },
    Case {
        name: "blob_non_utf8",
        setup: &[
            "CREATE TABLE t (id INT PRIMARY KEY, b BLOB)",
            "INSERT INTO t VALUES (1, X'41')",
        ],
        trx: &[
            "INSERT INTO t VALUES (2, X'00FF80FE0A27225C')",
            "UPDATE t SET b = X'C328FFFE' WHERE id = 1",
        ],
        tables: &["t"],
        check: |g| {
            let r = &g.statements[0].rows[0];
            assert_eq!(col(&r.after, "b"), &Value::Bytes(vec![0x00, 0xff, 0x80, 0xfe, 0x0a, 0x27, 0x22, 0x5c]));
        },
    },
    Case {
        name: "datetime6",
        setup: &["CREATE TABLE t (id INT PRIMARY KEY, dt DATETIME(6), ts TIMESTAMP(3) NULL)"],
        trx: &["INSERT INTO t VALUES (1, '2024-01-02 03:04:05.678901', '2024-05-06 07:08:09.123')"],
        tables: &["t"],
        check: |g| {
            let r = &g.statements[0].rows[0];
            assert_eq!(col(&r.after, "dt"), &Value::Date(2024, 1, 2, 3, 4, 5, 678_901));
        },
    },
    Case {
        name: "decimal",
        setup: &["CREATE TABLE t (id INT PRIMARY KEY, d DECIMAL(20,6), e DECIMAL(5,2))"],
        trx: &["INSERT INTO t VALUES (1, -12345678901234.000001, 0.5), (2, 0.000001, -999.99)"],
        tables: &["t"],
        check: |g| {
            let r = &g.statements[0].rows[0];
            assert_eq!(col(&r.after, "d"), &Value::Bytes(b"-12345678901234.000001".to_vec()));
        },
    },
    Case {
        name: "json",
        setup: &["CREATE TABLE t (id INT PRIMARY KEY, j JSON)"],
        trx: &[r#"INSERT INTO t VALUES (1, '{"a": [1, 2, {"b": null}], "c": "é"}')"#],
        tables: &["t"],
        check: |g| {
            let r = &g.statements[0].rows[0];
            assert_eq!(
                col(&r.after, "j"),
                &Value::Bytes(r#"{"a": [1, 2, {"b": null}], "c": "é"}"#.as_bytes().to_vec())
            );
        },
    },
    Case {
        name: "null_and_unsigned",
        setup: &[
            "CREATE TABLE t (id BIGINT UNSIGNED PRIMARY KEY, a INT NULL, s TINYINT, b VARCHAR(5) NULL)",
            "INSERT INTO t VALUES (1, 5, -1, 'x')",
        ],
        trx: &[
            "INSERT INTO t VALUES (18446744073709551615, NULL, -128, NULL)",
            "UPDATE t SET a = NULL, b = NULL WHERE id = 1",
        ],
        tables: &["t"],
        check: |g| {
            let r = &g.statements[0].rows[0];
            assert_eq!(col(&r.after, "id"), &Value::UInt(u64::MAX), "UNSIGNED applied");
            assert_eq!(col(&r.after, "s"), &Value::Int(-128), "signed stays signed");
            assert_eq!(col(&r.after, "a"), &Value::NULL);
            let u = &g.statements[1].rows[0];
            assert_eq!(col(&u.before, "a"), &Value::Int(5));
            assert_eq!(col(&u.after, "b"), &Value::NULL);
        },
    },
    Case {
        name: "fk_cascade",
        setup: &[
            "CREATE TABLE parent (id INT PRIMARY KEY, v INT) ENGINE=InnoDB",
            "CREATE TABLE child (id INT PRIMARY KEY, parent_id INT, \
             FOREIGN KEY (parent_id) REFERENCES parent (id) ON DELETE CASCADE) ENGINE=InnoDB",
            "INSERT INTO parent VALUES (1, 10), (2, 20)",
            "INSERT INTO child VALUES (10, 1), (20, 2), (21, 2)",
        ],
        trx: &["DELETE FROM parent WHERE id = 2"],
        tables: &["parent", "child"],
        check: |g| {
            // The cascade is not in the binlog: the replay must redo it on B.
            let rows: Vec<_> = g.statements.iter().flat_map(|s| &s.rows).collect();
            assert_eq!(rows.len(), 1);
            assert_eq!(rows[0].table, "parent");
        },
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_groups_match_a_plain_reference_and_leave_the_origin_unchanged() {
    let Some(a) = Server::start(1) else { return };
    let Some(b) = Server::start(2) else { return };
    let Some(c) = Server::start(3) else { return };
    let capture = Capture::start(reader_config(&a)).await.unwrap();
    let (mut ca, mut cb, mut cc) = (a.conn().await, b.conn().await, c.conn().await);
    let mut applier = applier_on(&b, UNLOGGED, &capture).await;

    let mut seqno = 0;
    for case in CASES {
        let db = format!("case_{}", case.name);
        for conn in [&mut ca, &mut cb, &mut cc] {
            conn.query_drop(format!("CREATE DATABASE {db}"))
                .await
                .unwrap();
            conn.query_drop(format!("USE {db}")).await.unwrap();
            run_all(conn, case.setup).await;
        }
        let mut origin_before = Vec::new();
        for t in case.tables {
            origin_before.push(checksum(&mut ca, t).await);
        }

        let group = capture_xa(&mut ca, &capture, case.trx)
            .await
            .unwrap_or_else(|| panic!("{}: no group captured", case.name));
        (case.check)(&group);

        seqno += 1;
        applier
            .apply(Seqno(seqno), &statements(&group))
            .await
            .unwrap_or_else(|e| panic!("{}: apply failed: {e}", case.name));
        cc.query_drop("BEGIN").await.unwrap();
        run_all(&mut cc, case.trx).await;
        cc.query_drop("COMMIT").await.unwrap();

        for (i, t) in case.tables.iter().enumerate() {
            let (on_b, on_c) = (checksum(&mut cb, t).await, checksum(&mut cc, t).await);
            assert!(on_b.is_some(), "{}: no checksum for {t}", case.name);
            assert_eq!(
                on_b, on_c,
                "{}: table {t} differs between replay and reference",
                case.name
            );
            assert_ne!(
                on_b, origin_before[i],
                "{}: the case must change {t}",
                case.name
            );
            assert_eq!(
                checksum(&mut ca, t).await,
                origin_before[i],
                "{}: origin changed for {t}",
                case.name
            );
        }
        assert_eq!(
            applied(&mut cb).await,
            seqno,
            "{}: applied_seqno",
            case.name
        );
    }
    let children: Option<u64> = cb
        .query_first("SELECT COUNT(*) FROM case_fk_cascade.child")
        .await
        .unwrap();
    assert_eq!(children, Some(1), "the cascade ran on B during replay");

    applier.disconnect().await;
    capture.shutdown().await;
}

/// Polls `cond` every 50 ms for up to `limit`.
async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applier_tags_its_transactions_fails_loudly_and_runs_toi() {
    let Some(Pair {
        a: _a,
        b,
        capture_a,
        mut ca,
        mut cb,
    }) = Pair::start(
        (11, 12),
        &[
            "CREATE TABLE t (id INT PRIMARY KEY, v INT)",
            "INSERT INTO t VALUES (1, 1), (2, 2)",
        ],
    )
    .await
    else {
        return;
    };
    let capture_b = Capture::start(reader_config(&b)).await.unwrap();

    // A read-only and a no-op XA write nothing: no group, @@last_gtid unchanged.
    let before = last_gtid(&mut ca).await;
    assert!(
        capture_xa(&mut ca, &capture_a, &["SELECT * FROM t FOR UPDATE"])
            .await
            .is_none()
    );
    assert!(capture_xa(
        &mut ca,
        &capture_a,
        &[
            "UPDATE t SET v = v WHERE id = 1",
            "UPDATE t SET v = 9 WHERE id = 99"
        ]
    )
    .await
    .is_none());
    assert_eq!(last_gtid(&mut ca).await, before);

    // Applied on B: tagged with the applier domain, and skipped by B's own reader.
    let group = capture_xa(&mut ca, &capture_a, &["UPDATE t SET v = 10 WHERE id = 1"])
        .await
        .unwrap();
    let mut applier = applier_on(&b, LOGGED, &capture_a).await;
    let stats_before = capture_b.stats();
    applier.apply(Seqno(1), &statements(&group)).await.unwrap();
    assert_eq!(applier.applied_seqno().await.unwrap(), Seqno(1));
    let pos: Option<String> = cb
        .query_first("SELECT @@global.gtid_binlog_pos")
        .await
        .unwrap();
    let pos = pos.unwrap();
    assert!(
        pos.contains(&format!("{APPLIER_GTID_DOMAIN}-12-")),
        "applied trx is in the applier domain: {pos}"
    );
    // B's reader is live past the applied group: it hands over B's next client XA, and it
    // holds nothing else.
    let own = capture_xa(&mut cb, &capture_b, &["UPDATE t SET v = 20 WHERE id = 2"])
        .await
        .unwrap();
    assert_eq!(own.gtid.domain, 0);
    assert_eq!(
        capture_b.buffered_len(),
        0,
        "the applied transaction was not captured on B"
    );
    let stats = capture_b.stats();
    assert_eq!(
        stats.skipped_applied,
        stats_before.skipped_applied + 1,
        "skipped as an applied transaction"
    );
    assert_eq!(
        stats.skipped_bypassed, stats_before.skipped_bypassed,
        "not mistaken for a bypassing write"
    );
    assert_eq!(
        stats.captured,
        stats_before.captured + 1,
        "only B's own client XA was captured"
    );

    // A row missing on B: error 1032 surfaces, nothing commits, applied_seqno stays.
    cb.query_drop("DELETE FROM s.t WHERE id = 2").await.unwrap();
    let doomed = capture_xa(
        &mut ca,
        &capture_a,
        &[
            "UPDATE t SET v = 30 WHERE id = 1",
            "DELETE FROM t WHERE id = 2",
        ],
    )
    .await
    .unwrap();
    let err = applier
        .apply(Seqno(2), &statements(&doomed))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(1032), "{err}");
    assert!(
        matches!(&err, ApplyError::Backend { message, .. } if message.contains("t")),
        "{err}"
    );
    assert_eq!(applied(&mut cb).await, 1);
    let v: Option<i32> = cb
        .query_first("SELECT v FROM s.t WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(
        v,
        Some(10),
        "the first statement of the failed write set was rolled back"
    );
    applier.disconnect().await;

    // TOI: runs alone with the origin's context, then records its seqno; also not captured.
    let mut applier = applier_on(&b, LOGGED, &capture_a).await;
    let ctx = TOIContext {
        db: Some("s".into()),
        sql_mode: "ANSI_QUOTES".into(),
        character_set_client: "utf8mb4".into(),
        collation_connection: "utf8mb4_general_ci".into(),
        character_set_results: Some("utf8mb4".into()),
        foreign_key_checks: false,
        time_zone: "+02:00".into(),
    };
    applier
        .apply_toi(
            Seqno(2),
            &ctx,
            r#"CREATE TABLE "quoted" (id INT PRIMARY KEY, at DATETIME DEFAULT (NOW()))"#,
        )
        .await
        .unwrap();
    assert_eq!(applier.applied_seqno().await.unwrap(), Seqno(2));
    let made: Option<String> = cb
        .query_first("SELECT table_name FROM information_schema.tables WHERE table_schema = 's' AND table_name = 'quoted'")
        .await
        .unwrap();
    assert!(made.is_some(), "TOI ran in schema s with ANSI_QUOTES");
    // The TOI context does not leak into the session afterwards.
    let mode: Option<String> = applier
        .conn
        .query_first("SELECT @@session.sql_mode")
        .await
        .unwrap();
    assert!(!mode.unwrap_or_default().contains("ANSI_QUOTES"));
    // A failing TOI reports the backend error and leaves the seqno.
    let err = applier
        .apply_toi(Seqno(3), &ctx, "CREATE TABLE t (id INT)")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(1050), "{err}");
    assert_eq!(applier.applied_seqno().await.unwrap(), Seqno(2));
    // A TOI without a schema runs with none selected.
    let no_db = TOIContext {
        db: None,
        ..ctx.clone()
    };
    let err = applier
        .apply_toi(Seqno(3), &no_db, "CREATE TABLE unqualified (id INT)")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(1046), "{err}");
    // After the reconnect that deselected the schema, write sets still replay (FD resent).
    let again = capture_xa(&mut ca, &capture_a, &["INSERT INTO t VALUES (3, 3)"])
        .await
        .unwrap();
    applier.apply(Seqno(3), &statements(&again)).await.unwrap();
    assert_eq!(applied(&mut cb).await, 3);
    let tagged_toi = capture_xa(&mut cb, &capture_b, &["UPDATE t SET v = 21 WHERE id = 1"])
        .await
        .unwrap();
    assert_eq!(tagged_toi.gtid.domain, 0);
    assert_eq!(
        capture_b.buffered_len(),
        0,
        "TOI and applied write sets were not captured on B"
    );
    // The TOI is two applied transactions (the DDL, then its seqno update), plus write set 3.
    assert_eq!(capture_b.stats().skipped_applied, stats.skipped_applied + 3);
    // Only the test's own plain DELETE on B bypassed certus.
    assert_eq!(
        capture_b.stats().skipped_bypassed,
        stats_before.skipped_bypassed + 1
    );

    applier.disconnect().await;
    capture_a.shutdown().await;
    capture_b.shutdown().await;
}

async fn binlog_pos(conn: &mut Conn) -> String {
    let v: Option<String> = conn
        .query_first("SELECT @@global.gtid_binlog_pos")
        .await
        .unwrap();
    v.unwrap_or_default()
}

/// `log_replica_updates = false` (the default): write sets, TOI and seqno records reach B's
/// data but not its binlog; a detached XA's `XA COMMIT` still does, since its `XA PREPARE` is
/// there, and the session is unlogged again afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlogged_applier_leaves_the_binlog_to_client_transactions() {
    let Some(Pair {
        a: _a,
        b,
        capture_a,
        mut ca,
        mut cb,
    }) = Pair::start(
        (41, 42),
        &[
            "CREATE TABLE t (id INT PRIMARY KEY, v INT)",
            "INSERT INTO t VALUES (1, 1)",
        ],
    )
    .await
    else {
        return;
    };
    let mut applier = applier_on(&b, UNLOGGED, &capture_a).await;
    let before = binlog_pos(&mut cb).await;
    let group = capture_xa(&mut ca, &capture_a, &["UPDATE t SET v = 10 WHERE id = 1"])
        .await
        .unwrap();
    applier.apply(Seqno(1), &statements(&group)).await.unwrap();
    let ctx = TOIContext {
        db: Some("s".into()),
        sql_mode: String::new(),
        character_set_client: "utf8mb4".into(),
        collation_connection: "utf8mb4_general_ci".into(),
        character_set_results: Some("utf8mb4".into()),
        foreign_key_checks: true,
        time_zone: "SYSTEM".into(),
    };
    applier
        .apply_toi(Seqno(2), &ctx, "CREATE TABLE u (id INT PRIMARY KEY)")
        .await
        .unwrap();
    assert_eq!(applied(&mut cb).await, 2);
    let v: Option<i32> = cb
        .query_first("SELECT v FROM s.t WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(v, Some(10), "the write set reached B's data");
    let made: Option<String> = cb
        .query_first("SELECT table_name FROM information_schema.tables WHERE table_schema = 's' AND table_name = 'u'")
        .await
        .unwrap();
    assert!(made.is_some(), "the TOI ran on B");
    assert_eq!(
        binlog_pos(&mut cb).await,
        before,
        "nothing reached B's binlog"
    );

    // A client XA prepared on B (binlogged there), whose session went away.
    let mut client = b.conn().await;
    for sql in [
        "XA START 'detached-1'",
        "UPDATE s.t SET v = 11 WHERE id = 1",
        "XA END 'detached-1'",
        "XA PREPARE 'detached-1'",
    ] {
        client.query_drop(sql).await.unwrap();
    }
    client.disconnect().await.unwrap();
    let prepared = binlog_pos(&mut cb).await;
    assert_ne!(prepared, before, "the client's XA PREPARE is binlogged");
    let mut committed = false;
    for _ in 0..50 {
        match applier.xa_commit("detached-1").await {
            Ok(()) => {
                committed = true;
                break;
            }
            // Still attached while the server tears the session down.
            Err(e) if e.code() == Some(1397) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("XA COMMIT: {e}"),
        }
    }
    assert!(committed, "the detached XA never became committable");
    let after_commit = binlog_pos(&mut cb).await;
    assert!(
        after_commit.contains(&format!("{APPLIER_GTID_DOMAIN}-42-")),
        "the XA COMMIT is binlogged, in the applier's domain: {after_commit}"
    );
    let log_bin: Option<i64> = applier
        .conn
        .query_first("SELECT @@session.sql_log_bin")
        .await
        .unwrap();
    assert_eq!(log_bin, Some(0), "the applier is unlogged again");
    let group = capture_xa(&mut ca, &capture_a, &["INSERT INTO t VALUES (2, 2)"])
        .await
        .unwrap();
    applier.apply(Seqno(3), &statements(&group)).await.unwrap();
    assert_eq!(applied(&mut cb).await, 3);
    assert_eq!(binlog_pos(&mut cb).await, after_commit);

    applier.disconnect().await;
    capture_a.shutdown().await;
}

/// Measured: the checksum algorithm in the replayed FD decides whether the server expects a
/// CRC at the end of each event. Our events carry none, so an FD claiming CRC32 must not be
/// used: the server then cuts 4 bytes off every event and the replay fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksum_handling_fd_must_declare_no_checksum() {
    let Some(Pair {
        a: _a,
        b,
        capture_a: capture,
        mut ca,
        mut cb,
    }) = Pair::start(
        (21, 22),
        &["CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))"],
    )
    .await
    else {
        return;
    };
    let group = capture_xa(&mut ca, &capture, &["INSERT INTO t VALUES (1, 'abcdef')"])
        .await
        .unwrap();
    let fd = capture.format_description().unwrap();
    let alg_at = fd.len() - 5;
    assert_eq!(
        fd[alg_at], 0,
        "the FD we replay says BINLOG_CHECKSUM_ALG_OFF"
    );
    let mut crc32_fd = fd.to_vec();
    crc32_fd[alg_at] = 1;
    let mut wrong = Applier::connect(b.opts(), LOGGED, crc32_fd.into())
        .await
        .unwrap();
    let err = wrong
        .apply(Seqno(1), &statements(&group))
        .await
        .unwrap_err();
    eprintln!("replay after an FD that claims CRC32: {err}");
    assert!(err.code().is_some(), "{err}");
    assert_eq!(
        checksum(&mut cb, "t").await,
        Some(0),
        "nothing applied with the mismatched FD"
    );
    let mut right = Applier::connect(b.opts(), LOGGED, fd).await.unwrap();
    right.apply(Seqno(1), &statements(&group)).await.unwrap();
    let v: Option<String> = cb
        .query_first("SELECT v FROM t WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some("abcdef"));

    // Dropping the reader (rather than shutting it down) still ends its dump connection.
    assert_eq!(binlog_dump_threads(&mut ca).await, 1);
    drop(capture);
    let mut gone = false;
    for _ in 0..100 {
        if binlog_dump_threads(&mut ca).await == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the dump connection outlived the dropped reader");
}

async fn binlog_dump_threads(conn: &mut Conn) -> u64 {
    let n: Option<u64> = conn
        .query_first(
            "SELECT COUNT(*) FROM information_schema.processlist WHERE command = 'Binlog Dump'",
        )
        .await
        .unwrap();
    n.unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_fails_waiters_when_the_stream_breaks_and_resumes_after_reconnect() {
    let Some(mut a) = Server::start(31) else {
        return;
    };
    let capture = Capture::start(reader_config(&a)).await.unwrap();
    let mut ca = a.conn().await;
    run_all(
        &mut ca,
        &[
            "CREATE DATABASE s",
            "USE s",
            "CREATE TABLE t (id INT PRIMARY KEY, v INT)",
        ],
    )
    .await;
    assert!(
        capture_xa(&mut ca, &capture, &["INSERT INTO t VALUES (1, 1)"])
            .await
            .is_some()
    );

    // Idle for longer than the silence limit (8 heartbeats): heartbeats keep it alive.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert_eq!(
        capture.stats().disconnects,
        0,
        "heartbeats are received while idle"
    );
    assert!(capture.is_connected());

    // A waiter for a group that never comes fails with StreamBroken when the server goes away.
    let never = Gtid {
        domain: 0,
        server_id: 31,
        seq_no: 1_000_000,
    };
    let waiter = capture.take(never, Duration::from_secs(60));
    let restart = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        tokio::task::block_in_place(|| a.restart());
    };
    let (r, ()) = tokio::join!(waiter, restart);
    assert!(matches!(r, Err(CaptureError::StreamBroken(_))), "{r:?}");
    assert_eq!(capture.stats().disconnects, 1);
    drop(ca);

    // A group written right after the restart is streamed from the resume position, whether
    // the reader had reconnected yet or not.
    let mut ca = a.conn().await;
    ca.query_drop("USE s").await.unwrap();
    ca.query_drop("XA START 'after'").await.unwrap();
    ca.query_drop("INSERT INTO t VALUES (2, 2)").await.unwrap();
    ca.query_drop("XA END 'after'").await.unwrap();
    ca.query_drop("XA PREPARE 'after'").await.unwrap();
    let gtid: Gtid = last_gtid(&mut ca).await.parse().unwrap();
    assert!(
        eventually(Duration::from_secs(20), || capture.is_connected()).await,
        "reader reconnected"
    );
    let group = capture.take(gtid, TAKE_TIMEOUT).await.unwrap();
    ca.query_drop("XA ROLLBACK 'after'").await.unwrap();
    assert_eq!(
        group.statements[0].rows[0]
            .after
            .as_ref()
            .map(|r| r[0].value.clone()),
        Some(Value::Int(2))
    );
    // The pre-restart group was not streamed again as unclaimed garbage.
    assert_eq!(capture.buffered_len(), 0);
    capture.shutdown().await;
}
