//! Deterministic certification (DESIGN §6): decides Commit or Abort for each write set in log
//! order and assigns its seqno.
//!
//! Owns the certification index (per key, the last committed seqno of each kind) and its
//! pruning. Pure and deterministic: no I/O, no async, no clock, and nothing whose result
//! depends on hash-map iteration order (the map is only used for lookups; the snapshot is
//! sorted). Must not apply anything, talk to Raft or know about sessions: the state machine
//! feeds it write sets in log order and acts on the verdicts.
//!
//! The rule: a write set at seqno S with last_seen L aborts when one of its keys conflicts
//! (see `crate::writeset::KeyKind::conflicts_with`) with a key that a committed write set or
//! TOI with seqno in (L, S) wrote. Unlike Galera, a conflict with a write set from the same
//! origin counts too, which rules out the lost updates Jepsen found. Every write set consumes
//! one seqno, committed or not; aborted ones leave no trace in the index.
//!
//! Pruning depends only on the log: after seqno S the index forgets everything at or below
//! `S - window` (the horizon), and a write set whose last_seen is below the horizon aborts as
//! too old, because the part of its certification interval it would need is gone.

use crate::ids::Seqno;
use crate::writeset::{Key, KeyHash, KeyKind, WriteSet};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};

#[cfg(test)]
mod tests;

/// The outcome of certifying one write set; identical on every node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Commit { seqno: Seqno },
    Abort { seqno: Seqno, reason: AbortReason },
}

impl Verdict {
    pub fn seqno(&self) -> Seqno {
        match self {
            Verdict::Commit { seqno } | Verdict::Abort { seqno, .. } => *seqno,
        }
    }

    pub fn is_commit(&self) -> bool {
        matches!(self, Verdict::Commit { .. })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbortReason {
    /// `key` was written by the committed write set `committed_seqno`, inside the interval.
    Conflict {
        key: KeyHash,
        committed_seqno: Seqno,
    },
    /// last_seen is below the pruned horizon: the index no longer covers the interval.
    TooOld { last_seen: Seqno, horizon: Seqno },
    /// The write set touched rows it has no keys for (`WriteSetFlags::UNKNOWN_ROWS`), and a
    /// write set committed inside its interval.
    UnknownRows { committed_seqno: Seqno },
    /// last_seen is not below the write set's own seqno: the origin claims to have seen a
    /// write set that did not exist yet. Only a bug or a corrupt entry gets here; committing
    /// would skip certification entirely.
    LastSeenAhead { last_seen: Seqno },
}

/// The last committed seqno that wrote a key, per kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct KeyHistory {
    exclusive: Option<Seqno>,
    update: Option<Seqno>,
    reference: Option<Seqno>,
}

impl KeyHistory {
    /// The newest committed seqno whose kind conflicts with an incoming key of `incoming`.
    fn newest_conflicting(&self, incoming: KeyKind) -> Option<Seqno> {
        [
            (KeyKind::Exclusive, self.exclusive),
            (KeyKind::Update, self.update),
            (KeyKind::Reference, self.reference),
        ]
        .into_iter()
        .filter(|(committed, _)| committed.conflicts_with(incoming))
        .filter_map(|(_, seqno)| seqno)
        .max()
    }

    fn record(&mut self, kind: KeyKind, seqno: Seqno) {
        let slot = match kind {
            KeyKind::Exclusive => &mut self.exclusive,
            KeyKind::Update => &mut self.update,
            KeyKind::Reference => &mut self.reference,
        };
        *slot = Some(seqno);
    }

    fn seqnos(&self) -> impl Iterator<Item = Seqno> {
        [self.exclusive, self.update, self.reference]
            .into_iter()
            .flatten()
    }

