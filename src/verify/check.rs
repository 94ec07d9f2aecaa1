//! An independent checker of a workflow's raw event sequence.
//!
//! It deliberately does not call `evolve`: it keeps its own minimal model of
//! what each event is allowed to do, so a bug in `evolve` or `decide` shows
//! up as a violation instead of being replayed faithfully. The property
//! tests use it as their oracle and `orchestrator verify` runs it over every
//! journal on disk.

use super::check_child::{check_child_event, ChildCtx, ChildStep};
use super::check_map::{self, check_map_event, MapCtx, MapModel};
use super::check_wait::{WaitCtx, WaitEnd, WaitModel};
use crate::pipeline::PipelineDef;
use crate::workflow::{AfterFailure, Event, EventKind, ReopenMode, Status};

/// One broken rule, at the event with sequence number `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub seq: u64,
    pub message: String,
}

/// What the checker concluded about one journal.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// Status after the last event, if the journal started properly.
    pub status: Option<Status>,
    pub events: u64,
    pub violations: Vec<Violation>,
}

#[derive(Clone, Default)]
struct StepModel {
    succeeded: bool,
    /// Its condition was false in this generation.
    skipped: bool,
    attempts: u32,
    /// Attempt currently out with workers.
    outstanding: Option<u32>,
}

impl StepModel {
    /// Succeeded or skipped: dependents may go ahead.
    fn done(&self) -> bool {
        self.succeeded || self.skipped
    }
}

