//! A simulated workflow actor: its inbox, the work it takes from it the
//! way the production actor does, and its batches waiting for the flush.

use std::collections::VecDeque;
use std::sync::Arc;

use super::{Effect, SimMsg, SimNode, Starter};
use crate::dst::check::Ack;
use crate::dst::Plant;
use crate::engine::workflow_actor::InputError;
use crate::engine::workflow_shell::{Fold, QueuedInput, StartCommit, StartStep, WorkflowShell};
use crate::engine::Metrics;
use crate::pipeline::PipelineDef;
use crate::workflow::{Outcome, PipelineRef};

/// A unit of an actor's work, taken from its inbox the way the production
/// actor takes it: runs of inputs together, a start on its own.
pub(super) enum Work {
    Start {
        by: Starter,
        pipeline: PipelineRef,
        def: Arc<PipelineDef>,
        input: String,
    },
    Run(Vec<(QueuedInput, Option<(String, bool)>)>),
}

/// A written batch waiting for its flush, and what completes then.
pub(super) enum Waiting {
    Start {
        by: Starter,
        commit: Box<StartCommit>,
    },
    Run {
        fold: Box<Fold>,
        acks: Vec<Option<(String, bool)>>,
    },
}

/// A simulated workflow actor.
pub(super) struct SimActor {
    pub(super) shell: WorkflowShell,
    pub(super) inbox: VecDeque<SimMsg>,
    pub(super) work: VecDeque<Work>,
    /// A batch of this actor waits for the flush.
    pub(super) waiting: Option<Waiting>,
    /// Messages handled, as the production `Slot` counts them.
    pub(super) handled: u64,
    pub(super) listed: bool,
    /// The partition asked it to stop; it does once its work is done.
    pub(super) stopping: bool,
}

impl SimNode {
    pub(super) fn pump(&mut self, p: usize, id: &str) {
        loop {
            let Some(a) = self.parts[p].actors.get_mut(id) else {
                return;
            };
            if a.waiting.is_some() {
                return;
            }
            if a.work.is_empty() {
                if a.inbox.is_empty() {
                    if a.stopping {
                        self.stop(p, id);
                    }
                    return;
                }
                take_inbox(a);
            }
            let Some(work) = a.work.pop_front() else {
                return;
            };
            match work {
                Work::Start {
                    by,
                    pipeline,
                    def,
                    input,
                } => self.run_start(p, id, by, pipeline, def, &input),
                Work::Run(run) => {
                    if self.faulty && self.rng.chance(self.actor_crash_rate) {
                        self.crash_actor(p, id);
                        return;
                    }
                    self.run_inputs(p, id, run);
                }
            }
            self.note_done(p, id);
        }
    }

    /// The actor finished what it took: it lists itself idle.
    pub(super) fn note_done(&mut self, p: usize, id: &str) {
        let part = &mut self.parts[p];
        if let Some(a) = part.actors.get_mut(id) {
            if a.waiting.is_none() && a.work.is_empty() && !a.listed {
                a.listed = true;
                part.shared.lock().reports.idle.push(id.to_string());
            }
        }
    }

    pub(super) fn run_start(
        &mut self,
        p: usize,
        id: &str,
        by: Starter,
        pipeline: PipelineRef,
        def: Arc<PipelineDef>,
        input: &str,
    ) {
        let Some(a) = self.parts[p].actors.get_mut(id) else {
            return;
        };
        match a.shell.stage_start(pipeline, def, input) {
            StartStep::Answer(r) => {
                let state = a.shell.describe().ok().flatten();
                self.answer_start(by, r.map_err(InputError::Rejected), state.as_ref());
                self.handled(p, id, 1);
            }
            StartStep::Commit(mut commit) => {
                let ops = std::mem::take(&mut commit.ops);
                let waiting = Waiting::Start { by, commit };
                self.write(p, id, &ops, waiting);
            }
        }
    }

    pub(super) fn run_inputs(
        &mut self,
        p: usize,
        id: &str,
        run: Vec<(QueuedInput, Option<(String, bool)>)>,
    ) {
        let Some(a) = self.parts[p].actors.get_mut(id) else {
            return;
        };
        let (inputs, acks): (Vec<QueuedInput>, Vec<Option<(String, bool)>>) =
            run.into_iter().unzip();
        let n = acks.len() as u64;
        let mut fold = a.shell.fold(inputs);
        if fold.ops.is_empty() {
            let answers = a.shell.fold_committed(fold);
            self.collect_sent();
            self.acknowledge(acks, answers);
            self.handled(p, id, n);
            return;
        }
        let ops = std::mem::take(&mut fold.ops);
        self.write(
            p,
            id,
            &ops,
            Waiting::Run {
                fold: Box::new(fold),
                acks,
            },
        );
    }

    /// Counts `n` handled messages.
    pub(super) fn handled(&mut self, p: usize, id: &str, n: u64) {
        if let Some(a) = self.parts[p].actors.get_mut(id) {
            a.handled += n;
        }
    }

