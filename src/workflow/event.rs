//! Journaled events: the only record of what happened to a workflow.
//!
//! Events are appended to the journal before any command they imply runs, and
//! [`super::evolve`] is the only function that applies them to state. They are
//! stored with postcard: adding a variant at the end is compatible, reordering
//! or removing one is not.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::lineage::ChildOutcome;
use super::state::PipelineRef;
use crate::pipeline::OnTimeout;

/// One journaled event with the time the orchestrator decided it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at_ms: u64,
    pub kind: EventKind,
}

/// An error reported by a worker (or made up by the orchestrator for timeouts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskError {
    /// Machine-readable class, matched against `RetryPolicy::non_retryable`.
    pub kind: String,
    pub message: String,
    pub retryable: bool,
}

/// Which deadline of an attempt expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TimeoutKind {
    ScheduleToStart,
    StartToClose,
    Heartbeat,
    /// The attempt waited in the admission gate past its step's
    /// `queue_timeout` and was never sent.
    QueueTimeout,
}

impl TimeoutKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeoutKind::ScheduleToStart => "schedule_to_start",
            TimeoutKind::StartToClose => "start_to_close",
            TimeoutKind::Heartbeat => "heartbeat",
            TimeoutKind::QueueTimeout => "queue",
        }
    }
}

/// What follows a failed or timed-out attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AfterFailure {
    /// Another attempt is due at this time.
    RetryAt(u64),
    /// The step has failed for this generation.
    GiveUp,
}

