//! Inputs to [`super::decide`]: everything that can happen to a running workflow.

use serde::{Deserialize, Serialize};

use super::event::{ReopenMode, TaskError, TimeoutKind};
use super::lineage::ChildOutcome;

/// What a worker reported for one attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TaskOutcome {
    /// JSON text of the output.
    Succeeded(String),
    Failed(TaskError),
}

/// A worker's result, as received from the transport.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub task_id: String,
    /// Step name as the worker echoed it back.
    pub step: String,
    pub attempt: u32,
    pub outcome: TaskOutcome,
    pub worker: Option<String>,
    /// When the worker started the task, if it said (its clock, informational).
    pub started_at_ms: Option<u64>,
}

/// A durable timer of a workflow. `generation` ties it to the generation that
/// armed it, so a timer from before a reopen can never act on the new one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TimerKind {
    /// The backoff of `step` before `attempt` is over.
    Retry {
        step: u16,
        generation: u32,
        attempt: u32,
    },
    /// The whole-workflow deadline.
    Workflow { generation: u32 },
    /// The backoff of element `index` of map step `step` before `attempt` is over.
    ElementRetry {
        step: u16,
        index: u32,
        generation: u32,
        attempt: u32,
    },
    /// The timeout of wait step `step`, armed when it started waiting.
    Wait { step: u16, generation: u32 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Input {
    TaskResult(TaskResult),
    /// A liveness deadline of an attempt passed (tracked by the partition).
    TaskTimedOut {
        task_id: String,
        timeout: TimeoutKind,
    },
    TimerFired(TimerKind),
    Cancel {
        reason: String,
    },
    Pause,
    Resume,
    Reopen(ReopenMode),
    /// The workflow's actor kept crashing: fail it with this reason.
    Park {
        reason: String,
    },
    /// A signal for the workflow's wait steps. `payload` is JSON text
    /// (checked by the caller); `pending_max` bounds the signals the
    /// workflow keeps unconsumed (a configured limit, passed in).
    Signal {
        name: String,
        id: String,
        payload: String,
        pending_max: u32,
    },
    /// The child workflow `child_id` of one of this workflow's steps ended.
    ChildFinished {
        child_id: String,
        outcome: ChildOutcome,
    },
}
