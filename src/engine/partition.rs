//! The partition supervisor: owns the id → actor map of one slice of the
//! workflow-id space, routes every message to the right workflow actor,
//! passivates idle actors, restarts crashed ones from storage (parking a
//! workflow that keeps crashing), and keeps the partition's timers and
//! liveness deadlines. Senders never hold a workflow actor's reference.

use std::collections::VecDeque;

use rustc_hash::{FxHashMap as FastMap, FxHashSet as FastSet};
use std::sync::Arc;

use parking_lot::Mutex;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use super::metrics::Metrics;
use super::transition::{after_commit, load, prepare, PartitionTimes, StatusEntry};
use super::workflow_actor::{
    Init, InputReply, Queued, Resident, Slot, StartReply, WorkflowActor, WorkflowArgs, WorkflowMsg,
};
use super::EngineCtx;
use crate::transport::WorkerReport;
use crate::workflow::{decide, decide_start, Input, Status, TaskSpec, TimerKind, WorkflowState};

/// Result of a bulk accept on one partition.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AcceptReport {
    pub created: u64,
    pub existing: u64,
}

pub enum PartitionMsg {
    Start {
        id: String,
        pipeline: String,
        input: String,
        reply: RpcReplyPort<Result<StartReply, String>>,
    },
    /// Durably accept many new workflows; their first tasks are held until `RunHeld`.
    AcceptMany {
        pipeline: String,
        items: Vec<(String, String)>,
        reply: RpcReplyPort<Result<AcceptReport, String>>,
    },
    RunHeld,
    Input {
        id: String,
        input: Input,
        reply: Option<RpcReplyPort<InputReply>>,
    },
    Report {
        id: String,
        report: WorkerReport,
    },
    /// A result whose sender waits until its transition is durable (NATS acks then).
    Result {
        id: String,
        result: crate::workflow::TaskResult,
        reply: RpcReplyPort<InputReply>,
    },
    Describe {
        id: String,
        reply: RpcReplyPort<Result<Option<WorkflowState>, String>>,
    },
    Tick,
}

pub struct PartitionArgs {
    pub index: u16,
    pub ctx: Arc<EngineCtx>,
}

/// A copy of a routed message, kept until the actor acknowledges it so it
/// can be delivered again to a restarted actor.
#[derive(Clone)]
enum Replay {
    Input(Arc<Input>, Option<(u64, TimerKind)>),
    /// Not re-delivered (start, describe): kept only to keep counts aligned.
    Skip,
}

struct Entry {
    actor: Option<ActorRef<WorkflowMsg>>,
    /// A stop was requested; messages wait in `queued` for the successor.
    stopping: bool,
    routed: u64,
    acked: u64,
    unacked: VecDeque<Replay>,
    queued: VecDeque<WorkflowMsg>,
    /// Progress of the current actor, shared with it.
    slot: Arc<Slot>,
}

impl Entry {
    /// Catches up with what the actor handled and drops those re-delivery copies.
    fn sync_acks(&mut self) {
        let handled = self.slot.handled.load(std::sync::atomic::Ordering::Acquire);
        let newly = handled.saturating_sub(self.acked);
        for _ in 0..newly {
            self.unacked.pop_front();
        }
        self.acked = self.acked.max(handled);
    }

    /// Nothing routed to the actor is unhandled and nothing waits for it.
    fn is_idle(&self) -> bool {
        self.actor.is_some()
            && !self.stopping
            && self.acked == self.routed
            && self.queued.is_empty()
    }
}

impl Entry {
    fn new() -> Self {
        Entry {
            actor: None,
            stopping: false,
            routed: 0,
            acked: 0,
            unacked: VecDeque::new(),
            queued: VecDeque::new(),
            slot: Arc::new(Slot::default()),
        }
    }
}

/// Bounded LRU of passivated workflow states, so a workflow that wakes up
/// soon after passivation does not go back to storage.
struct StateCache {
    max: usize,
    map: FastMap<String, (Box<WorkflowState>, u64)>,
    order: VecDeque<(String, u64)>,
    stamp: u64,
}

impl StateCache {
    fn new(max: usize) -> Self {
        StateCache {
            max,
            map: FastMap::default(),
            order: VecDeque::new(),
            stamp: 0,
        }
    }

    fn put(&mut self, id: String, state: Box<WorkflowState>) {
        if self.max == 0 {
            return;
        }
        self.stamp += 1;
        self.order.push_back((id.clone(), self.stamp));
        self.map.insert(id, (state, self.stamp));
        while self.map.len() > self.max {
            let Some((old, stamp)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&old).is_some_and(|(_, s)| *s == stamp) {
                self.map.remove(&old);
            }
        }
        // Stale order entries (re-inserted ids) are compacted once they dominate.
        if self.order.len() > 2 * self.max + 1024 {
            let map = &self.map;
            self.order
                .retain(|(id, s)| map.get(id).is_some_and(|(_, cur)| cur == s));
        }
    }

