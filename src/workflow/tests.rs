//! Unit and property tests of the pure core. The property tests use the
//! independent journal checker (`verify::check_journal`) as their oracle.

use proptest::prelude::*;

use super::*;
use crate::pipeline::{PipelineDef, RetryPolicy, StepDef, StepTimeouts};
use crate::verify::check_journal;

pub(super) fn step(name: &str, needs: &[u16], max_attempts: u32) -> StepDef {
    StepDef {
        name: name.to_string(),
        task_type: name.to_string(),
        needs: needs.to_vec(),
        retry: RetryPolicy {
            max_attempts,
            initial_backoff_ms: 100,
            backoff_coefficient: 2.0,
            max_backoff_ms: 1000,
            jitter: 0.2,
            non_retryable: vec!["fatal".to_string()],
        },
        timeouts: StepTimeouts {
            schedule_to_start_ms: Some(1_000),
            start_to_close_ms: Some(5_000),
            heartbeat_ms: None,
        },
    }
}

fn diamond() -> PipelineDef {
    PipelineDef {
        name: "p".into(),
        version: 1,
        steps: vec![
            step("a", &[], 3),
            step("b", &[0], 3),
            step("c", &[0], 3),
            step("d", &[1, 2], 3),
        ],
        workflow_timeout_ms: Some(60_000),
        step_maps: Vec::new(),
        step_whens: Vec::new(),
        step_children: Vec::new(),
        step_waits: Vec::new(),
        step_queue_timeouts: Vec::new(),
        in_progress_max: None,
    }
}

pub(super) fn pref(p: &PipelineDef) -> PipelineRef {
    PipelineRef {
        name: p.name.clone(),
        version: p.version,
        hash: p.content_hash(),
    }
}

/// A tiny driver: live state + journal, checked after every decision.
pub(super) struct World {
    pub(super) pipeline: PipelineDef,
    pub(super) state: WorkflowState,
    pub(super) journal: Vec<(u64, Event)>,
    pub(super) now: u64,
    /// Every task ever dispatched, current or superseded.
    pub(super) tasks: Vec<TaskSpec>,
    /// Every timer ever armed (stale ones included, to fire them late).
    pub(super) timers: Vec<(u64, TimerKind)>,
    /// Every child start asked for (again after a restart included).
    pub(super) children: Vec<ChildSpec>,
    /// Every signal passed on to a child.
    pub(super) signals: Vec<(String, ChildSignal)>,
    pub(super) delivered: Vec<Input>,
    /// What `drain` answers every task with.
    pub(super) drain_output: String,
    /// Whether `drain` sends a waiting step its signal (with
    /// `drain_output` as payload) rather than letting it time out.
    pub(super) answer_waits: bool,
}

impl World {
    pub(super) fn start(pipeline: PipelineDef, input: &str) -> World {
        let d = decide_start("wf-1", pref(&pipeline), &pipeline, input, 1_000);
        assert_eq!(d.outcome, Outcome::Applied);
        let state = super::evolve::start(&d.events[0]).expect("started");
        let mut w = World {
            pipeline,
            state,
            children: Vec::new(),
            signals: Vec::new(),
            journal: Vec::new(),
            now: 1_000,
            tasks: Vec::new(),
            timers: Vec::new(),
            delivered: Vec::new(),
            drain_output: "{}".to_string(),
            answer_waits: false,
        };
        w.record(d, true);
        w
    }

