//! `orchestrator worker-check`: the conformance kit for worker authors.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::workercheck::harness::Harness;
use crate::workercheck::rules::{self, Settings, WorkerProcess};
use crate::workercheck::{Verdict, RULES};

#[derive(Debug, Args)]
#[command(after_help = "\
Rules: consumer_settings, result_shape, trace_propagated, task_acked, heartbeats_on_time,
cancel_honoured, retryable_vs_fatal, idempotent_redelivery, other_version_refused,
drain_on_sigterm. Tasks carry directives in their workflow input: work_ms (how long
to work) and fail ({\"<task type>\": [\"retryable\" | \"fatal\"]}, how attempt 1 fails);
a worker that cannot act on them skips those rules with --skip.

Run it against a NATS server of its own (it creates the streams and acts as the
orchestrator):

Example:
  nats-server -js -p 4333 &
  orchestrator worker-check --task-type transcribe --nats-url nats://127.0.0.1:4333 \\
      --worker-cmd 'PYTHONPATH=sdk/python python3 examples/transcribe_worker.py'")]
pub struct WorkerCheckArgs {
    /// Task type the worker under test serves.
    #[arg(long)]
    pub task_type: String,
    /// Command that starts the worker (run with `sh -c`, with NARRALYTICA_NATS_URL and
    /// NARRALYTICA_PREFIX set); needed for drain_on_sigterm. Without it, start the worker
    /// yourself.
    #[arg(long)]
    pub worker_cmd: Option<String>,
    /// Where the worker's stderr goes (with --worker-cmd).
    #[arg(long)]
    pub worker_log: Option<PathBuf>,
    /// The tasks' heartbeat_timeout_ms; long tasks last a few of these.
    #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub heartbeat_timeout_ms: u64,
    /// How long a result may take beyond the work, in ms.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub result_timeout_ms: u64,
    /// How long the worker may take to create its consumer, in ms.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub ready_timeout_ms: u64,
    /// How long the worker may take to exit after SIGTERM, in ms.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub drain_timeout_ms: u64,
    /// Workflow input of every task (a JSON object); the directives are added to it.
    #[arg(long, default_value = "{}")]
    pub input: String,
    /// Rules not to run, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub skip: Vec<String>,
    #[command(flatten)]
    pub nats: super::NatsArgs,
}

pub fn run(args: WorkerCheckArgs) -> ExitCode {
    let input: serde_json::Value = match serde_json::from_str(&args.input) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        _ => {
            eprintln!("error: --input must be a JSON object");
            return ExitCode::from(2);
        }
    };
    if let Some(bad) = args.skip.iter().find(|r| !RULES.contains(&r.as_str())) {
        eprintln!(
            "error: --skip {bad:?} is not a rule (rules: {})",
            RULES.join(", ")
        );
        return ExitCode::from(2);
    }
    let settings = Settings {
        heartbeat_timeout: Duration::from_millis(args.heartbeat_timeout_ms),
        result_timeout: Duration::from_millis(args.result_timeout_ms),
        ready_timeout: Duration::from_millis(args.ready_timeout_ms),
        drain_timeout: Duration::from_millis(args.drain_timeout_ms),
        input,
        skip: args.skip.clone(),
    };
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async move {
        let (url, prefix) = (&args.nats.nats_url, &args.nats.prefix);
        let fresh = args.worker_cmd.is_some();
        let harness = match Harness::connect(&args.nats.config(), &args.task_type, fresh).await {
            Ok(h) => h,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        let mut worker = match &args.worker_cmd {
            Some(cmd) => match WorkerProcess::spawn(cmd, url, prefix, args.worker_log.as_deref()) {
                Ok(w) => Some(w),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            },
            None => None,
        };
        let mut print = |rule: &str, v: &Verdict| println!("{}", v.line(rule));
        let verdicts = rules::run(&harness, &settings, worker.as_mut(), &mut print).await;
        let count = |f: fn(&Verdict) -> bool| verdicts.iter().filter(|(_, v)| f(v)).count();
        let failed = count(|v| matches!(v, Verdict::Fail(_)));
        println!(
            "worker-check task_type={} passed={} failed={failed} skipped={}",
            args.task_type,
            count(|v| matches!(v, Verdict::Pass(_))),
            count(|v| matches!(v, Verdict::Skip(_))),
        );
        if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    })
}
