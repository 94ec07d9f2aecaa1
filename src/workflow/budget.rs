//! Adaptive retry throttling per task type (a retry budget, in the spirit of
//! gRPC's retry throttling and Finagle's `RetryBudget`).
//!
//! Per-workflow exponential backoff spreads one workflow's retries out, but
//! under a steady arrival rate every new workflow adds its own retries: a task
//! type failing for everyone is dispatched several times as often as when it
//! is healthy, exactly when it can least take it. The budget bounds that:
//!
//! > retries of a task type that have not succeeded, over the last
//! > `window_ms`, stay within `ratio` × first attempts of that type over the
//! > same window + `min_per_sec` × the window (and at least one).
//!
//! A retry that succeeded is refunded: retries that work are not load wasted
//! on a failing type, so once the type recovers the deferred backlog drains
//! as fast as its retries succeed. A retry beyond the budget is **deferred**,
//! never dropped: the shell re-arms its backoff timer `defer_ms` later
//! (±50 %, jitter drawn from the task id and the clock value) and asks again.
//! Deferring does not count as an attempt, so `max_attempts` still bounds the
//! attempts a workflow makes.
//!
//! Pure: every call takes the clock value; nothing here reads a clock.

use std::collections::VecDeque;

/// Settings of the budget (one per task type per partition; the engine
/// gives each partition its share of `min_per_sec`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudgetConfig {
    /// Off: every retry goes when its backoff is over.
    pub enabled: bool,
    /// Retries not (yet) succeeded allowed per first attempt, over the window.
    pub ratio: f64,
    /// Retries allowed per second whatever the ratio says.
    pub min_per_sec: f64,
    /// The sliding window the counts cover (kept in 10 buckets).
    pub window_ms: u64,
    /// A deferred retry asks again after this long, ±50 %.
    pub defer_ms: u64,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfig {
            enabled: true,
            ratio: 0.2,
            min_per_sec: 10.0,
            window_ms: 10_000,
            defer_ms: 1_000,
        }
    }
}

/// What the budget says about a retry whose backoff is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Dispatch it now (it has been counted).
    Now,
    /// Ask again at this time (unix ms).
    DeferUntil(u64),
}

/// Buckets the window is kept in.
const BUCKETS: u64 = 10;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    start_ms: u64,
    firsts: u64,
    retries: u64,
    refunds: u64,
}

/// Counts of one task type over the sliding window.
#[derive(Debug, Clone, Default)]
pub struct RetryBudget {
    buckets: VecDeque<Bucket>,
}

impl RetryBudget {
    fn width(cfg: &RetryBudgetConfig) -> u64 {
        (cfg.window_ms / BUCKETS).max(1)
    }

    /// Drops buckets that left the window and returns the current one.
    fn current(&mut self, cfg: &RetryBudgetConfig, now_ms: u64) -> &mut Bucket {
        let width = Self::width(cfg);
        let window = width * BUCKETS;
        while self
            .buckets
            .front()
            .is_some_and(|b| b.start_ms.saturating_add(window) <= now_ms)
        {
            self.buckets.pop_front();
        }
        let start = now_ms - now_ms % width;
        // A clock that stepped back keeps counting in the newest bucket.
        if self.buckets.back().is_none_or(|b| b.start_ms < start) {
            self.buckets.push_back(Bucket {
                start_ms: start,
                ..Bucket::default()
            });
        }
        let last = self.buckets.len() - 1;
        &mut self.buckets[last]
    }

    /// A first attempt of the type was dispatched.
    pub fn note_first(&mut self, cfg: &RetryBudgetConfig, now_ms: u64) {
        self.current(cfg, now_ms).firsts += 1;
    }

    /// A retry of the type succeeded: it no longer counts against the budget.
    pub fn note_retry_succeeded(&mut self, cfg: &RetryBudgetConfig, now_ms: u64) {
        self.current(cfg, now_ms).refunds += 1;
    }

    /// `(retries not refunded, retries allowed)` over the window at `now_ms`.
    pub fn usage(&mut self, cfg: &RetryBudgetConfig, now_ms: u64) -> (u64, f64) {
        self.current(cfg, now_ms);
        let (mut firsts, mut retries, mut refunds) = (0u64, 0u64, 0u64);
        for b in &self.buckets {
            firsts += b.firsts;
            retries += b.retries;
            refunds += b.refunds;
        }
        let window_s = (Self::width(cfg) * BUCKETS) as f64 / 1000.0;
        let allowed =
            (cfg.ratio.max(0.0) * firsts as f64 + cfg.min_per_sec.max(0.0) * window_s).max(1.0);
        (retries.saturating_sub(refunds), allowed)
    }

