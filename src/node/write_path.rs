//! The replicated write path of one node, below the sessions:
//!
//! * [`NodeFsm`] is the Raft state machine: it decodes each proposal, certifies it (the same
//!   verdict on every node, in log order) and queues the result for the applier. It does no I/O.
//! * The apply task replays committed write sets on the local backend in log order, runs TOI
//!   statements, brute-force aborts local transactions that block it, and tells the origin
//!   session the outcome once this backend reflects it (read-your-writes on the origin). A
//!   write set whose origin session still holds its XA prepared here is not replayed: at its
//!   seqno the applier records the seqno and has the session `XA COMMIT` it
//!   (`super::prepared`).
//! * [`WritePath`] is what a session calls: last_seen, capture, keys, and `submit`.
//!
//! An apply failure is never ignored: the node becomes Inconsistent, applies nothing more and
//! refuses clients (DESIGN §7).
//!
//! Snapshots (state transfer, `super::sst`): `NodeFsm::snapshot` captures the certification
//! state under the state machine's lock and returns the job that dumps the backend;
//! `NodeFsm::restore` restores the certifier at once and queues the backend load for the apply
//! task, which runs it in log order (a load the backend does not need is skipped). The node is
//! Joining while a snapshot arrives and loads, Joined until it has applied what it had certified
//! by then, then Synced; it is a Donor while it streams a snapshot to a peer.

use crate::apply::{Applier, ApplyError, TOIContext};
use crate::capture::{Capture, CaptureError, CapturedGroup, Gtid, RowKind};
use crate::catalog::{Catalog, Table};
use crate::certification::{Certifier, Verdict};
use crate::frontend::Registry;
use crate::ids::{NodeId, Seqno};
use crate::node::latency::{Stage, StageTimer, WritePathMetrics};
use crate::node::prepared::{PreparedXa, XaRequest};
use crate::replication::{Fsm, MembershipProbe, ProposeError, Replication};
use crate::writeset::{
    self, Body, CellValue, Collation, ForeignKeyMeta, IndexColumn, IndexMeta, Key, RowChange,
    TableMeta, WriteSet,
};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

/// Write sets whose last_seen is further than this behind abort as too old (the
/// certification index keeps this many seqnos of history).
pub(crate) const CERTIFICATION_WINDOW: u64 = 100_000;

/// What the origin session learns about its write set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Certified and applied on this node's backend.
    Committed { seqno: Seqno },
    /// Refused by certification (a conflict): the client gets 1213.
    Aborted { seqno: Seqno },
    /// A TOI statement the backend refused; every node refuses it alike.
    ToiRefused {
        code: u16,
        state: String,
        message: String,
    },
    /// This node could not apply (it is now Inconsistent); the outcome elsewhere is Commit.
    NodeFailed(String),
}

enum Work {
    Rows(Vec<Vec<u8>>),
    Toi(writeset::TOICommand),
    Aborted,
    /// Load the snapshot in this file into the backend (unless it already has it); `seqno` is
    /// the snapshot's certified seqno.
    Load(std::fs::File),
}

struct ApplyItem {
    seqno: Seqno,
    /// The node that proposed it (TOI results are compared with the origin's).
    origin: NodeId,
    /// The Raft log index of the entry that carried it.
    index: u64,
    origin_xid: Option<String>,
    /// Its certification keys: a prepared XA of this node that conflicts with them is rolled
    /// back before the write set is applied (its locks would block the applier).
    keys: Vec<Key>,
    work: Work,
    /// When certification queued it (for the apply-queue latency only).
    queued_at: std::time::Instant,
}

/// One of this node's own prepared XAs, claimed for commit at its seqno.
struct OwnCommit {
    seqno: Seqno,
    xid: String,
    xa: Arc<PreparedXa>,
}

/// Held (shared) by the applier from before it records a run of own XAs in `certus.state`
/// until their `XA COMMIT`s are done, and (exclusive) by a state-transfer dump while it runs.
/// Between those two commits the backend holds the run's seqno without its rows: a dump whose
/// consistent snapshot opened there would give a joiner the seqno without the rows, and the
/// joiner would skip those write sets for good. While a dump holds the gate, own write sets are
/// replayed from the log like remote ones (data and seqno in one transaction).
pub(crate) type OwnCommitGate = Arc<tokio::sync::RwLock<()>>;

/// The applier's share of the [`OwnCommitGate`], held from a run's claim to its last commit.
type OwnCommitShare = tokio::sync::OwnedRwLockReadGuard<()>;

/// [`claim_own`] for the first write set of a run, with the applier's share of the
/// [`OwnCommitGate`]; None also while a dump holds or waits for the gate (the write set is then
/// replayed).
fn claim_own_run(shared: &Shared, item: &ApplyItem) -> Option<(OwnCommit, OwnCommitShare)> {
    let share = shared.own_commit_gate.clone().try_read_owned().ok()?;
    Some((claim_own(shared, item, &share)?, share))
}

/// Claims `item`'s XA for commit when it is a row write set whose origin session here still
/// holds its XA prepared; None otherwise (replayed, or nothing to apply). The caller holds the
/// [`OwnCommitGate`] (`_share`) until the commit is done.
fn claim_own(shared: &Shared, item: &ApplyItem, _share: &OwnCommitShare) -> Option<OwnCommit> {
    let Work::Rows(_) = item.work else {
        return None;
    };
    let xid = item.origin_xid.as_deref()?;
    let xa = shared.prepared.get(xid).filter(|xa| xa.claim_commit())?;
    Some(OwnCommit {
        seqno: item.seqno,
        xid: xid.to_owned(),
        xa,
    })
}

/// Where the node is in a state transfer (`Shared::sst_phase`).
pub(crate) const SST_NONE: u8 = 0;
pub(crate) const SST_JOINING: u8 = 1;
/// Joining, and a snapshot is loading into the backend (only the load ends it).
pub(crate) const SST_LOADING: u8 = 2;
pub(crate) const SST_JOINED: u8 = 3;

fn record_phase(history: Option<&mut Vec<&'static str>>, old: u8, new: u8) {
    let (old, new) = (phase_name(old), phase_name(new));
    if old != new {
        info!(state = new, "joiner state");
        if let Some(h) = history {
            h.push(new);
        }
    }
}

fn phase_name(phase: u8) -> &'static str {
    match phase {
        SST_JOINING | SST_LOADING => "Joining",
        SST_JOINED => "Joined",
        _ => "Synced",
    }
}

/// State shared by the state machine, the apply task and the sessions.
pub(crate) struct Shared {
    /// The highest seqno this backend reflects (committed, aborted or refused: all processed).
    applied: watch::Sender<Seqno>,
    /// The last seqno of the run of own XAs whose `XA COMMIT`s the applier has started, every
    /// earlier seqno being applied (see [`WritePath::last_seen_under_locks`]).
    own_committing: AtomicU64,
    inconsistent: watch::Sender<Option<String>>,
    waiters: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    pub(crate) bf_aborts: AtomicU64,
    pub(crate) cert_failures: AtomicU64,
    pub(crate) local_commits: AtomicU64,
    /// Write sets this node proposed (`wsrep_replicated`).
    pub(crate) replicated: AtomicU64,
    /// Write sets from other nodes this node applied (`wsrep_received`).
    pub(crate) received: AtomicU64,
    /// Certified write sets waiting for the applier (`wsrep_local_recv_queue`).
    pub(crate) queued: AtomicU64,
    /// The last Raft entry certified, and the last seqno assigned by then (causal reads map a
    /// Raft read index to the seqno the backend must reach).
    certified: watch::Sender<(u64, Seqno)>,
    /// Per-stage latency and batching histograms (`/metrics`).
    pub(crate) latency: Arc<WritePathMetrics>,
    /// The Raft index below which every entry's write sets are in the backend: the node's own
    /// bound for purging the log.
    pub(crate) applied_index: AtomicU64,
    /// `SST_NONE`, `SST_JOINING` or `SST_JOINED`. A node starts Joining.
    sst_phase: std::sync::atomic::AtomicU8,
    /// Snapshots loaded into the backend since start (state transfers received).
    pub(crate) sst_loads: AtomicU64,
    /// The sessions' XA transactions prepared here and waiting for their seqno.
    pub(crate) prepared: super::prepared::PreparedRegistry,
    /// Keeps state-transfer dumps out of the applier's own-XA commits (see the type).
    pub(crate) own_commit_gate: OwnCommitGate,
    /// Every state-transfer state this node went through, in order (for status and tests).
    sst_history: Mutex<Vec<&'static str>>,
}

impl Shared {
    /// The phase changes under the history's lock, so whoever sees the new phase (a node that
    /// turned Synced serves clients) and then reads the history finds the change in it.
    fn set_sst_phase(&self, phase: u8) {
        let mut history = self.sst_history.lock().ok();
        let old = self.sst_phase.swap(phase, Ordering::SeqCst);
        record_phase(history.as_deref_mut(), old, phase);
    }

    /// Moves from `from` to `to` only if the phase is still `from` (the apply task may have
    /// started a load meanwhile).
    fn advance_sst_phase(&self, from: u8, to: u8) {
        let mut history = self.sst_history.lock().ok();
        if self
            .sst_phase
            .compare_exchange(from, to, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            record_phase(history.as_deref_mut(), from, to);
        }
    }

    /// Makes the node Inconsistent (it stops serving) for a cause found outside the applier;
    /// the first reason is kept.
    fn mark_inconsistent(&self, reason: String) {
        error!("{reason}; this node is now Inconsistent and stops serving");
        self.inconsistent.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(reason);
                true
            } else {
                false
            }
        });
    }

    /// The applier could not go on: the node becomes Inconsistent for `reason`, which the
    /// apply loop keeps in `failed` (every later write set's origin hears it); returns it.
    fn apply_failed(&self, failed: &mut Option<String>, reason: String) -> String {
        error!("{reason}; this node is now Inconsistent and stops serving");
        self.inconsistent.send_replace(Some(reason.clone()));
        *failed = Some(reason.clone());
        reason
    }

    fn notify(&self, xid: Option<&str>, outcome: Outcome) {
        let Some(xid) = xid else { return };
        let waiter = self.waiters.lock().ok().and_then(|mut w| w.remove(xid));
        if let Some(tx) = waiter {
            let _ = tx.send(outcome);
        }
    }
}

