//! The simulated world of one seed: event queue, network, client and
//! workers around the simulated orchestrator node ([`super::node`]).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;

mod setup;
mod workers;

use setup::engine_config;

use workers::beat_every;

pub(super) use super::pipelines::{pipelines, DOOMED, SEGMENTS};

use super::check::{self, Ack, Evidence, Log};
use super::node::{Effect, Lineage, SimNode};
use super::rng::{Rng, TraceHash};
use super::{DstConfig, Report, Stats};
use crate::engine::{EngineConfig, ManualClock};
use crate::pipeline::PipelineDef;
use crate::storage::MemoryStorage;
use crate::transport::workflow_of_task;
use crate::workflow::{TaskResult, TaskSpec};

#[derive(Debug, Clone)]
enum OrchMsg {
    Start {
        wf: usize,
    },
    Started {
        task_id: String,
    },
    Beat {
        task_id: String,
    },
    Result(TaskResult),
    /// The client's signal `approved` for workflow number `wf`.
    Signal {
        wf: usize,
    },
}

#[derive(Debug, Clone)]
enum WorkerMsg {
    Task(Box<TaskSpec>),
    Cancel(String),
}

#[derive(Debug, Clone)]
enum Ev {
    ClientStart {
        wf: usize,
    },
    ToClient {
        wf: usize,
        ok: bool,
    },
    /// The client sends workflow `wf` its signal (once accepted), `left`
    /// more times after this one, with the same signal id.
    ClientSignal {
        wf: usize,
        left: u32,
    },
    ToOrch(OrchMsg),
    ToWorker {
        worker: usize,
        msg: WorkerMsg,
    },
    WorkerFinish {
        worker: usize,
        epoch: u64,
        run: u64,
    },
    WorkerBeat {
        worker: usize,
        epoch: u64,
        run: u64,
    },
    WorkerCrash {
        worker: usize,
    },
    WorkerRestart {
        worker: usize,
    },
    Flush {
        inc: u64,
    },
    Tick {
        inc: u64,
    },
    OrchCrash,
    OrchRestart,
    ClockJump {
        ms: u64,
    },
    /// A lineage effect of incarnation `inc` of the orchestrator.
    Lineage {
        inc: u64,
        msg: Lineage,
    },
}

impl Ev {
    /// A small number per kind, for the trace hash.
    fn code(&self) -> u64 {
        match self {
            Ev::ClientStart { .. } => 1,
            Ev::ToClient { .. } => 2,
            Ev::ToOrch(OrchMsg::Start { .. }) => 3,
            Ev::ToOrch(OrchMsg::Started { .. }) => 4,
            Ev::ToOrch(OrchMsg::Beat { .. }) => 5,
            Ev::ToOrch(OrchMsg::Result(_)) => 6,
            Ev::ToWorker { .. } => 7,
            Ev::WorkerFinish { .. } => 8,
            Ev::WorkerBeat { .. } => 9,
            Ev::WorkerCrash { .. } => 10,
            Ev::WorkerRestart { .. } => 11,
            Ev::Flush { .. } => 12,
            Ev::Tick { .. } => 13,
            Ev::OrchCrash => 14,
            Ev::OrchRestart => 15,
            Ev::ClockJump { .. } => 16,
            Ev::ToOrch(OrchMsg::Signal { .. }) => 17,
            Ev::ClientSignal { .. } => 18,
            Ev::Lineage { .. } => 19,
        }
    }
}

