//! The `certus` command line. `anyhow` lives here only.

use anyhow::Context;
use certus::config::{LogFormat, RawNodeConfig};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "certus",
    version,
    about = "Galera-style synchronous multi-master replication proxy for MariaDB"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
// Parsed once at start-up: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Run one node: its MariaDB backend and its MySQL-protocol client edge.
    ///
    /// Settings come from the TOML file given with --config, then CERTUS_* environment variables,
    /// then flags (later sources win).
    Node {
        /// TOML config file.
        #[arg(long, env = "CERTUS_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: RawNodeConfig,
    },
    /// Print this stopped node's position as `Recovered position: <uuid>:<seqno>` (like
    /// `mariadbd --wsrep-recover`) and record it in grastate.dat.
    ///
    /// Starts the managed backend briefly to read its applied seqno.
    Recover {
        /// TOML config file of the node.
        #[arg(long, env = "CERTUS_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: RawNodeConfig,
    },
    /// Form a new single-node cluster from this stopped node's state, after a majority of the
    /// members is lost for good. Other nodes are then added back as new members.
    ///
    /// Refuses when grastate.dat says safe_to_bootstrap: 0 or a reachable member is more
    /// advanced (naming the most advanced node), unless --force; always refuses while a
    /// reachable member is in the Primary component.
    Bootstrap {
        /// TOML config file of the node.
        #[arg(long, env = "CERTUS_CONFIG")]
        config: Option<PathBuf>,
        /// Bootstrap although this node may not be the most advanced.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        settings: RawNodeConfig,
    },
    /// Show a node's state and the cluster's, read from its HTTP /status endpoint.
    Status {
        /// The node's HTTP address.
        #[arg(long, env = "CERTUS_HTTP_ADDR", default_value = "127.0.0.1:9200")]
        http: String,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change or show the cluster's membership online, through any running member.
    ///
    /// The request goes to the member's peer listener and is authenticated with the cluster
    /// secret; a member that is not the leader passes it on to the leader.
    Cluster {
        #[command(flatten)]
        target: ClusterTarget,
        #[command(subcommand)]
        op: ClusterOp,
    },
    /// Start a local cluster of nodes with managed MariaDB backends, in the foreground.
    ///
    /// Node i listens for clients on BASE_PORT+i, for peers on BASE_PORT+20+i, and keeps its
    /// data in DIR/node<i>.
    DevCluster {
        /// Directory for every node's data.
        #[arg(long)]
        dir: PathBuf,
        /// Client port of node i is BASE_PORT+i.
        #[arg(long, default_value_t = 3300)]
        base_port: u16,
        /// Number of nodes.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=9))]
        nodes: u16,
        /// Administrative account created on every backend.
        #[arg(long, default_value = "admin")]
        admin_user: String,
        /// Its password.
        #[arg(long, default_value = "certus")]
        admin_password: String,
    },
}

#[derive(clap::Args)]
struct ClusterTarget {
    /// Peer address (host:port) of any running member (default: peer_listen from --config,
    /// else 127.0.0.1:4567).
    #[arg(long, global = true)]
    node: Option<String>,
    /// A node's TOML config file, for the cluster secret and the default --node.
    #[arg(long, env = "CERTUS_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// The cluster secret (default: cluster_secret from --config).
    #[arg(
        long,
        env = "CERTUS_CLUSTER_SECRET",
        hide_env_values = true,
        global = true
    )]
    cluster_secret: Option<String>,
}

