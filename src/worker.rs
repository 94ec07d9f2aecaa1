//! `orchestrator worker --simulate`: simulated workers over NATS, speaking
//! the same protocol a real worker does (see `docs/protocol.md`). One pull
//! consumer per task type, so a busy worker pulls only when it has a free slot.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::Semaphore;

use crate::protocol::subjects::Subjects;
use crate::protocol::{
    ErrorBody, HeartbeatMessage, ResultMessage, ResultStatus, TaskMessage, VERSION,
};
use crate::sim::{draw, output_from, SimConfig};
use crate::transport::nats::{stream_name, NatsConfig};

/// Runs simulated workers for `task_types` until the connection closes or
/// `shutdown` resolves.
pub async fn run(
    nats: NatsConfig,
    sim: SimConfig,
    task_types: Vec<String>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    let (client, js) = crate::transport::nats::connect(&nats).await?;
    crate::transport::nats::ensure_streams(&js, &nats).await?;
    let subjects = Subjects::new(&nats.prefix)?;
    let cancelled: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut cancels = client
        .subscribe(format!("{}.cancel.>", subjects.prefix()))
        .await
        .map_err(|e| format!("cannot subscribe to cancels: {e}"))?;
    let c2 = cancelled.clone();
    tokio::spawn(async move {
        while let Some(m) = cancels.next().await {
            if let Ok(c) = serde_json::from_slice::<crate::protocol::CancelMessage>(&m.payload) {
                let mut set = c2.lock();
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
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(
                &name,
                consumer::pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: subjects.tasks(&task_type),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(30),
                    max_ack_pending: i64::try_from(sim.concurrency.max(1)).unwrap_or(1000),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| format!("consumer {name}: {e}"))?;
        let js = js.clone();
        let client = client.clone();
        let sim = sim.clone();
        let slots = slots.clone();
        let cancelled = cancelled.clone();
        let limits = nats.limits.clone();
        handles.push(tokio::spawn(async move {
            let Ok(mut messages) = consumer.messages().await else {
                return;
            };
            while let Some(Ok(msg)) = messages.next().await {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (js, client, sim, cancelled, limits) = (
                    js.clone(),
                    client.clone(),
                    sim.clone(),
                    cancelled.clone(),
                    limits.clone(),
                );
                tokio::spawn(async move {
                    let _permit = permit;
                    let task = match TaskMessage::decode(&msg.payload, &limits) {
                        Ok(t) => t,
                        Err(e) => {
                            tracing::warn!(error = %e, "task refused");
                            let _ = msg.ack_with(jetstream::AckKind::Term).await;
                            return;
                        }
                    };
                    execute(&js, &client, &sim, &cancelled, &task, &msg).await;
                    let _ = msg.ack().await;
                });
            }
        }));
    }
    tokio::pin!(shutdown);
    tokio::select! {
        _ = &mut shutdown => {}
        _ = futures_util::future::join_all(handles) => {}
    }
    client.flush().await.ok();
    Ok(())
}

async fn execute(
    js: &jetstream::Context,
    client: &async_nats::Client,
    sim: &SimConfig,
    cancelled: &Mutex<HashSet<String>>,
    task: &TaskMessage,
    msg: &jetstream::Message,
) {
    let beat = |task: &TaskMessage| HeartbeatMessage {
        v: VERSION,
        task_id: task.task_id.clone(),
        workflow_id: task.workflow_id.clone(),
        worker: Some(sim.worker.clone()),
        progress: None,
    };
    // The first heartbeat says "started".
    if let Ok(p) = serde_json::to_vec(&beat(task)) {
        let _ = client.publish(task.heartbeat_to.clone(), p.into()).await;
    }
    let started_at_ms = crate::engine::clock::Clock::now_ms(&crate::engine::clock::SystemClock);
    let every = task
        .heartbeat_timeout_ms
        .map(|h| (h / 3).max(1))
        .unwrap_or(u64::MAX);
    let mut left = sim.latency_ms;
    while left > 0 {
        let step = left.min(every);
        tokio::time::sleep(Duration::from_millis(step)).await;
        left -= step;
        if cancelled.lock().remove(&task.task_id) {
            return;
        }
        if left > 0 {
            if let Ok(p) = serde_json::to_vec(&beat(task)) {
                let _ = client.publish(task.heartbeat_to.clone(), p.into()).await;
            }
            // Keep JetStream from redelivering a long task (docs/protocol.md).
            let _ = msg.ack_with(jetstream::AckKind::Progress).await;
        }
    }
    let fail = draw(sim.seed, &task.task_id) < sim.fail_rate;
    let (status, output, error) = if fail {
        let e = ErrorBody {
            kind: "simulated".into(),
            message: "injected failure".into(),
            retryable: true,
        };
        (ResultStatus::Failed, None, Some(e))
    } else {
        match output_from(task.input.get(), &task.workflow_id, &task.step)
            .ok()
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
    let result = ResultMessage {
        v: VERSION,
        task_id: task.task_id.clone(),
        workflow_id: task.workflow_id.clone(),
        step: task.step.clone(),
        attempt: task.attempt,
        status,
        output,
        error,
        worker: Some(sim.worker.clone()),
        started_at_ms: Some(started_at_ms),
    };
    let Ok(payload) = serde_json::to_vec(&result) else {
        return;
    };
    // Results go through JetStream so they survive an orchestrator restart.
    // A worker keeps trying for a while (NATS may be restarting); after that
    // the orchestrator's timeout re-runs the attempt.
    let payload: bytes::Bytes = payload.into();
    let mut backoff = Duration::from_millis(100);
    for _ in 0..60 {
        let msg = jetstream::message::PublishMessage::build()
            .payload(payload.clone())
            .message_id(format!("r:{}", task.task_id));
        if let Ok(ack) = js.send_publish(task.reply_to.clone(), msg).await {
            if ack.await.is_ok() {
                return;
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
    tracing::error!(task_id = %task.task_id, "result not published");
}
