//! The one machine-readable closing line of `orchestrator dev`.

use std::fmt;

use crate::engine::Metrics;
use crate::storage::store::WorkflowStore;
use crate::workflow::Status;

/// Store-wide counts plus this process's figures.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    pub workflows: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
    /// Running or paused: every non-terminal workflow.
    pub running: u64,
    pub resumed: u64,
    pub tasks: u64,
    pub retries: u64,
    pub duplicates_ignored: u64,
    pub errors: u64,
    pub wal_syncs: u64,
    pub events_per_sync: f64,
    pub wf_per_s: f64,
    pub p50_ms: u64,
    pub p99_ms: u64,
    pub peak_rss_mib: u64,
}

/// Counts workflows per status from the status index of every partition.
pub fn status_counts(store: &WorkflowStore) -> Result<[u64; 5], String> {
    let mut counts = [0u64; 5];
    for p in 0..store.partitions() {
        for (k, s) in Status::ALL.iter().enumerate() {
            counts[k] += store.count_status(p, s.code()).map_err(|e| e.to_string())?;
        }
    }
    Ok(counts)
}

impl Summary {
    pub fn collect(
        store: &WorkflowStore,
        m: &Metrics,
        extra_errors: u64,
    ) -> Result<Summary, String> {
        let c = status_counts(store)?;
        let wal_syncs = store.wal_syncs();
        let events = Metrics::get(&m.journal_events);
        let completed_here = Metrics::get(&m.workflows_completed);
        let first = Metrics::get(&m.first_start_ms);
        let last = Metrics::get(&m.last_terminal_ms);
        let secs = if first > 0 && last > first {
            (last - first) as f64 / 1000.0
        } else {
            0.0
        };
        Ok(Summary {
            workflows: c.iter().sum(),
            running: c[0] + c[1],
            completed: c[2],
            failed: c[3],
            cancelled: c[4],
            resumed: Metrics::get(&m.workflows_resumed),
            tasks: Metrics::get(&m.tasks_dispatched) + Metrics::get(&m.tasks_redispatched),
            retries: Metrics::get(&m.task_retries),
            duplicates_ignored: m.duplicates_ignored(),
            errors: Metrics::get(&m.output_errors)
                + Metrics::get(&m.corrupt_workflows)
                + extra_errors,
            wal_syncs,
            events_per_sync: if wal_syncs > 0 {
                events as f64 / wal_syncs as f64
            } else {
                0.0
            },
            wf_per_s: if secs > 0.0 {
                completed_here as f64 / secs
            } else {
                0.0
            },
            p50_ms: m.workflow_latency_ms.quantile(0.50),
            p99_ms: m.workflow_latency_ms.quantile(0.99),
            peak_rss_mib: super::peak_rss_mib(),
        })
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "summary workflows={} completed={} failed={} cancelled={} running={} resumed={} \
             tasks={} retries={} duplicates_ignored={} errors={} wal_syncs={} events_per_sync={:.1} \
             wf_per_s={:.0} p50_ms={} p99_ms={} peak_rss_mib={}",
            self.workflows,
            self.completed,
            self.failed,
            self.cancelled,
            self.running,
            self.resumed,
            self.tasks,
            self.retries,
            self.duplicates_ignored,
            self.errors,
            self.wal_syncs,
            self.events_per_sync,
            self.wf_per_s,
            self.p50_ms,
            self.p99_ms,
            self.peak_rss_mib
        )
    }
}
