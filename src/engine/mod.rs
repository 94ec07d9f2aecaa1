//! The actor layer (ractor), thin by design:
//!
//! ```text
//! RootActor ──supervises──► PartitionActor × partitions ──supervises──► WorkflowActor × resident
//! ```
//!
//! * [`root`]: spawns the partitions and restarts one that fails (it recovers from storage).
//! * [`partition`]: routes by workflow id, passivates idle actors, restarts crashed ones,
//!   owns timers and liveness deadlines, recovers after a restart.
//! * [`workflow_actor`]: one per resident workflow; decide → durable append → evolve → act.
//! * [`transition`]: that sequence, shared with the partition (bulk accept, parking).
//!
//! Senders only ever talk to the [`Engine`] handle, which talks to partitions.

pub mod capacity;
pub mod clock;
/// The engine's counters live in the telemetry leaf; `engine::metrics`
/// names them where the actors use them.
pub use crate::telemetry::metrics;
pub mod intake;
pub mod lineage;
pub mod observe;
pub mod outbox;
pub mod partition;
pub mod partition_core;
pub mod partition_shared;
pub mod progress;
pub mod recovery;
pub mod registry;
pub mod root;
pub mod router;
pub mod serving;
#[cfg(test)]
mod stored_formats_tests;
pub mod timers;
pub mod transition;
pub mod workflow_actor;
pub mod workflow_shell;

pub use intake::{result_verdict, ResultIntake, WeakResultIntake};

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use ractor::{Actor, ActorRef};

use crate::pipeline::PipelineDef;
use crate::storage::group_commit::GroupCommitter;
use crate::storage::store::WorkflowStore;
use crate::transport::{ReportSink, Transport};
use crate::workflow::{Input, Outcome, WorkflowState};

pub use clock::{Clock, ManualClock, SystemClock};
pub use metrics::Metrics;
pub use partition::{AcceptReport, PartitionMsg};
pub use registry::PipelineRegistry;
pub use router::Router;
pub use serving::Serve;
pub use workflow_actor::StartReply;

/// Engine limits and cadences; every one has a default and a config key.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Fixed when a data dir is created; a store opened with another count is refused.
    pub partitions: u16,
    /// Workflow actors alive at once (split evenly over partitions); more wait their turn.
    /// Memory only: an idle actor is passivated to make room, so this does
    /// not bound how many workflows are in progress.
    pub resident_max: usize,
    /// Workflows released from the backlog (bulk-accepted, or recovered
    /// after a restart) whose tasks are out with workers at once, split
    /// evenly over partitions; the rest wait in the backlog, their tasks not
    /// sent. Sized so that a million accepted workflows are all dispatched:
    /// ids hash unevenly, so some partitions get more than an equal share
    /// (at exactly 1,000,000 over 8 partitions, 977 of a million waited),
    /// and the default leaves 10% over a million.
    pub in_progress_max: usize,
    /// Passivated workflow states kept in memory (LRU) to skip a storage read on wake-up.
    pub state_cache_max: usize,
    /// How long an idle workflow actor (waiting only on tasks or timers) stays
    /// resident before it is passivated; 0 passivates at the next partition
    /// tick. Under `resident_max` pressure the least recently active idle
    /// actor is passivated at once whatever this says.
    pub passivate_idle_ms: u64,
    /// Crashes of one workflow's actor before the workflow is parked as failed.
    pub restart_budget: u32,
    /// Parked workflows whose actor could not even start (its load
    /// panicked), remembered per engine (split over partitions) so their
    /// later messages are answered from storage or refused at once instead
    /// of spending the restart budget again; past it the oldest is
    /// forgotten (its next message then tries an actor again).
    pub unstartable_max: usize,
    /// A snapshot is written every this many events (and at every terminal transition).
    pub snapshot_every_events: u64,
    /// How often each partition checks timers and liveness deadlines.
    pub tick_ms: u64,
    /// Timers or timeouts handled per partition per tick.
    pub timer_batch_max: usize,
    /// Workflows per commit request in a bulk accept.
    pub accept_chunk: usize,
    /// How long a caller waits for a reply from the engine.
    pub request_timeout_ms: u64,
    /// Bounds on the signals sent to wait steps.
    pub signals: SignalLimits,
    /// Purging of terminal workflows (see [`RetentionConfig`]).
    pub retention: RetentionConfig,
    /// Retry throttling per task type (`crate::workflow::budget`), engine-wide
    /// figures: each partition keeps its own counts with its share of `min_per_sec`.
    pub retry_budget: crate::workflow::budget::RetryBudgetConfig,
    /// The only directory under which the admin verb `backup` may write
    /// (`crate::backup::confine`); `None`: backups over NATS are refused.
    pub backup_root: Option<std::path::PathBuf>,
}

