//! The NATS side of the admin surface: one queue subscription per verb,
//! request decoding and dispatch to the verb handlers.

use std::sync::Arc;

use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::Semaphore;

use super::backup::{backup, BackupRequest};
use super::batch::{BatchCreateRequest, BatchHandle, BatchJobRequest, BatchListRequest};
use super::capacity::CapacityRequest;
use super::error::encode;
use super::history::history;
use super::intake::{check_start_size, Gate, IntakeLimits};
use super::list::list;
use super::local::LocalAdmin;
use super::pipelines::{reload, PipelinesReloadRequest};
use super::signal::{signal, SignalRequest};
use super::wire::{
    CancelRequest, DescribeRequest, HistoryRequest, ListRequest, RerunRequest, StartRequest,
};
use super::workflow::{control, describe, rerun, start};
use super::{AdminError, VERBS};
use crate::engine::Engine;
use crate::protocol::subjects::Subjects;
use crate::protocol::VERSION;
use crate::workflow::{Input, ReopenMode};

/// Serves admin requests (and runs the batch jobs) until the subscriptions
/// end. Every request with a reply subject gets an answer: served, or
/// refused at once with `unavailable` when intake is over a bound
/// ([`IntakeLimits`]).
pub async fn serve(
    client: async_nats::Client,
    prefix: String,
    engine: Arc<Engine>,
    limits: IntakeLimits,
) -> Result<(), String> {
    let (admin, runner) = LocalAdmin::start(engine);
    serve_with(client, prefix, admin, runner, limits, None).await
}

/// [`serve`] over verbs made by [`LocalAdmin::start`], whose batch runner
/// `runner` is polled here: the console shares that runner. `subscribed`
/// hears once the server has every verb's subscription, so a caller can
/// report ready only when a request would find a responder.
pub async fn serve_with(
    client: async_nats::Client,
    prefix: String,
    admin: LocalAdmin,
    runner: impl std::future::Future<Output = ()>,
    limits: IntakeLimits,
    subscribed: Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<(), String> {
    let subjects = Subjects::new(&prefix)?;
    let mut subs = Vec::new();
    for verb in VERBS {
        let sub = client
            .queue_subscribe(subjects.admin(verb), "orchestrator".to_string())
            .await
            .map_err(|e| format!("cannot subscribe to admin.{verb}: {e}"))?;
        subs.push((verb, sub));
    }
    // A flush round-trips to the server, which has then seen every SUB.
    client
        .flush()
        .await
        .map_err(|e| format!("cannot register the admin subscriptions: {e}"))?;
    if let Some(tx) = subscribed {
        let _ = tx.send(());
    }
    let engine = admin.engine().clone();
    let batches = admin.batches().clone();
    let slots = Arc::new(Semaphore::new(limits.in_flight_max.max(1)));
    let gate = Arc::new(Gate::new(limits));
    let subjects = Arc::new(subjects);
    // Plain futures, not spawned tasks: when the service drops `serve`, the
    // loops, the requests they serve (a `JoinSet` aborts its tasks when
    // dropped) and the batch runner go with it.
    let loops = subs.into_iter().map(|(verb, mut sub)| {
        let engine = engine.clone();
        let client = client.clone();
        let batches = batches.clone();
        let slots = slots.clone();
        let gate = gate.clone();
        let subjects = subjects.clone();
        async move {
            // Requests are served concurrently (a start waits for its fsync;
            // the group committer batches concurrent ones). The subscription
            // is read as fast as requests come, so none waits unseen.
            let mut serving = tokio::task::JoinSet::new();
            loop {
                let msg = tokio::select! {
                    m = sub.next() => match m {
                        Some(m) => m,
                        None => break,
                    },
                    Some(_) = serving.join_next(), if !serving.is_empty() => continue,
                };
                let Some(reply_to) = msg.reply.clone() else {
                    continue;
                };
                let refused = match slots.clone().try_acquire_owned() {
                    Err(_) => Err(gate.queue_full(&engine)),
                    Ok(permit) => match gate.refuse(verb, &engine) {
                        Some(e) => Err(e),
                        None => Ok(permit),
                    },
                };
                let permit = match refused {
                    Ok(permit) => permit,
                    Err(e) => {
                        let body = encode::<()>(Err(e));
                        audit(verb, &msg, &body);
                        let _ = client.publish(reply_to, body.into()).await;
                        continue;
                    }
                };
                let (engine, client, batches, gate, subjects) = (
                    engine.clone(),
                    client.clone(),
                    batches.clone(),
                    gate.clone(),
                    subjects.clone(),
                );
                serving.spawn(async move {
                    let _permit = permit;
                    let max = gate.limits().limits.message_max_bytes;
                    let body = if msg.payload.len() > max {
                        engine.metrics().rejected_message("oversized");
                        encode::<()>(Err(AdminError::bad(format!(
                            "request of {} bytes exceeds nats.message_max_bytes ({max})",
                            msg.payload.len()
                        ))))
                    } else {
                        let ctx = Ctx {
                            engine: &engine,
                            batches: &batches,
                            gate: &gate,
                            subjects: &subjects,
                        };
                        handle(verb, &msg.payload, &ctx).await
                    };
                    let body = fit_reply(body, client.server_info().max_payload);
                    audit(verb, &msg, &body);
                    let _ = client.publish(reply_to, body.into()).await;
                });
            }
        }
    });
    futures_util::future::join(futures_util::future::join_all(loops), runner).await;
    Ok(())
}

/// One audit line per mutating request, served or refused.
fn audit(verb: &str, msg: &async_nats::Message, body: &[u8]) {
    let info = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(crate::audit::REQUEST_INFO).map(|v| v.as_str()));
    crate::audit::record(verb, info, &msg.payload, body);
}