    fn take(&mut self, id: &str) -> Option<Box<WorkflowState>> {
        self.map.remove(id).map(|(s, _)| s)
    }

    fn remove(&mut self, id: &str) {
        self.map.remove(id);
    }
}

pub struct PartitionState {
    index: u16,
    ctx: Arc<EngineCtx>,
    times: Arc<Mutex<PartitionTimes>>,
    entries: FastMap<String, Entry>,
    by_actor: FastMap<ActorId, String>,
    cache: StateCache,
    resident: usize,
    resident_cap: usize,
    /// Ids with queued messages, waiting for a resident slot.
    deferred: VecDeque<String>,
    /// Idle actors in the order they went idle: (passivate after, id, messages
    /// handled when queued). Stale entries are skipped when popped.
    idle: VecDeque<(u64, String, u64)>,
    restarts: FastMap<String, u32>,
    /// Parked workflows whose actor could not start: why, oldest first
    /// (see [`EngineConfig::unstartable_max`](super::EngineConfig)).
    unstartable: Unstartable,
    /// Owed tasks of bulk-accepted or recovered workflows, per workflow, in
    /// order: released while fewer than the resident cap of them are in
    /// flight, so a backlog of any size runs under the cap. The flag marks
    /// re-sends after a restart. Boxed: they go to the transport as they are.
    #[allow(clippy::vec_box)]
    held: VecDeque<(String, Vec<Box<TaskSpec>>, bool)>,
    /// Released workflows that have not ended yet.
    released: FastSet<String>,
    /// `RunHeld` was received (bulk accept) or a recovery queued re-sends.
    release_enabled: bool,
    /// Progress of the current retention round.
    sweep: Sweep,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

/// Parked workflows whose actor could not start, with the error, bounded:
/// past `max` the oldest is forgotten.
#[derive(Debug)]
struct Unstartable {
    max: usize,
    why: FastMap<String, String>,
    order: VecDeque<String>,
}

impl Unstartable {
    fn new(max: usize) -> Self {
        Unstartable {
            max,
            why: FastMap::default(),
            order: VecDeque::new(),
        }
    }

    fn insert(&mut self, id: &str, error: String) {
        if self.why.insert(id.to_string(), error).is_none() {
            self.order.push_back(id.to_string());
        }
        while self.why.len() > self.max {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.why.remove(&old);
        }
    }

    fn get(&self, id: &str) -> Option<&str> {
        self.why.get(id).map(String::as_str)
    }

    /// Forgets `id` (its workflow was purged). Rare, so the linear scan of
    /// `order` is fine; leaving a stale copy there would evict the id early
    /// if it were remembered again.
    fn remove(&mut self, id: &str) {
        if self.why.remove(id).is_some() {
            self.order.retain(|o| o != id);
        }
    }
}

/// [`load`] on the partition's own task, where a panic in it must not take
/// the partition down: a panic becomes an error.
fn load_caught(ctx: &EngineCtx, partition: u16, id: &str) -> Result<Option<WorkflowState>, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| load(ctx, partition, id)))
        .unwrap_or_else(|_| Err(format!("workflow {id}: loading it panicked")))
}

/// The terminal statuses a retention round walks, in this order.
const TERMINAL: [Status; 3] = [Status::Completed, Status::Failed, Status::Cancelled];

/// Status-index entries read per storage scan during a retention round.
const SWEEP_PAGE: usize = 512;

/// Where this partition's retention round stands.
///
/// # Retention
///
/// A round walks the partition's completed, failed and cancelled index
/// entries, at most `retention.scan_max` entries and `retention.batch_max`
/// purges per tick, and deletes every workflow whose status is older than
/// `retention.after` (journal, snapshot, index entry, timers: one batch
/// through the group committer). It runs inside the partition actor, the
/// only place that routes messages to (and spawns) workflow actors, so
/// nothing can reach the workflow between the check and the commit: a
/// workflow with an entry here (resident actor, queued or unfinished
/// messages, a stop in progress) is skipped and looked at next round, and
/// one not resident has no transition in flight. A reopen (`retry`,
/// `rerun`) arriving after the purge finds no state: `unknown workflow`.
#[derive(Debug, Default)]
struct Sweep {
    /// No new round before this (engine clock, unix ms).
    next_round_ms: u64,
    active: bool,
    /// Position in [`TERMINAL`].
    status: usize,
    /// Last id examined under that status.
    after: Option<String>,
    /// Earliest status time of the entries kept this round.
    oldest_kept_ms: Option<u64>,
}

pub struct PartitionActor;

