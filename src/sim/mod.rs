//! Simulated workers for every task type: the workers of `orchestrator dev`
//! and of the tests. A task's output is `{"video_id", "step", "n"}` with
//! `n = 1 + Σ n of its dependencies` (a map step's array counts the sum of
//! its elements, a skipped step's `null` counts 0), so any lost, duplicated
//! or mixed-up output shows: a correct run of the video pipeline with its 8
//! default segments and no translation ends with `n = 10` at `index`
//! ([`check_outputs`] works out every step's `n` for any pipeline).
//!
//! Segments: a `segment` task lists [`DEFAULT_SEGMENTS`] segments
//! (`"segments": [0, 1, ...]`, [`SimConfig::default_segments`]) when the
//! workflow input does not say how many, as a real segmenter finds some in
//! any transcript, so the video pipeline's map has work to do on any input.
//! A workflow input with `"segments": k` makes every output but a map
//! element's list `k` segments instead, for pipelines that map over other
//! steps. A workflow input with `"language": "<l>"` makes every output
//! report `"language": "<l>"` (the language a transcription detected), for
//! conditions that read it. A child workflow's tasks read these through the
//! child's input (`{"workflow": <parent's input>, ..}`), so a pipeline run
//! as a child behaves as it does on its own.
//!
//! Pending tasks are held compactly (task id, due time, computed outcome);
//! failures are drawn from the seed and the task id, so a run is repeatable.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::engine::clock::Clock;
use crate::pipeline::PipelineDef;
use crate::transport::inproc::ToWorker;
use crate::transport::{workflow_of_task, ReportSink, WorkerReport};
use crate::workflow::{TaskError, TaskOutcome, TaskResult, TaskSpec};

mod task_input;

use task_input::{DepOutput, TaskInput};

/// How the simulated workers behave.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Time each task takes (when `latency_dist` is `None`).
    pub latency_ms: u64,
    /// Per-task latency drawn from a distribution (deterministic per task id
    /// and seed); replaces `latency_ms` when set.
    pub latency_dist: Option<LatencyDist>,
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
    /// NATS workers send their "started" heartbeat only once a task has run
    /// this long (0: at once); shorter tasks just answer.
    pub started_after_ms: u64,
    /// On SIGTERM a NATS worker stops pulling and waits this long for the
    /// tasks in hand to finish and their results to be handed over.
    pub shutdown_grace_ms: u64,
    /// Segments a `segment` task lists when the workflow input does not say
    /// (`"segments": N`); 0 lists none, as in an output without segments.
    pub default_segments: u32,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            latency_ms: 0,
            latency_dist: None,
            fail_rate: 0.0,
            seed: 1,
            worker: "sim-0".into(),
            heartbeat_every_ms: None,
            concurrency: 1_000,
            started_after_ms: STARTED_AFTER_MS,
            shutdown_grace_ms: 30_000,
            default_segments: DEFAULT_SEGMENTS,
        }
    }
}

/// Default of [`SimConfig::default_segments`].
pub const DEFAULT_SEGMENTS: u32 = 8;

/// The task type whose simulated workers list segments unasked.
pub const SEGMENT_TASK_TYPE: &str = "segment";

/// The segments a task of `task_type` lists when the workflow input does
/// not say: `default_segments` for a `segment` task (none when 0), none
/// for the others.
pub fn unasked_segments(task_type: &str, default_segments: u32) -> Option<u32> {
    (task_type == SEGMENT_TASK_TYPE && default_segments > 0).then_some(default_segments)
}

/// Default of [`SimConfig::started_after_ms`].
pub const STARTED_AFTER_MS: u64 = 20;

/// Longest latency a simulated task may be given (any distribution is capped here).
pub const LATENCY_MAX: Duration = Duration::from_secs(3600);

/// z of the 99th percentile of the standard normal distribution.
const Z_P99: f64 = 2.326_347_874_040_841;

