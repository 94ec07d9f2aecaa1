//! The verbs on one workflow: `start`, `describe`, the operator inputs
//! (`cancel`, `pause`, `resume`, `retry`) and `rerun`.

use super::wire::{
    ElementCounts, PendingSignal, RerunRequest, StartRequest, StepReply, WorkflowReply,
};
use super::{code, AdminError};
use crate::engine::registry::NotStartable;
use crate::engine::Engine;
use crate::protocol::VERSION;
use crate::workflow::{Input, Outcome, ReopenMode, StepStatus};

pub(super) async fn start(r: StartRequest, engine: &Engine) -> Result<WorkflowReply, AdminError> {
    if let Err(e) = engine
        .ctx()
        .pipelines
        .startable(&r.pipeline, r.pipeline_version)
    {
        let code = match e {
            NotStartable::UnknownPipeline(_) => code::UNKNOWN_PIPELINE,
            NotStartable::UnknownVersion { .. } => code::UNKNOWN_PIPELINE_VERSION,
        };
        return Err(AdminError::new(code, e.to_string()));
    }
    let mut input = r.input;
    if let Some(p) = r.priority.as_deref() {
        let pointer = engine.ctx().capacity.priority_pointer();
        crate::engine::capacity::set_priority(&mut input, p, pointer.as_deref())
            .map_err(AdminError::bad)?;
    }
    let s = engine
        .start_workflow_at(&r.pipeline, r.pipeline_version, &r.id, &input.to_string())
        .await?;
    Ok(WorkflowReply {
        v: VERSION,
        id: Some(s.id),
        status: Some(s.status.to_string()),
        created: Some(s.created),
        ..WorkflowReply::default()
    })
}

pub(super) fn unknown(id: &str) -> AdminError {
    AdminError::new(code::UNKNOWN_WORKFLOW, format!("unknown workflow {id}"))
}

pub(super) async fn describe(id: &str, engine: &Engine) -> Result<WorkflowReply, AdminError> {
    let wf = engine.describe(id).await?.ok_or_else(|| unknown(id))?;
    let def = engine.ctx().pipelines.get(&wf.pipeline).ok();
    let steps = wf
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let progress = s.task_id.as_deref().and_then(|t| engine.progress(t));
            let waiting = s
                .task_id
                .as_deref()
                .and_then(|t| engine.ctx().capacity.waiting(t));
            StepReply {
                name: def
                    .as_ref()
                    .and_then(|d| d.steps.get(i))
                    .map_or_else(|| format!("#{i}"), |d| d.name.clone()),
                status: s.status.as_str().to_string(),
                attempts: s.attempt,
                last_error: s
                    .last_error
                    .as_ref()
                    .map(|e| format!("{}: {}", e.kind, e.message)),
                worker: s.worker.as_deref().map(str::to_string),
                dispatched_at_ms: s.dispatched_at_ms,
                started_at_ms: s.started_at_ms,
                finished_at_ms: s.finished_at_ms,
                output: s
                    .output
                    .as_deref()
                    .and_then(|o| serde_json::from_str(o).ok()),
                progress: progress
                    .as_ref()
                    .and_then(|p| serde_json::from_str(&p.json).ok()),
                progress_at_ms: progress.as_ref().map(|p| p.at_ms),
                queued: waiting.as_ref().map(|w| {
                    let key = if w.key.is_empty() {
                        String::new()
                    } else {
                        format!(" key {:?}", w.key)
                    };
                    format!("{}{key}: {}", w.task_type, w.held_by)
                }),
                queued_since_ms: waiting.as_ref().map(|w| w.since_ms),
                elements: wf.maps.get(&(i as u16)).map(element_counts),
                waiting_for: wf.waits.get(&(i as u16)).and_then(|_| {
                    def.as_ref()
                        .and_then(|d| d.wait_of(i))
                        .map(|w| w.signal.clone())
                }),
                wait_due_ms: wf.waits.get(&(i as u16)).map(|w| w.due_ms),
                child: def
                    .as_ref()
                    .and_then(|d| d.child_of(i))
                    .and(s.task_id.as_deref())
                    .map(str::to_string),
                child_status: None,
            }
        })
        .collect::<Vec<StepReply>>();
    let mut steps = steps;
    for s in &mut steps {
        if let Some(child) = &s.child {
            // The child may be on another partition: ask the engine.
            if let Ok(Some(c)) = engine.describe(child).await {
                s.child_status = Some(c.status.to_string());
            }
        }
    }
    let link = crate::workflow::lineage::parent_of(&wf.id);
    Ok(WorkflowReply {
        v: VERSION,
        id: Some(wf.id.clone()),
        status: Some(wf.status.to_string()),
        pipeline: Some(wf.pipeline.name.clone()),
        pipeline_version: Some(wf.pipeline.version),
        generation: Some(wf.generation),
        created_at_ms: Some(wf.created_at_ms),
        updated_at_ms: Some(wf.updated_at_ms),
        finished_at_ms: wf.finished_at_ms,
        reason: wf.reason.clone(),
        steps: Some(steps),
        signals: Some(
            wf.unconsumed_signals()
                .map(|s| PendingSignal {
                    name: s.name.clone(),
                    id: s.id.clone(),
                    received_at_ms: s.received_at_ms,
                })
                .collect(),
        )
        .filter(|v: &Vec<PendingSignal>| !v.is_empty()),
        parent: link.as_ref().map(|l| l.parent.to_string()),
        parent_step: link.as_ref().map(|l| l.step.to_string()),
        ..WorkflowReply::default()
    })
}

