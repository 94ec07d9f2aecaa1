//! Durable batch jobs: `cancel`, `retry` or `rerun` over every workflow a
//! filter matched when the job was created.
//!
//! * **Frozen members.** At creation the filter is evaluated once against the
//!   status index and the matching workflows are stored with the job (chunks
//!   of [`MEMBERS_PER_CHUNK`]), each with the status it had and when that
//!   status was reached. Workflows that match later are not added.
//! * **Cursor.** The job record holds a cursor: items before it are done.
//!   Progress (cursor, counts, failed items) is committed after each tick's
//!   items, and on pause. A crash may lose the last tick's progress, so those
//!   items are looked at again after a restart, but nothing is done twice:
//!   an item whose workflow is no longer in the frozen status (or reached it
//!   again at another time) is *skipped*, and cancel skips terminal workflows.
//! * **Pacing.** One runner task (inside `admin::serve`) runs every running
//!   job with its own token bucket (`rate` items/s, burst `max(1, rate/10)`).
//! * **Restart.** At start-up the runner resumes every job stored as running.
//!
//! | file | owns |
//! | --- | --- |
//! | `wire` | the requests and replies of the `batch.*` verbs |
//! | `handle` | creating jobs; status, pause and resume requests |
//! | `runner` | the runner task: pacing, items, progress, retention |

mod handle;
mod runner;
mod wire;

use serde::{Deserialize, Serialize};

pub use handle::{runner, BatchHandle};
pub use wire::{
    BatchCreateRequest, BatchFailure, BatchJobRequest, BatchJobView, BatchListReply,
    BatchListRequest, BatchReply,
};

use crate::admin::Filter;

/// Items per second when a job names no rate.
pub const RATE_DEFAULT: f64 = 50.0;
/// Highest accepted rate.
pub const RATE_MAX: f64 = 10_000.0;
/// Most workflows one job may cover.
pub const MEMBERS_MAX: usize = 1_000_000;
/// Members per stored chunk of a job's member list.
pub const MEMBERS_PER_CHUNK: usize = 1_000;
/// Failed items returned by `batch.status`.
pub const FAILURES_SHOWN: usize = 100;
/// Workflows returned by a dry run.
pub const SAMPLE: usize = 10;
/// Most jobs one `batch.list` reply holds.
pub const JOBS_LISTED_MAX: u32 = 1_000;
/// Job records read at start-up (to find the running ones).
pub const JOBS_MAX: usize = 100_000;

/// What a job does to each member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Action {
    Cancel { reason: String },
    Retry,
    Rerun { from_step: String },
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Cancel { .. } => "cancel",
            Action::Retry => "retry",
            Action::Rerun { .. } => "rerun",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    Running,
    Paused,
    Completed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Paused => "paused",
            JobState::Completed => "completed",
        }
    }
}

/// The stored record of one job (table `B`). Postcard: append fields only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub action: Action,
    pub status_filter: Option<String>,
    pub pipeline_filter: Option<String>,
    pub since_ms: Option<u64>,
    pub rate: f64,
    pub total: u64,
    /// Members before this position are done.
    pub cursor: u64,
    pub succeeded: u64,
    pub skipped: u64,
    pub failed: u64,
    pub state: JobState,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

impl JobRecord {
    pub fn view(&self) -> BatchJobView {
        BatchJobView {
            id: self.id.clone(),
            action: self.action.name().to_string(),
            from_step: match &self.action {
                Action::Rerun { from_step } => Some(from_step.clone()),
                _ => None,
            },
            filter: Filter {
                status: self.status_filter.clone(),
                pipeline: self.pipeline_filter.clone(),
                since_ms: self.since_ms,
                ..Filter::default()
            },
            state: self.state.as_str().to_string(),
            rate: self.rate,
            total: self.total,
            done: self.cursor,
            succeeded: self.succeeded,
            skipped: self.skipped,
            failed: self.failed,
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
        }
    }
}

/// One frozen member: the workflow and the status it had when the job was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    pub status: u8,
    /// When it reached that status (its status-index timestamp).
    pub changed_at_ms: u64,
}