/// Checks `events` (with their sequence numbers) of workflow `id` against
/// the rules of `pipeline`.
pub fn check_journal(id: &str, pipeline: &PipelineDef, events: &[(u64, Event)]) -> Checked {
    let mut v = Vec::new();
    let mut status: Option<Status> = None;
    let mut generation = 0u32;
    let n = pipeline.steps.len();
    let mut steps = vec![StepModel::default(); n];
    let mut maps = vec![MapModel::default(); n];
    let mut waits = WaitModel::default();
    let mut must_fail_next = false;
    let mut expected_seq = 1u64;

    let mut bad = |seq: u64, msg: String| v.push(Violation { seq, message: msg });

    for (seq, event) in events {
        let seq = *seq;
        if seq != expected_seq {
            bad(
                seq,
                format!("sequence gap: expected {expected_seq}, found {seq}"),
            );
        }
        expected_seq = seq + 1;
        if must_fail_next && !matches!(event.kind, EventKind::WorkflowFailed { .. }) {
            bad(seq, "a step gave up but the workflow did not fail".into());
        }
        must_fail_next = false;
        let name = event.kind.name();
        let Some(st) = status else {
            match &event.kind {
                EventKind::WorkflowStarted {
                    id: wid,
                    steps: count,
                    ..
                } => {
                    if wid != id {
                        bad(
                            seq,
                            format!("started event names workflow {wid:?}, journal is {id:?}"),
                        );
                    }
                    if usize::from(*count) != n {
                        bad(seq, format!("started with {count} steps, pipeline has {n}"));
                    }
                    status = Some(Status::Running);
                }
                _ => bad(
                    seq,
                    format!("journal starts with {name}, not workflow_started"),
                ),
            }
            continue;
        };
        if st.is_terminal() && !matches!(event.kind, EventKind::WorkflowReopened { .. }) {
            bad(seq, format!("{name} after the workflow became {st}"));
            continue;
        }
        if let Some(step) = event.kind.step() {
            if usize::from(step) >= n {
                bad(
                    seq,
                    format!("{name} names step index {step}, pipeline has {n} steps"),
                );
                continue;
            }
        }
        match &event.kind {
            EventKind::WorkflowStarted { .. } => bad(seq, "second workflow_started".into()),
            EventKind::TaskDispatched {
                step,
                attempt,
                task_id,
            } => {
                let i = usize::from(*step);
                let def = &pipeline.steps[i];
                if st != Status::Running {
                    bad(seq, format!("step {} dispatched while {st}", def.name));
                }
                if pipeline.map_of(i).is_some() {
                    bad(
                        seq,
                        format!("map step {} dispatched as a single task", def.name),
                    );
                }
                if pipeline.wait_of(i).is_some() {
                    bad(seq, format!("wait step {} dispatched a task", def.name));
                }
                if pipeline.child_of(i).is_some() {
                    bad(seq, format!("child step {} dispatched as a task", def.name));
                }
                for &d in &def.needs {
                    if !steps[usize::from(d)].done() {
                        bad(seq, format!(
                            "step {} dispatched before its dependency {} succeeded in generation {generation}",
                            def.name, pipeline.steps[usize::from(d)].name
                        ));
                    }
                }
                let m = &mut steps[i];
                if m.skipped {
                    bad(
                        seq,
                        format!(
                            "step {} dispatched after it was skipped in generation {generation}",
                            def.name
                        ),
                    );
                }
                if m.succeeded {
                    bad(
                        seq,
                        format!(
                            "step {} dispatched after it succeeded in generation {generation}",
                            def.name
                        ),
                    );
                }
                if m.outstanding.is_some() {
                    bad(
                        seq,
                        format!("step {} dispatched while an attempt is still out", def.name),
                    );
                }
                if *attempt != m.attempts + 1 {
                    bad(
                        seq,
                        format!(
                            "step {} attempt {attempt} follows attempt {}",
                            def.name, m.attempts
                        ),
                    );
                }
                if *attempt > def.retry.max_attempts {
                    bad(
                        seq,
                        format!(
                            "step {} attempt {attempt} exceeds max_attempts {}",
                            def.name, def.retry.max_attempts
                        ),
                    );
                }
                let expected = format!("{id}:{}:{generation}:{attempt}", def.name);
                if **task_id != *expected {
                    bad(seq, format!("task id {task_id:?}, expected {expected:?}"));
                }
                m.attempts = *attempt;
                m.outstanding = Some(*attempt);
            }
            EventKind::TaskSucceeded { step, attempt, .. } => {
                let i = usize::from(*step);
                let m = &mut steps[i];
                if m.succeeded {
                    bad(
                        seq,
                        format!(
                            "step {} succeeded twice in generation {generation}",
                            pipeline.steps[i].name
                        ),
                    );
                }
                if m.outstanding != Some(*attempt) {
                    bad(
                        seq,
                        format!(
                            "step {} attempt {attempt} succeeded but was not out",
                            pipeline.steps[i].name
                        ),
                    );
                }
                m.outstanding = None;
                m.succeeded = true;
            }
            EventKind::TaskFailed {
                step,
                attempt,
                then,
                error,
                ..
            } => {
                let i = usize::from(*step);
                let def = &pipeline.steps[i];
                let retryable = error.retryable && !def.retry.non_retryable.contains(&error.kind);
                if matches!(then, AfterFailure::RetryAt(_)) && !retryable {
                    bad(
                        seq,
                        format!(
                            "step {} retried a non-retryable error {}",
                            def.name, error.kind
                        ),
                    );
                }
                failed(
                    &mut steps[i],
                    def,
                    *attempt,
                    *then,
                    seq,
                    &mut bad,
                    &mut must_fail_next,
                );
            }
            EventKind::TaskTimedOut {
                step,
                attempt,
                then,
                ..
            } => {
                let i = usize::from(*step);
                failed(
                    &mut steps[i],
                    &pipeline.steps[i],
                    *attempt,
                    *then,
                    seq,
                    &mut bad,
                    &mut must_fail_next,
                );
            }
            EventKind::WorkflowPaused => {
                if st != Status::Running {
                    bad(seq, format!("paused while {st}"));
                }
                status = Some(Status::Paused);
            }
            EventKind::WorkflowResumed => {
                if st != Status::Paused {
                    bad(seq, format!("resumed while {st}"));
                }
                status = Some(Status::Running);
            }
            EventKind::WorkflowCompleted => {
                if let Some(i) = steps.iter().position(|m| !m.done()) {
                    bad(
                        seq,
                        format!(
                            "completed while step {} has not succeeded",
                            pipeline.steps[i].name
                        ),
                    );
                }
                status = Some(Status::Completed);
            }
            EventKind::WorkflowFailed { .. } => status = Some(Status::Failed),
            EventKind::WorkflowCancelled { .. } => status = Some(Status::Cancelled),
            EventKind::WorkflowReopened {
                generation: g,
                mode,
                reset,
                ..
            } => {
                if !st.is_terminal() {
                    bad(seq, format!("reopened while {st}"));
                }
                if *g != generation + 1 {
                    bad(
                        seq,
                        format!("reopened as generation {g} after {generation}"),
                    );
                }
                if let ReopenMode::RetryFailed = mode {
                    if st == Status::Completed {
                        bad(seq, "retry of a completed workflow".into());
                    }
                }
                generation = *g;
                let mut is_reset = vec![false; n];
                for &r in reset {
                    match is_reset.get_mut(usize::from(r)) {
                        Some(x) => *x = true,
                        None => bad(
                            seq,
                            format!("reopen resets step index {r}, pipeline has {n} steps"),
                        ),
                    }
                }
                check_map::reopen(&mut maps, &is_reset, mode);
                waits.stop_all();
                for (i, m) in steps.iter_mut().enumerate() {
                    m.outstanding = None;
                    if is_reset[i] {
                        *m = StepModel::default();
                    } else if !m.done() {
                        bad(
                            seq,
                            format!(
                                "reopen keeps step {} that never succeeded",
                                pipeline.steps[i].name
                            ),
                        );
                    } else {
                        // Kept: its success carries into the new generation.
                        m.attempts = 0;
                    }
                }
                status = Some(Status::Running);
            }
            EventKind::MapExpanded { .. }
            | EventKind::ElementDispatched { .. }
            | EventKind::ElementSucceeded { .. }
            | EventKind::ElementFailed { .. }
            | EventKind::ElementTimedOut { .. }
            | EventKind::MapSucceeded { .. }
            | EventKind::MapFailed { .. } => {
                // A skipped dependency lets a map step expand; a skipped
                // step expanding counts as expanding twice.
                let succeeded: Vec<bool> = steps.iter().map(StepModel::done).collect();
                let cx = MapCtx {
                    id,
                    pipeline,
                    generation,
                    status: st,
                    succeeded: &succeeded,
                };
                let mut map_bad = |m: String| bad(seq, m);
                let done = check_map_event(
                    &cx,
                    &mut maps,
                    &event.kind,
                    &mut map_bad,
                    &mut must_fail_next,
                );
                if let Some(i) = done {
                    if steps[i].done() {
                        bad(
                            seq,
                            format!(
                                "step {} succeeded twice in generation {generation}",
                                pipeline.steps[i].name
                            ),
                        );
                    }
                    steps[i].succeeded = true;
                }
            }
            EventKind::StepSkipped { step } => {
                let i = usize::from(*step);
                check_skip(
                    &SkipCtx {
                        pipeline,
                        generation,
                        status: st,
                        steps: &steps,
                        map_expanded: maps[i].expanded || waits.is_waiting(i),
                    },
                    i,
                    &mut |m| bad(seq, m),
                );
                steps[i].skipped = true;
                // Elements a retry kept go with the skipped step.
                maps[i] = MapModel::default();
            }
            EventKind::SignalReceived { .. }
            | EventKind::WaitStarted { .. }
            | EventKind::WaitSucceeded { .. }
            | EventKind::WaitTimedOut { .. } => {
                let done: Vec<bool> = steps.iter().map(StepModel::done).collect();
                let cx = WaitCtx {
                    pipeline,
                    generation,
                    status: st,
                    done: &done,
                };
                let ended =
                    waits.check(&cx, &event.kind, &mut |m| bad(seq, m), &mut must_fail_next);
                match ended {
                    Some(WaitEnd::Succeeded(i)) => {
                        if steps[i].done() {
                            bad(
                                seq,
                                format!(
                                    "step {} succeeded twice in generation {generation}",
                                    pipeline.steps[i].name
                                ),
                            );
                        }
                        steps[i].succeeded = true;
                    }
                    Some(WaitEnd::Skipped(i)) => steps[i].skipped = true,
                    Some(WaitEnd::Failed) | None => {}
                }
            }
            EventKind::ChildStarted { step, .. } | EventKind::ChildFinished { step, .. } => {
                let i = usize::from(*step);
                let done: Vec<bool> = steps.iter().map(StepModel::done).collect();
                let cx = ChildCtx {
                    id,
                    pipeline,
                    generation,
                    status: st,
                    done: &done,
                };
                let m = &mut steps[i];
                let model = ChildStep {
                    done: m.done(),
                    skipped: m.skipped,
                    attempts: &mut m.attempts,
                    outstanding: &mut m.outstanding,
                    succeeded: &mut m.succeeded,
                };
                check_child_event(
                    &cx,
                    i,
                    model,
                    &event.kind,
                    &mut |m| bad(seq, m),
                    &mut must_fail_next,
                );
            }
        }
        if event.kind.is_terminal() {
            for m in &mut steps {
                m.outstanding = None;
            }
            waits.stop_all();
            check_map::end(&mut maps);
        }
    }
    if must_fail_next {
        bad(
            expected_seq.saturating_sub(1),
            "a step gave up but the workflow did not fail".into(),
        );
    }
    Checked {
        status,
        events: events.len() as u64,
        violations: v,
    }
}

