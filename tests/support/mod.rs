//! Shared test harness: an engine over in-memory (or RocksDB) storage with
//! in-process simulated workers.

pub mod nats;
pub mod secure;

use std::sync::Arc;
use std::time::Duration;

use orchestrator::engine::{
    Clock, Engine, EngineConfig, EngineCtx, Faults, Hooks, Metrics, PipelineRegistry, ResultIntake,
    SystemClock,
};
use orchestrator::pipeline::load::load_pipeline_dir;
use orchestrator::pipeline::{PipelineDef, PipelineLimits};
use orchestrator::sim::{self, SimConfig};
use orchestrator::storage::group_commit::{CommitConfig, GroupCommitter};
use orchestrator::storage::store::WorkflowStore;
use orchestrator::storage::Storage;
use orchestrator::transport::inproc::{InProcTransport, ToWorker};
use orchestrator::transport::nats::{NatsConfig, NatsTransport};
use orchestrator::workflow::Status;

/// A memory store holding pipeline `p` and, for each `(id, events)`, one
/// journal record starting at seq 1: hand-written evidence for the checkers.
pub fn store_with_journals(
    p: &PipelineDef,
    workflows: &[(&str, Vec<orchestrator::workflow::Event>)],
) -> WorkflowStore {
    let storage: Arc<dyn Storage> = Arc::new(orchestrator::storage::memory::MemoryStorage::new());
    let store = WorkflowStore::open(storage.clone(), 4).unwrap();
    let mut ops = vec![store
        .pipeline_put(&p.name, p.version, p.content_hash(), p)
        .unwrap()];
    for (id, events) in workflows {
        let record = orchestrator::workflow::JournalRecord {
            first_seq: 1,
            events: events.clone(),
        };
        ops.push(
            store
                .journal_put(store.partition_of(id), id, 1, &record)
                .unwrap(),
        );
    }
    storage.write(&ops, true).unwrap();
    store
}

/// Version 1 of the video pipeline (`tests/fixtures/pipelines`): nine
/// static steps, one task each, `n = 17` at `index`. The harness runs it
/// by default: the engine tests count its tasks and read its steps by
/// position. Tests of what the product ships load `config/pipelines`.
pub fn video_v1_pipelines() -> Vec<PipelineDef> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pipelines");
    load_pipeline_dir(&dir, &PipelineLimits::default()).expect("the v1 fixture is valid")
}

/// The pipelines the product ships (`config/pipelines`).
pub fn shipped_pipelines() -> Vec<PipelineDef> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pipelines");
    load_pipeline_dir(&dir, &PipelineLimits::default()).expect("shipped pipelines are valid")
}

pub struct Harness {
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    pub faults: Arc<Faults>,
    pub store: WorkflowStore,
    /// Kept so tests can inspect batching (`stats()`).
    pub committer: Arc<GroupCommitter>,
    /// The span exporter, when `Options::otlp` was set.
    pub exporter: Option<Arc<orchestrator::otel::OtlpExporter>>,
    /// The NATS transport's counters (tasks by route), over NATS only.
    pub nats_stats: Option<Arc<orchestrator::transport::nats::NatsStats>>,
    /// The tasks sent to workers, when `Options::test_is_worker` is set.
    pub tasks: Option<tokio::sync::mpsc::UnboundedReceiver<ToWorker>>,
    /// The lifecycle messages handed to the publisher, when
    /// `Options::events` is set (nothing publishes them).
    pub events: Option<tokio::sync::mpsc::Receiver<orchestrator::events::OutboxItem>>,
    /// Panics of the terminal hook (`Options::panic_on_terminal`).
    pub terminal_hook_panics: Arc<std::sync::atomic::AtomicU64>,
    /// The key of the tasks' attempt tokens, over NATS (a test may forge
    /// what only a worker that got the task could send).
    pub attempt_key: Option<orchestrator::transport::attempt_key::AttemptKey>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

pub struct Options {
    pub partitions: u16,
    pub sim: SimConfig,
    pub config: EngineConfig,
    /// Pipelines to load instead of version 1 of the video pipeline
    /// ([`video_v1_pipelines`]).
    pub pipelines: Option<Vec<PipelineDef>>,
    /// Clock to use instead of the system clock.
    pub clock: Option<Arc<dyn Clock>>,
    /// Talk to workers over NATS at this URL instead of in-process
    /// (the simulated workers then run as NATS workers too).
    pub nats_url: Option<String>,
    /// Worker misbehaviour (NATS workers only).
    pub worker_faults: orchestrator::worker::WorkerFaults,
    /// Export spans with these settings (`Harness::exporter`).
    pub otlp: Option<orchestrator::otel::OtlpConfig>,
    /// In-process only: no simulated workers; the test is the worker, reading
    /// tasks from `Harness::tasks` and answering through `deliver_result`.
    pub test_is_worker: bool,
    /// Over NATS: changes to the transport's settings.
    pub nats_tune: Option<fn(&mut NatsConfig)>,
    /// Lifecycle events on: outbox rows are written and the messages are
    /// handed to `Harness::events`.
    pub events: bool,
    /// The terminal hook panics (after the terminal transition is durable).
    pub panic_on_terminal: bool,
    /// Capacity limits of the admission gate (none by default).
    pub capacity: orchestrator::capacity::Limits,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            partitions: 4,
            sim: SimConfig::default(),
            config: EngineConfig {
                partitions: 4,
                tick_ms: 5,
                ..EngineConfig::default()
            },
            pipelines: None,
            clock: None,
            nats_url: None,
            worker_faults: Default::default(),
            otlp: None,
            test_is_worker: false,
            nats_tune: None,
            events: false,
            panic_on_terminal: false,
            capacity: Default::default(),
        }
    }
}