/// A pending delivery: ordered by time, then by the order it was queued.
struct Item {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Item {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Item {
    /// Reversed: `BinaryHeap` is a max-heap and the earliest item must come first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// One workflow the client wants run.
pub(super) struct ClientWf {
    pub id: String,
    pub pipeline: &'static str,
    pub input: String,
    /// The orchestrator answered a start: the workflow is accepted.
    pub accepted: bool,
}

#[derive(Default)]
struct Worker {
    up: bool,
    epoch: u64,
    /// Runs in progress by run number.
    runs: BTreeMap<u64, Box<TaskSpec>>,
}

struct World {
    cfg: DstConfig,
    rng: Rng,
    trace: TraceHash,
    now: u64,
    skew: u64,
    queue: BinaryHeap<Item>,
    seq: u64,
    storage: MemoryStorage,
    clock: Arc<ManualClock>,
    defs: Vec<PipelineDef>,
    orch: Option<SimNode>,
    /// The engine limits of this seed (drawn from it).
    engine: EngineConfig,
    inc: u64,
    workers: Vec<Worker>,
    next_run: u64,
    client: Vec<ClientWf>,
    /// When the last lineage effect to each workflow arrives (this incarnation).
    lineage_last: BTreeMap<String, u64>,
    log: Log,
    stats: Stats,
    problems: Vec<String>,
}

/// Runs one seed to the end and checks it.
pub fn run_seed(seed: u64, cfg: &DstConfig) -> Report {
    let defs = match pipelines() {
        Ok(d) => d,
        Err(e) => return failed(seed, format!("pipelines: {e}")),
    };
    let storage = MemoryStorage::new();
    let clock = Arc::new(ManualClock::new(START_MS));
    let mut rng = Rng::new(seed);
    let engine = engine_config(cfg, &mut rng);
    let orch = match SimNode::boot(&storage, &clock, &defs, cfg, &engine, rng.next_u64()) {
        Ok(o) => o,
        Err(e) => return failed(seed, format!("boot: {e}")),
    };
    let mut w = World {
        cfg: cfg.clone(),
        rng,
        trace: TraceHash::default(),
        now: 0,
        skew: 0,
        queue: BinaryHeap::new(),
        seq: 0,
        storage,
        clock,
        defs,
        orch: Some(orch),
        engine,
        inc: 0,
        workers: (0..cfg.workers.max(1))
            .map(|_| Worker {
                up: true,
                ..Worker::default()
            })
            .collect(),
        next_run: 0,
        client: Vec::new(),
        lineage_last: BTreeMap::new(),
        log: Log::default(),
        stats: Stats::default(),
        problems: Vec::new(),
    };
    w.setup();
    while let Some(item) = w.queue.pop() {
        if item.at > w.cfg.horizon_ms {
            let (timers, watched) = w.orch.as_ref().map_or((0, 0), SimNode::pending_counts);
            w.problems.push(format!(
                "horizon: still busy at {} s of virtual time (next: {:?} at {} s; armed timers {timers}, watched attempts {watched})",
                w.cfg.horizon_ms / 1000,
                item.ev,
                item.at / 1000
            ));
            if matches!(item.ev, Ev::Tick { .. }) && timers + watched == 0 {
                // A wake-up for a timer disarmed since: nothing is pending.
                w.problems.pop();
                continue;
            }
            break;
        }
        w.now = item.at;
        w.clock.set(START_MS + w.now + w.skew);
        let faulty = w.faulty();
        if let Some(o) = w.orch.as_mut() {
            o.faulty = faulty;
        }
        w.stats.events += 1;
        w.trace.word(item.at);
        w.trace.word(item.ev.code());
        w.handle(item.ev);
        w.after_orch();
    }
    w.stats.virtual_ms = w.now;
    let mut violations = std::mem::take(&mut w.problems);
    let evidence = Evidence {
        storage: &w.storage,
        defs: &w.defs,
        client: &w.client,
        log: &w.log,
    };
    violations.extend(check::check(&evidence, &mut w.stats));
    for v in &violations {
        w.trace.text(v);
    }
    Report {
        seed,
        trace_hash: w.trace.value(),
        stats: w.stats,
        violations,
    }
}

/// A message arriving at the orchestrator.
fn deliver(o: &mut SimNode, msg: OrchMsg, client: &[ClientWf]) {
    match msg {
        OrchMsg::Start { wf } => {
            if let Some(c) = client.get(wf) {
                o.start(wf, c.id.clone(), c.pipeline, c.input.clone());
            }
        }
        OrchMsg::Started { task_id } => {
            if let Some(id) = workflow_of_task(&task_id) {
                o.report_started(id, &task_id);
            }
        }
        OrchMsg::Beat { task_id } => {
            if let Some(id) = workflow_of_task(&task_id) {
                o.report_beat(id, &task_id);
            }
        }
        OrchMsg::Signal { wf } => {
            if let Some(c) = client.get(wf) {
                o.signal(c.id.clone(), wf);
            }
        }
        OrchMsg::Result(r) => match workflow_of_task(&r.task_id).map(str::to_string) {
            Some(id) => o.report_result(id, r),
            None => o.effects.push(Effect::Ack {
                task_id: r.task_id,
                ack: Ack::Rejected,
            }),
        },
    }
}

/// Engine time at virtual time 0 (2026-01-01).
const START_MS: u64 = 1_767_225_600_000;

fn failed(seed: u64, why: String) -> Report {
    Report {
        seed,
        trace_hash: 0,
        stats: Stats::default(),
        violations: vec![why],
    }
}

impl World {
    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Item {
            at,
            seq: self.seq,
            ev,
        });
    }