/// The Raft state machine: certification, deterministic and I/O-free.
pub(crate) struct NodeFsm {
    node: NodeId,
    certifier: Certifier,
    queue: mpsc::UnboundedSender<ApplyItem>,
    shared: Arc<Shared>,
    sst: super::sst::SstBackend,
}

impl Fsm for NodeFsm {
    fn apply_batch(&mut self, index: u64, proposals: &[Vec<u8>]) {
        self.shared.latency.observe_entry(proposals.len());
        self.certify_batch(index, proposals);
        let last = self.certifier.last_seqno();
        self.shared.certified.send_replace((index, last));
    }

    fn snapshot(&self, index: u64, out: tokio::fs::File) -> crate::replication::SnapshotJob {
        let header = self
            .certifier
            .to_snapshot()
            .map(|certification| super::sst::Header {
                index,
                seqno: self.certifier.last_seqno().0,
                certification,
            });
        let applied = self.shared.applied.subscribe();
        let backend = self.sst.clone();
        let gate = self.shared.own_commit_gate.clone();
        Box::pin(async move {
            let header = header.map_err(|e| format!("certification snapshot: {e}"))?;
            super::sst::write_snapshot(out, header, applied, gate, backend).await
        })
    }

    fn restore(&mut self, index: u64, mut data: std::fs::File) -> Result<(), String> {
        let header = super::sst::read_header(&mut data)?;
        if header.index != index {
            return Err(format!(
                "snapshot header says index {}, its meta says {index}",
                header.index
            ));
        }
        self.certifier = Certifier::from_snapshot(&header.certification)
            .map_err(|e| format!("certification snapshot: {e}"))?;
        let seqno = Seqno(header.seqno);
        self.shared.certified.send_replace((index, seqno));
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        let _ = self.queue.send(ApplyItem {
            seqno,
            origin: self.node,
            index,
            origin_xid: None,
            keys: Vec::new(),
            work: Work::Load(data),
            queued_at: std::time::Instant::now(),
        });
        Ok(())
    }

    fn receiving(&mut self) {
        // A load in progress stays Loading: only its end may move the node on.
        for from in [SST_NONE, SST_JOINED] {
            self.shared.advance_sst_phase(from, SST_JOINING);
        }
    }
}

impl NodeFsm {
    fn certify_batch(&mut self, index: u64, proposals: &[Vec<u8>]) {
        for p in proposals {
            let timer = StageTimer::start();
            let ws = match WriteSet::decode(p) {
                Ok(ws) => ws,
                Err(e) => {
                    // The same bytes fail on every node, so every node skips them alike.
                    error!(index, "skipping an undecodable proposal: {e}");
                    continue;
                }
            };
            let verdict = self.certifier.certify_write_set(&ws);
            timer.stop(&self.shared.latency, Stage::Certify);
            let origin_xid = (ws.origin == self.node).then(|| ws.xid.0.clone());
            let (seqno, work) = match verdict {
                Verdict::Commit { seqno } => (
                    seqno,
                    match ws.body {
                        Body::Rows(rows) => Work::Rows(rows),
                        Body::Toi(cmd) => Work::Toi(cmd),
                    },
                ),
                Verdict::Abort { seqno, .. } => (seqno, Work::Aborted),
            };
            self.shared.queued.fetch_add(1, Ordering::Relaxed);
            if ws.origin != self.node {
                self.shared.received.fetch_add(1, Ordering::Relaxed);
            }
            let _ = self.queue.send(ApplyItem {
                seqno,
                origin: ws.origin,
                index,
                origin_xid,
                keys: ws.keys,
                work,
                queued_at: std::time::Instant::now(),
            });
        }
    }
}

/// Why a captured group could not be keyed.
#[derive(Debug)]
pub(crate) enum KeysError {
    /// The rows were written under another schema than the table has now (a TOI ran since):
    /// the transaction conflicts with that TOI, as certification would decide.
    SchemaChanged(String),
    Other(String),
}

/// A submission that did not reach an outcome.
#[derive(Debug)]
pub(crate) enum SubmitError {
    /// Nothing was committed (no leader, or the proposal was refused before the log).
    Definite(String),
    /// The write set may or may not commit; the client must not be told either way.
    Indeterminate(String),
}

pub(crate) struct WritePath {
    pub(crate) node: NodeId,
    /// Taken out at shutdown; sessions still running then get Definite "shutting down" errors.
    replication: Arc<tokio::sync::RwLock<Option<Replication>>>,
    capture: Capture,
    pub(crate) shared: Arc<Shared>,
    catalog: Catalog,
    pool: mysql_async::Pool,
    apply_task: tokio::task::JoinHandle<()>,
    primary: Arc<std::sync::atomic::AtomicBool>,
    /// This node's place in the membership and whether it has caught up, as last sampled.
    place: Arc<Mutex<Place>>,
    primary_task: tokio::task::JoinHandle<()>,
    /// Every member's latest applied seqno and apply queue (peer progress exchange).
    pub(crate) progress: Arc<super::progress::Progress>,
    pub(crate) flow: Arc<super::flow_control::FlowControl>,
    progress_task: tokio::task::JoinHandle<()>,
    donor: Box<dyn Fn() -> bool + Send + Sync>,
    sync_task: tokio::task::JoinHandle<()>,
}

/// What the sampler knows about this node's membership and catch-up.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Place {
    pub(crate) probe: Option<MembershipProbe>,
    /// Set once this node, as a voter in the Primary component, has applied (nearly) all it
    /// has received; until then it is Joining and refuses clients (DESIGN §10). It stays set:
    /// a later loss of the Primary component is reported through `primary`.
    pub(crate) synced: bool,
    /// This node has been a voter since it started.
    pub(crate) was_voter: bool,
    /// Removed from the cluster: no longer listed, or demoted from voter to learner (the first
    /// step of a removal; nodes are never demoted otherwise).
    pub(crate) removed: bool,
}

/// Catch-up thresholds for leaving Joining: Raft entries received but not yet certified, and
/// write sets certified but not yet applied to the backend.
const SYNCED_UNAPPLIED_ENTRIES: u64 = 64;
const SYNCED_APPLY_QUEUE: u64 = 256;

/// Whether a node with this probe and apply queue has caught up (pure).
pub(crate) fn has_caught_up(p: &MembershipProbe, apply_queue: u64) -> bool {
    p.primary
        && p.voter
        && p.unapplied <= SYNCED_UNAPPLIED_ENTRIES
        && apply_queue <= SYNCED_APPLY_QUEUE
}

/// Raft's view, as the status surfaces use it.
pub(crate) struct RaftSummary {
    pub(crate) term: u64,
    pub(crate) leader: Option<u64>,
    /// Voting members, ordered by id.
    pub(crate) voters: Vec<u64>,
    pub(crate) membership_index: u64,
}

/// Samples the Primary flag and this node's place in the membership; latches `synced` once the
/// node has caught up.
async fn sample_membership(
    probe: impl Fn() -> MembershipProbe,
    primary: Arc<std::sync::atomic::AtomicBool>,
    place: Arc<Mutex<Place>>,
    shared: Arc<Shared>,
) {
    loop {
        let p = probe();
        primary.store(p.primary, Ordering::Relaxed);
        let newly_removed = match place.lock() {
            Ok(mut place) => {
                place.was_voter |= p.voter;
                let removed = p.removed || (p.learner && place.was_voter);
                let newly_removed = removed && !place.removed;
                place.removed = removed;
                if !place.synced && has_caught_up(&p, shared.queued.load(Ordering::Relaxed)) {
                    info!("caught up with the cluster: Synced");
                    place.synced = true;
                }
                place.probe = Some(p);
                newly_removed
            }
            Err(_) => false,
        };
        if newly_removed {
            warn!("this node was removed from the cluster: it no longer serves clients");
            // Write sets still waiting here may have committed in the cluster, but this node
            // will not apply them any more: their sessions get an unknown outcome now rather
            // than after the outcome timeout.
            if let Ok(mut waiters) = shared.waiters.lock() {
                waiters.clear();
            }
        }
        tokio::time::sleep(PRIMARY_SAMPLE).await;
    }
}

/// What the applier starts with besides its connection.
pub(crate) struct ApplierStart {
    /// Why this node was Inconsistent before it stopped (`recovery`'s marker), if it was: it
    /// stays so and applies nothing.
    pub(crate) inconsistent: Option<String>,
    /// How its transactions appear in the backend's binlog (`log_replica_updates`).
    pub(crate) tagging: crate::apply::Tagging,
}

/// How often the Primary flag is sampled from Raft's metrics (well under one election timeout).
const PRIMARY_SAMPLE: Duration = Duration::from_millis(100);

/// How long a session waits for its own XA group on the binlog stream.
const CAPTURE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a session waits for its write set's outcome after proposing it.
const OUTCOME_TIMEOUT: Duration = Duration::from_secs(120);
/// After an indeterminate propose, the entry may still commit: wait this long for it.
const INDETERMINATE_GRACE: Duration = Duration::from_secs(5);

