//! `orchestrator loadgen`: load against a live `orchestrator run` over NATS,
//! open or closed loop, with every output checked (see `crate::loadgen`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde_json::json;

use super::NatsArgs;
use crate::loadgen::{self, EventsVia, InProcessWorkers, Mode, Options};
use crate::pipeline::load::load_pipeline_dir;
use crate::pipeline::PipelineLimits;
use crate::sim::{LatencyDist, SimConfig};
use crate::worker::WorkerFaults;

const EXAMPLES: &str = "\
Examples:
  # closed loop: 64 users, 5000 workflows, simulated workers in this process
  orchestrator loadgen --concurrency 64 --workflows 5000 --workers-in-process --report /tmp/lg.json
  # open loop: 200 workflows/s for 10 s, plus a backfill of 2000 at 3 s
  orchestrator loadgen --rate 200/s --duration 10s --burst 2000 --burst-at 3s --workers-in-process
  # workers in other processes (`orchestrator worker --simulate --latency lognormal:p50=5ms,p99=50ms`)
  orchestrator loadgen --rate 100/s --duration 20s --orchestrator-pid $(pgrep -f 'orchestrator run')

Exit status: 0 when errors = 0, 1 when a workflow was lost, a start failed or
an output was wrong (or on a runtime error), 2 on bad usage.";

#[derive(Debug, Clone, Args)]
#[command(after_help = EXAMPLES)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["rate", "concurrency"])))]
pub struct LoadgenArgs {
    /// Open loop: workflows started per second on a fixed schedule (`500/s`, `30/m`, `500`).
    #[arg(long, value_parser = loadgen::parse_rate, value_name = "N/s")]
    pub rate: Option<f64>,
    /// Open loop: how long to offer --rate (`10s`, `2m`).
    #[arg(long, value_parser = loadgen::parse_span, default_value = "10s", requires = "rate")]
    pub duration: Duration,
    /// Closed loop: users, each starting its next workflow when its last one ended.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000), conflicts_with = "rate")]
    pub concurrency: Option<u64>,
    /// Closed loop: workflows to start in all.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=loadgen::WORKFLOWS_MAX))]
    pub workflows: u64,
    /// Mixed traffic: a backfill of N workflows on top of --rate, started as fast as
    /// --max-in-flight-starts allows (reported as class `burst`, the rest as `live`).
    #[arg(long, requires = "rate", value_parser = clap::value_parser!(u64).range(1..=loadgen::WORKFLOWS_MAX))]
    pub burst: Option<u64>,
    /// When the burst starts, after the first live workflow (`3s`).
    #[arg(long, value_parser = loadgen::parse_span, default_value = "0s", requires = "burst")]
    pub burst_at: Duration,
    /// Pipeline the workflows run.
    #[arg(long, default_value = "video")]
    pub pipeline: String,
    /// Directory of pipeline files (the same the orchestrator runs: outputs are checked against it).
    #[arg(long, default_value = "config/pipelines")]
    pub pipelines: PathBuf,
    /// Segments each workflow input asks the simulated workers to list
    /// (`"segments": N`, every output then lists N: a map over them gets N
    /// elements). Without it the input leaves them out and the simulated
    /// `segment` workers list their default, 8 (`worker --default-segments`).
    #[arg(long)]
    pub segments: Option<u32>,
    /// After the last start, how long to wait for workflows still running; those
    /// not terminal by then count as lost (errors).
    #[arg(long, value_parser = loadgen::parse_span, default_value = "30s")]
    pub drain: Duration,
    /// Start requests awaiting their reply at once, at most.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_in_flight_starts: u64,
    /// A start without a definite answer after this long counts as failed;
    /// until then one answered `unavailable` (backpressure, a partition
    /// moving between cluster nodes) or left without a reply is sent again
    /// with the same id.
    #[arg(long, value_parser = loadgen::parse_span, default_value = "30s")]
    pub start_timeout: Duration,
    /// How long to wait for the orchestrator (admin answering, events stream present).
    #[arg(long, value_parser = loadgen::parse_span, default_value = "30s")]
    pub ready_timeout: Duration,
    /// How completions are read from `<PREFIX>_EVENTS`.
    #[arg(long, value_enum, default_value = "jetstream")]
    pub events: EventsVia,
    /// Run simulated workers for the pipeline's task types in this process
    /// (own runtime; their CPU is reported apart from the load generator's).
    #[arg(long)]
    pub workers_in_process: bool,
    /// In-process workers: tasks worked on at once.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub worker_concurrency: u64,
    /// In-process workers: runtime threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub worker_threads: u64,
    /// In-process workers: per-task latency, `fixed:5ms`, `uniform:1ms..10ms` or
    /// `lognormal:p50=5ms,p99=50ms` (deterministic per task id and --seed).
    #[arg(long, value_name = "DIST", conflicts_with = "latency_ms")]
    pub latency: Option<LatencyDist>,
    /// In-process workers: fixed task latency in ms (same as `--latency fixed:<MS>ms`).
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// In-process workers: share of attempts that fail retryably, in [0, 1].
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// In-process workers: share of executions that succeed with a wrong output, in [0, 1]
    /// (to see the output check fail).
    #[arg(long, default_value_t = 0.0)]
    pub corrupt_rate: f64,
    /// In-process workers: seed of every draw.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Report the CPU seconds and RSS of this process (the orchestrator, on this machine).
    #[arg(long, value_name = "PID")]
    pub orchestrator_pid: Option<u32>,
    /// Write the report as JSON to this file.
    #[arg(long, value_name = "FILE.json")]
    pub report: Option<PathBuf>,
    /// Run id in the workflow ids `lg-<run id>-<n>`; random when omitted.
    #[arg(long)]
    pub run_id: Option<String>,
    /// Progress line interval on stderr.
    #[arg(long, value_parser = loadgen::parse_span, default_value = "1s")]
    pub progress_every: Duration,
    #[command(flatten)]
    pub nats: NatsArgs,
}

