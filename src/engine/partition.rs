//! The partition supervisor, a thin ractor shell around the
//! [`PartitionCore`]: it feeds the core what happened (a message to route,
//! an actor that stopped or crashed, a tick) and performs the actions the
//! core returns (spawn, deliver, stop, park, refuse, send held tasks), plus
//! what needs storage (bulk accept, parking, recovery, the retention
//! purge). Senders never hold a workflow actor's reference.

use std::sync::Arc;

use parking_lot::Mutex;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use super::metrics::Metrics;
use super::partition_core::{
    Action, ActorProgress, CoreConfig, Init, Parked, PartitionCore, Routable,
};
use super::partition_shared::PartitionShared;
use super::recovery::{release_slots, send_admitted, send_owed};
use super::workflow_actor::{
    InputError, InputReply, Queued, Resident, Slot, StartReply, WorkflowActor, WorkflowArgs,
    WorkflowMsg,
};
use super::EngineCtx;
use crate::transport::WorkerReport;
use crate::workflow::{Input, TaskSpec, TimeoutKind, TimerKind, WorkflowState};
use rustc_hash::FxHashMap as FastMap;

mod accept;
mod gauges;
mod parking;
mod purge;
mod stopping;

pub use purge::purge_ops;

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
        /// A registered version; `None`: the current one.
        version: Option<u32>,
        input: String,
        reply: RpcReplyPort<Result<StartReply, InputError>>,
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
    /// Take no more input (see `stopping.rs`); answered once the message
    /// in hand (a commit of the partition's own) is done.
    StopIntake(RpcReplyPort<()>),
}

pub struct PartitionArgs {
    pub index: u16,
    pub ctx: Arc<EngineCtx>,
}

/// The copy of an input kept until its actor handled it.
pub type InputCopy = (Arc<Input>, Option<(u64, TimerKind)>);

impl Routable for WorkflowMsg {
    type Replay = InputCopy;

    fn replay(&self) -> Option<InputCopy> {
        match self {
            WorkflowMsg::Input(q) => Some((q.input.clone(), q.fired.clone())),
            // A start or describe whose actor crashed is answered by the
            // dropped reply port (the caller sees an error).
            WorkflowMsg::Describe(_) | WorkflowMsg::Start { .. } | WorkflowMsg::Drain => None,
        }
    }

    fn redeliver((input, fired): InputCopy) -> Self {
        WorkflowMsg::Input(Queued {
            input,
            fired,
            reply: None,
        })
    }
}

/// The core of a production partition.
pub type Core = PartitionCore<WorkflowMsg, WorkflowState, Box<TaskSpec>>;

/// A running workflow actor and the progress it shares.
struct Running {
    actor: ActorRef<WorkflowMsg>,
    slot: Arc<Slot>,
}

pub struct PartitionState {
    index: u16,
    ctx: Arc<EngineCtx>,
    shared: Arc<Mutex<PartitionShared>>,
    core: Core,
    actors: FastMap<String, Running>,
    by_actor: FastMap<ActorId, String>,
    ticker: Option<tokio::task::JoinHandle<()>>,
    /// Set by [`PartitionMsg::StopIntake`]: the partition is being let go.
    intake_stopped: bool,
    /// The backlog counts `(held, in progress)` last added to the gauges.
    reported: (usize, usize),
    /// The in-progress counts per pipeline last added to its gauge.
    reported_by: FastMap<String, usize>,
}

/// The core's view of the actors: their shared slots and the lists the
/// workflow actors append to.
struct Progress<'a> {
    shared: &'a Mutex<PartitionShared>,
    actors: &'a FastMap<String, Running>,
}