impl WritePath {
    pub(crate) async fn start(
        node: NodeId,
        mut repl_cfg: crate::replication::ReplicationConfig,
        peer_listener: tokio::net::TcpListener,
        backend: &crate::backend::Backend,
        registry: Arc<Registry>,
        flow: super::flow_control::FlowControl,
        applier_start: ApplierStart,
    ) -> Result<WritePath, String> {
        let ApplierStart {
            inconsistent: inconsistent_at_start,
            tagging,
        } = applier_start;
        let progress = Arc::new(super::progress::Progress::new(node, repl_cfg.members.len()));
        let sink = progress.clone();
        repl_cfg.gossip_sink = Some(Arc::new(move |from, bytes| sink.receive(from, bytes)));
        let flow = Arc::new(flow);
        resolve_orphaned_xa(&backend.pool, node, None, None).await?;
        let svc_opts = backend
            .endpoint
            .opts(&backend.service.user, &backend.service.password);
        let replica_id = 1000 + u32::try_from(node.0).unwrap_or(0);
        let capture = Capture::start(crate::capture::CaptureConfig::new(
            svc_opts.clone(),
            replica_id,
        ))
        .await
        .map_err(|e| format!("binlog capture: {e}"))?;
        let fd = capture
            .format_description()
            .map_err(|e| format!("binlog capture: {e}"))?;
        let mut applier = Applier::connect(svc_opts.clone(), tagging, fd.clone())
            .await
            .map_err(|e| format!("applier: {e}"))?;
        let start_applied = applier
            .applied_seqno()
            .await
            .map_err(|e| format!("applier: {e}"))?;
        let (applied, _) = watch::channel(start_applied);
        // A node that was Inconsistent before its restart stays so (`recovery`'s marker).
        let (inconsistent, _) = watch::channel(inconsistent_at_start);
        let shared = Arc::new(Shared {
            applied,
            inconsistent,
            waiters: Mutex::new(HashMap::new()),
            bf_aborts: AtomicU64::new(0),
            cert_failures: AtomicU64::new(0),
            local_commits: AtomicU64::new(0),
            replicated: AtomicU64::new(0),
            received: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            certified: watch::channel((0, start_applied)).0,
            latency: Arc::new(WritePathMetrics::default()),
            applied_index: AtomicU64::new(0),
            own_committing: AtomicU64::new(0),
            sst_phase: std::sync::atomic::AtomicU8::new(SST_JOINING),
            sst_loads: AtomicU64::new(0),
            prepared: Default::default(),
            own_commit_gate: Default::default(),
            sst_history: Mutex::new(vec!["Joining"]),
        });
        tokio::spawn(watch_backend_restarts(
            backend.health_watch(),
            backend.pool.clone(),
            node,
            shared.clone(),
        ));
        tokio::spawn(sweep_orphans(backend.pool.clone(), node, shared.clone()));
        let (tx, rx) = mpsc::unbounded_channel();
        let sst = super::sst::SstBackend::new(backend, repl_cfg.data_dir.clone());
        let fsm = Arc::new(Mutex::new(NodeFsm {
            node,
            certifier: Certifier::new(CERTIFICATION_WINDOW),
            queue: tx,
            shared: shared.clone(),
            sst: sst.clone(),
        }));
        // The purge bound: what this node's backend has applied and no live member's backend
        // still needs (the progress exchange). A node that stopped reporting is not live and
        // catches up by state transfer if the log moved past it.
        let bound_shared = shared.clone();
        let bound_progress = progress.clone();
        repl_cfg.purge_bound = Arc::new(move || {
            let own = bound_shared.applied_index.load(Ordering::Relaxed);
            Some(
                bound_progress
                    .lowest_live_applied_index()
                    .map_or(own, |live| live.min(own)),
            )
        });
        let catalog = Catalog::default();
        let pool = backend.pool.clone();
        let ctx = ApplyCtx {
            node,
            applier,
            opts: svc_opts,
            tagging,
            fd,
            shared: shared.clone(),
            catalog: catalog.clone(),
            pool: pool.clone(),
            registry,
            progress: progress.clone(),
            sst,
            last_lock_probe: None,
        };
        let apply_task = tokio::spawn(apply_loop(rx, ctx, start_applied));
        let reported = shared.clone();
        repl_cfg.applied_seqno = Some(Arc::new(move || reported.applied.borrow().0));
        let replication = Replication::start(repl_cfg, fsm, peer_listener)
            .await
            .map_err(|e| format!("replication: {e}"))?;
        info!(%node, applied = %start_applied, "write path started");
        let primary = Arc::new(std::sync::atomic::AtomicBool::new(
            replication.metrics().is_primary,
        ));
        let donor = Box::new(replication.donor_probe());
        let place = Arc::new(Mutex::new(Place::default()));
        let primary_task = tokio::spawn(sample_membership(
            replication.membership_probe(),
            primary.clone(),
            place.clone(),
            shared.clone(),
        ));
        let progress_task = tokio::spawn(report_progress(
            progress.clone(),
            flow.clone(),
            replication.gossip_sender(),
            shared.clone(),
            backend.health_watch(),
            place.clone(),
        ));
        let replication = Arc::new(tokio::sync::RwLock::new(Some(replication)));
        let sync_task = tokio::spawn(sync_monitor(replication.clone(), shared.clone()));
        Ok(WritePath {
            sync_task,
            donor,
            primary,
            place,
            primary_task,
            progress,
            flow,
            progress_task,
            node,
            replication,
            capture,
            shared,
            catalog,
            pool,
            apply_task,
        })
    }

    /// This node's prepared XAs: a session registers its own before submitting its write set.
    pub(crate) fn prepared(&self) -> &super::prepared::PreparedRegistry {
        &self.shared.prepared
    }

    /// Forgets a session's prepared XA when the session stops serving it. One the applier
    /// claimed for commit stays registered until the applier has committed it. Any other is
    /// claimed for rollback (its write set, if certification commits it, is replayed), and if
    /// it is still prepared (the session's connection broke), it is resolved from another
    /// connection once detached.
    pub(crate) fn forget_prepared(&self, xid: &str, xa: &PreparedXa) {
        if xa.commit_claimed() {
            return;
        }
        xa.claim_rollback();
        self.shared.prepared.remove(xid);
        if xa.is_resolved() {
            return;
        }
        let (pool, node, shared) = (self.pool.clone(), self.node, self.shared.clone());
        tokio::spawn(async move {
            for wait in [Duration::from_millis(200), Duration::from_secs(2)] {
                tokio::time::sleep(wait).await;
                if let Err(e) = resolve_orphaned_xa(&pool, node, Some(&shared.prepared), None).await
                {
                    warn!("resolving a prepared XA its session left: {e}");
                }
            }
        });
    }

    /// The seqno this backend reflects: a transaction's last_seen, read before it starts.
    pub(crate) fn last_applied(&self) -> Seqno {
        *self.shared.applied.borrow()
    }

    /// last_seen for a transaction that read only under locks and still holds them all: the
    /// applied seqno, or the end of the run of own XAs being committed when that is later.
    /// Each of those XAs holds the locks on its rows until its `XA COMMIT` is done, so one
    /// that shares a row with the transaction committed before the transaction locked that
    /// row. Without this, a session that got the lock the moment an own XA committed would
    /// read the applied seqno before the applier counted that commit, and abort.
    pub(crate) fn last_seen_under_locks(&self) -> Seqno {
        let committing = Seqno(self.shared.own_committing.load(Ordering::SeqCst));
        self.last_applied().max(committing)
    }

    /// The state-transfer state to report instead of Synced, if any: Joining or Joined while a
    /// snapshot arrives, loads and is caught up with, Donor while one is streamed to a peer.
    pub(crate) fn transfer_state(&self) -> Option<super::status::LocalState> {
        use super::status::LocalState;
        match self.shared.sst_phase.load(Ordering::SeqCst) {
            SST_JOINING | SST_LOADING => Some(LocalState::Joining),
            SST_JOINED => Some(LocalState::Joined),
            _ if (self.donor)() => Some(LocalState::Donor),
            _ => None,
        }
    }

    /// Whether a state transfer keeps this node from serving clients (Joining or Joined).
    pub(crate) fn joining(&self) -> bool {
        self.shared.sst_phase.load(Ordering::SeqCst) != SST_NONE
    }

    /// Snapshots loaded into the backend since start (state transfers received).
    pub(crate) fn sst_loads(&self) -> u64 {
        self.shared.sst_loads.load(Ordering::Relaxed)
    }

