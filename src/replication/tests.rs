//! In-process clusters on port-0 listeners and temp dirs: the behaviour the node relies on.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use super::*;

const SECRET: &[u8] = b"test-cluster-secret-0123456789";

/// Records every applied batch; the snapshot is the whole record.
#[derive(Default)]
struct Recorder {
    batches: Vec<(u64, Vec<Vec<u8>>)>,
}

impl Fsm for Recorder {
    fn apply_batch(&mut self, index: u64, proposals: &[Vec<u8>]) {
        self.batches.push((index, proposals.to_vec()));
    }
    fn snapshot(&self, _index: u64, mut out: tokio::fs::File) -> SnapshotJob {
        let bytes = types::encode(&self.batches);
        Box::pin(async move {
            use tokio::io::AsyncWriteExt;
            let bytes = bytes.map_err(|e| e.to_string())?;
            out.write_all(&bytes).await.map_err(|e| e.to_string())?;
            out.flush().await.map_err(|e| e.to_string())
        })
    }
    fn restore(&mut self, _index: u64, mut data: std::fs::File) -> Result<(), String> {
        use std::io::Read;
        let mut bytes = Vec::new();
        data.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
        self.batches = types::decode(&bytes).map_err(|e| e.to_string())?;
        Ok(())
    }
}

impl Recorder {
    fn sequence(&self) -> Vec<Vec<u8>> {
        self.batches
            .iter()
            .flat_map(|(_, p)| p.iter().cloned())
            .collect()
    }
    fn count(&self) -> usize {
        self.batches.iter().map(|(_, p)| p.len()).sum()
    }
    fn at(&self, pos: Position) -> Option<Vec<u8>> {
        let (_, props) = self.batches.iter().find(|(i, _)| *i == pos.index)?;
        props.get(pos.offset as usize).cloned()
    }
}

type Shared = Arc<Mutex<Recorder>>;

struct Cluster {
    dir: tempfile::TempDir,
    members: BTreeMap<NodeId, String>,
    nodes: BTreeMap<u64, Option<Arc<Replication>>>,
    fsms: BTreeMap<u64, Shared>,
}

fn config(members: &BTreeMap<NodeId, String>, id: u64, dir: &std::path::Path) -> ReplicationConfig {
    let mut cfg = ReplicationConfig::new(
        NodeId(id),
        members.clone(),
        dir.join(format!("node{id}")),
        SECRET.to_vec(),
    );
    cfg.propose_timeout = Duration::from_secs(8);
    cfg
}

async fn start_node(cfg: ReplicationConfig, fsm: Shared) -> Replication {
    let addr = cfg.members[&cfg.node_id].clone();
    let listener = TcpListener::bind(&addr).await.unwrap();
    Replication::start(cfg, fsm, listener).await.unwrap()
}

