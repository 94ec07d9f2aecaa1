//! The NATS side of the admin surface: one queue subscription per verb,
//! request decoding and dispatch to the verb handlers.

use std::sync::Arc;

use futures_util::StreamExt;
use serde::Deserialize;

use super::backup::{backup, BackupRequest};
use super::batch::{BatchCreateRequest, BatchHandle, BatchJobRequest, BatchListRequest};
use super::error::encode;
use super::history::history;
use super::list::list;
use super::local::LocalAdmin;
use super::wire::{
    CancelRequest, DescribeRequest, HistoryRequest, ListRequest, RerunRequest, StartRequest,
};
use super::workflow::{control, describe, rerun, start};
use super::{AdminError, VERBS};
use crate::engine::Engine;
use crate::protocol::subjects::Subjects;
use crate::protocol::VERSION;
use crate::workflow::{Input, ReopenMode};

/// Serves admin requests (and runs the batch jobs) until the subscriptions end.
/// Admin requests of one verb served at once; more wait in the subscription.
pub const ADMIN_IN_FLIGHT_MAX: usize = 256;

pub async fn serve(
    client: async_nats::Client,
    prefix: String,
    engine: Arc<Engine>,
    request_max_bytes: usize,
) -> Result<(), String> {
    let (admin, runner) = LocalAdmin::start(engine);
    serve_with(client, prefix, admin, runner, request_max_bytes).await
}

/// [`serve`] over verbs made by [`LocalAdmin::start`], whose batch runner
/// `runner` is polled here: the console shares that runner.
pub async fn serve_with(
    client: async_nats::Client,
    prefix: String,
    admin: LocalAdmin,
    runner: impl std::future::Future<Output = ()>,
    request_max_bytes: usize,
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
    let engine = admin.engine().clone();
    let batches = admin.batches().clone();
    // Plain futures, not spawned tasks: when the service drops `serve`, the
    // loops and the batch runner (and their handles on the engine) go with it.
    let loops = subs.into_iter().map(|(verb, sub)| {
        let engine = engine.clone();
        let client = client.clone();
        let batches = batches.clone();
        async move {
            // Requests are served concurrently (a start waits for its fsync;
            // the group committer batches concurrent ones), bounded per verb.
            sub.for_each_concurrent(ADMIN_IN_FLIGHT_MAX, |msg| {
                let (engine, client, batches) = (&engine, &client, &batches);
                async move {
                    let Some(reply_to) = msg.reply.clone() else {
                        return;
                    };
                    let body = if msg.payload.len() > request_max_bytes {
                        engine.metrics().rejected_message("oversized");
                        encode::<()>(Err(AdminError::bad(format!(
                            "request of {} bytes exceeds {request_max_bytes}",
                            msg.payload.len()
                        ))))
                    } else {
                        handle(verb, &msg.payload, engine, batches).await
                    };
                    let info = msg
                        .headers
                        .as_ref()
                        .and_then(|h| h.get(crate::audit::REQUEST_INFO).map(|v| v.as_str()));
                    crate::audit::record(verb, info, &msg.payload, &body);
                    let _ = client.publish(reply_to, body.into()).await;
                }
            })
            .await;
        }
    });
    futures_util::future::join(futures_util::future::join_all(loops), runner).await;
    Ok(())
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
    BackupRequest
);

async fn handle(verb: &str, payload: &[u8], engine: &Engine, batches: &BatchHandle) -> Vec<u8> {
    match verb {
        "start" => encode(match parse::<StartRequest>(verb, payload, engine) {
            Ok(r) => start(r, engine).await,
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