impl ActorProgress for Progress<'_> {
    fn handled(&self, id: &str) -> u64 {
        self.actors.get(id).map_or(0, |r| {
            r.slot.handled.load(std::sync::atomic::Ordering::Acquire)
        })
    }

    fn take_idle(&mut self) -> Vec<(String, u64)> {
        let reported = std::mem::take(&mut self.shared.lock().reports.idle);
        reported
            .into_iter()
            .filter_map(|id| {
                let r = self.actors.get(&id)?;
                // Unlist first, then read progress: a message handled after
                // this point lists the actor again.
                r.slot
                    .listed
                    .store(false, std::sync::atomic::Ordering::Release);
                let handled = r.slot.handled.load(std::sync::atomic::Ordering::Acquire);
                Some((id, handled))
            })
            .collect()
    }

    fn take_finished(&mut self) -> Vec<String> {
        std::mem::take(&mut self.shared.lock().reports.finished)
    }
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
        let mut st = PartitionState {
            index: args.index,
            shared: Arc::new(Mutex::new(PartitionShared::default())),
            core: PartitionCore::new(CoreConfig::for_partition(&ctx.config)),
            actors: FastMap::default(),
            by_actor: FastMap::default(),
            ticker: None,
            intake_stopped: false,
            reported: (0, 0),
            reported_by: FastMap::default(),
            ctx,
        };
        st.ctx
            .metrics
            .register_partition(st.index, &st.shared, st.ctx.clock.clone());
        st.recover()?;
        st.perform(&myself).await;
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
        // A restarted partition reports its backlog afresh.
        st.report_backlog((0, 0));
        st.unreport_by_pipeline();
        if st.ctx.capacity.is_active() {
            let held = st.shared.lock().schedule.liveness.take_all_capped();
            let now = st.ctx.clock.now_ms();
            let ready = st.ctx.capacity.forget_partition(&st.shared, &held, now);
            send_admitted(&st.ctx, ready);
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<PartitionMsg>,
        msg: PartitionMsg,
        st: &mut PartitionState,
    ) -> Result<(), ActorProcessingErr> {
        if !st.takes_input() {
            // Dropped with its reply port: see `stopping.rs`.
            return Ok(());
        }
        match msg {
            PartitionMsg::Start {
                id,
                pipeline,
                version,
                input,
                reply,
            } => match st.ctx.pipelines.startable(&pipeline, version) {
                Ok((pref, def)) => {
                    let msg = WorkflowMsg::Start {
                        pipeline: pref,
                        def,
                        input,
                        reply: Some(reply),
                    };
                    st.route(id, msg);
                }
                Err(not_startable) => {
                    Metrics::inc(&st.ctx.metrics.rejected_inputs);
                    let _ = reply.send(Err(InputError::Rejected(not_startable.to_string())));
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
                let mut progress = Progress {
                    shared: &st.shared,
                    actors: &st.actors,
                };
                st.core.enable_release(&mut progress);
            }
            PartitionMsg::Input { id, input, reply } => {
                let msg = WorkflowMsg::Input(Queued {
                    input: Arc::new(input),
                    fired: None,
                    reply,
                });
                st.route(id, msg);
            }
            PartitionMsg::Report { id, report } => st.report(id, report),
            PartitionMsg::Result { id, result, reply } => {
                st.route_result(id, result, Some(reply));
            }
            PartitionMsg::Describe { id, reply } => {
                st.route(id, WorkflowMsg::Describe(reply));
            }
            PartitionMsg::Tick => st.tick(&myself).await,
            PartitionMsg::StopIntake(reply) => {
                st.stop_intake();
                let _ = reply.send(());
                return Ok(());
            }
        }
        st.perform(&myself).await;
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
                let Some((id, _)) = st.exited(&cell) else {
                    return Ok(());
                };
                if !st.takes_input() {
                    // Stopping: nothing is respawned or redelivered.
                    return Ok(());
                }
                let state = boxed
                    .and_then(|mut b| b.take::<Resident>().ok())
                    .and_then(Resident::into_state)
                    .map(Box::new);
                st.core.stopped(&id, state);
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                let Some((id, handled)) = st.exited(&cell) else {
                    return Ok(());
                };
                if !st.takes_input() {
                    return Ok(());
                }
                st.core.crashed(&id, err.to_string(), handled);
            }
            _ => return Ok(()),
        }
        st.perform(&myself).await;
        Ok(())
    }
}

impl PartitionState {
    /// Forgets a workflow actor that ended (cleanly or not): its workflow id
    /// and how many messages it had handled.
    fn exited(&mut self, cell: &ractor::ActorCell) -> Option<(String, u64)> {
        let id = self.by_actor.remove(&cell.get_id())?;
        self.ctx
            .metrics
            .resident
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        let handled = match self.actors.get(&id) {
            Some(r) if r.actor.get_id() == cell.get_id() => {
                let handled = r.slot.handled.load(std::sync::atomic::Ordering::Acquire);
                self.actors.remove(&id);
                handled
            }
            _ => 0,
        };
        Some((id, handled))
    }

    fn route(&mut self, id: String, msg: WorkflowMsg) {
        let now = self.ctx.clock.now_ms();
        let mut progress = Progress {
            shared: &self.shared,
            actors: &self.actors,
        };
        self.core.route(id, msg, now, &mut progress);
    }

