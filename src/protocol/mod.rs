//! The worker protocol, version 1: the JSON messages exchanged with workers
//! over NATS (see `docs/protocol.md`). These types are the source of truth;
//! `docs/schemas/*.json` are generated from them and a test fails when the
//! committed schemas drift.
//!
//! Compatibility rule: `"v": 1` forever for additive changes. Receivers
//! ignore fields they do not know, so a newer peer may add fields; a message
//! with another `v` is rejected with a clear error.

pub mod subjects;
pub mod trace;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::workflow::{TaskError, TaskOutcome, TaskResult, TaskSpec};

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;

/// A task for a worker: one attempt of one step. Published on
/// `<prefix>.tasks.<task_type>` with header `Nats-Msg-Id: <task_id>`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(
    title = "Task",
    description = "One attempt of one step, sent to the workers of its task type."
)]
pub struct TaskMessage {
    /// Protocol version, always 1.
    pub v: u32,
    /// Unique per attempt (`<workflow>:<step>:<generation>:<attempt>`); also the JetStream `Nats-Msg-Id`.
    pub task_id: String,
    /// Unguessable proof of this attempt: the result, heartbeats and
    /// progress of the attempt must echo it, or they are refused
    /// (`unauthenticated`). Set by the NATS transport; absent in process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_token: Option<String>,
    /// The same for every attempt of a step within one run of it: a worker that
    /// already produced the effect for this key may return the earlier result.
    pub idempotency_key: String,
    pub workflow_id: String,
    pub pipeline: String,
    pub pipeline_version: u32,
    pub step: String,
    pub task_type: String,
    /// 1-based attempt number.
    pub attempt: u32,
    pub max_attempts: u32,
    /// `{"workflow": <workflow input>, "deps": {<step>: <output>, ...}}`.
    /// A task of a map step's element also has `"element": <the array's
    /// item>` and `"index": <its position, from 0>`; its `deps` leave out
    /// the step whose array is mapped over.
    #[schemars(with = "serde_json::Value")]
    pub input: Box<RawValue>,
    /// Unix time (ms) after which the orchestrator will have given up on this attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// Longest allowed silence between heartbeats once started, if the step sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_timeout_ms: Option<u64>,
    /// Subject to publish the result on (JetStream: durable until the
    /// orchestrator has applied it).
    pub reply_to: String,
    /// Subject to publish heartbeats on.
    pub heartbeat_to: String,
    /// When present, the orchestrator also takes the result as a core NATS
    /// request on this subject and answers with a [`ResultReply`] once the
    /// result is durable in its journal (or was ignored). A worker that uses it
    /// keeps the result and retries until it gets `ok`; it saves two
    /// JetStream round trips per task. `reply_to` stays valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_direct_to: Option<String>,
    /// Only meaningful in a direct offer (ignored in the TASKS stream): a
    /// worker that has the result within this many ms of receiving the
    /// offer may answer the offer with it ([`TaskOfferReply::result`])
    /// instead of answering `taken` and sending the result on its own.
    /// Such a result is not acknowledged: like a lost task, a lost one is
    /// healed by the attempt's timeout and a new attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer_result_within_ms: Option<u64>,
}

/// The orchestrator's answer to a result sent on `result_direct_to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(
    title = "ResultReply",
    description = "Answer to a result sent by request on result_direct_to."
)]
pub struct ResultReply {
    pub v: u32,
    /// True once the result is durable in the journal, or was ignored as a
    /// duplicate or stale answer: the worker may forget it.
    pub ok: bool,
    /// When `ok` is false: whether sending the same result again can help
    /// (false for a malformed message).
    #[serde(default)]
    pub retry: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A worker's answer to a task offered on `<prefix>.tdirect.<task_type>`
/// (core NATS request; docs/protocol.md "Direct task offers").
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(
    title = "TaskOfferReply",
    description = "Answer to a task offered by request on tdirect: taken, or declined (then the task goes to the TASKS stream)."
)]
pub struct TaskOfferReply {
    pub v: u32,
    /// True: the worker has the task and runs it now (it counts as started).
    /// False: declined (no free slot, unreadable task); the orchestrator
    /// publishes it to the TASKS stream instead.
    pub taken: bool,
    /// Name of the worker instance that took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// With `taken`: the task's result (a result message), when the worker
    /// had it within the offer's `offer_result_within_ms`. The worker then
    /// sends it nowhere else; the orchestrator applies it like a result on
    /// `reply_to`. Kept raw here so that an unreadable result is refused on
    /// its own while the offer still counts as taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<ResultMessage>")]
    pub result: Option<Box<RawValue>>,
}

