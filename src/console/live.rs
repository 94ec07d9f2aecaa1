//! What the console follows on NATS: the lifecycle events (fanned out to
//! the SSE streams of open workflow pages) and the workers' heartbeats
//! (the workers seen, for the health page).
//!
//! Both are core NATS subscriptions: the events are the lifecycle stream's
//! messages as they are published (the console needs no replay; a page
//! shows the stored state and then follows), heartbeats are core NATS
//! anyway. A lagging SSE stream skips the events it missed and the page
//! reloads its state on the next one, so nothing is lost on screen.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::broadcast;

use super::routes::Params;
use super::Console;
use crate::events::{decode_message, EventMessage};

/// Lifecycle records buffered for slow SSE streams.
pub const EVENTS_BUFFERED: usize = 1024;
/// Workers the health page remembers; past it the one seen longest ago goes.
pub const WORKERS_MAX: usize = 10_000;

/// One worker, as its heartbeats show it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSeen {
    pub name: String,
    pub last_seen_ms: u64,
    pub heartbeats: u64,
}

pub struct Live {
    events: broadcast::Sender<Arc<EventMessage>>,
    workers: Mutex<HashMap<String, WorkerSeen>>,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            events: broadcast::channel(EVENTS_BUFFERED).0,
            workers: Mutex::default(),
        }
    }
}

impl Live {
    /// Notes a heartbeat of `worker` at `now_ms`.
    pub fn heartbeat(&self, worker: &str, now_ms: u64) {
        let mut all = self.workers.lock();
        if !all.contains_key(worker) && all.len() >= WORKERS_MAX {
            if let Some(oldest) = all
                .values()
                .min_by_key(|w| w.last_seen_ms)
                .map(|w| w.name.clone())
            {
                all.remove(&oldest);
            }
        }
        let w = all.entry(worker.to_string()).or_insert_with(|| WorkerSeen {
            name: worker.to_string(),
            last_seen_ms: now_ms,
            heartbeats: 0,
        });
        w.last_seen_ms = now_ms;
        w.heartbeats += 1;
    }

    /// The workers seen, most recent first.
    pub fn workers(&self) -> Vec<WorkerSeen> {
        let mut v: Vec<WorkerSeen> = self.workers.lock().values().cloned().collect();
        v.sort_by(|a, b| {
            b.last_seen_ms
                .cmp(&a.last_seen_ms)
                .then(a.name.cmp(&b.name))
        });
        v
    }
}

fn now_ms(c: &Console) -> u64 {
    c.admin()
        .map(|a| a.engine().ctx().clock.now_ms())
        .unwrap_or_default()
}

pub async fn follow_events(c: Arc<Console>, client: async_nats::Client, subject: String) {
    let mut sub = match client.subscribe(subject).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "console cannot follow lifecycle events");
            return;
        }
    };
    while let Some(msg) = sub.next().await {
        match decode_message(&msg.payload) {
            Ok(records) => {
                for r in records {
                    // No receiver (no page open) is fine.
                    let _ = c.live.events.send(Arc::new(r));
                }
            }
            Err(e) => tracing::debug!(error = %e, "console skipped an event message"),
        }
    }
}

pub async fn follow_heartbeats(c: Arc<Console>, client: async_nats::Client, subject: String) {
    #[derive(serde::Deserialize)]
    struct Beat {
        #[serde(default)]
        worker: Option<String>,
    }
    let mut sub = match client.subscribe(subject).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "console cannot follow heartbeats");
            return;
        }
    };
    while let Some(msg) = sub.next().await {
        if let Ok(Beat { worker: Some(w) }) = serde_json::from_slice::<Beat>(&msg.payload) {
            if !w.is_empty() && w.len() <= 256 {
                c.live.heartbeat(&w, now_ms(&c));
            }
        }
    }
}

/// One SSE `update` per lifecycle record of the workflow: a line that
/// names the events and the status after them.
pub fn update_line(r: &EventMessage) -> String {
    let mut line = format!("status={}", r.status);
    for e in &r.events {
        line.push(' ');
        line.push_str(&e.event);
        if let Some(s) = &e.step {
            line.push(':');
            line.push_str(s);
        }
        if let Some(a) = e.attempt {
            line.push_str(&format!("#{a}"));
        }
    }
    // SSE data ends at a newline; the names above hold none, but keep it so.
    line.replace(['\n', '\r'], " ")
}

/// `GET /console/live?id=…`: the workflow's lifecycle records as
/// server-sent events until the stream's time is up (the browser then
/// reconnects after a second).
pub async fn stream(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let params = Params::query(raw.as_deref());
    let Some(id) = params.get("id").map(str::to_string) else {
        return c.error(
            &headers,
            StatusCode::BAD_REQUEST,
            "which workflow? (?id=...)",
        );
    };
    let rx = c.live.events.subscribe();
    let until = tokio::time::Instant::now() + c.stream_for;
    let first = futures_util::stream::once(async {
        Ok::<Bytes, Infallible>(Bytes::from_static(b"retry: 1000\n: following\n\n"))
    });
    let updates = futures_util::stream::unfold(rx, move |mut rx| {
        let id = id.clone();
        async move {
            loop {
                let next = tokio::time::timeout_at(until, rx.recv()).await;
                match next {
                    Err(_) | Ok(Err(broadcast::error::RecvError::Closed)) => return None,
                    Ok(Err(broadcast::error::RecvError::Lagged(_))) => {
                        let chunk =
                            Bytes::from_static(b"event: update\ndata: (some events skipped)\n\n");
                        return Some((Ok::<Bytes, Infallible>(chunk), rx));
                    }
                    Ok(Ok(r)) if r.workflow_id == id => {
                        let chunk = format!("event: update\ndata: {}\n\n", update_line(&r));
                        return Some((Ok(Bytes::from(chunk)), rx));
                    }
                    Ok(Ok(_)) => continue,
                }
            }
        }
    });
    let mut r = Body::from_stream(first.chain(updates)).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_are_bounded_and_the_longest_silent_goes_first() {
        let live = Live::default();
        for i in 0..WORKERS_MAX {
            live.heartbeat(&format!("w{i}"), 1_000 + i as u64);
        }
        live.heartbeat("w0", 99_999);
        live.heartbeat("new", 100_000);
        let all = live.workers();
        assert_eq!(all.len(), WORKERS_MAX);
        assert_eq!(all[0].name, "new");
        assert_eq!((all[1].name.as_str(), all[1].heartbeats), ("w0", 2));
        assert!(all.iter().all(|w| w.name != "w1"), "w1 was silent longest");
    }
}
