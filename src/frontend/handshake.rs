//! Greeting and login. The greeting mirrors the backend's version and capabilities (minus what
//! the node does not relay: TLS, compression, LOCAL INFILE, MariaDB progress and bulk
//! extensions). The client's mysql_native_password token is verified against the backend's
//! account table and host patterns; the session's backend connection then logs in as the same
//! account with the same protocol options, and the backend's own OK completes the client's login.

use super::accounts::{self, client_host_name};
use super::error::ClientError;
use super::session::{ClientIo, Session};
use super::Frontend;
use crate::backend::session_conn::{Login, LoginReply, SessionConn};
use crate::ids::SessionId;
use crate::protocol::native_password::{self, Stage1};
use mysql_common::constants::{CapabilityFlags, MariadbCapabilities, StatusFlags};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthPlugin, HandshakePacket, HandshakeResponse};
use mysql_common::proto::MySerialize;
use rand::Rng;
use std::net::SocketAddr;
use std::sync::Arc;
use tracing::{debug, info};

/// During login no client packet may exceed this (MariaDB's own limit is similar).
const HANDSHAKE_MAX_PACKET: usize = 64 * 1024;
pub(crate) const NATIVE: &[u8] = b"mysql_native_password";

/// Capabilities the node relays faithfully.
fn relayable() -> CapabilityFlags {
    use CapabilityFlags as C;
    C::CLIENT_LONG_PASSWORD
        | C::CLIENT_FOUND_ROWS
        | C::CLIENT_LONG_FLAG
        | C::CLIENT_CONNECT_WITH_DB
        | C::CLIENT_NO_SCHEMA
        | C::CLIENT_ODBC
        | C::CLIENT_IGNORE_SPACE
        | C::CLIENT_PROTOCOL_41
        | C::CLIENT_INTERACTIVE
        | C::CLIENT_IGNORE_SIGPIPE
        | C::CLIENT_TRANSACTIONS
        | C::CLIENT_SECURE_CONNECTION
        | C::CLIENT_MULTI_STATEMENTS
        | C::CLIENT_MULTI_RESULTS
        | C::CLIENT_PS_MULTI_RESULTS
        | C::CLIENT_PLUGIN_AUTH
        | C::CLIENT_CONNECT_ATTRS
        | C::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        | C::CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS
        | C::CLIENT_SESSION_TRACK
        | C::CLIENT_DEPRECATE_EOF
}

/// MariaDB extensions the relay handles: extended metadata only changes column definitions.
fn relayable_mariadb() -> MariadbCapabilities {
    MariadbCapabilities::MARIADB_CLIENT_EXTENDED_METADATA
}

pub(crate) fn scramble() -> [u8; 20] {
    let mut rng = rand::rng();
    // Printable and never NUL: the second part travels NUL-terminated.
    std::array::from_fn(|_| rng.random_range(33u8..=126))
}

/// What a successful authentication established.
pub(crate) struct Identity {
    pub(crate) user: Vec<u8>,
    pub(crate) host: String,
    pub(crate) stage1: Option<Stage1>,
}

/// Everything a login established, handed to the session.
pub(crate) struct Established {
    pub(crate) identity: Identity,
    pub(crate) opts: Options,
    /// The greeting's nonce: COM_CHANGE_USER tokens are computed against it.
    pub(crate) nonce: [u8; 20],
    pub(crate) db: Option<Vec<u8>>,
}

/// The protocol options of a session, fixed at login.
#[derive(Clone, Copy)]
pub(crate) struct Options {
    pub(crate) capabilities: CapabilityFlags,
    pub(crate) mariadb_capabilities: MariadbCapabilities,
    pub(crate) collation: u8,
    pub(crate) max_packet_size: u32,
}

