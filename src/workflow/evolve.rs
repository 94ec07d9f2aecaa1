//! `evolve`: the only function that changes a [`WorkflowState`]. Used live
//! after an append is durable and on replay, so both give the same state.

use super::event::{AfterFailure, Event, EventKind};
use super::state::{Status, StepState, StepStatus, WorkflowState};

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
                s.last_error = Some(super::event::TaskError {
                    kind: super::state::TIMEOUT_ERROR_KIND.to_string(),
                    message: format!("{} timeout", timeout.as_str()),
                    retryable: true,
                });
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
            ..
        } => {
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
        if matches!(s.status, StepStatus::Dispatched | StepStatus::Backoff) {
            s.status = StepStatus::Cancelled;
            s.retry_due_ms = None;
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
