//! `decide`: given a state, its pipeline, one input and the time, returns the
//! events to journal and the commands to run once they are durable. Pure: no
//! IO, no clock, no randomness. It never mutates the caller's state; it works
//! on a scratch copy through [`evolve`] so every rule sees the effect of the
//! events already emitted in the same decision.
//!
//! This file holds the entry points and the decision's scratch state; the
//! rules live by input in `results` (worker results, attempt timeouts,
//! fired timers), `lifecycle` (cancel, pause, resume, park, reopen, and how
//! a workflow ends), `dispatch` (which steps are ready, and their tasks)
//! and `wait` (steps completed by a signal).

use serde::{Deserialize, Serialize};

use super::command::{Command, TaskSpec};
use super::event::{Event, EventKind};
use super::evolve::{evolve, start};
use super::input::{Input, TimerKind};
use super::state::{PipelineRef, StepStatus, WorkflowState};
use crate::pipeline::PipelineDef;

pub use child::restart_children;

mod child;
mod dispatch;
mod lifecycle;
mod map;
mod results;
mod wait;

/// Why an input changed nothing although it was well-formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IgnoreReason {
    /// A second result for an attempt that already has one.
    Duplicate,
    /// A result or timeout for an attempt that a newer attempt or generation superseded.
    StaleAttempt,
    /// A task id this workflow never dispatched, or a step it does not have.
    UnknownTask,
    /// The workflow is terminal; results and timers no longer apply.
    WorkflowTerminal,
    /// A timer armed for a state that has moved on.
    StaleTimer,
}

impl IgnoreReason {
    pub fn as_str(self) -> &'static str {
        match self {
            IgnoreReason::Duplicate => "duplicate",
            IgnoreReason::StaleAttempt => "stale_attempt",
            IgnoreReason::UnknownTask => "unknown_task",
            IgnoreReason::WorkflowTerminal => "workflow_terminal",
            IgnoreReason::StaleTimer => "stale_timer",
        }
    }
}

/// How the input was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Applied,
    Ignored(IgnoreReason),
    /// An operator request that does not apply to this state (e.g. pausing a
    /// completed workflow); the text says why.
    Rejected(String),
}

/// Result of [`decide`]: events to journal, then commands to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub events: Vec<Event>,
    pub commands: Vec<Command>,
    pub outcome: Outcome,
}

impl Decision {
    fn nothing(outcome: Outcome) -> Self {
        Decision {
            events: Vec::new(),
            commands: Vec::new(),
            outcome,
        }
    }
}

/// Task id of one attempt: deterministic, so a re-send after a crash reuses it
/// and the NATS duplicate window drops the copy.
pub fn task_id(workflow_id: &str, step: &str, generation: u32, attempt: u32) -> String {
    format!("{workflow_id}:{step}:{generation}:{attempt}")
}

/// Stable across the attempts of one step in one generation: a worker that
/// already produced the effect for this key can return the same result.
pub fn idempotency_key(workflow_id: &str, step: &str, generation: u32) -> String {
    format!("{workflow_id}:{step}:{generation}")
}

/// Decision for a workflow that does not exist yet.
pub fn decide_start(
    id: &str,
    pipeline_ref: PipelineRef,
    pipeline: &PipelineDef,
    input: &str,
    now_ms: u64,
) -> Decision {
    let deadline_ms = pipeline
        .workflow_timeout_ms
        .map(|t| now_ms.saturating_add(t));
    let started = Event {
        at_ms: now_ms,
        kind: EventKind::WorkflowStarted {
            id: id.to_string(),
            pipeline: pipeline_ref,
            input: input.into(),
            steps: pipeline.steps.len() as u16,
            deadline_ms,
        },
    };
    let Some(state) = start(&started) else {
        return Decision::nothing(Outcome::Rejected("internal: start event".into()));
    };
    let mut b = Builder {
        state,
        pipeline,
        now: now_ms,
        events: vec![started],
        commands: Vec::new(),
        accept_stale: false,
    };
    if let Some(due_ms) = deadline_ms {
        b.commands.push(Command::ArmTimer {
            due_ms,
            timer: TimerKind::Workflow { generation: 0 },
        });
    }
    b.advance(false);
    b.finish(Outcome::Applied)
}

/// Decision for one input to an existing workflow.
pub fn decide(
    state: &WorkflowState,
    pipeline: &PipelineDef,
    input: &Input,
    now_ms: u64,
) -> Decision {
    decide_planted(state, pipeline, input, now_ms, false)
}

