//! Child steps: starting the child workflow of a step whose dependencies
//! are done, taking the child's outcome, and passing cancel, pause and
//! resume on to children that run.

use super::{Builder, IgnoreReason, Outcome};
use crate::pipeline::PipelineDef;
use crate::workflow::command::Command;
use crate::workflow::event::EventKind;
use crate::workflow::lineage::{
    child_id, depth, parent_of, ChildOutcome, ChildSignal, ChildSpec, ID_MAX_BYTES,
};
use crate::workflow::state::{StepStatus, WorkflowState};

impl Builder<'_> {
    /// Starts the child of step `i` (its dependencies are done and its
    /// condition holds): journals `ChildStarted` and asks the shell to
    /// start it. A child that would nest too deep, or whose id would be
    /// too long, fails the workflow instead.
    pub(super) fn start_child(&mut self, i: usize) {
        let Some(child) = self.pipeline.child_of(i) else {
            return;
        };
        let name = &self.pipeline.steps[i].name;
        let id = child_id(&self.state.id, name, self.state.generation);
        let too_deep = depth(&self.state.id) >= child.depth_max;
        if too_deep || id.len() > ID_MAX_BYTES {
            let why = if too_deep {
                format!(
                    "would nest deeper than {} workflows (child_depth_max)",
                    child.depth_max
                )
            } else {
                format!("its id would be longer than {ID_MAX_BYTES} bytes")
            };
            let reason = format!("step {name}: child pipeline {}: {why}", child.pipeline);
            self.end(EventKind::WorkflowFailed {
                step: Some(i as u16),
                reason,
            });
            return;
        }
        let mut input = self.deps_input(i, None);
        input.push('}');
        let spec = ChildSpec {
            child_id: id.clone(),
            parent_id: self.state.id.clone(),
            step: name.clone(),
            pipeline: child.pipeline.clone(),
            version: child.version,
            input,
        };
        self.emit(EventKind::ChildStarted {
            step: i as u16,
            child_id: id.as_str().into(),
        });
        self.commands.push(Command::StartChild(Box::new(spec)));
    }

    /// The child `child_id` ended. Counted once: a second report of the
    /// same child, or one of a child of an earlier generation, changes
    /// nothing.
    pub(super) fn on_child_finished(&mut self, child: &str, outcome: &ChildOutcome) -> Outcome {
        if let Some(o) = self.terminal() {
            return o;
        }
        let found = self.state.steps.iter().enumerate().position(|(i, s)| {
            self.pipeline.child_of(i).is_some() && s.task_id.as_deref() == Some(child)
        });
        let Some(i) = found else {
            let ours = parent_of(child)
                .filter(|l| l.parent == self.state.id && l.generation < self.state.generation);
            return Outcome::Ignored(match ours {
                Some(_) => IgnoreReason::StaleAttempt,
                None => IgnoreReason::UnknownTask,
            });
        };
        if self.state.steps[i].status != StepStatus::Dispatched {
            return Outcome::Ignored(IgnoreReason::Duplicate);
        }
        self.emit(EventKind::ChildFinished {
            step: i as u16,
            child_id: child.into(),
            outcome: outcome.clone(),
        });
        match outcome {
            ChildOutcome::Succeeded { .. } => self.advance(false),
            ChildOutcome::Failed { reason } | ChildOutcome::Cancelled { reason } => {
                let reason = format!(
                    "step {} failed: child workflow {child} {}: {reason}",
                    self.pipeline.steps[i].name,
                    outcome.as_str()
                );
                self.end(EventKind::WorkflowFailed {
                    step: Some(i as u16),
                    reason,
                });
            }
        }
        Outcome::Applied
    }

    /// Passes `signal` on to every child that runs.
    pub(super) fn signal_children(&mut self, signal: &ChildSignal) {
        let signals = running_children(&self.state, self.pipeline)
            .map(|(_, child_id)| Command::SignalChild {
                child_id: child_id.to_string(),
                signal: signal.clone(),
            })
            .collect::<Vec<_>>();
        self.commands.extend(signals);
    }
}

/// The child steps whose child runs: (step, child id).
pub(super) fn running_children<'s>(
    state: &'s WorkflowState,
    pipeline: &'s PipelineDef,
) -> impl Iterator<Item = (usize, &'s str)> {
    state.steps.iter().enumerate().filter_map(|(i, s)| {
        let open = s.status == StepStatus::Dispatched && pipeline.child_of(i).is_some();
        open.then_some(())?;
        Some((i, s.task_id.as_deref()?))
    })
}

/// The start of every child that runs, re-created: what a restart performs
/// again, so a child whose start was lost is started, and one that ended
/// while nobody listened reports its outcome again.
pub fn restart_children(state: &WorkflowState, pipeline: &PipelineDef) -> Vec<ChildSpec> {
    if state.status.is_terminal() {
        return Vec::new();
    }
    let ids: Vec<(usize, String)> = running_children(state, pipeline)
        .map(|(i, id)| (i, id.to_string()))
        .collect();
    let mut specs = Vec::with_capacity(ids.len());
    for (i, id) in ids {
        let Some(child) = pipeline.child_of(i) else {
            continue;
        };
        let b = Builder {
            state: state.clone(),
            pipeline,
            now: 0,
            events: Vec::new(),
            commands: Vec::new(),
            accept_stale: false,
        };
        let mut input = b.deps_input(i, None);
        input.push('}');
        specs.push(ChildSpec {
            child_id: id,
            parent_id: state.id.clone(),
            step: pipeline.steps[i].name.clone(),
            pipeline: child.pipeline.clone(),
            version: child.version,
            input,
        });
    }
    specs
}
