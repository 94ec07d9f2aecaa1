//! Misbehaviour a simulated worker can be asked for (`--hang-rate`,
//! `--fail-for` and the others) and the seeded draws that decide it.

use std::path::PathBuf;
use std::time::Duration;

use crate::sim::{draw, SimConfig};

/// Misbehaviour a simulated worker can be asked for, each a share of
/// executions in [0, 1], drawn from the seed and the task id (so a run
/// reproduces) independently of `fail_rate` and of each other.
#[derive(Debug, Clone, Default)]
pub struct WorkerFaults {
    /// Never answers: acks the task message (the worker took it), then no
    /// heartbeat and no result. The orchestrator's timeouts must notice.
    pub hang_rate: f64,
    /// Answers twice (two result messages with different `Nats-Msg-Id`s, so
    /// JetStream de-duplication does not hide the second one).
    pub duplicate_rate: f64,
    /// Answers late: the result is held back (no heartbeats) and published
    /// only once the attempt is superseded — a cancel for it arrives, or a
    /// newer attempt with the same idempotency key — as a slow worker would.
    pub stale_rate: f64,
    /// Appends one JSON line per execution here (see [`ExecutionRecord`]).
    pub record: Option<PathBuf>,
    /// Late answers held at once, at most (beyond it they are sent at once).
    pub stale_max: usize,
    /// Succeeds with a wrong output: `n` off by 1000 (so every check
    /// downstream of it must notice), for testing output checks.
    pub corrupt_rate: f64,
    /// Outages of task types (`--fail-for`): every execution of the type
    /// fails, retryably, within its time span, then the type recovers.
    pub fail_for: Vec<Outage>,
}

/// A span of time (from when the workers started) in which every execution
/// of `task_type` fails retryably.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outage {
    pub task_type: String,
    /// The outage begins this long after the workers started.
    pub after_ms: u64,
    /// And lasts this long.
    pub for_ms: u64,
}

impl Outage {
    pub(super) fn covers(&self, task_type: &str, since_start: Duration) -> bool {
        let ms = since_start.as_millis() as u64;
        self.task_type == task_type && ms >= self.after_ms && ms - self.after_ms < self.for_ms
    }
}

/// Parses `--fail-for TYPE=DURATION[@AFTER]` (`transcribe=30s`, `transcribe=30s@10s`).
pub fn parse_fail_for(s: &str) -> Result<Outage, String> {
    let (task_type, span) = s.split_once('=').ok_or_else(|| {
        format!("expected TYPE=DURATION[@AFTER] (e.g. transcribe=30s@10s), got {s:?}")
    })?;
    if !crate::protocol::subjects::valid_token(task_type) {
        return Err(format!("invalid task type {task_type:?} in --fail-for"));
    }
    let (dur, after) = span.split_once('@').unwrap_or((span, "0s"));
    let ms = |d: &str| crate::durations::parse_ms(d).map_err(|e| format!("--fail-for {s:?}: {e}"));
    Ok(Outage {
        task_type: task_type.to_owned(),
        after_ms: ms(after)?,
        for_ms: ms(dur)?,
    })
}

impl WorkerFaults {
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in [
            ("--hang-rate", self.hang_rate),
            ("--duplicate-rate", self.duplicate_rate),
            ("--stale-rate", self.stale_rate),
            ("--corrupt-rate", self.corrupt_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be within [0, 1], got {rate}"));
            }
        }
        Ok(())
    }
}

/// Independent draws per fault kind: salts keep them uncorrelated.
pub(super) fn drawn(sim: &SimConfig, salt: u64, task_id: &str, rate: f64) -> bool {
    rate > 0.0 && draw(sim.seed ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15), task_id) < rate
}

#[cfg(test)]
mod tests;