impl Harness {
    pub async fn start(storage: Arc<dyn Storage>, opts: Options) -> Harness {
        let store = WorkflowStore::open(storage.clone(), opts.partitions).expect("open store");
        let committer = Arc::new(
            GroupCommitter::start(
                storage,
                // Memory storage has no fsync, so the committer would be idle
                // at every commit and write it on the caller's thread: no
                // batching to exercise. The process-level tests run the real
                // binary (RocksDB, inline writes when idle).
                CommitConfig {
                    inline_when_idle: false,
                    ..CommitConfig::default()
                },
            )
            .expect("committer"),
        );
        let defs = opts.pipelines.unwrap_or_else(video_v1_pipelines);
        let task_types = orchestrator::pipeline::task_types(&defs);
        let pipelines = Arc::new(PipelineRegistry::new(store.clone(), defs));
        committer
            .commit(pipelines.persist_ops().unwrap())
            .await
            .expect("persist pipelines");
        let metrics = Arc::new(Metrics::default());
        let faults = Arc::new(Faults::default());
        let clock: Arc<dyn Clock> = opts.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let hook_metrics = metrics.clone();
        let panic_on_terminal = opts.panic_on_terminal;
        let terminal_hook_panics = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let hook_panics = terminal_hook_panics.clone();
        let (outbox, events) = if opts.events {
            let (o, rx) = orchestrator::events::Outbox::new(
                "narralytica",
                &orchestrator::events::EventsConfig::default(),
            )
            .expect("outbox");
            (
                Some(o as Arc<dyn orchestrator::engine::outbox::LifecycleOutbox>),
                Some(rx),
            )
        } else {
            (None, None)
        };
        let exporter = opts.otlp.map(|o| {
            orchestrator::otel::OtlpExporter::start(o, metrics.clone()).expect("exporter")
        });
        let mut nats_transport = None;
        let mut nats_stats = None;
        let (transport, inproc_rx, nats): (Arc<dyn orchestrator::transport::Transport>, _, _) =
            match &opts.nats_url {
                None => {
                    let (t, rx) = InProcTransport::new();
                    (Arc::new(t), Some(rx), None)
                }
                Some(url) => {
                    let mut cfg = NatsConfig {
                        url: url.clone(),
                        ..NatsConfig::default()
                    };
                    if let Some(tune) = opts.nats_tune {
                        tune(&mut cfg);
                    }
                    let (client, js) = orchestrator::transport::nats::connect(&cfg)
                        .await
                        .expect("connect");
                    orchestrator::transport::nats::ensure_streams(&js, &cfg)
                        .await
                        .expect("streams");
                    let s2 = store.clone();
                    let stats = Arc::new(orchestrator::transport::nats::NatsStats::default());
                    nats_stats = Some(stats.clone());
                    let t = Arc::new(
                        NatsTransport::start(
                            cfg.clone(),
                            client.clone(),
                            js.clone(),
                            Arc::new(move |id: &str| s2.partition_of(id)),
                            stats,
                        )
                        .expect("transport"),
                    );
                    nats_transport = Some(t.clone());
                    (t, None, Some((cfg, client, js)))
                }
            };
        let engine = Arc::new(
            Engine::start(EngineCtx {
                store: store.clone(),
                committer: committer.clone(),
                clock: clock.clone(),
                transport,
                pipelines,
                metrics: metrics.clone(),
                config: EngineConfig {
                    partitions: opts.partitions,
                    ..opts.config
                },
                hooks: Hooks {
                    on_terminal: Some(Arc::new(move |wf, def| {
                        if wf.status == Status::Completed {
                            let outs: Vec<Option<&str>> =
                                wf.steps.iter().map(|s| s.output.as_deref()).collect();
                            if !sim::check_outputs(def, &outs).is_empty() {
                                Metrics::inc(&hook_metrics.output_errors);
                            }
                        }
                        if panic_on_terminal {
                            hook_panics.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            panic!("injected fault: terminal hook of {}", wf.id);
                        }
                    })),
                    faults: Some(faults.clone()),
                    plants: Default::default(),
                    outbox,
                    spans: exporter
                        .clone()
                        .map(|e| e as Arc<dyn orchestrator::otel::SpanSink>),
                    lineage: Default::default(),
                    remote_lineage: None,
                },
                capacity: Arc::new(orchestrator::engine::capacity::Capacity::new(
                    opts.capacity,
                    clock.now_ms(),
                )),
            })
            .await
            .expect("engine starts"),
        );
        if let Some(t) = &nats_transport {
            t.set_sink(engine.sink());
            t.set_results(Arc::new(orchestrator::engine::WeakResultIntake(
                Arc::downgrade(&engine),
            )));
        }
        let attempt_key = nats.as_ref().map(|(cfg, _, _)| cfg.attempt_key.clone());
        let mut workers = Vec::new();
        let mut tasks = None;
        if opts.test_is_worker {
            tasks = inproc_rx;
        } else if let Some(rx) = inproc_rx {
            let sink = engine.sink();
            workers.push(tokio::spawn(async move {
                sim::run(opts.sim, rx, sink, clock).await;
            }));
        } else if let Some((cfg, client, js)) = nats {
            let intake = orchestrator::transport::nats::run_intake(
                cfg.clone(),
                client,
                js,
                Arc::new(ResultIntake(engine.clone())),
                engine.sink(),
                None,
            );
            workers.push(tokio::spawn(async move {
                if let Err(e) = intake.await {
                    panic!("intake: {e}");
                }
            }));
            workers.push(tokio::spawn(async move {
                let r = orchestrator::worker::run(
                    cfg,
                    opts.sim,
                    opts.worker_faults,
                    task_types,
                    std::future::pending(),
                )
                .await;
                if let Err(e) = r {
                    panic!("worker: {e}");
                }
            }));
        }
        Harness {
            engine,
            metrics,
            faults,
            store,
            committer,
            exporter,
            nats_stats,
            tasks,
            events,
            terminal_hook_panics,
            attempt_key,
            workers,
        }
    }