    fn faulty(&self) -> bool {
        self.now < self.cfg.fault_window_ms
    }

    /// A network delivery after `extra_ms`: maybe lost, maybe twice, delayed.
    fn send(&mut self, extra_ms: u64, ev: Ev) {
        if self.faulty() && self.rng.chance(self.cfg.drop_rate) {
            self.stats.dropped += 1;
            self.trace.word(0xd0);
            return;
        }
        let d = self.rng.range(0, self.cfg.delay_max_ms);
        if self.faulty() && self.rng.chance(self.cfg.duplicate_rate) {
            self.stats.duplicated += 1;
            let d2 = self.rng.range(0, self.cfg.delay_max_ms * 4);
            self.push(self.now + extra_ms + d2, ev.clone());
        }
        self.push(self.now + extra_ms + d, ev);
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::ClientStart { wf } => {
                if self.client.get(wf).is_some_and(|c| !c.accepted) {
                    self.send(0, Ev::ToOrch(OrchMsg::Start { wf }));
                    self.push(self.now + 3_000, Ev::ClientStart { wf });
                }
            }
            Ev::ClientSignal { wf, left } => {
                let accepted = self.client.get(wf).is_some_and(|c| c.accepted);
                if accepted {
                    self.send(0, Ev::ToOrch(OrchMsg::Signal { wf }));
                }
                if left > 0 {
                    let left = if accepted { left - 1 } else { left };
                    self.push(self.now + 3_000, Ev::ClientSignal { wf, left });
                }
            }
            Ev::ToClient { wf, ok } => {
                if ok {
                    if let Some(c) = self.client.get_mut(wf) {
                        if !c.accepted {
                            c.accepted = true;
                            self.stats.accepted += 1;
                        }
                    }
                }
            }
            Ev::ToOrch(msg) => {
                if let OrchMsg::Result(r) = &msg {
                    self.trace.text(&r.task_id);
                }
                match self.orch.as_mut() {
                    Some(o) => deliver(o, msg, &self.client),
                    None => self.stats.dropped += 1,
                }
            }
            Ev::ToWorker { worker, msg } => self.worker_msg(worker, msg),
            Ev::WorkerFinish { worker, epoch, run } => self.worker_finish(worker, epoch, run),
            Ev::WorkerBeat { worker, epoch, run } => {
                let Some(w) = self.workers.get(worker) else {
                    return;
                };
                if w.epoch != epoch {
                    return;
                }
                if let Some(spec) = w.runs.get(&run) {
                    let task_id = spec.task_id.clone();
                    let every = beat_every(spec);
                    self.send(0, Ev::ToOrch(OrchMsg::Beat { task_id }));
                    self.push(self.now + every, Ev::WorkerBeat { worker, epoch, run });
                }
            }
            Ev::WorkerCrash { worker } => {
                if let Some(w) = self.workers.get_mut(worker) {
                    if w.up {
                        w.up = false;
                        w.epoch += 1;
                        w.runs.clear();
                        self.stats.worker_crashes += 1;
                        let at = self.now + self.rng.range(500, 5_000);
                        self.push(at, Ev::WorkerRestart { worker });
                    }
                }
            }
            Ev::WorkerRestart { worker } => {
                if let Some(w) = self.workers.get_mut(worker) {
                    w.up = true;
                }
            }
            Ev::Flush { inc } => {
                if inc == self.inc {
                    if let Some(o) = self.orch.as_mut() {
                        self.stats.flushes += 1;
                        if let Err(e) = o.flush() {
                            self.problems.push(format!("flush failed: {e}"));
                        }
                    }
                }
            }
            Ev::Tick { inc } => {
                if inc == self.inc {
                    if let Some(o) = self.orch.as_mut() {
                        if o.tick_at == Some(self.now) {
                            o.tick_at = None;
                            self.stats.timeouts += o.tick();
                        }
                    }
                }
            }
            Ev::OrchCrash => {
                if self.orch.take().is_some() {
                    let lost = self.storage.unsynced_ops() as u64;
                    self.storage.crash();
                    self.stats.orchestrator_crashes += 1;
                    if lost > 0 {
                        self.stats.crashes_losing_writes += 1;
                        self.stats.lost_ops += lost;
                    }
                    self.trace.word(lost);
                    self.inc += 1;
                    self.lineage_last.clear();
                    let at = self.now + self.rng.range(50, 2_000);
                    self.push(at, Ev::OrchRestart);
                }
            }
            Ev::OrchRestart => {
                if self.orch.is_none() {
                    let seed = self.rng.next_u64();
                    let booted = SimNode::boot(
                        &self.storage,
                        &self.clock,
                        &self.defs,
                        &self.cfg,
                        &self.engine,
                        seed,
                    );
                    match booted {
                        Ok(o) => self.orch = Some(o),
                        Err(e) => self.problems.push(format!("recovery failed: {e}")),
                    }
                }
            }
            Ev::Lineage { inc, msg } => self.deliver_lineage(inc, msg),
            Ev::ClockJump { ms } => {
                self.skew += ms;
                self.stats.clock_jumps += 1;
                self.clock.set(START_MS + self.now + self.skew);
                if let Some(o) = self.orch.as_mut() {
                    // The partition's next tick reads the new time.
                    o.tick_at = None;
                }
            }
        }
    }

