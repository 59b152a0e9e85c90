//! Online membership changes: grow a three-node cluster to five and shrink it back to three
//! while clients write, with real MariaDB backends.

use crate::harness::{self, TestCluster, TestNode, CLUSTER_SECRET};
use certus::replication::{cluster_admin, AdminOp, MembershipView};
use mysql_async::prelude::*;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

macro_rules! require_mariadb {
    () => {
        if !harness::mariadb_available() {
            return;
        }
    };
}

/// The acknowledgements of every writer on one clock: the last one, and the longest time the
/// whole cluster went without acknowledging any write (the test's measure of "the cluster kept
/// its quorum"; one client may wait longer on an unknown outcome).
#[derive(Clone)]
struct Acks(Arc<std::sync::Mutex<(Instant, Duration)>>);

impl Acks {
    fn new() -> Acks {
        Acks(Arc::new(std::sync::Mutex::new((
            Instant::now(),
            Duration::ZERO,
        ))))
    }

    fn ack(&self) {
        let mut a = self.0.lock().unwrap();
        a.1 = a.1.max(a.0.elapsed());
        a.0 = Instant::now();
    }

    fn longest_gap(&self) -> Duration {
        let a = self.0.lock().unwrap();
        a.1.max(a.0.elapsed())
    }
}