impl TaskOfferReply {
    /// Decodes an answer to an offer; never panics on any input. An
    /// embedded result is not decoded here: the worker has taken the task
    /// either way, so the caller decodes it ([`ResultMessage::decode`]) and
    /// refuses only the result.
    pub fn decode(bytes: &[u8]) -> Result<TaskOfferReply, ProtocolError> {
        let m: TaskOfferReply = parse(bytes)?;
        check_version(m.v)?;
        if m.result.is_some() && !m.taken {
            return Err(ProtocolError::Invalid(
                "a declined offer cannot carry a result".into(),
            ));
        }
        Ok(m)
    }
}

/// `succeeded` or `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResultStatus {
    Succeeded,
    Failed,
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// Machine-readable class, matched against the step's `non_retryable` list.
    pub kind: String,
    pub message: String,
    /// False when retrying cannot help (bad input, missing media).
    pub retryable: bool,
}

/// A worker's result for one attempt, published on the task's `reply_to`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(
    title = "Result",
    description = "The outcome of one attempt, reported by a worker."
)]
pub struct ResultMessage {
    pub v: u32,
    pub task_id: String,
    /// The task's `attempt_token`, echoed; required over NATS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_token: Option<String>,
    pub workflow_id: String,
    pub step: String,
    pub attempt: u32,
    pub status: ResultStatus,
    /// The step's output (a small JSON document pointing at data kept elsewhere); required when succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Value>")]
    pub output: Option<Box<RawValue>>,
    /// Required when failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    /// Name of the worker instance, for lineage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// When the worker started the attempt (unix ms, its clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<u64>,
}

/// "Still working on it": keeps an attempt alive past its heartbeat timeout.
/// The first one also tells the orchestrator the attempt started.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(
    title = "Heartbeat",
    description = "Liveness of a running attempt; the first one marks it started."
)]
pub struct HeartbeatMessage {
    pub v: u32,
    pub task_id: String,
    /// The task's `attempt_token`, echoed; required over NATS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_token: Option<String>,
    pub workflow_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Free-form progress (e.g. `{"percent": 40}`), shown to operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<serde_json::Value>,
}

/// Stop working on an attempt: its workflow was cancelled or failed, or the
/// attempt was superseded. Published on `<prefix>.cancel.<task_type>`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "Cancel", description = "Tells workers to stop an attempt.")]
pub struct CancelMessage {
    pub v: u32,
    pub task_id: String,
    pub workflow_id: String,
    pub reason: String,
}

/// Bounds on what the orchestrator accepts from workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest message accepted, in bytes.
    pub message_max_bytes: usize,
    /// Largest step output accepted, in bytes (outputs point at data, they are not data).
    pub output_max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            message_max_bytes: 1024 * 1024,
            output_max_bytes: 64 * 1024,
        }
    }
}

/// Why a message from a worker was refused. Each has a stable `reason()` used
/// as the metric label and in the log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("message of {size} bytes exceeds the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("unsupported protocol version {0} (this orchestrator speaks v1)")]
    UnsupportedVersion(u32),
    #[error("invalid message: {0}")]
    Invalid(String),
}

impl ProtocolError {
    pub fn reason(&self) -> &'static str {
        match self {
            ProtocolError::TooLarge { .. } => "oversized",
            ProtocolError::Malformed(_) => "malformed",
            ProtocolError::UnsupportedVersion(_) => "unsupported_version",
            ProtocolError::Invalid(_) => "invalid",
        }
    }
}

fn check_size(bytes: &[u8], limits: &Limits) -> Result<(), ProtocolError> {
    if bytes.len() > limits.message_max_bytes {
        return Err(ProtocolError::TooLarge {
            size: bytes.len(),
            max: limits.message_max_bytes,
        });
    }
    Ok(())
}

fn check_version(v: u32) -> Result<(), ProtocolError> {
    if v != VERSION {
        return Err(ProtocolError::UnsupportedVersion(v));
    }
    Ok(())
}

fn parse<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ProtocolError> {
    serde_json::from_slice(bytes).map_err(|e| ProtocolError::Malformed(one_line(e.to_string())))
}

/// `text` with line breaks escaped: serde errors quote the offending input
/// (an unknown enum tag, say) verbatim, and a refusal is logged on one line.
pub(crate) fn one_line(text: String) -> String {
    if text.contains(['\n', '\r']) {
        text.replace('\n', "\\n").replace('\r', "\\r")
    } else {
        text
    }
}