    pub(super) fn record(&mut self, d: Decision, first: bool) {
        for (k, e) in d.events.iter().enumerate() {
            if !(first && k == 0) {
                evolve(&mut self.state, e);
            }
            let seq = self.journal.len() as u64 + 1;
            self.journal.push((seq, e.clone()));
        }
        assert_eq!(self.state.next_seq, self.journal.len() as u64 + 1);
        for c in d.commands {
            match c {
                Command::Dispatch(spec) => self.tasks.push(*spec),
                Command::ArmTimer { due_ms, timer } => self.timers.push((due_ms, timer)),
                Command::DisarmTimer { .. } | Command::CancelTask { .. } => {}
                Command::StartChild(spec) => self.children.push(*spec),
                Command::SignalChild { child_id, signal } => self.signals.push((child_id, signal)),
            }
        }
        let checked = check_journal("wf-1", &self.pipeline, &self.journal);
        assert!(
            checked.violations.is_empty(),
            "violations {:?}\njournal {:#?}",
            checked.violations,
            self.journal
        );
        assert_eq!(checked.status, Some(self.state.status));
    }

    pub(super) fn apply(&mut self, input: Input) -> Outcome {
        let before = self.state.clone();
        let d = decide(&self.state, &self.pipeline, &input, self.now);
        let outcome = d.outcome.clone();
        if outcome != Outcome::Applied {
            assert!(d.events.is_empty() && d.commands.is_empty());
        }
        if before.status.is_terminal() {
            if let Some(first) = d.events.first() {
                assert!(matches!(first.kind, EventKind::WorkflowReopened { .. }));
            }
        }
        self.record(d, false);
        self.delivered.push(input);
        outcome
    }

    pub(super) fn current(&self, step: &str) -> Option<TaskSpec> {
        let i = self.pipeline.step_index(step)?;
        let s = &self.state.steps[i];
        if s.status != StepStatus::Dispatched {
            return None;
        }
        self.tasks
            .iter()
            .rev()
            .find(|t| Some(t.task_id.as_str()) == s.task_id.as_deref())
            .cloned()
    }

    pub(super) fn succeed(&mut self, t: &TaskSpec, output: &str) -> Outcome {
        self.apply(Input::TaskResult(TaskResult {
            task_id: t.task_id.clone(),
            step: t.step.clone(),
            attempt: t.attempt,
            outcome: TaskOutcome::Succeeded(output.to_string()),
            worker: Some("w1".into()),
            started_at_ms: None,
        }))
    }

    pub(super) fn fail(&mut self, t: &TaskSpec, kind: &str, retryable: bool) -> Outcome {
        self.apply(Input::TaskResult(TaskResult {
            task_id: t.task_id.clone(),
            step: t.step.clone(),
            attempt: t.attempt,
            outcome: TaskOutcome::Failed(TaskError {
                kind: kind.into(),
                message: "boom".into(),
                retryable,
            }),
            worker: None,
            started_at_ms: None,
        }))
    }

    /// Drives the workflow to a terminal status the way a healthy world
    /// would: resume if paused, answer every current task, fire due timers.
    pub(super) fn drain(&mut self) {
        for _ in 0..1_000 {
            if self.state.status.is_terminal() {
                return;
            }
            if self.state.status == Status::Paused {
                self.apply(Input::Resume);
                continue;
            }
            if let Some(t) = self.out_tasks().first() {
                let output = self.drain_output.clone();
                self.succeed(t, &output);
                continue;
            }
            if self.answer_waits {
                if let Some(signal) = self.waited_signal() {
                    let id = format!("drain-{}", self.journal.len());
                    let payload = self.drain_output.clone();
                    self.signal(&signal, &id, &payload);
                    continue;
                }
            }
            if let Some(child) = self.open_children().first() {
                let output = self.drain_output.clone();
                self.apply(Input::ChildFinished {
                    child_id: child.clone(),
                    outcome: ChildOutcome::Succeeded { output },
                });
                continue;
            }
            // Nothing out: the next timer must move it.
            let next = self
                .timers
                .iter()
                .enumerate()
                .filter(|(_, (_, t))| self.timer_live(t))
                .min_by_key(|(_, (due, _))| *due)
                .map(|(k, _)| k);
            let Some(k) = next else {
                panic!("stuck: nothing out, no timer\n{:#?}", self.state);
            };
            let (due, timer) = self.timers.remove(k);
            self.now = self.now.max(due);
            self.apply(Input::TimerFired(timer));
        }
        panic!("did not terminate");
    }