impl EngineConfig {
    /// The retry budget one partition applies (its share of the minimum rate).
    pub fn partition_retry_budget(&self) -> crate::workflow::budget::RetryBudgetConfig {
        let mut b = self.retry_budget;
        b.min_per_sec /= f64::from(self.partitions.max(1));
        b
    }
}

/// Bounds on the signals sent to wait steps (`orchestrator signal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalLimits {
    /// Longest payload (JSON text); it becomes a step output.
    pub payload_bytes_max: usize,
    /// Signals one workflow keeps that no wait step consumed yet; past it a
    /// signal no step waits for right now is refused.
    pub pending_max: u32,
    /// Longest signal id, in bytes.
    pub id_len_max: usize,
}

impl Default for SignalLimits {
    fn default() -> Self {
        SignalLimits {
            payload_bytes_max: 64 * 1024,
            pending_max: 64,
            id_len_max: 128,
        }
    }
}

/// When and how fast terminal workflows are purged. Each partition sweeps
/// its own terminal status-index entries in its own serialized context, so
/// a purge never races a live actor (see `partition.rs`, "Retention").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionConfig {
    /// A workflow terminal (completed, failed, cancelled) for this long is
    /// purged; `None` keeps every workflow forever.
    pub after_ms: Option<u64>,
    /// How often a sweep round starts (each partition walks its terminal index).
    pub sweep_every_ms: u64,
    /// Most workflows purged in one write batch (one batch per partition per tick).
    pub batch_max: usize,
    /// Most status-index entries one partition examines per tick during a round.
    pub scan_max: usize,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            after_ms: Some(30 * 86_400_000),
            sweep_every_ms: 60_000,
            batch_max: 1_000,
            scan_max: 10_000,
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            partitions: 8,
            resident_max: 10_000,
            in_progress_max: 1_100_000,
            state_cache_max: 20_000,
            passivate_idle_ms: 1_000,
            restart_budget: 3,
            unstartable_max: 1_024,
            snapshot_every_events: 64,
            tick_ms: 10,
            timer_batch_max: 4_096,
            accept_chunk: 256,
            request_timeout_ms: 30_000,
            signals: SignalLimits::default(),
            retention: RetentionConfig::default(),
            retry_budget: Default::default(),
            backup_root: None,
        }
    }
}

type TerminalHook = dyn Fn(&WorkflowState, &PipelineDef) + Send + Sync;

/// Fault injection for tests of supervision: make a workflow's actor panic.
#[derive(Debug, Default)]
pub struct Faults {
    panic_once: Mutex<HashSet<String>>,
    panic_always: Mutex<HashSet<String>>,
    panic_on_load_once: Mutex<HashSet<String>>,
    panic_on_start_always: Mutex<HashSet<String>>,
    panic_in_load_always: Mutex<HashSet<String>>,
}

impl Faults {
    /// The next input handled for `id` panics, once.
    pub fn panic_once(&self, id: &str) {
        self.panic_once.lock().insert(id.to_string());
    }

    /// Every input handled for `id` panics (a poison workflow).
    pub fn panic_always(&self, id: &str) {
        self.panic_always.lock().insert(id.to_string());
    }

    /// The next actor started for `id` panics while it loads, once (its
    /// spawn fails).
    pub fn panic_on_load_once(&self, id: &str) {
        self.panic_on_load_once.lock().insert(id.to_string());
    }

    /// Every actor started for `id` panics while it starts (no spawn of it
    /// succeeds again), while its state still loads from storage.
    pub fn panic_on_start_always(&self, id: &str) {
        self.panic_on_start_always.lock().insert(id.to_string());
    }

    /// Every load of `id`'s state from storage panics: its actor's start,
    /// and the partition's own reads of it (parking, describe).
    pub fn panic_in_load_always(&self, id: &str) {
        self.panic_in_load_always.lock().insert(id.to_string());
    }

