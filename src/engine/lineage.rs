//! The shell of child pipelines: what a child step needs performed once its
//! events are durable. Starting a child, passing a parent's cancel, pause
//! or resume on to it, and reporting a child's end to its parent are all
//! inputs to other workflows, possibly of other partitions, so they go
//! through a [`LineagePort`]; the engine's own port routes them like any
//! request ([`RouterLineage`]).
//!
//! Delivery is at least once and counted once: a child id is derived from
//! its parent, step and generation, so performing a start again finds the
//! same child; the parent takes one outcome per child and ignores the rest.
//! A restart performs the start of every running child again
//! ([`crate::workflow::restart_children`]): a child whose start was lost is
//! started, one that ended while its report was lost reports again.

use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use super::metrics::Metrics;
use super::workflow_actor::{InputError, StartReply};
use super::{PartitionMsg, Router};
use crate::pipeline::PipelineDef;
use crate::workflow::lineage::{outcome_of, parent_of};
use crate::workflow::{ChildOutcome, ChildSignal, ChildSpec, Input, WorkflowState};

/// Where the effects of child steps go.
pub trait LineagePort: Send + Sync {
    /// Start the child `spec` names; one that exists is left as it is, and
    /// reports its outcome again when it already ended.
    fn start_child(&self, spec: ChildSpec);
    /// Pass a parent's cancel, pause or resume on to a child.
    fn signal_child(&self, child_id: String, signal: ChildSignal);
    /// Report the end of `child_id` to its parent.
    fn child_finished(&self, parent_id: String, child_id: String, outcome: ChildOutcome);
}

/// The port of an engine, set when it starts (the engine's router is built
/// after its context; the deterministic simulator sets its own). Empty:
/// child steps start nothing (a shell without an engine). A clone starts
/// empty, so engines built from the same hooks (a restart within one
/// process) each use their own port.
#[derive(Default)]
pub struct LineageSlot(RwLock<Option<Arc<dyn LineagePort>>>);

impl Clone for LineageSlot {
    fn clone(&self) -> Self {
        LineageSlot::default()
    }
}

impl LineageSlot {
    pub fn get(&self) -> Option<Arc<dyn LineagePort>> {
        self.0.read().clone()
    }

    pub fn set(&self, port: Arc<dyn LineagePort>) {
        *self.0.write() = Some(port);
    }
}

/// Performs the effects of a committed transition of `next` that concern
/// children and parents: its `StartChild` and `SignalChild` commands, in
/// order, and, when `next` is a child that just `ended`, its report to its
/// parent.
pub fn after_commit(
    ctx: &super::EngineCtx,
    next: &WorkflowState,
    def: &PipelineDef,
    ended: bool,
    commands: Vec<crate::workflow::Command>,
) {
    use crate::workflow::Command;
    let Some(port) = ctx.hooks.lineage.get() else {
        if !commands.is_empty() {
            tracing::warn!(workflow_id = %next.id, "child step effects dropped: no lineage port");
        }
        return;
    };
    for c in commands {
        match c {
            Command::StartChild(spec) => {
                Metrics::inc(&ctx.metrics.children_started);
                port.start_child(*spec);
            }
            Command::SignalChild { child_id, signal } => port.signal_child(child_id, signal),
            _ => {}
        }
    }
    if ended {
        if let (Some(link), Some(outcome)) = (parent_of(&next.id), outcome_of(next, def)) {
            port.child_finished(link.parent.to_string(), next.id.clone(), outcome);
        }
    }
}

/// One effect waiting for the engine to be up.
enum Deferred {
    Start(ChildSpec),
    Signal(String, ChildSignal),
    Finished(String, String, ChildOutcome),
}

