//! The clustercheck verdict: whether a load balancer (HAProxy `option httpchk`, ProxySQL, a
//! plain `curl`) may send clients to this node, and the byte-exact answer of the widely used
//! `clustercheck` script (olafz/percona-clustercheck) for each verdict.
//!
//! It owns the decision rule and the four legacy bodies. It must not do I/O: the caller reads
//! the maintenance file and the snapshot, so the rule stays a pure function that tests can
//! drive through every case.

use crate::node::status::{LocalState, NodeStatus};

use super::response::response;

/// The product name the legacy bodies start with. DESIGN §11 uses Galera's; operators whose
/// checks match the Percona script's exact bytes set `Percona XtraDB Cluster`.
pub const DEFAULT_PRODUCT: &str = "Galera Cluster";

/// The four answers the script can give, in the order it checks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The maintenance file exists (checked before anything else, like the script's
    /// `/var/tmp/clustercheck.disabled`).
    ManuallyDisabled,
    /// Not Primary, not Synced (nor an allowed Donor), backend down, inconsistent, or lagging.
    NotSynced,
    /// Would be synced, but the backend is read-only and that is not allowed.
    ReadOnly,
    Synced,
}

/// The parts of the options the rule reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub(crate) available_when_donor: bool,
    pub(crate) available_when_readonly: bool,
    pub(crate) max_apply_lag: Option<u64>,
}

/// Decides the verdict for a node that is not in maintenance. `read_only` is only called when
/// read-only nodes are refused, as the script only queries `read_only` then.
pub(crate) fn verdict(
    status: &NodeStatus,
    policy: Policy,
    read_only: impl FnOnce() -> bool,
) -> Verdict {
    let state_serves = match status.local_state {
        LocalState::Synced => true,
        LocalState::Donor => policy.available_when_donor,
        LocalState::Initialized | LocalState::Joining | LocalState::Joined => false,
    };
    let healthy =
        state_serves && status.primary && status.backend_up && status.inconsistent.is_none();
    if !healthy {
        return Verdict::NotSynced;
    }
    // A node far behind the log serves stale reads; a balancer should treat it like a joiner.
    if policy
        .max_apply_lag
        .is_some_and(|max_lag| status.recv_queue > max_lag)
    {
        return Verdict::NotSynced;
    }
    if !policy.available_when_readonly && read_only() {
        return Verdict::ReadOnly;
    }
    Verdict::Synced
}

