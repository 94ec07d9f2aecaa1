//! `history`: a workflow's journal, one entry per event, paged by seq.

use super::wire::{HistoryEvent, HistoryReply, HistoryRequest};
use super::workflow::unknown;
use super::{code, AdminError, HISTORY_PAGE_MAX};
use crate::engine::Engine;
use crate::protocol::VERSION;
use crate::workflow::{ChildOutcome, EventKind, JournalRecord, ReopenMode};

pub(super) async fn history(
    r: HistoryRequest,
    engine: &Engine,
) -> Result<HistoryReply, AdminError> {
    let limit = r
        .limit
        .unwrap_or(HISTORY_PAGE_MAX)
        .clamp(1, HISTORY_PAGE_MAX) as usize;
    let wf = engine
        .describe(&r.id)
        .await?
        .ok_or_else(|| unknown(&r.id))?;
    let def = engine.ctx().pipelines.get(&wf.pipeline).ok();
    let store = engine.ctx().store.clone();
    let id = r.id.clone();
    let records: Vec<(u64, JournalRecord)> =
        tokio::task::spawn_blocking(move || store.load_journal(store.partition_of(&id), &id, 1))
            .await
            .map_err(|e| AdminError::new(code::UNAVAILABLE, e.to_string()))?
            .map_err(|e| AdminError::new(code::UNAVAILABLE, e.to_string()))?;
    let step_name = |i: u16| {
        def.as_ref()
            .and_then(|d| d.steps.get(usize::from(i)))
            .map_or_else(|| format!("#{i}"), |s| s.name.clone())
    };
    let mut events = Vec::new();
    let mut generation = 0u32;
    let mut more = false;
    'records: for (_, rec) in &records {
        for (k, ev) in rec.events.iter().enumerate() {
            let seq = rec.first_seq + k as u64;
            if let EventKind::WorkflowReopened { generation: g, .. } = &ev.kind {
                generation = *g;
            }
            if seq <= r.after_seq {
                continue;
            }
            if events.len() == limit {
                more = true;
                break 'records;
            }
            let mut event = history_event(seq, ev, generation, &step_name);
            if let EventKind::TaskDispatched { task_id, .. }
            | EventKind::ElementDispatched { task_id, .. } = &ev.kind
            {
                event.progress = engine
                    .progress(task_id)
                    .and_then(|p| serde_json::from_str(&p.json).ok());
            }
            events.push(event);
        }
    }
    let next_after_seq = if more {
        events.last().map(|e: &HistoryEvent| e.seq)
    } else {
        None
    };
    Ok(HistoryReply {
        v: VERSION,
        id: Some(r.id),
        events,
        next_after_seq,
        ..HistoryReply::default()
    })
}

pub(crate) fn history_event(
    seq: u64,
    ev: &crate::workflow::Event,
    generation: u32,
    step_name: &dyn Fn(u16) -> String,
) -> HistoryEvent {
    let mut h = HistoryEvent {
        seq,
        at: ev.at_ms,
        event: ev.kind.name().to_string(),
        generation,
        step: ev.kind.step().map(step_name),
        attempt: None,
        worker: None,
        error: None,
        output: None,
        progress: None,
        signal: None,
        signal_id: None,
        due_at: None,
        child: None,
    };
    match &ev.kind {
        EventKind::TaskDispatched { attempt, .. } => h.attempt = Some(*attempt),
        EventKind::TaskSucceeded {
            attempt,
            worker,
            output,
            ..
        } => {
            h.attempt = Some(*attempt);
            h.worker = worker.as_deref().map(str::to_string);
            h.output = serde_json::from_str(output).ok();
        }
        EventKind::TaskFailed {
            attempt,
            error,
            worker,
            ..
        } => {
            h.attempt = Some(*attempt);
            h.worker = worker.as_deref().map(str::to_string);
            h.error = Some(format!("{}: {}", error.kind, error.message));
        }
        EventKind::TaskTimedOut {
            attempt, timeout, ..
        } => {
            h.attempt = Some(*attempt);
            h.error = Some(format!("{} timeout", timeout.as_str()));
        }
        EventKind::WorkflowFailed { reason, .. }
        | EventKind::WorkflowCancelled { reason }
        | EventKind::MapFailed { reason, .. } => {
            h.error = Some(reason.clone());
        }
        EventKind::ElementDispatched {
            step,
            index,
            attempt,
            ..
        } => {
            h.step = Some(format!("{}[{index}]", step_name(*step)));
            h.attempt = Some(*attempt);
        }
        EventKind::ElementSucceeded {
            step,
            index,
            attempt,
            worker,
            output,
            ..
        } => {
            h.step = Some(format!("{}[{index}]", step_name(*step)));
            h.attempt = Some(*attempt);
            h.worker = worker.as_deref().map(str::to_string);
            h.output = serde_json::from_str(output).ok();
        }
        EventKind::ElementFailed {
            step,
            index,
            attempt,
            error,
            worker,
            ..
        } => {
            h.step = Some(format!("{}[{index}]", step_name(*step)));
            h.attempt = Some(*attempt);
            h.worker = worker.as_deref().map(str::to_string);
            h.error = Some(format!("{}: {}", error.kind, error.message));
        }
        EventKind::ElementTimedOut {
            step,
            index,
            attempt,
            timeout,
            ..
        } => {
            h.step = Some(format!("{}[{index}]", step_name(*step)));
            h.attempt = Some(*attempt);
            h.error = Some(format!("{} timeout", timeout.as_str()));
        }
        EventKind::WorkflowReopened {
            mode: ReopenMode::RerunFrom(step),
            ..
        } => h.step = Some(step.clone()),
        EventKind::SignalReceived { name, id, payload } => {
            h.signal = Some(name.clone());
            h.signal_id = Some(id.clone());
            h.output = serde_json::from_str(payload).ok();
        }
        EventKind::WaitStarted { due_ms, .. } => h.due_at = Some(*due_ms),
        EventKind::WaitSucceeded { signal_id, .. } => h.signal_id = Some(signal_id.clone()),
        EventKind::WaitTimedOut { then, .. } => {
            h.error = Some(match then {
                crate::pipeline::OnTimeout::Fail => "wait timeout: the step failed".to_string(),
                crate::pipeline::OnTimeout::Skip => {
                    "wait timeout: the step was skipped".to_string()
                }
            });
        }
        EventKind::ChildStarted { child_id, .. } => h.child = Some(child_id.to_string()),
        EventKind::ChildFinished {
            child_id, outcome, ..
        } => {
            h.child = Some(child_id.to_string());
            match outcome {
                ChildOutcome::Succeeded { output } => h.output = serde_json::from_str(output).ok(),
                ChildOutcome::Failed { reason } | ChildOutcome::Cancelled { reason } => {
                    h.error = Some(format!("child {}: {reason}", outcome.as_str()))
                }
            }
        }
        _ => {}
    }
    h
}