    /// Forgets every seqno at or below `horizon`; true when nothing is left.
    fn forget_up_to(&mut self, horizon: Seqno) -> bool {
        for slot in [&mut self.exclusive, &mut self.update, &mut self.reference] {
            if slot.is_some_and(|s| s <= horizon) {
                *slot = None;
            }
        }
        self.seqnos().next().is_none()
    }
}

/// The certification state machine. Rebuilt from the log (or a snapshot) on restart.
#[derive(Clone, Debug)]
pub struct Certifier {
    window: u64,
    last_seqno: Seqno,
    horizon: Seqno,
    index: HashMap<KeyHash, KeyHistory>,
    /// The keys each committed seqno wrote, oldest first, so that pruning touches exactly the
    /// entries it drops instead of scanning the index.
    committed: VecDeque<(Seqno, Vec<KeyHash>)>,
}

impl Certifier {
    /// A certifier for an empty history. `window` is how many seqnos the index covers: a
    /// write set whose certification interval reaches further back aborts as too old.
    pub fn new(window: u64) -> Certifier {
        Certifier {
            window,
            last_seqno: Seqno::ZERO,
            horizon: Seqno::ZERO,
            index: HashMap::new(),
            committed: VecDeque::new(),
        }
    }

    /// The seqno of the last write set certified (committed or aborted).
    pub fn last_seqno(&self) -> Seqno {
        self.last_seqno
    }

    /// Everything at or below this seqno has been pruned; last_seen must be at least this.
    pub fn horizon(&self) -> Seqno {
        self.horizon
    }

    pub fn window(&self) -> u64 {
        self.window
    }

    /// Number of keys in the index (Galera's `wsrep_cert_index_size`).
    pub fn index_size(&self) -> usize {
        self.index.len()
    }

    /// Certifies the next write set in log order and assigns it the next seqno.
    pub fn certify(&mut self, last_seen: Seqno, keys: &[Key]) -> Verdict {
        let seqno = self.last_seqno.next();
        self.last_seqno = seqno;
        let verdict = match self.find_abort(seqno, last_seen, keys) {
            Some(reason) => Verdict::Abort { seqno, reason },
            None => {
                self.record(seqno, keys);
                Verdict::Commit { seqno }
            }
        };
        self.prune(seqno);
        verdict
    }

    /// Certifies a TOI: it always commits, because it runs alone at its seqno after every
    /// earlier write set, so nothing is concurrent with it (Galera does the same). Its keys
    /// enter the index so that write sets that overlap it abort.
    pub fn certify_toi(&mut self, keys: &[Key]) -> Verdict {
        let seqno = self.last_seqno.next();
        self.last_seqno = seqno;
        self.record(seqno, keys);
        self.prune(seqno);
        Verdict::Commit { seqno }
    }

    /// [`Certifier::certify`] or [`Certifier::certify_toi`], whichever the write set is.
    pub fn certify_write_set(&mut self, ws: &WriteSet) -> Verdict {
        if ws.is_toi() {
            self.certify_toi(&ws.keys)
        } else if ws
            .flags
            .contains(crate::writeset::WriteSetFlags::UNKNOWN_ROWS)
        {
            match self.committed.back() {
                Some((newest, _)) if *newest > ws.last_seen => {
                    let seqno = self.last_seqno.next();
                    self.last_seqno = seqno;
                    let committed_seqno = *newest;
                    self.prune(seqno);
                    Verdict::Abort {
                        seqno,
                        reason: AbortReason::UnknownRows { committed_seqno },
                    }
                }
                _ => self.certify(ws.last_seen, &ws.keys),
            }
        } else {
            self.certify(ws.last_seen, &ws.keys)
        }
    }

    fn find_abort(&self, seqno: Seqno, last_seen: Seqno, keys: &[Key]) -> Option<AbortReason> {
        if last_seen >= seqno {
            return Some(AbortReason::LastSeenAhead { last_seen });
        }
        if last_seen < self.horizon {
            return Some(AbortReason::TooOld {
                last_seen,
                horizon: self.horizon,
            });
        }
        // Keys in the write set's own order, so the reported key is the same on every node.
        keys.iter().find_map(|key| {
            let committed = self.index.get(&key.hash)?.newest_conflicting(key.kind)?;
            (committed > last_seen).then_some(AbortReason::Conflict {
                key: key.hash,
                committed_seqno: committed,
            })
        })
    }

    fn record(&mut self, seqno: Seqno, keys: &[Key]) {
        let mut hashes = Vec::with_capacity(keys.len());
        for key in keys {
            self.index
                .entry(key.hash)
                .or_default()
                .record(key.kind, seqno);
            hashes.push(key.hash);
        }
        if !hashes.is_empty() {
            self.committed.push_back((seqno, hashes));
        }
    }

