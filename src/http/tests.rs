//! In-process tests of the whole server on port 0 with a fake status source: exact bytes on the
//! wire, options, and hostile clients.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::clustercheck::tests::synced_status;
use super::metrics::tests::{parse_exposition, value_of};
use super::*;
use crate::node::status::LocalState;

const PERCONA: &str = "Percona XtraDB Cluster";
const SYNCED: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 40\r\n\r\nPercona XtraDB Cluster Node is synced.\r\n";
const NOT_SYNCED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 44\r\n\r\nPercona XtraDB Cluster Node is not synced.\r\n";
const READ_ONLY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 43\r\n\r\nPercona XtraDB Cluster Node is read-only.\r\n";
const DISABLED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 51\r\n\r\nPercona XtraDB Cluster Node is manually disabled.\r\n";
const CHECK: &[u8] = b"GET / HTTP/1.1\r\nHost: db1\r\n\r\n";
/// Every wait in these tests is bounded by this.
const BOUND: Duration = Duration::from_secs(5);

/// A running server with a status the test can change between requests.
struct Harness {
    addr: SocketAddr,
    status: Arc<Mutex<NodeStatus>>,
    snapshots: Arc<AtomicUsize>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Harness {
    async fn start(opts: HttpOptions) -> Harness {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let status = Arc::new(Mutex::new(synced_status()));
        let snapshots = Arc::new(AtomicUsize::new(0));
        let source: StatusSource = {
            let status = status.clone();
            let snapshots = snapshots.clone();
            Arc::new(move || {
                snapshots.fetch_add(1, Ordering::SeqCst);
                status.lock().unwrap().clone()
            })
        };
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(serve(listener, source, opts, shutdown));
        Harness {
            addr,
            status,
            snapshots,
            stop,
            task,
        }
    }

    fn set(&self, change: impl FnOnce(&mut NodeStatus)) {
        change(&mut self.status.lock().unwrap());
    }

    async fn send(&self, request: &[u8]) -> Vec<u8> {
        exchange(self.addr, request).await
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(BOUND, self.task)
            .await
            .expect("serve did not stop")
            .unwrap();
    }
}

/// Sends `request` and reads until the server closes.
async fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_to_close(&mut stream).await
}

async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(BOUND, stream.read_to_end(&mut out))
        .await
        .expect("server did not close the connection")
        .unwrap();
    out
}

