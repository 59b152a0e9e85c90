//! A MariaDB Galera cluster the runner did not start (bench/lib.sh's `start_galera` did), faulted
//! through its `mariadbd` processes: kill -9, SIGSTOP/SIGCONT, and restart with IST.
//!
//! Owns the processes of a Galera cluster during a run: node `i` is the data dir `<dir>/n<i>`
//! (its `my.cnf`, `mysqld.pid`, `error.log`), served by the i-th `--endpoints` entry. A PID
//! is signalled only when it comes from that pid file and its command line names that node's
//! `my.cnf`, or when this runner spawned it; nothing is killed by name. It must not decide when
//! to fault (the nemesis does) nor start or stop the cluster as a whole (the caller's script
//! does, with the same functions the benchmarks use).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::runner::cluster::signal;
use crate::runner::RunError;

struct GaleraNode {
    id: u64,
    dir: PathBuf,
    /// A mariadbd this runner restarted; the original ones belong to the caller.
    child: Option<Child>,
    killed: bool,
    paused: Option<u32>,
}

impl GaleraNode {
    fn cnf(&self) -> PathBuf {
        self.dir.join("my.cnf")
    }

    /// The node's mariadbd: the one this runner restarted, else the one in its pid file
    /// (only if its command line is this node's). A restarted joiner writes its pid file only
    /// once its state transfer is done, so the child comes first.
    fn pid(&self) -> Option<u32> {
        if let Some(pid) = self.child.as_ref().and_then(Child::id) {
            return Some(pid);
        }
        let text = std::fs::read_to_string(self.dir.join("mysqld.pid")).ok()?;
        let pid: u32 = text.trim().parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        cmdline
            .contains(&*self.cnf().to_string_lossy())
            .then_some(pid)
    }
}

pub(crate) struct GaleraCluster {
    nodes: Vec<GaleraNode>,
    mariadbd: PathBuf,
}

/// How long a restarted node may take for `--wsrep-recover`.
const RECOVER_WITHIN: Duration = Duration::from_secs(60);

impl GaleraCluster {
    /// Node `i` (1-based) is `<dir>/n<i>`; every one must have a `my.cnf`.
    pub(crate) fn new(dir: &Path, nodes: u64) -> Result<GaleraCluster, RunError> {
        let mut out = Vec::new();
        for id in 1..=nodes {
            let node = GaleraNode {
                id,
                dir: dir.join(format!("n{id}")),
                child: None,
                killed: false,
                paused: None,
            };
            if !node.cnf().is_file() {
                return Err(RunError::Config(format!(
                    "no Galera node config {}",
                    node.cnf().display()
                )));
            }
            out.push(node);
        }
        Ok(GaleraCluster {
            nodes: out,
            mariadbd: mariadbd_path(),
        })
    }

    fn node(&mut self, id: u64) -> Result<&mut GaleraNode, RunError> {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .ok_or_else(|| RunError::Config(format!("no Galera node {id}")))
    }

    pub(crate) fn node_ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    pub(crate) fn is_running(&self, id: u64) -> bool {
        self.nodes.iter().any(|n| n.id == id && !n.killed)
    }

    /// SIGKILL of the node's mariadbd; waits (bounded) until it is gone.
    pub(crate) async fn kill(&mut self, id: u64) -> Result<(), RunError> {
        let node = self.node(id)?;
        let pid = node
            .pid()
            .ok_or_else(|| RunError::Cluster(format!("galera n{id}: no live mariadbd to kill")))?;
        signal(pid, "KILL").await?;
        node.killed = true;
        node.paused = None;
        if let Some(mut child) = node.child.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Starts a killed node again: `--wsrep-recover` finds its last committed position, and
    /// the node starts from it, so it rejoins with IST when the donor's gcache still holds the
    /// gap (SST otherwise).
    pub(crate) async fn restart(&mut self, id: u64) -> Result<String, RunError> {
        let mariadbd = self.mariadbd.clone();
        let node = self.node(id)?;
        if !node.killed {
            return Ok(format!("galera n{id} was running"));
        }
        let position = recover_position(&mariadbd, node).await;
        let mut cmd = Command::new(&mariadbd);
        cmd.arg(format!("--defaults-file={}", node.cnf().display()));
        if let Ok(p) = &position {
            cmd.arg(format!("--wsrep_start_position={p}"));
        }
        let stdout = log_file(&node.dir)?;
        let stderr = log_file(&node.dir)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| RunError::Cluster(format!("galera n{id}: spawning mariadbd: {e}")))?;
        node.child = Some(child);
        node.killed = false;
        Ok(match position {
            Ok(p) => format!("restart mariadbd galera n{id} from {p}"),
            Err(why) => format!("restart mariadbd galera n{id} (position unknown: {why}; SST)"),
        })
    }

