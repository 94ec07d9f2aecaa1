//! Intake: results from the RESULTS stream (acked after the durable
//! transition), direct results by request-reply, and heartbeats.

use std::sync::Arc;

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;

use super::guard::ReportGuard;
use super::{stream_name, NatsConfig};
use crate::protocol::subjects::Subjects;
use crate::protocol::trace::{TraceParent, TRACEPARENT};
use crate::protocol::{HeartbeatMessage, Limits, ResultMessage, ResultReply, VERSION};
use crate::transport::results::{ResultError, ResultHandler};
use crate::transport::{ReportSink, WorkerReport};

/// A report refused before the engine saw it: the metric label and the
/// text for the log and for a direct result's answer.
pub(super) struct Refusal {
    pub reason: &'static str,
    pub error: String,
}

/// Decodes a result and checks that it may report on its attempt.
pub(super) fn accept_result(
    bytes: &[u8],
    subject: Option<&str>,
    limits: &Limits,
    guard: &ReportGuard,
) -> Result<ResultMessage, Refusal> {
    let r = ResultMessage::decode(bytes, limits).map_err(|e| Refusal {
        reason: e.reason(),
        error: e.to_string(),
    })?;
    guard
        .check(
            subject,
            &r.workflow_id,
            &r.task_id,
            Some(&r.step),
            r.attempt_token.as_deref(),
        )
        .map_err(|e| Refusal {
            reason: e.reason(),
            error: e.to_string(),
        })?;
    Ok(r)
}

/// Decodes a heartbeat and checks that it may report on its attempt.
fn accept_heartbeat(
    bytes: &[u8],
    subject: &str,
    limits: &Limits,
    guard: &ReportGuard,
) -> Result<HeartbeatMessage, Refusal> {
    let h = HeartbeatMessage::decode(bytes, limits).map_err(|e| Refusal {
        reason: e.reason(),
        error: e.to_string(),
    })?;
    guard
        .check(
            Some(subject),
            &h.workflow_id,
            &h.task_id,
            None,
            h.attempt_token.as_deref(),
        )
        .map_err(|e| Refusal {
            reason: e.reason(),
            error: e.to_string(),
        })?;
    Ok(h)
}

/// Consumes results (JetStream, acked after the durable transition) and
/// heartbeats (core NATS) until the client closes.
///
/// With `served` (a cluster node) results are read per partition, only for
/// the partitions the node serves now ([`super::partition_intake`]);
/// without, one consumer reads every partition's.
pub async fn run_intake(
    cfg: NatsConfig,
    client: async_nats::Client,
    js: jetstream::Context,
    handler: Arc<dyn ResultHandler>,
    sink: Arc<dyn ReportSink>,
    served: Option<tokio::sync::watch::Receiver<std::collections::BTreeSet<u16>>>,
) -> Result<(), String> {
    let subjects = Subjects::new(&cfg.prefix)?;
    let limits = cfg.limits.clone();
    let guard = ReportGuard::new(cfg.attempt_key.clone(), handler.partition_of());
    let hb_guard = guard.clone();
    // Heartbeats: loss is fine, so core NATS.
    let mut beats = client
        .subscribe(subjects.heartbeats_all())
        .await
        .map_err(|e| format!("cannot subscribe to heartbeats: {e}"))?;
    let hb_limits = limits.clone();
    let hb_handler = handler.clone();
    // Stopped with the intake: it holds the engine through the handler.
    let _heartbeats = AbortOnDrop(tokio::spawn(async move {
        while let Some(msg) = beats.next().await {
            match accept_heartbeat(&msg.payload, msg.subject.as_str(), &hb_limits, &hb_guard) {
                Ok(h) => {
                    let progress = h.progress.as_ref().map(|p| p.to_string());
                    sink.report(
                        &h.workflow_id,
                        WorkerReport::Heartbeat {
                            task_id: h.task_id.clone(),
                        },
                    );
                    match progress {
                        Some(p) if p.len() > hb_limits.output_max_bytes => {
                            hb_handler.rejected("oversized_progress");
                        }
                        Some(p) => sink.report(
                            &h.workflow_id,
                            WorkerReport::Progress {
                                task_id: h.task_id,
                                progress: p.into(),
                            },
                        ),
                        None => {}
                    }
                }
                Err(refused) => {
                    hb_handler.rejected(refused.reason);
                    tracing::warn!(reason = refused.reason, error = %refused.error, "heartbeat refused");
                }
            }
        }
    }));
    if let Some(served) = served {
        return super::partition_intake::run_partition_results(
            cfg, client, js, handler, guard, served,
        )
        .await;
    }
    // Results by request-reply: answered once applied (durable or ignored).
    let _direct = if cfg.results_direct {
        let sub = client
            .subscribe(subjects.results_direct_all())
            .await
            .map_err(|e| format!("cannot subscribe to direct results: {e}"))?;
        Some(AbortOnDrop(tokio::spawn(serve_direct_results(
            sub,
            client.clone(),
            handler.clone(),
            limits.clone(),
            guard.clone(),
            cfg.results_direct_in_flight_max.max(1),
        ))))
    } else {
        None
    };
    // The consumer is opened again whenever it goes away (deleted with its
    // stream, or alone): the stream watch puts both back, and until then a
    // pull that finds no consumer is retried here.
    loop {
        let mut messages = match open_results(&js, &cfg.prefix, results_consumer_config(&cfg)).await
        {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "results consumer not available; retrying");
                tokio::time::sleep(REOPEN_AFTER).await;
                continue;
            }
        };
        while let Some(msg) = messages.next().await {
            let msg = match msg {
                Ok(m) => m,
                Err(e) if consumer_gone(&e) => {
                    tracing::warn!(error = %e, "results consumer gone; opening it again");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "results consumer error");
                    continue;
                }
            };
            take_result(msg, &limits, &guard, &handler, None);
        }
        tokio::time::sleep(REOPEN_AFTER).await;
    }
}

