//! The engine's port to the lifecycle-event outbox: what the journal's hot
//! path needs to write a record's outbox row in the record's own batch and
//! to hand the record's message over once the batch is durable. The events
//! adapter (`crate::events::Outbox`) implements [`LifecycleOutbox`]; the
//! wiring injects it through [`Hooks::outbox`](super::Hooks::outbox).
//!
//! The port is called once per journal record (not per event): the
//! message of a record carries all of its events.

use serde::{Deserialize, Serialize};

use crate::pipeline::PipelineDef;
use crate::workflow::{Event, Status};

/// Where the lifecycle message of each journal record goes.
pub trait LifecycleOutbox: Send + Sync {
    /// True while committed records get no message (a test-only negative
    /// control: the checker must notice the missing events).
    fn dropping(&self) -> bool;

    /// The message of one journal record of workflow `id`: its subject and
    /// body. `generation` is the workflow's generation before the record;
    /// `status` its status after it. `None` when there is nothing to send.
    fn message(
        &self,
        id: &str,
        def: &PipelineDef,
        first_seq: u64,
        generation: u32,
        status: Status,
        events: &[Event],
    ) -> Option<OutboxEntry>;

    /// After the record's batch is durable: hand its message over. Never
    /// blocks.
    fn committed(&self, item: OutboxItem);

    /// The engine now serves `partitions` (a cluster node's set changed).
    /// When `started` is set, a partition joined it: its stored rows (the
    /// records its previous owner committed and had not published, which
    /// the journal's replay brought in) are to be published.
    fn serving(&self, partitions: &[u16], started: bool) {
        let _ = (partitions, started);
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