    /// May the retry `task_id` go at `now_ms`? `Now` counts it.
    pub fn admit(&mut self, cfg: &RetryBudgetConfig, now_ms: u64, task_id: &str) -> Admission {
        if !cfg.enabled {
            return Admission::Now;
        }
        let (spent, allowed) = self.usage(cfg, now_ms);
        if (spent + 1) as f64 <= allowed {
            self.current(cfg, now_ms).retries += 1;
            Admission::Now
        } else {
            let jitter = 0.5 + unit(task_id, now_ms);
            let delay = ((cfg.defer_ms.max(1) as f64) * jitter).round() as u64;
            Admission::DeferUntil(now_ms.saturating_add(delay.max(1)))
        }
    }
}

/// A number in [0, 1) from `key` and `salt` (FNV-1a, then mixed).
fn unit(key: &str, salt: u64) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes().chain(salt.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RetryBudgetConfig {
        RetryBudgetConfig {
            enabled: true,
            ratio: 0.2,
            min_per_sec: 1.0,
            window_ms: 10_000,
            defer_ms: 1_000,
        }
    }

    #[test]
    fn retries_beyond_ratio_and_minimum_are_deferred_with_jitter() {
        let c = cfg();
        let mut b = RetryBudget::default();
        for _ in 0..100 {
            b.note_first(&c, 1_000);
        }
        // 0.2 * 100 + 1/s * 10 s = 30 retries may go.
        let mut admitted = 0;
        let mut deferred = std::collections::HashSet::new();
        for i in 0..50 {
            match b.admit(&c, 1_500, &format!("wf-{i}:s:0:2")) {
                Admission::Now => admitted += 1,
                Admission::DeferUntil(at) => {
                    assert!((2_000..=3_000).contains(&at), "defer to {at}");
                    deferred.insert(at);
                }
            }
        }
        assert_eq!(admitted, 30);
        assert!(
            deferred.len() > 10,
            "deferrals should be spread: {deferred:?}"
        );
        // Deterministic: the same inputs give the same answer.
        let mut b2 = b.clone();
        assert_eq!(
            b.admit(&c, 1_600, "x:s:0:2"),
            b2.admit(&c, 1_600, "x:s:0:2")
        );
    }

    #[test]
    fn successful_retries_are_refunded_and_old_counts_leave_the_window() {
        let c = cfg();
        let mut b = RetryBudget::default();
        // No first attempts: the minimum alone, 10 per window.
        let n = (0..20)
            .filter(|i| b.admit(&c, 0, &format!("t{i}")) == Admission::Now)
            .count();
        assert_eq!(n, 10);
        assert!(matches!(b.admit(&c, 100, "t"), Admission::DeferUntil(_)));
        // Three of them succeed: three more may go.
        for _ in 0..3 {
            b.note_retry_succeeded(&c, 200);
        }
        let n = (0..20)
            .filter(|i| b.admit(&c, 300, &format!("u{i}")) == Admission::Now)
            .count();
        assert_eq!(n, 3);
        // A window later everything has aged out.
        let n = (0..20)
            .filter(|i| b.admit(&c, 10_400, &format!("v{i}")) == Admission::Now)
            .count();
        assert_eq!(n, 10);
        assert_eq!(b.usage(&c, 10_400).0, 10);
    }

    #[test]
    fn disabled_budget_admits_everything_and_a_zero_budget_still_admits_one() {
        let mut c = cfg();
        let mut b = RetryBudget::default();
        c.enabled = false;
        assert!((0..1000).all(|i| b.admit(&c, 5, &format!("t{i}")) == Admission::Now));
        c.enabled = true;
        c.min_per_sec = 0.0;
        c.ratio = 0.0;
        let mut b = RetryBudget::default();
        assert_eq!(b.admit(&c, 5, "a"), Admission::Now);
        assert!(matches!(b.admit(&c, 5, "b"), Admission::DeferUntil(_)));
        // A clock that steps back does not panic and keeps counting.
        assert!(matches!(b.admit(&c, 1, "c"), Admission::DeferUntil(_)));
    }
}
