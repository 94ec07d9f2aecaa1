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
    };
    eprintln!(
        "workers serving {} task type(s): {}",
        task_types.len(),
        task_types.join(",")
    );
    match rt.block_on(crate::worker::run(
        args.nats.config(),
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
