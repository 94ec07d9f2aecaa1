//! Lifecycle events: every journaled transition, published on
//! `<prefix>.events.<pipeline>.<one token per event kind>.<status>`
//! ([`crate::protocol::subjects::Subjects::events`]: a kind's token is its
//! name when the record holds such an event, so a subject filter selects
//! every event of a kind), on the JetStream stream `<PREFIX>_EVENTS`
//! (limits retention), in journal order per workflow, at least once.
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
//!
//! | file | owns |
//! | --- | --- |
//! | `message` | the wire format of a lifecycle message and its decoder |
//! | `outbox` | the engine's side: building a record's message, the stored row |
//! | `stream` | the stream's limits and its creation |
//! | `publisher` | the task that publishes the outbox in order |
//! | `batching` | grouping records of one subject into one message |

mod batching;
mod message;
mod outbox;
mod publisher;
mod stream;

pub use message::{decode_message, EventMessage, LifecycleEvent};
pub use outbox::{
    decode_outbox_row, EventStats, Outbox, OutboxEntry, OutboxItem, OutboxMark, OutboxValue,
    StoredOutbox,
};
pub use publisher::run_publisher;
pub use stream::{ensure_stream, stream_config, EventsConfig};
