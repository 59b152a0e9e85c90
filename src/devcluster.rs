//! `certus dev-cluster`: a local cluster for trying certus, in one foreground process. Node i
//! (1-based) listens for clients on base_port+i, keeps its data under DIR/node<i>, and runs its own
//! managed MariaDB. An administrative account is created on every backend before the addresses are
//! printed, and the addresses are also written to DIR/cluster.env.
//!
//! Node i's peer (Raft) port is base_port+20+i; the cluster secret is generated once and kept in
//! DIR/cluster.secret, so a restarted dev-cluster rejoins its own logs.

use crate::config::{BackendMode, RawNodeConfig};
use crate::node::Node;
use std::fmt::Write as _;
use std::path::PathBuf;

pub struct DevClusterOptions {
    pub dir: PathBuf,
    pub base_port: u16,
    pub nodes: u16,
    pub admin_user: String,
    pub admin_password: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DevClusterError {
    #[error("node {node}: {message}")]
    Node { node: u16, message: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Starts the nodes; returns them with the text to show the user.
pub async fn start(opts: &DevClusterOptions) -> Result<(Vec<Node>, String), DevClusterError> {
    std::fs::create_dir_all(&opts.dir)?;
    let dir = std::fs::canonicalize(&opts.dir)?;
    // The cluster secret is kept in DIR so that a restarted dev-cluster rejoins its own log.
    let secret_file = dir.join("cluster.secret");
    let secret = match std::fs::read_to_string(&secret_file) {
        Ok(s) if s.trim().len() >= 16 => s.trim().to_owned(),
        _ => {
            use rand::Rng;
            let s: u128 = rand::rng().random();
            let s = format!("{s:032x}");
            std::fs::write(&secret_file, &s)?;
            s
        }
    };
    let mut nodes = Vec::new();
    for i in 1..=opts.nodes {
        let fail = |message: String| DevClusterError::Node { node: i, message };
        let port = opts
            .base_port
            .checked_add(i)
            .ok_or_else(|| fail("port out of range".into()))?;
        let peer_port = opts
            .base_port
            .checked_add(20 + i)
            .ok_or_else(|| fail("port out of range".into()))?;
        let mut raw = RawNodeConfig::default();
        raw.peer_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], peer_port)));
        raw.members = Some(
            (1..=opts.nodes)
                .map(|j| format!("{j}=127.0.0.1:{}", opts.base_port + 20 + j))
                .collect(),
        );
        raw.cluster_secret = Some(secret.clone());
        raw.node_id = Some(u64::from(i));
        raw.node_name = Some(format!("node{i}"));
        raw.listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
        raw.data_dir = Some(dir.join(format!("node{i}")));
        raw.backend_mode = Some(BackendMode::Managed);
        let cfg = raw.validate().map_err(|e| fail(e.to_string()))?;
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| fail(format!("cannot listen on 127.0.0.1:{port}: {e}")))?;
        let peer_listener = tokio::net::TcpListener::bind(cfg.peer_listen)
            .await
            .map_err(|e| fail(format!("cannot listen on 127.0.0.1:{peer_port}: {e}")))?;
        let http_port = opts
            .base_port
            .checked_add(10 + i)
            .ok_or_else(|| fail("port out of range".into()))?;
        let http = tokio::net::TcpListener::bind(("127.0.0.1", http_port))
            .await
            .map_err(|e| fail(format!("cannot listen on 127.0.0.1:{http_port}: {e}")))?;
        let listeners = crate::node::Listeners {
            client: listener,
            peer: peer_listener,
            http: Some(http),
        };
        let node = match Node::start(cfg, listeners).await {
            Ok(n) => n,
            Err(e) => {
                for n in nodes {
                    Node::shutdown(n).await;
                }
                return Err(fail(e.to_string()));
            }
        };
        if let Err(e) = node
            .ensure_admin_account(&opts.admin_user, &opts.admin_password)
            .await
        {
            node.shutdown().await;
            for n in nodes {
                Node::shutdown(n).await;
            }
            return Err(fail(e.to_string()));
        }
        nodes.push(node);
    }
    // Wait (bounded) until the cluster has formed and every node serves.
    for _ in 0..300 {
        if nodes.iter().all(Node::is_ready) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut env = String::new();
    let mut text = format!(
        "certus dev-cluster: {} node(s) under {}\n",
        nodes.len(),
        dir.display()
    );
    for (i, n) in nodes.iter().enumerate() {
        let _ = writeln!(
            env,
            "CERTUS_NODE{}=127.0.0.1:{}",
            i + 1,
            n.client_addr().port()
        );
        let _ = writeln!(
            text,
            "  node{}  127.0.0.1:{}  (backend socket {})",
            i + 1,
            n.client_addr().port(),
            n.backend_endpoint()
        );
    }
    std::fs::write(dir.join("cluster.env"), &env)?;
    if let Some(first) = nodes.first() {
        let _ = writeln!(
            text,
            "\nConnect with:\n  mariadb -h127.0.0.1 -P{} -u{} -p{}\n\nAddresses are in {}. Press Ctrl-C to stop.",
            first.client_addr().port(),
            opts.admin_user,
            opts.admin_password,
            dir.join("cluster.env").display()
        );
    }
    Ok((nodes, text))
}
