//! A small HTTP/1.1 server for probes and scraping: `/healthz`, `/readyz`
//! and `/metrics` (Prometheus text format 0.0.4). Hand-rolled on a tokio
//! `TcpListener` to keep the build lean; it only answers `GET` and `HEAD`,
//! one request per connection (`Connection: close`), with explicit limits on
//! the request head, on how long a client may take, and on connections
//! served at once. Bad input gets a 4xx answer, never a panic.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinSet;

use crate::engine::metrics::prom::{Text, CONTENT_TYPE};
use crate::engine::Metrics;
use crate::storage::group_commit::CommitHistograms;
use crate::storage::Storage;
use crate::transport::nats::NatsStats;

/// Limits of the HTTP server; every one has a default.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Most bytes of a request head (request line and headers); more is 431.
    pub head_max_bytes: usize,
    /// Time a client has to send its whole request head; then 408.
    pub read_timeout: Duration,
    /// Time a client has to take the whole response; then the connection is dropped.
    pub write_timeout: Duration,
    /// Connections served at once; one more is answered 503 and closed.
    pub connections_max: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            head_max_bytes: 8 * 1024,
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            connections_max: 64,
        }
    }
}

/// What readiness waits for. Shared (`Arc`) between the service, which sets
/// the flags as it comes up, and the server, which reads them.
#[derive(Debug, Default)]
pub struct Readiness {
    /// The data dir is open and the pipelines are stored.
    pub storage_open: AtomicBool,
    /// Every partition has recovered its workflows (the engine has started).
    pub recovery_done: AtomicBool,
    /// The NATS connection, when the service needs one (`None`: not needed).
    pub nats: Option<Arc<NatsStats>>,
}

impl Readiness {
    /// Readiness that also waits for the NATS connection behind `nats`.
    pub fn with_nats(nats: Arc<NatsStats>) -> Readiness {
        Readiness {
            nats: Some(nats),
            ..Readiness::default()
        }
    }

    pub fn set_storage_open(&self) {
        self.storage_open.store(true, Ordering::Release);
    }

    pub fn set_recovery_done(&self) {
        self.recovery_done.store(true, Ordering::Release);
    }

    /// `Ok` when ready to serve, else what is missing, e.g.
    /// `not ready: recovery not done, nats not connected`.
    pub fn ready(&self) -> Result<(), String> {
        let mut missing = Vec::new();
        if !self.storage_open.load(Ordering::Acquire) {
            missing.push("storage not open");
        }
        if !self.recovery_done.load(Ordering::Acquire) {
            missing.push("recovery not done");
        }
        if let Some(n) = &self.nats {
            if !n.is_connected() {
                missing.push("nats not connected");
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("not ready: {}", missing.join(", ")))
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

/// The server as a service runs it: bound from an address flag (`off`
/// disables it), stopped at shutdown, aborted if dropped on an error path.
pub struct Endpoint {
    state: HttpState,
    local_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Endpoint {
    /// Binds `addr` (e.g. `127.0.0.1:9464`, or `off`) and serves `state`.
    pub async fn start(addr: &str, state: HttpState) -> Result<Endpoint, String> {
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
        ep.task = Some(tokio::spawn(serve(listener, ep.state.clone(), async {
            let _ = rx.await;
        })));
        Ok(ep)
    }

    /// The bound address; `None` when disabled.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    pub fn readiness(&self) -> &Readiness {
        &self.state.readiness
    }

    /// The node's storage is open: attach its figures, mark it in readiness.
    pub fn storage_opened(&self, node: &crate::node::Node) {
        self.state
            .journal
            .attach(node.committer.histograms(), &node.storage);
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

/// Serves until `shutdown` resolves, then stops accepting, drops every open
/// connection and returns.
pub async fn serve(listener: TcpListener, state: HttpState, shutdown: impl Future<Output = ()>) {
    let state = Arc::new(state);
    let slots = Arc::new(Semaphore::new(state.limits.connections_max.max(1)));
    let mut conns: JoinSet<()> = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while conns.try_join_next().is_some() {}
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
        let state = state.clone();
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                conns.spawn(async move {
                    handle(stream, &state).await;
                    drop(permit);
                });
            }
            Err(_) => {
                conns.spawn(async move {
                    let mut stream = stream;
                    let r = Response::text(503, "too many connections\n");
                    let _ = tokio::time::timeout(
                        state.limits.write_timeout,
                        r.write(&mut stream, false),
                    )
                    .await;
                });
            }
        }
    }
    conns.shutdown().await;
}

struct Response {
    status: u16,
    content_type: &'static str,
    allow: bool,
    body: String,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            allow: false,
            body: body.into(),
        }
    }

