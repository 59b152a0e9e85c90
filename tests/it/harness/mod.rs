//! The integration-test harness. It owns every process and directory a test uses:
//!
//! * a template node data dir (MariaDB installed, service account and an `admin` account created)
//!   is built once per test run under `CARGO_TARGET_TMPDIR` and copied for each node;
//! * nodes run in the test's own process on port-0 listeners;
//! * node data dirs are temporary directories removed on drop, and `Node::shutdown` stops the
//!   node's mariadbd by PID.
//!
//! When MariaDB is not installed the tests skip loudly, unless `CI` is set: then they fail.

#![allow(dead_code)]

mod checks;
pub mod process;

pub use checks::*;

use certus::config::{BackendMode, RawNodeConfig};
use certus::node::Node;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

/// Skips the test (returns) when MariaDB is not installed; see [`mariadb_available`].
macro_rules! require_mariadb {
    () => {
        if !$crate::harness::mariadb_available() {
            return;
        }
    };
}
pub(crate) use require_mariadb;

pub const ADMIN_USER: &str = "admin";
pub const ADMIN_PASSWORD: &str = "certus";
/// The cluster secret of every `TestCluster` (and of nodes that join one).
pub const CLUSTER_SECRET: &[u8] = b"test-cluster-secret-0123456789";
const MARIADBD: &str = "/usr/sbin/mariadbd";

/// Small InnoDB settings: tests start many servers on two cores.
pub fn test_backend_options() -> Vec<String> {
    [
        "innodb_buffer_pool_size=64M",
        "innodb_log_file_size=16M",
        "max_allowed_packet=64M",
        "performance_schema=OFF",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Returns false (after saying so) when the test must be skipped. Also turns on logs when
/// RUST_LOG is set.
/// A loopback listener on a port below the kernel's ephemeral range (32768 and up), so that
/// after a node stops no outgoing connection can take its port before the node binds it again
/// (a restart on the same ports). Ports come from a per-process walk of 20000..32000.
pub fn stable_std_listener() -> std::net::TcpListener {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = (std::process::id() % 400) * 30;
    for _ in 0..2000 {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = 20000 + (start + n) % 12000;
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port as u16)) {
            return l;
        }
    }
    panic!("no free loopback port in 20000..32000");
}

/// [`stable_std_listener`] for tokio.
pub async fn stable_listener() -> tokio::net::TcpListener {
    let l = stable_std_listener();
    l.set_nonblocking(true).expect("non-blocking listener");
    tokio::net::TcpListener::from_std(l).expect("tokio listener")
}

pub fn mariadb_available() -> bool {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
    if Path::new(MARIADBD).exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but {MARIADBD} is missing: .ci/run must install mariadb-server"
    );
    eprintln!("SKIPPED: {MARIADBD} is not installed (apt-get install mariadb-server)");
    false
}

static TEMPLATE: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// Bump when the template's contents must change.
const TEMPLATE_VERSION: &str = "3";

fn template() -> &'static Path {
    let r = TEMPLATE.get_or_init(|| {
        // Built on a plain thread with its own runtime: callers are inside a tokio runtime.
        std::thread::spawn(build_template)
            .join()
            .unwrap_or_else(|_| Err("template builder panicked".into()))
    });
    match r {
        Ok(p) => p,
        Err(e) => panic!("cannot build the template data dir: {e}"),
    }
}

fn build_template() -> Result<PathBuf, String> {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("template");
    let marker = root.join("template-complete");
    let key = format!(
        "{TEMPLATE_VERSION}\n{}\n{:?}",
        include_str!("../../../sql/schema.sql"),
        test_backend_options()
    );
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(key.as_str()) {
        return Ok(root);
    }
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    let result = build_template_in(&root);
    // The template keeps the backend only: every node starts its own Raft log and its own
    // grastate.dat (the template node's cluster uuid must not leak into test clusters).
    let _ = std::fs::remove_dir_all(root.join("raft"));
    let _ = std::fs::remove_file(root.join("grastate.dat"));
    result?;
    std::fs::write(&marker, key).map_err(|e| e.to_string())?;
    Ok(root)
}

