//! State snapshot transfer (SST): what a Raft snapshot of a certus node holds, how a donor
//! writes it and how a joiner loads it into its backend (DESIGN §12).
//!
//! Owns: the snapshot data format, the logical dump of the local backend and its load. Must not
//! touch: Raft (the replication layer streams the file without reading it), certification (the
//! certifier's own encoding is carried as opaque bytes), the apply order (the apply task decides
//! when a load runs).
//!
//! A snapshot data file is
//! `MAGIC | len: u32 LE | crc32(header): u32 LE | header (bincode) | SQL text to the end`.
//! The header holds the Raft index and seqno the certification state was taken at, and that
//! state. The SQL is `mariadb-dump --single-transaction` of every schema but `mysql` (so the
//! user schemas, routines, triggers, events and views, and `certus.state` with the applied seqno
//! of the same consistent snapshot), then the accounts and their grants as `CREATE USER` /
//! `GRANT` statements, minus the node-local accounts (`KEPT_USERS` and the service account,
//! whose password differs on every node).
//!
//! Why the dump's seqno may differ from the header's: the certification state is captured under
//! the state machine's lock at seqno S; the dump is opened later, once the backend has applied
//! S, at whatever seqno B >= S it has reached by then (or B < S when every seqno in (B, S] was
//! an abort, which changes nothing in the backend). A joiner restores the certifier at S, loads
//! the dump, records max(B, S) as applied, and then certifies the log from S + 1 on and skips
//! the seqnos its backend already has. Nothing is paused on the donor for the dump.

use crate::backend::{Backend, Endpoint};
use crate::ids::Seqno;
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufWriter};

const MAGIC: &[u8; 12] = b"CERTUS-SST1\n";
/// A header larger than this is not one of ours (the certification index is far smaller).
const MAX_HEADER: u32 = 1 << 30;

/// Accounts every install creates for itself (any host); never transferred nor dropped. Their
/// PROXY grants can only be given by themselves, so they could not be recreated anyway.
const KEPT_USERS: &[&str] = &["root", "mariadb.sys"];
/// Schemas that are the server's own, not user data.
const SYSTEM_SCHEMAS: &[&str] = &["mysql", "information_schema", "performance_schema", "sys"];

/// How long a donor waits for its backend to apply up to the snapshot's seqno.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Header {
    /// The Raft log index the certification state was captured at.
    pub(crate) index: u64,
    /// The last seqno certified at `index`.
    pub(crate) seqno: u64,
    /// `Certifier::to_snapshot` bytes.
    pub(crate) certification: Vec<u8>,
}

fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// The header's bytes, as they open a snapshot file.
pub(crate) fn encode_header(h: &Header) -> Result<Vec<u8>, String> {
    let payload = bincode::serde::encode_to_vec(h, bincode_config())
        .map_err(|e| format!("encoding the snapshot header: {e}"))?;
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|l| *l <= MAX_HEADER)
        .ok_or("snapshot header too large")?;
    let mut out = Vec::with_capacity(payload.len() + 20);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Reads the header from the start of `r`; afterwards `r` is positioned at the SQL text.
pub(crate) fn read_header(r: &mut impl Read) -> Result<Header, String> {
    let mut magic = [0u8; 12];
    r.read_exact(&mut magic)
        .map_err(|e| format!("snapshot too short: {e}"))?;
    if &magic != MAGIC {
        return Err("not a certus snapshot (bad magic)".into());
    }
    let mut word = [0u8; 4];
    r.read_exact(&mut word)
        .map_err(|e| format!("snapshot header: {e}"))?;
    let len = u32::from_le_bytes(word);
    if len > MAX_HEADER {
        return Err(format!("snapshot header length {len} is implausible"));
    }
    r.read_exact(&mut word)
        .map_err(|e| format!("snapshot header: {e}"))?;
    let crc = u32::from_le_bytes(word);
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload)
        .map_err(|e| format!("snapshot header: {e}"))?;
    if crc32fast::hash(&payload) != crc {
        return Err("snapshot header checksum mismatch".into());
    }
    let (h, used): (Header, usize) = bincode::serde::decode_from_slice(&payload, bincode_config())
        .map_err(|e| format!("snapshot header: {e}"))?;
    if used != payload.len() {
        return Err("snapshot header has trailing bytes".into());
    }
    Ok(h)
}

/// What the dump and the load need of the local backend.
#[derive(Clone)]
pub(crate) struct SstBackend {
    pub(crate) pool: mysql_async::Pool,
    pub(crate) endpoint: Endpoint,
    pub(crate) user: String,
    pub(crate) password: String,
    /// Where the short-lived client option file (credentials for the CLI tools) is written.
    pub(crate) scratch_dir: PathBuf,
}