impl Cluster {
    /// `tweak` may change each node's config (e.g. a wrong secret).
    async fn start(n: u64, tweak: impl Fn(&mut ReplicationConfig)) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut listeners = BTreeMap::new();
        let mut members = BTreeMap::new();
        for id in 1..=n {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            members.insert(NodeId(id), l.local_addr().unwrap().to_string());
            listeners.insert(id, l);
        }
        let mut starts = Vec::new();
        let mut fsms = BTreeMap::new();
        for (id, listener) in listeners {
            let fsm: Shared = Arc::default();
            fsms.insert(id, fsm.clone());
            let mut cfg = config(&members, id, dir.path());
            tweak(&mut cfg);
            starts.push(tokio::spawn(async move {
                (id, Replication::start(cfg, fsm, listener).await.unwrap())
            }));
        }
        let mut nodes = BTreeMap::new();
        for s in starts {
            let (id, r) = s.await.unwrap();
            nodes.insert(id, Some(Arc::new(r)));
        }
        Cluster {
            dir,
            members,
            nodes,
            fsms,
        }
    }

    fn node(&self, id: u64) -> Arc<Replication> {
        self.nodes[&id].clone().unwrap()
    }

    fn live(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Waits until every live node agrees on one leader that is itself live.
    async fn leader(&self, within: Duration) -> u64 {
        let live = self.live();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let leaders: HashSet<Option<NodeId>> = live
                .iter()
                .map(|id| self.node(*id).metrics().leader)
                .collect();
            if leaders.len() == 1 {
                if let Some(Some(l)) = leaders.into_iter().next() {
                    if live.contains(&l.0) && self.node(l.0).metrics().is_primary {
                        return l.0;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no agreed leader within {within:?}");
    }

    /// Waits until each of `ids` has applied at least `n` proposals.
    async fn wait_applied(&self, ids: &[u64], n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let counts: Vec<usize> = ids
                .iter()
                .map(|id| self.fsms[id].lock().unwrap().count())
                .collect();
            if counts.iter().all(|c| *c >= n) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "applied counts {counts:?}, wanted {n}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn sequence(&self, id: u64) -> Vec<Vec<u8>> {
        self.fsms[&id].lock().unwrap().sequence()
    }

    async fn shutdown_all(mut self) {
        for (_, node) in std::mem::take(&mut self.nodes) {
            if let Some(node) = node {
                if let Ok(node) = Arc::try_unwrap(node) {
                    node.shutdown().await;
                }
            }
        }
    }
}

/// `tasks` concurrent proposers, spread over `targets`, each proposing `per_task` unique
/// payloads. Returns every (payload, result).
async fn propose_load(
    cluster: &Cluster,
    targets: &[u64],
    tasks: usize,
    per_task: usize,
    tag: &str,
) -> Vec<(Vec<u8>, Result<Position, ProposeError>)> {
    let mut handles = Vec::new();
    for t in 0..tasks {
        let node = cluster.node(targets[t % targets.len()]);
        let tag = tag.to_string();
        handles.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(per_task);
            for i in 0..per_task {
                let payload = format!("{tag}-{t}-{i}").into_bytes();
                let r = node.propose(payload.clone()).await;
                out.push((payload, r));
            }
            out
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    all
}

fn proposals_per_entry(rec: &Recorder) -> f64 {
    let entries = rec.batches.len().max(1);
    rec.count() as f64 / entries as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_proposals_from_all_nodes_apply_identically_everywhere() {
    let cluster = Cluster::start(3, |_| {}).await;
    cluster.leader(Duration::from_secs(10)).await;
    let results = propose_load(&cluster, &[1, 2, 3], 16, 200, "c").await;
    let total = results.len();
    for (payload, r) in &results {
        assert!(
            r.is_ok(),
            "{} failed: {r:?}",
            String::from_utf8_lossy(payload)
        );
    }
    cluster
        .wait_applied(&[1, 2, 3], total, Duration::from_secs(20))
        .await;

    let seq1 = cluster.sequence(1);
    assert_eq!(seq1.len(), total, "every proposal applied exactly once");
    assert_eq!(seq1, cluster.sequence(2));
    assert_eq!(seq1, cluster.sequence(3));
    let unique: HashSet<&Vec<u8>> = seq1.iter().collect();
    assert_eq!(unique.len(), total, "no proposal applied twice");

    // The position each proposer got is where every Fsm saw its proposal.
    for id in [1, 2, 3] {
        let rec = cluster.fsms[&id].lock().unwrap();
        for (payload, r) in &results {
            let pos = r.as_ref().unwrap();
            assert_eq!(rec.at(*pos).as_ref(), Some(payload), "node {id} at {pos}");
        }
    }

    // Read index, from the leader and through forwarding: at least every acknowledged entry.
    let last = results
        .iter()
        .map(|(_, r)| r.as_ref().unwrap().index)
        .max()
        .unwrap();
    for id in [1, 2, 3] {
        let ri = cluster.node(id).read_index().await.unwrap();
        assert!(ri >= last, "node {id}: read index {ri} < {last}");
        let m = cluster.node(id).metrics();
        assert!(m.is_primary, "node {id} not primary: {m:?}");
        assert_eq!(m.members.len(), 3);
        assert!(m.last_applied_index >= Some(last));
    }

    // Batching: 16 concurrent proposers must share entries.
    let ppe = proposals_per_entry(&cluster.fsms[&1].lock().unwrap());
    assert!(ppe > 1.5, "proposals per entry {ppe:.2}");
    cluster.shutdown_all().await;
}

/// One proposer at a time on the leader: the leader copies each new entry to its up-to-date
/// followers while fsyncing it (`eager`), and the log every node applies is the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_proposals_on_the_leader_are_copied_eagerly_and_apply_identically() {
    let cluster = Cluster::start(3, |_| {}).await;
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let node = cluster.node(leader);
    let n = 60;
    for i in 0..n {
        let payload = format!("e-{i}").into_bytes();
        node.propose(payload).await.unwrap();
    }
    cluster
        .wait_applied(&[1, 2, 3], n, Duration::from_secs(20))
        .await;
    let seq = cluster.sequence(leader);
    assert_eq!(seq.len(), n);
    for id in [1, 2, 3] {
        assert_eq!(cluster.sequence(id), seq, "node {id}");
    }
    // Two followers, one copy each per entry once they are up to date; generous for a busy box.
    let copies = node.eager_copies_sent();
    assert!(
        copies >= n as u64 / 2,
        "only {copies} eager copies for {n} entries"
    );
    for id in [1, 2, 3].into_iter().filter(|id| *id != leader) {
        assert_eq!(cluster.node(id).eager_copies_sent(), 0, "follower {id}");
    }
    cluster.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_crash_under_load_keeps_every_acknowledged_proposal() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    let old_leader = cluster.leader(Duration::from_secs(10)).await;
    let survivors: Vec<u64> = [1, 2, 3]
        .into_iter()
        .filter(|id| *id != old_leader)
        .collect();

    // Load through the survivors (they forward to the leader), then crash the leader mid-way.
    let load = {
        let nodes: Vec<Arc<Replication>> = survivors.iter().map(|id| cluster.node(*id)).collect();
        tokio::spawn(async move {
            let mut handles = Vec::new();
            for t in 0..8usize {
                let node = nodes[t % nodes.len()].clone();
                handles.push(tokio::spawn(async move {
                    let mut out = Vec::new();
                    let stop = Instant::now() + Duration::from_secs(6);
                    let mut i = 0;
                    while Instant::now() < stop && i < 2000 {
                        let payload = format!("k-{t}-{i}").into_bytes();
                        out.push((payload.clone(), node.propose(payload).await));
                        i += 1;
                    }
                    out
                }));
            }
            let mut all = Vec::new();
            for h in handles {
                all.extend(h.await.unwrap());
            }
            all
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Crash: drop the leader's handle without a clean shutdown.
    let crashed = cluster.nodes.insert(old_leader, None).flatten();
    drop(crashed);

    let results = load.await.unwrap();
    let new_leader = cluster.leader(Duration::from_secs(10)).await;
    assert_ne!(new_leader, old_leader);

    // New proposals succeed from both survivors.
    for id in &survivors {
        let r = cluster
            .node(*id)
            .propose(format!("after-{id}").into_bytes())
            .await;
        assert!(r.is_ok(), "node {id}: {r:?}");
    }

    let ok: Vec<(&Vec<u8>, Position)> = results
        .iter()
        .filter_map(|(p, r)| r.as_ref().ok().map(|pos| (p, *pos)))
        .collect();
    let failed: Vec<&ProposeError> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().err())
        .collect();
    assert!(!ok.is_empty(), "some proposals must succeed");
    for e in &failed {
        // Only outcomes a node can act on: retryable or indeterminate, never a silent drop.
        assert_ne!(e.class(), FailureClass::Definite, "{e}");
    }
    let applied_before = ok.len() + 2;
    cluster
        .wait_applied(&survivors, applied_before, Duration::from_secs(20))
        .await;
    // Give the second survivor time to reach the same last entry.
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.sequence(survivors[0]).len() != cluster.sequence(survivors[1]).len() {
        assert!(Instant::now() < deadline, "survivors did not converge");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        cluster.sequence(survivors[0]),
        cluster.sequence(survivors[1])
    );
    for id in &survivors {
        let rec = cluster.fsms[id].lock().unwrap();
        for (payload, pos) in &ok {
            assert_eq!(
                rec.at(*pos).as_ref(),
                Some(*payload),
                "node {id} lost an acked proposal"
            );
        }
    }
    eprintln!(
        "leader crash: {} ok, {} failed ({:?})",
        ok.len(),
        failed.len(),
        failed.iter().map(|e| e.class()).collect::<HashSet<_>>()
    );
    cluster.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_recovers_log_vote_and_applied_sequence() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    cluster.leader(Duration::from_secs(10)).await;
    let results = propose_load(&cluster, &[1, 2, 3], 4, 25, "r").await;
    assert!(results.iter().all(|(_, r)| r.is_ok()));
    cluster
        .wait_applied(&[1, 2, 3], 100, Duration::from_secs(10))
        .await;

    let victim = 2;
    let before = cluster.node(victim).metrics();
    let seq_before = cluster.sequence(victim);
    let node = cluster.nodes.insert(victim, None).flatten().unwrap();
    Arc::try_unwrap(node).ok().unwrap().shutdown().await;

    // Restart from the same dir with an empty Fsm: everything must come back from disk.
    let fresh: Shared = Arc::default();
    cluster.fsms.insert(victim, fresh.clone());
    let restarted = start_node(
        config(&cluster.members, victim, cluster.dir.path()),
        fresh.clone(),
    )
    .await;
    let m = restarted.metrics();
    assert!(before.term > 0);
    assert!(
        m.term >= before.term,
        "vote lost: term {} < {}",
        m.term,
        before.term
    );
    assert!(
        m.last_log_index >= before.last_log_index,
        "log lost: {:?} < {:?}",
        m.last_log_index,
        before.last_log_index
    );
    cluster.nodes.insert(victim, Some(Arc::new(restarted)));
    cluster
        .wait_applied(&[victim], seq_before.len(), Duration::from_secs(10))
        .await;
    assert_eq!(cluster.sequence(victim)[..seq_before.len()], seq_before[..]);

    // And it keeps participating.
    let r = cluster
        .node(victim)
        .propose(b"after-restart".to_vec())
        .await
        .unwrap();
    cluster
        .wait_applied(&[1, 2, 3], 101, Duration::from_secs(10))
        .await;
    assert_eq!(fresh.lock().unwrap().at(r), Some(b"after-restart".to_vec()));
    assert_eq!(cluster.sequence(1), cluster.sequence(victim));
    cluster.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_with_wrong_secret_never_joins() {
    let cluster = Cluster::start(3, |cfg| {
        if cfg.node_id == NodeId(3) {
            cfg.cluster_secret = b"not-the-cluster-secret-at-all".to_vec();
        }
        cfg.propose_timeout = Duration::from_secs(3);
    })
    .await;
    // Nodes 1 and 2 are a quorum on their own.
    let deadline = Instant::now() + Duration::from_secs(10);
    let leader = loop {
        let m = cluster.node(1).metrics();
        if let Some(l) = m.leader.filter(|l| l.0 != 3) {
            if cluster.node(l.0).metrics().is_primary {
                break l.0;
            }
        }
        assert!(Instant::now() < deadline, "1 and 2 elected no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(leader == 1 || leader == 2);
    for id in [1, 2] {
        cluster
            .node(id)
            .propose(format!("good-{id}").into_bytes())
            .await
            .unwrap();
    }
    cluster
        .wait_applied(&[1, 2], 2, Duration::from_secs(5))
        .await;

    let r = cluster.node(3).propose(b"from-outsider".to_vec()).await;
    assert!(
        matches!(r, Err(ProposeError::NoLeader)),
        "the outsider must not reach a leader: {r:?}"
    );
    let m3 = cluster.node(3).metrics();
    assert!(!m3.is_primary);
    assert_ne!(m3.leader, Some(NodeId(leader)));
    assert_eq!(
        cluster.fsms[&3].lock().unwrap().count(),
        0,
        "nothing applied on the outsider"
    );
    for id in [1, 2] {
        assert!(
            !cluster.sequence(id).contains(&b"from-outsider".to_vec()),
            "node {id} applied a proposal from an unauthenticated peer"
        );
    }
    cluster.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_tail_restarts_and_corrupt_middle_refuses_to_start() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    cluster.leader(Duration::from_secs(10)).await;
    let results = propose_load(&cluster, &[1, 2, 3], 3, 10, "t").await;
    assert!(results.iter().all(|(_, r)| r.is_ok()));
    cluster
        .wait_applied(&[1, 2, 3], 30, Duration::from_secs(10))
        .await;

    let victim = 3;
    let node = cluster.nodes.insert(victim, None).flatten().unwrap();
    Arc::try_unwrap(node).ok().unwrap().shutdown().await;
    let dir = cluster.dir.path().join(format!("node{victim}"));
    let wal_path = dir.join(wal::WAL_FILE);

    // Torn tail: cut the last record short. The node starts and catches up from the leader.
    let len = std::fs::metadata(&wal_path).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&wal_path)
        .unwrap();
    f.set_len(len - 3).unwrap();
    drop(f);
    let fresh: Shared = Arc::default();
    cluster.fsms.insert(victim, fresh.clone());
    let restarted = start_node(config(&cluster.members, victim, cluster.dir.path()), fresh).await;
    cluster.nodes.insert(victim, Some(Arc::new(restarted)));
    cluster
        .node(1)
        .propose(b"after-tear".to_vec())
        .await
        .unwrap();
    cluster
        .wait_applied(&[1, 2, 3], 31, Duration::from_secs(10))
        .await;
    assert_eq!(cluster.sequence(1), cluster.sequence(victim));

    // Corrupt middle: flip a byte inside the first record's payload. Start must refuse.
    let node = cluster.nodes.insert(victim, None).flatten().unwrap();
    Arc::try_unwrap(node).ok().unwrap().shutdown().await;
    let mut bytes = std::fs::read(&wal_path).unwrap();
    bytes[20] ^= 0x5a;
    std::fs::write(&wal_path, &bytes).unwrap();
    let cfg = config(&cluster.members, victim, cluster.dir.path());
    let listener = TcpListener::bind(&cfg.members[&cfg.node_id]).await.unwrap();
    let fsm: Shared = Arc::default();
    match Replication::start(cfg, fsm.clone(), listener).await {
        Err(StartError::Log(LogStoreError::Wal(WalError::Corrupt { offset: 0, .. }))) => {}
        Err(e) => panic!("expected a Corrupt error at offset 0, got {e}"),
        Ok(_) => panic!("a corrupt log was replayed"),
    }
    assert_eq!(fsm.lock().unwrap().count(), 0);
    cluster.shutdown_all().await;
}

#[tokio::test]
async fn config_refuses_heartbeats_below_the_fsync_floor_and_weak_secrets() {
    let members: BTreeMap<NodeId, String> = [(NodeId(1), "127.0.0.1:1".to_string())].into();
    let mut cfg = ReplicationConfig::new(
        NodeId(1),
        members.clone(),
        "/nonexistent".into(),
        SECRET.to_vec(),
    );
    assert!(cfg.validate().is_ok());
    cfg.heartbeat_interval = Duration::from_millis(50);
    assert!(matches!(cfg.validate(), Err(ConfigError::Timing(_))));
    let cfg = ReplicationConfig::new(NodeId(1), members.clone(), "/x".into(), b"short".to_vec());
    assert!(matches!(cfg.validate(), Err(ConfigError::WeakSecret)));
    let cfg = ReplicationConfig::new(NodeId(2), members, "/x".into(), SECRET.to_vec());
    assert!(matches!(cfg.validate(), Err(ConfigError::NotAMember(2))));
}

/// Throughput, not asserted: `cargo test --release -- --ignored --nocapture throughput`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput() {
    for (tasks, per_task) in [(1usize, 1000usize), (16, 250), (64, 100)] {
        let cluster = Cluster::start(3, |_| {}).await;
        let leader = cluster.leader(Duration::from_secs(10)).await;
        // Warm up connections.
        propose_load(&cluster, &[leader], 4, 20, "w").await;
        let started = Instant::now();
        let results = propose_load(&cluster, &[1, 2, 3], tasks, per_task, "p").await;
        let elapsed = started.elapsed();
        assert!(results.iter().all(|(_, r)| r.is_ok()));
        let n = results.len();
        let entries: HashSet<u64> = results
            .iter()
            .map(|(_, r)| r.as_ref().unwrap().index)
            .collect();
        eprintln!(
            "throughput: {tasks:>2} proposers: {n} proposals in {:.2}s = {:.0}/s, {:.2} proposals per entry",
            elapsed.as_secs_f64(),
            n as f64 / elapsed.as_secs_f64(),
            n as f64 / entries.len() as f64
        );
        cluster.shutdown_all().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_member_with_the_secret_may_only_ask_who_a_node_is() {
    let cluster = Cluster::start(3, |cfg| cfg.cluster_uuid = "the-cluster".into()).await;
    cluster.leader(Duration::from_secs(10)).await;
    let target: BTreeMap<NodeId, String> =
        [(NodeId(1), cluster.members[&NodeId(1)].clone())].into();
    // A node that is not (yet) a member learns the cluster uuid and position.
    let answers = super::ask_peers(NodeId(42), SECRET, None, &target, Duration::from_secs(5)).await;
    let who = answers[&1].as_ref().expect("identify answered");
    assert_eq!(who.cluster_uuid, "the-cluster");
    assert_eq!(who.node_id, 1);
    assert!(who.last_log.is_some());
    // Anything else from it closes the connection.
    let peers = super::network::Peers::new(42, SECRET.into(), Duration::from_secs(2), None);
    let r = peers
        .call(
            1,
            &target[&NodeId(1)],
            &PeerRequest::ReadIndex,
            Duration::from_secs(2),
        )
        .await;
    assert!(r.is_err(), "a non-member got an answer to ReadIndex");
    // Without the secret it learns nothing.
    let answers = super::ask_peers(
        NodeId(42),
        b"wrong-secret-0123456789",
        None,
        &target,
        Duration::from_secs(2),
    )
    .await;
    assert!(answers[&1].is_err());
    cluster.shutdown_all().await;
}

#[test]
fn purge_bound_is_the_lowest_of_snapshot_applied_and_live_followers_minus_margin() {
    // Nothing without a snapshot or without a known applied position.
    assert_eq!(purge_upto(None, None, Some(100), &[], 10), None);
    assert_eq!(purge_upto(Some(100), None, None, &[], 10), None);
    // The lowest of snapshot and applied, minus the margin.
    assert_eq!(purge_upto(Some(100), None, Some(80), &[], 10), Some(70));
    assert_eq!(purge_upto(Some(60), None, Some(80), &[], 10), Some(50));
    // A live follower holds it back; one that stopped answering does not.
    assert_eq!(
        purge_upto(
            Some(100),
            None,
            Some(100),
            &[(Some(40), true), (Some(5), false)],
            10
        ),
        Some(30)
    );
    // A live follower with nothing replicated yet blocks every purge.
    assert_eq!(
        purge_upto(Some(100), None, Some(100), &[(None, true)], 10),
        None
    );
    // Never at or below what is already purged, never below zero.
    assert_eq!(purge_upto(Some(100), Some(90), Some(100), &[], 10), None);
    assert_eq!(
        purge_upto(Some(100), Some(80), Some(100), &[], 10),
        Some(90)
    );
    assert_eq!(purge_upto(Some(5), None, Some(5), &[], 10), None);
}

/// A node that was down while the others snapshotted and purged their logs catches up from a
/// snapshot streamed in chunks (files on both ends), then from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_the_purged_log_receives_a_snapshot_and_catches_up() {
    let mut cluster = Cluster::start(3, |c| {
        c.snapshot_policy = SnapshotPolicy::LogsSinceLast(20);
        c.log_keep_margin = 5;
        c.purge_interval = Duration::from_millis(100);
        c.purge_bound = Arc::new(|| Some(u64::MAX));
    })
    .await;
    cluster.leader(Duration::from_secs(10)).await;
    let victim = 3;
    let node = cluster.nodes.insert(victim, None).flatten().unwrap();
    Arc::try_unwrap(node).ok().unwrap().shutdown().await;
    cluster.leader(Duration::from_secs(10)).await;
    for round in 0..8 {
        let r = propose_load(&cluster, &[1, 2], 2, 10, &format!("r{round}")).await;
        assert!(r.iter().all(|(_, r)| r.is_ok()));
    }
    cluster
        .wait_applied(&[1, 2], 160, Duration::from_secs(20))
        .await;
    // Both live nodes snapshot and purge (node 3 is not answering, so it holds nothing back).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let purged: Vec<Option<u64>> = [1, 2]
            .iter()
            .map(|id| cluster.node(*id).metrics().purged_index)
            .collect();
        if purged.iter().all(|p| p.is_some_and(|p| p > 10)) {
            break;
        }
        assert!(Instant::now() < deadline, "no purge: {purged:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The victim comes back with an empty dir: only a snapshot can bring it up to date.
    std::fs::remove_dir_all(cluster.dir.path().join(format!("node{victim}"))).unwrap();
    let fresh: Shared = Arc::default();
    cluster.fsms.insert(victim, fresh.clone());
    let mut cfg = config(&cluster.members, victim, cluster.dir.path());
    cfg.snapshot_policy = SnapshotPolicy::LogsSinceLast(20);
    let restarted = start_node(cfg, fresh.clone()).await;
    cluster.nodes.insert(victim, Some(Arc::new(restarted)));
    cluster
        .wait_applied(&[victim], 160, Duration::from_secs(30))
        .await;
    assert_eq!(cluster.sequence(1), cluster.sequence(victim));
    assert!(cluster.node(victim).metrics().snapshot_index.is_some());
    // Snapshot data lives in files, one current data file per node.
    let files: Vec<String> = std::fs::read_dir(cluster.dir.path().join(format!("node{victim}")))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".data"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    cluster.shutdown_all().await;
}