/// [`decide`] with a test-only planted bug: `accept_stale` skips the
/// stale-attempt check, so a success of a superseded attempt of the current
/// generation is accepted (the engine's negative control
/// `NARRALYTICA_PLANT=skip_stale_check`; the checker must catch it). The
/// flag is an argument: the core reads no global.
pub fn decide_planted(
    state: &WorkflowState,
    pipeline: &PipelineDef,
    input: &Input,
    now_ms: u64,
    accept_stale: bool,
) -> Decision {
    let mut b = Builder {
        state: state.clone(),
        pipeline,
        now: now_ms,
        events: Vec::new(),
        commands: Vec::new(),
        accept_stale,
    };
    let outcome = match input {
        Input::TaskResult(result) => b.on_result(result),
        Input::TaskTimedOut { task_id, timeout } => b.on_timeout(task_id, *timeout),
        Input::TimerFired(timer) => b.on_timer(timer),
        Input::Cancel { reason } => b.on_cancel(reason),
        Input::Pause => b.on_pause(),
        Input::Resume => b.on_resume(),
        Input::Reopen(mode) => b.on_reopen(mode),
        Input::Park { reason } => b.on_park(reason),
        Input::Signal {
            name,
            id,
            payload,
            pending_max,
        } => b.on_signal(name, id, payload, *pending_max),
        Input::ChildFinished { child_id, outcome } => b.on_child_finished(child_id, outcome),
    };
    b.finish(outcome)
}

/// Scratch state plus what has been emitted so far.
struct Builder<'a> {
    state: WorkflowState,
    pipeline: &'a PipelineDef,
    now: u64,
    events: Vec<Event>,
    commands: Vec<Command>,
    /// Planted bug (see [`decide_planted`]); false outside negative controls.
    accept_stale: bool,
}

impl Builder<'_> {
    fn finish(self, outcome: Outcome) -> Decision {
        if outcome != Outcome::Applied {
            // Ignored and rejected inputs never change anything.
            return Decision::nothing(outcome);
        }
        Decision {
            events: self.events,
            commands: self.commands,
            outcome,
        }
    }

    fn emit(&mut self, kind: EventKind) {
        let event = Event {
            at_ms: self.now,
            kind,
        };
        evolve(&mut self.state, &event);
        self.events.push(event);
    }

    fn terminal(&self) -> Option<Outcome> {
        self.state
            .status
            .is_terminal()
            .then_some(Outcome::Ignored(IgnoreReason::WorkflowTerminal))
    }
}

/// Re-creates the dispatch command of an attempt that is still out, with the
/// same task id: used after a restart to re-send owed tasks.
pub fn redispatch(
    state: &WorkflowState,
    pipeline: &PipelineDef,
    step: usize,
    now_ms: u64,
) -> Option<TaskSpec> {
    let s = state.steps.get(step)?;
    if s.status != StepStatus::Dispatched
        || pipeline.map_of(step).is_some()
        || pipeline.child_of(step).is_some()
    {
        return None;
    }
    let mut scratch = state.clone();
    scratch.steps[step].attempt = s.attempt.saturating_sub(1);
    let mut b = Builder {
        state: scratch,
        pipeline,
        now: now_ms,
        events: Vec::new(),
        commands: Vec::new(),
        accept_stale: false,
    };
    b.dispatch(step);
    match b.commands.pop() {
        Some(Command::Dispatch(spec)) => Some(*spec),
        _ => None,
    }
}

/// Re-creates the dispatch commands of the elements of map step `step` that
/// are still out, with the same task ids: used after a restart.
pub fn redispatch_elements(
    state: &WorkflowState,
    pipeline: &PipelineDef,
    step: usize,
    now_ms: u64,
) -> Vec<TaskSpec> {
    let Some(run) = state.maps.get(&(step as u16)) else {
        return Vec::new();
    };
    let out: Vec<u32> = run.indices_with(StepStatus::Dispatched);
    let mut scratch = state.clone();
    if let Some(run) = scratch.maps.get_mut(&(step as u16)) {
        for &x in &out {
            let e = &mut run.elements[x as usize];
            e.attempt = e.attempt.saturating_sub(1);
        }
    }
    let mut b = Builder {
        state: scratch,
        pipeline,
        now: now_ms,
        events: Vec::new(),
        commands: Vec::new(),
        accept_stale: false,
    };
    for x in out {
        b.dispatch_element(step, x);
    }
    b.commands
        .into_iter()
        .filter_map(|c| match c {
            Command::Dispatch(spec) => Some(*spec),
            _ => None,
        })
        .collect()
}

/// Every task a workflow has out with workers, re-created with the same
/// task ids (steps and map elements): what a restart sends again.
pub fn redispatch_all(state: &WorkflowState, pipeline: &PipelineDef, now_ms: u64) -> Vec<TaskSpec> {
    let mut specs = Vec::new();
    for (i, _) in state.in_flight() {
        if pipeline.map_of(i).is_some() {
            specs.extend(redispatch_elements(state, pipeline, i, now_ms));
        } else if let Some(spec) = redispatch(state, pipeline, i, now_ms) {
            specs.push(spec);
        }
    }
    specs
}
