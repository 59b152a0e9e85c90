//! The nemesis: a seeded schedule of faults, and its execution against the cluster.
//!
//! Owns which fault happens when and to whom (a pure function of the seed, so a failing run
//! can be replayed; leader faults resolve their node when they start), which faults each
//! system under test can take (`Faultable`: certus all, Galera kill and pause), and the start
//! and heal of each fault. It must not touch clients or judge
//! anything; it records each action as a `:nemesis` `:info` op in every workload's history so
//! the EDN shows what the cluster went through.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};

use crate::history::{Op, Process, Value, F};
use crate::runner::client::Recorder;
use crate::runner::cluster::Cluster;
use crate::runner::galera::GaleraCluster;
use crate::runner::relay::{cut_between, Link};
use crate::runner::RunError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NemesisKind {
    /// SIGKILL a certus process; restart it when the fault heals.
    Kill,
    /// SIGKILL a node's mariadbd; the node's supervisor restarts it.
    KillBackend,
    /// SIGSTOP a certus process; SIGCONT when the fault heals.
    Pause,
    /// Cut peer links through the relay: a minority isolated, or a bridge.
    Partition,
    /// A partition and a kill at once.
    Combined,
    /// SIGKILL the certus process that is the Raft leader when the fault starts.
    KillLeader,
    /// Cut the Raft leader (when the fault starts) off from every other node.
    IsolateLeader,
}

impl NemesisKind {
    pub const ALL: [NemesisKind; 7] = [
        NemesisKind::Kill,
        NemesisKind::KillBackend,
        NemesisKind::Pause,
        NemesisKind::Partition,
        NemesisKind::Combined,
        NemesisKind::KillLeader,
        NemesisKind::IsolateLeader,
    ];

    pub fn name(self) -> &'static str {
        match self {
            NemesisKind::Kill => "kill",
            NemesisKind::KillBackend => "kill-backend",
            NemesisKind::Pause => "pause",
            NemesisKind::Partition => "partition",
            NemesisKind::Combined => "combined",
            NemesisKind::KillLeader => "kill-leader",
            NemesisKind::IsolateLeader => "isolate-leader",
        }
    }

    pub fn parse(name: &str) -> Option<NemesisKind> {
        NemesisKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fault {
    Kill {
        node: u64,
    },
    KillBackend {
        node: u64,
    },
    Pause {
        node: u64,
    },
    Partition {
        name: String,
        cut: BTreeSet<Link>,
    },
    /// The leader is looked up when the fault starts, so the schedule stays a function of the
    /// seed while the target follows the cluster.
    KillLeader,
    IsolateLeader,
}

impl Fault {
    fn describe(&self, process: &str) -> String {
        match self {
            Fault::Kill { node } => format!("kill -9 {process} n{node}"),
            Fault::KillBackend { node } => format!("kill -9 mariadbd of n{node}"),
            Fault::Pause { node } => format!("SIGSTOP {process} n{node}"),
            Fault::Partition { name, .. } => format!("partition {name}"),
            Fault::KillLeader => format!("kill -9 {process} of the leader"),
            Fault::IsolateLeader => "partition isolate-leader".to_owned(),
        }
    }

    fn keyword(&self) -> &'static str {
        match self {
            Fault::Kill { .. } | Fault::KillLeader => "kill",
            Fault::KillBackend { .. } => "kill-backend",
            Fault::Pause { .. } => "pause",
            Fault::Partition { .. } | Fault::IsolateLeader => "start-partition",
        }
    }
}

/// What the nemesis can do to the system under test. certus ([`Cluster`]) supports every
/// fault; a Galera cluster ([`GaleraCluster`]) only the process faults on its `mariadbd`.
pub(crate) trait Faultable {
    /// The system's name in fault descriptions ("certus", "mariadbd galera").
    fn process_name(&self) -> &'static str;
    fn node_ids(&self) -> Vec<u64>;
    fn is_running(&self, id: u64) -> bool;
    async fn kill(&mut self, id: u64) -> Result<(), RunError>;
    /// Starts a killed node again; returns what was done.
    async fn restart(&mut self, id: u64) -> Result<String, RunError>;
    async fn pause(&mut self, id: u64) -> Result<(), RunError>;
    async fn resume(&mut self, id: u64) -> Result<(), RunError>;
    async fn kill_backend(&mut self, id: u64) -> Result<(), RunError>;
    async fn leader(&self) -> Result<u64, RunError>;
    fn cut(&mut self, links: BTreeSet<Link>) -> Result<(), RunError>;
    fn heal_links(&mut self);
}