    async fn write(&self, stream: &mut TcpStream, head_only: bool) -> std::io::Result<()> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        if self.allow {
            out.push_str("Allow: GET, HEAD\r\n");
        }
        out.push_str("\r\n");
        if !head_only {
            out.push_str(&self.body);
        }
        stream.write_all(out.as_bytes()).await?;
        stream.shutdown().await
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// How reading a request head ended.
enum Head {
    Complete(Vec<u8>),
    TooLarge,
    TimedOut,
    Closed,
}

async fn read_head(stream: &mut TcpStream, limits: &HttpLimits) -> Head {
    let max = limits.head_max_bytes.max(16);
    let mut buf: Vec<u8> = Vec::with_capacity(1024.min(max));
    let mut chunk = [0u8; 1024];
    let read = async {
        loop {
            let n = match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return Head::Closed,
                Ok(n) => n,
            };
            // Only the new bytes (and three before them) can complete the terminator.
            let from = buf.len().saturating_sub(3);
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = find(&buf[from..], b"\r\n\r\n") {
                let end = from + end;
                if end + 4 > max {
                    return Head::TooLarge;
                }
                buf.truncate(end);
                return Head::Complete(std::mem::take(&mut buf));
            }
            if buf.len() > max {
                return Head::TooLarge;
            }
        }
    };
    tokio::time::timeout(limits.read_timeout, read)
        .await
        .unwrap_or(Head::TimedOut)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn handle(mut stream: TcpStream, state: &HttpState) {
    let (response, head_only) = match read_head(&mut stream, &state.limits).await {
        Head::Closed => return,
        Head::TooLarge => (Response::text(431, "request head too large\n"), false),
        Head::TimedOut => (Response::text(408, "request timed out\n"), false),
        Head::Complete(head) => match parse_request_line(&head) {
            Err(r) => (r, false),
            Ok((method, path)) => (route(state, method, path), method == "HEAD"),
        },
    };
    let _ = tokio::time::timeout(
        state.limits.write_timeout,
        response.write(&mut stream, head_only),
    )
    .await;
}

/// `(method, path without query)` of the request line, or the error answer.
fn parse_request_line(head: &[u8]) -> Result<(&str, &str), Response> {
    let bad = |m: &str| Response::text(400, format!("bad request: {m}\n"));
    let line_end = find(head, b"\r\n").unwrap_or(head.len());
    let line = std::str::from_utf8(&head[..line_end]).map_err(|_| bad("not UTF-8"))?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("request line is not `METHOD TARGET VERSION`"));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(bad("invalid method"));
    }
    if !target.starts_with('/') || target.bytes().any(|b| b.is_ascii_control()) {
        return Err(bad("invalid target"));
    }
    if !version.starts_with("HTTP/") {
        return Err(bad("invalid version"));
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(Response::text(505, "only HTTP/1.0 and HTTP/1.1\n"));
    }
    let path = target.split('?').next().unwrap_or(target);
    Ok((method, path))
}

fn route(state: &HttpState, method: &str, path: &str) -> Response {
    let known = matches!(path, "/healthz" | "/readyz" | "/metrics");
    if !known {
        return Response::text(404, "not found\n");
    }
    if method != "GET" && method != "HEAD" {
        let mut r = Response::text(405, "method not allowed\n");
        r.allow = true;
        return r;
    }
    match path {
        "/healthz" => Response::text(200, "ok\n"),
        "/readyz" => match state.readiness.ready() {
            Ok(()) => Response::text(200, "ready\n"),
            Err(why) => Response::text(503, format!("{why}\n")),
        },
        _ => Response {
            status: 200,
            content_type: CONTENT_TYPE,
            allow: false,
            body: render_metrics(state),
        },
    }
}

