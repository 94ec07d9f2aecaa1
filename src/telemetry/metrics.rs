//! The engine's counters, shared by every actor through an `Arc`. The hot
//! path pays one relaxed increment per fact; a labelled fact (by pipeline,
//! by task type) pays one read-locked map lookup on top. Each exported
//! field names its family and help right above it (see
//! [`metric_set!`](super::export::metric_set)); the rest are kept for the
//! summaries of `dev` and `loadgen`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use rustc_hash::FxHashSet;

use super::export::metric_set;
use super::family::Family;
use super::quantiles::LatencyQuantiles;
use super::{Count, Counter, FixedHistogram, Gauge};
use crate::workflow::IgnoreReason;

/// Bucket bounds (ms) of task latency, dispatch → accepted result: 5 ms to 1 h.
pub const TASK_LATENCY_BOUNDS_MS: &[u64] = &[
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000,
    600_000, 1_800_000, 3_600_000,
];
/// Bucket bounds (ms) of end-to-end workflow latency: 100 ms to 1 day.
pub const WORKFLOW_LATENCY_BOUNDS_MS: &[u64] = &[
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000, 600_000,
    1_800_000, 3_600_000, 7_200_000, 21_600_000, 86_400_000,
];
/// Bucket bounds (µs) of one synced journal write: 100 µs to 5 s.
pub const COMMIT_LATENCY_BOUNDS_US: &[u64] = &[
    100, 250, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 5_000_000,
];
/// Bucket bounds (storage ops) of one journal write batch: 1 to 16,384.
pub const COMMIT_BATCH_BOUNDS: &[u64] = &[
    1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1_024, 2_048, 4_096, 8_192, 16_384,
];

metric_set! {
    /// Per-pipeline workflow counters.
    #[derive(Debug)]
    pub struct PipelineStats {
        @metric("workflows_started", "Workflows started, by pipeline.")
        pub started: Counter,
        @metric("workflows_completed", "Workflows that reached completed, by pipeline.")
        pub completed: Counter,
        @metric("workflows_failed", "Workflows that reached failed (parked ones included), by pipeline.")
        pub failed: Counter,
        @metric("workflows_cancelled", "Workflows that reached cancelled (cancel or workflow timeout), by pipeline.")
        pub cancelled: Counter,
        /// Created → terminal, per terminal transition (a reopened workflow
        /// is measured from its creation again).
        @metric("workflow_latency_seconds", "Workflow creation to terminal status, by pipeline.")
        pub latency: FixedHistogram,
        /// Released from the backlog and not ended (what
        /// `[pipeline] in_progress_max` bounds).
        @metric("pipeline_workflows_in_progress", "Bulk-accepted or recovered workflows whose tasks were sent and that have not ended yet, by pipeline.")
        pub in_progress: Gauge,
        @metric("pipeline_workflows_in_progress_limit", "Most bulk-accepted or recovered workflows of the pipeline in progress at once ([pipeline] in_progress_max; 0: none of its own).")
        pub in_progress_limit: Gauge,
    }
}

impl Default for PipelineStats {
    fn default() -> Self {
        PipelineStats {
            started: Counter::default(),
            completed: Counter::default(),
            failed: Counter::default(),
            cancelled: Counter::default(),
            latency: FixedHistogram::new(WORKFLOW_LATENCY_BOUNDS_MS, 1000.0),
            in_progress: Gauge::default(),
            in_progress_limit: Gauge::default(),
        }
    }
}

metric_set! {
    /// Per-task-type counters.
    #[derive(Debug)]
    pub struct TaskTypeStats {
        /// New attempts sent to workers (first attempts and retries, not re-sends).
        @metric("task_attempts", "Attempts sent to workers (first attempts and retries; re-sends after a restart excluded), by task type.")
        pub attempts: Counter,
        @metric("task_retries", "Attempts after the first, by task type.")
        pub retries: Counter,
        @metric("task_timeouts", "Attempts that timed out (schedule-to-start, start-to-close or heartbeat), by task type.")
        pub timeouts: Counter,
        @metric("task_failures", "Attempts whose worker reported a failure, by task type.")
        pub failures: Counter,
        @metric("task_successes", "Attempts whose worker reported success, by task type.")
        pub successes: Counter,
        /// Retries whose backoff was over but the retry budget put back
        /// (each time one was put back; see `crate::workflow::budget`).
        @metric("task_retries_deferred", "Retries put back by the retry budget (each deferral counted), by task type.")
        pub retries_deferred: Counter,
        /// Dispatch → accepted result (success or failure) of the attempt.
        @metric("task_latency_seconds", "Attempt dispatch (as journaled) to its accepted result, success or failure, by task type.")
        pub latency: FixedHistogram,
        /// Offer to admission of attempts of limited task types (0 when
        /// one was sent at once); see `crate::capacity`.
        @metric("task_queue_wait_seconds", "Time attempts of a limited task type waited in the admission gate before they were sent, by task type.")
        pub queue_wait: FixedHistogram,
    }
}