/// The nemesis kinds a system under test supports, or the first one it does not.
pub(crate) fn supported(kinds: &[NemesisKind], galera: bool) -> Result<(), NemesisKind> {
    match kinds
        .iter()
        .find(|k| galera && !matches!(k, NemesisKind::Kill | NemesisKind::Pause))
    {
        Some(k) => Err(*k),
        None => Ok(()),
    }
}

impl Faultable for Cluster {
    fn process_name(&self) -> &'static str {
        "certus"
    }
    fn node_ids(&self) -> Vec<u64> {
        Cluster::node_ids(self)
    }
    fn is_running(&self, id: u64) -> bool {
        Cluster::is_running(self, id)
    }
    async fn kill(&mut self, id: u64) -> Result<(), RunError> {
        Cluster::kill(self, id).await
    }
    async fn restart(&mut self, id: u64) -> Result<String, RunError> {
        Cluster::restart(self, id).map(|()| format!("restart certus n{id}"))
    }
    async fn pause(&mut self, id: u64) -> Result<(), RunError> {
        Cluster::pause(self, id).await
    }
    async fn resume(&mut self, id: u64) -> Result<(), RunError> {
        Cluster::resume(self, id).await
    }
    async fn kill_backend(&mut self, id: u64) -> Result<(), RunError> {
        match Cluster::kill_backend(self, id).await? {
            Some(_) => Ok(()),
            None => Err(RunError::Cluster(format!(
                "n{id}: no live mariadbd to kill"
            ))),
        }
    }
    async fn leader(&self) -> Result<u64, RunError> {
        Cluster::leader(self, LEADER_LOOKUP).await
    }
    fn cut(&mut self, links: BTreeSet<Link>) -> Result<(), RunError> {
        self.relay().set_cut(links);
        Ok(())
    }
    fn heal_links(&mut self) {
        self.relay().heal();
    }
}

impl Faultable for GaleraCluster {
    fn process_name(&self) -> &'static str {
        "mariadbd galera"
    }
    fn node_ids(&self) -> Vec<u64> {
        GaleraCluster::node_ids(self)
    }
    fn is_running(&self, id: u64) -> bool {
        GaleraCluster::is_running(self, id)
    }
    async fn kill(&mut self, id: u64) -> Result<(), RunError> {
        GaleraCluster::kill(self, id).await
    }
    async fn restart(&mut self, id: u64) -> Result<String, RunError> {
        GaleraCluster::restart(self, id).await
    }
    async fn pause(&mut self, id: u64) -> Result<(), RunError> {
        GaleraCluster::pause(self, id).await
    }
    async fn resume(&mut self, id: u64) -> Result<(), RunError> {
        GaleraCluster::resume(self, id).await
    }
    async fn kill_backend(&mut self, id: u64) -> Result<(), RunError> {
        GaleraCluster::kill(self, id).await
    }
    async fn leader(&self) -> Result<u64, RunError> {
        Err(RunError::Config("a Galera cluster has no leader".into()))
    }
    fn cut(&mut self, _links: BTreeSet<Link>) -> Result<(), RunError> {
        Err(RunError::Config(
            "partitions of a Galera cluster are not supported (its links bypass the relay)".into(),
        ))
    }
    fn heal_links(&mut self) {}
}

/// What ending an applied fault takes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Heal {
    Restart(u64),
    Resume(u64),
    Links,
    /// The node heals itself (its supervisor restarts a killed mariadbd).
    Nothing,
}

/// One fault window: start at `at`, heal at `heal_at` (both since the start of the run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Step {
    pub(crate) at: Duration,
    pub(crate) heal_at: Duration,
    pub(crate) faults: Vec<Fault>,
}