    /// The signal the first waiting step waits for, if a step waits.
    pub(super) fn waited_signal(&self) -> Option<String> {
        let i = self
            .state
            .steps
            .iter()
            .position(|s| s.status == StepStatus::Waiting)?;
        self.pipeline.wait_of(i).map(|w| w.signal.clone())
    }

    /// Sends signal `name` with `id` and `payload` (64 unconsumed at most).
    pub(super) fn signal(&mut self, name: &str, id: &str, payload: &str) -> Outcome {
        self.apply(Input::Signal {
            name: name.to_string(),
            id: id.to_string(),
            payload: payload.to_string(),
            pending_max: 64,
        })
    }

    /// The ids of the children that run now.
    pub(super) fn open_children(&self) -> Vec<String> {
        self.state
            .steps
            .iter()
            .enumerate()
            .filter(|(i, s)| {
                s.status == StepStatus::Dispatched && self.pipeline.child_of(*i).is_some()
            })
            .filter_map(|(_, s)| s.task_id.as_deref().map(str::to_string))
            .collect()
    }

    /// Every task out with workers now: steps' attempts and map elements'.
    pub(super) fn out_tasks(&self) -> Vec<TaskSpec> {
        let mut out: Vec<TaskSpec> = self
            .pipeline
            .steps
            .iter()
            .filter_map(|s| self.current(&s.name))
            .collect();
        for (&step, run) in &self.state.maps {
            let name = &self.pipeline.steps[usize::from(step)].name;
            for x in run.indices_with(StepStatus::Dispatched) {
                let e = &run.elements[x as usize];
                let id = crate::workflow::map::element_task_id(
                    &self.state.id,
                    name,
                    x,
                    self.state.generation,
                    e.attempt,
                );
                if let Some(t) = self.tasks.iter().rev().find(|t| t.task_id == id) {
                    out.push(t.clone());
                }
            }
        }
        out
    }

    pub(super) fn timer_live(&self, t: &TimerKind) -> bool {
        match *t {
            TimerKind::ElementRetry {
                step,
                index,
                generation,
                attempt,
            } => self
                .state
                .maps
                .get(&step)
                .and_then(|run| run.elements.get(index as usize))
                .is_some_and(|e| {
                    generation == self.state.generation
                        && e.status == StepStatus::Backoff
                        && e.attempt + 1 == attempt
                }),
            TimerKind::Retry {
                step,
                generation,
                attempt,
            } => {
                let s = &self.state.steps[usize::from(step)];
                generation == self.state.generation
                    && s.status == StepStatus::Backoff
                    && s.attempt + 1 == attempt
            }
            TimerKind::Workflow { generation } => generation == self.state.generation,
            TimerKind::Wait { step, generation } => {
                generation == self.state.generation
                    && self.state.steps[usize::from(step)].status == StepStatus::Waiting
            }
        }
    }
}

