//! What a committed transition tells the outside: structured log lines
//! (`workflow_id`, `step`, `attempt`, `task_id` as fields) and finished
//! spans for the [`crate::otel::SpanSink`], if one is configured.
//!
//! Called by [`super::transition::after_commit`] with the post-state, so it
//! only ever reports what is durable. Cost when logging is below `debug`
//! and no sink is set: one disabled-callsite check per event (no
//! formatting, no allocation) and one `Option` test.

use crate::pipeline::PipelineDef;
use crate::telemetry::span::{
    workflow_span_key, AttrValue, SpanKind, SpanRecord, SpanSink, SpanStatus,
};
use crate::workflow::{AfterFailure, Command, Decision, EventKind, Status, WorkflowState};

type Attrs = Vec<(&'static str, AttrValue)>;

fn step_name(def: &PipelineDef, step: u16) -> &str {
    def.steps
        .get(usize::from(step))
        .map_or("?", |s| s.name.as_str())
}

/// Logs the events of a committed `decision` and hands finished spans to `spans`.
pub fn committed(
    spans: Option<&dyn SpanSink>,
    prev_status: Option<Status>,
    next: &WorkflowState,
    def: &PipelineDef,
    decision: &Decision,
    now_ms: u64,
) {
    log_events(prev_status, next, def, decision, now_ms);
    if let Some(sink) = spans {
        for span in spans_of(prev_status, next, def, decision, now_ms) {
            sink.submit(span);
        }
    }
}

fn log_events(
    prev_status: Option<Status>,
    next: &WorkflowState,
    def: &PipelineDef,
    decision: &Decision,
    now_ms: u64,
) {
    let id = next.id.as_str();
    for e in &decision.events {
        match &e.kind {
            EventKind::WorkflowStarted { pipeline, .. } => tracing::debug!(
                workflow_id = id,
                pipeline = pipeline.name.as_str(),
                pipeline_version = pipeline.version,
                "workflow started"
            ),
            EventKind::TaskDispatched {
                step,
                attempt,
                task_id,
            } => tracing::debug!(
                workflow_id = id,
                step = step_name(def, *step),
                attempt,
                task_id = &**task_id,
                task_type = def
                    .steps
                    .get(usize::from(*step))
                    .map_or("?", |s| s.task_type.as_str()),
                "task dispatched"
            ),
            EventKind::TaskSucceeded {
                step,
                attempt,
                worker,
                ..
            } => tracing::debug!(
                workflow_id = id,
                step = step_name(def, *step),
                attempt,
                task_id = task_id_of(next, *step, *attempt),
                worker = worker.as_deref(),
                duration_ms = task_duration(next, *step, *attempt, e.at_ms),
                "task succeeded"
            ),
            EventKind::TaskFailed {
                step,
                attempt,
                error,
                worker,
                then,
            } => tracing::debug!(
                workflow_id = id,
                step = step_name(def, *step),
                attempt,
                task_id = task_id_of(next, *step, *attempt),
                worker = worker.as_deref(),
                error_kind = error.kind.as_str(),
                error = error.message.as_str(),
                retryable = error.retryable,
                retry_at_ms = retry_at(then),
                duration_ms = task_duration(next, *step, *attempt, e.at_ms),
                "task failed"
            ),
            EventKind::TaskTimedOut {
                step,
                attempt,
                timeout,
                then,
            } => tracing::debug!(
                workflow_id = id,
                step = step_name(def, *step),
                attempt,
                task_id = task_id_of(next, *step, *attempt),
                timeout = timeout.as_str(),
                retry_at_ms = retry_at(then),
                "task timed out"
            ),
            EventKind::WorkflowPaused => tracing::info!(workflow_id = id, "workflow paused"),
            EventKind::WorkflowResumed => tracing::info!(workflow_id = id, "workflow resumed"),
            EventKind::WorkflowReopened { generation, .. } => {
                tracing::info!(workflow_id = id, generation, "workflow reopened")
            }
            EventKind::SignalReceived {
                name,
                id: signal_id,
                ..
            } => tracing::info!(
                workflow_id = id,
                signal = name.as_str(),
                signal_id = signal_id.as_str(),
                "signal received"
            ),
            EventKind::WaitSucceeded { step, signal_id } => tracing::info!(
                workflow_id = id,
                step = step_name(def, *step),
                signal_id = signal_id.as_str(),
                "wait succeeded"
            ),
            EventKind::WaitTimedOut { step, then } => tracing::info!(
                workflow_id = id,
                step = step_name(def, *step),
                then = then.as_str(),
                "wait timed out"
            ),
            _ => {}
        }
    }
    if prev_status != Some(next.status) && next.status.is_terminal() {
        tracing::info!(
            workflow_id = id,
            pipeline = next.pipeline.name.as_str(),
            status = next.status.as_str(),
            generation = next.generation,
            reason = next.reason.as_deref(),
            duration_ms = next
                .finished_at_ms
                .unwrap_or(now_ms)
                .saturating_sub(next.created_at_ms),
            "workflow finished"
        );
    }
}

fn retry_at(then: &AfterFailure) -> Option<u64> {
    match then {
        AfterFailure::RetryAt(t) => Some(*t),
        AfterFailure::GiveUp => None,
    }
}

/// The task id of `attempt` of `step`, when it is the step's latest one
/// (a result and the next dispatch of the same step are never in one
/// decision: retries go through a timer).
fn task_id_of(next: &WorkflowState, step: u16, attempt: u32) -> Option<&str> {
    next.steps
        .get(usize::from(step))
        .filter(|s| s.attempt == attempt)
        .and_then(|s| s.task_id.as_deref())
}

fn task_duration(next: &WorkflowState, step: u16, attempt: u32, at_ms: u64) -> Option<u64> {
    next.steps
        .get(usize::from(step))
        .filter(|s| s.attempt == attempt)
        .and_then(|s| s.dispatched_at_ms)
        .map(|d| at_ms.saturating_sub(d))
}

/// Generation encoded in a task id (`<workflow>:<step>:<generation>:<attempt>`).
fn generation_of(task_id: &str) -> Option<u32> {
    let mut it = task_id.rsplitn(3, ':');
    let _attempt = it.next()?;
    it.next()?.parse().ok()
}

/// The spans `decision` finished: one per attempt that got a result, timed
/// out or was cancelled, and the workflow generation's span when the
/// workflow reached a terminal status.
pub fn spans_of(
    prev_status: Option<Status>,
    next: &WorkflowState,
    def: &PipelineDef,
    decision: &Decision,
    now_ms: u64,
) -> Vec<SpanRecord> {
    let mut out = Vec::new();
    let parent = workflow_span_key(&next.id, next.generation);
    for e in &decision.events {
        let (step, attempt, outcome, status, worker, mut extra) = match &e.kind {
            EventKind::TaskSucceeded {
                step,
                attempt,
                worker,
                ..
            } => (
                *step,
                *attempt,
                "succeeded",
                SpanStatus::Ok,
                worker.as_deref(),
                Attrs::new(),
            ),
            EventKind::TaskFailed {
                step,
                attempt,
                error,
                worker,
                ..
            } => (
                *step,
                *attempt,
                "failed",
                SpanStatus::Error(error.message.clone()),
                worker.as_deref(),
                vec![
                    ("task.error.kind", error.kind.as_str().into()),
                    ("task.error.message", error.message.as_str().into()),
                    (
                        "task.error.retryable",
                        AttrValue::Str(error.retryable.to_string()),
                    ),
                ],
            ),
            EventKind::TaskTimedOut {
                step,
                attempt,
                timeout,
                ..
            } => (
                *step,
                *attempt,
                "timed_out",
                SpanStatus::Error(format!("{} timeout", timeout.as_str())),
                None,
                vec![("task.timeout", timeout.as_str().into())],
            ),
            _ => continue,
        };
        let Some(s) = next
            .steps
            .get(usize::from(step))
            .filter(|s| s.attempt == attempt)
        else {
            continue;
        };
        let Some(task_id) = s.task_id.as_deref() else {
            continue;
        };
        let start = s.dispatched_at_ms.unwrap_or(e.at_ms).min(e.at_ms);
        let started = s.started_at_ms.map(|t| t.clamp(start, e.at_ms));
        extra.push(("task.outcome", outcome.into()));
        out.push(task_span(
            next, def, step, attempt, task_id, &parent, start, e.at_ms, worker, started, status,
            extra,
        ));
    }
    // Attempts cut short by the decision (the workflow ended while they were
    // out). A timed-out attempt is cancelled too; its span is already made.
    for c in &decision.commands {
        let Command::CancelTask { task_id, .. } = c else {
            continue;
        };
        if out.iter().any(|s| s.span_key == *task_id) {
            continue;
        }
        let Some((i, s)) = next
            .steps
            .iter()
            .enumerate()
            .find(|(_, s)| s.task_id.as_deref() == Some(task_id.as_str()))
        else {
            continue;
        };
        let end = decision.events.last().map_or(now_ms, |e| e.at_ms);
        let start = s.dispatched_at_ms.unwrap_or(end).min(end);
        out.push(task_span(
            next,
            def,
            i as u16,
            s.attempt,
            task_id,
            &parent,
            start,
            end,
            None,
            s.started_at_ms.map(|t| t.clamp(start, end)),
            SpanStatus::Unset,
            vec![("task.outcome", "cancelled".into())],
        ));
    }
    if prev_status != Some(next.status) && next.status.is_terminal() {
        out.push(workflow_span(next, now_ms));
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn task_span(
    next: &WorkflowState,
    def: &PipelineDef,
    step: u16,
    attempt: u32,
    task_id: &str,
    parent: &str,
    start_ms: u64,
    end_ms: u64,
    worker: Option<&str>,
    started_ms: Option<u64>,
    status: SpanStatus,
    extra: Vec<(&'static str, AttrValue)>,
) -> SpanRecord {
    let sdef = def.steps.get(usize::from(step));
    let name = sdef.map_or("?", |s| s.name.as_str());
    let mut attributes: Vec<(&'static str, AttrValue)> = Vec::with_capacity(8 + extra.len());
    attributes.push(("workflow.id", next.id.as_str().into()));
    attributes.push(("workflow.pipeline", next.pipeline.name.as_str().into()));
    attributes.push(("task.step", name.into()));
    if let Some(sdef) = sdef {
        attributes.push(("task.type", sdef.task_type.as_str().into()));
    }
    attributes.push(("task.attempt", attempt.into()));
    attributes.push(("task.id", task_id.into()));
    if let Some(w) = worker {
        attributes.push(("task.worker", w.into()));
    }
    attributes.extend(extra);
    // A task of an earlier generation (cancelled at a reopen) keeps its own parent.
    let parent = match generation_of(task_id) {
        Some(g) if g != next.generation => workflow_span_key(&next.id, g),
        _ => parent.to_owned(),
    };
    SpanRecord {
        workflow_id: next.id.clone(),
        span_key: task_id.to_owned(),
        parent_key: Some(parent),
        name: name.to_owned(),
        kind: SpanKind::Producer,
        start_ms,
        end_ms,
        attributes,
        events: started_ms.map(|t| ("started", t)).into_iter().collect(),
        status,
    }
}

fn workflow_span(next: &WorkflowState, now_ms: u64) -> SpanRecord {
    let end = next.finished_at_ms.unwrap_or(now_ms);
    let g = next.generation;
    // A reopened generation starts with its first dispatch (the reopen
    // itself is not kept in the state).
    let start = if g == 0 {
        next.created_at_ms
    } else {
        next.steps
            .iter()
            .filter(|s| s.attempt >= 1 && s.task_id.as_deref().and_then(generation_of) == Some(g))
            .filter_map(|s| s.dispatched_at_ms)
            .min()
            .unwrap_or(end)
    }
    .min(end);
    let mut attributes: Vec<(&'static str, AttrValue)> = vec![
        ("workflow.id", next.id.as_str().into()),
        ("workflow.pipeline", next.pipeline.name.as_str().into()),
        ("workflow.pipeline_version", next.pipeline.version.into()),
        ("workflow.generation", g.into()),
        ("workflow.status", next.status.as_str().into()),
    ];
    if let Some(r) = &next.reason {
        attributes.push(("workflow.reason", r.as_str().into()));
    }
    let status = match next.status {
        Status::Completed => SpanStatus::Ok,
        Status::Failed => SpanStatus::Error(next.reason.clone().unwrap_or_default()),
        _ => SpanStatus::Unset,
    };
    SpanRecord {
        workflow_id: next.id.clone(),
        span_key: workflow_span_key(&next.id, g),
        parent_key: None,
        name: format!("workflow {}", next.pipeline.name),
        kind: SpanKind::Internal,
        start_ms: start,
        end_ms: end,
        attributes,
        events: Vec::new(),
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_are_read_from_task_ids() {
        assert_eq!(generation_of("v-1:ingest:0:1"), Some(0));
        assert_eq!(generation_of("a:b:c:ingest:12:3"), Some(12));
        assert_eq!(generation_of("nonsense"), None);
    }
}
