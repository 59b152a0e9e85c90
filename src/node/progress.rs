//! Peer progress exchange: every node tells its peers, every `REPORT_INTERVAL`, how far its
//! backend has applied the log, how long its apply queue is, whether it asks for flow control,
//! and the results of the last TOI statements it ran. Each node keeps the latest report of every
//! member with its age.
//!
//! Owns: the report type and its encoding, the per-node table of latest reports, liveness (a
//! node not heard from within `LIVE_AGE` is not live), and the TOI result comparison (DESIGN
//! §7: a node whose TOI result differs from the cluster's becomes Inconsistent). Must not touch:
//! the transport (reports travel as opaque gossip over the authenticated peer RPC, see
//! `replication::GossipSender`), what flow control does with the numbers (`flow_control`), and
//! the apply path.
//!
//! Consumers: flow control (queue lengths, `fc_over`), log purge (`lowest_live_applied`), the
//! status surfaces.

use crate::ids::{NodeId, Seqno};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a node sends its report to every peer.
pub(crate) const REPORT_INTERVAL: Duration = Duration::from_millis(15);
/// A node whose last report is older than this is not live: it neither pauses the cluster
/// (flow control) nor holds back log purge.
pub(crate) const LIVE_AGE: Duration = Duration::from_millis(1500);
/// How many recent TOI results a report carries.
const TOI_HISTORY: usize = 32;
/// How long a node waits for a majority to agree on a TOI result before it compares with the
/// origin's alone.
const TOI_MAJORITY_GRACE: Duration = Duration::from_secs(2);
/// A TOI result nobody else reported within this long is not compared (the others are down).
const TOI_GIVE_UP: Duration = Duration::from_secs(60);
/// Format version of the encoded report; a report with another version is ignored.
const REPORT_VERSION: u8 = 2;

/// The result of one TOI statement on one node: 0 when it succeeded, else the backend's error
/// code (every node must refuse a statement alike).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ToiResult {
    pub(crate) seqno: u64,
    pub(crate) origin: u64,
    pub(crate) code: u16,
}

/// What one node says about itself.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub(crate) struct Report {
    /// The highest seqno its backend reflects.
    pub(crate) applied: u64,
    /// Write sets certified but not yet applied there.
    pub(crate) queue: u64,
    /// Its apply queue is over `fc_limit` (with hysteresis): writers everywhere pause.
    pub(crate) fc_over: bool,
    /// Its most recent TOI results, oldest first.
    pub(crate) toi: Vec<ToiResult>,
    /// Where its clients connect (`wsrep_incoming_addresses`).
    pub(crate) client_address: String,
    /// The Raft index below which its backend has every write set (the log-purge bound).
    pub(crate) applied_index: u64,
}

impl Report {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![REPORT_VERSION];
        // Encoding plain integers and vectors into a Vec cannot fail.
        if let Ok(b) = bincode::serde::encode_to_vec(self, bincode::config::standard()) {
            out.extend(b);
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Report> {
        let (version, rest) = bytes.split_first()?;
        if *version != REPORT_VERSION {
            return None;
        }
        let config = bincode::config::standard().with_limit::<{ 64 * 1024 }>();
        bincode::serde::decode_from_slice(rest, config)
            .ok()
            .map(|(r, _)| r)
    }
}

/// One member's latest known progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeProgress {
    pub node: NodeId,
    pub applied: Seqno,
    pub queue: u64,
    /// Since its last report arrived (zero for this node itself).
    pub age: Duration,
    pub live: bool,
    pub fc_over: bool,
    /// Where its clients connect; empty until its first report says.
    pub client_address: String,
    /// The Raft index below which its backend has every write set.
    pub applied_index: u64,
}

struct Received {
    report: Report,
    at: Instant,
}

/// This node's own TOI result, waiting to be compared with the others'.
struct PendingToi {
    result: ToiResult,
    since: Instant,
}

/// The latest report of every member (this node included), shared by the gossip sink, the
/// reporter task, flow control and the status surfaces.
pub(crate) struct Progress {
    self_id: NodeId,
    /// The member count TOI results are judged against; follows the Raft membership.
    members: std::sync::atomic::AtomicUsize,
    latest: Mutex<BTreeMap<NodeId, Received>>,
    own_toi: Mutex<VecDeque<ToiResult>>,
    pending_toi: Mutex<Vec<PendingToi>>,
    client_address: Mutex<String>,
}

impl Progress {
    pub(crate) fn new(self_id: NodeId, members: usize) -> Progress {
        Progress {
            self_id,
            members: std::sync::atomic::AtomicUsize::new(members.max(1)),
            latest: Mutex::new(BTreeMap::new()),
            own_toi: Mutex::new(VecDeque::new()),
            pending_toi: Mutex::new(Vec::new()),
            client_address: Mutex::new(String::new()),
        }
    }

