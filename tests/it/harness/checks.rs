//! Helpers the integration tests share: reading a node's backend directly (checksums, counts,
//! waiting until backends agree), running setup statements, retrying through an election,
//! classifying MariaDB errors, one raw HTTP GET, a command's output as text.
//!
//! Owns nothing: every helper borrows the nodes and connections it is given. Backends are read
//! over their socket as the service account, never through certus, so a check does not trust
//! the code it checks.

use super::{try_service_conn_at, TestCluster, TestNode};
use mysql_async::prelude::*;
use std::time::Duration;

/// Makes node 3 Inconsistent through a TOI whose result differs: its backend gets table `d.x`
/// (and `local` statements after it) behind the cluster's back, then the cluster creates `d.x`
/// through `origin`, which node 3 alone refuses (1050). Database `d` must exist on every node.
/// Returns whether node 3 was flagged within 15 s.
pub async fn diverge_node3_by_toi(
    c: &TestCluster,
    origin: &mut mysql_async::Conn,
    local: &[&str],
) -> bool {
    let mut direct = c.node(2).service_conn().await;
    run_all(
        &mut direct,
        &[
            "SET SESSION sql_log_bin = 0",
            "CREATE TABLE d.x (id INT PRIMARY KEY)",
        ],
    )
    .await;
    run_all(&mut direct, local).await;
    drop(direct);
    origin
        .query_drop("CREATE TABLE d.x (id INT PRIMARY KEY)")
        .await
        .unwrap();
    TestNode::eventually(Duration::from_secs(15), || {
        c.node(2).running().status().inconsistent.is_some()
    })
    .await
}

/// MariaDB's deadlock error exactly as a certification conflict reports it.
pub fn is_deadlock(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(s) if s.code == 1213 && s.state == "40001"
        && s.message == "Deadlock found when trying to get lock; try restarting transaction")
}

/// The server error code, if `e` is a server error.
pub fn server_code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

/// Runs every statement on `conn`, panicking with the statement that failed.
pub async fn run_all(conn: &mut mysql_async::Conn, stmts: &[&str]) {
    for stmt in stmts {
        conn.query_drop(*stmt).await.expect(stmt);
    }
}

/// Runs `sql`, retrying while the node answers 1047 (a leader election on a loaded machine);
/// panics after 20 s or on any other error.
pub async fn retry_not_ready(conn: &mut mysql_async::Conn, sql: &str) {
    for _ in 0..100 {
        match conn.query_drop(sql).await {
            Ok(()) => return,
            Err(mysql_async::Error::Server(s)) if s.code == 1047 => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("{sql}: {e:?}"),
        }
    }
    panic!("{sql}: node not ready for 20 s");
}

/// Logs in, retrying while the node refuses logins with 1047 (not Primary yet, e.g. during an
/// election after a crash); any other error fails the test. Bounded: 30 s.
pub async fn connect_ready(opts: mysql_async::Opts) -> mysql_async::Conn {
    for _ in 0..150 {
        match mysql_async::Conn::new(opts.clone()).await {
            Ok(conn) => return conn,
            Err(mysql_async::Error::Server(s)) if s.code == 1047 => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("connect: {e:?}"),
        }
    }
    panic!("the node never took a login within 30 s");
}

/// CHECKSUM TABLE of `table` on each node's backend; `None` where it cannot be read.
pub async fn checksums(nodes: &[TestNode], table: &str) -> Vec<Option<i64>> {
    let mut out = Vec::new();
    for n in nodes {
        let mut conn = match try_service_conn_at(n.data_dir()).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("checksum of {table}: no connection: {e}");
                out.push(None);
                continue;
            }
        };
        let row: Result<Option<(String, Option<i64>)>, _> =
            conn.query_first(format!("CHECKSUM TABLE {table}")).await;
        if let Err(e) = &row {
            eprintln!("checksum of {table}: {e}");
        }
        out.push(row.ok().flatten().and_then(|r| r.1));
        let _ = conn.disconnect().await;
    }
    out
}