impl Actor for PartitionActor {
    type Msg = PartitionMsg;
    type State = PartitionState;
    type Arguments = PartitionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<PartitionMsg>,
        args: PartitionArgs,
    ) -> Result<PartitionState, ActorProcessingErr> {
        let ctx = args.ctx;
        let parts = usize::from(ctx.config.partitions.max(1));
        let mut st = PartitionState {
            index: args.index,
            times: Arc::new(Mutex::new(PartitionTimes::default())),
            entries: FastMap::default(),
            by_actor: FastMap::default(),
            cache: StateCache::new(ctx.config.state_cache_max.div_ceil(parts)),
            resident: 0,
            resident_cap: ctx.config.resident_max.div_ceil(parts).max(1),
            deferred: VecDeque::new(),
            idle: VecDeque::new(),
            restarts: FastMap::default(),
            unstartable: Unstartable::new(ctx.config.unstartable_max.div_ceil(parts).max(1)),
            held: VecDeque::new(),
            released: FastSet::default(),
            release_enabled: false,
            sweep: Sweep::default(),
            ticker: None,
            ctx,
        };
        st.ctx
            .metrics
            .register_partition(st.index, &st.times, st.ctx.clock.clone());
        st.recover()?;
        let tick = std::time::Duration::from_millis(st.ctx.config.tick_ms.max(1));
        let me = myself.clone();
        st.ticker = Some(tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                interval.tick().await;
                if me.cast(PartitionMsg::Tick).is_err() {
                    return;
                }
            }
        }));
        Ok(st)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<PartitionMsg>,
        st: &mut PartitionState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(t) = st.ticker.take() {
            t.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<PartitionMsg>,
        msg: PartitionMsg,
        st: &mut PartitionState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PartitionMsg::Start {
                id,
                pipeline,
                input,
                reply,
            } => match st.ctx.pipelines.current(&pipeline) {
                Some((pref, def)) => {
                    let msg = WorkflowMsg::Start {
                        pipeline: pref,
                        def,
                        input,
                        reply: Some(reply),
                    };
                    st.route(&myself, id, msg).await;
                }
                None => {
                    Metrics::inc(&st.ctx.metrics.rejected_inputs);
                    let _ = reply.send(Err(format!("unknown pipeline {pipeline:?}")));
                }
            },
            PartitionMsg::AcceptMany {
                pipeline,
                items,
                reply,
            } => {
                let r = st.accept_many(&pipeline, items).await;
                let _ = reply.send(r);
            }
            PartitionMsg::RunHeld => {
                st.release_enabled = true;
                st.release();
            }
            PartitionMsg::Input { id, input, reply } => {
                let msg = WorkflowMsg::Input(Queued {
                    input: Arc::new(input),
                    fired: None,
                    reply,
                });
                st.route(&myself, id, msg).await;
            }
            PartitionMsg::Report { id, report } => st.report(&myself, id, report).await,
            PartitionMsg::Result { id, result, reply } => {
                st.route_result(&myself, id, result, Some(reply)).await;
            }
            PartitionMsg::Describe { id, reply } => {
                st.route(&myself, id, WorkflowMsg::Describe(reply)).await;
            }
            PartitionMsg::Tick => st.tick(&myself).await,
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<PartitionMsg>,
        evt: SupervisionEvent,
        st: &mut PartitionState,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorTerminated(cell, boxed, _) => {
                let Some(id) = st.exited(&cell) else {
                    return Ok(());
                };
                if let Some(mut b) = boxed {
                    if let Ok(r) = b.take::<Resident>() {
                        if r.broken.is_none() {
                            if let Some(wf) = r.wf {
                                st.cache.put(id.clone(), Box::new(wf));
                            }
                        }
                    }
                }
                st.after_exit(&myself, id).await;
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                let Some(id) = st.exited(&cell) else {
                    return Ok(());
                };
                st.crashed(&myself, id, err.to_string()).await;
            }
            _ => {}
        }
        Ok(())
    }
}

impl PartitionState {
    /// Forgets a workflow actor that ended (cleanly or not); its workflow id.
    fn exited(&mut self, cell: &ractor::ActorCell) -> Option<String> {
        let id = self.by_actor.remove(&cell.get_id())?;
        self.resident -= 1;
        self.ctx
            .metrics
            .resident
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        Some(id)
    }

    /// Reloads non-terminal workflows: re-sends their owed tasks (same task
    /// ids), re-watches them, and re-arms the partition's durable timers.
    fn recover(&mut self) -> Result<(), ActorProcessingErr> {
        let ctx = self.ctx.clone();
        let recovered = super::transition::recover(&ctx, self.index, &self.times)?;
        for (wf, owed) in recovered.workflows {
            if !owed.is_empty() {
                self.held.push_back((wf.id.clone(), owed, true));
            }
            self.cache.put(wf.id.clone(), Box::new(wf));
        }
        // Owed tasks go out in order, under the resident cap like a backlog.
        self.release_enabled = true;
        self.release();
        Ok(())
    }

    async fn spawn(
        &mut self,
        myself: &ActorRef<PartitionMsg>,
        id: &str,
        init: Init,
    ) -> Result<(ActorRef<WorkflowMsg>, Arc<Slot>), String> {
        let slot = Arc::new(Slot::default());
        let args = WorkflowArgs {
            id: id.to_string(),
            partition: self.index,
            ctx: self.ctx.clone(),
            times: self.times.clone(),
            slot: slot.clone(),
            init,
        };
        match Actor::spawn_linked(None, WorkflowActor, args, myself.get_cell()).await {
            Ok((actor, _join)) => {
                self.by_actor.insert(actor.get_id(), id.to_string());
                self.resident += 1;
                self.ctx
                    .metrics
                    .resident
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Metrics::inc(&self.ctx.metrics.actors_spawned);
                Ok((actor, slot))
            }
            Err(e) => {
                tracing::error!(workflow_id = %id, error = %e, "cannot spawn workflow actor");
                Err(e.to_string())
            }
        }
    }

