//! Tests of wait steps in the pure core: a signal after or before the wait
//! starts, duplicates, limits, timeouts that fail or skip, retry and rerun,
//! cancel, and a property test over random DAGs (with random maps and
//! conditions) where some steps wait for signals that come at random
//! times, twice, or never, with the independent journal checker as oracle.

use proptest::prelude::*;

use super::map_tests::{act, action, dag_with_maps, output, Action};
use super::tests::{step, World};
use super::*;
use crate::pipeline::{OnTimeout, PipelineDef, WaitDef};
use crate::verify::check_journal;

const HOUR: u64 = 3_600_000;

fn wait_def(signal: &str, timeout_ms: u64, on_timeout: OnTimeout) -> Option<WaitDef> {
    Some(WaitDef {
        signal: signal.to_string(),
        timeout_ms,
        on_timeout,
    })
}

/// `draft` → `approve` (waits for `approved`) → `publish`.
fn approval(on_timeout: OnTimeout) -> PipelineDef {
    let mut approve = step("approve", &[0], 1);
    approve.task_type = String::new();
    PipelineDef {
        name: "review".into(),
        version: 1,
        steps: vec![step("draft", &[], 2), approve, step("publish", &[1], 2)],
        workflow_timeout_ms: None,
        step_maps: Vec::new(),
        step_whens: Vec::new(),
        step_waits: vec![None, wait_def("approved", HOUR, on_timeout), None],
        step_queue_timeouts: Vec::new(),
        in_progress_max: None,
        step_children: Vec::new(),
    }
}

fn drafted(on_timeout: OnTimeout) -> World {
    let mut w = World::start(approval(on_timeout), "{}");
    let t = w.current("draft").unwrap();
    w.succeed(&t, r#"{"text":"hi"}"#);
    w
}

fn names(w: &World) -> Vec<&'static str> {
    w.journal.iter().map(|(_, e)| e.kind.name()).collect()
}

