//! The simulated cluster: nodes with their shells, the bucket, the journal,
//! the network and the faults, driven by one event queue in virtual time.

use std::collections::{BTreeMap, BinaryHeap};

use super::check::{check, Outcome};
use super::journal::SimJournal;
use super::kv::SimKv;
use super::{ClusterPlant, ClusterReport, ClusterSimConfig, ClusterStats};
use crate::cluster::{Epoch, Input, NodeId, Ownership, RecordKind};
use crate::dst::rng::{Rng, TraceHash};

mod events;
mod node_shell;

use events::{Ev, NodeMsg, Scheduled};
use node_shell::Serve;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    Up,
    Down,
    Gone,
}

struct SimNode {
    id: NodeId,
    /// Bumped by a crash; events of an earlier incarnation are dropped.
    inc: u64,
    life: Life,
    leaving: bool,
    paused_until: u64,
    core: Ownership,
    serving: BTreeMap<u16, Serve>,
}

struct World<'a> {
    cfg: &'a ClusterSimConfig,
    rng: Rng,
    trace: TraceHash,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    nodes: Vec<SimNode>,
    kv: SimKv,
    journal: SimJournal,
    acked: Vec<(u16, u64, Epoch, NodeId)>,
    stats: ClusterStats,
    violations: Vec<String>,
    /// When each partition last had a commit accepted.
    last_commit: Vec<u64>,
}

/// Runs one seed and judges it.
pub fn run_seed(seed: u64, cfg: &ClusterSimConfig) -> ClusterReport {
    let mut w = World {
        cfg,
        rng: Rng::new(seed),
        trace: TraceHash::default(),
        now: 0,
        seq: 0,
        queue: BinaryHeap::new(),
        nodes: Vec::new(),
        kv: SimKv::new(cfg.lease.ttl_ms),
        journal: SimJournal::new(
            cfg.partitions,
            cfg.plant != Some(ClusterPlant::NoExpectedSequence),
        ),
        acked: Vec::new(),
        stats: ClusterStats::default(),
        violations: Vec::new(),
        last_commit: vec![0; usize::from(cfg.partitions)],
    };
    for _ in 0..cfg.nodes {
        w.add_node();
    }
    let window = cfg.fault_window_ms;
    for (max, kind) in [
        (cfg.pauses_max, 0),
        (cfg.crashes_max, 1),
        (cfg.joins_max, 2),
        (cfg.leaves_max, 3),
    ] {
        for _ in 0..w.rng.range(0, max) {
            let at = w.rng.range(1, window);
            let ev = match kind {
                0 => Ev::Pause,
                1 => Ev::Crash,
                2 => Ev::Join,
                _ => Ev::Leave,
            };
            w.push(at, ev);
        }
    }
    let end = window + cfg.drain_ms;
    while let Some(s) = w.queue.pop() {
        if s.at > end {
            break;
        }
        w.now = s.at;
        w.stats.events += 1;
        w.trace.word(s.at);
        w.trace.word(s.ev.tag());
        w.step(s.ev);
    }
    w.now = end;
    for last in &w.last_commit {
        w.stats.unserved_ms_max = w.stats.unserved_ms_max.max(end - last);
    }
    w.stats.acquisitions = w.kv.acquisitions.len() as u64;
    let live = w
        .nodes
        .iter()
        .filter(|n| n.life == Life::Up)
        .map(|n| (n.id.clone(), n.core.held().len()))
        .collect();
    let mut end_state: Vec<String> = w
        .nodes
        .iter()
        .map(|n| {
            format!(
                "{} {:?} paused_until={} {:?}",
                n.id, n.life, n.paused_until, n.core
            )
        })
        .collect();
    let (nodes, leases) = w.kv.scan(end);
    end_state.push(format!("bucket nodes={nodes:?} leases={leases:?}"));
    let mut violations = std::mem::take(&mut w.violations);
    violations.extend(check(&Outcome {
        journal: &w.journal,
        acquisitions: &w.kv.acquisitions,
        acked: &w.acked,
        live,
        end_ms: end,
        served_within_ms: cfg.served_within_ms,
    }));
    ClusterReport {
        seed,
        trace_hash: w.trace.value(),
        stats: w.stats,
        violations,
        end_state,
    }
}