impl SstBackend {
    pub(crate) fn new(backend: &Backend, scratch_dir: PathBuf) -> SstBackend {
        SstBackend {
            pool: backend.pool.clone(),
            endpoint: backend.endpoint.clone(),
            user: backend.service.user.clone(),
            password: backend.service.password.clone(),
            scratch_dir,
        }
    }

    /// Writes a `[client]` option file (mode 0600) for mariadb-dump / mariadb; the password
    /// never appears on a command line. Removed when the guard drops.
    fn client_options(&self) -> Result<TempFile, String> {
        std::fs::create_dir_all(&self.scratch_dir)
            .map_err(|e| format!("{}: {e}", self.scratch_dir.display()))?;
        let path = self
            .scratch_dir
            .join(format!("sst-client-{:016x}.cnf", rand::random::<u64>()));
        let mut text = format!(
            "[client]\nuser={}\npassword=\"{}\"\n",
            self.user,
            self.password.replace('\\', "\\\\").replace('"', "\\\"")
        );
        match &self.endpoint {
            Endpoint::Socket(p) => text.push_str(&format!("socket={}\n", p.display())),
            Endpoint::Tcp(addr) => {
                let (host, port) = addr.rsplit_once(':').unwrap_or((addr.as_str(), "3306"));
                text.push_str(&format!(
                    "host={}\nport={port}\nprotocol=TCP\n",
                    host.trim_start_matches('[').trim_end_matches(']')
                ));
            }
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        std::io::Write::write_all(&mut f, text.as_bytes())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(TempFile(path))
    }

    fn is_kept_account(&self, user: &str, host: &str) -> bool {
        (user == self.user && host == "localhost") || KEPT_USERS.contains(&user)
    }
}

struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn quote_account(user: &str, host: &str) -> String {
    format!(
        "'{}'@'{}'",
        user.replace('\\', "\\\\").replace('\'', "\\'"),
        host.replace('\\', "\\\\").replace('\'', "\\'")
    )
}

fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// Writes a snapshot: waits until the backend has applied `header.seqno` (`applied` is the apply
/// task's position), then the header, the dump and the accounts. The dump runs holding `gate`
/// (see `OwnCommitGate`), once no XA that `certus.state` records as committed is still prepared.
pub(crate) async fn write_snapshot(
    out: tokio::fs::File,
    header: Header,
    mut applied: tokio::sync::watch::Receiver<Seqno>,
    gate: super::write_path::OwnCommitGate,
    backend: SstBackend,
) -> Result<(), String> {
    let target = Seqno(header.seqno);
    tokio::time::timeout(CATCH_UP_TIMEOUT, applied.wait_for(|a| *a >= target))
        .await
        .map_err(|_| format!("the backend did not apply seqno {target} in time"))?
        .map_err(|_| "the apply task has stopped".to_string())?;
    let mut w = BufWriter::with_capacity(1 << 20, out);
    let io = |e: std::io::Error| format!("writing the snapshot: {e}");
    w.write_all(&encode_header(&header)?).await.map_err(io)?;
    let held = tokio::time::timeout(CATCH_UP_TIMEOUT, gate.write_owned())
        .await
        .map_err(|_| "the applier's own-XA commits did not pause for the dump".to_string())?;
    recorded_xas_committed(&backend).await?;
    dump_schemas(&backend, &mut w).await?;
    drop(held);
    let accounts = dump_accounts(&backend).await?;
    w.write_all(accounts.as_bytes()).await.map_err(io)?;
    w.flush().await.map_err(io)?;
    w.into_inner().sync_all().await.map_err(io)?;
    Ok(())
}

/// How long a dump waits for the XAs `certus.state` names to leave the prepared state.
const RECORDED_XA_WAIT: Duration = Duration::from_secs(10);

/// Waits until no XA that `certus.state.origin_xid` names is still prepared. Such an XA is a
/// crash leftover (its commit was recorded, then the backend restarted before `XA COMMIT`) that
/// the node commits when it resolves orphans; a dump taken before that would hold its seqno
/// without its rows.
async fn recorded_xas_committed(backend: &SstBackend) -> Result<(), String> {
    let err = |e: mysql_async::Error| format!("checking prepared XAs before the dump: {e}");
    let mut conn = backend.pool.get_conn().await.map_err(err)?;
    let deadline = tokio::time::Instant::now() + RECORDED_XA_WAIT;
    loop {
        let recorded = crate::apply::recorded_xids(&mut conn).await.map_err(err)?;
        let prepared = crate::apply::prepared_gtrids(&mut conn)
            .await
            .map_err(err)?;
        let pending = recorded
            .into_iter()
            .find(|x| prepared.iter().any(|g| g.as_slice() == x.as_bytes()));
        let Some(xid) = pending else {
            let _ = conn.disconnect().await;
            return Ok(());
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "{xid} is recorded as committed in certus.state but still prepared; no dump until it is committed"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `mariadb-dump` of every schema except `mysql`, in one consistent snapshot, streamed into `w`.
async fn dump_schemas(
    backend: &SstBackend,
    w: &mut BufWriter<tokio::fs::File>,
) -> Result<(), String> {
    let options = backend.client_options()?;
    let mut cmd = tokio::process::Command::new("mariadb-dump");
    cmd.arg(format!("--defaults-extra-file={}", options.0.display()))
        .args([
            "--single-transaction",
            "--all-databases",
            "--ignore-database=mysql",
            "--ignore-database=sys",
            "--routines",
            "--events",
            "--triggers",
            "--hex-blob",
            "--skip-dump-date",
            "--skip-lock-tables",
            "--no-tablespaces",
            "--max-allowed-packet=1G",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run mariadb-dump: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("mariadb-dump has no stdout")?;
    let mut stderr = child.stderr.take().ok_or("mariadb-dump has no stderr")?;
    let errors = tokio::spawn(async move {
        let mut s = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut s).await;
        s
    });
    tokio::io::copy(&mut stdout, w)
        .await
        .map_err(|e| format!("streaming the dump: {e}"))?;
    let status = child
        .wait()
        .await
        .map_err(|e| format!("mariadb-dump: {e}"))?;
    let stderr = errors.await.unwrap_or_default();
    if !status.success() {
        return Err(format!("mariadb-dump failed ({status}): {}", stderr.trim()));
    }
    Ok(())
}

/// Every account but the node-local ones, as SQL: users and roles first, then their grants.
async fn dump_accounts(backend: &SstBackend) -> Result<String, String> {
    use mysql_async::prelude::Queryable;
    let err = |e: mysql_async::Error| format!("dumping accounts: {e}");
    let mut conn = backend.pool.get_conn().await.map_err(err)?;
    let accounts: Vec<(String, String, String)> = conn
        .query("SELECT User, Host, is_role FROM mysql.user ORDER BY User, Host")
        .await
        .map_err(err)?;
    let mut creates = String::from("\n-- certus: accounts\n");
    let mut grants = String::new();
    for (user, host, is_role) in accounts {
        if backend.is_kept_account(&user, &host) {
            continue;
        }
        let account = quote_account(&user, &host);
        if is_role == "Y" {
            creates.push_str(&format!(
                "CREATE ROLE IF NOT EXISTS {};\n",
                quote_ident(&user)
            ));
            let rows: Vec<String> = conn
                .query(format!("SHOW GRANTS FOR {}", quote_ident(&user)))
                .await
                .map_err(err)?;
            push_grants(&mut grants, rows);
            continue;
        }
        let create: Option<String> = conn
            .query_first(format!("SHOW CREATE USER {account}"))
            .await
            .map_err(err)?;
        if let Some(create) = create {
            creates.push_str(&create);
            creates.push_str(";\n");
        }
        let rows: Vec<String> = conn
            .query(format!("SHOW GRANTS FOR {account}"))
            .await
            .map_err(err)?;
        push_grants(&mut grants, rows);
    }
    creates.push_str(&grants);
    creates.push_str("FLUSH PRIVILEGES;\n");
    let _ = conn.disconnect().await;
    Ok(creates)
}

/// Appends `SHOW GRANTS` rows as statements. PROXY grants are left out: only an account holding
/// that PROXY privilege with GRANT OPTION may give it, which the service account does not.
fn push_grants(out: &mut String, rows: Vec<String>) {
    for g in rows {
        if g.starts_with("GRANT PROXY ON") {
            continue;
        }
        out.push_str(&g);
        out.push_str(";\n");
    }
}

/// Replaces the backend's user data with the snapshot in `file` (positioned anywhere) and
/// records max(dump seqno, header seqno) as applied. Returns the header and the applied seqno.
/// Nothing the load does is binlogged (`sql_log_bin=0`): it is local state, not a transaction.
pub(crate) async fn load_snapshot(
    file: std::fs::File,
    backend: &SstBackend,
) -> Result<(Header, Seqno), String> {
    let (header, sql) = tokio::task::spawn_blocking(move || {
        let mut file = file;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| format!("snapshot: {e}"))?;
        let header = read_header(&mut file)?;
        Ok::<_, String>((header, file))
    })
    .await
    .map_err(|e| format!("reading the snapshot: {e}"))??;
    reset_backend(backend).await?;
    run_sql(backend, sql).await?;
    let applied = record_applied(backend, Seqno(header.seqno)).await?;
    Ok((header, applied))
}

/// Drops every user schema and every transferable account, so that what the snapshot does not
/// hold does not survive the load.
async fn reset_backend(backend: &SstBackend) -> Result<(), String> {
    use mysql_async::prelude::Queryable;
    let err = |e: mysql_async::Error| format!("resetting the backend for SST: {e}");
    let mut conn = backend.pool.get_conn().await.map_err(err)?;
    conn.query_drop("SET SESSION sql_log_bin = 0")
        .await
        .map_err(err)?;
    let schemas: Vec<String> = conn
        .query("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA")
        .await
        .map_err(err)?;
    for s in schemas {
        if SYSTEM_SCHEMAS.contains(&s.as_str()) || s == "certus" {
            continue;
        }
        conn.query_drop(format!("DROP DATABASE {}", quote_ident(&s)))
            .await
            .map_err(err)?;
    }
    let accounts: Vec<(String, String, String)> = conn
        .query("SELECT User, Host, is_role FROM mysql.user")
        .await
        .map_err(err)?;
    for (user, host, is_role) in accounts {
        if backend.is_kept_account(&user, &host) {
            continue;
        }
        let stmt = if is_role == "Y" {
            format!("DROP ROLE {}", quote_ident(&user))
        } else {
            format!("DROP USER {}", quote_account(&user, &host))
        };
        conn.query_drop(stmt).await.map_err(err)?;
    }
    let _ = conn.disconnect().await;
    Ok(())
}

/// Runs the snapshot's SQL text (the rest of `sql`, from its current position) with the
/// `mariadb` client, unbinlogged.
async fn run_sql(backend: &SstBackend, sql: std::fs::File) -> Result<(), String> {
    let options = backend.client_options()?;
    let out = tokio::process::Command::new("mariadb")
        .arg(format!("--defaults-extra-file={}", options.0.display()))
        .args([
            "--binary-mode",
            "--batch",
            "--max-allowed-packet=1G",
            "--init-command=SET SESSION sql_log_bin = 0",
        ])
        .stdin(Stdio::from(sql))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run mariadb: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "loading the snapshot failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Sets the applied seqno to at least `seqno` (see the module header) and returns it.
async fn record_applied(backend: &SstBackend, seqno: Seqno) -> Result<Seqno, String> {
    use mysql_async::prelude::Queryable;
    let err = |e: mysql_async::Error| format!("recording the SST seqno: {e}");
    let mut conn = backend.pool.get_conn().await.map_err(err)?;
    conn.query_drop("SET SESSION sql_log_bin = 0")
        .await
        .map_err(err)?;
    conn.exec_drop(
        "UPDATE certus.state SET applied_seqno = GREATEST(applied_seqno, ?) WHERE id = 1",
        (seqno.0,),
    )
    .await
    .map_err(err)?;
    let applied: Option<u64> = conn
        .query_first("SELECT applied_seqno FROM certus.state WHERE id = 1")
        .await
        .map_err(err)?;
    let _ = conn.disconnect().await;
    applied
        .map(Seqno)
        .ok_or_else(|| "certus.state has no row after the load".into())
}

/// The backend's applied seqno, read directly.
pub(crate) async fn backend_applied(backend: &SstBackend) -> Result<Seqno, String> {
    use mysql_async::prelude::Queryable;
    let err = |e: mysql_async::Error| format!("reading the applied seqno: {e}");
    let mut conn = backend.pool.get_conn().await.map_err(err)?;
    let applied: Option<u64> = conn
        .query_first("SELECT applied_seqno FROM certus.state WHERE id = 1")
        .await
        .map_err(err)?;
    Ok(Seqno(applied.unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_positions_at_the_sql() {
        let h = Header {
            index: 42,
            seqno: 40,
            certification: vec![1, 2, 3, 0xff],
        };
        let mut bytes = encode_header(&h).unwrap();
        bytes.extend_from_slice(b"CREATE DATABASE x;");
        let mut r = std::io::Cursor::new(bytes);
        assert_eq!(read_header(&mut r).unwrap(), h);
        let mut rest = String::new();
        r.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "CREATE DATABASE x;");
    }

    #[test]
    fn damaged_headers_are_refused() {
        let h = Header {
            index: 1,
            seqno: 1,
            certification: vec![7; 64],
        };
        let good = encode_header(&h).unwrap();
        let mut bad_magic = good.clone();
        bad_magic[0] = b'X';
        assert!(read_header(&mut std::io::Cursor::new(bad_magic)).is_err());
        let mut bad_crc = good.clone();
        let last = bad_crc.len() - 1;
        bad_crc[last] ^= 1;
        assert!(read_header(&mut std::io::Cursor::new(bad_crc)).is_err());
        assert!(read_header(&mut std::io::Cursor::new(&good[..good.len() - 3])).is_err());
    }

    #[test]
    fn account_quoting_escapes_quotes() {
        assert_eq!(quote_account("a'b", "%"), r"'a\'b'@'%'");
        assert_eq!(quote_ident("we`ird"), "`we``ird`");
    }
}
