//! `orchestrator run`: the production service. Engine + RocksDB + NATS
//! transport + admin. SIGTERM/SIGINT: stop intake, finish in-flight commits,
//! stop the actors, join the commit thread, flush NATS; within 10 s.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::NatsArgs;
use crate::engine::{
    Clock, Engine, EngineConfig, EngineCtx, Hooks, Metrics, ResultIntake, SystemClock,
};
use crate::node::{open_node, NodeOptions};
use crate::transport::nats::{connect_with_stats, ensure_streams, run_intake, NatsTransport};

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    /// RocksDB data directory (created if missing).
    #[arg(
        long,
        env = "NARRALYTICA_DATA_DIR",
        default_value = "./data/orchestrator"
    )]
    pub data_dir: PathBuf,
    /// Directory of pipeline files.
    #[arg(
        long,
        env = "NARRALYTICA_PIPELINES",
        default_value = "config/pipelines"
    )]
    pub pipelines: PathBuf,
    /// Partitions of a new data dir (an existing one keeps its count).
    #[arg(long, default_value_t = 8)]
    pub partitions: u16,
    /// Workflow actors alive at once.
    #[arg(long, default_value_t = EngineConfig::default().resident_max)]
    pub resident_max: usize,
    /// Most storage ops in one synced write batch.
    #[arg(long, default_value_t = 4096)]
    pub commit_batch_max: usize,
    /// Address of `/healthz`, `/readyz` and `/metrics`; `off` disables them.
    #[arg(long, env = "NARRALYTICA_HTTP_ADDR", default_value = "127.0.0.1:9464")]
    pub http_addr: String,
}

pub fn run(args: RunArgs) -> ExitCode {
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(serve(args, super::shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The whole service; returns after a graceful shutdown.
pub async fn serve(
    args: RunArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    // Health and metrics first, so probes see the service come up.
    let nats_stats = Arc::new(crate::transport::nats::NatsStats::default());
    let metrics = Arc::new(Metrics::default());
    let mut http = crate::http::Endpoint::start(
        &args.http_addr,
        crate::http::HttpState {
            metrics: metrics.clone(),
            readiness: Arc::new(crate::http::Readiness::with_nats(nats_stats.clone())),
            nats: Some(nats_stats.clone()),
            ..Default::default()
        },
    )
    .await?;
    let node = open_node(&NodeOptions {
        data_dir: args.data_dir.clone(),
        pipelines_dir: args.pipelines.clone(),
        partitions: args.partitions,
        commit_batch_max: args.commit_batch_max,
        commit_threads: 1,
        block_cache_mib: 64,
        write_buffer_mib: 64,
    })
    .await?;
    http.storage_opened(&node);
    let cfg = args.nats.config();
    let (client, js) = connect_with_stats(&cfg, Some(nats_stats)).await?;
    // Streams are created idempotently; while NATS is unreachable, keep trying.
    tokio::pin!(shutdown);
    loop {
        match ensure_streams(&js, &cfg).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, "waiting for NATS");
                tokio::select! {
                    _ = &mut shutdown => {
                        http.stop().await;
                        return Ok(());
                    }
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
    let store = node.store.clone();
    let transport = NatsTransport::start(
        cfg.clone(),
        client.clone(),
        js.clone(),
        Arc::new(move |id: &str| store.partition_of(id)),
    )?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let engine = Arc::new(
        Engine::start(EngineCtx {
            store: node.store.clone(),
            committer: node.committer.clone(),
            clock,
            transport: Arc::new(transport),
            pipelines: node.pipelines.clone(),
            metrics: metrics.clone(),
            config: EngineConfig {
                partitions: args.partitions,
                resident_max: args.resident_max,
                ..EngineConfig::default()
            },
            hooks: Hooks::default(),
        })
        .await
        .map_err(|e| e.to_string())?,
    );
    http.readiness().set_recovery_done();
    let intake = tokio::spawn(run_intake(
        cfg.clone(),
        client.clone(),
        js.clone(),
        Arc::new(ResultIntake(engine.clone())),
        engine.sink(),
    ));
    let admin = tokio::spawn(crate::admin::serve(
        client.clone(),
        cfg.prefix.clone(),
        engine.clone(),
        cfg.limits.message_max_bytes,
    ));
    eprintln!(
        "orchestrator running: nats={} prefix={} data_dir={} resumed={}",
        cfg.url,
        cfg.prefix,
        args.data_dir.display(),
        Metrics::get(&metrics.workflows_resumed)
    );
    shutdown.await;
    eprintln!("orchestrator stopping");
    http.stop().await;
    // Stop intake first: nothing new is accepted; unacked results are
    // redelivered to the next run.
    intake.abort();
    admin.abort();
    let _ = intake.await;
    let _ = admin.await;
    let _ = tokio::time::timeout(Duration::from_secs(6), engine.shutdown()).await;
    drop(engine);
    let _ = tokio::time::timeout(Duration::from_secs(1), client.flush()).await;
    node.close().await;
    eprintln!("orchestrator stopped");
    Ok(())
}