/// The whole `/metrics` exposition.
pub fn render_metrics(state: &HttpState) -> String {
    let m = &state.metrics;
    let get = |c: &std::sync::atomic::AtomicU64| Metrics::get(c) as f64;
    let mut t = Text::default();

    let pipelines = m.by_pipeline.snapshot();
    type PipelineCounter = fn(&crate::engine::metrics::PipelineStats) -> u64;
    let per_pipeline: [(&str, &str, PipelineCounter); 4] = [
        (
            "narralytica_workflows_started_total",
            "Workflows started, by pipeline.",
            |p| Metrics::get(&p.started),
        ),
        (
            "narralytica_workflows_completed_total",
            "Workflows that reached completed, by pipeline.",
            |p| Metrics::get(&p.completed),
        ),
        (
            "narralytica_workflows_failed_total",
            "Workflows that reached failed (parked ones included), by pipeline.",
            |p| Metrics::get(&p.failed),
        ),
        (
            "narralytica_workflows_cancelled_total",
            "Workflows that reached cancelled (cancel or workflow timeout), by pipeline.",
            |p| Metrics::get(&p.cancelled),
        ),
    ];
    for (name, help, value) in per_pipeline {
        t.family(name, "counter", help);
        for (label, p) in &pipelines {
            t.sample(name, &[("pipeline", label)], value(p) as f64);
        }
    }
    t.family(
        "narralytica_workflow_latency_seconds",
        "histogram",
        "Workflow creation to terminal status, by pipeline.",
    );
    for (label, p) in &pipelines {
        t.histogram(
            "narralytica_workflow_latency_seconds",
            &[("pipeline", label)],
            &p.latency.snapshot(),
        );
    }
    t.family(
        "narralytica_workflows_reopened_total",
        "counter",
        "Terminal workflows reopened.",
    );
    t.sample(
        "narralytica_workflows_reopened_total",
        &[],
        get(&m.workflows_reopened),
    );
    for (name, help, v) in [
        (
            "narralytica_workflows_running",
            "Workflows in status running (kept by the engine from the status index at start-up).",
            m.workflows_running.load(Ordering::Relaxed),
        ),
        (
            "narralytica_workflows_paused",
            "Workflows in status paused.",
            m.workflows_paused.load(Ordering::Relaxed),
        ),
    ] {
        t.family(name, "gauge", help);
        t.sample(name, &[], v as f64);
    }

    let types = m.by_task_type.snapshot();
    type TypeCounter = fn(&crate::engine::metrics::TaskTypeStats) -> u64;
    let per_type: [(&str, &str, TypeCounter); 5] = [
        (
            "narralytica_task_attempts_total",
            "Attempts sent to workers (first attempts and retries; re-sends after a restart excluded), by task type.",
            |s| Metrics::get(&s.attempts),
        ),
        (
            "narralytica_task_retries_total",
            "Attempts after the first, by task type.",
            |s| Metrics::get(&s.retries),
        ),
        (
            "narralytica_task_timeouts_total",
            "Attempts that timed out (schedule-to-start, start-to-close or heartbeat), by task type.",
            |s| Metrics::get(&s.timeouts),
        ),
        (
            "narralytica_task_failures_total",
            "Attempts whose worker reported a failure, by task type.",
            |s| Metrics::get(&s.failures),
        ),
        (
            "narralytica_task_retries_deferred_total",
            "Retries put back by the retry budget (each deferral counted), by task type.",
            |s| Metrics::get(&s.retries_deferred),
        ),
    ];
    for (name, help, value) in per_type {
        t.family(name, "counter", help);
        for (label, s) in &types {
            t.sample(name, &[("task_type", label)], value(s) as f64);
        }
    }
    t.family(
        "narralytica_task_latency_seconds",
        "histogram",
        "Attempt dispatch (as journaled) to its accepted result, success or failure, by task type.",
    );
    for (label, s) in &types {
        t.histogram(
            "narralytica_task_latency_seconds",
            &[("task_type", label)],
            &s.latency.snapshot(),
        );
    }
    let backlog = m.task_backlog();
    t.family(
        "narralytica_task_backlog",
        "gauge",
        "Attempts sent to workers with no result or timeout yet (queued or running), by task type.",
    );
    for b in &backlog {
        t.sample(
            "narralytica_task_backlog",
            &[("task_type", &b.task_type)],
            b.outstanding as f64,
        );
    }
    t.family(
        "narralytica_task_oldest_age_seconds",
        "gauge",
        "Age of the oldest attempt counted in narralytica_task_backlog (0 when none), by task type.",
    );
    for b in &backlog {
        t.sample(
            "narralytica_task_oldest_age_seconds",
            &[("task_type", &b.task_type)],
            b.oldest_age_secs,
        );
    }
    t.family(
        "narralytica_tasks_resent_total",
        "counter",
        "Attempts sent again with the same task id after a restart.",
    );
    t.sample(
        "narralytica_tasks_resent_total",
        &[],
        get(&m.tasks_redispatched),
    );

    t.family(
        "narralytica_messages_ignored_total",
        "counter",
        "Results and timers recognised and ignored, by reason.",
    );
    for (reason, c) in [
        ("duplicate", &m.duplicates),
        ("stale_attempt", &m.stale_attempts),
        ("unknown_task", &m.unknown_tasks),
        ("workflow_terminal", &m.late_results),
        ("stale_timer", &m.stale_timers),
    ] {
        t.sample(
            "narralytica_messages_ignored_total",
            &[("reason", reason)],
            get(c),
        );
    }
    t.family(
        "narralytica_messages_rejected_total",
        "counter",
        "Worker and admin messages refused by the protocol decoder, by reason.",
    );
    for (reason, c) in [
        ("oversized", &m.messages_oversized),
        ("malformed", &m.messages_malformed),
        ("unsupported_version", &m.messages_unsupported_version),
        ("invalid", &m.messages_invalid),
        ("unauthenticated", &m.messages_unauthenticated),
        ("wrong_partition", &m.messages_wrong_partition),
    ] {
        t.sample(
            "narralytica_messages_rejected_total",
            &[("reason", reason)],
            get(c),
        );
    }
    t.family(
        "narralytica_inputs_rejected_total",
        "counter",
        "Inputs refused by a workflow (unknown pipeline, invalid command for its status).",
    );
    t.sample(
        "narralytica_inputs_rejected_total",
        &[],
        get(&m.rejected_inputs),
    );

    t.family(
        "narralytica_journal_commit_batch_entries",
        "histogram",
        "Storage ops per synced journal write batch.",
    );
    let commit = state.journal.commit.get();
    if let Some(c) = commit {
        t.histogram(
            "narralytica_journal_commit_batch_entries",
            &[],
            &c.batch_entries.snapshot(),
        );
    }
    t.family(
        "narralytica_journal_commit_latency_seconds",
        "histogram",
        "Duration of one synced journal write (the fsync included).",
    );
    if let Some(c) = commit {
        t.histogram(
            "narralytica_journal_commit_latency_seconds",
            &[],
            &c.latency_us.snapshot(),
        );
    }
    t.family(
        "narralytica_journal_commits_inline_total",
        "counter",
        "Journal write batches written on the caller's thread because the committer was idle (storage.commit_inline_when_idle).",
    );
    t.sample(
        "narralytica_journal_commits_inline_total",
        &[],
        commit.map_or(0.0, |c| {
            c.inline_batches.load(std::sync::atomic::Ordering::Relaxed) as f64
        }),
    );
    t.family(
        "narralytica_journal_wal_syncs_total",
        "counter",
        "Synced WAL writes of the storage engine (RocksDB's own counter).",
    );
    let storage = state.journal.storage.get().and_then(Weak::upgrade);
    let syncs = storage.as_ref().map_or(0, |s| s.wal_syncs());
    t.sample("narralytica_journal_wal_syncs_total", &[], syncs as f64);
    if let Some(lsm) = storage.as_ref().and_then(|s| s.lsm_stats()) {
        for (name, help, value) in [
            (
                "narralytica_rocksdb_l0_files",
                "RocksDB level-0 files; compacted at storage.l0_compaction_trigger, writes slow down at 3x and stop at 4x that many.",
                lsm.l0_files as f64,
            ),
            (
                "narralytica_rocksdb_pending_compaction_bytes",
                "RocksDB's estimate of the bytes its compactions still have to rewrite.",
                lsm.pending_compaction_bytes as f64,
            ),
            (
                "narralytica_rocksdb_writes_stopped",
                "1 while RocksDB stops writes until compactions catch up (every commit waits).",
                f64::from(u8::from(lsm.writes_stopped)),
            ),
        ] {
            t.family(name, "gauge", help);
            t.sample(name, &[], value);
        }
    }
    for (name, help, c) in [
        (
            "narralytica_journal_records_total",
            "Journal records (transitions) written.",
            &m.journal_records,
        ),
        (
            "narralytica_journal_events_total",
            "Journaled events.",
            &m.journal_events,
        ),
        (
            "narralytica_journal_inputs_folded_total",
            "Inputs journaled in one commit with an earlier input of the same workflow.",
            &m.inputs_folded,
        ),
        (
            "narralytica_journal_commit_errors_total",
            "Transitions whose journal write failed.",
            &m.commit_errors,
        ),
        (
            "narralytica_actor_restarts_total",
            "Workflow actors restarted after a crash.",
            &m.actor_restarts,
        ),
        (
            "narralytica_workflows_parked_total",
            "Workflows parked as failed after crashing their actor past the restart budget.",
            &m.workflows_parked,
        ),
        (
            "narralytica_workflows_purged_total",
            "Terminal workflows deleted by retention (journal, snapshot, index entry, timers).",
            &m.workflows_purged,
        ),
        (
            "narralytica_workflow_passivations_total",
            "Workflow actors stopped while idle (their state kept in storage and cache).",
            &m.passivations,
        ),
        (
            "narralytica_spans_exported_total",
            "Spans accepted by the OTLP collector.",
            &m.spans_exported,
        ),
        (
            "narralytica_spans_dropped_total",
            "Spans dropped because the export queue was full.",
            &m.spans_dropped,
        ),
        (
            "narralytica_spans_failed_total",
            "Spans not exported: every attempt failed, or the collector rejected them.",
            &m.spans_failed,
        ),
    ] {
        t.family(name, "counter", help);
        t.sample(name, &[], get(c));
    }
    let resident = Metrics::get(&m.resident);
    let active =
        m.workflows_running.load(Ordering::Relaxed) + m.workflows_paused.load(Ordering::Relaxed);
    let passivated = u64::try_from(active).unwrap_or(0).saturating_sub(resident);
    t.family(
        "narralytica_workflows_resident",
        "gauge",
        "Workflow actors alive in memory.",
    );
    t.sample("narralytica_workflows_resident", &[], resident as f64);
    t.family(
        "narralytica_workflows_passivated",
        "gauge",
        "Running or paused workflows without an actor in memory: running + paused - resident, at least 0 (a just-finished workflow's actor lowers it until passivated).",
    );
    t.sample("narralytica_workflows_passivated", &[], passivated as f64);
    if let Some(n) = &state.nats {
        t.family(
            "narralytica_nats_connected",
            "gauge",
            "1 while the NATS client is connected, else 0.",
        );
        t.sample(
            "narralytica_nats_connected",
            &[],
            if n.is_connected() { 1.0 } else { 0.0 },
        );
        t.family(
            "narralytica_nats_reconnects_total",
            "counter",
            "NATS connections after the first one.",
        );
        t.sample(
            "narralytica_nats_reconnects_total",
            &[],
            n.reconnects() as f64,
        );
        use std::sync::atomic::Ordering::Relaxed;
        t.family(
            "narralytica_tasks_sent_by_route_total",
            "counter",
            "Task sends by route: taken by a worker from a direct offer, or published to the TASKS stream.",
        );
        for (route, v) in [("direct", &n.tasks_direct), ("stream", &n.tasks_stream)] {
            t.sample(
                "narralytica_tasks_sent_by_route_total",
                &[("route", route)],
                v.load(Relaxed) as f64,
            );
        }
        t.family(
            "narralytica_results_in_offer_reply_total",
            "counter",
            "Results that came as the worker's answer to their task's direct offer (nats.tasks_direct_result_within).",
        );
        t.sample(
            "narralytica_results_in_offer_reply_total",
            &[],
            n.results_in_offer_reply.load(Relaxed) as f64,
        );
        t.family(
            "narralytica_task_offers_declined_total",
            "counter",
            "Direct task offers that went to the TASKS stream instead, by reason (no_worker, busy, timeout, error).",
        );
        for why in crate::transport::nats::OfferDeclined::ALL {
            t.sample(
                "narralytica_task_offers_declined_total",
                &[("reason", why.label())],
                n.offers_declined[why as usize].load(Relaxed) as f64,
            );
        }
    }
    if let Some(ev) = &state.events {
        use std::sync::atomic::Ordering::Relaxed;
        for (name, kind, help, v) in [
            (
                "narralytica_events_published_total",
                "counter",
                "Journal records whose lifecycle events JetStream acknowledged.",
                ev.published.load(Relaxed),
            ),
            (
                "narralytica_events_messages_total",
                "counter",
                "Lifecycle event messages acknowledged by JetStream (a batch carries several records).",
                ev.messages.load(Relaxed),
            ),
            (
                "narralytica_events_publish_failures_total",
                "counter",
                "Lifecycle event publishes that failed and were retried.",
                ev.failures.load(Relaxed),
            ),
            (
                "narralytica_events_queue_overflows_total",
                "counter",
                "Event messages that did not fit the publisher queue and were read back from the outbox.",
                ev.overflows.load(Relaxed),
            ),
            (
                "narralytica_events_backlog",
                "gauge",
                "Event messages the publisher holds in memory, waiting for their turn.",
                ev.backlog.load(Relaxed),
            ),
        ] {
            t.family(name, kind, help);
            t.sample(name, &[], v as f64);
        }
    }
    let ready = state.readiness.ready().is_ok();
    t.family(
        "narralytica_ready",
        "gauge",
        "1 when /readyz answers 200, else 0.",
    );
    t.sample("narralytica_ready", &[], if ready { 1.0 } else { 0.0 });
    t.finish()
}
