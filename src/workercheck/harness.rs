//! The fake orchestrator of `orchestrator worker-check`: it creates the
//! streams, publishes tasks to the worker under test, answers its direct
//! results, and records every heartbeat and result it sees, with the time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::protocol::subjects::Subjects;
use crate::protocol::trace::{self, TRACEPARENT};
use crate::transport::nats::{ensure_streams, stream_name, NatsConfig};

/// The partition token of the kit's reply subjects (`<prefix>.results.<it>`):
/// not a number, so it never collides with an orchestrator's partitions.
const PARTITION: &str = "worker-check";

/// How a result reached the kit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A core NATS request on `result_direct_to`.
    Direct,
    /// A JetStream publish on `reply_to`.
    Stream,
}

/// One heartbeat or result as the kit saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    /// The message; `Value::Null` when it was not JSON.
    pub body: Value,
    pub raw: bytes::Bytes,
    pub traceparent: Option<String>,
    pub via: Via,
}

/// Everything seen so far, by task id.
#[derive(Default)]
struct Seens {
    results: HashMap<String, Vec<Seen>>,
    beats: HashMap<String, Vec<Seen>>,
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A connection to NATS acting as the orchestrator for one task type.
pub struct Harness {
    client: async_nats::Client,
    js: jetstream::Context,
    subjects: Subjects,
    prefix: String,
    pub task_type: String,
    /// Makes this run's task ids unique, so a task of an earlier run
    /// still in the stream is told apart.
    run: String,
    seen: Arc<Mutex<Seens>>,
    _listeners: Vec<AbortOnDrop>,
}

impl Harness {
    /// Connects, creates the streams (as `orchestrator run` does) and
    /// starts listening. `fresh` deletes the task type's consumer and its
    /// queued tasks first, so the worker under test creates the consumer.
    pub async fn connect(
        cfg: &NatsConfig,
        task_type: &str,
        fresh: bool,
    ) -> Result<Harness, String> {
        let prefix = cfg.prefix.as_str();
        let subjects = Subjects::new(prefix)?;
        if !crate::protocol::subjects::valid_token(task_type) {
            return Err(format!("invalid task type {task_type:?}"));
        }
        let (client, js) = crate::transport::nats::connect(cfg).await?;
        ensure_streams(&js, cfg).await?;
        if fresh {
            let stream = js
                .get_stream(stream_name(prefix, "TASKS"))
                .await
                .map_err(|e| format!("tasks stream: {e}"))?;
            let _ = stream.delete_consumer(&format!("worker-{task_type}")).await;
            let _ = stream.purge().filter(subjects.tasks(task_type)).await;
        }
        let seen = Arc::new(Mutex::new(Seens::default()));
        let mut listeners = Vec::new();
        for (subject, via) in [
            (format!("{prefix}.heartbeats.{PARTITION}"), None),
            (format!("{prefix}.rdirect.{PARTITION}"), Some(Via::Direct)),
            (format!("{prefix}.results.{PARTITION}"), Some(Via::Stream)),
        ] {
            let mut sub = client
                .subscribe(subject.clone())
                .await
                .map_err(|e| format!("cannot subscribe to {subject}: {e}"))?;
            let (seen, client) = (seen.clone(), client.clone());
            listeners.push(AbortOnDrop(tokio::spawn(async move {
                while let Some(msg) = sub.next().await {
                    let body: Value = serde_json::from_slice(&msg.payload).unwrap_or(Value::Null);
                    let task_id = body["task_id"].as_str().unwrap_or_default().to_string();
                    let s = Seen {
                        at: Instant::now(),
                        body,
                        raw: msg.payload.clone(),
                        traceparent: msg
                            .headers
                            .as_ref()
                            .and_then(|h| h.get(TRACEPARENT))
                            .map(|v| v.as_str().to_string()),
                        via: via.unwrap_or(Via::Direct),
                    };
                    match via {
                        None => seen.lock().beats.entry(task_id).or_default().push(s),
                        Some(_) => seen.lock().results.entry(task_id).or_default().push(s),
                    }
                    // Direct results are answered at once: the kit journals nothing.
                    if let (Some(Via::Direct), Some(reply)) = (via, msg.reply) {
                        let _ = client
                            .publish(reply, br#"{"v":1,"ok":true}"#.as_slice().into())
                            .await;
                    }
                }
            })));
        }
        Ok(Harness {
            client,
            js,
            subjects,
            prefix: prefix.to_string(),
            task_type: task_type.to_string(),
            run: uuid::Uuid::now_v7().simple().to_string()[20..].to_string(),
            seen,
            _listeners: listeners,
        })
    }

    /// A task message of attempt 1 for a new workflow `wc-<run>-<label>`,
    /// with `workflow_input` as the workflow's input and no dependencies.
    pub fn task(&self, label: &str, workflow_input: Value, heartbeat_timeout_ms: u64) -> Value {
        let workflow_id = format!("wc-{}-{label}", self.run);
        let t = &self.task_type;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        json!({
            "v": 1,
            "task_id": format!("{workflow_id}:{t}:0:1"),
            "idempotency_key": format!("{workflow_id}:{t}:0"),
            "workflow_id": workflow_id,
            "pipeline": "worker-check",
            "pipeline_version": 1,
            "step": t,
            "task_type": t,
            "attempt": 1,
            "max_attempts": 3,
            "input": {"workflow": workflow_input, "deps": {}},
            "deadline_ms": now_ms + 600_000,
            "heartbeat_timeout_ms": heartbeat_timeout_ms,
            "reply_to": format!("{}.results.{PARTITION}", self.prefix),
            "heartbeat_to": format!("{}.heartbeats.{PARTITION}", self.prefix),
            "result_direct_to": format!("{}.rdirect.{PARTITION}", self.prefix),
            "attempt_token": uuid::Uuid::now_v7().simple().to_string(),
        })
    }

    /// Publishes `task` to the TASKS stream (with `msg_id` as its
    /// `Nats-Msg-Id` and the task's `traceparent`); the time it was stored.
    pub async fn publish(&self, task: &Value, msg_id: &str) -> Result<Instant, String> {
        let (wf, id) = (
            task["workflow_id"].as_str().unwrap_or_default(),
            task["task_id"].as_str().unwrap_or_default(),
        );
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg_id);
        headers.insert(TRACEPARENT, trace::task_traceparent(wf, id).as_str());
        let ack = self
            .js
            .publish_with_headers(
                self.subjects.tasks(&self.task_type),
                headers,
                task.to_string().into(),
            )
            .await
            .map_err(|e| format!("publish task: {e}"))?;
        ack.await.map_err(|e| format!("publish task: {e}"))?;
        Ok(Instant::now())
    }

