//! The sections of the service configuration, one struct each (`[nats]`
//! has its own file, since it carries credentials).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Dur, Keep};
use crate::otel::Compression;
use crate::transport::nats::Secret;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsSection {
    /// Publish lifecycle events (`<prefix>.events.<pipeline>.<kinds…>.<status>`).
    pub enabled: bool,
    pub max_age: Dur,
    pub max_bytes: i64,
    pub duplicate_window: Dur,
    pub queue_max: usize,
    pub window_max: usize,
    pub batch_max: usize,
    pub batch_max_bytes: usize,
    pub scan_max: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    /// RocksDB data directory (created if missing). One process owns it.
    pub data_dir: PathBuf,
    /// Directory of pipeline files (`*.toml`).
    pub pipelines_dir: PathBuf,
    /// The admin verb `backup` writes only under this directory; empty:
    /// backups over NATS are refused.
    pub backup_root: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSection {
    pub partitions: u16,
    pub resident_max: usize,
    pub in_progress_max: usize,
    pub state_cache_max: usize,
    pub passivate_idle: Dur,
    pub restart_budget: u32,
    pub unstartable_max: usize,
    pub snapshot_every_events: u64,
    pub tick: Dur,
    pub timer_batch_max: usize,
    pub accept_chunk: usize,
    pub request_timeout: Dur,
    pub signal_payload_bytes_max: usize,
    pub signals_pending_max: u32,
    pub signal_id_len_max: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    pub commit_batch_max: usize,
    pub commit_threads: usize,
    pub commit_inline_when_idle: bool,
    pub commit_inline_max_mean_batch: f64,
    pub block_cache_mib: usize,
    pub write_buffer_mib: usize,
    pub wal_recycle_files: usize,
    pub l0_compaction_trigger: i32,
    pub compaction_rate_mib_s: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// `host:port` of `/healthz`, `/readyz` and `/metrics`; `"off"` disables.
    pub addr: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pretty" => Ok(LogFormat::Pretty),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("unknown log format {s:?} (pretty or json)")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// A `tracing` filter: `info`, `warn`, `orchestrator=debug,info`, ...
    pub level: String,
    pub format: LogFormat,
}

/// Span export over OTLP/HTTP (JSON encoding); off while `otlp_endpoint` is empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TraceSection {
    /// `http(s)://host[:port][/base]`; spans go to `<base>/v1/traces`. Empty: off.
    pub otlp_endpoint: String,
    /// Request headers in the `OTEL_EXPORTER_OTLP_HEADERS` form
    /// (`name=value,…`, values percent-encoded); printed as `***`.
    pub headers: Secret,
    /// `none` or `gzip`.
    pub compression: Compression,
    /// PEM CA that https trusts instead of the system's roots; empty: the system's.
    pub ca_file: PathBuf,
    /// `service.name` of the exported resource.
    pub service_name: String,
    /// Most spans in one export request.
    pub batch_max: usize,
    /// Spans waiting for export; beyond it new ones are dropped and counted.
    pub queue_max: usize,
    /// A partial batch is sent after at most this long.
    pub flush_every: Dur,
    /// One export request at most this long.
    pub export_timeout: Dur,
    /// Attempts of one batch before its spans are counted as failed.
    pub export_attempts: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSection {
    /// Terminal workflows are purged this long after they ended; `"off"` keeps them.
    pub after: Keep,
    /// How often each partition starts a sweep round.
    pub sweep_every: Dur,
    /// Most workflows purged in one write batch.
    pub batch_max: usize,
    /// Most status-index entries one partition examines per tick in a round.
    pub scan_max: usize,
}

/// Retry throttling per task type (`crate::workflow::budget`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryBudgetSection {
    /// Off: every retry goes as soon as its backoff is over.
    pub enabled: bool,
    /// Retries not (yet) succeeded allowed per first attempt over the window.
    pub ratio: f64,
    /// Retries allowed per second per task type whatever the ratio says (node-wide).
    pub min_per_sec: f64,
    /// The sliding window of the counts.
    pub window: Dur,
    /// A deferred retry asks again after this long (±50 %).
    pub defer: Dur,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownSection {
    /// Longest graceful stop on SIGTERM before the process exits anyway.
    pub grace: Dur,
}

/// The web console on the HTTP port (`docs/console.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSection {
    /// Serve the console under `/console` on `http.addr`.
    pub enabled: bool,
    /// The operator token; without one (here or in `token_file`) the
    /// console is read-only. Printed as `***`.
    pub token: crate::transport::nats::Secret,
    /// A file holding the operator token (first line); wins over `token`.
    pub token_file: PathBuf,
    /// Workflows per page of the workflow list.
    pub page_size: u32,
    /// Failed workflows the inbox examines at most (newest first).
    pub inbox_scan_max: u32,
    /// Operator sessions kept at once; past it the oldest is signed out.
    pub sessions_max: usize,
}

/// Cluster settings (`docs/cluster.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// A single-node `run` claims its NATS prefix in a KV bucket and renews
    /// the claim every third of this; a node stopped without a goodbye
    /// (`kill -9`, host lost) blocks other nodes on its prefix this long.
    pub claim_ttl: Dur,
    /// Cluster mode: each commit batch of a partition is appended to the
    /// partition's replicated journal on JetStream before its effects run,
    /// and the node serves only the partitions whose leases it holds.
    pub enabled: bool,
    /// The node's id in the cluster; empty: the id kept in the data
    /// directory (file `node_id`).
    pub node_id: String,
    /// Replicas of the journal stream and the cluster's KV buckets (3 in
    /// production; 1 on a single nats-server).
    pub journal_replicas: usize,
    /// A partition lease not renewed for this long lapses; it is renewed
    /// every fifth of it and counted valid for four fifths after a
    /// confirmed renewal.
    pub lease_ttl: Dur,
    /// How long a node waits for the answer of the node it forwarded a
    /// request to (an admin request about a workflow of a partition another
    /// node serves); past it the client is answered `unavailable`.
    pub forward_timeout: Dur,
    /// The owner of a partition writes the partition's snapshot to the
    /// object store `<PREFIX>_SNAPSHOTS` after this many journal records
    /// of it, then trims the journal below it; 0: no count trigger.
    pub snapshot_every_records: u64,
    /// ... or this long after the last snapshot when the partition had a
    /// record since; `"0s"`: no time trigger.
    pub snapshot_interval: Dur,
}

/// `[task_types.<name>]`: the capacity limits of one task type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TaskTypeSection {
    /// Attempts out with workers at once; unset: no cap of its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    /// Attempts sent at most this fast (`"20/s"`, `"100/m"`); unset: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    /// A JSON pointer into the workflow input naming each task's key
    /// (`"/tenant"`); unset: one key for the type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Caps per key: `default` for keys not named, then named keys.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub keys: std::collections::BTreeMap<String, u32>,
}

/// `[pools.<name>]`: a cap shared by several task types.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolSection {
    pub max_in_flight: u32,
    pub task_types: Vec<String>,
}

/// `[capacity]`: what applies across the task types' limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CapacitySection {
    /// A JSON pointer into the workflow input giving its priority (`"low"`,
    /// `"normal"`, `"high"` or 0..=2); empty: every workflow is normal.
    pub priority: String,
    /// A waiting task rises one priority level per this much waiting.
    pub aging: Dur,
}

impl Default for CapacitySection {
    fn default() -> Self {
        CapacitySection {
            priority: String::new(),
            aging: Dur::secs(60),
        }
    }
}
