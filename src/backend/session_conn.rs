//! A session's own connection to the backend, logged in as the client's account. It speaks the
//! protocol at the packet level (no result decoding), so the frontend can relay responses byte for
//! byte. Login uses mysql_native_password with stage1 = SHA1(password), recovered from the
//! client's scramble: the password itself is never known to the node.

use super::{BackendError, Endpoint};
use crate::protocol::native_password::{self, Stage1};
use crate::protocol::{Packet, PacketReader, PacketWriter};
use mysql_common::constants::{CapabilityFlags, MariadbCapabilities};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthPlugin, HandshakePacket, HandshakeResponse};
use mysql_common::proto::MySerialize;
use std::collections::HashMap;
use std::pin::Pin;
use tokio::io::{AsyncRead, AsyncWrite};

pub(crate) type BoxRead = Pin<Box<dyn AsyncRead + Send>>;
pub(crate) type BoxWrite = Pin<Box<dyn AsyncWrite + Send>>;

/// Backend packets are trusted, but still bounded: MariaDB's own hard maximum.
const BACKEND_MAX_PACKET: usize = 1 << 30;

pub(crate) struct Greeting {
    pub(crate) version: Vec<u8>,
    pub(crate) thread_id: u32,
    pub(crate) scramble: Vec<u8>,
    pub(crate) capabilities: CapabilityFlags,
    pub(crate) mariadb_capabilities: MariadbCapabilities,
    pub(crate) default_collation: u8,
}

fn parse_greeting(payload: &[u8]) -> Result<Greeting, BackendError> {
    if payload.first() == Some(&0xff) {
        let msg = String::from_utf8_lossy(payload.get(3..).unwrap_or_default()).into_owned();
        return Err(BackendError::Protocol(format!(
            "backend refused the connection: {msg}"
        )));
    }
    let hs: HandshakePacket<'_> = ParseBuf(payload)
        .parse(())
        .map_err(|e| BackendError::Protocol(format!("bad greeting: {e}")))?;
    let scramble = hs.nonce();
    Ok(Greeting {
        version: hs.server_version_ref().to_vec(),
        thread_id: hs.connection_id(),
        scramble,
        capabilities: hs.capabilities(),
        mariadb_capabilities: hs.mariadb_ext_capabilities(),
        default_collation: hs.default_collation(),
    })
}

async fn open(endpoint: &Endpoint) -> Result<(BoxRead, BoxWrite), BackendError> {
    match endpoint {
        Endpoint::Socket(path) => {
            let s = tokio::net::UnixStream::connect(path).await?;
            let (r, w) = s.into_split();
            Ok((Box::pin(r), Box::pin(w)))
        }
        Endpoint::Tcp(addr) => {
            let s = tokio::net::TcpStream::connect(addr.as_str()).await?;
            s.set_nodelay(true)?;
            let (r, w) = s.into_split();
            Ok((Box::pin(r), Box::pin(w)))
        }
    }
}

/// Connects and reads the greeting only (to learn the backend's version and capabilities).
pub(crate) async fn read_greeting(endpoint: &Endpoint) -> Result<Greeting, BackendError> {
    let (r, _w) = open(endpoint).await?;
    let mut reader = PacketReader::new(r, BACKEND_MAX_PACKET);
    let p = reader
        .read()
        .await
        .map_err(|e| BackendError::Protocol(e.to_string()))?;
    parse_greeting(&p.payload)
}

/// Who a session logs in as, and with which protocol options (the client's own).
pub(crate) struct Login<'a> {
    pub(crate) user: &'a [u8],
    pub(crate) stage1: Option<&'a Stage1>,
    pub(crate) db: Option<&'a [u8]>,
    pub(crate) collation: u8,
    pub(crate) capabilities: CapabilityFlags,
    pub(crate) mariadb_capabilities: MariadbCapabilities,
    pub(crate) connect_attrs: Option<HashMap<String, String>>,
    pub(crate) max_packet_size: u32,
}

pub(crate) struct SessionConn {
    pub(crate) reader: PacketReader<BoxRead>,
    pub(crate) writer: PacketWriter<BoxWrite>,
    pub(crate) thread_id: u32,
    scramble: Vec<u8>,
    capabilities: CapabilityFlags,
}

/// The outcome of a login attempt that reached the backend.
pub(crate) enum LoginReply {
    /// The backend's final OK packet payload (relayed to the client as its login OK).
    Ok(Vec<u8>),
    /// The backend's ERR packet payload, to relay verbatim.
    Refused(Vec<u8>),
}

fn auth_token(scramble: &[u8], stage1: Option<&Stage1>) -> Vec<u8> {
    match stage1 {
        Some(s) => native_password::token(scramble, s).to_vec(),
        None => Vec::new(),
    }
}