    /// Where this node's clients connect, told to every peer from the next report on.
    pub(crate) fn set_client_address(&self, address: String) {
        if let Ok(mut a) = self.client_address.lock() {
            *a = address;
        }
    }

    /// A peer's report arrived (the gossip sink). Unreadable reports are dropped.
    pub(crate) fn receive(&self, from: NodeId, bytes: &[u8]) {
        if from == self.self_id {
            return;
        }
        let Some(report) = Report::decode(bytes) else {
            tracing::debug!(node = from.0, "ignoring an unreadable progress report");
            return;
        };
        self.record(from, report, Instant::now());
    }

    fn record(&self, node: NodeId, report: Report, at: Instant) {
        if let Ok(mut l) = self.latest.lock() {
            l.insert(node, Received { report, at });
        }
    }

    /// This node's own report of this tick (what its peers are sent).
    pub(crate) fn record_local(&self, mut report: Report) -> Report {
        report.toi = self
            .own_toi
            .lock()
            .map(|t| t.iter().copied().collect())
            .unwrap_or_default();
        report.client_address = self
            .client_address
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default();
        self.record(self.self_id, report.clone(), Instant::now());
        report
    }

    /// The applier finished a TOI statement here with `code` (0: it succeeded).
    pub(crate) fn record_toi(&self, seqno: Seqno, origin: NodeId, code: u16) {
        let result = ToiResult {
            seqno: seqno.0,
            origin: origin.0,
            code,
        };
        if let Ok(mut t) = self.own_toi.lock() {
            t.push_back(result);
            while t.len() > TOI_HISTORY {
                t.pop_front();
            }
        }
        if let Ok(mut p) = self.pending_toi.lock() {
            p.push(PendingToi {
                result,
                since: Instant::now(),
            });
        }
    }

    /// Every member heard from (this node included), by node id.
    pub fn nodes(&self) -> Vec<NodeProgress> {
        let now = Instant::now();
        let Ok(l) = self.latest.lock() else {
            return Vec::new();
        };
        l.iter()
            .map(|(node, r)| {
                let age = now.saturating_duration_since(r.at);
                NodeProgress {
                    node: *node,
                    applied: Seqno(r.report.applied),
                    queue: r.report.queue,
                    age,
                    live: *node == self.self_id || age < LIVE_AGE,
                    fc_over: r.report.fc_over,
                    client_address: r.report.client_address.clone(),
                    applied_index: r.report.applied_index,
                }
            })
            .collect()
    }

    /// The lowest applied seqno among live members (this node included): the log must not be
    /// purged above it. None before this node's first report.
    pub fn lowest_live_applied(&self) -> Option<Seqno> {
        self.nodes()
            .into_iter()
            .filter(|n| n.live)
            .map(|n| n.applied)
            .min()
    }

    /// The lowest Raft index below which every live member's backend has all write sets: the
    /// log must not be purged above it. None before this node's first report.
    pub(crate) fn lowest_live_applied_index(&self) -> Option<u64> {
        self.nodes()
            .into_iter()
            .filter(|n| n.live)
            .map(|n| n.applied_index)
            .min()
    }

    /// Whether any live member asks for flow control.
    pub(crate) fn any_live_fc_over(&self) -> bool {
        self.nodes().iter().any(|n| n.live && n.fc_over)
    }

    /// Compares this node's pending TOI results with what the others reported. Returns the
    /// reason to become Inconsistent when this node's result is not the cluster's.
    pub(crate) fn check_toi(&self) -> Option<String> {
        let now = Instant::now();
        let others: Vec<(NodeId, Vec<ToiResult>)> = match self.latest.lock() {
            Ok(l) => l
                .iter()
                .filter(|(n, _)| **n != self.self_id)
                .map(|(n, r)| (*n, r.report.toi.clone()))
                .collect(),
            Err(_) => return None,
        };
        let Ok(mut pending) = self.pending_toi.lock() else {
            return None;
        };
        let mut reason = None;
        pending.retain(|p| {
            let reported: Vec<(NodeId, u16)> = others
                .iter()
                .filter_map(|(n, results)| {
                    results
                        .iter()
                        .find(|r| r.seqno == p.result.seqno)
                        .map(|r| (*n, r.code))
                })
                .collect();
            let waited = now.saturating_duration_since(p.since);
            let members = self.members.load(std::sync::atomic::Ordering::Relaxed);
            match toi_verdict(self.self_id, members, &p.result, &reported, waited) {
                ToiVerdict::Agree => false,
                ToiVerdict::Undecided => waited < TOI_GIVE_UP,
                ToiVerdict::Differs { expected } => {
                    reason.get_or_insert(format!(
                        "TOI seqno {} ended with {} here but with {} on the cluster",
                        p.result.seqno,
                        describe(p.result.code),
                        describe(expected)
                    ));
                    false
                }
            }
        });
        reason
    }
}

