//! How a decision takes a worker's result, an attempt's timeout and a
//! fired timer: which answers count, and what a failure leads to (a retry
//! after backoff, or the step's and the workflow's end).

use super::{Builder, IgnoreReason, Outcome};
use crate::workflow::backoff::retry_delay_ms;
use crate::workflow::command::Command;
use crate::workflow::event::{AfterFailure, EventKind, TaskError, TimeoutKind};
use crate::workflow::input::{TaskOutcome, TaskResult, TimerKind};
use crate::workflow::state::{Status, StepStatus};

impl Builder<'_> {
    pub(super) fn on_result(&mut self, r: &TaskResult) -> Outcome {
        let Some(i) = self.pipeline.step_index(&r.step) else {
            return Outcome::Ignored(IgnoreReason::UnknownTask);
        };
        if i >= self.state.steps.len() {
            return Outcome::Ignored(IgnoreReason::UnknownTask);
        }
        if let Some(o) = self.terminal() {
            return o;
        }
        if self.pipeline.map_of(i).is_some() {
            return self.on_element_result(r);
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
    pub(super) fn same_generation_attempt(&self, task_id: &str) -> Option<u32> {
        let mut parts = task_id.rsplit(':');
        let attempt = parts.next()?.parse::<u32>().ok()?;
        let generation = parts.next()?.parse::<u32>().ok()?;
        (generation == self.state.generation).then_some(attempt)
    }

    /// The planted bug: a superseded attempt's success is accepted as if it
    /// were current. `None` for a failure (left ignored).
    pub(super) fn planted_stale_success(
        &mut self,
        i: usize,
        attempt: u32,
        r: &TaskResult,
    ) -> Option<Outcome> {
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
    pub(super) fn classify_foreign(&self, i: usize, task_id: &str) -> Outcome {
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

    pub(super) fn on_timeout(&mut self, task_id: &str, timeout: TimeoutKind) -> Outcome {
        if let Some(o) = self.terminal() {
            return o;
        }
        let found = self
            .state
            .steps
            .iter()
            .position(|s| s.task_id.as_deref() == Some(task_id));
        let Some(i) = found else {
            return self.on_element_timeout(task_id, timeout);
        };
        if self.state.steps[i].status != StepStatus::Dispatched {
            return Outcome::Ignored(IgnoreReason::StaleAttempt);
        }
        let attempt = self.state.steps[i].attempt;
        // A hung worker may still be busy with it: tell it to stop.
        self.commands.push(Command::CancelTask {
            task_id: task_id.to_string(),
            task_type: self.pipeline.steps[i].task_type.clone(),
            reason: format!("superseded: {} timeout", timeout.as_str()),
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
    pub(super) fn after_failure(&self, i: usize, retryable: bool) -> AfterFailure {
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

    pub(super) fn after_failure_effects(&mut self, i: usize, then: AfterFailure, error: String) {
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

    pub(super) fn on_timer(&mut self, timer: &TimerKind) -> Outcome {
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
            TimerKind::ElementRetry {
                step,
                index,
                generation,
                attempt,
            } => self.on_element_timer(step, index, generation, attempt),
            TimerKind::Wait { step, generation } => self.on_wait_timer(step, generation),
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
}

fn error_summary(e: &TaskError) -> String {
    format!("{}: {}", e.kind, e.message)
}
