//! The requests and replies of the workflow verbs (`start`, `describe`,
//! `history`, `list` and the operator inputs).

use serde::{Deserialize, Serialize};

#[allow(unused_imports)] // referenced by the doc links below
use super::{HISTORY_PAGE_MAX, LIST_PAGE_DEFAULT, LIST_PAGE_MAX};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartRequest {
    pub v: u32,
    pub pipeline: String,
    pub id: String,
    pub input: serde_json::Value,
    /// A registered version of the pipeline; absent: its current version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_version: Option<u32>,
    /// `low`, `normal` or `high`: written into the input at the
    /// `[capacity] priority` pointer unless the input has a value there;
    /// no effect when no pointer is configured (`docs/capacity.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
}

/// `describe`, `pause`, `resume`, `retry`: just the workflow id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DescribeRequest {
    pub v: u32,
    pub id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CancelRequest {
    pub v: u32,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RerunRequest {
    pub v: u32,
    pub id: String,
    pub from_step: String,
}

/// One step in a `describe` reply.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct StepReply {
    pub name: String,
    /// `pending | dispatched | backoff | succeeded | failed | cancelled | skipped | waiting`.
    pub status: String,
    /// Attempts in the current generation.
    pub attempts: u32,
    pub last_error: Option<String>,
    pub worker: Option<String>,
    pub dispatched_at_ms: Option<u64>,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    /// The step's output once it succeeded (at most the output size limit).
    #[serde(default)]
    pub output: Option<serde_json::Value>,
    /// The last progress a worker reported for the latest attempt, while
    /// this orchestrator process has seen one.
    #[serde(default)]
    pub progress: Option<serde_json::Value>,
    /// When that progress arrived, unix ms.
    #[serde(default)]
    pub progress_at_ms: Option<u64>,
    /// While the latest attempt waits in the admission gate (not sent to
    /// workers yet): what holds it, e.g. `task type at its cap (8/8 in
    /// flight)` (`docs/capacity.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<String>,
    /// Since when it waits there, unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_since_ms: Option<u64>,
    /// A map step's elements by status, once it read its array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elements: Option<ElementCounts>,
    /// While a wait step waits: the signal it waits for (since
    /// `dispatched_at_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// When that wait times out, unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_due_ms: Option<u64>,
    /// A child step's child workflow of the current generation, once started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child: Option<String>,
    /// That child's status, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_status: Option<String>,
}

/// A signal the workflow received that no wait step consumed yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingSignal {
    pub name: String,
    pub id: String,
    pub received_at_ms: u64,
}

/// How many elements of a map step stand where.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElementCounts {
    pub total: u32,
    pub pending: u32,
    /// Out with workers.
    pub dispatched: u32,
    pub backoff: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub cancelled: u32,
}

/// Reply to `start`, `describe` and the single-workflow verbs.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct WorkflowReply {
    pub v: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_version: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<StepReply>>,
    /// `describe`: signals received that no wait step consumed yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signals: Option<Vec<PendingSignal>>,
    /// A child workflow's parent (`describe`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The parent's step that started this child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryRequest {
    pub v: u32,
    pub id: String,
    /// Only events with a greater seq (paging); 0 = from the start.
    #[serde(default)]
    pub after_seq: u64,
    /// Events per reply, at most [`HISTORY_PAGE_MAX`] (the default).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// One journaled event; fields that do not apply are `null`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HistoryEvent {
    pub seq: u64,
    /// When the orchestrator decided it, unix ms.
    pub at: u64,
    /// `workflow_started`, `task_dispatched`, `task_succeeded`, ...
    pub event: String,
    /// The generation the event belongs to (a reopen starts the next one).
    pub generation: u32,
    /// The step it is about; for `workflow_reopened` by a rerun, the step rerun from.
    pub step: Option<String>,
    pub attempt: Option<u32>,
    pub worker: Option<String>,
    /// The error of a failed or timed-out attempt, or why a workflow failed or was cancelled.
    pub error: Option<String>,
    /// `task_succeeded`: the step's output.
    #[serde(default)]
    pub output: Option<serde_json::Value>,
    /// `task_dispatched`: the last progress a worker reported for that
    /// attempt, while this orchestrator process has seen one.
    #[serde(default)]
    pub progress: Option<serde_json::Value>,
    /// `signal_received`: the signal's name (its payload is `output`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// `signal_received`, `wait_succeeded`: the signal's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal_id: Option<String>,
    /// `wait_started`: when the wait times out, unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<u64>,
    /// `child_started`, `child_finished`: the child workflow's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct HistoryReply {
    pub v: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default)]
    pub events: Vec<HistoryEvent>,
    /// Set when more events follow: ask again with `after_seq` = this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// Which workflows a `list` or a batch job covers; all set fields must match.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct Filter {
    /// `running | paused | completed | failed | cancelled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// Only workflows whose status last changed within this many ms before now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
    /// Only workflows created at or after this time (unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_after_ms: Option<u64>,
    /// Only workflows created before this time (unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_before_ms: Option<u64>,
    /// Only workflows whose id starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_prefix: Option<String>,
    /// `list` only: workflows with a step whose last error has this kind
    /// (`"timeout"` for timed-out attempts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.status.is_none()
            && self.pipeline.is_none()
            && self.since_ms.is_none()
            && self.created_after_ms.is_none()
            && self.created_before_ms.is_none()
            && self.id_prefix.is_none()
            && self.error_kind.is_none()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListRequest {
    pub v: u32,
    #[serde(flatten)]
    pub filter: Filter,
    /// Workflows per reply, at most [`LIST_PAGE_MAX`]; default [`LIST_PAGE_DEFAULT`].
    #[serde(default)]
    pub limit: Option<u32>,
    /// The `cursor` of the previous reply.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Between cluster nodes: scan only the cursor's status in the cursor's
    /// partition (the node serving it answers).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cell: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ListedWorkflow {
    pub id: String,
    pub status: String,
    pub pipeline: String,
    pub created_at_ms: u64,
    /// When the status last changed.
    pub updated_at_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ListReply {
    pub v: u32,
    #[serde(default)]
    pub workflows: Vec<ListedWorkflow>,
    /// Set when more may follow: send it back as `cursor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}