fn percona() -> HttpOptions {
    HttpOptions {
        product: PERCONA.to_string(),
        ..HttpOptions::default()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn clustercheck_answers_are_byte_exact_on_the_wire() {
    let server = Harness::start(percona()).await;
    assert_eq!(text(&server.send(CHECK).await), text(SYNCED));
    server.set(|s| s.primary = false);
    assert_eq!(text(&server.send(CHECK).await), text(NOT_SYNCED));
    server.set(|s| {
        s.primary = true;
        s.backend_up = false;
    });
    assert_eq!(text(&server.send(CHECK).await), text(NOT_SYNCED));
    server.stop().await;
}

#[tokio::test]
async fn default_product_answers_any_path_and_method() {
    let server = Harness::start(HttpOptions::default()).await;
    let expected = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 32\r\n\r\nGalera Cluster Node is synced.\r\n";
    for request in [
        &b"OPTIONS / HTTP/1.0\r\n\r\n"[..],
        b"GET /clustercheck HTTP/1.1\r\nHost: x\r\n\r\n",
        b"HEAD /whatever?x=1 HTTP/1.1\n\n",
    ] {
        assert_eq!(text(&server.send(request).await), text(expected));
    }
    server.stop().await;
}

#[tokio::test]
async fn clustercheck_answers_well_under_proxysql_timeout() {
    let server = Harness::start(percona()).await;
    for _ in 0..20 {
        let started = Instant::now();
        let answer = server.send(CHECK).await;
        assert_eq!(answer, SYNCED);
        assert!(
            started.elapsed() < Duration::from_millis(600),
            "{:?}",
            started.elapsed()
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn body_is_not_awaited() {
    let server = Harness::start(HttpOptions {
        header_timeout: BOUND,
        ..percona()
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nContent-Length: 1000\r\n\r\n")
        .await
        .unwrap();
    let mut answer = vec![0u8; SYNCED.len()];
    tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut answer))
        .await
        .expect("answer waited for the body")
        .unwrap();
    assert_eq!(answer, SYNCED);
    drop(stream);
    server.stop().await;
}

#[tokio::test]
async fn donor_passes_only_when_allowed() {
    let strict = Harness::start(percona()).await;
    strict.set(|s| s.local_state = LocalState::Donor);
    assert_eq!(text(&strict.send(CHECK).await), text(NOT_SYNCED));
    strict.stop().await;

    let lenient = Harness::start(HttpOptions {
        available_when_donor: true,
        ..percona()
    })
    .await;
    lenient.set(|s| s.local_state = LocalState::Donor);
    assert_eq!(text(&lenient.send(CHECK).await), text(SYNCED));
    lenient.set(|s| s.local_state = LocalState::Joined);
    assert_eq!(text(&lenient.send(CHECK).await), text(NOT_SYNCED));
    lenient.stop().await;
}

#[tokio::test]
async fn read_only_backend_is_refused_only_when_configured() {
    let read_only = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let probe: ReadOnlyProbe = {
        let read_only = read_only.clone();
        Arc::new(move || read_only.load(Ordering::SeqCst))
    };
    let refusing = Harness::start(HttpOptions {
        available_when_readonly: false,
        read_only: Some(probe.clone()),
        ..percona()
    })
    .await;
    assert_eq!(text(&refusing.send(CHECK).await), text(READ_ONLY));
    read_only.store(false, Ordering::SeqCst);
    assert_eq!(text(&refusing.send(CHECK).await), text(SYNCED));
    refusing.stop().await;

    read_only.store(true, Ordering::SeqCst);
    let default = Harness::start(HttpOptions {
        read_only: Some(probe),
        ..percona()
    })
    .await;
    assert_eq!(text(&default.send(CHECK).await), text(SYNCED));
    default.stop().await;
}

#[tokio::test]
async fn maintenance_file_disables_first_and_without_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let switch = dir.path().join("clustercheck.disabled");
    let server = Harness::start(HttpOptions {
        maintenance_file: Some(switch.clone()),
        ..percona()
    })
    .await;
    assert_eq!(text(&server.send(CHECK).await), text(SYNCED));

    std::fs::write(&switch, b"").unwrap();
    // Disabled wins even over a node that is also not synced.
    server.set(|s| s.primary = false);
    let before = server.snapshots.load(Ordering::SeqCst);
    assert_eq!(text(&server.send(CHECK).await), text(DISABLED));
    assert_eq!(server.snapshots.load(Ordering::SeqCst), before);

    std::fs::remove_file(&switch).unwrap();
    assert_eq!(text(&server.send(CHECK).await), text(NOT_SYNCED));
    server.set(|s| s.primary = true);
    assert_eq!(text(&server.send(CHECK).await), text(SYNCED));
    server.stop().await;
}

#[tokio::test]
async fn apply_lag_above_the_limit_fails_the_check() {
    let server = Harness::start(HttpOptions {
        max_apply_lag: Some(100),
        ..percona()
    })
    .await;
    server.set(|s| s.recv_queue = 100);
    assert_eq!(text(&server.send(CHECK).await), text(SYNCED));
    server.set(|s| s.recv_queue = 101);
    assert_eq!(text(&server.send(CHECK).await), text(NOT_SYNCED));
    server.stop().await;
}

#[tokio::test]
async fn metrics_endpoint_serves_parseable_live_values() {
    let server = Harness::start(HttpOptions::default()).await;
    for queue in [0u64, 42] {
        server.set(|s| s.recv_queue = queue);
        let answer = text(
            &server
                .send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .await,
        );
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains(
                "\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\n"
            ),
            "{head}"
        );
        assert!(
            head.ends_with(&format!("Content-Length: {}", body.len())),
            "{head}"
        );
        let samples = parse_exposition(body).unwrap();
        assert_eq!(value_of(&samples, "certus_recv_queue"), Some(queue as f64));
        assert_eq!(value_of(&samples, "certus_local_state"), Some(4.0));
    }
    server.stop().await;
}

#[tokio::test]
async fn status_json_round_trips_through_fetch_status() {
    let server = Harness::start(HttpOptions::default()).await;
    server.set(|s| {
        s.inconsistent = Some("apply of seqno 77 failed: \"dup key\"".to_string());
        s.leader = None;
    });
    let expected = serde_json::to_value(server.status.lock().unwrap().clone()).unwrap();
    let fetched = fetch_status(&server.addr.to_string(), BOUND).await.unwrap();
    assert_eq!(fetched, expected);
    assert_eq!(fetched["local_state"], "Synced");
    let rendered = render_status(&fetched);
    assert!(
        rendered.contains("YES: apply of seqno 77 failed: \"dup key\""),
        "{rendered}"
    );

    let raw = text(&server.send(b"GET /status HTTP/1.0\r\n\r\n").await);
    assert!(
        raw.starts_with("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"),
        "{raw}"
    );
    server.stop().await;
}

#[tokio::test]
async fn fetch_status_reports_refused_and_silent_peers() {
    // A port that was just free: nothing listens there.
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let refused = fetch_status(&closed.to_string(), BOUND).await;
    assert!(
        matches!(refused, Err(HttpError::Connect { .. })),
        "{refused:?}"
    );

    // A peer that accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let (stream, _) = silent.accept().await.unwrap();
        tokio::time::sleep(BOUND).await;
        drop(stream);
    });
    let started = Instant::now();
    let timed_out = fetch_status(&silent_addr.to_string(), Duration::from_millis(200)).await;
    assert!(
        matches!(timed_out, Err(HttpError::Timeout { .. })),
        "{timed_out:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    holder.abort();
}

#[tokio::test]
async fn garbage_gets_400_and_the_server_keeps_serving() {
    let server = Harness::start(percona()).await;
    let tls_hello = b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\n\x00\x00";
    for garbage in [
        &tls_hello[..],
        b"hello there\r\n\r\n",
        b"GET / HTTP/2.0\r\n\r\n",
    ] {
        let answer = text(&server.send(garbage).await);
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        assert_eq!(text(&server.send(CHECK).await), text(SYNCED));
    }
    server.stop().await;
}

#[tokio::test]
async fn oversized_head_gets_431_and_the_server_keeps_serving() {
    let server = Harness::start(HttpOptions {
        max_header_bytes: 1024,
        ..percona()
    })
    .await;
    let mut huge = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..2000 {
        huge.extend_from_slice(format!("X-Filler-{i}: aaaaaaaaaaaaaaaa\r\n").as_bytes());
    }
    let answer = text(&server.send(&huge).await);
    assert!(
        answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{answer}"
    );
    assert_eq!(text(&server.send(CHECK).await), text(SYNCED));
    server.stop().await;
}

#[tokio::test]
async fn slow_client_is_cut_off_without_delaying_others() {
    let header_timeout = Duration::from_secs(1);
    let server = Harness::start(HttpOptions {
        header_timeout,
        ..percona()
    })
    .await;
    let started = Instant::now();
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: sl").await.unwrap();
    let mut silent = TcpStream::connect(server.addr).await.unwrap();

    // Others are answered while the slow ones hold their connections.
    assert_eq!(text(&server.send(CHECK).await), text(SYNCED));
    assert!(
        started.elapsed() < header_timeout,
        "{:?}",
        started.elapsed()
    );

    assert!(read_to_close(&mut slow).await.is_empty());
    assert!(read_to_close(&mut silent).await.is_empty());
    assert!(
        started.elapsed() >= header_timeout,
        "{:?}",
        started.elapsed()
    );
    assert_eq!(text(&server.send(CHECK).await), text(SYNCED));
    server.stop().await;
}

#[tokio::test]
async fn connection_limit_queues_instead_of_failing() {
    let header_timeout = Duration::from_secs(1);
    let server = Harness::start(HttpOptions {
        header_timeout,
        max_connections: 1,
        ..percona()
    })
    .await;
    let started = Instant::now();
    let mut hog = TcpStream::connect(server.addr).await.unwrap();
    hog.write_all(b"GET / HT").await.unwrap();
    // Let the server accept the hog and take the only slot.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(text(&server.send(CHECK).await), text(SYNCED));
    // Served only once the hog timed out and freed the slot.
    assert!(
        started.elapsed() >= header_timeout,
        "{:?}",
        started.elapsed()
    );
    server.stop().await;
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let server = Harness::start(percona()).await;
    let addr = server.addr;
    assert_eq!(text(&server.send(CHECK).await), text(SYNCED));
    server.stop().await;
    // The listener is gone with `serve`: a connect is refused or, at most, never answered.
    if let Ok(mut stream) = TcpStream::connect(addr).await {
        let _ = stream.write_all(CHECK).await;
        assert!(read_to_close(&mut stream).await.is_empty());
    }
}

#[tokio::test]
async fn dropped_shutdown_sender_also_stops() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, shutdown) = watch::channel(false);
    let source: StatusSource = Arc::new(synced_status);
    let task = tokio::spawn(serve(listener, source, HttpOptions::default(), shutdown));
    drop(stop);
    tokio::time::timeout(BOUND, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn unread_trailing_input_does_not_spoil_the_answer() {
    let server = Harness::start(percona()).await;
    for _ in 0..5 {
        let stream = TcpStream::connect(server.addr).await.unwrap();
        let (mut reader, mut writer) = stream.into_split();
        let sender = tokio::spawn(async move {
            let mut request = CHECK.to_vec();
            request.extend(std::iter::repeat_n(b'x', 256 * 1024));
            // The server may close before taking it all; only the answer matters here.
            let _ = writer.write_all(&request).await;
            writer
        });
        // Reading late gives a reset, if the server sent one, time to arrive first.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut answer = Vec::new();
        tokio::time::timeout(BOUND, reader.read_to_end(&mut answer))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(text(&answer), text(SYNCED));
        drop(sender.await.unwrap());
    }
    server.stop().await;
}
