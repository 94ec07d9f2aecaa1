//! Pipeline definitions: a named, versioned DAG of steps.
//!
//! The types here are plain data consumed by the pure workflow core. Loading
//! `config/pipelines/*.toml` lives in [`load`], the validation it runs in
//! `validate` (over the file's `raw` form), its errors in [`error`] and the DAG
//! views (levels, topological order, rendering) in `graph`. Durations in the
//! files follow the crate's one grammar ([`crate::durations`]).

use serde::{Deserialize, Serialize};

pub use child::ChildDef;
pub use map::MapDef;
pub use wait::{OnTimeout, WaitDef};
pub use when::WhenDef;

pub mod child;
#[cfg(test)]
mod child_tests;
pub mod error;
mod graph;
pub mod load;
pub mod map;
#[cfg(test)]
mod map_tests;
mod raw;
pub mod stored;
#[cfg(test)]
mod tests;
mod validate;
pub mod wait;
#[cfg(test)]
mod wait_tests;
pub mod when;
#[cfg(test)]
mod when_tests;

/// A validated pipeline: every `needs` index points at an earlier-declared or
/// later-declared step of the same pipeline, and the graph is acyclic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineDef {
    /// Pipeline name, e.g. `video`; also the first token of event subjects.
    pub name: String,
    /// Version chosen by the author; a workflow keeps the version it started with.
    pub version: u32,
    /// Steps in declaration order; `StepDef::needs` indexes into this vector.
    pub steps: Vec<StepDef>,
    /// Whole-workflow deadline, measured from start (and from each reopen).
    pub workflow_timeout_ms: Option<u64>,
    /// The `map` of each step, indexed like `steps`; empty when no step maps.
    /// Definitions stored before it existed decode through
    /// [`stored::PipelineDefV1`].
    pub step_maps: Vec<Option<MapDef>>,
    /// The `when` of each step, indexed like `steps`; empty when no step
    /// has one. Definitions stored before it existed decode through
    /// [`stored::PipelineDefV2`].
    pub step_whens: Vec<Option<WhenDef>>,
    /// The `wait` of each step, indexed like `steps`; empty when no step
    /// waits for a signal. Definitions stored before it existed decode
    /// through [`stored::PipelineDefV3`].
    pub step_waits: Vec<Option<WaitDef>>,
    /// The `queue_timeout` of each step (ms), indexed like `steps`: the
    /// longest an attempt may wait in the admission gate before it ends as
    /// a `queue_timeout`. Empty when no step has one. Definitions stored
    /// before it existed decode through [`stored::PipelineDefV4`].
    pub step_queue_timeouts: Vec<Option<u64>>,
    /// `[pipeline] in_progress_max`: most bulk-accepted or recovered
    /// workflows of this pipeline in progress at once, under the engine's
    /// `in_progress_max` (docs/capacity.md); the current version's value
    /// applies to the pipeline's name. Added with `step_queue_timeouts`.
    pub in_progress_max: Option<u32>,
    /// The child pipeline of each step, indexed like `steps`; empty when no
    /// step starts one. Last field: definitions stored before it existed
    /// decode through [`stored::PipelineDefV5`].
    pub step_children: Vec<Option<ChildDef>>,
}

/// One node of the DAG.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepDef {
    /// Step name, unique within the pipeline.
    pub name: String,
    /// Task type workers subscribe to; defaults to the step name. Empty for
    /// a wait step, which dispatches no task.
    pub task_type: String,
    /// Indices of the steps this one depends on (sorted, deduplicated).
    pub needs: Vec<u16>,
    /// Retry policy after defaults and overrides are merged.
    pub retry: RetryPolicy,
    /// Timeouts after defaults and overrides are merged.
    pub timeouts: StepTimeouts,
}

/// How failed attempts of a step are retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts per generation, the first one included (>= 1).
    pub max_attempts: u32,
    /// Delay before the second attempt.
    pub initial_backoff_ms: u64,
    /// Multiplier applied per further attempt (>= 1.0).
    pub backoff_coefficient: f64,
    /// Cap on any single delay.
    pub max_backoff_ms: u64,
    /// Fraction in [0, 1]: the delay is spread uniformly over
    /// `delay * (1 - jitter) ..= delay * (1 + jitter)`, capped at `max_backoff_ms`.
    pub jitter: f64,
    /// Error kinds that fail the step at once, whatever `retryable` says.
    pub non_retryable: Vec<String>,
}

/// Per-attempt deadlines; `None` means no deadline of that kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepTimeouts {
    /// From dispatch until a worker reports it started the task.
    pub schedule_to_start_ms: Option<u64>,
    /// From start until the result.
    pub start_to_close_ms: Option<u64>,
    /// Longest silence between heartbeats of a started task.
    pub heartbeat_ms: Option<u64>,
}

/// Bounds on what a pipeline file may declare.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineLimits {
    pub steps_max: usize,
    pub needs_max: usize,
    pub name_len_max: usize,
    pub max_attempts_max: u32,
    /// Longest `when` text, in bytes.
    pub when_len_max: usize,
    /// Macros over lists (`all`, `exists`, ...) one `when` may use.
    pub when_macros_max: usize,
    /// JSON values one evaluation of a `when` may be given.
    pub when_values_max: u32,
    /// Most workflows a chain of parents and children may nest (the
    /// outermost parent counts 1); stored with each child step.
    pub child_depth_max: u32,
}

