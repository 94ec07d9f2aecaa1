//! Simulated workers for every task type: the workers of `orchestrator dev`
//! and of the tests. A task's output is `{"video_id", "step", "n"}` with
//! `n = 1 + Σ n of its dependencies`, so a correct run of the video pipeline
//! ends with `n = 17` at `index`, and any lost or mixed-up output shows.
//!
//! Pending tasks are held compactly (task id, due time, computed outcome);
//! failures are drawn from the seed and the task id, so a run is repeatable.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::mpsc;

use crate::engine::clock::Clock;
use crate::pipeline::PipelineDef;
use crate::transport::inproc::ToWorker;
use crate::transport::{workflow_of_task, ReportSink, WorkerReport};
use crate::workflow::{TaskError, TaskOutcome, TaskResult, TaskSpec};

/// How the simulated workers behave.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Time each task takes.
    pub latency_ms: u64,
    /// Share of attempts that fail retryably, in [0, 1].
    pub fail_rate: f64,
    pub seed: u64,
    /// Name reported as the worker of each result.
    pub worker: String,
    /// How often long tasks heartbeat (`None`: a third of the task's heartbeat timeout).
    pub heartbeat_every_ms: Option<u64>,
    /// Tasks worked on at once, like a fleet of this many workers; more wait
    /// in a queue (held compactly). 0 means unlimited.
    pub concurrency: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            latency_ms: 0,
            fail_rate: 0.0,
            seed: 1,
            worker: "sim-0".into(),
            heartbeat_every_ms: None,
            concurrency: 1_000,
        }
    }
}

#[derive(Deserialize)]
struct TaskInput<'a> {
    #[serde(borrow, default)]
    workflow: WorkflowInput<'a>,
    #[serde(borrow, default)]
    deps: std::collections::BTreeMap<std::borrow::Cow<'a, str>, DepOutput>,
}

/// The part of the workflow input the simulated workers read.
#[derive(Deserialize, Default)]
struct WorkflowInput<'a> {
    #[serde(borrow, default)]
    video_id: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct DepOutput {
    #[serde(default)]
    n: u64,
}

/// The output a correct worker returns for `spec`, as JSON text.
pub fn output_for(spec: &TaskSpec) -> Result<String, String> {
    output_from(&spec.input, &spec.workflow_id, &spec.step)
}

/// The output for a task input (JSON text) of `step` in workflow `workflow_id`.
pub fn output_from(input: &str, workflow_id: &str, step: &str) -> Result<String, String> {
    let input: TaskInput =
        serde_json::from_str(input).map_err(|e| format!("bad task input: {e}"))?;
    let n = 1 + input.deps.values().map(|d| d.n).sum::<u64>();
    let video_id = input.workflow.video_id.as_deref().unwrap_or(workflow_id);
    // Step names are `[a-z0-9_-]`; the video id may need escaping.
    let video_id = serde_json::to_string(video_id).map_err(|e| e.to_string())?;
    Ok(format!(
        r#"{{"video_id":{video_id},"step":"{step}","n":{n}}}"#
    ))
}

/// `n` each step of `pipeline` must report in a correct run.
pub fn expected_n(pipeline: &PipelineDef) -> Vec<u64> {
    let mut n = vec![0u64; pipeline.steps.len()];
    for i in pipeline.topo_order() {
        n[i] = 1 + pipeline.steps[i]
            .needs
            .iter()
            .map(|&d| n[usize::from(d)])
            .sum::<u64>();
    }
    n
}

/// Checks the `n` of every step output of a completed workflow; returns the
/// steps that are wrong.
pub fn check_outputs(pipeline: &PipelineDef, outputs: &[Option<&str>]) -> Vec<String> {
    let expected = expected_n(pipeline);
    let mut wrong = Vec::new();
    for (i, step) in pipeline.steps.iter().enumerate() {
        let got = outputs
            .get(i)
            .copied()
            .flatten()
            .and_then(|o| serde_json::from_str::<DepOutput>(o).ok())
            .map(|d| d.n);
        if got != Some(expected[i]) {
            wrong.push(format!(
                "{}: n={got:?}, expected {}",
                step.name, expected[i]
            ));
        }
    }
    wrong
}