fn element_counts(run: &crate::workflow::map::MapRun) -> ElementCounts {
    let mut c = ElementCounts {
        total: run.elements.len() as u32,
        ..ElementCounts::default()
    };
    for e in &run.elements {
        let slot = match e.status {
            StepStatus::Pending => &mut c.pending,
            StepStatus::Dispatched => &mut c.dispatched,
            StepStatus::Backoff => &mut c.backoff,
            StepStatus::Succeeded => &mut c.succeeded,
            StepStatus::Failed => &mut c.failed,
            // An element is never skipped (its step is, as a whole) and
            // never waits (a wait step does not map).
            StepStatus::Cancelled | StepStatus::Skipped | StepStatus::Waiting => &mut c.cancelled,
        };
        *slot += 1;
    }
    c
}

/// Sends one operator input and answers with the resulting status line.
pub async fn control(id: &str, input: Input, engine: &Engine) -> Result<WorkflowReply, AdminError> {
    if engine.describe(id).await?.is_none() {
        return Err(unknown(id));
    }
    // Retention may purge the workflow between the describe above and this
    // input; the engine then answers as for any unknown id.
    let outcome = engine.send(id, input).await?;
    match outcome {
        Outcome::Applied => {}
        Outcome::Rejected(m) => return Err(AdminError::new(code::ILLEGAL_TRANSITION, m)),
        Outcome::Ignored(r) => {
            return Err(AdminError::new(
                code::ILLEGAL_TRANSITION,
                format!("ignored: {}", r.as_str()),
            ))
        }
    }
    let wf = engine.describe(id).await?.ok_or_else(|| unknown(id))?;
    Ok(WorkflowReply {
        v: VERSION,
        id: Some(wf.id),
        status: Some(wf.status.to_string()),
        generation: Some(wf.generation),
        reason: wf.reason,
        ..WorkflowReply::default()
    })
}

pub(super) async fn rerun(r: RerunRequest, engine: &Engine) -> Result<WorkflowReply, AdminError> {
    let wf = engine
        .describe(&r.id)
        .await?
        .ok_or_else(|| unknown(&r.id))?;
    let def = engine
        .ctx()
        .pipelines
        .get(&wf.pipeline)
        .map_err(|e| AdminError::new(code::UNAVAILABLE, e))?;
    if def.step_index(&r.from_step).is_none() {
        return Err(AdminError::new(
            code::UNKNOWN_STEP,
            format!(
                "pipeline {} has no step {:?} (steps: {})",
                def.name,
                r.from_step,
                def.steps
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    control(
        &r.id,
        Input::Reopen(ReopenMode::RerunFrom(r.from_step)),
        engine,
    )
    .await
}
