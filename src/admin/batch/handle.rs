//! The admin side of the batch runner: creating a job (its frozen members
//! and record in one commit), and `batch.status`, `batch.pause`,
//! `batch.resume`.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::runner::{run, Cmd};
use super::{
    Action, BatchCreateRequest, BatchFailure, BatchJobView, BatchListReply, BatchReply, JobRecord,
    JobState, Member, FAILURES_SHOWN, JOBS_LISTED_MAX, JOBS_MAX, MEMBERS_MAX, MEMBERS_PER_CHUNK,
    RATE_DEFAULT, RATE_MAX, SAMPLE,
};
use crate::admin::{code, scan_status_index, AdminError, ScanCursor, Selection};
use crate::engine::Engine;
use crate::protocol::VERSION;
use crate::workflow::Status;

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

pub(super) fn unavailable(e: impl ToString) -> AdminError {
    AdminError::new(code::UNAVAILABLE, e.to_string())
}

pub(super) fn unknown_job(job: &str) -> AdminError {
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
        if r.filter.error_kind.is_some() {
            return Err(bad(
                "error_kind filters `list` only; list the workflows, then act on them".into(),
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

    /// Every stored job (completed ones until retention purges them), the
    /// most recently created first, at most `limit`.
    pub async fn list(&self, limit: Option<u32>) -> Result<BatchListReply, AdminError> {
        let limit = limit.unwrap_or(JOBS_LISTED_MAX).clamp(1, JOBS_LISTED_MAX) as usize;
        let store = self.engine.ctx().store.clone();
        let mut jobs: Vec<BatchJobView> = tokio::task::spawn_blocking(move || {
            store
                .list_batch_jobs::<JobRecord>(JOBS_MAX)
                .map(|jobs| jobs.into_iter().map(|(_, r)| r.view()).collect())
        })
        .await
        .map_err(unavailable)?
        .map_err(unavailable)?;
        jobs.sort_by(|a, b| (b.created_at_ms, &b.id).cmp(&(a.created_at_ms, &a.id)));
        jobs.truncate(limit);
        Ok(BatchListReply {
            v: VERSION,
            jobs,
            ..BatchListReply::default()
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