    /// Every state-transfer state this node went through, in order.
    pub(crate) fn transfer_history(&self) -> Vec<&'static str> {
        self.shared
            .sst_history
            .lock()
            .map(|h| h.clone())
            .unwrap_or_default()
    }

    /// This node's Raft view (log, snapshot and purge positions), when it can be read without
    /// waiting.
    pub(crate) fn replication_metrics(&self) -> Option<crate::replication::ReplicationMetrics> {
        let guard = self.replication.try_read().ok()?;
        Some(guard.as_ref()?.metrics())
    }

    /// Asks Raft to build a snapshot now (in the background).
    pub(crate) async fn trigger_snapshot(&self) -> Result<(), String> {
        match self.replication.read().await.as_ref() {
            Some(r) => r.trigger_snapshot().await,
            None => Err("replication is shutting down".into()),
        }
    }

    pub(crate) fn inconsistent(&self) -> Option<String> {
        self.shared.inconsistent.borrow().clone()
    }

    /// Makes the node Inconsistent (it stops serving) for a cause found outside the applier:
    /// a session saw a write escape replication. The first reason is kept.
    pub(crate) fn mark_inconsistent(&self, reason: String) {
        self.shared.mark_inconsistent(reason);
    }

    /// Follows the Inconsistent state (so that it can be made durable).
    pub(crate) fn watch_inconsistent(&self) -> watch::Receiver<Option<String>> {
        self.shared.inconsistent.subscribe()
    }

    /// Whether this node is in the Primary component (a leader with quorum), as last sampled.
    pub(crate) fn is_primary(&self) -> bool {
        self.primary.load(Ordering::Relaxed)
    }

    /// This node's membership and catch-up state, as last sampled.
    pub(crate) fn place(&self) -> Place {
        self.place.lock().map(|p| *p).unwrap_or_default()
    }

    /// Whether this node has caught up since it started (or joined) and may serve clients.
    pub(crate) fn is_synced(&self) -> bool {
        self.place().synced
    }

    /// A causal read (wsrep_sync_wait): waits until this backend reflects everything the
    /// cluster had committed when the read arrived. Err(()) when `timeout` passes first.
    pub(crate) async fn causal_wait(&self, timeout: Duration) -> Result<(), ()> {
        let wait = async {
            {
                let guard = self.replication.read().await;
                let r = guard.as_ref().ok_or(())?;
                let index = r.read_index().await.map_err(|_| ())?;
                // Raft applies entries in order, each proposal entry through the state machine
                // first: once the applied index reaches the read index, every write set up to
                // it has its seqno.
                if !r.wait_applied(index, timeout).await {
                    return Err(());
                }
            }
            self.applied_certified().await
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| ())?
    }

    /// Waits until the backend has applied every write set this node has certified so far
    /// (no cluster round trip: what this node knows of). Err(()) when the apply task is gone.
    pub(crate) async fn applied_certified(&self) -> Result<(), ()> {
        let target = self.shared.certified.borrow().1;
        let mut applied = self.shared.applied.subscribe();
        loop {
            if *applied.borrow_and_update() >= target {
                return Ok(());
            }
            applied.changed().await.map_err(|_| ())?;
        }
    }

    /// Whether the binlog reader is streaming: without it no write can be captured.
    pub(crate) fn capture_connected(&self) -> bool {
        self.capture.is_connected()
    }

    /// Raft's view for the status surfaces, when it can be read without waiting.
    pub(crate) fn raft_summary(&self) -> Option<RaftSummary> {
        let guard = self.replication.try_read().ok()?;
        let m = guard.as_ref()?.metrics();
        Some(RaftSummary {
            term: m.term,
            leader: m.leader.map(|l| l.0),
            voters: m.voters.iter().map(|v| v.0).collect(),
            membership_index: m.membership_index,
        })
    }

    /// A table's schema facts (engine, primary key, ...) from the catalog, for strict mode.
    pub(crate) async fn table_facts(
        &self,
        schema: &str,
        table: &str,
    ) -> Result<Option<Arc<Table>>, String> {
        let mut conn = LazyConn {
            pool: &self.pool,
            conn: None,
        };
        lookup(&self.catalog, &mut conn, schema, table).await
    }

    /// Stored-program bodies (procedures, triggers) for strict mode, from the catalog.
    pub(crate) async fn program_bodies(
        &self,
        kind: crate::catalog::Programs,
        schema: &str,
        name: &str,
    ) -> Result<crate::catalog::Bodies, String> {
        if let Some(b) = self.catalog.cached_programs(kind, schema, name) {
            return Ok(b);
        }
        let mut conn = LazyConn {
            pool: &self.pool,
            conn: None,
        };
        self.catalog
            .programs(conn.get().await?, kind, schema, name)
            .await
            .map_err(|e| format!("catalog: {e}"))
    }

    pub(crate) async fn take_group(&self, gtid: Gtid) -> Result<CapturedGroup, CaptureError> {
        self.capture.take(gtid, CAPTURE_TIMEOUT).await
    }

    /// Certification keys for a captured group (DESIGN §5), from the catalog's schema facts.
    /// Row images whose width is not the table's (a TOI changed it since they were written)
    /// are `SchemaChanged`, after one retry with a freshly loaded catalog.
    pub(crate) async fn keys_for(&self, group: &CapturedGroup) -> Result<Vec<Key>, KeysError> {
        match self.try_keys_for(group).await {
            Err(KeysError::SchemaChanged(_)) => {
                // The cache may hold a table loaded just before a TOI ran: reload and retry.
                self.catalog.invalidate_all();
                self.try_keys_for(group).await
            }
            other => other,
        }
    }

    async fn try_keys_for(&self, group: &CapturedGroup) -> Result<Vec<Key>, KeysError> {
        let other = KeysError::Other;
        // Cached tables need no connection: most commits take none from the pool.
        let mut conn = LazyConn {
            pool: &self.pool,
            conn: None,
        };
        let mut keys = Vec::new();
        let mut metas: HashMap<(String, String), TableMeta> = HashMap::new();
        for stmt in &group.statements {
            for row in &stmt.rows {
                let id = (row.schema.clone(), row.table.clone());
                if !metas.contains_key(&id) {
                    let table = lookup(&self.catalog, &mut conn, &row.schema, &row.table)
                        .await
                        .map_err(other)?
                        .ok_or_else(|| {
                            // Dropped or renamed by a TOI since the row was written.
                            KeysError::SchemaChanged(format!(
                                "table {}.{} is not in the catalog",
                                row.schema, row.table
                            ))
                        })?;
                    let meta = table_meta(&self.catalog, &mut conn, &table)
                        .await
                        .map_err(other)?;
                    metas.insert(id.clone(), meta);
                }
                let Some(meta) = metas.get(&id) else { continue };
                let table = self.catalog.get(&row.schema, &row.table);
                let change = row_change(row, table.as_deref()).map_err(other)?;
                writeset::row_keys(meta, &change, &mut keys).map_err(|e| match e {
                    writeset::KeyError::ImageWidth { .. } => {
                        KeysError::SchemaChanged(e.to_string())
                    }
                    e => other(format!("keys: {e}")),
                })?;
            }
        }
        writeset::normalize_keys(&mut keys);
        Ok(keys)
    }

    /// Orders `ws` through Raft and waits until this node's backend reflects its outcome.
    pub(crate) async fn submit(&self, ws: WriteSet) -> Result<Outcome, SubmitError> {
        let bytes = ws
            .encode()
            .map_err(|e| SubmitError::Definite(format!("encoding: {e}")))?;
        // Flow control: wait while a live node's apply queue is over fc_limit (DESIGN §10).
        let paused = self.flow.wait().await;
        if !paused.is_zero() {
            tracing::debug!(?paused, "writer paused by flow control");
        }
        let xid = ws.xid.0.clone();
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = self.shared.waiters.lock() {
            w.insert(xid.clone(), tx);
        }
        let forget = || {
            if let Ok(mut w) = self.shared.waiters.lock() {
                w.remove(&xid);
            }
        };
        let mut rx = rx;
        let timer = StageTimer::start();
        let proposed = match self.replication.read().await.as_ref() {
            Some(r) => {
                // The outcome can arrive before the proposal's own answer has travelled back
                // (0.1 ms after certification): whichever comes first.
                let propose = r.propose(bytes);
                tokio::pin!(propose);
                tokio::select! {
                    biased;
                    proposed = &mut propose => proposed,
                    outcome = &mut rx => {
                        timer.stop(&self.shared.latency, Stage::Propose);
                        self.shared.replicated.fetch_add(1, Ordering::Relaxed);
                        return match outcome {
                            Ok(outcome) => Ok(self.count_outcome(outcome)),
                            Err(_) => Err(SubmitError::Indeterminate("the outcome was lost".into())),
                        };
                    }
                }
            }
            None => Err(ProposeError::ShuttingDown),
        };
        if proposed.is_ok() {
            timer.stop(&self.shared.latency, Stage::Propose);
            self.shared.replicated.fetch_add(1, Ordering::Relaxed);
        }
        let timer = StageTimer::start();
        match proposed {
            Ok(_) => match tokio::time::timeout(OUTCOME_TIMEOUT, rx).await {
                Ok(Ok(outcome)) => {
                    timer.stop(&self.shared.latency, Stage::Outcome);
                    Ok(self.count_outcome(outcome))
                }
                _ => {
                    forget();
                    Err(SubmitError::Indeterminate(
                        "no outcome within the timeout".into(),
                    ))
                }
            },
            Err(ProposeError::Indeterminate(why)) => {
                match tokio::time::timeout(INDETERMINATE_GRACE, rx).await {
                    // The entry did commit after all, and this node has its outcome.
                    Ok(Ok(outcome)) => Ok(outcome),
                    _ => {
                        forget();
                        Err(SubmitError::Indeterminate(why))
                    }
                }
            }
            Err(e) => {
                forget();
                Err(SubmitError::Definite(e.to_string()))
            }
        }
    }

    /// Counts a local write set's outcome for the status surfaces.
    fn count_outcome(&self, outcome: Outcome) -> Outcome {
        match &outcome {
            Outcome::Committed { .. } => self.shared.local_commits.fetch_add(1, Ordering::Relaxed),
            Outcome::Aborted { .. } => self.shared.cert_failures.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        outcome
    }

    /// Tells the other members this node is stopping cleanly; true when it is the last to leave.
    pub(crate) async fn announce_leaving(&self) -> bool {
        match self.replication.read().await.as_ref() {
            Some(r) => r.announce_leaving(Duration::from_secs(2)).await,
            None => false,
        }
    }

    pub(crate) async fn shutdown(&self) {
        self.sync_task.abort();
        if let Some(r) = self.replication.write().await.take() {
            r.shutdown().await;
        }
        self.capture.stop();
        self.apply_task.abort();
        self.primary_task.abort();
        self.progress_task.abort();
    }
}