impl SessionConn {
    /// Opens a connection and logs in. `Err` means the backend could not be reached or spoke
    /// nonsense; a refusal by the backend is `Ok((None, LoginReply::Refused))`.
    pub(crate) async fn connect(
        endpoint: &Endpoint,
        login: &Login<'_>,
    ) -> Result<(Option<SessionConn>, LoginReply), BackendError> {
        let (r, w) = open(endpoint).await?;
        let mut reader = PacketReader::new(r, BACKEND_MAX_PACKET);
        let mut writer = PacketWriter::new(w);
        let greeting_packet = reader.read().await.map_err(proto)?;
        let greeting = parse_greeting(&greeting_packet.payload)?;
        let caps = login.capabilities
            | CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_PLUGIN_AUTH;
        let token = auth_token(&greeting.scramble, login.stage1);
        let response = HandshakeResponse::new(
            Some(token.as_slice()),
            (10, 11, 0),
            Some(login.user),
            login.db,
            Some(AuthPlugin::MysqlNativePassword),
            caps,
            login.connect_attrs.clone(),
            login.max_packet_size,
        )
        .with_mariadb_ext_capabilities(login.mariadb_capabilities);
        let mut payload = Vec::new();
        response.serialize(&mut payload);
        // mysql_common always asks for utf8mb4_general_ci; the session must get the collation
        // the client asked for. It is the single byte after capabilities(4) and max_packet(4).
        if let Some(b) = payload.get_mut(8) {
            *b = login.collation;
        }
        writer.write(greeting_packet.next_seq(), &payload).await?;
        writer.flush().await?;
        let reply = finish_auth(&mut reader, &mut writer, login.stage1).await?;
        let conn = match reply {
            LoginReply::Ok(_) => Some(SessionConn {
                reader,
                writer,
                thread_id: greeting.thread_id,
                scramble: greeting.scramble,
                capabilities: caps,
            }),
            LoginReply::Refused(_) => None,
        };
        Ok((conn, reply))
    }

    /// COM_CHANGE_USER on the backend: a full re-authentication as another account.
    pub(crate) async fn change_user(
        &mut self,
        login: &Login<'_>,
    ) -> Result<LoginReply, BackendError> {
        let mut p = vec![crate::protocol::command::CHANGE_USER];
        p.extend_from_slice(login.user);
        p.push(0);
        let token = auth_token(&self.scramble, login.stage1);
        p.push(token.len() as u8);
        p.extend_from_slice(&token);
        p.extend_from_slice(login.db.unwrap_or_default());
        p.push(0);
        p.extend_from_slice(&u16::from(login.collation).to_le_bytes());
        p.extend_from_slice(b"mysql_native_password\0");
        if self
            .capabilities
            .contains(CapabilityFlags::CLIENT_CONNECT_ATTRS)
        {
            let mut attrs = Vec::new();
            for (k, v) in login.connect_attrs.iter().flatten() {
                put_lenenc_bytes(&mut attrs, k.as_bytes());
                put_lenenc_bytes(&mut attrs, v.as_bytes());
            }
            put_lenenc_int(&mut p, attrs.len() as u64);
            p.extend_from_slice(&attrs);
        }
        self.writer.write(0, &p).await?;
        self.writer.flush().await?;
        finish_auth(&mut self.reader, &mut self.writer, login.stage1).await
    }
}

fn proto(e: crate::protocol::PacketError) -> BackendError {
    BackendError::Protocol(e.to_string())
}

/// Reads the server's verdict on a login, answering an auth switch to mysql_native_password.
async fn finish_auth(
    reader: &mut PacketReader<BoxRead>,
    writer: &mut PacketWriter<BoxWrite>,
    stage1: Option<&Stage1>,
) -> Result<LoginReply, BackendError> {
    for _ in 0..3 {
        let p: Packet = reader.read().await.map_err(proto)?;
        match p.first_byte() {
            Some(0x00) => return Ok(LoginReply::Ok(p.payload)),
            Some(0xff) => return Ok(LoginReply::Refused(p.payload)),
            Some(0xfe) => {
                let body = &p.payload[1..];
                let nul = body.iter().position(|b| *b == 0).unwrap_or(body.len());
                let plugin = &body[..nul];
                if plugin != b"mysql_native_password" {
                    return Err(BackendError::Protocol(format!(
                        "backend asked for auth plugin {:?}, which certus cannot answer",
                        String::from_utf8_lossy(plugin)
                    )));
                }
                let mut scramble = body.get(nul + 1..).unwrap_or_default().to_vec();
                if scramble.last() == Some(&0) {
                    scramble.pop();
                }
                let token = auth_token(&scramble, stage1);
                writer.write(p.next_seq(), &token).await?;
                writer.flush().await?;
            }
            _ => {
                return Err(BackendError::Protocol(
                    "unexpected packet during login".into(),
                ))
            }
        }
    }
    Err(BackendError::Protocol("too many auth round trips".into()))
}

pub(crate) fn put_lenenc_int(buf: &mut Vec<u8>, v: u64) {
    if v < 251 {
        buf.push(v as u8);
    } else if v < 1 << 16 {
        buf.push(0xfc);
        buf.extend_from_slice(&(v as u16).to_le_bytes());
    } else if v < 1 << 24 {
        buf.push(0xfd);
        buf.extend_from_slice(&(v as u32).to_le_bytes()[..3]);
    } else {
        buf.push(0xfe);
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

pub(crate) fn put_lenenc_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    put_lenenc_int(buf, b.len() as u64);
    buf.extend_from_slice(b);
}
