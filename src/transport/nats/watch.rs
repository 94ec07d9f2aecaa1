//! The stream watch: `run` checks every `nats.stream_watch_interval` that
//! its streams and its results consumer exist with their configured
//! settings. What is missing is created again, what was altered is set
//! back; each repair is logged and counted
//! (`narralytica_nats_streams_recreated_total`). What cannot be repaired
//! (the server refuses) is reported by `/readyz` until it can.
//!
//! Why: anyone allowed to manage streams on the server can delete one; the
//! tasks and results it held are healed by the attempts' timeouts, but
//! without the stream nothing would flow until the next restart.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, context, stream};

use super::intake::{results_consumer_config, RESULTS_CONSUMER};
use super::{stream_name, NatsConfig, NatsStats};

/// What the watch keeps in place.
#[derive(Debug, Clone)]
pub struct Watched {
    pub streams: Vec<stream::Config>,
    /// The results consumer (on the RESULTS stream); `None` on a cluster
    /// node, whose partitions' consumers are opened by their readers.
    pub results: Option<consumer::pull::Config>,
    pub results_stream: String,
}

impl Watched {
    /// The task and result streams and the results consumer of `cfg`, plus
    /// `more` streams (the events stream, when events are on).
    pub fn new(cfg: &NatsConfig, more: Vec<stream::Config>) -> Result<Watched, String> {
        let mut streams = super::streams::stream_configs(cfg)?;
        streams.extend(more);
        Ok(Watched {
            streams,
            results: Some(results_consumer_config(cfg)),
            results_stream: stream_name(&cfg.prefix, "RESULTS"),
        })
    }
}

/// Runs until dropped (abort the task at shutdown).
pub async fn watch_streams(
    js: jetstream::Context,
    watched: Watched,
    every: Duration,
    stats: Arc<NatsStats>,
) {
    loop {
        tokio::time::sleep(every).await;
        if !stats.is_connected() {
            // Readiness already says "nats not connected"; nothing to check.
            continue;
        }
        let mut wrong = Vec::new();
        for want in &watched.streams {
            if let Err(e) = keep_stream(&js, want, &stats).await {
                wrong.push(e);
            }
        }
        if let Err(e) = keep_consumer(&js, &watched, &stats).await {
            wrong.push(e);
        }
        stats.set_streams_wrong(wrong);
    }
}

/// Checks one stream; creates it again or restores its settings. `Err`
/// names what is still wrong.
async fn keep_stream(
    js: &jetstream::Context,
    want: &stream::Config,
    stats: &NatsStats,
) -> Result<(), String> {
    let name = &want.name;
    match js.get_stream(name).await {
        Ok(s) => {
            let have = &s.cached_info().config;
            if let Some(what) = altered(have, want) {
                tracing::warn!(stream = %name, setting = what, "stream settings altered; restoring them");
                js.update_stream(want.clone())
                    .await
                    .map_err(|e| format!("stream {name} altered ({what}) and not restored: {e}"))?;
                stats.streams_recreated.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }
        Err(e) if stream_missing(&e) => {
            tracing::warn!(stream = %name, "stream missing; creating it again");
            js.create_stream(want.clone())
                .await
                .map_err(|e| format!("stream {name} missing: {e}"))?;
            stats.streams_recreated.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        // The server did not answer: a connection matter, not a stream's.
        Err(e) => {
            tracing::debug!(stream = %name, error = %e, "stream check failed");
            Ok(())
        }
    }
}

async fn keep_consumer(
    js: &jetstream::Context,
    watched: &Watched,
    stats: &NatsStats,
) -> Result<(), String> {
    let Some(want) = &watched.results else {
        return Ok(());
    };
    let Ok(s) = js.get_stream(&watched.results_stream).await else {
        // Missing stream: reported (and repaired) by `keep_stream`.
        return Ok(());
    };
    match s.consumer_info(RESULTS_CONSUMER).await {
        Ok(info) => {
            let have = &info.config;
            let what = if have.ack_wait != want.ack_wait {
                Some("ack_wait")
            } else if have.max_ack_pending != want.max_ack_pending {
                Some("max_ack_pending")
            } else if have.ack_policy != want.ack_policy {
                Some("ack_policy")
            } else {
                None
            };
            if let Some(what) = what {
                tracing::warn!(
                    consumer = RESULTS_CONSUMER,
                    setting = what,
                    "results consumer settings altered; restoring them"
                );
                s.update_consumer(want.clone()).await.map_err(|e| {
                    format!("consumer {RESULTS_CONSUMER} altered ({what}) and not restored: {e}")
                })?;
                stats.streams_recreated.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }
        Err(e) if matches!(e.kind(), context::ConsumerInfoErrorKind::NotFound) => {
            tracing::warn!(
                consumer = RESULTS_CONSUMER,
                "results consumer missing; creating it again"
            );
            s.create_consumer(want.clone())
                .await
                .map_err(|e| format!("consumer {RESULTS_CONSUMER} missing: {e}"))?;
            stats.streams_recreated.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => {
            tracing::debug!(error = %e, "consumer check failed");
            Ok(())
        }
    }
}

fn stream_missing(e: &context::GetStreamError) -> bool {
    matches!(
        e.kind(),
        context::GetStreamErrorKind::JetStream(j)
            if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// The first configured setting `have` does not match, if any.
fn altered(have: &stream::Config, want: &stream::Config) -> Option<&'static str> {
    if have.subjects != want.subjects {
        Some("subjects")
    } else if have.retention != want.retention {
        Some("retention")
    } else if have.max_age != want.max_age {
        Some("max_age")
    } else if have.max_message_size != want.max_message_size {
        Some("max_message_size")
    } else if have.duplicate_window != want.duplicate_window {
        Some("duplicate_window")
    } else if want.max_bytes > 0 && have.max_bytes != want.max_bytes {
        Some("max_bytes")
    } else if have.discard != want.discard {
        Some("discard")
    } else {
        None
    }
}