/// The engine's port: each effect is an input to the workflow's partition,
/// sent from the caller in order (a start before a cancel of the same
/// child reaches its partition first). Effects asked for before the engine
/// is up (by recovery) wait until [`RouterLineage::ready`].
pub struct RouterLineage {
    router: Arc<Router>,
    ctx: std::sync::Weak<super::EngineCtx>,
    waiting: Mutex<Option<Vec<Deferred>>>,
    /// Where effects for workflows of partitions this node does not serve
    /// go (a cluster node: to the node serving them).
    remote: Arc<RemoteSlot>,
}

/// The port effects for partitions not served here go to; empty: they are
/// not performed (a single node serves every partition).
#[derive(Default)]
pub struct RemoteSlot(RwLock<Option<Arc<dyn LineagePort>>>);

impl RemoteSlot {
    fn get(&self) -> Option<Arc<dyn LineagePort>> {
        self.0.read().clone()
    }
}

impl RouterLineage {
    pub(super) fn new(router: Arc<Router>, ctx: &Arc<super::EngineCtx>) -> Self {
        RouterLineage {
            router,
            ctx: Arc::downgrade(ctx),
            waiting: Mutex::new(Some(Vec::new())),
            remote: Arc::default(),
        }
    }

    /// Sends the effects for workflows of partitions this node does not
    /// serve to `port`.
    pub(super) fn set_remote(&self, port: Arc<dyn LineagePort>) {
        *self.remote.0.write() = Some(port);
    }

    /// Every partition is up: performs what waited, in order. The lock is
    /// held meanwhile, so an effect asked for now waits its turn.
    pub(super) fn ready(&self) {
        let mut w = self.waiting.lock();
        for d in w.take().unwrap_or_default() {
            self.perform(d);
        }
    }

    /// A partition starts while the engine runs: effects wait again until
    /// [`RouterLineage::ready`], so that those its recovery asks for reach
    /// it (and its own workflows) once it is routed to.
    pub(super) fn hold(&self) {
        self.waiting.lock().get_or_insert_with(Vec::new);
    }

    fn defer_or_perform(&self, d: Deferred) {
        {
            let mut w = self.waiting.lock();
            if let Some(list) = w.as_mut() {
                list.push(d);
                return;
            }
        }
        self.perform(d);
    }

    fn send(&self, id: &str, input: Input) {
        if let Some(p) = self.router.partition(id) {
            let _ = p.cast(PartitionMsg::Input {
                id: id.to_string(),
                input,
                reply: None,
            });
        }
    }

    fn perform(&self, d: Deferred) {
        match d {
            Deferred::Start(spec) => self.start(spec),
            Deferred::Signal(child_id, signal) => {
                if self.router.partition(&child_id).is_none() {
                    return remote_or_drop(&self.remote, &child_id, |r| {
                        r.signal_child(child_id.clone(), signal)
                    });
                }
                let input = match signal {
                    ChildSignal::Cancel { reason } => Input::Cancel { reason },
                    ChildSignal::Pause => Input::Pause,
                    ChildSignal::Resume => Input::Resume,
                };
                self.send(&child_id, input);
            }
            Deferred::Finished(parent, child_id, outcome) => {
                if self.router.partition(&parent).is_none() {
                    return remote_or_drop(&self.remote, &parent, |r| {
                        r.child_finished(parent.clone(), child_id, outcome)
                    });
                }
                self.send(&parent, Input::ChildFinished { child_id, outcome })
            }
        }
    }

    /// Casts the start now (so it is queued before any later signal) and
    /// settles its answer in a task: a child that already ended reports
    /// again, one that cannot start fails its parent's step.
    fn start(&self, spec: ChildSpec) {
        let Some(p) = self.router.partition(&spec.child_id) else {
            let id = spec.child_id.clone();
            return remote_or_drop(&self.remote, &id, |r| r.start_child(spec));
        };
        let (tx, rx) = ractor::concurrency::oneshot();
        let sent = p.cast(PartitionMsg::Start {
            id: spec.child_id.clone(),
            pipeline: spec.pipeline.clone(),
            version: spec.version,
            input: spec.input.clone(),
            reply: tx.into(),
        });
        if sent.is_err() {
            return;
        }
        let router = self.router.clone();
        let ctx = self.ctx.clone();
        let remote = self.remote.clone();
        tokio::spawn(async move {
            let Ok(answer) = rx.await else {
                return;
            };
            settle_start(&router, &ctx, &remote, spec, answer).await;
        });
    }
}