impl Default for TaskTypeStats {
    fn default() -> Self {
        TaskTypeStats {
            attempts: Counter::default(),
            retries: Counter::default(),
            timeouts: Counter::default(),
            failures: Counter::default(),
            successes: Counter::default(),
            retries_deferred: Counter::default(),
            latency: FixedHistogram::new(TASK_LATENCY_BOUNDS_MS, 1000.0),
            queue_wait: FixedHistogram::new(TASK_LATENCY_BOUNDS_MS, 1000.0),
        }
    }
}

/// A partition's liveness deadlines as the backlog gauges read them:
/// `(task type, outstanding attempts, dispatch time of the oldest in ms)`
/// per task type.
pub trait BacklogSource: Send + Sync {
    fn each_backlog(&self, f: &mut dyn FnMut(&str, u64, Option<u64>));
}

/// The admission gate's limits and usage, read at scrape time.
pub trait CapacitySource: Send + Sync {
    fn capacity_view(&self) -> crate::capacity::GateView;
    /// Backfills reporting that they hold their starts, as of `now_ms`.
    fn backfills_held(&self, now_ms: u64) -> u64;
}

/// Where the exposition finds the admission gate (see [`Metrics::capacity_view`]).
#[derive(Default)]
pub struct CapacitySources {
    gate: Mutex<Option<Weak<dyn CapacitySource>>>,
}

impl std::fmt::Debug for CapacitySources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CapacitySources")
            .field("registered", &self.gate.lock().is_some())
            .finish()
    }
}

/// The clock the backlog ages are measured with (ms).
pub type NowMs = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Where the exposition finds the partitions' liveness deadlines, read at
/// scrape time (see [`Metrics::task_backlog`]).
#[derive(Default)]
pub struct BacklogSources {
    parts: Mutex<Vec<(u16, Weak<dyn BacklogSource>)>>,
    now_ms: Mutex<Option<NowMs>>,
}

impl std::fmt::Debug for BacklogSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BacklogSources")
            .field("partitions", &self.parts.lock().len())
            .finish()
    }
}

/// Outstanding attempts of one task type (see [`Metrics::task_backlog`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Backlog {
    pub task_type: String,
    pub outstanding: u64,
    /// Age of the oldest outstanding attempt, 0 when there is none.
    pub oldest_age_secs: f64,
}

