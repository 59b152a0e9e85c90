//! `certus recover` and `certus bootstrap`: operations on a stopped node's data dir.
//!
//! Owns: the decisions and messages of both commands. Must not touch: a running node (both
//! refuse when the Raft log is locked by one), or any member's data other than this node's.

use super::grastate::Grastate;
use super::{
    ask_other_members, backend_state, identity, raft_dir, read_grastate, write_grastate,
    RecoveryError,
};
use crate::backend::{self, Backend};
use crate::config::{BackendConfig, NodeConfig};
use crate::ids::Seqno;
use crate::replication::{self, LogSummary, PeerIdentity};
use std::collections::BTreeMap;
use uuid::Uuid;

/// What `certus recover` found and recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveredPosition {
    pub uuid: Uuid,
    pub seqno: Seqno,
}

impl std::fmt::Display for RecoveredPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Recovered position: {}:{}",
            self.uuid.hyphenated(),
            self.seqno
        )
    }
}

/// Starts the backend just long enough to read `certus.state`, as `mariadbd --wsrep-recover`
/// starts InnoDB to read its position. A managed mariadbd left running by a killed node is
/// adopted and then stopped.
async fn read_backend(config: &NodeConfig) -> Result<(Option<Uuid>, Seqno), RecoveryError> {
    let auto_inc = crate::node::auto_increment(config);
    let err = |e: backend::BackendError| RecoveryError::Backend(e.to_string());
    match &config.backend {
        BackendConfig::Managed(m) => {
            let (managed, backend): (_, Backend) =
                backend::managed::Managed::start(&config.data_dir, config.node_id, auto_inc, m)
                    .await
                    .map_err(err)?;
            let state = backend_state(&backend.pool).await;
            backend.pool.clone().disconnect().await.ok();
            managed.shutdown().await;
            state
        }
        BackendConfig::External(e) => {
            let (backend, probe) = backend::external::connect(e, auto_inc).await.map_err(err)?;
            let state = backend_state(&backend.pool).await;
            backend.pool.clone().disconnect().await.ok();
            probe.abort();
            state
        }
    }
}

/// The node must be stopped; its Raft log must be whole.
fn stopped_log(config: &NodeConfig) -> Result<LogSummary, RecoveryError> {
    replication::inspect_log(&raft_dir(&config.data_dir)).map_err(RecoveryError::from)
}

/// The node's cluster UUID from its own state (Raft dir, grastate.dat, backend); they must agree.
fn own_uuid(
    config: &NodeConfig,
    grastate: Option<&Grastate>,
    backend: Option<(Option<Uuid>, Seqno)>,
) -> Result<Uuid, RecoveryError> {
    let w = identity::Witnesses {
        raft_dir: identity::read_uuid_file(&raft_dir(&config.data_dir))?,
        grastate: grastate.map(|g| g.uuid),
        backend: backend.filter(|b| b.1 > Seqno::ZERO).and_then(|b| b.0),
        peers: Default::default(),
    };
    Ok(w.agree()?
        .unwrap_or_else(|| identity::genesis_uuid(&config.cluster_secret, &config.members)))
}

/// `certus recover`: the backend's applied seqno and the cluster UUID, recorded in grastate.dat
/// (its `safe_to_bootstrap` is kept).
pub async fn recover(config: &NodeConfig) -> Result<RecoveredPosition, RecoveryError> {
    stopped_log(config)?;
    let grastate = read_grastate(&config.data_dir)?;
    let backend = read_backend(config).await?;
    let uuid = own_uuid(config, grastate.as_ref(), Some(backend))?;
    let position = RecoveredPosition {
        uuid,
        seqno: backend.1,
    };
    // An Inconsistent node's applied seqno says nothing about its data: grastate.dat keeps -1.
    let inconsistent = super::read_inconsistent(&config.data_dir)?;
    if let Some(reason) = &inconsistent {
        tracing::warn!(
            "this node is Inconsistent ({reason}): grastate.dat keeps seqno -1 until its backend \
             is re-provisioned and {} removed",
            config.data_dir.join(super::INCONSISTENT_FILE).display()
        );
    }
    write_grastate(
        &config.data_dir,
        &Grastate {
            uuid,
            seqno: Some(position.seqno).filter(|_| inconsistent.is_none()),
            safe_to_bootstrap: inconsistent.is_none()
                && grastate.is_some_and(|g| g.safe_to_bootstrap),
        },
    )?;
    Ok(position)
}

#[derive(Clone, Copy, Debug, Default)]
pub struct BootstrapOptions {
    /// Bootstrap even though grastate.dat says `safe_to_bootstrap: 0` or a reachable member is
    /// more advanced.
    pub force: bool,
}

/// What `certus bootstrap` did.
#[derive(Clone, Debug)]
pub struct BootstrapReport {
    pub uuid: Uuid,
    /// `(term, index)` of the membership entry that makes this node the only voter.
    pub last_log: Option<(u64, u64)>,
    /// Lines worth showing the operator (peers asked, warnings overridden by --force).
    pub notes: Vec<String>,
}

