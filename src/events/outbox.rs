//! The engine's side of the outbox ([`LifecycleOutbox`]): the message of a
//! journal record, the row stored with it, and the hand-over to the
//! publisher after the commit.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{EventMessage, EventsConfig, LifecycleEvent};
use crate::admin::{history_event, HistoryEvent};
use crate::engine::outbox::LifecycleOutbox;
pub use crate::engine::outbox::{OutboxEntry, OutboxItem, OutboxMark, OutboxValue};
use crate::pipeline::PipelineDef;
use crate::protocol::subjects::{event_kind_position, Subjects};
use crate::protocol::VERSION;
use crate::workflow::{Event, EventKind, Status};

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
    pub(super) rescan: AtomicBool,
    /// Wakes an idle publisher when `rescan` is set without a message.
    pub(super) rescan_wake: tokio::sync::Notify,
    /// The partitions whose rows this node publishes; `None`: all (a
    /// single node). A cluster node leaves the rows of the partitions
    /// other nodes serve to them.
    served: parking_lot::RwLock<Option<std::collections::BTreeSet<u16>>>,
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
                rescan_wake: tokio::sync::Notify::new(),
                served: parking_lot::RwLock::new(None),
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
        events.last()?;
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
                signal,
                signal_id,
                due_at,
                child,
                ..
            } = history_event(seq, ev, generation, &step_name);
            let output = match &ev.kind {
                EventKind::TaskSucceeded { output, .. }
                | EventKind::ElementSucceeded { output, .. }
                | EventKind::SignalReceived {
                    payload: output, ..
                } => serde_json::value::RawValue::from_string(output.to_string()).ok(),
                EventKind::ChildFinished {
                    outcome: crate::workflow::ChildOutcome::Succeeded { output },
                    ..
                } => serde_json::value::RawValue::from_string(output.clone()).ok(),
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
                elements: match &ev.kind {
                    EventKind::MapExpanded { elements, .. } => Some(*elements),
                    _ => None,
                },
                failed: match &ev.kind {
                    EventKind::MapSucceeded { failed, .. } => Some(failed.clone()),
                    _ => None,
                },
                signal,
                signal_id,
                due_at,
                child,
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
            subject: self
                .subjects
                .events(&def.name, kind_mask(events), status.as_str()),
            payload,
        })
    }

    /// The partitions whose stored rows this node publishes; `None`: all.
    pub fn published_partitions(&self) -> Option<Vec<u16>> {
        self.served
            .read()
            .as_ref()
            .map(|s| s.iter().copied().collect())
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

/// The engine's port, served by the methods above (one call per journal
/// record, through the engine's `Arc<dyn LifecycleOutbox>`).
impl LifecycleOutbox for Outbox {
    fn dropping(&self) -> bool {
        Outbox::dropping(self)
    }

    fn message(
        &self,
        id: &str,
        def: &PipelineDef,
        first_seq: u64,
        generation: u32,
        status: Status,
        events: &[Event],
    ) -> Option<OutboxEntry> {
        Outbox::message(self, id, def, first_seq, generation, status, events)
    }

    fn committed(&self, item: OutboxItem) {
        Outbox::committed(self, item)
    }

    fn serving(&self, partitions: &[u16], started: bool) {
        *self.served.write() = Some(partitions.iter().copied().collect());
        if started {
            self.rescan.store(true, Relaxed);
            self.rescan_wake.notify_one();
        }
    }
}

/// The bits of [`crate::protocol::subjects::EVENT_KINDS`] that `events` hold.
pub fn kind_mask(events: &[Event]) -> u32 {
    events
        .iter()
        .filter_map(|e| event_kind_position(e.kind.name()))
        .fold(0, |m, i| m | 1 << i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::subjects::EVENT_KINDS;
    use crate::workflow::{
        AfterFailure, EventKind, PipelineRef, ReopenMode, TaskError, TimeoutKind,
    };

    #[test]
    fn every_event_kind_has_a_token_in_the_event_subject() {
        let error = TaskError {
            kind: "k".into(),
            message: "m".into(),
            retryable: true,
        };
        let kinds = [
            EventKind::WorkflowStarted {
                id: "w".into(),
                pipeline: PipelineRef {
                    name: "p".into(),
                    version: 1,
                    hash: 0,
                },
                input: "{}".into(),
                steps: 1,
                deadline_ms: None,
            },
            EventKind::TaskDispatched {
                step: 0,
                attempt: 1,
                task_id: "t".into(),
            },
            EventKind::TaskSucceeded {
                step: 0,
                attempt: 1,
                output: "{}".into(),
                worker: None,
                started_at_ms: None,
            },
            EventKind::TaskFailed {
                step: 0,
                attempt: 1,
                error,
                worker: None,
                then: AfterFailure::GiveUp,
            },
            EventKind::TaskTimedOut {
                step: 0,
                attempt: 1,
                timeout: TimeoutKind::Heartbeat,
                then: AfterFailure::GiveUp,
            },
            EventKind::WorkflowPaused,
            EventKind::WorkflowResumed,
            EventKind::WorkflowCompleted,
            EventKind::WorkflowFailed {
                step: None,
                reason: "r".into(),
            },
            EventKind::WorkflowCancelled { reason: "r".into() },
            EventKind::WorkflowReopened {
                generation: 1,
                mode: ReopenMode::RetryFailed,
                reset: vec![],
                deadline_ms: None,
            },
            EventKind::MapExpanded {
                step: 0,
                over_step: 0,
                pointer: String::new(),
                elements: 1,
            },
            EventKind::ElementDispatched {
                step: 0,
                index: 0,
                attempt: 1,
                task_id: "t".into(),
            },
            EventKind::ElementSucceeded {
                step: 0,
                index: 0,
                attempt: 1,
                output: "{}".into(),
                worker: None,
                started_at_ms: None,
            },
            EventKind::ElementFailed {
                step: 0,
                index: 0,
                attempt: 1,
                error: TaskError {
                    kind: "k".into(),
                    message: "m".into(),
                    retryable: true,
                },
                worker: None,
                then: AfterFailure::GiveUp,
            },
            EventKind::ElementTimedOut {
                step: 0,
                index: 0,
                attempt: 1,
                timeout: TimeoutKind::Heartbeat,
                then: AfterFailure::GiveUp,
            },
            EventKind::MapSucceeded {
                step: 0,
                failed: vec![],
            },
            EventKind::MapFailed {
                step: 0,
                reason: "r".into(),
            },
            EventKind::StepSkipped { step: 0 },
            EventKind::SignalReceived {
                name: "approved".into(),
                id: "s1".into(),
                payload: "{}".into(),
            },
            EventKind::WaitStarted { step: 0, due_ms: 2 },
            EventKind::WaitSucceeded {
                step: 0,
                signal_id: "s1".into(),
            },
            EventKind::WaitTimedOut {
                step: 0,
                then: crate::pipeline::OnTimeout::Skip,
            },
            EventKind::ChildStarted {
                step: 0,
                child_id: "w~s~0".into(),
            },
            EventKind::ChildFinished {
                step: 0,
                child_id: "w~s~0".into(),
                outcome: crate::workflow::ChildOutcome::Succeeded {
                    output: "{}".into(),
                },
            },
        ];
        // Every kind in the subject, in the order of the list.
        let names: Vec<&str> = kinds.iter().map(EventKind::name).collect();
        assert_eq!(names, EVENT_KINDS);
        let events: Vec<Event> = kinds
            .into_iter()
            .map(|kind| Event { at_ms: 1, kind })
            .collect();
        assert_eq!(kind_mask(&events), (1 << EVENT_KINDS.len()) - 1);
        assert_eq!(kind_mask(&events[2..3]), 0b100);
    }
}
