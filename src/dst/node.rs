//! One incarnation of the simulated orchestrator: the production partition
//! cores ([`PartitionCore`]) and workflow shells ([`WorkflowShell`]) driven
//! on one thread, in virtual time. What it models instead of the runtime is
//! only the part no production code decides: actors are structs with an
//! inbox, a commit is a write that becomes durable at the next flush, and
//! an actor crash or a failed actor start is a coin flip. Everything here
//! dies in an orchestrator crash.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;

mod upkeep;

use super::check::Ack;
use super::rng::Rng;
use super::{DstConfig, Plant};
use crate::engine::partition_core::{
    Action, ActorProgress, CoreConfig, Init, PartitionCore, Routable,
};
use crate::engine::recovery;
use crate::engine::transition::PartitionTimes;
use crate::engine::workflow_shell::{Fold, QueuedInput, StartCommit, StartStep, WorkflowShell};
use crate::engine::{EngineConfig, EngineCtx, Hooks, ManualClock, Metrics, PipelineRegistry};
use crate::pipeline::PipelineDef;
use crate::storage::store::WorkflowStore;
use crate::storage::{GroupCommitter, MemoryStorage, Storage};
use crate::transport::Transport;
use crate::workflow::{Input, JournalRecord, Outcome, TaskSpec, TimerKind, WorkflowState};

/// A message to a simulated workflow actor.
pub(super) enum SimMsg {
    /// The client's start of workflow number `wf`.
    Start {
        wf: usize,
        pipeline: String,
        input: String,
    },
    /// An input; `ack` is the result's task id and whether it is a success,
    /// to record how it was acknowledged (a re-delivered copy has none).
    Input {
        input: Arc<Input>,
        fired: Option<(u64, TimerKind)>,
        ack: Option<(String, bool)>,
    },
}

impl Routable for SimMsg {
    type Replay = QueuedInput;

    fn replay(&self) -> Option<QueuedInput> {
        match self {
            SimMsg::Input { input, fired, .. } => Some((input.clone(), fired.clone())),
            SimMsg::Start { .. } => None,
        }
    }

    fn redeliver((input, fired): QueuedInput) -> Self {
        SimMsg::Input {
            input,
            fired,
            ack: None,
        }
    }
}

/// What the orchestrator asks the world to do.
pub(super) enum Effect {
    Reply {
        wf: usize,
        ok: bool,
    },
    Dispatch(Box<TaskSpec>),
    Cancel(String),
    Ack {
        task_id: String,
        ack: Ack,
    },
    /// A batch was written; aim a crash at its fsync window (maybe).
    Wrote,
    /// A workflow is about to be purged by retention: its journal, for the checker.
    Purging {
        id: String,
        records: Vec<(u64, JournalRecord)>,
    },
}

/// The orchestrator's transport: commands are collected, the world delivers them.
#[derive(Default)]
struct SimTransport {
    out: Mutex<Vec<Effect>>,
}

impl Transport for SimTransport {
    fn dispatch(&self, task: Box<TaskSpec>) {
        self.out.lock().push(Effect::Dispatch(task));
    }
    fn cancel(&self, task_id: &str, _task_type: &str, _reason: &str) {
        self.out.lock().push(Effect::Cancel(task_id.to_string()));
    }
}

/// A unit of an actor's work, taken from its inbox the way the production
/// actor takes it: runs of inputs together, a start on its own.
enum Work {
    Start {
        wf: usize,
        pipeline: String,
        input: String,
    },
    Run(Vec<(QueuedInput, Option<(String, bool)>)>),
}

/// A written batch waiting for its flush, and what completes then.
enum Waiting {
    Start {
        wf: usize,
        commit: Box<StartCommit>,
    },
    Run {
        fold: Box<Fold>,
        acks: Vec<Option<(String, bool)>>,
    },
}

/// A simulated workflow actor.
struct SimActor {
    shell: WorkflowShell,
    inbox: VecDeque<SimMsg>,
    work: VecDeque<Work>,
    /// A batch of this actor waits for the flush.
    waiting: Option<Waiting>,
    /// Messages handled, as the production `Slot` counts them.
    handled: u64,
    listed: bool,
    /// The partition asked it to stop; it does once its work is done.
    stopping: bool,
}

