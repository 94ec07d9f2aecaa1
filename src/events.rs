//! Lifecycle events: every journaled transition, published on
//! `<prefix>.events.<pipeline>.<event>` (JetStream stream `<PREFIX>_EVENTS`,
//! limits retention), in journal order per workflow, at least once.
//!
//! **The outbox.** The message of a journal record is built when the record
//! is prepared and written, as an `O` row, in the record's own synced batch.
//! After the commit the engine hands the same message to the publisher over
//! a bounded channel (no storage read on the hot path). The publisher
//! deletes the row once JetStream has acknowledged the message. A crash
//! between the journal write and the publish leaves the row, which the next
//! start publishes: so no transition is ever missing from the stream.
//!
//! **Order.** A workflow's transitions are committed one after another by
//! its actor, so its rows and channel items are in journal order. The
//! publisher sends windows of messages with many acknowledgements in flight
//! but at most one message per workflow per window, and a failed message is
//! retried before anything later of its workflow. When the channel
//! overflows, the publisher discards it and reads the rows from storage
//! instead (in key order = journal order per workflow) until it has caught up.
//!
//! **Duplicates.** A message is re-sent after a crash or a lost
//! acknowledgement; its `Nats-Msg-Id` (`<workflow>:<first seq>`) lets
//! JetStream drop it within the duplicate window, and every event carries an
//! `id` (`<workflow>:<seq>`) for consumers to deduplicate beyond it.
//!
//! One message carries all transitions of one workflow from one commit, so
//! events cost one message per journal record, not one per event.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::admin::{history_event, HistoryEvent};
use crate::pipeline::PipelineDef;
use crate::protocol::subjects::Subjects;
use crate::protocol::VERSION;
use crate::storage::group_commit::GroupCommitter;
use crate::storage::store::WorkflowStore;
use crate::workflow::{Event, EventKind, Status};

/// One event of a lifecycle message (the fields of `history --json`, plus
/// the event id and, for `task_succeeded`, the step's output).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LifecycleEvent {
    /// `<workflow_id>:<seq>`: unique, for deduplication.
    pub id: String,
    pub seq: u64,
    /// When the orchestrator decided it, unix ms.
    pub at: u64,
    /// `workflow_started`, `task_dispatched`, `task_succeeded`, ...
    pub event: String,
    pub generation: u32,
    pub step: Option<String>,
    pub attempt: Option<u32>,
    pub worker: Option<String>,
    pub error: Option<String>,
    /// The step's output (`task_succeeded` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Box<serde_json::value::RawValue>>,
}

/// One message on the event stream: the transitions of one workflow from one commit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventMessage {
    pub v: u32,
    pub workflow_id: String,
    pub pipeline: String,
    /// The workflow's status after these events.
    pub status: String,
    pub events: Vec<LifecycleEvent>,
}

/// The stored outbox row: the message, ready to send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub subject: String,
    pub payload: Vec<u8>,
}

/// A message on its way to the publisher.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    pub partition: u16,
    pub workflow_id: String,
    pub seq: u64,
    pub subject: String,
    pub payload: bytes::Bytes,
}

/// Limits of the event stream and its publisher.
#[derive(Debug, Clone)]
pub struct EventsConfig {
    pub max_age: Duration,
    pub max_bytes: i64,
    pub duplicate_window: Duration,
    /// Messages between the engine and the publisher; beyond, the publisher
    /// reads the outbox from storage instead (nothing is lost).
    pub queue_max: usize,
    /// Messages with acknowledgements in flight at once.
    pub window_max: usize,
    /// Outbox rows read from storage per catch-up scan.
    pub scan_max: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: 1 << 30,
            duplicate_window: Duration::from_secs(120),
            queue_max: 65_536,
            window_max: 512,
            scan_max: 10_000,
        }
    }
}

/// Publisher counters (rendered by `/metrics`).
#[derive(Debug, Default)]
pub struct EventStats {
    pub published: AtomicU64,
    pub failures: AtomicU64,
    pub overflows: AtomicU64,
    pub scans: AtomicU64,
    /// Messages the publisher holds in memory, waiting for their turn.
    pub backlog: AtomicU64,
}

