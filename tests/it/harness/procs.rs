//! Clusters of real `certus` processes (the binary named by `CERTUS_BIN`), each started from a
//! TOML config file with its own managed `mariadbd`, for tests that kill -9 processes.
//!
//! Owns: the certus children it spawns and the mariadbd each of them started (found through
//! the node's pid file and checked against its command line before any signal). Everything is
//! killed on drop; nothing is ever signalled by name.

use super::{test_backend_options, TestNode, ADMIN_PASSWORD, ADMIN_USER};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "proc-cluster-secret-0123456789";

/// The certus binary to run: `CERTUS_BIN`, else the newest of the workspace's release and
/// debug builds. `None` (after saying so) when there is none and `CI` is not set.
pub fn certus_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CERTUS_BIN") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "CERTUS_BIN={} is not a file", p.display());
        return Some(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let newest = ["target/release/certus", "target/debug/certus"]
        .iter()
        .map(|p| root.join(p))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p);
    if newest.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but no certus binary was built (scripts/test.sh sets CERTUS_BIN)"
        );
        eprintln!("SKIPPED: no certus binary (set CERTUS_BIN or cargo build)");
    }
    newest
}

/// A loopback port free right now (the node binds it itself a moment later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

pub struct ProcNode {
    pub id: u64,
    pub dir: tempfile::TempDir,
    pub client_port: u16,
    pub peer_port: u16,
    pub http_port: u16,
    pub config: PathBuf,
    child: Option<Child>,
}

impl ProcNode {
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn grastate(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("grastate.dat")).unwrap_or_default()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The mariadbd this node started, if it runs (pid file plus a command-line check).
    pub fn backend_pid(&self) -> Option<u32> {
        let pid_file = self.dir.path().join("mariadb/mysqld.pid");
        let pid: u32 = std::fs::read_to_string(pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline);
        let ours = self.dir.path().join("mariadb");
        cmdline.contains(&*ours.to_string_lossy()).then_some(pid)
    }
}

pub struct ProcCluster {
    pub bin: PathBuf,
    pub nodes: Vec<ProcNode>,
}

impl ProcCluster {
    /// Writes a config file per node and starts them all; waits until each serves writes.
    pub async fn start(bin: PathBuf, n: usize) -> ProcCluster {
        let mut nodes = Vec::new();
        for i in 0..n {
            let dir = TestNode::copy_template();
            nodes.push(ProcNode {
                id: i as u64 + 1,
                config: dir.path().join("certus.toml"),
                dir,
                client_port: free_port(),
                peer_port: free_port(),
                http_port: free_port(),
                child: None,
            });
        }
        let members: Vec<String> = nodes
            .iter()
            .map(|n| format!("\"{}=127.0.0.1:{}\"", n.id, n.peer_port))
            .collect();
        let options: Vec<String> = test_backend_options()
            .iter()
            .map(|o| format!("{o:?}"))
            .collect();
        for n in &nodes {
            let toml = format!(
                "node_id = {id}\nnode_name = \"n{id}\"\nlisten = \"127.0.0.1:{c}\"\n\
                 peer_listen = \"127.0.0.1:{p}\"\nhttp_listen = \"127.0.0.1:{h}\"\n\
                 members = [{members}]\ncluster_secret = \"{SECRET}\"\ndata_dir = \"{dir}\"\n\
                 net_read_timeout = 5\n[backend]\nmode = \"managed\"\noptions = [{options}]\n",
                id = n.id,
                c = n.client_port,
                p = n.peer_port,
                h = n.http_port,
                members = members.join(", "),
                dir = n.dir.path().display(),
                options = options.join(", "),
            );
            std::fs::write(&n.config, toml).expect("config file");
        }
        let mut cluster = ProcCluster { bin, nodes };
        for i in 0..n {
            cluster.spawn(i);
        }
        for i in 0..n {
            assert!(
                cluster.wait_ready(i, Duration::from_secs(90)).await,
                "node {} never became ready:\n{}",
                i + 1,
                cluster.log_tail(i)
            );
        }
        cluster
    }

    pub fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "node {} already runs", node.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.path().join("certus.log"))
            .expect("log file");
        let err = log.try_clone().expect("log file");
        let child = Command::new(&self.bin)
            .arg("node")
            .arg("--config")
            .arg(&node.config)
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("spawn certus");
        node.child = Some(child);
    }

    /// Runs `certus <args> --config <node's config>` to completion.
    pub fn run_cli(&self, i: usize, args: &[&str]) -> std::process::Output {
        Command::new(&self.bin)
            .args(args)
            .arg("--config")
            .arg(&self.nodes[i].config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .expect("run certus")
    }

    /// SIGKILL of node i's certus process (its mariadbd keeps running).
    pub fn kill_certus(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILL of node i's mariadbd.
    pub fn kill_backend(&self, i: usize) -> bool {
        match self.nodes[i].backend_pid() {
            Some(pid) => Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status()
                .is_ok_and(|s| s.success()),
            None => false,
        }
    }

    /// Waits until node i's mariadbd is gone (after a kill, before restarting the node).
    pub async fn wait_backend_gone(&self, i: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.nodes[i].backend_pid().is_none() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// SIGTERM to node i's certus and a wait for its clean exit (it stops its mariadbd).
    pub async fn stop_clean(&mut self, i: usize, within: Duration) -> bool {
        let Some(mut child) = self.nodes[i].child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Whether node i's certus process has exited on its own (a refused start).
    pub fn exited(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        self.nodes[i].child.as_mut()?.try_wait().ok().flatten()
    }

    pub fn opts(&self, i: usize) -> mysql_async::Opts {
        mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(self.nodes[i].client_port)
            .prefer_socket(false)
            .user(Some(ADMIN_USER))
            .pass(Some(ADMIN_PASSWORD))
            .into()
    }

    /// Whether node i reports Synced (Primary, backend up, consistent) through SQL.
    pub async fn is_synced(&self, i: usize) -> bool {
        use mysql_async::prelude::Queryable;
        let fut = async {
            let mut c = mysql_async::Conn::new(self.opts(i)).await.ok()?;
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

    pub async fn wait_ready(&self, i: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.is_synced(i).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }

    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(self.nodes[i].dir.path().join("certus.log"))
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for ProcCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut child) = n.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            if let Some(pid) = n.backend_pid() {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
    }
}