struct SimPartition {
    times: Arc<Mutex<PartitionTimes>>,
    core: PartitionCore<SimMsg, WorkflowState, Box<TaskSpec>>,
    actors: BTreeMap<String, SimActor>,
}

struct Progress<'a> {
    times: &'a Mutex<PartitionTimes>,
    actors: &'a mut BTreeMap<String, SimActor>,
}

impl ActorProgress for Progress<'_> {
    fn handled(&self, id: &str) -> u64 {
        self.actors.get(id).map_or(0, |a| a.handled)
    }

    fn take_idle(&mut self) -> Vec<(String, u64)> {
        let reported = std::mem::take(&mut self.times.lock().idle);
        reported
            .into_iter()
            .filter_map(|id| {
                let a = self.actors.get_mut(&id)?;
                a.listed = false;
                Some((id, a.handled))
            })
            .collect()
    }

    fn take_finished(&mut self) -> Vec<String> {
        std::mem::take(&mut self.times.lock().finished)
    }
}

pub(super) struct SimNode {
    pub ctx: Arc<EngineCtx>,
    transport: Arc<SimTransport>,
    parts: Vec<SimPartition>,
    /// Actors whose batch was written since the last flush, in write order.
    pending: Vec<(usize, String)>,
    pub effects: Vec<Effect>,
    plant: Option<Plant>,
    rng: Rng,
    /// Faults (actor crashes, failed starts) are drawn only while true.
    pub faulty: bool,
    actor_crash_rate: f64,
    spawn_fail_rate: f64,
    /// Batches were written since the last flush.
    pub unflushed: bool,
    pub flush_at: Option<u64>,
    pub tick_at: Option<u64>,
}

impl SimNode {
    /// Starts like a restarted process: storage reopened, pipelines
    /// persisted, every partition recovered from storage alone.
    pub fn boot(
        storage: &MemoryStorage,
        clock: &Arc<ManualClock>,
        defs: &[PipelineDef],
        cfg: &DstConfig,
        engine: &EngineConfig,
        seed: u64,
    ) -> Result<SimNode, String> {
        let raw: Arc<dyn Storage> = Arc::new(storage.clone());
        let store = WorkflowStore::open(raw.clone(), cfg.partitions).map_err(|e| e.to_string())?;
        let pipelines = Arc::new(PipelineRegistry::new(store.clone(), defs.to_vec()));
        raw.write(&pipelines.persist_ops().map_err(|e| e.to_string())?, true)
            .map_err(|e| e.to_string())?;
        let transport = Arc::new(SimTransport::default());
        let ctx = Arc::new(EngineCtx {
            store,
            committer: Arc::new(GroupCommitter::detached()),
            clock: clock.clone(),
            transport: transport.clone(),
            pipelines,
            metrics: Arc::new(Metrics::default()),
            config: engine.clone(),
            hooks: Hooks::default(),
            capacity: Default::default(),
        });
        let mut node = SimNode {
            parts: Vec::new(),
            ctx,
            transport,
            pending: Vec::new(),
            effects: Vec::new(),
            plant: cfg.plant,
            rng: Rng::new(seed),
            faulty: true,
            actor_crash_rate: cfg.actor_crash_rate,
            spawn_fail_rate: cfg.spawn_fail_rate,
            unflushed: false,
            flush_at: None,
            tick_at: None,
        };
        for p in 0..cfg.partitions {
            let times = Arc::new(Mutex::new(PartitionTimes::default()));
            let mut core = PartitionCore::new(CoreConfig::for_partition(engine));
            core.plant(cfg.core_plant);
            let recovered = recovery::recover(&node.ctx, p, &times)?;
            for (wf, owed) in recovered.workflows {
                core.hold(wf.id.clone(), owed, true);
                core.cache_put(wf.id.clone(), Box::new(wf));
            }
            node.parts.push(SimPartition {
                times,
                core,
                actors: BTreeMap::new(),
            });
            let part = &mut node.parts[usize::from(p)];
            let mut progress = Progress {
                times: &part.times,
                actors: &mut part.actors,
            };
            part.core.enable_release(&mut progress);
            node.perform(usize::from(p));
        }
        Ok(node)
    }

