//! The wire format of a lifecycle message and its decoder.

use serde::{Deserialize, Serialize};

use crate::protocol::VERSION;

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
    /// The step's output (`task_succeeded`), the element's (`element_succeeded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Box<serde_json::value::RawValue>>,
    /// The length of a map step's array (`map_expanded` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elements: Option<u32>,
    /// The indices of the elements that failed (`map_succeeded` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<Vec<u32>>,
    /// The signal's name (`signal_received` only; its payload is `output`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// The signal's id (`signal_received`, `wait_succeeded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal_id: Option<String>,
    /// When the wait times out, unix ms (`wait_started` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<u64>,
    /// The child workflow (`child_started`, `child_finished` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child: Option<String>,
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

#[cfg(test)]
mod tests {
    use super::*;

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
