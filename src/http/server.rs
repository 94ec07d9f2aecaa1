//! The accept loop: hyper's HTTP/1.1 connection driver under an explicit cap
//! on open connections, in which a connection that has not sent its request
//! head yet is the first to go.
//!
//! Why eviction rather than refusing at the cap: idle or slow clients (a
//! flood of connections that never finish their head) would otherwise hold
//! every slot, and a liveness probe arriving at the cap would be refused, so
//! Kubernetes would restart a healthy pod. With eviction, a new connection at
//! the cap closes the oldest connection still waiting for its head; a probe
//! sends its head within milliseconds of connecting, after which it cannot be
//! evicted. Only when every slot is busy answering is a new connection
//! refused with `503`. Each waiting connection is also closed after
//! `read_timeout` by hyper's header read timeout.
//!
//! "Has sent its head" is judged by what has arrived, not by what hyper has
//! read: under a flood, many connections can be accepted before a probe's
//! task first runs, so the probe's head may still sit unread in the socket
//! when it is the oldest waiting connection. Before a waiting connection is
//! evicted, its socket is peeked (through a duplicate of its descriptor);
//! one whose complete head has arrived is kept and counted as answering.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::HttpLimits;

/// hyper's smallest read buffer; a smaller head limit cannot be enforced.
const HEAD_MAX_BYTES_MIN: usize = 8 * 1024;

/// The open connections, for the cap and for eviction.
#[derive(Default)]
struct Connections {
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    /// Connections that have not sent a complete request head yet, by id
    /// (ids grow, so the first entry is the oldest), with a duplicate of
    /// their socket to peek at. Dropping the sender closes that connection.
    waiting: BTreeMap<u64, (oneshot::Sender<()>, Option<std::net::TcpStream>)>,
    /// Connections whose request is being answered (their senders kept,
    /// since dropping one would close the connection).
    answering: HashMap<u64, oneshot::Sender<()>>,
}

/// What to do with a connection just accepted.
enum Admission {
    /// Serve it; it is closed when the receiver fires.
    Serve(u64, oneshot::Receiver<()>),
    /// Every slot is answering a request: refuse it.
    Full,
}

impl Connections {
    /// `peer` is a duplicate of the new connection's socket (`None` if the
    /// descriptor could not be duplicated: it is then evicted unpeeked).
    fn admit(&self, max: usize, peer: Option<std::net::TcpStream>, head_max: usize) -> Admission {
        let mut t = self.table.lock();
        while t.waiting.len() + t.answering.len() >= max {
            // Dropping the sender closes the evicted connection; its slot
            // is free from now on.
            let Some((id, (tx, socket))) = t.waiting.pop_first() else {
                return Admission::Full;
            };
            if socket.as_ref().is_some_and(|s| head_arrived(s, head_max)) {
                t.answering.insert(id, tx);
            }
        }
        t.next_id += 1;
        let id = t.next_id;
        let (tx, rx) = oneshot::channel();
        t.waiting.insert(id, (tx, peer));
        Admission::Serve(id, rx)
    }

    /// The connection's request head has arrived: it may not be evicted.
    /// An evicted connection stays out of the table.
    fn answering(&self, id: u64) {
        let mut t = self.table.lock();
        if let Some((tx, _)) = t.waiting.remove(&id) {
            t.answering.insert(id, tx);
        }
    }

    fn closed(&self, id: u64) {
        let mut t = self.table.lock();
        t.waiting.remove(&id);
        t.answering.remove(&id);
    }
}

/// Whether a complete request head (up to its blank line) waits unread in
/// `socket`. Never blocks: the socket is non-blocking (tokio made it so,
/// and a duplicate shares that flag), so an empty one answers `WouldBlock`.
fn head_arrived(socket: &std::net::TcpStream, head_max: usize) -> bool {
    let mut buf = vec![0u8; head_max];
    match socket.peek(&mut buf) {
        Ok(n) => buf[..n].windows(4).any(|w| w == b"\r\n\r\n"),
        Err(_) => false,
    }
}

/// A duplicate of `stream`'s socket, for [`head_arrived`].
fn duplicate(stream: &TcpStream) -> Option<std::net::TcpStream> {
    use std::os::fd::AsFd;
    stream
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .map(std::net::TcpStream::from)
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops
/// accepting, drops every open connection and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) {
    let connections = Arc::new(Connections::default());
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.read_timeout)
        .max_buf_size(limits.head_max_bytes.max(HEAD_MAX_BYTES_MIN))
        // One request per connection: a scrape every few seconds gains
        // nothing from keep-alive, and a connection that has answered frees
        // its slot at once.
        .keep_alive(false)
        .title_case_headers(true);
    let http = Arc::new(http);
    // A connection lives at most this long: its head, then its answer.
    let lifetime = limits.read_timeout + limits.write_timeout;
    let mut tasks: JoinSet<()> = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while tasks.try_join_next().is_some() {}
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "http accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let head_max = limits.head_max_bytes.max(HEAD_MAX_BYTES_MIN);
        match connections.admit(limits.connections_max.max(1), duplicate(&stream), head_max) {
            Admission::Serve(id, evict) => {
                let connections = connections.clone();
                let router = router.clone();
                let http = http.clone();
                tasks.spawn(async move {
                    serve_connection(&http, stream, router, lifetime, evict, &connections, id)
                        .await;
                    connections.closed(id);
                });
            }
            Admission::Full => {
                let write_timeout = limits.write_timeout;
                tasks.spawn(async move {
                    let _ = tokio::time::timeout(write_timeout, refuse(stream)).await;
                });
            }
        }
    }
    tasks.shutdown().await;
}

/// Drives one connection until it ends, times out or is evicted.
async fn serve_connection(
    http: &http1::Builder,
    stream: TcpStream,
    router: Router,
    lifetime: Duration,
    evict: oneshot::Receiver<()>,
    connections: &Arc<Connections>,
    id: u64,
) {
    let router = TowerToHyperService::new(router);
    let marker = connections.clone();
    let service = hyper::service::service_fn(move |request| {
        marker.answering(id);
        hyper::service::Service::call(&router, request)
    });
    let conn = http.serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        // Errors are the client's (bad head, timeout, reset); hyper has
        // already answered what deserves an answer.
        _ = tokio::time::timeout(lifetime, conn) => {}
        _ = evict => {}
    }
}

/// Answers `503` to a connection over the cap and closes it.
async fn refuse(mut stream: TcpStream) {
    let body = "too many connections\n";
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(answer.as_bytes()).await.is_ok() {
        let _ = stream.shutdown().await;
    }
}
