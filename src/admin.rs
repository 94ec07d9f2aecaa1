//! The admin surface over NATS request/reply (`<prefix>.admin.<verb>`), in a
//! queue group so several listeners share the load. JSON in, JSON out, `"v": 1`;
//! version 1 only grows additively (new optional fields, new verbs).
//!
//! Verbs: `start`, `describe`, `history`, `list`, `cancel`, `pause`, `resume`,
//! `retry`, `rerun`, and the durable batch jobs `batch.create`,
//! `batch.status`, `batch.pause`, `batch.resume` (run by [`crate::batch`]),
//! and `backup` (a checkpoint of the live store, [`crate::backup`]).
//! Every error reply is `{"v":1,"error":"...","code":"..."}`.

use std::sync::Arc;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::batch::{self, BatchHandle};
use crate::engine::transition::StatusEntry;
use crate::engine::Engine;
use crate::protocol::subjects::Subjects;
use crate::protocol::VERSION;
use crate::storage::store::WorkflowStore;
use crate::workflow::{EventKind, Input, JournalRecord, Outcome, ReopenMode, Status};

/// Every admin verb this build serves.
pub const VERBS: [&str; 14] = [
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
    "backup",
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

/// Stable machine-readable error classes (`code` of an error reply).
pub mod code {
    pub const BAD_REQUEST: &str = "bad_request";
    pub const UNKNOWN_WORKFLOW: &str = "unknown_workflow";
    pub const UNKNOWN_PIPELINE: &str = "unknown_pipeline";
    pub const UNKNOWN_STEP: &str = "unknown_step";
    pub const ILLEGAL_TRANSITION: &str = "illegal_transition";
    pub const UNKNOWN_JOB: &str = "unknown_job";
    pub const UNAVAILABLE: &str = "unavailable";
    /// `backup` on a storage that cannot checkpoint (never in `run`).
    pub const UNSUPPORTED: &str = "unsupported";
    /// `backup`: RocksDB or the filesystem failed while checkpointing.
    pub const BACKUP_FAILED: &str = "backup_failed";
}

/// `backup`: where to write the checkpoint, on the orchestrator's host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupRequest {
    pub v: u32,
    /// An absolute path that does not exist yet, outside the data dir.
    pub to: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct BackupReply {
    pub v: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub took_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

impl From<crate::backup::BackupError> for AdminError {
    fn from(e: crate::backup::BackupError) -> Self {
        use crate::backup::BackupError as B;
        let c = match &e {
            B::BadTarget(_) => code::BAD_REQUEST,
            B::Unsupported(_) => code::UNSUPPORTED,
            B::Failed(_) => code::BACKUP_FAILED,
        };
        AdminError::new(c, e.to_string())
    }
}

async fn backup(r: BackupRequest, engine: &Engine) -> Result<BackupReply, AdminError> {
    let report = engine
        .checkpoint(std::path::Path::new(&r.to))
        .await
        .map_err(AdminError::from)?;
    tracing::info!(path = %report.path.display(), files = report.files, bytes = report.bytes,
        took_ms = report.took_ms, "backup written");
    Ok(BackupReply {
        v: VERSION,
        path: Some(report.path.display().to_string()),
        files: Some(report.files),
        bytes: Some(report.bytes),
        took_ms: Some(report.took_ms),
        ..BackupReply::default()
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartRequest {
    pub v: u32,
    pub pipeline: String,
    pub id: String,
    pub input: serde_json::Value,
}

/// `describe`, `pause`, `resume`, `retry`: just the workflow id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DescribeRequest {
    pub v: u32,
    pub id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CancelRequest {
    pub v: u32,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RerunRequest {
    pub v: u32,
    pub id: String,
    pub from_step: String,
}

/// One step in a `describe` reply.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct StepReply {
    pub name: String,
    /// `pending | dispatched | backoff | succeeded | failed | cancelled`.
    pub status: String,
    /// Attempts in the current generation.
    pub attempts: u32,
    pub last_error: Option<String>,
    pub worker: Option<String>,
    pub dispatched_at_ms: Option<u64>,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
}

/// Reply to `start`, `describe` and the single-workflow verbs.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct WorkflowReply {
    pub v: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_version: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<StepReply>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryRequest {
    pub v: u32,
    pub id: String,
    /// Only events with a greater seq (paging); 0 = from the start.
    #[serde(default)]
    pub after_seq: u64,
    /// Events per reply, at most [`HISTORY_PAGE_MAX`] (the default).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// One journaled event; fields that do not apply are `null`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HistoryEvent {
    pub seq: u64,
    /// When the orchestrator decided it, unix ms.
    pub at: u64,
    /// `workflow_started`, `task_dispatched`, `task_succeeded`, ...
    pub event: String,
    /// The generation the event belongs to (a reopen starts the next one).
    pub generation: u32,
    /// The step it is about; for `workflow_reopened` by a rerun, the step rerun from.
    pub step: Option<String>,
    pub attempt: Option<u32>,
    pub worker: Option<String>,
    /// The error of a failed or timed-out attempt, or why a workflow failed or was cancelled.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct HistoryReply {
    pub v: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default)]
    pub events: Vec<HistoryEvent>,
    /// Set when more events follow: ask again with `after_seq` = this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// Which workflows a `list` or a batch job covers; all set fields must match.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct Filter {
    /// `running | paused | completed | failed | cancelled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// Only workflows whose status last changed within this many ms before now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.status.is_none() && self.pipeline.is_none() && self.since_ms.is_none()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListRequest {
    pub v: u32,
    #[serde(flatten)]
    pub filter: Filter,
    /// Workflows per reply, at most [`LIST_PAGE_MAX`]; default [`LIST_PAGE_DEFAULT`].
    #[serde(default)]
    pub limit: Option<u32>,
    /// The `cursor` of the previous reply.
    #[serde(default)]
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ListedWorkflow {
    pub id: String,
    pub status: String,
    pub pipeline: String,
    pub created_at_ms: u64,
    /// When the status last changed.
    pub updated_at_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ListReply {
    pub v: u32,
    #[serde(default)]
    pub workflows: Vec<ListedWorkflow>,
    /// Set when more may follow: send it back as `cursor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

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

/// An error reply; it parses as any reply type above (all their other fields default).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorReply {
    pub v: u32,
    pub error: String,
    pub code: String,
}

/// An admin failure: a message and its [`code`].
#[derive(Debug, Clone, PartialEq)]
pub struct AdminError {
    pub code: &'static str,
    pub message: String,
}

impl AdminError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        AdminError {
            code,
            message: message.into(),
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(code::BAD_REQUEST, message)
    }
}

impl From<crate::engine::Error> for AdminError {
    fn from(e: crate::engine::Error) -> Self {
        use crate::engine::Error as E;
        match e {
            E::Rejected(m) => AdminError::new(code::BAD_REQUEST, m),
            other => AdminError::new(code::UNAVAILABLE, other.to_string()),
        }
    }
}

fn encode<T: Serialize>(r: Result<T, AdminError>) -> Vec<u8> {
    let body = match r {
        Ok(reply) => serde_json::to_vec(&reply),
        Err(e) => serde_json::to_vec(&ErrorReply {
            v: VERSION,
            error: e.message,
            code: e.code.to_string(),
        }),
    };
    body.unwrap_or_else(|e| {
        format!(r#"{{"v":1,"error":"cannot encode reply: {e}","code":"internal"}}"#).into_bytes()
    })
}

/// Serves admin requests (and runs the batch jobs) until the subscriptions end.
/// Admin requests of one verb served at once; more wait in the subscription.
pub const ADMIN_IN_FLIGHT_MAX: usize = 256;

pub async fn serve(
    client: async_nats::Client,
    prefix: String,
    engine: Arc<Engine>,
    request_max_bytes: usize,
) -> Result<(), String> {
    let subjects = Subjects::new(&prefix)?;
    let mut subs = Vec::new();
    for verb in VERBS {
        let sub = client
            .queue_subscribe(subjects.admin(verb), "orchestrator".to_string())
            .await
            .map_err(|e| format!("cannot subscribe to admin.{verb}: {e}"))?;
        subs.push((verb, sub));
    }
    let (batches, runner) = batch::runner(engine.clone());
    // Plain futures, not spawned tasks: when the service drops `serve`, the
    // loops and the batch runner (and their handles on the engine) go with it.
    let loops = subs.into_iter().map(|(verb, sub)| {
        let engine = engine.clone();
        let client = client.clone();
        let batches = batches.clone();
        async move {
            // Requests are served concurrently (a start waits for its fsync;
            // the group committer batches concurrent ones), bounded per verb.
            sub.for_each_concurrent(ADMIN_IN_FLIGHT_MAX, |msg| {
                let (engine, client, batches) = (&engine, &client, &batches);
                async move {
                    let Some(reply_to) = msg.reply.clone() else {
                        return;
                    };
                    let body = if msg.payload.len() > request_max_bytes {
                        engine.metrics().rejected_message("oversized");
                        encode::<()>(Err(AdminError::bad(format!(
                            "request of {} bytes exceeds {request_max_bytes}",
                            msg.payload.len()
                        ))))
                    } else {
                        handle(verb, &msg.payload, engine, batches).await
                    };
                    let _ = client.publish(reply_to, body.into()).await;
                }
            })
            .await;
        }
    });
    futures_util::future::join(futures_util::future::join_all(loops), runner).await;
    Ok(())
}

fn parse<'a, T: Deserialize<'a> + HasVersion>(
    verb: &str,
    payload: &'a [u8],
    engine: &Engine,
) -> Result<T, AdminError> {
    decode_request(verb, payload, || {
        engine.metrics().rejected_message("malformed")
    })
}

/// The request layer of [`parse`], without the engine: decodes `payload` as
/// `verb`'s request and checks its version; `on_malformed` runs when the
/// payload is not such a request.
pub(crate) fn decode_request<'a, T: Deserialize<'a> + HasVersion>(
    verb: &str,
    payload: &'a [u8],
    on_malformed: impl FnOnce(),
) -> Result<T, AdminError> {
    match serde_json::from_slice::<T>(payload) {
        Err(e) => {
            on_malformed();
            Err(AdminError::bad(crate::protocol::one_line(format!(
                "malformed {verb} request: {e}"
            ))))
        }
        Ok(r) if r.version() != VERSION => Err(AdminError::bad(format!(
            "unsupported protocol version {}",
            r.version()
        ))),
        Ok(r) => Ok(r),
    }
}

pub(crate) trait HasVersion {
    fn version(&self) -> u32;
}

macro_rules! has_version {
    ($($t:ty),*) => {$(impl HasVersion for $t { fn version(&self) -> u32 { self.v } })*};
}
has_version!(
    StartRequest,
    DescribeRequest,
    CancelRequest,
    RerunRequest,
    HistoryRequest,
    ListRequest,
    BatchCreateRequest,
    BatchJobRequest,
    BackupRequest
);

async fn handle(verb: &str, payload: &[u8], engine: &Engine, batches: &BatchHandle) -> Vec<u8> {
    match verb {
        "start" => encode(match parse::<StartRequest>(verb, payload, engine) {
            Ok(r) => start(r, engine).await,
            Err(e) => Err(e),
        }),
        "describe" => encode(match parse::<DescribeRequest>(verb, payload, engine) {
            Ok(r) => describe(&r.id, engine).await,
            Err(e) => Err(e),
        }),
        "history" => encode(match parse::<HistoryRequest>(verb, payload, engine) {
            Ok(r) => history(r, engine).await,
            Err(e) => Err(e),
        }),
        "list" => encode(match parse::<ListRequest>(verb, payload, engine) {
            Ok(r) => list(r, engine).await,
            Err(e) => Err(e),
        }),
        "cancel" => encode(match parse::<CancelRequest>(verb, payload, engine) {
            Ok(r) => {
                let reason = r.reason.unwrap_or_else(|| "cancelled by operator".into());
                control(&r.id, Input::Cancel { reason }, engine).await
            }
            Err(e) => Err(e),
        }),
        "pause" | "resume" | "retry" => {
            encode(match parse::<DescribeRequest>(verb, payload, engine) {
                Ok(r) => {
                    let input = match verb {
                        "pause" => Input::Pause,
                        "resume" => Input::Resume,
                        _ => Input::Reopen(ReopenMode::RetryFailed),
                    };
                    control(&r.id, input, engine).await
                }
                Err(e) => Err(e),
            })
        }
        "rerun" => encode(match parse::<RerunRequest>(verb, payload, engine) {
            Ok(r) => rerun(r, engine).await,
            Err(e) => Err(e),
        }),
        "backup" => encode(match parse::<BackupRequest>(verb, payload, engine) {
            Ok(r) => backup(r, engine).await,
            Err(e) => Err(e),
        }),
        "batch.create" => encode(match parse::<BatchCreateRequest>(verb, payload, engine) {
            Ok(r) => batches.create(r).await,
            Err(e) => Err(e),
        }),
        _ => encode(match parse::<BatchJobRequest>(verb, payload, engine) {
            Ok(r) => match verb {
                "batch.status" => batches.status(&r.job).await,
                "batch.pause" => batches.pause(&r.job).await,
                _ => batches.resume(&r.job).await,
            },
            Err(e) => Err(e),
        }),
    }
}

async fn start(r: StartRequest, engine: &Engine) -> Result<WorkflowReply, AdminError> {
    if engine.ctx().pipelines.current(&r.pipeline).is_none() {
        return Err(AdminError::new(
            code::UNKNOWN_PIPELINE,
            format!("unknown pipeline {:?}", r.pipeline),
        ));
    }
    let s = engine
        .start_workflow(&r.pipeline, &r.id, &r.input.to_string())
        .await?;
    Ok(WorkflowReply {
        v: VERSION,
        id: Some(s.id),
        status: Some(s.status.to_string()),
        created: Some(s.created),
        ..WorkflowReply::default()
    })
}

fn unknown(id: &str) -> AdminError {
    AdminError::new(code::UNKNOWN_WORKFLOW, format!("unknown workflow {id}"))
}

async fn describe(id: &str, engine: &Engine) -> Result<WorkflowReply, AdminError> {
    let wf = engine.describe(id).await?.ok_or_else(|| unknown(id))?;
    let def = engine.ctx().pipelines.get(&wf.pipeline).ok();
    let steps = wf
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| StepReply {
            name: def
                .as_ref()
                .and_then(|d| d.steps.get(i))
                .map_or_else(|| format!("#{i}"), |d| d.name.clone()),
            status: s.status.as_str().to_string(),
            attempts: s.attempt,
            last_error: s
                .last_error
                .as_ref()
                .map(|e| format!("{}: {}", e.kind, e.message)),
            worker: s.worker.as_deref().map(str::to_string),
            dispatched_at_ms: s.dispatched_at_ms,
            started_at_ms: s.started_at_ms,
            finished_at_ms: s.finished_at_ms,
        })
        .collect();
    Ok(WorkflowReply {
        v: VERSION,
        id: Some(wf.id.clone()),
        status: Some(wf.status.to_string()),
        pipeline: Some(wf.pipeline.name.clone()),
        pipeline_version: Some(wf.pipeline.version),
        generation: Some(wf.generation),
        created_at_ms: Some(wf.created_at_ms),
        updated_at_ms: Some(wf.updated_at_ms),
        finished_at_ms: wf.finished_at_ms,
        reason: wf.reason.clone(),
        steps: Some(steps),
        ..WorkflowReply::default()
    })
}

/// Sends one operator input and answers with the resulting status line.
pub async fn control(id: &str, input: Input, engine: &Engine) -> Result<WorkflowReply, AdminError> {
    if engine.describe(id).await?.is_none() {
        return Err(unknown(id));
    }
    // Retention may purge the workflow between the describe above and this
    // input; the engine then answers as for any unknown id.
    let outcome = match engine.send(id, input).await {
        Err(crate::engine::Error::Rejected(m)) if m.starts_with("unknown workflow") => {
            return Err(unknown(id))
        }
        r => r?,
    };
    match outcome {
        Outcome::Applied => {}
        Outcome::Rejected(m) => return Err(AdminError::new(code::ILLEGAL_TRANSITION, m)),
        Outcome::Ignored(r) => {
            return Err(AdminError::new(
                code::ILLEGAL_TRANSITION,
                format!("ignored: {}", r.as_str()),
            ))
        }
    }
    let wf = engine.describe(id).await?.ok_or_else(|| unknown(id))?;
    Ok(WorkflowReply {
        v: VERSION,
        id: Some(wf.id),
        status: Some(wf.status.to_string()),
        generation: Some(wf.generation),
        reason: wf.reason,
        ..WorkflowReply::default()
    })
}

async fn rerun(r: RerunRequest, engine: &Engine) -> Result<WorkflowReply, AdminError> {
    let wf = engine
        .describe(&r.id)
        .await?
        .ok_or_else(|| unknown(&r.id))?;
    let def = engine
        .ctx()
        .pipelines
        .get(&wf.pipeline)
        .map_err(|e| AdminError::new(code::UNAVAILABLE, e))?;
    if def.step_index(&r.from_step).is_none() {
        return Err(AdminError::new(
            code::UNKNOWN_STEP,
            format!(
                "pipeline {} has no step {:?} (steps: {})",
                def.name,
                r.from_step,
                def.steps
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    control(
        &r.id,
        Input::Reopen(ReopenMode::RerunFrom(r.from_step)),
        engine,
    )
    .await
}

async fn history(r: HistoryRequest, engine: &Engine) -> Result<HistoryReply, AdminError> {
    let limit = r
        .limit
        .unwrap_or(HISTORY_PAGE_MAX)
        .clamp(1, HISTORY_PAGE_MAX) as usize;
    let wf = engine
        .describe(&r.id)
        .await?
        .ok_or_else(|| unknown(&r.id))?;
    let def = engine.ctx().pipelines.get(&wf.pipeline).ok();
    let store = engine.ctx().store.clone();
    let id = r.id.clone();
    let records: Vec<(u64, JournalRecord)> =
        tokio::task::spawn_blocking(move || store.load_journal(store.partition_of(&id), &id, 1))
            .await
            .map_err(|e| AdminError::new(code::UNAVAILABLE, e.to_string()))?
            .map_err(|e| AdminError::new(code::UNAVAILABLE, e.to_string()))?;
    let step_name = |i: u16| {
        def.as_ref()
            .and_then(|d| d.steps.get(usize::from(i)))
            .map_or_else(|| format!("#{i}"), |s| s.name.clone())
    };
    let mut events = Vec::new();
    let mut generation = 0u32;
    let mut more = false;
    'records: for (_, rec) in &records {
        for (k, ev) in rec.events.iter().enumerate() {
            let seq = rec.first_seq + k as u64;
            if let EventKind::WorkflowReopened { generation: g, .. } = &ev.kind {
                generation = *g;
            }
            if seq <= r.after_seq {
                continue;
            }
            if events.len() == limit {
                more = true;
                break 'records;
            }
            events.push(history_event(seq, ev, generation, &step_name));
        }
    }
    let next_after_seq = if more {
        events.last().map(|e: &HistoryEvent| e.seq)
    } else {
        None
    };
    Ok(HistoryReply {
        v: VERSION,
        id: Some(r.id),
        events,
        next_after_seq,
        ..HistoryReply::default()
    })
}

pub(crate) fn history_event(
    seq: u64,
    ev: &crate::workflow::Event,
    generation: u32,
    step_name: &dyn Fn(u16) -> String,
) -> HistoryEvent {
    let mut h = HistoryEvent {
        seq,
        at: ev.at_ms,
        event: ev.kind.name().to_string(),
        generation,
        step: ev.kind.step().map(step_name),
        attempt: None,
        worker: None,
        error: None,
    };
    match &ev.kind {
        EventKind::TaskDispatched { attempt, .. } => h.attempt = Some(*attempt),
        EventKind::TaskSucceeded {
            attempt, worker, ..
        } => {
            h.attempt = Some(*attempt);
            h.worker = worker.as_deref().map(str::to_string);
        }
        EventKind::TaskFailed {
            attempt,
            error,
            worker,
            ..
        } => {
            h.attempt = Some(*attempt);
            h.worker = worker.as_deref().map(str::to_string);
            h.error = Some(format!("{}: {}", error.kind, error.message));
        }
        EventKind::TaskTimedOut {
            attempt, timeout, ..
        } => {
            h.attempt = Some(*attempt);
            h.error = Some(format!("{} timeout", timeout.as_str()));
        }
        EventKind::WorkflowFailed { reason, .. } | EventKind::WorkflowCancelled { reason } => {
            h.error = Some(reason.clone());
        }
        EventKind::WorkflowReopened {
            mode: ReopenMode::RerunFrom(step),
            ..
        } => h.step = Some(step.clone()),
        _ => {}
    }
    h
}

/// A parsed [`Filter`]: status codes to scan and the cut-off time.
#[derive(Debug, Clone)]
pub struct Selection {
    pub statuses: Vec<Status>,
    pub pipeline: Option<String>,
    /// Status changed at or after this time (unix ms).
    pub changed_after_ms: Option<u64>,
}

impl Selection {
    pub fn new(filter: &Filter, now_ms: u64) -> Result<Selection, AdminError> {
        let statuses = match &filter.status {
            None => Status::ALL.to_vec(),
            Some(s) => vec![Status::parse(s).ok_or_else(|| {
                AdminError::bad(format!(
                    "unknown status {s:?} (use running, paused, completed, failed or cancelled)"
                ))
            })?],
        };
        Ok(Selection {
            statuses,
            pipeline: filter.pipeline.clone(),
            changed_after_ms: filter.since_ms.map(|d| now_ms.saturating_sub(d)),
        })
    }

    fn matches(&self, e: &StatusEntry) -> bool {
        self.pipeline.as_ref().is_none_or(|p| *p == e.pipeline)
            && self.changed_after_ms.is_none_or(|t| e.updated_at_ms >= t)
    }
}

/// Where a scan of the status index stands: status position, partition, last id seen.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanCursor {
    pub status: usize,
    pub partition: u16,
    pub after: Option<String>,
}

impl ScanCursor {
    fn encode(&self) -> String {
        format!(
            "{}:{}:{}",
            self.status,
            self.partition,
            self.after.as_deref().unwrap_or("")
        )
    }

    fn decode(s: &str) -> Option<ScanCursor> {
        let mut it = s.splitn(3, ':');
        let status = it.next()?.parse().ok()?;
        let partition = it.next()?.parse().ok()?;
        let after = it.next()?;
        Some(ScanCursor {
            status,
            partition,
            after: (!after.is_empty()).then(|| after.to_string()),
        })
    }
}

/// Walks the status index from `cursor`, collecting up to `want` matches while
/// examining at most `budget` entries. Returns the matches and where to go on
/// (`None` once the index is exhausted). Blocking: call off the runtime.
pub fn scan_status_index(
    store: &WorkflowStore,
    sel: &Selection,
    mut cursor: ScanCursor,
    want: usize,
    budget: usize,
) -> Result<(Vec<ListedWorkflow>, Option<ScanCursor>), String> {
    const CHUNK: usize = 512;
    let mut out = Vec::new();
    let mut examined = 0usize;
    while cursor.status < sel.statuses.len() {
        let status = sel.statuses[cursor.status];
        while cursor.partition < store.partitions() {
            loop {
                if out.len() >= want || examined >= budget {
                    return Ok((out, Some(cursor)));
                }
                let n = CHUNK.min(budget - examined);
                let page: Vec<(String, StatusEntry)> = match &cursor.after {
                    None => store.list_status(cursor.partition, status.code(), n),
                    Some(after) => {
                        store.list_status_after(cursor.partition, status.code(), after, n)
                    }
                }
                .map_err(|e| e.to_string())?;
                let full = page.len() == n;
                for (id, entry) in page {
                    examined += 1;
                    cursor.after = Some(id.clone());
                    if sel.matches(&entry) {
                        out.push(ListedWorkflow {
                            id,
                            status: status.to_string(),
                            pipeline: entry.pipeline,
                            created_at_ms: entry.created_at_ms,
                            updated_at_ms: entry.updated_at_ms,
                        });
                        if out.len() >= want {
                            return Ok((out, Some(cursor)));
                        }
                    }
                }
                if !full {
                    break;
                }
            }
            cursor.partition += 1;
            cursor.after = None;
        }
        cursor.status += 1;
        cursor.partition = 0;
    }
    Ok((out, None))
}

async fn list(r: ListRequest, engine: &Engine) -> Result<ListReply, AdminError> {
    let want = r.limit.unwrap_or(LIST_PAGE_DEFAULT).clamp(1, LIST_PAGE_MAX) as usize;
    let sel = Selection::new(&r.filter, engine.ctx().clock.now_ms())?;
    let cursor = match &r.cursor {
        None => ScanCursor {
            status: 0,
            partition: 0,
            after: None,
        },
        Some(c) => ScanCursor::decode(c).ok_or_else(|| AdminError::bad("malformed cursor"))?,
    };
    let store = engine.ctx().store.clone();
    let (workflows, next) = tokio::task::spawn_blocking(move || {
        scan_status_index(&store, &sel, cursor, want, LIST_SCAN_MAX)
    })
    .await
    .map_err(|e| AdminError::new(code::UNAVAILABLE, e.to_string()))?
    .map_err(|e| AdminError::new(code::UNAVAILABLE, e))?;
    Ok(ListReply {
        v: VERSION,
        workflows,
        cursor: next.map(|c| c.encode()),
        ..ListReply::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_ids_with_colons() {
        let c = ScanCursor {
            status: 2,
            partition: 7,
            after: Some("a:b:c".into()),
        };
        assert_eq!(ScanCursor::decode(&c.encode()), Some(c));
        assert_eq!(ScanCursor::decode("x"), None);
        assert_eq!(
            ScanCursor::decode("0:0:"),
            Some(ScanCursor {
                status: 0,
                partition: 0,
                after: None
            })
        );
    }

    #[test]
    fn an_error_reply_parses_as_every_reply_type() {
        let body = encode::<()>(Err(AdminError::new(code::UNKNOWN_JOB, "unknown job x")));
        let w: WorkflowReply = serde_json::from_slice(&body).unwrap();
        assert_eq!(w.error.as_deref(), Some("unknown job x"));
        assert_eq!(w.code.as_deref(), Some("unknown_job"));
        let b: BatchReply = serde_json::from_slice(&body).unwrap();
        assert!(b.job.is_none());
        let l: ListReply = serde_json::from_slice(&body).unwrap();
        assert!(l.workflows.is_empty());
        let h: HistoryReply = serde_json::from_slice(&body).unwrap();
        assert!(h.events.is_empty());
    }
}
