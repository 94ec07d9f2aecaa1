//! What the load generator knows of each workflow it started, fed by the
//! lifecycle event stream (`<prefix>.events.<pipeline>.>`, see
//! `docs/protocol.md`) and by the in-process workers' timings.
//!
//! Workflows are kept in a vector indexed by the `<n>` of their id
//! `lg-<run>-<n>`; events of other workflows are ignored. Delivery is at least
//! once: each event is applied once (a per-workflow bitset of seen `seq`s,
//! and nothing is applied to a workflow already terminal).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::hist::Hist;
use crate::pipeline::PipelineDef;

/// Traffic classes: steady live traffic and the backfill burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Live = 0,
    Burst = 1,
}

impl Class {
    pub const ALL: [Class; 2] = [Class::Live, Class::Burst];

    pub fn name(self) -> &'static str {
        match self {
            Class::Live => "live",
            Class::Burst => "burst",
        }
    }
}

/// Highest event `seq` tracked per workflow (a bigger one is ignored: the
/// bitset stays bounded whatever the stream carries).
pub const SEQ_MAX: u64 = 65_536;
/// Most worker timings held while waiting for their task's event.
pub const TIMINGS_MAX: usize = 1_000_000;

/// `(started_us, finished_us)` per task id, written by in-process workers.
pub type Timings = Arc<Mutex<HashMap<Box<str>, (u64, u64)>>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    NotStarted,
    /// Start sent (or about to be); events may come before its reply.
    Running,
    Completed,
    Failed,
    Cancelled,
    StartFailed,
}

impl State {
    fn terminal(self) -> bool {
        matches!(
            self,
            State::Completed | State::Failed | State::Cancelled | State::StartFailed
        )
    }
}

#[derive(Debug, Default, Clone)]
struct StepTrack {
    attempt: u32,
    dispatched_ms: u64,
    done_ms: u64,
    /// Worker time of the last finished attempt: dispatch→start, start→result.
    queue_us: Option<u64>,
    run_us: Option<u64>,
    output: Option<Box<str>>,
    /// A map step's element outputs by index (sized by `map_expanded`); the
    /// step's output is assembled from them once it succeeded.
    elements: Vec<Option<Box<str>>>,
    /// `map_succeeded` seen, with these indices failed (their place is `null`).
    map_failed: Option<Vec<u32>>,
}

#[derive(Debug)]
struct Track {
    seen: Vec<u64>,
    steps: Vec<StepTrack>,
}

#[derive(Debug)]
struct Wf {
    class: Class,
    state: State,
    intended_us: u64,
    track: Option<Box<Track>>,
}

/// Figures of one traffic class.
#[derive(Debug, Default, Clone)]
pub struct ClassFigures {
    pub started: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub start_failed: u64,
    pub output_mismatch: u64,
    /// End to end, intended start → terminal event received, completed workflows.
    pub latency: Hist,
    /// Time of the last terminal event, µs after t0.
    pub last_terminal_us: u64,
    pub first_intended_us: Option<u64>,
}

/// Task-level timings (all classes).
#[derive(Debug, Default, Clone)]
pub struct Stages {
    /// `task_dispatched.at` → the attempt's `task_succeeded`/`task_failed`/`task_timed_out`.
    pub task: Hist,
    /// `task_dispatched.at` → worker start (in-process workers only).
    pub queue_wait: Hist,
    /// Worker start → result ready (in-process workers only).
    pub run: Hist,
    /// Result ready → `task_succeeded.at` (journaled) (in-process workers only).
    pub result: Hist,
    /// Per completed workflow: end to end minus the worker time along its critical path.
    pub overhead: Hist,
    /// Intended start → `start` reply received.
    pub start: Hist,
}

#[derive(Deserialize)]
struct EventMsg<'a> {
    v: u32,
    /// A single record's workflow; absent in a batch.
    #[serde(borrow, default)]
    workflow_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    events: Vec<Event<'a>>,
    /// A batch: records of several workflows (docs/protocol.md).
    #[serde(borrow, default)]
    records: Vec<Record<'a>>,
}

#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow)]
    workflow_id: Cow<'a, str>,
    #[serde(borrow, default)]
    events: Vec<Event<'a>>,
}

#[derive(Deserialize)]
struct Event<'a> {
    seq: u64,
    #[serde(default)]
    at: u64,
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(default)]
    generation: Option<u32>,
    #[serde(borrow, default)]
    step: Option<Cow<'a, str>>,
    #[serde(default)]
    attempt: Option<u32>,
    #[serde(borrow, default)]
    output: Option<&'a RawValue>,
    /// On `map_expanded`: the length of the array.
    #[serde(default)]
    elements: Option<u32>,
    /// On `map_succeeded`: the indices of the elements that failed.
    #[serde(default)]
    failed: Option<Vec<u32>>,
}