    fn prune(&mut self, seqno: Seqno) {
        let horizon = Seqno(seqno.0.saturating_sub(self.window));
        if horizon <= self.horizon {
            return;
        }
        self.horizon = horizon;
        while let Some((s, _)) = self.committed.front() {
            if *s > horizon {
                break;
            }
            let Some((_, hashes)) = self.committed.pop_front() else {
                break;
            };
            for hash in hashes {
                // A later seqno may have rewritten the key: only the old slots go.
                if let Some(entry) = self.index.get_mut(&hash) {
                    if entry.forget_up_to(horizon) {
                        self.index.remove(&hash);
                    }
                }
            }
        }
    }

    /// The complete certification state, canonical: two certifiers that certified the same
    /// log produce identical bytes.
    pub fn to_snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        let mut entries: Vec<(KeyHash, KeyHistory)> =
            self.index.iter().map(|(k, v)| (*k, *v)).collect();
        entries.sort_unstable_by_key(|(k, _)| *k);
        let snapshot = SnapshotV1 {
            window: self.window,
            last_seqno: self.last_seqno,
            horizon: self.horizon,
            entries,
        };
        let mut out = vec![SNAPSHOT_VERSION];
        out.extend(bincode::serde::encode_to_vec(
            &snapshot,
            bincode::config::standard(),
        )?);
        Ok(out)
    }

    pub fn from_snapshot(bytes: &[u8]) -> Result<Certifier, SnapshotError> {
        let (&version, rest) = bytes.split_first().ok_or(SnapshotError::Empty)?;
        if version != SNAPSHOT_VERSION {
            return Err(SnapshotError::UnknownVersion(version));
        }
        // No strings or byte vectors in a snapshot, so no length prefix can make bincode
        // allocate more than serde's cautious preallocation.
        let (snap, used): (SnapshotV1, usize) =
            bincode::serde::decode_from_slice(rest, bincode::config::standard())?;
        if used != rest.len() {
            return Err(SnapshotError::TrailingBytes(rest.len() - used));
        }
        snap.into_certifier()
    }
}

const SNAPSHOT_VERSION: u8 = 1;

#[derive(Serialize, Deserialize)]
struct SnapshotV1 {
    window: u64,
    last_seqno: Seqno,
    horizon: Seqno,
    /// Sorted by key, each key once.
    entries: Vec<(KeyHash, KeyHistory)>,
}

impl SnapshotV1 {
    fn into_certifier(self) -> Result<Certifier, SnapshotError> {
        let inconsistent = |what: &str| Err(SnapshotError::Inconsistent(what.to_owned()));
        if self.horizon != Seqno(self.last_seqno.0.saturating_sub(self.window)) {
            return inconsistent("horizon is not last_seqno - window");
        }
        if self.entries.windows(2).any(|w| w[0].0 >= w[1].0) {
            return inconsistent("entries are not sorted by key or repeat a key");
        }
        let mut by_seqno: BTreeMap<Seqno, Vec<KeyHash>> = BTreeMap::new();
        for (hash, history) in &self.entries {
            let mut seqnos: Vec<Seqno> = history.seqnos().collect();
            if seqnos.is_empty() {
                return inconsistent("an entry has no seqno");
            }
            if seqnos
                .iter()
                .any(|&s| s <= self.horizon || s > self.last_seqno)
            {
                return inconsistent("an entry's seqno is outside (horizon, last_seqno]");
            }
            seqnos.sort_unstable();
            seqnos.dedup();
            for s in seqnos {
                by_seqno.entry(s).or_default().push(*hash);
            }
        }
        Ok(Certifier {
            window: self.window,
            last_seqno: self.last_seqno,
            horizon: self.horizon,
            index: self.entries.into_iter().collect(),
            committed: by_seqno.into_iter().collect(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("empty certification snapshot")]
    Empty,
    #[error("unknown certification snapshot version {0}")]
    UnknownVersion(u8),
    #[error("malformed certification snapshot: {0}")]
    Malformed(#[from] bincode::error::DecodeError),
    #[error("{0} unexpected bytes after the certification snapshot")]
    TrailingBytes(usize),
    #[error("inconsistent certification snapshot: {0}")]
    Inconsistent(String),
    #[error("certification snapshot cannot be encoded: {0}")]
    Encode(#[from] bincode::error::EncodeError),
}
