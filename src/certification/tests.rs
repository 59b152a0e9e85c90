use super::*;
use crate::writeset::fixtures::{child_meta, ci, parent_meta, GALERA_CONFLICT_CELLS};
use crate::writeset::TableMeta;
use crate::writeset::{normalize_keys, row_keys, table_key, CellValue, RowChange};

fn h(n: u8) -> KeyHash {
    KeyHash([n; 16])
}

fn key(n: u8, kind: KeyKind) -> Key {
    Key { hash: h(n), kind }
}

fn commit(seqno: u64) -> Verdict {
    Verdict::Commit {
        seqno: Seqno(seqno),
    }
}

fn is_conflict(v: &Verdict) -> bool {
    matches!(
        v,
        Verdict::Abort {
            reason: AbortReason::Conflict { .. },
            ..
        }
    )
}

#[test]
fn every_cell_of_the_conflict_matrix() {
    for (committed, incoming, conflict) in GALERA_CONFLICT_CELLS {
        let mut c = Certifier::new(100);
        assert_eq!(c.certify(Seqno(0), &[key(1, committed)]), commit(1));
        let v = c.certify(Seqno(0), &[key(1, incoming)]);
        assert_eq!(
            is_conflict(&v),
            conflict,
            "{committed:?} then {incoming:?}: {v:?}"
        );
        if conflict {
            assert_eq!(
                v,
                Verdict::Abort {
                    seqno: Seqno(2),
                    reason: AbortReason::Conflict {
                        key: h(1),
                        committed_seqno: Seqno(1)
                    }
                }
            );
        }
    }
}

#[test]
fn a_write_set_that_saw_the_commit_does_not_conflict() {
    let mut c = Certifier::new(100);
    assert_eq!(
        c.certify(Seqno(0), &[key(1, KeyKind::Exclusive)]),
        commit(1)
    );
    // last_seen = 1: seqno 1 is outside the interval (1, 2).
    assert_eq!(
        c.certify(Seqno(1), &[key(1, KeyKind::Exclusive)]),
        commit(2)
    );
}

#[test]
fn disjoint_keys_do_not_conflict() {
    let mut c = Certifier::new(100);
    assert_eq!(
        c.certify(Seqno(0), &[key(1, KeyKind::Exclusive)]),
        commit(1)
    );
    assert_eq!(
        c.certify(Seqno(0), &[key(2, KeyKind::Exclusive)]),
        commit(2)
    );
    assert_eq!(
        c.certify(
            Seqno(0),
            &[key(3, KeyKind::Exclusive), key(4, KeyKind::Reference)]
        ),
        commit(3)
    );
}

#[test]
fn same_node_lost_update_aborts_the_second_writer() {
    // Two transactions from one node read the row at last_seen 5 and both update it by PK.
    // Galera lets both commit (same origin) and loses an update; certus aborts the second.
    let pk = key(9, KeyKind::Exclusive);
    let mut c = Certifier::new(100);
    for _ in 0..5 {
        c.certify(Seqno(0), &[key(0, KeyKind::Reference)]);
    }
    assert_eq!(c.certify(Seqno(5), &[pk]), commit(6));
    let second = c.certify(Seqno(5), &[pk]);
    assert!(is_conflict(&second), "{second:?}");
    assert_eq!(second.seqno(), Seqno(7));
}

#[test]
fn seqnos_are_dense_and_aborts_leave_no_trace_in_the_index() {
    let mut c = Certifier::new(100);
    assert_eq!(
        c.certify(Seqno(0), &[key(1, KeyKind::Exclusive)]),
        commit(1)
    );
    let aborted = c.certify(
        Seqno(0),
        &[key(1, KeyKind::Exclusive), key(2, KeyKind::Exclusive)],
    );
    assert!(is_conflict(&aborted));
    assert_eq!(aborted.seqno(), Seqno(2));
    // Key 2 was only in the aborted write set: a concurrent writer of key 2 commits.
    assert_eq!(
        c.certify(Seqno(0), &[key(2, KeyKind::Exclusive)]),
        commit(3)
    );
    assert_eq!(c.last_seqno(), Seqno(3));
}

fn insert(meta: &TableMeta, after: Vec<CellValue>) -> Vec<Key> {
    let mut keys = Vec::new();
    row_keys(meta, &RowChange::Insert { after }, &mut keys).unwrap();
    normalize_keys(&mut keys);
    keys
}

fn delete(meta: &TableMeta, before: Vec<CellValue>) -> Vec<Key> {
    let mut keys = Vec::new();
    row_keys(meta, &RowChange::Delete { before }, &mut keys).unwrap();
    normalize_keys(&mut keys);
    keys
}

