//! The simulated workers: they take tasks, report started, heartbeat long
//! tasks, answer with the expected output or a retryable failure, sometimes
//! answer twice, sometimes hang, and crash.

use super::{Ev, OrchMsg, WorkerMsg, World};
use crate::dst::pipelines::doomed;
use crate::workflow::{TaskError, TaskOutcome, TaskResult, TaskSpec};

impl World {
    pub(super) fn worker_msg(&mut self, worker: usize, msg: WorkerMsg) {
        let Some(w) = self.workers.get_mut(worker) else {
            return;
        };
        if !w.up {
            self.stats.dropped += 1;
            return;
        }
        match msg {
            WorkerMsg::Cancel(task_id) => w.runs.retain(|_, s| s.task_id != task_id),
            WorkerMsg::Task(spec) => {
                let epoch = w.epoch;
                self.next_run += 1;
                let run = self.next_run;
                self.stats.executions += 1;
                self.log.executed(&spec.task_id, &spec.idempotency_key);
                let task_id = spec.task_id.clone();
                let every = beat_every(&spec);
                w.runs.insert(run, spec);
                self.send(0, Ev::ToOrch(OrchMsg::Started { task_id }));
                if self.faulty() && self.rng.chance(self.cfg.hang_rate) {
                    // Hung: holds the task, never answers, never beats.
                    return;
                }
                let ms = if self.rng.chance(self.cfg.long_task_rate) {
                    self.push(self.now + every, Ev::WorkerBeat { worker, epoch, run });
                    self.rng.range(20_000, 90_000)
                } else {
                    self.rng.range(1, 200)
                };
                self.push(self.now + ms, Ev::WorkerFinish { worker, epoch, run });
            }
        }
    }

    pub(super) fn worker_finish(&mut self, worker: usize, epoch: u64, run: u64) {
        let Some(w) = self.workers.get_mut(worker) else {
            return;
        };
        if w.epoch != epoch {
            return;
        }
        let Some(spec) = w.runs.remove(&run) else {
            return;
        };
        let doom = doomed(&spec);
        let fail = doom || self.rng.chance(self.cfg.fail_rate);
        let outcome = if fail {
            TaskOutcome::Failed(TaskError {
                kind: if doom {
                    "doomed".into()
                } else {
                    "flaky".into()
                },
                message: "simulated failure".into(),
                retryable: true,
            })
        } else {
            match crate::sim::output_for(&spec, crate::sim::DEFAULT_SEGMENTS) {
                Ok(out) => TaskOutcome::Succeeded(out),
                Err(e) => TaskOutcome::Failed(TaskError {
                    kind: "invalid_input".into(),
                    message: e,
                    retryable: false,
                }),
            }
        };
        let success = matches!(outcome, TaskOutcome::Succeeded(_));
        let result = TaskResult {
            task_id: spec.task_id.clone(),
            step: spec.step.clone(),
            attempt: spec.attempt,
            outcome,
            worker: Some(format!("w{worker}")),
            started_at_ms: None,
        };
        self.log.answered(&spec.task_id, success);
        if self.faulty() && self.rng.chance(self.cfg.answer_twice_rate) {
            self.log.answered(&spec.task_id, success);
            let later = self.rng.range(0, 2_000);
            self.send(later, Ev::ToOrch(OrchMsg::Result(result.clone())));
        }
        self.send(0, Ev::ToOrch(OrchMsg::Result(result)));
    }
}

/// How often a long-running simulated task heartbeats: a third of its
/// heartbeat timeout (15 s without one).
pub(super) fn beat_every(spec: &TaskSpec) -> u64 {
    spec.heartbeat_timeout_ms.map_or(15_000, |t| (t / 3).max(1))
}