    fn partition(&self, id: &str) -> usize {
        usize::from(self.ctx.store.partition_of(id))
    }

    fn collect_sent(&mut self) {
        self.effects
            .extend(std::mem::take(&mut *self.transport.out.lock()));
    }

    /// Routes `msg` to `id`'s actor through the partition core.
    pub fn route(&mut self, id: String, msg: SimMsg) {
        let p = self.partition(&id);
        let now = self.ctx.clock.now_ms();
        let part = &mut self.parts[p];
        let mut progress = Progress {
            times: &part.times,
            actors: &mut part.actors,
        };
        part.core.route(id, msg, now, &mut progress);
        self.perform(p);
    }

    /// A client's start: refused at once for an unknown pipeline, as the
    /// production partition does.
    pub fn start(&mut self, wf: usize, id: String, pipeline: &str, input: String) {
        if self.ctx.pipelines.current(pipeline).is_none() {
            self.effects.push(Effect::Reply { wf, ok: false });
            return;
        }
        let msg = SimMsg::Start {
            wf,
            pipeline: pipeline.to_string(),
            input,
        };
        self.route(id, msg);
    }

    pub fn report_started(&mut self, id: &str, task_id: &str) {
        let now = self.ctx.clock.now_ms();
        let p = self.partition(id);
        self.parts[p].times.lock().liveness.started(task_id, now);
    }

    pub fn report_beat(&mut self, id: &str, task_id: &str) {
        let now = self.ctx.clock.now_ms();
        let p = self.partition(id);
        self.parts[p].times.lock().liveness.heartbeat(task_id, now);
    }

    pub fn report_result(&mut self, id: String, result: crate::workflow::TaskResult) {
        let p = self.partition(&id);
        self.parts[p].times.lock().liveness.unwatch(&result.task_id);
        let success = matches!(result.outcome, crate::workflow::TaskOutcome::Succeeded(_));
        let ack = Some((result.task_id.clone(), success));
        let msg = SimMsg::Input {
            input: Arc::new(Input::TaskResult(result)),
            fired: None,
            ack,
        };
        self.route(id, msg);
    }

    /// Performs what partition `p`'s core decided, in order.
    fn perform(&mut self, p: usize) {
        while let Some(action) = self.parts[p].core.poll() {
            match action {
                Action::Spawn { id, init, deliver } => self.spawn(p, id, init, deliver),
                Action::Deliver { id, msg } => {
                    match self.parts[p].actors.get_mut(&id) {
                        Some(a) => a.inbox.push_back(msg),
                        None => {
                            self.parts[p].core.undelivered(&id);
                            continue;
                        }
                    }
                    self.pump(p, &id);
                }
                Action::Stop { id } => {
                    if let Some(a) = self.parts[p].actors.get_mut(&id) {
                        a.stopping = true;
                    }
                    self.pump(p, &id);
                }
                Action::Crashed { .. } => Metrics::inc(&self.ctx.metrics.actor_restarts),
                Action::Park { id, reason, .. } => {
                    let outcome = self.park(p, &id, reason);
                    self.parts[p].core.parked(&id, outcome);
                }
                Action::Refuse { id, msg, .. } => self.refuse(p, &id, msg),
                Action::Drop(msgs) => drop(msgs),
                Action::Send(release) => {
                    let times = self.parts[p].times.clone();
                    recovery::send_owed(&self.ctx, &times, release.tasks, release.resend);
                    self.collect_sent();
                }
            }
        }
    }

