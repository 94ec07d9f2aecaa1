//! Which steps are ready, and the task an attempt of a step is sent as.

use super::{idempotency_key, task_id, Builder};
use crate::workflow::command::{Command, TaskSpec};
use crate::workflow::event::EventKind;
use crate::workflow::state::{Status, StepStatus};

impl Builder<'_> {
    /// Dispatches every step that is ready and completes the workflow when all
    /// steps succeeded. `due_retries` also dispatches steps whose backoff has
    /// passed (on resume, when their timer may have fired while paused).
    pub(super) fn advance(&mut self, due_retries: bool) {
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

    pub(super) fn dispatch(&mut self, i: usize) {
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
