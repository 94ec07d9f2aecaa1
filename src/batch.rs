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

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::admin::{
    code, scan_status_index, AdminError, BatchCreateRequest, BatchFailure, BatchJobView,
    BatchReply, Filter, ScanCursor, Selection,
};
use crate::engine::Engine;
use crate::protocol::VERSION;
use crate::workflow::{Input, Outcome, ReopenMode, Status};

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
/// Job records read at start-up (to find the running ones).
pub const JOBS_MAX: usize = 100_000;
/// How often the runner wakes up to spend its tokens.
const TICK: Duration = Duration::from_millis(20);

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

enum Cmd {
    Added(Box<JobRecord>),
    Pause(String, oneshot::Sender<Result<JobRecord, AdminError>>),
    Resume(String, oneshot::Sender<Result<JobRecord, AdminError>>),
}

/// The admin side of the runner: creates jobs and asks the runner to pause or
/// resume them. Cheap to clone.
#[derive(Clone)]
pub struct BatchHandle {
    engine: Arc<Engine>,
    tx: mpsc::Sender<Cmd>,
}

/// The handle and the runner future (to be polled by `admin::serve`).
pub fn runner(engine: Arc<Engine>) -> (BatchHandle, impl Future<Output = ()>) {
    let (tx, rx) = mpsc::channel(64);
    let handle = BatchHandle {
        engine: engine.clone(),
        tx,
    };
    (handle, run(engine, rx))
}

fn unavailable(e: impl ToString) -> AdminError {
    AdminError::new(code::UNAVAILABLE, e.to_string())
}

fn unknown_job(job: &str) -> AdminError {
    AdminError::new(code::UNKNOWN_JOB, format!("unknown batch job {job}"))
}

impl BatchHandle {
    pub async fn create(&self, r: BatchCreateRequest) -> Result<BatchReply, AdminError> {
        let bad = |m: String| AdminError::new(code::BAD_REQUEST, m);
        let action = match (r.action.as_str(), &r.from_step) {
            ("cancel", None) => Action::Cancel {
                reason: r.reason.clone().unwrap_or_default(),
            },
            ("retry", None) => Action::Retry,
            ("rerun", Some(step)) => Action::Rerun {
                from_step: step.clone(),
            },
            ("rerun", None) => return Err(bad("rerun needs from_step".into())),
            ("cancel" | "retry", Some(_)) => {
                return Err(bad(format!("from_step does not apply to {}", r.action)))
            }
            (other, _) => {
                return Err(bad(format!(
                    "unknown batch action {other:?} (use cancel, retry or rerun)"
                )))
            }
        };
        if r.filter.is_empty() {
            return Err(bad(
                "a batch needs at least one filter (status, pipeline or since)".into(),
            ));
        }
        let rate = r.rate.unwrap_or(RATE_DEFAULT);
        if !(rate.is_finite() && rate > 0.0 && rate <= RATE_MAX) {
            return Err(bad(format!(
                "rate must be within (0, {RATE_MAX}] per second"
            )));
        }
        let ctx = self.engine.ctx();
        if let Action::Rerun { from_step } = &action {
            let pipelines: Vec<String> = match &r.filter.pipeline {
                Some(p) => vec![p.clone()],
                None => ctx.pipelines.names(),
            };
            let known = pipelines.iter().any(|p| {
                ctx.pipelines
                    .current(p)
                    .is_some_and(|(_, d)| d.step_index(from_step).is_some())
            });
            if !known {
                return Err(AdminError::new(
                    code::UNKNOWN_STEP,
                    format!("no pipeline of this filter has a step {from_step:?}"),
                ));
            }
        }
        let now = ctx.clock.now_ms();
        let sel = Selection::new(&r.filter, now)?;
        let store = ctx.store.clone();
        let start = ScanCursor {
            status: 0,
            partition: 0,
            after: None,
        };
        let (matched, _) = tokio::task::spawn_blocking(move || {
            scan_status_index(&store, &sel, start, MEMBERS_MAX + 1, usize::MAX)
        })
        .await
        .map_err(unavailable)?
        .map_err(unavailable)?;
        if matched.len() > MEMBERS_MAX {
            return Err(bad(format!(
                "the filter matches more than {MEMBERS_MAX} workflows; narrow it"
            )));
        }
        if r.dry_run {
            return Ok(BatchReply {
                v: VERSION,
                count: Some(matched.len() as u64),
                sample: matched.into_iter().take(SAMPLE).collect(),
                ..BatchReply::default()
            });
        }
        let id = format!("b-{}", uuid::Uuid::now_v7());
        let action = match action {
            Action::Cancel { reason } if reason.is_empty() => Action::Cancel {
                reason: format!("cancelled by batch {id}"),
            },
            a => a,
        };
        let rec = JobRecord {
            id: id.clone(),
            action,
            status_filter: r.filter.status.clone(),
            pipeline_filter: r.filter.pipeline.clone(),
            since_ms: r.filter.since_ms,
            rate,
            total: matched.len() as u64,
            cursor: 0,
            succeeded: 0,
            skipped: 0,
            failed: 0,
            state: if matched.is_empty() {
                JobState::Completed
            } else {
                JobState::Running
            },
            created_at_ms: now,
            updated_at_ms: now,
        };
        let members: Vec<Member> = matched
            .into_iter()
            .map(|w| Member {
                status: Status::parse(&w.status).map_or(0, Status::code),
                id: w.id,
                changed_at_ms: w.updated_at_ms,
            })
            .collect();
        let mut ops = Vec::with_capacity(members.len() / MEMBERS_PER_CHUNK + 2);
        for (i, chunk) in members.chunks(MEMBERS_PER_CHUNK).enumerate() {
            let i = u32::try_from(i).map_err(unavailable)?;
            ops.push(
                ctx.store
                    .batch_members_put(&id, i, &chunk.to_vec())
                    .map_err(unavailable)?,
            );
        }
        ops.push(ctx.store.batch_job_put(&id, &rec).map_err(unavailable)?);
        ctx.committer.commit(ops).await.map_err(unavailable)?;
        if rec.state == JobState::Running {
            self.tx
                .send(Cmd::Added(Box::new(rec.clone())))
                .await
                .map_err(|_| unavailable("the batch runner has stopped"))?;
        }
        Ok(BatchReply {
            v: VERSION,
            job: Some(rec.view()),
            ..BatchReply::default()
        })
    }

