//! A node's durable identity and position outside the Raft log: Galera's `grastate.dat`, the
//! cluster state UUID, the checks a node runs before it changes anything at start, and the
//! offline operations `certus recover` and `certus bootstrap`.
//!
//! Owns: `grastate.dat`, `raft/cluster_uuid`, and the decisions "which cluster does this data
//! dir belong to", "may it start", "is it the last to leave". Must not touch: the Raft log's
//! contents (it asks `replication` to inspect or reset it), the backend's data (it reads
//! `certus.state` and writes only its `cluster_uuid` column), or client sessions.
//!
//! The lifecycle of grastate.dat, as Galera keeps it:
//! * at start, once every check passed: `uuid` of the cluster, `seqno: -1`,
//!   `safe_to_bootstrap: 0`;
//! * after a clean stop: the backend's applied seqno, and `safe_to_bootstrap: 1` only on the
//!   last member to leave (`replication::peer_info::last_to_leave`);
//! * after a crash it still says `-1`: `certus recover` fills in the seqno;
//! * when the node becomes Inconsistent (an apply error, a TOI result the cluster does not
//!   share): `seqno: -1`, `safe_to_bootstrap: 0`, and the marker file `inconsistent` next to it
//!   (the reason, in words). Galera marks such a node as needing a full state transfer the same
//!   way. While the marker exists every start brings the node up Inconsistent (it refuses
//!   clients and applies nothing), a clean stop keeps `seqno: -1`, and `certus bootstrap`
//!   refuses. Only an operator removes the marker, after repairing or re-provisioning the
//!   backend (docs/operations.md).

pub mod grastate;
pub mod identity;
mod offline;

pub use offline::{bootstrap, recover, BootstrapOptions, BootstrapReport, RecoveredPosition};

use crate::config::NodeConfig;
use crate::ids::{NodeId, Seqno};
use crate::replication::{self, LogStoreError, LogSummary};
use grastate::{Grastate, GrastateError, GRASTATE_FILE};
use identity::{IdentityError, Witnesses};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use uuid::Uuid;

/// How long start-up and `bootstrap` wait for the members they ask.
pub(crate) const PEER_QUERY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(
        "{path} is corrupt: {source}; refusing to start (nothing was changed). Repair it, or \
         move it away and run `certus recover` to write it again"
    )]
    Grastate {
        path: PathBuf,
        #[source]
        source: GrastateError,
    },
    #[error("cannot write {path}: {source}")]
    GrastateWrite {
        path: PathBuf,
        #[source]
        source: GrastateError,
    },
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("{0} (nothing was changed)")]
    Log(LogStoreError),
    #[error("the node is running (its raft log {0} is locked): stop it first")]
    Running(PathBuf),
    #[error("backend: {0}")]
    Backend(String),
    #[error("{0}")]
    Refused(String),
}

impl From<LogStoreError> for RecoveryError {
    fn from(e: LogStoreError) -> Self {
        match e {
            LogStoreError::Wal(replication::WalError::Locked { path }) => {
                RecoveryError::Running(path)
            }
            other => RecoveryError::Log(other),
        }
    }
}

/// tmp file, fsync, rename, fsync the directory: a crash leaves the old or the new file whole.
pub(crate) fn write_file_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(&dir)?.sync_all()
}

/// The marker of a node that became Inconsistent, in its data dir (see the module header).
pub const INCONSISTENT_FILE: &str = "inconsistent";

fn inconsistent_path(data_dir: &Path) -> PathBuf {
    data_dir.join(INCONSISTENT_FILE)
}

/// The reason recorded by [`mark_inconsistent`], when the marker exists.
pub fn read_inconsistent(data_dir: &Path) -> Result<Option<String>, RecoveryError> {
    let path = inconsistent_path(data_dir);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RecoveryError::Refused(format!(
            "cannot read {}: {e}; refusing to start (nothing was changed)",
            path.display()
        ))),
    }
}

