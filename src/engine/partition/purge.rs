//! The retention purge: every stored row of the workflows the core picked,
//! deleted in one batch.

use super::PartitionState;
use crate::engine::metrics::Metrics;
use crate::engine::partition_core::SweepPoll;
use crate::storage::store::WorkflowStore;
use crate::storage::Op;
use rustc_hash::FxHashSet as FastSet;

/// Every stored row of the `doomed` (id, status code) workflows of
/// `partition`: journal, snapshot, status-index entry and timers; with the
/// set of their ids.
pub fn purge_ops(
    store: &WorkflowStore,
    partition: u16,
    doomed: &[(String, u8)],
) -> Result<(Vec<Op>, FastSet<String>), crate::storage::Error> {
    let ids: FastSet<String> = doomed.iter().map(|(id, _)| id.clone()).collect();
    let mut ops = Vec::new();
    for (id, code) in doomed {
        ops.extend(store.workflow_delete_ops(partition, id)?);
        ops.push(store.status_delete(partition, *code, id)?);
    }
    ops.extend(store.timer_deletes_where(partition, &mut |id| ids.contains(id))?);
    Ok((ops, ids))
}

impl PartitionState {
    /// One tick's share of a retention round (see
    /// [`super::partition_core::Sweep`]): the core picks due terminal
    /// workflows that have no entry here; they are purged in one batch.
    pub(super) async fn retention_step(&mut self, now: u64) {
        if !self.core.sweep_begin(now) {
            return;
        }
        let store = self.ctx.store.clone();
        loop {
            match self.core.sweep_poll(now) {
                SweepPoll::Scan { code, after, n } => {
                    let page: Result<Vec<(String, crate::storage::StatusEntry)>, _> = match &after {
                        None => store.list_status(self.index, code, n),
                        Some(a) => store.list_status_after(self.index, code, a, n),
                    };
                    match page {
                        Ok(page) => {
                            let page = page
                                .into_iter()
                                .map(|(id, entry)| (id, entry.updated_at_ms))
                                .collect();
                            self.core.sweep_feed(page, now);
                        }
                        Err(e) => {
                            tracing::error!(partition = self.index, error = %e,
                                "retention: cannot read the status index; round abandoned");
                            self.core.sweep_failed(now);
                            return;
                        }
                    }
                }
                SweepPoll::Done(doomed) => {
                    if !doomed.is_empty() {
                        self.purge(doomed).await;
                    }
                    return;
                }
            }
        }
    }

    /// Deletes every stored row of the `doomed` workflows in one batch and
    /// forgets them (core, timers). Runs in the partition's serialized
    /// context: none of them has an entry (the core checked), and no message
    /// can be routed before this returns.
    pub(super) async fn purge(&mut self, doomed: Vec<(String, u8)>) {
        let ctx = self.ctx.clone();
        let (ops, ids) = match purge_ops(&ctx.store, self.index, &doomed) {
            Ok(built) => built,
            Err(e) => {
                tracing::error!(partition = self.index, error = %e, "retention: cannot prepare a purge");
                return;
            }
        };
        if ops.is_empty() {
            return;
        }
        if let Err(e) = ctx.committer.commit(ops).await {
            Metrics::inc(&ctx.metrics.commit_errors);
            tracing::warn!(partition = self.index, error = %e,
                "retention: purge batch failed; retried next round");
            return;
        }
        let purged: Vec<String> = ids.iter().cloned().collect();
        self.core.purged(&purged);
        self.shared
            .lock()
            .schedule
            .timers
            .disarm_where(|id| ids.contains(id));
        ctx.metrics
            .workflows_purged
            .fetch_add(ids.len() as u64, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            partition = self.index,
            purged = ids.len(),
            "retention: terminal workflows purged"
        );
    }
}
