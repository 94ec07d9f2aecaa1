//! Error-rate throttling of bulk work (a backfill): hold new work while the
//! recent failure rate of the task types it uses is over a bound, release
//! it again once the rate is back under (see `docs/capacity.md`).
//!
//! [`ErrorThrottle`] is a pure state machine: it is fed samples of the
//! engine's cumulative attempt outcomes per task type, each with the time
//! it was taken, and answers whether new work may go. It holds no clock:
//! the caller passes the time of every sample.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// Shortest window accepted.
pub const WINDOW_MS_MIN: u64 = 100;
/// Longest window accepted (one day).
pub const WINDOW_MS_MAX: u64 = 86_400_000;
/// Samples kept at most: older ones are dropped even inside the window,
/// so a caller sampling faster than the window needs costs bounded memory.
pub const SAMPLES_MAX: usize = 10_000;

/// Attempts of one task type that ended, counted since the engine started
/// (the `capacity` admin reply carries them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskOutcomes {
    pub task_type: String,
    /// Attempts whose worker reported success.
    pub succeeded: u64,
    /// Attempts whose worker reported a failure.
    pub failed: u64,
    /// Attempts that timed out (schedule-to-start, start-to-close, heartbeat).
    pub timed_out: u64,
}

impl TaskOutcomes {
    /// Attempts that ended, and those of them that failed or timed out.
    fn ended_and_failed(&self) -> (u64, u64) {
        let failed = self.failed.saturating_add(self.timed_out);
        (self.succeeded.saturating_add(failed), failed)
    }
}

/// When to hold: more than `max_error_rate` of the attempts that ended
/// within the last `window_ms` failed, counting only windows in which at
/// least `min_attempts` ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErrorBound {
    /// A fraction in [0, 1]: 0.05 holds once more than 5 % failed.
    pub max_error_rate: f64,
    pub window_ms: u64,
    /// Fewer attempts than this in the window say nothing (a first failure
    /// out of one attempt is not a 100 % error rate worth pausing for).
    pub min_attempts: u64,
}

impl ErrorBound {
    /// Range checks, each problem named with the flag that sets it.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.max_error_rate.is_finite() && (0.0..=1.0).contains(&self.max_error_rate)) {
            return Err("--max-error-rate must be between 0% and 100%".into());
        }
        if !(WINDOW_MS_MIN..=WINDOW_MS_MAX).contains(&self.window_ms) {
            return Err(format!(
                "--error-window must be between {WINDOW_MS_MIN}ms and 1d"
            ));
        }
        if self.min_attempts == 0 {
            return Err("--error-min-attempts must be at least 1".into());
        }
        Ok(())
    }
}

/// Why new work is held: the task type over the bound and its counts over
/// the span the rate was measured on.
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    pub task_type: String,
    /// Attempts that ended within the span.
    pub ended: u64,
    /// Of them, failed or timed out.
    pub failed: u64,
    /// The span measured: from the sample the counts are taken against to
    /// now, at least the window once the throttle has seen that long.
    pub span_ms: u64,
}

impl Cause {
    pub fn rate(&self) -> f64 {
        if self.ended == 0 {
            0.0
        } else {
            self.failed as f64 / self.ended as f64
        }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "task type {} failed {} of {} attempts ({:.0}%) in the last {}",
            self.task_type,
            self.failed,
            self.ended,
            self.rate() * 100.0,
            crate::durations::format_ms(self.span_ms)
        )
    }
}

/// What the throttle says after a sample.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// New work may go.
    Release,
    /// New work waits. `since_ms`: when this episode began.
    Hold { since_ms: u64, cause: Cause },
}

/// Cumulative counts of one sample: task type → (ended, failed).
type Counts = BTreeMap<String, (u64, u64)>;

/// The state machine (see the module doc).
#[derive(Debug, Clone)]
pub struct ErrorThrottle {
    bound: ErrorBound,
    /// Samples by time, oldest first; the first is the baseline the newest
    /// is compared with.
    samples: VecDeque<(u64, Counts)>,
    /// The episode in progress: when it began.
    held_since_ms: Option<u64>,
    /// Episodes begun (a hold after a release counts once).
    episodes: u64,
    /// Time spent held in finished episodes.
    held_ms_done: u64,
}

