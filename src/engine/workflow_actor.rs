//! The workflow actor: owns one workflow's state while it is resident. Thin:
//! every rule lives in the pure core; this only sequences
//! decide → durable append → evolve → commands, one input at a time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::transition::{
    after_commit, apply, load, note_outcome, prepare, EventHandOver, PartitionTimes,
};
use super::EngineCtx;
use crate::pipeline::PipelineDef;
use crate::workflow::budget::Admission;
use crate::workflow::{
    decide_planted, decide_start, Command, Decision, Input, Outcome, PipelineRef, TimerKind,
    WorkflowState,
};

/// Reply to a start request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartReply {
    pub id: String,
    pub status: crate::workflow::Status,
    /// False when a workflow with this id already existed (it is returned instead).
    pub created: bool,
}

/// Why an input could not be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// Final: unknown workflow, or its stored state cannot be read.
    #[error("{0}")]
    Rejected(String),
    /// Transient: the journal append failed, nothing changed; sending the
    /// input again may succeed.
    #[error("journal append failed: {0}")]
    Journal(String),
}

/// Reply to any other input.
pub type InputReply = Result<Outcome, InputError>;

/// Shared between a workflow actor and its partition: how far the actor got.
/// Replaces an "I am idle" message per handled message with two atomics.
#[derive(Default)]
pub struct Slot {
    /// Messages handled so far; the partition passivates when it matches what it routed.
    /// An input counts as one message, however many are handled together.
    pub handled: AtomicU64,
    /// The actor's id is in the partition's idle list (at most once).
    pub listed: AtomicBool,
    /// Messages routed to the actor and not yet taken, in routing order.
    /// The partition pushes here and casts one [`WorkflowMsg::Drain`] when
    /// the queue was empty; the actor takes everything queued at once, so
    /// inputs that arrive while it awaits a commit (the results of parallel
    /// steps) are decided one after the other and journaled in one commit.
    pub inbox: Mutex<std::collections::VecDeque<WorkflowMsg>>,
}

/// An input for a workflow actor (it waits in the [`Slot`]'s inbox).
pub struct Queued {
    /// Shared with the partition's copy kept for re-delivery after a crash.
    pub input: Arc<Input>,
    /// The durable timer that produced this input; its row is removed with the transition.
    pub fired: Option<(u64, TimerKind)>,
    pub reply: Option<RpcReplyPort<InputReply>>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("handled", &self.handled)
            .field("listed", &self.listed)
            .field("inbox", &self.inbox.lock().len())
            .finish()
    }
}

pub enum WorkflowMsg {
    Start {
        pipeline: PipelineRef,
        def: Arc<PipelineDef>,
        input: String,
        reply: Option<RpcReplyPort<Result<StartReply, String>>>,
    },
    Input(Queued),
    Describe(RpcReplyPort<Result<Option<WorkflowState>, String>>),
    /// Take every input waiting in the slot's inbox (see [`Slot::inbox`]).
    Drain,
}

/// How a spawned actor gets its state.
pub enum Init {
    /// From the partition's cache of passivated states.
    State(Box<WorkflowState>),
    /// From storage (snapshot + journal tail); may find nothing (a new id).
    Load,
}

pub struct WorkflowArgs {
    pub id: String,
    pub partition: u16,
    pub ctx: Arc<EngineCtx>,
    pub times: Arc<Mutex<PartitionTimes>>,
    pub slot: Arc<Slot>,
    pub init: Init,
}

pub struct WorkflowActor;

/// State of the actor (not only of the workflow): handed back to the
/// partition when the actor is passivated.
pub struct Resident {
    pub id: String,
    pub partition: u16,
    ctx: Arc<EngineCtx>,
    times: Arc<Mutex<PartitionTimes>>,
    pub wf: Option<WorkflowState>,
    def: Option<Arc<PipelineDef>>,
    /// Set when the stored state could not be read: the workflow is not served.
    pub broken: Option<String>,
    slot: Arc<Slot>,
}

