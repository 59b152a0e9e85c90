//! The workloads: their tables, how operations are generated, the SQL each one runs, and which
//! checker judges them.
//!
//! Owns the mapping from a history operation to SQL and back (the value a read returns). It
//! must not classify errors (that is `client::classify`, from the `Phase` reported here) nor
//! know how the cluster is faulted. All SQL is plain text with integer literals only, so the
//! same statements run unchanged against certus, Galera or a single MariaDB.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use mysql_async::prelude::{FromRow, Queryable};
use mysql_async::Conn;
use rand::rngs::StdRng;
use rand::Rng;

use crate::checker::bank::BankOptions;
use crate::checker::list_append::ListAppendOptions;
use crate::checker::{bank, counter, list_append, set, CheckResult};
use crate::history::{Account, Elem, History, Key, Mop, Value, F};
use crate::runner::client::{Failure, Phase, ER_LOCK_DEADLOCK};

pub const BANK_ACCOUNTS: u64 = 5;
pub const BANK_INITIAL: i64 = 100;

/// The schema every workload's tables live in.
pub const SCHEMA: &str = "jepsen";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WorkloadKind {
    Bank,
    ListAppend,
    Counter,
    /// The counter as an oslo.db (SQLAlchemy) session drives it: autocommit off, no BEGIN,
    /// and the whole increment retried on 1213.
    OsloCounter,
    Set,
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 5] = [
        WorkloadKind::Bank,
        WorkloadKind::ListAppend,
        WorkloadKind::Counter,
        WorkloadKind::OsloCounter,
        WorkloadKind::Set,
    ];

    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Bank => "bank",
            WorkloadKind::ListAppend => "list-append",
            WorkloadKind::Counter => "counter",
            WorkloadKind::OsloCounter => "oslo-counter",
            WorkloadKind::Set => "set",
        }
    }

    pub fn parse(name: &str) -> Option<WorkloadKind> {
        WorkloadKind::ALL.into_iter().find(|w| w.name() == name)
    }

    /// The table this workload owns, compared across backends by the convergence check.
    pub fn table(self) -> &'static str {
        match self {
            WorkloadKind::Bank => "bank",
            WorkloadKind::ListAppend => "lists",
            WorkloadKind::Counter => "counters",
            WorkloadKind::OsloCounter => "oslo_counters",
            WorkloadKind::Set => "sets",
        }
    }

    /// DDL and initial rows, run once through one endpoint (DDL is replicated in total order).
    pub(crate) fn setup_sql(self) -> Vec<String> {
        match self {
            WorkloadKind::Bank => {
                let rows: Vec<String> = (0..BANK_ACCOUNTS)
                    .map(|a| format!("({a}, {BANK_INITIAL})"))
                    .collect();
                vec![
                    format!(
                        "CREATE TABLE {SCHEMA}.bank (id BIGINT NOT NULL PRIMARY KEY, \
                         balance BIGINT NOT NULL) ENGINE=InnoDB"
                    ),
                    format!(
                        "INSERT INTO {SCHEMA}.bank (id, balance) VALUES {}",
                        rows.join(", ")
                    ),
                ]
            }
            WorkloadKind::ListAppend => vec![format!(
                "CREATE TABLE {SCHEMA}.lists (k BIGINT NOT NULL PRIMARY KEY, \
                 v MEDIUMTEXT NOT NULL) ENGINE=InnoDB"
            )],
            WorkloadKind::Counter => vec![
                format!(
                    "CREATE TABLE {SCHEMA}.counters (id BIGINT NOT NULL PRIMARY KEY, \
                     val BIGINT NOT NULL) ENGINE=InnoDB"
                ),
                format!("INSERT INTO {SCHEMA}.counters (id, val) VALUES (0, 0)"),
            ],
            WorkloadKind::OsloCounter => vec![
                format!(
                    "CREATE TABLE {SCHEMA}.oslo_counters (id BIGINT NOT NULL PRIMARY KEY, \
                     v BIGINT NOT NULL) ENGINE=InnoDB"
                ),
                format!("INSERT INTO {SCHEMA}.oslo_counters (id, v) VALUES (0, 0)"),
            ],
            WorkloadKind::Set => vec![format!(
                "CREATE TABLE {SCHEMA}.sets (e BIGINT NOT NULL PRIMARY KEY) ENGINE=InnoDB"
            )],
        }
    }

    /// A query whose answer is `expected` once the setup is visible on a node.
    pub(crate) fn setup_probe(self) -> (String, i64) {
        let count = |t: &str| format!("SELECT COUNT(*) FROM {SCHEMA}.{t}");
        match self {
            WorkloadKind::Bank => (count("bank"), BANK_ACCOUNTS as i64),
            WorkloadKind::ListAppend => (count("lists"), 0),
            WorkloadKind::Counter => (count("counters"), 1),
            WorkloadKind::OsloCounter => (count("oslo_counters"), 1),
            WorkloadKind::Set => (count("sets"), 0),
        }
    }

    /// Sessions per node for each of `--clients-per-node`. oslo-counter runs three, as
    /// tests/py/oslo_counter.py does (an OpenStack service runs several workers per node):
    /// the lost updates it exists to catch needed concurrent sessions on one node.
    pub(crate) fn sessions_per_client(self) -> usize {
        match self {
            WorkloadKind::OsloCounter => 3,
            WorkloadKind::Bank
            | WorkloadKind::ListAppend
            | WorkloadKind::Counter
            | WorkloadKind::Set => 1,
        }
    }

    /// Statements every client connection of this workload runs once, right after connecting.
    /// oslo.db's engines (through PyMySQL and SQLAlchemy) turn autocommit off once per
    /// connection; every later statement then runs inside an implicit transaction.
    pub(crate) fn session_init(self) -> Vec<String> {
        match self {
            WorkloadKind::OsloCounter => vec!["SET autocommit = 0".to_owned()],
            WorkloadKind::Bank
            | WorkloadKind::ListAppend
            | WorkloadKind::Counter
            | WorkloadKind::Set => Vec::new(),
        }
    }
}

