//! The checker's own model of map steps: what each element event is
//! allowed to do, kept apart from `workflow::evolve` like the rest of the
//! checker.

use crate::pipeline::PipelineDef;
use crate::workflow::map::element_task_id;
use crate::workflow::{AfterFailure, EventKind, ReopenMode, Status};

#[derive(Clone, Default)]
struct ElementModel {
    attempts: u32,
    outstanding: Option<u32>,
    backoff: bool,
    succeeded: bool,
    failed: bool,
}

/// The elements of one map step.
#[derive(Clone, Default)]
pub(super) struct MapModel {
    pub(super) expanded: bool,
    over_step: u16,
    elements: Vec<ElementModel>,
}

/// What the checker knows around a map event.
pub(super) struct MapCtx<'a> {
    pub(super) id: &'a str,
    pub(super) pipeline: &'a PipelineDef,
    pub(super) generation: u32,
    pub(super) status: Status,
    /// Per step: has it succeeded in this generation.
    pub(super) succeeded: &'a [bool],
}

/// Checks one map event against `maps` (indexed like the steps) and
/// updates them. Returns the violations, and whether the workflow must fail
/// next; `Some(step)` when the step succeeded.
pub(super) fn check_map_event(
    cx: &MapCtx<'_>,
    maps: &mut [MapModel],
    kind: &EventKind,
    bad: &mut impl FnMut(String),
    must_fail_next: &mut bool,
) -> Option<usize> {
    let step = usize::from(kind.step()?);
    let step_def = &cx.pipeline.steps[step];
    let name = &step_def.name;
    let Some(def) = cx.pipeline.map_of(step) else {
        bad(format!(
            "{} for step {name}, which does not map",
            kind.name()
        ));
        return None;
    };
    let m = &mut maps[step];
    if !matches!(
        kind,
        EventKind::MapExpanded { .. } | EventKind::MapFailed { .. }
    ) && !m.expanded
    {
        bad(format!(
            "{} for step {name} before it expanded",
            kind.name()
        ));
        return None;
    }
    let element = |m: &mut MapModel, index: u32, bad: &mut dyn FnMut(String)| -> Option<usize> {
        let x = index as usize;
        if x >= m.elements.len() {
            bad(format!(
                "step {name} element {index}, the array has {}",
                m.elements.len()
            ));
            return None;
        }
        Some(x)
    };
    match kind {
        EventKind::MapExpanded {
            over_step,
            elements,
            ..
        } => {
            if cx.status != Status::Running {
                bad(format!("step {name} expanded while {}", cx.status));
            }
            if *over_step != def.over_step {
                bad(format!("step {name} expanded over step index {over_step}"));
            }
            for &d in &step_def.needs {
                if !cx.succeeded[usize::from(d)] {
                    bad(format!(
                        "step {name} expanded before its dependency {} succeeded in generation {}",
                        cx.pipeline.steps[usize::from(d)].name,
                        cx.generation
                    ));
                }
            }
            if m.expanded || cx.succeeded[step] {
                bad(format!(
                    "step {name} expanded twice in generation {}",
                    cx.generation
                ));
            }
            if *elements > def.elements_max {
                bad(format!(
                    "step {name} expanded to {elements} elements, over max_elements {}",
                    def.elements_max
                ));
            }
            if m.elements.is_empty() || m.over_step != *over_step {
                m.elements = vec![ElementModel::default(); *elements as usize];
            } else if m.elements.len() != *elements as usize {
                bad(format!(
                    "step {name} kept {} elements but expanded to {elements}",
                    m.elements.len()
                ));
                m.elements = vec![ElementModel::default(); *elements as usize];
            }
            m.over_step = *over_step;
            m.expanded = true;
        }
        EventKind::ElementDispatched {
            index,
            attempt,
            task_id,
            ..
        } => {
            let x = element(m, *index, bad)?;
            if cx.status != Status::Running {
                bad(format!(
                    "step {name} element {index} dispatched while {}",
                    cx.status
                ));
            }
            let e = &m.elements[x];
            if e.succeeded || e.failed {
                bad(format!(
                    "step {name} element {index} dispatched after it ended in generation {}",
                    cx.generation
                ));
            }
            if e.outstanding.is_some() {
                bad(format!(
                    "step {name} element {index} dispatched while an attempt is still out"
                ));
            }
            if *attempt != e.attempts + 1 {
                bad(format!(
                    "step {name} element {index} attempt {attempt} follows attempt {}",
                    e.attempts
                ));
            }
            if *attempt > step_def.retry.max_attempts {
                bad(format!(
                    "step {name} element {index} attempt {attempt} exceeds max_attempts {}",
                    step_def.retry.max_attempts
                ));
            }
            let expected = element_task_id(cx.id, name, *index, cx.generation, *attempt);
            if **task_id != *expected {
                bad(format!("task id {task_id:?}, expected {expected:?}"));
            }
            let e = &mut m.elements[x];
            e.attempts = *attempt;
            e.outstanding = Some(*attempt);
            e.backoff = false;
            let active = m
                .elements
                .iter()
                .filter(|e| e.outstanding.is_some() || e.backoff)
                .count();
            if active > def.max_parallel as usize {
                bad(format!(
                    "step {name} has {active} elements out, over max_parallel {}",
                    def.max_parallel
                ));
            }
        }
        EventKind::ElementSucceeded { index, attempt, .. } => {
            let x = element(m, *index, bad)?;
            let e = &mut m.elements[x];
            if e.succeeded {
                bad(format!(
                    "step {name} element {index} succeeded twice in generation {}",
                    cx.generation
                ));
            }
            if e.outstanding != Some(*attempt) {
                bad(format!(
                    "step {name} element {index} attempt {attempt} succeeded but was not out"
                ));
            }
            e.outstanding = None;
            e.succeeded = true;
        }
        EventKind::ElementFailed {
            index,
            attempt,
            then,
            ..
        }
        | EventKind::ElementTimedOut {
            index,
            attempt,
            then,
            ..
        } => {
            let x = element(m, *index, bad)?;
            let e = &mut m.elements[x];
            if e.outstanding != Some(*attempt) {
                bad(format!(
                    "step {name} element {index} attempt {attempt} failed but was not out"
                ));
            }
            e.outstanding = None;
            match then {
                AfterFailure::RetryAt(_) => {
                    if *attempt >= step_def.retry.max_attempts {
                        bad(format!(
                            "step {name} element {index} schedules a retry after attempt {attempt} of {}",
                            step_def.retry.max_attempts
                        ));
                    }
                    if let Some(err) = error_of(kind) {
                        if !err.retryable || step_def.retry.non_retryable.contains(&err.kind) {
                            bad(format!(
                                "step {name} element {index} retried a non-retryable error {}",
                                err.kind
                            ));
                        }
                    }
                    e.backoff = true;
                }
                AfterFailure::GiveUp => e.failed = true,
            }
        }
        EventKind::MapSucceeded { failed, .. } => {
            let open = m
                .elements
                .iter()
                .filter(|e| !e.succeeded && !e.failed)
                .count();
            if open > 0 {
                bad(format!(
                    "step {name} succeeded with {open} elements not ended"
                ));
            }
            let model_failed: Vec<u32> = m
                .elements
                .iter()
                .enumerate()
                .filter(|(_, e)| e.failed)
                .map(|(x, _)| x as u32)
                .collect();
            if *failed != model_failed {
                bad(format!(
                    "step {name} lists failed elements {failed:?}, the journal shows {model_failed:?}"
                ));
            }
            let n = m.elements.len() as u32;
            let ok = n - model_failed.len() as u32;
            if ok < def.required(n) {
                bad(format!(
                    "step {name} succeeded with {ok} of {n} elements, min_success needs {}",
                    def.required(n)
                ));
            }
            return Some(step);
        }
        EventKind::MapFailed { .. } => *must_fail_next = true,
        _ => {}
    }
    None
}

fn error_of(kind: &EventKind) -> Option<&crate::workflow::TaskError> {
    match kind {
        EventKind::ElementFailed { error, .. } => Some(error),
        _ => None,
    }
}

/// The workflow ended: nothing is out any more.
pub(super) fn end(maps: &mut [MapModel]) {
    for m in maps {
        for e in &mut m.elements {
            e.outstanding = None;
            e.backoff = false;
        }
    }
}

/// A reopen: a retry of the failed steps keeps the elements that succeeded
/// of a map step whose array step is not run again; any other reset of a
/// map step forgets its elements.
pub(super) fn reopen(maps: &mut [MapModel], is_reset: &[bool], mode: &ReopenMode) {
    for (i, m) in maps.iter_mut().enumerate() {
        m.expanded = false;
        if !is_reset.get(i).copied().unwrap_or(false) {
            continue;
        }
        let keep = matches!(mode, ReopenMode::RetryFailed)
            && !is_reset
                .get(usize::from(m.over_step))
                .copied()
                .unwrap_or(true);
        if !keep {
            *m = MapModel::default();
            continue;
        }
        for e in &mut m.elements {
            let succeeded = e.succeeded;
            *e = ElementModel {
                succeeded,
                ..ElementModel::default()
            };
        }
    }
}
