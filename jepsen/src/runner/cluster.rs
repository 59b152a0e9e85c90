//! The cluster under test: `certus` node processes, each with its managed `mariadbd`, wired
//! through the partition relay.
//!
//! Owns the node processes (spawn, SIGKILL, restart, SIGSTOP/SIGCONT), the backends' pid files
//! and sockets, and the workload account. Every signal goes to a PID this runner started (a
//! certus child) or that one of them started and named in its pid file (its mariadbd, checked
//! against its command line first); nothing is ever killed by name. It must not decide when to
//! fault anything: that is the nemesis.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use tokio::process::{Child, Command};

use crate::runner::client::{self, Account, Endpoint};
use crate::runner::relay::Relay;
use crate::runner::RunError;

#[derive(Debug, Clone)]
pub(crate) struct ClusterConfig {
    pub(crate) certus_bin: PathBuf,
    /// Every node's data dir and log live under here.
    pub(crate) dir: PathBuf,
    pub(crate) nodes: u64,
    pub(crate) account: Account,
}

struct NodeProc {
    id: u64,
    name: String,
    data_dir: PathBuf,
    client_addr: SocketAddr,
    peer_addr: SocketAddr,
    /// The node's HTTP server (clustercheck, /status), when the binary has one: its default
    /// port is the same on every node, so each needs its own.
    http_addr: Option<SocketAddr>,
    source_ip: IpAddr,
    child: Option<Child>,
    paused: bool,
}

impl NodeProc {
    fn backend_socket(&self) -> PathBuf {
        self.data_dir.join("mariadb").join("mysqld.sock")
    }

    fn backend_pid_file(&self) -> PathBuf {
        self.data_dir.join("mariadb").join("mysqld.pid")
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }
}

pub(crate) struct Cluster {
    config: ClusterConfig,
    secret: String,
    nodes: Vec<NodeProc>,
    relay: Relay,
}

/// A loopback port nobody holds right now. certus binds its own listeners, so the port is
/// released before the node starts; the window for a collision is small on a test machine.
fn free_port() -> Result<SocketAddr, RunError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(RunError::io("free port"))?;
    l.local_addr().map_err(RunError::io("free port"))
}

impl Cluster {
    /// Spawns every node and waits until each serves the workload account as Primary.
    pub(crate) async fn start(
        config: ClusterConfig,
        ready_within: Duration,
    ) -> Result<Cluster, RunError> {
        std::fs::create_dir_all(&config.dir).map_err(RunError::io("creating the cluster dir"))?;
        let has_http = binary_has_flag(&config.certus_bin, "--http-listen").await;
        let mut nodes = Vec::new();
        for id in 1..=config.nodes {
            let last_octet = u8::try_from(10 + id)
                .map_err(|_| RunError::Config(format!("node id {id} is too large")))?;
            nodes.push(NodeProc {
                id,
                name: format!("n{id}"),
                data_dir: config.dir.join(format!("n{id}")),
                client_addr: free_port()?,
                peer_addr: free_port()?,
                http_addr: if has_http { Some(free_port()?) } else { None },
                source_ip: IpAddr::V4(Ipv4Addr::new(127, 0, 0, last_octet)),
                child: None,
                paused: false,
            });
        }
        let targets: BTreeMap<u64, SocketAddr> =
            nodes.iter().map(|n| (n.id, n.peer_addr)).collect();
        let sources = nodes.iter().map(|n| (n.source_ip, n.id)).collect();
        let relay = Relay::start(&targets, sources)
            .await
            .map_err(RunError::io("starting the relay"))?;
        let mut cluster = Cluster {
            secret: "jepsen-cluster-secret-0123456789".to_owned(),
            config,
            nodes,
            relay,
        };
        for i in 0..cluster.nodes.len() {
            cluster.spawn(i)?;
        }
        let deadline = Instant::now() + ready_within;
        for i in 0..cluster.nodes.len() {
            cluster.create_account(i, deadline).await?;
        }
        cluster.wait_ready(deadline).await?;
        Ok(cluster)
    }

    pub(crate) fn relay(&self) -> &Relay {
        &self.relay
    }

    pub(crate) fn node_ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    pub(crate) fn endpoints(&self) -> Vec<Endpoint> {
        self.nodes
            .iter()
            .map(|n| Endpoint {
                name: n.name.clone(),
                host: n.client_addr.ip().to_string(),
                port: n.client_addr.port(),
            })
            .collect()
    }

