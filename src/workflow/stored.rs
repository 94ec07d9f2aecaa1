//! Workflow snapshots as written by older builds: the same fields as
//! [`WorkflowState`] without the trailing ones added since. A snapshot is
//! decoded as the current type first and as these when that fails (newest
//! first), so workflows in flight across an upgrade keep their state.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::map::MapRun;
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
            signals: Vec::new(),
            waits: BTreeMap::new(),
        }
    }
}

/// [`WorkflowState`] before wait steps: without `signals` and `waits`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowStateV2 {
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
    pub maps: BTreeMap<u16, MapRun>,
}

impl From<WorkflowStateV2> for WorkflowState {
    fn from(v: WorkflowStateV2) -> Self {
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
            maps: v.maps,
            signals: Vec::new(),
            waits: BTreeMap::new(),
        }
    }
}

/// The snapshot encodings older builds wrote, newest first.
pub type OlderWorkflowStates = (WorkflowStateV2, WorkflowStateV1);