/// How a terminal workflow is reopened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReopenMode {
    /// Retry the steps that did not succeed.
    RetryFailed,
    /// Run this step and everything downstream of it again.
    RerunFrom(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EventKind {
    WorkflowStarted {
        id: String,
        pipeline: PipelineRef,
        input: Arc<str>,
        steps: u16,
        deadline_ms: Option<u64>,
    },
    TaskDispatched {
        step: u16,
        attempt: u32,
        task_id: Arc<str>,
    },
    TaskSucceeded {
        step: u16,
        attempt: u32,
        output: Arc<str>,
        worker: Option<Arc<str>>,
        started_at_ms: Option<u64>,
    },
    TaskFailed {
        step: u16,
        attempt: u32,
        error: TaskError,
        worker: Option<Arc<str>>,
        then: AfterFailure,
    },
    TaskTimedOut {
        step: u16,
        attempt: u32,
        timeout: TimeoutKind,
        then: AfterFailure,
    },
    WorkflowPaused,
    WorkflowResumed,
    WorkflowCompleted,
    WorkflowFailed {
        step: Option<u16>,
        reason: String,
    },
    WorkflowCancelled {
        reason: String,
    },
    WorkflowReopened {
        generation: u32,
        mode: ReopenMode,
        /// Steps reset to pending; everything else keeps its state and output.
        reset: Vec<u16>,
        deadline_ms: Option<u64>,
    },
    /// A map step read its array (`elements` long) at `pointer` in the output
    /// of `over_step` and starts fanning out. A step whose elements were kept
    /// by a retry goes on with them.
    MapExpanded {
        step: u16,
        over_step: u16,
        pointer: String,
        elements: u32,
    },
    ElementDispatched {
        step: u16,
        index: u32,
        attempt: u32,
        task_id: Arc<str>,
    },
    ElementSucceeded {
        step: u16,
        index: u32,
        attempt: u32,
        output: Arc<str>,
        worker: Option<Arc<str>>,
        started_at_ms: Option<u64>,
    },
    ElementFailed {
        step: u16,
        index: u32,
        attempt: u32,
        error: TaskError,
        worker: Option<Arc<str>>,
        then: AfterFailure,
    },
    ElementTimedOut {
        step: u16,
        index: u32,
        attempt: u32,
        timeout: TimeoutKind,
        then: AfterFailure,
    },
    /// Every element ended and enough succeeded: the step's output is the
    /// array of element outputs (`null` at the `failed` indices).
    MapSucceeded {
        step: u16,
        failed: Vec<u32>,
    },
    /// The map step failed (`reason` says why); the workflow fails next.
    MapFailed {
        step: u16,
        reason: String,
    },
    /// The step's `when` was false once its dependencies were done: it
    /// never runs in this generation and gives its dependents `null`.
    StepSkipped {
        step: u16,
    },
    /// A signal arrived for the workflow (`id` unique per workflow, chosen
    /// by the sender). Kept until a wait step of that name consumes it.
    SignalReceived {
        name: String,
        id: String,
        payload: Arc<str>,
    },
    /// A wait step's dependencies are done and its `when` holds: it waits
    /// for its signal until `due_ms`.
    WaitStarted {
        step: u16,
        due_ms: u64,
    },
    /// The wait step consumed the oldest unconsumed signal of its name
    /// (`signal_id`); the signal's payload is the step's output.
    WaitSucceeded {
        step: u16,
        signal_id: String,
    },
    /// No signal came before the wait's timeout: the step fails (and the
    /// workflow next) or is skipped, as `then` says.
    WaitTimedOut {
        step: u16,
        then: OnTimeout,
    },
    /// A child step started its child workflow `child_id` (one per
    /// generation: the id is derived from the workflow, step and generation).
    ChildStarted {
        step: u16,
        child_id: Arc<str>,
    },
    /// The child workflow of `step` ended: the step succeeds with the
    /// child's output, or fails with it.
    ChildFinished {
        step: u16,
        child_id: Arc<str>,
        outcome: ChildOutcome,
    },
}

impl EventKind {
    /// Short snake_case name used in logs, metrics and event subjects.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::WorkflowStarted { .. } => "workflow_started",
            EventKind::TaskDispatched { .. } => "task_dispatched",
            EventKind::TaskSucceeded { .. } => "task_succeeded",
            EventKind::TaskFailed { .. } => "task_failed",
            EventKind::TaskTimedOut { .. } => "task_timed_out",
            EventKind::WorkflowPaused => "workflow_paused",
            EventKind::WorkflowResumed => "workflow_resumed",
            EventKind::WorkflowCompleted => "workflow_completed",
            EventKind::WorkflowFailed { .. } => "workflow_failed",
            EventKind::WorkflowCancelled { .. } => "workflow_cancelled",
            EventKind::WorkflowReopened { .. } => "workflow_reopened",
            EventKind::MapExpanded { .. } => "map_expanded",
            EventKind::ElementDispatched { .. } => "element_dispatched",
            EventKind::ElementSucceeded { .. } => "element_succeeded",
            EventKind::ElementFailed { .. } => "element_failed",
            EventKind::ElementTimedOut { .. } => "element_timed_out",
            EventKind::MapSucceeded { .. } => "map_succeeded",
            EventKind::MapFailed { .. } => "map_failed",
            EventKind::StepSkipped { .. } => "step_skipped",
            EventKind::ChildStarted { .. } => "child_started",
            EventKind::ChildFinished { .. } => "child_finished",
            EventKind::SignalReceived { .. } => "signal_received",
            EventKind::WaitStarted { .. } => "wait_started",
            EventKind::WaitSucceeded { .. } => "wait_succeeded",
            EventKind::WaitTimedOut { .. } => "wait_timed_out",
        }
    }

    /// The step an event is about, if any.
    pub fn step(&self) -> Option<u16> {
        match self {
            EventKind::TaskDispatched { step, .. }
            | EventKind::TaskSucceeded { step, .. }
            | EventKind::TaskFailed { step, .. }
            | EventKind::TaskTimedOut { step, .. }
            | EventKind::MapExpanded { step, .. }
            | EventKind::ElementDispatched { step, .. }
            | EventKind::ElementSucceeded { step, .. }
            | EventKind::ElementFailed { step, .. }
            | EventKind::ElementTimedOut { step, .. }
            | EventKind::MapSucceeded { step, .. }
            | EventKind::MapFailed { step, .. }
            | EventKind::StepSkipped { step }
            | EventKind::WaitStarted { step, .. }
            | EventKind::WaitSucceeded { step, .. }
            | EventKind::WaitTimedOut { step, .. }
            | EventKind::ChildStarted { step, .. }
            | EventKind::ChildFinished { step, .. } => Some(*step),
            EventKind::WorkflowFailed { step, .. } => *step,
            _ => None,
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            EventKind::WorkflowCompleted
                | EventKind::WorkflowFailed { .. }
                | EventKind::WorkflowCancelled { .. }
        )
    }
}

/// Borrowed twin of [`JournalRecord`] with the same encoding, so a record is
/// written without copying its events.
#[derive(Debug, Serialize)]
pub struct JournalRecordRef<'a> {
    pub first_seq: u64,
    pub events: &'a [Event],
}

/// One journal record: the events of one transition, made durable together.
/// `first_seq` is the sequence number of `events[0]`; sequence numbers are
/// gapless per workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalRecord {
    pub first_seq: u64,
    pub events: Vec<Event>,
}
