//! Clusters of real `certus` processes, for tests that must crash a node the way a crash does
//! (SIGKILL of certus, of its mariadbd or of both) or run the recovery CLI on a stopped node.
//!
//! The binary is `CERTUS_BIN` (scripts/test.sh sets it to the release build) or, failing that,
//! the one cargo built for this test run. Each node starts from a TOML config file in its own
//! data dir (a copy of the harness template), so `certus recover`/`bootstrap --config` run on
//! the same settings.
//!
//! Owns: the certus child of each node, that node's data dir and log, and the mariadbd the
//! node's pid file names, signalled only after its command line is checked to name this node's
//! own data dir. A certus killed with -9 leaves its backend running; the restarted node adopts
//! it. Everything is killed on drop; nothing is ever signalled by name.

use super::{copy_template, test_backend_options, ADMIN_PASSWORD, ADMIN_USER};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
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
    // Below the ephemeral range: nothing else takes it while the process restarts.
    let l = super::stable_std_listener();
    l.local_addr().expect("local addr")
}

/// One certus process (when running) and everything it owns on disk.
pub struct ProcNode {
    pub id: u64,
    pub client: SocketAddr,
    pub peer: SocketAddr,
    pub http: SocketAddr,
    bin: PathBuf,
    config: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl ProcNode {
    fn new(id: u64, bin: PathBuf) -> ProcNode {
        let dir = copy_template();
        ProcNode {
            id,
            client: free_port(),
            peer: free_port(),
            http: free_port(),
            bin,
            config: dir.path().join("certus.toml"),
            dir,
            child: None,
        }
    }

    fn write_config(&self, members: &str) {
        let options: Vec<String> = test_backend_options()
            .iter()
            .map(|o| format!("{o:?}"))
            .collect();
        let toml = format!(
            "node_id = {id}\nnode_name = \"{name}\"\nlisten = \"{c}\"\n\
             peer_listen = \"{p}\"\nhttp_listen = \"{h}\"\n\
             members = [{members}]\ncluster_secret = \"{SECRET}\"\ndata_dir = \"{dir}\"\n\
             net_read_timeout = 5\n[backend]\nmode = \"managed\"\noptions = [{options}]\n",
            id = self.id,
            name = self.name(),
            c = self.client,
            p = self.peer,
            h = self.http,
            dir = self.dir.path().display(),
            options = options.join(", "),
        );
        std::fs::write(&self.config, toml).expect("config file");
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The node's `node_name` (what `@@wsrep_node_name` answers).
    pub fn name(&self) -> String {
        format!("node{}", self.id)
    }

    pub fn grastate(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("grastate.dat")).unwrap_or_default()
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
        let child = Command::new(&self.bin)
            .arg("node")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("certus starts");
        self.child = Some(child);
    }

    /// SIGKILL of the certus process, as a crash: no clean shutdown, its backend keeps running.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the (killed) node again on its data dir and config. Does not wait for it.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running node");
        self.spawn();
    }

    /// Runs `certus <args> --config <this node's config>` to completion.
    pub fn run_cli(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .expect("run certus")
    }