fn describe(code: u16) -> String {
    if code == 0 {
        "success".into()
    } else {
        format!("error {code}")
    }
}

#[derive(Debug, PartialEq, Eq)]
enum ToiVerdict {
    Agree,
    Differs { expected: u16 },
    Undecided,
}

/// Decides whether this node's TOI result stands: a result a majority of the members reported
/// (this node's own included) decides; failing a majority, the origin's result decides once
/// `TOI_MAJORITY_GRACE` has passed; the origin itself, with no majority against it, stands.
fn toi_verdict(
    me: NodeId,
    members: usize,
    mine: &ToiResult,
    others: &[(NodeId, u16)],
    waited: Duration,
) -> ToiVerdict {
    let quorum = members / 2 + 1;
    let mut counts: BTreeMap<u16, usize> = BTreeMap::new();
    *counts.entry(mine.code).or_default() += 1;
    for (_, code) in others {
        *counts.entry(*code).or_default() += 1;
    }
    if let Some((code, _)) = counts.iter().find(|(_, n)| **n >= quorum) {
        return if *code == mine.code {
            ToiVerdict::Agree
        } else {
            ToiVerdict::Differs { expected: *code }
        };
    }
    if mine.origin == me.0 {
        // Nobody outvoted the origin (yet): once every other member answered, it stands.
        return if others.len() + 1 >= members {
            ToiVerdict::Agree
        } else {
            ToiVerdict::Undecided
        };
    }
    match others.iter().find(|(n, _)| n.0 == mine.origin) {
        Some((_, code)) if *code == mine.code => ToiVerdict::Agree,
        Some((_, code)) if waited >= TOI_MAJORITY_GRACE => ToiVerdict::Differs { expected: *code },
        _ => ToiVerdict::Undecided,
    }
}

/// What the reporter reads about this node at every tick.
pub(crate) struct LocalView {
    pub(crate) applied: Seqno,
    pub(crate) applied_index: u64,
    pub(crate) queue: u64,
    /// False while the node is desynced (backend down, Inconsistent): it then never asks for
    /// flow control.
    pub(crate) can_ask: bool,
}

/// How long one report may take to reach a peer; a peer that does not take it is retried at the
/// next report, after `UNREACHABLE_BACKOFF` when it could not be reached at all.
const SEND_TTL: Duration = Duration::from_millis(500);
const UNREACHABLE_BACKOFF: Duration = Duration::from_millis(200);

/// Runs until dropped (aborted at shutdown): every `REPORT_INTERVAL` it reads this node's view,
/// updates flow control, publishes the report to one sender task per peer, and compares TOI
/// results; `on_inconsistent` is called when this node's TOI result is not the cluster's.
pub(crate) async fn run_reporter(
    progress: std::sync::Arc<Progress>,
    flow: std::sync::Arc<super::flow_control::FlowControl>,
    gossip: crate::replication::GossipSender,
    local: impl Fn() -> LocalView,
    on_inconsistent: impl Fn(String),
) {
    let (tx, rx) = tokio::sync::watch::channel(Vec::new());
    // Dropping the JoinSet with this future stops the senders too.
    let mut senders = tokio::task::JoinSet::new();
    // One sender per member, following the Raft membership: members added online get reports,
    // removed ones stop getting them.
    let mut running: BTreeMap<NodeId, tokio::task::AbortHandle> = BTreeMap::new();
    let mut tick = tokio::time::interval(REPORT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let targets = gossip.targets();
        if !targets.is_empty() {
            // Before the membership is known (a joiner) the configured count stands.
            progress
                .members
                .store(targets.len() + 1, std::sync::atomic::Ordering::Relaxed);
        }
        running.retain(|target, handle| {
            let keep = targets.contains(target);
            if !keep {
                handle.abort();
            }
            keep
        });
        for target in targets {
            running
                .entry(target)
                .or_insert_with(|| senders.spawn(send_reports(gossip.clone(), target, rx.clone())));
        }
        while senders.try_join_next().is_some() {}
        let view = local();
        let fc_over = flow.own_request(view.queue, view.can_ask);
        let report = progress.record_local(Report {
            applied: view.applied.0,
            queue: view.queue,
            fc_over,
            toi: Vec::new(),
            client_address: String::new(),
            applied_index: view.applied_index,
        });
        tx.send_replace(report.encode());
        flow.evaluate(&progress);
        if let Some(reason) = progress.check_toi() {
            on_inconsistent(reason);
        }
    }
}