/// oslo.db's `wrap_db_retry(retry_on_deadlock=True)`: attempts of one increment, and the
/// sleep between them (doubling up to the cap, as `inc_retry_interval` does).
const OSLO_ATTEMPTS: u32 = 10;
const OSLO_RETRY_INTERVAL: Duration = Duration::from_millis(10);
const OSLO_MAX_RETRY_INTERVAL: Duration = Duration::from_millis(200);
/// The application's own work between its UPDATE (SQLAlchemy's flush) and COMMIT. The row lock
/// is held meanwhile, so a write set from another node that the applier must apply to the row
/// brute-force aborts the session: finding 5 needed such aborts, and with no think time a
/// one-minute run saw too few of them to show it.
const OSLO_THINK_TIME: Duration = Duration::from_millis(3);

/// What an operation came to when the database answered without an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Done {
    Ok(Value),
    /// A read-modify-write increment committed, having written `wrote`.
    Incremented {
        value: Value,
        wrote: i64,
    },
    /// The workload itself declined (a transfer without funds) and rolled back.
    Fail(String),
}

/// Shared generator state of one workload across all its clients.
pub(crate) struct Workload {
    pub(crate) kind: WorkloadKind,
    next_elem: AtomicI64,
    txns: AtomicU64,
    max_key: AtomicU64,
}

/// A list-append key takes this many transactions' worth of traffic before the window moves
/// on: short lists keep reads cheap, while several live keys keep transactions overlapping.
const KEY_WINDOW_TXNS: u64 = 60;
const LIVE_KEYS: u64 = 5;

impl Workload {
    pub(crate) fn new(kind: WorkloadKind) -> Workload {
        Workload {
            kind,
            next_elem: AtomicI64::new(1),
            txns: AtomicU64::new(0),
            max_key: AtomicU64::new(0),
        }
    }

    fn unique_elem(&self) -> Elem {
        self.next_elem.fetch_add(1, Ordering::Relaxed)
    }