fn position_of(log: &LogSummary, grastate: Option<&Grastate>, node: u64) -> PeerIdentity {
    PeerIdentity {
        node_id: node,
        cluster_uuid: String::new(),
        applied_seqno: grastate.and_then(|g| g.seqno).map_or(0, |s| s.0),
        last_log: log.last_log,
        primary: false,
        leaving: true,
    }
}

/// `node N at seqno S, raft log T:I`; this node's seqno is known only from grastate.dat.
fn describe(id: &PeerIdentity, me: u64, my_seqno_known: bool) -> String {
    if id.node_id != me {
        return format!("node {} at {}", id.node_id, id.describe_position());
    }
    let log = match id.last_log {
        Some((t, i)) => format!("raft log {t}:{i}"),
        None => "empty raft log".to_owned(),
    };
    if my_seqno_known {
        format!("node {me} (this node) at seqno {}, {log}", id.applied_seqno)
    } else {
        format!("node {me} (this node) at {log}, seqno unknown (see `certus recover`)")
    }
}

/// What `decide` knows about this node.
struct Facts {
    me: PeerIdentity,
    my_seqno_known: bool,
    safe_to_bootstrap: bool,
    uuid: Uuid,
}

/// Whether this node may be bootstrapped, from its own state and the members' answers: the
/// notes to print, or the refusal. Pure, so every branch is unit-tested.
fn decide(
    facts: &Facts,
    answers: &BTreeMap<u64, Result<PeerIdentity, String>>,
    force: bool,
) -> Result<Vec<String>, String> {
    let me = &facts.me;
    let describe = |p: &PeerIdentity| describe(p, me.node_id, facts.my_seqno_known);
    let reachable: Vec<&PeerIdentity> = answers.values().filter_map(|a| a.as_ref().ok()).collect();
    if let Some(p) = reachable
        .iter()
        .find(|p| Uuid::try_parse(&p.cluster_uuid).ok() != Some(facts.uuid))
    {
        return Err(format!(
            "refusing to bootstrap: node {} belongs to cluster {}, this node to {}",
            p.node_id, p.cluster_uuid, facts.uuid
        ));
    }
    if let Some(p) = reachable.iter().find(|p| p.primary && !p.leaving) {
        return Err(format!(
            "refusing to bootstrap: the cluster is running (node {} is in the Primary \
             component); bootstrapping would split it. Start this node normally to rejoin, or \
             remove it with the membership commands",
            p.node_id
        ));
    }
    let mut everyone: Vec<&PeerIdentity> = reachable.clone();
    everyone.push(me);
    // Ties go to this node: bootstrapping it then loses nothing the others have.
    let most_advanced = everyone
        .iter()
        .copied()
        .max_by_key(|p| (p.last_log, std::cmp::Reverse(p.node_id != me.node_id)))
        .unwrap_or(me);
    let positions = everyone
        .iter()
        .map(|p| describe(p))
        .collect::<Vec<_>>()
        .join("; ");
    let mut notes = vec![format!("positions: {positions}")];
    let unreachable: Vec<String> = answers
        .iter()
        .filter(|(_, a)| a.is_err())
        .map(|(id, _)| format!("node {id}"))
        .collect();
    if !unreachable.is_empty() {
        notes.push(format!("not reachable: {}", unreachable.join(", ")));
    }
    let behind = most_advanced.node_id != me.node_id;
    if facts.safe_to_bootstrap && !behind {
        return Ok(notes);
    }
    let why = if !facts.safe_to_bootstrap {
        "grastate.dat says safe_to_bootstrap: 0 (this node was not the last to leave the \
         cluster, so it may lack committed transactions)"
    } else {
        "a reachable node is more advanced than this one"
    };
    let advice = format!("the most advanced node is {}", describe(most_advanced));
    if force {
        notes.push(format!("--force: overriding: {why}; {advice}"));
        return Ok(notes);
    }
    let hint = if behind {
        "bootstrap that node instead"
    } else if reachable.is_empty() {
        "no other member answered: run `certus recover` on every surviving node and bootstrap \
         the one with the highest seqno"
    } else {
        "if no other member can have a more advanced log, bootstrap this node"
    };
    Err(format!(
        "refusing to bootstrap: {why}. {advice} ({positions}); {hint}, or pass --force to \
         bootstrap this node anyway"
    ))
}