/// What a request's handler needs besides the request.
struct Ctx<'a> {
    engine: &'a Engine,
    batches: &'a BatchHandle,
    gate: &'a Gate,
    subjects: &'a Subjects,
}

fn parse<'a, T: Deserialize<'a> + HasVersion>(
    verb: &str,
    payload: &'a [u8],
    engine: &Engine,
) -> Result<T, AdminError> {
    decode_request(verb, payload, || {
        engine.metrics().rejected_message("malformed")
    })
}

/// The request layer of [`parse`], without the engine: decodes `payload` as
/// `verb`'s request and checks its version; `on_malformed` runs when the
/// payload is not such a request.
pub(crate) fn decode_request<'a, T: Deserialize<'a> + HasVersion>(
    verb: &str,
    payload: &'a [u8],
    on_malformed: impl FnOnce(),
) -> Result<T, AdminError> {
    match serde_json::from_slice::<T>(payload) {
        Err(e) => {
            on_malformed();
            Err(AdminError::bad(crate::protocol::one_line(format!(
                "malformed {verb} request: {e}"
            ))))
        }
        Ok(r) if r.version() != VERSION => Err(AdminError::bad(format!(
            "unsupported protocol version {}",
            r.version()
        ))),
        Ok(r) => Ok(r),
    }
}

pub(crate) trait HasVersion {
    fn version(&self) -> u32;
}

macro_rules! has_version {
    ($($t:ty),*) => {$(impl HasVersion for $t { fn version(&self) -> u32 { self.v } })*};
}
has_version!(
    StartRequest,
    DescribeRequest,
    CancelRequest,
    RerunRequest,
    HistoryRequest,
    ListRequest,
    BatchCreateRequest,
    BatchJobRequest,
    BatchListRequest,
    BackupRequest,
    PipelinesReloadRequest,
    CapacityRequest,
    SignalRequest
);

