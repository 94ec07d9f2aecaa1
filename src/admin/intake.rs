//! The bounds of admin intake. Over any of them a request is answered at
//! once with `unavailable` (retryable) and counted, never left unanswered:
//! a client that hears nothing cannot tell a lost request from a slow one,
//! and retries blindly.
//!
//! * `in_flight_max`: requests being served at once, all verbs together.
//!   The subscription is read as fast as requests arrive, so requests never
//!   pile up in the client library (whose buffer drops them silently when
//!   full); a request beyond the bound is refused instead.
//! * `start_rate`: `start` requests taken per second (a token bucket whose
//!   burst is one second's worth).
//! * `journal_backlog_max`: `start` is refused while this many journal
//!   writes wait for the group committer.
//! * journal writes failing (a full disk, an I/O error): `start` is refused
//!   until a write succeeds again.
//!
//! And at the door, a `start` whose input could never be sent to a worker
//! (its task message would exceed the message limit) is refused with
//! `bad_request` naming the limit.

use std::time::Instant;

use parking_lot::Mutex;

use super::wire::StartRequest;
use super::{code, AdminError};
use crate::engine::Engine;
use crate::pipeline::PipelineDef;
use crate::protocol::subjects::Subjects;
use crate::protocol::{Limits, TaskMessage, VERSION};

/// Bounds of admin intake; every one has a default (`[nats]` section of the
/// config file).
#[derive(Debug, Clone, PartialEq)]
pub struct IntakeLimits {
    /// Admin requests served at once, all verbs together.
    pub in_flight_max: usize,
    /// `start` requests taken per second; 0 turns the bound off.
    pub start_rate: u32,
    /// `start` is refused while more journal writes than this wait for the
    /// group committer.
    pub journal_backlog_max: usize,
    /// The message limits: the largest request, and the largest task
    /// message a start's input must fit in.
    pub limits: Limits,
}

impl Default for IntakeLimits {
    fn default() -> Self {
        IntakeLimits {
            in_flight_max: 1024,
            start_rate: 10_000,
            // Three quarters of the group committer's default queue, so a
            // start is refused before it would wait for room in the queue.
            journal_backlog_max: 3072,
            limits: Limits::default(),
        }
    }
}

/// Which bound refused a request: the `reason` label of
/// `narralytica_requests_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    AdminQueueFull,
    StartRate,
    JournalBacklog,
    JournalFailing,
}

impl Refusal {
    fn count(self, engine: &Engine) {
        let m = engine.metrics();
        match self {
            Refusal::AdminQueueFull => m.refused_admin_queue_full.inc(),
            Refusal::StartRate => m.refused_start_rate.inc(),
            Refusal::JournalBacklog => m.refused_journal_backlog.inc(),
            Refusal::JournalFailing => m.refused_journal_failing.inc(),
        }
    }
}