/// A deterministic number in [0, 1) for this seed and task id.
pub fn draw(seed: u64, task_id: &str) -> f64 {
    let mut h = seed ^ 0x9e37_79b9_7f4a_7c15;
    for b in task_id.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64 finaliser
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// One pending task: what to answer and when.
struct Pending {
    task_id: Box<str>,
    attempt: u32,
    outcome: Result<Box<str>, ()>,
}

/// Counters of what the simulated workers did.
#[derive(Debug, Default, Clone)]
pub struct SimStats {
    pub executed: u64,
    pub failed: u64,
    pub cancelled: u64,
}

/// Runs simulated workers until the channel closes.
pub async fn run(
    cfg: SimConfig,
    mut rx: mpsc::UnboundedReceiver<ToWorker>,
    sink: Arc<dyn ReportSink>,
    clock: Arc<dyn Clock>,
) -> SimStats {
    let mut stats = SimStats::default();
    // Min-heap of (due, sequence) → pending, kept small: one entry per task.
    let mut heap: BinaryHeap<Reverse<(u64, u64)>> = BinaryHeap::new();
    let mut pending: std::collections::HashMap<u64, Pending> = Default::default();
    let mut cancelled: HashSet<Box<str>> = HashSet::new();
    let mut queue: std::collections::VecDeque<Pending> = Default::default();
    let mut seq = 0u64;
    let mut last_beat = clock.now_ms();
    // Shortest heartbeat timeout seen, so long tasks beat often enough.
    let mut hb_min: Option<u64> = None;
    let tick = Duration::from_millis(5);
    loop {
        let msg = if heap.is_empty() && queue.is_empty() {
            match rx.recv().await {
                Some(m) => Some(m),
                None => return stats,
            }
        } else {
            match tokio::time::timeout(tick, rx.recv()).await {
                Ok(Some(m)) => Some(m),
                Ok(None) => return stats,
                Err(_) => None,
            }
        };
        if let Some(msg) = msg {
            match msg {
                ToWorker::Task(spec) => {
                    let fail = draw(cfg.seed, &spec.task_id) < cfg.fail_rate;
                    let outcome = if fail {
                        Err(())
                    } else {
                        output_for(&spec)
                            .map(String::into_boxed_str)
                            .map_err(|_| ())
                    };
                    let wf = spec.workflow_id.clone();
                    if cfg.latency_ms == 0 {
                        stats.executed += 1;
                        stats.failed += u64::from(outcome.is_err());
                        sink.report(
                            &wf,
                            result(
                                &cfg,
                                &spec.task_id,
                                &spec.step,
                                spec.attempt,
                                outcome,
                                clock.now_ms(),
                            ),
                        );
                    } else {
                        if let Some(h) = spec.heartbeat_timeout_ms {
                            hb_min = Some(hb_min.map_or(h, |m: u64| m.min(h)));
                        }
                        queue.push_back(Pending {
                            task_id: spec.task_id.into_boxed_str(),
                            attempt: spec.attempt,
                            outcome,
                        });
                    }
                }
                ToWorker::Cancel { task_id } => {
                    if !pending.is_empty() || !queue.is_empty() {
                        cancelled.insert(task_id.into_boxed_str());
                    }
                }
            }
        }
        let now = clock.now_ms();
        // Free slots take queued tasks, oldest first.
        while !queue.is_empty() && (cfg.concurrency == 0 || pending.len() < cfg.concurrency) {
            let Some(p) = queue.pop_front() else { break };
            if cancelled.remove(&p.task_id) {
                stats.cancelled += 1;
                continue;
            }
            if let Some(wf) = workflow_of_task(&p.task_id) {
                sink.report(
                    wf,
                    WorkerReport::Started {
                        task_id: p.task_id.to_string(),
                        worker: cfg.worker.clone(),
                    },
                );
            }
            seq += 1;
            heap.push(Reverse((now + cfg.latency_ms, seq)));
            pending.insert(seq, p);
        }
        while let Some(Reverse((due, s))) = heap.peek().copied() {
            if due > now {
                break;
            }
            heap.pop();
            let Some(p) = pending.remove(&s) else {
                continue;
            };
            if cancelled.remove(&p.task_id) {
                stats.cancelled += 1;
                continue;
            }
            let Some(wf) = workflow_of_task(&p.task_id) else {
                continue;
            };
            let step = crate::transport::step_of_task(&p.task_id).unwrap_or_default();
            stats.executed += 1;
            stats.failed += u64::from(p.outcome.is_err());
            sink.report(
                wf,
                result(&cfg, &p.task_id, step, p.attempt, p.outcome, now),
            );
        }
        // Long tasks heartbeat so the engine knows they are alive.
        let every = cfg
            .heartbeat_every_ms
            .or(hb_min.map(|h: u64| (h / 3).max(1)));
        if let Some(every) = every {
            if now.saturating_sub(last_beat) >= every {
                last_beat = now;
                for p in pending.values() {
                    if let Some(wf) = workflow_of_task(&p.task_id) {
                        sink.report(
                            wf,
                            WorkerReport::Heartbeat {
                                task_id: p.task_id.to_string(),
                            },
                        );
                    }
                }
            }
        }
        if pending.is_empty() && queue.is_empty() {
            cancelled.clear();
        }
    }
}

fn result(
    cfg: &SimConfig,
    task_id: &str,
    step: &str,
    attempt: u32,
    outcome: Result<Box<str>, ()>,
    now_ms: u64,
) -> WorkerReport {
    let outcome = match outcome {
        Ok(out) => TaskOutcome::Succeeded(out.into_string()),
        Err(()) => TaskOutcome::Failed(TaskError {
            kind: "simulated".into(),
            message: "injected failure".into(),
            retryable: true,
        }),
    };
    WorkerReport::Result(TaskResult {
        task_id: task_id.to_string(),
        step: step.to_string(),
        attempt,
        outcome,
        worker: Some(cfg.worker.clone()),
        started_at_ms: Some(now_ms.saturating_sub(cfg.latency_ms)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_uniform_enough_and_repeatable() {
        let fails = (0..10_000)
            .filter(|i| draw(7, &format!("t{i}")) < 0.2)
            .count();
        assert!((1_800..2_200).contains(&fails), "{fails}");
        assert_eq!(draw(7, "x"), draw(7, "x"));
        assert_ne!(draw(7, "x"), draw(8, "x"));
    }
}
