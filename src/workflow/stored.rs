//! Workflow snapshots as written before map steps existed: the same fields
//! as [`WorkflowState`] without the last one. A snapshot is decoded as the
//! current type first and as this one when that fails, so workflows in
//! flight across an upgrade keep their state.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::state::{PipelineRef, Status, StepState, WorkflowState};

/// [`WorkflowState`] without `maps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowStateV1 {
    pub id: String,
    pub pipeline: PipelineRef,
    pub input: Arc<str>,
    pub status: Status,
    pub generation: u32,
    pub steps: Vec<StepState>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    pub deadline_ms: Option<u64>,
    pub reason: Option<String>,
    pub next_seq: u64,
}

impl From<WorkflowStateV1> for WorkflowState {
    fn from(v: WorkflowStateV1) -> Self {
        WorkflowState {
            id: v.id,
            pipeline: v.pipeline,
            input: v.input,
            status: v.status,
            generation: v.generation,
            steps: v.steps,
            created_at_ms: v.created_at_ms,
            updated_at_ms: v.updated_at_ms,
            finished_at_ms: v.finished_at_ms,
            deadline_ms: v.deadline_ms,
            reason: v.reason,
            next_seq: v.next_seq,
            maps: Default::default(),
        }
    }
}
