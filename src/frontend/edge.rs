//! The threads client sessions run on. Owns: a few single-threaded tokio runtimes, each on its
//! own OS thread, started once per process and never stopped, and the choice of thread for a new
//! session. Must not: run anything but client sessions (Raft, apply, capture and HTTP stay on the
//! node's multi-threaded runtime).
//!
//! Why not the node's multi-threaded runtime: a relayed point select is a few microseconds of work
//! between two socket waits. On tokio's work-stealing scheduler each such wake-up also unparks an
//! idle worker that then finds nothing to steal (a futex wake, a context switch and, on a VM, an
//! inter-processor interrupt), so at one client thread certus spent 22-64 µs of CPU per relayed
//! query and at 16 threads 17-20 µs (`docs/benchmarks.md`). A current-thread runtime runs the
//! woken session on the thread that polled its socket, with no hand-off.
//!
//! Why process-wide and never stopped: a session may create resources (a pooled service-account
//! connection, for KILL or the strict-mode catalog lookup) that other tasks use later; their I/O is
//! driven by the runtime that created them, so that runtime must outlive every node. Sessions of a
//! stopped node end on their own (their backend closes), exactly as they did on the node runtime.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use tokio::runtime::Handle;
use tracing::warn;

struct Edge {
    threads: Vec<Handle>,
    next: AtomicUsize,
}

static EDGE: OnceLock<Option<Edge>> = OnceLock::new();

/// One session thread per two cores (at least one): on a small machine the relay must leave
/// the cores to mariadbd and the clients; sessions are spread round-robin.
fn thread_count() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.div_ceil(2).max(1)
}

fn start() -> Option<Edge> {
    let mut threads = Vec::new();
    for i in 0..thread_count() {
        match start_thread(i) {
            Ok(h) => threads.push(h),
            Err(e) => {
                warn!("cannot start client session thread {i}: {e}");
                break;
            }
        }
    }
    if threads.is_empty() {
        warn!("client sessions run on the node's runtime");
        return None;
    }
    Some(Edge {
        threads,
        next: AtomicUsize::new(0),
    })
}

fn start_thread(i: usize) -> std::io::Result<Handle> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = rt.handle().clone();
    std::thread::Builder::new()
        .name(format!("certus-session-{i}"))
        .spawn(move || rt.block_on(std::future::pending::<()>()))?;
    Ok(handle)
}

/// Runs a session future on one of the session threads (on the caller's runtime if none could
/// be started). Sockets the future creates are registered with that thread's runtime.
pub(super) fn spawn<F>(session: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    match EDGE.get_or_init(start) {
        Some(edge) => {
            let i = edge.next.fetch_add(1, Ordering::Relaxed) % edge.threads.len();
            edge.threads[i].spawn(session);
        }
        None => {
            tokio::spawn(session);
        }
    }
}
