//! Pipeline definitions as stored by older builds: the same fields as
//! [`PipelineDef`] without the trailing ones added since. A stored
//! definition is decoded as the current type first and as these when that
//! fails (newest first), so workflows pinned to a definition stored by an
//! older build keep running.

use serde::{Deserialize, Serialize};

use super::{MapDef, PipelineDef, StepDef, WaitDef, WhenDef};

/// [`PipelineDef`] before steps could map: without `step_maps` and
/// `step_whens`.
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
            step_whens: Vec::new(),
            step_waits: Vec::new(),
            step_queue_timeouts: Vec::new(),
            in_progress_max: None,
            step_children: Vec::new(),
        }
    }
}

/// [`PipelineDef`] before steps could have conditions: without `step_whens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineDefV2 {
    pub name: String,
    pub version: u32,
    pub steps: Vec<StepDef>,
    pub workflow_timeout_ms: Option<u64>,
    pub step_maps: Vec<Option<MapDef>>,
}

impl From<PipelineDefV2> for PipelineDef {
    fn from(v: PipelineDefV2) -> Self {
        PipelineDef {
            name: v.name,
            version: v.version,
            steps: v.steps,
            workflow_timeout_ms: v.workflow_timeout_ms,
            step_maps: v.step_maps,
            step_whens: Vec::new(),
            step_waits: Vec::new(),
            step_queue_timeouts: Vec::new(),
            in_progress_max: None,
            step_children: Vec::new(),
        }
    }
}

/// [`PipelineDef`] before steps could wait for signals: without `step_waits`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineDefV3 {
    pub name: String,
    pub version: u32,
    pub steps: Vec<StepDef>,
    pub workflow_timeout_ms: Option<u64>,
    pub step_maps: Vec<Option<MapDef>>,
    pub step_whens: Vec<Option<WhenDef>>,
}

impl From<PipelineDefV3> for PipelineDef {
    fn from(v: PipelineDefV3) -> Self {
        PipelineDef {
            name: v.name,
            version: v.version,
            steps: v.steps,
            workflow_timeout_ms: v.workflow_timeout_ms,
            step_maps: v.step_maps,
            step_whens: v.step_whens,
            step_waits: Vec::new(),
            step_queue_timeouts: Vec::new(),
            in_progress_max: None,
            step_children: Vec::new(),
        }
    }
}

/// [`PipelineDef`] before steps could have queue timeouts and pipelines an
/// in-progress limit: without `step_queue_timeouts` and `in_progress_max`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineDefV4 {
    pub name: String,
    pub version: u32,
    pub steps: Vec<StepDef>,
    pub workflow_timeout_ms: Option<u64>,
    pub step_maps: Vec<Option<MapDef>>,
    pub step_whens: Vec<Option<WhenDef>>,
    pub step_waits: Vec<Option<WaitDef>>,
}

impl From<PipelineDefV4> for PipelineDef {
    fn from(v: PipelineDefV4) -> Self {
        PipelineDef {
            name: v.name,
            version: v.version,
            steps: v.steps,
            workflow_timeout_ms: v.workflow_timeout_ms,
            step_maps: v.step_maps,
            step_whens: v.step_whens,
            step_waits: v.step_waits,
            step_queue_timeouts: Vec::new(),
            in_progress_max: None,
            step_children: Vec::new(),
        }
    }
}

/// [`PipelineDef`] before steps could start child pipelines: without
/// `step_children`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineDefV5 {
    pub name: String,
    pub version: u32,
    pub steps: Vec<StepDef>,
    pub workflow_timeout_ms: Option<u64>,
    pub step_maps: Vec<Option<MapDef>>,
    pub step_whens: Vec<Option<WhenDef>>,
    pub step_waits: Vec<Option<WaitDef>>,
    pub step_queue_timeouts: Vec<Option<u64>>,
    pub in_progress_max: Option<u32>,
}