fn failed(
    m: &mut StepModel,
    def: &crate::pipeline::StepDef,
    attempt: u32,
    then: AfterFailure,
    seq: u64,
    bad: &mut impl FnMut(u64, String),
    must_fail_next: &mut bool,
) {
    if m.outstanding != Some(attempt) {
        bad(
            seq,
            format!("step {} attempt {attempt} failed but was not out", def.name),
        );
    }
    m.outstanding = None;
    match then {
        AfterFailure::RetryAt(_) => {
            if attempt >= def.retry.max_attempts {
                bad(
                    seq,
                    format!(
                        "step {} schedules a retry after attempt {attempt} of {}",
                        def.name, def.retry.max_attempts
                    ),
                );
            }
        }
        AfterFailure::GiveUp => *must_fail_next = true,
    }
}

struct SkipCtx<'a> {
    pipeline: &'a PipelineDef,
    generation: u32,
    status: Status,
    steps: &'a [StepModel],
    map_expanded: bool,
}

/// A step is skipped only while running, when it has a condition, once its
/// dependencies are done, and before anything else happened to it in the
/// generation.
fn check_skip(cx: &SkipCtx<'_>, i: usize, bad: &mut impl FnMut(String)) {
    let def = &cx.pipeline.steps[i];
    let generation = cx.generation;
    if cx.status != Status::Running {
        bad(format!("step {} skipped while {}", def.name, cx.status));
    }
    if cx.pipeline.when_of(i).is_none() {
        bad(format!("step {} skipped but has no condition", def.name));
    }
    for &d in &def.needs {
        if !cx.steps[usize::from(d)].done() {
            bad(format!(
                "step {} skipped before its dependency {} was done in generation {generation}",
                def.name,
                cx.pipeline.steps[usize::from(d)].name
            ));
        }
    }
    let m = &cx.steps[i];
    if m.done() {
        bad(format!(
            "step {} skipped after it ended in generation {generation}",
            def.name
        ));
    }
    if m.attempts > 0 || m.outstanding.is_some() || cx.map_expanded {
        bad(format!(
            "step {} skipped after it started in generation {generation}",
            def.name
        ));
    }
}
