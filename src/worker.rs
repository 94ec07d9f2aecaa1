//! `orchestrator worker --simulate`: simulated workers over NATS, speaking
//! the same protocol a real worker does (see `docs/protocol.md`). One pull
//! consumer per task type, so a busy worker pulls only when it has a free slot.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::Semaphore;

use crate::protocol::subjects::Subjects;
use crate::protocol::TaskMessage;
use crate::sim::SimConfig;
use crate::transport::nats::{stream_name, NatsConfig};

mod execute;
mod faults;
mod offer;
mod record;
mod result;

pub use faults::{parse_fail_for, Outage, WorkerFaults};
pub use record::ExecutionRecord;

use execute::execute;
use offer::take_offers;
use record::Recorder;
use result::Withheld;

/// What an observer of the workers learns of each answered execution (an
/// in-process load generator splits task time into queue wait and run with it).
#[derive(Debug, Clone, Copy)]
pub struct Execution<'a> {
    pub task_id: &'a str,
    /// Unix µs when the worker started it (after the pull).
    pub started_us: u64,
    /// Unix µs when its result was ready, just before the result is published.
    pub finished_us: u64,
    pub succeeded: bool,
}

/// Called once per answered execution, before its result is published (so
/// the call happens before the orchestrator can have seen the result).
pub type Observer = Arc<dyn Fn(&Execution<'_>) + Send + Sync>;

/// Unix time in µs.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

struct Shared {
    js: jetstream::Context,
    client: async_nats::Client,
    sim: SimConfig,
    faults: WorkerFaults,
    cancelled: Mutex<HashSet<String>>,
    withheld: Mutex<HashMap<String, Withheld>>,
    recorder: Option<Recorder>,
    limits: crate::protocol::Limits,
    observer: Option<Observer>,
    /// Send results by request when the task offers `result_direct_to`.
    direct: bool,
    /// When the workers started (for `fail_for`).
    began: tokio::time::Instant,
}

/// Runs simulated workers for `task_types` until the connection closes or
/// `shutdown` resolves.
pub async fn run(
    nats: NatsConfig,
    sim: SimConfig,
    faults: WorkerFaults,
    task_types: Vec<String>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    run_observed(nats, sim, faults, task_types, None, shutdown).await
}

/// The durable consumer `config` on the stream `stream`, made again after
/// it was deleted; waits (and retries) until the stream is back.
async fn reopen_consumer(
    js: &jetstream::Context,
    stream: &str,
    config: &consumer::pull::Config,
) -> consumer::PullConsumer {
    loop {
        let made = match js.get_stream(stream).await {
            Ok(s) => s
                .get_or_create_consumer(
                    config.durable_name.as_deref().unwrap_or_default(),
                    config.clone(),
                )
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match made {
            Ok(c) => return c,
            Err(e) => {
                tracing::warn!(stream, error = %e, "tasks consumer not available yet");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// [`run`], telling `observer` about every answered execution.
pub async fn run_observed(
    nats: NatsConfig,
    sim: SimConfig,
    faults: WorkerFaults,
    task_types: Vec<String>,
    observer: Option<Observer>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    faults.validate()?;
    let recorder = faults.record.as_deref().map(Recorder::open).transpose()?;
    let (client, js) = crate::transport::nats::connect(&nats).await?;
    crate::transport::nats::ensure_streams(&js, &nats).await?;
    let subjects = Subjects::new(&nats.prefix)?;
    let shared = Arc::new(Shared {
        js: js.clone(),
        client: client.clone(),
        sim: sim.clone(),
        faults,
        cancelled: Mutex::default(),
        withheld: Mutex::default(),
        recorder,
        limits: nats.limits.clone(),
        observer,
        direct: nats.results_direct,
        began: tokio::time::Instant::now(),
    });
    // Only the cancels of the task types served: with per-type NATS
    // users (deploy/nats/) a worker may read no others.
    let mut per_type = Vec::with_capacity(task_types.len());
    for task_type in &task_types {
        per_type.push(
            client
                .subscribe(subjects.cancel(task_type))
                .await
                .map_err(|e| format!("cannot subscribe to cancels: {e}"))?,
        );
    }
    let mut cancels = futures_util::stream::select_all(per_type);
    let s2 = shared.clone();
    tokio::spawn(async move {
        while let Some(m) = cancels.next().await {
            if let Ok(c) = serde_json::from_slice::<crate::protocol::CancelMessage>(&m.payload) {
                // A superseded attempt that was held back answers now, late.
                if let Some(key) = idempotency_key_of(&c.task_id) {
                    s2.release_withheld(key, Some(&c.task_id)).await;
                }
                let mut set = s2.cancelled.lock();
                if set.len() > 100_000 {
                    set.clear();
                }
                set.insert(c.task_id);
            }
        }
    });
    let stream = js
        .get_stream(stream_name(&nats.prefix, "TASKS"))
        .await
        .map_err(|e| format!("tasks stream: {e}"))?;
    let slots = Arc::new(Semaphore::new(sim.concurrency.max(1)));
    let mut handles = Vec::new();
    for task_type in task_types {
        if !crate::protocol::subjects::valid_token(&task_type) {
            return Err(format!("invalid task type {task_type:?}"));
        }
        let name = format!("worker-{task_type}");
        let consumer_config = consumer::pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: subjects.tasks(&task_type),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: i64::try_from(sim.concurrency.max(1)).unwrap_or(1000),
            ..Default::default()
        };
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(&name, consumer_config.clone())
            .await
            .map_err(|e| format!("consumer {name}: {e}"))?;
        if nats.tasks_direct {
            let offers = client
                .queue_subscribe(subjects.tasks_direct(&task_type), "workers".into())
                .await
                .map_err(|e| format!("cannot subscribe to task offers: {e}"))?;
            handles.push(tokio::spawn(take_offers(
                offers,
                slots.clone(),
                shared.clone(),
            )));
        }
        let slots = slots.clone();
        let shared = shared.clone();
        let stream_id = stream_name(&nats.prefix, "TASKS");
        handles.push(tokio::spawn(async move {
            // A stream error (NATS restarting, a missed idle heartbeat) is
            // not the end: skip it, and re-open the stream if it ended. An
            // earlier version stopped pulling at the first error, so a NATS
            // restart left every later task of the type unanswered.
            let mut consumer = consumer;
            loop {
                let mut messages = match consumer.messages().await {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "tasks consumer; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                };
                while let Some(next) = messages.next().await {
                    let msg = match next {
                        Ok(m) => m,
                        Err(e) if crate::transport::nats::consumer_gone(&e) => {
                            // Deleted, alone or with its stream: make it
                            // again once the stream is back.
                            tracing::warn!(error = %e, "tasks consumer gone; opening it again");
                            consumer =
                                reopen_consumer(&shared.js, &stream_id, &consumer_config).await;
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "tasks consumer error");
                            continue;
                        }
                    };
                    let Ok(permit) = slots.clone().acquire_owned().await else {
                        return;
                    };
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let _permit = permit;
                        let task = match TaskMessage::decode(&msg.payload, &shared.limits) {
                            Ok(t) => t,
                            Err(e) => {
                                tracing::warn!(error = %e, "task refused");
                                let _ = msg.ack_with(jetstream::AckKind::Term).await;
                                return;
                            }
                        };
                        execute(&shared, &task, msg.headers.as_ref(), Some(&msg), None).await;
                        let _ = msg.ack().await;
                    });
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }));
    }
    let aborts: Vec<_> = handles.iter().map(|h| h.abort_handle()).collect();
    tokio::pin!(shutdown);
    tokio::select! {
        _ = &mut shutdown => {}
        _ = futures_util::future::join_all(handles) => {}
    }
    // Graceful stop: pull nothing more, and let the tasks in hand finish and
    // hand their results over (up to the grace), so a stopped worker leaves
    // no result behind that the orchestrator already has — nor one it lacks.
    for a in aborts {
        a.abort();
    }
    let all = u32::try_from(sim.concurrency.max(1)).unwrap_or(u32::MAX);
    let grace = Duration::from_millis(sim.shutdown_grace_ms);
    if tokio::time::timeout(grace, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            in_hand = all as usize - slots.available_permits(),
            "shutdown grace over; tasks in hand are left to JetStream redelivery"
        );
    }
    client.flush().await.ok();
    Ok(())
}

/// The idempotency key inside a task id (`<workflow>:<step>:<gen>:<attempt>` → without the attempt).
fn idempotency_key_of(task_id: &str) -> Option<&str> {
    task_id.rsplit_once(':').map(|(key, _)| key)
}