    fn spawn(&mut self, p: usize, id: String, init: Init<WorkflowState>, deliver: Vec<SimMsg>) {
        if self.faulty && self.rng.chance(self.spawn_fail_rate) {
            // Its load "panicked": nothing started.
            let core = &mut self.parts[p].core;
            core.spawn_failed(&id, "injected fault: load panicked".into(), deliver);
            return;
        }
        let times = self.parts[p].times.clone();
        let shell = WorkflowShell::open(id.clone(), p as u16, self.ctx.clone(), times, init);
        self.parts[p].actors.insert(
            id.clone(),
            SimActor {
                shell,
                inbox: deliver.into(),
                work: VecDeque::new(),
                waiting: None,
                handled: 0,
                listed: false,
                stopping: false,
            },
        );
        self.parts[p].core.spawned(&id);
        self.pump(p, &id);
    }

    /// Runs `id`'s actor until its work waits for a flush or is done.
    fn pump(&mut self, p: usize, id: &str) {
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
                    wf,
                    pipeline,
                    input,
                } => self.run_start(p, id, wf, &pipeline, &input),
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
    fn note_done(&mut self, p: usize, id: &str) {
        let part = &mut self.parts[p];
        if let Some(a) = part.actors.get_mut(id) {
            if a.waiting.is_none() && a.work.is_empty() && !a.listed {
                a.listed = true;
                part.times.lock().idle.push(id.to_string());
            }
        }
    }

    fn run_start(&mut self, p: usize, id: &str, wf: usize, pipeline: &str, input: &str) {
        let Some((pref, def)) = self.ctx.pipelines.current(pipeline) else {
            self.effects.push(Effect::Reply { wf, ok: false });
            self.handled(p, id, 1);
            return;
        };
        let Some(a) = self.parts[p].actors.get_mut(id) else {
            return;
        };
        match a.shell.stage_start(pref, def, input) {
            StartStep::Answer(r) => {
                self.effects.push(Effect::Reply { wf, ok: r.is_ok() });
                self.handled(p, id, 1);
            }
            StartStep::Commit(mut commit) => {
                let ops = std::mem::take(&mut commit.ops);
                let waiting = Waiting::Start { wf, commit };
                self.write(p, id, &ops, waiting);
            }
        }
    }

    fn run_inputs(&mut self, p: usize, id: &str, run: Vec<(QueuedInput, Option<(String, bool)>)>) {
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
    fn handled(&mut self, p: usize, id: &str, n: u64) {
        if let Some(a) = self.parts[p].actors.get_mut(id) {
            a.handled += n;
        }
    }

    fn acknowledge(
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
    fn write(&mut self, p: usize, id: &str, ops: &[crate::storage::Op], waiting: Waiting) {
        if self.ctx.store.storage().write(ops, false).is_err() {
            // The journal append failed: nothing changed.
            Metrics::inc(&self.ctx.metrics.commit_errors);
            if let Waiting::Start { wf, .. } = waiting {
                self.effects.push(Effect::Reply { wf, ok: false });
            }
            let n = match &waiting {
                Waiting::Start { .. } => 1,
                Waiting::Run { acks, .. } => acks.len() as u64,
            };
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
    fn complete(&mut self, p: usize, id: &str) {
        let Some(a) = self.parts[p].actors.get_mut(id) else {
            return;
        };
        let Some(waiting) = a.waiting.take() else {
            return;
        };
        match waiting {
            Waiting::Start { wf, commit } => {
                let r = a.shell.start_committed(commit);
                a.handled += 1;
                self.effects.push(Effect::Reply { wf, ok: r.is_ok() });
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
    fn crash_actor(&mut self, p: usize, id: &str) {
        let Some(a) = self.parts[p].actors.remove(id) else {
            return;
        };
        let part = &mut self.parts[p];
        part.core
            .crashed(id, "injected fault: actor panicked".into(), a.handled);
        self.perform(p);
    }

    fn stop(&mut self, p: usize, id: &str) {
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
                wf,
                pipeline,
                input,
            } => {
                if !run.is_empty() {
                    a.work.push_back(Work::Run(std::mem::take(&mut run)));
                }
                a.work.push_back(Work::Start {
                    wf,
                    pipeline,
                    input,
                });
            }
        }
    }
    if !run.is_empty() {
        a.work.push_back(Work::Run(run));
    }
}