    /// Turns the orchestrator's effects into deliveries, and schedules its
    /// flush and its next tick.
    fn after_orch(&mut self) {
        let Some(o) = self.orch.as_mut() else {
            return;
        };
        let effects = std::mem::take(&mut o.effects);
        let needs_flush = o.unflushed && o.flush_at.is_none();
        let next_due = o.next_due();
        let tick_at = o.tick_at;
        // Ticks also come periodically while a core waits for one (held
        // tasks, a slot, passivation) and while retention may purge.
        let periodic = (o.wants_tick()
            || self.now < self.cfg.fault_window_ms + self.cfg.retention_window_ms)
            .then_some(self.now + self.cfg.periodic_tick_ms.max(1));
        for e in effects {
            match e {
                Effect::Reply { wf, ok } => {
                    self.trace.word(0x100 + wf as u64 * 2 + u64::from(ok));
                    self.send(0, Ev::ToClient { wf, ok });
                }
                Effect::Dispatch(spec) => {
                    self.stats.dispatches += 1;
                    self.trace.text(&spec.task_id);
                    let worker = self.rng.index(self.workers.len());
                    self.send(
                        0,
                        Ev::ToWorker {
                            worker,
                            msg: WorkerMsg::Task(spec),
                        },
                    );
                }
                Effect::Cancel(task_id) => {
                    for worker in 0..self.workers.len() {
                        self.send(
                            0,
                            Ev::ToWorker {
                                worker,
                                msg: WorkerMsg::Cancel(task_id.clone()),
                            },
                        );
                    }
                }
                Effect::Ack { task_id, ack } => {
                    self.trace.text(&task_id);
                    self.trace.word(ack as u64);
                    self.log.acks.push((task_id, ack));
                }
                Effect::Purging { id, records } => {
                    self.stats.purged += 1;
                    self.trace.text(&id);
                    self.log.purged.insert(id, records);
                }
                Effect::Lineage(msg) => self.send_lineage(msg),
                Effect::Wrote => {
                    self.stats.commits += 1;
                    if self.faulty() && self.rng.chance(self.cfg.crash_in_commit_window_rate) {
                        let at = self.now + self.rng.range(0, self.cfg.commit_delay_max_ms);
                        self.push(at, Ev::OrchCrash);
                    }
                }
            }
        }
        let inc = self.inc;
        if needs_flush {
            let at = self.now + self.rng.range(1, self.cfg.commit_delay_max_ms.max(1));
            if let Some(o) = self.orch.as_mut() {
                o.flush_at = Some(at);
            }
            self.push(at, Ev::Flush { inc });
        }
        // Engine time → virtual time; a partition never ticks in the past.
        let due_at = next_due.map(|due| due.saturating_sub(START_MS + self.skew).max(self.now + 1));
        let wake = match (due_at, periodic) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(at) = wake {
            if tick_at.is_none_or(|t| at < t) {
                if let Some(o) = self.orch.as_mut() {
                    o.tick_at = Some(at);
                }
                self.push(at, Ev::Tick { inc });
            }
        }
    }
}