/// The exact bytes the script writes for `verdict`, with `product` in place of its
/// `Percona XtraDB Cluster`.
pub(crate) fn answer(verdict: Verdict, product: &str) -> Vec<u8> {
    let (code, tail) = match verdict {
        Verdict::Synced => (200, "is synced."),
        Verdict::NotSynced => (503, "is not synced."),
        Verdict::ReadOnly => (503, "is read-only."),
        Verdict::ManuallyDisabled => (503, "is manually disabled."),
    };
    let body = format!("{product} Node {tail}\r\n");
    response(code, "text/plain", body.as_bytes())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn synced_status() -> NodeStatus {
        NodeStatus {
            node_name: "db1".to_string(),
            node_id: 1,
            local_state: LocalState::Synced,
            primary: true,
            inconsistent: None,
            backend_up: true,
            removed: false,
            ready: true,
            cluster_size: 3,
            cluster_state_uuid: "6b1f6c2e-8d1a-4a8e-9a57-0f4a3c2b1d00".to_string(),
            cluster_conf_id: 7,
            local_index: 0,
            incoming_addresses: "127.0.0.1:3306,127.0.0.1:3307,127.0.0.1:3308".to_string(),
            last_committed: 1234,
            recv_queue: 0,
            leader: Some(1),
            local_commits: 100,
            local_cert_failures: 3,
            local_bf_aborts: 2,
            local_replays: 0,
            replicated: 100,
            received: 250,
            flow_control_paused: 0.25,
            flow_control_paused_ns: 1_500_000_000,
            flow_control_sent: 0,
            flow_control_recv: 1,
            flow_control_active: false,
            provider_version: "certus 0.1.0".to_string(),
            latency: None,
        }
    }

    const STRICT: Policy = Policy {
        available_when_donor: false,
        available_when_readonly: true,
        max_apply_lag: None,
    };

    fn never_asked() -> bool {
        panic!("read_only must not be queried when read-only nodes are allowed")
    }

    #[test]
    fn percona_product_answers_are_byte_identical_to_the_script() {
        let product = "Percona XtraDB Cluster";
        assert_eq!(
            answer(Verdict::Synced, product),
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 40\r\n\r\nPercona XtraDB Cluster Node is synced.\r\n".to_vec()
        );
        assert_eq!(
            answer(Verdict::NotSynced, product),
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 44\r\n\r\nPercona XtraDB Cluster Node is not synced.\r\n".to_vec()
        );
        assert_eq!(
            answer(Verdict::ReadOnly, product),
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 43\r\n\r\nPercona XtraDB Cluster Node is read-only.\r\n".to_vec()
        );
        assert_eq!(
            answer(Verdict::ManuallyDisabled, product),
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 51\r\n\r\nPercona XtraDB Cluster Node is manually disabled.\r\n".to_vec()
        );
    }

    #[test]
    fn default_product_is_galera_with_matching_length() {
        assert_eq!(
            answer(Verdict::Synced, DEFAULT_PRODUCT),
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 32\r\n\r\nGalera Cluster Node is synced.\r\n".to_vec()
        );
    }

    #[test]
    fn synced_primary_node_is_synced() {
        assert_eq!(
            verdict(&synced_status(), STRICT, never_asked),
            Verdict::Synced
        );
    }

    #[test]
    fn each_unhealthy_condition_alone_is_not_synced() {
        type Spoil = fn(&mut NodeStatus);
        let cases: Vec<(&str, Spoil)> = vec![
            ("non-primary", |s| s.primary = false),
            ("backend down", |s| s.backend_up = false),
            ("inconsistent", |s| {
                s.inconsistent = Some("apply failed at seqno 9".to_string())
            }),
            ("initialized", |s| s.local_state = LocalState::Initialized),
            ("joining", |s| s.local_state = LocalState::Joining),
            ("joined", |s| s.local_state = LocalState::Joined),
            ("donor", |s| s.local_state = LocalState::Donor),
        ];
        for (name, spoil) in cases {
            let mut status = synced_status();
            spoil(&mut status);
            assert_eq!(
                verdict(&status, STRICT, never_asked),
                Verdict::NotSynced,
                "{name}"
            );
        }
    }

    #[test]
    fn donor_is_synced_only_when_allowed() {
        let mut status = synced_status();
        status.local_state = LocalState::Donor;
        let allow = Policy {
            available_when_donor: true,
            ..STRICT
        };
        assert_eq!(verdict(&status, allow, never_asked), Verdict::Synced);
        // An allowed donor is still refused when it lost the primary component.
        status.primary = false;
        assert_eq!(verdict(&status, allow, never_asked), Verdict::NotSynced);
    }

    #[test]
    fn read_only_refused_only_when_configured() {
        let refuse = Policy {
            available_when_readonly: false,
            ..STRICT
        };
        assert_eq!(
            verdict(&synced_status(), refuse, || true),
            Verdict::ReadOnly
        );
        assert_eq!(verdict(&synced_status(), refuse, || false), Verdict::Synced);
        assert_eq!(
            verdict(&synced_status(), STRICT, never_asked),
            Verdict::Synced
        );
    }

    #[test]
    fn not_synced_wins_over_read_only() {
        let refuse = Policy {
            available_when_readonly: false,
            ..STRICT
        };
        let mut status = synced_status();
        status.primary = false;
        assert_eq!(verdict(&status, refuse, || true), Verdict::NotSynced);
    }

    #[test]
    fn apply_lag_above_the_limit_is_not_synced() {
        let lag = Policy {
            max_apply_lag: Some(10),
            ..STRICT
        };
        let mut status = synced_status();
        status.recv_queue = 10;
        assert_eq!(verdict(&status, lag, never_asked), Verdict::Synced);
        status.recv_queue = 11;
        assert_eq!(verdict(&status, lag, never_asked), Verdict::NotSynced);
        assert_eq!(verdict(&status, STRICT, never_asked), Verdict::Synced);
    }
}
