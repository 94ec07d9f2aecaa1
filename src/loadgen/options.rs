//! What a load run is asked to do: its options, their limits, and the
//! parsers of its `--rate` and duration flags.

use std::sync::Arc;
use std::time::Duration;

use crate::pipeline::PipelineDef;
use crate::sim::SimConfig;
use crate::transport::nats::NatsConfig;
use crate::worker::WorkerFaults;

/// Most workflows one run may start (the tracker holds ~40 bytes each).
pub const WORKFLOWS_MAX: u64 = 10_000_000;
/// Highest `--rate`, workflows per second.
pub const RATE_MAX: f64 = 1_000_000.0;
/// Longest `--duration`, `--drain`, `--burst-at`, ... (24 h).
pub const SPAN_MAX: Duration = Duration::from_secs(24 * 3600);
/// Thread-name prefix of the in-process workers' runtime.
pub const WORKER_THREADS: &str = "lg-workers";

/// How workflows are offered.
#[derive(Debug, Clone)]
pub enum Mode {
    Open {
        rate: f64,
        duration: Duration,
        /// `(workflows, at)`: a backfill started as fast as allowed at `t0 + at`.
        burst: Option<(u64, Duration)>,
    },
    Closed {
        concurrency: u64,
        workflows: u64,
    },
}

impl Mode {
    /// `(live, burst)` workflows the run will start.
    pub fn totals(&self) -> (u64, u64) {
        match self {
            Mode::Open {
                rate,
                duration,
                burst,
            } => (
                (rate * duration.as_secs_f64()).floor() as u64,
                burst.map_or(0, |b| b.0),
            ),
            Mode::Closed { workflows, .. } => (*workflows, 0),
        }
    }
}

/// Where completions are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EventsVia {
    /// An ordered JetStream consumer on `<PREFIX>_EVENTS` (deliver new): no gaps.
    Jetstream,
    /// A core NATS subscription on the same subjects: lighter, but a slow
    /// reader can lose messages (counted as lost workflows).
    Core,
}

/// Simulated workers run inside the load generator.
pub struct InProcessWorkers {
    pub sim: SimConfig,
    pub faults: WorkerFaults,
    /// A runtime of their own, threads named [`WORKER_THREADS`].
    pub runtime: tokio::runtime::Handle,
}

pub struct Options {
    pub nats: NatsConfig,
    pub pipeline: Arc<PipelineDef>,
    /// `"segments": N` in every workflow input: every simulated output
    /// lists N segments. `None` leaves it out, and the simulated `segment`
    /// workers list their default ([`crate::sim::SimConfig::default_segments`]).
    pub segments: Option<u32>,
    pub mode: Mode,
    pub max_in_flight_starts: usize,
    pub start_timeout: Duration,
    pub ready_timeout: Duration,
    pub drain: Duration,
    pub run_id: String,
    pub events: EventsVia,
    pub workers: Option<InProcessWorkers>,
    pub orchestrator_pid: Option<u32>,
    pub progress_every: Duration,
    /// The flags as given, echoed into the report.
    pub config: serde_json::Value,
}

/// The outcome: the JSON report, the text summary and the error count.
pub struct Outcome {
    pub report: serde_json::Value,
    pub text: String,
    pub errors: u64,
}

/// Parses a span of a load run in the crate's duration grammar
/// ([`crate::durations`]: `10s`, `500ms`, `2m`, `250us`), at most [`SPAN_MAX`].
pub fn parse_span(text: &str) -> Result<Duration, String> {
    let span = crate::durations::parse(text).map_err(|e| format!("{text:?}: {e}"))?;
    if span > SPAN_MAX {
        return Err(format!("{text:?} is above the limit of 24h"));
    }
    Ok(span)
}

/// Parses `--rate` in the crate's rate grammar ([`crate::durations`]:
/// `500/s`, `30/m`, `2/h` or a bare `500` per second), in (0, [`RATE_MAX`]].
pub fn parse_rate(text: &str) -> Result<f64, String> {
    crate::durations::parse_rate(text, RATE_MAX).map_err(|e| format!("{text:?}: {e}"))
}