impl ResultMessage {
    /// Decodes and validates a result; never panics on any input.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<ResultMessage, ProtocolError> {
        check_size(bytes, limits)?;
        let m: ResultMessage = parse(bytes)?;
        check_version(m.v)?;
        if m.task_id.is_empty() || m.workflow_id.is_empty() || m.step.is_empty() {
            return Err(ProtocolError::Invalid(
                "task_id, workflow_id and step must not be empty".into(),
            ));
        }
        match m.status {
            ResultStatus::Succeeded => match &m.output {
                None => {
                    return Err(ProtocolError::Invalid(
                        "a succeeded result needs an output".into(),
                    ))
                }
                Some(o) if o.get().len() > limits.output_max_bytes => {
                    return Err(ProtocolError::Invalid(format!(
                        "output of {} bytes exceeds the limit of {}",
                        o.get().len(),
                        limits.output_max_bytes
                    )))
                }
                // The next step's input holds the outputs of its
                // dependencies as objects; anything else can never run.
                Some(o) if !o.get().trim_start().starts_with('{') => {
                    return Err(ProtocolError::Invalid(
                        "a step's output must be a JSON object".into(),
                    ))
                }
                Some(_) => {}
            },
            ResultStatus::Failed => {
                if m.error.is_none() {
                    return Err(ProtocolError::Invalid(
                        "a failed result needs an error".into(),
                    ));
                }
            }
        }
        Ok(m)
    }

    /// The engine's view of this result.
    pub fn into_task_result(self) -> (String, TaskResult) {
        let outcome = match (self.status, self.output, self.error) {
            (ResultStatus::Succeeded, Some(o), _) => TaskOutcome::Succeeded(o.get().to_string()),
            (_, _, Some(e)) => TaskOutcome::Failed(TaskError {
                kind: e.kind,
                message: e.message,
                retryable: e.retryable,
            }),
            // `decode` rules this out; treat it as a retryable protocol error.
            (_, _, None) => TaskOutcome::Failed(TaskError {
                kind: "protocol".into(),
                message: "result without output or error".into(),
                retryable: true,
            }),
        };
        (
            self.workflow_id,
            TaskResult {
                task_id: self.task_id,
                step: self.step,
                attempt: self.attempt,
                outcome,
                worker: self.worker,
                started_at_ms: self.started_at_ms,
            },
        )
    }
}

impl HeartbeatMessage {
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<HeartbeatMessage, ProtocolError> {
        check_size(bytes, limits)?;
        let m: HeartbeatMessage = parse(bytes)?;
        check_version(m.v)?;
        if m.task_id.is_empty() || m.workflow_id.is_empty() {
            return Err(ProtocolError::Invalid(
                "task_id and workflow_id must not be empty".into(),
            ));
        }
        Ok(m)
    }
}

impl TaskMessage {
    /// The wire form of an attempt. `reply_to`/`heartbeat_to` are the
    /// orchestrator's subjects for this workflow's partition.
    pub fn from_spec(
        spec: &TaskSpec,
        reply_to: String,
        heartbeat_to: String,
        result_direct_to: Option<String>,
    ) -> Result<TaskMessage, ProtocolError> {
        let input = RawValue::from_string(spec.input.clone())
            .map_err(|e| ProtocolError::Invalid(format!("task input is not JSON: {e}")))?;
        Ok(TaskMessage {
            v: VERSION,
            task_id: spec.task_id.clone(),
            attempt_token: None,
            idempotency_key: spec.idempotency_key.clone(),
            workflow_id: spec.workflow_id.clone(),
            pipeline: spec.pipeline.clone(),
            pipeline_version: spec.pipeline_version,
            step: spec.step.clone(),
            task_type: spec.task_type.clone(),
            attempt: spec.attempt,
            max_attempts: spec.max_attempts,
            input,
            deadline_ms: spec.deadline_ms,
            heartbeat_timeout_ms: spec.heartbeat_timeout_ms,
            reply_to,
            heartbeat_to,
            result_direct_to,
            offer_result_within_ms: None,
        })
    }

    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<TaskMessage, ProtocolError> {
        check_size(bytes, limits)?;
        let m: TaskMessage = parse(bytes)?;
        check_version(m.v)?;
        Ok(m)
    }
}

