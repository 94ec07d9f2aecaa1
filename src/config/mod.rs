//! The service configuration of `orchestrator run`, layered
//! defaults ← file (`--config`) ← environment ← flags.
//!
//! Every option has a default here; `config/orchestrator.toml` documents each
//! one with exactly that default, its paths written relative to its own
//! directory (a test keeps the two equal). Unknown keys
//! are refused with the key's name, so a typo never silently falls back to a
//! default. Durations are strings such as `"5s"`, `"10m"`, `"7d"`. Relative
//! paths of a file are taken under the file's directory, relative defaults
//! under `--home` (see `paths`).

mod dur;
mod nats;
mod paths;
mod sections;
#[cfg(test)]
mod tests;
mod validate;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::EngineConfig;
use crate::node::NodeOptions;
use crate::otel::{OtlpConfig, OtlpHeaders};
use crate::transport::nats::Secret;

pub use dur::{Dur, Keep};
pub use nats::NatsSection;
pub use sections::{
    CapacitySection, ClusterSection, ConsoleSection, EngineSection, EventsSection, HttpSection,
    LogFormat, LogSection, NodeSection, PoolSection, RetentionSection, RetryBudgetSection,
    ShutdownSection, StorageSection, TaskTypeSection, TraceSection,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub node: NodeSection,
    pub nats: NatsSection,
    pub engine: EngineSection,
    pub storage: StorageSection,
    pub events: EventsSection,
    pub http: HttpSection,
    pub console: ConsoleSection,
    pub log: LogSection,
    pub trace: TraceSection,
    pub shutdown: ShutdownSection,
    pub retention: RetentionSection,
    pub retry_budget: RetryBudgetSection,
    pub cluster: ClusterSection,
    pub capacity: CapacitySection,
    /// Capacity limits per task type (`[task_types.<name>]`).
    pub task_types: std::collections::BTreeMap<String, TaskTypeSection>,
    /// Caps shared by task types (`[pools.<name>]`).
    pub pools: std::collections::BTreeMap<String, PoolSection>,
    /// The file this configuration was read from, if any (not a setting):
    /// SIGHUP reads its capacity limits again.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}
impl Default for Config {
    fn default() -> Self {
        let engine = EngineConfig::default();
        let commit = crate::storage::group_commit::CommitConfig::default();
        let rocks = crate::storage::rocks::RocksConfig::default();
        let otlp = OtlpConfig::default();
        Config {
            node: NodeSection {
                data_dir: PathBuf::from("data/orchestrator"),
                pipelines_dir: PathBuf::from("config/pipelines"),
                backup_root: PathBuf::new(),
            },
            nats: NatsSection::default(),
            engine: EngineSection {
                partitions: engine.partitions,
                resident_max: engine.resident_max,
                in_progress_max: engine.in_progress_max,
                state_cache_max: engine.state_cache_max,
                passivate_idle: Dur(engine.passivate_idle_ms),
                restart_budget: engine.restart_budget,
                unstartable_max: engine.unstartable_max,
                snapshot_every_events: engine.snapshot_every_events,
                tick: Dur(engine.tick_ms),
                timer_batch_max: engine.timer_batch_max,
                accept_chunk: engine.accept_chunk,
                request_timeout: Dur(engine.request_timeout_ms),
                signal_payload_bytes_max: engine.signals.payload_bytes_max,
                signals_pending_max: engine.signals.pending_max,
                signal_id_len_max: engine.signals.id_len_max,
            },
            cluster: ClusterSection {
                claim_ttl: Dur::secs(15),
                enabled: false,
                node_id: String::new(),
                journal_replicas: 3,
                lease_ttl: Dur::secs(6),
                forward_timeout: Dur::secs(5),
                snapshot_every_records: 10_000,
                snapshot_interval: Dur::secs(600),
            },
            capacity: CapacitySection::default(),
            task_types: Default::default(),
            pools: Default::default(),
            source: None,
            retry_budget: RetryBudgetSection {
                enabled: engine.retry_budget.enabled,
                ratio: engine.retry_budget.ratio,
                min_per_sec: engine.retry_budget.min_per_sec,
                window: Dur(engine.retry_budget.window_ms),
                defer: Dur(engine.retry_budget.defer_ms),
            },
            storage: StorageSection {
                commit_batch_max: 4096,
                commit_threads: 1,
                commit_inline_when_idle: commit.inline_when_idle,
                commit_inline_max_mean_batch: commit.inline_max_mean_batch,
                block_cache_mib: rocks.block_cache_mib,
                write_buffer_mib: rocks.write_buffer_mib,
                wal_recycle_files: rocks.wal_recycle_files,
                l0_compaction_trigger: rocks.l0_compaction_trigger,
                compaction_rate_mib_s: rocks.compaction_rate_mib_s,
            },
            events: {
                let e = crate::events::EventsConfig::default();
                EventsSection {
                    enabled: true,
                    max_age: Dur(e.max_age.as_millis() as u64),
                    max_bytes: e.max_bytes,
                    duplicate_window: Dur(e.duplicate_window.as_millis() as u64),
                    queue_max: e.queue_max,
                    window_max: e.window_max,
                    batch_max: e.batch_max,
                    batch_max_bytes: e.batch_max_bytes,
                    scan_max: e.scan_max,
                }
            },
            http: HttpSection {
                addr: "127.0.0.1:9464".into(),
            },
            console: ConsoleSection {
                enabled: false,
                token: Default::default(),
                token_file: PathBuf::new(),
                page_size: 50,
                inbox_scan_max: 2_000,
                sessions_max: 64,
            },
            log: LogSection {
                level: "info".into(),
                format: LogFormat::Pretty,
            },
            trace: TraceSection {
                otlp_endpoint: otlp.endpoint,
                headers: Secret::default(),
                compression: otlp.compression,
                ca_file: PathBuf::new(),
                service_name: otlp.service_name,
                batch_max: otlp.batch_max,
                queue_max: otlp.queue_max,
                flush_every: Dur(otlp.flush_every.as_millis() as u64),
                export_timeout: Dur(otlp.timeout.as_millis() as u64),
                export_attempts: otlp.attempts,
            },
            shutdown: ShutdownSection {
                grace: Dur::secs(10),
            },
            retention: RetentionSection {
                after: match engine.retention.after_ms {
                    Some(ms) => Keep::For(Dur(ms)),
                    None => Keep::Forever,
                },
                sweep_every: Dur(engine.retention.sweep_every_ms),
                batch_max: engine.retention.batch_max,
                scan_max: engine.retention.scan_max,
            },
        }
    }
}

macro_rules! section_defaults {
    ($($t:ident => $field:ident),*) => {$(
        impl Default for $t {
            fn default() -> Self {
                Config::default().$field
            }
        }
    )*};
}
section_defaults!(
    NodeSection => node,
    EngineSection => engine,
    StorageSection => storage,
    EventsSection => events,
    HttpSection => http,
    ConsoleSection => console,
    LogSection => log,
    TraceSection => trace,
    ShutdownSection => shutdown,
    RetentionSection => retention,
    RetryBudgetSection => retry_budget,
    ClusterSection => cluster
);

/// A TOML error on one line: where, then what (the default rendering quotes
/// the offending line over several lines).
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let what = crate::protocol::one_line(e.message().trim().to_owned());
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.chars().rev().take_while(|c| *c != '\n').count() + 1;
            format!("TOML parse error at line {line}, column {column}: {what}")
        }
        None => format!("TOML parse error: {what}"),
    }
}