fn update(meta: &TableMeta, before: Vec<CellValue>, after: Vec<CellValue>) -> Vec<Key> {
    let mut keys = Vec::new();
    row_keys(meta, &RowChange::Update { before, after }, &mut keys).unwrap();
    normalize_keys(&mut keys);
    keys
}

#[test]
fn child_insert_and_concurrent_parent_delete_conflict_in_both_orders() {
    let parent_delete = delete(
        &parent_meta(),
        vec![CellValue::Int(7), ci("x"), CellValue::Null],
    );
    let child_insert = insert(
        &child_meta(),
        vec![CellValue::Int(1), CellValue::Int(7), CellValue::Null],
    );

    let mut c = Certifier::new(100);
    assert_eq!(c.certify(Seqno(0), &parent_delete), commit(1));
    assert!(is_conflict(&c.certify(Seqno(0), &child_insert)));

    let mut c = Certifier::new(100);
    assert_eq!(c.certify(Seqno(0), &child_insert), commit(1));
    assert!(is_conflict(&c.certify(Seqno(0), &parent_delete)));
}

#[test]
fn child_insert_by_unique_key_and_parent_delete_conflict() {
    let parent_delete = delete(
        &parent_meta(),
        vec![CellValue::Int(7), ci("x"), CellValue::Null],
    );
    // References the parent only through its unique key, spelled differently (general_ci).
    let child_insert = insert(
        &child_meta(),
        vec![CellValue::Int(1), CellValue::Null, ci("X ")],
    );
    let mut c = Certifier::new(100);
    assert_eq!(c.certify(Seqno(0), &child_insert), commit(1));
    assert!(is_conflict(&c.certify(Seqno(0), &parent_delete)));
}

#[test]
fn parent_update_keeping_the_unique_value_does_not_block_children_referencing_it() {
    // The Update kind at work: the value the child points at survives the update.
    let parent_update = update(
        &parent_meta(),
        vec![CellValue::Int(7), ci("x"), CellValue::Null],
        vec![CellValue::Int(7), ci("x"), ci("new note")],
    );
    let child_insert = insert(
        &child_meta(),
        vec![CellValue::Int(1), CellValue::Null, ci("x")],
    );
    let mut c = Certifier::new(100);
    assert_eq!(c.certify(Seqno(0), &parent_update), commit(1));
    assert_eq!(c.certify(Seqno(0), &child_insert), commit(2));
    // But a parent update that changes the value does conflict.
    let parent_rename = update(
        &parent_meta(),
        vec![CellValue::Int(7), ci("x"), CellValue::Null],
        vec![CellValue::Int(7), ci("y"), CellValue::Null],
    );
    assert!(is_conflict(&c.certify(Seqno(0), &parent_rename)));
}

#[test]
fn unique_values_equal_under_the_collation_conflict() {
    // Two nodes insert different rows whose unique values MariaDB considers equal under
    // utf8mb4_general_ci ('a' vs 'A '): the second must abort, or its apply would fail with
    // a duplicate key on every backend.
    let first = insert(
        &parent_meta(),
        vec![CellValue::Int(1), ci("a"), CellValue::Null],
    );
    let second = insert(
        &parent_meta(),
        vec![CellValue::Int(2), ci("A "), CellValue::Null],
    );
    let mut c = Certifier::new(100);
    assert_eq!(c.certify(Seqno(0), &first), commit(1));
    assert!(is_conflict(&c.certify(Seqno(0), &second)));
    // Different values do not conflict.
    let third = insert(
        &parent_meta(),
        vec![CellValue::Int(3), ci("b"), CellValue::Null],
    );
    assert_eq!(c.certify(Seqno(0), &third), commit(3));
}

#[test]
fn toi_always_commits_and_aborts_overlapping_row_write_sets() {
    let row = insert(
        &parent_meta(),
        vec![CellValue::Int(1), ci("a"), CellValue::Null],
    );
    let mut c = Certifier::new(100);
    assert_eq!(c.certify(Seqno(0), &row), commit(1));
    // The TOI overlaps the row write set but still commits.
    let toi = [Key::exclusive(table_key("shop", "parent"))];
    assert_eq!(c.certify_toi(&toi), commit(2));
    // A row write set captured before the TOI (last_seen 1) aborts on the table key.
    let late = insert(
        &parent_meta(),
        vec![CellValue::Int(5), ci("e"), CellValue::Null],
    );
    let v = c.certify(Seqno(1), &late);
    assert_eq!(
        v,
        Verdict::Abort {
            seqno: Seqno(3),
            reason: AbortReason::Conflict {
                key: table_key("shop", "parent"),
                committed_seqno: Seqno(2)
            }
        }
    );
    // One captured after it commits.
    assert_eq!(c.certify(Seqno(2), &late), commit(4));
}

