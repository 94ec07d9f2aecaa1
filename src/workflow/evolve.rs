//! `evolve`: the only function that changes a [`WorkflowState`]. Used live
//! after an append is durable and on replay, so both give the same state.

use super::event::{AfterFailure, Event, EventKind, ReopenMode, TaskError, TimeoutKind};
use super::lineage::ChildOutcome;
use super::map::{array_at, ElementState, MapRun};
use super::state::{Signal, Status, StepState, StepStatus, WaitRun, WorkflowState};
use crate::pipeline::OnTimeout;

/// Builds the state from a `WorkflowStarted` event; `None` for any other event.
pub fn start(event: &Event) -> Option<WorkflowState> {
    let EventKind::WorkflowStarted {
        id,
        pipeline,
        input,
        steps,
        deadline_ms,
    } = &event.kind
    else {
        return None;
    };
    Some(WorkflowState {
        id: id.clone(),
        pipeline: pipeline.clone(),
        input: input.clone(),
        status: Status::Running,
        generation: 0,
        steps: vec![StepState::new(); usize::from(*steps)],
        created_at_ms: event.at_ms,
        updated_at_ms: event.at_ms,
        finished_at_ms: None,
        deadline_ms: *deadline_ms,
        reason: None,
        // The started event itself is seq 1.
        next_seq: 2,
        maps: Default::default(),
        signals: Vec::new(),
        waits: Default::default(),
    })
}