/// Resolves the prepared XA transactions that outlived their sessions on this backend (only
/// those with this node's xid prefix). The one `certus.state` names as `origin_xid` was claimed
/// for commit at `applied_seqno` before a crash or a lost connection stopped its `XA COMMIT`:
/// it is committed. Every other one is rolled back: its write set, if certification commits it,
/// is replayed from the log like any other. A prepared XA still attached to a live session
/// refuses both with XAER_NOTA (1397) and is left to its session.
///
/// While the node runs, `prepared` (the sessions' registry) decides first: an XA the applier
/// claimed for commit is committed, one a live session still holds is asked to roll back.
///
/// `only` limits it to the xids named (the sweep's orphans, which no session holds).
async fn resolve_orphaned_xa(
    pool: &mysql_async::Pool,
    node: NodeId,
    prepared: Option<&super::prepared::PreparedRegistry>,
    only: Option<&[String]>,
) -> Result<usize, String> {
    use mysql_async::prelude::Queryable;
    let mut conn = pool
        .get_conn()
        .await
        .map_err(|e| format!("XA RECOVER: {e}"))?;
    let claimed = crate::apply::recorded_xids(&mut conn)
        .await
        .map_err(|e| format!("reading certus.state: {e}"))?;
    let gtrids = crate::apply::prepared_gtrids(&mut conn)
        .await
        .map_err(|e| format!("XA RECOVER: {e}"))?;
    let mut resolved = 0;
    for gtrid in gtrids {
        let Some(xid) = own_xid(&gtrid, node) else {
            continue;
        };
        if only.is_some_and(|o| !o.contains(&xid)) {
            continue;
        }
        let registered = prepared.and_then(|r| r.get(&xid));
        let commit =
            claimed.contains(&xid) || registered.as_ref().is_some_and(|xa| xa.commit_claimed());
        if !commit {
            if let Some(xa) = &registered {
                if let super::prepared::Release::Asked(_) = super::prepared::ask_rollback(xa) {
                    // Its session is alive and rolls it back itself.
                    continue;
                }
            }
        }
        let verb = if commit { "COMMIT" } else { "ROLLBACK" };
        // At start-up every session of this node is gone, but the backend may not have seen all
        // of their connections close yet: an XA still attached to one answers 1397. Skipping a
        // named XA there would leave its write set, whose seqno is recorded as applied, out of
        // this backend for good; so start-up waits for the detach (and refuses to start
        // without it). A running node leaves attached XAs to their sessions.
        let attempts = if prepared.is_none() {
            ATTACHED_AT_START_ATTEMPTS
        } else {
            1
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            match conn.query_drop(format!("XA {verb} '{xid}'")).await {
                Ok(()) => {
                    warn!(%xid, "XA {verb} of a prepared XA transaction whose session is gone");
                    resolved += 1;
                }
                Err(mysql_async::Error::Server(e)) if e.code == 1397 && attempt < attempts => {
                    tokio::time::sleep(DETACH_POLL).await;
                    continue;
                }
                Err(e) if commit && prepared.is_none() => {
                    return Err(format!(
                        "XA COMMIT of {xid}, which certus.state records as committed, failed: {e}"
                    ));
                }
                Err(e) => tracing::debug!(%xid, "prepared XA left alone: {e}"),
            }
            break;
        }
    }
    Ok(resolved)
}

/// `gtrid` as an xid when it is one of this node's sessions' (`certus_<node>_<hex>`).
fn own_xid(gtrid: &[u8], node: NodeId) -> Option<String> {
    let prefix = format!("certus_{}_", node.0);
    let own = gtrid.starts_with(prefix.as_bytes())
        && gtrid
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_');
    own.then(|| String::from_utf8_lossy(gtrid).into_owned())
}

/// How often start-up retries an XA still attached to a connection of the node's previous
/// run (every DETACH_POLL: 10 s).
const ATTACHED_AT_START_ATTEMPTS: u32 = 500;

/// Resolves orphaned prepared XA transactions whenever the backend comes back up: a backend
/// killed while a session's XA was prepared restores that XA at its restart.
async fn watch_backend_restarts(
    mut health: watch::Receiver<crate::backend::Health>,
    pool: mysql_async::Pool,
    node: NodeId,
    shared: Arc<Shared>,
) {
    while health.changed().await.is_ok() {
        if *health.borrow_and_update() == crate::backend::Health::Up {
            if let Err(e) = resolve_orphaned_xa(&pool, node, Some(&shared.prepared), None).await {
                warn!("after a backend restart: {e}");
            }
        }
    }
}

/// How often the node looks for orphaned prepared XAs of its own.
const ORPHAN_SWEEP: Duration = Duration::from_millis(200);

/// Resolves this node's prepared XAs that no session holds and that stay prepared from one
/// sweep to the next. A brute-force abort can kill a session's connection just after its
/// pipelined `XA PREPARE` and before it registered the XA or submitted its write set: the XA
/// survives without a connection, row locks and all. The applier's watchdog resolves such an
/// orphan when the applier waits for it, but until something replicated needs its rows, local
/// clients that do would wait out `innodb_lock_wait_timeout` (1205 after 50 s; seen in CI).
///
/// Found with `XA RECOVER`, not the `INNODB_TRX` tables: their cache refreshes only after
/// 100 ms without a reader, and a second poller would starve the watchdog of fresh data.
/// An XA seen unregistered once may be between its `XA PREPARE` and its registration (still
/// attached: `XA ROLLBACK` from here answers 1397 and it is left alone); seen twice, 200 ms
/// apart, it is an orphan. [`resolve_orphaned_xa`] decides as at start-up: committed if
/// `certus.state` names it, rolled back otherwise, so the sweep loses nothing.
async fn sweep_orphans(pool: mysql_async::Pool, node: NodeId, shared: Arc<Shared>) {
    let mut suspects: HashSet<String> = HashSet::new();
    loop {
        tokio::time::sleep(ORPHAN_SWEEP).await;
        let Ok(mut conn) = pool.get_conn().await else {
            continue;
        };
        let Ok(gtrids) = crate::apply::prepared_gtrids(&mut conn).await else {
            continue;
        };
        drop(conn);
        let unregistered: HashSet<String> = gtrids
            .iter()
            .filter_map(|g| own_xid(g, node))
            .filter(|xid| shared.prepared.get(xid).is_none())
            .collect();
        let stuck: Vec<String> = unregistered.intersection(&suspects).cloned().collect();
        suspects = unregistered;
        if stuck.is_empty() {
            continue;
        }
        match resolve_orphaned_xa(&pool, node, Some(&shared.prepared), Some(&stuck)).await {
            Ok(n) if n > 0 => info!(resolved = n, "resolved orphaned prepared XAs"),
            Ok(_) => {}
            Err(e) => warn!("orphaned prepared XAs: {e}"),
        }
    }
}

/// A backend connection taken from the pool only when the catalog must load something.
struct LazyConn<'a> {
    pool: &'a mysql_async::Pool,
    conn: Option<mysql_async::Conn>,
}

impl LazyConn<'_> {
    async fn get(&mut self) -> Result<&mut mysql_async::Conn, String> {
        if self.conn.is_none() {
            let c = self
                .pool
                .get_conn()
                .await
                .map_err(|e| format!("catalog: {e}"))?;
            self.conn = Some(c);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| "catalog: no connection".to_string())
    }
}

/// A table's facts from the catalog's cache, or loaded through `conn`.
async fn lookup(
    catalog: &Catalog,
    conn: &mut LazyConn<'_>,
    schema: &str,
    table: &str,
) -> Result<Option<Arc<Table>>, String> {
    if let Some(t) = catalog.get(schema, table) {
        return Ok(Some(t));
    }
    catalog
        .table(conn.get().await?, schema, table)
        .await
        .map_err(|e| format!("catalog: {e}"))
}

/// Converts the catalog's facts into the key derivation's table description.
async fn table_meta(
    catalog: &Catalog,
    conn: &mut LazyConn<'_>,
    t: &Table,
) -> Result<TableMeta, String> {
    let index = |ix: &crate::catalog::UniqueIndex| IndexMeta {
        name: ix.name.clone(),
        columns: ix
            .columns
            .iter()
            .map(|(pos, prefix)| IndexColumn {
                position: *pos,
                prefix: prefix.map(|p| p as u32),
            })
            .collect(),
    };
    let mut foreign_keys = Vec::new();
    for fk in &t.foreign_keys {
        let parent = lookup(catalog, conn, &fk.parent_schema, &fk.parent_table).await?;
        // A foreign key to a non-unique parent index is keyed on its column list, which the
        // parent side does not produce: such a pair is not certified (documented limitation).
        let parent_index = parent
            .as_deref()
            .and_then(|p| p.unique_index_on(&fk.parent_columns).map(str::to_owned))
            .unwrap_or_else(|| format!("fk-columns:{}", fk.parent_columns.join(",")));
        foreign_keys.push(ForeignKeyMeta {
            columns: fk.columns.clone(),
            parent_schema: fk.parent_schema.clone(),
            parent_table: fk.parent_table.clone(),
            parent_index,
        });
    }
    Ok(TableMeta {
        schema: t.schema.clone(),
        table: t.name.clone(),
        columns: t.columns.iter().map(|c| c.name.clone()).collect(),
        primary_key: t.primary_key.as_ref().map(|pk| index(pk).columns),
        unique_keys: t.unique_keys.iter().map(index).collect(),
        referenced_indexes: Vec::new(),
        foreign_keys,
    })
}

fn cell(value: &mysql_async::Value, collation: Option<&str>) -> CellValue {
    use mysql_async::Value as V;
    match value {
        V::NULL => CellValue::Null,
        V::Int(i) => CellValue::Int(i128::from(*i)),
        V::UInt(u) => CellValue::Int(i128::from(*u)),
        V::Float(f) => CellValue::Float(f64::from(*f)),
        V::Double(d) => CellValue::Float(*d),
        V::Bytes(b) => match collation {
            Some(c) => CellValue::Text {
                bytes: b.clone(),
                collation: Collation::from_name(c),
            },
            None => CellValue::Bytes(b.clone()),
        },
        V::Date(..) | V::Time(..) => {
            CellValue::Temporal(value.as_sql(true).trim_matches('\'').to_owned())
        }
    }
}

fn row_change(row: &crate::capture::RowChange, table: Option<&Table>) -> Result<RowChange, String> {
    let image =
        |cols: &Option<Vec<crate::capture::ColumnValue>>| -> Result<Vec<CellValue>, String> {
            let cols = cols.as_ref().ok_or("row image missing")?;
            Ok(cols
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let collation = table
                        .and_then(|t| t.columns.get(i))
                        .and_then(|c| c.collation.as_deref());
                    cell(&c.value, collation)
                })
                .collect())
        };
    Ok(match row.kind {
        RowKind::Insert => RowChange::Insert {
            after: image(&row.after)?,
        },
        RowKind::Update => RowChange::Update {
            before: image(&row.before)?,
            after: image(&row.after)?,
        },
        RowKind::Delete => RowChange::Delete {
            before: image(&row.before)?,
        },
    })
}

