//! The admin surface over NATS request/reply (`<prefix>.admin.<verb>`), in a
//! queue group so several listeners share the load. JSON in, JSON out, `"v": 1`.
//! Verbs so far: `start`, `describe`.

use std::sync::Arc;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::protocol::subjects::Subjects;
use crate::protocol::VERSION;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartRequest {
    pub v: u32,
    pub pipeline: String,
    pub id: String,
    pub input: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DescribeRequest {
    pub v: u32,
    pub id: String,
}

/// Reply to `start` and `describe`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct WorkflowReply {
    pub v: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn error(message: String) -> WorkflowReply {
    WorkflowReply {
        v: VERSION,
        error: Some(message),
        ..WorkflowReply::default()
    }
}

/// Serves admin requests until the subscription ends.
pub async fn serve(
    client: async_nats::Client,
    prefix: String,
    engine: Arc<Engine>,
    request_max_bytes: usize,
) -> Result<(), String> {
    let subjects = Subjects::new(&prefix)?;
    let mut subs = Vec::new();
    for verb in ["start", "describe"] {
        let sub = client
            .queue_subscribe(subjects.admin(verb), "orchestrator".to_string())
            .await
            .map_err(|e| format!("cannot subscribe to admin.{verb}: {e}"))?;
        subs.push((verb, sub));
    }
    // Plain futures, not spawned tasks: when the service drops `serve`, the
    // loops (and their handles on the engine) go with it.
    let loops = subs.into_iter().map(|(verb, mut sub)| {
        let engine = engine.clone();
        let client = client.clone();
        async move {
            while let Some(msg) = sub.next().await {
                let Some(reply_to) = msg.reply.clone() else {
                    continue;
                };
                let reply = if msg.payload.len() > request_max_bytes {
                    engine.metrics().rejected_message("oversized");
                    error(format!(
                        "request of {} bytes exceeds {request_max_bytes}",
                        msg.payload.len()
                    ))
                } else {
                    handle(verb, &msg.payload, &engine).await
                };
                if let Ok(body) = serde_json::to_vec(&reply) {
                    let _ = client.publish(reply_to, body.into()).await;
                }
            }
        }
    });
    futures_util::future::join_all(loops).await;
    Ok(())
}

async fn handle(verb: &str, payload: &[u8], engine: &Engine) -> WorkflowReply {
    match verb {
        "start" => match serde_json::from_slice::<StartRequest>(payload) {
            Err(e) => {
                engine.metrics().rejected_message("malformed");
                error(format!("malformed start request: {e}"))
            }
            Ok(r) if r.v != VERSION => error(format!("unsupported protocol version {}", r.v)),
            Ok(r) => match engine
                .start_workflow(&r.pipeline, &r.id, &r.input.to_string())
                .await
            {
                Ok(s) => WorkflowReply {
                    v: VERSION,
                    id: Some(s.id),
                    status: Some(s.status.to_string()),
                    created: Some(s.created),
                    error: None,
                },
                Err(e) => error(e.to_string()),
            },
        },
        _ => match serde_json::from_slice::<DescribeRequest>(payload) {
            Err(e) => {
                engine.metrics().rejected_message("malformed");
                error(format!("malformed describe request: {e}"))
            }
            Ok(r) => match engine.describe(&r.id).await {
                Ok(Some(wf)) => WorkflowReply {
                    v: VERSION,
                    id: Some(wf.id),
                    status: Some(wf.status.to_string()),
                    created: None,
                    error: None,
                },
                Ok(None) => error(format!("unknown workflow {}", r.id)),
                Err(e) => error(e.to_string()),
            },
        },
    }
}