impl LineagePort for RouterLineage {
    fn start_child(&self, spec: ChildSpec) {
        self.defer_or_perform(Deferred::Start(spec));
    }

    fn signal_child(&self, child_id: String, signal: ChildSignal) {
        self.defer_or_perform(Deferred::Signal(child_id, signal));
    }

    fn child_finished(&self, parent_id: String, child_id: String, outcome: ChildOutcome) {
        self.defer_or_perform(Deferred::Finished(parent_id, child_id, outcome));
    }
}

/// What a child's start answered: nothing to do for a new or running
/// child; the outcome of one that already ended goes to the parent again;
/// a start refused (its pipeline or version is not startable) fails the
/// parent's step, unless the child exists after all.
async fn settle_start(
    router: &Router,
    ctx: &std::sync::Weak<super::EngineCtx>,
    remote: &RemoteSlot,
    spec: ChildSpec,
    answer: Result<StartReply, InputError>,
) {
    let Some(ctx) = ctx.upgrade() else {
        return;
    };
    let outcome = match answer {
        Ok(StartReply { created: true, .. }) => return,
        Ok(StartReply { status, .. }) if !status.is_terminal() => return,
        Ok(_) => match describe(router, &spec.child_id).await {
            Some(state) => ended_outcome(&ctx, &state),
            None => None,
        },
        Err(InputError::Rejected(reason)) => match describe(router, &spec.child_id).await {
            Some(state) => ended_outcome(&ctx, &state),
            None => {
                Metrics::inc(&ctx.metrics.children_refused);
                tracing::warn!(child_id = %spec.child_id, %reason, "child workflow cannot start");
                Some(ChildOutcome::Failed {
                    reason: format!("cannot start child pipeline {}: {reason}", spec.pipeline),
                })
            }
        },
        Err(e) => {
            // Transient (a failed append): the parent's next restart
            // performs the start again.
            tracing::warn!(child_id = %spec.child_id, error = %e, "child workflow start failed");
            None
        }
    };
    if let Some(outcome) = outcome {
        match router.partition(&spec.parent_id) {
            Some(p) => {
                let _ = p.cast(PartitionMsg::Input {
                    id: spec.parent_id.clone(),
                    input: Input::ChildFinished {
                        child_id: spec.child_id,
                        outcome,
                    },
                    reply: None,
                });
            }
            None => {
                let parent = spec.parent_id.clone();
                remote_or_drop(remote, &parent, |r| {
                    r.child_finished(spec.parent_id, spec.child_id, outcome)
                });
            }
        }
    }
}

/// An effect for a workflow of a partition this node does not serve goes
/// to the remote port (a cluster node: the node serving it). Without one
/// it is not performed: the parent's recovery performs its child starts
/// again (`restart_children`), and a start of a child that ended answers
/// with its outcome.
fn remote_or_drop(remote: &RemoteSlot, id: &str, send: impl FnOnce(&dyn LineagePort)) {
    match remote.get() {
        Some(r) => send(r.as_ref()),
        None => tracing::debug!(
            workflow_id = id,
            "child step effect for a partition this node does not serve; not performed"
        ),
    }
}

fn ended_outcome(ctx: &super::EngineCtx, state: &WorkflowState) -> Option<ChildOutcome> {
    let def = ctx.pipelines.get(&state.pipeline).ok()?;
    outcome_of(state, &def)
}

async fn describe(router: &Router, id: &str) -> Option<WorkflowState> {
    let p = router.partition(id)?;
    let (tx, rx) = ractor::concurrency::oneshot();
    p.cast(PartitionMsg::Describe {
        id: id.to_string(),
        reply: tx.into(),
    })
    .ok()?;
    rx.await.ok()?.ok()?
}