    /// The mariadbd this node started, if it runs: its pid file, and a command line that names
    /// this node's own data dir (a recycled PID is never ours).
    pub fn backend_pid(&self) -> Option<u32> {
        let pid_file = self.dir.path().join("mariadb/mysqld.pid");
        let pid: u32 = std::fs::read_to_string(pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let ours = self.dir.path().join("mariadb");
        String::from_utf8_lossy(&cmdline)
            .contains(&*ours.to_string_lossy())
            .then_some(pid)
    }

    /// SIGKILL of this node's mariadbd; false when it has none running.
    pub fn kill_backend(&self) -> bool {
        match self.backend_pid() {
            Some(pid) => Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status()
                .is_ok_and(|s| s.success()),
            None => false,
        }
    }

    /// Waits until this node's mariadbd is gone (after a kill, before restarting the node).
    pub async fn wait_backend_gone(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.backend_pid().is_none() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// The node's `/status` JSON, if it answers.
    pub fn status(&self) -> Option<serde_json::Value> {
        let (code, body) = super::http_get(self.http, "/status")?;
        if code != 200 {
            return None;
        }
        serde_json::from_str(&body).ok()
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("certus.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The node log's last 60 WARN and ERROR lines.
    fn warnings_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("certus.log")).unwrap_or_default();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// Admin connection options for this node's client port.
    pub fn opts(&self) -> mysql_async::Opts {
        admin_opts(self.client)
    }

    pub async fn connect(&self) -> Result<mysql_async::Conn, mysql_async::Error> {
        connect_at(self.client).await
    }

    /// The service account straight to this node's backend (bypassing certus).
    pub async fn backend(&self) -> Result<mysql_async::Conn, mysql_async::Error> {
        super::try_service_conn_at(self.dir.path()).await
    }

    /// Whether the node reports Synced through SQL and runs a write-path statement.
    pub async fn is_synced(&self) -> bool {
        use mysql_async::prelude::Queryable;
        let fut = async {
            let mut c = self.connect().await.ok()?;
            let row: Option<(String, String)> = c
                .query_first("SHOW STATUS LIKE 'wsrep_local_state_comment'")
                .await
                .ok()?;
            let ok = c.query_drop("SELECT 1 FROM DUAL").await.is_ok();
            let _ = c.disconnect().await;
            Some(ok && row.is_some_and(|r| r.1 == "Synced"))
        };
        tokio::time::timeout(Duration::from_secs(5), fut)
            .await
            .ok()
            .flatten()
            .unwrap_or(false)
    }

    /// Waits until the node is Synced (see [`ProcNode::is_synced`]); panics with its log tail
    /// otherwise.
    pub async fn wait_synced(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.is_synced().await {
            assert!(
                Instant::now() < deadline,
                "node {} not Synced within {within:?}:\n{}",
                self.id,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for ProcNode {
    fn drop(&mut self) {
        self.kill9();
        // A failing test's output then says what each node warned of (CI keeps no data dirs).
        if std::thread::panicking() {
            eprintln!("--- {} warnings ---\n{}", self.name(), self.warnings_tail());
        }
        if let Some(pid) = self.backend_pid() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        // CERTUS_KEEP_FAILED=1: a failing test leaves each node's data dir (backend, Raft log,
        // certus.log) for diagnosis instead of deleting it.
        if std::thread::panicking() && std::env::var_os("CERTUS_KEEP_FAILED").is_some() {
            if let Ok(empty) = tempfile::tempdir() {
                let kept = std::mem::replace(&mut self.dir, empty).keep();
                eprintln!("--- {} data dir kept: {}", self.name(), kept.display());
            }
        }
    }
}

fn admin_opts(addr: SocketAddr) -> mysql_async::Opts {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname(addr.ip().to_string())
        .tcp_port(addr.port())
        .prefer_socket(false)
        .user(Some(ADMIN_USER))
        .pass(Some(ADMIN_PASSWORD))
        .conn_ttl(None)
        .into()
}

/// An admin connection to a MySQL-protocol address (a node or a proxy in front of nodes),
/// bounded to 5 s.
pub async fn connect_at(addr: SocketAddr) -> Result<mysql_async::Conn, mysql_async::Error> {
    tokio::time::timeout(
        Duration::from_secs(5),
        mysql_async::Conn::new(admin_opts(addr)),
    )
    .await
    .unwrap_or_else(|_| {
        Err(mysql_async::Error::Io(mysql_async::IoError::Io(
            std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
        )))
    })
}

/// Runs `sql` through `addr`, reconnecting and retrying while the cluster is not ready
/// (bounded: 60 s).
pub async fn run_ready(addr: SocketAddr, sql: &str) {
    use mysql_async::prelude::Queryable;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = match connect_at(addr).await {
            Ok(mut c) => c.query_drop(sql).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => return,
            Err(e) => {
                assert!(Instant::now() < deadline, "{sql}: {e:?}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
}

/// Three (or more) certus processes forming one cluster.
pub struct ProcCluster {
    pub nodes: Vec<ProcNode>,
}

impl ProcCluster {
    /// Writes a config file per node, starts them all and waits until each is Synced.
    pub async fn start(n: usize) -> ProcCluster {
        let bin = certus_bin();
        assert!(bin.is_file(), "no certus binary at {}", bin.display());
        let mut nodes: Vec<ProcNode> = (1..=n as u64)
            .map(|id| ProcNode::new(id, bin.clone()))
            .collect();
        let members = nodes
            .iter()
            .map(|n| format!("\"{}={}\"", n.id, n.peer))
            .collect::<Vec<_>>()
            .join(", ");
        for node in &mut nodes {
            node.write_config(&members);
            node.spawn();
        }
        for node in &nodes {
            node.wait_synced(Duration::from_secs(90)).await;
        }
        ProcCluster { nodes }
    }

    /// Waits until every running node reports itself ready (Primary, Synced) on /status.
    pub async fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        for n in self.nodes.iter().filter(|n| n.is_running()) {
            while !n.status().is_some_and(|s| s["ready"] == true) {
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

    /// The node with this id (ids start at 1; `nodes[id - 1]`).
    pub fn node(&mut self, id: u64) -> &mut ProcNode {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .expect("a node with that id")
    }

    /// Every node's data dir.
    pub fn data_dirs(&self) -> Vec<PathBuf> {
        self.nodes.iter().map(|n| n.data_dir().to_owned()).collect()
    }
}