/// The engine's side of the outbox.
pub struct Outbox {
    subjects: Subjects,
    tx: mpsc::Sender<OutboxItem>,
    /// Set when the channel overflowed: the publisher must read storage.
    rescan: AtomicBool,
    pub stats: Arc<EventStats>,
    /// Test-only negative control: committed messages are neither stored
    /// nor handed over (the checker must notice the missing events).
    drop_all: AtomicBool,
}

impl Outbox {
    pub fn new(
        prefix: &str,
        cfg: &EventsConfig,
    ) -> Result<(Arc<Outbox>, mpsc::Receiver<OutboxItem>), String> {
        let (tx, rx) = mpsc::channel(cfg.queue_max.max(1));
        Ok((
            Arc::new(Outbox {
                subjects: Subjects::new(prefix)?,
                tx,
                // The first thing the publisher does is read what a previous run left.
                rescan: AtomicBool::new(true),
                stats: Arc::default(),
                drop_all: AtomicBool::new(false),
            }),
            rx,
        ))
    }

    /// Negative control for the reliability suite: lose every event.
    pub fn plant_drop_all(&self) {
        self.drop_all.store(true, Relaxed);
    }

    pub fn dropping(&self) -> bool {
        self.drop_all.load(Relaxed)
    }

    /// The message of one journal record. `generation` is the workflow's
    /// generation before the record; `status` its status after it.
    pub fn message(
        &self,
        id: &str,
        def: &PipelineDef,
        first_seq: u64,
        generation: u32,
        status: Status,
        events: &[Event],
    ) -> Option<OutboxEntry> {
        let last = events.last()?;
        let step_name = |i: u16| {
            def.steps
                .get(usize::from(i))
                .map_or_else(|| format!("#{i}"), |s| s.name.clone())
        };
        let mut generation = generation;
        let mut out = Vec::with_capacity(events.len());
        for (k, ev) in events.iter().enumerate() {
            if let EventKind::WorkflowReopened { generation: g, .. } = &ev.kind {
                generation = *g;
            }
            let seq = first_seq + k as u64;
            let HistoryEvent {
                seq,
                at,
                event,
                generation,
                step,
                attempt,
                worker,
                error,
            } = history_event(seq, ev, generation, &step_name);
            let output = match &ev.kind {
                EventKind::TaskSucceeded { output, .. } => {
                    serde_json::value::RawValue::from_string(output.to_string()).ok()
                }
                _ => None,
            };
            out.push(LifecycleEvent {
                id: format!("{id}:{seq}"),
                seq,
                at,
                event,
                generation,
                step,
                attempt,
                worker,
                error,
                output,
            });
        }
        let msg = EventMessage {
            v: VERSION,
            workflow_id: id.to_owned(),
            pipeline: def.name.clone(),
            status: status.as_str().to_owned(),
            events: out,
        };
        let payload = serde_json::to_vec(&msg).ok()?;
        Some(OutboxEntry {
            subject: self.subjects.events(&def.name, last.kind.name()),
            payload,
        })
    }

    /// After the record's batch is durable: hand the message over. Never blocks.
    pub fn committed(&self, item: OutboxItem) {
        if self.tx.try_send(item).is_err() {
            // The row is in storage: the publisher will read it from there.
            self.stats.overflows.fetch_add(1, Relaxed);
            self.rescan.store(true, Relaxed);
        }
    }
}

/// Creates (or updates) the event stream.
pub async fn ensure_stream(
    js: &jetstream::Context,
    prefix: &str,
    cfg: &EventsConfig,
    max_message_bytes: usize,
) -> Result<(), String> {
    let subjects = Subjects::new(prefix)?;
    let name = crate::transport::nats::stream_name(prefix, "EVENTS");
    js.get_or_create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![format!("{}.events.>", subjects.prefix())],
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        max_age: cfg.max_age,
        max_bytes: cfg.max_bytes,
        max_message_size: i32::try_from(max_message_bytes).unwrap_or(i32::MAX),
        duplicate_window: cfg.duplicate_window,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("cannot create stream {name}: {e}"))?;
    Ok(())
}