impl Actor for WorkflowActor {
    type Msg = WorkflowMsg;
    type State = Resident;
    type Arguments = WorkflowArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: WorkflowArgs,
    ) -> Result<Resident, ActorProcessingErr> {
        let WorkflowArgs {
            id,
            partition,
            ctx,
            times,
            slot,
            init,
        } = args;
        if let Some(faults) = &ctx.hooks.faults {
            faults.maybe_panic_on_load(&id);
        }
        let (wf, broken) = match init {
            Init::State(s) => (Some(*s), None),
            Init::Load => match load(&ctx, partition, &id) {
                Ok(wf) => (wf, None),
                Err(e) => (None, Some(e)),
            },
        };
        let mut broken = broken;
        let def = match &wf {
            Some(s) => match ctx.pipelines.get(&s.pipeline) {
                Ok(d) => Some(d),
                Err(e) => {
                    broken = Some(e);
                    None
                }
            },
            None => None,
        };
        if let Some(reason) = &broken {
            super::metrics::Metrics::inc(&ctx.metrics.corrupt_workflows);
            tracing::error!(workflow_id = %id, error = %reason, "workflow cannot be loaded; not serving it");
        }
        Ok(Resident {
            id,
            partition,
            ctx,
            times,
            wf,
            def,
            broken,
            slot,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: WorkflowMsg,
        st: &mut Resident,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkflowMsg::Drain => {
                let queued: Vec<WorkflowMsg> = st.slot.inbox.lock().drain(..).collect();
                // Runs of inputs are taken together; a start or describe
                // between them keeps its place. Progress is counted per run,
                // so a crash re-delivers only what was not finished.
                let mut run: Vec<Queued> = Vec::new();
                for msg in queued {
                    match msg {
                        WorkflowMsg::Input(q) => run.push(q),
                        other => {
                            st.inputs_counted(std::mem::take(&mut run)).await;
                            st.one(other).await;
                            st.slot.handled.fetch_add(1, Ordering::Release);
                        }
                    }
                }
                st.inputs_counted(run).await;
            }
            other => {
                st.one(other).await;
                st.slot.handled.fetch_add(1, Ordering::Release);
            }
        }
        if !st.slot.listed.swap(true, Ordering::AcqRel) {
            st.times.lock().idle.push(st.id.clone());
        }
        Ok(())
    }
}

impl Resident {
    /// One message on its own.
    async fn one(&mut self, msg: WorkflowMsg) {
        match msg {
            WorkflowMsg::Start {
                pipeline,
                def,
                input,
                reply,
            } => {
                let mut reply = reply;
                let r = self.start(pipeline, def, input, &mut reply).await;
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
            }
            WorkflowMsg::Input(q) => self.inputs(vec![q]).await,
            WorkflowMsg::Describe(reply) => {
                let r = match &self.broken {
                    Some(e) => Err(e.clone()),
                    None => Ok(self
                        .wf
                        .clone()
                        .map(|wf| self.times.lock().liveness.with_starts(wf))),
                };
                let _ = reply.send(r);
            }
            // Only ever cast, never queued.
            WorkflowMsg::Drain => {}
        }
    }

    /// [`inputs`](Self::inputs), then counts them as handled.
    async fn inputs_counted(&mut self, run: Vec<Queued>) {
        if run.is_empty() {
            return;
        }
        let n = run.len() as u64;
        self.inputs(run).await;
        self.slot.handled.fetch_add(n, Ordering::Release);
    }

    /// When `decision` dispatches a retry of `step` that the retry budget
    /// defers: the time to ask again (counted in the task type's metrics).
    fn budget_defers(&self, decision: &Decision, step: u16, now: u64) -> Option<u64> {
        let spec = decision.commands.iter().find_map(|c| match c {
            Command::Dispatch(spec) if spec.step_index == step && spec.attempt > 1 => Some(spec),
            _ => None,
        })?;
        let cfg = self.ctx.config.partition_retry_budget();
        let admission = self
            .times
            .lock()
            .budget(&spec.task_type)
            .admit(&cfg, now, &spec.task_id);
        match admission {
            Admission::Now => None,
            Admission::DeferUntil(at) => {
                self.ctx.metrics.by_task_type.with(&spec.task_type, |t| {
                    super::metrics::Metrics::inc(&t.retries_deferred)
                });
                Some(at)
            }
        }
    }

