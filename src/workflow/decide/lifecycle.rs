//! How a decision takes an operator's input (cancel, pause, resume, park,
//! reopen) and how a workflow ends.

use super::{Builder, Outcome};
use crate::workflow::command::Command;
use crate::workflow::event::{EventKind, ReopenMode};
use crate::workflow::input::TimerKind;
use crate::workflow::lineage::ChildSignal;
use crate::workflow::state::{Status, StepStatus};

impl Builder<'_> {
    pub(super) fn on_cancel(&mut self, reason: &str) -> Outcome {
        if self.state.status.is_terminal() {
            return Outcome::Rejected(format!("workflow is already {}", self.state.status));
        }
        self.end(EventKind::WorkflowCancelled {
            reason: reason.to_string(),
        });
        Outcome::Applied
    }

    pub(super) fn on_pause(&mut self) -> Outcome {
        match self.state.status {
            Status::Running => {
                self.emit(EventKind::WorkflowPaused);
                self.signal_children(&ChildSignal::Pause);
                Outcome::Applied
            }
            other => Outcome::Rejected(format!("cannot pause a {other} workflow")),
        }
    }

    pub(super) fn on_resume(&mut self) -> Outcome {
        match self.state.status {
            Status::Paused => {
                self.emit(EventKind::WorkflowResumed);
                self.signal_children(&ChildSignal::Resume);
                self.advance(true);
                Outcome::Applied
            }
            other => Outcome::Rejected(format!("cannot resume a {other} workflow")),
        }
    }

    pub(super) fn on_park(&mut self, reason: &str) -> Outcome {
        if let Some(o) = self.terminal() {
            return o;
        }
        self.end(EventKind::WorkflowFailed {
            step: None,
            reason: reason.to_string(),
        });
        Outcome::Applied
    }

    pub(super) fn on_reopen(&mut self, mode: &ReopenMode) -> Outcome {
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
            // A step that succeeded or was skipped keeps its outcome; a
            // rerun resets it with everything downstream of the step named.
            .map(|s| !s.status.is_done())
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
    pub(super) fn end(&mut self, kind: EventKind) {
        let generation = self.state.generation;
        // Workers are told why their attempt stops: the operator's reason
        // for a cancel, the failure for a failed workflow.
        let cancel_reason = match &kind {
            EventKind::WorkflowCancelled { reason } => reason.clone(),
            EventKind::WorkflowFailed { reason, .. } => format!("workflow failed: {reason}"),
            _ => "workflow ended".to_string(),
        };
        let mut effects = Vec::new();
        for (i, s) in self.state.steps.iter().enumerate() {
            match s.status {
                StepStatus::Dispatched if self.pipeline.child_of(i).is_some() => {
                    effects.push(Command::SignalChild {
                        child_id: s.task_id.as_deref().unwrap_or_default().to_string(),
                        signal: ChildSignal::Cancel {
                            reason: format!("parent {}: {cancel_reason}", self.state.id),
                        },
                    })
                }
                StepStatus::Dispatched => effects.push(Command::CancelTask {
                    task_id: s.task_id.as_deref().unwrap_or_default().to_string(),
                    task_type: self.pipeline.steps[i].task_type.clone(),
                    reason: cancel_reason.clone(),
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
                StepStatus::Waiting => {
                    if let Some(w) = self.state.waits.get(&(i as u16)) {
                        effects.push(Command::DisarmTimer {
                            due_ms: w.due_ms,
                            timer: self.wait_timer(i),
                        });
                    }
                }
                _ => {}
            }
        }
        effects.extend(self.element_end_effects(&cancel_reason));
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
}