#[test]
fn last_seen_from_the_future_aborts() {
    let mut c = Certifier::new(100);
    let v = c.certify(Seqno(1), &[key(1, KeyKind::Exclusive)]);
    assert_eq!(
        v,
        Verdict::Abort {
            seqno: Seqno(1),
            reason: AbortReason::LastSeenAhead {
                last_seen: Seqno(1)
            }
        }
    );
}

#[test]
fn pruning_horizon_follows_the_log() {
    let mut c = Certifier::new(3);
    for i in 1..=5u8 {
        assert_eq!(
            c.certify(Seqno(u64::from(i) - 1), &[key(i, KeyKind::Exclusive)]),
            commit(i.into())
        );
    }
    // After seqno 5 with window 3 everything at or below 2 is gone.
    assert_eq!(c.horizon(), Seqno(2));
    assert_eq!(c.index_size(), 3, "keys of seqnos 3, 4, 5");
    let v = c.certify(Seqno(1), &[key(100, KeyKind::Exclusive)]);
    assert_eq!(
        v,
        Verdict::Abort {
            seqno: Seqno(6),
            reason: AbortReason::TooOld {
                last_seen: Seqno(1),
                horizon: Seqno(2)
            }
        }
    );
    assert_eq!(c.horizon(), Seqno(3));
    // last_seen at the horizon is fine, and conflicts inside the window are still found.
    let v = c.certify(Seqno(3), &[key(4, KeyKind::Exclusive)]);
    assert!(is_conflict(&v), "{v:?}");
    assert_eq!(
        c.certify(Seqno(4), &[key(4, KeyKind::Exclusive)]),
        commit(8)
    );
}

#[test]
fn pruning_keeps_a_key_rewritten_later() {
    let mut c = Certifier::new(2);
    assert_eq!(
        c.certify(Seqno(0), &[key(1, KeyKind::Exclusive)]),
        commit(1)
    );
    assert_eq!(
        c.certify(Seqno(1), &[key(1, KeyKind::Reference)]),
        commit(2)
    );
    assert_eq!(
        c.certify(Seqno(2), &[key(2, KeyKind::Exclusive)]),
        commit(3)
    );
    // Horizon 1: the Exclusive slot of key 1 is gone, its Reference slot (seqno 2) stays.
    assert_eq!(c.horizon(), Seqno(1));
    let v = c.certify(Seqno(1), &[key(1, KeyKind::Exclusive)]);
    assert_eq!(
        v,
        Verdict::Abort {
            seqno: Seqno(4),
            reason: AbortReason::Conflict {
                key: h(1),
                committed_seqno: Seqno(2)
            }
        }
    );
}

use crate::test_rng::Rng;

fn random_history(n: usize) -> Vec<(bool, u64, Vec<Key>)> {
    let mut rng = Rng(42);
    let kinds = [KeyKind::Exclusive, KeyKind::Update, KeyKind::Reference];
    (0..n as u64)
        .map(|i| {
            let toi = rng.next().is_multiple_of(50);
            let lag = rng.next() % 12;
            let keys = (0..1 + rng.next() % 4)
                .map(|_| key((rng.next() % 40) as u8, kinds[(rng.next() % 3) as usize]))
                .collect();
            (toi, i.saturating_sub(lag), keys)
        })
        .collect()
}

fn run(c: &mut Certifier, history: &[(bool, u64, Vec<Key>)]) -> Vec<Verdict> {
    history
        .iter()
        .map(|(toi, last_seen, keys)| {
            if *toi {
                c.certify_toi(keys)
            } else {
                c.certify(Seqno(*last_seen), keys)
            }
        })
        .collect()
}

#[test]
fn two_certifiers_fed_the_same_log_agree_exactly() {
    let history = random_history(2_000);
    let mut a = Certifier::new(10);
    let mut b = Certifier::new(10);
    let va = run(&mut a, &history);
    let vb = run(&mut b, &history);
    assert_eq!(va, vb);
    assert_eq!(a.to_snapshot().unwrap(), b.to_snapshot().unwrap());
    // The history exercises every outcome, or the comparison proves little.
    assert!(va.iter().any(|v| v.is_commit()));
    assert!(va.iter().any(is_conflict));
    assert!(va.iter().any(|v| matches!(
        v,
        Verdict::Abort {
            reason: AbortReason::TooOld { .. },
            ..
        }
    )));
}