/// How long a leader fault waits for the nodes to agree on a leader (one may be electing after
/// the previous fault) before it is recorded as failed.
const LEADER_LOOKUP: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// The length of the workload phase; no fault starts unless it can heal within it.
    pub(crate) run_for: Duration,
    /// Quiet time before each fault.
    pub(crate) interval: Duration,
    /// How long each fault lasts.
    pub(crate) fault_for: Duration,
}

/// The whole schedule. Kinds are taken round-robin in a shuffled order, so every enabled kind
/// occurs once the run has as many windows as kinds (the CI run relies on that).
pub(crate) fn schedule(
    seed: u64,
    kinds: &[NemesisKind],
    nodes: &[u64],
    timing: Timing,
) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6e65_6d65_7369_7321);
    let mut steps = Vec::new();
    if kinds.is_empty() || nodes.is_empty() {
        return steps;
    }
    let mut order: Vec<NemesisKind> = kinds.to_vec();
    order.sort();
    order.dedup();
    order.shuffle(&mut rng);
    let mut t = timing.interval;
    let mut k = 0usize;
    // The count bound is a second guard against a zero-length interval and fault.
    while t + timing.fault_for <= timing.run_for && steps.len() < 10_000 {
        let kind = order[k % order.len()];
        k += 1;
        steps.push(Step {
            at: t,
            heal_at: t + timing.fault_for,
            faults: faults_for(kind, nodes, &mut rng),
        });
        t += timing.fault_for + timing.interval.max(Duration::from_millis(1));
    }
    steps
}

fn pick(nodes: &[u64], rng: &mut StdRng) -> u64 {
    nodes.choose(rng).copied().unwrap_or(1)
}

fn faults_for(kind: NemesisKind, nodes: &[u64], rng: &mut StdRng) -> Vec<Fault> {
    match kind {
        NemesisKind::Kill => vec![Fault::Kill {
            node: pick(nodes, rng),
        }],
        NemesisKind::KillBackend => vec![Fault::KillBackend {
            node: pick(nodes, rng),
        }],
        NemesisKind::Pause => vec![Fault::Pause {
            node: pick(nodes, rng),
        }],
        NemesisKind::Partition => vec![partition(nodes, rng)],
        NemesisKind::Combined => vec![
            partition(nodes, rng),
            Fault::Kill {
                node: pick(nodes, rng),
            },
        ],
        NemesisKind::KillLeader => vec![Fault::KillLeader],
        NemesisKind::IsolateLeader => vec![Fault::IsolateLeader],
    }
}

/// A random minority cut off from the majority, or (with three or more nodes, one time in
/// three) a bridge: two halves that cannot see each other but both see one bridge node.
pub(crate) fn partition(nodes: &[u64], rng: &mut StdRng) -> Fault {
    let mut shuffled = nodes.to_vec();
    shuffled.shuffle(rng);
    if nodes.len() >= 3 && rng.random_ratio(1, 3) {
        let bridge = shuffled[0];
        let rest = &shuffled[1..];
        let (a, b) = rest.split_at(rest.len() / 2);
        return Fault::Partition {
            name: format!("bridge-n{bridge}"),
            cut: cut_between(a, b),
        };
    }
    let minority_len = (nodes.len().saturating_sub(1) / 2).max(1);
    let (minority, majority) = shuffled.split_at(minority_len.min(shuffled.len()));
    let names: Vec<String> = minority.iter().map(|n| format!("n{n}")).collect();
    Fault::Partition {
        name: format!("isolate-{}", names.join("-")),
        cut: cut_between(minority, majority),
    }
}

/// What the nemesis did, for the report.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NemesisEvent {
    /// Seconds since the start of the run.
    pub at_secs: f64,
    pub action: String,
    pub error: Option<String>,
}

pub(crate) struct Nemesis<'a, C: Faultable> {
    pub(crate) cluster: &'a mut C,
    pub(crate) recorders: Vec<Recorder>,
    pub(crate) start: Instant,
    pub(crate) events: Vec<NemesisEvent>,
}