    async fn start(
        &mut self,
        pipeline: PipelineRef,
        def: Arc<PipelineDef>,
        input: String,
        reply: &mut Option<RpcReplyPort<Result<StartReply, String>>>,
    ) -> Result<StartReply, String> {
        if let Some(e) = &self.broken {
            return Err(e.clone());
        }
        if let Some(wf) = &self.wf {
            return Ok(StartReply {
                id: self.id.clone(),
                status: wf.status,
                created: false,
            });
        }
        let now = self.ctx.clock.now_ms();
        let decision = decide_start(&self.id, pipeline, &def, &input, now);
        let prepared = prepare(&self.ctx, self.partition, &self.id, None, decision, None)?;
        let plants = self.ctx.hooks.plants;
        if plants.ack_before_sync {
            // Planted bug: the caller hears "accepted" before the append.
            if let Some(reply) = reply.take() {
                let _ = reply.send(Ok(StartReply {
                    id: self.id.clone(),
                    status: crate::workflow::Status::Running,
                    created: true,
                }));
            }
        }
        if plants.dispatch_before_append {
            planted_early_dispatch(&self.ctx, &prepared.decision);
        }
        crate::failpoints::point("journal.before_append");
        self.ctx.committer.commit(prepared.ops).await.map_err(|e| {
            super::metrics::Metrics::inc(&self.ctx.metrics.commit_errors);
            format!("journal append failed: {e}")
        })?;
        crate::failpoints::point("journal.after_append");
        let _event = EventHandOver::new(&self.ctx, prepared.event);
        let next = prepared.next.ok_or("internal: start produced no state")?;
        after_commit(&self.ctx, &self.times, None, &next, &def, prepared.decision);
        let status = next.status;
        self.wf = Some(next);
        self.def = Some(def);
        Ok(StartReply {
            id: self.id.clone(),
            status,
            created: true,
        })
    }

    /// One input: decide, append, evolve, run the commands.
    async fn input(
        &mut self,
        input: &Input,
        fired: Option<(u64, TimerKind)>,
        reply: &mut Option<RpcReplyPort<InputReply>>,
    ) -> InputReply {
        let staged = match self.stage(input, fired, reply) {
            Ok(s) => s,
            Err(r) => return r,
        };
        if !staged.ops.is_empty() {
            self.append(staged.ops).await?;
        }
        if !staged.decision.events.is_empty() {
            if let Some(wf) = self.wf.as_mut() {
                apply(wf, &staged.decision);
            }
        }
        let outcome = staged.outcome.clone();
        self.finish(staged.event, staged.decision, staged.prev_status, None);
        Ok(outcome)
    }

