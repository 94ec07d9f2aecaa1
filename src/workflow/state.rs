//! The state of one workflow, rebuilt from its journal by [`super::evolve`].

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::event::TaskError;
use super::map::MapRun;

/// Lifecycle status of a workflow. `Completed`, `Failed` and `Cancelled` are
/// terminal: only a reopen leaves them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Status {
    Running,
    Paused,
    Completed,
    Failed,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Running,
        Status::Paused,
        Status::Completed,
        Status::Failed,
        Status::Cancelled,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Completed | Status::Failed | Status::Cancelled)
    }

    /// Stable one-byte code used in storage keys; never renumber.
    pub fn code(self) -> u8 {
        match self {
            Status::Running => 1,
            Status::Paused => 2,
            Status::Completed => 3,
            Status::Failed => 4,
            Status::Cancelled => 5,
        }
    }

    pub fn from_code(code: u8) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.code() == code)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one step stands in the current generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepStatus {
    /// Not yet dispatched in this generation (waiting on dependencies or on resume).
    Pending,
    /// An attempt is out with workers (`StepState::task_id`).
    Dispatched,
    /// The last attempt failed retryably; the next one is due at `retry_due_ms`.
    Backoff,
    Succeeded,
    /// Attempts exhausted or a non-retryable error.
    Failed,
    /// The workflow ended (cancel, failure elsewhere, timeout) while this step was out or waiting.
    Cancelled,
    /// Its `when` was false once its dependencies were done: it never runs
    /// in this generation, and its dependents read `null` as its output.
    Skipped,
    /// A wait step waits for its signal (`WorkflowState::waits` says until
    /// when).
    Waiting,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Dispatched => "dispatched",
            StepStatus::Backoff => "backoff",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Cancelled => "cancelled",
            StepStatus::Skipped => "skipped",
            StepStatus::Waiting => "waiting",
        }
    }

    /// Succeeded or skipped: the step's dependents may go ahead.
    pub fn is_done(self) -> bool {
        matches!(self, StepStatus::Succeeded | StepStatus::Skipped)
    }
}

/// Reference to the exact pipeline definition a workflow runs: name, version
/// and content hash. The definition itself is stored once per hash, so
/// editing a pipeline file never changes a workflow in flight.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PipelineRef {
    pub name: String,
    pub version: u32,
    pub hash: u64,
}

/// `last_error.kind` of an attempt that ended by a timeout (not by a result).
pub const TIMEOUT_ERROR_KIND: &str = "timeout";

/// One step of one workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepState {
    pub status: StepStatus,
    /// Attempts dispatched in the current generation (1-based once dispatched).
    pub attempt: u32,
    /// Task id of the latest attempt; kept after it ends so late duplicates are recognised.
    pub task_id: Option<Arc<str>>,
    /// Generation in which the step last succeeded; guards "at most once per generation".
    pub succeeded_generation: Option<u32>,
    /// JSON text of the step's output, once succeeded. Shared, not copied,
    /// between events, state and snapshots.
    pub output: Option<Arc<str>>,
    pub last_error: Option<TaskError>,
    /// Worker that reported the latest result.
    pub worker: Option<Arc<str>>,
    pub dispatched_at_ms: Option<u64>,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    /// When the next attempt is due, while in `Backoff`.
    pub retry_due_ms: Option<u64>,
}

impl StepState {
    /// The latest attempt ended by a timeout rather than by a worker's
    /// result, and the step has not succeeded since.
    pub fn ended_by_timeout(&self) -> bool {
        self.status != StepStatus::Dispatched
            && self.status != StepStatus::Succeeded
            && self.last_error.as_ref().is_some_and(|e| {
                e.kind == TIMEOUT_ERROR_KIND && e.message.ends_with(" timeout") && e.retryable
            })
    }

    pub fn new() -> Self {
        StepState {
            status: StepStatus::Pending,
            attempt: 0,
            task_id: None,
            succeeded_generation: None,
            output: None,
            last_error: None,
            worker: None,
            dispatched_at_ms: None,
            started_at_ms: None,
            finished_at_ms: None,
            retry_due_ms: None,
        }
    }
}

impl Default for StepState {
    fn default() -> Self {
        Self::new()
    }
}

/// Everything the core knows about one workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowState {
    pub id: String,
    pub pipeline: PipelineRef,
    /// The caller's input, JSON text.
    pub input: Arc<str>,
    pub status: Status,
    /// Starts at 0; every reopen increments it.
    pub generation: u32,
    /// Indexed like `PipelineDef::steps`.
    pub steps: Vec<StepState>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// Time of the latest terminal transition.
    pub finished_at_ms: Option<u64>,
    /// Whole-workflow deadline of the current generation.
    pub deadline_ms: Option<u64>,
    /// Why the workflow failed or was cancelled.
    pub reason: Option<String>,
    /// Sequence number the next journaled event gets (= events so far).
    pub next_seq: u64,
    /// The fan-out of each map step that expanded, by step index.
    /// Snapshots written before it existed decode through
    /// [`super::stored::WorkflowStateV1`].
    pub maps: BTreeMap<u16, MapRun>,
    /// Every signal received in the workflow's life, in arrival order,
    /// consumed or not: the unconsumed ones wait for a wait step, and the
    /// ids of all of them answer a resent signal as a duplicate.
    pub signals: Vec<Signal>,
    /// The wait steps waiting now, by step index. Last field (with
    /// `signals`): snapshots written before they existed decode through
    /// [`super::stored::WorkflowStateV2`].
    pub waits: BTreeMap<u16, WaitRun>,
}

/// One signal a workflow received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    pub name: String,
    /// Unique within the workflow; the sender's idempotency key.
    pub id: String,
    /// JSON text: the output of the wait step that consumes it.
    pub payload: Arc<str>,
    pub received_at_ms: u64,
    /// The wait step that consumed it, and in which generation.
    pub consumed_by: Option<(u16, u32)>,
}

/// A wait step waiting for its signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitRun {
    pub since_ms: u64,
    /// When it times out (its durable timer is due).
    pub due_ms: u64,
}

impl WorkflowState {
    /// Steps whose attempt is out with workers.
    pub fn in_flight(&self) -> impl Iterator<Item = (usize, &StepState)> {
        self.steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.status == StepStatus::Dispatched)
    }

    /// The oldest signal called `name` that no wait step consumed yet.
    pub fn unconsumed_signal(&self, name: &str) -> Option<&Signal> {
        self.signals
            .iter()
            .find(|s| s.consumed_by.is_none() && s.name == name)
    }

    /// Signals that no wait step consumed yet.
    pub fn unconsumed_signals(&self) -> impl Iterator<Item = &Signal> {
        self.signals.iter().filter(|s| s.consumed_by.is_none())
    }
}
