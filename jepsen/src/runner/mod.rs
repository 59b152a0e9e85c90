//! The runner: the acting half of the suite. It starts a cluster (or takes a list of MySQL
//! endpoints), drives concurrent workloads through every node, faults the cluster on a seeded
//! schedule, heals it, waits for the backends to converge, takes the final reads, and hands
//! every history to its checker.
//!
//! Owns the order of a run and its output directory (one EDN history per workload,
//! `results.json`, `results.md`, `run.json`). It must not judge histories itself (the checkers
//! do) and must not reach into certus internals: certus is driven only as processes and over
//! the MySQL protocol, so the same runner can test Galera through `--endpoints`.

mod client;
mod cluster;
mod convergence;
mod galera;
pub mod nemesis;
mod relay;
pub mod workload;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::checker::CheckResult;
use crate::edn;
use crate::history::{Op, Process};
use crate::results::{Summary, WorkloadSummary};
use client::{classify, Account, Endpoint, Failure, Phase, Recorder, Verdict};
use cluster::{Cluster, ClusterConfig};
use galera::GaleraCluster;
use nemesis::{Faultable, NemesisEvent, NemesisKind};
use workload::{Done, Workload, WorkloadKind, SCHEMA};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("cluster: {0}")]
    Cluster(String),
    #[error("setup: {0}")]
    Setup(String),
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        source: std::io::Error,
    },
}

impl RunError {
    pub(crate) fn io(context: &'static str) -> impl Fn(std::io::Error) -> RunError {
        move |source| RunError::Io { context, source }
    }
}

/// What to test.
#[derive(Debug, Clone)]
pub enum Target {
    /// Start `nodes` certus processes from `certus_bin`, with data under `dir`.
    Certus {
        certus_bin: PathBuf,
        dir: PathBuf,
        nodes: u64,
    },
    /// Existing MySQL endpoints (`host:port`), e.g. a Galera cluster. No nemesis can reach
    /// them, and the convergence check runs through the endpoints themselves.
    Endpoints(Vec<String>),
    /// A Galera cluster started by bench/lib.sh's `start_galera`: endpoint `i` is served by
    /// the mariadbd of `<dir>/n<i>`, so the nemesis can kill, restart and pause it.
    Galera {
        endpoints: Vec<String>,
        dir: PathBuf,
    },
}

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub target: Target,
    pub out_dir: PathBuf,
    pub seed: u64,
    /// Length of the workload phase (faults happen inside it).
    pub time_limit: Duration,
    pub workloads: Vec<WorkloadKind>,
    pub nemeses: Vec<NemesisKind>,
    pub nemesis_interval: Duration,
    pub fault_duration: Duration,
    pub clients_per_node: usize,
    /// An op running longer than this is abandoned (`info` if COMMIT was in flight).
    pub op_timeout: Duration,
    /// Bound on each recovery wait: cluster start, readiness after healing, convergence.
    pub recovery_timeout: Duration,
    pub user: String,
    pub password: String,
    /// Hold list-append to serializability (write skew is an anomaly) instead of snapshot
    /// isolation.
    pub serializable: bool,
}

impl RunConfig {
    /// The defaults of `certus-jepsen run`: every workload, kill and partition faults.
    pub fn new(target: Target, out_dir: PathBuf) -> RunConfig {
        RunConfig {
            target,
            out_dir,
            seed: 1,
            time_limit: Duration::from_secs(60),
            workloads: WorkloadKind::ALL.to_vec(),
            nemeses: vec![NemesisKind::Kill, NemesisKind::Partition],
            nemesis_interval: Duration::from_secs(5),
            fault_duration: Duration::from_secs(8),
            clients_per_node: 1,
            op_timeout: Duration::from_secs(10),
            recovery_timeout: Duration::from_secs(120),
            user: "jepsen".to_owned(),
            password: "jepsen-password".to_owned(),
            serializable: false,
        }
    }
}

