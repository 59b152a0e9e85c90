//! The component as status readers see it (`wsrep_cluster_size`, `wsrep_incoming_addresses`):
//! this node plus every member whose progress report arrived recently.
//!
//! Owns only the rule for who is in the component. Must not touch Raft: the reports ride on the
//! peer progress exchange (`progress.rs`), never decide Primary or leadership, and only describe
//! the component to status readers.
//!
//! Why reports and not a config key per member: nodes bind their client listeners themselves
//! (port 0 in tests), so only the node itself knows its address for sure, and liveness needs a
//! message anyway: a follower hears only from the leader in Raft, never from the other followers.

use super::progress::{NodeProgress, Progress};
use crate::ids::NodeId;
use std::time::Duration;

/// A peer not heard from for this long is out of the component (two election timeouts: a
/// loaded machine delays reports, and a dead node is still noticed within a few seconds).
const ALIVE_WINDOW: Duration = Duration::from_secs(3);

/// One member in the component as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    pub(crate) node_id: u64,
    pub(crate) client_address: String,
}

/// This node (at `own_address`) and every member heard from within the alive window, by id.
pub(crate) fn component(progress: &Progress, me: NodeId, own_address: &str) -> Vec<Member> {
    from_reports(progress.nodes(), me, own_address)
}

fn from_reports(nodes: Vec<NodeProgress>, me: NodeId, own_address: &str) -> Vec<Member> {
    let mut out = vec![Member {
        node_id: me.0,
        client_address: own_address.to_string(),
    }];
    out.extend(
        nodes
            .into_iter()
            .filter(|n| n.node != me && n.age < ALIVE_WINDOW)
            .map(|n| Member {
                node_id: n.node.0,
                client_address: n.client_address,
            }),
    );
    out.sort_by_key(|m| m.node_id);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Seqno;

    fn heard(id: u64, addr: &str, age_ms: u64) -> NodeProgress {
        NodeProgress {
            node: NodeId(id),
            applied: Seqno(0),
            queue: 0,
            age: Duration::from_millis(age_ms),
            live: true,
            fc_over: false,
            client_address: addr.into(),
            applied_index: 0,
        }
    }

    #[test]
    fn the_component_is_this_node_and_the_members_heard_from_recently() {
        let alone = from_reports(Vec::new(), NodeId(2), "127.0.0.1:3302");
        assert_eq!(alone.len(), 1);
        let nodes = vec![
            heard(3, "127.0.0.1:3303", 10),
            heard(1, "127.0.0.1:3301", 2_000),
            heard(2, "stale view of myself", 0),
            heard(4, "127.0.0.1:3304", 3_500),
        ];
        let addrs: Vec<String> = from_reports(nodes, NodeId(2), "127.0.0.1:3302")
            .into_iter()
            .map(|m| m.client_address)
            .collect();
        assert_eq!(
            addrs,
            vec!["127.0.0.1:3301", "127.0.0.1:3302", "127.0.0.1:3303"]
        );
    }
}
