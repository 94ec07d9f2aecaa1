//! Engine counters, shared by every actor through an `Arc`. Plain atomics:
//! the hot path pays one relaxed increment per fact.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

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
    pub actor_restarts: AtomicU64,
    pub workflows_parked: AtomicU64,
    pub actors_spawned: AtomicU64,
    pub passivations: AtomicU64,
    pub resident: AtomicU64,
    pub commit_errors: AtomicU64,
    pub corrupt_workflows: AtomicU64,
    /// Completed workflows whose outputs failed the caller's check.
    pub output_errors: AtomicU64,
    pub journal_records: AtomicU64,
    pub journal_events: AtomicU64,
    pub snapshots: AtomicU64,
    /// Time of the first accepted start and latest terminal transition (ms).
    pub first_start_ms: AtomicU64,
    pub last_terminal_ms: AtomicU64,
    pub workflow_latency_ms: Histogram,
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
}