    /// Tells workers of the type to stop `task` (core NATS).
    pub async fn cancel(&self, task: &Value, reason: &str) -> Result<(), String> {
        let msg = json!({"v": 1, "task_id": task["task_id"], "workflow_id": task["workflow_id"],
                         "reason": reason});
        self.client
            .publish(
                self.subjects.cancel(&self.task_type),
                msg.to_string().into(),
            )
            .await
            .map_err(|e| format!("cancel: {e}"))?;
        self.client
            .flush()
            .await
            .map_err(|e| format!("cancel: {e}"))
    }

    pub fn results(&self, task_id: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .results
            .get(task_id)
            .cloned()
            .unwrap_or_default()
    }

    pub fn beats(&self, task_id: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .beats
            .get(task_id)
            .cloned()
            .unwrap_or_default()
    }

    /// The first result for `task_id`, waiting up to `within` for it.
    pub async fn wait_result(&self, task_id: &str, within: Duration) -> Option<Seen> {
        let until = Instant::now() + within;
        loop {
            if let Some(r) = self.results(task_id).into_iter().next() {
                return Some(r);
            }
            if Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The first heartbeat for `task_id`, waiting up to `within` for it.
    pub async fn wait_beat(&self, task_id: &str, within: Duration) -> Option<Seen> {
        let until = Instant::now() + within;
        loop {
            if let Some(b) = self.beats(task_id).into_iter().next() {
                return Some(b);
            }
            if Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The worker's consumer, once it exists.
    pub async fn consumer(&self) -> Result<consumer::Info, String> {
        let stream = self
            .js
            .get_stream(stream_name(&self.prefix, "TASKS"))
            .await
            .map_err(|e| format!("tasks stream: {e}"))?;
        let name = format!("worker-{}", self.task_type);
        stream
            .consumer_info(&name)
            .await
            .map_err(|e| format!("consumer {name}: {e}"))
    }

    /// Waits up to `within` for the worker's consumer to appear.
    pub async fn wait_consumer(&self, within: Duration) -> Result<consumer::Info, String> {
        let until = Instant::now() + within;
        loop {
            match self.consumer().await {
                Ok(info) => return Ok(info),
                Err(e) if Instant::now() >= until => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// True once every task of the type is acknowledged (or terminated):
    /// none waits and none is delivered without an ack, within `within`.
    pub async fn settled(&self, within: Duration) -> bool {
        let until = Instant::now() + within;
        loop {
            if let Ok(info) = self.consumer().await {
                if info.num_ack_pending == 0 && info.num_pending == 0 {
                    return true;
                }
            }
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