/// A token bucket: `rate` tokens per second, at most one second's worth
/// saved up. Time is passed in.
#[derive(Debug)]
struct StartRate {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl StartRate {
    fn new(rate: u32, now: Instant) -> Self {
        StartRate {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            last: now,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The checks every request passes before it is served.
#[derive(Debug)]
pub struct Gate {
    limits: IntakeLimits,
    start_rate: Option<Mutex<StartRate>>,
}

impl Gate {
    pub fn new(limits: IntakeLimits) -> Gate {
        let start_rate = (limits.start_rate > 0)
            .then(|| Mutex::new(StartRate::new(limits.start_rate, Instant::now())));
        Gate { limits, start_rate }
    }

    pub fn limits(&self) -> &IntakeLimits {
        &self.limits
    }

    /// `Some` when `verb` must be refused now; counts the refusal.
    pub fn refuse(&self, verb: &str, engine: &Engine) -> Option<AdminError> {
        if verb != "start" {
            return None;
        }
        let committer = &engine.ctx().committer;
        let (why, message) = if let Some(e) = committer.write_health().failing() {
            (
                Refusal::JournalFailing,
                format!(
                    "journal writes are failing ({}); try again later",
                    crate::protocol::one_line(e)
                ),
            )
        } else if committer.queue_depth() > self.limits.journal_backlog_max {
            (
                Refusal::JournalBacklog,
                format!(
                    "journal backlog over nats.admin_journal_backlog_max ({}); try again later",
                    self.limits.journal_backlog_max
                ),
            )
        } else if self
            .start_rate
            .as_ref()
            .is_some_and(|r| !r.lock().take(Instant::now()))
        {
            (
                Refusal::StartRate,
                format!(
                    "over nats.admin_start_rate ({} starts/s); try again later",
                    self.limits.start_rate
                ),
            )
        } else {
            return None;
        };
        why.count(engine);
        Some(AdminError::new(code::UNAVAILABLE, message))
    }

    /// The refusal of a request that found every serving slot taken.
    pub fn queue_full(&self, engine: &Engine) -> AdminError {
        Refusal::AdminQueueFull.count(engine);
        AdminError::new(
            code::UNAVAILABLE,
            format!(
                "admin requests in flight at nats.admin_in_flight_max ({}); try again later",
                self.limits.in_flight_max
            ),
        )
    }
}

/// Refuses a start whose input could never be sent: the largest task
/// message any step of the pipeline could get (the workflow input, each
/// dependency's output at `output_max_bytes`, the envelope and headers)
/// must fit in `message_max_bytes`.
pub fn check_start_size(
    r: &StartRequest,
    def: &PipelineDef,
    subjects: &Subjects,
    limits: &Limits,
) -> Result<(), AdminError> {
    let input = r.input.to_string();
    let largest = def
        .steps
        .iter()
        .map(|step| {
            let deps = step.needs.len();
            envelope_bytes(&r.id, def, &step.name, &step.task_type, subjects)
                + input.len()
                + deps * limits.output_max_bytes
        })
        .max()
        .unwrap_or(0);
    if largest > limits.message_max_bytes {
        return Err(AdminError::bad(format!(
            "workflow input of {} bytes is too large: a task message of pipeline {:?} could \
             reach {largest} bytes, over nats.message_max_bytes ({}) \
             (its dependencies' outputs count at nats.output_max_bytes each)",
            input.len(),
            def.name,
            limits.message_max_bytes
        )));
    }
    Ok(())
}

/// What a task message of `step` costs besides its input: the serialized
/// envelope with the longest attempt and token, the `{"workflow":..,
/// "deps":{..}}` wrapping, and the NATS headers (message id, trace context).
fn envelope_bytes(
    id: &str,
    def: &PipelineDef,
    step: &str,
    task_type: &str,
    subjects: &Subjects,
) -> usize {
    const HEADERS_MAX: usize = 512;
    let task_id = format!("{id}:{step}:{}:{}", u32::MAX, u32::MAX);
    let Ok(empty) = serde_json::value::RawValue::from_string("{}".into()) else {
        return 4096 + HEADERS_MAX;
    };
    let task = TaskMessage {
        v: VERSION,
        task_id: task_id.clone(),
        attempt_token: Some("0".repeat(32)),
        idempotency_key: task_id.clone(),
        workflow_id: id.to_string(),
        pipeline: def.name.clone(),
        pipeline_version: def.version,
        step: step.to_string(),
        task_type: task_type.to_string(),
        attempt: u32::MAX,
        max_attempts: u32::MAX,
        input: empty,
        deadline_ms: Some(u64::MAX),
        heartbeat_timeout_ms: Some(u64::MAX),
        reply_to: subjects.results(u16::MAX),
        heartbeat_to: subjects.heartbeats(u16::MAX),
        result_direct_to: Some(subjects.results_direct(u16::MAX)),
        offer_result_within_ms: Some(u64::MAX),
    };
    let body = serde_json::to_vec(&task).map_or(4096, |b| b.len());
    // `{"workflow":` + `,"deps":{` + `"<step>":` and `,` per dependency + `}}`.
    let wrapping = 32 + def.steps.iter().map(|s| s.name.len() + 4).sum::<usize>();
    body + wrapping + task_id.len() + HEADERS_MAX
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_start_rate_allows_a_seconds_worth_then_refills() {
        let t0 = Instant::now();
        let mut r = StartRate::new(10, t0);
        assert_eq!((0..15).filter(|_| r.take(t0)).count(), 10);
        assert!(!r.take(t0));
        // A tenth of a second buys one more start, no more.
        let t1 = t0 + Duration::from_millis(100);
        assert!(r.take(t1));
        assert!(!r.take(t1));
        // Idle time saves up one second's worth at most.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..30).filter(|_| r.take(t2)).count(), 10);
    }
}