/// Applies one event. Events come from `decide`, which only emits events that
/// are legal for the state; an event naming a step out of range is ignored
/// (and caught by `verify`) rather than panicking on replay of a bad journal.
pub fn evolve(state: &mut WorkflowState, event: &Event) {
    state.next_seq += 1;
    state.updated_at_ms = event.at_ms;
    let at = event.at_ms;
    match &event.kind {
        EventKind::WorkflowStarted { .. } => {
            // Only the first event of a journal; `start` handles it.
        }
        EventKind::TaskDispatched {
            step,
            attempt,
            task_id,
        } => {
            if let Some(s) = state.steps.get_mut(usize::from(*step)) {
                s.status = StepStatus::Dispatched;
                s.attempt = *attempt;
                s.task_id = Some(task_id.clone());
                s.dispatched_at_ms = Some(at);
                s.started_at_ms = None;
                s.finished_at_ms = None;
                s.retry_due_ms = None;
            }
        }
        EventKind::TaskSucceeded {
            step,
            output,
            worker,
            started_at_ms,
            ..
        } => {
            let generation = state.generation;
            if let Some(s) = state.steps.get_mut(usize::from(*step)) {
                s.status = StepStatus::Succeeded;
                s.succeeded_generation = Some(generation);
                s.output = Some(output.clone());
                s.worker = worker.clone();
                s.started_at_ms = *started_at_ms;
                s.finished_at_ms = Some(at);
            }
        }
        EventKind::TaskFailed {
            step,
            error,
            worker,
            then,
            ..
        } => {
            if let Some(s) = state.steps.get_mut(usize::from(*step)) {
                s.last_error = Some(error.clone());
                s.worker = worker.clone();
                s.finished_at_ms = Some(at);
                after_failure(s, *then);
            }
        }
        EventKind::TaskTimedOut {
            step,
            timeout,
            then,
            ..
        } => {
            if let Some(s) = state.steps.get_mut(usize::from(*step)) {
                s.last_error = Some(timeout_error(*timeout));
                s.finished_at_ms = Some(at);
                after_failure(s, *then);
            }
        }
        EventKind::WorkflowPaused => state.status = Status::Paused,
        EventKind::WorkflowResumed => state.status = Status::Running,
        EventKind::WorkflowCompleted => finish(state, Status::Completed, None, at),
        EventKind::WorkflowFailed { reason, .. } => {
            finish(state, Status::Failed, Some(reason.clone()), at)
        }
        EventKind::WorkflowCancelled { reason } => {
            finish(state, Status::Cancelled, Some(reason.clone()), at)
        }
        EventKind::WorkflowReopened {
            generation,
            reset,
            deadline_ms,
            mode,
        } => {
            reopen_maps(state, reset, mode);
            // A reset wait step waits again, for a signal not consumed yet;
            // signals consumed before stay consumed.
            for i in reset {
                state.waits.remove(i);
            }
            state.status = Status::Running;
            state.generation = *generation;
            state.deadline_ms = *deadline_ms;
            state.finished_at_ms = None;
            state.reason = None;
            for &i in reset {
                if let Some(s) = state.steps.get_mut(usize::from(i)) {
                    // The task id and succeeded generation stay: they recognise
                    // late results of the previous generation as stale.
                    s.status = StepStatus::Pending;
                    s.attempt = 0;
                    s.output = None;
                    s.retry_due_ms = None;
                }
            }
        }
        EventKind::MapExpanded {
            step,
            over_step,
            pointer,
            ..
        } => expand(state, *step, *over_step, pointer, at),
        EventKind::ElementDispatched {
            step,
            index,
            attempt,
            ..
        } => {
            if let Some(e) = element(state, *step, *index) {
                e.status = StepStatus::Dispatched;
                e.attempt = *attempt;
                e.retry_due_ms = None;
                e.timed_out = false;
            }
        }
        EventKind::ElementSucceeded {
            step,
            index,
            output,
            ..
        } => {
            if let Some(e) = element(state, *step, *index) {
                e.status = StepStatus::Succeeded;
                e.output = Some(output.clone());
            }
        }
        EventKind::ElementFailed {
            step,
            index,
            error,
            then,
            ..
        } => {
            if let Some(e) = element(state, *step, *index) {
                e.last_error = Some(error.clone());
                element_after_failure(e, *then);
            }
        }
        EventKind::ElementTimedOut {
            step,
            index,
            timeout,
            then,
            ..
        } => {
            if let Some(e) = element(state, *step, *index) {
                e.last_error = Some(timeout_error(*timeout));
                e.timed_out = true;
                element_after_failure(e, *then);
            }
        }
        EventKind::MapSucceeded { step, .. } => {
            let generation = state.generation;
            let output = state.maps.get(step).map(|run| run.assembled_output());
            if let Some(s) = state.steps.get_mut(usize::from(*step)) {
                s.status = StepStatus::Succeeded;
                s.succeeded_generation = Some(generation);
                s.output = output.map(|o| o.as_str().into());
                s.finished_at_ms = Some(at);
            }
        }
        EventKind::MapFailed { step, reason } => {
            if let Some(s) = state.steps.get_mut(usize::from(*step)) {
                s.status = StepStatus::Failed;
                s.last_error = Some(TaskError {
                    kind: "map".to_string(),
                    message: reason.clone(),
                    retryable: false,
                });
                s.finished_at_ms = Some(at);
            }
        }
        EventKind::StepSkipped { step } => {
            // A map step's elements kept by a retry go with it.
            state.maps.remove(step);
            if let Some(s) = state.steps.get_mut(usize::from(*step)) {
                s.status = StepStatus::Skipped;
                s.output = None;
                s.retry_due_ms = None;
                s.finished_at_ms = Some(at);
            }
        }
        EventKind::SignalReceived { name, id, payload } => state.signals.push(Signal {
            name: name.clone(),
            id: id.clone(),
            payload: payload.clone(),
            received_at_ms: at,
            consumed_by: None,
        }),
        EventKind::WaitStarted { step, due_ms } => {
            if let Some(s) = state.steps.get_mut(usize::from(*step)) {
                s.status = StepStatus::Waiting;
                s.attempt = 1;
                s.dispatched_at_ms = Some(at);
                s.started_at_ms = None;
                s.finished_at_ms = None;
                s.retry_due_ms = None;
                state.waits.insert(
                    *step,
                    WaitRun {
                        since_ms: at,
                        due_ms: *due_ms,
                    },
                );
            }
        }
        EventKind::WaitSucceeded { step, signal_id } => {
            let generation = state.generation;
            state.waits.remove(step);
            let signal = state.signals.iter_mut().find(|s| s.id == *signal_id);
            let payload = signal.map(|signal| {
                signal.consumed_by = Some((*step, generation));
                signal.payload.clone()
            });
            if let Some(s) = state.steps.get_mut(usize::from(*step)) {
                s.status = StepStatus::Succeeded;
                s.succeeded_generation = Some(generation);
                s.output = payload;
                s.worker = None;
                s.finished_at_ms = Some(at);
            }
        }
        EventKind::WaitTimedOut { step, then } => {
            state.waits.remove(step);
            if let Some(s) = state.steps.get_mut(usize::from(*step)) {
                s.finished_at_ms = Some(at);
                s.output = None;
                match then {
                    OnTimeout::Fail => {
                        s.status = StepStatus::Failed;
                        s.last_error = Some(TaskError {
                            kind: super::state::TIMEOUT_ERROR_KIND.to_string(),
                            message: "wait timeout: no signal in time".to_string(),
                            retryable: false,
                        });
                    }
                    OnTimeout::Skip => s.status = StepStatus::Skipped,
                }
            }
        }
        EventKind::ChildStarted { step, child_id } => {
            if let Some(s) = state.steps.get_mut(usize::from(*step)) {
                // The child id stands where a task id stands: it names what
                // is out, and recognises the child's report.
                s.status = StepStatus::Dispatched;
                s.attempt = 1;
                s.task_id = Some(child_id.clone());
                s.dispatched_at_ms = Some(at);
                s.started_at_ms = None;
                s.finished_at_ms = None;
                s.retry_due_ms = None;
            }
        }
        EventKind::ChildFinished { step, outcome, .. } => {
            let generation = state.generation;
            if let Some(s) = state.steps.get_mut(usize::from(*step)) {
                s.finished_at_ms = Some(at);
                s.retry_due_ms = None;
                match outcome {
                    ChildOutcome::Succeeded { output } => {
                        s.status = StepStatus::Succeeded;
                        s.succeeded_generation = Some(generation);
                        s.output = Some(output.as_str().into());
                    }
                    ChildOutcome::Failed { reason } | ChildOutcome::Cancelled { reason } => {
                        s.status = StepStatus::Failed;
                        s.last_error = Some(TaskError {
                            kind: format!("child_{}", outcome.as_str()),
                            message: reason.clone(),
                            retryable: false,
                        });
                    }
                }
            }
        }
    }
}

