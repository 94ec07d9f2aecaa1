//! Engine counters, shared by every actor through an `Arc`. Plain atomics:
//! the hot path pays one relaxed increment per fact; a labelled fact (by
//! pipeline, by task type) pays one read-locked map lookup on top.
//!
//! The Prometheus exposition of all this is built in [`crate::http`]; the
//! primitives it renders ([`Family`], [`FixedHistogram`]) and the text
//! writer ([`prom`]) live here.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};

use super::clock::Clock;
use super::fasthash::{FastMap, FastSet};
use super::transition::PartitionTimes;
use crate::workflow::IgnoreReason;

/// A latency histogram with ~4% wide logarithmic buckets from 1 ms to ~1 day,
/// good enough for p50/p99 without storing samples.
#[derive(Debug)]
pub struct Histogram {
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
}

const BUCKETS: usize = 512;
const GROWTH: f64 = 1.04;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    fn bucket_of(ms: u64) -> usize {
        if ms == 0 {
            return 0;
        }
        let b = ((ms as f64).ln() / GROWTH.ln()).floor() as usize + 1;
        b.min(BUCKETS - 1)
    }

    /// Upper bound (ms) of bucket `b`.
    fn upper_ms(b: usize) -> u64 {
        if b == 0 {
            0
        } else {
            GROWTH.powi(b as i32).ceil() as u64
        }
    }

    pub fn record(&self, ms: u64) {
        self.buckets[Self::bucket_of(ms)].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// The value at quantile `q` in [0, 1] (bucket upper bound), 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, c) in self.buckets.iter().enumerate() {
            seen += c.load(Relaxed);
            if seen >= rank {
                return Self::upper_ms(b);
            }
        }
        Self::upper_ms(BUCKETS - 1)
    }
}

/// Most distinct label values one [`Family`] keeps. Label values come from
/// pipeline files and task types (a few dozen), but a bound keeps a
/// misconfiguration from growing the map and the exposition without limit:
/// values past it are counted under [`OVERFLOW_LABEL`].
pub const FAMILY_LABELS_MAX: usize = 256;

/// The label value that collects every value past [`FAMILY_LABELS_MAX`].
pub const OVERFLOW_LABEL: &str = "_other";

/// Counters (or gauges, histograms) per label value, e.g. per pipeline.
///
/// Hot path: one read lock and one map lookup, then whatever relaxed atomic
/// updates the closure makes. The write lock is taken only the first time a
/// label value is seen.
pub struct Family<E> {
    map: RwLock<FastMap<Arc<str>, Arc<E>>>,
    max: usize,
}

impl<E> std::fmt::Debug for Family<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Family")
            .field("labels", &self.map.read().len())
            .field("max", &self.max)
            .finish()
    }
}

impl<E: Default> Default for Family<E> {
    fn default() -> Self {
        Self::with_max(FAMILY_LABELS_MAX)
    }
}

impl<E: Default> Family<E> {
    /// A family keeping at most `max` label values (at least 1) plus the overflow one.
    pub fn with_max(max: usize) -> Self {
        Family {
            map: RwLock::new(FastMap::default()),
            max: max.max(1),
        }
    }

    /// Runs `f` on the entry of `label`, creating it on first use.
    #[inline]
    pub fn with<R>(&self, label: &str, f: impl FnOnce(&E) -> R) -> R {
        if let Some(e) = self.map.read().get(label) {
            return f(e);
        }
        let e = self.insert(label);
        f(&e)
    }

    #[cold]
    fn insert(&self, label: &str) -> Arc<E> {
        let mut map = self.map.write();
        if let Some(e) = map.get(label) {
            return e.clone();
        }
        let key: &str = if map.len() >= self.max {
            OVERFLOW_LABEL
        } else {
            label
        };
        map.entry(Arc::from(key))
            .or_insert_with(|| Arc::new(E::default()))
            .clone()
    }

