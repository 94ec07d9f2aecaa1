//! The task and result streams, created (or updated) with their configured settings.

use async_nats::jetstream::{self, stream};

use super::NatsConfig;
use crate::protocol::subjects::Subjects;

/// Stream names derived from the prefix (dots are not allowed in them).
pub fn stream_name(prefix: &str, what: &str) -> String {
    format!("{}_{what}", prefix.replace('.', "_").to_uppercase())
}

/// The configured settings of the task and result streams.
pub fn stream_configs(cfg: &NatsConfig) -> Result<Vec<stream::Config>, String> {
    let subjects = Subjects::new(&cfg.prefix)?;
    let max_msg = i32::try_from(cfg.limits.message_max_bytes).unwrap_or(i32::MAX);
    Ok([
        ("TASKS", subjects.tasks_all()),
        ("RESULTS", subjects.results_all()),
    ]
    .into_iter()
    .map(|(what, subject)| stream::Config {
        name: stream_name(&cfg.prefix, what),
        subjects: vec![subject],
        retention: stream::RetentionPolicy::WorkQueue,
        max_age: cfg.stream_max_age,
        max_message_size: max_msg,
        num_replicas: cfg.stream_replicas.max(1),
        duplicate_window: cfg.duplicate_window,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .collect())
}

/// Creates (or updates) the task and result streams.
pub async fn ensure_streams(js: &jetstream::Context, cfg: &NatsConfig) -> Result<(), String> {
    for config in stream_configs(cfg)? {
        let name = config.name.clone();
        js.get_or_create_stream(config)
            .await
            .map_err(|e| format!("cannot create stream {name}: {e}"))?;
    }
    Ok(())
}
