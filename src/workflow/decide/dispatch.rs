//! Which steps are ready, whether their condition lets them run, and the
//! task an attempt of a step is sent as. Map steps start, fill and settle
//! through `map`; wait steps start through `wait`.

use super::{idempotency_key, task_id, Builder};
use crate::workflow::command::{Command, TaskSpec};
use crate::workflow::event::EventKind;
use crate::workflow::state::{Status, StepStatus};
use crate::workflow::when::evaluate;

impl Builder<'_> {
    /// Dispatches every step that is ready and completes the workflow when all
    /// steps succeeded. `due_retries` also dispatches steps whose backoff has
    /// passed (on resume, when their timer may have fired while paused).
    pub(super) fn advance(&mut self, due_retries: bool) {
        // A map step that ends in this pass (an empty array, the last
        // element's result) makes its dependents ready: go round again. Each
        // round settles at least one more step, so there are at most as many
        // rounds as steps.
        for _ in 0..=self.state.steps.len() {
            if !self.advance_once(due_retries) {
                return;
            }
        }
    }

    /// One pass of [`Self::advance`]; `true` when a step succeeded or was
    /// skipped during it.
    fn advance_once(&mut self, due_retries: bool) -> bool {
        if self.state.status.is_terminal() {
            return false;
        }
        let mut settled = false;
        for i in 0..self.state.steps.len() {
            if self.pipeline.map_of(i).is_some()
                && self.state.steps[i].status == StepStatus::Dispatched
            {
                settled |= self.settle_map(i);
                if self.state.status.is_terminal() {
                    return false;
                }
            }
        }
        if self.state.steps.iter().all(|s| s.status.is_done()) {
            self.end(EventKind::WorkflowCompleted);
            return false;
        }
        if self.state.status != Status::Running {
            return settled;
        }
        for i in 0..self.state.steps.len() {
            let s = &self.state.steps[i];
            let status = s.status;
            let retry_due = due_retries && s.retry_due_ms.is_some_and(|d| d <= self.now);
            let is_map = self.pipeline.map_of(i).is_some();
            match status {
                StepStatus::Pending => {
                    let deps_done = self.pipeline.steps[i]
                        .needs
                        .iter()
                        .all(|&d| self.state.steps[usize::from(d)].status.is_done());
                    if !deps_done {
                        continue;
                    }
                    match self.condition(i) {
                        Ok(true) => {}
                        Ok(false) => {
                            self.emit(EventKind::StepSkipped { step: i as u16 });
                            settled = true;
                            continue;
                        }
                        Err(reason) => {
                            self.end(EventKind::WorkflowFailed {
                                step: Some(i as u16),
                                reason,
                            });
                            return false;
                        }
                    }
                    if self.pipeline.wait_of(i).is_some() {
                        settled |= self.start_wait(i);
                    } else if is_map {
                        settled |= self.start_map(i);
                        if self.state.status.is_terminal() {
                            return false;
                        }
                    } else if self.pipeline.child_of(i).is_some() {
                        self.start_child(i);
                        if self.state.status.is_terminal() {
                            return false;
                        }
                    } else {
                        self.dispatch(i);
                    }
                }
                StepStatus::Backoff if retry_due => self.dispatch(i),
                StepStatus::Dispatched if is_map => self.fill_map(i, due_retries),
                _ => {}
            }
        }
        settled
    }

    /// Whether step `i`, whose dependencies are done, runs: its `when`
    /// over the workflow input and its dependencies' outputs (`null` for a
    /// skipped one); a step without one always runs. The error names the
    /// step, the expression and what went wrong.
    fn condition(&self, i: usize) -> Result<bool, String> {
        let Some(when) = self.pipeline.when_of(i) else {
            return Ok(true);
        };
        let deps: Vec<(&str, Option<&str>)> = self.pipeline.steps[i]
            .needs
            .iter()
            .map(|&d| {
                let d = usize::from(d);
                (
                    self.pipeline.steps[d].name.as_str(),
                    self.state.steps[d].output.as_deref(),
                )
            })
            .collect();
        evaluate(when, &self.state.input, &deps).map_err(|e| {
            format!(
                "step {}: when {:?}: {e}",
                self.pipeline.steps[i].name, when.text
            )
        })
    }

    pub(super) fn dispatch(&mut self, i: usize) {
        let def = &self.pipeline.steps[i];
        let attempt = self.state.steps[i].attempt + 1;
        let generation = self.state.generation;
        let id = &self.state.id;
        let task_id = task_id(id, &def.name, generation, attempt);
        let key = idempotency_key(id, &def.name, generation);
        let mut input = self.deps_input(i, None);
        input.push('}');
        let spec = self.task_spec(i, task_id.clone(), key, attempt, input);
        self.emit(EventKind::TaskDispatched {
            step: i as u16,
            attempt,
            task_id: task_id.as_str().into(),
        });
        self.commands.push(Command::Dispatch(Box::new(spec)));
    }

    /// `{"workflow":<input>,"deps":{<step>:<output>,...}` of step `i`,
    /// without the closing brace, so a map element can add its fields.
    /// `skip` leaves one dependency out (the one a map element's `element`
    /// comes from: each element task carries its own element, not the
    /// whole array).
    pub(super) fn deps_input(&self, i: usize, skip: Option<u16>) -> String {
        let def = &self.pipeline.steps[i];
        let mut input = String::with_capacity(self.state.input.len() + 64);
        input.push_str("{\"workflow\":");
        input.push_str(&self.state.input);
        input.push_str(",\"deps\":{");
        let mut first = true;
        for &d in def.needs.iter().filter(|&&d| Some(d) != skip) {
            if !first {
                input.push(',');
            }
            first = false;
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
        input.push('}');
        input
    }

    /// The task of one attempt of step `i` (or of one of its elements).
    pub(super) fn task_spec(
        &self,
        i: usize,
        task_id: String,
        idempotency_key: String,
        attempt: u32,
        input: String,
    ) -> TaskSpec {
        let def = &self.pipeline.steps[i];
        let t = &def.timeouts;
        let deadline_ms = match (t.schedule_to_start_ms, t.start_to_close_ms) {
            (Some(a), Some(b)) => Some(self.now.saturating_add(a).saturating_add(b)),
            _ => None,
        };
        TaskSpec {
            task_id,
            idempotency_key,
            workflow_id: self.state.id.clone(),
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
            queue_timeout_ms: self.pipeline.queue_timeout_of(i),
        }
    }
}