/// `certus bootstrap`: forms a new single-node cluster from this node's log and backend, for the
/// permanent loss of a majority. Refuses, changing nothing:
/// * while the node runs, or when its log is empty or damaged;
/// * while a reachable member is in a Primary component (the cluster is alive: bootstrapping
///   would split it), even with `--force`;
/// * without `--force`, when grastate.dat says `safe_to_bootstrap: 0` (or is missing), or when a
///   reachable member's log is more advanced; the refusal names the most advanced node.
pub async fn bootstrap(
    config: &NodeConfig,
    opts: BootstrapOptions,
) -> Result<BootstrapReport, RecoveryError> {
    let log = stopped_log(config)?;
    if log.pristine || log.last_log.is_none() {
        return Err(RecoveryError::Refused(
            "refusing to bootstrap: this node's raft log is empty, it holds no cluster state"
                .into(),
        ));
    }
    if let Some(reason) = super::read_inconsistent(&config.data_dir)? {
        // Even with --force: a cluster rebuilt from data known to be wrong is never the way out.
        return Err(RecoveryError::Refused(format!(
            "refusing to bootstrap: this node is Inconsistent ({reason}); bootstrap from another \
             node, or repair this node's backend and delete {} first",
            config.data_dir.join(super::INCONSISTENT_FILE).display()
        )));
    }
    let grastate = read_grastate(&config.data_dir)?;
    let uuid = own_uuid(config, grastate.as_ref(), None)?;
    let me = position_of(&log, grastate.as_ref(), config.node_id);
    let answers = ask_other_members(config, &log).await;
    let facts = Facts {
        me,
        my_seqno_known: grastate.is_some_and(|g| g.seqno.is_some()),
        safe_to_bootstrap: grastate.is_some_and(|g| g.safe_to_bootstrap),
        uuid,
    };
    let notes = decide(&facts, &answers, opts.force).map_err(RecoveryError::Refused)?;
    let addr = config
        .members
        .get(&config.node_id)
        .cloned()
        .unwrap_or_else(|| config.peer_listen.to_string());
    let after =
        replication::reset_membership_to(&raft_dir(&config.data_dir), config.node_id, addr).await?;
    write_grastate(
        &config.data_dir,
        &Grastate {
            uuid,
            seqno: grastate.and_then(|g| g.seqno),
            safe_to_bootstrap: true,
        },
    )?;
    Ok(BootstrapReport {
        uuid,
        last_log: after.last_log,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "3f0c9c1e-5d7a-4b8e-9a57-0f4a3c2b1d00";

    fn id(node_id: u64, last_log: Option<(u64, u64)>, primary: bool) -> PeerIdentity {
        PeerIdentity {
            node_id,
            cluster_uuid: UUID.into(),
            applied_seqno: 10 * node_id,
            last_log,
            primary,
            leaving: false,
        }
    }

    fn facts(safe: bool) -> Facts {
        Facts {
            me: id(1, Some((3, 100)), false),
            my_seqno_known: true,
            safe_to_bootstrap: safe,
            uuid: Uuid::try_parse(UUID).unwrap(),
        }
    }

    type Answers = BTreeMap<u64, Result<PeerIdentity, String>>;

    fn nobody() -> Answers {
        [(2, Err("refused".into())), (3, Err("refused".into()))].into()
    }

    #[test]
    fn safe_and_alone_proceeds() {
        let notes = decide(&facts(true), &nobody(), false).unwrap();
        assert!(
            notes[1].contains("not reachable: node 2, node 3"),
            "{notes:?}"
        );
    }

    #[test]
    fn unsafe_is_refused_without_force_and_allowed_with_it() {
        let err = decide(&facts(false), &nobody(), false).unwrap_err();
        assert!(err.contains("safe_to_bootstrap: 0"), "{err}");
        assert!(err.contains("no other member answered"), "{err}");
        assert!(
            err.contains("node 1 (this node) at seqno 10, raft log 3:100"),
            "{err}"
        );
        let notes = decide(&facts(false), &nobody(), true).unwrap();
        assert!(notes.iter().any(|n| n.starts_with("--force: overriding")));
    }

    #[test]
    fn a_more_advanced_peer_is_named_even_when_safe() {
        let answers: Answers = [
            (2, Ok(id(2, Some((3, 120)), false))),
            (3, Ok(id(3, Some((3, 90)), false))),
        ]
        .into();
        let err = decide(&facts(true), &answers, false).unwrap_err();
        assert!(
            err.contains("the most advanced node is node 2 at seqno 20, raft log 3:120"),
            "{err}"
        );
        assert!(err.contains("bootstrap that node instead"), "{err}");
        // A later term beats a longer log of an earlier term (Raft's up-to-date rule).
        let answers: Answers = [(2, Ok(id(2, Some((4, 5)), false)))].into();
        let err = decide(&facts(true), &answers, false).unwrap_err();
        assert!(err.contains("most advanced node is node 2"), "{err}");
        // Equal logs: this node is as good as any.
        let answers: Answers = [(2, Ok(id(2, Some((3, 100)), false)))].into();
        assert!(decide(&facts(true), &answers, false).is_ok());
    }

    #[test]
    fn a_live_primary_or_another_cluster_is_refused_even_with_force() {
        let live: Answers = [(2, Ok(id(2, Some((3, 100)), true)))].into();
        let err = decide(&facts(true), &live, true).unwrap_err();
        assert!(err.contains("the cluster is running (node 2"), "{err}");
        let mut stranger = id(2, Some((3, 100)), false);
        stranger.cluster_uuid = "0badc0de-0000-4000-8000-000000000001".into();
        let other: Answers = [(2, Ok(stranger))].into();
        let err = decide(&facts(true), &other, true).unwrap_err();
        assert!(err.contains("belongs to cluster 0badc0de"), "{err}");
    }
}