    fn init_for(&mut self, id: &str) -> Init {
        match self.cache.take(id) {
            Some(s) => Init::State(s),
            None => Init::Load,
        }
    }

    /// Sends `msg` to the workflow's actor, spawning it if needed, or queues
    /// it while the actor is stopping or no resident slot is free.
    async fn route(&mut self, myself: &ActorRef<PartitionMsg>, id: String, msg: WorkflowMsg) {
        if let Some(error) = self.unstartable.get(&id) {
            self.refuse(&id, msg, error);
            return;
        }
        if !self.entries.contains_key(&id) {
            self.entries.insert(id.clone(), Entry::new());
            if self.resident >= self.resident_cap {
                // Full: make room by passivating an idle actor now; this id
                // gets the slot when that actor has stopped.
                let now = self.ctx.clock.now_ms();
                self.passivate_idle(now, 1);
                self.deferred.push_back(id.clone());
            } else {
                let init = self.init_for(&id);
                match self.spawn(myself, &id, init).await {
                    Ok((actor, slot)) => {
                        if let Some(e) = self.entries.get_mut(&id) {
                            e.actor = Some(actor);
                            e.slot = slot;
                        }
                    }
                    Err(e) => {
                        // No actor (its load panicked): like a successor
                        // that fails to start, it counts as a crash and is
                        // started again with `msg` waiting for it, or the
                        // workflow is parked past the restart budget (its
                        // queued messages' reply ports then tell their
                        // senders). Dropping `msg` would lose an input
                        // without a reply port (a fired timer, an
                        // in-process result).
                        if let Some(entry) = self.entries.get_mut(&id) {
                            entry.queued.push_back(msg);
                        }
                        let error = format!("its actor could not be started: {e}");
                        if self.count_crash(&id, &error) {
                            self.restart(myself, &id, true).await;
                        } else {
                            self.give_up(&id, &error, true).await;
                        }
                        return;
                    }
                }
            }
        }
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        match (entry.actor.clone(), entry.stopping) {
            (Some(actor), false) => send(&actor, entry, msg),
            _ => entry.queued.push_back(msg),
        }
    }

    async fn report(&mut self, myself: &ActorRef<PartitionMsg>, id: String, report: WorkerReport) {
        let now = self.ctx.clock.now_ms();
        match report {
            WorkerReport::Started { task_id, .. } => {
                self.times.lock().liveness.started(&task_id, now);
            }
            WorkerReport::Heartbeat { task_id } => {
                self.times.lock().liveness.heartbeat(&task_id, now);
            }
            WorkerReport::Result(result) => self.route_result(myself, id, result, None).await,
            // Kept by the router; it changes no workflow state.
            WorkerReport::Progress { .. } => {}
        }
    }

    /// A worker's result: the attempt stops being watched (whatever the
    /// workflow makes of it, it is over) and the result goes to the workflow.
    async fn route_result(
        &mut self,
        myself: &ActorRef<PartitionMsg>,
        id: String,
        result: crate::workflow::TaskResult,
        reply: Option<RpcReplyPort<InputReply>>,
    ) {
        self.times.lock().liveness.unwatch(&result.task_id);
        let msg = WorkflowMsg::Input(Queued {
            input: Arc::new(Input::TaskResult(result)),
            fired: None,
            reply,
        });
        self.route(myself, id, msg).await;
    }

    /// Moves actors that reported finishing a message into the idle queue
    /// if they are indeed idle, with the time they may be passivated.
    fn collect_idle(&mut self, now_ms: u64) {
        let reported = std::mem::take(&mut self.times.lock().idle);
        let grace = self.ctx.config.passivate_idle_ms;
        for id in reported {
            let Some(entry) = self.entries.get_mut(&id) else {
                continue;
            };
            // Unlist first, then read progress: a message handled after this
            // point lists the actor again.
            entry
                .slot
                .listed
                .store(false, std::sync::atomic::Ordering::Release);
            entry.sync_acks();
            if entry.is_idle() {
                self.idle
                    .push_back((now_ms.saturating_add(grace), id, entry.acked));
            }
        }
    }