/// Inserts rows with ids `base + i` until `stop`, through the nodes on `ports` in turn: it
/// moves to the next node after a connection error or a refusal (1047), as a client behind a
/// load balancer would. Only acknowledged inserts are recorded.
async fn writer(ports: Vec<u16>, base: i64, stop: Arc<AtomicBool>, acks: Acks) -> Vec<i64> {
    let mut turn = 0usize;
    let mut acked = Vec::new();
    let mut conn: Option<mysql_async::Conn> = None;
    for i in 0..1_000_000i64 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => {
                let opts = mysql_async::OptsBuilder::default()
                    .ip_or_hostname("127.0.0.1")
                    .tcp_port(ports[turn % ports.len()])
                    .prefer_socket(false)
                    .user(Some(harness::ADMIN_USER))
                    .pass(Some(harness::ADMIN_PASSWORD));
                match mysql_async::Conn::new(opts).await {
                    Ok(c) => conn.insert(c),
                    Err(_) => {
                        turn += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                }
            }
        };
        let id = base + i;
        match c
            .exec_drop("INSERT INTO mb.t VALUES (?, ?)", (id, base))
            .await
        {
            Ok(()) => {
                acked.push(id);
                acks.ack();
            }
            // 1047: no leader for a moment, or this node was removed: try the next node. The
            // outcome is known (nothing was committed) and the row is not acknowledged.
            Err(mysql_async::Error::Server(e)) if e.code == 1047 => {
                conn = None;
                turn += 1;
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(mysql_async::Error::Server(_)) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            // 2013 and friends: an unknown outcome; the row may or may not exist.
            Err(_) => {
                conn = None;
                turn += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    acked
}

async fn admin(through: &TestNode, op: AdminOp) -> MembershipView {
    cluster_admin(
        &through.peer_addr(),
        CLUSTER_SECRET,
        op.clone(),
        Duration::from_secs(150),
    )
    .await
    .unwrap_or_else(|e| panic!("{op:?} through node {}: {e}", through.node_id()))
}

/// Runs `certus cluster ...` (the release binary named by CERTUS_BIN) when it is available,
/// else the same request through the library; returns the command's output.
async fn cli_or_admin(through: &TestNode, args: &[&str], op: AdminOp) -> String {
    match std::env::var_os("CERTUS_BIN") {
        Some(bin) => {
            let out = tokio::process::Command::new(bin)
                .arg("cluster")
                .args(args)
                .arg("--node")
                .arg(through.peer_addr())
                .env(
                    "CERTUS_CLUSTER_SECRET",
                    std::str::from_utf8(CLUSTER_SECRET).unwrap(),
                )
                .output()
                .await
                .expect("certus cluster runs");
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "certus cluster {args:?} failed: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            stdout
        }
        None => admin(through, op).await.to_string(),
    }
}

/// The node's own `wsrep%` status rows, through the node (empty when it cannot be reached).
async fn status_of(n: &TestNode) -> Vec<(String, String)> {
    match n
        .connect(harness::ADMIN_USER, harness::ADMIN_PASSWORD)
        .await
    {
        Ok(mut c) => c
            .query("SHOW GLOBAL STATUS LIKE 'wsrep%'")
            .await
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

fn get(rows: &[(String, String)], k: &str) -> Option<String> {
    rows.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
}

/// Waits until every node in `nodes` reports `wsrep_cluster_size` = `size`; returns their
/// conf ids.
async fn wait_cluster_size(nodes: &[&TestNode], size: usize) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut conf_ids = Vec::new();
    for n in nodes {
        loop {
            let rows = status_of(n).await;
            if get(&rows, "wsrep_cluster_size") == Some(size.to_string()) {
                conf_ids.push(
                    get(&rows, "wsrep_cluster_conf_id")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {} reports cluster size {:?}, expected {size}",
                n.node_id(),
                get(&rows, "wsrep_cluster_size")
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    conf_ids
}

fn is_not_ready(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(e) if e.code == 1047
        && e.state == "08S01"
        && e.message == "WSREP has not yet prepared node for application use")
}

/// Asserts that `n` refuses clients with Galera's 1047 (08S01): at login, or at a write.
async fn assert_refuses_clients(n: &TestNode) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let refused = match n
            .connect(harness::ADMIN_USER, harness::ADMIN_PASSWORD)
            .await
        {
            Ok(mut c) => match c.query_drop("INSERT INTO mb.t VALUES (-1, -1)").await {
                Err(e) => is_not_ready(&e),
                Ok(()) => panic!("node {} accepted a write", n.node_id()),
            },
            // Refused at login, in place of the greeting: no SQLSTATE there, as MariaDB does.
            Err(mysql_async::Error::Server(e)) => {
                e.code == 1047 && e.message == "WSREP has not yet prepared node for application use"
            }
            Err(_) => false,
        };
        if refused {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {} still serves clients: {:?}",
            n.node_id(),
            n.node.as_ref().map(|n| n.status())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One HTTP GET of the clustercheck: the status code.
async fn clustercheck_code(n: &TestNode) -> u16 {
    let addr = n
        .node
        .as_ref()
        .and_then(|n| n.http_addr())
        .expect("http server");
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(addr) else {
            return 0;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = write!(s, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    })
    .await
    .unwrap_or(0)
}

/// CHECKSUM TABLE and the set of ids of `mb.t` on `n`'s backend, read directly.
async fn backend_rows(n: &TestNode) -> (Option<i64>, BTreeSet<i64>) {
    let mut conn = n.service_conn().await;
    let sum: Option<(String, Option<i64>)> = conn.query_first("CHECKSUM TABLE mb.t").await.unwrap();
    let ids: Vec<i64> = conn.query("SELECT id FROM mb.t").await.unwrap();
    let _ = conn.disconnect().await;
    (sum.and_then(|s| s.1), ids.into_iter().collect())
}

/// Waits until the backends of `nodes` agree on `mb.t`; returns its id set.
async fn converged(nodes: &[&TestNode]) -> BTreeSet<i64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut all = Vec::new();
        for n in nodes {
            all.push(backend_rows(n).await);
        }
        if all.iter().all(|r| r.0.is_some() && r.0 == all[0].0) {
            return all.swap_remove(0).1;
        }
        let sums: Vec<_> = all.iter().map(|r| r.0).collect();
        assert!(
            Instant::now() < deadline,
            "backends did not converge: {sums:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `n`'s backend hands out auto-increment values as the `wanted`
/// (increment, offset) pair says (Galera's auto-increment control follows the membership).
async fn wait_auto_increment(n: &TestNode, wanted: (u64, u64)) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut conn = n.service_conn().await;
        let actual: Option<(u64, u64)> = conn
            .query_first("SELECT @@global.auto_increment_increment, @@global.auto_increment_offset")
            .await
            .unwrap();
        let _ = conn.disconnect().await;
        if actual == Some(wanted) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {}: auto-increment {actual:?}, expected {wanted:?}",
            n.node_id()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Adds `joiner` through `through` and waits until it serves clients.
async fn grow(through: &TestNode, joiner: &TestNode, use_cli: bool) {
    let id = joiner.node_id();
    let op = AdminOp::AddNode {
        id,
        addr: joiner.peer_addr(),
        catch_up_ms: 120_000,
    };
    let shown = if use_cli {
        let id_arg = id.to_string();
        let peer = joiner.peer_addr();
        cli_or_admin(
            through,
            &[
                "add-node",
                "--id",
                &id_arg,
                "--peer",
                &peer,
                "--timeout",
                "120",
            ],
            op,
        )
        .await
    } else {
        admin(through, op).await.to_string()
    };
    assert!(
        shown.contains(&format!("voter   {id} ")),
        "node {id} is not a voter after add-node: {shown}"
    );
    assert!(
        TestCluster::wait_node_ready(joiner).await,
        "node {id} did not become Synced after add-node"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_from_three_to_five_and_shrink_back_under_write_load() {
    require_mariadb!();
    let mut c = TestCluster::start(3).await;
    let mut a = c.node(0).admin().await;
    a.query_drop("CREATE DATABASE mb").await.unwrap();
    a.query_drop("CREATE TABLE mb.t (id BIGINT PRIMARY KEY, origin BIGINT)")
        .await
        .unwrap();
    drop(a);
    let before = wait_cluster_size(&[c.node(0), c.node(1), c.node(2)], 3).await;

    // Write load through the original nodes, each writer moving on when its node refuses.
    let stop = Arc::new(AtomicBool::new(false));
    let ports: Vec<u16> = c.nodes.iter().map(|n| n.port()).collect();
    let acks = Acks::new();
    let writers: Vec<_> = [(1usize, 1_000_000i64), (2, 2_000_000)]
        .into_iter()
        .map(|(first, base)| {
            let mut ports = ports.clone();
            ports.rotate_left(first);
            tokio::spawn(writer(ports, base, stop.clone(), acks.clone()))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Grow: node 4 through a library call, node 5 through the command line.
    let n4 = TestNode::start_joining(4, &[c.node(0)]).await;
    assert_refuses_clients(&n4).await;
    assert_eq!(clustercheck_code(&n4).await, 503, "a joiner is not synced");
    // A joiner never forms a cluster of its own: after more than an election timeout alone it
    // is still outside any Primary component.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let alone = n4.node.as_ref().unwrap().status();
    assert!(!alone.primary && !alone.ready, "{alone:?}");
    // A node started without join = true forms a cluster of its own: it is never added.
    let stray = TestNode::start_with(|cfg| {
        let addr = cfg.members.values().next().cloned().unwrap();
        cfg.node_id = 6;
        cfg.members = [(6, addr)].into();
        cfg.cluster_secret = CLUSTER_SECRET.to_vec();
    })
    .await;
    let refused = cluster_admin(
        &c.node(0).peer_addr(),
        CLUSTER_SECRET,
        AdminOp::AddNode {
            id: 6,
            addr: stray.peer_addr(),
            catch_up_ms: 10_000,
        },
        Duration::from_secs(30),
    )
    .await;
    assert!(
        matches!(&refused, Err(certus::replication::AdminError::Refused(m)) if m.contains("join = true")),
        "{refused:?}"
    );
    stray.stop().await;
    // The admin requests need the cluster secret.
    let refused = cluster_admin(
        &c.node(0).peer_addr(),
        b"not-the-cluster-secret",
        AdminOp::Show,
        Duration::from_secs(5),
    )
    .await;
    assert!(
        matches!(refused, Err(certus::replication::AdminError::Auth { .. })),
        "{refused:?}"
    );
    grow(c.node(1), &n4, false).await;
    c.nodes.push(n4);
    let n5 = TestNode::start_joining(5, &[c.node(1), c.node(2)]).await;
    grow(c.node(2), &n5, true).await;
    c.nodes.push(n5);
    let grown = wait_cluster_size(&c.nodes.iter().collect::<Vec<_>>(), 5).await;
    assert!(
        grown.iter().min() > before.iter().max(),
        "conf ids did not move with the membership: {before:?} -> {grown:?}"
    );
    // The new members learned the cluster's state UUID; they did not make one up.
    let mut uuids = BTreeSet::new();
    for n in &c.nodes {
        uuids.insert(get(&status_of(n).await, "wsrep_cluster_state_uuid"));
    }
    assert_eq!(
        uuids.len(),
        1,
        "members disagree on the cluster uuid: {uuids:?}"
    );
    wait_auto_increment(c.node(0), (5, 1)).await;
    wait_auto_increment(c.node(3), (5, 4)).await;

    // The new nodes serve reads and writes like any member.
    let mut extra_acked = Vec::new();
    for (i, id) in [(3usize, 9_000_001i64), (4, 9_000_002)] {
        let mut conn = c.node(i).admin().await;
        conn.exec_drop("INSERT INTO mb.t VALUES (?, ?)", (id, 9))
            .await
            .unwrap();
        extra_acked.push(id);
        let n: Option<i64> = conn
            .query_first("SELECT COUNT(*) FROM mb.t WHERE id >= 1000000")
            .await
            .unwrap();
        assert!(
            n.unwrap_or(0) > 0,
            "node {} reads the replicated rows",
            i + 1
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Shrink: node 5 (added) through node 4, then whichever node leads (the leader removing
    // itself) through the command line on another member.
    let shown = admin(c.node(3), AdminOp::RemoveNode { id: 5 }).await;
    assert!(!shown.voters.contains_key(&5), "{shown}");
    let leader = admin(c.node(3), AdminOp::Show)
        .await
        .leader
        .expect("a leader after removing node 5");
    let through = c
        .nodes
        .iter()
        .find(|n| ![5, leader].contains(&n.node_id()))
        .expect("a member that stays");
    let leader_arg = leader.to_string();
    let shown = cli_or_admin(
        through,
        &["remove-node", "--id", &leader_arg],
        AdminOp::RemoveNode { id: leader },
    )
    .await;
    assert!(!shown.contains(&format!("voter   {leader} ")), "{shown}");
    assert!(!shown.contains(&format!("learner {leader} ")), "{shown}");
    let removed_ids = [5, leader];
    let live: Vec<&TestNode> = c
        .nodes
        .iter()
        .filter(|n| !removed_ids.contains(&n.node_id()))
        .collect();
    let shrunk = wait_cluster_size(&live, 3).await;
    assert!(
        shrunk.iter().min() > grown.iter().max(),
        "conf ids did not move with the membership: {grown:?} -> {shrunk:?}"
    );
    for (position, n) in live.iter().enumerate() {
        wait_auto_increment(n, (3, position as u64 + 1)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = extra_acked;
    for w in writers {
        let written = w.await.unwrap();
        eprintln!("writer: {} acknowledged", written.len());
        assert!(
            written.len() > 20,
            "too few acknowledged writes: {}",
            written.len()
        );
        acked.extend(written);
    }
    let gap = acks.longest_gap();
    eprintln!("longest time without an acknowledged write: {gap:?}");
    // Generous: a writer whose commit outcome is unknown (its node stepped down or was
    // removed) waits up to the propose timeout plus a grace period (15 s) before it moves on,
    // and on a loaded machine both writers can be in that window at once. A cluster without
    // quorum would stall them until the end of the test.
    assert!(
        gap < Duration::from_secs(30),
        "the cluster stopped committing for {gap:?}"
    );

    // The removed nodes refuse clients and say so on every surface.
    for removed in c
        .nodes
        .iter()
        .filter(|n| removed_ids.contains(&n.node_id()))
    {
        assert_refuses_clients(removed).await;
        assert_eq!(clustercheck_code(removed).await, 503);
        let status = removed.node.as_ref().unwrap().status();
        assert_eq!(status.cluster_status(), "Disconnected", "{status:?}");
        assert_eq!(status.cluster_size, 0);
        assert!(!status.ready);
    }
    let members = admin(live[0], AdminOp::Show).await;
    assert_eq!(
        members.voters.keys().copied().collect::<Vec<_>>(),
        live.iter().map(|n| n.node_id()).collect::<Vec<_>>()
    );
    assert!(members.learners.is_empty(), "{members}");

    // Every live backend agrees and holds every acknowledged write.
    let ids = converged(&live).await;
    eprintln!(
        "removed nodes {removed_ids:?}; {} rows, {} acknowledged",
        ids.len(),
        acked.len()
    );
    let missing: Vec<_> = acked.iter().filter(|id| !ids.contains(id)).collect();
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
    c.stop().await;
}
