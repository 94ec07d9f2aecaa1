//! Sending one task: offered to an idle worker first (whose answer may carry
//! the result), else published to the TASKS stream with retries; cancels.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;

use super::intake::{accept_result, log_received};
use super::publisher::{Outgoing, Publisher};
use super::OfferDeclined;
use crate::protocol::trace::{task_traceparent, TRACEPARENT};
use crate::protocol::{CancelMessage, TaskMessage, TaskOfferReply, VERSION};
use crate::transport::ResultError;
use crate::transport::{workflow_of_task, WorkerReport};
use crate::workflow::{TaskError, TaskOutcome, TaskResult, TaskSpec};

/// Error kind of an attempt failed because its task message is over the
/// server's `max_payload`.
pub const TASK_TOO_LARGE: &str = "task_too_large";

pub(super) async fn send_outgoing(publisher: Arc<Publisher>, out: Outgoing) {
    let Publisher {
        js,
        client,
        subjects,
        partition_of,
        attempts,
        ..
    } = &*publisher;
    match out {
        Outgoing::Task(spec) => {
            // Checked here, with the offer's permit already held, so a stop
            // that began meanwhile either is seen here or sees this offer
            // out (see `NatsTransport::drain`).
            if publisher.hold_at_stop(&spec) {
                return;
            }
            let p = partition_of(&spec.workflow_id);
            let mut msg = match TaskMessage::from_spec(
                &spec,
                subjects.results(p),
                subjects.heartbeats(p),
                publisher.results_direct.then(|| subjects.results_direct(p)),
            ) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(task_id = %spec.task_id, error = %e, "task cannot be encoded");
                    return;
                }
            };
            msg.attempt_token = Some(publisher.attempt_key.token(&spec.task_id));
            let offered = publisher.offers(&spec);
            if offered && publisher.result_within_ms > 0 && publisher.results.get().is_some() {
                msg.offer_result_within_ms = Some(publisher.result_within_ms);
            }
            let Ok(payload) = serde_json::to_vec(&msg) else {
                return;
            };
            let payload: bytes::Bytes = payload.into();
            let max_payload = client.server_info().max_payload;
            if max_payload > 0 && payload.len() > max_payload {
                fail_too_large(&publisher, &spec, payload.len(), max_payload);
                return;
            }
            let traceparent = task_traceparent(&spec.workflow_id, &spec.task_id);
            // Only an attempt with a heartbeat timeout is offered: a worker
            // that dies holding it is noticed by that timeout, as a stream
            // message would have been redelivered.
            if let (true, Some(timeout)) = (offered, publisher.offer_timeout) {
                match offer_task(&publisher, &spec, &traceparent, payload.clone(), timeout).await {
                    Ok(taken) => {
                        publisher.stats.tasks_direct.fetch_add(1, Ordering::Relaxed);
                        let outcome = match taken.result {
                            Some(answer) => deliver_offer_result(&publisher, &spec, answer).await,
                            None => OfferResultOutcome::Refused,
                        };
                        match outcome {
                            OfferResultOutcome::Applied => return,
                            // The worker has the task (or had it): the
                            // attempt counts as started, so its heartbeat
                            // timeout watches it.
                            OfferResultOutcome::Refused => {
                                if let Some(sink) = publisher.sink.get() {
                                    sink.report(
                                        &spec.workflow_id,
                                        WorkerReport::Started {
                                            task_id: spec.task_id.clone(),
                                            worker: taken.worker.unwrap_or_default(),
                                        },
                                    );
                                }
                                return;
                            }
                            // The engine no longer watches the attempt (it
                            // took the result, then failed to journal it):
                            // run the task again through the stream.
                            OfferResultOutcome::NotApplied => {}
                        }
                    }
                    Err(why) => publisher.stats.declined(why),
                }
                if publisher.hold_at_stop(&spec) {
                    return;
                }
            }
            // The stream's copy does not invite a result in an answer.
            let payload = if msg.offer_result_within_ms.take().is_some() {
                match serde_json::to_vec(&msg) {
                    Ok(p) => p.into(),
                    Err(_) => return,
                }
            } else {
                payload
            };
            publisher.stats.tasks_stream.fetch_add(1, Ordering::Relaxed);
            publish_task(
                js,
                subjects.tasks(&spec.task_type),
                &spec,
                &traceparent,
                payload,
                *attempts,
            )
            .await;
        }
        Outgoing::Cancel {
            task_id,
            task_type,
            reason,
        } => {
            let msg = CancelMessage {
                v: VERSION,
                workflow_id: workflow_of_task(&task_id).unwrap_or_default().to_string(),
                task_id,
                reason,
            };
            if let Ok(payload) = serde_json::to_vec(&msg) {
                // Core NATS: a lost cancel only means a worker finishes a useless task.
                let _ = client
                    .publish(subjects.cancel(&task_type), payload.into())
                    .await;
            }
        }
    }
}

