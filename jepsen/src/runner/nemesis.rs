//! The nemesis: a seeded schedule of faults, and its execution against the cluster.
//!
//! Owns which fault happens when and to whom (a pure function of the seed, so a failing run
//! can be replayed), and the start and heal of each fault. It must not touch clients or judge
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
}

impl NemesisKind {
    pub const ALL: [NemesisKind; 5] = [
        NemesisKind::Kill,
        NemesisKind::KillBackend,
        NemesisKind::Pause,
        NemesisKind::Partition,
        NemesisKind::Combined,
    ];

    pub fn name(self) -> &'static str {
        match self {
            NemesisKind::Kill => "kill",
            NemesisKind::KillBackend => "kill-backend",
            NemesisKind::Pause => "pause",
            NemesisKind::Partition => "partition",
            NemesisKind::Combined => "combined",
        }
    }

    pub fn parse(name: &str) -> Option<NemesisKind> {
        NemesisKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fault {
    Kill { node: u64 },
    KillBackend { node: u64 },
    Pause { node: u64 },
    Partition { name: String, cut: BTreeSet<Link> },
}

impl Fault {
    fn describe(&self) -> String {
        match self {
            Fault::Kill { node } => format!("kill -9 certus n{node}"),
            Fault::KillBackend { node } => format!("kill -9 mariadbd of n{node}"),
            Fault::Pause { node } => format!("SIGSTOP certus n{node}"),
            Fault::Partition { name, .. } => format!("partition {name}"),
        }
    }

    fn keyword(&self) -> &'static str {
        match self {
            Fault::Kill { .. } => "kill",
            Fault::KillBackend { .. } => "kill-backend",
            Fault::Pause { .. } => "pause",
            Fault::Partition { .. } => "start-partition",
        }
    }
}

/// One fault window: start at `at`, heal at `heal_at` (both since the start of the run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Step {
    pub(crate) at: Duration,
    pub(crate) heal_at: Duration,
    pub(crate) faults: Vec<Fault>,
}

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

pub(crate) struct Nemesis<'a> {
    pub(crate) cluster: &'a mut Cluster,
    pub(crate) recorders: Vec<Recorder>,
    pub(crate) start: Instant,
    pub(crate) events: Vec<NemesisEvent>,
}

impl Nemesis<'_> {
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
            for fault in &step.faults {
                let result = self.apply(fault).await;
                self.log(
                    fault.keyword(),
                    fault.describe(),
                    result.err().map(|e| e.to_string()),
                );
            }
            self.sleep_until(step.heal_at).await;
            for fault in step.faults.iter().rev() {
                self.heal(fault).await;
            }
        }
    }

    async fn apply(&mut self, fault: &Fault) -> Result<(), RunError> {
        match fault {
            Fault::Kill { node } => self.cluster.kill(*node).await,
            Fault::KillBackend { node } => match self.cluster.kill_backend(*node).await? {
                Some(_) => Ok(()),
                None => Err(RunError::Cluster(format!(
                    "n{node}: no live mariadbd to kill"
                ))),
            },
            Fault::Pause { node } => self.cluster.pause(*node).await,
            Fault::Partition { cut, .. } => {
                self.cluster.relay().set_cut(cut.clone());
                Ok(())
            }
        }
    }

    async fn heal(&mut self, fault: &Fault) {
        match fault {
            Fault::Kill { node } => {
                let r = self.cluster.restart(*node);
                self.log(
                    "restart",
                    format!("restart certus n{node}"),
                    r.err().map(|e| e.to_string()),
                );
            }
            // The node's own supervisor restarts mariadbd; recovering is what is under test.
            Fault::KillBackend { .. } => {}
            Fault::Pause { node } => {
                let r = self.cluster.resume(*node).await;
                self.log(
                    "resume",
                    format!("SIGCONT certus n{node}"),
                    r.err().map(|e| e.to_string()),
                );
            }
            Fault::Partition { .. } => {
                self.cluster.relay().heal();
                self.log("stop-partition", "heal all links".to_owned(), None);
            }
        }
    }

    /// Ends every fault, whatever the schedule left behind: links healed, paused nodes
    /// resumed, killed nodes restarted.
    pub(crate) async fn heal_all(&mut self) {
        self.cluster.relay().heal();
        for id in self.cluster.node_ids() {
            let resumed = self.cluster.resume(id).await;
            if let Err(e) = resumed {
                self.log(
                    "resume",
                    format!("SIGCONT certus n{id}"),
                    Some(e.to_string()),
                );
            }
            if !self.cluster.is_running(id) {
                let r = self.cluster.restart(id);
                self.log(
                    "restart",
                    format!("restart certus n{id}"),
                    r.err().map(|e| e.to_string()),
                );
            }
        }
        self.log("heal-all", "all faults healed".to_owned(), None);
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
