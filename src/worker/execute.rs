//! One attempt of a task: heartbeats while it "runs", the drawn outcome
//! and faults, the record line, then the result on its way.

use std::time::Duration;

use async_nats::jetstream;

use super::faults::drawn;
use super::offer::{OfferAnswer, OFFER_ANSWER_ROOM};
use super::result::{Route, Withheld};
use super::{now_us, Execution, Shared};
use crate::protocol::trace::{span_id, TraceParent, TRACEPARENT, TRACESTATE};
use crate::protocol::{
    ErrorBody, HeartbeatMessage, ResultMessage, ResultStatus, TaskMessage, VERSION,
};
use crate::sim::{draw, output_from, unasked_segments};

/// Runs one attempt. `headers` are the task message's; `stream_msg` is
/// its JetStream message (kept in progress while the task runs), `None`
/// for a task taken from a direct offer; `offer`, for an offer that the
/// result may answer (if nobody answered it yet).
pub(super) async fn execute(
    shared: &Shared,
    task: &TaskMessage,
    task_headers: Option<&async_nats::HeaderMap>,
    stream_msg: Option<&jetstream::Message>,
    offer: Option<&OfferAnswer>,
) {
    let (sim, faults, client) = (&shared.sim, &shared.faults, &shared.client);
    // An older attempt of this step held back by `stale_rate` answers now, late.
    if faults.stale_rate > 0.0 {
        shared.release_withheld(&task.idempotency_key, None).await;
    }
    if shared.cancelled.lock().remove(&task.task_id) {
        shared.record(task, "cancelled", 0, now_us() / 1000);
        return;
    }
    if drawn(sim, 1, &task.task_id, faults.hang_rate) {
        shared.record(task, "hung", 0, now_us() / 1000);
        return;
    }
    let beat = |task: &TaskMessage| HeartbeatMessage {
        v: VERSION,
        task_id: task.task_id.clone(),
        attempt_token: task.attempt_token.clone(),
        workflow_id: task.workflow_id.clone(),
        worker: Some(sim.worker.clone()),
        progress: None,
    };
    let stale = drawn(sim, 3, &task.task_id, faults.stale_rate);
    let started_us = now_us();
    let started_at_ms = started_us / 1000;
    let every = task
        .heartbeat_timeout_ms
        .map(|h| Duration::from_millis((h / 3).max(1)))
        .unwrap_or(Duration::MAX);
    // The first heartbeat says "started"; it is sent only once the task has
    // run for `started_after` (the result itself carries `started_at_ms`),
    // so short tasks cost no heartbeat message. A held-back one stays silent.
    let started_after = Duration::from_millis(sim.started_after_ms);
    if !stale && started_after.is_zero() {
        if let Ok(p) = serde_json::to_vec(&beat(task)) {
            let _ = client.publish(task.heartbeat_to.clone(), p.into()).await;
        }
    }
    let mut next_beat = if started_after.is_zero() {
        every
    } else {
        started_after.min(every)
    };
    let mut left = sim.latency_for(&task.task_id);
    while !left.is_zero() {
        let step = left.min(next_beat);
        next_beat = every;
        tokio::time::sleep(step).await;
        left -= step;
        if shared.cancelled.lock().remove(&task.task_id) {
            shared.record(task, "cancelled", 0, started_at_ms);
            return;
        }
        if !left.is_zero() && !stale {
            if let Ok(p) = serde_json::to_vec(&beat(task)) {
                let _ = client.publish(task.heartbeat_to.clone(), p.into()).await;
            }
            // Keep JetStream from redelivering a long task (docs/protocol.md).
            if let Some(msg) = stream_msg {
                let _ = msg.ack_with(jetstream::AckKind::Progress).await;
            }
        }
    }
    let outage = faults
        .fail_for
        .iter()
        .any(|o| o.covers(&task.task_type, shared.began.elapsed()));
    let fail = outage || draw(sim.seed, &task.task_id) < sim.fail_rate;
    let (status, output, error) = if fail {
        let e = ErrorBody {
            kind: "simulated".into(),
            message: "injected failure".into(),
            retryable: true,
        };
        (ResultStatus::Failed, None, Some(e))
    } else {
        let unasked = unasked_segments(&task.task_type, sim.default_segments);
        match output_from(task.input.get(), &task.workflow_id, &task.step, unasked)
            .ok()
            .map(|o| {
                if drawn(sim, 4, &task.task_id, faults.corrupt_rate) {
                    crate::sim::corrupt_output(&o)
                } else {
                    o
                }
            })
            .and_then(|o| serde_json::value::RawValue::from_string(o).ok())
        {
            Some(o) => (ResultStatus::Succeeded, Some(o), None),
            None => {
                let e = ErrorBody {
                    kind: "invalid_input".into(),
                    message: "task input unreadable".into(),
                    retryable: false,
                };
                (ResultStatus::Failed, None, Some(e))
            }
        }
    };
    let outcome = if fail || error.is_some() {
        "failed"
    } else {
        "succeeded"
    };
    let result = ResultMessage {
        v: VERSION,
        task_id: task.task_id.clone(),
        attempt_token: task.attempt_token.clone(),
        workflow_id: task.workflow_id.clone(),
        step: task.step.clone(),
        attempt: task.attempt,
        status,
        output,
        error,
        worker: Some(sim.worker.clone()),
        started_at_ms: Some(started_at_ms),
    };
    if let Some(observe) = &shared.observer {
        observe(&Execution {
            task_id: &task.task_id,
            started_us,
            finished_us: now_us(),
            succeeded: outcome == "succeeded",
        });
    }
    // Trace context: the result is a child span of the task's.
    let mut headers = async_nats::HeaderMap::new();
    if let Some(h) = task_headers {
        if let Some(tp) = h
            .get(TRACEPARENT)
            .and_then(|v| TraceParent::parse(v.as_str()))
        {
            headers.insert(
                TRACEPARENT,
                tp.child(&span_id(&format!("{}/worker", task.task_id))),
            );
        }
        if let Some(ts) = h.get(TRACESTATE) {
            headers.insert(TRACESTATE, ts.as_str());
        }
    }
    let route = Route::of(task, shared.direct);
    let duplicate = drawn(sim, 2, &task.task_id, faults.duplicate_rate);
    // The answer to the offer, if it is still open and the result fits in
    // one message with room for the answer around it.
    let inline = offer.filter(|_| !stale).and_then(|o| {
        let raw = serde_json::value::to_raw_value(&result).ok()?;
        let fits = raw.get().len() + OFFER_ANSWER_ROOM <= shared.limits.message_max_bytes;
        (fits && o.claim()).then_some((o, raw))
    });
    // Record before anything leaves: the system checker matches every
    // accepted result to a line, and a SIGKILL may land between the
    // publish and a line written after it.
    let planned = 1 + u32::from(duplicate);
    let (published, payload) = match inline {
        Some((offer, raw)) => {
            shared.record(task, outcome, planned, started_at_ms);
            // An injected duplicate goes the usual way after the answer.
            let copy = duplicate.then(|| bytes::Bytes::copy_from_slice(raw.get().as_bytes()));
            let answer_headers = if duplicate {
                headers.clone()
            } else {
                std::mem::take(&mut headers)
            };
            let sent = offer.answer(shared, Some(raw), Some(answer_headers)).await;
            (sent, copy)
        }
        None => {
            let Ok(payload) = serde_json::to_vec(&result) else {
                return;
            };
            let payload: bytes::Bytes = payload.into();
            if stale {
                let mut map = shared.withheld.lock();
                if map.len() < faults.stale_max.max(1) {
                    map.insert(
                        task.idempotency_key.clone(),
                        Withheld {
                            task_id: task.task_id.clone(),
                            route: route.clone(),
                            payload,
                            headers,
                        },
                    );
                    drop(map);
                    shared.record(task, "late", 1, started_at_ms);
                    return;
                }
            }
            shared.record(task, outcome, planned, started_at_ms);
            let published = shared
                .send_result(
                    &route,
                    &task.task_id,
                    "",
                    payload.clone(),
                    headers.clone(),
                    stream_msg,
                )
                .await;
            (published, Some(payload))
        }
    };
    if let (true, true, Some(payload)) = (published, duplicate, payload) {
        shared
            .send_result(&route, &task.task_id, ":dup", payload, headers, stream_msg)
            .await;
    }
}
