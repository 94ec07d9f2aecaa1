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

mod actor;
mod lineage;
mod upkeep;

use actor::SimActor;
pub(super) use lineage::{Lineage, Starter};

use super::check::Ack;
use super::rng::Rng;
use super::{DstConfig, Plant};
use crate::engine::partition_core::{
    Action, ActorProgress, CoreConfig, Init, PartitionCore, Routable,
};
use crate::engine::partition_shared::PartitionShared;
use crate::engine::recovery;
use crate::engine::workflow_shell::{QueuedInput, WorkflowShell};
use crate::engine::{EngineConfig, EngineCtx, Hooks, ManualClock, Metrics, PipelineRegistry};
use crate::pipeline::PipelineDef;
use crate::storage::store::WorkflowStore;
use crate::storage::{GroupCommitter, MemoryStorage, Storage};
use crate::transport::Transport;
use crate::workflow::PipelineRef;
use crate::workflow::{Input, JournalRecord, TaskSpec, TimerKind, WorkflowState};

/// A message to a simulated workflow actor.
pub(super) enum SimMsg {
    /// A start by the client or by a parent, on the pipeline version
    /// picked when it was routed.
    Start {
        by: Starter,
        pipeline: PipelineRef,
        def: Arc<PipelineDef>,
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
    /// A child's start, a signal to a child, or a child's end for its parent.
    Lineage(Lineage),
}

/// The orchestrator's transport and lineage port: commands are collected,
/// the world delivers them.
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

struct SimPartition {
    shared: Arc<Mutex<PartitionShared>>,
    core: PartitionCore<SimMsg, WorkflowState, Box<TaskSpec>>,
    actors: BTreeMap<String, SimActor>,
}

struct Progress<'a> {
    shared: &'a Mutex<PartitionShared>,
    actors: &'a mut BTreeMap<String, SimActor>,
}

impl ActorProgress for Progress<'_> {
    fn handled(&self, id: &str) -> u64 {
        self.actors.get(id).map_or(0, |a| a.handled)
    }

    fn take_idle(&mut self) -> Vec<(String, u64)> {
        let reported = std::mem::take(&mut self.shared.lock().reports.idle);
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
        std::mem::take(&mut self.shared.lock().reports.finished)
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
        // Set before recovery, which performs the start of every running
        // child again.
        ctx.hooks.lineage.set(transport.clone());
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
            let shared = Arc::new(Mutex::new(PartitionShared::default()));
            let mut core = PartitionCore::new(CoreConfig::for_partition(engine));
            core.plant(cfg.core_plant);
            let recovered = recovery::recover(&node.ctx, p, &shared)?;
            for (wf, owed) in recovered.workflows {
                core.hold(wf.id.clone(), &wf.pipeline.name, owed, true);
                core.cache_put(wf.id.clone(), Box::new(wf));
            }
            node.parts.push(SimPartition {
                shared,
                core,
                actors: BTreeMap::new(),
            });
            let part = &mut node.parts[usize::from(p)];
            let mut progress = Progress {
                shared: &part.shared,
                actors: &mut part.actors,
            };
            part.core.enable_release(&mut progress);
            node.perform(usize::from(p));
        }
        node.collect_sent();
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
            shared: &part.shared,
            actors: &mut part.actors,
        };
        part.core.route(id, msg, now, &mut progress);
        self.perform(p);
    }

    /// A client's start: refused at once for an unknown pipeline, as the
    /// production partition does.
    pub fn start(&mut self, wf: usize, id: String, pipeline: &str, input: String) {
        let Some((pipeline, def)) = self.ctx.pipelines.current(pipeline) else {
            self.effects.push(Effect::Reply { wf, ok: false });
            return;
        };
        let msg = SimMsg::Start {
            by: Starter::Client(wf),
            pipeline,
            def,
            input,
        };
        self.route(id, msg);
    }

    /// The client's signal `approved` for workflow number `wf` (its id
    /// stays the same across resends; payload `{"n":1}`).
    pub fn signal(&mut self, id: String, wf: usize) {
        let msg = SimMsg::Input {
            input: Arc::new(Input::Signal {
                name: "approved".to_string(),
                id: format!("sig-{wf}"),
                payload: r#"{"n":1}"#.to_string(),
                pending_max: self.ctx.config.signals.pending_max,
            }),
            fired: None,
            ack: None,
        };
        self.route(id, msg);
    }

    pub fn report_started(&mut self, id: &str, task_id: &str) {
        let now = self.ctx.clock.now_ms();
        let p = self.partition(id);
        self.parts[p]
            .shared
            .lock()
            .schedule
            .liveness
            .started(task_id, now);
    }

    pub fn report_beat(&mut self, id: &str, task_id: &str) {
        let now = self.ctx.clock.now_ms();
        let p = self.partition(id);
        self.parts[p]
            .shared
            .lock()
            .schedule
            .liveness
            .heartbeat(task_id, now);
    }

    pub fn report_result(&mut self, id: String, result: crate::workflow::TaskResult) {
        let p = self.partition(&id);
        self.parts[p]
            .shared
            .lock()
            .schedule
            .liveness
            .unwatch(&result.task_id);
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
                    let shared = self.parts[p].shared.clone();
                    recovery::send_owed(&self.ctx, &shared, release.tasks, release.resend);
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
        let shared = self.parts[p].shared.clone();
        let shell = WorkflowShell::open(id.clone(), p as u16, self.ctx.clone(), shared, init);
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
}