/// What each backend holds, for a test that found them diverged: the first 20 rows of `table`
/// and `certus.state`.
async fn divergence_report(nodes: &[TestNode], table: &str) -> String {
    let mut out = String::new();
    for (i, n) in nodes.iter().enumerate() {
        let Ok(mut conn) = try_service_conn_at(n.data_dir()).await else {
            out.push_str(&format!("node {}: no connection\n", i + 1));
            continue;
        };
        for sql in [
            format!("SELECT * FROM {table} LIMIT 20"),
            "SELECT * FROM certus.state".to_owned(),
        ] {
            let rows: Result<Vec<mysql_async::Row>, _> = conn.query(&sql).await;
            let shown = match rows {
                Ok(rows) => rows
                    .into_iter()
                    .map(|r| format!("{:?}", r.unwrap()))
                    .collect::<Vec<_>>()
                    .join(" "),
                Err(e) => e.to_string(),
            };
            out.push_str(&format!("node {}: {sql}: {shown}\n", i + 1));
        }
        let _ = conn.disconnect().await;
    }
    out
}

/// Waits until every backend has the same checksum for `table`; returns it.
pub async fn converged(nodes: &[TestNode], table: &str, within: Duration) -> i64 {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let sums = checksums(nodes, table).await;
        if sums.iter().all(|s| s.is_some() && *s == sums[0]) {
            return sums[0].unwrap_or(0);
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "{table} did not converge: {sums:?}\n{}",
                divergence_report(nodes, table).await
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The one integer `sql` selects on the node's backend (-1 for NULL or no row).
pub async fn backend_count(n: &TestNode, sql: &str) -> i64 {
    let mut conn = n.service_conn().await;
    let v: Option<i64> = conn.query_first(sql).await.expect(sql);
    let _ = conn.disconnect().await;
    v.unwrap_or(-1)
}

/// Polls [`backend_count`] every 100 ms until `ok` holds of it or `within` passes; returns the
/// last value read (the caller asserts on it).
pub async fn wait_backend_count(
    n: &TestNode,
    sql: &str,
    within: Duration,
    ok: impl Fn(i64) -> bool,
) -> i64 {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let v = backend_count(n, sql).await;
        if ok(v) || tokio::time::Instant::now() >= deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl TestCluster {
    /// Waits (30 s at most) until every backend has the same checksum for `table`.
    pub async fn converged(&self, table: &str) -> i64 {
        converged(&self.nodes, table, Duration::from_secs(30)).await
    }

    /// Runs `stmts` through node 1, waits until every backend has `table` alike, and returns
    /// the connection.
    pub async fn setup(&self, stmts: &[&str], table: &str) -> mysql_async::Conn {
        let a = self.node(0).admin_with(stmts).await;
        self.converged(table).await;
        a
    }
}

/// One HTTP GET with 2 s timeouts: (status code, body); `None` when nothing usable came back.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out.split(' ').nth(1)?.parse().ok()?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    Some((code, body))
}

/// A finished command's standard output, as text.
pub fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A finished command's standard error, as text.
pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

impl TestNode {
    /// An admin connection through the node that has run `stmts` (setup statements).
    ///
    /// Each statement waits out a leader election (1047, bounded as in [`retry_not_ready`]):
    /// set-up often follows a node's stop, and a stopped leader leaves the others not Primary
    /// for an election timeout.
    pub async fn admin_with(&self, stmts: &[&str]) -> mysql_async::Conn {
        let mut a = self.admin().await;
        for stmt in stmts {
            retry_not_ready(&mut a, stmt).await;
        }
        a
    }

    /// Sends `-sig` (KILL, STOP, CONT ...) to this node's mariadbd, the PID its pid file names
    /// (this node's own server, nothing else); panics when that fails.
    pub fn signal_backend(&self, sig: &str) {
        let pid = std::fs::read_to_string(self.data_dir().join("mariadb/mysqld.pid"))
            .expect("the backend's pid file");
        let ok = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.trim())
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -{sig} {}", pid.trim());
    }
}
