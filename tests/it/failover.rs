//! Crashes of whole nodes (SIGKILL of the certus process): the Raft leader under write load,
//! and a node behind HAProxy's clustercheck. Nodes run as separate processes
//! (`harness::process`), so a kill is a real crash.

use crate::harness::process::{connect_at, run_ready, ProcCluster, ProcNode};
use crate::harness::require_mariadb;
use mysql_async::prelude::*;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What one writer learned: ids acknowledged with OK, ids whose outcome it never heard.
#[derive(Default)]
struct Ledger {
    acked: BTreeSet<i64>,
    unknown: BTreeSet<i64>,
    /// When each acknowledgement arrived (to see writes resume after the crash).
    acked_at: Vec<Instant>,
}

/// Inserts ids `base + k` through `addr` until `stop`, reconnecting after errors. Every id is
/// tried once: OK -> acked; 1213/1047 (definitely not committed) -> dropped; anything else
/// (a closed connection, a timeout) -> unknown.
async fn writer(addr: SocketAddr, base: i64, stop: Arc<AtomicBool>, ledger: Arc<Mutex<Ledger>>) {
    let mut conn: Option<mysql_async::Conn> = None;
    let mut k = 0;
    while !stop.load(Ordering::Relaxed) {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match connect_at(addr).await {
                Ok(c) => conn.insert(c),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        k += 1;
        let id = base + k;
        let insert = c.query_drop(format!("INSERT INTO fo.t VALUES ({id}, {base})"));
        let result = tokio::time::timeout(Duration::from_secs(20), insert).await;
        let mut l = ledger.lock().unwrap();
        match result {
            Ok(Ok(())) => {
                l.acked.insert(id);
                l.acked_at.push(Instant::now());
            }
            Ok(Err(mysql_async::Error::Server(s))) if s.code == 1213 || s.code == 1047 => {
                drop(l);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(Err(_)) | Err(_) => {
                l.unknown.insert(id);
                drop(l);
                conn = None;
            }
        }
    }
}

/// Every id in `fo.t` on a node's backend, read directly.
async fn ids_on(n: &ProcNode) -> Option<BTreeSet<i64>> {
    let mut b = n.backend().await.ok()?;
    let ids: Vec<i64> = b.query("SELECT id FROM fo.t").await.ok()?;
    let _ = b.disconnect().await;
    Some(ids.into_iter().collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_raft_leader_under_write_load_loses_no_acknowledged_write() {
    require_mariadb!();
    let mut c = ProcCluster::start(3).await;
    let first = c.nodes[0].client;
    run_ready(first, "CREATE DATABASE fo").await;
    run_ready(first, "CREATE TABLE fo.t (id BIGINT PRIMARY KEY, w BIGINT)").await;
    let old_leader = c.leader(None, Duration::from_secs(30)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let ledgers: Vec<Arc<Mutex<Ledger>>> = (0..3).map(|_| Arc::default()).collect();
    let mut tasks = Vec::new();
    for (i, n) in c.nodes.iter().enumerate() {
        tasks.push(tokio::spawn(writer(
            n.client,
            (i as i64 + 1) * 1_000_000,
            stop.clone(),
            ledgers[i].clone(),
        )));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before: usize = ledgers.iter().map(|l| l.lock().unwrap().acked.len()).sum();
    assert!(before > 0, "no write was acknowledged before the crash");
    let killed_at = Instant::now();
    c.node(old_leader).kill9();

    // The two others elect a new leader and commits continue on them.
    let new_leader = c.leader(Some(old_leader), Duration::from_secs(30)).await;
    assert_ne!(new_leader, old_leader);
    let resumed = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let after: usize = ledgers
                .iter()
                .map(|l| {
                    let l = l.lock().unwrap();
                    l.acked_at.iter().filter(|t| **t > killed_at).count()
                })
                .sum();
            if after >= 20 {
                break killed_at.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "writes did not resume on the survivors ({after} acknowledged since the kill)"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    eprintln!(
        "leader n{old_leader} killed; new leader n{new_leader}; 20 commits after {resumed:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }

    // The old leader comes back, catches up, and every backend holds the same rows.
    c.node(old_leader).restart();
    c.wait_ready(Duration::from_secs(90)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let ids = loop {
        let mut sets = Vec::new();
        for n in &c.nodes {
            sets.push(ids_on(n).await);
        }
        if sets.iter().all(|s| s.is_some() && *s == sets[0]) {
            break sets[0].clone().unwrap_or_default();
        }
        assert!(
            Instant::now() < deadline,
            "backends did not converge: {:?}",
            sets.iter()
                .map(|s| s.as_ref().map(|s| s.len()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut acked = 0;
    for l in &ledgers {
        let l = l.lock().unwrap();
        for id in &l.acked {
            assert!(ids.contains(id), "acknowledged id {id} is missing");
        }
        acked += l.acked.len();
        // An unknown outcome may have gone either way, but the same way everywhere: the
        // backends are identical (checked above).
    }
    // Nothing appears that no writer tried.
    for id in &ids {
        let tried = ledgers.iter().any(|l| {
            let l = l.lock().unwrap();
            l.acked.contains(id) || l.unknown.contains(id)
        });
        assert!(tried, "id {id} was never acknowledged nor in doubt");
    }
    eprintln!("{acked} acknowledged, {} rows on every backend", ids.len());
}

/// HAProxy's view of one server: its `status` column in `show stat`.
fn haproxy_server_status(socket: &std::path::Path, server: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    s.write_all(b"show stat\n").ok()?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let header = out.lines().next()?.trim_start_matches("# ");
    let col = header.split(',').position(|h| h == "status")?;
    out.lines()
        .find(|l| l.split(',').nth(1) == Some(server))
        .and_then(|l| l.split(',').nth(col).map(str::to_owned))
}

struct HaProxy {
    child: std::process::Child,
    dir: tempfile::TempDir,
    addr: SocketAddr,
}

impl HaProxy {
    /// The all-active pattern of docs/operations.md, on loopback, servers in `order` (with
    /// `leastconn` and no load, the first one takes a new client).
    fn start(nodes: &[ProcNode], order: &[u64]) -> Option<HaProxy> {
        let bin = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())?;
        let dir = tempfile::tempdir().ok()?;
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?;
        let mut cfg = format!(
            "global\n  stats socket {}/stats.sock mode 600 level admin\n\
             defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n\
             listen galera\n  bind {addr}\n  balance leastconn\n  option httpchk\n\
             \x20 default-server inter 1000 rise 2 fall 2 on-marked-down shutdown-sessions\n",
            dir.path().display()
        );
        for id in order {
            let n = nodes.iter().find(|n| n.id == *id)?;
            cfg += &format!(
                "  server {} {} check port {}\n",
                n.name(),
                n.client,
                n.http.port()
            );
        }
        std::fs::write(dir.path().join("haproxy.cfg"), &cfg).ok()?;
        let child = std::process::Command::new(bin)
            .arg("-db")
            .arg("-f")
            .arg(dir.path().join("haproxy.cfg"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("haproxy.log")).ok()?)
            .spawn()
            .ok()?;
        Some(HaProxy { child, dir, addr })
    }

    fn status(&self, server: &str) -> Option<String> {
        haproxy_server_status(&self.dir.path().join("stats.sock"), server)
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_routes_around_a_killed_node_within_seconds() {
    require_mariadb!();
    if !["/usr/sbin/haproxy", "/usr/bin/haproxy"]
        .iter()
        .any(|p| std::path::Path::new(p).exists())
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but haproxy is missing: .ci/run must install it"
        );
        eprintln!("SKIPPED: haproxy is not installed (apt-get install haproxy)");
        return;
    }
    let mut c = ProcCluster::start(3).await;
    run_ready(c.nodes[0].client, "CREATE DATABASE hap").await;
    run_ready(
        c.nodes[0].client,
        "CREATE TABLE hap.t (id BIGINT PRIMARY KEY)",
    )
    .await;
    // The worst case: the client's node is the Raft leader, so the survivors must also elect.
    let leader = c.leader(None, Duration::from_secs(30)).await;
    let mut order: Vec<u64> = vec![leader];
    order.extend(c.nodes.iter().map(|n| n.id).filter(|id| *id != leader));
    let proxy = HaProxy::start(&c.nodes, &order).expect("haproxy starts");
    // Every server UP (rise 2 x inter 1 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !c
        .nodes
        .iter()
        .all(|n| proxy.status(&n.name()).as_deref() == Some("UP"))
    {
        assert!(Instant::now() < deadline, "haproxy never saw every node UP");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The client's own node is the one that dies.
    let mut client = connect_at(proxy.addr)
        .await
        .expect("connect through haproxy");
    let victim: String = client
        .query_first("SELECT @@wsrep_node_name")
        .await
        .unwrap()
        .unwrap();
    let mut id = 0i64;
    for _ in 0..10 {
        id += 1;
        client
            .query_drop(format!("INSERT INTO hap.t VALUES ({id})"))
            .await
            .unwrap();
    }
    let victim_id: u64 = victim.trim_start_matches("node").parse().unwrap();
    let killed_at = Instant::now();
    c.node(victim_id).kill9();

    // The client loops: reconnect through HAProxy after every error, until a write succeeds.
    let mut first_ok = None;
    // HAProxy's verdict is watched on its own, every 50 ms, while the client works.
    let stats = proxy.dir.path().join("stats.sock");
    let watched = victim.clone();
    let down_watch = tokio::task::spawn_blocking(move || {
        while killed_at.elapsed() < Duration::from_secs(30) {
            if haproxy_server_status(&stats, &watched).is_some_and(|s| s.starts_with("DOWN")) {
                return Some(killed_at.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut conn: Option<mysql_async::Conn> = Some(client);
    while first_ok.is_none() {
        assert!(
            Instant::now() < deadline,
            "no write through haproxy within 30 s of the kill"
        );
        {
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match connect_at(proxy.addr).await {
                    Ok(c) => conn.insert(c),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            id += 1;
            let w = c.query_drop(format!("INSERT INTO hap.t VALUES ({id})"));
            match tokio::time::timeout(Duration::from_secs(5), w).await {
                Ok(Ok(())) => first_ok = Some(killed_at.elapsed()),
                _ => {
                    conn = None;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    let down = down_watch
        .await
        .expect("watch task")
        .expect("haproxy never marked the killed node DOWN");
    let ok = first_ok.expect("a write succeeded");
    eprintln!(
        "haproxy failover: {victim} killed (Raft leader: node{leader}); marked DOWN after \
         {:.2} s; first write through haproxy after {:.2} s",
        down.as_secs_f64(),
        ok.as_secs_f64()
    );
    // inter 1000 fall 2: two failed checks, about 2 s; generous bounds for a loaded machine.
    assert!(down < Duration::from_secs(10), "marked down after {down:?}");
    assert!(ok < Duration::from_secs(20), "first write after {ok:?}");
    // And the client keeps working on the survivors.
    let mut c2 = conn.expect("a working connection");
    for _ in 0..20 {
        id += 1;
        let mut done = false;
        for _ in 0..50 {
            match c2
                .query_drop(format!("INSERT INTO hap.t VALUES ({id})"))
                .await
            {
                Ok(()) => {
                    done = true;
                    break;
                }
                Err(mysql_async::Error::Server(s)) if s.code == 1047 => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Err(e) => panic!("write through haproxy after failover: {e:?}"),
            }
        }
        assert!(done);
    }
    let name: String = c2
        .query_first("SELECT @@wsrep_node_name")
        .await
        .unwrap()
        .unwrap();
    assert_ne!(name, victim);
}
