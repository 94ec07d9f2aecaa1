//! Wait steps: a step with `wait = { signal = ... }` dispatches no task.
//! Once its dependencies are done (and its `when` holds) it starts waiting,
//! with a durable timer for its timeout; the oldest signal of its name that
//! no wait step consumed yet completes it, whether that signal arrived
//! before the wait started or after. Its payload is the step's output.

use super::{Builder, IgnoreReason, Outcome};
use crate::pipeline::OnTimeout;
use crate::workflow::command::Command;
use crate::workflow::event::EventKind;
use crate::workflow::input::TimerKind;
use crate::workflow::state::StepStatus;

impl Builder<'_> {
    /// A signal arrived. It is journaled unless it is a duplicate (an id
    /// seen before, whatever the status), the workflow is terminal, no step of the pipeline waits
    /// for its name, or it would be one unconsumed signal too many; then the
    /// first wait step waiting for it consumes it.
    pub(super) fn on_signal(
        &mut self,
        name: &str,
        id: &str,
        payload: &str,
        pending_max: u32,
    ) -> Outcome {
        // A resent id is a duplicate even once the workflow ended, so a
        // sender retrying after its first request completed the workflow
        // hears that it was taken.
        if self.state.signals.iter().any(|s| s.id == id) {
            return Outcome::Ignored(IgnoreReason::Duplicate);
        }
        if let Some(o) = self.terminal() {
            return o;
        }
        if !self.pipeline.waits_for(name) {
            return Outcome::Rejected(format!(
                "pipeline {} v{} has no wait step for signal {name:?}",
                self.pipeline.name, self.pipeline.version
            ));
        }
        let waiter = self.waiting_for(name);
        let pending = self.state.unconsumed_signals().count();
        if waiter.is_none() && pending >= pending_max as usize {
            return Outcome::Rejected(format!(
                "workflow {} already keeps {pending} unconsumed signals (limit {pending_max})",
                self.state.id
            ));
        }
        self.emit(EventKind::SignalReceived {
            name: name.to_owned(),
            id: id.to_owned(),
            payload: payload.into(),
        });
        if let Some(i) = waiter {
            self.consume(i, id.to_owned(), true);
            self.advance(false);
        }
        Outcome::Applied
    }

    /// The first step (by index) waiting for the signal `name`.
    fn waiting_for(&self, name: &str) -> Option<usize> {
        (0..self.state.steps.len()).find(|&i| {
            self.state.steps[i].status == StepStatus::Waiting
                && self.pipeline.wait_of(i).is_some_and(|w| w.signal == name)
        })
    }

    /// Wait step `i` starts waiting: journaled with its due time; completed
    /// at once by a signal that arrived before, otherwise its timer is
    /// armed. `true` when it completed.
    pub(super) fn start_wait(&mut self, i: usize) -> bool {
        let Some(wait) = self.pipeline.wait_of(i) else {
            return false;
        };
        let due_ms = self.now.saturating_add(wait.timeout_ms);
        self.emit(EventKind::WaitStarted {
            step: i as u16,
            due_ms,
        });
        if let Some(signal) = self.state.unconsumed_signal(&wait.signal) {
            let id = signal.id.clone();
            self.consume(i, id, false);
            return true;
        }
        self.commands.push(Command::ArmTimer {
            due_ms,
            timer: self.wait_timer(i),
        });
        false
    }

    /// Wait step `i` consumes signal `id`; `armed` when its timer is armed
    /// and must go.
    fn consume(&mut self, i: usize, id: String, armed: bool) {
        let due_ms = self.state.waits.get(&(i as u16)).map(|w| w.due_ms);
        self.emit(EventKind::WaitSucceeded {
            step: i as u16,
            signal_id: id,
        });
        if let (true, Some(due_ms)) = (armed, due_ms) {
            self.commands.push(Command::DisarmTimer {
                due_ms,
                timer: self.wait_timer(i),
            });
        }
    }

    pub(super) fn wait_timer(&self, i: usize) -> TimerKind {
        TimerKind::Wait {
            step: i as u16,
            generation: self.state.generation,
        }
    }

    /// The timeout of wait step `step` of `generation` is due: the step
    /// fails (and the workflow, with a reason naming the step and the
    /// signal) or is skipped, as the pipeline says. A timer of an older
    /// generation, or of a wait that ended, is stale.
    pub(super) fn on_wait_timer(&mut self, step: u16, generation: u32) -> Outcome {
        let i = usize::from(step);
        let waiting = self
            .state
            .steps
            .get(i)
            .is_some_and(|s| s.status == StepStatus::Waiting);
        let Some(wait) = self.pipeline.wait_of(i) else {
            return Outcome::Ignored(IgnoreReason::StaleTimer);
        };
        if generation != self.state.generation || !waiting {
            return Outcome::Ignored(IgnoreReason::StaleTimer);
        }
        let then = wait.on_timeout;
        let reason = format!(
            "step {}: no signal {:?} within {}",
            self.pipeline.steps[i].name,
            wait.signal,
            crate::durations::format_ms(wait.timeout_ms)
        );
        self.emit(EventKind::WaitTimedOut { step, then });
        match then {
            OnTimeout::Fail => self.end(EventKind::WorkflowFailed {
                step: Some(step),
                reason,
            }),
            OnTimeout::Skip => self.advance(false),
        }
        Outcome::Applied
    }
}