fn build_template_in(root: &Path) -> Result<(), String> {
    let root = root.to_owned();
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let listener = stable_listener().await;
        let peers = stable_listener().await;
        let mut cfg = node_config(&root, 1);
        cfg.members = [(
            1,
            peers.local_addr().map_err(|e| e.to_string())?.to_string(),
        )]
        .into();
        let listeners = certus::node::Listeners {
            client: listener,
            peer: peers,
            http: None,
        };
        let node = Node::start(cfg, listeners)
            .await
            .map_err(|e| e.to_string())?;
        let mut conn = service_conn_at(&root).await;
        use mysql_async::prelude::Queryable;
        for stmt in [
            format!("CREATE USER '{ADMIN_USER}'@'%' IDENTIFIED BY '{ADMIN_PASSWORD}'"),
            format!("GRANT ALL PRIVILEGES ON *.* TO '{ADMIN_USER}'@'%' WITH GRANT OPTION"),
        ] {
            conn.query_drop(stmt).await.map_err(|e| e.to_string())?;
        }
        conn.disconnect().await.map_err(|e| e.to_string())?;
        node.shutdown().await;
        Ok::<(), String>(())
    })
}

pub fn node_config(data_dir: &Path, node_id: u64) -> certus::config::NodeConfig {
    let mut raw = RawNodeConfig::default();
    raw.node_id = Some(node_id);
    raw.data_dir = Some(data_dir.to_owned());
    raw.backend_mode = Some(BackendMode::Managed);
    raw.backend_options = Some(test_backend_options());
    raw.net_read_timeout = Some(2);
    raw.validate().expect("valid test config")
}

/// The service account's connection straight to a node's backend socket (bypassing the node).
pub async fn service_conn_at(data_dir: &Path) -> mysql_async::Conn {
    try_service_conn_at(data_dir)
        .await
        .expect("service connection to the backend")
}

/// Like [`service_conn_at`], for a backend that may be restarting.
pub async fn try_service_conn_at(data_dir: &Path) -> Result<mysql_async::Conn, mysql_async::Error> {
    let cnf = std::fs::read_to_string(data_dir.join("service.cnf")).expect("service.cnf");
    let get = |k: &str| {
        cnf.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")).map(str::to_owned))
            .expect("service.cnf field")
    };
    let opts = mysql_async::OptsBuilder::default()
        .socket(Some(
            data_dir
                .join("mariadb/mysqld.sock")
                .to_string_lossy()
                .into_owned(),
        ))
        .user(Some(get("user")))
        .pass(Some(get("password")));
    mysql_async::Conn::new(opts).await
}

pub struct TestNode {
    pub node: Option<Node>,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    cfg: certus::config::NodeConfig,
}

impl TestNode {
    /// Starts one node from the template, with `tweak` applied to its config.
    pub async fn start_with(tweak: impl FnOnce(&mut certus::config::NodeConfig)) -> TestNode {
        let dir = Self::copy_template();
        let peers = stable_listener().await;
        let mut cfg = node_config(dir.path(), 1);
        cfg.members = [(1, peers.local_addr().expect("addr").to_string())].into();
        tweak(&mut cfg);
        Self::start_in(dir, cfg, peers).await
    }

    /// Starts a node whose data dir already holds a copy of the template (or a stopped node's
    /// state), and waits until it is ready.
    pub async fn start_in(
        dir: tempfile::TempDir,
        cfg: certus::config::NodeConfig,
        peers: tokio::net::TcpListener,
    ) -> TestNode {
        let node = Self::launch(dir, cfg, peers).await;
        let ready = TestNode::eventually(Duration::from_secs(30), || {
            node.node.as_ref().is_some_and(|n| n.is_ready())
        })
        .await;
        assert!(ready, "node not ready within 30 s");
        node
    }

    /// Starts node `node_id` from a fresh template copy with `join = true` and the test
    /// cluster's secret; `members` are running members it learns the cluster UUID from. It
    /// serves nothing until a member adds it (`certus cluster add-node`), so this does not wait
    /// for it to be ready.
    pub async fn start_joining(node_id: u64, members: &[&TestNode]) -> TestNode {
        let dir = Self::copy_template();
        let peers = stable_listener().await;
        let mut cfg = node_config(dir.path(), node_id);
        cfg.members = members
            .iter()
            .map(|n| (n.node_id(), n.peer_addr()))
            .chain([(node_id, peers.local_addr().expect("addr").to_string())])
            .collect();
        cfg.join = true;
        cfg.cluster_secret = CLUSTER_SECRET.to_vec();
        Self::launch(dir, cfg, peers).await
    }

