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
use super::lineage_remote::LineageRequest;
use super::list::list;
use super::list_cluster::list_cluster;
use super::local::LocalAdmin;
use super::pipelines::{reload, PipelinesReloadRequest};
use super::route::Routing;
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
    serve_with(client, prefix, admin, runner, limits, None, None).await
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
    routing: Option<Routing>,
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
    let server = Arc::new(Server {
        batches: admin.batches().clone(),
        slots: Arc::new(Semaphore::new(limits.in_flight_max.max(1))),
        gate: Arc::new(Gate::new(limits)),
        subjects: Arc::new(subjects),
        client: client.clone(),
        engine,
        routing,
    });
    // Requests other nodes forward for the partitions this one serves.
    let (forwarded_tx, mut forwarded) = tokio::sync::mpsc::channel(1024);
    let _following = server.routing.as_ref().map(|r| {
        AbortOnDrop(tokio::spawn(super::route::follow_partitions(
            client.clone(),
            server.subjects.clone(),
            r.served.clone(),
            forwarded_tx,
        )))
    });
    let forwarded_loop = {
        let server = server.clone();
        async move {
            let mut serving = tokio::task::JoinSet::new();
            loop {
                let msg = tokio::select! {
                    m = forwarded.recv() => match m {
                        Some(m) => m,
                        None => std::future::pending().await,
                    },
                    Some(_) = serving.join_next(), if !serving.is_empty() => continue,
                };
                if let Some(verb) = super::route::forwarded_verb(msg.subject.as_str()) {
                    server.take(verb, msg, false, &mut serving).await;
                }
            }
        }
    };
    // Plain futures, not spawned tasks: when the service drops `serve`, the
    // loops, the requests they serve (a `JoinSet` aborts its tasks when
    // dropped) and the batch runner go with it.
    let loops = subs.into_iter().map(|(verb, mut sub)| {
        let server = server.clone();
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
                server.take(verb, msg, true, &mut serving).await;
            }
        }
    });
    futures_util::future::join3(
        futures_util::future::join_all(loops),
        forwarded_loop,
        runner,
    )
    .await;
    Ok(())
}

/// What serving one request needs.
struct Server {
    engine: Arc<Engine>,
    client: async_nats::Client,
    batches: BatchHandle,
    slots: Arc<Semaphore>,
    gate: Arc<Gate>,
    subjects: Arc<Subjects>,
    routing: Option<Routing>,
}

impl Server {
    /// Serves `msg` (a `verb` request) in `serving`: here, or forwarded to
    /// the node serving its workflow's partition when `entry` (it came from
    /// a client, not from another node) and this node does not serve it.
    /// Refused at once with `unavailable` when intake is over a bound.
    async fn take(
        self: &Arc<Self>,
        verb: &'static str,
        msg: async_nats::Message,
        entry: bool,
        serving: &mut tokio::task::JoinSet<()>,
    ) {
        let Some(reply_to) = msg.reply.clone() else {
            return;
        };
        let elsewhere = match (&self.routing, entry) {
            (Some(r), true) => r.elsewhere(verb, &msg.payload),
            _ => None,
        };
        let refused = match self.slots.clone().try_acquire_owned() {
            Err(_) => Err(self.gate.queue_full(&self.engine)),
            // The owner applies its own bounds to what it is forwarded.
            Ok(permit) if elsewhere.is_some() => Ok(permit),
            Ok(permit) => match self.gate.refuse(verb, &self.engine) {
                Some(e) => Err(e),
                None => Ok(permit),
            },
        };
        let permit = match refused {
            Ok(permit) => permit,
            Err(e) => {
                let body = encode::<()>(Err(e));
                if entry {
                    audit(verb, &msg, &body);
                }
                let _ = self.client.publish(reply_to, body.into()).await;
                return;
            }
        };
        let server = self.clone();
        serving.spawn(async move {
            let _permit = permit;
            let body = match (elsewhere, &server.routing) {
                (Some(p), Some(routing)) => {
                    routing
                        .forward(&server.client, &server.subjects, p, verb, &msg)
                        .await
                }
                _ => server.answer(verb, &msg).await,
            };
            if entry {
                audit(verb, &msg, &body);
            }
            let _ = server.client.publish(reply_to, body.into()).await;
        });
    }

    /// This node's answer to `msg`.
    async fn answer(&self, verb: &str, msg: &async_nats::Message) -> Vec<u8> {
        let max = self.gate.limits().limits.message_max_bytes;
        let body = if msg.payload.len() > max {
            self.engine.metrics().rejected_message("oversized");
            encode::<()>(Err(AdminError::bad(format!(
                "request of {} bytes exceeds nats.message_max_bytes ({max})",
                msg.payload.len()
            ))))
        } else {
            let ctx = Ctx {
                engine: &self.engine,
                batches: &self.batches,
                gate: &self.gate,
                subjects: &self.subjects,
                client: &self.client,
                routing: self.routing.as_ref(),
            };
            handle(verb, &msg.payload, &ctx).await
        };
        fit_reply(body, self.client.server_info().max_payload)
    }
}

/// Aborts a background task when dropped (the service was dropped).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
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
    client: &'a async_nats::Client,
    /// A cluster node's routing: `list` walks every node's partitions.
    routing: Option<&'a Routing>,
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
    SignalRequest,
    LineageRequest
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
            Ok(r) => match ctx.routing {
                Some(routing) if !r.cell => {
                    list_cluster(r, engine, routing, ctx.client, ctx.subjects).await
                }
                _ => list(r, engine).await,
            },
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
        "lineage" => encode(match parse::<LineageRequest>(verb, payload, engine) {
            Ok(r) => super::lineage_remote::perform(r, engine),
            Err(e) => Err(e),
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