    pub async fn status(&self, job: &str) -> Result<BatchReply, AdminError> {
        let store = &self.engine.ctx().store;
        let rec: JobRecord = store
            .load_batch_job(job)
            .map_err(|e| AdminError::new(code::BAD_REQUEST, e.to_string()))?
            .ok_or_else(|| unknown_job(job))?;
        let failures: Vec<BatchFailure> = store
            .list_batch_failures(job, FAILURES_SHOWN)
            .map_err(unavailable)?;
        Ok(BatchReply {
            v: VERSION,
            job: Some(rec.view()),
            failures,
            ..BatchReply::default()
        })
    }

    pub async fn pause(&self, job: &str) -> Result<BatchReply, AdminError> {
        self.ask(|tx| Cmd::Pause(job.to_string(), tx)).await
    }

    pub async fn resume(&self, job: &str) -> Result<BatchReply, AdminError> {
        self.ask(|tx| Cmd::Resume(job.to_string(), tx)).await
    }

    async fn ask(
        &self,
        cmd: impl FnOnce(oneshot::Sender<Result<JobRecord, AdminError>>) -> Cmd,
    ) -> Result<BatchReply, AdminError> {
        let (tx, rx) = oneshot::channel();
        let stopped = || unavailable("the batch runner has stopped");
        self.tx.send(cmd(tx)).await.map_err(|_| stopped())?;
        let rec = rx.await.map_err(|_| stopped())??;
        Ok(BatchReply {
            v: VERSION,
            job: Some(rec.view()),
            ..BatchReply::default()
        })
    }
}

/// A running job in the runner.
struct Active {
    rec: JobRecord,
    tokens: f64,
    last: Instant,
    chunk: Option<(u32, Vec<Member>)>,
}

impl Active {
    fn new(rec: JobRecord) -> Active {
        Active {
            rec,
            tokens: 1.0,
            last: Instant::now(),
            chunk: None,
        }
    }
}