/// Per-task latency of simulated workers, drawn deterministically from the
/// seed and the task id (so a run reproduces). Text form, as the flags take it:
/// `fixed:5ms`, `uniform:1ms..10ms`, `lognormal:p50=5ms,p99=50ms` (durations
/// in the crate's grammar, [`crate::durations`]; every value at most
/// [`LATENCY_MAX`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LatencyDist {
    Fixed(Duration),
    /// Uniform in `[lo, hi]`.
    Uniform(Duration, Duration),
    /// Log-normal with that median and 99th percentile (`p99 >= p50 > 0`).
    LogNormal {
        p50: Duration,
        p99: Duration,
    },
}

/// Parses a latency in the crate's duration grammar ([`crate::durations`]:
/// `5ms`, `1.5ms`, `250us`, `2s`, `0`), at most [`LATENCY_MAX`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = crate::durations::parse(text).map_err(|e| format!("{text:?}: {e}"))?;
    if d > LATENCY_MAX {
        return Err(format!(
            "{text:?} is above the limit of {}",
            crate::durations::format(LATENCY_MAX)
        ));
    }
    Ok(d)
}

impl std::str::FromStr for LatencyDist {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let usage = "expected fixed:5ms, uniform:1ms..10ms or lognormal:p50=5ms,p99=50ms";
        let (kind, rest) = text
            .split_once(':')
            .ok_or_else(|| format!("bad latency {text:?}: {usage}"))?;
        match kind.trim() {
            "fixed" => Ok(LatencyDist::Fixed(parse_duration(rest)?)),
            "uniform" => {
                let (lo, hi) = rest
                    .split_once("..")
                    .ok_or_else(|| format!("bad latency {text:?}: {usage}"))?;
                let (lo, hi) = (parse_duration(lo)?, parse_duration(hi)?);
                if lo > hi {
                    return Err(format!(
                        "bad latency {text:?}: the lower bound is above the upper one"
                    ));
                }
                Ok(LatencyDist::Uniform(lo, hi))
            }
            "lognormal" => {
                let (mut p50, mut p99) = (None, None);
                for part in rest.split(',') {
                    match part.trim().split_once('=') {
                        Some(("p50", v)) => p50 = Some(parse_duration(v)?),
                        Some(("p99", v)) => p99 = Some(parse_duration(v)?),
                        _ => return Err(format!("bad latency {text:?}: {usage}")),
                    }
                }
                match (p50, p99) {
                    (Some(p50), Some(p99)) if p50 > Duration::ZERO && p99 >= p50 => {
                        Ok(LatencyDist::LogNormal { p50, p99 })
                    }
                    (Some(_), Some(_)) => Err(format!(
                        "bad latency {text:?}: lognormal needs p99 >= p50 > 0"
                    )),
                    _ => Err(format!("bad latency {text:?}: {usage}")),
                }
            }
            _ => Err(format!("bad latency {text:?}: {usage}")),
        }
    }
}

impl std::fmt::Display for LatencyDist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LatencyDist::Fixed(d) => write!(f, "fixed:{}", crate::durations::format(*d)),
            LatencyDist::Uniform(lo, hi) => {
                write!(
                    f,
                    "uniform:{}..{}",
                    crate::durations::format(*lo),
                    crate::durations::format(*hi)
                )
            }
            LatencyDist::LogNormal { p50, p99 } => write!(
                f,
                "lognormal:p50={},p99={}",
                crate::durations::format(*p50),
                crate::durations::format(*p99)
            ),
        }
    }
}

impl LatencyDist {
    /// The latency of `task_id`: the same for the same seed and task id.
    pub fn sample(&self, seed: u64, task_id: &str) -> Duration {
        let d = match *self {
            LatencyDist::Fixed(d) => d,
            LatencyDist::Uniform(lo, hi) => {
                let u = draw_salted(seed, 16, task_id);
                lo + (hi - lo).mul_f64(u)
            }
            LatencyDist::LogNormal { p50, p99 } => {
                // Box-Muller from two independent draws; 1 - u keeps ln away from 0.
                let u1 = 1.0 - draw_salted(seed, 16, task_id);
                let u2 = draw_salted(seed, 17, task_id);
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                let mu = p50.as_secs_f64().ln();
                let sigma = (p99.as_secs_f64() / p50.as_secs_f64()).ln() / Z_P99;
                let secs = (mu + sigma * z).exp();
                if secs.is_finite() {
                    Duration::from_secs_f64(secs.min(LATENCY_MAX.as_secs_f64()))
                } else {
                    LATENCY_MAX
                }
            }
        };
        d.min(LATENCY_MAX)
    }
}