    /// Performs what the core decided, in order, feeding back what happened.
    async fn perform(&mut self, myself: &ActorRef<PartitionMsg>) {
        self.perform_actions(myself).await;
        let counts = self.core.backlog_counts();
        if counts != self.reported {
            self.report_backlog(counts);
        }
        if self.core.in_progress_by_pipeline() != &self.reported_by {
            self.report_by_pipeline();
        }
    }

    async fn perform_actions(&mut self, myself: &ActorRef<PartitionMsg>) {
        while let Some(action) = self.core.poll() {
            match action {
                Action::Spawn { id, init, deliver } => {
                    self.spawn(myself, id, init, deliver).await;
                }
                Action::Deliver { id, msg } => {
                    let sent = self
                        .actors
                        .get(&id)
                        .is_some_and(|r| hand_over(&r.actor, &r.slot, msg));
                    if !sent {
                        self.core.undelivered(&id);
                    }
                }
                Action::Stop { id } => {
                    if let Some(r) = self.actors.get(&id) {
                        crate::failpoints::point("passivate");
                        r.actor.stop(None);
                        Metrics::inc(&self.ctx.metrics.passivations);
                    }
                }
                Action::Crashed {
                    id,
                    restarts,
                    error,
                } => {
                    Metrics::inc(&self.ctx.metrics.actor_restarts);
                    tracing::warn!(workflow_id = %id, restarts, error = %error, "workflow actor crashed");
                }
                Action::Park {
                    id,
                    reason,
                    unstartable,
                } => {
                    let outcome = match self.park(&id, reason).await {
                        Ok(true) => {
                            Metrics::inc(&self.ctx.metrics.workflows_parked);
                            Parked::Written
                        }
                        Ok(false) => Parked::Nothing {
                            exists: !unstartable
                                || self
                                    .ctx
                                    .store
                                    .workflow_exists(self.index, &id)
                                    .unwrap_or(true),
                        },
                        Err(e) => {
                            tracing::error!(workflow_id = %id, error = %e, "parking failed");
                            Parked::Failed(e)
                        }
                    };
                    self.core.parked(&id, outcome);
                }
                Action::Refuse { id, msg, why } => self.refuse(&id, msg, &why),
                Action::Drop(msgs) => drop(msgs),
                Action::Send(release) => {
                    send_owed(&self.ctx, &self.shared, release.tasks, release.resend);
                }
            }
        }
    }

    /// Reloads non-terminal workflows: re-sends their owed tasks (same task
    /// ids), re-watches them, and re-arms the partition's durable timers.
    fn recover(&mut self) -> Result<(), ActorProcessingErr> {
        let ctx = self.ctx.clone();
        let recovered = super::recovery::recover(&ctx, self.index, &self.shared)?;
        let mut capped: FastMap<String, ()> = FastMap::default();
        for (wf, owed) in recovered.workflows {
            let name = &wf.pipeline.name;
            if !capped.contains_key(name) {
                let cap = super::capacity::pipeline_in_progress_cap(&ctx, name);
                self.core.set_pipeline_cap(name, cap);
                capped.insert(name.clone(), ());
            }
            self.core.hold(wf.id.clone(), name, owed, true);
            self.core.cache_put(wf.id.clone(), Box::new(wf));
        }
        // Owed tasks go out in order, under the in-progress cap like a backlog.
        let mut progress = Progress {
            shared: &self.shared,
            actors: &self.actors,
        };
        self.core.enable_release(&mut progress);
        Ok(())
    }

    async fn spawn(
        &mut self,
        myself: &ActorRef<PartitionMsg>,
        id: String,
        init: Init<WorkflowState>,
        deliver: Vec<WorkflowMsg>,
    ) {
        let slot = Arc::new(Slot::default());
        let args = WorkflowArgs {
            id: id.clone(),
            partition: self.index,
            ctx: self.ctx.clone(),
            shared: self.shared.clone(),
            slot: slot.clone(),
            init,
        };
        match Actor::spawn_linked(None, WorkflowActor, args, myself.get_cell()).await {
            Ok((actor, _join)) => {
                self.by_actor.insert(actor.get_id(), id.clone());
                self.ctx
                    .metrics
                    .resident
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Metrics::inc(&self.ctx.metrics.actors_spawned);
                let mut lost = 0;
                for msg in deliver {
                    if !hand_over(&actor, &slot, msg) {
                        lost += 1;
                    }
                }
                self.actors.insert(id.clone(), Running { actor, slot });
                for _ in 0..lost {
                    self.core.undelivered(&id);
                }
                self.core.spawned(&id);
            }
            Err(e) => {
                tracing::error!(workflow_id = %id, error = %e, "cannot spawn workflow actor");
                self.core.spawn_failed(&id, e.to_string(), deliver);
            }
        }
    }

