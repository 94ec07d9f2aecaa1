//! Commands: effects the shell runs after the events that imply them are durable.

use serde::{Deserialize, Serialize};

use super::input::TimerKind;
use super::lineage::{ChildSignal, ChildSpec};

/// One attempt of one step, ready to send to workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub task_id: String,
    pub idempotency_key: String,
    pub workflow_id: String,
    pub pipeline: String,
    pub pipeline_version: u32,
    pub step: String,
    pub step_index: u16,
    pub task_type: String,
    pub attempt: u32,
    pub max_attempts: u32,
    /// `{"workflow": <workflow input>, "deps": {<step>: <output>, ...}}` as JSON text.
    pub input: String,
    /// Absolute deadline (schedule-to-start + start-to-close from dispatch), if both are set.
    pub deadline_ms: Option<u64>,
    pub schedule_to_start_ms: Option<u64>,
    pub start_to_close_ms: Option<u64>,
    pub heartbeat_timeout_ms: Option<u64>,
    /// Longest wait in the admission gate, from the moment the attempt is
    /// offered to it; past it the attempt ends as a `queue_timeout` without
    /// being sent. Not part of the worker message.
    pub queue_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Send the task to workers and watch its liveness deadlines.
    Dispatch(Box<TaskSpec>),
    /// Tell workers to stop this attempt (`reason` is passed on to them),
    /// and stop watching it.
    CancelTask {
        task_id: String,
        task_type: String,
        reason: String,
    },
    /// Arm a durable timer; the shell stores it with the events of this transition.
    ArmTimer { due_ms: u64, timer: TimerKind },
    /// A timer that is no longer needed (the workflow ended); the shell removes it.
    DisarmTimer { due_ms: u64, timer: TimerKind },
    /// Start the child workflow of a child step (a no-op when it exists;
    /// one that already ended reports its outcome to the parent again).
    StartChild(Box<ChildSpec>),
    /// Pass a cancel, pause or resume on to a running child.
    SignalChild {
        child_id: String,
        signal: ChildSignal,
    },
}