#[test]
fn happy_path_passes_outputs_downstream_and_completes() {
    let mut w = World::start(diamond(), r#"{"video_url":"s3://v.mp4"}"#);
    let a = w.current("a").unwrap();
    assert_eq!(
        a.input,
        r#"{"workflow":{"video_url":"s3://v.mp4"},"deps":{}}"#
    );
    assert_eq!(a.task_id, "wf-1:a:0:1");
    assert_eq!(a.idempotency_key, "wf-1:a:0");
    assert_eq!(w.succeed(&a, r#"{"n":1}"#), Outcome::Applied);
    let (b, c) = (w.current("b").unwrap(), w.current("c").unwrap());
    assert!(w.current("d").is_none(), "d waits for b and c");
    w.succeed(&b, r#"{"n":2}"#);
    assert!(w.current("d").is_none());
    w.succeed(&c, r#"{"n":3}"#);
    let d = w.current("d").unwrap();
    assert_eq!(
        d.input,
        r#"{"workflow":{"video_url":"s3://v.mp4"},"deps":{"b":{"n":2},"c":{"n":3}}}"#
    );
    w.succeed(&d, "{}");
    assert_eq!(w.state.status, Status::Completed);
    assert_eq!(replay(w.journal.iter().map(|(_, e)| e)).unwrap(), w.state);
}

#[test]
fn retryable_failure_backs_off_then_gives_up_at_max_attempts() {
    let mut w = World::start(diamond(), "{}");
    for attempt in 1..=3 {
        let a = w.current("a").unwrap();
        assert_eq!(a.attempt, attempt);
        w.fail(&a, "flaky", true);
        if attempt < 3 {
            assert_eq!(w.state.steps[0].status, StepStatus::Backoff);
            let (due, timer) = w.timers.pop().unwrap();
            let delay = due - w.now;
            assert!((80..=1000).contains(&delay), "delay {delay}");
            w.now = due;
            w.apply(Input::TimerFired(timer));
        }
    }
    assert_eq!(w.state.status, Status::Failed);
    assert!(w
        .state
        .reason
        .as_deref()
        .unwrap()
        .contains("step a failed after 3 attempt(s)"));
}

#[test]
fn non_retryable_errors_fail_at_once() {
    let mut w = World::start(diamond(), "{}");
    let a = w.current("a").unwrap();
    w.fail(&a, "fatal", true); // kind listed as non-retryable
    assert_eq!(w.state.status, Status::Failed);
    let mut w = World::start(diamond(), "{}");
    let a = w.current("a").unwrap();
    w.fail(&a, "other", false);
    assert_eq!(w.state.status, Status::Failed);
}

#[test]
fn duplicates_stale_and_unknown_results_change_nothing() {
    let mut w = World::start(diamond(), "{}");
    let a1 = w.current("a").unwrap();
    w.fail(&a1, "flaky", true);
    let (due, timer) = w.timers.pop().unwrap();
    w.now = due;
    w.apply(Input::TimerFired(timer.clone()));
    assert_eq!(
        w.apply(Input::TimerFired(timer)),
        Outcome::Ignored(IgnoreReason::StaleTimer)
    );
    let a2 = w.current("a").unwrap();
    assert_eq!(
        w.succeed(&a1, "{}"),
        Outcome::Ignored(IgnoreReason::StaleAttempt)
    );
    assert_eq!(w.succeed(&a2, "{}"), Outcome::Applied);
    assert_eq!(
        w.succeed(&a2, "{}"),
        Outcome::Ignored(IgnoreReason::Duplicate)
    );
    let mut bogus = a2.clone();
    bogus.task_id = "someone-else:a:0:1".into();
    assert_eq!(
        w.succeed(&bogus, "{}"),
        Outcome::Ignored(IgnoreReason::UnknownTask)
    );
    bogus.step = "nope".into();
    assert_eq!(
        w.succeed(&bogus, "{}"),
        Outcome::Ignored(IgnoreReason::UnknownTask)
    );
}

#[test]
fn a_late_answer_of_a_timed_out_attempt_is_stale_even_before_the_next_attempt() {
    let mut w = World::start(diamond(), "{}");
    let a1 = w.current("a").unwrap();
    let timed_out = w.apply(Input::TaskTimedOut {
        task_id: a1.task_id.clone(),
        timeout: crate::workflow::TimeoutKind::StartToClose,
    });
    assert_eq!(timed_out, Outcome::Applied);
    // The step waits out its backoff; attempt 1's answer arrives now.
    assert_eq!(
        w.succeed(&a1, "{}"),
        Outcome::Ignored(IgnoreReason::StaleAttempt)
    );
    // A failed attempt's second answer, by contrast, is a duplicate.
    let mut w = World::start(diamond(), "{}");
    let a1 = w.current("a").unwrap();
    w.fail(&a1, "flaky", true);
    assert_eq!(
        w.succeed(&a1, "{}"),
        Outcome::Ignored(IgnoreReason::Duplicate)
    );
}

#[test]
fn pause_holds_dispatch_and_resume_releases_it() {
    let mut w = World::start(diamond(), "{}");
    let a = w.current("a").unwrap();
    assert_eq!(w.apply(Input::Pause), Outcome::Applied);
    assert!(matches!(w.apply(Input::Pause), Outcome::Rejected(_)));
    w.succeed(&a, "{}");
    assert!(w.current("b").is_none(), "no dispatch while paused");
    w.apply(Input::Resume);
    assert!(w.current("b").is_some() && w.current("c").is_some());
}

#[test]
fn timeouts_retry_and_cancel_the_hung_attempt() {
    let mut w = World::start(diamond(), "{}");
    let a = w.current("a").unwrap();
    let d = decide(
        &w.state,
        &w.pipeline,
        &Input::TaskTimedOut {
            task_id: a.task_id.clone(),
            timeout: TimeoutKind::StartToClose,
        },
        w.now,
    );
    assert!(d
        .commands
        .iter()
        .any(|c| matches!(c, Command::CancelTask { task_id, reason, .. }
            if *task_id == a.task_id && reason == "superseded: start_to_close timeout")));
    w.record(d, false);
    assert_eq!(w.state.steps[0].status, StepStatus::Backoff);
}

#[test]
fn cancel_is_terminal_and_cancels_running_tasks() {
    let mut w = World::start(diamond(), "{}");
    let a = w.current("a").unwrap();
    let d = decide(
        &w.state,
        &w.pipeline,
        &Input::Cancel {
            reason: "ops".into(),
        },
        w.now,
    );
    // Workers hear the operator's reason.
    assert!(d
        .commands
        .iter()
        .any(|c| matches!(c, Command::CancelTask { task_id, reason, .. }
            if *task_id == a.task_id && reason == "ops")));
    w.record(d, false);
    assert_eq!(w.state.status, Status::Cancelled);
    assert_eq!(
        w.succeed(&a, "{}"),
        Outcome::Ignored(IgnoreReason::WorkflowTerminal)
    );
    assert!(matches!(
        w.apply(Input::Cancel {
            reason: "again".into()
        }),
        Outcome::Rejected(_)
    ));
    assert!(matches!(w.apply(Input::Resume), Outcome::Rejected(_)));
}

#[test]
fn rerun_from_step_keeps_upstream_outputs_and_starts_a_generation() {
    let mut w = World::start(diamond(), "{}");
    w.drain();
    assert_eq!(w.state.status, Status::Completed);
    assert!(matches!(
        w.apply(Input::Reopen(ReopenMode::RetryFailed)),
        Outcome::Rejected(_)
    ));
    assert!(matches!(
        w.apply(Input::Reopen(ReopenMode::RerunFrom("zz".into()))),
        Outcome::Rejected(_)
    ));
    assert_eq!(
        w.apply(Input::Reopen(ReopenMode::RerunFrom("b".into()))),
        Outcome::Applied
    );
    assert_eq!(w.state.generation, 1);
    assert_eq!(w.state.steps[0].status, StepStatus::Succeeded);
    assert_eq!(
        w.state.steps[2].status,
        StepStatus::Succeeded,
        "c is not downstream of b"
    );
    assert_eq!(w.state.steps[3].status, StepStatus::Pending);
    let b = w.current("b").unwrap();
    assert_eq!(b.task_id, "wf-1:b:1:1");
    assert_eq!(b.idempotency_key, "wf-1:b:1");
    w.drain();
    assert_eq!(w.state.status, Status::Completed);
}

#[test]
fn retry_of_a_failed_workflow_runs_the_failed_steps_again() {
    let mut w = World::start(diamond(), "{}");
    let a = w.current("a").unwrap();
    w.fail(&a, "fatal", false);
    assert_eq!(w.state.status, Status::Failed);
    assert_eq!(
        w.apply(Input::Reopen(ReopenMode::RetryFailed)),
        Outcome::Applied
    );
    assert_eq!(w.current("a").unwrap().attempt, 1);
    w.drain();
    assert_eq!(w.state.status, Status::Completed);
}

#[test]
fn workflow_timeout_fails_and_old_generation_timers_are_stale() {
    let mut w = World::start(diamond(), "{}");
    let (due, timer) = w
        .timers
        .iter()
        .find(|(_, t)| matches!(t, TimerKind::Workflow { .. }))
        .cloned()
        .unwrap();
    w.now = due;
    w.apply(Input::TimerFired(timer.clone()));
    assert_eq!(w.state.status, Status::Failed);
    assert_eq!(w.state.reason.as_deref(), Some("workflow timeout"));
    w.apply(Input::Reopen(ReopenMode::RetryFailed));
    assert_eq!(
        w.apply(Input::TimerFired(timer)),
        Outcome::Ignored(IgnoreReason::StaleTimer)
    );
}

#[test]
fn borrowed_and_owned_journal_records_encode_identically() {
    let w = World::start(diamond(), r#"{"x":1}"#);
    let events: Vec<Event> = w.journal.iter().map(|(_, e)| e.clone()).collect();
    let owned = postcard::to_allocvec(&JournalRecord {
        first_seq: 1,
        events: events.clone(),
    })
    .unwrap();
    let borrowed = postcard::to_allocvec(&JournalRecordRef {
        first_seq: 1,
        events: &events,
    })
    .unwrap();
    assert_eq!(owned, borrowed);
    let back: JournalRecord = postcard::from_bytes(&borrowed).unwrap();
    assert_eq!(back.events, events);
}

#[test]
fn redispatch_rebuilds_the_same_task() {
    let w = World::start(diamond(), r#"{"x":1}"#);
    let a = w.current("a").unwrap();
    let again = redispatch(&w.state, &w.pipeline, 0, w.now + 5).unwrap();
    assert_eq!(again.task_id, a.task_id);
    assert_eq!(again.input, a.input);
    assert!(redispatch(&w.state, &w.pipeline, 1, w.now).is_none());
}

// ---------------------------------------------------------------------------
// Property tests: random DAGs, random interleavings.

#[derive(Debug, Clone)]
enum Action {
    Succeed(usize),
    Fail(usize, bool, bool),
    Timeout(usize, u8),
    Redeliver(usize),
    Unknown,
    FireTimer(usize),
    Advance(u64),
    Cancel,
    Pause,
    Resume,
    Retry,
    Rerun(usize),
    Park,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => any::<usize>().prop_map(Action::Succeed),
        3 => (any::<usize>(), any::<bool>(), any::<bool>()).prop_map(|(k, r, f)| Action::Fail(k, r, f)),
        1 => (any::<usize>(), 0u8..4).prop_map(|(k, t)| Action::Timeout(k, t)),
        2 => any::<usize>().prop_map(Action::Redeliver),
        1 => Just(Action::Unknown),
        3 => any::<usize>().prop_map(Action::FireTimer),
        1 => (0u64..20_000).prop_map(Action::Advance),
        1 => Just(Action::Cancel),
        1 => Just(Action::Pause),
        2 => Just(Action::Resume),
        1 => Just(Action::Retry),
        1 => any::<usize>().prop_map(Action::Rerun),
        1 => Just(Action::Park),
    ]
}

fn dag() -> impl Strategy<Value = PipelineDef> {
    (
        1usize..8,
        proptest::collection::vec((any::<u8>(), 1u32..4), 8),
        any::<bool>(),
    )
        .prop_map(|(n, raw, timeout)| {
            let steps = (0..n)
                .map(|i| {
                    let (mask, attempts) = raw[i];
                    let needs: Vec<u16> = (0..i)
                        .filter(|j| mask & (1 << (j % 8)) != 0)
                        .map(|j| j as u16)
                        .collect();
                    step(&format!("s{i}"), &needs, attempts)
                })
                .collect();
            PipelineDef {
                name: "rand".into(),
                version: 1,
                step_children: Vec::new(),
                steps,
                workflow_timeout_ms: timeout.then_some(30_000),
                step_maps: Vec::new(),
                step_whens: Vec::new(),
                step_waits: Vec::new(),
                step_queue_timeouts: Vec::new(),
                in_progress_max: None,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_under_random_interleavings(p in dag(), actions in proptest::collection::vec(action(), 0..80)) {
        let mut w = World::start(p, "{}");
        for a in actions {
            match a {
                Action::Succeed(k) | Action::Fail(k, _, _) | Action::Timeout(k, _) if w.tasks.is_empty() => { let _ = k; }
                Action::Succeed(k) => { let t = w.tasks[k % w.tasks.len()].clone(); w.succeed(&t, "{\"ok\":true}"); }
                Action::Fail(k, retryable, fatal) => {
                    let t = w.tasks[k % w.tasks.len()].clone();
                    w.fail(&t, if fatal { "fatal" } else { "flaky" }, retryable);
                }
                Action::Timeout(k, kind) => {
                    let t = w.tasks[k % w.tasks.len()].clone();
                    let timeout = [TimeoutKind::ScheduleToStart, TimeoutKind::StartToClose, TimeoutKind::Heartbeat, TimeoutKind::QueueTimeout][usize::from(kind)];
                    w.apply(Input::TaskTimedOut { task_id: t.task_id, timeout });
                }
                Action::Redeliver(k) => {
                    if !w.delivered.is_empty() {
                        let input = w.delivered[k % w.delivered.len()].clone();
                        w.apply(input);
                    }
                }
                Action::Unknown => {
                    w.apply(Input::TaskResult(TaskResult {
                        task_id: "nobody:s0:0:1".into(), step: "s0".into(), attempt: 1,
                        outcome: TaskOutcome::Succeeded("{}".into()), worker: None, started_at_ms: None,
                    }));
                }
                Action::FireTimer(k) => {
                    if !w.timers.is_empty() {
                        let (due, timer) = w.timers[k % w.timers.len()].clone();
                        w.now = w.now.max(due);
                        w.apply(Input::TimerFired(timer));
                    }
                }
                Action::Advance(ms) => w.now += ms,
                Action::Cancel => { w.apply(Input::Cancel { reason: "prop".into() }); }
                Action::Pause => { w.apply(Input::Pause); }
                Action::Resume => { w.apply(Input::Resume); }
                Action::Retry => { w.apply(Input::Reopen(ReopenMode::RetryFailed)); }
                Action::Rerun(k) => {
                    let name = w.pipeline.steps[k % w.pipeline.steps.len()].name.clone();
                    w.apply(Input::Reopen(ReopenMode::RerunFrom(name)));
                }
                Action::Park => { w.apply(Input::Park { reason: "parked".into() }); }
            }
        }
        // Replaying the journal rebuilds exactly the live state.
        let replayed = replay(w.journal.iter().map(|(_, e)| e)).unwrap();
        prop_assert_eq!(&replayed, &w.state);
        // Nothing is stuck: a healthy world always brings it to an end.
        if !w.state.status.is_terminal() {
            w.drain();
        }
        // A terminal workflow can always be brought back and finished.
        if w.state.status != Status::Completed {
            prop_assert_eq!(w.apply(Input::Reopen(ReopenMode::RetryFailed)), Outcome::Applied);
            w.drain();
        }
        let replayed = replay(w.journal.iter().map(|(_, e)| e)).unwrap();
        prop_assert_eq!(replayed, w.state);
    }
}
