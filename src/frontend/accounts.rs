//! Account lookup and host matching against the backend's own account table, so that a client
//! logs in to a node exactly as it would to MariaDB. The table is read through the service
//! account on every login: always current (no cache to invalidate after GRANT), at the cost of one
//! local round trip per connection.

use crate::backend::{Backend, BackendError};
use mysql_async::prelude::Queryable;
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Account {
    pub(crate) user: String,
    pub(crate) host: String,
    pub(crate) plugin: String,
    pub(crate) authentication_string: String,
}

/// How the client's address is named in MariaDB's messages and host patterns. Loopback is
/// `localhost`, as a MariaDB without skip-name-resolve reports it.
pub(crate) fn client_host_name(ip: IpAddr) -> String {
    if ip.is_loopback() {
        "localhost".into()
    } else {
        match ip {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(|v4| v4.to_string())
                .unwrap_or_else(|| v6.to_string()),
            IpAddr::V4(v4) => v4.to_string(),
        }
    }
}

/// MariaDB's LIKE-style host pattern (`%`, `_`, case-insensitive), `ip/netmask`, and
/// `localhost` for loopback clients.
pub(crate) fn host_matches(pattern: &str, ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    if let Some((net, mask)) = pattern.split_once('/') {
        if let (Ok(IpAddr::V4(net)), Ok(IpAddr::V4(mask)), IpAddr::V4(ip)) =
            (net.parse::<IpAddr>(), mask.parse::<IpAddr>(), ip)
        {
            return u32::from(ip) & u32::from(mask) == u32::from(net);
        }
        return false;
    }
    let names: Vec<String> = if ip.is_loopback() {
        vec!["localhost".into(), ip.to_string()]
    } else {
        vec![ip.to_string()]
    };
    names.iter().any(|n| like(pattern.as_bytes(), n.as_bytes()))
}

fn like(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative wildcard match with backtracking on the last '%': linear in practice, bounded by
    // pattern × text in the worst case (both are short host names).
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'_' || pattern[p].eq_ignore_ascii_case(&text[t])) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'%' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == b'%')
}

/// MariaDB's ordering of candidate accounts: the most specific host first (no wildcard beats a
/// wildcard, a later first wildcard beats an earlier one), then a named user before the anonymous
/// one. The first account whose user and host both match is the one the server would use.
fn specificity(a: &Account) -> (u8, usize, u8) {
    let host_rank = match a.host.find(['%', '_']) {
        None => (1, usize::MAX),
        Some(pos) => (0, pos),
    };
    (host_rank.0, host_rank.1, u8::from(!a.user.is_empty()))
}

pub(crate) fn choose<'a>(accounts: &'a [Account], user: &str, ip: IpAddr) -> Option<&'a Account> {
    let mut candidates: Vec<&Account> = accounts
        .iter()
        .filter(|a| (a.user == user || a.user.is_empty()) && host_matches(&a.host, ip))
        .collect();
    candidates.sort_by_key(|a| std::cmp::Reverse(specificity(a)));
    candidates.first().copied()
}

pub(crate) async fn load(backend: &Backend, user: &str) -> Result<Vec<Account>, BackendError> {
    let mut conn = backend.pool.get_conn().await?;
    let rows: Vec<(String, String, String, String)> = conn
        .exec(
            "SELECT User, Host, plugin, authentication_string FROM mysql.user WHERE (User = ? OR User = '') AND is_role = 'N'",
            (user,),
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|(user, host, plugin, authentication_string)| Account {
            user,
            host,
            plugin,
            authentication_string,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acct(user: &str, host: &str) -> Account {
        Account {
            user: user.into(),
            host: host.into(),
            plugin: "mysql_native_password".into(),
            authentication_string: String::new(),
        }
    }

    #[test]
    fn host_patterns_follow_mariadb_rules() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let ten: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(host_matches("%", ten));
        assert!(host_matches("localhost", lo));
        assert!(!host_matches("localhost", ten));
        assert!(host_matches("10.1.%", ten));
        assert!(!host_matches("10.2.%", ten));
        assert!(host_matches("10.1.2._", ten));
        assert!(host_matches("10.0.0.0/255.0.0.0", ten));
        assert!(!host_matches("11.0.0.0/255.0.0.0", ten));
        assert!(host_matches(
            "127.0.0.1",
            "::ffff:127.0.0.1".parse().unwrap()
        ));
        assert!(host_matches("%.%.%.3", ten));
        assert!(!host_matches("10.1.2.3x", ten));
    }

    #[test]
    fn the_most_specific_account_wins() {
        let ten: IpAddr = "10.1.2.3".parse().unwrap();
        let accts = vec![
            acct("app", "%"),
            acct("app", "10.1.%"),
            acct("", "10.1.2.3"),
            acct("app", "10.%"),
        ];
        assert_eq!(choose(&accts, "app", ten).unwrap().host, "10.1.2.3");
        let accts = vec![acct("app", "%"), acct("app", "10.1.%"), acct("app", "10.%")];
        assert_eq!(choose(&accts, "app", ten).unwrap().host, "10.1.%");
        assert!(choose(&[acct("app", "192.%")], "app", ten).is_none());
        assert!(choose(&[acct("other", "%")], "app", ten).is_none());
    }

    #[test]
    fn loopback_clients_are_named_localhost() {
        assert_eq!(client_host_name("127.0.0.1".parse().unwrap()), "localhost");
        assert_eq!(client_host_name("::1".parse().unwrap()), "localhost");
        assert_eq!(client_host_name("10.0.0.7".parse().unwrap()), "10.0.0.7");
    }
}