pub struct Tracker {
    def: Arc<PipelineDef>,
    step_index: HashMap<String, usize>,
    id_prefix: String,
    wfs: Vec<Wf>,
    pub classes: [ClassFigures; 2],
    pub stages: Stages,
    /// Task results seen (succeeded, failed, timed out).
    pub tasks: u64,
    pub last_task_us: u64,
    /// Messages refused (not JSON, another `v`) and events of unknown steps.
    pub refused: u64,
    /// Event messages applied / skipped as duplicates.
    pub messages: u64,
    pub duplicates: u64,
    /// Completed workflows whose outputs were not all seen yet (re-checked at the end).
    unverified: Vec<usize>,
    /// Completions since the last progress tick.
    pub recent: Hist,
    pub recent_completed: u64,
    timings: Option<Timings>,
    /// Called once per terminal workflow (closed loop: frees a user).
    on_terminal: Option<Arc<tokio::sync::Semaphore>>,
    /// The first few output mismatches, for the report.
    pub mismatch_samples: Vec<String>,
}

const SAMPLES_MAX: usize = 10;

impl Tracker {
    pub fn new(
        def: Arc<PipelineDef>,
        run_id: &str,
        total: usize,
        timings: Option<Timings>,
        on_terminal: Option<Arc<tokio::sync::Semaphore>>,
    ) -> Tracker {
        let step_index = def
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        Tracker {
            def,
            step_index,
            id_prefix: format!("lg-{run_id}-"),
            wfs: (0..total)
                .map(|_| Wf {
                    class: Class::Live,
                    state: State::NotStarted,
                    intended_us: 0,
                    track: None,
                })
                .collect(),
            classes: Default::default(),
            stages: Stages::default(),
            tasks: 0,
            last_task_us: 0,
            refused: 0,
            messages: 0,
            duplicates: 0,
            unverified: Vec::new(),
            recent: Hist::default(),
            recent_completed: 0,
            timings,
            on_terminal,
            mismatch_samples: Vec::new(),
        }
    }

    pub fn id(&self, n: usize) -> String {
        format!("{}{n}", self.id_prefix)
    }

    fn index_of(&self, id: &str) -> Option<usize> {
        let n: usize = id.strip_prefix(&self.id_prefix)?.parse().ok()?;
        (n < self.wfs.len()).then_some(n)
    }

    /// Workflow `n` is about to be started; `intended_us` is its slot.
    pub fn register(&mut self, n: usize, class: Class, intended_us: u64) {
        let Some(wf) = self.wfs.get_mut(n) else {
            return;
        };
        wf.class = class;
        wf.state = State::Running;
        wf.intended_us = intended_us;
        wf.track = Some(Box::new(Track {
            seen: Vec::new(),
            steps: vec![StepTrack::default(); self.def.steps.len()],
        }));
        let c = &mut self.classes[class as usize];
        c.started += 1;
        c.first_intended_us = Some(
            c.first_intended_us
                .map_or(intended_us, |f| f.min(intended_us)),
        );
    }

    /// The `start` reply arrived at `now_us`.
    pub fn started(&mut self, n: usize, now_us: u64) {
        if let Some(wf) = self.wfs.get(n) {
            self.stages
                .start
                .record(now_us.saturating_sub(wf.intended_us));
        }
    }

    /// The start of workflow `n` failed (error reply, timeout, existing id).
    pub fn start_failed(&mut self, n: usize, now_us: u64) {
        let Some(wf) = self.wfs.get_mut(n) else {
            return;
        };
        if wf.state.terminal() {
            return;
        }
        wf.state = State::StartFailed;
        wf.track = None;
        let c = &mut self.classes[wf.class as usize];
        c.start_failed += 1;
        c.last_terminal_us = c.last_terminal_us.max(now_us);
        self.free_user();
    }

    fn free_user(&self) {
        if let Some(s) = &self.on_terminal {
            s.add_permits(1);
        }
    }

    /// Started workflows not terminal yet.
    pub fn in_flight(&self) -> u64 {
        self.classes
            .iter()
            .map(|c| c.started - c.completed - c.failed - c.cancelled - c.start_failed)
            .sum()
    }

    /// Applies one event message received at `now_us` (µs after t0).
    pub fn on_message(&mut self, payload: &[u8], now_us: u64) {
        let msg: EventMsg = match serde_json::from_slice(payload) {
            Ok(m) => m,
            Err(_) => {
                self.refused += 1;
                return;
            }
        };
        if msg.v != 1 {
            self.refused += 1;
            return;
        }
        self.messages += 1;
        if let Some(id) = &msg.workflow_id {
            self.on_record(id, &msg.events, now_us);
        }
        for r in &msg.records {
            self.on_record(&r.workflow_id, &r.events, now_us);
        }
    }

