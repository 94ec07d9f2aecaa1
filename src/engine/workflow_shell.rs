//! One workflow's shell around the pure core, without a runtime: it
//! decides inputs, folds a run of queued inputs into one batch, and after
//! the batch is durable evolves the state and runs the commands. Whoever
//! holds it performs the commit: the ractor
//! [`WorkflowActor`](super::workflow_actor::WorkflowActor) awaits the group
//! committer, the deterministic simulator writes unsynced and completes at
//! its flush. Both run this same code.
//!
//! # One transition
//!
//! ```text
//! one input:   decide → prepare ops → commit → evolve → commands, event
//! a fold of n: for each: decide on the state so far → prepare → evolve
//!              then one commit for all
//!                ok:     commands and events of each, in order
//!                failed: state back to before the fold, each input again alone
//! ```
//!
//! In a fold, evolve runs before the commit so that each input is decided
//! against the state the ones before it lead to; nothing is acknowledged,
//! dispatched or published before the commit is durable, and a failed
//! commit rolls the state back.

use std::sync::Arc;

use parking_lot::Mutex;

use super::metrics::Metrics;
use super::partition_core::Init;
use super::partition_shared::PartitionShared;
use super::recovery::load;
use super::transition::{after_commit, apply, note_outcome, prepare, EventHandOver};
use super::workflow_actor::{InputError, InputReply, StartReply};
use super::EngineCtx;
use crate::pipeline::PipelineDef;
use crate::storage::Op;
use crate::workflow::budget::Admission;
use crate::workflow::{
    decide_planted, decide_start, Command, Decision, Input, Outcome, PipelineRef, TimerKind,
    WorkflowState,
};

/// An input as queued for a workflow: the input and the durable timer row
/// that produced it (removed with the transition).
pub type QueuedInput = (Arc<Input>, Option<(u64, TimerKind)>);

/// The state of one resident workflow and what it needs to decide.
pub struct WorkflowShell {
    pub id: String,
    pub partition: u16,
    ctx: Arc<EngineCtx>,
    shared: Arc<Mutex<PartitionShared>>,
    pub wf: Option<WorkflowState>,
    def: Option<Arc<PipelineDef>>,
    /// Set when the stored state could not be read: the workflow is not served.
    pub broken: Option<String>,
}

/// An input decided and prepared; its batch is not written yet.
pub struct Staged {
    outcome: Outcome,
    ops: Vec<Op>,
    event: Option<crate::engine::outbox::OutboxItem>,
    decision: Decision,
    prev_status: crate::workflow::Status,
    /// Planted bug (`ack_before_sync`): the caller is answered before the commit.
    pub ack_early: bool,
}

impl Staged {
    pub fn outcome(&self) -> &Outcome {
        &self.outcome
    }
}

/// One input of a fold, before the commit.
pub enum Folded {
    /// Answered without a write (rejected, or a deferred retry).
    Answered(InputReply),
    /// To be journaled. `applied`: evolved before the commit (a fold of
    /// several); `after` is then the state right after it when a later
    /// input changed the state further.
    Staged {
        staged: Box<Staged>,
        applied: bool,
        after: Option<Box<WorkflowState>>,
        input: QueuedInput,
    },
}

/// A run of inputs decided together; written as one batch.
pub struct Fold {
    /// Everything to write, for all inputs.
    pub ops: Vec<Op>,
    /// Per input, in order.
    pub items: Vec<Folded>,
    /// The state before the fold, when inputs were evolved before the commit.
    before: Option<Option<WorkflowState>>,
    /// Inputs that write something.
    journaled: u64,
}

/// After a failed fold commit: each input's answer, or the input to try
/// again on its own.
pub enum Retry {
    Answer(InputReply),
    Again(QueuedInput),
}

/// A start decided and prepared; its batch is not written yet.
pub struct StartCommit {
    pub ops: Vec<Op>,
    event: Option<crate::engine::outbox::OutboxItem>,
    next: Option<WorkflowState>,
    decision: Decision,
    def: Arc<PipelineDef>,
    /// Planted bug (`ack_before_sync`): the caller is answered before the commit.
    pub ack_early: bool,
}

/// What a start needs.
pub enum StartStep {
    /// Answered without a write (existing workflow, unreadable state, bad input).
    Answer(Result<StartReply, String>),
    Commit(Box<StartCommit>),
}