metric_set! {
    /// Everything the engine counts.
    #[derive(Debug, Default)]
    pub struct Metrics {
        /// Workflow counters by pipeline name.
        @family("pipeline")
        pub by_pipeline: Family<PipelineStats>,
        @metric("workflows_reopened", "Terminal workflows reopened.")
        pub workflows_reopened: Counter,
        /// Non-terminal workflows by status, kept by the engine: set from
        /// the status index when a partition first recovers, then moved by
        /// every status change.
        @metric("workflows_running", "Workflows in status running (kept by the engine from the status index at start-up).")
        pub workflows_running: Gauge,
        @metric("workflows_paused", "Workflows in status paused.")
        pub workflows_paused: Gauge,
        @metric("partitions_served", "Partitions this node's engine serves now (a cluster node: its share of the leases; a single node: all).")
        pub partitions_served: Gauge,
        /// Attempt counters by task type.
        @family("task_type")
        pub by_task_type: Family<TaskTypeStats>,
        @metric("tasks_resent", "Attempts sent again with the same task id after a restart.")
        pub tasks_redispatched: Counter,
        @labelled("messages_ignored", "Results and timers recognised and ignored, by reason.", "reason" = "duplicate")
        pub duplicates: Counter,
        @labelled("messages_ignored", "Results and timers recognised and ignored, by reason.", "reason" = "stale_attempt")
        pub stale_attempts: Counter,
        @labelled("messages_ignored", "Results and timers recognised and ignored, by reason.", "reason" = "unknown_task")
        pub unknown_tasks: Counter,
        @labelled("messages_ignored", "Results and timers recognised and ignored, by reason.", "reason" = "workflow_terminal")
        pub late_results: Counter,
        @labelled("messages_ignored", "Results and timers recognised and ignored, by reason.", "reason" = "stale_timer")
        pub stale_timers: Counter,
        /// Worker messages refused by the protocol decoder, by reason.
        @labelled("messages_rejected", "Worker and admin messages refused by the protocol decoder, by reason.", "reason" = "oversized")
        pub messages_oversized: Counter,
        @labelled("messages_rejected", "Worker and admin messages refused by the protocol decoder, by reason.", "reason" = "malformed")
        pub messages_malformed: Counter,
        @labelled("messages_rejected", "Worker and admin messages refused by the protocol decoder, by reason.", "reason" = "unsupported_version")
        pub messages_unsupported_version: Counter,
        @labelled("messages_rejected", "Worker and admin messages refused by the protocol decoder, by reason.", "reason" = "invalid")
        pub messages_invalid: Counter,
        /// Results and heartbeats without their attempt's token, or with a wrong one.
        @labelled("messages_rejected", "Worker and admin messages refused by the protocol decoder, by reason.", "reason" = "unauthenticated")
        pub messages_unauthenticated: Counter,
        /// Results and heartbeats on a partition subject that does not own the workflow.
        @labelled("messages_rejected", "Worker and admin messages refused by the protocol decoder, by reason.", "reason" = "wrong_partition")
        pub messages_wrong_partition: Counter,
        /// Admin requests answered `unavailable` at once, by the bound
        /// that was reached (see `admin::IntakeLimits`).
        @labelled("requests_refused", "Admin requests answered unavailable (retryable) at once because intake was over a bound, by reason.", "reason" = "admin_queue_full")
        pub refused_admin_queue_full: Counter,
        @labelled("requests_refused", "Admin requests answered unavailable (retryable) at once because intake was over a bound, by reason.", "reason" = "start_rate")
        pub refused_start_rate: Counter,
        @labelled("requests_refused", "Admin requests answered unavailable (retryable) at once because intake was over a bound, by reason.", "reason" = "journal_backlog")
        pub refused_journal_backlog: Counter,
        @labelled("requests_refused", "Admin requests answered unavailable (retryable) at once because intake was over a bound, by reason.", "reason" = "journal_failing")
        pub refused_journal_failing: Counter,
        /// Signals sent to wait steps, by answer (`admin::signal`).
        @labelled("signals", "Signals sent to workflows (orchestrator signal), by how they were answered.", "result" = "accepted")
        pub signals_accepted: Counter,
        @labelled("signals", "Signals sent to workflows (orchestrator signal), by how they were answered.", "result" = "duplicate")
        pub signals_duplicate: Counter,
        @labelled("signals", "Signals sent to workflows (orchestrator signal), by how they were answered.", "result" = "unknown_workflow")
        pub signals_unknown_workflow: Counter,
        @labelled("signals", "Signals sent to workflows (orchestrator signal), by how they were answered.", "result" = "workflow_terminal")
        pub signals_workflow_terminal: Counter,
        @labelled("signals", "Signals sent to workflows (orchestrator signal), by how they were answered.", "result" = "invalid")
        pub signals_invalid: Counter,
        @labelled("signals", "Signals sent to workflows (orchestrator signal), by how they were answered.", "result" = "over_limit")
        pub signals_over_limit: Counter,
        @metric("inputs_rejected", "Inputs refused by a workflow (unknown pipeline, invalid command for its status).")
        pub rejected_inputs: Counter,
        @metric("journal_records", "Journal records (transitions) written.")
        pub journal_records: Counter,
        @metric("journal_events", "Journaled events.")
        pub journal_events: Counter,
        /// Inputs journaled in the same commit as an earlier input of the
        /// same workflow (taken together from the actor's inbox).
        @metric("journal_inputs_folded", "Inputs journaled in one commit with an earlier input of the same workflow.")
        pub inputs_folded: Counter,
        @metric("journal_commit_errors", "Transitions whose journal write failed.")
        pub commit_errors: Counter,
        @metric("child_workflows_started", "Child workflows asked for by child steps (a start performed again after a restart counts again).")
        pub children_started: Counter,
        @metric("child_workflows_refused", "Child workflows that could not start (their pipeline or version is not startable); each fails its parent's step.")
        pub children_refused: Counter,
        @metric("actor_restarts", "Workflow actors restarted after a crash.")
        pub actor_restarts: Counter,
        @metric("workflows_parked", "Workflows parked as failed after crashing their actor past the restart budget.")
        pub workflows_parked: Counter,
        /// Terminal workflows deleted by retention.
        @metric("workflows_purged", "Terminal workflows deleted by retention (journal, snapshot, index entry, timers).")
        pub workflows_purged: Counter,
        @metric("workflow_passivations", "Workflow actors stopped while idle (their state kept in storage and cache).")
        pub passivations: Counter,
        @metric("spans_exported", "Spans accepted by the OTLP collector.")
        pub spans_exported: Counter,
        @metric("spans_dropped", "Spans dropped because the export queue was full.")
        pub spans_dropped: Counter,
        @metric("spans_failed", "Spans not exported: every attempt failed, or the collector rejected them.")
        pub spans_failed: Counter,
        /// Holds begun by backfills on their error-rate bound, as they
        /// report them (`backfill --max-error-rate`).
        @metric("backfill_holds", "Times a backfill began holding its new starts because the error rate of its task types passed its --max-error-rate.")
        pub backfill_holds: Counter,
        @metric("workflows_resident", "Workflow actors alive in memory.")
        pub resident: Gauge,
        /// Bulk-accepted or recovered workflows released from the backlog
        /// (their tasks sent) that have not ended yet.
        @metric("workflows_in_progress", "Bulk-accepted or recovered workflows whose tasks were sent and that have not ended yet.")
        pub in_progress: Gauge,
        @metric("workflows_in_progress_limit", "Most bulk-accepted or recovered workflows in progress at once (engine.in_progress_max).")
        pub in_progress_limit: Gauge,
        /// Bulk-accepted or recovered workflows waiting for an in-progress slot.
        @metric("workflows_backlog_held", "Bulk-accepted or recovered workflows waiting in the backlog, their tasks not sent yet.")
        pub backlog_held: Gauge,
        pub workflows_started: Counter,
        pub workflows_completed: Counter,
        pub workflows_failed: Counter,
        pub workflows_cancelled: Counter,
        /// Non-terminal workflows found in storage at start-up.
        pub workflows_resumed: Counter,
        pub tasks_dispatched: Counter,
        pub task_retries: Counter,
        pub task_failures: Counter,
        pub task_timeouts: Counter,
        pub actors_spawned: Counter,
        pub corrupt_workflows: Counter,
        /// Completed workflows whose outputs failed the caller's check.
        pub output_errors: Counter,
        pub snapshots: Counter,
        /// Time of the first accepted start and latest terminal transition (ms).
        pub first_start_ms: AtomicU64,
        pub last_terminal_ms: AtomicU64,
        pub workflow_latency_ms: LatencyQuantiles,
        recovered_partitions: Mutex<FxHashSet<u16>>,
        pub backlog: BacklogSources,
        pub capacity: CapacitySources,
    }
}

