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
//! `<endpoint>/v1/traces` over http or https, with the configured headers
//! (credentials) and optionally gzip, retrying with backoff. The JSON
//! encoding is in `encode`, the HTTP transport (reqwest) in `client`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use std::path::PathBuf;

use tokio::sync::{mpsc, oneshot};

use crate::telemetry::Metrics;

mod client;
mod encode;

pub use client::{Compression, OtlpEndpoint, OtlpHeaders};
pub use encode::encode_request;

use client::{Collector, PostError};

pub use crate::telemetry::span::{
    workflow_span_key, AttrValue, SpanKind, SpanRecord, SpanSink, SpanStatus,
};

/// Exporter settings; each one is a `[trace]` key of the service config.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpConfig {
    /// Base URL, `http(s)://host[:port][/path]`; spans go to `<path>/v1/traces`.
    pub endpoint: String,
    /// Extra request headers, usually credentials; never printed.
    pub headers: OtlpHeaders,
    /// Compression of request bodies.
    pub compression: Compression,
    /// PEM file of the CA that https trusts instead of the system's roots.
    pub ca_file: Option<PathBuf>,
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
            headers: OtlpHeaders::default(),
            compression: Compression::None,
            ca_file: None,
            service_name: "narralytica-orchestrator".into(),
            batch_max: 512,
            queue_max: 65_536,
            flush_every: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            attempts: 3,
        }
    }
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
        let endpoint = OtlpEndpoint::parse(&cfg.endpoint)?;
        let collector = Collector::new(
            endpoint,
            &cfg.headers,
            cfg.compression,
            cfg.ca_file.as_deref(),
            cfg.timeout,
        )?;
        let (tx, rx) = mpsc::channel(cfg.queue_max.max(1));
        let (flush_tx, flush_rx) = mpsc::channel(16);
        let task = ExportTask {
            collector,
            cfg,
            metrics: metrics.clone(),
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
    collector: Collector,
    cfg: OtlpConfig,
    metrics: Arc<Metrics>,
    /// The last batch failed: logged once per outage, not per batch.
    failing: bool,
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
        let body = self
            .collector
            .body(encode_request(&self.cfg.service_name, batch));
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
            let r = match tokio::time::timeout(self.cfg.timeout, self.collector.post(body.clone()))
                .await
            {
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
                    break;
                }
                Err(PostError::Retry(e)) => {
                    last = e;
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
}

#[cfg(test)]
mod tests;
