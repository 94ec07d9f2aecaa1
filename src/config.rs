//! The service configuration of `orchestrator run`, layered
//! defaults ← file (`--config`) ← environment ← flags.
//!
//! Every option has a default here; `config/orchestrator.toml` documents each
//! one with exactly that default (a test keeps the two equal). Unknown keys
//! are refused with the key's name, so a typo never silently falls back to a
//! default. Durations are strings such as `"5s"`, `"10m"`, `"7d"`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::engine::EngineConfig;
use crate::node::NodeOptions;
use crate::otel::{HttpEndpoint, OtlpConfig};
use crate::pipeline::load::parse_duration_ms;
use crate::protocol::Limits;
use crate::transport::nats::NatsConfig;

/// A duration written as a string (`"200ms"`, `"5s"`, `"1h30m"`, `"7d"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub u64);

impl Dur {
    pub const fn ms(ms: u64) -> Dur {
        Dur(ms)
    }
    pub const fn secs(s: u64) -> Dur {
        Dur(s * 1000)
    }
    pub fn as_duration(self) -> Duration {
        Duration::from_millis(self.0)
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 5] = [
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1_000, "s"),
            (1, "ms"),
        ];
        if self.0 == 0 {
            return f.write_str("0s");
        }
        for (size, unit) in UNITS {
            if self.0.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}ms", self.0)
    }
}

impl std::str::FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "0" {
            return Ok(Dur(0));
        }
        parse_duration_ms(s).map(Dur)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e| serde::de::Error::custom(format!("bad duration {s:?}: {e}")))
    }
}

/// How long terminal workflows are kept: `"off"` (forever) or a positive
/// duration. `"0s"` is refused rather than read as "purge at once" or "off".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    Forever,
    For(Dur),
}

impl Keep {
    pub fn as_ms(self) -> Option<u64> {
        match self {
            Keep::Forever => None,
            Keep::For(d) => Some(d.0),
        }
    }
}

impl fmt::Display for Keep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Keep::Forever => f.write_str("off"),
            Keep::For(d) => d.fmt(f),
        }
    }
}

