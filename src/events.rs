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

use std::collections::{HashMap, HashSet, VecDeque};
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

/// Every shape a message on the event stream can have: one record
/// (`workflow_id`, `pipeline`, `status`, `events`), or a batch of records
/// of several workflows with the same subject (`records`).
#[derive(Debug, Deserialize)]
struct WireMessage {
    v: u32,
    #[serde(default)]
    records: Option<Vec<EventMessage>>,
    #[serde(default)]
    workflow_id: Option<String>,
    #[serde(default)]
    pipeline: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    events: Option<Vec<LifecycleEvent>>,
}

/// Decodes a message of the event stream into its records, whichever its shape.
pub fn decode_message(bytes: &[u8]) -> Result<Vec<EventMessage>, String> {
    let w: WireMessage = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if w.v != VERSION {
        return Err(format!("unsupported event message version {}", w.v));
    }
    match (w.records, w.workflow_id, w.pipeline, w.status, w.events) {
        (Some(records), None, _, _, None) => Ok(records),
        (None, Some(workflow_id), Some(pipeline), Some(status), Some(events)) => {
            Ok(vec![EventMessage {
                v: w.v,
                workflow_id,
                pipeline,
                status,
                events,
            }])
        }
        _ => Err("an event message has either `records` or one record's fields".into()),
    }
}

/// The stored outbox row: what, besides the journal record itself, it takes
/// to build the record's message again (after a crash, or when the
/// publisher's channel overflowed).
///
/// Why not the message itself: the message is about ten times larger, and
/// each row lives for a millisecond (written with the record, deleted
/// after the publish). Storing the message made it most of the bytes of
/// every commit: WAL writes, memtable inserts, and a memtable flush every
/// ~2 s at 870 workflows/s (docs/benchmarks.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxMark {
    /// The workflow's pipeline.
    pub pipeline: crate::workflow::PipelineRef,
    /// The workflow's generation before the record.
    pub generation: u32,
    /// The workflow's status after the record ([`Status::code`]).
    pub status: u8,
}

/// The value of an outbox row, as written by this build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OutboxValue {
    Mark(OutboxMark),
}

/// An outbox row read back from storage.
#[derive(Debug, Clone, PartialEq)]
pub enum StoredOutbox {
    Mark(OutboxMark),
    /// A row written by an earlier build: the whole message.
    Message(OutboxEntry),
}

/// Decodes an outbox row of this build or of an earlier one. An earlier
/// row starts with its subject's length, which is never a valid
/// [`OutboxValue`] variant, so the two cannot be confused.
pub fn decode_outbox_row(key: &[u8], value: &[u8]) -> Result<StoredOutbox, crate::storage::Error> {
    match crate::storage::codec::decode::<OutboxValue>(key, value) {
        Ok(OutboxValue::Mark(m)) => Ok(StoredOutbox::Mark(m)),
        Err(e) => crate::storage::codec::decode::<OutboxEntry>(key, value)
            .map(StoredOutbox::Message)
            .map_err(|_| e),
    }
}

/// A built lifecycle message: its subject and body.
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
    /// Records of different workflows with the same subject sent in one
    /// message (1: every record alone).
    pub batch_max: usize,
    /// Largest batched message, in bytes.
    pub batch_max_bytes: usize,
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
            batch_max: 64,
            batch_max_bytes: 256 * 1024,
            scan_max: 10_000,
        }
    }
}

