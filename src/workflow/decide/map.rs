//! How a decision runs a map step: reading its array, keeping up to
//! `max_parallel` elements out, taking element results, timeouts and retry
//! timers, and ending the step once every element ended.

use super::{Builder, IgnoreReason, Outcome};
use crate::workflow::backoff::retry_delay_ms;
use crate::workflow::command::Command;
use crate::workflow::event::{AfterFailure, EventKind, TimeoutKind};
use crate::workflow::input::{TaskOutcome, TaskResult, TimerKind};
use crate::workflow::map::{
    array_at, element_idempotency_key, element_task_id, parse_element_task_id,
};
use crate::workflow::state::{Status, StepStatus};

impl Builder<'_> {
    /// Step `i`'s dependencies succeeded: read its array and start its
    /// elements, or fail the step. `true` when the step already succeeded
    /// (an empty array, or every element kept by a retry).
    pub(super) fn start_map(&mut self, i: usize) -> bool {
        // A copy of the reference: what is read from the pipeline does not
        // borrow `self`.
        let pipeline = self.pipeline;
        let Some(def) = pipeline.map_of(i) else {
            return false;
        };
        let step = i as u16;
        let over = &pipeline.steps[usize::from(def.over_step)].name;
        let elements = match self.state.maps.get(&step) {
            // Kept by a retry of the failed steps: same array, same elements.
            Some(run) => run.elements.len(),
            None => {
                let output = self.state.steps[usize::from(def.over_step)]
                    .output
                    .as_deref()
                    .unwrap_or("null");
                match array_at(output, &def.pointer) {
                    Ok(items) => items.len(),
                    Err(e) => {
                        let reason = format!(
                            "step {}: map over \"{}\": {e}",
                            pipeline.steps[i].name,
                            def.over_text(over)
                        );
                        self.fail_map(i, reason);
                        return false;
                    }
                }
            }
        };
        if elements > def.elements_max as usize {
            let reason = format!(
                "step {}: map over \"{}\": {elements} elements, the limit (max_elements) is {}",
                pipeline.steps[i].name,
                def.over_text(over),
                def.elements_max
            );
            self.fail_map(i, reason);
            return false;
        }
        self.emit(EventKind::MapExpanded {
            step,
            over_step: def.over_step,
            pointer: def.pointer.clone(),
            elements: elements as u32,
        });
        let settled = self.settle_map(i);
        if !settled && !self.state.status.is_terminal() {
            self.fill_map(i, false);
        }
        settled
    }

    /// Dispatches pending elements of map step `i` while fewer than
    /// `max_parallel` are out or in backoff, lowest index first.
    /// `due_retries` also dispatches elements whose backoff passed (on resume).
    pub(super) fn fill_map(&mut self, i: usize, due_retries: bool) {
        if self.state.status != Status::Running {
            return;
        }
        let pipeline = self.pipeline;
        let Some(def) = pipeline.map_of(i) else {
            return;
        };
        let step = i as u16;
        let Some(run) = self.state.maps.get(&step) else {
            return;
        };
        let now = self.now;
        let due: Vec<u32> = if due_retries {
            run.elements
                .iter()
                .enumerate()
                .filter(|(_, e)| {
                    e.status == StepStatus::Backoff && e.retry_due_ms.is_some_and(|d| d <= now)
                })
                .map(|(x, _)| x as u32)
                .collect()
        } else {
            Vec::new()
        };
        let room = (def.max_parallel as usize).saturating_sub(run.active());
        let pending: Vec<u32> = run
            .elements
            .iter()
            .enumerate()
            .filter(|(_, e)| e.status == StepStatus::Pending)
            .take(room)
            .map(|(x, _)| x as u32)
            .collect();
        for x in due.into_iter().chain(pending) {
            self.dispatch_element(i, x);
        }
    }

    /// Ends map step `i` once every element ended, or fails it as soon as
    /// too many elements failed for `min_success`. `true` when it succeeded.
    pub(super) fn settle_map(&mut self, i: usize) -> bool {
        let pipeline = self.pipeline;
        let Some(def) = pipeline.map_of(i) else {
            return false;
        };
        let step = i as u16;
        let Some(run) = self.state.maps.get(&step) else {
            return false;
        };
        let n = run.elements.len() as u32;
        let required = def.required(n);
        let failed = run.failed();
        let succeeded = run
            .elements
            .iter()
            .filter(|e| e.status == StepStatus::Succeeded)
            .count() as u32;
        let name = &pipeline.steps[i].name;
        if failed.len() as u32 > n - required {
            let reason = format!(
                "step {name}: {} of {n} elements failed (indices {}), min_success needs {required}",
                failed.len(),
                list(&failed)
            );
            self.fail_map(i, reason);
            return false;
        }
        if succeeded + failed.len() as u32 != n {
            return false;
        }
        let bytes = run.assembled_len();
        if bytes > def.output_bytes_max {
            let reason = format!(
                "step {name}: the array of element outputs is {bytes} bytes, the limit (max_output_bytes) is {}",
                def.output_bytes_max
            );
            self.fail_map(i, reason);
            return false;
        }
        self.emit(EventKind::MapSucceeded { step, failed });
        true
    }

    fn fail_map(&mut self, i: usize, reason: String) {
        self.emit(EventKind::MapFailed {
            step: i as u16,
            reason: reason.clone(),
        });
        self.end(EventKind::WorkflowFailed {
            step: Some(i as u16),
            reason,
        });
    }

    pub(super) fn dispatch_element(&mut self, i: usize, index: u32) {
        let step = i as u16;
        let Some(run) = self.state.maps.get(&step) else {
            return;
        };
        let Some(e) = run.elements.get(index as usize) else {
            return;
        };
        let attempt = e.attempt + 1;
        let element = run.inputs.get(index as usize).cloned();
        let over_step = run.over_step;
        let pipeline = self.pipeline;
        let name = &pipeline.steps[i].name;
        let generation = self.state.generation;
        let task_id = element_task_id(&self.state.id, name, index, generation, attempt);
        let key = element_idempotency_key(&self.state.id, name, index, generation);
        let mut input = self.deps_input(i, Some(over_step));
        input.push_str(",\"element\":");
        input.push_str(element.as_deref().unwrap_or("null"));
        input.push_str(",\"index\":");
        input.push_str(&index.to_string());
        input.push('}');
        let spec = self.task_spec(i, task_id.clone(), key, attempt, input);
        self.emit(EventKind::ElementDispatched {
            step,
            index,
            attempt,
            task_id: task_id.as_str().into(),
        });
        self.commands.push(Command::Dispatch(Box::new(spec)));
    }

    /// Whether the task id names an attempt of an element of this workflow
    /// that is out with workers now: the element's step and index, or why not.
    fn current_element(&self, task_id: &str) -> Result<(usize, u32), Outcome> {
        let unknown = Outcome::Ignored(IgnoreReason::UnknownTask);
        let Some(t) = parse_element_task_id(&self.state.id, task_id) else {
            return Err(unknown);
        };
        let Some(i) = self.pipeline.step_index(t.step) else {
            return Err(unknown);
        };
        if self.pipeline.map_of(i).is_none() {
            return Err(unknown);
        }
        if t.generation != self.state.generation {
            return Err(if t.generation < self.state.generation {
                Outcome::Ignored(IgnoreReason::StaleAttempt)
            } else {
                unknown
            });
        }
        let Some(e) = self
            .state
            .maps
            .get(&(i as u16))
            .and_then(|run| run.elements.get(t.index as usize))
        else {
            return Err(unknown);
        };
        if t.attempt < e.attempt {
            return Err(Outcome::Ignored(IgnoreReason::StaleAttempt));
        }
        if t.attempt > e.attempt {
            return Err(unknown);
        }
        if e.status != StepStatus::Dispatched {
            return Err(Outcome::Ignored(if e.timed_out {
                IgnoreReason::StaleAttempt
            } else {
                IgnoreReason::Duplicate
            }));
        }
        Ok((i, t.index))
    }

    pub(super) fn on_element_result(&mut self, r: &TaskResult) -> Outcome {
        let (i, index) = match self.current_element(&r.task_id) {
            Ok(found) => found,
            Err(o) => return o,
        };
        let step = i as u16;
        let attempt = self.state.maps[&step].elements[index as usize].attempt;
        match &r.outcome {
            TaskOutcome::Succeeded(output) => {
                self.emit(EventKind::ElementSucceeded {
                    step,
                    index,
                    attempt,
                    output: output.as_str().into(),
                    worker: r.worker.as_deref().map(Into::into),
                    started_at_ms: r.started_at_ms,
                });
            }
            TaskOutcome::Failed(error) => {
                let retryable = error.retryable
                    && !self.pipeline.steps[i]
                        .retry
                        .non_retryable
                        .iter()
                        .any(|k| k == &error.kind);
                let then = self.element_after_failure(i, index, retryable, &r.task_id);
                self.emit(EventKind::ElementFailed {
                    step,
                    index,
                    attempt,
                    error: error.clone(),
                    worker: r.worker.as_deref().map(Into::into),
                    then,
                });
                self.arm_element_retry(i, index, then);
            }
        }
        self.advance(false);
        Outcome::Applied
    }

    pub(super) fn on_element_timeout(&mut self, task_id: &str, timeout: TimeoutKind) -> Outcome {
        let (i, index) = match self.current_element(task_id) {
            Ok(found) => found,
            Err(Outcome::Ignored(IgnoreReason::Duplicate)) => {
                return Outcome::Ignored(IgnoreReason::StaleAttempt)
            }
            Err(o) => return o,
        };
        let step = i as u16;
        let attempt = self.state.maps[&step].elements[index as usize].attempt;
        self.commands.push(Command::CancelTask {
            task_id: task_id.to_string(),
            task_type: self.pipeline.steps[i].task_type.clone(),
            reason: format!("superseded: {} timeout", timeout.as_str()),
        });
        let then = self.element_after_failure(i, index, true, task_id);
        self.emit(EventKind::ElementTimedOut {
            step,
            index,
            attempt,
            timeout,
            then,
        });
        self.arm_element_retry(i, index, then);
        self.advance(false);
        Outcome::Applied
    }

    pub(super) fn on_element_timer(
        &mut self,
        step: u16,
        index: u32,
        generation: u32,
        attempt: u32,
    ) -> Outcome {
        let stale = Outcome::Ignored(IgnoreReason::StaleTimer);
        let Some(e) = self
            .state
            .maps
            .get(&step)
            .and_then(|run| run.elements.get(index as usize))
        else {
            return stale;
        };
        if generation != self.state.generation
            || e.status != StepStatus::Backoff
            || e.attempt + 1 != attempt
        {
            return stale;
        }
        if self.state.status == Status::Running {
            self.dispatch_element(usize::from(step), index);
        }
        // Paused: the element stays in backoff and `Resume` dispatches it.
        Outcome::Applied
    }

    fn element_after_failure(
        &self,
        i: usize,
        index: u32,
        retryable: bool,
        task_id: &str,
    ) -> AfterFailure {
        let policy = &self.pipeline.steps[i].retry;
        let attempt = self.state.maps[&(i as u16)].elements[index as usize].attempt;
        if retryable && attempt < policy.max_attempts {
            let delay = retry_delay_ms(policy, attempt, task_id);
            AfterFailure::RetryAt(self.now.saturating_add(delay))
        } else {
            AfterFailure::GiveUp
        }
    }

    fn arm_element_retry(&mut self, i: usize, index: u32, then: AfterFailure) {
        if let AfterFailure::RetryAt(due_ms) = then {
            let attempt = self.state.maps[&(i as u16)].elements[index as usize].attempt;
            self.commands.push(Command::ArmTimer {
                due_ms,
                timer: TimerKind::ElementRetry {
                    step: i as u16,
                    index,
                    generation: self.state.generation,
                    attempt: attempt + 1,
                },
            });
        }
    }

    /// Cancels and timer removals for the elements still out when the
    /// workflow ends.
    pub(super) fn element_end_effects(&self, reason: &str) -> Vec<Command> {
        let mut effects = Vec::new();
        let generation = self.state.generation;
        for (&step, run) in &self.state.maps {
            let i = usize::from(step);
            let Some(def) = self.pipeline.steps.get(i) else {
                continue;
            };
            for (x, e) in run.elements.iter().enumerate() {
                match e.status {
                    StepStatus::Dispatched => effects.push(Command::CancelTask {
                        task_id: element_task_id(
                            &self.state.id,
                            &def.name,
                            x as u32,
                            generation,
                            e.attempt,
                        ),
                        task_type: def.task_type.clone(),
                        reason: reason.to_string(),
                    }),
                    StepStatus::Backoff => {
                        if let Some(due_ms) = e.retry_due_ms {
                            effects.push(Command::DisarmTimer {
                                due_ms,
                                timer: TimerKind::ElementRetry {
                                    step,
                                    index: x as u32,
                                    generation,
                                    attempt: e.attempt + 1,
                                },
                            });
                        }
                    }
                    _ => {}
                }
            }
        }
        effects
    }
}

/// Indices for a message: all of them up to 20, then a count of the rest.
fn list(indices: &[u32]) -> String {
    let mut text: Vec<String> = indices.iter().take(20).map(u32::to_string).collect();
    if indices.len() > 20 {
        text.push(format!("and {} more", indices.len() - 20));
    }
    text.join(", ")
}
