//! Deterministic simulation testing (DST) of the engine.
//!
//! One run = one seed. Everything happens on the calling thread, in virtual
//! time, in an order drawn from the seed, so a run is reproducible bit for bit
//! (its [`Report::trace_hash`] is identical each time). The simulated world:
//!
//! * **The orchestrator** drives the production transition code
//!   ([`crate::engine::transition`]): `decide`/`decide_start` from the pure
//!   core, `prepare` (journal record, status index, timer rows, snapshot in
//!   one batch), `apply` + `after_commit` (evolve, liveness watches, timer
//!   wheel, dispatch and cancel through a [`crate::transport::Transport`]),
//!   `load` (snapshot + journal tail) and, after a crash, `recover` and
//!   `send_owed` (every in-memory structure rebuilt from storage), over a
//!   real [`crate::storage::store::WorkflowStore`] on
//!   [`crate::storage::memory::MemoryStorage`] and the partition's
//!   [`crate::engine::timers`] structures. The small shell it models instead
//!   of the actors: one mailbox per workflow (one input at a time, the next
//!   waits for the previous commit), a group commit (batches are written
//!   unsynced and made durable by a later flush; only then do their effects
//!   run), and the partition tick (woken at the next timer or deadline).
//! * **Workers** take tasks, report started, heartbeat long tasks, answer
//!   with the output of [`crate::sim::output_for`] or a retryable failure,
//!   sometimes answer twice, sometimes hang, and crash (losing their tasks).
//! * **A client** starts each workflow and re-sends its start until it gets
//!   an answer; an answered workflow is *accepted*.
//! * **Child pipelines:** `family` workflows run a workflow of `kid` as
//!   the child of a step (every other family's child always fails). The
//!   node's lineage port turns child starts, signals passed on to children
//!   and children's reports to their parents into effects, set before
//!   recovery runs (which performs the start of every running child
//!   again); the world delivers them like in-process messages: delayed,
//!   sometimes twice, never dropped, but discarded by an orchestrator
//!   crash. A child start is settled as the engine's `settle_start`
//!   settles it.
//! * **The network** drops, duplicates and delays (hence reorders) every
//!   message; the orchestrator crashes (losing unsynced writes and all
//!   memory) and restarts; the engine clock jumps forward.
//!
//! Faults stop at [`DstConfig::fault_window_ms`]; the run then drains until
//! nothing is pending, and [`check`] judges the outcome, children included:
//! each belongs to a parent that journaled its start, drains to a terminal
//! state, and ended as its parent's step took it.

mod check;
pub mod cluster;
mod node;
mod pipelines;
pub mod rng;
mod world;

pub use world::run_seed;

/// A deliberate bug in the simulated orchestrator, to prove the checker
/// catches what it should (negative control). Never set outside tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plant {
    /// Run a transition's effects (reply, result acknowledgement, dispatch)
    /// right after its batch is written, before the flush makes it durable.
    AckBeforeSync,
    /// Report a child's end to its parent as the opposite outcome: a
    /// success for a child that failed (or was cancelled), a failure for
    /// one that completed.
    WrongChildOutcome,
}

/// Shape and fault rates of one run. Every field has a default.
#[derive(Debug, Clone)]
pub struct DstConfig {
    /// Workflows of the `video` pipeline (`config/pipelines/video.toml`).
    pub video_workflows: usize,
    /// Workflows of the built-in `flaky` pipeline, whose middle step always
    /// fails and exhausts its retries.
    pub flaky_workflows: usize,
    /// Workflows of the built-in `segments` pipeline, whose middle step
    /// maps over a list of `SEGMENTS` segments (one task per segment).
    pub map_workflows: usize,
    /// Workflows of the built-in `family` pipeline, whose middle step runs
    /// a child workflow of the `kid` pipeline; every other one's child
    /// fails (and it with it).
    pub family_workflows: usize,
    pub workers: usize,
    /// Partitions of the store.
    pub partitions: u16,
    /// Snapshot every N events (small, so loads use snapshot + journal tail).
    pub snapshot_every_events: u64,
    /// Faults (drops, duplicates, crashes, hangs, clock jumps) happen only
    /// before this virtual time; then the run drains.
    pub fault_window_ms: u64,
    /// A run still busy at this virtual time is cut off (the checker then
    /// reports what is not terminal).
    pub horizon_ms: u64,
    /// Probability that a message is lost.
    pub drop_rate: f64,
    /// Probability that a message is delivered twice.
    pub duplicate_rate: f64,
    /// Each delivery takes a uniform delay in `0..=delay_max_ms` (reorders).
    pub delay_max_ms: u64,
    /// A flush (fsync) completes 1..=this many ms after a batch is queued.
    pub commit_delay_max_ms: u64,
    /// Share of attempts a worker fails retryably.
    pub fail_rate: f64,
    /// Share of attempts a worker answers twice.
    pub answer_twice_rate: f64,
    /// Share of attempts a worker takes and never finishes (a hung worker).
    pub hang_rate: f64,
    /// Share of attempts that run long (heartbeating) instead of short.
    pub long_task_rate: f64,
    /// Expected worker crashes per worker per minute (virtual).
    pub worker_crashes_per_min: f64,
    /// Orchestrator crashes at random times: up to this many per run.
    pub orchestrator_crashes_max: u64,
    /// Probability that a write is followed by an orchestrator crash before
    /// its flush (a crash aimed at the fsync window).
    pub crash_in_commit_window_rate: f64,
    /// Forward clock jumps per run: up to this many, each up to `clock_jump_max_ms`.
    pub clock_jumps_max: u64,
    pub clock_jump_max_ms: u64,
    /// Share of runs of inputs at whose start a workflow actor panics.
    pub actor_crash_rate: f64,
    /// Share of actor starts that fail (the load panics).
    pub spawn_fail_rate: f64,
    /// Terminal workflows are purged this long (engine time) after they
    /// ended. Longer than the clock jumps can add (2 × 700 s): a client
    /// whose start answer was lost retries until it hears back, and a start
    /// after the purge would create the workflow again (as it does in
    /// production), which the checker would take for a second run.
    pub retention_after_ms: u64,
    /// The partitions tick every `periodic_tick_ms` (so retention runs)
    /// until this long after the fault window; then only for timers,
    /// deadlines and the cores' own needs, so the run can drain.
    pub retention_window_ms: u64,
    pub periodic_tick_ms: u64,
    pub plant: Option<Plant>,
    /// A planted bug in the production partition core.
    pub core_plant: Option<crate::engine::partition_core::CorePlant>,
}