    fn on_record(&mut self, workflow_id: &str, events: &[Event<'_>], now_us: u64) {
        let Some(i) = self.index_of(workflow_id) else {
            return; // not ours
        };
        for ev in events {
            self.apply(i, workflow_id, ev, now_us);
        }
    }

    fn apply(&mut self, i: usize, wf_id: &str, ev: &Event<'_>, now_us: u64) {
        let wf = &mut self.wfs[i];
        if wf.state != State::Running {
            self.duplicates += 1;
            return;
        }
        let Some(track) = wf.track.as_mut() else {
            return;
        };
        if ev.seq >= SEQ_MAX {
            self.refused += 1;
            return;
        }
        let (word, bit) = ((ev.seq / 64) as usize, ev.seq % 64);
        if track.seen.len() <= word {
            track.seen.resize(word + 1, 0);
        }
        if track.seen[word] & (1 << bit) != 0 {
            self.duplicates += 1;
            return;
        }
        track.seen[word] |= 1 << bit;
        let step = ev
            .step
            .as_deref()
            .and_then(|s| self.step_index.get(s).copied());
        match ev.event.as_ref() {
            "element_succeeded" | "element_failed" | "element_timed_out" => {
                self.tasks += 1;
                self.last_task_us = self.last_task_us.max(now_us);
                let element = ev.step.as_deref().and_then(|s| {
                    let (name, index) = s.strip_suffix(']')?.split_once('[')?;
                    Some((*self.step_index.get(name)?, index.parse::<usize>().ok()?))
                });
                let Some((s, x)) = element else {
                    self.refused += 1;
                    return;
                };
                if ev.event == "element_succeeded" {
                    let st = &mut track.steps[s];
                    if st.elements.len() <= x {
                        st.elements.resize(x + 1, None);
                    }
                    st.elements[x] = ev.output.map(|o| o.get().into());
                }
            }
            "map_expanded" => {
                if let Some(s) = step {
                    let st = &mut track.steps[s];
                    st.dispatched_ms = ev.at;
                    let n = ev.elements.unwrap_or(0) as usize;
                    st.elements.resize(n.max(st.elements.len()), None);
                }
            }
            "map_succeeded" => {
                if let Some(s) = step {
                    let st = &mut track.steps[s];
                    st.done_ms = ev.at;
                    st.map_failed = Some(ev.failed.clone().unwrap_or_default());
                    assemble(st);
                }
            }
            "task_dispatched" => {
                if let Some(s) = step {
                    let st = &mut track.steps[s];
                    let attempt = ev.attempt.unwrap_or(0);
                    if attempt >= st.attempt {
                        st.attempt = attempt;
                        st.dispatched_ms = ev.at;
                    }
                } else {
                    self.refused += 1;
                }
            }
            "task_succeeded" | "task_failed" | "task_timed_out" => {
                self.tasks += 1;
                self.last_task_us = self.last_task_us.max(now_us);
                let Some(s) = step else {
                    self.refused += 1;
                    return;
                };
                let st = &mut track.steps[s];
                let attempt = ev.attempt.unwrap_or(0);
                if attempt != st.attempt || st.dispatched_ms == 0 {
                    return; // dispatch not seen: no timing
                }
                st.done_ms = ev.at;
                let task_us = ev.at.saturating_sub(st.dispatched_ms) * 1000;
                self.stages.task.record(task_us);
                st.queue_us = None;
                st.run_us = None;
                if let Some(t) = &self.timings {
                    let task_id = format!(
                        "{wf_id}:{}:{}:{attempt}",
                        self.def.steps[s].name,
                        ev.generation.unwrap_or(0)
                    );
                    if let Some((started, finished)) = t.lock().remove(task_id.as_str()) {
                        let q = started.saturating_sub(st.dispatched_ms * 1000);
                        let r = finished.saturating_sub(started);
                        self.stages.queue_wait.record(q);
                        self.stages.run.record(r);
                        self.stages
                            .result
                            .record((ev.at * 1000).saturating_sub(finished));
                        st.queue_us = Some(q);
                        st.run_us = Some(r);
                    }
                }
                if ev.event == "task_succeeded" {
                    st.output = ev.output.map(|o| o.get().into());
                }
            }
            "workflow_completed" => self.terminal(i, State::Completed, now_us),
            "workflow_failed" => self.terminal(i, State::Failed, now_us),
            "workflow_cancelled" => self.terminal(i, State::Cancelled, now_us),
            _ => {}
        }
    }

    fn terminal(&mut self, i: usize, state: State, now_us: u64) {
        let wf = &mut self.wfs[i];
        wf.state = state;
        let class = wf.class;
        let e2e = now_us.saturating_sub(wf.intended_us);
        let c = &mut self.classes[class as usize];
        c.last_terminal_us = c.last_terminal_us.max(now_us);
        match state {
            State::Completed => {
                c.completed += 1;
                c.latency.record(e2e);
                self.recent.record(e2e);
                self.recent_completed += 1;
                if let Some(track) = &wf.track {
                    if let Some(path) = critical_path_us(&self.def, &track.steps) {
                        self.stages.overhead.record(e2e.saturating_sub(path));
                    }
                }
                if self.verify(i, false) {
                    self.wfs[i].track = None;
                } else {
                    // Some outputs not seen yet (a later redelivery may bring them).
                    self.unverified.push(i);
                }
            }
            State::Failed => {
                c.failed += 1;
                wf.track = None;
            }
            _ => {
                c.cancelled += 1;
                wf.track = None;
            }
        }
        self.free_user();
    }

    /// Checks the outputs of completed workflow `i`; with `last_chance` a
    /// missing output is a mismatch. Returns true once decided.
    fn verify(&mut self, i: usize, last_chance: bool) -> bool {
        if let Some(track) = self.wfs[i].track.as_mut() {
            for st in &mut track.steps {
                assemble(st);
            }
        }
        let Some(track) = &self.wfs[i].track else {
            return true;
        };
        if !last_chance && track.steps.iter().any(|s| s.output.is_none()) {
            return false;
        }
        let outputs: Vec<Option<&str>> = track.steps.iter().map(|s| s.output.as_deref()).collect();
        let wrong = crate::sim::check_outputs(&self.def, &outputs);
        if !wrong.is_empty() {
            let class = self.wfs[i].class;
            self.classes[class as usize].output_mismatch += 1;
            if self.mismatch_samples.len() < SAMPLES_MAX {
                self.mismatch_samples
                    .push(format!("{}: {}", self.id(i), wrong.join("; ")));
            }
        }
        true
    }

    /// The end of the run: re-checks completed workflows whose outputs were
    /// incomplete, and returns the workflows still not terminal (lost) per class.
    pub fn finish(&mut self) -> [u64; 2] {
        let late = std::mem::take(&mut self.unverified);
        for i in late {
            self.verify(i, true);
            self.wfs[i].track = None;
        }
        let mut lost = [0u64; 2];
        for wf in &self.wfs {
            if wf.state == State::Running {
                lost[wf.class as usize] += 1;
            }
        }
        lost
    }

    /// Ids of the first `max` workflows not terminal.
    pub fn lost_samples(&self, max: usize) -> Vec<String> {
        self.wfs
            .iter()
            .enumerate()
            .filter(|(_, w)| w.state == State::Running)
            .take(max)
            .map(|(i, _)| self.id(i))
            .collect()
    }
}

/// Worker time along the critical path of a finished workflow: from the step
/// that finished last, back through the dependency that finished last, summing
/// queue wait + run where the in-process workers timed them, otherwise the
/// orchestrator's dispatch → result time. `None` when a step on it has no timing.
/// A map step's output, once it succeeded and every element output that
/// did not fail was seen: the element outputs in index order.
fn assemble(st: &mut StepTrack) {
    let Some(failed) = &st.map_failed else {
        return;
    };
    if st.output.is_some() {
        return;
    }
    let mut out = String::from("[");
    for x in 0..st.elements.len() {
        if x > 0 {
            out.push(',');
        }
        match st.elements.get(x).and_then(Option::as_deref) {
            Some(o) => out.push_str(o),
            None if failed.contains(&(x as u32)) => out.push_str("null"),
            // Not seen yet: a later redelivery may bring it.
            None => return,
        }
    }
    out.push(']');
    st.output = Some(out.into());
}

fn critical_path_us(def: &PipelineDef, steps: &[StepTrack]) -> Option<u64> {
    let mut at = (0..steps.len()).max_by_key(|&i| steps[i].done_ms)?;
    let mut sum = 0u64;
    for _ in 0..steps.len() {
        let st = &steps[at];
        if st.done_ms == 0 {
            return None;
        }
        sum += match (st.queue_us, st.run_us) {
            (Some(q), Some(r)) => q + r,
            _ => st.done_ms.saturating_sub(st.dispatched_ms) * 1000,
        };
        match def.steps[at]
            .needs
            .iter()
            .map(|&d| usize::from(d))
            .max_by_key(|&d| steps.get(d).map_or(0, |s| s.done_ms))
        {
            Some(d) if d < steps.len() => at = d,
            _ => break,
        }
    }
    Some(sum)
}