/// How long a result of a partition that left this node waits before its
/// redelivery (to the partition's next owner).
const HAND_BACK_AFTER: std::time::Duration = std::time::Duration::from_millis(500);

/// Pause before the results consumer is opened again.
pub(super) const REOPEN_AFTER: std::time::Duration = std::time::Duration::from_millis(500);

/// The durable consumer the orchestrator reads results with.
pub fn results_consumer_config(cfg: &NatsConfig) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(RESULTS_CONSUMER.into()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: cfg.results_ack_wait,
        max_ack_pending: cfg.results_max_ack_pending,
        ..Default::default()
    }
}

/// The name of the orchestrator's durable results consumer.
pub const RESULTS_CONSUMER: &str = "orchestrator";

/// Opens (creating it if missing) the results consumer `config` names
/// and its message stream.
pub(super) async fn open_results(
    js: &jetstream::Context,
    prefix: &str,
    config: consumer::pull::Config,
) -> Result<consumer::pull::Stream, String> {
    let stream = js
        .get_stream(stream_name(prefix, "RESULTS"))
        .await
        .map_err(|e| format!("results stream: {e}"))?;
    let name = config.durable_name.clone().unwrap_or_default();
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(&name, config)
        .await
        .map_err(|e| format!("results consumer {name}: {e}"))?;
    consumer
        .messages()
        .await
        .map_err(|e| format!("results consumer: {e}"))
}

/// The pull found no consumer: it (or its stream) was deleted.
pub fn consumer_gone(e: &consumer::pull::MessagesError) -> bool {
    use consumer::pull::MessagesErrorKind as K;
    matches!(
        e.kind(),
        K::ConsumerDeleted | K::NoResponders | K::MissingHeartbeat
    )
}