/// Every message type with its schema file name, for `docs/schemas`.
pub fn schemas() -> Vec<(&'static str, serde_json::Value)> {
    let to_value = |s: schemars::Schema| serde_json::to_value(s).unwrap_or_default();
    vec![
        ("task.json", to_value(schemars::schema_for!(TaskMessage))),
        (
            "result.json",
            to_value(schemars::schema_for!(ResultMessage)),
        ),
        (
            "heartbeat.json",
            to_value(schemars::schema_for!(HeartbeatMessage)),
        ),
        (
            "cancel.json",
            to_value(schemars::schema_for!(CancelMessage)),
        ),
        (
            "result_reply.json",
            to_value(schemars::schema_for!(ResultReply)),
        ),
        (
            "task_offer_reply.json",
            to_value(schemars::schema_for!(TaskOfferReply)),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn a_result_round_trips_into_the_engine_type() {
        let raw = br#"{"v":1,"task_id":"w:a:0:1","workflow_id":"w","step":"a","attempt":1,
            "status":"succeeded","output":{"n":1},"worker":"gpu-3","extra":"ignored"}"#;
        let m = ResultMessage::decode(raw, &limits()).unwrap();
        let (wf, r) = m.into_task_result();
        assert_eq!(wf, "w");
        assert_eq!(r.outcome, TaskOutcome::Succeeded(r#"{"n":1}"#.into()));
        assert_eq!(r.worker.as_deref(), Some("gpu-3"));
    }

    #[test]
    fn bad_results_get_clear_errors() {
        let l = Limits {
            message_max_bytes: 300,
            output_max_bytes: 10,
        };
        let cases: Vec<(&[u8], &str)> = vec![
            (b"{not json", "malformed"),
            (br#"{"v":2,"task_id":"t","workflow_id":"w","step":"a","attempt":1,"status":"failed","error":{"kind":"x","message":"m","retryable":true}}"#, "unsupported_version"),
            (br#"{"v":1,"task_id":"t","workflow_id":"w","step":"a","attempt":1,"status":"succeeded"}"#, "invalid"),
            (br#"{"v":1,"task_id":"t","workflow_id":"w","step":"a","attempt":1,"status":"failed"}"#, "invalid"),
            (br#"{"v":1,"task_id":"t","workflow_id":"w","step":"a","attempt":1,"status":"succeeded","output":{"big":"0123456789"}}"#, "invalid"),
            (br#"{"v":1,"task_id":"","workflow_id":"w","step":"a","attempt":1,"status":"succeeded","output":{}}"#, "invalid"),
            (br#"{"v":1,"task_id":"t","workflow_id":"w","step":"a","attempt":1,"status":"maybe"}"#, "malformed"),
        ];
        for (raw, reason) in cases {
            let e = ResultMessage::decode(raw, &l).unwrap_err();
            assert_eq!(
                e.reason(),
                reason,
                "{e} for {}",
                String::from_utf8_lossy(raw)
            );
        }
        let big = vec![b' '; 301];
        assert_eq!(
            ResultMessage::decode(&big, &l).unwrap_err().reason(),
            "oversized"
        );
    }

    #[test]
    fn task_messages_embed_the_input_verbatim() {
        let spec = TaskSpec {
            task_id: "w:a:0:1".into(),
            idempotency_key: "w:a:0".into(),
            workflow_id: "w".into(),
            pipeline: "video".into(),
            pipeline_version: 1,
            step: "a".into(),
            step_index: 0,
            task_type: "a".into(),
            attempt: 1,
            max_attempts: 3,
            input: r#"{"workflow":{"x":1},"deps":{}}"#.into(),
            deadline_ms: Some(5),
            schedule_to_start_ms: None,
            start_to_close_ms: None,
            heartbeat_timeout_ms: Some(60_000),
            queue_timeout_ms: None,
        };
        let m = TaskMessage::from_spec(&spec, "p.results.0".into(), "p.heartbeats.0".into(), None)
            .unwrap();
        let text = serde_json::to_string(&m).unwrap();
        assert!(
            text.contains(r#""input":{"workflow":{"x":1},"deps":{}}"#),
            "{text}"
        );
        let back = TaskMessage::decode(text.as_bytes(), &limits()).unwrap();
        assert_eq!(back.task_id, "w:a:0:1");
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = ResultMessage::decode(&bytes, &limits());
            let _ = HeartbeatMessage::decode(&bytes, &limits());
            let _ = TaskMessage::decode(&bytes, &limits());
        }
    }
}