impl WorkflowShell {
    /// The workflow's state from `init`: cached, or loaded from storage
    /// (none for a new id). An unreadable state or pipeline marks it broken.
    pub fn open(
        id: String,
        partition: u16,
        ctx: Arc<EngineCtx>,
        shared: Arc<Mutex<PartitionShared>>,
        init: Init<WorkflowState>,
    ) -> Self {
        let (wf, mut broken) = match init {
            Init::State(s) => (Some(*s), None),
            Init::Load => match load(&ctx, partition, &id) {
                Ok(wf) => (wf, None),
                Err(e) => (None, Some(e)),
            },
        };
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
            Metrics::inc(&ctx.metrics.corrupt_workflows);
            tracing::error!(workflow_id = %id, error = %reason, "workflow cannot be loaded; not serving it");
        }
        WorkflowShell {
            id,
            partition,
            ctx,
            shared,
            wf,
            def,
            broken,
        }
    }

    pub fn ctx(&self) -> &Arc<EngineCtx> {
        &self.ctx
    }

    pub fn shared(&self) -> &Arc<Mutex<PartitionShared>> {
        &self.shared
    }

    /// The state as `describe` shows it: with the start times of attempts
    /// that workers reported started but that have no result yet.
    pub fn describe(&self) -> Result<Option<WorkflowState>, String> {
        match &self.broken {
            Some(e) => Err(e.clone()),
            None => Ok(self
                .wf
                .clone()
                .map(|wf| self.shared.lock().schedule.liveness.with_starts(wf))),
        }
    }

    /// The state to keep when the actor stops (none when broken).
    pub fn into_state(self) -> Option<WorkflowState> {
        match self.broken {
            Some(_) => None,
            None => self.wf,
        }
    }

    /// Decides a start: an existing workflow is returned, a new one is
    /// prepared for its commit.
    pub fn stage_start(
        &mut self,
        pipeline: PipelineRef,
        def: Arc<PipelineDef>,
        input: &str,
    ) -> StartStep {
        if let Some(e) = &self.broken {
            return StartStep::Answer(Err(e.clone()));
        }
        if let Some(wf) = &self.wf {
            return StartStep::Answer(Ok(StartReply {
                id: self.id.clone(),
                status: wf.status,
                created: false,
            }));
        }
        let now = self.ctx.clock.now_ms();
        let decision = decide_start(&self.id, pipeline, &def, input, now);
        let prepared = match prepare(&self.ctx, self.partition, &self.id, None, decision, None) {
            Ok(p) => p,
            Err(e) => return StartStep::Answer(Err(e)),
        };
        let plants = self.ctx.hooks.plants;
        if plants.dispatch_before_append {
            planted_early_dispatch(&self.ctx, &prepared.decision);
        }
        StartStep::Commit(Box::new(StartCommit {
            ops: prepared.ops,
            event: prepared.event,
            next: prepared.next,
            decision: prepared.decision,
            def,
            ack_early: plants.ack_before_sync,
        }))
    }

    /// The start's batch is durable: the workflow exists from now on.
    pub fn start_committed(&mut self, commit: Box<StartCommit>) -> Result<StartReply, String> {
        let commit = *commit;
        let _event = EventHandOver::new(&self.ctx, commit.event);
        let next = commit.next.ok_or("internal: start produced no state")?;
        after_commit(
            &self.ctx,
            &self.shared,
            None,
            &next,
            &commit.def,
            commit.decision,
        );
        let status = next.status;
        self.wf = Some(next);
        self.def = Some(commit.def);
        Ok(StartReply {
            id: self.id.clone(),
            status,
            created: true,
        })
    }

    /// Decides every input of a run, in order, each against the state the
    /// ones before it lead to, and gathers their batches into one.
    pub fn fold(&mut self, batch: Vec<QueuedInput>) -> Fold {
        let several = batch.len() > 1;
        let before = several.then(|| self.wf.clone());
        let mut fold = Fold {
            ops: Vec::new(),
            items: Vec::with_capacity(batch.len()),
            before,
            journaled: 0,
        };
        let last = batch.len().saturating_sub(1);
        for (i, (input, fired)) in batch.into_iter().enumerate() {
            if let Some(faults) = &self.ctx.hooks.faults {
                faults.maybe_panic(&self.id);
            }
            match self.stage(&input, fired.clone()) {
                Err(r) => fold.items.push(Folded::Answered(r)),
                Ok(mut staged) => {
                    if !staged.ops.is_empty() {
                        fold.journaled += 1;
                    }
                    fold.ops.append(&mut staged.ops);
                    let mut after = None;
                    if several && !staged.decision.events.is_empty() {
                        if let Some(wf) = self.wf.as_mut() {
                            apply(wf, &staged.decision);
                            // The last one's state is the shell's own.
                            if i < last {
                                after = Some(Box::new(wf.clone()));
                            }
                        }
                    }
                    fold.items.push(Folded::Staged {
                        staged: Box::new(staged),
                        applied: several,
                        after,
                        input: (input, fired),
                    });
                }
            }
        }
        fold
    }

    /// The fold's batch is durable (or it wrote nothing): evolve what was
    /// not evolved yet, run the commands and hand over the events, in order.
    /// Returns each input's answer.
    pub fn fold_committed(&mut self, fold: Fold) -> Vec<InputReply> {
        if fold.journaled > 1 {
            self.ctx
                .metrics
                .inputs_folded
                .fetch_add(fold.journaled - 1, std::sync::atomic::Ordering::Relaxed);
        }
        let mut answers = Vec::with_capacity(fold.items.len());
        for item in fold.items {
            answers.push(match item {
                Folded::Answered(r) => r,
                Folded::Staged {
                    staged,
                    applied,
                    after,
                    ..
                } => {
                    let staged = *staged;
                    if !applied && !staged.decision.events.is_empty() {
                        if let Some(wf) = self.wf.as_mut() {
                            apply(wf, &staged.decision);
                        }
                    }
                    let outcome = staged.outcome.clone();
                    self.finish(
                        staged.event,
                        staged.decision,
                        staged.prev_status,
                        after.as_deref(),
                    );
                    Ok(outcome)
                }
            });
        }
        answers
    }

    /// The fold's batch could not be written: the state goes back to what
    /// it was. A single input is answered with the error; each input of a
    /// fold of several is to be tried again on its own, exactly as without
    /// the fold (inputs without a reply port, fired timers and attempt
    /// timeouts, would otherwise be lost until a restart).
    pub fn fold_failed(&mut self, fold: Fold, error: &str) -> Vec<Retry> {
        let several = fold.before.is_some();
        if let Some(before) = fold.before {
            self.wf = before;
        }
        fold.items
            .into_iter()
            .map(|item| match item {
                Folded::Answered(r) => Retry::Answer(r),
                Folded::Staged { .. } if !several => {
                    Retry::Answer(Err(InputError::Journal(error.to_string())))
                }
                Folded::Staged { input, .. } => Retry::Again(input),
            })
            .collect()
    }

    /// When `decision` dispatches a retry of `step` that the retry budget
    /// defers: the time to ask again (counted in the task type's metrics).
    fn budget_defers(&self, decision: &Decision, step: u16, now: u64) -> Option<u64> {
        let spec = decision.commands.iter().find_map(|c| match c {
            Command::Dispatch(spec) if spec.step_index == step && spec.attempt > 1 => Some(spec),
            _ => None,
        })?;
        let cfg = self.ctx.config.partition_retry_budget();
        let admission =
            self.shared
                .lock()
                .budgets
                .of(&spec.task_type)
                .admit(&cfg, now, &spec.task_id);
        match admission {
            Admission::Now => None,
            Admission::DeferUntil(at) => {
                self.ctx
                    .metrics
                    .by_task_type
                    .with(&spec.task_type, |t| Metrics::inc(&t.retries_deferred));
                Some(at)
            }
        }
    }

    /// Decides `input` on the current state and builds its batch. `Err` is
    /// the final answer when nothing is to be written (a rejected input, or
    /// a retry the retry budget defers).
    fn stage(&self, input: &Input, fired: Option<(u64, TimerKind)>) -> Result<Staged, InputReply> {
        if let Some(e) = &self.broken {
            return Err(Err(InputError::Rejected(e.clone())));
        }
        let (Some(wf), Some(def)) = (&self.wf, &self.def) else {
            Metrics::inc(&self.ctx.metrics.unknown_tasks);
            return Err(Err(InputError::UnknownWorkflow(self.id.clone())));
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
                self.shared
                    .lock()
                    .schedule
                    .timers
                    .defer(at, *row_due, &self.id, timer.clone());
                return Err(Ok(Outcome::Applied));
            }
        }
        let outcome = decision.outcome.clone();
        note_outcome(&self.ctx, &outcome);
        if let Outcome::Ignored(reason) = &outcome {
            log_ignored(&self.id, input, reason.as_str());
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
        let writes = !prepared.ops.is_empty();
        if writes && plants.dispatch_before_append {
            planted_early_dispatch(&self.ctx, &prepared.decision);
        }
        Ok(Staged {
            outcome,
            ops: prepared.ops,
            event: prepared.event,
            decision: prepared.decision,
            prev_status,
            ack_early: writes && plants.ack_before_sync,
        })
    }

    /// After the append is durable: the commands run, then the lifecycle
    /// message goes to the publisher. The decision is already applied;
    /// `after` is the state right after it when later decisions of a fold
    /// changed the state further (`None`: the shell's own state).
    fn finish(
        &self,
        event: Option<crate::engine::outbox::OutboxItem>,
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
            &self.shared,
            Some(prev_status),
            next,
            def,
            decision,
        );
    }
}

fn log_ignored(id: &str, input: &Input, reason: &str) {
    match input {
        Input::TaskResult(r) => tracing::debug!(
            workflow_id = %id,
            step = %r.step,
            attempt = r.attempt,
            task_id = %r.task_id,
            worker = r.worker.as_deref(),
            reason,
            "result ignored"
        ),
        Input::TaskTimedOut { task_id, timeout } => tracing::debug!(
            workflow_id = %id,
            task_id = %task_id,
            timeout = timeout.as_str(),
            reason,
            "timeout ignored"
        ),
        _ => tracing::debug!(workflow_id = %id, reason, "input ignored"),
    }
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
