//! A pipeline file as written, before validation: every field is optional,
//! so that absence can be told apart from a value (for per-field merging and
//! for precise "missing ..." messages), and unknown fields are rejected.

use serde::Deserialize;

use super::map::RawMap;
use super::wait::RawWait;
use super::{RetryPolicy, StepTimeouts};

// Every field is optional here so that absence can be told apart from a value
// (for per-field merging and for precise "missing ..." messages).

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHeader {
    pub(super) name: Option<String>,
    pub(super) version: Option<u32>,
    pub(super) workflow_timeout: Option<String>,
    /// `PipelineDef::in_progress_max`.
    pub(super) in_progress_max: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefaults {
    #[serde(default)]
    pub(super) retry: RawRetry,
    #[serde(default)]
    pub(super) timeouts: RawTimeouts,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetry {
    pub(super) max_attempts: Option<u32>,
    pub(super) initial_backoff: Option<String>,
    pub(super) backoff_coefficient: Option<f64>,
    pub(super) max_backoff: Option<String>,
    pub(super) jitter: Option<f64>,
    pub(super) non_retryable: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTimeouts {
    pub(super) schedule_to_start: Option<String>,
    pub(super) start_to_close: Option<String>,
    pub(super) heartbeat: Option<String>,
    /// Longest wait in the admission gate (`PipelineDef::step_queue_timeouts`).
    pub(super) queue_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    pub(super) name: Option<String>,
    pub(super) task_type: Option<String>,
    #[serde(default)]
    pub(super) needs: Vec<String>,
    #[serde(default)]
    pub(super) retry: RawRetry,
    #[serde(default)]
    pub(super) timeouts: RawTimeouts,
    pub(super) map: Option<RawMap>,
    pub(super) when: Option<String>,
    pub(super) wait: Option<RawWait>,
    /// A child step: the pipeline whose workflow it runs.
    pub(super) pipeline: Option<String>,
    pub(super) pipeline_version: Option<u32>,
}

/// Rust names of the raw structs, as serde puts them in type errors.
pub(super) const RAW_TYPE_NAMES: [&str; 7] = [
    "RawMap",
    "RawWait",
    "RawHeader",
    "RawDefaults",
    "RawRetry",
    "RawTimeouts",
    "RawStep",
];

/// Retry policy used where neither the file's `[defaults.retry]` nor the step
/// says otherwise.
pub(super) fn builtin_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        initial_backoff_ms: 1_000,
        backoff_coefficient: 2.0,
        max_backoff_ms: 60_000,
        jitter: 0.2,
        non_retryable: Vec::new(),
    }
}

/// No deadline of any kind unless the file asks for one.
pub(super) fn builtin_timeouts() -> StepTimeouts {
    StepTimeouts {
        schedule_to_start_ms: None,
        start_to_close_ms: None,
        heartbeat_ms: None,
    }
}
