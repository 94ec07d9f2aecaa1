//! `decide`: given a state, its pipeline, one input and the time, returns the
//! events to journal and the commands to run once they are durable. Pure: no
//! IO, no clock, no randomness. It never mutates the caller's state; it works
//! on a scratch copy through [`evolve`] so every rule sees the effect of the
//! events already emitted in the same decision.

use serde::{Deserialize, Serialize};

use super::backoff::retry_delay_ms;
use super::command::{Command, TaskSpec};
use super::event::{AfterFailure, Event, EventKind, ReopenMode, TaskError, TimeoutKind};
use super::evolve::{evolve, start};
use super::input::{Input, TaskOutcome, TaskResult, TimerKind};
use super::state::{PipelineRef, Status, StepStatus, WorkflowState};
use crate::pipeline::PipelineDef;

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

    fn on_result(&mut self, r: &TaskResult) -> Outcome {
        let Some(i) = self.pipeline.step_index(&r.step) else {
            return Outcome::Ignored(IgnoreReason::UnknownTask);
        };
        if i >= self.state.steps.len() {
            return Outcome::Ignored(IgnoreReason::UnknownTask);
        }
        if let Some(o) = self.terminal() {
            return o;
        }
        let s = &self.state.steps[i];
        if s.task_id.as_deref() != Some(r.task_id.as_str()) {
            let o = self.classify_foreign(i, &r.task_id);
            if self.accept_stale && o == Outcome::Ignored(IgnoreReason::StaleAttempt) {
                if let Some(a) = self.same_generation_attempt(&r.task_id) {
                    return self.planted_stale_success(i, a, r).unwrap_or(o);
                }
            }
            return o;
        }
        if s.status != StepStatus::Dispatched {
            // This attempt already ended: by a result (so this is a second
            // one), or by a timeout (so this is a late answer of a
            // superseded attempt, even before the next attempt is out).
            if s.ended_by_timeout() {
                let o = Outcome::Ignored(IgnoreReason::StaleAttempt);
                if self.accept_stale {
                    return self.planted_stale_success(i, s.attempt, r).unwrap_or(o);
                }
                return o;
            }
            return Outcome::Ignored(IgnoreReason::Duplicate);
        }
        let step = i as u16;
        let attempt = s.attempt;
        match &r.outcome {
            TaskOutcome::Succeeded(output) => {
                self.emit(EventKind::TaskSucceeded {
                    step,
                    attempt,
                    output: output.as_str().into(),
                    worker: r.worker.as_deref().map(Into::into),
                    started_at_ms: r.started_at_ms,
                });
                self.advance(false);
            }
            TaskOutcome::Failed(error) => {
                let retryable = error.retryable
                    && !self.pipeline.steps[i]
                        .retry
                        .non_retryable
                        .iter()
                        .any(|k| k == &error.kind);
                let then = self.after_failure(i, retryable);
                self.emit(EventKind::TaskFailed {
                    step,
                    attempt,
                    error: error.clone(),
                    worker: r.worker.as_deref().map(Into::into),
                    then,
                });
                self.after_failure_effects(i, then, error_summary(error));
            }
        }
        Outcome::Applied
    }

    /// The attempt of a task id of this workflow's current generation.
    fn same_generation_attempt(&self, task_id: &str) -> Option<u32> {
        let mut parts = task_id.rsplit(':');
        let attempt = parts.next()?.parse::<u32>().ok()?;
        let generation = parts.next()?.parse::<u32>().ok()?;
        (generation == self.state.generation).then_some(attempt)
    }

    /// The planted bug: a superseded attempt's success is accepted as if it
    /// were current. `None` for a failure (left ignored).
    fn planted_stale_success(&mut self, i: usize, attempt: u32, r: &TaskResult) -> Option<Outcome> {
        let TaskOutcome::Succeeded(output) = &r.outcome else {
            return None;
        };
        self.emit(EventKind::TaskSucceeded {
            step: i as u16,
            attempt,
            output: output.as_str().into(),
            worker: r.worker.as_deref().map(Into::into),
            started_at_ms: r.started_at_ms,
        });
        self.advance(false);
        Some(Outcome::Applied)
    }

    /// A task id that is not the step's current attempt: an older attempt or
    /// generation of ours is stale, anything else is unknown.
    fn classify_foreign(&self, i: usize, task_id: &str) -> Outcome {
        let step_name = &self.pipeline.steps[i].name;
        let prefix_len = self.state.id.len() + step_name.len() + 2;
        let ours = task_id.len() > prefix_len
            && task_id.starts_with(self.state.id.as_str())
            && task_id[self.state.id.len()..].starts_with(':')
            && task_id[self.state.id.len() + 1..].starts_with(step_name.as_str())
            && task_id.as_bytes()[prefix_len - 1] == b':';
        if ours {
            let mut parts = task_id[prefix_len..].split(':');
            let generation = parts.next().and_then(|g| g.parse::<u32>().ok());
            let attempt = parts.next().and_then(|a| a.parse::<u32>().ok());
            if let (Some(g), Some(a), None) = (generation, attempt, parts.next()) {
                let current = (self.state.generation, self.state.steps[i].attempt);
                if (g, a) < current {
                    return Outcome::Ignored(IgnoreReason::StaleAttempt);
                }
            }
        }
        Outcome::Ignored(IgnoreReason::UnknownTask)
    }

    fn on_timeout(&mut self, task_id: &str, timeout: TimeoutKind) -> Outcome {
        if let Some(o) = self.terminal() {
            return o;
        }
        let found = self
            .state
            .steps
            .iter()
            .position(|s| s.task_id.as_deref() == Some(task_id));
        let Some(i) = found else {
            return Outcome::Ignored(IgnoreReason::UnknownTask);
        };
        if self.state.steps[i].status != StepStatus::Dispatched {
            return Outcome::Ignored(IgnoreReason::StaleAttempt);
        }
        let attempt = self.state.steps[i].attempt;
        // A hung worker may still be busy with it: tell it to stop.
        self.commands.push(Command::CancelTask {
            task_id: task_id.to_string(),
            task_type: self.pipeline.steps[i].task_type.clone(),
        });
        let then = self.after_failure(i, true);
        self.emit(EventKind::TaskTimedOut {
            step: i as u16,
            attempt,
            timeout,
            then,
        });
        let reason = format!("{} timeout", timeout.as_str());
        self.after_failure_effects(i, then, reason);
        Outcome::Applied
    }

    /// Retry or give up, for the attempt of step `i` that just failed.
    fn after_failure(&self, i: usize, retryable: bool) -> AfterFailure {
        let s = &self.state.steps[i];
        let policy = &self.pipeline.steps[i].retry;
        if retryable && s.attempt < policy.max_attempts {
            let task_id = s.task_id.as_deref().unwrap_or_default();
            let delay = retry_delay_ms(policy, s.attempt, task_id);
            AfterFailure::RetryAt(self.now.saturating_add(delay))
        } else {
            AfterFailure::GiveUp
        }
    }

    fn after_failure_effects(&mut self, i: usize, then: AfterFailure, error: String) {
        match then {
            AfterFailure::RetryAt(due_ms) => self.commands.push(Command::ArmTimer {
                due_ms,
                timer: TimerKind::Retry {
                    step: i as u16,
                    generation: self.state.generation,
                    attempt: self.state.steps[i].attempt + 1,
                },
            }),
            AfterFailure::GiveUp => {
                let s = &self.state.steps[i];
                let reason = format!(
                    "step {} failed after {} attempt(s): {}",
                    self.pipeline.steps[i].name, s.attempt, error
                );
                self.end(EventKind::WorkflowFailed {
                    step: Some(i as u16),
                    reason,
                });
            }
        }
    }

    fn on_timer(&mut self, timer: &TimerKind) -> Outcome {
        if let Some(o) = self.terminal() {
            return o;
        }
        match *timer {
            TimerKind::Retry {
                step,
                generation,
                attempt,
            } => {
                let Some(s) = self.state.steps.get(usize::from(step)) else {
                    return Outcome::Ignored(IgnoreReason::StaleTimer);
                };
                if generation != self.state.generation
                    || s.status != StepStatus::Backoff
                    || s.attempt + 1 != attempt
                {
                    return Outcome::Ignored(IgnoreReason::StaleTimer);
                }
                if self.state.status == Status::Running {
                    self.dispatch(usize::from(step));
                }
                // Paused: the step stays in backoff with its due time passed,
                // and `Resume` dispatches it.
                Outcome::Applied
            }
            TimerKind::Workflow { generation } => {
                if generation != self.state.generation {
                    return Outcome::Ignored(IgnoreReason::StaleTimer);
                }
                self.end(EventKind::WorkflowFailed {
                    step: None,
                    reason: "workflow timeout".to_string(),
                });
                Outcome::Applied
            }
        }
    }

    fn on_cancel(&mut self, reason: &str) -> Outcome {
        if self.state.status.is_terminal() {
            return Outcome::Rejected(format!("workflow is already {}", self.state.status));
        }
        self.end(EventKind::WorkflowCancelled {
            reason: reason.to_string(),
        });
        Outcome::Applied
    }

    fn on_pause(&mut self) -> Outcome {
        match self.state.status {
            Status::Running => {
                self.emit(EventKind::WorkflowPaused);
                Outcome::Applied
            }
            other => Outcome::Rejected(format!("cannot pause a {other} workflow")),
        }
    }

    fn on_resume(&mut self) -> Outcome {
        match self.state.status {
            Status::Paused => {
                self.emit(EventKind::WorkflowResumed);
                self.advance(true);
                Outcome::Applied
            }
            other => Outcome::Rejected(format!("cannot resume a {other} workflow")),
        }
    }

    fn on_park(&mut self, reason: &str) -> Outcome {
        if let Some(o) = self.terminal() {
            return o;
        }
        self.end(EventKind::WorkflowFailed {
            step: None,
            reason: reason.to_string(),
        });
        Outcome::Applied
    }

    fn on_reopen(&mut self, mode: &ReopenMode) -> Outcome {
        let status = self.state.status;
        if !status.is_terminal() {
            return Outcome::Rejected(format!(
                "cannot reopen a {status} workflow; only completed, failed or cancelled ones"
            ));
        }
        let mut reset: Vec<bool> = self
            .state
            .steps
            .iter()
            .map(|s| s.status != StepStatus::Succeeded)
            .collect();
        match mode {
            ReopenMode::RetryFailed => {
                if status == Status::Completed {
                    return Outcome::Rejected(
                        "a completed workflow has no failed steps to retry; rerun from a step"
                            .to_string(),
                    );
                }
            }
            ReopenMode::RerunFrom(step) => {
                let Some(i) = self.pipeline.step_index(step) else {
                    return Outcome::Rejected(format!(
                        "pipeline {} has no step {step:?}",
                        self.pipeline.name
                    ));
                };
                for (r, d) in reset.iter_mut().zip(self.pipeline.downstream_closure(i)) {
                    *r |= d;
                }
            }
        }
        let generation = self.state.generation + 1;
        let deadline_ms = self
            .pipeline
            .workflow_timeout_ms
            .map(|t| self.now.saturating_add(t));
        let reset: Vec<u16> = reset
            .iter()
            .enumerate()
            .filter(|(_, r)| **r)
            .map(|(i, _)| i as u16)
            .collect();
        self.emit(EventKind::WorkflowReopened {
            generation,
            mode: mode.clone(),
            reset,
            deadline_ms,
        });
        if let Some(due_ms) = deadline_ms {
            self.commands.push(Command::ArmTimer {
                due_ms,
                timer: TimerKind::Workflow { generation },
            });
        }
        self.advance(false);
        Outcome::Applied
    }

    /// Terminal transition: emit it, cancel attempts still out, drop timers.
    fn end(&mut self, kind: EventKind) {
        let generation = self.state.generation;
        let mut effects = Vec::new();
        for (i, s) in self.state.steps.iter().enumerate() {
            match s.status {
                StepStatus::Dispatched => effects.push(Command::CancelTask {
                    task_id: s.task_id.as_deref().unwrap_or_default().to_string(),
                    task_type: self.pipeline.steps[i].task_type.clone(),
                }),
                StepStatus::Backoff => {
                    if let Some(due_ms) = s.retry_due_ms {
                        effects.push(Command::DisarmTimer {
                            due_ms,
                            timer: TimerKind::Retry {
                                step: i as u16,
                                generation,
                                attempt: s.attempt + 1,
                            },
                        });
                    }
                }
                _ => {}
            }
        }
        let completed = matches!(kind, EventKind::WorkflowCompleted);
        let timed_out = matches!(&kind, EventKind::WorkflowFailed { step: None, reason } if reason == "workflow timeout");
        if let Some(due_ms) = self.state.deadline_ms {
            // The workflow timer that just fired is removed by the shell with
            // this transition; every other end disarms it.
            if completed || !timed_out {
                effects.push(Command::DisarmTimer {
                    due_ms,
                    timer: TimerKind::Workflow { generation },
                });
            }
        }
        self.emit(kind);
        self.commands.extend(effects);
    }

    /// Dispatches every step that is ready and completes the workflow when all
    /// steps succeeded. `due_retries` also dispatches steps whose backoff has
    /// passed (on resume, when their timer may have fired while paused).
    fn advance(&mut self, due_retries: bool) {
        if self.state.status.is_terminal() {
            return;
        }
        if self
            .state
            .steps
            .iter()
            .all(|s| s.status == StepStatus::Succeeded)
        {
            self.end(EventKind::WorkflowCompleted);
            return;
        }
        if self.state.status != Status::Running {
            return;
        }
        for i in 0..self.state.steps.len() {
            let s = &self.state.steps[i];
            let ready = match s.status {
                StepStatus::Pending => self.pipeline.steps[i]
                    .needs
                    .iter()
                    .all(|&d| self.state.steps[usize::from(d)].status == StepStatus::Succeeded),
                StepStatus::Backoff => due_retries && s.retry_due_ms.is_some_and(|d| d <= self.now),
                _ => false,
            };
            if ready {
                self.dispatch(i);
            }
        }
    }

    fn dispatch(&mut self, i: usize) {
        let def = &self.pipeline.steps[i];
        let attempt = self.state.steps[i].attempt + 1;
        let generation = self.state.generation;
        let id = &self.state.id;
        let task_id = task_id(id, &def.name, generation, attempt);
        let mut input = String::with_capacity(self.state.input.len() + 64);
        input.push_str("{\"workflow\":");
        input.push_str(&self.state.input);
        input.push_str(",\"deps\":{");
        for (n, &d) in def.needs.iter().enumerate() {
            if n > 0 {
                input.push(',');
            }
            // Step names are validated to `[a-z0-9_-]`, so they need no escaping.
            input.push('"');
            input.push_str(&self.pipeline.steps[usize::from(d)].name);
            input.push_str("\":");
            input.push_str(
                self.state.steps[usize::from(d)]
                    .output
                    .as_deref()
                    .unwrap_or("null"),
            );
        }
        input.push_str("}}");
        let t = &def.timeouts;
        let deadline_ms = match (t.schedule_to_start_ms, t.start_to_close_ms) {
            (Some(a), Some(b)) => Some(self.now.saturating_add(a).saturating_add(b)),
            _ => None,
        };
        let spec = TaskSpec {
            task_id: task_id.clone(),
            idempotency_key: idempotency_key(id, &def.name, generation),
            workflow_id: id.clone(),
            pipeline: self.pipeline.name.clone(),
            pipeline_version: self.pipeline.version,
            step: def.name.clone(),
            step_index: i as u16,
            task_type: def.task_type.clone(),
            attempt,
            max_attempts: def.retry.max_attempts,
            input,
            deadline_ms,
            schedule_to_start_ms: t.schedule_to_start_ms,
            start_to_close_ms: t.start_to_close_ms,
            heartbeat_timeout_ms: t.heartbeat_ms,
        };
        self.emit(EventKind::TaskDispatched {
            step: i as u16,
            attempt,
            task_id: task_id.as_str().into(),
        });
        self.commands.push(Command::Dispatch(Box::new(spec)));
    }
}

fn error_summary(e: &TaskError) -> String {
    format!("{}: {}", e.kind, e.message)
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
    if s.status != StepStatus::Dispatched {
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