    /// Passivates actors idle since their deadline (all due ones), plus up to
    /// `force` more in least-recently-active order when a slot is needed.
    /// Their states come back in the termination events and go to the cache.
    fn passivate_idle(&mut self, now_ms: u64, mut force: usize) {
        self.collect_idle(now_ms);
        while let Some((due, _, _)) = self.idle.front() {
            if *due > now_ms && force == 0 {
                break;
            }
            let Some((_, id, mark)) = self.idle.pop_front() else {
                break;
            };
            let Some(entry) = self.entries.get_mut(&id) else {
                continue;
            };
            entry.sync_acks();
            // Still idle and nothing handled since it was queued: a workflow
            // waiting only on tasks or timers. Passivate it.
            if entry.is_idle() && entry.acked == mark {
                if let Some(actor) = &entry.actor {
                    crate::failpoints::point("passivate");
                    entry.stopping = true;
                    actor.stop(None);
                    Metrics::inc(&self.ctx.metrics.passivations);
                    force = force.saturating_sub(1);
                }
            }
        }
    }

    /// An actor stopped cleanly: start a successor if messages are waiting,
    /// otherwise forget the entry; then give free slots to deferred ids.
    async fn after_exit(&mut self, myself: &ActorRef<PartitionMsg>, id: String) {
        let waiting = self.entries.get(&id).is_some_and(|e| !e.queued.is_empty());
        if waiting {
            self.restart(myself, &id, false).await;
        } else {
            self.entries.remove(&id);
        }
        self.drain_deferred(myself).await;
    }

    async fn drain_deferred(&mut self, myself: &ActorRef<PartitionMsg>) {
        while self.resident < self.resident_cap {
            let Some(id) = self.deferred.pop_front() else {
                break;
            };
            if self.entries.get(&id).is_some_and(|e| e.actor.is_none()) {
                self.restart(myself, &id, false).await;
            }
        }
    }

    /// (Re)starts the actor of an existing entry and flushes what waits for it.
    /// After a crash, `from_storage` drops any cached state and re-delivers
    /// the messages the dead actor had not acknowledged.
    ///
    /// A successor that fails to start (its load panicked) counts as one more
    /// crash: what it was to take stays queued and it is started again from
    /// storage while the restart budget lasts, then the workflow is parked.
    /// Before, the entry was dropped with its messages, and an input without
    /// a reply port (a fired timer, an in-process result) was lost. A loop,
    /// not a call back into [`crashed`](Self::crashed): that one drains the
    /// deferred queue, which calls this again, and the nesting could grow
    /// with the number of deferred ids.
    async fn restart(&mut self, myself: &ActorRef<PartitionMsg>, id: &str, from_storage: bool) {
        let mut from_storage = from_storage;
        while let Err(error) = self.restart_once(myself, id, from_storage).await {
            if !self.count_crash(id, &error) {
                self.give_up(id, &error, true).await;
                return;
            }
            from_storage = true;
        }
    }

    /// One start of a successor; `Err` with the spawn's error if it did not
    /// start (its messages then wait in the entry's queue).
    async fn restart_once(
        &mut self,
        myself: &ActorRef<PartitionMsg>,
        id: &str,
        from_storage: bool,
    ) -> Result<(), String> {
        let init = if from_storage {
            self.cache.remove(id);
            Init::Load
        } else {
            self.init_for(id)
        };
        // Settle what the previous actor finished before its slot is replaced.
        if let Some(entry) = self.entries.get_mut(id) {
            entry.sync_acks();
        }
        let spawned = self.spawn(myself, id, init).await;
        let Some(entry) = self.entries.get_mut(id) else {
            return Ok(());
        };
        entry.stopping = false;
        let mut redo: VecDeque<WorkflowMsg> = VecDeque::new();
        if from_storage {
            // What the dead actor had not finished, the one that killed it included.
            for r in entry.unacked.drain(..) {
                redo.push_back(match r {
                    Replay::Input(input, fired) => WorkflowMsg::Input(Queued {
                        input,
                        fired,
                        reply: None,
                    }),
                    Replay::Skip => continue,
                });
            }
        }
        entry.routed = 0;
        entry.acked = 0;
        entry.unacked.clear();
        redo.extend(entry.queued.drain(..));
        match spawned {
            Ok((actor, slot)) => {
                entry.actor = Some(actor.clone());
                entry.slot = slot;
                for msg in redo {
                    send(&actor, entry, msg);
                }
                Ok(())
            }
            Err(e) => {
                entry.actor = None;
                entry.slot = Arc::new(Slot::default());
                entry.queued = redo;
                Err(format!("its actor could not be started again: {e}"))
            }
        }
    }

    async fn crashed(&mut self, myself: &ActorRef<PartitionMsg>, id: String, error: String) {
        if self.count_crash(&id, &error) {
            self.restart(myself, &id, true).await;
        } else {
            self.give_up(&id, &error, false).await;
        }
        // A restart that ended in parking freed the slot too.
        self.drain_deferred(myself).await;
    }

    /// Counts a crash of `id`'s actor; true while the restart budget lasts.
    fn count_crash(&mut self, id: &str, error: &str) -> bool {
        Metrics::inc(&self.ctx.metrics.actor_restarts);
        let n = self.restarts.entry(id.to_string()).or_insert(0);
        *n += 1;
        let count = *n;
        tracing::warn!(workflow_id = %id, restarts = count, error = %error, "workflow actor crashed");
        count <= self.ctx.config.restart_budget
    }