    /// The next operation a client should invoke.
    pub(crate) fn generate(&self, rng: &mut StdRng) -> (F, Value) {
        match self.kind {
            WorkloadKind::Bank => {
                if rng.random_bool(0.3) {
                    return (F::Read, Value::Nil);
                }
                let from = rng.random_range(0..BANK_ACCOUNTS);
                let to = (from + rng.random_range(1..BANK_ACCOUNTS)) % BANK_ACCOUNTS;
                let amount = rng.random_range(1..=5);
                (F::Transfer, Value::Transfer { from, to, amount })
            }
            WorkloadKind::ListAppend => {
                let n = self.txns.fetch_add(1, Ordering::Relaxed);
                let base = n / KEY_WINDOW_TXNS;
                let len = rng.random_range(1..=4);
                let mops = (0..len)
                    .map(|_| {
                        let key: Key = base + rng.random_range(0..LIVE_KEYS);
                        self.max_key.fetch_max(key, Ordering::Relaxed);
                        if rng.random_bool(0.5) {
                            Mop::read(key, None)
                        } else {
                            Mop::append(key, self.unique_elem())
                        }
                    })
                    .collect();
                (F::Txn, Value::Txn(mops))
            }
            WorkloadKind::Counter | WorkloadKind::OsloCounter => {
                if rng.random_bool(0.15) {
                    (F::Read, Value::Nil)
                } else {
                    (F::Add, Value::Int(1))
                }
            }
            WorkloadKind::Set => {
                if rng.random_bool(0.1) {
                    (F::Read, Value::Nil)
                } else {
                    (F::Add, Value::Int(self.unique_elem()))
                }
            }
        }
    }

    /// The read that ends the test, run on every node after healing and catch-up.
    pub(crate) fn final_read(&self) -> (F, Value) {
        match self.kind {
            WorkloadKind::ListAppend => {
                let keys = 0..=self.max_key.load(Ordering::Relaxed);
                (
                    F::Txn,
                    Value::Txn(keys.map(|k| Mop::read(k, None)).collect()),
                )
            }
            _ => (F::Read, Value::Nil),
        }
    }

    /// Runs one operation. `phase` is kept current so that, if this future is dropped on a
    /// timeout, the caller still knows whether COMMIT was in flight.
    pub(crate) async fn execute(
        &self,
        conn: &mut Conn,
        f: &F,
        value: &Value,
        phase: &mut Phase,
    ) -> Result<Done, Failure> {
        match (self.kind, f, value) {
            (WorkloadKind::Bank, F::Read, _) => {
                *phase = Phase::Read;
                let rows: Vec<(u64, i64)> =
                    query(conn, &format!("SELECT id, balance FROM {SCHEMA}.bank")).await?;
                Ok(Done::Ok(Value::Balances(rows.into_iter().collect())))
            }
            (WorkloadKind::Bank, F::Transfer, &Value::Transfer { from, to, amount }) => {
                transfer(conn, from, to, amount, phase).await
            }
            (WorkloadKind::ListAppend, F::Txn, Value::Txn(mops)) => {
                list_txn(conn, mops, phase).await
            }
            (WorkloadKind::Counter, F::Read, _) => {
                *phase = Phase::Read;
                let v = query_one::<i64>(
                    conn,
                    &format!("SELECT val FROM {SCHEMA}.counters WHERE id = 0"),
                )
                .await?;
                Ok(Done::Ok(Value::Int(v)))
            }
            (WorkloadKind::Counter, F::Add, &Value::Int(delta)) => {
                // Read-modify-write with the computed value, not `val = val + 1`: a database
                // that loses updates shows it as a counter below its acknowledged increments.
                *phase = Phase::Before;
                exec(conn, "START TRANSACTION").await?;
                let v = query_one::<i64>(
                    conn,
                    &format!("SELECT val FROM {SCHEMA}.counters WHERE id = 0"),
                )
                .await?;
                let next = v.checked_add(delta).ok_or_else(|| {
                    Failure::Unexpected(format!("counter overflow at {v} + {delta}"))
                })?;
                exec(
                    conn,
                    &format!("UPDATE {SCHEMA}.counters SET val = {next} WHERE id = 0"),
                )
                .await?;
                *phase = Phase::Commit;
                exec(conn, "COMMIT").await?;
                Ok(Done::Incremented {
                    value: value.clone(),
                    wrote: next,
                })
            }
            (WorkloadKind::OsloCounter, F::Read, _) => oslo_read(conn, phase).await,
            (WorkloadKind::OsloCounter, F::Add, &Value::Int(delta)) => {
                oslo_increment(conn, delta, phase).await
            }
            (WorkloadKind::Set, F::Read, _) => {
                *phase = Phase::Read;
                let elems: Vec<i64> = query(conn, &format!("SELECT e FROM {SCHEMA}.sets")).await?;
                Ok(Done::Ok(Value::Set(elems.into_iter().collect())))
            }
            (WorkloadKind::Set, F::Add, &Value::Int(e)) => {
                *phase = Phase::Commit;
                exec(conn, &format!("INSERT INTO {SCHEMA}.sets (e) VALUES ({e})")).await?;
                Ok(Done::Ok(value.clone()))
            }
            (kind, f, value) => Err(Failure::Unexpected(format!(
                "{} cannot run :{} {value:?}",
                kind.name(),
                f.keyword()
            ))),
        }
    }