async fn send_reports(
    gossip: crate::replication::GossipSender,
    target: NodeId,
    mut rx: tokio::sync::watch::Receiver<Vec<u8>>,
) {
    loop {
        if rx.changed().await.is_err() {
            return;
        }
        let bytes = rx.borrow_and_update().clone();
        if let Err(e) = gossip.send(target, bytes, SEND_TTL).await {
            tracing::trace!(node = target.0, "progress report not delivered: {e}");
            tokio::time::sleep(UNREACHABLE_BACKOFF).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toi(origin: u64, code: u16) -> ToiResult {
        ToiResult {
            seqno: 7,
            origin,
            code,
        }
    }

    #[test]
    fn report_round_trips_and_rejects_other_versions() {
        let r = Report {
            applied: 42,
            queue: 3,
            fc_over: true,
            toi: vec![toi(2, 1050)],
            client_address: "127.0.0.1:3306".into(),
            applied_index: 17,
        };
        let bytes = r.encode();
        assert_eq!(Report::decode(&bytes), Some(r));
        let mut other = bytes.clone();
        other[0] = REPORT_VERSION + 1;
        assert_eq!(Report::decode(&other), None);
        assert_eq!(Report::decode(&[]), None);
        assert_eq!(Report::decode(&bytes[..bytes.len() - 1]), None);
    }

    #[test]
    fn a_majority_decides_even_against_the_origin() {
        let me = NodeId(1);
        // Node 3 had the table already: it failed while nodes 1 (origin) and 2 succeeded.
        let v = toi_verdict(
            NodeId(3),
            3,
            &toi(1, 1050),
            &[(me, 0), (NodeId(2), 0)],
            Duration::ZERO,
        );
        assert_eq!(v, ToiVerdict::Differs { expected: 0 });
        // The origin outvoted by the two others is the odd one.
        let v = toi_verdict(
            me,
            3,
            &toi(1, 1050),
            &[(NodeId(2), 0), (NodeId(3), 0)],
            Duration::ZERO,
        );
        assert_eq!(v, ToiVerdict::Differs { expected: 0 });
        let v = toi_verdict(me, 3, &toi(1, 0), &[(NodeId(2), 0)], Duration::ZERO);
        assert_eq!(v, ToiVerdict::Agree);
    }

    #[test]
    fn without_a_majority_the_origin_decides_after_the_grace() {
        let me = NodeId(2);
        let others = [(NodeId(1), 0)];
        assert_eq!(
            toi_verdict(me, 3, &toi(1, 1050), &others, Duration::ZERO),
            ToiVerdict::Undecided
        );
        assert_eq!(
            toi_verdict(me, 3, &toi(1, 1050), &others, TOI_MAJORITY_GRACE),
            ToiVerdict::Differs { expected: 0 }
        );
        assert_eq!(
            toi_verdict(me, 3, &toi(1, 1050), &[], TOI_GIVE_UP),
            ToiVerdict::Undecided
        );
    }

    #[test]
    fn progress_tracks_liveness_and_the_lowest_live_applied() {
        let p = Progress::new(NodeId(1), 3);
        assert_eq!(p.lowest_live_applied(), None);
        p.record_local(Report {
            applied: 10,
            ..Default::default()
        });
        p.receive(
            NodeId(2),
            &Report {
                applied: 7,
                queue: 4,
                ..Default::default()
            }
            .encode(),
        );
        let stale = Instant::now() - LIVE_AGE - Duration::from_millis(1);
        p.record(
            NodeId(3),
            Report {
                applied: 2,
                fc_over: true,
                ..Default::default()
            },
            stale,
        );
        assert_eq!(p.lowest_live_applied(), Some(Seqno(7)));
        assert!(
            !p.any_live_fc_over(),
            "a stale node does not pause the cluster"
        );
        let nodes = p.nodes();
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes[1].queue, 4);
        assert!(!nodes[2].live);
        p.receive(
            NodeId(3),
            &Report {
                applied: 3,
                fc_over: true,
                ..Default::default()
            }
            .encode(),
        );
        assert!(p.any_live_fc_over());
        assert_eq!(p.lowest_live_applied(), Some(Seqno(3)));
    }

    #[test]
    fn check_toi_reports_a_minority_result_once() {
        let p = Progress::new(NodeId(3), 3);
        p.record_toi(Seqno(7), NodeId(1), 1050);
        assert_eq!(p.check_toi(), None, "nothing reported yet");
        let ok = Report {
            toi: vec![toi(1, 0)],
            ..Default::default()
        };
        p.receive(NodeId(1), &ok.encode());
        p.receive(NodeId(2), &ok.encode());
        let reason = p.check_toi().expect("minority result");
        assert!(reason.contains("error 1050"), "{reason}");
        assert_eq!(p.check_toi(), None, "decided once");
    }
}