    /// Out of budget: park the workflow as failed with the panic message.
    /// Queued messages are dropped, so their senders hear at once.
    ///
    /// When its actor could not even start (`unstartable`: the last crash
    /// was a failed start), the id is remembered: later messages are
    /// answered without an actor ([`refuse`](Self::refuse)) for the rest of
    /// this run. Without that, each one (an operator's `describe` included)
    /// spent the whole restart budget again and was answered with a
    /// dropped reply port. A workflow parked after its running actor kept
    /// crashing (a poison input) can still start, so it is served as usual.
    async fn give_up(&mut self, id: &str, error: &str, unstartable: bool) {
        let count = self.restarts.remove(id).unwrap_or(0);
        self.cache.remove(id);
        let queued = self
            .entries
            .remove(id)
            .map(|entry| entry.queued)
            .unwrap_or_default();
        let reason = format!("parked after {count} crashes: {error}");
        let parked = self.park(id, reason.clone()).await;
        match &parked {
            Ok(true) => Metrics::inc(&self.ctx.metrics.workflows_parked),
            Ok(false) => {}
            Err(e) => tracing::error!(workflow_id = %id, error = %e, "parking failed"),
        }
        if !unstartable {
            // Dropped: their reply ports tell their senders at once.
            drop(queued);
            return;
        }
        let why = match parked {
            Ok(true) => reason,
            // Not parked: already terminal, or never created (a start whose
            // actor never started: nothing to remember then).
            Ok(false) => {
                if !self
                    .ctx
                    .store
                    .workflow_exists(self.index, id)
                    .unwrap_or(true)
                {
                    return;
                }
                format!("not served after {count} crashes: {error}")
            }
            // Its load panics here too (the usual reason an actor cannot
            // start): it stays as it is in storage, not terminal, and no
            // actor will run it in this run either.
            Err(e) => format!("not served after {count} crashes: {error}; parking it failed: {e}"),
        };
        self.unstartable.insert(id, why.clone());
        // The messages that waited for it (the `describe` that found it
        // broken, say) get the same answers as later ones.
        for msg in queued {
            self.refuse(id, msg, &why);
        }
    }

    /// Answers a message for a workflow whose actor cannot start (see
    /// [`give_up`](Self::give_up)) without one: `describe` and a `start` of
    /// the same id from storage (a load that panics is an error), other
    /// requests refused with why, the way a terminal workflow refuses
    /// them. An input without a reply port (a fired timer, a late result)
    /// is dropped: no actor can take it in this run, and the tasks it
    /// concerns are sent again when a restarted node recovers the
    /// workflow.
    fn refuse(&self, id: &str, msg: WorkflowMsg, error: &str) {
        let stored = || load_caught(&self.ctx, self.index, id);
        match msg {
            WorkflowMsg::Describe(reply) => {
                let _ = reply.send(stored());
            }
            WorkflowMsg::Input(Queued { reply, .. }) => match reply {
                Some(reply) => {
                    let _ = reply.send(Ok(crate::workflow::Outcome::Rejected(format!(
                        "workflow {id} is {error}; its actor cannot start in this run (restart the node once the cause is fixed)"
                    ))));
                }
                None => {
                    tracing::debug!(workflow_id = %id, "input for a workflow whose actor cannot start dropped");
                }
            },
            WorkflowMsg::Start { reply, .. } => {
                if let Some(reply) = reply {
                    let _ = reply.send(match stored() {
                        Ok(Some(wf)) => Ok(StartReply {
                            id: id.to_string(),
                            status: wf.status,
                            created: false,
                        }),
                        Ok(None) => Err(format!("workflow {id}: {error}")),
                        Err(e) => Err(e),
                    });
                }
            }
            WorkflowMsg::Drain => {}
        }
    }

    /// Writes the parking transition; false if there was none to write.
    async fn park(&mut self, id: &str, reason: String) -> Result<bool, String> {
        let ctx = self.ctx.clone();
        // A workflow is parked when its actor keeps dying, possibly while it
        // loads: a panic in this load must not take the partition down too.
        let Some(wf) = load_caught(&ctx, self.index, id)? else {
            return Ok(false);
        };
        let def = ctx.pipelines.get(&wf.pipeline)?;
        let decision = decide(&wf, &def, &Input::Park { reason }, ctx.clock.now_ms());
        let prepared = prepare(&ctx, self.index, id, Some(&wf), decision, None)?;
        if prepared.ops.is_empty() {
            return Ok(false);
        }
        ctx.committer
            .commit(prepared.ops)
            .await
            .map_err(|e| e.to_string())?;
        let _event = super::transition::EventHandOver::new(&ctx, prepared.event);
        let mut wf = wf;
        let prev_status = wf.status;
        super::transition::apply(&mut wf, &prepared.decision);
        after_commit(
            &ctx,
            &self.times,
            Some(prev_status),
            &wf,
            &def,
            prepared.decision,
        );
        Ok(true)
    }