    pub(super) fn acknowledge(
        &mut self,
        acks: Vec<Option<(String, bool)>>,
        answers: Vec<crate::engine::workflow_actor::InputReply>,
    ) {
        for (ack, answer) in acks.into_iter().zip(answers) {
            let Some((task_id, success)) = ack else {
                continue;
            };
            let ack = match answer {
                Ok(Outcome::Applied) if success => Ack::AppliedSuccess,
                Ok(Outcome::Applied) => Ack::AppliedOther,
                Ok(Outcome::Ignored(_)) => Ack::Ignored,
                Ok(Outcome::Rejected(_)) | Err(_) => Ack::Rejected,
            };
            self.effects.push(Effect::Ack { task_id, ack });
        }
    }

    /// Writes a batch unsynced (visible, not durable); what it implies
    /// waits for the next flush, like the group committer's queue.
    pub(super) fn write(
        &mut self,
        p: usize,
        id: &str,
        ops: &[crate::storage::Op],
        waiting: Waiting,
    ) {
        if self.ctx.store.storage().write(ops, false).is_err() {
            // The journal append failed: nothing changed.
            Metrics::inc(&self.ctx.metrics.commit_errors);
            let n = match &waiting {
                Waiting::Start { .. } => 1,
                Waiting::Run { acks, .. } => acks.len() as u64,
            };
            if let Waiting::Start { by, .. } = waiting {
                let failed = Err(InputError::Journal("append failed".into()));
                self.answer_start(by, failed, None);
            }
            self.handled(p, id, n);
            return;
        }
        self.effects.push(Effect::Wrote);
        self.unflushed = true;
        if let Some(a) = self.parts[p].actors.get_mut(id) {
            a.waiting = Some(waiting);
        }
        self.pending.push((p, id.to_string()));
        if self.plant == Some(Plant::AckBeforeSync) {
            // The planted bug: the effects run before the flush.
            self.pending.pop();
            self.complete(p, id);
        }
    }

    /// The flush: everything written so far becomes durable, then the
    /// waiting transitions take effect in the order they were written.
    pub fn flush(&mut self) -> Result<(), String> {
        self.flush_at = None;
        self.unflushed = false;
        self.ctx
            .store
            .storage()
            .write(&[], true)
            .map_err(|e| e.to_string())?;
        for (p, id) in std::mem::take(&mut self.pending) {
            self.complete(p, &id);
            self.note_done(p, &id);
            self.pump(p, &id);
        }
        Ok(())
    }

    /// After the batch is durable: evolve, run the commands, answer.
    pub(super) fn complete(&mut self, p: usize, id: &str) {
        let Some(a) = self.parts[p].actors.get_mut(id) else {
            return;
        };
        let Some(waiting) = a.waiting.take() else {
            return;
        };
        match waiting {
            Waiting::Start { by, commit } => {
                let r = a.shell.start_committed(commit);
                a.handled += 1;
                let state = a.shell.describe().ok().flatten();
                self.answer_start(by, r.map_err(InputError::Rejected), state.as_ref());
            }
            Waiting::Run { fold, acks } => {
                let answers = a.shell.fold_committed(*fold);
                a.handled += acks.len() as u64;
                self.collect_sent();
                self.acknowledge(acks, answers);
            }
        }
        self.collect_sent();
    }

    /// The actor "panicked" at the start of a run: it is gone with its
    /// inbox, as a crashed ractor actor is, and its partition decides.
    pub(super) fn crash_actor(&mut self, p: usize, id: &str) {
        let Some(a) = self.parts[p].actors.remove(id) else {
            return;
        };
        let part = &mut self.parts[p];
        part.core
            .crashed(id, "injected fault: actor panicked".into(), a.handled);
        self.perform(p);
    }

    pub(super) fn stop(&mut self, p: usize, id: &str) {
        let Some(a) = self.parts[p].actors.remove(id) else {
            return;
        };
        let state = a.shell.into_state().map(Box::new);
        self.parts[p].core.stopped(id, state);
        self.perform(p);
    }
}

/// Takes everything in the inbox as work: runs of inputs together, a start
/// on its own, in order (as the production actor's drain does).
fn take_inbox(a: &mut SimActor) {
    let mut run = Vec::new();
    for msg in a.inbox.drain(..) {
        match msg {
            SimMsg::Input { input, fired, ack } => run.push(((input, fired), ack)),
            SimMsg::Start {
                by,
                pipeline,
                def,
                input,
            } => {
                if !run.is_empty() {
                    a.work.push_back(Work::Run(std::mem::take(&mut run)));
                }
                a.work.push_back(Work::Start {
                    by,
                    pipeline,
                    def,
                    input,
                });
            }
        }
    }
    if !run.is_empty() {
        a.work.push_back(Work::Run(run));
    }
}
