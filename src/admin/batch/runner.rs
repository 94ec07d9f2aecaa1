//! The batch runner: one task that runs every running job at its own rate,
//! commits progress after each tick, resumes running jobs at start-up and
//! purges completed jobs past retention.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::handle::{unavailable, unknown_job};
use super::{Action, BatchFailure, JobRecord, JobState, Member, JOBS_MAX, MEMBERS_PER_CHUNK};
use crate::admin::{code, AdminError};
use crate::engine::Engine;
use crate::workflow::{Input, Outcome, ReopenMode};

/// How often the runner wakes up to spend its tokens.
const TICK: Duration = Duration::from_millis(20);

pub(super) enum Cmd {
    Added(Box<JobRecord>),
    Pause(String, oneshot::Sender<Result<JobRecord, AdminError>>),
    Resume(String, oneshot::Sender<Result<JobRecord, AdminError>>),
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

pub(super) async fn run(engine: Arc<Engine>, mut rx: mpsc::Receiver<Cmd>) {
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
        Err(e @ (E::Rejected(_) | E::UnknownWorkflow(_))) => {
            return Ok(Item::Failed(e.to_string()))
        }
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
        Err(e @ (E::Rejected(_) | E::UnknownWorkflow(_))) => Ok(Item::Failed(e.to_string())),
        Err(e) => Err(e.to_string()),
    }
}