#[derive(Subcommand)]
enum ClusterOp {
    /// Add a node: it must already run with `join = true`. It becomes a learner, receives the
    /// log, and is made a voter once it has caught up.
    AddNode {
        /// The new node's id (1-1000, unused in this cluster).
        #[arg(long)]
        id: u64,
        /// The new node's peer address (its peer_listen), as the other members reach it.
        #[arg(long)]
        peer: String,
        /// Seconds to wait for the new node to catch up before giving up (it stays a learner).
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Remove a node (voter or learner) from the membership. It then refuses clients.
    RemoveNode {
        #[arg(long)]
        id: u64,
    },
    /// Show the voters, learners and leader.
    Members,
}

async fn run_cluster(target: ClusterTarget, op: ClusterOp) -> anyhow::Result<()> {
    let file = match &target.config {
        Some(path) => Some(RawNodeConfig::from_file(path)?),
        None => None,
    };
    let secret = target
        .cluster_secret
        .or_else(|| file.as_ref().and_then(|f| f.cluster_secret.clone()))
        .context(
            "the cluster secret is required (--cluster-secret, CERTUS_CLUSTER_SECRET or --config)",
        )?;
    let node = target
        .node
        .or_else(|| {
            file.as_ref()
                .and_then(|f| f.peer_listen.map(|a| a.to_string()))
        })
        .unwrap_or_else(|| "127.0.0.1:4567".to_string());
    use certus::replication::{cluster_admin, AdminOp};
    let (op, wait) = match op {
        ClusterOp::AddNode { id, peer, timeout } => (
            AdminOp::AddNode {
                id,
                addr: peer,
                catch_up_ms: timeout.saturating_mul(1000),
            },
            // Catch-up plus the two membership entries.
            std::time::Duration::from_secs(timeout.saturating_add(90)),
        ),
        ClusterOp::RemoveNode { id } => (
            AdminOp::RemoveNode { id },
            std::time::Duration::from_secs(90),
        ),
        ClusterOp::Members => (AdminOp::Show, std::time::Duration::from_secs(10)),
    };
    let view = cluster_admin(&node, secret.as_bytes(), op, wait)
        .await
        .with_context(|| format!("cluster request through {node}"))?;
    print!("{view}");
    Ok(())
}

fn init_logging(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    // Colours only on a terminal: a journal or a log file gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

fn load_config(
    config: Option<PathBuf>,
    settings: RawNodeConfig,
) -> anyhow::Result<certus::config::NodeConfig> {
    let mut raw = match &config {
        Some(path) => RawNodeConfig::from_file(path)?,
        None => RawNodeConfig::default(),
    };
    raw.overlay(settings);
    Ok(raw.validate()?)
}

async fn run_recover(config: Option<PathBuf>, settings: RawNodeConfig) -> anyhow::Result<()> {
    let cfg = load_config(config, settings)?;
    init_logging(cfg.log_format, "warn");
    let position = certus::recovery::recover(&cfg)
        .await
        .context("certus recover")?;
    println!("{position}");
    Ok(())
}

async fn run_bootstrap(
    config: Option<PathBuf>,
    force: bool,
    settings: RawNodeConfig,
) -> anyhow::Result<()> {
    let cfg = load_config(config, settings)?;
    init_logging(cfg.log_format, "warn");
    let report = certus::recovery::bootstrap(&cfg, certus::recovery::BootstrapOptions { force })
        .await
        .context("certus bootstrap")?;
    for note in &report.notes {
        println!("{note}");
    }
    let (term, index) = report.last_log.unwrap_or_default();
    println!(
        "Bootstrapped a new single-node cluster {} from node {} (raft log {term}:{index}). \
         Start it with `certus node`, then add the other nodes back as new members.",
        report.uuid.hyphenated(),
        cfg.node_id
    );
    Ok(())
}

async fn run_node(cfg: certus::config::NodeConfig) -> anyhow::Result<()> {
    init_logging(cfg.log_format, "info");
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let peer_listener = tokio::net::TcpListener::bind(cfg.peer_listen)
        .await
        .with_context(|| format!("cannot listen for peers on {}", cfg.peer_listen))?;
    let http = tokio::net::TcpListener::bind(cfg.http_listen)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", cfg.http_listen))?;
    let listeners = certus::node::Listeners {
        client: listener,
        peer: peer_listener,
        http: Some(http),
    };
    let node = certus::node::Node::start(cfg, listeners).await?;
    wait_for_signal().await?;
    tracing::info!("shutting down");
    node.shutdown().await;
    Ok(())
}

async fn run_dev_cluster(opts: certus::devcluster::DevClusterOptions) -> anyhow::Result<()> {
    // openraft reports every unreachable peer while the nodes start one after another.
    init_logging(LogFormat::Text, "warn,certus=info,openraft=off");
    let (nodes, text) = certus::devcluster::start(&opts).await?;
    println!("{text}");
    wait_for_signal().await?;
    tracing::info!("stopping {} node(s)", nodes.len());
    for n in nodes {
        n.shutdown().await;
    }
    Ok(())
}

/// The process's runtime: `threads` workers, or one per CPU.
fn runtime(threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        b.worker_threads(n);
    }
    b.enable_all().build()
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Node { config, settings } => {
            // The node's settings choose its runtime, so they are read before it exists.
            let cfg = load_config(config, settings)?;
            runtime(Some(cfg.worker_threads))?.block_on(run_node(cfg))
        }
        Command::Recover { config, settings } => {
            runtime(None)?.block_on(run_recover(config, settings))
        }
        Command::Bootstrap {
            config,
            force,
            settings,
        } => runtime(None)?.block_on(run_bootstrap(config, force, settings)),
        Command::Status { http, json } => runtime(None)?.block_on(async {
            let status =
                certus::http::fetch_status(&http, std::time::Duration::from_secs(2)).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", certus::http::render_status(&status));
            }
            Ok(())
        }),
        Command::Cluster { target, op } => runtime(None)?.block_on(run_cluster(target, op)),
        Command::DevCluster {
            dir,
            base_port,
            nodes,
            admin_user,
            admin_password,
        } => runtime(None)?.block_on(run_dev_cluster(certus::devcluster::DevClusterOptions {
            dir,
            base_port,
            nodes,
            admin_user,
            admin_password,
        })),
    }
}