    /// Runs the op from [`Workload::final_read`]. The list-append final read is one
    /// `SELECT` of every row: one statement is one consistent snapshot of all keys.
    pub(crate) async fn execute_final(
        &self,
        conn: &mut Conn,
        f: &F,
        value: &Value,
        phase: &mut Phase,
    ) -> Result<Done, Failure> {
        match (self.kind, value) {
            (WorkloadKind::ListAppend, Value::Txn(mops)) => {
                *phase = Phase::Read;
                read_all_lists(conn, mops).await
            }
            _ => self.execute(conn, f, value, phase).await,
        }
    }

    /// Judges this workload's history. `serializable` makes write skew (G2-item) an anomaly;
    /// otherwise list-append is held to snapshot isolation, which is what certification of
    /// written keys promises.
    pub(crate) fn check(&self, history: &History, serializable: bool) -> CheckResult {
        match self.kind {
            WorkloadKind::Bank => bank::check(
                history,
                &BankOptions {
                    accounts: (0..BANK_ACCOUNTS).collect(),
                    total: BANK_INITIAL * BANK_ACCOUNTS as i64,
                    allow_negative: false,
                },
            ),
            WorkloadKind::ListAppend => list_append::check(
                history,
                &ListAppendOptions {
                    stale_reads: false,
                    allow_g2_item: !serializable,
                },
            ),
            WorkloadKind::Counter | WorkloadKind::OsloCounter => counter::check(history),
            WorkloadKind::Set => set::check(history),
        }
    }
}

async fn transfer(
    conn: &mut Conn,
    from: Account,
    to: Account,
    amount: i64,
    phase: &mut Phase,
) -> Result<Done, Failure> {
    *phase = Phase::Before;
    exec(conn, "START TRANSACTION").await?;
    let balance = |id: Account| format!("SELECT balance FROM {SCHEMA}.bank WHERE id = {id}");
    let from_balance = query_one::<i64>(conn, &balance(from)).await?;
    let to_balance = query_one::<i64>(conn, &balance(to)).await?;
    if from_balance < amount {
        exec(conn, "ROLLBACK").await?;
        return Ok(Done::Fail(format!(
            "insufficient funds: account {from} has {from_balance}"
        )));
    }
    for (id, new) in [(from, from_balance - amount), (to, to_balance + amount)] {
        exec(
            conn,
            &format!("UPDATE {SCHEMA}.bank SET balance = {new} WHERE id = {id}"),
        )
        .await?;
    }
    *phase = Phase::Commit;
    exec(conn, "COMMIT").await?;
    Ok(Done::Ok(Value::Transfer { from, to, amount }))
}

/// A read in an oslo.db session: the SELECT opens an implicit transaction, which the session
/// ends (SQLAlchemy returns the connection to its pool), or the next read would see the same
/// snapshot.
async fn oslo_read(conn: &mut Conn, phase: &mut Phase) -> Result<Done, Failure> {
    *phase = Phase::Read;
    let v = query_one::<i64>(
        conn,
        &format!("SELECT v FROM {SCHEMA}.oslo_counters WHERE id = 0"),
    )
    .await?;
    exec(conn, "COMMIT").await?;
    Ok(Done::Ok(Value::Int(v)))
}

