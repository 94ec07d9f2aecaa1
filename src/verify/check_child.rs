//! The checker's rules for child steps: one child per step and generation,
//! under the id derived from the workflow, step and generation, started
//! only once the step's dependencies are done, and finished only while it
//! runs. Kept apart from `workflow::evolve` like the rest of the checker.

use crate::pipeline::PipelineDef;
use crate::workflow::lineage::{child_id, ChildOutcome};
use crate::workflow::{EventKind, Status};

/// What the checker knows of one step around a child event.
pub(super) struct ChildStep<'a> {
    pub(super) done: bool,
    pub(super) skipped: bool,
    pub(super) attempts: &'a mut u32,
    pub(super) outstanding: &'a mut Option<u32>,
    pub(super) succeeded: &'a mut bool,
}

/// What the checker knows around a child event.
pub(super) struct ChildCtx<'a> {
    pub(super) id: &'a str,
    pub(super) pipeline: &'a PipelineDef,
    pub(super) generation: u32,
    pub(super) status: Status,
    /// Per step: done (succeeded or skipped) in this generation.
    pub(super) done: &'a [bool],
}

/// Checks one `child_started` or `child_finished` event of step `i`.
pub(super) fn check_child_event(
    cx: &ChildCtx<'_>,
    i: usize,
    m: ChildStep<'_>,
    kind: &EventKind,
    bad: &mut impl FnMut(String),
    must_fail_next: &mut bool,
) {
    let def = &cx.pipeline.steps[i];
    let name = &def.name;
    let generation = cx.generation;
    if cx.pipeline.child_of(i).is_none() {
        bad(format!(
            "{} for step {name}, which starts no child",
            kind.name()
        ));
        return;
    }
    let expected = child_id(cx.id, name, generation);
    match kind {
        EventKind::ChildStarted { child_id: got, .. } => {
            if cx.status != Status::Running {
                bad(format!("child of step {name} started while {}", cx.status));
            }
            for &d in &def.needs {
                if !cx.done[usize::from(d)] {
                    bad(format!(
                        "child of step {name} started before its dependency {} was done in generation {generation}",
                        cx.pipeline.steps[usize::from(d)].name
                    ));
                }
            }
            if m.done || m.skipped || *m.attempts > 0 || m.outstanding.is_some() {
                bad(format!(
                    "second child of step {name} in generation {generation}"
                ));
            }
            if **got != *expected {
                bad(format!("child id {got:?}, expected {expected:?}"));
            }
            *m.attempts = 1;
            *m.outstanding = Some(1);
        }
        EventKind::ChildFinished {
            child_id: got,
            outcome,
            ..
        } => {
            if m.outstanding.is_none() {
                bad(format!(
                    "child of step {name} finished but none was running"
                ));
            }
            if **got != *expected {
                bad(format!(
                    "step {name} took the outcome of child {got:?}, its child is {expected:?}"
                ));
            }
            *m.outstanding = None;
            match outcome {
                ChildOutcome::Succeeded { .. } => *m.succeeded = true,
                ChildOutcome::Failed { .. } | ChildOutcome::Cancelled { .. } => {
                    *must_fail_next = true
                }
            }
        }
        _ => {}
    }
}