#[test]
fn a_signal_completes_a_waiting_step_and_its_payload_is_the_output() {
    let mut w = drafted(OnTimeout::Fail);
    assert_eq!(w.state.steps[1].status, StepStatus::Waiting);
    assert!(
        w.current("approve").is_none(),
        "a wait step dispatches no task"
    );
    assert_eq!(w.tasks.len(), 1);
    let (due, timer) = w.timers.last().cloned().unwrap();
    assert_eq!(due, w.now + HOUR);
    assert_eq!(
        timer,
        TimerKind::Wait {
            step: 1,
            generation: 0
        }
    );
    assert_eq!(w.state.waits[&1].due_ms, due);
    let d = decide(
        &w.state,
        &w.pipeline,
        &Input::Signal {
            name: "approved".into(),
            id: "s1".into(),
            payload: r#"{"by":"ann"}"#.into(),
            pending_max: 64,
        },
        w.now,
    );
    assert!(d.commands.iter().any(|c| matches!(
        c,
        Command::DisarmTimer {
            timer: TimerKind::Wait { .. },
            ..
        }
    )));
    w.record(d, false);
    assert_eq!(w.state.steps[1].status, StepStatus::Succeeded);
    assert_eq!(w.state.steps[1].output.as_deref(), Some(r#"{"by":"ann"}"#));
    assert!(w.state.waits.is_empty());
    let publish = w.current("publish").expect("publish dispatched");
    assert_eq!(
        publish.input,
        r#"{"workflow":{},"deps":{"approve":{"by":"ann"}}}"#
    );
    w.succeed(&publish, "{}");
    assert_eq!(w.state.status, Status::Completed);
    assert_eq!(
        names(&w)[3..6],
        ["wait_started", "signal_received", "wait_succeeded"]
    );
    assert_eq!(replay(w.journal.iter().map(|(_, e)| e)).unwrap(), w.state);
}

#[test]
fn a_signal_before_the_wait_is_kept_and_consumed_when_the_step_waits() {
    let mut w = World::start(approval(OnTimeout::Fail), "{}");
    assert_eq!(w.signal("approved", "early", r#""yes""#), Outcome::Applied);
    assert_eq!(w.state.unconsumed_signals().count(), 1);
    let timers = w.timers.len();
    let t = w.current("draft").unwrap();
    w.succeed(&t, "{}");
    assert_eq!(w.state.steps[1].status, StepStatus::Succeeded);
    assert_eq!(w.state.steps[1].output.as_deref(), Some(r#""yes""#));
    assert_eq!(
        w.timers.len(),
        timers,
        "no timer for a wait satisfied at once"
    );
    assert_eq!(w.state.signals[0].consumed_by, Some((1, 0)));
    assert!(w.current("publish").is_some());
}

#[test]
fn a_duplicate_signal_id_journals_nothing_and_an_unknown_name_is_refused() {
    let mut w = drafted(OnTimeout::Fail);
    w.signal("approved", "s1", "1");
    let events = w.journal.len();
    assert_eq!(
        w.signal("approved", "s1", "2"),
        Outcome::Ignored(IgnoreReason::Duplicate)
    );
    assert_eq!(w.journal.len(), events);
    match w.signal("aproved", "s2", "1") {
        Outcome::Rejected(m) => assert!(m.contains("no wait step for signal \"aproved\""), "{m}"),
        other => panic!("{other:?}"),
    }
    // A second signal of the name waits for a wait step that may come
    // (none will here); the limit bounds how many are kept.
    assert_eq!(w.signal("approved", "s2", "2"), Outcome::Applied);
    let d = decide(
        &w.state,
        &w.pipeline,
        &Input::Signal {
            name: "approved".into(),
            id: "s3".into(),
            payload: "3".into(),
            pending_max: 1,
        },
        w.now,
    );
    match d.outcome {
        Outcome::Rejected(m) => assert!(m.contains("1 unconsumed signals (limit 1)"), "{m}"),
        other => panic!("{other:?}"),
    }
    let t = w.current("publish").unwrap();
    w.succeed(&t, "{}");
    assert_eq!(
        w.signal("approved", "s9", "1"),
        Outcome::Ignored(IgnoreReason::WorkflowTerminal)
    );
}

#[test]
fn a_timeout_fails_the_workflow_and_a_retry_waits_again() {
    let mut w = drafted(OnTimeout::Fail);
    let (due, timer) = w.timers.last().cloned().unwrap();
    w.now = due;
    w.apply(Input::TimerFired(timer.clone()));
    assert_eq!(w.state.status, Status::Failed);
    assert_eq!(w.state.steps[1].status, StepStatus::Failed);
    assert_eq!(
        w.state.reason.as_deref(),
        Some("step approve: no signal \"approved\" within 1h")
    );
    assert_eq!(
        w.apply(Input::Reopen(ReopenMode::RetryFailed)),
        Outcome::Applied
    );
    assert_eq!(w.state.steps[1].status, StepStatus::Waiting);
    assert_eq!(w.state.steps[0].status, StepStatus::Succeeded);
    // The timer of the first generation is stale in the second.
    assert_eq!(
        w.apply(Input::TimerFired(timer)),
        Outcome::Ignored(IgnoreReason::StaleTimer)
    );
    w.signal("approved", "late", "{}");
    assert!(w.current("publish").is_some());
}

#[test]
fn a_timeout_with_skip_runs_the_dependents_with_null() {
    let mut w = drafted(OnTimeout::Skip);
    let (due, timer) = w.timers.last().cloned().unwrap();
    w.now = due;
    w.apply(Input::TimerFired(timer));
    assert_eq!(w.state.steps[1].status, StepStatus::Skipped);
    let publish = w.current("publish").unwrap();
    assert_eq!(publish.input, r#"{"workflow":{},"deps":{"approve":null}}"#);
    // A signal that comes after the timeout is kept, unconsumed.
    assert_eq!(w.signal("approved", "late", "1"), Outcome::Applied);
    assert_eq!(w.state.unconsumed_signals().count(), 1);
}

#[test]
fn a_retry_keeps_a_consumed_wait_and_a_rerun_waits_for_a_new_signal() {
    let mut w = drafted(OnTimeout::Fail);
    w.signal("approved", "first", "1");
    let t = w.current("publish").unwrap();
    w.fail(&t, "fatal", false);
    assert_eq!(w.state.status, Status::Failed);
    w.apply(Input::Reopen(ReopenMode::RetryFailed));
    assert_eq!(w.state.steps[1].status, StepStatus::Succeeded);
    let t = w.current("publish").unwrap();
    w.succeed(&t, "{}");
    assert_eq!(w.state.status, Status::Completed);
    w.apply(Input::Reopen(ReopenMode::RerunFrom("approve".into())));
    assert_eq!(w.state.steps[1].status, StepStatus::Waiting);
    assert_eq!(w.state.signals[0].consumed_by, Some((1, 0)));
    w.signal("approved", "second", "2");
    assert_eq!(w.state.steps[1].output.as_deref(), Some("2"));
    assert_eq!(w.state.signals[1].consumed_by, Some((1, 2)));
}

#[test]
fn a_cancel_while_waiting_disarms_the_timeout() {
    let w = drafted(OnTimeout::Fail);
    let d = decide(
        &w.state,
        &w.pipeline,
        &Input::Cancel {
            reason: "no".into(),
        },
        w.now,
    );
    assert!(d.commands.iter().any(|c| matches!(
        c,
        Command::DisarmTimer {
            timer: TimerKind::Wait { step: 1, .. },
            ..
        }
    )));
    let mut w = w;
    w.record(d, false);
    assert_eq!(w.state.steps[1].status, StepStatus::Cancelled);
    assert!(w.state.waits.is_empty());
}

#[test]
fn the_checker_flags_a_wait_consuming_a_signal_never_received_or_a_task() {
    let w = drafted(OnTimeout::Fail);
    let mut journal = w.journal.clone();
    let seq = journal.len() as u64 + 1;
    journal.push((
        seq,
        Event {
            at_ms: w.now,
            kind: EventKind::WaitSucceeded {
                step: 1,
                signal_id: "ghost".into(),
            },
        },
    ));
    let checked = check_journal("wf-1", &w.pipeline, &journal);
    assert!(
        checked
            .violations
            .iter()
            .any(|v| v.message.contains("which was never received")),
        "{checked:?}"
    );
    let mut journal = w.journal.clone();
    journal.push((
        seq,
        Event {
            at_ms: w.now,
            kind: EventKind::TaskDispatched {
                step: 1,
                attempt: 1,
                task_id: "wf-1:approve:0:1".into(),
            },
        },
    ));
    let checked = check_journal("wf-1", &w.pipeline, &journal);
    assert!(
        checked
            .violations
            .iter()
            .any(|v| v.message.contains("wait step approve dispatched a task")),
        "{checked:?}"
    );
}

// ---------------------------------------------------------------------------
// Property test: random DAGs with maps, conditions and waits.

/// Turns some plain steps of a random DAG into wait steps for one of two
/// signal names, with a random timeout that fails or skips.
fn dag_with_waits() -> impl Strategy<Value = PipelineDef> {
    (
        dag_with_maps(),
        proptest::collection::vec((any::<bool>(), any::<bool>(), any::<bool>()), 7),
    )
        .prop_map(|(mut p, flags)| {
            let n = p.steps.len();
            let mut waits = vec![None; n];
            for (i, &(is_wait, which, skip)) in flags.iter().take(n).enumerate() {
                if is_wait && p.map_of(i).is_none() {
                    let signal = if which { "approved" } else { "checked" };
                    let then = if skip {
                        OnTimeout::Skip
                    } else {
                        OnTimeout::Fail
                    };
                    waits[i] = wait_def(signal, 1_000 + 500 * i as u64, then);
                    p.steps[i].task_type = String::new();
                }
            }
            if waits.iter().any(Option::is_some) {
                p.step_waits = waits;
            }
            p
        })
}

#[derive(Debug, Clone)]
enum WaitAction {
    Base(Action),
    /// A signal of one of the names (or an unknown one), with a fresh id
    /// or the id of an earlier signal.
    Signal {
        name: u8,
        repeat: bool,
        items: u8,
    },
}

fn wait_action() -> impl Strategy<Value = WaitAction> {
    prop_oneof![
        5 => action().prop_map(WaitAction::Base),
        2 => (0u8..5, any::<bool>(), 0u8..4)
            .prop_map(|(name, repeat, items)| WaitAction::Signal { name, repeat, items }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn wait_invariants_hold_under_random_signal_timing(
        p in dag_with_waits(),
        flags in proptest::collection::vec(any::<bool>(), 7),
        actions in proptest::collection::vec(wait_action(), 0..120),
    ) {
        let input = format!(r#"{{"flags":{}}}"#, serde_json::to_string(&flags).unwrap());
        let mut w = World::start(p, &input);
        w.drain_output = output(2);
        w.answer_waits = true;
        let mut sent = 0u32;
        for a in actions {
            match a {
                WaitAction::Base(a) => act(&mut w, a),
                WaitAction::Signal { name, repeat, items } => {
                    let name = ["approved", "checked", "approved", "checked", "unknown"][usize::from(name)];
                    let id = if repeat && sent > 0 { format!("s{}", sent - 1) } else { format!("s{sent}") };
                    sent += 1;
                    let before = w.journal.len();
                    let outcome = w.signal(name, &id, &output(items));
                    if name == "unknown" {
                        prop_assert!(outcome != Outcome::Applied);
                    }
                    if outcome != Outcome::Applied {
                        prop_assert_eq!(w.journal.len(), before);
                    }
                }
            }
            // A waiting step has its wait recorded, dispatches nothing,
            // and no more signals are kept than the limit.
            for (i, s) in w.state.steps.iter().enumerate() {
                if s.status == StepStatus::Waiting {
                    prop_assert!(w.state.waits.contains_key(&(i as u16)));
                }
                if w.pipeline.wait_of(i).is_some() {
                    let name = &w.pipeline.steps[i].name;
                    prop_assert!(w.tasks.iter().all(|t| &t.step != name));
                    // Its output, once succeeded, is the payload of the
                    // signal it consumed.
                    if s.status == StepStatus::Succeeded {
                        let consumed = w.state.signals.iter().rev().find(|g| {
                            g.consumed_by.is_some_and(|(step, _)| usize::from(step) == i)
                        });
                        prop_assert_eq!(consumed.map(|g| g.payload.clone()), s.output.clone());
                    }
                }
            }
            prop_assert_eq!(w.state.waits.len(), w.state.steps.iter().filter(|s| s.status == StepStatus::Waiting).count());
            prop_assert!(w.state.unconsumed_signals().count() <= 64);
        }
        let replayed = replay(w.journal.iter().map(|(_, e)| e)).unwrap();
        prop_assert_eq!(&replayed, &w.state);
        if !w.state.status.is_terminal() {
            w.drain();
        }
        if w.state.status != Status::Completed {
            prop_assert_eq!(w.apply(Input::Reopen(ReopenMode::RetryFailed)), Outcome::Applied);
            w.drain();
        }
        prop_assert_eq!(w.state.status, Status::Completed);
        let replayed = replay(w.journal.iter().map(|(_, e)| e)).unwrap();
        prop_assert_eq!(replayed, w.state);
    }
}