/// Runs the login. Returns the session, or None when the client was refused (the refusal has
/// been sent) or vanished.
pub(crate) async fn run(
    fe: &Arc<Frontend>,
    mut client: ClientIo,
    id: SessionId,
    peer: SocketAddr,
) -> Option<Session> {
    let host = client_host_name(peer.ip());
    let Some(info) = fe.backend.info().filter(|_| !fe.not_ready()) else {
        client.send_pre_greeting_error(&ClientError::NotReady).await;
        return None;
    };
    let server_caps = info.capabilities & relayable();
    let server_mariadb = info.mariadb_capabilities & relayable_mariadb();
    let nonce = scramble();
    let mut scramble_2 = nonce[8..].to_vec();
    scramble_2.push(0);
    let greeting = HandshakePacket::new(
        10,
        info.version.as_slice(),
        id.0,
        nonce[..8].try_into().unwrap_or([0; 8]),
        Some(scramble_2),
        server_caps,
        info.default_collation,
        StatusFlags::SERVER_STATUS_AUTOCOMMIT,
        Some(NATIVE),
    )
    .with_mariadb_ext_capabilities(server_mariadb);
    let mut payload = Vec::new();
    greeting.serialize(&mut payload);
    client.reader.set_max_payload(HANDSHAKE_MAX_PACKET);
    if client.send(0, &payload).await.is_err() {
        return None;
    }
    let net_read_timeout = fe.settings.net_read_timeout;
    let response = match tokio::time::timeout(net_read_timeout, client.reader.read()).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            debug!("client left during the handshake: {e}");
            return None;
        }
        Err(_) => {
            debug!("client stalled during the handshake");
            return None;
        }
    };
    let mut seq = response.next_seq();
    let parsed: Result<HandshakeResponse<'_>, _> = ParseBuf(&response.payload).parse(());
    let Ok(hr) = parsed else {
        client.send_error(seq, &ClientError::BadHandshake).await;
        return None;
    };
    let caps = hr.capabilities();
    if caps.contains(CapabilityFlags::CLIENT_SSL) && response.payload.len() <= 32 {
        // An SSL request although the greeting offered no TLS.
        client.send_error(seq, &ClientError::BadHandshake).await;
        return None;
    }
    if !caps.contains(CapabilityFlags::CLIENT_PROTOCOL_41)
        || !(caps.contains(CapabilityFlags::CLIENT_SECURE_CONNECTION)
            || caps.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA))
    {
        client.send_error(seq, &ClientError::ProtocolTooOld).await;
        return None;
    }
    let user = hr.user().to_vec();
    let mut token = hr.scramble_buf().to_vec();
    let mut nonce_used = nonce;
    let client_plugin_native = match hr.auth_plugin() {
        None => true,
        Some(AuthPlugin::MysqlNativePassword) => true,
        Some(_) => false,
    };
    if !client_plugin_native {
        // Ask the client to switch to mysql_native_password with a fresh nonce.
        nonce_used = scramble();
        let mut switch = vec![0xfe];
        switch.extend_from_slice(NATIVE);
        switch.push(0);
        switch.extend_from_slice(&nonce_used);
        switch.push(0);
        if client.send(seq, &switch).await.is_err() {
            return None;
        }
        match tokio::time::timeout(net_read_timeout, client.reader.read()).await {
            Ok(Ok(p)) => {
                seq = p.next_seq();
                token = p.payload;
            }
            _ => return None,
        }
    }
    let opts = Options {
        capabilities: caps & server_caps,
        mariadb_capabilities: hr.mariadb_ext_capabilities() & server_mariadb,
        collation: hr.collation(),
        max_packet_size: info.max_allowed_packet.min(u32::MAX as usize) as u32,
    };
    let identity = match authenticate(fe, &user, &host, peer, &nonce_used, &token).await {
        Ok(i) => i,
        Err(e) => {
            info!(user = %String::from_utf8_lossy(&user), %host, "login refused");
            client.send_error(seq, &e).await;
            return None;
        }
    };
    let db = hr.db_name().map(<[u8]>::to_vec).filter(|d| !d.is_empty());
    let attrs = hr.connect_attributes();
    let login = Login {
        user: &identity.user,
        stage1: identity.stage1.as_ref(),
        db: db.as_deref(),
        collation: opts.collation,
        capabilities: opts.capabilities,
        mariadb_capabilities: opts.mariadb_capabilities,
        connect_attrs: attrs,
        max_packet_size: opts.max_packet_size,
    };
    let (conn, reply) = match SessionConn::connect(&fe.backend.endpoint, &login).await {
        Ok(r) => r,
        Err(e) => {
            info!("backend connection for a new session failed: {e}");
            client.send_error(seq, &ClientError::NotReady).await;
            return None;
        }
    };
    match (conn, reply) {
        (Some(conn), LoginReply::Ok(ok)) => {
            if client.send(seq, &ok).await.is_err() {
                return None;
            }
            client.reader.set_max_payload(info.max_allowed_packet);
            let shared = fe.registry.register(id, conn.thread_id);
            debug!(user = %String::from_utf8_lossy(&identity.user), backend_thread = conn.thread_id, "logged in");
            Some(Session::new(
                fe.clone(),
                id,
                shared,
                (client, conn),
                Established {
                    identity,
                    opts,
                    nonce,
                    db,
                },
            ))
        }
        (_, LoginReply::Refused(err)) | (None, LoginReply::Ok(err)) => {
            let _ = client.send(seq, &err).await;
            None
        }
    }
}

/// Verifies `token` for `user` connecting from `peer`, the way MariaDB would.
pub(crate) async fn authenticate(
    fe: &Frontend,
    user: &[u8],
    host: &str,
    peer: SocketAddr,
    nonce: &[u8],
    token: &[u8],
) -> Result<Identity, ClientError> {
    let user_str = String::from_utf8_lossy(user).into_owned();
    let denied = || ClientError::AccessDenied {
        user: user_str.clone(),
        host: host.to_owned(),
        using_password: !token.is_empty(),
    };
    if user_str == fe.backend.service.user {
        return Err(ClientError::ServiceAccountLogin {
            user: user_str,
            host: host.to_owned(),
        });
    }
    let accounts = accounts::load(&fe.backend, &user_str)
        .await
        .map_err(|_| ClientError::NotReady)?;
    let account = accounts::choose(&accounts, &user_str, peer.ip()).ok_or_else(denied)?;
    if !(account.plugin.is_empty() || account.plugin == "mysql_native_password") {
        return Err(ClientError::UnsupportedAuthPlugin {
            user: user_str.clone(),
            host: host.to_owned(),
            plugin: account.plugin.clone(),
        });
    }
    let stage1 = if account.authentication_string.is_empty() {
        if !token.is_empty() {
            return Err(denied());
        }
        None
    } else {
        let stage2 =
            native_password::parse_stage2(&account.authentication_string).ok_or_else(denied)?;
        Some(native_password::verify(nonce, token, &stage2).ok_or_else(denied)?)
    };
    Ok(Identity {
        user: user.to_vec(),
        host: host.to_owned(),
        stage1,
    })
}