impl Config {
    /// Parses a config file's text; unknown keys and bad values are errors
    /// that name the key.
    pub fn parse(text: &str) -> Result<Config, String> {
        let cfg: Config = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// A config file over the defaults; relative paths it sets are taken
    /// under its directory (see [`Config::layered`]).
    pub fn load(path: &Path) -> Result<Config, String> {
        Config::layered(Some(path), None)
    }

    /// The effective configuration as TOML (`orchestrator run --print-config`).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    /// The NATS settings of `run`; a cluster node replicates its task and
    /// result streams as its journal.
    pub fn nats_config(&self) -> crate::transport::nats::NatsConfig {
        let mut c = self.nats.nats_config();
        if self.cluster.enabled {
            c.stream_replicas = self.cluster.journal_replicas;
        }
        c
    }

    pub fn events_config(&self) -> crate::events::EventsConfig {
        let e = &self.events;
        crate::events::EventsConfig {
            max_age: e.max_age.as_duration(),
            max_bytes: e.max_bytes,
            duplicate_window: e.duplicate_window.as_duration(),
            queue_max: e.queue_max,
            window_max: e.window_max,
            batch_max: e.batch_max,
            batch_max_bytes: e.batch_max_bytes,
            scan_max: e.scan_max,
            replicas: if self.cluster.enabled {
                self.cluster.journal_replicas
            } else {
                1
            },
        }
    }

    /// The span exporter's settings, `None` when no endpoint is configured.
    pub fn otlp_config(&self) -> Option<OtlpConfig> {
        let t = &self.trace;
        if t.otlp_endpoint.trim().is_empty() {
            return None;
        }
        Some(OtlpConfig {
            endpoint: t.otlp_endpoint.trim().to_owned(),
            // Checked by `validate`; an invalid value here means no headers.
            headers: OtlpHeaders::parse(t.headers.expose()).unwrap_or_default(),
            compression: t.compression,
            ca_file: (!t.ca_file.as_os_str().is_empty()).then(|| t.ca_file.clone()),
            service_name: t.service_name.clone(),
            batch_max: t.batch_max,
            queue_max: t.queue_max,
            flush_every: t.flush_every.as_duration(),
            timeout: t.export_timeout.as_duration(),
            attempts: t.export_attempts,
        })
    }

    /// The capacity limits of `[capacity]`, `[task_types.*]` and `[pools.*]`,
    /// checked.
    pub fn capacity_limits(&self) -> Result<crate::capacity::Limits, String> {
        use crate::capacity::{Limits, PoolLimits, TypeLimits, RATE_PER_SEC_MAX};
        let mut errs = Vec::new();
        let mut task_types = std::collections::BTreeMap::new();
        for (name, t) in &self.task_types {
            let rate_per_sec = match t.rate.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(r) => match crate::durations::parse_rate(r, RATE_PER_SEC_MAX) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        errs.push(format!("task_types.{name}.rate: {e}"));
                        None
                    }
                },
            };
            let mut key_caps = t.keys.clone();
            let key_default = key_caps.remove("default");
            task_types.insert(
                name.clone(),
                TypeLimits {
                    max_in_flight: t.max_in_flight,
                    rate_per_sec,
                    key: t.key.clone().filter(|k| !k.is_empty()),
                    key_default,
                    key_caps,
                },
            );
        }
        let pools = self
            .pools
            .iter()
            .map(|(name, p)| {
                (
                    name.clone(),
                    PoolLimits {
                        max_in_flight: p.max_in_flight,
                        task_types: p.task_types.clone(),
                    },
                )
            })
            .collect();
        let priority = self.capacity.priority.trim();
        if !priority.is_empty() && !priority.starts_with('/') {
            errs.push(
                "capacity.priority must be empty or a JSON pointer such as \"/priority\"".into(),
            );
        }
        let limits = Limits {
            task_types,
            pools,
            aging_ms: self.capacity.aging.0,
            priority: (!priority.is_empty()).then(|| priority.to_string()),
        };
        if let Err(e) = limits.validate() {
            errs.push(e);
        }
        if errs.is_empty() {
            Ok(limits)
        } else {
            Err(errs.join("; "))
        }
    }

    pub fn engine_config(&self) -> EngineConfig {
        let e = &self.engine;
        EngineConfig {
            partitions: e.partitions,
            resident_max: e.resident_max,
            in_progress_max: e.in_progress_max,
            state_cache_max: e.state_cache_max,
            passivate_idle_ms: e.passivate_idle.0,
            restart_budget: e.restart_budget,
            unstartable_max: e.unstartable_max,
            snapshot_every_events: e.snapshot_every_events,
            tick_ms: e.tick.0,
            timer_batch_max: e.timer_batch_max,
            accept_chunk: e.accept_chunk,
            request_timeout_ms: e.request_timeout.0,
            signals: crate::engine::SignalLimits {
                payload_bytes_max: e.signal_payload_bytes_max,
                pending_max: e.signals_pending_max,
                id_len_max: e.signal_id_len_max,
            },
            retention: crate::engine::RetentionConfig {
                after_ms: self.retention.after.as_ms(),
                sweep_every_ms: self.retention.sweep_every.0,
                batch_max: self.retention.batch_max,
                scan_max: self.retention.scan_max,
            },
            retry_budget: crate::workflow::budget::RetryBudgetConfig {
                enabled: self.retry_budget.enabled,
                ratio: self.retry_budget.ratio,
                min_per_sec: self.retry_budget.min_per_sec,
                window_ms: self.retry_budget.window.0,
                defer_ms: self.retry_budget.defer.0,
            },
            backup_root: (!self.node.backup_root.as_os_str().is_empty())
                .then(|| self.node.backup_root.clone()),
        }
    }

    /// When cluster mode writes a partition's snapshot.
    pub fn snapshot_policy(&self) -> crate::cluster::SnapshotPolicy {
        crate::cluster::SnapshotPolicy {
            every_records: self.cluster.snapshot_every_records,
            interval_ms: self.cluster.snapshot_interval.0,
        }
    }

    /// The lease timings of cluster mode, derived from `cluster.lease_ttl`.
    pub fn lease_config(&self) -> crate::cluster::LeaseConfig {
        let ttl_ms = self.cluster.lease_ttl.0;
        crate::cluster::LeaseConfig {
            ttl_ms,
            margin_ms: ttl_ms / 5,
            renew_every_ms: ttl_ms / 5,
            scan_every_ms: ttl_ms / 5,
            op_timeout_ms: ttl_ms * 3 / 10,
        }
    }

    pub fn node_options(&self) -> NodeOptions {
        NodeOptions {
            data_dir: self.node.data_dir.clone(),
            pipelines_dir: self.node.pipelines_dir.clone(),
            partitions: self.engine.partitions,
            commit_batch_max: self.storage.commit_batch_max,
            commit_threads: self.storage.commit_threads,
            commit_inline_when_idle: self.storage.commit_inline_when_idle,
            commit_inline_max_mean_batch: self.storage.commit_inline_max_mean_batch,
            rocks: crate::storage::rocks::RocksConfig {
                block_cache_mib: self.storage.block_cache_mib,
                write_buffer_mib: self.storage.write_buffer_mib,
                wal_recycle_files: self.storage.wal_recycle_files,
                l0_compaction_trigger: self.storage.l0_compaction_trigger,
                compaction_rate_mib_s: self.storage.compaction_rate_mib_s,
                ..Default::default()
            },
        }
    }
}