    fn report(&mut self, id: String, report: WorkerReport) {
        let now = self.ctx.clock.now_ms();
        match report {
            WorkerReport::Started { task_id, .. } => {
                self.shared.lock().schedule.liveness.started(&task_id, now);
            }
            WorkerReport::Heartbeat { task_id } => {
                self.shared
                    .lock()
                    .schedule
                    .liveness
                    .heartbeat(&task_id, now);
            }
            WorkerReport::Result(result) => self.route_result(id, result, None),
            // Kept by the router; it changes no workflow state.
            WorkerReport::Progress { .. } => {}
        }
    }

    /// A worker's result: the attempt stops being watched (whatever the
    /// workflow makes of it, it is over) and the result goes to the workflow.
    fn route_result(
        &mut self,
        id: String,
        result: crate::workflow::TaskResult,
        reply: Option<RpcReplyPort<InputReply>>,
    ) {
        let freed = {
            let mut t = self.shared.lock();
            t.schedule.liveness.unwatch(&result.task_id);
            t.schedule.liveness.take_freed()
        };
        release_slots(&self.ctx, &freed);
        let msg = WorkflowMsg::Input(Queued {
            input: Arc::new(Input::TaskResult(result)),
            fired: None,
            reply,
        });
        self.route(id, msg);
    }

    async fn tick(&mut self, myself: &ActorRef<PartitionMsg>) {
        let now = self.ctx.clock.now_ms();
        {
            let mut progress = Progress {
                shared: &self.shared,
                actors: &self.actors,
            };
            self.core.tick(now, &mut progress);
        }
        let (timers, expired, freed) = {
            let mut t = self.shared.lock();
            let timers = t
                .schedule
                .timers
                .pop_due(now, self.ctx.config.timer_batch_max);
            let expired = t
                .schedule
                .liveness
                .expired(now, self.ctx.config.timer_batch_max);
            (timers, expired, t.schedule.liveness.take_freed())
        };
        release_slots(&self.ctx, &freed);
        let mut queue_expired = Vec::new();
        if self.ctx.capacity.is_active() {
            // Rate limits admit more as their tokens refill.
            send_admitted(&self.ctx, self.ctx.capacity.tick(now));
            queue_expired =
                self.ctx
                    .capacity
                    .expire(&self.shared, now, self.ctx.config.timer_batch_max);
        }
        for (due, id, timer) in timers {
            let msg = WorkflowMsg::Input(Queued {
                input: Arc::new(Input::TimerFired(timer.clone())),
                fired: Some((due, timer)),
                reply: None,
            });
            self.route(id, msg);
        }
        // Never sent: nothing to unwatch, no slot to free.
        let expired = expired
            .into_iter()
            .chain(queue_expired.into_iter().map(|e| {
                let spec = e.item.spec;
                tracing::debug!(
                    workflow_id = %spec.workflow_id,
                    step = %spec.step,
                    attempt = spec.attempt,
                    waited_ms = e.waited_ms,
                    "task waited past its queue timeout"
                );
                (spec.workflow_id, spec.task_id, TimeoutKind::QueueTimeout)
            }));
        for (id, task_id, timeout) in expired {
            let input = Input::TaskTimedOut { task_id, timeout };
            let msg = WorkflowMsg::Input(Queued {
                input: Arc::new(input),
                fired: None,
                reply: None,
            });
            self.route(id, msg);
        }
        // Routing first: a purge must see the entries these inputs create.
        self.perform(myself).await;
        self.retention_step(now).await;
    }
}

/// Hands `msg` to a live actor through its slot's inbox, with one `Drain`
/// cast when the inbox was empty (see [`Slot::inbox`]), so the actor sees
/// messages in routing order and can take queued inputs together. False
/// when the actor is gone: the message is dropped as a failed cast would
/// drop it (its reply port tells the sender).
fn hand_over(actor: &ActorRef<WorkflowMsg>, slot: &Slot, msg: WorkflowMsg) -> bool {
    let wake = {
        let mut inbox = slot.inbox.lock();
        inbox.push_back(msg);
        inbox.len() == 1
    };
    if wake && actor.cast(WorkflowMsg::Drain).is_err() {
        slot.inbox.lock().pop_back();
        return false;
    }
    true
}
