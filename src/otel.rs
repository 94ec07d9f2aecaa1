//! Traces: span records built by the engine after each commit, and their
//! export over OTLP/HTTP with the JSON encoding.
//!
//! Trace model (see docs/operations.md, "Logs and traces"): one trace per
//! workflow (`protocol::trace::trace_id(workflow_id)`), one root span per
//! workflow generation (created → terminal) and one span per task attempt
//! (journaled dispatch → result, timeout or cancel), the child of its
//! generation's span. Every id is derived by hashing, like the `traceparent`
//! the tasks carry, so the worker's spans (children of the task span) join
//! the same trace without anything about tracing being journaled.
//!
//! Export: the engine hands finished spans to a [`SpanSink`]; the
//! [`OtlpExporter`] queues them in a bounded channel (full: the span is
//! dropped and counted, the engine never waits), batches them (at most
//! `batch_max`, at least every `flush_every`) and POSTs each batch to
//! `<endpoint>/v1/traces` with a small HTTP/1.1 client over a kept-alive
//! TCP connection, retrying with backoff. Plain `http://` only: TLS is out of
//! scope, the expected target is a collector or agent on the same host or
//! network (OpenTelemetry Collector, Jaeger, Tempo, ...).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::telemetry::Metrics;

pub use crate::telemetry::span::{
    workflow_span_key, AttrValue, SpanKind, SpanRecord, SpanSink, SpanStatus,
};

/// Exporter settings; each one is a `[trace]` key of the service config.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpConfig {
    /// Base URL, `http://host[:port][/path]`; spans go to `<path>/v1/traces`.
    pub endpoint: String,
    /// `service.name` resource attribute.
    pub service_name: String,
    /// Most spans in one export request.
    pub batch_max: usize,
    /// Spans waiting for export; beyond it new spans are dropped and counted.
    pub queue_max: usize,
    /// A partial batch is sent after at most this long.
    pub flush_every: Duration,
    /// One export request (connect, send, answer) at most this long.
    pub timeout: Duration,
    /// Attempts of one batch before its spans are counted as failed.
    pub attempts: u32,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            endpoint: String::new(),
            service_name: "narralytica-orchestrator".into(),
            batch_max: 512,
            queue_max: 65_536,
            flush_every: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            attempts: 3,
        }
    }
}

/// A parsed `http://` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpEndpoint {
    pub host: String,
    pub port: u16,
    /// Request path of the traces signal (`…/v1/traces`).
    pub path: String,
}

