//! `signal`: sends a named signal (with a JSON payload) to a workflow, for
//! its wait steps. Idempotent by the sender's `signal_id`: a second request
//! with the same id is answered `duplicate` and journals nothing.
//!
//! Answers: `accepted` (journaled; `consumed_by` names the wait step it
//! completed, if one was waiting) and `duplicate` are replies; an unknown
//! workflow (`unknown_workflow`), a terminal one (`workflow_terminal`), a
//! bad request (`bad_request`: no step of the workflow's pipeline waits for
//! the name, payload or id over its limit) and too many unconsumed signals
//! (`unavailable`) are errors. Every answer is counted in
//! `narralytica_signals_total{result}`.

use serde::{Deserialize, Serialize};

use super::workflow::unknown;
use super::{code, AdminError};
use crate::engine::Engine;
use crate::protocol::VERSION;
use crate::workflow::{IgnoreReason, Input, Outcome};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignalRequest {
    pub v: u32,
    /// The workflow.
    pub id: String,
    /// The signal's name, as a wait step of the pipeline declares it.
    pub name: String,
    /// The sender's idempotency key: unique per workflow.
    pub signal_id: String,
    /// Any JSON; the output of the wait step that consumes the signal.
    /// Absent: `{}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SignalReply {
    pub v: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal_id: Option<String>,
    /// `accepted` or `duplicate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// The wait step the signal completed, when one consumed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumed_by: Option<String>,
    /// The workflow's status after the signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// Serves one `signal` request, counting its answer.
pub(super) async fn signal(r: SignalRequest, engine: &Engine) -> Result<SignalReply, AdminError> {
    let answer = send(r, engine).await;
    let result = match &answer {
        Ok(reply) => reply.result.as_deref().unwrap_or("accepted"),
        Err(e) if e.code == code::UNKNOWN_WORKFLOW => "unknown_workflow",
        Err(e) if e.code == code::WORKFLOW_TERMINAL => "workflow_terminal",
        Err(e) if e.code == code::UNAVAILABLE => "over_limit",
        Err(_) => "invalid",
    };
    engine.metrics().signal(result);
    answer
}

async fn send(r: SignalRequest, engine: &Engine) -> Result<SignalReply, AdminError> {
    let limits = engine.ctx().config.signals;
    if r.signal_id.is_empty() || r.signal_id.len() > limits.id_len_max {
        return Err(AdminError::bad(format!(
            "signal_id must be 1 to {} bytes long, got {}",
            limits.id_len_max,
            r.signal_id.len()
        )));
    }
    let payload = match &r.payload {
        Some(v) => v.to_string(),
        None => "{}".to_string(),
    };
    if payload.len() > limits.payload_bytes_max {
        return Err(AdminError::bad(format!(
            "signal payload of {} bytes exceeds engine.signal_payload_bytes_max ({})",
            payload.len(),
            limits.payload_bytes_max
        )));
    }
    let wf = engine
        .describe(&r.id)
        .await?
        .ok_or_else(|| unknown(&r.id))?;
    let def = engine
        .ctx()
        .pipelines
        .get(&wf.pipeline)
        .map_err(|e| AdminError::new(code::UNAVAILABLE, e))?;
    if !def.waits_for(&r.name) {
        let mut names: Vec<&str> = def
            .step_waits
            .iter()
            .flatten()
            .map(|w| w.signal.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        let waits = if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        };
        return Err(AdminError::bad(format!(
            "pipeline {} v{} has no wait step for signal {:?} (signals it waits for: {waits})",
            def.name, def.version, r.name
        )));
    }
    let input = Input::Signal {
        name: r.name.clone(),
        id: r.signal_id.clone(),
        payload,
        pending_max: limits.pending_max,
    };
    let result = match engine.send(&r.id, input).await? {
        Outcome::Applied => "accepted",
        Outcome::Ignored(IgnoreReason::Duplicate) => "duplicate",
        Outcome::Ignored(IgnoreReason::WorkflowTerminal) => {
            return Err(AdminError::new(
                code::WORKFLOW_TERMINAL,
                format!(
                    "workflow {} is already terminal (completed, failed or cancelled); a signal applies to a running or paused workflow",
                    r.id
                ),
            ))
        }
        Outcome::Ignored(other) => {
            return Err(AdminError::new(
                code::ILLEGAL_TRANSITION,
                format!("ignored: {}", other.as_str()),
            ))
        }
        Outcome::Rejected(m) => return Err(AdminError::new(code::UNAVAILABLE, m)),
    };
    let after = engine
        .describe(&r.id)
        .await?
        .ok_or_else(|| unknown(&r.id))?;
    let consumed_by = after
        .signals
        .iter()
        .find(|s| s.id == r.signal_id)
        .and_then(|s| s.consumed_by)
        .and_then(|(step, _)| def.steps.get(usize::from(step)))
        .map(|s| s.name.clone());
    Ok(SignalReply {
        v: VERSION,
        id: Some(r.id),
        name: Some(r.name),
        signal_id: Some(r.signal_id),
        result: Some(result.to_string()),
        consumed_by,
        status: Some(after.status.to_string()),
        ..SignalReply::default()
    })
}
