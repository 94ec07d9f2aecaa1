//! `orchestrator run`: the production service. Engine + RocksDB + NATS
//! transport + admin. SIGTERM/SIGINT: stop intake, stop sending tasks and let
//! the offers in flight land, finish in-flight commits, stop the actors, join
//! the commit thread, flush NATS; within `shutdown.grace` (10 s). SIGHUP:
//! read the pipeline directory again (as `orchestrator pipelines reload`)
//! and the capacity limits of the config file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::otlp_args::OtlpArgs;
use super::run_membership::{open_journal, shared_attempt_key, Membership};
use super::LogArgs;
use crate::config::Config;
use crate::engine::{
    Clock, Engine, EngineCtx, Hooks, Metrics, ResultIntake, SystemClock, WeakResultIntake,
};
use crate::node::open_node_replicated;
use crate::transport::nats::{connect_with_stats, ensure_streams, run_intake, NatsTransport};

/// Flags and environment of `orchestrator run`. Each one, when given,
/// overrides the config file; see `config/orchestrator.toml` for the rest.
#[derive(Debug, Clone, Default, Args)]
#[command(after_help = concat!(
    "Examples:\n  orchestrator run --config config/orchestrator.toml --nats-url nats://10.0.0.5:4222 --data-dir /var/lib/narralytica\n",
    "  orchestrator run --home /srv/narralytica   # pipelines from /srv/narralytica/config/pipelines, data in /srv/narralytica/data/orchestrator\n",
    "  kill -HUP <pid>   # read the pipeline directory again, as `orchestrator pipelines reload` does,\n",
    "                    # and the capacity limits ([task_types.*], [pools.*], [capacity]) of the config file\n\n",
    "NATS security examples:\n",
    "  NARRALYTICA_NATS_PASSWORD=... orchestrator run --nats-user orchestrator\n",
    "  NARRALYTICA_NATS_TOKEN=... orchestrator run\n",
    "  orchestrator run --nats-creds /etc/narralytica/orchestrator.creds\n",
    "  orchestrator run --nats-nkey-file /etc/narralytica/orchestrator.nk\n",
    "  orchestrator run --nats-url tls://nats:4222 --nats-tls-ca /etc/nats/ca.pem \\\n",
    "      --nats-tls-cert /etc/nats/client.pem --nats-tls-key /etc/nats/client-key.pem\n",
    "  orchestrator run --nats-url nats://user:pass@nats:4222 --nats-connect-timeout 10s\n",
    "  orchestrator worker --simulate --task-types embed --nats-user worker-embed --nats-inbox-prefix _INBOX_worker-embed\n",
    "Secrets are better passed in the environment (a flag shows in `ps`); --print-config shows them as ***.\n\n",
    "Intake bounds and the stream watch ([nats] in the config file; over a bound a request is answered\n",
    "\"unavailable\", retryable):\n",
    "  printf '[nats]\\nadmin_in_flight_max = 1024\\nadmin_start_rate = 2000\\nadmin_journal_backlog_max = 3072\\nstream_watch_interval = \"2s\"\\n' > intake.toml\n",
    "  orchestrator run --config intake.toml"
))]
pub struct RunArgs {
    /// Config file (TOML); every option and its default: config/orchestrator.toml.
    #[arg(long, env = "NARRALYTICA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Base of the relative default paths (`config/pipelines`,
    /// `data/orchestrator`) no config file sets; default: the current
    /// directory. Relative paths in a config file are taken under the file's
    /// directory, relative flags under the current directory.
    #[arg(long, env = "NARRALYTICA_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Print the effective configuration (defaults <- file <- env <- flags) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// NATS server URL [config: nats.url].
    #[arg(long, env = "NARRALYTICA_NATS_URL")]
    pub nats_url: Option<String>,
    /// Subject prefix [config: nats.prefix].
    #[arg(long, env = "NARRALYTICA_PREFIX")]
    pub prefix: Option<String>,
    #[command(flatten)]
    pub nats_security: super::nats_security::NatsSecurityArgs,
    /// RocksDB data directory [config: node.data_dir].
    #[arg(long, env = "NARRALYTICA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Directory of pipeline files [config: node.pipelines_dir].
    #[arg(long, env = "NARRALYTICA_PIPELINES")]
    pub pipelines: Option<PathBuf>,
    /// Backups over NATS go only under this directory, e.g.
    /// `--backup-root /var/backups/narralytica` [config: node.backup_root].
    #[arg(long, env = "NARRALYTICA_BACKUP_ROOT")]
    pub backup_root: Option<PathBuf>,
    /// Partitions of a new data dir [config: engine.partitions].
    #[arg(long)]
    pub partitions: Option<u16>,
    /// Workflow actors alive at once [config: engine.resident_max].
    #[arg(long)]
    pub resident_max: Option<usize>,
    /// Bulk-accepted or recovered workflows with tasks out at once
    /// [config: engine.in_progress_max].
    #[arg(long)]
    pub in_progress_max: Option<usize>,
    /// Most storage ops in one synced write batch [config: storage.commit_batch_max].
    #[arg(long)]
    pub commit_batch_max: Option<usize>,
    /// Address of /healthz, /readyz, /metrics, or `off` [config: http.addr].
    #[arg(long, env = "NARRALYTICA_HTTP_ADDR")]
    pub http_addr: Option<String>,
    /// Serve the web console under /console on the HTTP port [config: console.enabled].
    #[arg(long, env = "NARRALYTICA_CONSOLE", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub console: Option<bool>,
    /// The console's operator token; prefer the environment variable [config: console.token].
    #[arg(
        long,
        env = "NARRALYTICA_CONSOLE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub console_token: Option<String>,
    /// A file holding the console's operator token [config: console.token_file].
    #[arg(long, env = "NARRALYTICA_CONSOLE_TOKEN_FILE", value_name = "FILE")]
    pub console_token_file: Option<PathBuf>,
    /// Export spans over OTLP/HTTP to this `http://` or `https://` base URL; empty = off [config: trace.otlp_endpoint].
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    #[command(flatten)]
    pub otlp: OtlpArgs,
    /// `service.name` of exported spans [config: trace.service_name].
    #[arg(long, env = "OTEL_SERVICE_NAME")]
    pub otel_service_name: Option<String>,
}