impl ErrorThrottle {
    pub fn new(bound: ErrorBound) -> ErrorThrottle {
        ErrorThrottle {
            bound,
            samples: VecDeque::new(),
            held_since_ms: None,
            episodes: 0,
            held_ms_done: 0,
        }
    }

    pub fn bound(&self) -> ErrorBound {
        self.bound
    }

    /// Episodes of holding begun so far.
    pub fn episodes(&self) -> u64 {
        self.episodes
    }

    /// Time spent holding up to `now_ms`, the episode in progress included.
    pub fn held_ms(&self, now_ms: u64) -> u64 {
        self.held_ms_done + self.held_since_ms.map_or(0, |s| now_ms.saturating_sub(s))
    }

    /// Takes a sample of the cumulative outcomes per task type, taken at
    /// `now_ms` (not before the previous sample), and answers whether new
    /// work may go. Task types not in `outcomes` are not considered; a
    /// count lower than before (the engine restarted) starts the
    /// measurement over from this sample.
    pub fn observe(&mut self, now_ms: u64, outcomes: &[TaskOutcomes]) -> Verdict {
        let counts: Counts = outcomes
            .iter()
            .map(|o| (o.task_type.clone(), o.ended_and_failed()))
            .collect();
        let went_back = self.samples.back().is_some_and(|(at, last)| {
            now_ms < *at
                || last.iter().any(|(t, (ended, _))| {
                    counts
                        .get(t)
                        .is_some_and(|(now_ended, _)| now_ended < ended)
                })
        });
        if went_back {
            self.samples.clear();
        }
        self.samples.push_back((now_ms, counts));
        // Keep one sample at or before the window's start as the baseline
        // (so the span covers the whole window), none older.
        let start = now_ms.saturating_sub(self.bound.window_ms);
        while self.samples.len() > SAMPLES_MAX
            || (self.samples.len() > 1 && self.samples[1].0 <= start)
        {
            self.samples.pop_front();
        }
        let cause = self.worst(now_ms);
        match (cause, self.held_since_ms) {
            (Some(cause), Some(since_ms)) => Verdict::Hold { since_ms, cause },
            (Some(cause), None) => {
                self.held_since_ms = Some(now_ms);
                self.episodes += 1;
                Verdict::Hold {
                    since_ms: now_ms,
                    cause,
                }
            }
            (None, since) => {
                if let Some(s) = since {
                    self.held_ms_done += now_ms.saturating_sub(s);
                    self.held_since_ms = None;
                }
                Verdict::Release
            }
        }
    }

    /// The task type with the highest error rate over the bound, if any.
    fn worst(&self, now_ms: u64) -> Option<Cause> {
        let ((base_at, base), (_, last)) = (self.samples.front()?, self.samples.back()?);
        let mut worst: Option<Cause> = None;
        for (task_type, (ended, failed)) in last {
            let (ended0, failed0) = base.get(task_type).copied().unwrap_or((0, 0));
            let cause = Cause {
                task_type: task_type.clone(),
                ended: ended.saturating_sub(ended0),
                failed: failed.saturating_sub(failed0),
                span_ms: now_ms.saturating_sub(*base_at),
            };
            if cause.ended < self.bound.min_attempts || cause.rate() <= self.bound.max_error_rate {
                continue;
            }
            if worst.as_ref().is_none_or(|w| cause.rate() > w.rate()) {
                worst = Some(cause);
            }
        }
        worst
    }
}

/// Parses an error-rate bound: `5%`, `0.05`, or `off` (`None`).
pub fn parse_error_rate(text: &str) -> Result<Option<f64>, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let v = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| format!("{text:?} is not an error rate (5%, 0.05 or off)"))?;
    if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
        return Err(format!("{text:?} is not between 0% and 100%"));
    }
    Ok(Some(v))
}

#[cfg(test)]
#[path = "throttle_tests.rs"]
mod tests;