impl HttpEndpoint {
    /// Parses `http://host[:port][/base]` (port 4318, OTLP/HTTP's, when
    /// missing) and appends `/v1/traces` to the base path.
    pub fn parse(url: &str) -> Result<HttpEndpoint, String> {
        let url = url.trim();
        let lower = url.to_ascii_lowercase();
        let rest = if lower.starts_with("http://") {
            &url[7..]
        } else if lower.starts_with("https://") {
            return Err(format!(
                "OTLP endpoint {url:?}: https is not supported; send to a local collector or agent over http://"
            ));
        } else {
            return Err(format!("OTLP endpoint {url:?} must start with http://"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') || path.contains(['?', '#']) {
            return Err(format!(
                "OTLP endpoint {url:?}: credentials, queries and fragments are not supported"
            ));
        }
        if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(format!("OTLP endpoint {url:?}: bad path"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("OTLP endpoint {url:?}: unclosed [ in host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(format!("OTLP endpoint {url:?}: bad host")),
            };
            (h.to_owned(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (authority.to_owned(), None),
            }
        };
        if host.is_empty() || host.bytes().any(|b| b <= b' ' || b == b'/' || b == 0x7f) {
            return Err(format!("OTLP endpoint {url:?}: missing or bad host"));
        }
        let port = match port {
            None => 4318,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("OTLP endpoint {url:?}: bad port {p:?}"))?,
        };
        Ok(HttpEndpoint {
            host,
            port,
            path: format!("{}/v1/traces", path.trim_end_matches('/')),
        })
    }

    fn host_header(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

// ---------------------------------------------------------------------------
// OTLP JSON encoding (opentelemetry-proto's JSON mapping: camelCase names,
// hex trace and span ids, 64-bit integers as strings, enums as numbers).

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExportRequest<'a> {
    resource_spans: [ResourceSpans<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResourceSpans<'a> {
    resource: Resource<'a>,
    scope_spans: [ScopeSpans<'a>; 1],
}

#[derive(Serialize)]
struct Resource<'a> {
    attributes: Vec<KeyValue<'a>>,
}

#[derive(Serialize)]
struct ScopeSpans<'a> {
    scope: Scope,
    spans: Vec<Span<'a>>,
}

#[derive(Serialize)]
struct Scope {
    name: &'static str,
    version: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Span<'a> {
    trace_id: String,
    span_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_span_id: Option<String>,
    name: &'a str,
    kind: u8,
    start_time_unix_nano: String,
    end_time_unix_nano: String,
    attributes: Vec<KeyValue<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    events: Vec<SpanEvent>,
    status: Status<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SpanEvent {
    time_unix_nano: String,
    name: &'static str,
}

#[derive(Serialize)]
struct Status<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
    code: u8,
}

#[derive(Serialize)]
struct KeyValue<'a> {
    key: &'a str,
    value: AnyValue<'a>,
}

#[derive(Serialize)]
enum AnyValue<'a> {
    #[serde(rename = "stringValue")]
    Str(&'a str),
    #[serde(rename = "intValue")]
    Int(String),
}

fn nanos(ms: u64) -> String {
    (u128::from(ms) * 1_000_000).to_string()
}

fn kv<'a>(key: &'a str, v: &'a AttrValue) -> KeyValue<'a> {
    KeyValue {
        key,
        value: match v {
            AttrValue::Str(s) => AnyValue::Str(s),
            AttrValue::Int(n) => AnyValue::Int(n.to_string()),
        },
    }
}

/// The body of one `POST /v1/traces` (an `ExportTraceServiceRequest` as JSON).
pub fn encode_request(service_name: &str, spans: &[SpanRecord]) -> Vec<u8> {
    let service = AttrValue::Str(service_name.to_owned());
    let version = AttrValue::Str(env!("CARGO_PKG_VERSION").to_owned());
    let req = ExportRequest {
        resource_spans: [ResourceSpans {
            resource: Resource {
                attributes: vec![
                    kv("service.name", &service),
                    kv("service.version", &version),
                ],
            },
            scope_spans: [ScopeSpans {
                scope: Scope {
                    name: "narralytica-orchestrator",
                    version: env!("CARGO_PKG_VERSION"),
                },
                spans: spans
                    .iter()
                    .map(|s| {
                        let (code, message) = match &s.status {
                            SpanStatus::Unset => (0, ""),
                            SpanStatus::Ok => (1, ""),
                            SpanStatus::Error(m) => (2, m.as_str()),
                        };
                        Span {
                            trace_id: s.trace_id(),
                            span_id: s.span_id(),
                            parent_span_id: s.parent_span_id(),
                            name: &s.name,
                            kind: s.kind.code(),
                            start_time_unix_nano: nanos(s.start_ms),
                            end_time_unix_nano: nanos(s.end_ms.max(s.start_ms)),
                            attributes: s.attributes.iter().map(|(k, v)| kv(k, v)).collect(),
                            events: s
                                .events
                                .iter()
                                .map(|(name, at)| SpanEvent {
                                    time_unix_nano: nanos(*at),
                                    name,
                                })
                                .collect(),
                            status: Status { message, code },
                        }
                    })
                    .collect(),
            }],
        }],
    };
    serde_json::to_vec(&req).unwrap_or_default()
}

// ---------------------------------------------------------------------------
// The exporter.

/// Queues spans for export; cheap to call from the engine (one `try_send`).
pub struct OtlpExporter {
    tx: mpsc::Sender<SpanRecord>,
    flush_tx: mpsc::Sender<oneshot::Sender<()>>,
    metrics: Arc<Metrics>,
}

impl SpanSink for OtlpExporter {
    fn submit(&self, span: SpanRecord) {
        if self.tx.try_send(span).is_err() {
            Metrics::inc(&self.metrics.spans_dropped);
        }
    }
}

impl OtlpExporter {
    /// Starts the export task on the current tokio runtime. The endpoint is
    /// checked here; nothing is connected until the first batch.
    pub fn start(cfg: OtlpConfig, metrics: Arc<Metrics>) -> Result<Arc<OtlpExporter>, String> {
        let endpoint = HttpEndpoint::parse(&cfg.endpoint)?;
        let (tx, rx) = mpsc::channel(cfg.queue_max.max(1));
        let (flush_tx, flush_rx) = mpsc::channel(16);
        let task = ExportTask {
            endpoint,
            cfg,
            metrics: metrics.clone(),
            conn: None,
            failing: false,
        };
        tokio::spawn(task.run(rx, flush_rx));
        Ok(Arc::new(OtlpExporter {
            tx,
            flush_tx,
            metrics,
        }))
    }

    /// Exports everything queued so far (retries included) and returns true,
    /// or false if that takes longer than `within`. Spans still queued after
    /// a timeout are exported later (or lost at exit).
    pub async fn flush(&self, within: Duration) -> bool {
        let (done, wait) = oneshot::channel();
        let go = async { self.flush_tx.send(done).await.is_ok() && wait.await.is_ok() };
        tokio::time::timeout(within, go).await.unwrap_or(false)
    }
}

struct ExportTask {
    endpoint: HttpEndpoint,
    cfg: OtlpConfig,
    metrics: Arc<Metrics>,
    conn: Option<Conn>,
    /// The last batch failed: logged once per outage, not per batch.
    failing: bool,
}

enum PostError {
    /// Worth another attempt: connection trouble, 429, 5xx, timeout.
    Retry(String),
    /// The collector refused the request for good (other 4xx).
    Refused(String),
}

impl ExportTask {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<SpanRecord>,
        mut flush_rx: mpsc::Receiver<oneshot::Sender<()>>,
    ) {
        let batch_max = self.cfg.batch_max.max(1);
        let mut batch: Vec<SpanRecord> = Vec::with_capacity(batch_max.min(4096));
        let mut tick = tokio::time::interval(self.cfg.flush_every.max(Duration::from_millis(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                req = flush_rx.recv() => {
                    while let Ok(s) = rx.try_recv() {
                        batch.push(s);
                        if batch.len() >= batch_max {
                            self.export(&mut batch).await;
                        }
                    }
                    self.export(&mut batch).await;
                    match req {
                        Some(done) => {
                            let _ = done.send(());
                        }
                        // The exporter handle is gone.
                        None => return,
                    }
                }
                span = rx.recv() => match span {
                    Some(s) => {
                        batch.push(s);
                        if batch.len() >= batch_max {
                            self.export(&mut batch).await;
                        }
                    }
                    None => {
                        self.export(&mut batch).await;
                        return;
                    }
                },
                _ = tick.tick() => self.export(&mut batch).await,
            }
        }
    }

    /// Sends `batch` (emptying it), with retries; counts the outcome.
    async fn export(&mut self, batch: &mut Vec<SpanRecord>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let body = encode_request(&self.cfg.service_name, batch);
        batch.clear();
        // While the collector is known to be failing, each batch gets one
        // attempt: retries would only hold newer spans back in the queue.
        let attempts = if self.failing {
            1
        } else {
            self.cfg.attempts.max(1)
        };
        let mut backoff = Duration::from_millis(100);
        let mut last = String::new();
        for attempt in 1..=attempts {
            let r = match tokio::time::timeout(self.cfg.timeout, self.post(&body)).await {
                Ok(r) => r,
                Err(_) => Err(PostError::Retry(format!(
                    "no answer within {:?}",
                    self.cfg.timeout
                ))),
            };
            match r {
                Ok(rejected) => {
                    let rejected = rejected.min(n);
                    self.metrics
                        .spans_exported
                        .fetch_add(n - rejected, Ordering::Relaxed);
                    self.metrics
                        .spans_failed
                        .fetch_add(rejected, Ordering::Relaxed);
                    if std::mem::replace(&mut self.failing, false) {
                        tracing::info!(endpoint = %self.cfg.endpoint, "span export works again");
                    }
                    return;
                }
                Err(PostError::Refused(e)) => {
                    last = e;
                    self.conn = None;
                    break;
                }
                Err(PostError::Retry(e)) => {
                    last = e;
                    self.conn = None;
                    if attempt < attempts {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
        self.metrics.spans_failed.fetch_add(n, Ordering::Relaxed);
        if !std::mem::replace(&mut self.failing, true) {
            tracing::warn!(
                endpoint = %self.cfg.endpoint,
                spans = n,
                error = %last,
                "span export failed; spans are dropped and counted until it works again"
            );
        }
    }

    /// One POST; a kept-alive connection that turns out dead is replaced
    /// once without counting an attempt. Returns the spans the collector
    /// rejected (OTLP partial success).
    async fn post(&mut self, body: &[u8]) -> Result<u64, PostError> {
        let reused = self.conn.is_some();
        match self.post_once(body).await {
            Err(PostError::Retry(_)) if reused => {
                self.conn = None;
                self.post_once(body).await
            }
            r => r,
        }
    }

    async fn post_once(&mut self, body: &[u8]) -> Result<u64, PostError> {
        if self.conn.is_none() {
            let stream = TcpStream::connect((self.endpoint.host.as_str(), self.endpoint.port))
                .await
                .map_err(|e| PostError::Retry(format!("connect: {e}")))?;
            let _ = stream.set_nodelay(true);
            self.conn = Some(Conn {
                stream,
                buf: Vec::new(),
            });
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(PostError::Retry("no connection".into()));
        };
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: narralytica-orchestrator/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.endpoint.path,
            self.endpoint.host_header(),
            env!("CARGO_PKG_VERSION"),
            body.len()
        );
        let io = |e: std::io::Error| PostError::Retry(format!("send: {e}"));
        conn.stream.write_all(head.as_bytes()).await.map_err(io)?;
        conn.stream.write_all(body).await.map_err(io)?;
        let resp = conn.read_response().await.map_err(PostError::Retry)?;
        if !resp.keep_alive {
            self.conn = None;
        }
        match resp.status {
            200..=299 => Ok(rejected_spans(&resp.body)),
            408 | 429 | 500..=599 => Err(PostError::Retry(format!("HTTP {}", resp.status))),
            s => Err(PostError::Refused(format!(
                "HTTP {s}: {}",
                String::from_utf8_lossy(&resp.body[..resp.body.len().min(200)])
            ))),
        }
    }
}

/// `partialSuccess.rejectedSpans` of an OTLP JSON answer, 0 when absent.
fn rejected_spans(body: &[u8]) -> u64 {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return 0;
    };
    match v.pointer("/partialSuccess/rejectedSpans") {
        Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(serde_json::Value::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

/// Longest response head and body read from a collector.
const RESPONSE_HEAD_MAX: usize = 16 * 1024;
const RESPONSE_BODY_MAX: usize = 1024 * 1024;

struct Conn {
    stream: TcpStream,
    /// Bytes read but not yet consumed.
    buf: Vec<u8>,
}

struct Response {
    status: u16,
    keep_alive: bool,
    body: Vec<u8>,
}

impl Conn {
    /// Reads more bytes into `buf`; an error at end of stream.
    async fn fill(&mut self) -> Result<(), String> {
        let mut chunk = [0u8; 8192];
        let n = self
            .stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed by the collector".into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Takes the bytes up to (and without) the next `\r\n`.
    async fn line(&mut self, max: usize) -> Result<Vec<u8>, String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..i].to_vec();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            if self.buf.len() > max {
                return Err("response line too long".into());
            }
            self.fill().await?;
        }
    }

    async fn take(&mut self, n: usize) -> Result<Vec<u8>, String> {
        while self.buf.len() < n {
            self.fill().await?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    async fn read_response(&mut self) -> Result<Response, String> {
        let status_line = self.line(RESPONSE_HEAD_MAX).await?;
        let status_line = String::from_utf8_lossy(&status_line).into_owned();
        let mut parts = status_line.split_whitespace();
        let version = parts.next().unwrap_or_default().to_owned();
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {status_line:?}"))?;
        if !version.starts_with("HTTP/1.") {
            return Err(format!("bad status line {status_line:?}"));
        }
        let mut keep_alive = version == "HTTP/1.1";
        let mut length: Option<usize> = None;
        let mut chunked = false;
        let mut head = status_line.len();
        loop {
            let line = self.line(RESPONSE_HEAD_MAX).await?;
            head += line.len() + 2;
            if head > RESPONSE_HEAD_MAX {
                return Err("response head too large".into());
            }
            if line.is_empty() {
                break;
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            match name.as_str() {
                "content-length" => {
                    length = Some(
                        value
                            .parse()
                            .map_err(|_| format!("bad Content-Length {value:?}"))?,
                    )
                }
                "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
                "connection" => {
                    let v = value.to_ascii_lowercase();
                    if v.contains("close") {
                        keep_alive = false;
                    } else if v.contains("keep-alive") {
                        keep_alive = true;
                    }
                }
                _ => {}
            }
        }
        let body = if chunked {
            let mut body = Vec::new();
            loop {
                let size_line = self.line(1024).await?;
                let size_line = String::from_utf8_lossy(&size_line).into_owned();
                let size =
                    usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                        .map_err(|_| format!("bad chunk size {size_line:?}"))?;
                if size == 0 {
                    // Trailers, up to the empty line.
                    while !self.line(RESPONSE_HEAD_MAX).await?.is_empty() {}
                    break;
                }
                if body.len() + size > RESPONSE_BODY_MAX {
                    return Err("response body too large".into());
                }
                body.extend(self.take(size).await?);
                self.take(2).await?;
            }
            body
        } else if let Some(n) = length {
            if n > RESPONSE_BODY_MAX {
                return Err("response body too large".into());
            }
            self.take(n).await?
        } else if status == 204 || status == 304 || (100..200).contains(&status) {
            Vec::new()
        } else {
            // Delimited by the end of the connection.
            keep_alive = false;
            loop {
                if self.buf.len() > RESPONSE_BODY_MAX {
                    return Err("response body too large".into());
                }
                if self.fill().await.is_err() {
                    break;
                }
            }
            std::mem::take(&mut self.buf)
        };
        Ok(Response {
            status,
            keep_alive,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::trace::{span_id, trace_id};

    #[test]
    fn endpoints_parse_with_defaults_and_bad_ones_are_refused() {
        let e = HttpEndpoint::parse("http://127.0.0.1:4318").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.path.as_str()),
            ("127.0.0.1", 4318, "/v1/traces")
        );
        let e = HttpEndpoint::parse("http://collector/otlp/").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.path.as_str()),
            ("collector", 4318, "/otlp/v1/traces")
        );
        let e = HttpEndpoint::parse("HTTP://[::1]:9999/").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 9999));
        assert_eq!(e.host_header(), "[::1]:9999");
        for bad in [
            "",
            "collector:4318",
            "https://collector:4318",
            "http://",
            "http://host:0",
            "http://host:99999",
            "http://user@host:1",
            "http://host:1/x?y",
            "http://[::1:1",
        ] {
            assert!(HttpEndpoint::parse(bad).is_err(), "{bad:?}");
        }
        assert!(HttpEndpoint::parse("https://x")
            .unwrap_err()
            .contains("collector"));
    }

    #[test]
    fn requests_follow_the_otlp_json_mapping() {
        let span = SpanRecord {
            workflow_id: "v-1".into(),
            span_key: "v-1:ingest:0:1".into(),
            parent_key: Some(workflow_span_key("v-1", 0)),
            name: "ingest".into(),
            kind: SpanKind::Producer,
            start_ms: 1_700_000_000_000,
            end_ms: 1_700_000_000_250,
            attributes: vec![
                ("task.attempt", 1u32.into()),
                ("task.step", "ingest".into()),
            ],
            events: vec![("started", 1_700_000_000_010)],
            status: SpanStatus::Error("boom".into()),
        };
        let body = encode_request("svc", std::slice::from_ref(&span));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let rs = &v["resourceSpans"][0];
        assert_eq!(rs["resource"]["attributes"][0]["key"], "service.name");
        assert_eq!(
            rs["resource"]["attributes"][0]["value"]["stringValue"],
            "svc"
        );
        let s = &rs["scopeSpans"][0]["spans"][0];
        assert_eq!(s["traceId"], trace_id("v-1"));
        assert_eq!(s["spanId"], span_id("v-1:ingest:0:1"));
        assert_eq!(s["parentSpanId"], span_id("v-1/workflow"));
        assert_eq!(s["kind"], 4);
        assert_eq!(s["startTimeUnixNano"], "1700000000000000000");
        assert_eq!(s["endTimeUnixNano"], "1700000000250000000");
        assert_eq!(s["attributes"][0]["value"]["intValue"], "1");
        assert_eq!(s["attributes"][1]["value"]["stringValue"], "ingest");
        assert_eq!(s["events"][0]["name"], "started");
        assert_eq!(s["status"]["code"], 2);
        assert_eq!(s["status"]["message"], "boom");
    }

    #[test]
    fn partial_success_counts_rejected_spans() {
        assert_eq!(rejected_spans(b"{}"), 0);
        assert_eq!(rejected_spans(b""), 0);
        assert_eq!(
            rejected_spans(br#"{"partialSuccess":{"rejectedSpans":"3"}}"#),
            3
        );
        assert_eq!(
            rejected_spans(br#"{"partialSuccess":{"rejectedSpans":2}}"#),
            2
        );
    }
}