impl Metrics {
    #[inline]
    pub fn inc(c: &impl Count) {
        c.bump();
    }

    #[inline]
    pub fn get(c: &impl Count) -> u64 {
        c.value()
    }

    pub fn ignored(&self, reason: IgnoreReason) {
        let c = match reason {
            IgnoreReason::Duplicate => &self.duplicates,
            IgnoreReason::StaleAttempt => &self.stale_attempts,
            IgnoreReason::UnknownTask => &self.unknown_tasks,
            IgnoreReason::WorkflowTerminal => &self.late_results,
            IgnoreReason::StaleTimer => &self.stale_timers,
        };
        c.inc();
    }

    /// Counts one answered signal by its result: `accepted`, `duplicate`,
    /// `unknown_workflow`, `workflow_terminal`, `over_limit`, or anything
    /// else as `invalid`.
    pub fn signal(&self, result: &str) {
        let c = match result {
            "accepted" => &self.signals_accepted,
            "duplicate" => &self.signals_duplicate,
            "unknown_workflow" => &self.signals_unknown_workflow,
            "workflow_terminal" => &self.signals_workflow_terminal,
            "over_limit" => &self.signals_over_limit,
            _ => &self.signals_invalid,
        };
        c.inc();
    }

    /// Counts a refused worker message by its `ProtocolError::reason()`.
    pub fn rejected_message(&self, reason: &str) {
        let c = match reason {
            "oversized" => &self.messages_oversized,
            "malformed" => &self.messages_malformed,
            "unsupported_version" => &self.messages_unsupported_version,
            "unauthenticated" => &self.messages_unauthenticated,
            "wrong_partition" => &self.messages_wrong_partition,
            _ => &self.messages_invalid,
        };
        c.inc();
    }