/// A finished run. `summary.valid` is the verdict; the files are in `out_dir`.
#[derive(Debug)]
pub struct RunReport {
    pub summary: Summary,
    pub out_dir: PathBuf,
    pub nemesis: Vec<NemesisEvent>,
}

/// Runs one test end to end. Errors are for runs that could not be judged (the cluster never
/// started, the schema could not be created); anomalies are in the report, not errors.
pub async fn run(mut config: RunConfig) -> Result<RunReport, RunError> {
    // Each workload owns one table; naming it twice would create it twice.
    config.workloads.sort();
    config.workloads.dedup();
    if config.workloads.is_empty() {
        return Err(RunError::Config("no workloads".into()));
    }
    if config.clients_per_node == 0 {
        return Err(RunError::Config(
            "clients per node must be at least 1".into(),
        ));
    }
    std::fs::create_dir_all(&config.out_dir).map_err(RunError::io("creating the output dir"))?;
    let account = Account {
        user: config.user.clone(),
        password: config.password.clone(),
    };
    match &config.target {
        Target::Certus {
            certus_bin,
            dir,
            nodes,
        } => {
            let cluster_config = ClusterConfig {
                certus_bin: certus_bin.clone(),
                dir: dir.clone(),
                nodes: *nodes,
                account: account.clone(),
            };
            let mut cluster = Cluster::start(cluster_config, config.recovery_timeout).await?;
            let endpoints = cluster.endpoints();
            let result = run_on(&config, &account, &endpoints, Some(&mut cluster), None).await;
            cluster.stop(Duration::from_secs(60)).await;
            result
        }
        Target::Endpoints(list) => {
            let endpoints = parse_endpoints(list)?;
            run_on(&config, &account, &endpoints, None, None).await
        }
        Target::Galera { endpoints, dir } => {
            if let Err(kind) = nemesis::supported(&config.nemeses, true) {
                return Err(RunError::Config(format!(
                    "nemesis {} is not supported on Galera (kill and pause are)",
                    kind.name()
                )));
            }
            let endpoints = parse_endpoints(endpoints)?;
            let mut galera = GaleraCluster::new(dir, endpoints.len() as u64)?;
            let result = run_on(&config, &account, &endpoints, None, Some(&mut galera)).await;
            galera.stop_restarted(Duration::from_secs(60)).await;
            result
        }
    }
}

/// Runs the seeded fault schedule until the end of the workload phase, then heals
/// everything; returns what the nemesis did.
async fn drive_nemesis<C: Faultable>(
    config: &RunConfig,
    target: &mut C,
    recorders: Vec<Recorder>,
    start: Instant,
) -> Vec<NemesisEvent> {
    let steps = nemesis::schedule(
        config.seed,
        &config.nemeses,
        &target.node_ids(),
        nemesis::Timing {
            run_for: config.time_limit,
            interval: config.nemesis_interval,
            fault_for: config.fault_duration,
        },
    );
    let mut n = nemesis::Nemesis {
        cluster: target,
        recorders,
        start,
        events: Vec::new(),
    };
    n.run(&steps).await;
    tokio::time::sleep_until((start + config.time_limit).into()).await;
    n.heal_all().await;
    n.events
}

pub(crate) fn parse_endpoints(list: &[String]) -> Result<Vec<Endpoint>, RunError> {
    if list.is_empty() {
        return Err(RunError::Config("no endpoints".into()));
    }
    list.iter()
        .map(|e| {
            let (host, port) = e
                .rsplit_once(':')
                .ok_or_else(|| RunError::Config(format!("endpoint {e:?} is not host:port")))?;
            let port = port
                .parse::<u16>()
                .map_err(|_| RunError::Config(format!("endpoint {e:?} has a bad port")))?;
            Ok(Endpoint {
                name: e.clone(),
                host: host.trim_matches(['[', ']']).to_owned(),
                port,
            })
        })
        .collect()
}