async fn run(engine: Arc<Engine>, mut rx: mpsc::Receiver<Cmd>) {
    let mut active: BTreeMap<String, Active> = BTreeMap::new();
    match engine.ctx().store.list_batch_jobs::<JobRecord>(JOBS_MAX) {
        Ok(jobs) => {
            for (id, rec) in jobs {
                if rec.state == JobState::Running {
                    tracing::info!(job = %id, done = rec.cursor, total = rec.total, "resuming batch job");
                    active.insert(id, Active::new(rec));
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot read batch jobs; none resumed"),
    }
    let mut next_purge = tokio::time::Instant::now();
    loop {
        if let Some(after_ms) = engine.ctx().config.retention.after_ms {
            if tokio::time::Instant::now() >= next_purge {
                purge_jobs(&engine, after_ms).await;
                let every = engine.ctx().config.retention.sweep_every_ms.max(1);
                next_purge = tokio::time::Instant::now() + Duration::from_millis(every);
            }
        }
        loop {
            match rx.try_recv() {
                Ok(cmd) => command(&engine, &mut active, cmd).await,
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => return,
            }
        }
        let ids: Vec<String> = active.keys().cloned().collect();
        for id in ids {
            let Some(job) = active.get_mut(&id) else {
                continue;
            };
            tick(&engine, job).await;
            if job.rec.state != JobState::Running {
                active.remove(&id);
            }
        }
        let next = if active.is_empty() {
            tokio::select! {
                c = rx.recv() => c,
                _ = tokio::time::sleep_until(next_purge) => continue,
            }
        } else {
            tokio::select! {
                c = rx.recv() => c,
                _ = tokio::time::sleep(TICK) => continue,
            }
        };
        match next {
            Some(cmd) => command(&engine, &mut active, cmd).await,
            None => return,
        }
    }
}

/// Retention of batch jobs: every completed job whose last change is older
/// than `after_ms` is deleted (record, member chunks, failed items), one
/// batch per job, up to `retention.batch_max` jobs per sweep. Runs inside
/// the runner, so no command on that job is in progress; `batch.status` on
/// it afterwards answers `unknown_job`.
async fn purge_jobs(engine: &Engine, after_ms: u64) {
    let ctx = engine.ctx();
    let cutoff = ctx.clock.now_ms().saturating_sub(after_ms);
    let jobs = match ctx.store.list_batch_jobs::<JobRecord>(JOBS_MAX) {
        Ok(j) => j,
        Err(e) => {
            tracing::warn!(error = %e, "retention: cannot read batch jobs");
            return;
        }
    };
    let due = jobs
        .into_iter()
        .filter(|(_, r)| r.state == JobState::Completed && r.updated_at_ms <= cutoff)
        .take(ctx.config.retention.batch_max.max(1));
    let mut purged = 0u64;
    for (id, _) in due {
        let ops = match ctx.store.batch_job_delete_ops(&id) {
            Ok(ops) => ops,
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "retention: cannot prepare a job purge");
                continue;
            }
        };
        if let Err(e) = ctx.committer.commit(ops).await {
            tracing::warn!(job = %id, error = %e, "retention: job purge failed");
            return;
        }
        purged += 1;
    }
    if purged > 0 {
        tracing::info!(purged, "retention: completed batch jobs purged");
    }
}

async fn commit_record(engine: &Engine, rec: &JobRecord) -> Result<(), AdminError> {
    let ctx = engine.ctx();
    let op = ctx.store.batch_job_put(&rec.id, rec).map_err(unavailable)?;
    ctx.committer.commit(vec![op]).await.map_err(unavailable)
}

async fn command(engine: &Engine, active: &mut BTreeMap<String, Active>, cmd: Cmd) {
    match cmd {
        Cmd::Added(rec) => {
            active.insert(rec.id.clone(), Active::new(*rec));
        }
        Cmd::Pause(job, reply) => {
            let r = set_state(engine, active, &job, JobState::Paused).await;
            let _ = reply.send(r);
        }
        Cmd::Resume(job, reply) => {
            let r = set_state(engine, active, &job, JobState::Running).await;
            let _ = reply.send(r);
        }
    }
}

async fn set_state(
    engine: &Engine,
    active: &mut BTreeMap<String, Active>,
    job: &str,
    to: JobState,
) -> Result<JobRecord, AdminError> {
    let mut rec = match active.get(job) {
        Some(a) => a.rec.clone(),
        None => engine
            .ctx()
            .store
            .load_batch_job::<JobRecord>(job)
            .map_err(|e| AdminError::new(code::BAD_REQUEST, e.to_string()))?
            .ok_or_else(|| unknown_job(job))?,
    };
    if rec.state == JobState::Completed {
        return Err(AdminError::new(
            code::ILLEGAL_TRANSITION,
            format!("batch job {job} is completed"),
        ));
    }
    if rec.state == to && (to == JobState::Paused || active.contains_key(job)) {
        return Ok(rec);
    }
    rec.state = to;
    rec.updated_at_ms = engine.ctx().clock.now_ms();
    commit_record(engine, &rec).await?;
    match to {
        JobState::Running => {
            active.insert(job.to_string(), Active::new(rec.clone()));
        }
        _ => {
            active.remove(job);
        }
    }
    Ok(rec)
}

enum Item {
    Succeeded,
    Skipped,
    Failed(String),
}

/// Spends the job's tokens on its next members, then commits the progress.
async fn tick(engine: &Engine, job: &mut Active) {
    let now = Instant::now();
    let rate = job.rec.rate;
    let burst = (rate / 10.0).max(1.0);
    job.tokens = (job.tokens + rate * now.duration_since(job.last).as_secs_f64()).min(burst);
    job.last = now;
    let ctx = engine.ctx();
    let mut ops = Vec::new();
    let mut progressed = false;
    while job.tokens >= 1.0 && job.rec.cursor < job.rec.total {
        let index = job.rec.cursor;
        let item = match member(engine, job, index) {
            Ok(m) => match process(engine, &job.rec.action, &m).await {
                Ok(item) => Some((m.id, item)),
                Err(e) => {
                    tracing::warn!(job = %job.rec.id, error = %e, "batch item deferred");
                    break;
                }
            },
            Err(e) => Some((format!("#{index}"), Item::Failed(e))),
        };
        if let Some((id, item)) = item {
            match item {
                Item::Succeeded => job.rec.succeeded += 1,
                Item::Skipped => job.rec.skipped += 1,
                Item::Failed(error) => {
                    job.rec.failed += 1;
                    match ctx.store.batch_failure_put(
                        &job.rec.id,
                        index,
                        &BatchFailure { id, error },
                    ) {
                        Ok(op) => ops.push(op),
                        Err(e) => tracing::warn!(error = %e, "cannot record a failed batch item"),
                    }
                }
            }
        }
        job.rec.cursor += 1;
        job.tokens -= 1.0;
        progressed = true;
    }
    if job.rec.cursor >= job.rec.total {
        job.rec.state = JobState::Completed;
        progressed = true;
    }
    if progressed {
        job.rec.updated_at_ms = ctx.clock.now_ms();
        match ctx.store.batch_job_put(&job.rec.id, &job.rec) {
            Ok(op) => ops.push(op),
            Err(e) => tracing::warn!(error = %e, "cannot encode a batch job"),
        }
        if let Err(e) = ctx.committer.commit(ops).await {
            // The items stay done; the next commit carries the progress.
            tracing::warn!(job = %job.rec.id, error = %e, "batch progress not committed");
        }
    }
}

fn member(engine: &Engine, job: &mut Active, index: u64) -> Result<Member, String> {
    let chunk = u32::try_from(index / MEMBERS_PER_CHUNK as u64).map_err(|e| e.to_string())?;
    let offset = (index % MEMBERS_PER_CHUNK as u64) as usize;
    if job.chunk.as_ref().is_none_or(|(c, _)| *c != chunk) {
        let members: Vec<Member> = engine
            .ctx()
            .store
            .load_batch_members(&job.rec.id, chunk)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("member chunk {chunk} of batch {} is missing", job.rec.id))?;
        job.chunk = Some((chunk, members));
    }
    job.chunk
        .as_ref()
        .and_then(|(_, m)| m.get(offset).cloned())
        .ok_or_else(|| format!("member {index} of batch {} is missing", job.rec.id))
}