impl Serialize for Keep {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Keep {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "off" {
            return Ok(Keep::Forever);
        }
        s.parse()
            .map(Keep::For)
            .map_err(|e| serde::de::Error::custom(format!("bad duration {s:?}: {e} (or \"off\")")))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub node: NodeSection,
    pub nats: NatsSection,
    pub engine: EngineSection,
    pub storage: StorageSection,
    pub events: EventsSection,
    pub http: HttpSection,
    pub log: LogSection,
    pub trace: TraceSection,
    pub shutdown: ShutdownSection,
    pub retention: RetentionSection,
    pub retry_budget: RetryBudgetSection,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsSection {
    /// Publish lifecycle events (`<prefix>.events.<pipeline>.<event>`).
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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsSection {
    pub url: String,
    pub prefix: String,
    pub stream_max_age: Dur,
    pub duplicate_window: Dur,
    pub results_ack_wait: Dur,
    pub results_max_ack_pending: i64,
    pub results_direct: bool,
    pub results_direct_in_flight_max: usize,
    pub tasks_direct: bool,
    pub tasks_direct_timeout: Dur,
    pub tasks_direct_result_within: Dur,
    pub tasks_direct_result_apply_for: Dur,
    pub tasks_direct_in_flight_max: usize,
    pub publish_queue_max: usize,
    pub publish_attempts: u32,
    pub publish_window: usize,
    pub message_max_bytes: usize,
    pub output_max_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSection {
    pub partitions: u16,
    pub resident_max: usize,
    pub state_cache_max: usize,
    pub passivate_idle: Dur,
    pub restart_budget: u32,
    pub unstartable_max: usize,
    pub snapshot_every_events: u64,
    pub tick: Dur,
    pub timer_batch_max: usize,
    pub accept_chunk: usize,
    pub request_timeout: Dur,
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
    /// `http://host[:port][/base]`; spans go to `<base>/v1/traces`. Empty: off.
    pub otlp_endpoint: String,
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

impl Default for Config {
    fn default() -> Self {
        let nats = NatsConfig::default();
        let engine = EngineConfig::default();
        let commit = crate::storage::group_commit::CommitConfig::default();
        let rocks = crate::storage::rocks::RocksConfig::default();
        let otlp = OtlpConfig::default();
        Config {
            node: NodeSection {
                data_dir: PathBuf::from("./data/orchestrator"),
                pipelines_dir: PathBuf::from("config/pipelines"),
            },
            nats: NatsSection {
                url: nats.url,
                prefix: nats.prefix,
                stream_max_age: Dur(nats.stream_max_age.as_millis() as u64),
                duplicate_window: Dur(nats.duplicate_window.as_millis() as u64),
                results_ack_wait: Dur(nats.results_ack_wait.as_millis() as u64),
                results_max_ack_pending: nats.results_max_ack_pending,
                results_direct: nats.results_direct,
                results_direct_in_flight_max: nats.results_direct_in_flight_max,
                tasks_direct: nats.tasks_direct,
                tasks_direct_timeout: Dur(nats.tasks_direct_timeout.as_millis() as u64),
                tasks_direct_result_within: Dur(nats.tasks_direct_result_within.as_millis() as u64),
                tasks_direct_result_apply_for: Dur(
                    nats.tasks_direct_result_apply_for.as_millis() as u64
                ),
                tasks_direct_in_flight_max: nats.tasks_direct_in_flight_max,
                publish_queue_max: nats.publish_queue_max,
                publish_attempts: nats.publish_attempts,
                publish_window: nats.publish_window,
                message_max_bytes: nats.limits.message_max_bytes,
                output_max_bytes: nats.limits.output_max_bytes,
            },
            engine: EngineSection {
                partitions: engine.partitions,
                resident_max: engine.resident_max,
                state_cache_max: engine.state_cache_max,
                passivate_idle: Dur(engine.passivate_idle_ms),
                restart_budget: engine.restart_budget,
                unstartable_max: engine.unstartable_max,
                snapshot_every_events: engine.snapshot_every_events,
                tick: Dur(engine.tick_ms),
                timer_batch_max: engine.timer_batch_max,
                accept_chunk: engine.accept_chunk,
                request_timeout: Dur(engine.request_timeout_ms),
            },
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
            log: LogSection {
                level: "info".into(),
                format: LogFormat::Pretty,
            },
            trace: TraceSection {
                otlp_endpoint: otlp.endpoint,
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
    NatsSection => nats,
    EngineSection => engine,
    StorageSection => storage,
    EventsSection => events,
    HttpSection => http,
    LogSection => log,
    TraceSection => trace,
    ShutdownSection => shutdown,
    RetentionSection => retention,
    RetryBudgetSection => retry_budget
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

    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        Config::parse(&text).map_err(|e| format!("config {}: {e}", path.display()))
    }

    /// The effective configuration as TOML (`orchestrator run --print-config`).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    /// Range checks that serde's types cannot express.
    pub fn validate(&self) -> Result<(), String> {
        let mut errs = Vec::new();
        let mut need = |ok: bool, what: &str| {
            if !ok {
                errs.push(what.to_owned());
            }
        };
        need(
            (1..=1024).contains(&self.engine.partitions),
            "engine.partitions must be within 1..=1024",
        );
        need(
            self.engine.resident_max >= 1,
            "engine.resident_max must be at least 1",
        );
        need(
            self.engine.restart_budget >= 1,
            "engine.restart_budget must be at least 1",
        );
        need(
            self.engine.unstartable_max >= 1,
            "engine.unstartable_max must be at least 1",
        );
        need(
            self.engine.snapshot_every_events >= 1,
            "engine.snapshot_every_events must be at least 1",
        );
        need(self.engine.tick.0 >= 1, "engine.tick must be at least 1ms");
        need(
            self.engine.timer_batch_max >= 1,
            "engine.timer_batch_max must be at least 1",
        );
        need(
            self.engine.accept_chunk >= 1,
            "engine.accept_chunk must be at least 1",
        );
        need(
            self.engine.request_timeout.0 >= 1,
            "engine.request_timeout must be positive",
        );
        let rb = &self.retry_budget;
        need(
            rb.ratio.is_finite() && (0.0..=1000.0).contains(&rb.ratio),
            "retry_budget.ratio must be within 0..=1000",
        );
        need(
            rb.min_per_sec.is_finite() && rb.min_per_sec > 0.0 && rb.min_per_sec <= 1e9,
            "retry_budget.min_per_sec must be positive (retries must always make progress)",
        );
        need(
            (100..=3_600_000).contains(&rb.window.0),
            "retry_budget.window must be within 100ms..=1h",
        );
        need(
            (1..=3_600_000).contains(&rb.defer.0),
            "retry_budget.defer must be within 1ms..=1h",
        );
        need(
            self.storage.commit_batch_max >= 1,
            "storage.commit_batch_max must be at least 1",
        );
        need(
            (1..=16).contains(&self.storage.commit_threads),
            "storage.commit_threads must be within 1..=16",
        );
        need(
            (1.0..=1_000_000.0).contains(&self.storage.commit_inline_max_mean_batch),
            "storage.commit_inline_max_mean_batch must be within 1.0..=1000000",
        );
        need(
            self.storage.block_cache_mib >= 1 && self.storage.write_buffer_mib >= 1,
            "storage.block_cache_mib and storage.write_buffer_mib must be at least 1",
        );
        let l0_max = crate::storage::rocks::L0_COMPACTION_TRIGGER_MAX;
        need(
            (1..=l0_max).contains(&self.storage.l0_compaction_trigger),
            &format!("storage.l0_compaction_trigger must be within 1..={l0_max}"),
        );
        let rate_max = crate::storage::rocks::COMPACTION_RATE_MIB_S_MAX;
        need(
            self.storage.compaction_rate_mib_s <= rate_max,
            &format!("storage.compaction_rate_mib_s must be within 0..={rate_max} (0: unlimited)"),
        );
        need(
            self.nats.message_max_bytes >= 1024,
            "nats.message_max_bytes must be at least 1024",
        );
        need(
            self.nats.output_max_bytes >= 1
                && self.nats.output_max_bytes < self.nats.message_max_bytes,
            "nats.output_max_bytes must be positive and below nats.message_max_bytes",
        );
        need(
            self.nats.results_max_ack_pending >= 1 && self.nats.results_direct_in_flight_max >= 1,
            "nats.results_max_ack_pending and nats.results_direct_in_flight_max must be at least 1",
        );
        need(
            self.nats.tasks_direct_timeout.0 >= 1,
            "nats.tasks_direct_timeout must be at least 1ms",
        );
        need(
            self.nats.tasks_direct_result_within.0.saturating_mul(2)
                <= self.nats.tasks_direct_timeout.0,
            "nats.tasks_direct_result_within must be at most half of nats.tasks_direct_timeout \
             (an answer that comes later is taken for a timeout and the task sent again)",
        );
        need(
            self.nats.tasks_direct_in_flight_max >= 1,
            "nats.tasks_direct_in_flight_max must be at least 1",
        );
        need(
            self.nats.publish_queue_max >= 1
                && self.nats.publish_attempts >= 1
                && self.nats.publish_window >= 1,
            "nats.publish_queue_max, nats.publish_attempts and nats.publish_window must be at least 1",
        );
        need(
            self.nats.results_ack_wait.0 >= 1000,
            "nats.results_ack_wait must be at least 1s",
        );
        need(
            self.nats.duplicate_window.0 >= 1000
                && self.nats.duplicate_window.0 <= self.nats.stream_max_age.0,
            "nats.duplicate_window must be at least 1s and at most nats.stream_max_age",
        );
        need(
            crate::protocol::subjects::Subjects::new(&self.nats.prefix).is_ok(),
            "nats.prefix must be dot-separated tokens of [A-Za-z0-9_-]",
        );
        need(
            self.http.addr == "off" || self.http.addr.parse::<std::net::SocketAddr>().is_ok(),
            "http.addr must be host:port (an IP address) or \"off\"",
        );
        need(
            tracing_subscriber::EnvFilter::try_new(&self.log.level).is_ok(),
            "log.level is not a valid filter (e.g. info, warn, orchestrator=debug)",
        );
        let t = &self.trace;
        if !t.otlp_endpoint.is_empty() {
            if let Err(e) = HttpEndpoint::parse(&t.otlp_endpoint) {
                errs.push(format!("trace.otlp_endpoint: {e}"));
            }
        }
        let mut need = |ok: bool, what: &str| {
            if !ok {
                errs.push(what.to_owned());
            }
        };
        need(
            !t.service_name.trim().is_empty(),
            "trace.service_name must not be empty",
        );
        need(
            t.queue_max >= 1 && (1..=t.queue_max).contains(&t.batch_max),
            "trace.batch_max must be within 1..=trace.queue_max",
        );
        need(
            t.flush_every.0 >= 10,
            "trace.flush_every must be at least 10ms",
        );
        need(
            t.export_timeout.0 >= 100,
            "trace.export_timeout must be at least 100ms",
        );
        need(
            (1..=100).contains(&t.export_attempts),
            "trace.export_attempts must be within 1..=100",
        );
        need(
            self.shutdown.grace.0 >= 1000,
            "shutdown.grace must be at least 1s",
        );
        need(
            self.retention.after != Keep::For(Dur(0)),
            "retention.after must be positive, or \"off\" to keep terminal workflows forever",
        );
        need(
            self.retention.sweep_every.0 >= 1000,
            "retention.sweep_every must be at least 1s",
        );
        need(
            self.events.batch_max >= 1
                && self.events.batch_max_bytes >= 1024
                && self.events.batch_max_bytes <= self.nats.message_max_bytes,
            "events.batch_max must be at least 1 and events.batch_max_bytes within [1024, nats.message_max_bytes]",
        );
        need(
            self.retention.batch_max >= 1 && self.retention.scan_max >= 1,
            "retention.batch_max and retention.scan_max must be at least 1",
        );
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("; "))
        }
    }

    pub fn nats_config(&self) -> NatsConfig {
        let n = &self.nats;
        NatsConfig {
            url: n.url.clone(),
            prefix: n.prefix.clone(),
            stream_max_age: n.stream_max_age.as_duration(),
            duplicate_window: n.duplicate_window.as_duration(),
            results_ack_wait: n.results_ack_wait.as_duration(),
            results_max_ack_pending: n.results_max_ack_pending,
            results_direct: n.results_direct,
            results_direct_in_flight_max: n.results_direct_in_flight_max,
            tasks_direct: n.tasks_direct,
            tasks_direct_timeout: n.tasks_direct_timeout.as_duration(),
            tasks_direct_result_within: n.tasks_direct_result_within.as_duration(),
            tasks_direct_result_apply_for: n.tasks_direct_result_apply_for.as_duration(),
            tasks_direct_in_flight_max: n.tasks_direct_in_flight_max,
            publish_queue_max: n.publish_queue_max,
            publish_attempts: n.publish_attempts,
            publish_window: n.publish_window,
            limits: Limits {
                message_max_bytes: n.message_max_bytes,
                output_max_bytes: n.output_max_bytes,
            },
        }
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
            service_name: t.service_name.clone(),
            batch_max: t.batch_max,
            queue_max: t.queue_max,
            flush_every: t.flush_every.as_duration(),
            timeout: t.export_timeout.as_duration(),
            attempts: t.export_attempts,
        })
    }

    pub fn engine_config(&self) -> EngineConfig {
        let e = &self.engine;
        EngineConfig {
            partitions: e.partitions,
            resident_max: e.resident_max,
            state_cache_max: e.state_cache_max,
            passivate_idle_ms: e.passivate_idle.0,
            restart_budget: e.restart_budget,
            unstartable_max: e.unstartable_max,
            snapshot_every_events: e.snapshot_every_events,
            tick_ms: e.tick.0,
            timer_batch_max: e.timer_batch_max,
            accept_chunk: e.accept_chunk,
            request_timeout_ms: e.request_timeout.0,
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

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../config/orchestrator.toml");

    #[test]
    fn the_shipped_file_states_exactly_the_defaults() {
        let parsed = Config::parse(SHIPPED).expect("config/orchestrator.toml parses");
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn the_shipped_file_sets_every_option_explicitly() {
        // Every key of the defaults appears uncommented in the file, so the
        // file documents every option (not only the ones someone remembered).
        let file: toml::Table = toml::from_str(SHIPPED).unwrap();
        let defaults: toml::Table = toml::from_str(&Config::default().to_toml()).unwrap();
        for (section, keys) in &defaults {
            let keys = keys.as_table().unwrap();
            let in_file = file
                .get(section)
                .and_then(|s| s.as_table())
                .unwrap_or_else(|| panic!("section [{section}] missing from the file"));
            for key in keys.keys() {
                assert!(
                    in_file.contains_key(key),
                    "{section}.{key} missing from config/orchestrator.toml"
                );
            }
        }
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let e = Config::parse("[nats]\nurll = \"nats://x:1\"\n").unwrap_err();
        assert!(e.contains("urll"), "{e}");
        let e = Config::parse("[natz]\n").unwrap_err();
        assert!(e.contains("natz"), "{e}");
    }

    #[test]
    fn bad_values_are_refused_with_the_key() {
        let e = Config::parse("[engine]\npartitions = 0\n").unwrap_err();
        assert!(e.contains("engine.partitions"), "{e}");
        let e = Config::parse("[storage]\ncommit_inline_max_mean_batch = 0.5\n").unwrap_err();
        assert!(e.contains("storage.commit_inline_max_mean_batch"), "{e}");
        for bad in ["0", "65"] {
            let e =
                Config::parse(&format!("[storage]\nl0_compaction_trigger = {bad}\n")).unwrap_err();
            assert!(e.contains("storage.l0_compaction_trigger"), "{e}");
        }
        let e = Config::parse("[storage]\ncompaction_rate_mib_s = 4097\n").unwrap_err();
        assert!(e.contains("storage.compaction_rate_mib_s"), "{e}");
        // A negative value fails to parse; the error points at the line.
        let e = Config::parse("[storage]\ncompaction_rate_mib_s = -1\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("u64"), "{e}");
        let e = Config::parse("[nats]\nresults_ack_wait = \"5 parsecs\"\n").unwrap_err();
        assert!(e.contains("duration"), "{e}");
        let e = Config::parse("[http]\naddr = \"everywhere\"\n").unwrap_err();
        assert!(e.contains("http.addr"), "{e}");
        let e = Config::parse("[log]\nformat = \"xml\"\n").unwrap_err();
        assert!(e.contains("xml") || e.contains("format"), "{e}");
        let e = Config::parse("[trace]\notlp_endpoint = \"https://c:4318\"\n").unwrap_err();
        assert!(e.contains("trace.otlp_endpoint"), "{e}");
        let e = Config::parse("[trace]\nbatch_max = 0\n").unwrap_err();
        assert!(e.contains("trace.batch_max"), "{e}");
    }

    #[test]
    fn tracing_is_off_until_an_endpoint_is_set() {
        assert_eq!(Config::default().otlp_config(), None);
        let c =
            Config::parse("[trace]\notlp_endpoint = \"http://127.0.0.1:4318\"\nbatch_max = 64\n")
                .unwrap();
        let o = c.otlp_config().unwrap();
        assert_eq!(o.endpoint, "http://127.0.0.1:4318");
        assert_eq!(o.batch_max, 64);
        assert_eq!(o.queue_max, 65_536);
    }

    #[test]
    fn a_partial_file_keeps_the_other_defaults() {
        let c = Config::parse("[engine]\nresident_max = 7\n").unwrap();
        assert_eq!(c.engine.resident_max, 7);
        assert_eq!(c.engine.partitions, Config::default().engine.partitions);
        assert_eq!(c.nats, Config::default().nats);
    }

    #[test]
    fn retention_is_off_or_a_positive_duration() {
        let c = Config::parse("[retention]\nafter = \"off\"\n").unwrap();
        assert_eq!(c.retention.after, Keep::Forever);
        assert_eq!(c.engine_config().retention.after_ms, None);
        assert!(c.to_toml().contains("after = \"off\""));
        let c = Config::parse("[retention]\nafter = \"7d\"\n").unwrap();
        assert_eq!(c.engine_config().retention.after_ms, Some(604_800_000));
        for bad in ["0s", "0"] {
            let e = Config::parse(&format!("[retention]\nafter = \"{bad}\"\n")).unwrap_err();
            assert!(e.contains("retention.after"), "{e}");
        }
        let e = Config::parse("[retention]\nafter = \"never\"\n").unwrap_err();
        assert!(e.contains("off"), "{e}");
        let e = Config::parse("[retention]\nbatch_max = 0\n").unwrap_err();
        assert!(e.contains("retention.batch_max"), "{e}");
    }

    #[test]
    fn durations_round_trip() {
        for (s, ms) in [
            ("0s", 0),
            ("250ms", 250),
            ("5s", 5000),
            ("2m", 120_000),
            ("7d", 604_800_000),
        ] {
            let d: Dur = s.parse().unwrap();
            assert_eq!(d.0, ms);
            assert_eq!(d.to_string(), s);
        }
        assert_eq!(Dur(1500).to_string(), "1500ms");
    }
}