/// Finds the local transactions that block the applier and kills those that are ordinary
/// client transactions not yet committing (brute-force abort, DESIGN §7). A transaction in its
/// commit step is never killed (a prepared XA survives its connection, locks and all): if it
/// waits prepared for its seqno, its session is asked to roll it back.
async fn brute_force_abort(
    pool: &mysql_async::Pool,
    node: NodeId,
    applier_thread: u32,
    registry: &Registry,
    shared: &Shared,
) {
    use mysql_async::prelude::Queryable;
    let Ok(mut conn) = pool.get_conn().await else {
        return;
    };
    let blockers: Vec<u64> = conn
        .exec(
            "SELECT b.trx_mysql_thread_id FROM information_schema.INNODB_LOCK_WAITS w \
             JOIN information_schema.INNODB_TRX b ON b.trx_id = w.blocking_trx_id \
             JOIN information_schema.INNODB_TRX r ON r.trx_id = w.requesting_trx_id \
             WHERE r.trx_mysql_thread_id = ?",
            (applier_thread,),
        )
        .await
        .unwrap_or_default();
    for thread in blockers {
        if thread == 0 {
            // A prepared XA without a connection: a session's, orphaned by a backend crash.
            if let Err(e) = resolve_orphaned_xa(pool, node, Some(&shared.prepared), None).await {
                warn!("the applier waits for an orphaned prepared XA: {e}");
            }
            continue;
        }
        let Ok(thread) = u32::try_from(thread) else {
            continue;
        };
        match registry.mark_bf_victim(thread) {
            Some(true) => {
                shared.bf_aborts.fetch_add(1, Ordering::Relaxed);
                info!(
                    thread,
                    "brute-force aborting a local transaction that blocks the applier"
                );
                let _ = conn.query_drop(format!("KILL CONNECTION {thread}")).await;
            }
            Some(false) => {
                // Committing: if its XA waits prepared for a later seqno, it holds its locks
                // until then; it is rolled back (and replayed if certification commits it).
                if let Some(xa) = shared.prepared.by_thread(thread) {
                    if let super::prepared::Release::Asked(_) = super::prepared::ask_rollback(&xa) {
                        shared.bf_aborts.fetch_add(1, Ordering::Relaxed);
                        info!(
                            thread,
                            "rolling back a prepared local transaction that blocks the applier"
                        );
                    }
                }
            }
            None => warn!(
                thread,
                "the applier waits for a backend thread that is not a certus session"
            ),
        }
    }
}

/// How often the applier looks for what blocks it while a statement waits.
const WATCH: Duration = Duration::from_millis(25);

/// The least time between two reads of `INNODB_LOCK_WAITS` by the watchdog. InnoDB refreshes
/// the cache behind its `INNODB_TRX`, `INNODB_LOCKS` and `INNODB_LOCK_WAITS` tables only when
/// nobody has read it for 100 ms: polled every 25 ms, the watchdog saw the state of its first
/// read for as long as the wait lasted, and a lock wait that began less than 100 ms after an
/// earlier probe was never seen at all (the applier stayed blocked behind an open client
/// transaction until the client ended it). Measured on MariaDB 10.11: a poller every 25 ms
/// saw none of 116 reads during a 1.3 s wait; every 150 ms, 9 of 20.
const LOCK_PROBE_GAP: Duration = Duration::from_millis(120);

/// After this many watch periods of waiting, every prepared XA of this node is rolled back,
/// whatever its keys: what blocks the applier may be a lock no key names (a gap, a foreign
/// key check), and the watchdog's view of `INNODB_TRX` lags (see [`LOCK_PROBE_GAP`]).
const RELEASE_ALL_AFTER: u32 = 4;

/// While the applier waits: asks the sessions whose prepared XAs conflict with `keys` to roll
/// them back (a session may have prepared after the apply began, its statement having been
/// granted the lock first), and every prepared XA once the wait has lasted. Every prepared XA
/// still registered comes later in the log than what the applier applies, so rolling it back
/// loses nothing: certification aborts it, or the applier replays it.
fn release_late_prepared(shared: &Shared, keys: Option<&[Key]>, ticks: u32) {
    let keys = if ticks >= RELEASE_ALL_AFTER {
        None
    } else {
        keys
    };
    let asked = ask_release(shared, keys).len();
    if asked > 0 {
        tracing::debug!(
            asked,
            "rolling back prepared local transactions the applier waits for"
        );
    }
}

/// Asks the sessions whose prepared XAs conflict with `keys` (every one for `None`) to roll
/// them back, counted as brute-force aborts; their answers.
fn ask_release(shared: &Shared, keys: Option<&[Key]>) -> Vec<oneshot::Receiver<()>> {
    let answers = shared.prepared.release_conflicting(keys);
    shared
        .bf_aborts
        .fetch_add(answers.len() as u64, Ordering::Relaxed);
    answers
}

/// What the apply task owns.
struct ApplyCtx {
    node: NodeId,
    applier: Applier,
    /// To reconnect the applier after the backend restarts.
    opts: mysql_async::Opts,
    tagging: crate::apply::Tagging,
    fd: Arc<[u8]>,
    shared: Arc<Shared>,
    catalog: Catalog,
    pool: mysql_async::Pool,
    registry: Arc<Registry>,
    progress: Arc<super::progress::Progress>,
    sst: super::sst::SstBackend,
    /// When the watchdog last read the lock tables (see [`LOCK_PROBE_GAP`]).
    last_lock_probe: Option<tokio::time::Instant>,
}

/// How the apply of one write set ended.
enum Applied {
    Done,
    /// The backend refused a statement: the node must stop (or, for a TOI, every node refuses).
    Refused(ApplyError),
}

impl ApplyCtx {
    /// Loads a snapshot into the backend unless the backend already holds its seqno. Returns
    /// the backend's applied seqno after a load.
    async fn load(&mut self, file: std::fs::File, seqno: Seqno) -> Result<Option<Seqno>, String> {
        let have = super::sst::backend_applied(&self.sst).await?;
        if have >= seqno {
            info!(%have, snapshot = %seqno, "the backend already holds the snapshot; no load");
            return Ok(None);
        }
        self.shared.set_sst_phase(SST_LOADING);
        info!(%have, snapshot = %seqno, "loading a snapshot into the backend (SST)");
        let (header, applied) = super::sst::load_snapshot(file, &self.sst).await?;
        self.catalog.invalidate_all();
        self.shared.sst_loads.fetch_add(1, Ordering::Relaxed);
        info!(index = header.index, %applied, "snapshot loaded");
        self.shared.set_sst_phase(SST_JOINED);
        Ok(Some(applied))
    }