#[test]
fn snapshot_round_trip_continues_identically() {
    let history = random_history(1_500);
    let (first, rest) = history.split_at(700);
    let mut live = Certifier::new(10);
    run(&mut live, first);
    let snapshot = live.to_snapshot().unwrap();
    let mut restored = Certifier::from_snapshot(&snapshot).unwrap();
    assert_eq!(restored.to_snapshot().unwrap(), snapshot);
    assert_eq!(restored.last_seqno(), live.last_seqno());
    assert_eq!(restored.horizon(), live.horizon());
    assert_eq!(restored.index_size(), live.index_size());
    assert_eq!(run(&mut restored, rest), run(&mut live, rest));
    assert_eq!(restored.to_snapshot().unwrap(), live.to_snapshot().unwrap());
}

#[test]
fn corrupt_snapshots_are_rejected() {
    let mut c = Certifier::new(5);
    run(&mut c, &random_history(50));
    let good = c.to_snapshot().unwrap();
    assert!(matches!(
        Certifier::from_snapshot(&[]),
        Err(SnapshotError::Empty)
    ));
    let mut bad = good.clone();
    bad[0] = 9;
    assert!(matches!(
        Certifier::from_snapshot(&bad),
        Err(SnapshotError::UnknownVersion(9))
    ));
    let mut bad = good.clone();
    bad.push(0);
    assert!(matches!(
        Certifier::from_snapshot(&bad),
        Err(SnapshotError::TrailingBytes(1))
    ));
    for len in 1..good.len() {
        assert!(
            Certifier::from_snapshot(&good[..len]).is_err(),
            "prefix {len} accepted"
        );
    }
    // Internally inconsistent: a horizon that does not follow from last_seqno and window.
    let snap = SnapshotV1 {
        window: 5,
        last_seqno: Seqno(50),
        horizon: Seqno(10),
        entries: vec![],
    };
    let mut bytes = vec![SNAPSHOT_VERSION];
    bytes.extend(bincode::serde::encode_to_vec(&snap, bincode::config::standard()).unwrap());
    assert!(matches!(
        Certifier::from_snapshot(&bytes),
        Err(SnapshotError::Inconsistent(_))
    ));
    // An entry older than the horizon.
    let snap = SnapshotV1 {
        window: 5,
        last_seqno: Seqno(50),
        horizon: Seqno(45),
        entries: vec![(
            h(1),
            KeyHistory {
                exclusive: Some(Seqno(40)),
                update: None,
                reference: None,
            },
        )],
    };
    let mut bytes = vec![SNAPSHOT_VERSION];
    bytes.extend(bincode::serde::encode_to_vec(&snap, bincode::config::standard()).unwrap());
    assert!(matches!(
        Certifier::from_snapshot(&bytes),
        Err(SnapshotError::Inconsistent(_))
    ));
}

fn unknown_rows_ws(last_seen: u64, keys: Vec<Key>) -> WriteSet {
    use crate::ids::{NodeId, Xid};
    use crate::writeset::{Body, WriteSetFlags};
    let mut flags = WriteSetFlags::empty();
    flags.insert(WriteSetFlags::UNKNOWN_ROWS);
    WriteSet {
        origin: NodeId(1),
        xid: Xid("x".into()),
        last_seen: Seqno(last_seen),
        flags,
        keys,
        body: Body::Rows(Vec::new()),
    }
}

#[test]
fn unchanged_matched_rows_conflict_with_any_commit_in_the_interval() {
    // A read 7000 and wrote 7000 again (no row event, no keys); B committed meanwhile.
    let mut c = Certifier::new(100);
    assert_eq!(
        c.certify(Seqno(0), &[key(1, KeyKind::Exclusive)]),
        commit(1)
    );
    let v = c.certify_write_set(&unknown_rows_ws(0, Vec::new()));
    assert!(
        matches!(
            v,
            Verdict::Abort {
                seqno: Seqno(2),
                reason: AbortReason::UnknownRows {
                    committed_seqno: Seqno(1)
                }
            }
        ),
        "{v:?}"
    );
    // Having seen everything committed, it commits.
    assert_eq!(
        c.certify_write_set(&unknown_rows_ws(2, Vec::new())),
        commit(3)
    );
    // Two certifiers agree (determinism).
    let mut d = Certifier::new(100);
    d.certify(Seqno(0), &[key(1, KeyKind::Exclusive)]);
    d.certify_write_set(&unknown_rows_ws(0, Vec::new()));
    d.certify_write_set(&unknown_rows_ws(2, Vec::new()));
    assert_eq!(c.to_snapshot().unwrap(), d.to_snapshot().unwrap());
}
