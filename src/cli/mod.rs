//! Command-line interface: one file per command, all thin over the library.

pub mod backfill;
pub mod backup;
pub mod batch;
pub mod capacity;
pub mod dev;
pub mod loadgen;
pub mod nats_security;
pub mod ops;
pub mod otlp_args;
pub mod pipelines;
pub mod run;
mod run_console;
mod run_host;
mod run_membership;
pub mod signal;
pub mod start;
pub mod summary;
pub mod verify;
pub mod wait;
pub mod worker;
pub mod worker_check;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::LogFormat;

/// Narralytica Orchestrator: durable workflow engine for media and ML pipelines.
#[derive(Debug, Parser)]
#[command(name = "orchestrator", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Engine + simulated workers in one process, RocksDB under --data-dir.
    Dev(dev::DevArgs),
    /// The production service: engine + NATS transport + admin, RocksDB under --data-dir.
    Run(run::RunArgs),
    /// Start a workflow over NATS (or return the existing one with that id).
    Start(start::StartArgs),
    /// Wait until workflows are completed, failed or cancelled; exit 0 only if all completed.
    Wait(wait::WaitArgs),
    /// Workers over NATS; `--simulate` runs the simulated ones.
    Worker(worker::WorkerArgs),
    /// Conformance kit: act as the orchestrator towards a worker under test, one verdict per rule.
    WorkerCheck(worker_check::WorkerCheckArgs),
    /// Load against a live `orchestrator run`: open or closed loop, outputs checked, latency report.
    Loadgen(loadgen::LoadgenArgs),
    /// A workflow's status and each step's status, attempts, last error, worker and timings.
    Describe(ops::DescribeArgs),
    /// A workflow's full lineage from the journal, one line per event.
    History(ops::HistoryArgs),
    /// Workflows by status, pipeline, age, id prefix and error kind, the most recently changed first.
    List(ops::ListArgs),
    /// Cancel a running or paused workflow.
    Cancel(ops::CancelArgs),
    /// Pause a running workflow: nothing new is dispatched until it is resumed.
    Pause(ops::ControlArgs),
    /// Resume a paused workflow.
    Resume(ops::ControlArgs),
    /// Reopen a failed or cancelled workflow as a new generation (its failed steps run again).
    Retry(ops::IdArgs),
    /// Run a step and everything downstream of it again, as a new generation.
    Rerun(ops::RerunArgs),
    /// Send a signal to a workflow's wait steps (idempotent by its id).
    Signal(signal::SignalArgs),
    /// Durable, rate-limited batch jobs: cancel, retry or rerun many workflows.
    Batch(batch::BatchArgs),
    /// Start one workflow per line of a JSON Lines file, each with a deterministic id.
    Backfill(backfill::BackfillArgs),
    /// A consistent checkpoint of the store: of a running orchestrator over NATS, or of a stopped data dir.
    Backup(backup::BackupArgs),
    /// Check every journal in a data dir: invariants and checksums.
    Verify(verify::VerifyCommand),
    /// Pipeline files: check a directory, or reload a running orchestrator's.
    #[command(subcommand)]
    Pipelines(PipelinesCmd),
    /// Capacity limits of a running orchestrator: caps, usage and waiting tasks.
    Capacity(capacity::CapacityArgs),
}

#[derive(Debug, Subcommand)]
pub enum PipelinesCmd {
    /// Validate every pipeline file in DIR and print each DAG.
    #[command(after_help = "Example:\n  orchestrator pipelines check config/pipelines")]
    Check {
        /// Directory of `*.toml` pipeline files.
        #[arg(default_value = "config/pipelines")]
        dir: PathBuf,
    },
    /// Make a running orchestrator read its pipeline directory again (as SIGHUP does).
    Reload(Box<pipelines::ReloadArgs>),
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if !matches!(cli.command, Command::Run(_)) {
        // `run` sets up logging after layering its config file.
        // A failed first connection is reported in one line of the
        // command's own; the NATS client's log of it would be a second.
        init_logging(
            cli.log.level.as_deref().unwrap_or("warn,async_nats=off"),
            cli.log.format.unwrap_or(LogFormat::Pretty),
        );
    }
    match cli.command {
        Command::Dev(args) => dev::run(args),
        Command::Run(args) => run::run(args, cli.log),
        Command::Start(args) => start::run(args),
        Command::Wait(args) => wait::run(args),
        Command::Worker(args) => worker::run(args),
        Command::WorkerCheck(args) => worker_check::run(args),
        Command::Loadgen(args) => loadgen::run(args),
        Command::Describe(args) => ops::describe(args),
        Command::Capacity(args) => capacity::capacity(args),
        Command::History(args) => ops::history(args),
        Command::List(args) => ops::list(args),
        Command::Cancel(args) => ops::cancel(args),
        Command::Pause(args) => ops::pause_resume(args, "pause"),
        Command::Resume(args) => ops::pause_resume(args, "resume"),
        Command::Retry(args) => ops::retry(args),
        Command::Rerun(args) => ops::rerun(args),
        Command::Signal(args) => signal::run(args),
        Command::Batch(args) => batch::run(args),
        Command::Backfill(args) => backfill::run(args),
        Command::Backup(args) => backup::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Pipelines(PipelinesCmd::Check { dir }) => pipelines::check(&dir),
        Command::Pipelines(PipelinesCmd::Reload(args)) => pipelines::reload(*args),
    }
}

/// Logging flags, global to every command.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LogArgs {
    /// Log filter (e.g. `info`, `debug`, `orchestrator=debug`); `RUST_LOG` wins when set.
    /// Default: `warn`, or `log.level` of the config file for `run`.
    #[arg(long = "log-level", global = true, env = "NARRALYTICA_LOG")]
    pub level: Option<String>,
    /// Log format: `pretty` or `json` (one object a line).
    #[arg(long = "log-format", global = true, env = "NARRALYTICA_LOG_FORMAT")]
    pub format: Option<LogFormat>,
}

/// Structured logs on stderr: spans and fields (`workflow_id`, `step`,
/// `attempt`, ...) as text or as one JSON object per line.
pub fn init_logging(level: &str, format: LogFormat) {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| level.to_string());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Colours only on a terminal: a log file or a journal gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
}

/// Peak resident set size of this process in MiB (VmHWM), 0 where unknown.
pub fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

/// Resolves on SIGINT or SIGTERM: the graceful-shutdown trigger of every
/// long-running command.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// NATS connection flags shared by every NATS-facing command.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL; `nats://user:pass@host:4222` works too.
    #[arg(
        long,
        env = "NARRALYTICA_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// Subject prefix (`<prefix>.tasks.<type>`, ...).
    #[arg(long, env = "NARRALYTICA_PREFIX", default_value = "narralytica")]
    pub prefix: String,
    #[command(flatten)]
    pub security: nats_security::NatsSecurityArgs,
}

/// How long a command other than `run` tries its first connection.
pub const CLI_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl NatsArgs {
    pub fn config(&self) -> crate::transport::nats::NatsConfig {
        crate::transport::nats::NatsConfig {
            url: self.nats_url.clone(),
            prefix: self.prefix.clone(),
            security: self.security.security(),
            connect_timeout: self
                .security
                .nats_connect_timeout
                .map_or(CLI_CONNECT_TIMEOUT, |d| d.as_duration()),
            client_name: "narralytica-cli".into(),
            ..Default::default()
        }
    }
}

/// A multi-threaded runtime, or a clear error.
pub fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start runtime: {e}");
            ExitCode::FAILURE
        })
}
