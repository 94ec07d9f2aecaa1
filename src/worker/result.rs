//! Handing a result over: its route (the RESULTS stream or a direct
//! request), retries while NATS or the orchestrator restarts, and the
//! held-back answers of `stale` executions.

use std::time::Duration;

use async_nats::jetstream;

use super::Shared;
use crate::protocol::{ResultReply, TaskMessage};

/// A held-back answer of a `stale` execution, keyed by idempotency key.
pub(super) struct Withheld {
    pub(super) task_id: String,
    pub(super) route: Route,
    pub(super) payload: bytes::Bytes,
    pub(super) headers: async_nats::HeaderMap,
}

/// Where a result goes: the RESULTS stream (`reply_to`), or a request on
/// `result_direct_to` that the orchestrator answers once the result is
/// durable in its journal.
#[derive(Debug, Clone)]
pub(super) enum Route {
    JetStream(String),
    Direct(String),
}

impl Route {
    pub(super) fn of(task: &TaskMessage, direct: bool) -> Route {
        match (&task.result_direct_to, direct) {
            (Some(subject), true) => Route::Direct(subject.clone()),
            _ => Route::JetStream(task.reply_to.clone()),
        }
    }
}

/// How long a worker keeps trying to hand a result over (NATS or the
/// orchestrator may be restarting); after that the orchestrator's timeout
/// re-runs the attempt.
pub(super) const RESULT_RETRY_FOR: Duration = Duration::from_secs(120);
/// Wait for the orchestrator's answer to one direct result request.
pub(super) const DIRECT_REPLY_TIMEOUT: Duration = Duration::from_secs(5);

impl Shared {
    /// Publishes the held-back answer of `key`, if any (the attempt was superseded).
    pub(super) async fn release_withheld(&self, key: &str, only_task: Option<&str>) {
        let w = {
            let mut map = self.withheld.lock();
            match only_task {
                Some(t) if map.get(key).is_some_and(|w| w.task_id != t) => None,
                _ => map.remove(key),
            }
        };
        if let Some(w) = w {
            self.send_result(&w.route, &w.task_id, "", w.payload, w.headers, None)
                .await;
        }
    }

    /// Hands a result over by `route`, retrying for [`RESULT_RETRY_FOR`].
    /// While it retries, `task_msg` (the task's JetStream message) is kept
    /// in progress so the task is not redelivered meanwhile.
    pub(super) async fn send_result(
        &self,
        route: &Route,
        task_id: &str,
        suffix: &str,
        payload: bytes::Bytes,
        headers: async_nats::HeaderMap,
        task_msg: Option<&jetstream::Message>,
    ) -> bool {
        let give_up = tokio::time::Instant::now() + RESULT_RETRY_FOR;
        let mut backoff = Duration::from_millis(50);
        let mut progress_at = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let sent = match route {
                Route::JetStream(subject) => {
                    let msg = jetstream::message::PublishMessage::build()
                        .payload(payload.clone())
                        .headers(headers.clone())
                        .message_id(format!("r:{task_id}{suffix}"));
                    match self.js.send_publish(subject.clone(), msg).await {
                        Ok(ack) => ack.await.is_ok(),
                        Err(_) => false,
                    }
                }
                Route::Direct(subject) => {
                    let request = async_nats::Request::new()
                        .payload(payload.clone())
                        .headers(headers.clone())
                        .timeout(Some(DIRECT_REPLY_TIMEOUT));
                    match self.client.send_request(subject.clone(), request).await {
                        Ok(reply) => match serde_json::from_slice::<ResultReply>(&reply.payload) {
                            Ok(r) if r.ok => true,
                            Ok(r) if !r.retry => {
                                tracing::error!(
                                    task_id,
                                    error = r.error.as_deref().unwrap_or(""),
                                    "result refused by the orchestrator"
                                );
                                return false;
                            }
                            _ => false,
                        },
                        Err(_) => false,
                    }
                }
            };
            if sent {
                return true;
            }
            let now = tokio::time::Instant::now();
            if now >= give_up {
                break;
            }
            if let Some(m) = task_msg.filter(|_| now >= progress_at) {
                let _ = m.ack_with(jetstream::AckKind::Progress).await;
                progress_at = now + Duration::from_secs(10);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
        tracing::error!(
            task_id,
            "result not handed over; the orchestrator's timeout will retry the attempt"
        );
        false
    }
}