    /// This node's peer address (what `cluster add-node --peer` names).
    pub fn peer_addr(&self) -> String {
        self.cfg
            .members
            .get(&self.cfg.node_id)
            .cloned()
            .expect("a node's own peer address is in its config")
    }

    pub fn node_id(&self) -> u64 {
        self.cfg.node_id
    }

    /// Starts a node without waiting for it to be ready.
    async fn launch(
        dir: tempfile::TempDir,
        cfg: certus::config::NodeConfig,
        peers: tokio::net::TcpListener,
    ) -> TestNode {
        let listener = stable_listener().await;
        let http = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let listeners = certus::node::Listeners {
            client: listener,
            peer: peers,
            http: Some(http),
        };
        let node = Node::start(cfg.clone(), listeners)
            .await
            .expect("node starts");
        TestNode {
            addr: node.client_addr(),
            node: Some(node),
            dir,
            cfg,
        }
    }

    /// Stops the node cleanly and starts it again on the same data dir (a one-node cluster:
    /// its peer address may change).
    pub async fn restart(self) -> TestNode {
        let mut this = self;
        if let Some(node) = this.node.take() {
            node.shutdown().await;
        }
        let peers = stable_listener().await;
        let mut cfg = this.cfg.clone();
        cfg.members = [(cfg.node_id, peers.local_addr().expect("addr").to_string())].into();
        let dir = tempfile::Builder::new()
            .prefix("certus-it")
            .tempdir()
            .expect("tempdir");
        // Swap the data dir out of `this` so its Drop does not delete it.
        let old = std::mem::replace(&mut this.dir, dir);
        drop(this);
        Self::start_in(old, cfg, peers).await
    }

    /// The config the node was started with.
    pub fn config(&self) -> &certus::config::NodeConfig {
        &self.cfg
    }

    /// Stops the node cleanly and hands back its data dir (deleted when the caller drops it)
    /// and its config, for tests that restart or tamper with a stopped node.
    pub async fn stop_keep_dir(mut self) -> (tempfile::TempDir, certus::config::NodeConfig) {
        if let Some(node) = self.node.take() {
            node.shutdown().await;
        }
        let dir = tempfile::Builder::new()
            .prefix("certus-it")
            .tempdir()
            .expect("tempdir");
        let old = std::mem::replace(&mut self.dir, dir);
        (old, self.cfg.clone())
    }

    /// A fresh copy of the template data dir.
    pub fn copy_template() -> tempfile::TempDir {
        let template = template();
        let dir = tempfile::Builder::new()
            .prefix("certus-it")
            .tempdir()
            .expect("tempdir");
        let status = Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", template.display()))
            .arg(dir.path())
            .status()
            .expect("cp");
        assert!(status.success(), "copying the template failed");
        dir
    }

    pub async fn start() -> TestNode {
        Self::start_with(|_| {}).await
    }

    /// A fresh copy of the template data dir (an empty backend, no Raft log).
    pub fn fresh_dir() -> tempfile::TempDir {
        Self::copy_template()
    }

    /// Stops the node and hands back its data dir and config, to start it again later with
    /// [`TestNode::start_member`].
    pub async fn stop_keep(self) -> (tempfile::TempDir, certus::config::NodeConfig) {
        let mut this = self;
        if let Some(node) = this.node.take() {
            node.shutdown().await;
        }
        let placeholder = tempfile::Builder::new()
            .prefix("certus-it")
            .tempdir()
            .expect("tempdir");
        let dir = std::mem::replace(&mut this.dir, placeholder);
        (dir, this.cfg.clone())
    }

    /// Starts a cluster member on `dir` with `cfg` (its data dir set to `dir`), on the peer
    /// address its member list names, and waits up to `ready_within` for it to serve.
    pub async fn start_member(
        dir: tempfile::TempDir,
        mut cfg: certus::config::NodeConfig,
        ready_within: Duration,
    ) -> TestNode {
        cfg.data_dir = dir.path().to_owned();
        cfg.maintenance_file = dir.path().join("clustercheck.disabled");
        let addr = cfg.members[&cfg.node_id].clone();
        let peers = tokio::net::TcpListener::bind(&addr)
            .await
            .expect("bind the member's peer address again");
        let listeners = certus::node::Listeners {
            client: stable_listener().await,
            peer: peers,
            http: Some(
                tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind"),
            ),
        };
        let node = Node::start(cfg.clone(), listeners)
            .await
            .expect("node starts");
        let ready = TestNode::eventually(ready_within, || {
            node.is_ready() || node.status().inconsistent.is_some()
        })
        .await;
        let inconsistent = node.status().inconsistent;
        let this = TestNode {
            addr: node.client_addr(),
            node: Some(node),
            dir,
            cfg,
        };
        assert!(
            inconsistent.is_none(),
            "node is Inconsistent: {inconsistent:?}"
        );
        assert!(ready, "node not ready within {ready_within:?}");
        this
    }

