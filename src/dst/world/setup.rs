//! What a run starts with (the engine limits, the client's workflows, the
//! faults drawn for the fault window) and how lineage effects travel between workflows.

use super::{Ev, Rng, World, SEGMENTS};
use crate::dst::node::{Lineage, SimNode};
use crate::dst::pipelines::family_input;
use crate::dst::DstConfig;
use crate::engine::{EngineConfig, RetentionConfig};

impl World {
    pub(super) fn setup(&mut self) {
        let video = self.cfg.video_workflows;
        let flaky = video + self.cfg.flaky_workflows;
        let map = flaky + self.cfg.map_workflows;
        for i in 0..map + self.cfg.family_workflows {
            let (pipeline, id) = if i < video {
                ("video", format!("v-{i}"))
            } else if i < flaky {
                ("flaky", format!("f-{i}"))
            } else if i < map {
                ("segments", format!("m-{i}"))
            } else {
                ("family", format!("k-{i}"))
            };
            let input = match pipeline {
                "segments" => {
                    // Every other one skips `translate`.
                    let language = if i % 2 == 0 { "en" } else { "fr" };
                    format!(
                        r#"{{"video_id":"{id}","segments":{SEGMENTS},"language":"{language}"}}"#
                    )
                }
                // Every other family's child fails.
                "family" => family_input(&id, (i - map) % 2 == 1),
                _ => format!(r#"{{"video_id":"{id}"}}"#),
            };
            self.client.push(super::ClientWf {
                input,
                id,
                pipeline,
                accepted: false,
            });
            let at = self.rng.range(0, 2_000);
            self.push(at, Ev::ClientStart { wf: i });
            if pipeline == "segments" && i % 2 == 0 {
                let at = self.rng.range(0, 6_000);
                self.push(at, Ev::ClientSignal { wf: i, left: 6 });
            }
        }
        let window = self.cfg.fault_window_ms;
        let rate = self.cfg.worker_crashes_per_min;
        if rate > 0.0 {
            let mean_ms = 60_000.0 / rate;
            for worker in 0..self.workers.len() {
                let mut t = 0.0f64;
                loop {
                    t += -(1.0 - self.rng.unit()).ln() * mean_ms;
                    if t >= window as f64 {
                        break;
                    }
                    self.push(t as u64, Ev::WorkerCrash { worker });
                }
            }
        }
        for _ in 0..self.rng.range(0, self.cfg.orchestrator_crashes_max) {
            let at = self.rng.range(0, window);
            self.push(at, Ev::OrchCrash);
        }
        for _ in 0..self.rng.range(0, self.cfg.clock_jumps_max) {
            let at = self.rng.range(0, window);
            let ms = self.rng.range(1_000, self.cfg.clock_jump_max_ms.max(1_000));
            self.push(at, Ev::ClockJump { ms });
        }
    }

    /// A lineage effect on its way: an in-process message in production,
    /// so never lost but delayed (the ones to one workflow keep their
    /// order, as casts to one partition do), sometimes delivered twice
    /// (delivery is at least once), and discarded when the orchestrator
    /// crashes before it arrives (it lived in memory).
    pub(super) fn send_lineage(&mut self, msg: Lineage) {
        self.stats.lineage_sent += 1;
        self.trace.text(msg.target());
        let drawn = self.now + self.rng.range(0, self.cfg.delay_max_ms);
        let last = self.lineage_last.get(msg.target()).copied().unwrap_or(0);
        let at = drawn.max(last);
        self.lineage_last.insert(msg.target().to_string(), at);
        let inc = self.inc;
        if self.faulty() && self.rng.chance(self.cfg.duplicate_rate) {
            self.stats.duplicated += 1;
            let later = self.rng.range(0, self.cfg.delay_max_ms * 4);
            self.push(
                at + later,
                Ev::Lineage {
                    inc,
                    msg: msg.clone(),
                },
            );
        }
        self.push(at, Ev::Lineage { inc, msg });
    }

    /// A lineage effect arrives; one sent by an incarnation that crashed since is gone.
    pub(super) fn deliver_lineage(&mut self, inc: u64, msg: Lineage) {
        match self.orch.as_mut() {
            Some(o) if inc == self.inc => SimNode::lineage(o, msg),
            _ => self.stats.lineage_discarded += 1,
        }
    }
}

/// The engine limits of one seed, drawn from it: small resident caps,
/// caches and grace periods, so that deferred starts, passivation, loads
/// from storage and retention purges all happen in short runs.
pub(super) fn engine_config(cfg: &DstConfig, rng: &mut Rng) -> EngineConfig {
    let partitions = cfg.partitions.max(1);
    let per_partition = rng.range(1, 4) as usize;
    EngineConfig {
        partitions,
        snapshot_every_events: cfg.snapshot_every_events,
        resident_max: per_partition * usize::from(partitions),
        // As small as the resident cap, so bulk accepts and recoveries
        // hold tasks in the backlog in short runs.
        in_progress_max: per_partition * usize::from(partitions),
        state_cache_max: [0, 2, 16][rng.index(3)],
        passivate_idle_ms: [0, 500, 5_000][rng.index(3)],
        restart_budget: 3,
        unstartable_max: 16,
        tick_ms: 1_000,
        retention: RetentionConfig {
            after_ms: Some(cfg.retention_after_ms),
            sweep_every_ms: 30_000,
            batch_max: 3,
            scan_max: 20,
        },
        ..EngineConfig::default()
    }
}