/// Publisher counters (rendered by `/metrics`).
#[derive(Debug, Default)]
pub struct EventStats {
    /// Journal records published (acknowledged by JetStream).
    pub published: AtomicU64,
    /// Messages that carried them (a batch carries several records).
    pub messages: AtomicU64,
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
    pipelines: Arc<crate::engine::registry::PipelineRegistry>,
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
            let (st, ob, pl) = (store.clone(), outbox.clone(), pipelines.clone());
            let limit = cfg.scan_max.max(1);
            let rows = tokio::task::spawn_blocking(move || {
                st.scan_outbox(limit, decode_outbox_row).map(|rows| {
                    let n = rows.len();
                    let items: Vec<_> = rows
                        .into_iter()
                        .map(|(key, row)| {
                            let item = row
                                .map_err(|e| e.to_string())
                                .and_then(|(k, stored)| rebuild(&ob, &st, &pl, k, stored));
                            (key, item)
                        })
                        .collect();
                    (n, items)
                })
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
            match rows {
                Ok((n, rows)) => {
                    if n >= limit {
                        outbox.rescan.store(true, Relaxed);
                    }
                    let mut bad = Vec::new();
                    for (key, item) in rows {
                        match item {
                            Ok(item) => backlog.push_back(item),
                            Err(e) => {
                                tracing::error!(error = %e, "outbox row cannot be published; dropped");
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
        // Records with the same subject share a message (in window order,
        // so each workflow's records stay in journal order).
        let groups = batch_by_subject(&window, cfg.batch_max.max(1), cfg.batch_max_bytes);
        let acks = groups.iter().map(|g| {
            let js = js.clone();
            let (payload, id) = g.message(&window);
            let msg = jetstream::message::PublishMessage::build()
                .payload(payload)
                .message_id(id);
            let subject = window[g.members[0]].subject.clone();
            async move {
                match js.send_publish(subject, msg).await {
                    Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
        });
        let sent = futures_util::future::join_all(acks).await;
        crate::failpoints::point("outbox.publish");
        let mut results: Vec<Result<(), String>> = vec![Ok(()); window.len()];
        for (g, r) in groups.iter().zip(sent) {
            for &m in &g.members {
                results[m] = r.clone();
            }
        }
        stats.messages.fetch_add(groups.len() as u64, Relaxed);
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
            // The next window does not wait for this delete, and the
            // delete costs no fsync of its own: a row whose delete is lost
            // (crash, error) is only sent again and de-duplicated.
            let committer = committer.clone();
            tokio::spawn(async move {
                if let Err(e) = committer.commit_unsynced(ops).await {
                    tracing::warn!(error = %e, "outbox rows not deleted; they will be sent again");
                }
            });
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

/// The message of an outbox row read back from storage: built again from
/// the journal record it names (an earlier build's row carries it whole).
fn rebuild(
    outbox: &Outbox,
    store: &WorkflowStore,
    pipelines: &crate::engine::registry::PipelineRegistry,
    key: crate::storage::keys::JournalKey,
    stored: StoredOutbox,
) -> Result<OutboxItem, String> {
    let entry = match stored {
        StoredOutbox::Message(entry) => entry,
        StoredOutbox::Mark(mark) => {
            let record: crate::workflow::JournalRecord = store
                .load_journal_record(key.partition, &key.id, key.seq)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("{}: journal record {} is gone", key.id, key.seq))?;
            let def = pipelines.get(&mark.pipeline)?;
            let status = Status::from_code(mark.status)
                .ok_or_else(|| format!("{}: unknown status code {}", key.id, mark.status))?;
            outbox
                .message(
                    &key.id,
                    &def,
                    key.seq,
                    mark.generation,
                    status,
                    &record.events,
                )
                .ok_or_else(|| format!("{}: record {} has no events", key.id, key.seq))?
        }
    };
    Ok(OutboxItem {
        partition: key.partition,
        workflow_id: key.id,
        seq: key.seq,
        subject: entry.subject,
        payload: entry.payload.into(),
    })
}

/// Records of one window that go out as one message.
#[derive(Debug, PartialEq, Eq)]
struct Group {
    /// Indexes into the window, in window order.
    members: Vec<usize>,
}

impl Group {
    /// The payload and `Nats-Msg-Id`. A single record goes out as it is
    /// stored, with id `<workflow>:<first seq>`; a batch wraps the stored
    /// records (`{"v":1,"records":[...]}`, no re-encoding) and its id is a
    /// 128-bit digest of every member's `<workflow>:<seq>`, so a re-sent
    /// batch of the same records is dropped by the server and a batch of
    /// other records never is.
    fn message(&self, window: &[OutboxItem]) -> (bytes::Bytes, String) {
        if let [only] = self.members[..] {
            let item = &window[only];
            return (
                item.payload.clone(),
                format!("{}:{}", item.workflow_id, item.seq),
            );
        }
        let len: usize = self
            .members
            .iter()
            .map(|&m| window[m].payload.len() + 1)
            .sum();
        let mut body = Vec::with_capacity(len + 24);
        body.extend_from_slice(b"{\"v\":1,\"records\":[");
        let (mut h1, mut h2) = (
            std::hash::DefaultHasher::new(),
            std::hash::DefaultHasher::new(),
        );
        std::hash::Hash::hash(&0x5eed_u64, &mut h2);
        for (k, &m) in self.members.iter().enumerate() {
            if k > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&window[m].payload);
            for h in [&mut h1, &mut h2] {
                std::hash::Hash::hash(&window[m].workflow_id, h);
                std::hash::Hash::hash(&window[m].seq, h);
            }
        }
        body.extend_from_slice(b"]}");
        let id = format!(
            "b:{:016x}{:016x}",
            std::hash::Hasher::finish(&h1),
            std::hash::Hasher::finish(&h2)
        );
        (body.into(), id)
    }
}

/// Splits a window into messages: records with the same subject together,
/// at most `max` records and about `max_bytes` bytes each (a record larger
/// than that goes alone).
fn batch_by_subject(window: &[OutboxItem], max: usize, max_bytes: usize) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    let mut open: HashMap<&str, (usize, usize)> = HashMap::new(); // subject -> (group, bytes)
    for (i, item) in window.iter().enumerate() {
        let size = item.payload.len() + 1;
        match open.get_mut(item.subject.as_str()) {
            Some((g, bytes))
                if groups[*g].members.len() < max && *bytes + size + 24 <= max_bytes =>
            {
                groups[*g].members.push(i);
                *bytes += size;
            }
            _ => {
                open.insert(item.subject.as_str(), (groups.len(), size));
                groups.push(Group { members: vec![i] });
            }
        }
    }
    groups
}

#[cfg(test)]
mod batch_tests {
    use super::*;

    fn item(wf: &str, seq: u64, subject: &str) -> OutboxItem {
        let msg = EventMessage {
            v: 1,
            workflow_id: wf.into(),
            pipeline: "video".into(),
            status: "running".into(),
            events: vec![LifecycleEvent {
                id: format!("{wf}:{seq}"),
                seq,
                at: 1,
                event: "task_succeeded".into(),
                generation: 0,
                step: Some("ingest".into()),
                attempt: Some(1),
                worker: None,
                error: None,
                output: None,
            }],
        };
        OutboxItem {
            partition: 0,
            workflow_id: wf.into(),
            seq,
            subject: subject.into(),
            payload: serde_json::to_vec(&msg).unwrap().into(),
        }
    }

    #[test]
    fn records_with_one_subject_share_messages_up_to_the_limits() {
        let w = vec![
            item("a", 1, "s.x"),
            item("b", 1, "s.y"),
            item("c", 4, "s.x"),
            item("d", 2, "s.x"),
        ];
        let g = batch_by_subject(&w, 2, 1 << 20);
        let members: Vec<Vec<usize>> = g.iter().map(|g| g.members.clone()).collect();
        assert_eq!(members, vec![vec![0, 2], vec![1], vec![3]]);
        // A byte bound below two records sends each alone.
        let one = w[0].payload.len();
        let g = batch_by_subject(&w, 64, one + 30);
        assert_eq!(g.len(), 4);
        // max 1 turns batching off.
        assert_eq!(batch_by_subject(&w, 1, 1 << 20).len(), 4);
    }

    #[test]
    fn batches_decode_into_their_records_and_single_records_are_unchanged() {
        let w = vec![item("a", 1, "s.x"), item("c", 4, "s.x")];
        let (single, id) = Group { members: vec![1] }.message(&w);
        assert_eq!(single, w[1].payload);
        assert_eq!(id, "c:4");
        let recs = decode_message(&single).unwrap();
        assert_eq!((recs.len(), recs[0].workflow_id.as_str()), (1, "c"));

        let (batch, id) = Group {
            members: vec![0, 1],
        }
        .message(&w);
        let recs = decode_message(&batch).unwrap();
        let ids: Vec<_> = recs.iter().map(|r| r.events[0].id.as_str()).collect();
        assert_eq!(ids, ["a:1", "c:4"]);
        assert!(id.starts_with("b:") && id.len() == 34, "{id}");
        // The same records give the same id; others a different one.
        assert_eq!(
            Group {
                members: vec![0, 1]
            }
            .message(&w)
            .1,
            id
        );
        let other = vec![item("a", 1, "s.x"), item("c", 5, "s.x")];
        assert_ne!(
            Group {
                members: vec![0, 1]
            }
            .message(&other)
            .1,
            id
        );
    }

    #[test]
    fn malformed_or_mixed_messages_are_refused() {
        for bad in [
            &b"{}"[..],
            br#"{"v":2,"records":[]}"#,
            br#"{"v":1,"records":[],"workflow_id":"a","events":[]}"#,
            br#"{"v":1,"workflow_id":"a"}"#,
            b"not json",
        ] {
            assert!(
                decode_message(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}

#[cfg(test)]
mod outbox_tests {
    use super::*;
    use crate::engine::registry::PipelineRegistry;
    use crate::storage::{MemoryStorage, Storage};
    use crate::workflow::{decide_start, JournalRecordRef};

    #[test]
    fn a_stored_mark_rebuilds_the_message_sent_after_the_commit_and_old_rows_still_read() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pipelines/video.toml");
        let def = crate::pipeline::load::load_pipeline_file(&path, &Default::default()).unwrap();
        let mem = Arc::new(MemoryStorage::new());
        let store = WorkflowStore::open(mem.clone(), 4).unwrap();
        let pipelines = PipelineRegistry::new(store.clone(), vec![def]);
        let (pref, def) = pipelines.current("video").unwrap();
        let (outbox, _rx) = Outbox::new("narralytica", &EventsConfig::default()).unwrap();
        let id = "video-1";
        let decision = decide_start(id, pref.clone(), &def, r#"{"video_id":"v1"}"#, 1_000);
        let expected = outbox
            .message(id, &def, 1, 0, Status::Running, &decision.events)
            .unwrap();
        let record = JournalRecordRef {
            first_seq: 1,
            events: &decision.events,
        };
        let mark = OutboxValue::Mark(OutboxMark {
            pipeline: pref,
            generation: 0,
            status: Status::Running.code(),
        });
        // A row of an earlier build carries its message whole.
        let legacy = OutboxEntry {
            subject: "narralytica.events.video.workflow_paused".into(),
            payload: b"{\"v\":1}".to_vec(),
        };
        let ops = vec![
            store.journal_put(0, id, 1, &record).unwrap(),
            store.outbox_put(0, id, 1, &mark).unwrap(),
            store.outbox_put(0, id, 9, &legacy).unwrap(),
        ];
        mem.write(&ops, true).unwrap();
        let mark_bytes = mem
            .get(&crate::storage::keys::outbox(0, id, 1).unwrap())
            .unwrap()
            .unwrap();
        assert!(
            mark_bytes.len() * 5 < expected.payload.len(),
            "the row is a fraction of the message: {} vs {} bytes",
            mark_bytes.len(),
            expected.payload.len()
        );
        let rows = store.scan_outbox(10, decode_outbox_row).unwrap();
        let items: Vec<OutboxItem> = rows
            .into_iter()
            .map(|(_, row)| {
                let (k, stored) = row.unwrap();
                rebuild(&outbox, &store, &pipelines, k, stored).unwrap()
            })
            .collect();
        assert_eq!(items.len(), 2);
        assert_eq!((items[0].seq, &items[0].subject), (1, &expected.subject));
        assert_eq!(&items[0].payload[..], &expected.payload[..]);
        assert_eq!((items[1].seq, &items[1].subject), (9, &legacy.subject));
        assert_eq!(&items[1].payload[..], &legacy.payload[..]);
        // A mark whose record is gone cannot be published (the caller drops it).
        let gone = rebuild(
            &outbox,
            &store,
            &pipelines,
            crate::storage::keys::JournalKey {
                partition: 0,
                id: id.into(),
                seq: 2,
            },
            StoredOutbox::Mark(OutboxMark {
                pipeline: pipelines.current("video").unwrap().0,
                generation: 0,
                status: 1,
            }),
        );
        assert!(gone.is_err());
    }
}