impl From<PipelineDefV5> for PipelineDef {
    fn from(v: PipelineDefV5) -> Self {
        PipelineDef {
            name: v.name,
            version: v.version,
            steps: v.steps,
            workflow_timeout_ms: v.workflow_timeout_ms,
            step_maps: v.step_maps,
            step_whens: v.step_whens,
            step_waits: v.step_waits,
            step_queue_timeouts: v.step_queue_timeouts,
            in_progress_max: v.in_progress_max,
            step_children: Vec::new(),
        }
    }
}

/// The encodings older builds wrote, newest first: what a stored definition
/// is read as when it does not decode as a [`PipelineDef`].
pub type OlderPipelineDefs = (
    PipelineDefV5,
    PipelineDefV4,
    PipelineDefV3,
    PipelineDefV2,
    PipelineDefV1,
);

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

/// Borrowed [`PipelineDefV2`] with the same encoding, for hashing.
#[derive(Serialize)]
pub(super) struct PipelineDefV2Ref<'a> {
    name: &'a str,
    version: u32,
    steps: &'a [StepDef],
    workflow_timeout_ms: Option<u64>,
    step_maps: &'a [Option<MapDef>],
}

impl<'a> PipelineDefV2Ref<'a> {
    pub(super) fn of(def: &'a PipelineDef) -> Self {
        PipelineDefV2Ref {
            name: &def.name,
            version: def.version,
            steps: &def.steps,
            workflow_timeout_ms: def.workflow_timeout_ms,
            step_maps: &def.step_maps,
        }
    }
}

/// Borrowed [`PipelineDefV3`] with the same encoding, for hashing.
#[derive(Serialize)]
pub(super) struct PipelineDefV3Ref<'a> {
    name: &'a str,
    version: u32,
    steps: &'a [StepDef],
    workflow_timeout_ms: Option<u64>,
    step_maps: &'a [Option<MapDef>],
    step_whens: &'a [Option<WhenDef>],
}

impl<'a> PipelineDefV3Ref<'a> {
    pub(super) fn of(def: &'a PipelineDef) -> Self {
        PipelineDefV3Ref {
            name: &def.name,
            version: def.version,
            steps: &def.steps,
            workflow_timeout_ms: def.workflow_timeout_ms,
            step_maps: &def.step_maps,
            step_whens: &def.step_whens,
        }
    }
}

/// Borrowed [`PipelineDefV4`] with the same encoding, for hashing.
#[derive(Serialize)]
pub(super) struct PipelineDefV4Ref<'a> {
    name: &'a str,
    version: u32,
    steps: &'a [StepDef],
    workflow_timeout_ms: Option<u64>,
    step_maps: &'a [Option<MapDef>],
    step_whens: &'a [Option<WhenDef>],
    step_waits: &'a [Option<WaitDef>],
}

impl<'a> PipelineDefV4Ref<'a> {
    pub(super) fn of(def: &'a PipelineDef) -> Self {
        PipelineDefV4Ref {
            name: &def.name,
            version: def.version,
            steps: &def.steps,
            workflow_timeout_ms: def.workflow_timeout_ms,
            step_maps: &def.step_maps,
            step_whens: &def.step_whens,
            step_waits: &def.step_waits,
        }
    }
}

/// Borrowed [`PipelineDefV5`] with the same encoding, for hashing.
#[derive(Serialize)]
pub(super) struct PipelineDefV5Ref<'a> {
    name: &'a str,
    version: u32,
    steps: &'a [StepDef],
    workflow_timeout_ms: Option<u64>,
    step_maps: &'a [Option<MapDef>],
    step_whens: &'a [Option<WhenDef>],
    step_waits: &'a [Option<WaitDef>],
    step_queue_timeouts: &'a [Option<u64>],
    in_progress_max: Option<u32>,
}

impl<'a> PipelineDefV5Ref<'a> {
    pub(super) fn of(def: &'a PipelineDef) -> Self {
        PipelineDefV5Ref {
            name: &def.name,
            version: def.version,
            steps: &def.steps,
            workflow_timeout_ms: def.workflow_timeout_ms,
            step_maps: &def.step_maps,
            step_whens: &def.step_whens,
            step_waits: &def.step_waits,
            step_queue_timeouts: &def.step_queue_timeouts,
            in_progress_max: def.in_progress_max,
        }
    }
}
