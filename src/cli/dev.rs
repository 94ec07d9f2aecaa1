//! `orchestrator dev`: the engine and simulated workers in one process, with
//! RocksDB under `--data-dir`. Resumes whatever it finds there (also after a
//! kill -9), durably accepts `--workflows` new ones, runs them, and ends with
//! one machine-readable summary line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;

use super::summary::Summary;
use crate::engine::{Clock, Engine, EngineConfig, Hooks, Metrics, SystemClock};
use crate::node::{open_node, NodeOptions};
use crate::sim::{self, SimConfig};
use crate::transport::inproc::InProcTransport;
use crate::workflow::Status;

#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Examples:\n  orchestrator dev --workflows 20000 --fail-rate 0.05 --exit-when-done\n  orchestrator dev --workflows 1000 --task-latency-ms 20 --data-dir ./data/dev   # kill -9 it and run it again: it resumes"
)]
pub struct DevArgs {
    /// RocksDB data directory (created if missing).
    #[arg(long, default_value = "./data/dev")]
    pub data_dir: PathBuf,
    /// Directory of pipeline files.
    #[arg(long, default_value = "config/pipelines")]
    pub pipelines: PathBuf,
    /// Pipeline the new workflows run.
    #[arg(long, default_value = "video")]
    pub pipeline: String,
    /// New workflows to start.
    #[arg(long, default_value_t = 100)]
    pub workflows: u64,
    /// Segments each workflow input asks the simulated workers to list
    /// (`"segments": N`, every output then lists N: a map over them gets N
    /// elements). Without it the input leaves them out and the simulated
    /// `segment` workers list their default, 8.
    #[arg(long)]
    pub segments: Option<u32>,
    /// Share of task attempts that fail retryably, in [0, 1].
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// Time each simulated task takes.
    #[arg(long, default_value_t = 0)]
    pub task_latency_ms: u64,
    /// Simulated workers busy at once (tasks beyond wait in their queue); 0 = unlimited.
    #[arg(long, default_value_t = 1_000)]
    pub worker_concurrency: usize,
    /// Seed of the simulated workers' failure draws.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Exit 0 once no workflow is running.
    #[arg(long)]
    pub exit_when_done: bool,
    /// Stop gracefully after this many seconds and exit 0.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Partitions of a new data dir (an existing one keeps its count).
    #[arg(long, default_value_t = 8)]
    pub partitions: u16,
    /// Workflow actors alive at once.
    #[arg(long, default_value_t = EngineConfig::default().resident_max)]
    pub resident_max: usize,
    /// Bulk-accepted or recovered workflows with tasks out at once.
    #[arg(long, default_value_t = EngineConfig::default().in_progress_max)]
    pub in_progress_max: usize,
    /// Passivated workflow states cached in memory.
    #[arg(long, default_value_t = EngineConfig::default().state_cache_max)]
    pub state_cache_max: usize,
    /// Idle time before a workflow actor waiting on tasks is passivated (0 = at the next tick).
    #[arg(long, default_value_t = EngineConfig::default().passivate_idle_ms)]
    pub passivate_idle_ms: u64,
    /// Snapshot every this many events.
    #[arg(long, default_value_t = EngineConfig::default().snapshot_every_events)]
    pub snapshot_every: u64,
    /// Most storage ops in one synced write batch.
    #[arg(long, default_value_t = 4096)]
    pub commit_batch_max: usize,
    /// Writer threads of the group committer (more than one overlaps fsyncs).
    #[arg(long, default_value_t = 1)]
    pub commit_threads: usize,
    /// RocksDB block cache size.
    #[arg(long, default_value_t = 64)]
    pub block_cache_mib: usize,
    /// RocksDB write buffers, all memtables together.
    #[arg(long, default_value_t = 64)]
    pub write_buffer_mib: usize,
    /// Actor restarts before a crashing workflow is parked as failed.
    #[arg(long, default_value_t = EngineConfig::default().restart_budget)]
    pub restart_budget: u32,
    /// Address of `/healthz`, `/readyz` and `/metrics` (e.g. `127.0.0.1:9464`); `off` disables them.
    #[arg(long, default_value = "off")]
    pub http_addr: String,
    /// Export spans over OTLP/HTTP (JSON) to this `http://` or `https://` base URL, e.g.
    /// `http://127.0.0.1:4318`; the other `[trace]` settings keep their defaults.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    #[command(flatten)]
    pub otlp: super::otlp_args::OtlpArgs,
}

