//! Nodes as separate `certus` processes, for tests that must kill a node the way a crash does
//! (SIGKILL): the Raft leader under load, a node behind HAProxy.
//!
//! The binary is `CERTUS_BIN` (scripts/test.sh sets it to the release build) or, failing
//! that, the one cargo built for this test run. Each node's data dir is a copy of the harness
//! template; it owns that dir and its log. Only PIDs this harness spawned are signalled: the
//! certus child, and the mariadbd its pid file names (a certus killed with -9 leaves its
//! backend running; the restarted node adopts it).

use super::{copy_template, test_backend_options, ADMIN_PASSWORD, ADMIN_USER};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "process-cluster-secret-0123456789";

/// The certus binary the process tests run.
pub fn certus_bin() -> PathBuf {
    std::env::var_os("CERTUS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_certus")))
}

/// A loopback port nobody holds right now (certus binds it itself a moment later).
fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind :0");
    l.local_addr().expect("local addr")
}

pub struct ProcNode {
    pub id: u64,
    pub client: SocketAddr,
    pub peer: SocketAddr,
    pub http: SocketAddr,
    dir: tempfile::TempDir,
    child: Option<Child>,
    args: Vec<String>,
}

impl ProcNode {
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn name(&self) -> String {
        format!("node{}", self.id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("certus.log"))
            .expect("node log");
        let child = Command::new(certus_bin())
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("certus starts");
        self.child = Some(child);
    }

    /// SIGKILL, as a crash: no clean shutdown, its backend keeps running.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running node");
        self.spawn();
    }

    /// The node's `/status` JSON, if it answers within a second.
    pub fn status(&self) -> Option<serde_json::Value> {
        let (code, body) = http_get(self.http, "/status")?;
        if code != 200 {
            return None;
        }
        serde_json::from_str(&body).ok()
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("certus.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    pub async fn connect(&self) -> Result<mysql_async::Conn, mysql_async::Error> {
        connect_at(self.client).await
    }

    /// The service account straight to this node's backend (bypassing certus).
    pub async fn backend(&self) -> Result<mysql_async::Conn, mysql_async::Error> {
        super::try_service_conn_at(self.dir.path()).await
    }
}

impl Drop for ProcNode {
    fn drop(&mut self) {
        self.kill9();
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("mariadb/mysqld.pid")) {
            let pid = pid.trim();
            // Only the mariadbd whose command line names this node's own data dir.
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let ours =
                String::from_utf8_lossy(&cmdline).contains(&*self.dir.path().to_string_lossy());
            if ours {
                let _ = Command::new("kill").arg("-9").arg(pid).status();
            }
        }
    }
}

/// An admin connection to a MySQL-protocol address (a node or a proxy in front of nodes).
pub async fn connect_at(addr: SocketAddr) -> Result<mysql_async::Conn, mysql_async::Error> {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(addr.ip().to_string())
        .tcp_port(addr.port())
        .prefer_socket(false)
        .user(Some(ADMIN_USER))
        .pass(Some(ADMIN_PASSWORD))
        .conn_ttl(None);
    let opts = mysql_async::Opts::from(opts);
    tokio::time::timeout(Duration::from_secs(5), mysql_async::Conn::new(opts))
        .await
        .unwrap_or_else(|_| {
            Err(mysql_async::Error::Io(mysql_async::IoError::Io(
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
            )))
        })
}

/// One HTTP GET with a 1 s timeout: (status code, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
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

/// Three (or more) certus processes forming one cluster.
pub struct ProcCluster {
    pub nodes: Vec<ProcNode>,
}

impl ProcCluster {
    pub async fn start(n: u64) -> ProcCluster {
        let mut nodes: Vec<ProcNode> = (1..=n)
            .map(|id| ProcNode {
                id,
                client: free_port(),
                peer: free_port(),
                http: free_port(),
                dir: copy_template(),
                child: None,
                args: Vec::new(),
            })
            .collect();
        let members = nodes
            .iter()
            .map(|n| format!("{}={}", n.id, n.peer))
            .collect::<Vec<_>>()
            .join(",");
        for node in &mut nodes {
            let mut args = vec![
                "node".to_string(),
                format!("--node-id={}", node.id),
                format!("--node-name=node{}", node.id),
                format!("--data-dir={}", node.dir.path().display()),
                format!("--listen={}", node.client),
                format!("--peer-listen={}", node.peer),
                format!("--http-listen={}", node.http),
                format!("--member={members}"),
                format!("--cluster-secret={SECRET}"),
                "--backend-mode=managed".to_string(),
            ];
            for o in test_backend_options() {
                args.push(format!("--backend-option={o}"));
            }
            node.args = args;
            node.spawn();
        }
        let c = ProcCluster { nodes };
        c.wait_ready(Duration::from_secs(90)).await;
        c
    }

    /// Waits until every running node reports itself ready (Primary, Synced) on /status.
    pub async fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        for n in self.nodes.iter().filter(|n| n.is_running()) {
            loop {
                if n.status().is_some_and(|s| s["ready"] == true) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {} not ready within {within:?}:\n{}",
                    n.id,
                    n.log_tail()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    /// The leader as the running nodes report it, once they agree (and it is not `not`).
    pub async fn leader(&self, not: Option<u64>, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let seen: Vec<Option<u64>> = self
                .nodes
                .iter()
                .filter(|n| n.is_running())
                .map(|n| n.status().and_then(|s| s["leader"].as_u64()))
                .collect();
            if let Some(Some(l)) = seen.first() {
                if seen.iter().all(|s| *s == Some(*l)) && Some(*l) != not {
                    return *l;
                }
            }
            assert!(Instant::now() < deadline, "no agreed leader: {seen:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn node(&mut self, id: u64) -> &mut ProcNode {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .expect("a node with that id")
    }
}
