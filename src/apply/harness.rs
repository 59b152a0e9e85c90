//! Test harness for the capture and apply tests: it owns the MariaDB processes and their
//! directories. A template data dir (installed, internal schema loaded, service account made)
//! is built once under `target/test-mariadb/` and copied per server; each server listens on a
//! unix socket only, with the DESIGN §12 settings; dropping a `Server` stops its own PID (TERM,
//! then KILL after a bounded wait) and removes its directory. When mariadbd is missing the
//! tests skip loudly, unless `CI` is set: then they fail.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const MARIADBD: &str = "/usr/sbin/mariadbd";
pub(crate) const SERVICE_USER: &str = "certus_svc";
pub(crate) const SERVICE_PASSWORD: &str = "svc-test-only";
/// Bump when the template's contents must change.
const TEMPLATE_VERSION: &str = "1";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-mariadb")
}

/// Returns false (after saying so) when the test must be skipped.
pub(crate) fn mariadb_available() -> bool {
    if Path::new(MARIADBD).exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but {MARIADBD} is missing"
    );
    eprintln!("SKIPPED: {MARIADBD} is not installed (apt-get install mariadb-server)");
    false
}

fn server_args(dir: &Path, server_id: u32) -> Vec<String> {
    let d = dir.display();
    vec![
        "--no-defaults".into(),
        "--user=root".into(),
        format!("--datadir={d}/data"),
        format!("--socket={d}/sock"),
        format!("--pid-file={d}/mariadbd.pid"),
        format!("--log-error={d}/error.log"),
        "--skip-networking".into(),
        "--log-bin=binlog".into(),
        "--binlog-format=ROW".into(),
        "--binlog-row-image=FULL".into(),
        "--binlog-row-metadata=FULL".into(),
        format!("--server-id={server_id}"),
        "--log-bin-trust-function-creators=1".into(),
        "--sync-binlog=0".into(),
        "--innodb-flush-log-at-trx-commit=2".into(),
        "--innodb-buffer-pool-size=32M".into(),
        "--innodb-log-file-size=16M".into(),
        "--performance-schema=OFF".into(),
        "--max-allowed-packet=64M".into(),
    ]
}

/// One running mariadbd owned by the test.
pub(crate) struct Server {
    dir: PathBuf,
    child: Option<Child>,
    pub(crate) server_id: u32,
}

fn wait_ready(child: &mut Child, sock: &Path, log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!("mariadbd exited with {status}: {log}"));
        }
        if std::os::unix::net::UnixStream::connect(sock).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err("mariadbd did not open its socket within 60 s".into())
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn spawn(dir: &Path, server_id: u32) -> Result<Child, String> {
    let mut child = Command::new(MARIADBD)
        .args(server_args(dir, server_id))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawning mariadbd: {e}"))?;
    if let Err(e) = wait_ready(&mut child, &dir.join("sock"), &dir.join("error.log")) {
        stop(&mut child);
        return Err(e);
    }
    Ok(child)
}

fn run_cli(dir: &Path, sql: &str) -> Result<(), String> {
    let out = Command::new("mariadb")
        .arg("--no-defaults")
        .arg(format!("--socket={}/sock", dir.display()))
        .arg("-uroot")
        .arg("-e")
        .arg(sql)
        .output()
        .map_err(|e| format!("running mariadb: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

static TEMPLATE: OnceLock<Result<PathBuf, String>> = OnceLock::new();

fn template() -> &'static Path {
    match TEMPLATE.get_or_init(build_template) {
        Ok(p) => p,
        Err(e) => panic!("cannot build the template data dir: {e}"),
    }
}

fn build_template() -> Result<PathBuf, String> {
    let root = root();
    let done = root.join("template");
    let key = format!(
        "{TEMPLATE_VERSION}\n{}",
        include_str!("../../sql/schema.sql")
    );
    if std::fs::read_to_string(done.join("complete"))
        .ok()
        .as_deref()
        == Some(key.as_str())
    {
        return Ok(done);
    }
    let tmp = root.join(format!("template.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.join("data")).map_err(|e| e.to_string())?;
    let out = Command::new("mariadb-install-db")
        .arg("--no-defaults")
        .arg(format!("--datadir={}/data", tmp.display()))
        .arg("--auth-root-authentication-method=normal")
        .arg("--user=root")
        .arg("--skip-test-db")
        .output()
        .map_err(|e| format!("mariadb-install-db: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "mariadb-install-db: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut child = spawn(&tmp, 1)?;
    let setup = format!(
        "SET sql_log_bin=0; {} CREATE USER '{SERVICE_USER}'@'localhost' IDENTIFIED BY '{SERVICE_PASSWORD}'; \
         GRANT ALL PRIVILEGES ON *.* TO '{SERVICE_USER}'@'localhost' WITH GRANT OPTION;",
        include_str!("../../sql/schema.sql")
    );
    let r = run_cli(&tmp, &setup);
    stop(&mut child);
    r?;
    for f in ["sock", "mariadbd.pid", "error.log"] {
        let _ = std::fs::remove_file(tmp.join(f));
    }
    std::fs::write(tmp.join("complete"), &key).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&done);
    if std::fs::rename(&tmp, &done).is_err() {
        // Another test process won the race with an identical template.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(done)
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Server {
    /// Starts a server from the template with this `server_id`, or `None` when skipping.
    pub(crate) fn start(server_id: u32) -> Option<Server> {
        if !mariadb_available() {
            return None;
        }
        let template = template();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = root().join(format!("run-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("server dir");
        let status = Command::new("cp")
            .arg("-a")
            .arg(template.join("data"))
            .arg(dir.join("data"))
            .status()
            .expect("cp");
        assert!(status.success(), "copying the template failed");
        let child = match spawn(&dir, server_id) {
            Ok(c) => c,
            Err(e) => panic!("server {server_id} did not start: {e}"),
        };
        Some(Server {
            dir,
            child: Some(child),
            server_id,
        })
    }

    /// The service account's options over the server's socket.
    pub(crate) fn opts(&self) -> mysql_async::Opts {
        mysql_async::OptsBuilder::default()
            .socket(Some(self.dir.join("sock").to_string_lossy().into_owned()))
            .user(Some(SERVICE_USER))
            .pass(Some(SERVICE_PASSWORD))
            .into()
    }

    pub(crate) async fn conn(&self) -> mysql_async::Conn {
        mysql_async::Conn::new(self.opts())
            .await
            .expect("connection to the test server")
    }

    /// Stops the server (TERM, bounded wait) and starts it again on the same data dir.
    pub(crate) fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop(&mut c);
        }
        let _ = std::fs::remove_file(self.dir.join("sock"));
        match spawn(&self.dir, self.server_id) {
            Ok(c) => self.child = Some(c),
            Err(e) => panic!("server {} did not restart: {e}", self.server_id),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop(&mut c);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