/// A worker's yes to an offer: its name, and the result if it came with
/// the answer (with the answer's headers, for the trace log).
struct Taken {
    worker: Option<String>,
    result: Option<OfferResult>,
}

/// A result that came with the answer to its offer, undecoded.
struct OfferResult {
    raw: Box<serde_json::value::RawValue>,
    headers: Option<async_nats::HeaderMap>,
}

/// What became of a result that answered its offer.
enum OfferResultOutcome {
    /// Durable in the journal (or ignored as stale or duplicate).
    Applied,
    /// Refused (unreadable, over a limit, another task's): the engine never
    /// saw it and still watches the attempt.
    Refused,
    /// The engine took it but could not journal it within
    /// `tasks_direct_result_apply_for`.
    NotApplied,
}

/// Decodes and checks a result that answered its offer and hands it to
/// the engine. A journal failure is tried again (with backoff, for up to
/// `tasks_direct_result_apply_for`): this result exists nowhere else, and
/// the engine stopped watching the attempt when it took the result.
async fn deliver_offer_result(
    publisher: &Publisher,
    spec: &TaskSpec,
    answer: OfferResult,
) -> OfferResultOutcome {
    let Some(handler) = publisher.results.get() else {
        return OfferResultOutcome::Refused;
    };
    // The answer came on this request's own inbox, so no partition check;
    // the token is checked all the same (one rule for every result).
    let result = match accept_result(
        answer.raw.get().as_bytes(),
        None,
        &publisher.limits,
        &publisher.guard,
    ) {
        Ok(r) => r,
        Err(refused) => {
            handler.rejected(refused.reason);
            tracing::warn!(task_id = %spec.task_id, reason = refused.reason, error = %refused.error, "result in an offer answer refused");
            return OfferResultOutcome::Refused;
        }
    };
    if result.task_id != spec.task_id
        || result.workflow_id != spec.workflow_id
        || result.step != spec.step
        || result.attempt != spec.attempt
    {
        handler.rejected("invalid");
        tracing::warn!(task_id = %spec.task_id, answered = %result.task_id, "offer answered with another task's result");
        return OfferResultOutcome::Refused;
    }
    let headers = answer.headers;
    crate::failpoints::point("result.received");
    publisher
        .stats
        .results_in_offer_reply
        .fetch_add(1, Ordering::Relaxed);
    log_received(&result, headers.as_ref());
    let (wf, result) = result.into_task_result();
    let give_up = tokio::time::Instant::now() + publisher.result_apply_for;
    let mut backoff = Duration::from_millis(20);
    loop {
        let left = give_up.saturating_duration_since(tokio::time::Instant::now());
        let error = match tokio::time::timeout(left, handler.handle(wf.clone(), result.clone()))
            .await
        {
            Ok(Ok(())) => return OfferResultOutcome::Applied,
            Ok(Err(ResultError::Refused(e))) => {
                tracing::warn!(task_id = %spec.task_id, error = %e, "result in an offer answer refused");
                return OfferResultOutcome::Refused;
            }
            Ok(Err(ResultError::Retry(e))) => e,
            Err(_) => "not applied in time".to_owned(),
        };
        if tokio::time::Instant::now() + backoff >= give_up {
            tracing::error!(task_id = %spec.task_id, error = %error, "result in an offer answer not applied; publishing the task to the stream to run it again");
            return OfferResultOutcome::NotApplied;
        }
        tracing::warn!(task_id = %spec.task_id, error = %error, "result in an offer answer not applied; trying again");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Offers a task to an idle worker of its type: [`Taken`] once one took
/// it, else why not (the caller then publishes it to the stream).
async fn offer_task(
    publisher: &Publisher,
    spec: &TaskSpec,
    traceparent: &str,
    payload: bytes::Bytes,
    timeout: Duration,
) -> Result<Taken, OfferDeclined> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(TRACEPARENT, traceparent);
    let request = async_nats::Request::new()
        .payload(payload)
        .headers(headers)
        .timeout(Some(timeout));
    let reply = publisher
        .client
        .send_request(publisher.subjects.tasks_direct(&spec.task_type), request)
        .await
        .map_err(|e| match e.kind() {
            async_nats::RequestErrorKind::NoResponders => OfferDeclined::NoWorker,
            async_nats::RequestErrorKind::TimedOut => OfferDeclined::Timeout,
            _ => OfferDeclined::Error,
        })?;
    match TaskOfferReply::decode(&reply.payload) {
        Ok(r) if r.taken => Ok(Taken {
            worker: r.worker,
            result: r.result.map(|raw| OfferResult {
                raw,
                headers: reply.headers,
            }),
        }),
        Ok(r) => {
            if let Some(error) = r.error {
                tracing::debug!(task_id = %spec.task_id, error, "task offer declined");
            }
            Err(OfferDeclined::Busy)
        }
        Err(_) => Err(OfferDeclined::Error),
    }
}

/// A task whose message the server would refuse (over `max_payload`) can
/// never reach a worker, however often it is published or retried: its
/// attempt fails at once, not retryably, with the sizes named, so the
/// step fails (or its map element does) instead of waiting for timeouts.
fn fail_too_large(publisher: &Publisher, spec: &TaskSpec, bytes: usize, max_payload: usize) {
    publisher
        .stats
        .tasks_too_large
        .fetch_add(1, Ordering::Relaxed);
    let message = format!(
        "the task message is {bytes} bytes, over the NATS server's max_payload of {max_payload} bytes: \
         pass smaller data between steps (references instead of contents) or raise max_payload"
    );
    tracing::error!(
        workflow_id = %spec.workflow_id,
        step = %spec.step,
        task_id = %spec.task_id,
        bytes,
        max_payload,
        "task too large to publish; its attempt fails"
    );
    if let Some(sink) = publisher.sink.get() {
        sink.report(
            &spec.workflow_id,
            WorkerReport::Result(TaskResult {
                task_id: spec.task_id.clone(),
                step: spec.step.clone(),
                attempt: spec.attempt,
                outcome: TaskOutcome::Failed(TaskError {
                    kind: TASK_TOO_LARGE.to_string(),
                    message,
                    retryable: false,
                }),
                worker: None,
                started_at_ms: None,
            }),
        );
    }
}

async fn publish_task(
    js: &jetstream::Context,
    subject: String,
    spec: &TaskSpec,
    traceparent: &str,
    payload: bytes::Bytes,
    attempts: u32,
) {
    let mut backoff = Duration::from_millis(50);
    let (task_id, workflow_id, step) = (
        spec.task_id.as_str(),
        spec.workflow_id.as_str(),
        spec.step.as_str(),
    );
    for publish_attempt in 1..=attempts {
        let msg = jetstream::message::PublishMessage::build()
            .payload(payload.clone())
            .message_id(task_id)
            .header(TRACEPARENT, traceparent);
        let error = match js.send_publish(subject.clone(), msg).await {
            Ok(ack) => match ack.await {
                Ok(_) => return,
                Err(e) => format!("not acknowledged: {e}"),
            },
            Err(e) => e.to_string(),
        };
        tracing::warn!(
            workflow_id,
            step,
            attempt = spec.attempt,
            task_id,
            publish_attempt,
            error = %error,
            "task publish failed"
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
    tracing::error!(
        workflow_id,
        step,
        attempt = spec.attempt,
        task_id,
        "task not published; its timeout will retry it"
    );
}