    /// The running node.
    pub fn running(&self) -> &Node {
        self.node.as_ref().expect("running node")
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub async fn service_conn(&self) -> mysql_async::Conn {
        service_conn_at(self.dir.path()).await
    }

    /// A mysql_async connection through the node.
    pub async fn connect(
        &self,
        user: &str,
        password: &str,
    ) -> Result<mysql_async::Conn, mysql_async::Error> {
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(self.port())
            .prefer_socket(false)
            .user(Some(user))
            .pass(Some(password));
        mysql_async::Conn::new(opts).await
    }

    pub async fn admin(&self) -> mysql_async::Conn {
        self.connect(ADMIN_USER, ADMIN_PASSWORD)
            .await
            .expect("admin login through the node")
    }

    /// Runs the `mariadb` command-line client against the node.
    pub fn cli(&self, user: &str, password: &str, args: &[&str]) -> Output {
        Command::new("mariadb")
            .args([
                "-h127.0.0.1",
                &format!("-P{}", self.port()),
                &format!("-u{user}"),
                &format!("-p{password}"),
            ])
            .args(args)
            .output()
            .expect("the mariadb client runs")
    }

    pub async fn stop(mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await;
        }
    }

    /// Stops the node (and its backend) but keeps its data dir, to [`TestNode::resume`] later.
    pub async fn halt(&mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await;
        }
    }

    /// Starts a halted node again on its data dir, its client port and its peer port: it
    /// rejoins its cluster. Does not wait for readiness (a node without a quorum is not ready).
    pub async fn resume(&mut self) {
        assert!(self.node.is_none(), "resume of a running node");
        let peer_addr = self.cfg.members[&self.cfg.node_id].clone();
        let bind = |addr: String| async move {
            // The old sockets may linger for a moment after the shutdown.
            for _ in 0..50 {
                if let Ok(l) = tokio::net::TcpListener::bind(&addr).await {
                    return l;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("cannot bind {addr} again");
        };
        let listeners = certus::node::Listeners {
            client: bind(self.addr.to_string()).await,
            peer: bind(peer_addr).await,
            http: Some(
                tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind"),
            ),
        };
        let node = Node::start(self.cfg.clone(), listeners)
            .await
            .expect("node restarts");
        self.node = Some(node);
    }

    /// Polls `check` every 50 ms until it holds or `timeout` passes.
    pub async fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if check() {
                return true;
            }
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        // A test that panicked before `stop` still must not leak its mariadbd: kill it by the PID
        // its pid file names (this node's own server, nothing else).
        if self.node.is_some() {
            if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("mariadb/mysqld.pid")) {
                let _ = Command::new("kill").arg("-9").arg(pid.trim()).status();
            }
        }
    }
}

/// A fresh copy of the template data dir (MariaDB installed, accounts created).
pub fn copy_template() -> tempfile::TempDir {
    TestNode::copy_template()
}

/// An admin connection through the node listening on `port` (for spawned tasks).
pub async fn admin_at(port: u16) -> mysql_async::Conn {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .prefer_socket(false)
        .user(Some(ADMIN_USER))
        .pass(Some(ADMIN_PASSWORD));
    mysql_async::Conn::new(opts)
        .await
        .expect("admin login through the node")
}

/// The Python interpreter of the test venv (PyMySQL, SQLAlchemy). CI creates it with .ci/run.
pub fn python() -> Option<PathBuf> {
    let p = std::env::var_os("CERTUS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/venv/bin/python")
        });
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but the test venv {} is missing",
        p.display()
    );
    eprintln!("SKIPPED: no Python venv at {} (python3 -m venv target/venv && target/venv/bin/pip install PyMySQL SQLAlchemy)", p.display());
    None
}