async fn handle(verb: &str, payload: &[u8], ctx: &Ctx<'_>) -> Vec<u8> {
    let (engine, batches) = (ctx.engine, ctx.batches);
    match verb {
        "start" => encode(match parse::<StartRequest>(verb, payload, engine) {
            Ok(r) => match engine.ctx().pipelines.current(&r.pipeline) {
                Some((_, def)) => {
                    match check_start_size(&r, &def, ctx.subjects, &ctx.gate.limits().limits) {
                        Ok(()) => start(r, engine).await,
                        Err(e) => Err(e),
                    }
                }
                // `start` names the unknown pipeline.
                None => start(r, engine).await,
            },
            Err(e) => Err(e),
        }),
        "describe" => encode(match parse::<DescribeRequest>(verb, payload, engine) {
            Ok(r) => describe(&r.id, engine).await,
            Err(e) => Err(e),
        }),
        "history" => encode(match parse::<HistoryRequest>(verb, payload, engine) {
            Ok(r) => history(r, engine).await,
            Err(e) => Err(e),
        }),
        "list" => encode(match parse::<ListRequest>(verb, payload, engine) {
            Ok(r) => list(r, engine).await,
            Err(e) => Err(e),
        }),
        "cancel" => encode(match parse::<CancelRequest>(verb, payload, engine) {
            Ok(r) => {
                let reason = r.reason.unwrap_or_else(|| "cancelled by operator".into());
                control(&r.id, Input::Cancel { reason }, engine).await
            }
            Err(e) => Err(e),
        }),
        "pause" | "resume" | "retry" => {
            encode(match parse::<DescribeRequest>(verb, payload, engine) {
                Ok(r) => {
                    let input = match verb {
                        "pause" => Input::Pause,
                        "resume" => Input::Resume,
                        _ => Input::Reopen(ReopenMode::RetryFailed),
                    };
                    control(&r.id, input, engine).await
                }
                Err(e) => Err(e),
            })
        }
        "rerun" => encode(match parse::<RerunRequest>(verb, payload, engine) {
            Ok(r) => rerun(r, engine).await,
            Err(e) => Err(e),
        }),
        "backup" => encode(match parse::<BackupRequest>(verb, payload, engine) {
            Ok(r) => backup(r, engine).await,
            Err(e) => Err(e),
        }),
        "pipelines.reload" => encode(
            match parse::<PipelinesReloadRequest>(verb, payload, engine) {
                Ok(_) => reload(engine).await,
                Err(e) => Err(e),
            },
        ),
        "capacity" => encode(match parse::<CapacityRequest>(verb, payload, engine) {
            Ok(r) => super::capacity::capacity(&r, engine),
            Err(e) => Err(e),
        }),
        "signal" => encode(match parse::<SignalRequest>(verb, payload, engine) {
            Ok(r) => signal(r, engine).await,
            Err(e) => {
                engine.metrics().signal("invalid");
                Err(e)
            }
        }),
        "batch.list" => encode(match parse::<BatchListRequest>(verb, payload, engine) {
            Ok(r) => batches.list(r.limit).await,
            Err(e) => Err(e),
        }),
        "batch.create" => encode(match parse::<BatchCreateRequest>(verb, payload, engine) {
            Ok(r) => batches.create(r).await,
            Err(e) => Err(e),
        }),
        _ => encode(match parse::<BatchJobRequest>(verb, payload, engine) {
            Ok(r) => match verb {
                "batch.status" => batches.status(&r.job).await,
                "batch.pause" => batches.pause(&r.job).await,
                _ => batches.resume(&r.job).await,
            },
            Err(e) => Err(e),
        }),
    }
}

/// An answer the server would refuse (over its `max_payload`) would leave
/// the client waiting for its timeout: it is replaced by an error that
/// says so (`unsupported`: asking again gives the same answer).
fn fit_reply(body: Vec<u8>, max_payload: usize) -> Vec<u8> {
    // Room for the subject and headers of the reply.
    const OVERHEAD: usize = 1024;
    if max_payload == 0 || body.len() + OVERHEAD <= max_payload {
        return body;
    }
    encode::<()>(Err(AdminError::new(
        super::error::code::UNSUPPORTED,
        format!(
            "the answer is {} bytes, over the NATS server's max_payload of {max_payload} bytes: \
             ask for less, or raise max_payload",
            body.len()
        ),
    )))
}

#[cfg(test)]
mod fit_reply_tests {
    use super::fit_reply;

    #[test]
    fn an_answer_over_max_payload_becomes_an_error_that_names_the_sizes() {
        let small = br#"{"ok":{}}"#.to_vec();
        assert_eq!(fit_reply(small.clone(), 1 << 20), small);
        let big = vec![b'x'; 20_000];
        let text = String::from_utf8(fit_reply(big, 16_384)).unwrap();
        assert!(text.contains("20000 bytes"), "{text}");
        assert!(text.contains("max_payload of 16384 bytes"), "{text}");
        assert!(text.contains("unsupported"), "{text}");
    }
}