pub fn run(args: DevArgs) -> ExitCode {
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let shutdown = super::shutdown_signal();
    match rt.block_on(run_dev(args, shutdown)) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The whole dev run; `shutdown` resolving stops it gracefully (tests pass
/// their own future, the binary passes SIGINT/SIGTERM).
pub async fn run_dev(
    args: DevArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Summary, String> {
    if !(0.0..=1.0).contains(&args.fail_rate) {
        return Err(format!(
            "--fail-rate must be within [0, 1], got {}",
            args.fail_rate
        ));
    }
    if let Some(d) = args.duration {
        if !(d.is_finite() && d > 0.0) {
            return Err(format!(
                "--duration must be a positive number of seconds, got {d}"
            ));
        }
    }
    let began = Instant::now();
    let metrics = Arc::new(Metrics::default());
    let mut http = crate::http::Endpoint::start(
        &args.http_addr,
        crate::http::HttpState {
            metrics: metrics.clone(),
            ..Default::default()
        },
    )
    .await?;
    let config = EngineConfig {
        partitions: args.partitions,
        resident_max: args.resident_max,
        in_progress_max: args.in_progress_max,
        state_cache_max: args.state_cache_max,
        passivate_idle_ms: args.passivate_idle_ms,
        snapshot_every_events: args.snapshot_every,
        restart_budget: args.restart_budget,
        ..EngineConfig::default()
    };
    let commit = crate::storage::group_commit::CommitConfig::default();
    let node = open_node(&NodeOptions {
        data_dir: args.data_dir.clone(),
        pipelines_dir: args.pipelines.clone(),
        partitions: args.partitions,
        commit_batch_max: args.commit_batch_max,
        commit_threads: args.commit_threads,
        commit_inline_when_idle: commit.inline_when_idle,
        commit_inline_max_mean_batch: commit.inline_max_mean_batch,
        rocks: crate::storage::rocks::RocksConfig {
            block_cache_mib: args.block_cache_mib,
            write_buffer_mib: args.write_buffer_mib,
            ..Default::default()
        },
    })
    .await?;
    if node.pipelines.current(&args.pipeline).is_none() {
        return Err(format!(
            "unknown pipeline {:?}; {} has: {}",
            args.pipeline,
            args.pipelines.display(),
            node.pipelines.names().join(", ")
        ));
    }
    http.storage_opened(
        node.committer.histograms(),
        &node.storage,
        node.committer.write_health(),
    );
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let exporter = match args.otlp_endpoint.as_deref().map(str::trim) {
        Some(endpoint) if !endpoint.is_empty() => Some(crate::otel::OtlpExporter::start(
            args.otlp.config(endpoint)?,
            metrics.clone(),
        )?),
        _ => None,
    };
    let (transport, worker_rx) = InProcTransport::new();
    let hook_metrics = metrics.clone();
    let hooks = Hooks {
        on_terminal: Some(Arc::new(move |wf, def| {
            if wf.status == Status::Completed {
                let outputs: Vec<Option<&str>> =
                    wf.steps.iter().map(|s| s.output.as_deref()).collect();
                let wrong = sim::check_outputs(def, &outputs);
                if !wrong.is_empty() {
                    Metrics::inc(&hook_metrics.output_errors);
                    tracing::error!(workflow_id = %wf.id, wrong = ?wrong, "workflow output mismatch");
                }
            }
        })),
        faults: None,
        outbox: None,
        spans: exporter
            .clone()
            .map(|e| e as Arc<dyn crate::otel::SpanSink>),
        plants: Default::default(),
        lineage: Default::default(),
        remote_lineage: None,
    };
    let engine = Engine::start(crate::engine::EngineCtx {
        store: node.store.clone(),
        committer: node.committer.clone(),
        clock: clock.clone(),
        transport: Arc::new(transport),
        pipelines: node.pipelines.clone(),
        metrics: metrics.clone(),
        config,
        hooks,
        capacity: Default::default(),
    })
    .await
    .map_err(|e| e.to_string())?;
    http.readiness().set_recovery_done();
    let workers = tokio::spawn(sim::run(
        SimConfig {
            latency_ms: args.task_latency_ms,
            latency_dist: None,
            fail_rate: args.fail_rate,
            seed: args.seed,
            worker: "dev-sim".into(),
            heartbeat_every_ms: None,
            concurrency: args.worker_concurrency,
            ..SimConfig::default()
        },
        worker_rx,
        engine.sink(),
        clock.clone(),
    ));
    let resumed = Metrics::get(&metrics.workflows_resumed);
    if resumed > 0 {
        eprintln!(
            "resumed {resumed} unfinished workflow(s) from {}",
            args.data_dir.display()
        );
    }

    // Accept every new workflow durably first, in bounded chunks.
    let mut created = 0u64;
    const CHUNK: u64 = 10_000;
    let mut k = 0u64;
    while k < args.workflows {
        let n = CHUNK.min(args.workflows - k);
        let items: Vec<(String, String)> = (0..n)
            .map(|_| {
                let id = format!("dev-{}", uuid::Uuid::now_v7());
                let input = match args.segments {
                    Some(k) => format!(
                        r#"{{"video_id":"{id}","video_url":"s3://media/{id}.mp4","segments":{k}}}"#
                    ),
                    None => format!(r#"{{"video_id":"{id}","video_url":"s3://media/{id}.mp4"}}"#),
                };
                (id, input)
            })
            .collect();
        let r = engine
            .accept_many(&args.pipeline, items)
            .await
            .map_err(|e| format!("accepting workflows: {e}"))?;
        created += r.created;
        k += n;
    }
    tracing::info!(
        created,
        accept_ms = began.elapsed().as_millis() as u64,
        "accepted new workflows"
    );
    engine.release_held();

    let mut bar = crate::progress::Progress::new();
    let tty = bar.visible();
    let deadline = args.duration.map(|d| began + Duration::from_secs_f64(d));
    tokio::pin!(shutdown);
    let total = resumed + created;
    loop {
        let terminal = Metrics::get(&metrics.workflows_completed)
            + Metrics::get(&metrics.workflows_failed)
            + Metrics::get(&metrics.workflows_cancelled);
        let active = (total + Metrics::get(&metrics.workflows_reopened)).saturating_sub(terminal);
        if tty {
            let note = format!(
                "done  running={active}  tasks={}  retries={}",
                Metrics::get(&metrics.tasks_dispatched),
                Metrics::get(&metrics.task_retries)
            );
            bar.draw(terminal, total, &note);
        }
        if args.exit_when_done && active == 0 {
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(Duration::from_millis(if tty { 200 } else { 20 })) => {}
        }
    }
    bar.finish();
    http.stop().await;
    engine.shutdown().await;
    // Release every handle on the engine context (it holds the committer and
    // the store) before the commit thread is joined below.
    drop(engine);
    workers.abort();
    let _ = workers.await;
    if let Some(x) = &exporter {
        let flushed = x.flush(Duration::from_secs(5)).await;
        eprintln!(
            "spans exported={} dropped={} failed={}{}",
            Metrics::get(&metrics.spans_exported),
            Metrics::get(&metrics.spans_dropped),
            Metrics::get(&metrics.spans_failed),
            if flushed { "" } else { " (flush timed out)" }
        );
    }
    let summary = Summary::collect(&node.store, &metrics, 0)?;
    let commits = node.committer.stats();
    tracing::info!(
        actors_spawned = Metrics::get(&metrics.actors_spawned),
        passivations = Metrics::get(&metrics.passivations),
        snapshots = Metrics::get(&metrics.snapshots),
        journal_records = Metrics::get(&metrics.journal_records),
        commit_batches = commits.batches,
        commit_requests = commits.requests,
        commit_entries = commits.entries,
        "engine figures"
    );
    // Join the commit thread and close RocksDB before the process exits.
    node.close().await;
    Ok(summary)
}