/// Runs `tests/py/<script>` with the node's address; returns its output, panicking on failure.
pub fn run_python(python: &Path, script: &str, args: &[String]) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(script);
    let out = Command::new(python)
        .arg(&path)
        .args(args)
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}

/// A cluster of nodes in this process, each with its own managed MariaDB.
pub struct TestCluster {
    pub nodes: Vec<TestNode>,
}

/// One founding member before its start ([`TestCluster::founding_members`]).
pub struct Founder {
    pub dir: tempfile::TempDir,
    pub cfg: certus::config::NodeConfig,
    pub peer: tokio::net::TcpListener,
}

impl TestCluster {
    pub async fn start(n: usize) -> TestCluster {
        Self::start_with(n, |_| {}).await
    }

    /// Starts `n` nodes with `tweak` applied to every node's config.
    pub async fn start_with(
        n: usize,
        tweak: impl Fn(&mut certus::config::NodeConfig),
    ) -> TestCluster {
        Self::start_founders(Self::founding_members(n, tweak).await).await
    }

    /// The founding members of an `n`-node cluster, not started: each one's data dir (a
    /// template copy), config (`tweak` applied) and bound peer listener, in node id order.
    pub async fn founding_members(
        n: usize,
        tweak: impl Fn(&mut certus::config::NodeConfig),
    ) -> Vec<Founder> {
        let mut peers = Vec::new();
        for _ in 0..n {
            peers.push(
                tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind"),
            );
        }
        let members: std::collections::BTreeMap<u64, String> = peers
            .iter()
            .enumerate()
            .map(|(i, l)| (i as u64 + 1, l.local_addr().expect("addr").to_string()))
            .collect();
        peers
            .into_iter()
            .enumerate()
            .map(|(i, peer)| {
                let dir = TestNode::copy_template();
                let mut cfg = node_config(dir.path(), i as u64 + 1);
                cfg.members = members.clone();
                cfg.cluster_secret = CLUSTER_SECRET.to_vec();
                tweak(&mut cfg);
                Founder { dir, cfg, peer }
            })
            .collect()
    }

    /// Starts `founders` concurrently (each waits for a quorum before it serves) and waits
    /// until all of them serve.
    pub async fn start_founders(founders: Vec<Founder>) -> TestCluster {
        let starts: Vec<_> = founders
            .into_iter()
            .map(|f| tokio::spawn(TestNode::start_in(f.dir, f.cfg, f.peer)))
            .collect();
        let mut nodes = Vec::new();
        for s in starts {
            nodes.push(s.await.expect("node start task"));
        }
        let cluster = TestCluster { nodes };
        cluster.wait_ready(Duration::from_secs(30)).await;
        cluster
    }

    /// Waits until every node follows a leader that is one of these nodes and serves clients.
    /// After a node stops, the others go on naming it leader (and may still sample themselves
    /// Primary) until their election timeout passes, so [`TestCluster::wait_ready`] alone can
    /// return before the election that follows. Panics after `timeout`.
    pub async fn wait_leader_among_us(&self, timeout: Duration) {
        let ids: Vec<u64> = self.nodes.iter().map(|n| n.node_id()).collect();
        let settled = TestNode::eventually(timeout, || {
            self.nodes.iter().all(|n| {
                n.running().is_ready()
                    && n.running()
                        .status()
                        .leader
                        .is_some_and(|l| ids.contains(&l))
            })
        })
        .await;
        assert!(settled, "no leader among nodes {ids:?} within {timeout:?}");
    }

    /// Waits until every node accepts a write-path statement (it is Primary).
    pub async fn wait_ready(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        for n in &self.nodes {
            loop {
                let ok = match n.connect(ADMIN_USER, ADMIN_PASSWORD).await {
                    Ok(mut c) => {
                        use mysql_async::prelude::Queryable;
                        c.query_drop("SELECT 1 FROM DUAL").await.is_ok()
                    }
                    Err(_) => false,
                };
                if ok {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "cluster not ready within {timeout:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Whether `n` becomes ready within 30 s.
    pub async fn wait_node_ready(n: &TestNode) -> bool {
        let node = n.node.as_ref().expect("running node");
        TestNode::eventually(Duration::from_secs(30), || node.is_ready()).await
    }

    pub fn node(&self, i: usize) -> &TestNode {
        &self.nodes[i]
    }

    pub async fn stop(self) {
        for n in self.nodes {
            n.stop().await;
        }
    }
}
