//! The HTTP server for probes and scraping: `/healthz`, `/readyz` and
//! `/metrics` (Prometheus text format 0.0.4), on axum over hyper's HTTP/1.1.
//! It answers one request per connection (`Connection: close`), with explicit
//! limits on the request head, on how long a client may take and on
//! connections open at once ([`HttpLimits`]); bad input gets a 4xx answer,
//! never a panic. `server.rs` explains why the probes keep answering while
//! idle or slow clients hold connections open.
//!
//! # Mounting more routes
//!
//! [`routes`] builds the probe and metrics routes as an [`axum::Router`].
//! Another adapter (the web console) serves its pages on the same port by
//! merging its own router into it:
//!
//! ```ignore
//! let app = http::routes(state.clone()).merge(console::router(console_state));
//! let endpoint = http::Endpoint::start_with(addr, state, app).await?;
//! ```
//!
//! `Router::merge` panics on a path both routers define, so the mounted
//! router keeps out of `/healthz`, `/readyz` and `/metrics`, and it sets no
//! fallback: the server answers unknown paths with `404` itself. The limits
//! and the request checks of [`HttpLimits`] apply to every route.

mod exposition;
mod readiness;
mod server;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::storage::group_commit::CommitHistograms;
use crate::storage::{Storage, WriteHealth};
use crate::telemetry::{Metrics, CONTENT_TYPE};
use crate::transport::nats::NatsStats;

pub use exposition::render_metrics;
pub use readiness::Readiness;
pub use server::serve;

/// Limits of the HTTP server; every one has a default.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Most bytes of a request head (request line and headers); more is
    /// 431. At least 8 KiB, hyper's smallest read buffer.
    pub head_max_bytes: usize,
    /// Time a client has, from connecting, to send its whole request head;
    /// then the connection is closed without an answer.
    pub read_timeout: Duration,
    /// Time a client has to take the whole response; then the connection is
    /// dropped.
    pub write_timeout: Duration,
    /// Connections open at once. At the cap, a new connection closes the
    /// oldest one that has not sent its request head yet; when every open
    /// connection is being answered, the new one gets `503` and is closed.
    pub connections_max: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            head_max_bytes: 8 * 1024,
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            connections_max: 1024,
        }
    }
}

/// The journal's figures, attached once storage is open (the server may
/// start before). Holds nothing that keeps storage open: the storage is
/// reached through a `Weak` and the committer's histograms through their own
/// `Arc`, so a lingering connection never delays closing RocksDB.
#[derive(Default)]
pub struct JournalSources {
    commit: OnceLock<Arc<CommitHistograms>>,
    storage: OnceLock<Weak<dyn Storage>>,
}

impl JournalSources {
    /// Attaches the committer's histograms and the storage (first call wins).
    pub fn attach(&self, commit: Arc<CommitHistograms>, storage: &Arc<dyn Storage>) {
        let _ = self.commit.set(commit);
        let _ = self.storage.set(Arc::downgrade(storage));
    }
}

/// Everything the endpoints read.
#[derive(Clone, Default)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    pub journal: Arc<JournalSources>,
    /// NATS connection state, when the service uses NATS.
    pub nats: Option<Arc<NatsStats>>,
    /// Lifecycle event publisher counters, when events are on.
    pub events: Option<Arc<crate::events::EventStats>>,
    pub limits: HttpLimits,
}

/// `/healthz`, `/readyz` and `/metrics` over `state`, to serve as they are
/// or to merge another router into (see the module docs).
pub fn routes(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz).fallback(method_not_allowed))
        .route("/readyz", get(readyz).fallback(method_not_allowed))
        .route("/metrics", get(metrics).fallback(method_not_allowed))
        .with_state(Arc::new(state))
}

/// The router as served: `app` with the `404` fallback and the request
/// checks that every route shares.
fn finish(app: Router) -> Router {
    app.fallback(not_found)
        .layer(axum::middleware::from_fn(check_request))
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

async fn healthz() -> Response {
    text(StatusCode::OK, "ok\n")
}

async fn readyz(State(state): State<Arc<HttpState>>) -> Response {
    match state.readiness.ready() {
        Ok(()) => text(StatusCode::OK, "ready\n"),
        Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

async fn metrics(State(state): State<Arc<HttpState>>) -> Response {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        render_metrics(&state),
    )
        .into_response()
}

async fn method_not_allowed() -> Response {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    r
}

async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "not found\n")
}

/// Refuses what hyper's parser lets through but no client of these routes
/// sends: a method that is not an upper-case token, and a target that is
/// not a path (`GET healthz`, or the absolute form of a proxy request).
async fn check_request(request: Request, next: Next) -> Response {
    let method = request.method();
    if *method != Method::GET
        && *method != Method::HEAD
        && !method.as_str().bytes().all(|b| b.is_ascii_uppercase())
    {
        return text(StatusCode::BAD_REQUEST, "bad request: invalid method\n");
    }
    let uri = request.uri();
    if uri.scheme().is_some() || uri.authority().is_some() || !uri.path().starts_with('/') {
        return text(StatusCode::BAD_REQUEST, "bad request: invalid target\n");
    }
    next.run(request).await
}

/// The server as a service runs it: bound from an address flag (`off`
/// disables it), stopped at shutdown, aborted if dropped on an error path.
pub struct Endpoint {
    state: HttpState,
    local_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Endpoint {
    /// Binds `addr` (e.g. `127.0.0.1:9464`, or `off`) and serves the probe
    /// and metrics [`routes`] of `state`.
    pub async fn start(addr: &str, state: HttpState) -> Result<Endpoint, String> {
        let app = routes(state.clone());
        Endpoint::start_with(addr, state, app).await
    }

    /// Binds `addr` and serves `app`: [`routes`] of `state` with other
    /// routers merged into it, under `state.limits`.
    pub async fn start_with(addr: &str, state: HttpState, app: Router) -> Result<Endpoint, String> {
        let mut ep = Endpoint {
            state,
            local_addr: None,
            stop: None,
            task: None,
        };
        if addr.trim().eq_ignore_ascii_case("off") {
            return Ok(ep);
        }
        let listener = TcpListener::bind(addr.trim())
            .await
            .map_err(|e| format!("cannot listen for HTTP on {addr}: {e}"))?;
        ep.local_addr = listener.local_addr().ok();
        if let Some(a) = ep.local_addr {
            eprintln!("http listening on {a} (/healthz /readyz /metrics)");
        }
        let (tx, rx) = oneshot::channel();
        ep.stop = Some(tx);
        ep.task = Some(tokio::spawn(serve(
            listener,
            finish(app),
            ep.state.limits.clone(),
            async {
                let _ = rx.await;
            },
        )));
        Ok(ep)
    }

    /// The bound address; `None` when disabled.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    pub fn readiness(&self) -> &Readiness {
        &self.state.readiness
    }

    /// The node's storage is open: attach its commit figures and store,
    /// watch its write health, mark it in readiness.
    pub fn storage_opened(
        &self,
        commit: Arc<CommitHistograms>,
        storage: &Arc<dyn Storage>,
        writes: Arc<WriteHealth>,
    ) {
        self.state.journal.attach(commit, storage);
        self.state.readiness.watch_writes(writes);
        self.state.readiness.set_storage_open();
    }

    /// Stops accepting, drops open connections and waits for the server.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
