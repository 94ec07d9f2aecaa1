//! Child pipelines on the simulated node: its lineage port collects the
//! starts of children, the signals passed on to them and the reports of
//! their ends as effects (the world delivers them to the node again, as
//! the engine's [`crate::engine::lineage::RouterLineage`] casts them to a
//! partition), and a child's start is settled the way the engine settles
//! it: a child that already ended reports its outcome to its parent again,
//! a start refused fails the parent's step.

use std::sync::Arc;

use super::{Effect, SimMsg, SimNode, SimTransport};
use crate::dst::Plant;
use crate::engine::lineage::LineagePort;
use crate::engine::workflow_actor::{InputError, StartReply};
use crate::engine::{recovery, Metrics};
use crate::workflow::lineage::outcome_of;
use crate::workflow::{ChildOutcome, ChildSignal, ChildSpec, Input, LineageEffect, WorkflowState};

/// A lineage effect on its way to the workflow it concerns. Held in
/// memory only: an orchestrator crash loses those in flight, and recovery
/// performs the start of every running child again.
pub(in crate::dst) type Lineage = LineageEffect;

/// Who started a workflow, and so who hears how the start went.
pub(in crate::dst) enum Starter {
    /// The client, for its workflow number `wf`.
    Client(usize),
    /// A parent's child step; the workflow started is `child_id`.
    Parent(Box<ChildSpec>),
}

impl LineagePort for SimTransport {
    fn start_child(&self, spec: ChildSpec) {
        self.out.lock().push(Effect::Lineage(Lineage::Start {
            spec: Box::new(spec),
        }));
    }

    fn signal_child(&self, child_id: String, signal: ChildSignal) {
        self.out
            .lock()
            .push(Effect::Lineage(Lineage::Signal { child_id, signal }));
    }

    fn child_finished(&self, parent_id: String, child_id: String, outcome: ChildOutcome) {
        self.out.lock().push(Effect::Lineage(Lineage::Finished {
            parent_id,
            child_id,
            outcome,
        }));
    }
}

impl SimNode {
    /// A lineage effect arrives: an input to the workflow it concerns, as
    /// the engine's port routes it.
    pub fn lineage(&mut self, msg: Lineage) {
        match msg {
            Lineage::Start { spec } => self.start_child(*spec),
            Lineage::Signal { child_id, signal } => {
                let input = match signal {
                    ChildSignal::Cancel { reason } => Input::Cancel { reason },
                    ChildSignal::Pause => Input::Pause,
                    ChildSignal::Resume => Input::Resume,
                };
                self.route_input(child_id, input);
            }
            Lineage::Finished {
                parent_id,
                child_id,
                outcome,
            } => {
                let outcome = if self.plant == Some(Plant::WrongChildOutcome) {
                    flipped(outcome)
                } else {
                    outcome
                };
                self.route_input(parent_id, Input::ChildFinished { child_id, outcome });
            }
        }
    }

    fn route_input(&mut self, id: String, input: Input) {
        let msg = SimMsg::Input {
            input: Arc::new(input),
            fired: None,
            ack: None,
        };
        self.route(id, msg);
    }

    /// A child's start, at the version its parent's step names (the
    /// current one when none), as the production partition picks it; one
    /// that cannot start is settled at once.
    fn start_child(&mut self, spec: ChildSpec) {
        match self.ctx.pipelines.startable(&spec.pipeline, spec.version) {
            Ok((pipeline, def)) => {
                let id = spec.child_id.clone();
                let input = spec.input.clone();
                let msg = SimMsg::Start {
                    by: Starter::Parent(Box::new(spec)),
                    pipeline,
                    def,
                    input,
                };
                self.route(id, msg);
            }
            Err(not_startable) => {
                Metrics::inc(&self.ctx.metrics.rejected_inputs);
                let answer = Err(InputError::Rejected(not_startable.to_string()));
                let state = self.stored(&spec.child_id);
                self.settle_child(&spec, answer, state.as_ref());
            }
        }
    }

    /// The stored state of `id`, as a describe of a workflow without an
    /// actor reads it.
    pub(super) fn stored(&self, id: &str) -> Option<WorkflowState> {
        let p = self.partition(id) as u16;
        recovery::load(&self.ctx, p, id).ok().flatten()
    }

    /// Tells who started a workflow how the start went: the client gets
    /// its reply; a parent is settled with ([`Self::settle_child`]).
    /// `state` is the workflow as a describe after the answer finds it.
    pub(super) fn answer_start(
        &mut self,
        by: Starter,
        answer: Result<StartReply, InputError>,
        state: Option<&WorkflowState>,
    ) {
        match by {
            Starter::Client(wf) => self.effects.push(Effect::Reply {
                wf,
                ok: answer.is_ok(),
            }),
            Starter::Parent(spec) => self.settle_child(&spec, answer, state),
        }
    }

    /// What a child's start answered, settled as the engine's
    /// `settle_start` does: nothing for a new or running child; the
    /// outcome of one that already ended goes to the parent again; a start
    /// refused fails the parent's step unless the child exists after all;
    /// a failed append is left to the parent's next restart.
    pub(super) fn settle_child(
        &mut self,
        spec: &ChildSpec,
        answer: Result<StartReply, InputError>,
        state: Option<&WorkflowState>,
    ) {
        let outcome = match answer {
            Ok(StartReply { created: true, .. }) => None,
            Ok(StartReply { status, .. }) if !status.is_terminal() => None,
            Ok(_) => state.and_then(|s| self.ended_outcome(s)),
            Err(InputError::Rejected(reason)) => match state {
                Some(s) => self.ended_outcome(s),
                None => {
                    Metrics::inc(&self.ctx.metrics.children_refused);
                    Some(ChildOutcome::Failed {
                        reason: format!("cannot start child pipeline {}: {reason}", spec.pipeline),
                    })
                }
            },
            Err(_) => None,
        };
        if let Some(outcome) = outcome {
            self.effects.push(Effect::Lineage(Lineage::Finished {
                parent_id: spec.parent_id.clone(),
                child_id: spec.child_id.clone(),
                outcome,
            }));
        }
    }

    fn ended_outcome(&self, state: &WorkflowState) -> Option<ChildOutcome> {
        let def = self.ctx.pipelines.get(&state.pipeline).ok()?;
        outcome_of(state, &def)
    }
}

/// The planted bug [`Plant::WrongChildOutcome`]: the opposite outcome.
fn flipped(outcome: ChildOutcome) -> ChildOutcome {
    match outcome {
        ChildOutcome::Succeeded { .. } => ChildOutcome::Failed {
            reason: "planted: the child completed".into(),
        },
        ChildOutcome::Failed { .. } | ChildOutcome::Cancelled { .. } => ChildOutcome::Succeeded {
            output: "{}".into(),
        },
    }
}