/// One increment as oslo.db runs it: the attempt is retried whole on 1213 (a certification
/// conflict or a brute-force abort), after the ROLLBACK SQLAlchemy sends, up to
/// [`OSLO_ATTEMPTS`] times. Only the last attempt can have taken effect, so `phase` is that
/// attempt's.
async fn oslo_increment(conn: &mut Conn, delta: i64, phase: &mut Phase) -> Result<Done, Failure> {
    let mut interval = OSLO_RETRY_INTERVAL;
    let mut attempt = 1;
    loop {
        match oslo_attempt(conn, delta, phase).await {
            Err(Failure::Server {
                code: ER_LOCK_DEADLOCK,
                ..
            }) if attempt < OSLO_ATTEMPTS => {
                // 1213 is definite: that attempt committed nothing.
                *phase = Phase::Before;
                exec(conn, "ROLLBACK").await?;
                tokio::time::sleep(interval).await;
                interval = (interval * 2).min(OSLO_MAX_RETRY_INTERVAL);
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

/// `SELECT v` (no BEGIN: autocommit is off), `UPDATE ... SET v = <read + delta>`, `COMMIT`.
async fn oslo_attempt(conn: &mut Conn, delta: i64, phase: &mut Phase) -> Result<Done, Failure> {
    *phase = Phase::Before;
    let v = query_one::<i64>(
        conn,
        &format!("SELECT v FROM {SCHEMA}.oslo_counters WHERE id = 0"),
    )
    .await?;
    let next = v
        .checked_add(delta)
        .ok_or_else(|| Failure::Unexpected(format!("counter overflow at {v} + {delta}")))?;
    exec(
        conn,
        &format!("UPDATE {SCHEMA}.oslo_counters SET v = {next} WHERE id = 0"),
    )
    .await?;
    tokio::time::sleep(OSLO_THINK_TIME).await;
    *phase = Phase::Commit;
    exec(conn, "COMMIT").await?;
    Ok(Done::Incremented {
        value: Value::Int(delta),
        wrote: next,
    })
}

async fn list_txn(conn: &mut Conn, mops: &[Mop], phase: &mut Phase) -> Result<Done, Failure> {
    *phase = Phase::Before;
    exec(conn, "START TRANSACTION").await?;
    let mut done = Vec::with_capacity(mops.len());
    for mop in mops {
        match *mop {
            Mop::Read { key, .. } => {
                let rows: Vec<String> = query(
                    conn,
                    &format!("SELECT v FROM {SCHEMA}.lists WHERE k = {key}"),
                )
                .await?;
                let list = match rows.first() {
                    Some(text) => Some(parse_list(text)?),
                    None => None,
                };
                done.push(Mop::read(key, list));
            }
            Mop::Append { key, value } => {
                exec(
                    conn,
                    &format!(
                        "INSERT INTO {SCHEMA}.lists (k, v) VALUES ({key}, '{value}') \
                         ON DUPLICATE KEY UPDATE v = CONCAT(v, ',{value}')"
                    ),
                )
                .await?;
                done.push(mop.clone());
            }
        }
    }
    *phase = Phase::Commit;
    exec(conn, "COMMIT").await?;
    Ok(Done::Ok(Value::Txn(done)))
}

async fn read_all_lists(conn: &mut Conn, mops: &[Mop]) -> Result<Done, Failure> {
    let rows: Vec<(u64, String)> = query(conn, &format!("SELECT k, v FROM {SCHEMA}.lists")).await?;
    let mut lists: BTreeMap<Key, Vec<Elem>> = BTreeMap::new();
    for (k, v) in rows {
        lists.insert(k, parse_list(&v)?);
    }
    let done = mops
        .iter()
        .map(|m| Mop::read(m.key(), lists.get(&m.key()).cloned()))
        .collect();
    Ok(Done::Ok(Value::Txn(done)))
}

/// A stored list is its elements joined by commas, in append order.
pub(crate) fn parse_list(text: &str) -> Result<Vec<Elem>, Failure> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|e| {
            e.trim()
                .parse::<Elem>()
                .map_err(|_| Failure::Unexpected(format!("list element {e:?} in {text:?}")))
        })
        .collect()
}

async fn exec(conn: &mut Conn, sql: &str) -> Result<(), Failure> {
    conn.query_drop(sql)
        .await
        .map_err(|e| Failure::from_mysql(&e))
}

async fn query<T: FromRow + Send + 'static>(conn: &mut Conn, sql: &str) -> Result<Vec<T>, Failure> {
    conn.query(sql).await.map_err(|e| Failure::from_mysql(&e))
}

async fn query_one<T: FromRow + Send + 'static>(conn: &mut Conn, sql: &str) -> Result<T, Failure> {
    let mut rows: Vec<T> = query(conn, sql).await?;
    if rows.len() != 1 {
        return Err(Failure::Unexpected(format!(
            "{sql} returned {} rows, expected 1",
            rows.len()
        )));
    }
    rows.pop()
        .ok_or_else(|| Failure::Unexpected(format!("{sql} returned no row")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use std::collections::BTreeSet;

    #[test]
    fn parse_list_reads_the_stored_text() {
        assert_eq!(parse_list("").unwrap(), Vec::<Elem>::new());
        assert_eq!(parse_list("3").unwrap(), vec![3]);
        assert_eq!(parse_list("3,1,2").unwrap(), vec![3, 1, 2]);
        assert!(matches!(parse_list("3,x"), Err(Failure::Unexpected(_))));
    }

    #[test]
    fn list_append_elements_are_unique_and_keys_move_on() {
        let w = Workload::new(WorkloadKind::ListAppend);
        let mut rng = StdRng::seed_from_u64(7);
        let mut seen = BTreeSet::new();
        let mut keys = BTreeSet::new();
        for _ in 0..1000 {
            let (f, value) = w.generate(&mut rng);
            assert_eq!(f, F::Txn);
            let Value::Txn(mops) = value else {
                panic!("not a txn")
            };
            assert!((1..=4).contains(&mops.len()));
            for m in mops {
                keys.insert(m.key());
                if let Mop::Append { value, .. } = m {
                    assert!(seen.insert(value), "element {value} appended twice");
                }
            }
        }
        assert!(!seen.is_empty());
        // 1000 txns over a window of KEY_WINDOW_TXNS: the key space grew past the first window.
        assert!(*keys.iter().max().unwrap() >= 1000 / KEY_WINDOW_TXNS);
        let (_, Value::Txn(final_mops)) = w.final_read() else {
            panic!("final read is not a txn")
        };
        let final_keys: BTreeSet<Key> = final_mops.iter().map(Mop::key).collect();
        assert!(keys.is_subset(&final_keys));
    }

    #[test]
    fn bank_transfers_move_money_between_two_distinct_accounts() {
        let w = Workload::new(WorkloadKind::Bank);
        let mut rng = StdRng::seed_from_u64(1);
        let mut transfers = 0;
        for _ in 0..500 {
            match w.generate(&mut rng) {
                (F::Transfer, Value::Transfer { from, to, amount }) => {
                    transfers += 1;
                    assert_ne!(from, to);
                    assert!(from < BANK_ACCOUNTS && to < BANK_ACCOUNTS);
                    assert!((1..=5).contains(&amount));
                }
                (F::Read, Value::Nil) => {}
                other => panic!("unexpected bank op {other:?}"),
            }
        }
        assert!(transfers > 250);
    }

    #[test]
    fn generation_is_reproducible_from_the_seed() {
        let run = || {
            let w = Workload::new(WorkloadKind::Counter);
            let mut rng = StdRng::seed_from_u64(42);
            (0..50).map(|_| w.generate(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn workload_names_round_trip() {
        for w in WorkloadKind::ALL {
            assert_eq!(WorkloadKind::parse(w.name()), Some(w));
        }
        assert_eq!(WorkloadKind::parse("register"), None);
    }
}