impl Default for PipelineLimits {
    fn default() -> Self {
        Self {
            steps_max: 256,
            needs_max: 64,
            name_len_max: 64,
            max_attempts_max: 1000,
            when_len_max: when::DEFAULT_WHEN_LEN_MAX,
            when_macros_max: when::DEFAULT_WHEN_MACROS_MAX,
            when_values_max: when::DEFAULT_WHEN_VALUES_MAX,
            child_depth_max: child::DEFAULT_CHILD_DEPTH_MAX,
        }
    }
}

/// Every task type the given pipelines use, sorted and deduplicated: what a
/// worker pool serving all of them subscribes to. Child steps send no task.
pub fn task_types(defs: &[PipelineDef]) -> Vec<String> {
    let mut t: Vec<String> = defs
        .iter()
        .flat_map(|d| {
            d.steps
                .iter()
                .enumerate()
                .filter(|(i, _)| d.wait_of(*i).is_none())
                .filter(|(i, _)| d.child_of(*i).is_none())
                .map(|(_, s)| s.task_type.clone())
        })
        .collect();
    t.sort();
    t.dedup();
    t
}

impl PipelineDef {
    /// The `map` of step `i`, if it fans out.
    pub fn map_of(&self, i: usize) -> Option<&MapDef> {
        self.step_maps.get(i).and_then(Option::as_ref)
    }

    /// The `queue_timeout` of step `i` (ms), if it has one.
    pub fn queue_timeout_of(&self, i: usize) -> Option<u64> {
        self.step_queue_timeouts.get(i).copied().flatten()
    }

    /// The child pipeline step `i` starts, if it is a child step.
    pub fn child_of(&self, i: usize) -> Option<&ChildDef> {
        self.step_children.get(i).and_then(Option::as_ref)
    }

    /// The `when` of step `i`, if it has a condition.
    pub fn when_of(&self, i: usize) -> Option<&WhenDef> {
        self.step_whens.get(i).and_then(Option::as_ref)
    }

    /// The `wait` of step `i`, if a signal completes it.
    pub fn wait_of(&self, i: usize) -> Option<&WaitDef> {
        self.step_waits.get(i).and_then(Option::as_ref)
    }

    /// Whether some step waits for the signal called `name`.
    pub fn waits_for(&self, name: &str) -> bool {
        self.step_waits.iter().flatten().any(|w| w.signal == name)
    }

    /// Index of the step called `name`.
    pub fn step_index(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.name == name)
    }

    /// `true` for `step` and for every step that depends on it, directly or
    /// transitively: the set a "rerun from step" runs again.
    pub fn downstream_closure(&self, step: usize) -> Vec<bool> {
        let mut marked = vec![false; self.steps.len()];
        if step >= marked.len() {
            return marked;
        }
        marked[step] = true;
        // The graph is acyclic, so a fixpoint is reached in at most `len` passes;
        // pipelines are small (bounded by `steps_max`), so the quadratic walk is fine.
        loop {
            let mut changed = false;
            for (i, s) in self.steps.iter().enumerate() {
                if !marked[i] && s.needs.iter().any(|&d| marked[d as usize]) {
                    marked[i] = true;
                    changed = true;
                }
            }
            if !changed {
                return marked;
            }
        }
    }

    /// A stable content hash of the definition (FNV-1a over its postcard
    /// encoding), used to store one copy of each distinct definition.
    ///
    /// A definition without child steps hashes its encoding from before
    /// child steps existed, one without queue timeouts and in-progress limit
    /// either its encoding from before those, one without waits either its
    /// encoding from before waits, one without conditions either its
    /// encoding from before conditions, and one without maps either its
    /// encoding from before maps, so pipelines registered by older builds
    /// keep their hash (and stored copy).
    pub fn content_hash(&self) -> u64 {
        let no_children = self.step_children.iter().all(Option::is_none);
        let no_capacity = no_children
            && self.step_queue_timeouts.iter().all(Option::is_none)
            && self.in_progress_max.is_none();
        let no_waits = no_capacity && self.step_waits.iter().all(Option::is_none);
        let no_whens = no_waits && self.step_whens.iter().all(Option::is_none);
        let bytes = if no_whens && self.step_maps.iter().all(Option::is_none) {
            postcard::to_allocvec(&stored::PipelineDefV1Ref::of(self)).unwrap_or_default()
        } else if no_whens {
            postcard::to_allocvec(&stored::PipelineDefV2Ref::of(self)).unwrap_or_default()
        } else if no_waits {
            postcard::to_allocvec(&stored::PipelineDefV3Ref::of(self)).unwrap_or_default()
        } else if no_capacity {
            postcard::to_allocvec(&stored::PipelineDefV4Ref::of(self)).unwrap_or_default()
        } else if no_children {
            postcard::to_allocvec(&stored::PipelineDefV5Ref::of(self)).unwrap_or_default()
        } else {
            postcard::to_allocvec(self).unwrap_or_default()
        };
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    }
}
