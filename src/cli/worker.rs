//! `orchestrator worker --simulate`: simulated workers over NATS.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::NatsArgs;
use crate::pipeline::load::load_pipeline_dir;
use crate::pipeline::PipelineLimits;
use crate::sim::SimConfig;

#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Examples:\n  orchestrator worker --simulate --task-types transcribe,embed --latency-ms 50 --fail-rate 0.05 --record /tmp/executions.jsonl\n  orchestrator worker --simulate --latency lognormal:p50=5ms,p99=50ms --concurrency 2000"
)]
pub struct WorkerArgs {
    /// Run simulated workers (the only kind this binary has).
    #[arg(long, required = true)]
    pub simulate: bool,
    /// Task types to serve, comma-separated; all of the pipelines' by default.
    #[arg(long, value_delimiter = ',')]
    pub task_types: Vec<String>,
    /// Pipelines whose task types are served by default.
    #[arg(long, default_value = "config/pipelines")]
    pub pipelines: PathBuf,
    /// Time each task takes, in ms (the same as `--latency fixed:<MS>ms`).
    #[arg(long, default_value_t = 0, conflicts_with = "latency")]
    pub latency_ms: u64,
    /// Per-task latency distribution, drawn from --seed and the task id:
    /// `fixed:5ms`, `uniform:1ms..10ms` or `lognormal:p50=5ms,p99=50ms` (at most 1 h).
    #[arg(long, value_name = "DIST")]
    pub latency: Option<crate::sim::LatencyDist>,
    /// Share of attempts that fail retryably, in [0, 1].
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// Share of executions that never answer (task taken, then silence), in [0, 1].
    #[arg(long, default_value_t = 0.0)]
    pub hang_rate: f64,
    /// Share of executions answered twice, in [0, 1].
    #[arg(long, default_value_t = 0.0)]
    pub duplicate_rate: f64,
    /// Share of executions answered late, after the attempt was superseded, in [0, 1].
    #[arg(long, default_value_t = 0.0)]
    pub stale_rate: f64,
    /// Segments a `segment` task lists when its workflow input does not say
    /// (`"segments": N` makes every output list N); 0 lists none.
    #[arg(long, default_value_t = crate::sim::DEFAULT_SEGMENTS)]
    pub default_segments: u32,
    /// Share of executions that succeed with a wrong output (`n` off by 1000), in [0, 1].
    #[arg(long, default_value_t = 0.0)]
    pub corrupt_rate: f64,
    /// An outage of one task type: every execution of TYPE fails (retryably)
    /// for DURATION, starting AFTER (default 0s) after the workers start, then
    /// it recovers (`transcribe=30s`, `transcribe=30s@10s`). Repeat for more types.
    #[arg(long, value_name = "TYPE=DURATION[@AFTER]", value_parser = crate::worker::parse_fail_for)]
    pub fail_for: Vec<crate::worker::Outage>,
    /// Append one JSON line per execution (task_id, idempotency_key, attempt, outcome, ...).
    #[arg(long, value_name = "FILE.jsonl")]
    pub record: Option<PathBuf>,
    /// Late answers held back at once, at most.
    #[arg(long, default_value_t = 100_000)]
    pub stale_max: usize,
    /// Tasks worked on at once.
    #[arg(long, default_value_t = 1_000)]
    pub concurrency: usize,
    /// Send the "started" heartbeat only once a task has run this long
    /// (`0ms`: at once); shorter tasks just answer (their result carries
    /// `started_at_ms`).
    #[arg(long, default_value = "20ms", value_parser = crate::sim::parse_duration)]
    pub started_after: std::time::Duration,
    /// How results are handed over: `direct` (a request on the task's
    /// `result_direct_to`, answered once the result is durable in the
    /// journal; falls back to JetStream when the task does not offer it) or
    /// `jetstream` (published on the RESULTS stream, `reply_to`).
    #[arg(long, default_value = "direct", value_parser = ["direct", "jetstream"])]
    pub results_via: String,
    /// How tasks arrive: `direct` (take the orchestrator's direct offers on
    /// `<prefix>.tdirect.<type>` while a slot is free, and pull the TASKS
    /// stream) or `jetstream` (pull the stream only).
    #[arg(long, default_value = "direct", value_parser = ["direct", "jetstream"])]
    pub tasks_via: String,
    /// On SIGTERM: stop pulling tasks and wait this long for the tasks in
    /// hand to finish and their results to be acknowledged.
    #[arg(long, default_value = "30s", value_parser = crate::sim::parse_duration)]
    pub shutdown_grace: std::time::Duration,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Worker name reported with each result.
    #[arg(long, default_value = "sim-worker")]
    pub name: String,
    #[command(flatten)]
    pub nats: NatsArgs,
}

pub fn run(args: WorkerArgs) -> ExitCode {
    if !(0.0..=1.0).contains(&args.fail_rate) {
        eprintln!(
            "error: --fail-rate must be within [0, 1], got {}",
            args.fail_rate
        );
        return ExitCode::from(2);
    }
    let faults = crate::worker::WorkerFaults {
        hang_rate: args.hang_rate,
        duplicate_rate: args.duplicate_rate,
        stale_rate: args.stale_rate,
        record: args.record.clone(),
        stale_max: args.stale_max,
        corrupt_rate: args.corrupt_rate,
        fail_for: args.fail_for.clone(),
    };
    if let Err(e) = faults.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let task_types = if args.task_types.is_empty() {
        match load_pipeline_dir(&args.pipelines, &PipelineLimits::default()) {
            Ok(defs) => crate::pipeline::task_types(&defs),
            Err(errs) => {
                for e in errs {
                    eprintln!("error: {e}");
                }
                return ExitCode::FAILURE;
            }
        }
    } else {
        args.task_types.clone()
    };
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let sim = SimConfig {
        latency_ms: args.latency_ms,
        latency_dist: args.latency,
        fail_rate: args.fail_rate,
        seed: args.seed,
        worker: args.name.clone(),
        heartbeat_every_ms: None,
        concurrency: args.concurrency,
        started_after_ms: args.started_after.as_millis() as u64,
        shutdown_grace_ms: args.shutdown_grace.as_millis() as u64,
        default_segments: args.default_segments,
    };
    let mut nats = args.nats.config();
    // A worker is a service like `run`: it waits for NATS as long.
    if args.nats.security.nats_connect_timeout.is_none() {
        nats.connect_timeout = crate::transport::nats::NatsConfig::default().connect_timeout;
    }
    nats.client_name = "narralytica-worker".into();
    nats.results_direct = args.results_via == "direct";
    nats.tasks_direct = args.tasks_via == "direct";
    eprintln!(
        "workers serving {} task type(s): {}",
        task_types.len(),
        task_types.join(",")
    );
    match rt.block_on(crate::worker::run(
        nats,
        sim,
        faults,
        task_types,
        super::shutdown_signal(),
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