    async fn accept_many(
        &mut self,
        pipeline: &str,
        items: Vec<(String, String)>,
    ) -> Result<AcceptReport, String> {
        let ctx = self.ctx.clone();
        let (pref, def) = ctx
            .pipelines
            .current(pipeline)
            .ok_or_else(|| format!("unknown pipeline {pipeline:?}"))?;
        let mut report = AcceptReport::default();
        let chunk = ctx.config.accept_chunk.max(1);
        for part in items.chunks(chunk) {
            let mut ops = Vec::new();
            let mut done = Vec::new();
            for (id, input) in part {
                let exists = self.entries.contains_key(id)
                    || self.unstartable.get(id).is_some()
                    || ctx.store.workflow_exists(self.index, id).unwrap_or(true);
                if exists {
                    report.existing += 1;
                    continue;
                }
                let now = ctx.clock.now_ms();
                let decision = decide_start(id, pref.clone(), &def, input, now);
                let prepared = prepare(&ctx, self.index, id, None, decision, None)?;
                ops.extend(prepared.ops);
                if let Some(next) = prepared.next {
                    done.push((next, prepared.decision, prepared.event));
                }
            }
            if ops.is_empty() {
                continue;
            }
            ctx.committer
                .commit(ops)
                .await
                .map_err(|e| format!("journal append failed: {e}"))?;
            for (next, mut decision, event) in done {
                let _event = super::transition::EventHandOver::new(&ctx, event);
                // Hold the first tasks until every workflow is accepted.
                let mut held = Vec::new();
                let mut rest = Vec::new();
                for c in std::mem::take(&mut decision.commands) {
                    match c {
                        crate::workflow::Command::Dispatch(spec) => held.push(spec),
                        other => rest.push(other),
                    }
                }
                decision.commands = rest;
                after_commit(&ctx, &self.times, None, &next, &def, decision);
                if !held.is_empty() {
                    self.held.push_back((next.id.clone(), held, false));
                }
                // Its first result will wake it soon: keep the state warm.
                self.cache.put(next.id.clone(), Box::new(next));
                report.created += 1;
            }
        }
        Ok(report)
    }

    /// Sends held tasks while fewer than the resident cap of released
    /// workflows are still running. Tasks are watched from the moment they
    /// are really sent, so waiting in this queue never times them out.
    fn release(&mut self) {
        let finished = std::mem::take(&mut self.times.lock().finished);
        for id in finished {
            self.released.remove(&id);
        }
        if !self.release_enabled {
            return;
        }
        while self.released.len() < self.resident_cap {
            let Some((id, specs, resend)) = self.held.pop_front() else {
                break;
            };
            super::transition::send_owed(&self.ctx, &self.times, specs, resend);
            self.released.insert(id);
        }
    }

    async fn tick(&mut self, myself: &ActorRef<PartitionMsg>) {
        self.release();
        let now = self.ctx.clock.now_ms();
        // Ids waiting for a resident slot take them from idle actors first.
        let wanted = self.deferred.len();
        self.passivate_idle(now, wanted);
        let (timers, expired) = {
            let mut t = self.times.lock();
            let timers = t.timers.pop_due(now, self.ctx.config.timer_batch_max);
            let expired = t.liveness.expired(now, self.ctx.config.timer_batch_max);
            (timers, expired)
        };
        for (due, id, timer) in timers {
            let msg = WorkflowMsg::Input(Queued {
                input: Arc::new(Input::TimerFired(timer.clone())),
                fired: Some((due, timer)),
                reply: None,
            });
            self.route(myself, id, msg).await;
        }
        for (id, task_id, timeout) in expired {
            let input = Input::TaskTimedOut { task_id, timeout };
            let msg = WorkflowMsg::Input(Queued {
                input: Arc::new(input),
                fired: None,
                reply: None,
            });
            self.route(myself, id, msg).await;
        }
        self.retention_step(now).await;
    }

