//! `certus dev-cluster`: a local cluster for trying certus, in one foreground process. Node i
//! (1-based) listens for clients on base_port+i, keeps its data under DIR/node<i>, and runs its own
//! managed MariaDB. An administrative account is created on every backend before the addresses are
//! printed, and the addresses are also written to DIR/cluster.env.
//!
//! Until the replicated write path lands, the default is a single node: independent nodes
//! would look like a cluster without being one.

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
    let mut nodes = Vec::new();
    for i in 1..=opts.nodes {
        let fail = |message: String| DevClusterError::Node { node: i, message };
        let port = opts
            .base_port
            .checked_add(i)
            .ok_or_else(|| fail("port out of range".into()))?;
        let mut raw = RawNodeConfig::default();
        raw.node_id = Some(u64::from(i));
        raw.node_name = Some(format!("node{i}"));
        raw.listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
        raw.data_dir = Some(dir.join(format!("node{i}")));
        raw.backend_mode = Some(BackendMode::Managed);
        let cfg = raw.validate().map_err(|e| fail(e.to_string()))?;
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| fail(format!("cannot listen on 127.0.0.1:{port}: {e}")))?;
        let node = match Node::start(cfg, listener).await {
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
