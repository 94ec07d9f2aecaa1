//! The conformance kit behind `orchestrator worker-check`: a fake
//! orchestrator that sends tasks to a worker under test and checks what it
//! does against the worker protocol (docs/protocol.md), one verdict per
//! rule.
//!
//! [`harness`] is the NATS side (streams, tasks, recorded replies),
//! [`rules`] runs the rules, and this module holds the pure checks on
//! recorded messages, so they are unit-tested without NATS.

pub mod harness;
pub mod rules;

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::protocol::{HeartbeatMessage, Limits, ResultMessage};

/// Every rule, in the order they run.
pub const RULES: &[&str] = &[
    "consumer_settings",
    "result_shape",
    "trace_propagated",
    "task_acked",
    "heartbeats_on_time",
    "cancel_honoured",
    "retryable_vs_fatal",
    "idempotent_redelivery",
    "other_version_refused",
    "drain_on_sigterm",
];

/// What became of one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass(String),
    Fail(String),
    Skip(String),
}

impl Verdict {
    /// `PASS rule: detail`, one line.
    pub fn line(&self, rule: &str) -> String {
        let (word, detail) = match self {
            Verdict::Pass(d) => ("PASS", d),
            Verdict::Fail(d) => ("FAIL", d),
            Verdict::Skip(d) => ("SKIP", d),
        };
        if detail.is_empty() {
            format!("{word} {rule}")
        } else {
            format!("{word} {rule}: {detail}")
        }
    }
}

/// What is wrong with `result` as the answer to `task`; empty if nothing.
pub fn result_problems(task: &Value, result: &Value, raw: &[u8]) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(e) = ResultMessage::decode(raw, &Limits::default()) {
        problems.push(format!("the orchestrator would refuse it: {e}"));
    }
    for field in ["task_id", "workflow_id", "step", "attempt"] {
        if result[field] != task[field] {
            problems.push(format!(
                "{field} is {}, the task's is {}",
                result[field], task[field]
            ));
        }
    }
    problems.extend(token_problem(task, result));
    problems
}

/// A message about an attempt must echo the task's `attempt_token`.
fn token_problem(task: &Value, msg: &Value) -> Option<String> {
    let want = task.get("attempt_token")?;
    (msg.get("attempt_token") != Some(want)).then(|| {
        format!(
            "attempt_token is {}, the task's is {want}",
            msg.get("attempt_token").unwrap_or(&Value::Null)
        )
    })
}

/// What is wrong with a heartbeat for `task`; empty if nothing.
pub fn heartbeat_problems(task: &Value, beat: &Value, raw: &[u8]) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(e) = HeartbeatMessage::decode(raw, &Limits::default()) {
        problems.push(format!("the orchestrator would refuse it: {e}"));
    }
    for field in ["task_id", "workflow_id"] {
        if beat[field] != task[field] {
            problems.push(format!(
                "heartbeat {field} is {}, the task's is {}",
                beat[field], task[field]
            ));
        }
    }
    problems.extend(token_problem(task, beat));
    problems
}

/// The longest time without a word from the worker between `from` and
/// `to`, counting the heartbeats in between.
pub fn longest_silence(from: Instant, beats: &[Instant], to: Instant) -> Duration {
    let mut times: Vec<Instant> = beats
        .iter()
        .copied()
        .filter(|t| *t > from && *t < to)
        .collect();
    times.sort();
    times.push(to);
    let mut last = from;
    let mut longest = Duration::ZERO;
    for t in times {
        longest = longest.max(t.saturating_duration_since(last));
        last = t;
    }
    longest
}

/// The trace id of a `traceparent`, if it is well formed.
pub fn trace_id_of(traceparent: &str) -> Option<String> {
    crate::protocol::trace::TraceParent::parse(traceparent).map(|t| t.trace_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task() -> Value {
        json!({"v":1,"task_id":"w:t:0:1","workflow_id":"w","step":"t","attempt":1,
               "attempt_token":"tok"})
    }

    fn check(result: &Value) -> Vec<String> {
        result_problems(&task(), result, result.to_string().as_bytes())
    }

    #[test]
    fn a_result_must_match_its_task_and_echo_the_token() {
        let good = json!({"v":1,"task_id":"w:t:0:1","workflow_id":"w","step":"t","attempt":1,
                          "status":"succeeded","output":{"n":1},"attempt_token":"tok"});
        assert!(check(&good).is_empty(), "{:?}", check(&good));
        let mut other = good.clone();
        other["attempt"] = json!(2);
        assert!(check(&other)[0].starts_with("attempt is 2"));
        let mut tokenless = good.clone();
        tokenless.as_object_mut().unwrap().remove("attempt_token");
        assert_eq!(
            check(&tokenless),
            vec![r#"attempt_token is null, the task's is "tok""#.to_string()]
        );
        let no_output = json!({"v":1,"task_id":"w:t:0:1","workflow_id":"w","step":"t",
                               "attempt":1,"status":"succeeded","attempt_token":"tok"});
        assert!(check(&no_output)[0].contains("would refuse"));
    }

    #[test]
    fn heartbeats_are_checked_like_results() {
        let beat = json!({"v":1,"task_id":"w:t:0:1","workflow_id":"w","attempt_token":"tok"});
        let raw = beat.to_string();
        assert!(heartbeat_problems(&task(), &beat, raw.as_bytes()).is_empty());
        let other = json!({"v":1,"task_id":"x:t:0:1","workflow_id":"w","attempt_token":"tok"});
        let raw = other.to_string();
        assert_eq!(heartbeat_problems(&task(), &other, raw.as_bytes()).len(), 1);
    }

    #[test]
    fn the_longest_silence_counts_the_start_the_beats_and_the_end() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(
            longest_silence(t0, &[at(900), at(300)], at(1000)),
            Duration::from_millis(600)
        );
        assert_eq!(
            longest_silence(t0, &[], at(1000)),
            Duration::from_millis(1000)
        );
        // Beats outside the span do not count.
        assert_eq!(
            longest_silence(t0, &[at(2000)], at(500)),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn verdict_lines_name_the_rule() {
        assert_eq!(
            Verdict::Pass(String::new()).line("task_acked"),
            "PASS task_acked"
        );
        assert_eq!(
            Verdict::Fail("no result".into()).line("result_shape"),
            "FAIL result_shape: no result"
        );
    }
}
