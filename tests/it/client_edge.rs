//! The client edge against real MariaDB: the clients we serve cannot tell a node from MariaDB.

use crate::harness::{self, require_mariadb, stderr, stdout, TestNode, ADMIN_PASSWORD, ADMIN_USER};
use mysql_async::prelude::*;
use std::io::{Read, Write};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_cli_runs_queries_use_show_and_prepare() {
    require_mariadb!();
    let n = TestNode::start().await;
    let o = n.cli(
        ADMIN_USER,
        ADMIN_PASSWORD,
        &["-N", "-e", "select 1; select 2"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "1\n2\n");
    let o = n.cli(
        ADMIN_USER,
        ADMIN_PASSWORD,
        &[
            "-N",
            "-e",
            "CREATE DATABASE cli; USE cli; CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10)); \
             INSERT INTO t VALUES (1,'one'),(2,'two'); SHOW TABLES; \
             PREPARE s FROM 'SELECT v FROM t WHERE id = ?'; SET @i = 2; EXECUTE s USING @i; DEALLOCATE PREPARE s; \
             SELECT DATABASE()",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "t\ntwo\ncli\n");
    // An error keeps the backend's code, SQLSTATE and message.
    let o = n.cli(
        ADMIN_USER,
        ADMIN_PASSWORD,
        &["-e", "SELECT * FROM cli.missing"],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("ERROR 1146 (42S02)"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("Table 'cli.missing' doesn't exist"),
        "{}",
        stderr(&o)
    );
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymysql_and_sqlalchemy_round_trip_values_and_rollbacks() {
    require_mariadb!();
    let Some(python) = harness::python() else {
        return;
    };
    let n = TestNode::start().await;
    let args = vec![
        "127.0.0.1".to_string(),
        n.port().to_string(),
        ADMIN_USER.into(),
        ADMIN_PASSWORD.into(),
    ];
    let out =
        tokio::task::spawn_blocking(move || harness::run_python(&python, "client_edge.py", &args))
            .await
            .expect("python task");
    for case in [
        "crud",
        "rollback",
        "sqlalchemy_orm_rollback",
        "binary_values",
        "typed_values",
        "warning_count",
        "big_row",
        "multi_statements",
        "found_rows",
        "backend_error_codes",
        "non_utf8_query",
    ] {
        assert!(
            out.lines().any(|l| l == format!("ok {case}")),
            "case {case} did not pass:\n{out}"
        );
    }
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_async_binary_protocol_round_trips_typed_values() {
    require_mariadb!();
    let n = TestNode::start().await;
    let mut c = n.admin().await;
    c.query_drop("CREATE DATABASE bin").await.unwrap();
    c.query_drop(
        "CREATE TABLE bin.t (id INT PRIMARY KEY, u INT UNSIGNED, s VARCHAR(20), b VARBINARY(10), d DATE, \
         dt DATETIME(6), tm TIME(6), f DOUBLE, dec_ DECIMAL(10,3), n INT NULL)",
    )
    .await
    .unwrap();
    let stmt = c
        .prep("INSERT INTO bin.t VALUES (?,?,?,?,?,?,?,?,?,?)")
        .await
        .unwrap();
    use mysql_async::Value;
    let row = vec![
        Value::Int(1),
        Value::UInt(4_000_000_000),
        Value::Bytes(b"h\xc3\xa9llo".to_vec()),
        Value::Bytes(vec![0, 0xff, 0x80]),
        Value::Date(2024, 2, 29, 0, 0, 0, 0),
        Value::Date(2024, 2, 29, 23, 59, 58, 999_999),
        Value::Time(true, 1, 2, 3, 4, 5),
        Value::Double(-1.5e300),
        Value::Bytes(b"-1234567.125".to_vec()),
        Value::NULL,
    ];
    c.exec_drop(&stmt, row).await.unwrap();
    let sel = c
        .prep("SELECT u, s, b, d, dt, tm, f, dec_, n FROM bin.t WHERE id = ?")
        .await
        .unwrap();
    let got: Vec<mysql_async::Row> = c.exec(&sel, (1,)).await.unwrap();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.get::<u32, _>(0), Some(4_000_000_000));
    assert_eq!(r.get::<String, _>(1).as_deref(), Some("héllo"));
    assert_eq!(r.get::<Vec<u8>, _>(2), Some(vec![0, 0xff, 0x80]));
    assert_eq!(r.as_ref(3), Some(&Value::Date(2024, 2, 29, 0, 0, 0, 0)));
    assert_eq!(
        r.as_ref(4),
        Some(&Value::Date(2024, 2, 29, 23, 59, 58, 999_999))
    );
    // 1 day 2:03:04.000005 negative = -26:03:04.000005.
    assert_eq!(r.as_ref(5), Some(&Value::Time(true, 1, 2, 3, 4, 5)));
    assert_eq!(r.get::<f64, _>(6), Some(-1.5e300));
    assert_eq!(r.get::<String, _>(7).as_deref(), Some("-1234567.125"));
    assert_eq!(r.as_ref(8), Some(&Value::NULL));
    // Multi-result text query with DEPRECATE_EOF (mysql_async negotiates it).
    let mut result = c
        .query_iter("SELECT 1; SELECT 2, 3; DO 1; SELECT 'x'")
        .await
        .unwrap();
    let mut sets = Vec::new();
    while !result.is_empty() {
        let rows: Vec<mysql_async::Row> = result.collect().await.unwrap();
        sets.push(rows.len());
    }
    drop(result);
    assert_eq!(sets, vec![1, 1, 0, 1]);
    // Statement errors and unknown statement ids come back as MariaDB errors.
    let e = c.prep("SELECT nope FROM bin.t").await.unwrap_err();
    assert!(
        matches!(e, mysql_async::Error::Server(ref s) if s.code == 1054),
        "{e:?}"
    );
    c.close(stmt).await.unwrap();
    c.ping().await.unwrap();
    c.reset().await.unwrap();
    c.disconnect().await.unwrap();
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_checked_like_mariadb_checks_them() {
    require_mariadb!();
    let n = TestNode::start().await;
    n.admin_with(&[
        "CREATE USER 'app'@'%' IDENTIFIED BY 'apppw'",
        "CREATE USER 'far'@'10.9.%' IDENTIFIED BY 'farpw'",
        "CREATE USER 'nopriv'@'%' IDENTIFIED BY 'np'",
        "CREATE USER 'nopw'@'%'",
        "CREATE DATABASE secret",
        "CREATE TABLE secret.t (id INT PRIMARY KEY)",
        "CREATE USER 'sock'@'%' IDENTIFIED VIA unix_socket",
    ])
    .await;
    // A good password works; the session runs as that account.
    let mut app = n.connect("app", "apppw").await.unwrap();
    let who: Option<String> = app.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert_eq!(who.as_deref(), Some("app@%"));
    // Wrong password: exactly MariaDB's 1045 text.
    let o = n.cli("app", "wrong", &["-e", "select 1"]);
    assert_eq!(
        stderr(&o).trim(),
        "ERROR 1045 (28000): Access denied for user 'app'@'localhost' (using password: YES)"
    );
    let e = n.connect("app", "wrong").await.unwrap_err();
    assert!(
        matches!(e, mysql_async::Error::Server(ref s) if s.code == 1045 && s.state == "28000"),
        "{e:?}"
    );
    // Unknown user, and a client outside the account's host pattern.
    let o = n.cli("ghost", "x", &["-e", "select 1"]);
    assert!(
        stderr(&o).contains("ERROR 1045 (28000): Access denied for user 'ghost'@'localhost'"),
        "{}",
        stderr(&o)
    );
    let o = n.cli("far", "farpw", &["-e", "select 1"]);
    assert!(
        stderr(&o).contains("ERROR 1045 (28000): Access denied for user 'far'@'localhost'"),
        "{}",
        stderr(&o)
    );
    // An account without a password; and one with another auth plugin gets a clear refusal.
    let o = std::process::Command::new("mariadb")
        .args([
            "-h127.0.0.1",
            &format!("-P{}", n.port()),
            "-unopw",
            "-N",
            "-e",
            "select current_user()",
        ])
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "nopw@%\n", "{}", stderr(&o));
    let o = n.cli("sock", "pw", &["-e", "select 1"]);
    assert!(
        stderr(&o).contains("unix_socket") && stderr(&o).contains("mysql_native_password"),
        "{}",
        stderr(&o)
    );
    // Privileges are the backend's own: 1044 for a schema, 1142 for a table.
    let mut np = n.connect("nopriv", "np").await.unwrap();
    let e = np.query_drop("USE secret").await.unwrap_err();
    assert!(
        matches!(e, mysql_async::Error::Server(ref s) if s.code == 1044),
        "{e:?}"
    );
    let e = np.query_drop("SELECT * FROM secret.t").await.unwrap_err();
    assert!(
        matches!(e, mysql_async::Error::Server(ref s) if s.code == 1142),
        "{e:?}"
    );
    // COM_CHANGE_USER to another account re-authenticates fully.
    let opts = mysql_async::ChangeUserOpts::default()
        .with_user(Some("app".into()))
        .with_pass(Some("apppw".into()));
    np.change_user(opts).await.unwrap();
    let who: Option<String> = np.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert_eq!(who.as_deref(), Some("app@%"));
    let opts = mysql_async::ChangeUserOpts::default()
        .with_user(Some("app".into()))
        .with_pass(Some("bad".into()));
    assert!(np.change_user(opts).await.is_err());
    // The service account cannot be used through a node.
    let svc = std::fs::read_to_string(n.data_dir().join("service.cnf")).unwrap();
    let pw = svc
        .lines()
        .find_map(|l| l.strip_prefix("password="))
        .unwrap()
        .to_string();
    let e = n.connect("certus_svc", &pw).await.unwrap_err();
    assert!(
        matches!(e, mysql_async::Error::Server(ref s) if s.code == 1045),
        "{e:?}"
    );
    drop(app);
    n.stop().await;
}

/// Opens a raw TCP connection and reads the greeting.
fn raw_client(port: u16) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut hdr = [0u8; 4];
    s.read_exact(&mut hdr).unwrap();
    let len = usize::from(hdr[0]) | usize::from(hdr[1]) << 8 | usize::from(hdr[2]) << 16;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    assert_eq!(body[0], 10, "protocol version 10 greeting");
    s
}

fn read_to_close(s: &mut std::net::TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_ends_only_the_offending_session() {
    require_mariadb!();
    let n = TestNode::start().await;
    let port = n.port();
    let mut bystander = n.admin().await;
    bystander.query_drop("SELECT 1").await.unwrap();
    let baseline = n.node.as_ref().unwrap().session_count();

    tokio::task::spawn_blocking(move || {
        // Garbage instead of a handshake response: an error (or a close), never a crash.
        let mut s = raw_client(port);
        s.write_all(&[3, 0, 0, 1, 0xde, 0xad, 0xbe]).unwrap();
        let reply = read_to_close(&mut s);
        assert!(reply.is_empty() || reply[4] == 0xff, "{reply:?}");
        // A truncated packet followed by a disconnect.
        let mut s = raw_client(port);
        s.write_all(&[100, 0, 0, 1, 1, 2, 3]).unwrap();
        drop(s);
        // An oversized handshake packet is refused without reading it.
        let mut s = raw_client(port);
        s.write_all(&[0xff, 0xff, 0xff, 1]).unwrap();
        let _ = read_to_close(&mut s);
        // Half a packet, then a stall: cut after net_read_timeout (2 s in tests).
        let mut s = raw_client(port);
        s.write_all(&[50, 0, 0, 1, 1]).unwrap();
        let started = std::time::Instant::now();
        let _ = read_to_close(&mut s);
        assert!(
            started.elapsed() < Duration::from_secs(9),
            "stalled handshake was not cut"
        );
        // Random bytes, many times.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..50 {
            let mut s = raw_client(port);
            let mut junk = Vec::new();
            for _ in 0..64 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                junk.push(seed as u8);
            }
            let _ = s.write_all(&junk);
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let _ = read_to_close(&mut s);
        }
    })
    .await
    .unwrap();

    // After login: an unknown command gets an ERR, a malformed COM_PROCESS_KILL too, an
    // oversized packet gets 1153, and a client that vanishes mid-query leaks nothing.
    let mut c = n.admin().await;
    let e = c
        .query_drop(format!("SELECT '{}'", "x".repeat(70 << 20)))
        .await
        .unwrap_err();
    assert!(
        matches!(e, mysql_async::Error::Server(ref s) if s.code == 1153)
            || matches!(e, mysql_async::Error::Io(_)),
        "{e:?}"
    );
    let mut c = n.admin().await;
    c.query_drop("SELECT SLEEP(0)").await.unwrap();
    // Disconnect in the middle of a long query.
    let slow = n.admin().await;
    let task = tokio::spawn(async move {
        let mut slow = slow;
        let _ = slow.query_drop("SELECT SLEEP(30)").await;
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    task.abort();
    let mut svc = n.service_conn().await;
    let mut gone = false;
    for _ in 0..100 {
        let sleeping: Vec<u64> = svc
            .query("SELECT ID FROM information_schema.PROCESSLIST WHERE INFO = 'SELECT SLEEP(30)'")
            .await
            .unwrap();
        if sleeping.is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the backend query of a vanished client was not ended");
    bystander.query_drop("SELECT 2").await.unwrap();
    let node = n.node.as_ref().unwrap();
    let settled = TestNode::eventually(Duration::from_secs(5), || {
        node.session_count() <= baseline + 1
    })
    .await;
    assert!(settled, "sessions leaked: {}", node.session_count());
    drop(c);
    drop(bystander);
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_are_closed_after_the_idle_timeout() {
    require_mariadb!();
    let n = TestNode::start_with(|cfg| cfg.idle_timeout = Duration::from_secs(1)).await;
    let mut c = n.admin().await;
    c.query_drop("SELECT 1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        c.query_drop("SELECT 1").await.is_err(),
        "idle session survived the idle timeout"
    );
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_and_connection_id_use_the_client_visible_id() {
    require_mariadb!();
    let n = TestNode::start().await;
    let mut c1 = n.admin().await;
    let c2 = n.admin().await;
    let c2_id = c2.id();
    // CONNECTION_ID() is the greeting's id, under its usual column name.
    let mut r = c1
        .query_iter("SELECT CONNECTION_ID(), connection_id() + 0 AS plus")
        .await
        .unwrap();
    let cols: Vec<String> = r
        .columns_ref()
        .iter()
        .map(|c| c.name_str().into_owned())
        .collect();
    let rows: Vec<(u64, u64)> = r.collect().await.unwrap();
    drop(r);
    assert_eq!(
        cols,
        vec!["CONNECTION_ID()".to_string(), "plus".to_string()]
    );
    assert_eq!(rows, vec![(u64::from(c1.id()), u64::from(c1.id()))]);
    assert_ne!(c1.id(), c2_id);
    // KILL QUERY <id> interrupts the other session's statement.
    let started = std::time::Instant::now();
    let sleeper = tokio::spawn(async move {
        let mut c2 = c2;
        let r: Result<Option<i64>, _> = c2.query_first("SELECT SLEEP(20)").await;
        (c2, r)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    c1.query_drop(format!("KILL QUERY {c2_id}")).await.unwrap();
    let (mut c2, r) = sleeper.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "KILL QUERY did not interrupt"
    );
    // An interrupted SLEEP returns 1 (or the statement fails with 1317).
    assert!(
        matches!(r, Ok(Some(1)))
            || matches!(r, Err(mysql_async::Error::Server(ref s)) if s.code == 1317),
        "{r:?}"
    );
    c2.query_drop("SELECT 1").await.unwrap();
    // KILL <id> ends the other session; an unknown id is MariaDB's 1094.
    c1.query_drop(format!("KILL {c2_id}")).await.unwrap();
    assert!(
        c2.query_drop("SELECT 1").await.is_err(),
        "killed session still works"
    );
    let e = c1.query_drop("KILL 987654").await.unwrap_err();
    assert!(
        matches!(e, mysql_async::Error::Server(ref s) if s.code == 1094 && s.message == "Unknown thread id: 987654"),
        "{e:?}"
    );
    let e = c1.query_drop("KILL @x").await.unwrap_err();
    assert!(
        matches!(e, mysql_async::Error::Server(ref s) if s.code == 1235),
        "{e:?}"
    );
    c1.query_drop("SELECT 1").await.unwrap();
    n.stop().await;
}