/// Publishes outbox messages until `rx` closes (the engine is gone) and
/// nothing is left in memory.
pub async fn run_publisher(
    outbox: Arc<Outbox>,
    mut rx: mpsc::Receiver<OutboxItem>,
    store: WorkflowStore,
    committer: Arc<GroupCommitter>,
    js: jetstream::Context,
    cfg: EventsConfig,
) {
    let stats = outbox.stats.clone();
    let mut backlog: VecDeque<OutboxItem> = VecDeque::new();
    let mut backoff = Duration::from_millis(100);
    let window_max = cfg.window_max.max(1);
    loop {
        if backlog.is_empty() && outbox.rescan.swap(false, Relaxed) {
            // Storage is the truth: what the channel holds is in it too.
            while rx.try_recv().is_ok() {}
            stats.scans.fetch_add(1, Relaxed);
            let st = store.clone();
            let limit = cfg.scan_max.max(1);
            let rows = tokio::task::spawn_blocking(move || st.scan_outbox::<OutboxEntry>(limit))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            match rows {
                Ok(rows) => {
                    if rows.len() >= limit {
                        outbox.rescan.store(true, Relaxed);
                    }
                    let mut bad = Vec::new();
                    for (key, row) in rows {
                        match row {
                            Ok((k, entry)) => backlog.push_back(OutboxItem {
                                partition: k.partition,
                                workflow_id: k.id,
                                seq: k.seq,
                                subject: entry.subject,
                                payload: entry.payload.into(),
                            }),
                            Err(e) => {
                                tracing::error!(error = %e, "corrupt outbox row dropped");
                                bad.push(crate::storage::Op::Delete(key));
                            }
                        }
                    }
                    if !bad.is_empty() {
                        let _ = committer.commit(bad).await;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the event outbox");
                    outbox.rescan.store(true, Relaxed);
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            }
        }
        if backlog.is_empty() {
            match rx.recv().await {
                Some(item) => backlog.push_back(item),
                None => return,
            }
            while backlog.len() < window_max * 4 {
                match rx.try_recv() {
                    Ok(item) => backlog.push_back(item),
                    Err(_) => break,
                }
            }
            if outbox.rescan.load(Relaxed) {
                // Overflowed meanwhile: these are in storage, in order.
                backlog.clear();
                continue;
            }
        }
        // One window: at most one message per workflow, taken in order.
        let mut in_window: HashSet<String> = HashSet::new();
        let mut window = Vec::new();
        let mut rest = VecDeque::with_capacity(backlog.len());
        while let Some(item) = backlog.pop_front() {
            if window.len() < window_max && in_window.insert(item.workflow_id.clone()) {
                window.push(item);
            } else {
                rest.push_back(item);
            }
        }
        backlog = rest;
        stats.backlog.store(backlog.len() as u64, Relaxed);
        let acks = window.iter().map(|item| {
            let js = js.clone();
            let msg = jetstream::message::PublishMessage::build()
                .payload(item.payload.clone())
                .message_id(format!("{}:{}", item.workflow_id, item.seq));
            let subject = item.subject.clone();
            async move {
                match js.send_publish(subject, msg).await {
                    Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
        });
        let results = futures_util::future::join_all(acks).await;
        crate::failpoints::point("outbox.publish");
        let mut done = Vec::new();
        let mut failed = Vec::new();
        for (item, r) in window.into_iter().zip(results) {
            match r {
                Ok(()) => done.push(item),
                Err(e) => {
                    tracing::warn!(workflow_id = %item.workflow_id, seq = item.seq, error = %e, "event publish failed; will retry");
                    failed.push(item);
                }
            }
        }
        if !done.is_empty() {
            let ops: Vec<_> = done
                .iter()
                .filter_map(|i| store.outbox_delete(i.partition, &i.workflow_id, i.seq).ok())
                .collect();
            stats.published.fetch_add(done.len() as u64, Relaxed);
            if let Err(e) = committer.commit(ops).await {
                // The rows stay; they are re-sent (and de-duplicated) later.
                tracing::warn!(error = %e, "outbox rows not deleted");
            }
        }
        if failed.is_empty() {
            backoff = Duration::from_millis(100);
        } else {
            stats.failures.fetch_add(failed.len() as u64, Relaxed);
            // Failed ones first, so each workflow's order holds.
            for item in failed.into_iter().rev() {
                backlog.push_front(item);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}
