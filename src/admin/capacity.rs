//! `capacity`: the current capacity limits, their usage and queues
//! (read-only; `docs/capacity.md`).

use serde::{Deserialize, Serialize};

use super::AdminError;
use crate::capacity::{PoolView, TypeView};
use crate::engine::metrics::Metrics;
use crate::engine::Engine;
use crate::protocol::VERSION;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CapacityRequest {
    pub v: u32,
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
    /// Limited task types, by name: caps, usage, waiting tasks, per key.
    #[serde(default)]
    pub task_types: Vec<TypeView>,
    /// Pools, by name.
    #[serde(default)]
    pub pools: Vec<PoolView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

pub(super) fn capacity(engine: &Engine) -> Result<CapacityReply, AdminError> {
    let ctx = engine.ctx();
    let m = &ctx.metrics;
    let view = ctx.capacity.view();
    Ok(CapacityReply {
        v: VERSION,
        in_progress_limit: ctx.config.in_progress_max as u64,
        in_progress: Metrics::get(&m.in_progress),
        backlog_held: Metrics::get(&m.backlog_held),
        task_types: view.task_types,
        pools: view.pools,
        error: None,
        code: None,
    })
}