fn timeout_error(timeout: TimeoutKind) -> TaskError {
    TaskError {
        kind: super::state::TIMEOUT_ERROR_KIND.to_string(),
        message: format!("{} timeout", timeout.as_str()),
        retryable: true,
    }
}

fn element(state: &mut WorkflowState, step: u16, index: u32) -> Option<&mut ElementState> {
    state
        .maps
        .get_mut(&step)?
        .elements
        .get_mut(usize::try_from(index).ok()?)
}

/// A map step starts its fan-out: with the elements a retry kept, or with
/// fresh ones read from the dependency's output. The array was read (and
/// checked) by `decide` before it emitted the event; reading it again here
/// keeps the elements out of the journal.
fn expand(state: &mut WorkflowState, step: u16, over_step: u16, pointer: &str, at: u64) {
    if !state.maps.contains_key(&step) {
        let inputs = state
            .steps
            .get(usize::from(over_step))
            .and_then(|s| s.output.as_deref())
            .and_then(|o| array_at(o, pointer).ok())
            .unwrap_or_default();
        let elements = vec![ElementState::new(); inputs.len()];
        state.maps.insert(
            step,
            MapRun {
                over_step,
                inputs: inputs.into(),
                elements,
            },
        );
    }
    if let Some(s) = state.steps.get_mut(usize::from(step)) {
        s.status = StepStatus::Dispatched;
        s.attempt = 1;
        s.dispatched_at_ms = Some(at);
        s.started_at_ms = None;
        s.finished_at_ms = None;
        s.retry_due_ms = None;
    }
}

/// A retry of the failed steps keeps the elements of a map step that
/// succeeded (its array is the same: the step it reads from is not run
/// again) and runs the others again; any other reset drops the fan-out.
fn reopen_maps(state: &mut WorkflowState, reset: &[u16], mode: &ReopenMode) {
    for &i in reset {
        let Some(run) = state.maps.get_mut(&i) else {
            continue;
        };
        let keep = matches!(mode, ReopenMode::RetryFailed) && !reset.contains(&run.over_step);
        if !keep {
            state.maps.remove(&i);
            continue;
        }
        for e in &mut run.elements {
            if e.status != StepStatus::Succeeded {
                *e = ElementState::new();
            } else {
                e.attempt = 0;
            }
        }
    }
}

fn element_after_failure(e: &mut ElementState, then: AfterFailure) {
    match then {
        AfterFailure::RetryAt(due) => {
            e.status = StepStatus::Backoff;
            e.retry_due_ms = Some(due);
        }
        AfterFailure::GiveUp => {
            e.status = StepStatus::Failed;
            e.retry_due_ms = None;
        }
    }
}

fn after_failure(s: &mut StepState, then: AfterFailure) {
    match then {
        AfterFailure::RetryAt(due) => {
            s.status = StepStatus::Backoff;
            s.retry_due_ms = Some(due);
        }
        AfterFailure::GiveUp => {
            s.status = StepStatus::Failed;
            s.retry_due_ms = None;
        }
    }
}

fn finish(state: &mut WorkflowState, status: Status, reason: Option<String>, at: u64) {
    state.status = status;
    state.reason = reason;
    state.finished_at_ms = Some(at);
    for s in &mut state.steps {
        if matches!(
            s.status,
            StepStatus::Dispatched | StepStatus::Backoff | StepStatus::Waiting
        ) {
            s.status = StepStatus::Cancelled;
            s.retry_due_ms = None;
        }
    }
    state.waits.clear();
    for run in state.maps.values_mut() {
        for e in &mut run.elements {
            if matches!(e.status, StepStatus::Dispatched | StepStatus::Backoff) {
                e.status = StepStatus::Cancelled;
                e.retry_due_ms = None;
            }
        }
    }
}

/// Rebuilds a state from a whole journal; `None` if it does not begin with
/// `WorkflowStarted`.
pub fn replay<'a>(events: impl IntoIterator<Item = &'a Event>) -> Option<WorkflowState> {
    let mut iter = events.into_iter();
    let mut state = start(iter.next()?)?;
    for e in iter {
        evolve(&mut state, e);
    }
    Some(state)
}