impl Default for DstConfig {
    fn default() -> Self {
        DstConfig {
            video_workflows: 4,
            flaky_workflows: 2,
            map_workflows: 2,
            family_workflows: 2,
            workers: 3,
            partitions: 2,
            snapshot_every_events: 8,
            fault_window_ms: 30_000,
            horizon_ms: 12 * 3_600_000,
            drop_rate: 0.03,
            duplicate_rate: 0.03,
            delay_max_ms: 40,
            commit_delay_max_ms: 4,
            fail_rate: 0.1,
            answer_twice_rate: 0.05,
            hang_rate: 0.02,
            long_task_rate: 0.03,
            worker_crashes_per_min: 0.5,
            orchestrator_crashes_max: 3,
            crash_in_commit_window_rate: 0.004,
            clock_jumps_max: 2,
            clock_jump_max_ms: 700_000,
            actor_crash_rate: 0.01,
            spawn_fail_rate: 0.005,
            retention_after_ms: 1_500_000,
            retention_window_ms: 1_700_000,
            periodic_tick_ms: 10_000,
            plant: None,
            core_plant: None,
        }
    }
}

/// Counters of one run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub events: u64,
    pub virtual_ms: u64,
    pub accepted: u64,
    pub completed: u64,
    pub failed: u64,
    pub dispatches: u64,
    pub executions: u64,
    pub extra_executions: u64,
    /// Answers the orchestrator acknowledged as ignored (duplicate, stale, terminal).
    pub flagged: u64,
    pub timeouts: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub worker_crashes: u64,
    pub orchestrator_crashes: u64,
    /// Of those, crashes that lost unsynced batches.
    pub crashes_losing_writes: u64,
    pub lost_ops: u64,
    pub clock_jumps: u64,
    pub commits: u64,
    pub flushes: u64,
    /// Terminal workflows purged by retention during the run.
    pub purged: u64,
    /// Child workflows (started by parents, not by the client) that
    /// completed, and that failed.
    pub children_completed: u64,
    pub children_failed: u64,
    /// Lineage effects (child starts, signals, reports) sent, and those
    /// an orchestrator crash discarded on their way.
    pub lineage_sent: u64,
    pub lineage_discarded: u64,
}

/// The outcome of one seed.
#[derive(Debug, Clone)]
pub struct Report {
    pub seed: u64,
    pub trace_hash: u64,
    pub stats: Stats,
    /// Empty when the checker found nothing wrong.
    pub violations: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.stats;
        write!(
            f,
            "dst seed={} trace={:016x} events={} virtual_s={} accepted={} completed={} failed={} dispatches={} executions={} extra_executions={} flagged={} timeouts={} dropped={} duplicated={} worker_crashes={} orchestrator_crashes={} crashes_losing_writes={} lost_ops={} clock_jumps={} commits={} flushes={} purged={} children_completed={} children_failed={} lineage_sent={} lineage_discarded={} violations={}",
            self.seed,
            self.trace_hash,
            s.events,
            s.virtual_ms / 1000,
            s.accepted,
            s.completed,
            s.failed,
            s.dispatches,
            s.executions,
            s.extra_executions,
            s.flagged,
            s.timeouts,
            s.dropped,
            s.duplicated,
            s.worker_crashes,
            s.orchestrator_crashes,
            s.crashes_losing_writes,
            s.lost_ops,
            s.clock_jumps,
            s.commits,
            s.flushes,
            s.purged,
            s.children_completed,
            s.children_failed,
            s.lineage_sent,
            s.lineage_discarded,
            self.violations.len()
        )
    }
}