    pub(crate) fn maybe_panic_on_load(&self, id: &str) {
        if self.panic_on_load_once.lock().remove(id)
            || self.panic_on_start_always.lock().contains(id)
        {
            panic!("injected fault: panic while loading workflow {id}");
        }
    }

    pub(crate) fn maybe_panic_in_load(&self, id: &str) {
        if self.panic_in_load_always.lock().contains(id) {
            panic!("injected fault: panic in the storage load of workflow {id}");
        }
    }

    pub(crate) fn maybe_panic(&self, id: &str) {
        if self.panic_once.lock().remove(id) {
            panic!("injected fault: panic once in workflow {id}");
        }
        if self.panic_always.lock().contains(id) {
            panic!("injected fault: poison workflow {id}");
        }
    }
}

/// Optional callbacks into the shell.
#[derive(Default, Clone)]
pub struct Hooks {
    /// Called after each terminal transition is durable (dev uses it to check outputs).
    pub on_terminal: Option<Arc<TerminalHook>>,
    pub faults: Option<Arc<Faults>>,
    /// Lifecycle events: every journal record also gets an outbox row and,
    /// once durable, goes to the publisher (`run` sets it; `dev` does not).
    pub outbox: Option<Arc<dyn outbox::LifecycleOutbox>>,
    /// Where finished spans go (the OTLP exporter); `None`: no spans are built.
    pub spans: Option<Arc<dyn crate::telemetry::span::SpanSink>>,
    /// Test-only planted bugs (`NARRALYTICA_PLANT`); all off in production.
    pub plants: crate::failpoints::Plants,
    /// Where child steps' effects go; the engine sets its own port at start.
    pub lineage: lineage::LineageSlot,
    /// Where child steps' effects for workflows of partitions this engine
    /// does not serve go (a cluster node: the node serving them); `None`:
    /// they are not performed.
    pub remote_lineage: Option<Arc<dyn lineage::LineagePort>>,
}

/// Everything an actor needs, shared read-only.
pub struct EngineCtx {
    pub store: WorkflowStore,
    pub committer: Arc<GroupCommitter>,
    pub clock: Arc<dyn Clock>,
    pub transport: Arc<dyn Transport>,
    pub pipelines: Arc<PipelineRegistry>,
    pub metrics: Arc<Metrics>,
    pub config: EngineConfig,
    pub hooks: Hooks,
    /// The admission gate of every task sent (caps, rates, keys, priorities).
    pub capacity: Arc<capacity::Capacity>,
}

/// Errors callers of the engine can see.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("engine is not running")]
    Stopped,
    #[error("request timed out")]
    Timeout,
    /// Transient: this node does not serve the workflow's partition (in a
    /// cluster another node owns it, or it is being handed over); nothing
    /// changed and the request may succeed later or on the owner.
    #[error("unavailable: partition {0} is not served by this node")]
    NotServed(u16),
    /// Final: no workflow has this id (never started, or purged).
    #[error("unknown workflow {0}")]
    UnknownWorkflow(String),
    /// Final: the request cannot be served as asked (its message says why).
    #[error("{0}")]
    Rejected(String),
    /// Transient storage failure; nothing changed and a retry may succeed.
    #[error("journal append failed: {0}")]
    Journal(String),
    #[error("cannot start engine: {0}")]
    Start(String),
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error::Rejected(message)
    }
}

impl From<workflow_actor::InputError> for Error {
    fn from(e: workflow_actor::InputError) -> Self {
        match e {
            workflow_actor::InputError::UnknownWorkflow(id) => Error::UnknownWorkflow(id),
            workflow_actor::InputError::Rejected(m) => Error::Rejected(m),
            workflow_actor::InputError::Journal(m) => Error::Journal(m),
        }
    }
}

/// Handle to a running engine.
pub struct Engine {
    ctx: Arc<EngineCtx>,
    router: Arc<Router>,
    root: ActorRef<root::RootMsg>,
    root_join: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Holds child-step effects while a partition recovers ([`serving`]).
    lineage: Arc<lineage::RouterLineage>,
    /// Serializes starting and stopping partitions ([`serving`]).
    changing: tokio::sync::Mutex<()>,
}

impl Engine {
    /// Starts the supervision tree serving every partition of the store;
    /// returns once every partition has recovered.
    pub async fn start(ctx: EngineCtx) -> Result<Engine, Error> {
        Self::start_serving(ctx, Serve::All).await
    }

