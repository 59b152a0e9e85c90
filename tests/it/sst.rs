//! State transfer: Raft snapshots as SST dumps, log purge, joiner and donor states, on three
//! nodes with real MariaDB backends.

use crate::harness::{
    self, backend_count, converged, require_mariadb, run_all, TestCluster, TestNode,
};
use certus::node::status::LocalState;
use certus::replication::ReplicationMetrics;
use mysql_async::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Builds a snapshot on each of `nodes` and waits until each has purged its log past `past`
/// (a node that stopped answering no longer holds the leader's purge back, after 10 s).
async fn snapshot_and_purge(nodes: &[TestNode], past: u64) {
    for n in nodes {
        n.running()
            .trigger_snapshot()
            .await
            .expect("trigger snapshot");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let purged: Vec<Option<u64>> = nodes
            .iter()
            .map(|n| {
                n.running()
                    .replication_metrics()
                    .and_then(|m| m.purged_index)
            })
            .collect();
        if purged.iter().all(|p| p.is_some_and(|p| p > past)) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "logs not purged past {past}: {purged:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits (60 s at most) until `index` of the node's replication metrics is past `past`.
async fn wait_index_past(
    n: &TestNode,
    what: &str,
    past: u64,
    index: impl Fn(&ReplicationMetrics) -> Option<u64>,
) {
    let now = || n.running().replication_metrics().as_ref().and_then(&index);
    let done =
        TestNode::eventually(Duration::from_secs(60), || now().is_some_and(|i| i > past)).await;
    assert!(
        done,
        "node {} never {what} past {past}: {:?}",
        n.config().node_id,
        now()
    );
}

/// The Raft term `n` is in.
fn raft_term(n: &TestNode) -> u64 {
    n.running().replication_metrics().expect("metrics").term
}

fn last_log_index(n: &TestNode) -> u64 {
    n.running()
        .replication_metrics()
        .and_then(|m| m.last_log_index)
        .unwrap_or(0)
}

/// A joiner goes Joining -> Joined -> Synced and is never Synced before the end. (A restarting
/// node may pass Joining -> Joined once before it learns that it needs a snapshot.)
fn assert_joined_then_synced(history: &[&str]) {
    assert!(
        history.ends_with(&["Joining", "Joined", "Synced"]),
        "joiner states: {history:?}"
    );
    assert_eq!(
        history.iter().filter(|s| **s == "Synced").count(),
        1,
        "joiner states: {history:?}"
    );
}

/// A client that writes and reads through `port` until told to stop; counts successes and
/// failures.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

fn client_load(port: u16) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
    let task = tokio::spawn(async move {
        let mut errors = Vec::new();
        let mut c = harness::admin_at(port).await;
        let mut i = 0u64;
        while !s.load(Ordering::Relaxed) && i < 100_000 {
            i += 1;
            let w = c
                .exec_drop("INSERT INTO side.t (id, n) VALUES (?, ?)", (i, i))
                .await;
            let r = c.query_first::<i64, _>("SELECT COUNT(*) FROM side.t").await;
            match (w, r) {
                (Ok(()), Ok(Some(_))) => {
                    o.fetch_add(1, Ordering::Relaxed);
                }
                (w, r) => {
                    f.fetch_add(1, Ordering::Relaxed);
                    errors.push(format!("{w:?} {r:?}"));
                }
            }
        }
        errors
    });
    Load {
        stop,
        ok,
        failed,
        task,
    }
}

/// The index of the node that leads, as the first node sees it.
fn leader_position(nodes: &[TestNode]) -> usize {
    let leader = nodes[0].running().status().leader.expect("a leader");
    nodes
        .iter()
        .position(|n| n.running().status().node_id == leader)
        .expect("the leader is one of the nodes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_node_joins_through_an_sst_of_100k_rows_while_the_donor_serves() {
    require_mariadb!();
    let mut c = TestCluster::start_with(3, |cfg| {
        cfg.snapshot_logs = 0;
        cfg.log_keep_margin = 1;
    })
    .await;
    // Node 3 leaves; its data dir is replaced by an empty one (fresh backend, no Raft log).
    let (old_dir, cfg3) = c.nodes.pop().expect("node 3").stop_keep().await;
    drop(old_dir);
    // If node 3 led, the others elect a leader before they serve writes again.
    c.wait_leader_among_us(Duration::from_secs(30)).await;
    let mut a = c.node(0).admin_with(&[
        "CREATE DATABASE big",
        "CREATE TABLE big.t (id INT PRIMARY KEY, v VARCHAR(40), b VARBINARY(16), n INT, KEY(n))",
        "CREATE VIEW big.v AS SELECT COUNT(*) AS c FROM big.t",
        "CREATE USER 'app'@'%' IDENTIFIED BY 'app-pw'",
        "GRANT SELECT ON big.* TO 'app'@'%'",
        "CREATE DATABASE side",
        "CREATE TABLE side.t (id BIGINT PRIMARY KEY, n BIGINT)",
        ]).await;
    for chunk in 0..10u32 {
        let (lo, hi) = (chunk * 10_000 + 1, (chunk + 1) * 10_000);
        a.query_drop(format!(
            "INSERT INTO big.t SELECT seq, MD5(seq), UNHEX(MD5(seq)), seq % 7 FROM big.seq_{lo}_to_{hi}"
        ))
        .await
        .expect("bulk insert");
    }
    let rows: Option<i64> = a.query_first("SELECT COUNT(*) FROM big.t").await.unwrap();
    assert_eq!(rows, Some(100_000));
    converged(&c.nodes, "big.t", Duration::from_secs(60)).await;
    let last = last_log_index(c.node(0));
    snapshot_and_purge(&c.nodes, 2).await;
    assert!(last > 2);

    // The leader streams its snapshot to the joiner while a client keeps using the leader.
    let donor = leader_position(&c.nodes);
    let load = client_load(c.node(donor).port());
    let watch_stop = Arc::new(AtomicBool::new(false));
    let donor_seen = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (stop, seen) = (watch_stop.clone(), donor_seen.clone());
        let http = c.node(donor).running().http_addr().expect("http");
        let donor_status = c.node(donor).running().status();
        assert_eq!(donor_status.local_state, LocalState::Synced);
        // The node handle is not shareable across tasks; the HTTP /status surface is.
        tokio::spawn(async move {
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let body = tokio::task::spawn_blocking(move || harness::http_get(http, "/status"))
                    .await
                    .ok()
                    .flatten()
                    .map(|(_, body)| body)
                    .unwrap_or_default();
                if body.contains("\"Donor\"") {
                    seen.store(true, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let term_before = raft_term(c.node(donor));
    let started = tokio::time::Instant::now();
    let joiner =
        TestNode::start_member(TestNode::fresh_dir(), cfg3, Duration::from_secs(240)).await;
    let took = started.elapsed();
    // The wiped node waited for the leader: it never stood for election, which would have
    // unseated the leader (openraft orders same-term votes by node id) and stalled everyone.
    assert_eq!(
        raft_term(c.node(donor)),
        term_before,
        "an election happened while the empty node joined"
    );
    watch_stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    load.stop.store(true, Ordering::Relaxed);
    let errors = load.task.await.expect("client task");
    assert!(errors.is_empty(), "the donor failed its client: {errors:?}");
    assert_eq!(load.failed.load(Ordering::Relaxed), 0);
    assert!(
        load.ok.load(Ordering::Relaxed) > 0,
        "the donor's client made no progress in {took:?}"
    );
    assert!(
        donor_seen.load(Ordering::Relaxed),
        "the donor never reported Donor/Desynced during the transfer ({took:?})"
    );
    assert_eq!(joiner.running().sst_loads(), 1);
    assert_joined_then_synced(&joiner.running().transfer_history());
    assert_eq!(joiner.running().status().local_state, LocalState::Synced);
    c.nodes.push(joiner);

    // Same data everywhere, accounts and views included.
    let sum = converged(&c.nodes, "big.t", Duration::from_secs(60)).await;
    assert_ne!(sum, 0);
    converged(&c.nodes, "side.t", Duration::from_secs(60)).await;
    assert_eq!(
        backend_count(c.node(2), "SELECT COUNT(*) FROM big.t").await,
        100_000
    );
    let mut app = c
        .node(2)
        .connect("app", "app-pw")
        .await
        .expect("app logs in on the joiner");
    let v: Option<i64> = app.query_first("SELECT c FROM big.v").await.unwrap();
    assert_eq!(v, Some(100_000));
    assert!(
        app.query_drop("DELETE FROM big.t").await.is_err(),
        "grants were not transferred"
    );
    // The joiner takes writes and they reach everyone.
    let mut j = c.node(2).admin().await;
    j.query_drop("UPDATE big.t SET n = -1 WHERE id = 77")
        .await
        .unwrap();
    converged(&c.nodes, "big.t", Duration::from_secs(30)).await;
    assert_eq!(
        backend_count(c.node(0), "SELECT n FROM big.t WHERE id = 77").await,
        -1
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_backend_is_behind_the_log_start_gets_an_sst() {
    require_mariadb!();
    let mut c = TestCluster::start_with(3, |cfg| {
        cfg.snapshot_logs = 0;
        cfg.log_keep_margin = 1;
    })
    .await;
    let mut a = c
        .node(0)
        .admin_with(&[
            "CREATE DATABASE behind",
            "CREATE TABLE behind.t (id INT PRIMARY KEY, n INT)",
            "INSERT INTO behind.t SELECT seq, seq FROM behind.seq_1_to_500",
        ])
        .await;
    converged(&c.nodes, "behind.t", Duration::from_secs(30)).await;
    // Node 3 stops with its log and backend; the others move on and purge past its log's end.
    let stopped_at = last_log_index(c.node(2));
    let (dir3, cfg3) = c.nodes.pop().expect("node 3").stop_keep().await;
    c.wait_leader_among_us(Duration::from_secs(30)).await;
    for i in 0..20 {
        a.query_drop(format!(
            "UPDATE behind.t SET n = n + 1 WHERE id = {}",
            i + 1
        ))
        .await
        .unwrap();
    }
    run_all(
        &mut a,
        &[
            "CREATE TABLE behind.later (id INT PRIMARY KEY)",
            "INSERT INTO behind.later VALUES (1), (2)",
        ],
    )
    .await;
    snapshot_and_purge(&c.nodes, stopped_at + 1).await;

    let node3 = TestNode::start_member(dir3, cfg3, Duration::from_secs(120)).await;
    assert_eq!(node3.running().sst_loads(), 1);
    assert_joined_then_synced(&node3.running().transfer_history());
    c.nodes.push(node3);
    converged(&c.nodes, "behind.t", Duration::from_secs(60)).await;
    converged(&c.nodes, "behind.later", Duration::from_secs(60)).await;
    assert_eq!(
        backend_count(c.node(2), "SELECT SUM(n) FROM behind.t").await,
        500 * 501 / 2 + 20
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_purge_waits_for_a_lagging_live_node() {
    require_mariadb!();
    let mut c = TestCluster::start_with(3, |cfg| {
        cfg.snapshot_logs = 10;
        cfg.log_keep_margin = 3;
    })
    .await;
    let mut a = c
        .node(0)
        .admin_with(&[
            "CREATE DATABASE lag",
            "CREATE TABLE lag.t (id INT PRIMARY KEY, n INT)",
            "INSERT INTO lag.t VALUES (1, 0), (2, 0)",
        ])
        .await;
    converged(&c.nodes, "lag.t", Duration::from_secs(30)).await;
    // Node 3's applier is blocked by a lock taken directly on its backend (not a session the
    // node could brute-force abort): its backend lags while its Raft log keeps up.
    let mut blocker = c.node(2).service_conn().await;
    blocker.query_drop("BEGIN").await.unwrap();
    blocker
        .query_drop("SELECT * FROM lag.t WHERE id = 1 FOR UPDATE")
        .await
        .unwrap();
    let blocked_from = last_log_index(c.node(2));
    for _ in 0..40 {
        a.query_drop("UPDATE lag.t SET n = n + 1 WHERE id = 1")
            .await
            .unwrap();
    }
    // Every node snapshots past the point where node 3's backend stopped, but no node purges
    // what node 3's backend still needs while node 3 is live (DESIGN §12).
    wait_index_past(c.node(0), "snapshotted", blocked_from + 5, |m| {
        m.snapshot_index
    })
    .await;
    // Several purge rounds (one a second) pass.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for i in 0..3 {
        let m = c.node(i).running().replication_metrics().expect("metrics");
        assert!(
            m.purged_index.is_none_or(|p| p <= blocked_from),
            "node {} purged to {:?}, node 3's backend stopped at {blocked_from}",
            i + 1,
            m.purged_index
        );
    }
    let m3 = c.node(2).running().replication_metrics().expect("metrics");
    assert!(m3.last_log_index.unwrap_or(0) > blocked_from + 30);
    // A lagging node that restarts replays the log (IST): no state transfer.
    let (dir3, cfg3) = c.nodes.pop().expect("node 3").stop_keep().await;
    drop(blocker);
    let node3 = TestNode::start_member(dir3, cfg3, Duration::from_secs(120)).await;
    c.nodes.push(node3);
    converged(&c.nodes, "lag.t", Duration::from_secs(60)).await;
    assert_eq!(
        c.node(2).running().sst_loads(),
        0,
        "the lagging node needed an SST"
    );
    assert_eq!(
        backend_count(c.node(2), "SELECT n FROM lag.t WHERE id = 1").await,
        40
    );
    // Once every live backend has caught up, the log is purged past where node 3 had stopped.
    for _ in 0..20 {
        a.query_drop("UPDATE lag.t SET n = n + 1 WHERE id = 2")
            .await
            .unwrap();
    }
    wait_index_past(c.node(0), "purged", blocked_from + 5, |m| m.purged_index).await;
    c.stop().await;
}

/// Writers that insert rows through `port` in autocommit mode, each its own connection, until
/// told to stop (at most 20000 rows each); returns how many inserts were acknowledged.
fn own_commit_writers(
    port: u16,
    writers: u64,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..writers)
        .map(|w| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut c = harness::admin_at(port).await;
                let mut acked = 0;
                for i in 0..20_000u64 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let id = w * 1_000_000 + i;
                    if c.exec_drop("INSERT INTO own.t (id, w) VALUES (?, ?)", (id, w))
                        .await
                        .is_ok()
                    {
                        acked += 1;
                    }
                }
                acked
            })
        })
        .collect()
}

/// The donor's own sessions commit their prepared XAs after the applier has recorded their
/// seqno in `certus.state` (two commits). A dump whose consistent snapshot opened between the
/// two held the seqno without the rows, and the joiner that loaded it skipped those write sets
/// for good: it silently lacked rows the others held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_built_while_the_donor_commits_its_own_writes_loses_none_of_them() {
    require_mariadb!();
    let mut c = TestCluster::start_with(3, |cfg| {
        cfg.snapshot_logs = 0;
        cfg.log_keep_margin = 1;
    })
    .await;
    c.node(0)
        .admin_with(&[
            "CREATE DATABASE own",
            "CREATE TABLE own.t (id BIGINT PRIMARY KEY, w INT NOT NULL)",
        ])
        .await;
    converged(&c.nodes, "own.t", Duration::from_secs(30)).await;
    // A follower leaves for good; the donor will be the leader, whose own sessions write
    // while it builds the snapshot the joiner gets.
    let donor = leader_position(&c.nodes);
    let leaving = if donor == 2 { 1 } else { 2 };
    let (old_dir, cfg) = c.nodes.remove(leaving).stop_keep().await;
    drop(old_dir);
    c.wait_leader_among_us(Duration::from_secs(30)).await;
    let donor = leader_position(&c.nodes);
    let before_load = last_log_index(c.node(donor));
    let stop = Arc::new(AtomicBool::new(false));
    let writers = own_commit_writers(c.node(donor).port(), 8, stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Built while the writers go on; the purge makes the joiner need it.
    snapshot_and_purge(&c.nodes, before_load).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = 0;
    for w in writers {
        acked += w.await.expect("writer task");
    }
    assert!(acked > 100, "the writers made little progress: {acked}");

    let joiner = TestNode::start_member(TestNode::fresh_dir(), cfg, Duration::from_secs(120)).await;
    assert_eq!(joiner.running().sst_loads(), 1);
    c.nodes.push(joiner);
    converged(&c.nodes, "own.t", Duration::from_secs(60)).await;
    let joined = c.nodes.len() - 1;
    assert_eq!(
        backend_count(c.node(joined), "SELECT COUNT(*) FROM own.t").await,
        acked as i64
    );
    c.stop().await;
}

/// A founding member that starts after the other two have formed the cluster (a node that was
/// slow to boot, or whose data dir was wiped before its first start) finds them Primary at
/// start: it does not initialize a log of its own, it is brought in by the leader, and the
/// leader's term does not change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_founding_member_that_starts_late_is_brought_in_without_an_election() {
    require_mariadb!();
    let mut founders = TestCluster::founding_members(3, |_| {}).await;
    let late = founders.pop().expect("node 3");
    // Nodes 1 and 2 are a quorum of three: they elect a leader and serve.
    let mut c = TestCluster::start_founders(founders).await;
    c.node(0)
        .admin_with(&[
            "CREATE DATABASE late",
            "CREATE TABLE late.t (id INT PRIMARY KEY, n INT)",
            "INSERT INTO late.t SELECT seq, seq FROM late.seq_1_to_300",
        ])
        .await;
    let term_before = raft_term(c.node(0));

    let late = TestNode::start_in(late.dir, late.cfg, late.peer).await;
    c.nodes.push(late);
    c.wait_ready(Duration::from_secs(30)).await;
    assert_eq!(
        raft_term(c.node(0)),
        term_before,
        "the late member's start caused an election"
    );
    converged(&c.nodes, "late.t", Duration::from_secs(30)).await;
    assert_eq!(
        backend_count(c.node(2), "SELECT COUNT(*) FROM late.t").await,
        300
    );
    // It caught up from the log: nothing was purged yet, so no state transfer was needed.
    assert_eq!(c.node(2).running().sst_loads(), 0);
    c.stop().await;
}