/// One delivered result: refused at once if malformed or forged, else
/// handed to the engine and acked once its transition is durable. A result
/// the engine could not apply is not acked, so JetStream redelivers it
/// after `ack_wait`; when `moved` says its partition has left this node
/// meanwhile, it is handed back at once (a delayed nak) for the next owner.
pub(super) fn take_result(
    msg: jetstream::Message,
    limits: &crate::protocol::Limits,
    guard: &ReportGuard,
    handler: &Arc<dyn ResultHandler>,
    moved: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
) {
    crate::failpoints::point("result.received");
    match accept_result(&msg.payload, Some(msg.subject.as_str()), limits, guard) {
        Ok(r) => {
            log_received(&r, msg.headers.as_ref());
            let task_id = r.task_id.clone();
            let (wf, result) = r.into_task_result();
            let handler = handler.clone();
            // Each result is acked only once its transition is durable;
            // concurrently, bounded by the consumer's max_ack_pending.
            tokio::spawn(async move {
                match handler.handle(wf, result).await {
                    Ok(()) => {
                        let _ = msg.ack().await;
                    }
                    Err(ResultError::Refused(e)) => {
                        tracing::warn!(task_id = %task_id, error = %e, "result refused");
                        let _ = msg.ack_with(jetstream::AckKind::Term).await;
                    }
                    Err(ResultError::Retry(e)) => {
                        if moved.is_some_and(|moved| moved()) {
                            tracing::debug!(task_id = %task_id, "result of a partition handed over; redelivered to its owner");
                            let _ = msg
                                .ack_with(jetstream::AckKind::Nak(Some(HAND_BACK_AFTER)))
                                .await;
                        } else {
                            // Not acked: JetStream redelivers after ack_wait.
                            tracing::warn!(task_id = %task_id, error = %e, "result not applied; it will be redelivered");
                        }
                    }
                }
            });
        }
        Err(refused) => {
            handler.rejected(refused.reason);
            tracing::warn!(reason = refused.reason, error = %refused.error, "result refused");
            // A refused message never becomes valid: terminate it.
            tokio::spawn(async move {
                let _ = msg.ack_with(jetstream::AckKind::Term).await;
            });
        }
    }
}

/// Logs a received result with the worker's span, a child of the task's,
/// so a trace can be followed through the logs.
pub(super) fn log_received(r: &ResultMessage, headers: Option<&async_nats::HeaderMap>) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let trace = headers
        .and_then(|h| h.get(TRACEPARENT))
        .and_then(|v| TraceParent::parse(v.as_str()));
    if let Some(t) = &trace {
        tracing::debug!(
            workflow_id = %r.workflow_id,
            step = %r.step,
            attempt = r.attempt,
            task_id = %r.task_id,
            trace_id = %t.trace_id,
            span_id = %t.parent_id,
            "result received"
        );
    }
}

/// The body of a reply to a direct result.
fn result_reply(ok: bool, retry: bool, error: Option<String>) -> bytes::Bytes {
    let reply = ResultReply {
        v: VERSION,
        ok,
        retry,
        error,
    };
    serde_json::to_vec(&reply).unwrap_or_default().into()
}

/// Serves `<prefix>.rdirect.>`: each request carries one result; the reply
/// (`ResultReply`) says `ok` once the result's transition is durable or the
/// result was ignored, so the worker can forget it. At most `in_flight_max`
/// are applied at once; the rest wait in the subscription.
pub(super) async fn serve_direct_results(
    mut sub: async_nats::Subscriber,
    client: async_nats::Client,
    handler: Arc<dyn ResultHandler>,
    limits: Limits,
    guard: ReportGuard,
    in_flight_max: usize,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(in_flight_max));
    while let Some(msg) = sub.next().await {
        let Some(reply_to) = msg.reply.clone() else {
            // A plain publish cannot be answered: the worker would not know
            // whether it was applied. Count and drop it.
            handler.rejected("direct_without_reply");
            continue;
        };
        crate::failpoints::point("result.received");
        let r = match accept_result(&msg.payload, Some(msg.subject.as_str()), &limits, &guard) {
            Ok(r) => r,
            Err(refused) => {
                handler.rejected(refused.reason);
                tracing::warn!(reason = refused.reason, error = %refused.error, "direct result refused");
                let _ = client
                    .publish(reply_to, result_reply(false, false, Some(refused.error)))
                    .await;
                continue;
            }
        };
        log_received(&r, msg.headers.as_ref());
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (handler, client) = (handler.clone(), client.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let task_id = r.task_id.clone();
            let (wf, result) = r.into_task_result();
            let payload = match handler.handle(wf, result).await {
                Ok(()) => result_reply(true, false, None),
                Err(ResultError::Refused(e)) => {
                    tracing::warn!(task_id = %task_id, error = %e, "direct result refused");
                    result_reply(false, false, Some(e))
                }
                Err(ResultError::Retry(e)) => {
                    tracing::warn!(task_id = %task_id, error = %e, "direct result not applied; the worker will send it again");
                    result_reply(false, true, Some(e))
                }
            };
            let _ = client.publish(reply_to, payload).await;
        });
    }
}

/// Aborts a background task when dropped (its owner was cancelled).
pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