    /// Starts the supervision tree serving the partitions `serve` names
    /// (a cluster node: those it holds); returns once each has recovered.
    /// [`Engine::start_partition`] and [`Engine::stop_partition`] change
    /// the set later.
    pub async fn start_serving(ctx: EngineCtx, serve: Serve) -> Result<Engine, Error> {
        let ctx = Arc::new(ctx);
        ctx.metrics.register_capacity(&ctx.capacity);
        ctx.metrics.in_progress_limit.store(
            i64::try_from(ctx.config.in_progress_max).unwrap_or(i64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
        let router = Arc::new(Router::new(ctx.store.clone(), ctx.clock.clone()));
        let port = Arc::new(lineage::RouterLineage::new(router.clone(), &ctx));
        if let Some(remote) = &ctx.hooks.remote_lineage {
            port.set_remote(remote.clone());
        }
        ctx.hooks.lineage.set(port.clone());
        let args = root::RootArgs {
            ctx: ctx.clone(),
            router: router.clone(),
            serve: serve.partitions(ctx.store.partitions())?,
        };
        let (root, root_join) = Actor::spawn(None, root::RootActor, args)
            .await
            .map_err(|e| Error::Start(e.to_string()))?;
        // Every partition has recovered: children whose start or report
        // recovery asked for again can be reached now.
        port.ready();
        let engine = Engine {
            ctx,
            router,
            root,
            root_join: Mutex::new(Some(root_join)),
            lineage: port,
            changing: tokio::sync::Mutex::new(()),
        };
        engine.count_served(false);
        Ok(engine)
    }

    pub fn ctx(&self) -> &Arc<EngineCtx> {
        &self.ctx
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.ctx.metrics
    }

    /// The last progress a worker reported for the attempt `task_id`.
    pub fn progress(&self, task_id: &str) -> Option<progress::Progress> {
        self.router.progress.get(task_id)
    }

    /// Where workers deliver their reports.
    pub fn sink(&self) -> Arc<dyn ReportSink> {
        self.router.clone()
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.ctx.config.request_timeout_ms)
    }

    /// Starts a workflow on the current version of `pipeline`, or returns
    /// the existing one with this id.
    pub async fn start_workflow(
        &self,
        pipeline: &str,
        id: &str,
        input: &str,
    ) -> Result<StartReply, Error> {
        self.start_workflow_at(pipeline, None, id, input).await
    }

    /// Starts a workflow on `version` of `pipeline` (the current version when
    /// `None`), or returns the existing one with this id, whatever its version.
    pub async fn start_workflow_at(
        &self,
        pipeline: &str,
        version: Option<u32>,
        id: &str,
        input: &str,
    ) -> Result<StartReply, Error> {
        validate_id(id)?;
        validate_input(input)?;
        self.router
            .call(
                id,
                |reply| PartitionMsg::Start {
                    id: id.to_string(),
                    pipeline: pipeline.to_string(),
                    version,
                    input: input.to_string(),
                    reply,
                },
                self.timeout(),
            )
            .await
    }

    /// Durably accepts many new workflows (ids already present are skipped);
    /// their first tasks wait for [`Engine::release_held`].
    pub async fn accept_many(
        &self,
        pipeline: &str,
        items: Vec<(String, String)>,
    ) -> Result<AcceptReport, Error> {
        let mut per: Vec<Vec<(String, String)>> =
            vec![Vec::new(); usize::from(self.ctx.store.partitions())];
        for (id, input) in items {
            validate_id(&id)?;
            validate_input(&input)?;
            per[usize::from(self.ctx.store.partition_of(&id))].push((id, input));
        }
        // All or nothing on this node: a partition it does not serve
        // refuses the whole request before any item is accepted.
        let mut parts = Vec::new();
        for (p, items) in (0u16..).zip(per) {
            if items.is_empty() {
                continue;
            }
            parts.push((self.router.actor(p).ok_or(Error::NotServed(p))?, items));
        }
        let mut calls = Vec::new();
        for (p, items) in parts {
            let pipeline = pipeline.to_string();
            calls.push(tokio::spawn(async move {
                p.call(
                    |reply| PartitionMsg::AcceptMany {
                        pipeline,
                        items,
                        reply,
                    },
                    None,
                )
                .await
            }));
        }
        let mut total = AcceptReport::default();
        for c in calls {
            let r = c.await.map_err(|_| Error::Stopped)?;
            let r = router::flatten(r)?;
            total.created += r.created;
            total.existing += r.existing;
        }
        Ok(total)
    }

    /// Dispatches the first tasks of workflows accepted by [`Engine::accept_many`].
    pub fn release_held(&self) {
        for (_, p) in self.router.served() {
            let _ = p.cast(PartitionMsg::RunHeld);
        }
    }

    /// Sends an input (cancel, pause, resume, reopen, ...) and waits for its outcome.
    pub async fn send(&self, id: &str, input: Input) -> Result<Outcome, Error> {
        self.router
            .call(
                id,
                |reply| PartitionMsg::Input {
                    id: id.to_string(),
                    input,
                    reply: Some(reply),
                },
                self.timeout(),
            )
            .await
    }

    /// Delivers a worker's result and waits until the transition it causes
    /// (if any) is durable: the NATS intake acknowledges the message then.
    pub async fn deliver_result(
        &self,
        id: &str,
        result: crate::workflow::TaskResult,
    ) -> Result<Outcome, Error> {
        self.router
            .call(
                id,
                |reply| PartitionMsg::Result {
                    id: id.to_string(),
                    result,
                    reply,
                },
                self.timeout(),
            )
            .await
    }

    /// The current state of a workflow, `None` if it does not exist.
    pub async fn describe(&self, id: &str) -> Result<Option<WorkflowState>, Error> {
        self.router
            .call(
                id,
                |reply| PartitionMsg::Describe {
                    id: id.to_string(),
                    reply,
                },
                self.timeout(),
            )
            .await
    }

    /// Writes a consistent checkpoint of the whole store to `to` (a new
    /// directory under `backup_root`, relative to it or absolute inside it)
    /// while the engine runs; see [`crate::backup::confine`].
    pub async fn checkpoint(
        &self,
        to: &std::path::Path,
    ) -> Result<crate::backup::BackupReport, crate::backup::BackupError> {
        let storage = self.ctx.store.storage().clone();
        let requested = to.to_string_lossy().into_owned();
        let root = self.ctx.config.backup_root.clone();
        tokio::task::spawn_blocking(move || {
            let to = crate::backup::confine(root.as_deref(), &requested)?;
            crate::backup::checkpoint(&*storage, &to)
        })
        .await
        .map_err(|e| crate::backup::BackupError::Failed(e.to_string()))?
    }

    /// Stops intake and every actor, children first, and waits for them.
    /// Durable state needs no flush: every acknowledged transition is
    /// already synced. In-flight commits finish before their actor stops.
    pub async fn shutdown(&self) {
        let wait = Some(self.timeout());
        let _changing = self.changing.lock().await;
        let parts = self.router.served();
        for (_, p) in &parts {
            let _ = p.stop_children_and_wait(None, wait).await;
        }
        for (_, p) in &parts {
            let _ = p.stop_and_wait(None, wait).await;
        }
        let _ = self.root.stop_and_wait(None, wait).await;
        let join = self.root_join.lock().take();
        if let Some(join) = join {
            let _ = join.await;
        }
        self.router.clear();
    }
}

/// Longest workflow id: storage keys carry it with a one-byte length.
pub const WORKFLOW_ID_MAX_BYTES: usize = crate::workflow::lineage::ID_MAX_BYTES;

fn validate_id(id: &str) -> Result<(), Error> {
    let max = WORKFLOW_ID_MAX_BYTES;
    if id.is_empty() || id.len() > max {
        return Err(Error::Rejected(format!(
            "workflow id must be 1..={max} bytes, got {}",
            id.len()
        )));
    }
    if id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Error::Rejected(format!(
            "workflow id {id:?} contains whitespace or control characters"
        )));
    }
    let sep = crate::workflow::lineage::CHILD_SEPARATOR;
    if id.contains(sep) {
        return Err(Error::Rejected(format!(
            "workflow id {id:?} contains {sep:?}, which is reserved for the ids of child workflows"
        )));
    }
    Ok(())
}

fn validate_input(input: &str) -> Result<(), Error> {
    serde_json::from_str::<serde::de::IgnoredAny>(input)
        .map(|_| ())
        .map_err(|e| Error::Rejected(format!("workflow input is not valid JSON: {e}")))
}