    /// Results and timeouts that were recognised and ignored.
    pub fn duplicates_ignored(&self) -> u64 {
        self.duplicates.get()
            + self.stale_attempts.get()
            + self.unknown_tasks.get()
            + self.late_results.get()
    }

    pub fn note_start(&self, now_ms: u64) {
        // First writer wins; 0 means unset.
        let _ = self
            .first_start_ms
            .compare_exchange(0, now_ms, Relaxed, Relaxed);
    }

    pub fn note_terminal(&self, now_ms: u64) {
        self.last_terminal_ms.fetch_max(now_ms, Relaxed);
    }

    /// A new attempt (`resend == false`) or a re-send after a restart went to workers.
    pub fn task_sent(&self, task_type: &str, attempt: u32, resend: bool) {
        if resend {
            self.tasks_redispatched.inc();
            return;
        }
        self.tasks_dispatched.inc();
        if attempt > 1 {
            self.task_retries.inc();
        }
        self.by_task_type.with(task_type, |t| {
            t.attempts.inc();
            if attempt > 1 {
                t.retries.inc();
            }
        });
    }

    fn status_gauge(&self, status: crate::workflow::Status) -> Option<&Gauge> {
        match status {
            crate::workflow::Status::Running => Some(&self.workflows_running),
            crate::workflow::Status::Paused => Some(&self.workflows_paused),
            _ => None,
        }
    }

    /// A workflow moved from `prev` (`None`: it is new) to `next`.
    pub fn status_changed(
        &self,
        prev: Option<crate::workflow::Status>,
        next: crate::workflow::Status,
    ) {
        if prev == Some(next) {
            return;
        }
        if let Some(g) = prev.and_then(|p| self.status_gauge(p)) {
            g.fetch_sub(1, Relaxed);
        }
        if let Some(g) = self.status_gauge(next) {
            g.fetch_add(1, Relaxed);
        }
    }

    /// A partition found `running` and `paused` workflows at recovery. Only
    /// its first recovery counts: after a restart of the partition, the
    /// gauges already hold its workflows.
    pub fn note_recovered(&self, partition: u16, running: u64, paused: u64) {
        if self.recovered_partitions.lock().insert(partition) {
            self.workflows_running
                .fetch_add(i64::try_from(running).unwrap_or(i64::MAX), Relaxed);
            self.workflows_paused
                .fetch_add(i64::try_from(paused).unwrap_or(i64::MAX), Relaxed);
        }
    }

    /// A partition stopped being served here with `running` and `paused`
    /// workflows: they leave the gauges (another node counts them), and
    /// its next recovery here counts them again.
    pub fn note_let_go(&self, partition: u16, running: u64, paused: u64) {
        if self.recovered_partitions.lock().remove(&partition) {
            self.workflows_running
                .fetch_sub(i64::try_from(running).unwrap_or(i64::MAX), Relaxed);
            self.workflows_paused
                .fetch_sub(i64::try_from(paused).unwrap_or(i64::MAX), Relaxed);
        }
    }

    /// Registers (or replaces, after a restart) the liveness deadlines of a
    /// partition and the clock their ages are measured with.
    pub fn register_partition<S, C>(&self, partition: u16, times: &Arc<S>, clock: Arc<C>)
    where
        S: BacklogSource + 'static,
        C: super::NowMsSource + ?Sized + 'static,
    {
        let source: Weak<dyn BacklogSource> = Arc::downgrade(times) as Weak<dyn BacklogSource>;
        let mut parts = self.backlog.parts.lock();
        parts.retain(|(p, w)| *p != partition && w.strong_count() > 0);
        parts.push((partition, source));
        let now_ms: NowMs = Arc::new(move || clock.now_ms());
        *self.backlog.now_ms.lock() = Some(now_ms);
    }

