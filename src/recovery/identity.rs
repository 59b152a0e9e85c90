//! The cluster state UUID (`wsrep_cluster_state_uuid`) as a durable property of the cluster.
//!
//! Owns: the file `raft/cluster_uuid` (the UUID next to the Raft log it names), the derivation of
//! a brand-new cluster's UUID, and the rule that decides which UUID a node belongs to from every
//! witness it has. Must not touch: the backend, the network or grastate.dat (callers read those
//! and pass what they found).
//!
//! Where a node learns its UUID, in order: its own Raft dir; grastate.dat; its backend's
//! `certus.state.cluster_uuid` (only once that backend has applied something: a fresh or
//! template backend belongs to no cluster yet); the running members it can reach, which answer
//! with theirs. All witnesses must agree, or the data dir is from another cluster and the node
//! refuses to start. Only when no witness exists (a new cluster) is the UUID derived, from the
//! cluster secret and the initial membership, so that founding members started at once agree
//! without talking. A node added later learns it from the members it reaches, never from its
//! own config.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// The file inside the node's Raft dir.
pub const UUID_FILE: &str = "cluster_uuid";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error(
        "this data dir belongs to another cluster: {witnesses}; refusing to start (nothing was \
         changed). Give this node a data dir of this cluster, or an empty one to join it anew"
    )]
    Mismatch { witnesses: String },
}

/// What each witness says the node's cluster UUID is (`None`: it has no opinion).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Witnesses {
    pub raft_dir: Option<Uuid>,
    pub grastate: Option<Uuid>,
    pub backend: Option<Uuid>,
    /// Reachable members, by node id.
    pub peers: BTreeMap<u64, Uuid>,
}

impl Witnesses {
    fn all(&self) -> Vec<(String, Uuid)> {
        let mut out = Vec::new();
        let mut push = |name: &str, u: Option<Uuid>| {
            if let Some(u) = u.filter(|u| !u.is_nil()) {
                out.push((name.to_owned(), u));
            }
        };
        push("raft/cluster_uuid", self.raft_dir);
        push("grastate.dat", self.grastate);
        push("the backend's certus.state", self.backend);
        for (id, u) in &self.peers {
            push(&format!("member node {id}"), Some(*u));
        }
        out
    }

    /// The UUID every witness agrees on, `None` when nobody has one, or the disagreement.
    pub fn agree(&self) -> Result<Option<Uuid>, IdentityError> {
        let all = self.all();
        let Some((_, first)) = all.first() else {
            return Ok(None);
        };
        if all.iter().all(|(_, u)| u == first) {
            return Ok(Some(*first));
        }
        let witnesses = all
            .iter()
            .map(|(name, u)| format!("{name} says {u}"))
            .collect::<Vec<_>>()
            .join(", ");
        Err(IdentityError::Mismatch { witnesses })
    }
}

/// The UUID of a brand-new cluster: derived from the secret and the initial membership, so every
/// founding member computes the same one. The only place a cluster UUID is made up.
pub fn genesis_uuid(secret: &[u8], members: &BTreeMap<u64, String>) -> Uuid {
    let mut input = secret.to_vec();
    for (id, addr) in members {
        input.extend_from_slice(format!("{id}={addr};").as_bytes());
    }
    let h = xxhash_rust::xxh3::xxh3_128(&input).to_be_bytes();
    uuid::Builder::from_random_bytes(h).into_uuid()
}

pub fn read_uuid_file(raft_dir: &Path) -> Result<Option<Uuid>, IdentityError> {
    let path = raft_dir.join(UUID_FILE);
    let bad = |reason: String| IdentityError::File {
        path: path.clone(),
        reason,
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes).map_err(|_| bad("not UTF-8 text".into()))?;
            let text = text.trim();
            if text.len() != 36 {
                return Err(bad(format!("not a hyphenated UUID: {text:?}")));
            }
            Uuid::try_parse(text)
                .map(Some)
                .map_err(|e| bad(format!("not a UUID ({e}): {text:?}")))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(bad(e.to_string())),
    }
}

pub fn write_uuid_file(raft_dir: &Path, uuid: Uuid) -> Result<(), IdentityError> {
    let path = raft_dir.join(UUID_FILE);
    super::write_file_atomic(&path, format!("{}\n", uuid.hyphenated()).as_bytes()).map_err(|e| {
        IdentityError::File {
            path: path.clone(),
            reason: e.to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn nobody_knows_means_a_new_cluster() {
        assert_eq!(Witnesses::default().agree().unwrap(), None);
        let nil_backend = Witnesses {
            backend: Some(Uuid::nil()),
            ..Default::default()
        };
        assert_eq!(nil_backend.agree().unwrap(), None);
    }

    #[test]
    fn agreeing_witnesses_name_the_cluster() {
        let w = Witnesses {
            raft_dir: Some(u(7)),
            grastate: Some(u(7)),
            backend: None,
            peers: [(2, u(7)), (3, u(7))].into(),
        };
        assert_eq!(w.agree().unwrap(), Some(u(7)));
        // A new member learns it from the cluster alone.
        let joiner = Witnesses {
            peers: [(1, u(9))].into(),
            ..Default::default()
        };
        assert_eq!(joiner.agree().unwrap(), Some(u(9)));
    }

    #[test]
    fn any_disagreement_is_refused_naming_every_witness() {
        let w = Witnesses {
            raft_dir: Some(u(7)),
            peers: [(2, u(8))].into(),
            ..Default::default()
        };
        let msg = w.agree().unwrap_err().to_string();
        assert!(msg.contains("raft/cluster_uuid says 00000000-0000-0000-0000-000000000007"));
        assert!(msg.contains("member node 2 says 00000000-0000-0000-0000-000000000008"));
        assert!(msg.contains("another cluster"), "{msg}");
        let backend = Witnesses {
            grastate: Some(u(7)),
            backend: Some(u(8)),
            ..Default::default()
        };
        assert!(backend.agree().is_err());
    }

    #[test]
    fn genesis_is_deterministic_and_depends_on_secret_and_members() {
        let m: BTreeMap<u64, String> = [(1, "a:1".into()), (2, "b:1".into())].into();
        let g = genesis_uuid(b"secret-0123456789", &m);
        assert_eq!(g, genesis_uuid(b"secret-0123456789", &m));
        assert_ne!(g, genesis_uuid(b"secret-0123456780", &m));
        let mut m2 = m.clone();
        m2.insert(3, "c:1".into());
        assert_ne!(g, genesis_uuid(b"secret-0123456789", &m2));
    }

    #[test]
    fn uuid_file_round_trips_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_uuid_file(dir.path()).unwrap(), None);
        write_uuid_file(dir.path(), u(42)).unwrap();
        assert_eq!(read_uuid_file(dir.path()).unwrap(), Some(u(42)));
        std::fs::write(dir.path().join(UUID_FILE), "not-a-uuid\n").unwrap();
        assert!(matches!(
            read_uuid_file(dir.path()),
            Err(IdentityError::File { .. })
        ));
    }
}