    pub(crate) async fn pause(&mut self, id: u64) -> Result<(), RunError> {
        let node = self.node(id)?;
        let pid = node
            .pid()
            .ok_or_else(|| RunError::Cluster(format!("galera n{id}: no live mariadbd to pause")))?;
        signal(pid, "STOP").await?;
        node.paused = Some(pid);
        Ok(())
    }

    pub(crate) async fn resume(&mut self, id: u64) -> Result<(), RunError> {
        let node = self.node(id)?;
        if let Some(pid) = node.paused.take() {
            signal(pid, "CONT").await?;
        }
        Ok(())
    }

    /// Stops the mariadbd processes this runner restarted (SIGTERM, then SIGKILL after
    /// `within`); the caller stops the ones it started.
    pub(crate) async fn stop_restarted(&mut self, within: Duration) {
        for node in &mut self.nodes {
            if let Some(pid) = node.paused.take() {
                let _ = signal(pid, "CONT").await;
            }
            let Some(mut child) = node.child.take() else {
                continue;
            };
            if let Some(pid) = child.id() {
                let _ = signal(pid, "TERM").await;
            }
            if tokio::time::timeout(within, child.wait()).await.is_err() {
                let _ = child.start_kill();
                let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            }
        }
    }
}

fn mariadbd_path() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("mariadbd"))
            .find(|d| d.is_file())
    });
    on_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/mariadbd"))
}

fn log_file(dir: &Path) -> Result<Stdio, RunError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("stdout.log"))
        .map(Stdio::from)
        .map_err(RunError::io("opening a Galera node's stdout.log"))
}

/// `mariadbd --wsrep-recover`: the server recovers InnoDB, logs `WSREP: Recovered position:
/// <uuid>:<seqno>` to its error log and exits.
async fn recover_position(mariadbd: &Path, node: &GaleraNode) -> Result<String, String> {
    let log = node.dir.join("recover.log");
    let _ = std::fs::remove_file(&log);
    let run = Command::new(mariadbd)
        .arg(format!("--defaults-file={}", node.cnf().display()))
        .arg("--wsrep-recover")
        .arg(format!("--log-error={}", log.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status();
    match tokio::time::timeout(RECOVER_WITHIN, run).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(format!("--wsrep-recover: {e}")),
        Err(_) => return Err("--wsrep-recover timed out".into()),
    }
    let text = std::fs::read_to_string(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    parse_recovered_position(&text).ok_or_else(|| "no recovered position in the log".into())
}

fn parse_recovered_position(log: &str) -> Option<String> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("WSREP: Recovered position:"))?;
    let position = line.rsplit("Recovered position:").next()?.trim();
    let (uuid, seqno) = position.rsplit_once(':')?;
    let seqno: i64 = seqno.parse().ok()?;
    (uuid.len() == 36 && seqno >= 0).then(|| format!("{uuid}:{seqno}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recovered_position_comes_from_the_last_line() {
        let log = "2026-11-21 11:00:00 0 [Note] WSREP: Recovered position: \
                   3c5d1e4a-c7a1-11f0-8a4b-6b3f3b0f6c11:12\n\
                   2026-11-21 11:00:01 0 [Note] WSREP: Recovered position: \
                   3c5d1e4a-c7a1-11f0-8a4b-6b3f3b0f6c11:1234\n";
        assert_eq!(
            parse_recovered_position(log).as_deref(),
            Some("3c5d1e4a-c7a1-11f0-8a4b-6b3f3b0f6c11:1234")
        );
        let unknown = "[Note] WSREP: Recovered position: 00000000-0000-0000-0000-000000000000:-1";
        assert_eq!(parse_recovered_position(unknown), None);
        assert_eq!(parse_recovered_position("nothing here"), None);
    }
}
