//! Pipeline definitions as stored before steps could map: the same fields
//! as [`PipelineDef`] without the last one. A stored definition is decoded
//! as the current type first and as this one when that fails, so workflows
//! pinned to a definition stored by an older build keep running.

use serde::{Deserialize, Serialize};

use super::{PipelineDef, StepDef};

/// [`PipelineDef`] without `step_maps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineDefV1 {
    pub name: String,
    pub version: u32,
    pub steps: Vec<StepDef>,
    pub workflow_timeout_ms: Option<u64>,
}

impl From<PipelineDefV1> for PipelineDef {
    fn from(v: PipelineDefV1) -> Self {
        PipelineDef {
            name: v.name,
            version: v.version,
            steps: v.steps,
            workflow_timeout_ms: v.workflow_timeout_ms,
            step_maps: Vec::new(),
        }
    }
}

/// Borrowed [`PipelineDefV1`] with the same encoding, for hashing.
#[derive(Serialize)]
pub(super) struct PipelineDefV1Ref<'a> {
    name: &'a str,
    version: u32,
    steps: &'a [StepDef],
    workflow_timeout_ms: Option<u64>,
}

impl<'a> PipelineDefV1Ref<'a> {
    pub(super) fn of(def: &'a PipelineDef) -> Self {
        PipelineDefV1Ref {
            name: &def.name,
            version: def.version,
            steps: &def.steps,
            workflow_timeout_ms: def.workflow_timeout_ms,
        }
    }
}
