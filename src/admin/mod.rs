//! The admin surface over NATS request/reply (`<prefix>.admin.<verb>`), in a
//! queue group so several listeners share the load. JSON in, JSON out, `"v": 1`;
//! version 1 only grows additively (new optional fields, new verbs).
//!
//! Verbs: `start`, `describe`, `history`, `list`, `cancel`, `pause`, `resume`,
//! `retry`, `rerun`, and the durable batch jobs `batch.create`,
//! `batch.status`, `batch.pause`, `batch.resume`, `batch.list` (run by [`batch`]),
//! `backup` (a checkpoint of the live store, [`crate::backup`]),
//! `pipelines.reload` (the pipeline directory read again), `capacity`
//! (capacity limits, usage and queues) and `signal` (a signal for a
//! workflow's wait steps).
//! Every error reply is `{"v":1,"error":"...","code":"..."}`.
//!
//! | file | owns |
//! | --- | --- |
//! | `serve` | the subscriptions, request decoding, dispatch to a verb |
//! | `route` | a cluster node's forwarding of requests to a partition's owner |
//! | `intake` | the bounds of intake (`unavailable` answers), the start-size check |
//! | `wire` | the requests and replies of the workflow verbs |
//! | `error` | error codes, the error reply, reply encoding |
//! | `workflow` | `start`, `describe`, the operator inputs, `rerun` |
//! | `history` | `history` and the view of one journaled event |
//! | `list` | `list` and the status-index scan batch jobs share |
//! | `list_cluster` | `list` across the partitions of a cluster's nodes |
//! | `backup` | `backup` |
//! | `pipelines` | `pipelines.reload` |
//! | `capacity` | `capacity` |
//! | `signal` | `signal` |
//! | `local` | the verbs in-process, for the web console |
//! | `lineage_remote` | child-step effects sent to another cluster node |
//! | [`batch`] | durable, rate-limited batch jobs |

mod backup;
pub mod batch;
mod capacity;
mod error;
mod history;
mod intake;
mod lineage_remote;
mod list;
mod list_cluster;
mod local;
mod pipelines;
mod route;
mod serve;
mod signal;
mod wire;
mod workflow;

pub use backup::{BackupReply, BackupRequest};
pub use batch::{
    BatchCreateRequest, BatchFailure, BatchJobRequest, BatchJobView, BatchListReply,
    BatchListRequest, BatchReply,
};
pub use capacity::{CapacityReply, CapacityRequest, PipelineInProgress};
pub use error::{code, AdminError, ErrorReply};
pub(crate) use history::history_event;
pub use intake::IntakeLimits;
pub use lineage_remote::{LineageReply, LineageRequest, NatsLineage};
pub use list::{scan_status_index, ScanCursor, Selection};
pub use local::{LocalAdmin, StepShape, WorkflowShape};
pub use pipelines::{
    log_reload, PipelineVersionView, PipelinesReloadReply, PipelinesReloadRequest,
    RemovedVersionView,
};
pub use route::{Routing, ROUTED_VERBS};
#[cfg(test)]
pub(crate) use serve::{decode_request, HasVersion};
pub use serve::{serve, serve_with};
pub use signal::{SignalReply, SignalRequest};
pub use wire::{
    CancelRequest, DescribeRequest, Filter, HistoryEvent, HistoryReply, HistoryRequest, ListReply,
    ListRequest, ListedWorkflow, RerunRequest, StartRequest, StepReply, WorkflowReply,
};
pub use workflow::control;

/// Every admin verb this build serves.
pub const VERBS: [&str; 18] = [
    "start",
    "describe",
    "history",
    "list",
    "cancel",
    "pause",
    "resume",
    "retry",
    "rerun",
    "batch.create",
    "batch.status",
    "batch.pause",
    "batch.resume",
    "batch.list",
    "backup",
    "pipelines.reload",
    "capacity",
    "signal",
];

/// Most workflows in one `list` reply.
pub const LIST_PAGE_MAX: u32 = 1_000;
/// `list` page size when the request names none.
pub const LIST_PAGE_DEFAULT: u32 = 100;
/// Status-index entries one `list` request examines at most (filters that
/// match little return a short page with a cursor rather than scan forever).
pub const LIST_SCAN_MAX: usize = 20_000;
/// Most events in one `history` reply.
pub const HISTORY_PAGE_MAX: u32 = 1_000;
