//! The workflow actor: owns one workflow's [`WorkflowShell`] while it is
//! resident. Thin: it takes what waits in its inbox, lets the shell decide
//! and fold it, awaits the durable append, and answers.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::partition_core::Init;
use super::partition_shared::PartitionShared;
use super::workflow_shell::{Retry, StartStep, WorkflowShell};
use super::EngineCtx;
use crate::pipeline::PipelineDef;
use crate::workflow::{Input, Outcome, PipelineRef, TimerKind, WorkflowState};

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
    /// Final: no workflow has this id (never started, or purged).
    #[error("unknown workflow {0}")]
    UnknownWorkflow(String),
    /// Final: the workflow's stored state cannot be read, or it cannot start.
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
        reply: Option<RpcReplyPort<Result<StartReply, InputError>>>,
    },
    Input(Queued),
    Describe(RpcReplyPort<Result<Option<WorkflowState>, String>>),
    /// Take every input waiting in the slot's inbox (see [`Slot::inbox`]).
    Drain,
}

pub struct WorkflowArgs {
    pub id: String,
    pub partition: u16,
    pub ctx: Arc<EngineCtx>,
    pub shared: Arc<Mutex<PartitionShared>>,
    pub slot: Arc<Slot>,
    pub init: Init<WorkflowState>,
}

pub struct WorkflowActor;

/// State of the actor (not only of the workflow): handed back to the
/// partition when the actor is passivated.
pub struct Resident {
    pub shell: WorkflowShell,
    slot: Arc<Slot>,
}

impl Slot {
    /// The actor finished handling what it took: it lists itself idle for
    /// the partition, at most once until the partition unlists it.
    pub fn note_idle(&self, shared: &Mutex<PartitionShared>, id: &str) {
        if !self.listed.swap(true, Ordering::AcqRel) {
            shared.lock().reports.idle.push(id.to_string());
        }
    }
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
            shared,
            slot,
            init,
        } = args;
        if let Some(faults) = &ctx.hooks.faults {
            faults.maybe_panic_on_load(&id);
        }
        Ok(Resident {
            shell: WorkflowShell::open(id, partition, ctx, shared, init),
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
        st.slot.note_idle(st.shell.shared(), &st.shell.id);
        Ok(())
    }
}

impl Resident {
    /// The state the partition keeps when this actor stops.
    pub fn into_state(self) -> Option<WorkflowState> {
        self.shell.into_state()
    }

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
                let _ = reply.send(self.shell.describe());
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

    async fn start(
        &mut self,
        pipeline: PipelineRef,
        def: Arc<PipelineDef>,
        input: String,
        reply: &mut Option<RpcReplyPort<Result<StartReply, InputError>>>,
    ) -> Result<StartReply, InputError> {
        let commit = match self.shell.stage_start(pipeline, def, &input) {
            StartStep::Answer(r) => return r.map_err(InputError::Rejected),
            StartStep::Commit(c) => c,
        };
        if commit.ack_early {
            // Planted bug: the caller hears "accepted" before the append.
            if let Some(reply) = reply.take() {
                let _ = reply.send(Ok(StartReply {
                    id: self.shell.id.clone(),
                    status: crate::workflow::Status::Running,
                    created: true,
                }));
            }
        }
        let mut commit = commit;
        let ops = std::mem::take(&mut commit.ops);
        // A journal failure stays `Journal`: the caller may try again.
        self.append(ops).await?;
        self.shell
            .start_committed(commit)
            .map_err(InputError::Rejected)
    }

    /// Every input that was waiting in the inbox, in order, decided by the
    /// shell one after the other and journaled in one commit (see
    /// [`WorkflowShell::fold`]): the results of parallel steps that arrived
    /// while the actor awaited a commit cost one more commit, not one each.
    /// If that commit fails, each input is tried again on its own.
    async fn inputs(&mut self, batch: Vec<Queued>) {
        let mut replies = Vec::with_capacity(batch.len());
        let mut run = Vec::with_capacity(batch.len());
        for q in batch {
            replies.push(q.reply);
            run.push((q.input, q.fired));
        }
        let mut fold = self.shell.fold(run);
        for (item, reply) in fold.items.iter().zip(replies.iter_mut()) {
            if let super::workflow_shell::Folded::Staged { staged, .. } = item {
                if staged.ack_early {
                    // Planted bug: a result is acknowledged before the append.
                    if let Some(reply) = reply.take() {
                        let _ = reply.send(Ok(staged.outcome().clone()));
                    }
                }
            }
        }
        let ops = std::mem::take(&mut fold.ops);
        let answers: Vec<InputReply> = if ops.is_empty() {
            self.shell.fold_committed(fold)
        } else {
            match self.append(ops).await {
                Ok(()) => self.shell.fold_committed(fold),
                Err(e) => {
                    let error = match e {
                        InputError::Journal(m) | InputError::Rejected(m) => m,
                        e @ InputError::UnknownWorkflow(_) => e.to_string(),
                    };
                    let mut answers = Vec::new();
                    for retry in self.shell.fold_failed(fold, &error) {
                        answers.push(match retry {
                            Retry::Answer(r) => r,
                            Retry::Again(input) => self.input_alone(input).await,
                        });
                    }
                    answers
                }
            }
        };
        for (reply, r) in replies.into_iter().zip(answers) {
            if let Some(reply) = reply {
                let _ = reply.send(r);
            }
        }
    }

    /// One input on its own, after a fold it was part of failed to commit.
    async fn input_alone(&mut self, input: super::workflow_shell::QueuedInput) -> InputReply {
        let mut fold = self.shell.fold(vec![input]);
        let ops = std::mem::take(&mut fold.ops);
        let answers = if ops.is_empty() {
            self.shell.fold_committed(fold)
        } else {
            match self.append(ops).await {
                Ok(()) => self.shell.fold_committed(fold),
                Err(e) => return Err(e),
            }
        };
        answers.into_iter().next().unwrap_or(Ok(Outcome::Applied))
    }

    /// The durable append of a start or of folded inputs.
    async fn append(&self, ops: Vec<crate::storage::Op>) -> Result<(), InputError> {
        let ctx = self.shell.ctx();
        crate::failpoints::point("journal.before_append");
        if let Err(e) = ctx.committer.commit(ops).await {
            super::metrics::Metrics::inc(&ctx.metrics.commit_errors);
            tracing::error!(workflow_id = %self.shell.id, error = %e, "journal append failed; input dropped");
            return Err(InputError::Journal(e.to_string()));
        }
        crate::failpoints::point("journal.after_append");
        Ok(())
    }
}