impl RunArgs {
    /// Defaults <- file <- environment <- flags (clap resolves env vs flag).
    pub fn effective_config(&self, log: &LogArgs) -> Result<Config, String> {
        let mut cfg = Config::layered(self.config.as_deref(), self.home.as_deref())?;
        if let Some(v) = &self.nats_url {
            cfg.nats.url = v.clone();
        }
        if let Some(v) = &self.prefix {
            cfg.nats.prefix = v.clone();
        }
        self.nats_security.apply_to(&mut cfg.nats);
        if let Some(v) = &self.data_dir {
            cfg.node.data_dir = v.clone();
        }
        if let Some(v) = &self.pipelines {
            cfg.node.pipelines_dir = v.clone();
        }
        if let Some(v) = &self.backup_root {
            cfg.node.backup_root = v.clone();
        }
        if let Some(v) = self.partitions {
            cfg.engine.partitions = v;
        }
        if let Some(v) = self.resident_max {
            cfg.engine.resident_max = v;
        }
        if let Some(v) = self.in_progress_max {
            cfg.engine.in_progress_max = v;
        }
        if let Some(v) = self.commit_batch_max {
            cfg.storage.commit_batch_max = v;
        }
        if let Some(v) = &self.http_addr {
            cfg.http.addr = v.clone();
        }
        if let Some(v) = self.console {
            cfg.console.enabled = v;
        }
        if let Some(v) = &self.console_token {
            cfg.console.token = crate::transport::nats::Secret::new(v.clone());
        }
        if let Some(v) = &self.console_token_file {
            cfg.console.token_file = v.clone();
        }
        if let Some(v) = &self.otlp_endpoint {
            cfg.trace.otlp_endpoint = v.trim().to_owned();
        }
        self.otlp.apply_to(&mut cfg.trace);
        if let Some(v) = &self.otel_service_name {
            cfg.trace.service_name = v.clone();
        }
        if let Some(v) = &log.level {
            cfg.log.level = v.clone();
        }
        if let Some(v) = log.format {
            cfg.log.format = v;
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

pub fn run(args: RunArgs, log: LogArgs) -> ExitCode {
    let cfg = match args.effective_config(&log) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.print_config {
        print!("{}", cfg.to_toml());
        return ExitCode::SUCCESS;
    }
    super::init_logging(&cfg.log.level, cfg.log.format);
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(serve(cfg, super::shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The whole service; returns after a graceful shutdown.
pub async fn serve(
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    // Lifecycle events: the outbox exists before the engine writes anything.
    let events = if cfg.events.enabled {
        Some(crate::events::Outbox::new(
            &cfg.nats.prefix,
            &cfg.events_config(),
        )?)
    } else {
        None
    };
    // Test-only negative controls for the reliability suite (never set in
    // production): a planted bug the system checker must catch.
    let mut plants = crate::failpoints::Plants::default();
    if let Ok(plant) = std::env::var("NARRALYTICA_PLANT") {
        let (engine_plants, drop_events) = crate::failpoints::Plants::parse(&plant)?;
        if drop_events {
            let Some((outbox, _)) = events.as_ref() else {
                return Err(format!(
                    "NARRALYTICA_PLANT={plant:?}: drop_events needs lifecycle events enabled"
                ));
            };
            outbox.plant_drop_all();
        }
        plants = engine_plants;
        eprintln!(
            "warning: NARRALYTICA_PLANT={plant}: test-only planted bug, never set in production"
        );
    }
    // Crash failpoints (`FAILPOINTS`), test-only as well.
    let failpoints = crate::failpoints::setup_from_env()?;
    if !failpoints.is_empty() {
        eprintln!(
            "warning: FAILPOINTS active ({}): test-only, the process will crash",
            failpoints.join(", ")
        );
    }
    // Health and metrics first, so probes see the service come up.
    let nats_stats = Arc::new(crate::transport::nats::NatsStats::default());
    let metrics = Arc::new(Metrics::default());
    let http_state = crate::http::HttpState {
        metrics: metrics.clone(),
        readiness: Arc::new(crate::http::Readiness::with_nats(nats_stats.clone())),
        nats: Some(nats_stats.clone()),
        events: events.as_ref().map(|(o, _)| o.stats.clone()),
        ..Default::default()
    };
    let console = super::run_console::console(&cfg, &http_state)?;
    let mut app = crate::http::routes(http_state.clone());
    if let Some(c) = &console {
        app = app.merge(crate::console::router(c.clone()));
    }
    let mut http = crate::http::Endpoint::start_with(&cfg.http.addr, http_state, app).await?;
    if let (Some(_), Some(addr)) = (&console, http.local_addr()) {
        eprintln!("console on http://{addr}/console");
    }
    let config = cfg;
    let mut cfg = config.nats_config();
    // Cluster mode: the storage appends every commit batch to the
    // replicated journal, so NATS comes first.
    let (connected, journal) = if config.cluster.enabled {
        let (client, js) = connect_with_stats(&cfg, Some(nats_stats.clone())).await?;
        let journal = open_journal(&config, &js).await?;
        cfg.attempt_key = shared_attempt_key(&config, &js).await?;
        (Some((client, js)), Some(journal))
    } else {
        (None, None)
    };
    let replicator = journal
        .as_ref()
        .map(|j| j.journal.clone() as Arc<dyn crate::storage::Replicator>);
    let node = open_node_replicated(&config.node_options(), replicator).await?;
    http.storage_opened(
        node.committer.histograms(),
        &node.storage,
        node.committer.write_health(),
    );
    let write_probe = node.spawn_write_probe();
    let (client, js) = match connected {
        Some(c) => c,
        None => {
            cfg.attempt_key =
                crate::transport::attempt_key::AttemptKey::load_or_create(&config.node.data_dir)?;
            connect_with_stats(&cfg, Some(nats_stats.clone())).await?
        }
    };
    // Streams are created idempotently; while NATS is unreachable, keep trying.
    tokio::pin!(shutdown);
    // The first poll installs the SIGTERM and SIGINT handlers: until then
    // the signal's default action kills the process, and the main wait
    // below starts polling only after "orchestrator running" is printed.
    if futures_util::FutureExt::now_or_never(shutdown.as_mut()).is_some() {
        http.stop().await;
        return Ok(());
    }
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
    // One orchestrator per prefix: a second one refuses to start. In
    // cluster mode the node takes every partition's lease here.
    let mut membership =
        match Membership::join(&config, &js, journal, node.store.partitions()).await {
            Ok(m) => m,
            Err(e) => {
                // Closed before the process exits, so RocksDB's threads
                // are gone first.
                http.stop().await;
                write_probe.abort();
                let _ = tokio::time::timeout(Duration::from_secs(1), node.close()).await;
                return Err(e);
            }
        };
    if events.is_some() {
        crate::events::ensure_stream(
            &js,
            &cfg.prefix,
            &config.events_config(),
            cfg.limits.message_max_bytes,
        )
        .await?;
    }
    let mut watched = crate::transport::nats::Watched::new(
        &cfg,
        match events {
            Some(_) => vec![crate::events::stream_config(
                &cfg.prefix,
                &config.events_config(),
                cfg.limits.message_max_bytes,
            )?],
            None => Vec::new(),
        },
    )?;
    // A cluster node's partitions have their own results consumers.
    if membership.served().is_some() {
        watched.results = None;
    }
    let stream_watch = tokio::spawn(crate::transport::nats::watch_streams(
        js.clone(),
        watched,
        cfg.stream_watch_interval,
        nats_stats.clone(),
    ));
    let store = node.store.clone();
    let transport = NatsTransport::start(
        cfg.clone(),
        client.clone(),
        js.clone(),
        Arc::new(move |id: &str| store.partition_of(id)),
        nats_stats,
    )?;
    let transport = Arc::new(transport);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let exporter = match config.otlp_config() {
        Some(o) => {
            eprintln!("exporting spans to {}", o.endpoint);
            Some(crate::otel::OtlpExporter::start(o, metrics.clone())?)
        }
        None => None,
    };
    // A cluster node forwards what concerns partitions it does not serve.
    let routing = membership.routing(&node.store, &config);
    let remote_lineage = match &routing {
        Some(r) => Some(crate::admin::NatsLineage::start(
            client.clone(),
            crate::protocol::subjects::Subjects::new(&cfg.prefix)?,
            r.clone(),
        )),
        None => None,
    };
    let limits = config.capacity_limits()?;
    let capacity = Arc::new(crate::engine::capacity::Capacity::new(
        limits,
        clock.now_ms(),
    ));
    let engine = membership
        .start_engine(EngineCtx {
            store: node.store.clone(),
            committer: node.committer.clone(),
            clock,
            transport: transport.clone(),
            pipelines: node.pipelines.clone(),
            metrics: metrics.clone(),
            config: config.engine_config(),
            hooks: Hooks {
                outbox: events
                    .as_ref()
                    .map(|(o, _)| o.clone() as Arc<dyn crate::engine::outbox::LifecycleOutbox>),
                spans: exporter
                    .clone()
                    .map(|e| e as Arc<dyn crate::otel::SpanSink>),
                plants,
                remote_lineage: remote_lineage
                    .as_ref()
                    .map(|(port, _)| port.clone() as Arc<dyn crate::engine::lineage::LineagePort>),
                ..Hooks::default()
            },
            capacity,
        })
        .await?;
    transport.set_sink(engine.sink());
    let capacity_share = membership.follow_capacity_share(Arc::downgrade(&engine));
    transport.set_results(Arc::new(WeakResultIntake(Arc::downgrade(&engine))));
    // The publisher first sends what a previous run left in the outbox.
    let publisher = events.map(|(outbox, rx)| {
        tokio::spawn(crate::events::run_publisher(
            outbox,
            rx,
            node.store.clone(),
            node.pipelines.clone(),
            node.committer.clone(),
            js.clone(),
            config.events_config(),
        ))
    });
    let intake = tokio::spawn(run_intake(
        cfg.clone(),
        client.clone(),
        js.clone(),
        Arc::new(ResultIntake(engine.clone())),
        engine.sink(),
        membership.served(),
    ));
    // SIGHUP is caught from before the admin verbs answer, so a signal sent
    // once the service is seen to be up reloads rather than kills it.
    let reloader = tokio::spawn(reload_on_sighup(
        hangup_signal(),
        node.pipelines.clone(),
        node.committer.clone(),
        Reloadable {
            engine: Arc::downgrade(&engine),
            source: config.source.clone(),
        },
    ));
    let (local_admin, batch_runner) = crate::admin::LocalAdmin::start(engine.clone());
    let console_tasks = match &console {
        Some(c) => Some(c.attach(local_admin.clone(), client.clone(), &cfg.prefix)?),
        None => None,
    };
    let (subscribed, admin_serving) = tokio::sync::oneshot::channel();
    let mut admin = tokio::spawn(crate::admin::serve_with(
        client.clone(),
        cfg.prefix.clone(),
        local_admin,
        batch_runner,
        config.nats.intake_limits(),
        Some(subscribed),
        routing,
    ));
    // Ready once recovery is done and the admin verbs have responders.
    if admin_serving.await.is_err() {
        return Err(match (&mut admin).await {
            Ok(Err(e)) => e,
            _ => "the admin service stopped before it served".to_string(),
        });
    }
    http.readiness().set_recovery_done();
    eprintln!(
        "orchestrator running: nats={} prefix={} data_dir={} pipelines_dir={} resumed={}",
        crate::transport::nats::redact_url(&cfg.url),
        cfg.prefix,
        config.node.data_dir.display(),
        config.node.pipelines_dir.display(),
        Metrics::get(&metrics.workflows_resumed)
    );
    let lost = tokio::select! {
        _ = &mut shutdown => None,
        r = membership.lost() => Some(r),
    };
    if let Some(reason) = &lost {
        tracing::error!(reason = %reason, "stopping: prefix claim lost");
    }
    eprintln!("orchestrator stopping");
    http.stop().await;
    // The console holds the engine through its admin verbs: let go of it
    // before the engine and the storage close.
    drop(console_tasks);
    drop(console);
    // Stop intake first: nothing new is accepted; unacked results are
    // redelivered to the next run.
    intake.abort();
    admin.abort();
    stream_watch.abort();
    reloader.abort();
    let _ = intake.await;
    let _ = admin.await;
    let _ = reloader.await;
    // Offers in flight may come back with their task's result, which exists
    // nowhere else: let them land while the engine still runs (an offer
    // waits at most nats.tasks_direct_timeout for its answer; one whose
    // declined task is being published to a NATS that is down holds its
    // place longer, so the wait is bounded, and within the grace).
    let grace = config.shutdown.grace.as_duration();
    let draining = tokio::time::Instant::now();
    let drained = transport
        .drain(
            (cfg.tasks_direct_timeout + Duration::from_millis(500))
                .min(grace.saturating_sub(Duration::from_secs(3))),
        )
        .await;
    eprintln!(
        "orchestrator stopping: offers out={} offers left unfinished={} tasks left for the next start={}",
        drained.offers_at_stop, drained.offers_left, drained.tasks_held
    );
    // The engine gets the grace period less 2 s for the NATS flush and
    // closing RocksDB; past the grace the process exits anyway (every
    // acknowledged transition is already synced, so that is kill-safe).
    let engine_budget = grace
        .saturating_sub(Duration::from_secs(2))
        .saturating_sub(draining.elapsed())
        .max(Duration::from_millis(500));
    if tokio::time::timeout(engine_budget, engine.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(?engine_budget, "engine did not stop in time");
    }
    drop(engine);
    if let Some((_, sender)) = remote_lineage {
        sender.abort();
    }
    // Unpublished events stay in the outbox for the next start.
    if let Some(p) = publisher {
        p.abort();
        let _ = p.await;
    }
    // The spans of the last transitions; a dead collector costs at most 1 s.
    if let Some(x) = &exporter {
        x.flush(Duration::from_secs(1)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), client.flush()).await;
    write_probe.abort();
    if tokio::time::timeout(Duration::from_secs(1), node.close())
        .await
        .is_err()
    {
        return Err("storage did not close within the shutdown grace".into());
    }
    if let Some(share) = capacity_share {
        share.abort();
    }
    membership.leave(lost.is_some()).await;
    if let Some(reason) = lost {
        return Err(reason);
    }
    eprintln!("orchestrator stopped");
    Ok(())
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

/// SIGHUP, caught from now on; `None` where it cannot be.
fn hangup_signal() -> Hangup {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        signal(SignalKind::hangup())
            .map_err(|e| {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reload with `orchestrator pipelines reload`");
            })
            .ok()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// What a SIGHUP reads again besides the pipelines: the capacity limits of
/// the config file.
struct Reloadable {
    engine: std::sync::Weak<Engine>,
    /// The config file; `None`: started without one, nothing to read.
    source: Option<std::path::PathBuf>,
}

impl Reloadable {
    /// Reads the config file again and applies its capacity limits; a file
    /// that does not parse or validate changes nothing (logged).
    fn reload_capacity(&self) {
        let (Some(engine), Some(file)) = (self.engine.upgrade(), self.source.as_deref()) else {
            return;
        };
        let limits = Config::load(file).and_then(|c| c.capacity_limits());
        match limits {
            Ok(limits) => {
                let ctx = engine.ctx();
                let types = limits.task_types.len();
                let pools = limits.pools.len();
                let ready = ctx.capacity.reconfigure(limits, ctx.clock.now_ms());
                crate::engine::recovery::send_admitted(ctx, ready);
                tracing::info!(task_types = types, pools, "capacity limits reloaded");
            }
            Err(e) => tracing::error!(error = %e, "capacity limits not reloaded"),
        }
    }
}

/// Reloads the pipelines and the capacity limits on every SIGHUP until
/// aborted; the outcome of each reload goes to the log (a refused reload
/// changes nothing).
async fn reload_on_sighup(
    hangup: Hangup,
    pipelines: Arc<crate::engine::PipelineRegistry>,
    committer: Arc<crate::storage::group_commit::GroupCommitter>,
    reloadable: Reloadable,
) {
    #[cfg(unix)]
    if let Some(mut hangup) = hangup {
        while hangup.recv().await.is_some() {
            match pipelines.reload(&committer).await {
                Ok(report) => crate::admin::log_reload(&report),
                Err(e) => tracing::error!(error = %e, "pipelines not reloaded"),
            }
            reloadable.reload_capacity();
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (hangup, pipelines, committer, reloadable);
    }
}