    /// Every label value and its entry, sorted by label value.
    pub fn snapshot(&self) -> Vec<(Arc<str>, Arc<E>)> {
        let mut v: Vec<(Arc<str>, Arc<E>)> = self
            .map
            .read()
            .iter()
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Label values kept (the overflow one included).
    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A Prometheus-style histogram with fixed upper bounds, in an integer base
/// unit (ms, µs, entries); `unit` converts to the exposed unit (e.g. 1000 for
/// ms → seconds). Recording is a binary search over the bounds plus three
/// relaxed increments.
pub struct FixedHistogram {
    bounds: &'static [u64],
    /// Per bucket (not cumulative); the last one is `+Inf`.
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
    unit: f64,
}

impl std::fmt::Debug for FixedHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FixedHistogram")
            .field("count", &self.snapshot().count)
            .finish()
    }
}

/// A histogram read at one moment, in the exposed unit.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound, cumulative count)`, bounds increasing, without `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    /// Also the `+Inf` bucket.
    pub count: u64,
}

impl FixedHistogram {
    /// `bounds` must be strictly increasing (checked in tests of the constants).
    pub fn new(bounds: &'static [u64], unit: f64) -> Self {
        FixedHistogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            unit: if unit > 0.0 { unit } else { 1.0 },
        }
    }

    #[inline]
    pub fn record(&self, value: u64) {
        // First bucket whose bound is >= value (`le` semantics).
        let i = self.bounds.partition_point(|b| *b < value);
        self.counts[i].fetch_add(1, Relaxed);
        self.sum.fetch_add(value, Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0u64;
        let mut buckets = Vec::with_capacity(self.bounds.len());
        for (b, c) in self.bounds.iter().zip(self.counts.iter()) {
            cumulative += c.load(Relaxed);
            buckets.push((*b as f64 / self.unit, cumulative));
        }
        cumulative += self.counts[self.bounds.len()].load(Relaxed);
        HistogramSnapshot {
            buckets,
            sum: self.sum.load(Relaxed) as f64 / self.unit,
            count: cumulative,
        }
    }
}

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

/// Per-pipeline workflow counters.
#[derive(Debug)]
pub struct PipelineStats {
    pub started: AtomicU64,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub cancelled: AtomicU64,
    /// Created → terminal, per terminal transition (a reopened workflow is
    /// measured from its creation again).
    pub latency: FixedHistogram,
}

impl Default for PipelineStats {
    fn default() -> Self {
        PipelineStats {
            started: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            latency: FixedHistogram::new(WORKFLOW_LATENCY_BOUNDS_MS, 1000.0),
        }
    }
}

/// Per-task-type counters.
#[derive(Debug)]
pub struct TaskTypeStats {
    /// New attempts sent to workers (first attempts and retries, not re-sends).
    pub attempts: AtomicU64,
    /// Attempts after the first.
    pub retries: AtomicU64,
    /// Attempts that timed out (any deadline).
    pub timeouts: AtomicU64,
    /// Attempts whose worker reported a failure.
    pub failures: AtomicU64,
    /// Retries whose backoff was over but the retry budget put back (each
    /// time one was put back; see `crate::workflow::budget`).
    pub retries_deferred: AtomicU64,
    /// Dispatch → accepted result (success or failure) of the attempt.
    pub latency: FixedHistogram,
}

impl Default for TaskTypeStats {
    fn default() -> Self {
        TaskTypeStats {
            attempts: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            retries_deferred: AtomicU64::new(0),
            latency: FixedHistogram::new(TASK_LATENCY_BOUNDS_MS, 1000.0),
        }
    }
}