    async fn apply_rows(
        &mut self,
        seqno: Seqno,
        statements: &[Vec<u8>],
        keys: &[Key],
    ) -> Result<(), ApplyError> {
        let thread = self.applier.thread_id();
        let shared = self.shared.clone();
        let mut registered = std::pin::pin!(shared.prepared.next_registration());
        let apply = self.applier.apply(seqno, statements);
        tokio::pin!(apply);
        // The first check is one period away. Awaiting an interval's immediate first tick is
        // not free: tokio rounds timer deadlines up to its next millisecond tick, and that
        // wait was most of the apply stage (1.6 ms of 1.9 ms at p50 in bench/commit_path.sh).
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + WATCH, WATCH);
        let mut ticks = 0u32;
        loop {
            tokio::select! {
                r = &mut apply => return r,
                () = &mut registered => {
                    // A local transaction prepared while the applier waits: it may hold the
                    // lock (granted ahead of the applier); if its keys conflict, it goes now.
                    registered.set(shared.prepared.next_registration());
                    release_late_prepared(&shared, Some(keys), 0);
                }
                _ = tick.tick() => {
                    ticks += 1;
                    release_late_prepared(&self.shared, Some(keys), ticks);
                    if self.last_lock_probe.is_none_or(|at| at.elapsed() >= LOCK_PROBE_GAP) {
                        self.last_lock_probe = Some(tokio::time::Instant::now());
                        brute_force_abort(&self.pool, self.node, thread, &self.registry, &self.shared).await;
                    }
                }
            }
        }
    }

    /// Asks the sessions whose prepared XAs could hold locks this work needs to roll them back,
    /// and waits (bounded) until they have. `keys` is None for a TOI or a snapshot load, which
    /// need every table's metadata lock. What still blocks after that is the watchdog's.
    async fn release_prepared(&self, keys: Option<&[Key]>) {
        let answers = ask_release(&self.shared, keys);
        let deadline = tokio::time::Instant::now() + RELEASE_WAIT;
        for answer in answers {
            let _ = tokio::time::timeout_at(deadline, answer).await;
        }
    }

    /// Commits the origin sessions' own prepared XAs at their seqnos instead of replaying
    /// their row events (DESIGN §7), `last` being the last seqno of the run they belong to:
    /// first the seqno and the xids go into `certus.state`, so that a crash before the commits
    /// leaves XAs that start-up commits; then every session, whose connection owns its XA,
    /// runs `XA COMMIT`, all at once (they hold their locks side by side, so they cannot
    /// conflict). If a session is gone, the applier commits its XA once it is detached.
    async fn commit_own(&mut self, last: Seqno, own: &[OwnCommit]) -> Applied {
        let mut recorded = false;
        loop {
            let result = if recorded {
                self.commit_all_detached(own).await
            } else {
                self.record_and_commit(last, own).await
            };
            match result {
                Ok(()) => return Applied::Done,
                Err(ApplyError::Connection { message, during }) => {
                    warn!(seqno = %last, "applier lost the backend during {during}: {message}");
                    recorded = self.reconnect(last).await;
                }
                Err(e) => return Applied::Refused(e),
            }
        }
    }

    async fn record_and_commit(
        &mut self,
        last: Seqno,
        own: &[OwnCommit],
    ) -> Result<(), ApplyError> {
        let xids: Vec<&str> = own.iter().map(|o| o.xid.as_str()).collect();
        self.applier.record_origin_commits(last, &xids).await?;
        let asked: Vec<_> = own
            .iter()
            .map(|o| {
                let (done, rx) = oneshot::channel();
                (o, o.xa.ask(XaRequest::Commit { done }).then_some(rx))
            })
            .collect();
        let deadline = tokio::time::Instant::now() + SESSION_COMMIT_WAIT;
        for (o, answer) in asked {
            if let Some(answer) = answer {
                match tokio::time::timeout_at(deadline, answer).await {
                    Ok(Ok(Ok(()))) => continue,
                    Ok(Ok(Err(message))) => return Err(ApplyError::OriginCommit(message)),
                    Ok(Err(_)) | Err(_) => warn!(
                        seqno = %o.seqno, xid = %o.xid,
                        "the origin session did not commit its XA; the applier does"
                    ),
                }
            }
            self.commit_detached(&o.xid).await?;
        }
        Ok(())
    }

    async fn commit_all_detached(&mut self, own: &[OwnCommit]) -> Result<(), ApplyError> {
        for o in own {
            self.commit_detached(&o.xid).await?;
        }
        Ok(())
    }

    /// Commits `xid` from the applier's connection once no session owns it. An XA claimed for
    /// commit is never rolled back by anyone, so once it is no longer prepared it committed.
    async fn commit_detached(&mut self, xid: &str) -> Result<(), ApplyError> {
        for _ in 0..DETACH_ATTEMPTS {
            if !self.applier.xa_prepared(xid).await? {
                return Ok(());
            }
            match self.applier.xa_commit(xid).await {
                Err(ApplyError::Backend { code: 1397, .. }) => {
                    tokio::time::sleep(DETACH_POLL).await;
                }
                other => return other,
            }
        }
        Err(ApplyError::OriginCommit(format!(
            "{xid} stayed attached to a session connection"
        )))
    }

    /// Reconnects until the backend answers (its supervisor restarts it), then reports whether
    /// `seqno` had already committed: the applied seqno lives in the same transaction as the
    /// data, so the answer is exact and nothing is applied twice.
    async fn reconnect(&mut self, seqno: Seqno) -> bool {
        let mut backoff = Duration::from_millis(100);
        loop {
            match Applier::connect(self.opts.clone(), self.tagging, self.fd.clone()).await {
                Ok(mut a) => match a.applied_seqno().await {
                    Ok(applied) => {
                        self.applier = a;
                        info!(%seqno, %applied, "applier reconnected to the backend");
                        return applied >= seqno;
                    }
                    Err(e) => warn!("applier reconnected but cannot read its seqno: {e}"),
                },
                Err(e) => warn!("applier cannot reach the backend yet: {e}"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// Applies one committed write set, surviving backend restarts.
    async fn apply(&mut self, seqno: Seqno, work: &Work, keys: &[Key]) -> Applied {
        let mut deadlocks = 0;
        loop {
            let result = match work {
                Work::Aborted | Work::Load(_) => return Applied::Done,
                Work::Rows(statements) => self.apply_rows(seqno, statements, keys).await,
                Work::Toi(cmd) => {
                    let ctx = TOIContext {
                        db: cmd.context.current_schema.clone(),
                        sql_mode: cmd.context.sql_mode.clone(),
                        character_set_client: cmd.context.character_set_client.clone(),
                        collation_connection: cmd.context.collation_connection.clone(),
                        character_set_results: cmd.context.character_set_results.clone(),
                        foreign_key_checks: cmd.context.foreign_key_checks,
                        time_zone: cmd.context.time_zone.clone(),
                    };
                    let sql = String::from_utf8_lossy(&cmd.statement).into_owned();
                    let toi = self.applier.apply_toi(seqno, &ctx, &sql);
                    tokio::pin!(toi);
                    let mut tick =
                        tokio::time::interval_at(tokio::time::Instant::now() + WATCH, WATCH);
                    // A TOI waits for metadata locks, which a prepared XA keeps: any one
                    // that registered since is rolled back too.
                    let r = loop {
                        tokio::select! {
                            r = &mut toi => break r,
                            _ = tick.tick() => release_late_prepared(&self.shared, None, RELEASE_ALL_AFTER),
                        }
                    };
                    self.catalog.invalidate_all();
                    r
                }
            };
            match result {
                Ok(()) => return Applied::Done,
                Err(ApplyError::Connection { message, during }) => {
                    warn!(%seqno, "applier lost the backend during {during}: {message}");
                    if self.reconnect(seqno).await {
                        return Applied::Done;
                    }
                }
                // InnoDB may pick the applier as the victim of a deadlock with a local client
                // transaction (or time it out): the applier's transaction was rolled back, so
                // run it again; meanwhile the brute-force watchdog kills the local blocker.
                Err(ApplyError::Backend {
                    code: 1213 | 1205, ..
                }) if deadlocks < MAX_APPLY_RETRIES => {
                    deadlocks += 1;
                    warn!(%seqno, attempt = deadlocks, "the applier lost a lock conflict; applying again");
                    tokio::time::sleep(Duration::from_millis(10 * deadlocks)).await;
                }
                Err(e) => return Applied::Refused(e),
            }
        }
    }
}

/// How long the applier waits for sessions to roll back prepared XAs that conflict with what it
/// applies next (the watchdog deals with any that do not).
const RELEASE_WAIT: Duration = Duration::from_secs(2);

/// How long the applier waits for an origin session to commit its own XA before it commits
/// the XA itself (once the session's connection lets go of it).
const SESSION_COMMIT_WAIT: Duration = Duration::from_secs(10);
const DETACH_POLL: Duration = Duration::from_millis(20);
const DETACH_ATTEMPTS: u32 = 500;

/// How often an apply that lost a deadlock to a local transaction is retried before the node
/// gives up and becomes Inconsistent.
const MAX_APPLY_RETRIES: u64 = 100;

/// How often a Joining or Joined node checks whether it has caught up.
const SYNC_CHECK: Duration = Duration::from_millis(100);

/// Drives Joining -> Joined -> Synced (DESIGN §10): a node is Joining until its state machine
/// has applied the leader's commit index (read index) as of the check, including any snapshot
/// it had to receive, Joined until its backend has applied every write set certified by then,
/// then Synced. A node starts Joining, and becomes Joining again when a snapshot arrives.
async fn sync_monitor(
    replication: Arc<tokio::sync::RwLock<Option<Replication>>>,
    shared: Arc<Shared>,
) {
    // What the backend must reach to be Synced: the seqno certified when it became Joined (a
    // node under steady load would never see an empty queue).
    let mut joined_target: Option<Seqno> = None;
    loop {
        tokio::time::sleep(SYNC_CHECK).await;
        let phase = shared.sst_phase.load(Ordering::SeqCst);
        if phase != SST_JOINED {
            joined_target = None;
        }
        if phase == SST_NONE || phase == SST_LOADING {
            continue;
        }
        let caught_up = {
            let guard = replication.read().await;
            let Some(r) = guard.as_ref() else { return };
            match tokio::time::timeout(Duration::from_secs(2), r.read_index()).await {
                Ok(Ok(index)) => {
                    r.metrics().is_primary
                        && r.wait_applied(index, Duration::from_millis(500)).await
                }
                _ => false,
            }
        };
        if !caught_up {
            continue;
        }
        if phase == SST_JOINING {
            shared.advance_sst_phase(SST_JOINING, SST_JOINED);
            continue;
        }
        let target = *joined_target.get_or_insert_with(|| shared.certified.borrow().1);
        if *shared.applied.borrow() >= target {
            shared.advance_sst_phase(SST_JOINED, SST_NONE);
        }
    }
}

/// At most this many queued write sets, or this many bytes of row events, are applied in one
/// backend transaction when the applier has a backlog (IST replay after a restart, or a burst).
const GROUP_MAX_WRITE_SETS: usize = 256;
const GROUP_MAX_BYTES: usize = 8 * 1024 * 1024;

async fn apply_loop(
    mut rx: mpsc::UnboundedReceiver<ApplyItem>,
    mut ctx: ApplyCtx,
    start_applied: Seqno,
) {
    let mut failed: Option<String> = None;
    let shared = ctx.shared.clone();
    let mut skip_upto = start_applied;
    // An item taken from the queue while gathering a group, to process next.
    let mut carry: Option<ApplyItem> = None;
    loop {
        let item = match carry.take() {
            Some(item) => item,
            None => match rx.recv().await {
                Some(item) => dequeued(&shared, item),
                None => break,
            },
        };
        if failed.is_none() {
            // The progress exchange may have found this node's TOI result to be a minority one.
            failed = shared.inconsistent.borrow().clone();
        }
        if failed.is_some() {
            apply_one(&mut ctx, item, &mut failed).await;
            continue;
        }
        let seqno = item.seqno;
        if let Work::Load(file) = item.work {
            ctx.release_prepared(None).await;
            match ctx.load(file, seqno).await {
                Ok(Some(applied)) => {
                    skip_upto = applied;
                    shared.applied.send_replace(applied.max(seqno));
                    shared.applied_index.store(item.index, Ordering::Relaxed);
                }
                Ok(None) => {}
                Err(e) => {
                    shared.apply_failed(&mut failed, format!("state transfer failed: {e}"));
                }
            }
            continue;
        }
        if seqno <= skip_upto {
            // Replayed from the log after a restart or covered by a loaded snapshot: the
            // backend already has it.
            if seqno > *shared.applied.borrow() {
                shared.applied.send_replace(seqno);
            }
            shared
                .applied_index
                .store(item.index.saturating_sub(1), Ordering::Relaxed);
            continue;
        }
        // Write sets whose origin sessions hold their XAs here are committed by those sessions:
        // a run of them that is queued already commits together.
        if let Some((own, share)) = claim_own_run(&shared, &item) {
            let mut run = vec![item];
            let mut owns = vec![own];
            while owns.len() < OWN_RUN_MAX {
                let Ok(next) = rx.try_recv() else { break };
                let next = dequeued(&shared, next);
                if next.seqno > skip_upto {
                    if let Some(own) = claim_own(&shared, &next, &share) {
                        owns.push(own);
                        run.push(next);
                        continue;
                    }
                    if matches!(next.work, Work::Aborted) {
                        run.push(next);
                        continue;
                    }
                }
                carry = Some(next);
                break;
            }
            commit_own_run(&mut ctx, run, owns, share, &mut failed).await;
            continue;
        }
        if !matches!(item.work, Work::Rows(_)) || shared.prepared.holds(item.origin_xid.as_deref())
        {
            apply_one(&mut ctx, item, &mut failed).await;
            continue;
        }
        // A backlog of row write sets is applied as one backend transaction (one commit
        // instead of one per write set): what makes IST fast. Without a backlog the group is
        // the one write set, so latency is unchanged.
        let mut group = vec![item];
        let mut bytes = 0;
        while group.len() < GROUP_MAX_WRITE_SETS && bytes < GROUP_MAX_BYTES {
            let Ok(next) = rx.try_recv() else { break };
            let next = dequeued(&shared, next);
            match &next.work {
                Work::Rows(stmts)
                    if next.seqno > skip_upto
                        && !shared.prepared.holds(next.origin_xid.as_deref()) =>
                {
                    bytes += stmts.iter().map(Vec::len).sum::<usize>();
                    group.push(next);
                }
                Work::Aborted if next.seqno > skip_upto => group.push(next),
                _ => {
                    carry = Some(next);
                    break;
                }
            }
        }
        if group.len() == 1 {
            for item in group {
                apply_one(&mut ctx, item, &mut failed).await;
            }
        } else {
            apply_group(&mut ctx, group, &mut failed).await;
        }
    }
}

/// Counts an item out of the apply queue.
fn dequeued(shared: &Shared, item: ApplyItem) -> ApplyItem {
    shared.queued.fetch_sub(1, Ordering::Relaxed);
    shared
        .latency
        .observe(Stage::ApplyQueue, item.queued_at.elapsed());
    item
}

/// The most own XAs committed as one run (their xids share `certus.state.origin_xid`).
const OWN_RUN_MAX: usize = 48;

/// Commits a run of consecutive write sets that need no replay here: this node's own prepared
/// XAs (`own`, claimed for commit) and aborted write sets. One `certus.state` record for the
/// run, then every session's `XA COMMIT` at once, all while holding `_share` of the
/// [`OwnCommitGate`] (released when this returns).
async fn commit_own_run(
    ctx: &mut ApplyCtx,
    run: Vec<ApplyItem>,
    own: Vec<OwnCommit>,
    _share: OwnCommitShare,
    failed: &mut Option<String>,
) {
    let Some((last, index)) = run.last().map(|i| (i.seqno, i.index)) else {
        return;
    };
    let shared = ctx.shared.clone();
    let timer = StageTimer::start();
    // Every seqno before the run is applied, and each XA in it is claimed and holds its locks.
    shared.own_committing.fetch_max(last.0, Ordering::SeqCst);
    let applied = ctx.commit_own(last, &own).await;
    for o in &own {
        shared.prepared.remove(&o.xid);
    }
    timer.stop(&shared.latency, Stage::Apply);
    let failure = match applied {
        Applied::Done => None,
        Applied::Refused(e) => Some(shared.apply_failed(
            failed,
            format!("committing this node's own XAs up to seqno {last} failed: {e}"),
        )),
    };
    shared.applied.send_replace(last);
    shared
        .applied_index
        .store(index.saturating_sub(1), Ordering::Relaxed);
    for item in run {
        let seqno = item.seqno;
        let outcome = match (&item.work, &failure) {
            (Work::Aborted, _) => Outcome::Aborted { seqno },
            (_, None) => Outcome::Committed { seqno },
            (_, Some(reason)) => Outcome::NodeFailed(reason.clone()),
        };
        shared.notify(item.origin_xid.as_deref(), outcome);
    }
}

/// Applies consecutive row (and aborted) write sets in one backend transaction whose applied
/// seqno is the last one's: all or nothing, so still exactly once. If the backend refuses the
/// group, the write sets are applied one by one, so the failing one is found and reported
/// exactly as without grouping.
async fn apply_group(ctx: &mut ApplyCtx, group: Vec<ApplyItem>, failed: &mut Option<String>) {
    let Some(last) = group.last().map(|i| (i.seqno, i.index)) else {
        return;
    };
    let statements: Vec<Vec<u8>> = group
        .iter()
        .flat_map(|i| match &i.work {
            Work::Rows(stmts) => stmts.clone(),
            _ => Vec::new(),
        })
        .collect();
    let keys: Vec<Key> = group
        .iter()
        .filter(|i| matches!(i.work, Work::Rows(_)))
        .flat_map(|i| i.keys.iter().copied())
        .collect();
    ctx.release_prepared(Some(&keys)).await;
    let timer = StageTimer::start();
    match ctx.apply(last.0, &Work::Rows(statements), &keys).await {
        Applied::Done => {
            timer.stop(&ctx.shared.latency, Stage::Apply);
            let shared = ctx.shared.clone();
            shared.applied.send_replace(last.0);
            shared
                .applied_index
                .store(last.1.saturating_sub(1), Ordering::Relaxed);
            for item in group {
                let seqno = item.seqno;
                let outcome = match item.work {
                    Work::Aborted => Outcome::Aborted { seqno },
                    _ => Outcome::Committed { seqno },
                };
                shared.notify(item.origin_xid.as_deref(), outcome);
            }
        }
        Applied::Refused(e) => {
            warn!(
                write_sets = group.len(),
                "a grouped apply failed ({e}); applying its write sets one by one"
            );
            for item in group {
                apply_one(ctx, item, failed).await;
            }
        }
    }
}

/// Applies one write set or TOI and tells its origin session the outcome.
async fn apply_one(ctx: &mut ApplyCtx, item: ApplyItem, failed: &mut Option<String>) {
    let shared = ctx.shared.clone();
    let xid = item.origin_xid.as_deref();
    if let Some(reason) = failed.as_ref() {
        shared.notify(xid, Outcome::NodeFailed(reason.clone()));
        return;
    }
    if let Some((own, share)) = claim_own_run(&shared, &item) {
        return commit_own_run(ctx, vec![item], vec![own], share, failed).await;
    }
    let seqno = item.seqno;
    let timer = StageTimer::start();
    match &item.work {
        Work::Rows(_) => ctx.release_prepared(Some(&item.keys)).await,
        Work::Toi(_) => ctx.release_prepared(None).await,
        Work::Aborted | Work::Load(_) => {}
    }
    let applied = ctx.apply(seqno, &item.work, &item.keys).await;
    if !matches!(item.work, Work::Aborted) {
        timer.stop(&shared.latency, Stage::Apply);
    }
    let outcome = match (&item.work, applied) {
        (Work::Aborted, _) => Outcome::Aborted { seqno },
        (_, Applied::Done) => Outcome::Committed { seqno },
        (
            Work::Toi(_),
            Applied::Refused(ApplyError::Backend {
                code,
                state,
                message,
                during: "the TOI statement",
            }),
        ) => {
            // Every node refuses the same statement alike: its error is its result.
            match ctx.applier.record_applied(seqno).await {
                Ok(()) => Outcome::ToiRefused {
                    code,
                    state,
                    message,
                },
                Err(e) => Outcome::NodeFailed(
                    shared.apply_failed(failed, format!("recording TOI seqno {seqno} failed: {e}")),
                ),
            }
        }
        (_, Applied::Refused(e)) => Outcome::NodeFailed(
            shared.apply_failed(failed, format!("applying seqno {seqno} failed: {e}")),
        ),
    };
    if let Work::Toi(_) = &item.work {
        match &outcome {
            Outcome::Committed { .. } => ctx.progress.record_toi(seqno, item.origin, 0),
            Outcome::ToiRefused { code, .. } => ctx.progress.record_toi(seqno, item.origin, *code),
            Outcome::Aborted { .. } | Outcome::NodeFailed(_) => {}
        }
    }
    shared.applied.send_replace(seqno);
    // Entries before this one are fully applied (a Raft entry may hold more write sets).
    shared
        .applied_index
        .store(item.index.saturating_sub(1), Ordering::Relaxed);
    shared.notify(xid, outcome);
}

/// The progress reporter of this node: its applied seqno and apply queue, asking for flow
/// control only while it is in sync (backend up, consistent).
async fn report_progress(
    progress: Arc<super::progress::Progress>,
    flow: Arc<super::flow_control::FlowControl>,
    gossip: crate::replication::GossipSender,
    shared: Arc<Shared>,
    health: watch::Receiver<crate::backend::Health>,
    place: Arc<Mutex<Place>>,
) {
    let local = {
        let shared = shared.clone();
        move || super::progress::LocalView {
            applied: *shared.applied.borrow(),
            applied_index: shared.applied_index.load(Ordering::Relaxed),
            queue: shared.queued.load(Ordering::Relaxed),
            // A node still catching up (a joiner replaying the log) or removed does not hold
            // the cluster's writers back, as a Galera joiner sends no flow control.
            can_ask: shared.inconsistent.borrow().is_none()
                && *health.borrow() == crate::backend::Health::Up
                && place.lock().is_ok_and(|p| p.synced && !p.removed),
        }
    };
    let on_inconsistent = move |reason: String| shared.mark_inconsistent(reason);
    super::progress::run_reporter(progress, flow, gossip, local, on_inconsistent).await;
}

#[cfg(test)]
mod membership_tests {
    use super::*;

    fn probe(primary: bool, voter: bool, unapplied: u64) -> MembershipProbe {
        MembershipProbe {
            primary,
            voter,
            learner: !voter,
            removed: false,
            unapplied,
        }
    }

    #[test]
    fn a_node_is_synced_only_as_a_primary_voter_with_little_left_to_apply() {
        assert!(has_caught_up(&probe(true, true, 0), 0));
        assert!(!has_caught_up(&probe(false, true, 0), 0), "outside Primary");
        assert!(!has_caught_up(&probe(false, false, 0), 0), "a learner");
        assert!(!has_caught_up(
            &probe(true, true, SYNCED_UNAPPLIED_ENTRIES + 1),
            0
        ));
        assert!(!has_caught_up(
            &probe(true, true, 0),
            SYNCED_APPLY_QUEUE + 1
        ));
    }
}