    /// Every input that was waiting in the inbox, in order. One input takes
    /// the path of [`input`](Self::input). Several are decided one after
    /// the other, each against the state the ones before it lead to, and
    /// all their records go in one commit: the results of parallel steps
    /// that arrived while the actor awaited a commit cost one more commit,
    /// not one each. Nothing is acknowledged, dispatched or published
    /// before that commit is durable; if it fails, the state goes back to
    /// what it was and each input is tried again on its own.
    async fn inputs(&mut self, batch: Vec<Queued>) {
        if batch.len() <= 1 {
            for q in batch {
                if let Some(faults) = &self.ctx.hooks.faults {
                    faults.maybe_panic(&self.id);
                }
                let mut reply = q.reply;
                let r = self.input(&q.input, q.fired, &mut reply).await;
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
            }
            return;
        }
        let before = self.wf.clone();
        let mut ops = Vec::new();
        // Per input: its reply port and either its final answer or its
        // staged transition with the state right after it.
        let mut done: Vec<(Option<RpcReplyPort<InputReply>>, Batched)> =
            Vec::with_capacity(batch.len());
        let last = batch.len() - 1;
        let mut journaled = 0u64;
        for (i, q) in batch.into_iter().enumerate() {
            if let Some(faults) = &self.ctx.hooks.faults {
                faults.maybe_panic(&self.id);
            }
            let mut reply = q.reply;
            match self.stage(&q.input, q.fired.clone(), &mut reply) {
                Err(r) => done.push((reply, Batched::Answered(r))),
                Ok(mut staged) => {
                    if !staged.ops.is_empty() {
                        journaled += 1;
                    }
                    ops.append(&mut staged.ops);
                    let mut after = None;
                    if !staged.decision.events.is_empty() {
                        if let Some(wf) = self.wf.as_mut() {
                            apply(wf, &staged.decision);
                            // The last one's state is the actor's own.
                            if i < last {
                                after = Some(Box::new(wf.clone()));
                            }
                        }
                    }
                    done.push((
                        reply,
                        Batched::Staged {
                            staged: Box::new(staged),
                            after,
                            input: (q.input, q.fired),
                        },
                    ));
                }
            }
        }
        if !ops.is_empty() && self.append(ops).await.is_err() {
            // Back to the state before the batch, and each staged input is
            // tried again on its own, exactly as it would have been without
            // the batch: inputs without a reply port (fired timers, attempt
            // timeouts) would otherwise be lost until a restart. (Their
            // outcome metrics count twice on this path.)
            self.wf = before;
            for (mut reply, r) in done {
                let r = match r {
                    Batched::Answered(r) => r,
                    Batched::Staged {
                        input: (input, fired),
                        ..
                    } => self.input(&input, fired, &mut reply).await,
                };
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
            }
            return;
        }
        if journaled > 1 {
            self.ctx
                .metrics
                .inputs_folded
                .fetch_add(journaled - 1, Ordering::Relaxed);
        }
        for (reply, r) in done {
            let r = match r {
                Batched::Answered(r) => r,
                Batched::Staged { staged, after, .. } => {
                    let staged = *staged;
                    let outcome = staged.outcome.clone();
                    self.finish(
                        staged.event,
                        staged.decision,
                        staged.prev_status,
                        after.as_deref(),
                    );
                    Ok(outcome)
                }
            };
            if let Some(reply) = reply {
                let _ = reply.send(r);
            }
        }
    }

    /// Decides `input` on the current state and builds its batch. `Err` is
    /// the final answer when nothing is to be written (a rejected input, or
    /// a retry the retry budget defers).
    fn stage(
        &self,
        input: &Input,
        fired: Option<(u64, TimerKind)>,
        reply: &mut Option<RpcReplyPort<InputReply>>,
    ) -> Result<Staged, InputReply> {
        if let Some(e) = &self.broken {
            return Err(Err(InputError::Rejected(e.clone())));
        }
        let (Some(wf), Some(def)) = (&self.wf, &self.def) else {
            super::metrics::Metrics::inc(&self.ctx.metrics.unknown_tasks);
            return Err(Err(InputError::Rejected(format!(
                "unknown workflow {}",
                self.id
            ))));
        };
        let now = self.ctx.clock.now_ms();
        let plants = self.ctx.hooks.plants;
        let decision = decide_planted(wf, def, input, now, plants.skip_stale_check);
        // A retry whose backoff is over goes only if its task type's retry
        // budget allows; otherwise nothing is written and the timer is put
        // back (its storage row stays), to ask again later.
        if let (Input::TimerFired(TimerKind::Retry { step, .. }), Some((row_due, timer))) =
            (input, &fired)
        {
            if let Some(at) = self.budget_defers(&decision, *step, now) {
                self.times
                    .lock()
                    .timers
                    .defer(at, *row_due, &self.id, timer.clone());
                return Err(Ok(Outcome::Applied));
            }
        }
        let outcome = decision.outcome.clone();
        note_outcome(&self.ctx, &outcome);
        if let crate::workflow::Outcome::Ignored(reason) = &outcome {
            match input {
                Input::TaskResult(r) => tracing::debug!(
                    workflow_id = %self.id,
                    step = %r.step,
                    attempt = r.attempt,
                    task_id = %r.task_id,
                    worker = r.worker.as_deref(),
                    reason = reason.as_str(),
                    "result ignored"
                ),
                Input::TaskTimedOut { task_id, timeout } => tracing::debug!(
                    workflow_id = %self.id,
                    task_id = %task_id,
                    timeout = timeout.as_str(),
                    reason = reason.as_str(),
                    "timeout ignored"
                ),
                _ => {
                    tracing::debug!(workflow_id = %self.id, reason = reason.as_str(), "input ignored")
                }
            }
        }
        let prev_status = wf.status;
        let prepared = prepare(
            &self.ctx,
            self.partition,
            &self.id,
            Some(wf),
            decision,
            fired.as_ref(),
        )
        .map_err(|e| Err(InputError::Rejected(e)))?;
        if !prepared.ops.is_empty() {
            if plants.ack_before_sync {
                // Planted bug: a result is acknowledged before the append.
                if let Some(reply) = reply.take() {
                    let _ = reply.send(Ok(outcome.clone()));
                }
            }
            if plants.dispatch_before_append {
                planted_early_dispatch(&self.ctx, &prepared.decision);
            }
        }
        Ok(Staged {
            outcome,
            ops: prepared.ops,
            event: prepared.event,
            decision: prepared.decision,
            prev_status,
        })
    }