/// Where the exposition finds the partitions' liveness deadlines, read at
/// scrape time (see [`Metrics::task_backlog`]).
#[derive(Default)]
pub struct BacklogSources {
    parts: Mutex<Vec<(u16, Weak<Mutex<PartitionTimes>>)>>,
    clock: Mutex<Option<Arc<dyn Clock>>>,
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

/// Everything the engine counts.
#[derive(Debug, Default)]
pub struct Metrics {
    pub workflows_started: AtomicU64,
    pub workflows_completed: AtomicU64,
    pub workflows_failed: AtomicU64,
    pub workflows_cancelled: AtomicU64,
    pub workflows_reopened: AtomicU64,
    /// Non-terminal workflows found in storage at start-up.
    pub workflows_resumed: AtomicU64,
    pub tasks_dispatched: AtomicU64,
    pub tasks_redispatched: AtomicU64,
    pub task_retries: AtomicU64,
    pub task_failures: AtomicU64,
    pub task_timeouts: AtomicU64,
    pub duplicates: AtomicU64,
    pub stale_attempts: AtomicU64,
    pub unknown_tasks: AtomicU64,
    pub late_results: AtomicU64,
    pub stale_timers: AtomicU64,
    pub rejected_inputs: AtomicU64,
    /// Worker messages refused by the protocol decoder, by reason.
    pub messages_oversized: AtomicU64,
    pub messages_malformed: AtomicU64,
    pub messages_unsupported_version: AtomicU64,
    pub messages_invalid: AtomicU64,
    /// Results and heartbeats without their attempt's token, or with a wrong one.
    pub messages_unauthenticated: AtomicU64,
    /// Results and heartbeats on a partition subject that does not own the workflow.
    pub messages_wrong_partition: AtomicU64,
    pub actor_restarts: AtomicU64,
    pub workflows_parked: AtomicU64,
    /// Terminal workflows deleted by retention.
    pub workflows_purged: AtomicU64,
    pub actors_spawned: AtomicU64,
    pub passivations: AtomicU64,
    pub resident: AtomicU64,
    pub commit_errors: AtomicU64,
    /// Inputs journaled in the same commit as an earlier input of the same
    /// workflow (taken together from the actor's inbox).
    pub inputs_folded: AtomicU64,
    pub corrupt_workflows: AtomicU64,
    /// Completed workflows whose outputs failed the caller's check.
    pub output_errors: AtomicU64,
    pub journal_records: AtomicU64,
    pub journal_events: AtomicU64,
    pub snapshots: AtomicU64,
    /// Spans accepted by the OTLP collector.
    pub spans_exported: AtomicU64,
    /// Spans dropped because the export queue was full.
    pub spans_dropped: AtomicU64,
    /// Spans whose export failed after every attempt, or that the collector rejected.
    pub spans_failed: AtomicU64,
    /// Time of the first accepted start and latest terminal transition (ms).
    pub first_start_ms: AtomicU64,
    pub last_terminal_ms: AtomicU64,
    pub workflow_latency_ms: Histogram,
    /// Workflow counters by pipeline name.
    pub by_pipeline: Family<PipelineStats>,
    /// Attempt counters by task type.
    pub by_task_type: Family<TaskTypeStats>,
    /// Non-terminal workflows by status, kept by the engine: set from the
    /// status index when a partition first recovers, then moved by every
    /// status change.
    pub workflows_running: AtomicI64,
    pub workflows_paused: AtomicI64,
    recovered_partitions: Mutex<FastSet<u16>>,
    pub backlog: BacklogSources,
}

impl Metrics {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Relaxed)
    }

    pub fn ignored(&self, reason: IgnoreReason) {
        let c = match reason {
            IgnoreReason::Duplicate => &self.duplicates,
            IgnoreReason::StaleAttempt => &self.stale_attempts,
            IgnoreReason::UnknownTask => &self.unknown_tasks,
            IgnoreReason::WorkflowTerminal => &self.late_results,
            IgnoreReason::StaleTimer => &self.stale_timers,
        };
        Self::inc(c);
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
        Self::inc(c);
    }

    /// Results and timeouts that were recognised and ignored.
    pub fn duplicates_ignored(&self) -> u64 {
        Self::get(&self.duplicates)
            + Self::get(&self.stale_attempts)
            + Self::get(&self.unknown_tasks)
            + Self::get(&self.late_results)
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
            Self::inc(&self.tasks_redispatched);
            return;
        }
        Self::inc(&self.tasks_dispatched);
        if attempt > 1 {
            Self::inc(&self.task_retries);
        }
        self.by_task_type.with(task_type, |t| {
            t.attempts.fetch_add(1, Relaxed);
            if attempt > 1 {
                t.retries.fetch_add(1, Relaxed);
            }
        });
    }

    fn status_gauge(&self, status: crate::workflow::Status) -> Option<&AtomicI64> {
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

    /// Registers (or replaces, after a restart) the clocks of a partition.
    pub fn register_partition(
        &self,
        partition: u16,
        times: &Arc<Mutex<PartitionTimes>>,
        clock: Arc<dyn Clock>,
    ) {
        let mut parts = self.backlog.parts.lock();
        parts.retain(|(p, w)| *p != partition && w.strong_count() > 0);
        parts.push((partition, Arc::downgrade(times)));
        *self.backlog.clock.lock() = Some(clock);
    }

    /// Attempts sent to workers that have no accepted result or timeout yet
    /// ("outstanding"), by task type, with the age of the oldest one, summed
    /// over the partitions' liveness deadlines. Started attempts count too:
    /// a worker that never heartbeats never reports that it started. Tasks
    /// held back under the resident cap are not sent yet and not counted.
    /// Cost: one lock per partition and work proportional to the number of
    /// task types (not of attempts).
    pub fn task_backlog(&self) -> Vec<Backlog> {
        let now = self.backlog.clock.lock().as_ref().map(|c| c.now_ms());
        let parts: Vec<Arc<Mutex<PartitionTimes>>> = self
            .backlog
            .parts
            .lock()
            .iter()
            .filter_map(|(_, w)| w.upgrade())
            .collect();
        let mut by_type: BTreeMap<String, (u64, Option<u64>)> = BTreeMap::new();
        for p in parts {
            let t = p.lock();
            for (task_type, n, oldest) in t.liveness.backlog() {
                let e = by_type.entry(task_type.to_string()).or_insert((0, None));
                e.0 += n;
                e.1 = match (e.1, oldest) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
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

/// Prometheus text exposition format 0.0.4, written by hand.
pub mod prom {
    use std::fmt::Write;

    use super::HistogramSnapshot;

    /// The `Content-Type` of the exposition.
    pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

    /// An exposition being written. Family and label names are the
    /// caller's constants; label values are escaped.
    #[derive(Debug, Default)]
    pub struct Text {
        out: String,
    }

    /// A float the way Prometheus reads it.
    pub fn float(v: f64) -> String {
        if v.is_nan() {
            "NaN".into()
        } else if v == f64::INFINITY {
            "+Inf".into()
        } else if v == f64::NEG_INFINITY {
            "-Inf".into()
        } else {
            format!("{v}")
        }
    }

    /// Escapes a label value: backslash, double quote and line feed.
    pub fn escape(v: &str) -> String {
        let mut s = String::with_capacity(v.len());
        for c in v.chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '"' => s.push_str("\\\""),
                '\n' => s.push_str("\\n"),
                c => s.push(c),
            }
        }
        s
    }

    fn labels(out: &mut String, labels: &[(&str, &str)], extra: Option<(&str, &str)>) {
        if labels.is_empty() && extra.is_none() {
            return;
        }
        out.push('{');
        let mut first = true;
        for (k, v) in labels.iter().copied().chain(extra) {
            if !first {
                out.push(',');
            }
            first = false;
            let _ = write!(out, "{k}=\"{}\"", escape(v));
        }
        out.push('}');
    }

    impl Text {
        /// `# HELP` and `# TYPE` lines of a family; its samples follow.
        pub fn family(&mut self, name: &str, kind: &str, help: &str) {
            let help = help.replace('\\', "\\\\").replace('\n', "\\n");
            let _ = writeln!(self.out, "# HELP {name} {help}");
            let _ = writeln!(self.out, "# TYPE {name} {kind}");
        }

        pub fn sample(&mut self, name: &str, l: &[(&str, &str)], value: f64) {
            self.out.push_str(name);
            labels(&mut self.out, l, None);
            let _ = writeln!(self.out, " {}", float(value));
        }

        /// The `_bucket`, `_sum` and `_count` samples of one histogram.
        pub fn histogram(&mut self, name: &str, l: &[(&str, &str)], h: &HistogramSnapshot) {
            let bucket = format!("{name}_bucket");
            for (le, n) in &h.buckets {
                self.out.push_str(&bucket);
                labels(&mut self.out, l, Some(("le", &float(*le))));
                let _ = writeln!(self.out, " {n}");
            }
            self.out.push_str(&bucket);
            labels(&mut self.out, l, Some(("le", "+Inf")));
            let _ = writeln!(self.out, " {}", h.count);
            self.sample(&format!("{name}_sum"), l, h.sum);
            self.sample(&format!("{name}_count"), l, h.count as f64);
        }

        pub fn finish(self) -> String {
            self.out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_a_bucket() {
        let h = Histogram::default();
        for ms in 1..=1000 {
            h.record(ms);
        }
        let p50 = h.quantile(0.5);
        let p99 = h.quantile(0.99);
        assert!((490..=530).contains(&p50), "p50 {p50}");
        assert!((980..=1040).contains(&p99), "p99 {p99}");
        assert_eq!(Histogram::default().quantile(0.5), 0);
    }

    #[test]
    fn families_count_per_label_and_fold_past_the_cap() {
        let f: Family<AtomicU64> = Family::with_max(2);
        for label in ["a", "b", "a", "c", "d", "a"] {
            f.with(label, |c| c.fetch_add(1, Relaxed));
        }
        let snap: Vec<(String, u64)> = f
            .snapshot()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.load(Relaxed)))
            .collect();
        assert_eq!(
            snap,
            vec![
                ("_other".to_string(), 2),
                ("a".to_string(), 3),
                ("b".to_string(), 1)
            ]
        );
        assert_eq!(f.len(), 3);
    }

    #[test]
    fn families_are_shared_between_threads() {
        let f: Arc<Family<AtomicU64>> = Arc::new(Family::default());
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let f = f.clone();
                std::thread::spawn(move || {
                    for n in 0..1000 {
                        let label = if n % 2 == 0 { "even" } else { "odd" };
                        f.with(label, |c| c.fetch_add(1, Relaxed));
                    }
                    i
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let total: u64 = f.snapshot().iter().map(|(_, c)| c.load(Relaxed)).sum();
        assert_eq!(total, 4000);
        assert_eq!(f.len(), 2);
    }

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
    fn fixed_histograms_are_cumulative_with_le_bounds() {
        static BOUNDS: &[u64] = &[10, 100];
        let h = FixedHistogram::new(BOUNDS, 1000.0);
        for v in [0, 10, 11, 100, 101, 5000] {
            h.record(v);
        }
        let s = h.snapshot();
        assert_eq!(s.buckets, vec![(0.01, 2), (0.1, 4)]);
        assert_eq!(s.count, 6);
        assert!((s.sum - 5.222).abs() < 1e-9, "{}", s.sum);
    }

    #[test]
    fn histograms_render_buckets_sum_and_count() {
        static BOUNDS: &[u64] = &[1, 5];
        let h = FixedHistogram::new(BOUNDS, 1.0);
        h.record(1);
        h.record(3);
        h.record(9);
        let mut t = prom::Text::default();
        t.family("x_batch", "histogram", "Batch size.");
        t.histogram("x_batch", &[("kind", "a\"b\\c\nd")], &h.snapshot());
        let text = t.finish();
        let expected = "# HELP x_batch Batch size.\n\
            # TYPE x_batch histogram\n\
            x_batch_bucket{kind=\"a\\\"b\\\\c\\nd\",le=\"1\"} 1\n\
            x_batch_bucket{kind=\"a\\\"b\\\\c\\nd\",le=\"5\"} 2\n\
            x_batch_bucket{kind=\"a\\\"b\\\\c\\nd\",le=\"+Inf\"} 3\n\
            x_batch_sum{kind=\"a\\\"b\\\\c\\nd\"} 13\n\
            x_batch_count{kind=\"a\\\"b\\\\c\\nd\"} 3\n";
        assert_eq!(text, expected);
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
        assert_eq!(m.workflows_running.load(Relaxed), 3);
        assert_eq!(m.workflows_paused.load(Relaxed), 1);
    }
}