/// Applies the job's action to one member. `Err` is transient (the engine
/// is busy or stopping): the item is tried again later.
async fn process(engine: &Engine, action: &Action, m: &Member) -> Result<Item, String> {
    use crate::engine::Error as E;
    let wf = match engine.describe(&m.id).await {
        Ok(Some(wf)) => wf,
        Ok(None) => return Ok(Item::Failed(format!("unknown workflow {}", m.id))),
        Err(E::Rejected(msg)) => return Ok(Item::Failed(msg)),
        Err(e) => return Err(e.to_string()),
    };
    let input = match action {
        Action::Cancel { reason } => {
            if wf.status.is_terminal() {
                return Ok(Item::Skipped);
            }
            Input::Cancel {
                reason: reason.clone(),
            }
        }
        Action::Retry | Action::Rerun { .. } => {
            // Unchanged since the job froze it: same status, and a terminal
            // one reached at the same time. Anything else was done already
            // (by this job before a crash, or by someone else).
            let unchanged = wf.status.code() == m.status
                && (!wf.status.is_terminal() || wf.finished_at_ms == Some(m.changed_at_ms));
            if !unchanged {
                return Ok(Item::Skipped);
            }
            match action {
                Action::Rerun { from_step } => {
                    Input::Reopen(ReopenMode::RerunFrom(from_step.clone()))
                }
                _ => Input::Reopen(ReopenMode::RetryFailed),
            }
        }
    };
    match engine.send(&m.id, input).await {
        Ok(Outcome::Applied) => Ok(Item::Succeeded),
        Ok(Outcome::Rejected(msg)) => Ok(Item::Failed(msg)),
        Ok(Outcome::Ignored(r)) => Ok(Item::Failed(format!("ignored: {}", r.as_str()))),
        Err(E::Rejected(msg)) => Ok(Item::Failed(msg)),
        Err(e) => Err(e.to_string()),
    }
}