async fn run_on(
    config: &RunConfig,
    account: &Account,
    endpoints: &[Endpoint],
    mut cluster: Option<&mut Cluster>,
    galera: Option<&mut GaleraCluster>,
) -> Result<RunReport, RunError> {
    setup_schema(config, account, endpoints).await?;

    let start = Instant::now();
    let workloads: Vec<(Arc<Workload>, Recorder)> = config
        .workloads
        .iter()
        .map(|&k| (Arc::new(Workload::new(k)), Recorder::new(start)))
        .collect();
    let deadline = start + config.time_limit;
    let mut clients = Vec::new();
    for (w, recorder) in &workloads {
        let per_node = config.clients_per_node * w.kind.sessions_per_client();
        let stride = (endpoints.len() * per_node) as u64;
        let mut first_process = 0u64;
        for endpoint in endpoints {
            for _ in 0..per_node {
                clients.push(tokio::spawn(client_loop(ClientCtx {
                    workload: w.clone(),
                    recorder: recorder.clone(),
                    opts: client::session_opts(endpoint, account, w.kind.session_init()),
                    node: endpoint.name.clone(),
                    first_process,
                    stride,
                    seed: config.seed
                        ^ (first_process + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
                        ^ (w.kind as u64) << 56,
                    deadline,
                    op_timeout: config.op_timeout,
                })));
                first_process += 1;
            }
        }
    }

    let recorders: Vec<Recorder> = workloads.iter().map(|(_, r)| r.clone()).collect();
    let events = match (cluster.as_deref_mut(), galera) {
        (Some(cluster), _) => drive_nemesis(config, cluster, recorders, start).await,
        (None, Some(galera)) => drive_nemesis(config, galera, recorders, start).await,
        (None, None) => {
            tokio::time::sleep_until(deadline.into()).await;
            Vec::new()
        }
    };
    for c in clients {
        let _ = c.await;
    }

    // Recovery: every node serving again, then every backend holding the same data.
    let recovery_started = Instant::now();
    let recovery_deadline = recovery_started + config.recovery_timeout;
    let readiness = match cluster.as_deref() {
        Some(cluster) => cluster.wait_ready(recovery_deadline).await.err(),
        None => {
            let mut first_error = None;
            for e in endpoints {
                if let Err(err) = cluster::wait_endpoint_ready(e, account, recovery_deadline).await
                {
                    first_error.get_or_insert(err);
                }
            }
            first_error
        }
    };
    let tables: Vec<&str> = config.workloads.iter().map(|w| w.table()).collect();
    let convergence = convergence::wait(
        recovery_started,
        cluster.as_deref(),
        endpoints,
        account,
        &tables,
        recovery_deadline,
        readiness.as_ref().map(|e| e.to_string()),
    )
    .await;

    // The final reads, on every node, after everything else has completed.
    for (w, recorder) in &workloads {
        final_reads(w, recorder, endpoints, account, config.op_timeout).await;
    }

    let mut summaries = Vec::new();
    let mut results: Vec<(String, CheckResult)> = Vec::new();
    for (w, recorder) in &workloads {
        let history = recorder.snapshot();
        let name = w.kind.name();
        write_edn(&config.out_dir, name, &history)?;
        let result = w.check(&history, config.serializable);
        summaries.push(WorkloadSummary::new(name, &history, &result));
        results.push((name.to_owned(), result));
    }
    summaries.push(WorkloadSummary::new(
        "convergence",
        &crate::history::History::new(),
        &convergence.result,
    ));
    let summary = Summary::new(summaries);
    summary
        .write_to(&config.out_dir)
        .map_err(|e| RunError::Setup(e.to_string()))?;
    let node_errors = cluster
        .as_deref()
        .map(|c| c.log_errors(10))
        .unwrap_or_default();
    append_run_section(config, &events, &convergence, &node_errors, &config.out_dir)?;
    Ok(RunReport {
        summary,
        out_dir: config.out_dir.clone(),
        nemesis: events,
    })
}

async fn setup_schema(
    config: &RunConfig,
    account: &Account,
    endpoints: &[Endpoint],
) -> Result<(), RunError> {
    let first = endpoints
        .first()
        .ok_or_else(|| RunError::Config("no endpoints".into()))?;
    let mut conn = client::connect(client::tcp_opts(first, account), Duration::from_secs(10))
        .await
        .map_err(|e| RunError::Setup(format!("connecting to {}: {}", first.name, e.describe())))?;
    let mut statements = vec![
        format!("DROP DATABASE IF EXISTS {SCHEMA}"),
        format!("CREATE DATABASE {SCHEMA}"),
    ];
    for w in &config.workloads {
        statements.extend(w.setup_sql());
    }
    for sql in &statements {
        conn.query_drop(sql)
            .await
            .map_err(|e| RunError::Setup(format!("{sql}: {e}")))?;
    }
    let _ = conn.disconnect().await;
    // Every node must show the setup before clients start, or an early bank read on a
    // lagging node would see no accounts and be reported as an anomaly.
    let deadline = Instant::now() + config.recovery_timeout;
    for e in endpoints {
        for w in &config.workloads {
            let (sql, expected) = w.setup_probe();
            let mut last = String::from("not tried");
            loop {
                if Instant::now() >= deadline {
                    return Err(RunError::Setup(format!(
                        "{} never showed the {} setup: {last}",
                        e.name,
                        w.name()
                    )));
                }
                match probe_count(e, account, &sql).await {
                    Ok(n) if n == expected => break,
                    Ok(n) => last = format!("{sql} = {n}, expected {expected}"),
                    Err(err) => last = err,
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    Ok(())
}

async fn probe_count(e: &Endpoint, account: &Account, sql: &str) -> Result<i64, String> {
    let mut conn = client::connect(client::tcp_opts(e, account), Duration::from_secs(3))
        .await
        .map_err(|f| f.describe())?;
    let n: Option<i64> = tokio::time::timeout(Duration::from_secs(3), conn.query_first(sql))
        .await
        .map_err(|_| "timeout".to_owned())?
        .map_err(|err| err.to_string())?;
    let _ = conn.disconnect().await;
    n.ok_or_else(|| "no row".to_owned())
}

struct ClientCtx {
    workload: Arc<Workload>,
    recorder: Recorder,
    opts: mysql_async::Opts,
    node: String,
    first_process: u64,
    /// Process ids of this client are `first_process + k * stride`, unique in the workload.
    stride: u64,
    seed: u64,
    deadline: Instant,
    op_timeout: Duration,
}

/// One client: invoke, run, complete, forever until the deadline. A client whose op ended in
/// `info` continues as a fresh process, as pairing requires.
async fn client_loop(ctx: ClientCtx) {
    let mut rng = StdRng::seed_from_u64(ctx.seed);
    let mut process = ctx.first_process;
    let mut conn: Option<mysql_async::Conn> = None;
    // Bounded by the deadline; each pass also sleeps or runs one op with a timeout.
    while Instant::now() < ctx.deadline {
        let Some(c) = conn.as_mut() else {
            match client::connect(ctx.opts.clone(), Duration::from_secs(3)).await {
                Ok(c) => conn = Some(c),
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
            continue;
        };
        let (f, value) = ctx.workload.generate(&mut rng);
        let p = Process::Client(process);
        ctx.recorder
            .record(Op::invoke(p, f.clone(), value.clone()).with_node(&ctx.node));
        let mut phase = Phase::Before;
        let outcome = tokio::time::timeout(
            ctx.op_timeout,
            ctx.workload.execute(c, &f, &value, &mut phase),
        )
        .await
        .unwrap_or(Err(Failure::Timeout));
        match outcome {
            Ok(Done::Ok(v)) => ctx.recorder.record(Op::ok(p, f, v).with_node(&ctx.node)),
            Ok(Done::Incremented { value, wrote }) => ctx
                .recorder
                .record(Op::ok(p, f, value).with_node(&ctx.node).with_wrote(wrote)),
            Ok(Done::Fail(why)) => ctx
                .recorder
                .record(Op::fail(p, f, value).with_node(&ctx.node).with_error(why)),
            Err(failure) => {
                let verdict = classify(phase, &failure);
                let op = match verdict {
                    Verdict::Fail => Op::fail(p, f, value),
                    Verdict::Info => Op::info(p, f, value),
                };
                ctx.recorder
                    .record(op.with_node(&ctx.node).with_error(failure.describe()));
                if verdict == Verdict::Info {
                    process += ctx.stride;
                }
                if !failure.connection_usable() || !rollback(c).await {
                    conn = None;
                }
            }
        }
        let pause = rng.random_range(0..20);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    if let Some(c) = conn {
        let _ = tokio::time::timeout(Duration::from_secs(2), c.disconnect()).await;
    }
}

/// Ends a transaction a server error left open; false if the connection is no longer usable.
async fn rollback(conn: &mut mysql_async::Conn) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(5), conn.query_drop("ROLLBACK")).await,
        Ok(Ok(()))
    )
}

/// The final read of one workload on every endpoint, each on a fresh process. A read that
/// fails is retried a few times: the checkers need at least one successful final read.
async fn final_reads(
    w: &Workload,
    recorder: &Recorder,
    endpoints: &[Endpoint],
    account: &Account,
    op_timeout: Duration,
) {
    // Far above any process id a client can reach in one run.
    let mut process = 1_000_000_000u64;
    for e in endpoints {
        for _attempt in 0..3 {
            let p = Process::Client(process);
            process += 1;
            let (f, value) = w.final_read();
            let opts = client::session_opts(e, account, w.kind.session_init());
            let mut conn = match client::connect(opts, Duration::from_secs(5)).await {
                Ok(c) => c,
                Err(_) => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            recorder.record(Op::invoke(p, f.clone(), value.clone()).with_node(&e.name));
            let mut phase = Phase::Read;
            let outcome = tokio::time::timeout(
                op_timeout,
                w.execute_final(&mut conn, &f, &value, &mut phase),
            )
            .await
            .unwrap_or(Err(Failure::Timeout));
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.disconnect()).await;
            match outcome {
                Ok(Done::Ok(v)) => {
                    recorder.record(Op::ok(p, f, v).with_node(&e.name));
                    break;
                }
                Ok(Done::Incremented { value, wrote }) => {
                    // A final read never increments; recorded faithfully all the same.
                    recorder.record(Op::ok(p, f, value).with_node(&e.name).with_wrote(wrote));
                    break;
                }
                Ok(Done::Fail(why)) => {
                    recorder.record(Op::fail(p, f, value).with_node(&e.name).with_error(why));
                }
                Err(failure) => {
                    let op = match classify(phase, &failure) {
                        Verdict::Fail => Op::fail(p, f, value),
                        Verdict::Info => Op::info(p, f, value),
                    };
                    recorder.record(op.with_node(&e.name).with_error(failure.describe()));
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

fn write_edn(dir: &Path, name: &str, history: &crate::history::History) -> Result<(), RunError> {
    let path = dir.join(format!("{name}.edn"));
    let file = std::fs::File::create(&path).map_err(RunError::io("creating an EDN history"))?;
    let mut out = std::io::BufWriter::new(file);
    edn::write_history(history, &mut out).map_err(RunError::io("writing an EDN history"))?;
    std::io::Write::flush(&mut out).map_err(RunError::io("writing an EDN history"))
}

/// `run.json` (seed, settings, nemesis log, checksums) and a matching section in results.md.
fn append_run_section(
    config: &RunConfig,
    events: &[NemesisEvent],
    convergence: &convergence::Convergence,
    node_errors: &[(String, String)],
    dir: &Path,
) -> Result<(), RunError> {
    let target = match &config.target {
        Target::Certus { nodes, dir, .. } => {
            format!("certus, {nodes} nodes, data in {}", dir.display())
        }
        Target::Endpoints(list) => format!("endpoints {}", list.join(",")),
        Target::Galera { endpoints, dir } => format!(
            "Galera endpoints {} (nodes in {})",
            endpoints.join(","),
            dir.display()
        ),
    };
    let run = serde_json::json!({
        "target": target,
        "seed": config.seed,
        "time_limit_secs": config.time_limit.as_secs_f64(),
        "workloads": config.workloads.iter().map(|w| w.name()).collect::<Vec<_>>(),
        "nemeses": config.nemeses.iter().map(|n| n.name()).collect::<Vec<_>>(),
        "nemesis_interval_secs": config.nemesis_interval.as_secs_f64(),
        "fault_duration_secs": config.fault_duration.as_secs_f64(),
        "clients_per_node": config.clients_per_node,
        "consistency": if config.serializable { "serializable" } else { "snapshot-isolation" },
        "nemesis": events,
        "checksums": convergence.checksums,
        "recovery_secs": convergence.waited.as_secs_f64(),
        "node_errors": node_errors,
    });
    let text = serde_json::to_string_pretty(&run).map_err(|e| RunError::Setup(e.to_string()))?;
    std::fs::write(dir.join("run.json"), text).map_err(RunError::io("writing run.json"))?;

    let mut md = String::new();
    let _ = writeln!(md, "\n## Run\n");
    let _ = writeln!(md, "* target: {target}");
    let _ = writeln!(md, "* seed: {}", config.seed);
    let _ = writeln!(
        md,
        "* list-append held to: {}",
        if config.serializable {
            "serializability"
        } else {
            "snapshot isolation (G2-item write skew accepted)"
        }
    );
    let _ = writeln!(
        md,
        "* workload phase: {:.0} s; nemeses: {}; fault every {:.0} s for {:.0} s",
        config.time_limit.as_secs_f64(),
        if config.nemeses.is_empty() {
            "none".to_owned()
        } else {
            config
                .nemeses
                .iter()
                .map(|n| n.name())
                .collect::<Vec<_>>()
                .join(", ")
        },
        config.nemesis_interval.as_secs_f64(),
        config.fault_duration.as_secs_f64()
    );
    let _ = writeln!(
        md,
        "* recovery: {} {:.1} s after healing",
        if convergence.result.valid {
            "every node serving and every backend identical"
        } else {
            "**gave up** (see the convergence row)"
        },
        convergence.waited.as_secs_f64()
    );
    if !events.is_empty() {
        let _ = writeln!(md, "\n| t (s) | nemesis | error |\n|---:|---|---|");
        for e in events {
            let _ = writeln!(
                md,
                "| {:.1} | {} | {} |",
                e.at_secs,
                e.action,
                e.error.as_deref().unwrap_or("")
            );
        }
    }
    if !node_errors.is_empty() {
        let _ = writeln!(md, "\n### certus errors in the node logs\n");
        let _ = writeln!(md, "```text");
        for (node, line) in node_errors {
            let _ = writeln!(md, "{node}: {}", line.replace("```", "'''"));
        }
        let _ = writeln!(md, "```");
    }
    let path = dir.join("results.md");
    let mut text = std::fs::read_to_string(&path).map_err(RunError::io("reading results.md"))?;
    text.push_str(&md);
    std::fs::write(&path, text).map_err(RunError::io("writing results.md"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_host_and_port() {
        let e = parse_endpoints(&["db1:3306".into(), "[::1]:3307".into()]).unwrap();
        assert_eq!((e[0].host.as_str(), e[0].port), ("db1", 3306));
        assert_eq!((e[1].host.as_str(), e[1].port), ("::1", 3307));
        assert!(parse_endpoints(&["db1".into()]).is_err());
        assert!(parse_endpoints(&["db1:x".into()]).is_err());
        assert!(parse_endpoints(&[]).is_err());
    }
}
