//! Direct task offers (`<prefix>.tdirect.<type>`): taking or declining
//! them, and answering an offer with the result when it is ready in time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Semaphore;

use super::execute::execute;
use super::Shared;
use crate::protocol::{TaskMessage, VERSION};

/// Serves one task type's direct offers (`<prefix>.tdirect.<type>`, a
/// queue group): with a free slot the worker takes the task and runs it,
/// answering `taken` at once or, when the offer has
/// `offer_result_within_ms`, with the result if it has it by then (else
/// `taken` when that window closes); without a free slot, or for an
/// unreadable task, it declines at once and the orchestrator publishes the
/// task to the stream. The subscription ends
/// (and NATS stops offering to this worker) when the task is aborted at
/// shutdown.
pub(super) async fn take_offers(
    mut offers: async_nats::Subscriber,
    slots: Arc<Semaphore>,
    shared: Arc<Shared>,
) {
    while let Some(msg) = offers.next().await {
        let Some(reply_to) = msg.reply.clone() else {
            continue;
        };
        let answer = |taken: bool, error: Option<String>| offer_reply(&shared, taken, error, None);
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            let _ = shared.client.publish(reply_to, answer(false, None)).await;
            continue;
        };
        let task = match TaskMessage::decode(&msg.payload, &shared.limits) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "task offer refused");
                let _ = shared
                    .client
                    .publish(reply_to, answer(false, Some(e.to_string())))
                    .await;
                continue;
            }
        };
        let shared = shared.clone();
        match task.offer_result_within_ms.filter(|&ms| ms > 0) {
            // The orchestrator takes the result as the answer if it comes
            // soon enough: one message instead of "taken", a result
            // request and its answer.
            Some(ms) => {
                tokio::spawn(async move {
                    let _permit = permit;
                    let offer = OfferAnswer {
                        reply_to,
                        answered: AtomicBool::new(false),
                    };
                    run_offered(&shared, &task, msg.headers.as_ref(), &offer, ms).await;
                });
            }
            None => {
                let _ = shared.client.publish(reply_to, answer(true, None)).await;
                tokio::spawn(async move {
                    let _permit = permit;
                    execute(&shared, &task, msg.headers.as_ref(), None, None).await;
                });
            }
        }
    }
}

/// Bytes kept free for the answer around a result in it (its other fields).
pub(super) const OFFER_ANSWER_ROOM: usize = 512;

/// The body of an answer to an offer.
pub(super) fn offer_reply(
    shared: &Shared,
    taken: bool,
    error: Option<String>,
    result: Option<Box<serde_json::value::RawValue>>,
) -> bytes::Bytes {
    let body = crate::protocol::TaskOfferReply {
        v: VERSION,
        taken,
        worker: taken.then(|| shared.sim.worker.clone()),
        error,
        result,
    };
    bytes::Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// A taken offer that has not been answered yet: answered once, with the
/// result when it is ready within the offer's window, else `taken`.
pub(super) struct OfferAnswer {
    reply_to: async_nats::Subject,
    answered: AtomicBool,
}

impl OfferAnswer {
    /// True for the one caller that gets to answer.
    pub(super) fn claim(&self) -> bool {
        !self.answered.swap(true, Ordering::AcqRel)
    }

    /// Answers `taken`, with `result` if given; false if it could not be sent.
    pub(super) async fn answer(
        &self,
        shared: &Shared,
        result: Option<Box<serde_json::value::RawValue>>,
        headers: Option<async_nats::HeaderMap>,
    ) -> bool {
        let body = offer_reply(shared, true, None, result);
        let sent = match headers {
            Some(h) => {
                shared
                    .client
                    .publish_with_headers(self.reply_to.clone(), h, body)
                    .await
            }
            None => shared.client.publish(self.reply_to.clone(), body).await,
        };
        sent.is_ok()
    }
}

/// Runs an offered task whose result may answer the offer: if it is not
/// ready within `within_ms`, the offer is answered `taken` then and the
/// result goes its own way when ready. An attempt that ends without a
/// result to send (cancelled, hung, held back) answers `taken` at its end.
pub(super) async fn run_offered(
    shared: &Shared,
    task: &TaskMessage,
    headers: Option<&async_nats::HeaderMap>,
    offer: &OfferAnswer,
    within_ms: u64,
) {
    {
        let run = execute(shared, task, headers, None, Some(offer));
        tokio::pin!(run);
        tokio::select! {
            biased;
            () = &mut run => {}
            () = tokio::time::sleep(Duration::from_millis(within_ms)) => {
                if offer.claim() {
                    offer.answer(shared, None, None).await;
                }
                run.await;
            }
        }
    }
    if offer.claim() {
        offer.answer(shared, None, None).await;
    }
}
