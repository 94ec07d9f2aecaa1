//! The requests and replies of the `batch.*` admin verbs.

use serde::{Deserialize, Serialize};

#[allow(unused_imports)] // referenced by the doc links below
use super::{FAILURES_SHOWN, RATE_DEFAULT, RATE_MAX};
use crate::admin::{Filter, ListedWorkflow};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchCreateRequest {
    pub v: u32,
    /// `cancel | retry | rerun`.
    pub action: String,
    pub filter: Filter,
    /// Required for `rerun`.
    #[serde(default)]
    pub from_step: Option<String>,
    /// Cancel reason (default `"batch <job>"`).
    #[serde(default)]
    pub reason: Option<String>,
    /// Items per second; default [`batch::RATE_DEFAULT`], at most [`batch::RATE_MAX`].
    #[serde(default)]
    pub rate: Option<f64>,
    /// Count and sample only; nothing is stored or changed.
    #[serde(default)]
    pub dry_run: bool,
}

/// `batch.list`: the most recent jobs first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchListRequest {
    pub v: u32,
    /// Jobs per reply, at most [`super::JOBS_LISTED_MAX`] (the default).
    #[serde(default)]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct BatchListReply {
    pub v: u32,
    /// Newest first (by creation).
    #[serde(default)]
    pub jobs: Vec<BatchJobView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// `batch.status`, `batch.pause`, `batch.resume`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchJobRequest {
    pub v: u32,
    pub job: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BatchJobView {
    pub id: String,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_step: Option<String>,
    pub filter: Filter,
    /// `running | paused | completed`.
    pub state: String,
    pub rate: f64,
    pub total: u64,
    /// Items handled so far (`succeeded + skipped + failed`).
    pub done: u64,
    pub succeeded: u64,
    /// Items whose workflow had changed since the job was created (nothing to do).
    pub skipped: u64,
    pub failed: u64,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BatchFailure {
    pub id: String,
    pub error: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct BatchReply {
    pub v: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<BatchJobView>,
    /// Dry run: how many workflows the filter matches now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Dry run: the first few of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sample: Vec<ListedWorkflow>,
    /// `batch.status`: the first [`batch::FAILURES_SHOWN`] failed items.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<BatchFailure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}