impl SimConfig {
    /// How long the task `task_id` takes: `latency_dist` when set, else `latency_ms`.
    pub fn latency_for(&self, task_id: &str) -> Duration {
        match &self.latency_dist {
            Some(d) => d.sample(self.seed, task_id),
            None => Duration::from_millis(self.latency_ms),
        }
    }
}

/// The output a correct worker returns for `spec`, as JSON text
/// (`default_segments`: [`SimConfig::default_segments`]).
pub fn output_for(spec: &TaskSpec, default_segments: u32) -> Result<String, String> {
    output_from(
        &spec.input,
        &spec.workflow_id,
        &spec.step,
        unasked_segments(&spec.task_type, default_segments),
    )
}

/// The output for a task input (JSON text) of `step` in workflow
/// `workflow_id`: `n = 1 + Σ n of the dependencies (+ n of the element)`,
/// and the list `segments` when the workflow input asks for some, else
/// when `unasked` ([`unasked_segments`]) is some.
pub fn output_from(
    input: &str,
    workflow_id: &str,
    step: &str,
    unasked: Option<u32>,
) -> Result<String, String> {
    let input: TaskInput =
        serde_json::from_str(input).map_err(|e| format!("bad task input: {e}"))?;
    let n = 1
        + input.deps.values().map(DepOutput::n).sum::<u64>()
        + input.element.as_ref().map_or(0, DepOutput::n);
    let video_id = input.workflow.video_id().unwrap_or(workflow_id);
    // Step names are `[a-z0-9_-]`; the video id may need escaping.
    let video_id = serde_json::to_string(video_id).map_err(|e| e.to_string())?;
    let mut out = format!(r#"{{"video_id":{video_id},"step":"{step}","n":{n}"#);
    // A map element is one segment: it lists none (1,000 elements each
    // listing 1,000 segments would make the map's output quadratic).
    let segments = input
        .workflow
        .segments()
        .or(unasked)
        .filter(|_| input.element.is_none());
    if let Some(k) = segments {
        out.push_str(r#","segments":["#);
        for i in 0..k {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&i.to_string());
        }
        out.push(']');
    }
    if let Some(language) = input.workflow.language() {
        let language = serde_json::to_string(language).map_err(|e| e.to_string())?;
        out.push_str(r#","language":"#);
        out.push_str(&language);
    }
    out.push('}');
    Ok(out)
}

/// A wrong version of a correct output: `n` off by 1000 (fault injection).
pub fn corrupt_output(output: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(output) {
        Ok(serde_json::Value::Object(mut o)) => {
            let n = o.get("n").and_then(serde_json::Value::as_u64).unwrap_or(0);
            o.insert("n".into(), serde_json::Value::from(n.saturating_add(1000)));
            serde_json::Value::Object(o).to_string()
        }
        _ => r#"{"n":0}"#.to_string(),
    }
}

/// `n` each step of `pipeline` must report in a correct run of a pipeline
/// without maps.
pub fn expected_n(pipeline: &PipelineDef) -> Vec<u64> {
    expected(pipeline, &[])
        .into_iter()
        .map(|(n, _)| n)
        .collect()
}

/// A step of a completed workflow without output was skipped (only a
/// step with a condition, or a wait step that timed out, can be): it counts
/// `n = 0`. With no outputs given, no step is.
fn skipped(pipeline: &PipelineDef, outputs: &[Option<&str>], i: usize) -> bool {
    (pipeline.when_of(i).is_some() || pipeline.wait_of(i).is_some())
        && outputs.get(i).is_some_and(Option::is_none)
}

/// Per step: the `n` a correct run reports, and for a map step the number
/// of elements (read from the output of the step it maps over).
fn expected(pipeline: &PipelineDef, outputs: &[Option<&str>]) -> Vec<(u64, Option<usize>)> {
    let mut n = vec![(0u64, None); pipeline.steps.len()];
    for i in pipeline.topo_order() {
        let needs = &pipeline.steps[i].needs;
        if skipped(pipeline, outputs, i) || pipeline.child_of(i).is_some() {
            continue;
        }
        if pipeline.wait_of(i).is_some() {
            // A wait step's output is the signal's payload: its `n` is
            // whatever the sender put there (0 without outputs given).
            let given = outputs.get(i).copied().flatten();
            let parsed = given.and_then(|o| serde_json::from_str::<DepOutput>(o).ok());
            n[i] = (parsed.as_ref().map_or(0, DepOutput::n), None);
            continue;
        }
        n[i] = match pipeline.map_of(i) {
            None => (
                1 + needs.iter().map(|&d| n[usize::from(d)].0).sum::<u64>(),
                None,
            ),
            Some(m) => {
                // Each element: 1 + the other dependencies (its own item
                // is a plain segment number, n = 0).
                let per = 1 + needs
                    .iter()
                    .filter(|&&d| d != m.over_step)
                    .map(|&d| n[usize::from(d)].0)
                    .sum::<u64>();
                let k = outputs
                    .get(usize::from(m.over_step))
                    .copied()
                    .flatten()
                    .and_then(|o| crate::workflow::map::array_at(o, &m.pointer).ok())
                    .map_or(0, |a| a.len());
                (per * k as u64, Some(k))
            }
        };
    }
    n
}

/// Checks the `n` of every step output of a completed workflow (and that a
/// map step's array has one output per element); returns the steps that are
/// wrong, so a lost or duplicated output or element shows.
pub fn check_outputs(pipeline: &PipelineDef, outputs: &[Option<&str>]) -> Vec<String> {
    let expected = expected(pipeline, outputs);
    let mut wrong = Vec::new();
    for (i, step) in pipeline.steps.iter().enumerate() {
        // A child step's output is its child's (checked as the child's own
        // workflow), with no `n`: its dependents count it 0.
        if skipped(pipeline, outputs, i) || pipeline.child_of(i).is_some() {
            continue;
        }
        let output = outputs.get(i).copied().flatten();
        let parsed = output.and_then(|o| serde_json::from_str::<DepOutput>(o).ok());
        let got = parsed.as_ref().map(DepOutput::n);
        let (want, elements) = expected[i];
        if got != Some(want) {
            wrong.push(format!("{}: n={got:?}, expected {want}", step.name));
        }
        if let Some(k) = elements {
            let len = match &parsed {
                Some(DepOutput::Many(items)) => Some(items.len()),
                _ => None,
            };
            if len != Some(k) {
                wrong.push(format!(
                    "{}: {len:?} element outputs, expected {k}",
                    step.name
                ));
            }
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

/// A draw independent of [`draw`] with the same seed: `salt` picks the stream.
pub fn draw_salted(seed: u64, salt: u64, task_id: &str) -> f64 {
    draw(seed ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15), task_id)
}

/// One pending task: what to answer and when.
struct Pending {
    task_id: Box<str>,
    attempt: u32,
    latency_ms: u64,
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
                        output_for(&spec, cfg.default_segments)
                            .map(String::into_boxed_str)
                            .map_err(|_| ())
                    };
                    let wf = spec.workflow_id.clone();
                    let latency_ms = cfg.latency_for(&spec.task_id).as_millis() as u64;
                    if latency_ms == 0 {
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
                                0,
                            ),
                        );
                    } else {
                        if let Some(h) = spec.heartbeat_timeout_ms {
                            hb_min = Some(hb_min.map_or(h, |m: u64| m.min(h)));
                        }
                        queue.push_back(Pending {
                            task_id: spec.task_id.into_boxed_str(),
                            attempt: spec.attempt,
                            latency_ms,
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
            heap.push(Reverse((now + p.latency_ms, seq)));
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
                result(
                    &cfg,
                    &p.task_id,
                    step,
                    p.attempt,
                    p.outcome,
                    now,
                    p.latency_ms,
                ),
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
    latency_ms: u64,
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
        started_at_ms: Some(now_ms.saturating_sub(latency_ms)),
    })
}

#[cfg(test)]
mod tests;
