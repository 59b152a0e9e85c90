//! The partition relay: an in-process TCP forwarder that sits on every peer link.
//!
//! Owns the relay listeners (one per node, on 127.0.0.1 port 0) and the set of cut links. Every
//! node's `--member` addresses point here; each node binds its outbound peer connections to its
//! own loopback address (`--peer-source-ip`), so the source address of an accepted connection
//! names the caller. A cut link refuses new connections and closes the live ones, in both
//! directions of the pair. It must not know what the bytes mean: it never parses Raft traffic.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A directed link: connections from the first node to the second.
pub(crate) type Link = (u64, u64);

struct Shared {
    cut: Mutex<BTreeSet<Link>>,
    /// Bumped on every change, so live forwarders re-check their link.
    epoch: watch::Sender<u64>,
    /// Loopback source address -> node id.
    sources: BTreeMap<IpAddr, u64>,
}

impl Shared {
    fn is_cut(&self, link: Link) -> bool {
        self.cut.lock().map(|c| c.contains(&link)).unwrap_or(true)
    }
}

pub(crate) struct Relay {
    shared: Arc<Shared>,
    addrs: BTreeMap<u64, SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl Relay {
    /// Binds one relay port per node. `targets` maps a node id to its real peer address;
    /// `sources` maps each node's outbound source address to its id.
    pub(crate) async fn start(
        targets: &BTreeMap<u64, SocketAddr>,
        sources: BTreeMap<IpAddr, u64>,
    ) -> std::io::Result<Relay> {
        let (epoch, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            cut: Mutex::new(BTreeSet::new()),
            epoch,
            sources,
        });
        let mut addrs = BTreeMap::new();
        let mut tasks = Vec::new();
        for (&node, &target) in targets {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            addrs.insert(node, listener.local_addr()?);
            tasks.push(tokio::spawn(accept_loop(
                listener,
                node,
                target,
                shared.clone(),
            )));
        }
        Ok(Relay {
            shared,
            addrs,
            tasks,
        })
    }

    /// The address the other nodes must use to reach `node`.
    pub(crate) fn addr(&self, node: u64) -> Option<SocketAddr> {
        self.addrs.get(&node).copied()
    }

    /// Replaces the set of cut links; live connections on newly cut links are closed.
    pub(crate) fn set_cut(&self, links: BTreeSet<Link>) {
        if let Ok(mut cut) = self.shared.cut.lock() {
            *cut = links;
        }
        self.shared.epoch.send_modify(|e| *e += 1);
    }

    pub(crate) fn heal(&self) {
        self.set_cut(BTreeSet::new());
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, to: u64, target: SocketAddr, shared: Arc<Shared>) {
    loop {
        let Ok((inbound, peer)) = listener.accept().await else {
            // Accept errors (fd exhaustion) are transient; do not spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        // An unknown source is not one of our nodes' peer clients; it gets no link.
        let Some(&from) = shared.sources.get(&peer.ip()) else {
            continue;
        };
        let link = (from, to);
        if shared.is_cut(link) {
            continue; // dropping `inbound` closes it
        }
        tokio::spawn(forward(inbound, link, target, shared.clone()));
    }
}

async fn forward(mut inbound: TcpStream, link: Link, target: SocketAddr, shared: Arc<Shared>) {
    let mut epoch = shared.epoch.subscribe();
    let connect = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(target)).await;
    let Ok(Ok(mut outbound)) = connect else {
        return; // the target node is down: the caller sees a closed connection
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
    tokio::pin!(copy);
    loop {
        tokio::select! {
            _ = &mut copy => return,
            changed = epoch.changed() => {
                if changed.is_err() || shared.is_cut(link) {
                    return; // both streams drop here, closing the link
                }
            }
        }
    }
}

/// Links that separate `a` from `b` in both directions.
pub(crate) fn cut_between(a: &[u64], b: &[u64]) -> BTreeSet<Link> {
    let mut links = BTreeSet::new();
    for &x in a {
        for &y in b {
            if x != y {
                links.insert((x, y));
                links.insert((y, x));
            }
        }
    }
    links
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An echo server standing in for a node's peer port.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn connect_from(src: &str, dst: SocketAddr) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{src}:0").parse().unwrap()).unwrap();
        socket.connect(dst).await.unwrap()
    }

    /// True when a round trip through the stream works; false when the relay closed it.
    async fn round_trip(s: &mut TcpStream) -> bool {
        if s.write_all(b"ping").await.is_err() {
            return false;
        }
        let mut buf = [0u8; 4];
        matches!(
            tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf)).await,
            Ok(Ok(4))
        ) && &buf == b"ping"
    }

    #[test]
    fn cut_between_is_symmetric_and_skips_self_links() {
        let links = cut_between(&[1], &[2, 3, 1]);
        let expected: BTreeSet<Link> = [(1, 2), (2, 1), (1, 3), (3, 1)].into_iter().collect();
        assert_eq!(links, expected);
    }

    #[tokio::test]
    async fn cut_link_closes_live_connections_and_refuses_new_ones_until_healed() {
        let target = echo_server().await;
        let targets: BTreeMap<u64, SocketAddr> = [(2, target)].into_iter().collect();
        let sources: BTreeMap<IpAddr, u64> = [
            ("127.0.0.11".parse().unwrap(), 1),
            ("127.0.0.13".parse().unwrap(), 3),
        ]
        .into_iter()
        .collect();
        let relay = Relay::start(&targets, sources).await.unwrap();
        let addr = relay.addr(2).unwrap();

        let mut from1 = connect_from("127.0.0.11", addr).await;
        let mut from3 = connect_from("127.0.0.13", addr).await;
        assert!(round_trip(&mut from1).await);
        assert!(round_trip(&mut from3).await);

        relay.set_cut(cut_between(&[1], &[2]));
        assert!(
            !round_trip(&mut from1).await,
            "the live 1->2 link survived the cut"
        );
        assert!(round_trip(&mut from3).await, "the 3->2 link was cut too");
        let mut again = connect_from("127.0.0.11", addr).await;
        assert!(
            !round_trip(&mut again).await,
            "a new 1->2 connection got through"
        );

        relay.heal();
        let mut healed = connect_from("127.0.0.11", addr).await;
        assert!(round_trip(&mut healed).await);
    }

    #[tokio::test]
    async fn unknown_sources_are_refused() {
        let target = echo_server().await;
        let targets: BTreeMap<u64, SocketAddr> = [(1, target)].into_iter().collect();
        let sources = [("127.0.0.11".parse().unwrap(), 1)].into_iter().collect();
        let relay = Relay::start(&targets, sources).await.unwrap();
        let mut s = connect_from("127.0.0.1", relay.addr(1).unwrap()).await;
        assert!(!round_trip(&mut s).await);
    }
}