impl World<'_> {
    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at,
            seq: self.seq,
            ev,
        });
    }

    fn delay(&mut self) -> u64 {
        self.now + self.rng.range(1, self.cfg.delay_max_ms)
    }

    /// Sends `ev` after a network delay, unless the network drops it
    /// (only during the fault window: the faults stop, losses too).
    fn send_lossy(&mut self, ev: Ev) {
        if self.now < self.cfg.fault_window_ms && self.rng.chance(self.cfg.drop_rate) {
            self.stats.kv_messages_dropped += 1;
        } else {
            let at = self.delay();
            self.push(at, ev);
        }
    }

    fn new_core(&self, id: &NodeId, inc: u64) -> Ownership {
        // Terms of an incarnation start above every term of an earlier one.
        Ownership::new(
            self.cfg.lease.clone(),
            id.clone(),
            self.cfg.partitions,
            inc * 1_000_000_000,
        )
    }

    fn add_node(&mut self) {
        let n = self.nodes.len();
        let id = format!("n{n}");
        let core = self.new_core(&id, 0);
        self.nodes.push(SimNode {
            id,
            inc: 0,
            life: Life::Up,
            leaving: false,
            paused_until: 0,
            core,
            serving: BTreeMap::new(),
        });
        self.start_loops(n);
    }

    fn start_loops(&mut self, n: usize) {
        let inc = self.nodes[n].inc;
        let t = self.now + self.rng.range(0, self.cfg.tick_ms);
        self.push(t, Ev::Tick(n, inc));
        let t = self.now + self.rng.range(1, self.cfg.commit_every_ms);
        self.push(t, Ev::Work(n, inc));
    }

    fn up_nodes(&self, leaving_too: bool) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&n| self.nodes[n].life == Life::Up && (leaving_too || !self.nodes[n].leaving))
            .collect()
    }

    fn step(&mut self, ev: Ev) {
        if let Some((n, inc)) = ev.on_node() {
            let node = &self.nodes[n];
            if node.inc != inc || node.life != Life::Up {
                return;
            }
            if self.now < node.paused_until {
                let at = node.paused_until;
                self.push(at, ev);
                return;
            }
        }
        match ev {
            Ev::Tick(n, inc) => {
                self.feed(n, Input::Tick);
                let at = self.now + self.cfg.tick_ms;
                self.push(at, Ev::Tick(n, inc));
            }
            Ev::Work(n, inc) => {
                self.work(n);
                let at = self.now + self.cfg.commit_every_ms;
                self.push(at, Ev::Work(n, inc));
            }
            Ev::ToNode(n, _, msg) => self.deliver(n, msg),
            Ev::Kv(n, inc, req) => {
                let result = self.kv.apply(self.now, &req);
                let input = Input::KvDone { id: req.id, result };
                self.send_lossy(Ev::ToNode(n, inc, NodeMsg::Core(input)));
            }
            Ev::Scan(n, inc) => {
                let (nodes, leases) = self.kv.scan(self.now);
                let input = Input::Scanned { nodes, leases };
                self.send_lossy(Ev::ToNode(n, inc, NodeMsg::Core(input)));
            }
            Ev::ReadTail(n, inc, partition, epoch) => {
                let last = self.journal.last(partition);
                let at = self.delay();
                let msg = NodeMsg::Tail {
                    partition,
                    epoch,
                    last,
                };
                self.push(at, Ev::ToNode(n, inc, msg));
            }
            Ev::Append {
                node,
                inc,
                partition,
                epoch,
                expected,
                kind,
            } => {
                let id = self.nodes[node].id.clone();
                let seq = self
                    .journal
                    .append(self.now, partition, expected, epoch, &id, kind);
                match seq {
                    Some(_) => {
                        self.stats.appends_accepted += 1;
                        if kind == RecordKind::Commit {
                            let last = &mut self.last_commit[usize::from(partition)];
                            self.stats.unserved_ms_max =
                                self.stats.unserved_ms_max.max(self.now - *last);
                            *last = self.now;
                        }
                    }
                    None => self.stats.appends_refused += 1,
                }
                let at = self.delay();
                let msg = NodeMsg::AppendDone {
                    partition,
                    epoch,
                    seq,
                };
                self.push(at, Ev::ToNode(node, inc, msg));
            }
            Ev::Pause => {
                let up = self.up_nodes(true);
                if !up.is_empty() {
                    let n = up[self.rng.index(up.len())];
                    let ms = self.rng.range(200, self.cfg.pause_max_ms);
                    self.pause(n, ms);
                    self.stats.pauses += 1;
                }
            }
            Ev::Crash => {
                let up = self.up_nodes(true);
                if !up.is_empty() {
                    let n = up[self.rng.index(up.len())];
                    let node = &mut self.nodes[n];
                    node.life = Life::Down;
                    node.inc += 1;
                    node.serving.clear();
                    self.stats.crashes += 1;
                    let at = self.now + self.rng.range(200, self.cfg.restart_after_max_ms);
                    self.push(at, Ev::Restart(n));
                }
            }
            Ev::Restart(n) => {
                let (id, inc) = (self.nodes[n].id.clone(), self.nodes[n].inc);
                let core = self.new_core(&id, inc);
                let node = &mut self.nodes[n];
                node.core = core;
                node.life = Life::Up;
                node.leaving = false;
                node.paused_until = 0;
                self.start_loops(n);
            }
            Ev::Join => {
                self.stats.joins += 1;
                self.add_node();
            }
            Ev::Leave => {
                let up = self.up_nodes(false);
                if up.len() >= 2 {
                    let n = up[self.rng.index(up.len())];
                    self.nodes[n].leaving = true;
                    self.stats.leaves += 1;
                    self.feed(n, Input::Leave);
                }
            }
        }
    }

    fn pause(&mut self, n: usize, ms: u64) {
        let node = &mut self.nodes[n];
        node.paused_until = node.paused_until.max(self.now + ms);
    }
}
