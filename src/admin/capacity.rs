//! `capacity`: the current capacity limits, their usage and queues
//! (read-only; `docs/capacity.md`).

use serde::{Deserialize, Serialize};

use super::AdminError;
use crate::admin::code;
use crate::capacity::{BackfillReport, BackfillView, PoolView, TaskOutcomes, TypeView};
use crate::engine::metrics::Metrics;
use crate::engine::Engine;
use crate::protocol::VERSION;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CapacityRequest {
    pub v: u32,
    /// Only the outcomes of this pipeline's task types (its current
    /// version's steps); `None`: of every task type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// The state of the backfill asking (`backfill --max-error-rate`),
    /// kept for `orchestrator capacity` and the metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<BackfillReport>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CapacityReply {
    pub v: u32,
    /// `engine.in_progress_max`: bulk-accepted or recovered workflows with
    /// tasks out at once.
    #[serde(default)]
    pub in_progress_limit: u64,
    /// Such workflows in progress now.
    #[serde(default)]
    pub in_progress: u64,
    /// Such workflows waiting in the backlog, their tasks not sent.
    #[serde(default)]
    pub backlog_held: u64,
    /// Such workflows in progress per pipeline, with the pipeline's own
    /// limit (`[pipeline] in_progress_max`), by name: every pipeline with
    /// a limit or with workflows in progress.
    #[serde(default)]
    pub pipelines: Vec<PipelineInProgress>,
    /// Limited task types, by name: caps, usage, waiting tasks, per key.
    #[serde(default)]
    pub task_types: Vec<TypeView>,
    /// Pools, by name.
    #[serde(default)]
    pub pools: Vec<PoolView>,
    /// Attempts ended per task type since the engine started, by name
    /// (what a backfill's `--max-error-rate` is measured on).
    #[serde(default)]
    pub outcomes: Vec<TaskOutcomes>,
    /// Backfills that reported within the last 10 s, by name.
    #[serde(default)]
    pub backfills: Vec<BackfillView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// One pipeline's bulk-accepted or recovered workflows in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineInProgress {
    pub pipeline: String,
    pub in_progress: u64,
    /// `[pipeline] in_progress_max`; `None`: only the engine's limit.
    pub limit: Option<u64>,
}

pub(super) fn capacity(
    req: &CapacityRequest,
    engine: &Engine,
) -> Result<CapacityReply, AdminError> {
    let ctx = engine.ctx();
    let m = &ctx.metrics;
    let types: Option<Vec<String>> = match &req.pipeline {
        None => None,
        Some(name) => match ctx.pipelines.current(name) {
            Some((_, def)) => Some(crate::pipeline::task_types(std::slice::from_ref(
                def.as_ref(),
            ))),
            None => {
                return Err(AdminError::new(
                    code::UNKNOWN_PIPELINE,
                    format!("unknown pipeline {name}"),
                ))
            }
        },
    };
    let outcomes = m
        .by_task_type
        .snapshot()
        .into_iter()
        .filter(|(t, _)| {
            types
                .as_ref()
                .is_none_or(|ts| ts.iter().any(|x| **x == **t))
        })
        .map(|(t, s)| TaskOutcomes {
            task_type: t.to_string(),
            succeeded: Metrics::get(&s.successes),
            failed: Metrics::get(&s.failures),
            timed_out: Metrics::get(&s.timeouts),
        })
        .collect();
    let now = ctx.clock.now_ms();
    if let Some(report) = req.backfill.clone() {
        let began = ctx.capacity.report_backfill(now, report);
        m.backfill_holds
            .fetch_add(began, std::sync::atomic::Ordering::Relaxed);
    }
    let view = ctx.capacity.view();
    let pipelines = m
        .by_pipeline
        .snapshot()
        .into_iter()
        .map(|(p, s)| PipelineInProgress {
            pipeline: p.to_string(),
            in_progress: Metrics::get(&s.in_progress),
            limit: u64::try_from(s.in_progress_limit.get())
                .ok()
                .filter(|l| *l > 0),
        })
        .filter(|p| p.in_progress > 0 || p.limit.is_some())
        .collect();
    Ok(CapacityReply {
        v: VERSION,
        in_progress_limit: ctx.config.in_progress_max as u64,
        in_progress: Metrics::get(&m.in_progress),
        backlog_held: Metrics::get(&m.backlog_held),
        pipelines,
        task_types: view.task_types,
        pools: view.pools,
        outcomes,
        backfills: ctx.capacity.backfills(now),
        error: None,
        code: None,
    })
}