    pub fn terminal(&self) -> u64 {
        Metrics::get(&self.metrics.workflows_completed)
            + Metrics::get(&self.metrics.workflows_failed)
            + Metrics::get(&self.metrics.workflows_cancelled)
    }

    /// Waits until `n` workflows reached a terminal status in this run.
    pub async fn wait_terminal(&self, n: u64, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.terminal() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {n} workflows ended within {within:?}",
                self.terminal()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn stop(self) {
        self.engine.shutdown().await;
        for w in self.workers {
            w.abort();
            let _ = w.await;
        }
    }
}

pub fn video_input(id: &str) -> String {
    format!(r#"{{"video_id":"{id}","video_url":"s3://media/{id}.mp4"}}"#)
}

/// The JSON report `loadgen --report <report>` wrote; a missing report
/// fails with what the run printed.
pub fn loadgen_report(report: &std::path::Path, out: &std::process::Output) -> serde_json::Value {
    let text = std::fs::read_to_string(report).unwrap_or_else(|e| {
        panic!(
            "no report ({e}); stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    serde_json::from_str(&text).unwrap()
}

/// A pipeline `name` (version 1) of two steps: `first`, then `second`
/// after it.
pub fn two_step_pipeline(
    name: &str,
    first: &str,
    second: &str,
) -> orchestrator::pipeline::PipelineDef {
    let text = format!(
        "[pipeline]\nname = \"{name}\"\nversion = 1\n\n[[steps]]\nname = \"{first}\"\n\n[[steps]]\nname = \"{second}\"\nneeds = [\"{first}\"]\n"
    );
    orchestrator::pipeline::load::parse_pipeline(
        &text,
        &format!("{name}.toml"),
        &Default::default(),
    )
    .unwrap()
}

/// The checker finds `n` workflows in `store`, every one completed, none
/// running, and no violation or corrupt record.
pub fn assert_all_completed(store: &WorkflowStore, n: u64) {
    let report = orchestrator::verify::verify_store(store).unwrap();
    assert_eq!(
        (
            report.workflows,
            report.completed,
            report.running,
            report.violations,
            report.corrupt
        ),
        (n, n, 0, 0, 0),
        "{:?}",
        report.details
    );
}