    /// Registers the admission gate whose usage the exposition shows.
    pub fn register_capacity<S: CapacitySource + 'static>(&self, gate: &Arc<S>) {
        let weak: Weak<dyn CapacitySource> = Arc::downgrade(gate) as Weak<dyn CapacitySource>;
        *self.capacity.gate.lock() = Some(weak);
    }

    /// The admission gate's limits and usage; empty when none is registered
    /// or nothing is limited. Cost: the gate's lock and a copy of its view.
    pub fn capacity_view(&self) -> crate::capacity::GateView {
        let gate = self.capacity.gate.lock().as_ref().and_then(Weak::upgrade);
        gate.map(|g| g.capacity_view()).unwrap_or_default()
    }

    /// Backfills that hold their new starts on their error-rate bound, as
    /// they last reported (forgotten 10 s after their last report).
    pub fn backfills_held(&self) -> u64 {
        let gate = self.capacity.gate.lock().as_ref().and_then(Weak::upgrade);
        let now = self.backlog.now_ms.lock().clone();
        match (gate, now) {
            (Some(g), Some(now)) => g.backfills_held(now()),
            _ => 0,
        }
    }

    /// Attempts sent to workers that have no accepted result or timeout yet
    /// ("outstanding"), by task type, with the age of the oldest one, summed
    /// over the partitions' liveness deadlines. Started attempts count too:
    /// a worker that never heartbeats never reports that it started. Tasks
    /// held back in the backlog are not sent yet and not counted.
    /// Cost: one lock per partition and work proportional to the number of
    /// task types (not of attempts).
    pub fn task_backlog(&self) -> Vec<Backlog> {
        let now = self.backlog.now_ms.lock().as_ref().map(|f| f());
        let parts: Vec<Arc<dyn BacklogSource>> = self
            .backlog
            .parts
            .lock()
            .iter()
            .filter_map(|(_, w)| w.upgrade())
            .collect();
        let mut by_type: BTreeMap<String, (u64, Option<u64>)> = BTreeMap::new();
        for p in parts {
            p.each_backlog(&mut |task_type, n, oldest| {
                let e = by_type.entry(task_type.to_string()).or_insert((0, None));
                e.0 += n;
                e.1 = match (e.1, oldest) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            });
        }
        by_type
            .into_iter()
            .map(|(task_type, (outstanding, oldest))| Backlog {
                task_type,
                outstanding,
                oldest_age_secs: match (now, oldest) {
                    (Some(now), Some(o)) if outstanding > 0 => {
                        now.saturating_sub(o) as f64 / 1000.0
                    }
                    _ => 0.0,
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_bounds_are_strictly_increasing() {
        for b in [
            TASK_LATENCY_BOUNDS_MS,
            WORKFLOW_LATENCY_BOUNDS_MS,
            COMMIT_LATENCY_BOUNDS_US,
            COMMIT_BATCH_BOUNDS,
        ] {
            assert!(b.windows(2).all(|w| w[0] < w[1]), "{b:?}");
        }
    }

    #[test]
    fn status_gauges_follow_transitions_and_first_recovery_only() {
        use crate::workflow::Status;
        let m = Metrics::default();
        m.note_recovered(0, 3, 1);
        m.note_recovered(0, 3, 1);
        m.status_changed(None, Status::Running);
        m.status_changed(Some(Status::Running), Status::Paused);
        m.status_changed(Some(Status::Paused), Status::Cancelled);
        m.status_changed(Some(Status::Running), Status::Completed);
        m.status_changed(Some(Status::Completed), Status::Running);
        assert_eq!(m.workflows_running.get(), 3);
        assert_eq!(m.workflows_paused.get(), 1);
        // Let go, then recovered again: counted once each time.
        m.note_let_go(0, 3, 1);
        m.note_let_go(0, 3, 1);
        assert_eq!(
            (m.workflows_running.get(), m.workflows_paused.get()),
            (0, 0)
        );
        m.note_recovered(0, 2, 0);
        assert_eq!(
            (m.workflows_running.get(), m.workflows_paused.get()),
            (2, 0)
        );
    }
}