    fn index(&self, id: u64) -> Result<usize, RunError> {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .ok_or_else(|| RunError::Config(format!("no node {id}")))
    }

    fn spawn(&mut self, i: usize) -> Result<(), RunError> {
        let members: Vec<String> = self
            .nodes
            .iter()
            .map(|m| {
                let addr = self.relay.addr(m.id).unwrap_or(m.peer_addr);
                format!("{}={addr}", m.id)
            })
            .collect();
        let node = &mut self.nodes[i];
        let log_path = self.config.dir.join(format!("{}.log", node.name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(RunError::io("opening a node log"))?;
        let log_err = log
            .try_clone()
            .map_err(RunError::io("opening a node log"))?;
        // Each backend gets its own tmpdir: mariadb-install-db runs sharing /tmp have been seen
        // to collide on temporary table files ("Unknown table 'mysql.tmp_user_sys'").
        let tmpdir = self.config.dir.join(format!("{}-tmp", node.name));
        std::fs::create_dir_all(&tmpdir).map_err(RunError::io("creating a backend tmpdir"))?;
        let mut cmd = Command::new(&self.config.certus_bin);
        cmd.arg("node")
            .arg("--node-id")
            .arg(node.id.to_string())
            .arg("--node-name")
            .arg(&node.name)
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--listen")
            .arg(node.client_addr.to_string())
            .arg("--peer-listen")
            .arg(node.peer_addr.to_string())
            .arg("--peer-source-ip")
            .arg(node.source_ip.to_string())
            .arg("--cluster-secret")
            .arg(&self.secret)
            .arg("--backend-option")
            .arg("innodb_buffer_pool_size=64M")
            .arg("--backend-option")
            .arg("innodb_log_file_size=16M")
            .arg("--backend-option")
            .arg(format!("tmpdir={}", tmpdir.display()));
        for m in &members {
            cmd.arg("--member").arg(m);
        }
        if let Some(http) = node.http_addr {
            cmd.arg("--http-listen").arg(http.to_string());
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            // A panicking runner must not leave certus behind; its mariadbd is reaped in Drop.
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|e| {
            RunError::Cluster(format!(
                "spawning {} for {}: {e}",
                self.config.certus_bin.display(),
                node.name
            ))
        })?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// Creates the workload account on one backend directly, unreplicated (every backend gets
    /// its own copy, so no node needs to be Primary for it).
    async fn create_account(&self, i: usize, deadline: Instant) -> Result<(), RunError> {
        let node = &self.nodes[i];
        let mut last_error = String::from("not tried");
        while Instant::now() < deadline {
            match self.try_create_account(node).await {
                Ok(()) => return Ok(()),
                Err(e) => last_error = e,
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(RunError::Cluster(format!(
            "{}: backend never accepted the service account: {last_error} (see {})",
            node.name,
            self.config.dir.join(format!("{}.log", node.name)).display()
        )))
    }

    async fn try_create_account(&self, node: &NodeProc) -> Result<(), String> {
        let mut conn = self.service_conn(node).await?;
        let a = &self.config.account;
        let (user, pass) = (quote(&a.user), quote(&a.password));
        for sql in [
            "SET SESSION sql_log_bin = 0".to_owned(),
            format!("CREATE USER IF NOT EXISTS {user}@'%' IDENTIFIED BY {pass}"),
            format!("ALTER USER {user}@'%' IDENTIFIED BY {pass}"),
            format!("GRANT ALL PRIVILEGES ON *.* TO {user}@'%'"),
        ] {
            conn.query_drop(&sql)
                .await
                .map_err(|e| format!("{sql}: {e}"))?;
        }
        let _ = conn.disconnect().await;
        Ok(())
    }

    async fn service_conn(&self, node: &NodeProc) -> Result<mysql_async::Conn, String> {
        let account = service_account(&node.data_dir)?;
        let socket = node.backend_socket();
        let opts = client::socket_opts(&socket.to_string_lossy(), &account);
        client::connect(opts, Duration::from_secs(5))
            .await
            .map_err(|e| e.describe())
    }

    /// A connection to every running node's backend, over its socket as the service account.
    pub(crate) async fn backend_conns(&self) -> Vec<(String, Result<mysql_async::Conn, String>)> {
        let mut out = Vec::new();
        for node in &self.nodes {
            out.push((node.name.clone(), self.service_conn(node).await));
        }
        out
    }

    /// Waits until every node answers a query as Primary.
    pub(crate) async fn wait_ready(&self, deadline: Instant) -> Result<(), RunError> {
        for endpoint in self.endpoints() {
            wait_endpoint_ready(&endpoint, &self.config.account, deadline).await?;
        }
        Ok(())
    }

    /// certus's own ERROR lines from each node's log (not openraft's, which complain about
    /// every unreachable peer during a partition), at most `per_node` each, ANSI colours
    /// stripped: they explain a node that never recovered.
    pub(crate) fn log_errors(&self, per_node: usize) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for node in &self.nodes {
            let path = self.config.dir.join(format!("{}.log", node.name));
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            // One line per distinct message: a reconnecting reader logs the same error for
            // every session, which would hide the line that explains the failure.
            let mut seen = std::collections::BTreeSet::new();
            let errors = text
                .lines()
                .map(strip_ansi)
                .filter(|l| l.contains(" ERROR certus"))
                .filter(|l| seen.insert(message_shape(l)))
                .take(per_node);
            out.extend(errors.map(|l| (node.name.clone(), l)));
        }
        out
    }

    /// The Raft leader, as the running nodes' HTTP `/status` report it: the node a majority of
    /// the cluster names. Polls until there is one or `within` has passed (an election may be
    /// under way after the previous fault).
    pub(crate) async fn leader(&self, within: Duration) -> Result<u64, RunError> {
        let deadline = Instant::now() + within;
        let quorum = self.nodes.len() / 2 + 1;
        let mut last = String::from("no node was asked");
        // Bounded by the deadline; each pass asks every node with a 2 s timeout, then sleeps.
        loop {
            let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
            for node in self.nodes.iter().filter(|n| n.child.is_some() && !n.paused) {
                let Some(http) = node.http_addr else {
                    return Err(RunError::Cluster(
                        "the certus binary has no --http-listen: the leader cannot be found".into(),
                    ));
                };
                match status_leader(http).await {
                    Ok(Some(id)) => *votes.entry(id).or_default() += 1,
                    Ok(None) => last = format!("{} knows no leader", node.name),
                    Err(e) => last = format!("{}: /status: {e}", node.name),
                }
            }
            let agreed = votes
                .iter()
                .find(|(id, n)| **n >= quorum && self.is_running(**id))
                .map(|(id, _)| *id);
            if let Some(id) = agreed {
                return Ok(id);
            }
            if votes.len() > 1 {
                last = format!("the nodes name different leaders: {votes:?}");
            }
            if Instant::now() >= deadline {
                return Err(RunError::Cluster(format!(
                    "no leader named by {quorum} nodes within {within:?}: {last}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// SIGKILL of a node's certus process; its mariadbd keeps running and is adopted on restart.
    pub(crate) async fn kill(&mut self, id: u64) -> Result<(), RunError> {
        let i = self.index(id)?;
        let node = &mut self.nodes[i];
        if let Some(mut child) = node.child.take() {
            if node.paused {
                // A stopped process still dies of SIGKILL; clear the flag so restart is clean.
                node.paused = false;
            }
            let _ = child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        }
        Ok(())
    }

    pub(crate) fn is_running(&self, id: u64) -> bool {
        self.index(id)
            .map(|i| self.nodes[i].child.is_some())
            .unwrap_or(false)
    }

    /// Starts a killed node again with the same data dir: it rejoins from its Raft log.
    pub(crate) fn restart(&mut self, id: u64) -> Result<(), RunError> {
        let i = self.index(id)?;
        if self.nodes[i].child.is_none() {
            self.spawn(i)?;
        }
        Ok(())
    }

    pub(crate) async fn pause(&mut self, id: u64) -> Result<(), RunError> {
        let i = self.index(id)?;
        if let Some(pid) = self.nodes[i].pid() {
            signal(pid, "STOP").await?;
            self.nodes[i].paused = true;
        }
        Ok(())
    }

    pub(crate) async fn resume(&mut self, id: u64) -> Result<(), RunError> {
        let i = self.index(id)?;
        if let (Some(pid), true) = (self.nodes[i].pid(), self.nodes[i].paused) {
            signal(pid, "CONT").await?;
        }
        self.nodes[i].paused = false;
        Ok(())
    }

    /// SIGKILL of a node's mariadbd; the node's supervisor must notice and restart it.
    pub(crate) async fn kill_backend(&self, id: u64) -> Result<Option<u32>, RunError> {
        let i = self.index(id)?;
        let node = &self.nodes[i];
        let Some(pid) = backend_pid(node) else {
            return Ok(None);
        };
        signal(pid, "KILL").await?;
        Ok(Some(pid))
    }

    /// Stops every node: resumes paused ones, asks each certus to shut down (it stops its
    /// mariadbd), and kills whatever is still running after `within`.
    pub(crate) async fn stop(&mut self, within: Duration) {
        for i in 0..self.nodes.len() {
            let id = self.nodes[i].id;
            let _ = self.resume(id).await;
            if let Some(pid) = self.nodes[i].pid() {
                let _ = signal(pid, "TERM").await;
            }
        }
        let deadline = Instant::now() + within;
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let left = deadline.saturating_duration_since(Instant::now());
                if tokio::time::timeout(left, child.wait()).await.is_err() {
                    let _ = child.start_kill();
                    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                }
            }
        }
        // A certus that died before it could stop its backend leaves it running.
        for node in &self.nodes {
            if let Some(pid) = backend_pid(node) {
                let _ = signal(pid, "KILL").await;
            }
        }
    }
}

impl Drop for Cluster {
    /// The last line of defence for a runner that errored or panicked: nothing it started may
    /// outlive it. `kill_on_drop` handles certus; the backends need their pid files.
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                if let Some(pid) = child.id() {
                    let _ = std::process::Command::new("kill")
                        .args(["-s", "KILL", &pid.to_string()])
                        .status();
                }
            }
            if let Some(pid) = backend_pid(node) {
                let _ = std::process::Command::new("kill")
                    .args(["-s", "KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// Whether `certus node --help` lists `flag`: the runner drives binaries from several commits,
/// and a flag the binary does not know would stop it from starting.
async fn binary_has_flag(bin: &Path, flag: &str) -> bool {
    let help = Command::new(bin)
        .args(["node", "--help"])
        .stdin(Stdio::null())
        .output();
    match tokio::time::timeout(Duration::from_secs(10), help).await {
        Ok(Ok(out)) => String::from_utf8_lossy(&out.stdout).contains(flag),
        _ => false,
    }
}

/// The backend's PID from its pid file, only if that process is a mariadbd running on this
/// node's own config (a stale pid file must never make us signal a stranger).
fn backend_pid(node: &NodeProc) -> Option<u32> {
    let text = std::fs::read_to_string(node.backend_pid_file()).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline);
    let ours = node.data_dir.join("mariadb");
    (cmdline.contains("mariadbd") || cmdline.contains("mysqld"))
        .then_some(())
        .filter(|()| cmdline.contains(&*ours.to_string_lossy()))
        .map(|()| pid)
}

pub(crate) async fn signal(pid: u32, name: &str) -> Result<(), RunError> {
    let status = Command::new("kill")
        .args(["-s", name, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .map_err(RunError::io("running kill"))?;
    if status.success() {
        Ok(())
    } else {
        Err(RunError::Cluster(format!("kill -s {name} {pid} failed")))
    }
}

/// The `leader` field of a node's HTTP `/status` JSON (null while it knows none).
async fn status_leader(http: SocketAddr) -> Result<Option<u64>, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(http)
            .await
            .map_err(|e| e.to_string())?;
        stream
            .write_all(b"GET /status HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut reply = Vec::new();
        stream
            .read_to_end(&mut reply)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<Vec<u8>, String>(reply)
    };
    let reply = tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .map_err(|_| "timed out".to_owned())??;
    parse_status_leader(&reply)
}

fn parse_status_leader(reply: &[u8]) -> Result<Option<u64>, String> {
    let text = String::from_utf8_lossy(reply);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| "no HTTP body".to_owned())?;
    if !head.starts_with("HTTP/1.") || !head.contains(" 200 ") {
        return Err(format!(
            "answered {}",
            head.lines().next().unwrap_or_default()
        ));
    }
    let json: serde_json::Value =
        serde_json::from_str(body.trim()).map_err(|e| format!("bad JSON: {e}"))?;
    match json.get("leader") {
        Some(serde_json::Value::Null) | None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| format!("leader is {v}")),
    }
}

/// `user=` and `password=` from the node's `service.cnf`.
pub(crate) fn service_account(data_dir: &Path) -> Result<Account, String> {
    let path = data_dir.join("service.cnf");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_service_cnf(&text).ok_or_else(|| format!("{}: no user=/password= lines", path.display()))
}

fn parse_service_cnf(text: &str) -> Option<Account> {
    let mut user = None;
    let mut password = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("user=") {
            user = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("password=") {
            password = Some(v.trim().to_owned());
        }
    }
    Some(Account {
        user: user?,
        password: password?,
    })
}

/// A log line without its timestamp and numbers, so repeats of one message compare equal.
fn message_shape(line: &str) -> String {
    let message = line.split_once(" ERROR ").map_or(line, |(_, m)| m);
    message.chars().filter(|c| !c.is_ascii_digit()).collect()
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC '[' parameters, ended by a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A SQL string literal; account names cannot be bound as parameters.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// Polls `SELECT 1` until the endpoint answers (certus answers 1047 until it is Primary).
pub(crate) async fn wait_endpoint_ready(
    endpoint: &Endpoint,
    account: &Account,
    deadline: Instant,
) -> Result<(), RunError> {
    let mut last_error = String::from("not tried");
    while Instant::now() < deadline {
        let opts = client::tcp_opts(endpoint, account);
        match client::connect(opts, Duration::from_secs(3)).await {
            Ok(mut conn) => {
                let probe =
                    tokio::time::timeout(Duration::from_secs(3), conn.query_drop("SELECT 1")).await;
                match probe {
                    Ok(Ok(())) => {
                        let _ = conn.disconnect().await;
                        return Ok(());
                    }
                    Ok(Err(e)) => last_error = e.to_string(),
                    Err(_) => last_error = "SELECT 1 timed out".to_owned(),
                }
            }
            Err(e) => last_error = e.describe(),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(RunError::Cluster(format!(
        "{} never became ready: {last_error}",
        endpoint.name
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_cnf_gives_the_account() {
        let a = parse_service_cnf("[client]\nuser=certus_svc\npassword=s3cr=t\n").unwrap();
        assert_eq!(a.user, "certus_svc");
        assert_eq!(a.password, "s3cr=t");
        assert!(parse_service_cnf("[client]\nuser=x\n").is_none());
    }

    #[test]
    fn the_leader_comes_from_the_status_json() {
        let ok =
            |body: &str| format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{body}");
        assert_eq!(
            parse_status_leader(ok("{\"node_id\":1,\"leader\":3}\n").as_bytes()),
            Ok(Some(3))
        );
        assert_eq!(
            parse_status_leader(ok("{\"leader\":null}").as_bytes()),
            Ok(None)
        );
        assert!(parse_status_leader(b"HTTP/1.1 404 Not Found\r\n\r\n").is_err());
        assert!(parse_status_leader(ok("{\"leader\":\"x\"}").as_bytes()).is_err());
        assert!(parse_status_leader(b"garbage").is_err());
    }

    #[test]
    fn ansi_colours_are_stripped_from_log_lines() {
        let line = "\u{1b}[2m2026\u{1b}[0m \u{1b}[31mERROR\u{1b}[0m certus::node: boom";
        assert_eq!(strip_ansi(line), "2026 ERROR certus::node: boom");
    }

    #[test]
    fn repeated_messages_have_one_shape() {
        let a = "2026-11-21T06:13:12.49Z ERROR certus::x: applying seqno 12 failed";
        let b = "2026-11-21T06:13:13.50Z ERROR certus::x: applying seqno 345 failed";
        let c = "2026-11-21T06:13:13.50Z ERROR certus::y: capture failed";
        assert_eq!(message_shape(a), message_shape(b));
        assert_ne!(message_shape(a), message_shape(c));
    }

    #[test]
    fn quote_escapes_quotes_and_backslashes() {
        assert_eq!(quote("jepsen"), "'jepsen'");
        assert_eq!(quote("a'b\\c"), "'a''b\\\\c'");
    }
}