fn usage(msg: String) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

pub fn run(args: LoadgenArgs) -> ExitCode {
    for (name, rate) in [
        ("--fail-rate", args.fail_rate),
        ("--corrupt-rate", args.corrupt_rate),
    ] {
        if !(0.0..=1.0).contains(&rate) {
            return usage(format!("{name} must be within [0, 1], got {rate}"));
        }
    }
    if !args.workers_in_process
        && (args.fail_rate > 0.0
            || args.corrupt_rate > 0.0
            || args.latency.is_some()
            || args.latency_ms > 0)
    {
        return usage(
            "--latency, --latency-ms, --fail-rate and --corrupt-rate shape in-process workers: \
             add --workers-in-process (or pass them to `orchestrator worker --simulate`)"
                .into(),
        );
    }
    if args.burst.is_some() && args.rate.is_none() {
        return usage("--burst needs --rate (mixed traffic is live traffic plus a burst)".into());
    }
    if args.progress_every < Duration::from_millis(100) {
        return usage("--progress-every must be at least 100ms".into());
    }
    let run_id = args
        .run_id
        .clone()
        // The last hex digits of a UUIDv7 are random.
        .unwrap_or_else(|| {
            let u = uuid::Uuid::now_v7().simple().to_string();
            u[u.len() - 8..].to_string()
        });
    if !crate::protocol::subjects::valid_token(&run_id) || run_id.len() > 32 {
        return usage(format!(
            "--run-id must be 1-32 characters of [A-Za-z0-9_-], got {run_id:?}"
        ));
    }
    let defs = match load_pipeline_dir(&args.pipelines, &PipelineLimits::default()) {
        Ok(d) => d,
        Err(errs) => {
            for e in errs {
                eprintln!("error: {e}");
            }
            return ExitCode::from(2);
        }
    };
    let Some(def) = defs.iter().find(|d| d.name == args.pipeline).cloned() else {
        let names: Vec<&str> = defs.iter().map(|d| d.name.as_str()).collect();
        return usage(format!(
            "unknown pipeline {:?}; {} has: {}",
            args.pipeline,
            args.pipelines.display(),
            names.join(", ")
        ));
    };
    let mode = match (args.rate, args.concurrency) {
        (Some(rate), _) => Mode::Open {
            rate,
            duration: args.duration,
            burst: args.burst.map(|n| (n, args.burst_at)),
        },
        (None, Some(concurrency)) => Mode::Closed {
            concurrency,
            workflows: args.workflows,
        },
        (None, None) => return usage("give --rate or --concurrency".into()),
    };
    let (live, burst) = mode.totals();
    if live + burst == 0 {
        return usage("--rate × --duration starts no workflow".into());
    }
    if live + burst > loadgen::WORKFLOWS_MAX {
        return usage(format!(
            "the run would start {} workflows, above the limit of {}",
            live + burst,
            loadgen::WORKFLOWS_MAX
        ));
    }
    let config = json!({
        "rate": args.rate,
        "duration_s": args.rate.map(|_| args.duration.as_secs_f64()),
        "concurrency": args.concurrency,
        "workflows": args.concurrency.map(|_| args.workflows),
        "burst": args.burst,
        "burst_at_s": args.burst.map(|_| args.burst_at.as_secs_f64()),
        "drain_s": args.drain.as_secs_f64(),
        "max_in_flight_starts": args.max_in_flight_starts,
        "events": format!("{:?}", args.events).to_lowercase(),
        "workers_in_process": args.workers_in_process,
        "latency": args.workers_in_process.then(|| match args.latency {
            Some(d) => d.to_string(),
            None => format!("fixed:{}ms", args.latency_ms),
        }),
        "fail_rate": args.fail_rate,
        "corrupt_rate": args.corrupt_rate,
        "worker_concurrency": args.worker_concurrency,
        "seed": args.seed,
        "nats_url": crate::transport::nats::redact_url(&args.nats.nats_url),
        "prefix": args.nats.prefix,
    });
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .thread_name("lg-core")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let workers_rt = if args.workers_in_process {
        match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.worker_threads as usize)
            .thread_name(loadgen::WORKER_THREADS)
            .enable_all()
            .build()
        {
            Ok(rt) => Some(rt),
            Err(e) => {
                eprintln!("error: cannot start the workers' runtime: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let workers = workers_rt.as_ref().map(|rt| InProcessWorkers {
        sim: SimConfig {
            latency_ms: args.latency_ms,
            latency_dist: args.latency,
            fail_rate: args.fail_rate,
            seed: args.seed,
            worker: format!("lg-{run_id}"),
            heartbeat_every_ms: None,
            concurrency: args.worker_concurrency as usize,
            ..SimConfig::default()
        },
        faults: WorkerFaults {
            corrupt_rate: args.corrupt_rate,
            stale_max: 1,
            ..WorkerFaults::default()
        },
        runtime: rt.handle().clone(),
    });
    let opts = Options {
        nats: args.nats.config(),
        pipeline: Arc::new(def),
        segments: args.segments,
        mode,
        max_in_flight_starts: args.max_in_flight_starts as usize,
        start_timeout: args.start_timeout,
        ready_timeout: args.ready_timeout,
        drain: args.drain,
        run_id,
        events: args.events,
        workers,
        orchestrator_pid: args.orchestrator_pid,
        progress_every: args.progress_every,
        config,
    };
    let result = rt.block_on(loadgen::run(opts, super::shutdown_signal()));
    if let Some(w) = workers_rt {
        w.shutdown_background();
    }
    match result {
        Ok(outcome) => {
            print!("{}", outcome.text);
            if let Some(path) = &args.report {
                let text = match serde_json::to_string_pretty(&outcome.report) {
                    Ok(t) => t,
                    Err(e) => {
                        eprintln!("error: cannot encode the report: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                if let Err(e) = std::fs::write(path, text + "\n") {
                    eprintln!("error: cannot write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            if outcome.errors > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