    /// The durable append of staged inputs.
    async fn append(&self, ops: Vec<crate::storage::Op>) -> Result<(), InputError> {
        crate::failpoints::point("journal.before_append");
        if let Err(e) = self.ctx.committer.commit(ops).await {
            super::metrics::Metrics::inc(&self.ctx.metrics.commit_errors);
            tracing::error!(workflow_id = %self.id, error = %e, "journal append failed; input dropped");
            return Err(InputError::Journal(e.to_string()));
        }
        crate::failpoints::point("journal.after_append");
        Ok(())
    }

    /// After the append is durable: the commands run, then the lifecycle
    /// message goes to the publisher. The decision is already applied; `after` is the state
    /// right after it when later decisions of a batch changed the actor's
    /// state further (`None`: the actor's own state).
    fn finish(
        &self,
        event: Option<crate::events::OutboxItem>,
        decision: Decision,
        prev_status: crate::workflow::Status,
        after: Option<&WorkflowState>,
    ) {
        // Handed over when this returns: after the dispatches.
        let _event = EventHandOver::new(&self.ctx, event);
        if decision.events.is_empty() {
            return;
        }
        let (Some(def), Some(next)) = (self.def.as_ref(), after.or(self.wf.as_ref())) else {
            return;
        };
        after_commit(
            &self.ctx,
            &self.times,
            Some(prev_status),
            next,
            def,
            decision,
        );
    }
}

/// One input of a batch taken from the inbox, before the commit.
enum Batched {
    /// Answered without a write (rejected, or a deferred retry).
    Answered(InputReply),
    /// To be journaled; `after` is the state right after it, kept when a
    /// later input of the batch changed the actor's state further.
    Staged {
        staged: Box<Staged>,
        after: Option<Box<WorkflowState>>,
        /// The input itself, to try again alone if the batch's commit fails.
        input: (Arc<Input>, Option<(u64, TimerKind)>),
    },
}

/// An input decided and prepared; its batch is not written yet.
struct Staged {
    outcome: Outcome,
    ops: Vec<crate::storage::Op>,
    event: Option<crate::events::OutboxItem>,
    decision: Decision,
    prev_status: crate::workflow::Status,
}

/// Planted bug (`NARRALYTICA_PLANT=dispatch_before_append`): the decision's
/// tasks go to the transport before its append is durable. The normal send
/// after the commit follows (same task id: NATS drops the copy).
fn planted_early_dispatch(ctx: &EngineCtx, decision: &Decision) {
    for c in &decision.commands {
        if let Command::Dispatch(spec) = c {
            ctx.transport.dispatch(spec.clone());
        }
    }
}
