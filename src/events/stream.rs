//! The event stream's limits and its creation.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::protocol::subjects::Subjects;

/// Limits of the event stream and its publisher.
#[derive(Debug, Clone)]
pub struct EventsConfig {
    pub max_age: Duration,
    pub max_bytes: i64,
    pub duplicate_window: Duration,
    /// Messages between the engine and the publisher; beyond, the publisher
    /// reads the outbox from storage instead (nothing is lost).
    pub queue_max: usize,
    /// Messages with acknowledgements in flight at once.
    pub window_max: usize,
    /// Records of different workflows with the same subject sent in one
    /// message (1: every record alone).
    pub batch_max: usize,
    /// Largest batched message, in bytes.
    pub batch_max_bytes: usize,
    /// Outbox rows read from storage per catch-up scan.
    pub scan_max: usize,
    /// Replicas of the event stream (a cluster node: the cluster's
    /// `journal_replicas`).
    pub replicas: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: 1 << 30,
            duplicate_window: Duration::from_secs(120),
            queue_max: 65_536,
            window_max: 512,
            batch_max: 64,
            batch_max_bytes: 256 * 1024,
            scan_max: 10_000,
            replicas: 1,
        }
    }
}

/// The configured settings of the event stream.
pub fn stream_config(
    prefix: &str,
    cfg: &EventsConfig,
    max_message_bytes: usize,
) -> Result<stream::Config, String> {
    let subjects = Subjects::new(prefix)?;
    Ok(stream::Config {
        name: crate::transport::nats::stream_name(prefix, "EVENTS"),
        subjects: vec![format!("{}.events.>", subjects.prefix())],
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        max_age: cfg.max_age,
        max_bytes: cfg.max_bytes,
        max_message_size: i32::try_from(max_message_bytes).unwrap_or(i32::MAX),
        duplicate_window: cfg.duplicate_window,
        num_replicas: cfg.replicas.max(1),
        storage: stream::StorageType::File,
        ..Default::default()
    })
}

/// Creates (or updates) the event stream.
pub async fn ensure_stream(
    js: &jetstream::Context,
    prefix: &str,
    cfg: &EventsConfig,
    max_message_bytes: usize,
) -> Result<(), String> {
    let config = stream_config(prefix, cfg, max_message_bytes)?;
    let name = config.name.clone();
    js.get_or_create_stream(config)
        .await
        .map_err(|e| format!("cannot create stream {name}: {e}"))?;
    Ok(())
}
