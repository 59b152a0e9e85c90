//! What a node knows about the other members, learned by status gossip over the peer
//! transport: each member's client address (for `wsrep_incoming_addresses`) and whether it
//! answered recently (for `wsrep_cluster_size`).
//!
//! Owns the gossip message, the view of the members and the gossip task. Must not touch Raft:
//! the exchange rides on the peer RPC as opaque bytes and never decides Primary or leadership;
//! it only describes the component to status readers.
//!
//! Why gossip and not a config key per member: nodes bind their client listeners themselves
//! (port 0 in tests), so only the node itself knows its address for sure, and liveness needs a
//! message anyway: a follower hears only from the leader in Raft, never from the other followers.

use crate::ids::NodeId;
use crate::replication::{GossipClient, GossipHandler};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often every peer is asked.
const GOSSIP_INTERVAL: Duration = Duration::from_millis(500);
/// How long one exchange may take.
const GOSSIP_TIMEOUT: Duration = Duration::from_millis(500);
/// A peer not heard from for this long is out of the component (two election timeouts: a
/// loaded machine delays answers, and a dead node is still noticed within a few seconds).
const ALIVE_WINDOW: Duration = Duration::from_secs(3);

/// What one node tells another about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct MemberInfo {
    node_id: u64,
    name: String,
    client_address: String,
}

#[derive(Debug, Clone)]
struct Seen {
    info: MemberInfo,
    at: Instant,
}

/// This node's view of the members.
pub(crate) struct MemberView {
    me: MemberInfo,
    /// Configured member ids (this node included): gossip from anyone else is ignored.
    members: Vec<u64>,
    seen: Mutex<BTreeMap<u64, Seen>>,
}

/// One member in the component as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    pub(crate) node_id: u64,
    pub(crate) client_address: String,
}

impl MemberView {
    pub(crate) fn new(
        node_id: NodeId,
        name: String,
        client_address: String,
        members: Vec<u64>,
    ) -> Arc<MemberView> {
        Arc::new(MemberView {
            me: MemberInfo {
                node_id: node_id.0,
                name,
                client_address,
            },
            members,
            seen: Mutex::new(BTreeMap::new()),
        })
    }

    fn encode_me(&self) -> Vec<u8> {
        serde_json::to_vec(&self.me).unwrap_or_default()
    }

    /// Records what `from` said about itself; ignores anything that does not decode or that
    /// claims another node's identity.
    fn record(&self, from: NodeId, bytes: &[u8]) {
        let Ok(info) = serde_json::from_slice::<MemberInfo>(bytes) else {
            return;
        };
        if info.node_id != from.0 || !self.members.contains(&from.0) {
            return;
        }
        if let Ok(mut seen) = self.seen.lock() {
            seen.insert(
                from.0,
                Seen {
                    info,
                    at: Instant::now(),
                },
            );
        }
    }

    /// The peer-RPC handler: record the caller, answer with ourselves.
    pub(crate) fn handler(self: &Arc<Self>) -> GossipHandler {
        let view = self.clone();
        Arc::new(move |from, bytes| {
            view.record(from, &bytes);
            view.encode_me()
        })
    }

    /// This node and every member heard from within the alive window, by node id.
    pub(crate) fn component(&self) -> Vec<Member> {
        let now = Instant::now();
        let mut out = vec![Member {
            node_id: self.me.node_id,
            client_address: self.me.client_address.clone(),
        }];
        if let Ok(seen) = self.seen.lock() {
            out.extend(
                seen.values()
                    .filter(|s| now.duration_since(s.at) < ALIVE_WINDOW)
                    .map(|s| Member {
                        node_id: s.info.node_id,
                        client_address: s.info.client_address.clone(),
                    }),
            );
        }
        out.sort_by_key(|m| m.node_id);
        out.dedup_by_key(|m| m.node_id);
        out
    }
}

/// Exchanges gossip with every peer every [`GOSSIP_INTERVAL`] until `shutdown`.
pub(crate) async fn run(
    view: Arc<MemberView>,
    client: GossipClient,
    mut shutdown: watch::Receiver<bool>,
) {
    let peers: Vec<NodeId> = client.peers().collect();
    loop {
        for &peer in &peers {
            let (view, client) = (view.clone(), client.clone());
            // One task per exchange: a dead peer's timeout must not delay news from the others.
            tokio::spawn(async move {
                if let Ok(answer) = client
                    .exchange(peer, view.encode_me(), GOSSIP_TIMEOUT)
                    .await
                {
                    view.record(peer, &answer);
                }
            });
        }
        tokio::select! {
            _ = tokio::time::sleep(GOSSIP_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: u64, addr: &str) -> Vec<u8> {
        serde_json::to_vec(&MemberInfo {
            node_id: id,
            name: format!("node{id}"),
            client_address: addr.into(),
        })
        .unwrap()
    }

    #[test]
    fn the_component_is_this_node_and_the_members_heard_from() {
        let v = MemberView::new(
            NodeId(2),
            "node2".into(),
            "127.0.0.1:3302".into(),
            vec![1, 2, 3],
        );
        assert_eq!(v.component().len(), 1);
        v.record(NodeId(3), &info(3, "127.0.0.1:3303"));
        v.record(NodeId(1), &info(1, "127.0.0.1:3301"));
        let addrs: Vec<String> = v
            .component()
            .into_iter()
            .map(|m| m.client_address)
            .collect();
        assert_eq!(
            addrs,
            vec!["127.0.0.1:3301", "127.0.0.1:3302", "127.0.0.1:3303"]
        );
    }

    #[test]
    fn gossip_that_lies_about_its_sender_or_is_not_a_member_is_ignored() {
        let v = MemberView::new(NodeId(1), "node1".into(), "a:1".into(), vec![1, 2, 3]);
        v.record(NodeId(2), &info(3, "x:3"));
        v.record(NodeId(9), &info(9, "x:9"));
        v.record(NodeId(2), b"not json");
        assert_eq!(v.component().len(), 1);
    }

    #[test]
    fn the_handler_answers_with_this_node() {
        let v = MemberView::new(NodeId(1), "node1".into(), "a:1".into(), vec![1, 2]);
        let answer = (v.handler())(NodeId(2), info(2, "b:2"));
        let me: MemberInfo = serde_json::from_slice(&answer).unwrap();
        assert_eq!(me.client_address, "a:1");
        assert_eq!(v.component().len(), 2);
    }
}