impl<C: Faultable> Nemesis<'_, C> {
    fn log(&mut self, f: &str, action: String, error: Option<String>) {
        for r in &self.recorders {
            let mut op = Op::info(
                Process::Nemesis,
                F::Other(f.to_owned()),
                Value::Text(action.clone()),
            );
            if let Some(e) = &error {
                op = op.with_error(e.clone());
            }
            r.record(op);
        }
        self.events.push(NemesisEvent {
            at_secs: self.start.elapsed().as_secs_f64(),
            action,
            error,
        });
    }

    async fn sleep_until(&self, at: Duration) {
        tokio::time::sleep_until((self.start + at).into()).await;
    }

    /// Runs every step in order, healing each before the next starts.
    pub(crate) async fn run(&mut self, steps: &[Step]) {
        for step in steps {
            self.sleep_until(step.at).await;
            let mut heals = Vec::new();
            for fault in &step.faults {
                match self.apply(fault).await {
                    Ok((action, heal)) => {
                        self.log(fault.keyword(), action, None);
                        heals.push(heal);
                    }
                    Err(e) => {
                        let what = fault.describe(self.cluster.process_name());
                        self.log(fault.keyword(), what, Some(e.to_string()))
                    }
                }
            }
            self.sleep_until(step.heal_at).await;
            for heal in heals.into_iter().rev() {
                self.heal(heal).await;
            }
        }
    }

    /// Starts one fault; returns what was done (the leader resolved) and how to end it.
    async fn apply(&mut self, fault: &Fault) -> Result<(String, Heal), RunError> {
        let process = self.cluster.process_name();
        let done = |heal| Ok((fault.describe(process), heal));
        match fault {
            Fault::Kill { node } => {
                self.cluster.kill(*node).await?;
                done(Heal::Restart(*node))
            }
            Fault::KillBackend { node } => {
                self.cluster.kill_backend(*node).await?;
                done(Heal::Nothing)
            }
            Fault::Pause { node } => {
                self.cluster.pause(*node).await?;
                done(Heal::Resume(*node))
            }
            Fault::Partition { cut, .. } => {
                self.cluster.cut(cut.clone())?;
                done(Heal::Links)
            }
            Fault::KillLeader => {
                let leader = self.cluster.leader().await?;
                self.cluster.kill(leader).await?;
                Ok((
                    format!("kill -9 {process} n{leader} (the leader)"),
                    Heal::Restart(leader),
                ))
            }
            Fault::IsolateLeader => {
                let leader = self.cluster.leader().await?;
                let others: Vec<u64> = self
                    .cluster
                    .node_ids()
                    .into_iter()
                    .filter(|&n| n != leader)
                    .collect();
                self.cluster.cut(cut_between(&[leader], &others))?;
                Ok((format!("partition isolate-leader-n{leader}"), Heal::Links))
            }
        }
    }

    async fn heal(&mut self, heal: Heal) {
        match heal {
            Heal::Restart(node) => self.restart(node).await,
            Heal::Resume(node) => {
                let r = self.cluster.resume(node).await;
                let process = self.cluster.process_name();
                self.log(
                    "resume",
                    format!("SIGCONT {process} n{node}"),
                    r.err().map(|e| e.to_string()),
                );
            }
            Heal::Links => {
                self.cluster.heal_links();
                self.log("stop-partition", "heal all links".to_owned(), None);
            }
            Heal::Nothing => {}
        }
    }

    /// Ends every fault, whatever the schedule left behind: links healed, paused nodes
    /// resumed, killed nodes restarted.
    pub(crate) async fn heal_all(&mut self) {
        self.cluster.heal_links();
        for id in self.cluster.node_ids() {
            let resumed = self.cluster.resume(id).await;
            if let Err(e) = resumed {
                let process = self.cluster.process_name();
                self.log(
                    "resume",
                    format!("SIGCONT {process} n{id}"),
                    Some(e.to_string()),
                );
            }
            if !self.cluster.is_running(id) {
                self.restart(id).await;
            }
        }
        self.log("heal-all", "all faults healed".to_owned(), None);
    }

    async fn restart(&mut self, id: u64) {
        let process = self.cluster.process_name();
        match self.cluster.restart(id).await {
            Ok(what) => self.log("restart", what, None),
            Err(e) => self.log(
                "restart",
                format!("restart {process} n{id}"),
                Some(e.to_string()),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(run_secs: u64) -> Timing {
        Timing {
            run_for: Duration::from_secs(run_secs),
            interval: Duration::from_secs(5),
            fault_for: Duration::from_secs(8),
        }
    }

    #[test]
    fn the_schedule_is_a_function_of_the_seed() {
        let kinds = [
            NemesisKind::Kill,
            NemesisKind::Partition,
            NemesisKind::Pause,
        ];
        let a = schedule(7, &kinds, &[1, 2, 3], timing(120));
        let b = schedule(7, &kinds, &[1, 2, 3], timing(120));
        assert_eq!(a, b);
        let seeds_differ = (8..20).any(|s| schedule(s, &kinds, &[1, 2, 3], timing(120)) != a);
        assert!(seeds_differ);
    }

    #[test]
    fn every_kind_occurs_and_every_fault_heals_within_the_run() {
        let kinds = [NemesisKind::Kill, NemesisKind::Partition];
        for seed in 0..50 {
            let steps = schedule(seed, &kinds, &[1, 2, 3], timing(60));
            assert_eq!(steps.len(), 4, "60 s holds four 13 s windows");
            assert!(steps
                .iter()
                .any(|s| matches!(s.faults[0], Fault::Kill { .. })));
            assert!(steps
                .iter()
                .any(|s| matches!(s.faults[0], Fault::Partition { .. })));
            for pair in steps.windows(2) {
                assert!(pair[0].heal_at < pair[1].at, "faults overlap");
            }
            assert!(steps.iter().all(|s| s.heal_at <= Duration::from_secs(60)));
        }
    }

    #[test]
    fn partitions_cut_a_minority_or_bridge_and_never_a_self_link() {
        let mut rng = StdRng::seed_from_u64(3);
        let (mut isolates, mut bridges) = (0, 0);
        for _ in 0..200 {
            let Fault::Partition { name, cut } = partition(&[1, 2, 3], &mut rng) else {
                panic!("not a partition")
            };
            assert!(cut.iter().all(|(a, b)| a != b));
            if name.starts_with("isolate-") {
                isolates += 1;
                // One node cut from both others, in both directions.
                assert_eq!(cut.len(), 4, "{name}: {cut:?}");
            } else {
                bridges += 1;
                assert!(name.starts_with("bridge-"));
                // Only the link between the two non-bridge nodes is cut.
                assert_eq!(cut.len(), 2, "{name}: {cut:?}");
            }
        }
        assert!(isolates > 0 && bridges > 0);
    }

    #[test]
    fn five_node_minorities_have_two_nodes() {
        let mut rng = StdRng::seed_from_u64(11);
        for _ in 0..100 {
            if let Fault::Partition { name, cut } = partition(&[1, 2, 3, 4, 5], &mut rng) {
                if name.starts_with("isolate-") {
                    // 2 x 3 pairs, both directions.
                    assert_eq!(cut.len(), 12, "{name}");
                }
            }
        }
    }

    #[test]
    fn leader_kinds_name_no_node_in_the_schedule() {
        let kinds = [NemesisKind::KillLeader, NemesisKind::IsolateLeader];
        let steps = schedule(5, &kinds, &[1, 2, 3], timing(60));
        assert_eq!(steps.len(), 4);
        let faults: Vec<&Fault> = steps.iter().flat_map(|s| &s.faults).collect();
        assert!(faults.contains(&&Fault::KillLeader));
        assert!(faults.contains(&&Fault::IsolateLeader));
        assert!(faults
            .iter()
            .all(|f| matches!(f, Fault::KillLeader | Fault::IsolateLeader)));
    }

    #[test]
    fn no_kinds_means_no_faults() {
        assert!(schedule(1, &[], &[1, 2, 3], timing(60)).is_empty());
    }

    #[test]
    fn kind_names_round_trip() {
        for k in NemesisKind::ALL {
            assert_eq!(NemesisKind::parse(k.name()), Some(k));
        }
    }
}