    /// One tick's share of a retention round (see [`Sweep`]): picks due
    /// terminal workflows that have no entry here and purges them in one
    /// batch.
    async fn retention_step(&mut self, now: u64) {
        let cfg = self.ctx.config.retention.clone();
        let Some(after) = cfg.after_ms else {
            return;
        };
        if !self.sweep.active {
            if now < self.sweep.next_round_ms {
                return;
            }
            self.sweep = Sweep {
                active: true,
                ..Sweep::default()
            };
        }
        let cutoff = now.saturating_sub(after);
        let batch_max = cfg.batch_max.max(1);
        let scan_max = cfg.scan_max.max(1);
        let mut doomed: Vec<(String, u8)> = Vec::new();
        let mut examined = 0usize;
        let store = self.ctx.store.clone();
        'walk: while self.sweep.status < TERMINAL.len() {
            let code = TERMINAL[self.sweep.status].code();
            loop {
                if doomed.len() >= batch_max || examined >= scan_max {
                    break 'walk;
                }
                let n = SWEEP_PAGE.min(scan_max - examined);
                let page: Result<Vec<(String, StatusEntry)>, _> = match &self.sweep.after {
                    None => store.list_status(self.index, code, n),
                    Some(a) => store.list_status_after(self.index, code, a, n),
                };
                let page = match page {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::error!(partition = self.index, error = %e,
                            "retention: cannot read the status index; round abandoned");
                        self.end_round(now, cfg.sweep_every_ms, after);
                        return;
                    }
                };
                let full = page.len() == n;
                for (id, entry) in page {
                    examined += 1;
                    self.sweep.after = Some(id.clone());
                    if entry.updated_at_ms <= cutoff && !self.entries.contains_key(&id) {
                        doomed.push((id, code));
                        if doomed.len() >= batch_max {
                            break 'walk;
                        }
                    } else {
                        let t = entry.updated_at_ms;
                        self.sweep.oldest_kept_ms =
                            Some(self.sweep.oldest_kept_ms.map_or(t, |o| o.min(t)));
                    }
                }
                if !full {
                    break;
                }
            }
            self.sweep.status += 1;
            self.sweep.after = None;
        }
        if self.sweep.status >= TERMINAL.len() {
            self.end_round(now, cfg.sweep_every_ms, after);
        }
        if !doomed.is_empty() {
            self.purge(doomed).await;
        }
    }

    /// The next round starts after `sweep_every`, or later when nothing
    /// kept can be due before then.
    fn end_round(&mut self, now: u64, sweep_every_ms: u64, after_ms: u64) {
        let earliest = self
            .sweep
            .oldest_kept_ms
            .map_or(0, |t| t.saturating_add(after_ms));
        self.sweep.active = false;
        self.sweep.next_round_ms = now.saturating_add(sweep_every_ms.max(1)).max(earliest);
    }

    /// Deletes every stored row of the `doomed` workflows in one batch and
    /// forgets them here (cache, timers). Runs in the partition's serialized
    /// context: none of them has an entry (checked by the caller, and no
    /// message can be routed before this returns).
    async fn purge(&mut self, doomed: Vec<(String, u8)>) {
        let ctx = self.ctx.clone();
        let store = &ctx.store;
        // Owed tasks still held for release belong to live workflows only,
        // but a held id is never purged under them.
        let held: FastSet<&str> = self.held.iter().map(|(id, _, _)| id.as_str()).collect();
        let doomed: Vec<(String, u8)> = doomed
            .into_iter()
            .filter(|(id, _)| !held.contains(id.as_str()))
            .collect();
        drop(held);
        let ids: FastSet<String> = doomed.iter().map(|(id, _)| id.clone()).collect();
        let mut ops = Vec::new();
        let built: Result<(), crate::storage::Error> = (|| {
            for (id, code) in &doomed {
                ops.extend(store.workflow_delete_ops(self.index, id)?);
                ops.push(store.status_delete(self.index, *code, id)?);
            }
            ops.extend(store.timer_deletes_where(self.index, &mut |id| ids.contains(id))?);
            Ok(())
        })();
        if let Err(e) = built {
            tracing::error!(partition = self.index, error = %e, "retention: cannot prepare a purge");
            return;
        }
        if ops.is_empty() {
            return;
        }
        if let Err(e) = ctx.committer.commit(ops).await {
            Metrics::inc(&ctx.metrics.commit_errors);
            tracing::warn!(partition = self.index, error = %e,
                "retention: purge batch failed; retried next round");
            return;
        }
        for id in &ids {
            self.cache.remove(id);
            self.restarts.remove(id);
            self.released.remove(id);
            self.unstartable.remove(id);
        }
        self.times.lock().timers.disarm_where(|id| ids.contains(id));
        ctx.metrics
            .workflows_purged
            .fetch_add(ids.len() as u64, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            partition = self.index,
            purged = ids.len(),
            "retention: terminal workflows purged"
        );
    }
}

/// Hands `msg` to a live actor and records a copy for re-delivery after a
/// crash: it goes to the actor's inbox, with one `Drain` cast when the inbox
/// was empty (see [`Slot::inbox`]), so the actor sees messages in routing
/// order and can take queued inputs together.
fn send(actor: &ActorRef<WorkflowMsg>, entry: &mut Entry, msg: WorkflowMsg) {
    let replay = match &msg {
        WorkflowMsg::Input(q) => Replay::Input(q.input.clone(), q.fired.clone()),
        // A start or describe whose actor crashed is answered by the dropped
        // reply port (the caller sees an error); it is not re-delivered.
        WorkflowMsg::Describe(_) | WorkflowMsg::Start { .. } => Replay::Skip,
        // Not routed: only cast below.
        WorkflowMsg::Drain => return,
    };
    let wake = {
        let mut inbox = entry.slot.inbox.lock();
        inbox.push_back(msg);
        inbox.len() == 1
    };
    // A dead actor drains nothing: the message is dropped as a failed cast
    // would drop it (its reply port tells the sender).
    if wake && actor.cast(WorkflowMsg::Drain).is_err() {
        entry.slot.inbox.lock().pop_back();
        return;
    }
    entry.routed += 1;
    entry.unacked.push_back(replay);
}
