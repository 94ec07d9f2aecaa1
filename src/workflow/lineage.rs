//! Parents and children: a child step runs a whole workflow (its child)
//! whose id is derived from the parent's id, the step and the generation,
//! so a retry of the same generation never starts a second child and the
//! lineage is readable from the id alone.
//!
//! A child id is `<parent>~<step>~<generation>`. Step names are
//! `[a-z0-9_-]` and generations digits, so the last two `~`-separated
//! parts are always the step and the generation, whatever the parent's id
//! holds (a grandchild's parent is itself a child id). The engine refuses
//! `~` in the ids clients start, so no workflow a client starts is ever
//! taken for a child.

use serde::{Deserialize, Serialize};

use super::state::{StepStatus, WorkflowState};
use crate::pipeline::PipelineDef;

/// Separates the parts of a child id; refused in ids that clients start.
pub const CHILD_SEPARATOR: char = '~';

/// Longest workflow id, in bytes: of the ids clients start and of the
/// child ids derived from them.
pub const ID_MAX_BYTES: usize = 255;

/// How a child workflow ended, as its parent takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChildOutcome {
    /// The child completed; `output` is its result (see [`child_output`]).
    Succeeded { output: String },
    /// The child failed, for `reason`.
    Failed { reason: String },
    /// The child was cancelled, for `reason`.
    Cancelled { reason: String },
}

impl ChildOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            ChildOutcome::Succeeded { .. } => "succeeded",
            ChildOutcome::Failed { .. } => "failed",
            ChildOutcome::Cancelled { .. } => "cancelled",
        }
    }
}

/// What a child step asks the shell to start, once its `ChildStarted` is
/// durable: starting an id that exists is a no-op, so the same spec may be
/// performed again after a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildSpec {
    pub child_id: String,
    pub parent_id: String,
    /// Name of the parent's step.
    pub step: String,
    pub pipeline: String,
    /// `None`: the current version of `pipeline` when the child starts.
    pub version: Option<u32>,
    /// The child's workflow input: what a task of the step would get,
    /// `{"workflow": <parent input>, "deps": {...}}`.
    pub input: String,
}

/// What a parent passes on to a running child.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChildSignal {
    Cancel { reason: String },
    Pause,
    Resume,
}

/// One child-step effect: an input to a workflow other than the one whose
/// transition asked for it (the engine's lineage port performs it, a
/// cluster node sends it to the node serving its target, the simulator
/// delivers it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LineageEffect {
    /// Start the child `spec` names.
    Start { spec: Box<ChildSpec> },
    /// A parent's cancel, pause or resume for its child.
    Signal {
        child_id: String,
        signal: ChildSignal,
    },
    /// A child's end, for its parent.
    Finished {
        parent_id: String,
        child_id: String,
        outcome: ChildOutcome,
    },
}

impl LineageEffect {
    /// The workflow the effect is an input to.
    pub fn target(&self) -> &str {
        match self {
            LineageEffect::Start { spec } => &spec.child_id,
            LineageEffect::Signal { child_id, .. } => child_id,
            LineageEffect::Finished { parent_id, .. } => parent_id,
        }
    }
}

/// The id of the child that step `step` of `parent` starts in `generation`.
pub fn child_id(parent: &str, step: &str, generation: u32) -> String {
    format!("{parent}{CHILD_SEPARATOR}{step}{CHILD_SEPARATOR}{generation}")
}

/// Where a child id comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentLink<'a> {
    pub parent: &'a str,
    pub step: &'a str,
    pub generation: u32,
}

/// The parent, step and generation a child id was derived from; `None` for
/// an id that is not a child id.
pub fn parent_of(id: &str) -> Option<ParentLink<'_>> {
    let mut parts = id.rsplitn(3, CHILD_SEPARATOR);
    let generation = parts.next()?;
    let step = parts.next()?;
    let parent = parts.next()?;
    let step_ok = !step.is_empty()
        && step
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    let generation_ok = !generation.is_empty() && generation.bytes().all(|b| b.is_ascii_digit());
    if parent.is_empty() || !step_ok || !generation_ok {
        return None;
    }
    Some(ParentLink {
        parent,
        step,
        generation: generation.parse().ok()?,
    })
}

/// How many workflows the chain ending at `id` holds: 1 for a workflow
/// without a parent, 2 for its child, and so on.
pub fn depth(id: &str) -> u32 {
    let mut depth = 1;
    let mut at = id;
    while let Some(link) = parent_of(at) {
        depth += 1;
        at = link.parent;
    }
    depth
}

/// The result a completed child gives its parent's step: an object of the
/// outputs of its final steps (those no other step needs), by step name,
/// `null` for one that was skipped.
pub fn child_output(state: &WorkflowState, def: &PipelineDef) -> String {
    let mut needed = vec![false; def.steps.len()];
    for s in &def.steps {
        for &d in &s.needs {
            if let Some(n) = needed.get_mut(usize::from(d)) {
                *n = true;
            }
        }
    }
    let mut out = String::from("{");
    let mut first = true;
    for (i, s) in def.steps.iter().enumerate() {
        if needed[i] {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        // Step names are validated to `[a-z0-9_-]`: no escaping needed.
        out.push('"');
        out.push_str(&s.name);
        out.push_str("\":");
        let output = state
            .steps
            .get(i)
            .filter(|st| st.status == StepStatus::Succeeded)
            .and_then(|st| st.output.as_deref())
            .unwrap_or("null");
        out.push_str(output);
    }
    out.push('}');
    out
}

/// How a terminal child ended, as its parent takes it; `None` while it runs.
pub fn outcome_of(state: &WorkflowState, def: &PipelineDef) -> Option<ChildOutcome> {
    use super::state::Status;
    let reason = || state.reason.clone().unwrap_or_default();
    match state.status {
        Status::Completed => Some(ChildOutcome::Succeeded {
            output: child_output(state, def),
        }),
        Status::Failed => Some(ChildOutcome::Failed { reason: reason() }),
        Status::Cancelled => Some(ChildOutcome::Cancelled { reason: reason() }),
        Status::Running | Status::Paused => None,
    }
}