/// Records, durably, that this node is Inconsistent: the marker with `reason` first, then
/// grastate.dat with `seqno: -1` and `safe_to_bootstrap: 0`. A crash between the two leaves the
/// marker, which is what every later start reads.
pub(crate) fn mark_inconsistent(
    data_dir: &Path,
    uuid: Uuid,
    reason: &str,
) -> Result<(), RecoveryError> {
    let path = inconsistent_path(data_dir);
    let text = format!(
        "{}\n# This node became Inconsistent: its backend no longer matches the cluster's log.\n\
         # It refuses clients at every start while this file exists. Repair or re-provision the\n\
         # backend, then delete this file (docs/operations.md, \"An Inconsistent node\").\n",
        reason.replace('\n', " ")
    );
    write_file_atomic(&path, text.as_bytes())
        .map_err(|e| RecoveryError::Refused(format!("cannot write {}: {e}", path.display())))?;
    write_grastate_running(data_dir, uuid)
}

pub(crate) fn raft_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("raft")
}

pub(crate) fn grastate_path(data_dir: &Path) -> PathBuf {
    data_dir.join(GRASTATE_FILE)
}

/// grastate.dat, `None` when there is none (a new node, or one from before grastate existed).
pub fn read_grastate(data_dir: &Path) -> Result<Option<Grastate>, RecoveryError> {
    let path = grastate_path(data_dir);
    match Grastate::read(&path) {
        Ok(g) => Ok(Some(g)),
        Err(GrastateError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(source) => Err(RecoveryError::Grastate { path, source }),
    }
}

/// grastate.dat as Galera keeps it while a node runs (or after it became Inconsistent): the
/// position unknown (`seqno: -1`) and never safe to bootstrap from.
fn write_grastate_running(data_dir: &Path, uuid: Uuid) -> Result<(), RecoveryError> {
    write_grastate(
        data_dir,
        &Grastate {
            uuid,
            seqno: None,
            safe_to_bootstrap: false,
        },
    )
}

pub(crate) fn write_grastate(data_dir: &Path, state: &Grastate) -> Result<(), RecoveryError> {
    let path = grastate_path(data_dir);
    state
        .write_atomic(&path)
        .map_err(|source| RecoveryError::GrastateWrite { path, source })
}

/// Every member this node knows of except itself: from its config and from the newest
/// membership in its Raft log (members added online are only there).
pub(crate) fn other_members(config: &NodeConfig, log: &LogSummary) -> BTreeMap<NodeId, String> {
    let mut out: BTreeMap<NodeId, String> = config
        .members
        .iter()
        .map(|(id, addr)| (NodeId(*id), addr.clone()))
        .collect();
    if let Some(m) = &log.members {
        for (id, addr) in m {
            out.entry(NodeId(*id)).or_insert_with(|| addr.clone());
        }
    }
    out.remove(&NodeId(config.node_id));
    out
}

/// Asks every other member (from the config and the log's membership) who it is.
pub(crate) async fn ask_other_members(
    config: &NodeConfig,
    log: &LogSummary,
) -> BTreeMap<u64, Result<replication::PeerIdentity, String>> {
    replication::ask_peers(
        NodeId(config.node_id),
        &config.cluster_secret,
        config.peer_source_ip,
        &other_members(config, log),
        PEER_QUERY_TIMEOUT,
    )
    .await
}

/// What a node checked before it changed anything at start.
pub(crate) struct Preflight {
    pub(crate) witnesses: Witnesses,
    /// Members that answered from a Primary component: a cluster is running.
    pub(crate) primary_members: Vec<u64>,
}

/// Start-up step 1, before the backend starts: grastate.dat parses, the Raft log is whole
/// (a torn final record is allowed: it was never acknowledged, and the log store cuts it),
/// `raft/cluster_uuid` parses, and the reachable members agree with all of them.
pub(crate) async fn preflight(config: &NodeConfig) -> Result<Preflight, RecoveryError> {
    let grastate = read_grastate(&config.data_dir)?;
    let raft = raft_dir(&config.data_dir);
    let log = replication::inspect_log(&raft)?;
    if log.torn_tail_bytes > 0 {
        tracing::warn!(
            bytes = log.torn_tail_bytes,
            "raft log ends in a torn record (a crash during an append it never acknowledged); \
             it will be cut"
        );
    }
    let mut witnesses = Witnesses {
        raft_dir: identity::read_uuid_file(&raft)?,
        grastate: grastate.map(|g| g.uuid),
        ..Default::default()
    };
    let answers = ask_other_members(config, &log).await;
    let mut primary_members = Vec::new();
    for (id, answer) in answers {
        match answer {
            Ok(who) => match Uuid::try_parse(&who.cluster_uuid) {
                Ok(u) => {
                    witnesses.peers.insert(id, u);
                    if who.primary {
                        primary_members.push(id);
                    }
                }
                Err(_) => tracing::warn!(peer = id, "peer sent an invalid cluster uuid"),
            },
            Err(e) => tracing::debug!(peer = id, "not reachable at start: {e}"),
        }
    }
    witnesses.agree()?;
    Ok(Preflight {
        witnesses,
        primary_members,
    })
}

/// `certus.state` of the backend: (cluster uuid, applied seqno).
pub(crate) async fn backend_state(
    pool: &mysql_async::Pool,
) -> Result<(Option<Uuid>, Seqno), RecoveryError> {
    use mysql_async::prelude::Queryable;
    let err = |e: mysql_async::Error| RecoveryError::Backend(format!("reading certus.state: {e}"));
    let mut conn = pool.get_conn().await.map_err(err)?;
    let row: Option<(String, u64)> = conn
        .query_first("SELECT cluster_uuid, applied_seqno FROM certus.state WHERE id = 1")
        .await
        .map_err(err)?;
    let (uuid, seqno) =
        row.ok_or_else(|| RecoveryError::Backend("certus.state has no row with id = 1".into()))?;
    Ok((Uuid::try_parse(uuid.trim()).ok(), Seqno(seqno)))
}

/// Start-up step 2, with the backend up: its `certus.state` must agree too (a backend that has
/// applied nothing belongs to no cluster yet). Returns the node's cluster UUID.
pub(crate) fn resolve_uuid(
    pre: &Preflight,
    backend: (Option<Uuid>, Seqno),
    config: &NodeConfig,
) -> Result<Uuid, RecoveryError> {
    let mut w = pre.witnesses.clone();
    if backend.1 > Seqno::ZERO {
        w.backend = backend.0;
    }
    match w.agree()? {
        Some(uuid) => Ok(uuid),
        // A joining node must not make up a UUID: it would record it, and every later start
        // would be refused because the members disagree.
        None if config.join => Err(RecoveryError::Refused(
            "this node joins an existing cluster (join = true) and learns its UUID from a \
             member, but no member answered: list at least one running member besides this \
             node in `members` and check the cluster secret (nothing was changed)"
                .into(),
        )),
        None => Ok(identity::genesis_uuid(
            &config.cluster_secret,
            &config.members,
        )),
    }
}

/// Start-up step 3, every check passed: record the UUID everywhere and mark the node running
/// (`seqno: -1`, `safe_to_bootstrap: 0`), so that a crash from here on is visible.
pub(crate) async fn mark_running(
    data_dir: &Path,
    uuid: Uuid,
    pool: &mysql_async::Pool,
) -> Result<(), RecoveryError> {
    use mysql_async::prelude::Queryable;
    let raft = raft_dir(data_dir);
    if identity::read_uuid_file(&raft)? != Some(uuid) {
        identity::write_uuid_file(&raft, uuid)?;
    }
    let err = |e: mysql_async::Error| RecoveryError::Backend(format!("writing certus.state: {e}"));
    let mut conn = pool.get_conn().await.map_err(err)?;
    conn.query_drop("SET SESSION sql_log_bin = 0")
        .await
        .map_err(err)?;
    conn.exec_drop(
        "UPDATE certus.state SET cluster_uuid = ? WHERE id = 1",
        (uuid.hyphenated().to_string(),),
    )
    .await
    .map_err(err)?;
    // The connection goes back to the pool: leave its session as the pool handed it out.
    conn.query_drop("SET SESSION sql_log_bin = 1")
        .await
        .map_err(err)?;
    drop(conn);
    write_grastate_running(data_dir, uuid)
}

/// After a clean stop: the applied seqno (unknown: `-1`) and whether this node left last. An
/// Inconsistent node (its marker exists) keeps `seqno: -1` and `safe_to_bootstrap: 0`: its
/// applied seqno says nothing about its data.
pub(crate) fn mark_stopped(
    data_dir: &Path,
    uuid: Uuid,
    seqno: Option<Seqno>,
    last_to_leave: bool,
) -> Result<(), RecoveryError> {
    let inconsistent = !matches!(read_inconsistent(data_dir), Ok(None));
    let (seqno, last_to_leave) = if inconsistent {
        (None, false)
    } else {
        (seqno, last_to_leave)
    };
    write_grastate(
        data_dir,
        &Grastate {
            uuid,
            seqno,
            safe_to_bootstrap: last_to_leave && seqno.is_some(),
        },
    )
}

#[cfg(test)]
mod join_tests {
    use super::*;

    fn config(join: bool) -> NodeConfig {
        let mut raw = crate::config::RawNodeConfig::default();
        raw.data_dir = Some("/d".into());
        raw.node_id = Some(4);
        raw.join = Some(join);
        raw.cluster_secret = Some("0123456789abcdef".into());
        raw.validate().unwrap()
    }

    #[test]
    fn a_joining_node_never_makes_up_a_cluster_uuid() {
        let nobody = Preflight {
            witnesses: Witnesses::default(),
            primary_members: Vec::new(),
        };
        let err = resolve_uuid(&nobody, (None, Seqno::ZERO), &config(true)).unwrap_err();
        assert!(err.to_string().contains("no member answered"), "{err}");
        // A founding member with no witness derives the genesis UUID, as before.
        assert!(resolve_uuid(&nobody, (None, Seqno::ZERO), &config(false)).is_ok());
        // A joiner that reached a member takes the member's UUID.
        let learned = Uuid::from_u128(7);
        let reached = Preflight {
            witnesses: Witnesses {
                peers: [(1, learned)].into(),
                ..Default::default()
            },
            primary_members: vec![1],
        };
        assert_eq!(
            resolve_uuid(&reached, (None, Seqno::ZERO), &config(true)).unwrap(),
            learned
        );
    }
}

#[cfg(test)]
mod inconsistent_tests {
    use super::*;

    #[test]
    fn an_inconsistent_node_keeps_seqno_minus_one_and_is_never_safe_to_bootstrap() {
        let dir = tempfile::tempdir().unwrap();
        let uuid = Uuid::from_u128(7);
        assert!(read_inconsistent(dir.path()).unwrap().is_none());
        // A healthy clean stop records the seqno.
        mark_stopped(dir.path(), uuid, Some(Seqno(5)), true).unwrap();
        let g = read_grastate(dir.path()).unwrap().unwrap();
        assert_eq!((g.seqno, g.safe_to_bootstrap), (Some(Seqno(5)), true));

        mark_inconsistent(dir.path(), uuid, "applying seqno 6 failed:\nerror 1050").unwrap();
        let reason = read_inconsistent(dir.path()).unwrap().unwrap();
        assert!(
            reason.starts_with("applying seqno 6 failed: error 1050"),
            "{reason}"
        );
        let g = read_grastate(dir.path()).unwrap().unwrap();
        assert_eq!((g.uuid, g.seqno, g.safe_to_bootstrap), (uuid, None, false));
        // A clean stop afterwards, even as the last to leave, does not undo it.
        mark_stopped(dir.path(), uuid, Some(Seqno(9)), true).unwrap();
        let g = read_grastate(dir.path()).unwrap().unwrap();
        assert_eq!((g.seqno, g.safe_to_bootstrap), (None, false));
        // The operator removes the marker: clean stops record positions again.
        std::fs::remove_file(dir.path().join(INCONSISTENT_FILE)).unwrap();
        mark_stopped(dir.path(), uuid, Some(Seqno(9)), false).unwrap();
        let g = read_grastate(dir.path()).unwrap().unwrap();
        assert_eq!(g.seqno, Some(Seqno(9)));
    }
}
